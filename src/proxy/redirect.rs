//! The plain-HTTP listener beside an ACME-certified public port: it answers the CA's HTTP-01
//! requests (`/.well-known/acme-challenge/TOKEN`) and sends everything else to the same path
//! over HTTPS (301), as a browser typing the bare name expects.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::acme::Challenges;
use super::limits::{Limits, LogEvery};
use super::listen::{accept, drain};

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Where redirects go and which challenges are answered.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub challenges: Challenges,
    /// The certificate's names: a request for one of them is redirected to it, anything
    /// else to the first (never to a host the client made up).
    pub domains: Vec<String>,
    /// The HTTPS port (left out of the location when 443).
    pub https_port: u16,
}

/// Serve `listener` until `shutdown`.
pub async fn serve_redirect(
    listener: TcpListener,
    redirect: Redirect,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let redirect = Arc::new(redirect);
    let tasks = TaskTracker::new();
    let accept_log = LogEvery::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = accept(&listener, &accept_log) => accepted,
        };
        let redirect = redirect.clone();
        tasks.spawn(async move {
            let service = service_fn(move |req| {
                let response = answer(&redirect, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(super::MAX_REQUEST_HEAD)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = served.await {
                tracing::debug!(%peer, error = %e, "plain-HTTP connection ended with an error");
            }
        });
    }
    drain(listener, tasks).await;
    Ok(())
}

fn answer<B>(redirect: &Redirect, req: &Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
        return match redirect.challenges.get(token) {
            Some(value) => {
                tracing::info!(token, "answering an ACME HTTP-01 challenge");
                plain(StatusCode::OK, value)
            }
            None => plain(StatusCode::NOT_FOUND, "no such challenge".into()),
        };
    }
    let asked = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .map(|h| {
            // The name without a port.
            match h.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => h,
            }
            .to_ascii_lowercase()
        });
    let Some(host) = asked
        .filter(|h| redirect.domains.iter().any(|d| d.eq_ignore_ascii_case(h)))
        .or_else(|| redirect.domains.first().cloned())
    else {
        return plain(StatusCode::NOT_FOUND, "no domain configured".into());
    };
    let port = match redirect.https_port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let location = format!("https://{host}{port}{path_and_query}");
    let mut response = plain(StatusCode::MOVED_PERMANENTLY, String::new());
    match header::HeaderValue::from_str(&location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => plain(StatusCode::BAD_REQUEST, "bad request target".into()),
    }
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect() -> Redirect {
        Redirect {
            challenges: Challenges::default(),
            domains: vec!["hub.example.org".into(), "www.example.org".into()],
            https_port: 443,
        }
    }

    fn get(host: &str, target: &str) -> Request<()> {
        Request::builder()
            .uri(target)
            .header(header::HOST, host)
            .body(())
            .expect("request")
    }

    fn location(response: &Response<Full<Bytes>>) -> &str {
        response.headers()[header::LOCATION]
            .to_str()
            .expect("location")
    }

    #[test]
    fn redirects_to_the_asked_domain_and_never_to_another_host() {
        let r = redirect();
        let asked = answer(&r, &get("www.example.org:80", "/hub/login?next=%2F"));
        assert_eq!(asked.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            location(&asked),
            "https://www.example.org/hub/login?next=%2F"
        );
        let other = answer(&r, &get("evil.example", "/x"));
        assert_eq!(location(&other), "https://hub.example.org/x");
        let port = Redirect {
            https_port: 8443,
            ..redirect()
        };
        assert_eq!(
            location(&answer(&port, &get("HUB.example.org", "/"))),
            "https://hub.example.org:8443/"
        );
    }

    #[test]
    fn answers_only_known_challenges() {
        let r = redirect();
        r.challenges.set("tok", Some("tok.thumb".into()));
        let known = answer(
            &r,
            &get("hub.example.org", "/.well-known/acme-challenge/tok"),
        );
        assert_eq!(known.status(), StatusCode::OK);
        let unknown = answer(
            &r,
            &get("hub.example.org", "/.well-known/acme-challenge/nope"),
        );
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    }
}
