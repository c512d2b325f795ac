//! The hub's HTTP application and its start-up: the router (the REST API, the OAuth
//! provider beside it, the pages, upstream's prefix redirects), the middleware every hub
//! response passes (headers, metrics, access log, error pages with `template_paths`), and
//! `run`/`serve`: open the hub, take or bind the public and internal listeners, reconcile
//! servers, serve until SIGTERM or `/hub/api/shutdown`. User servers are never stopped on
//! the way out. (Named `app`, not `server`, so it is not mistaken for users' servers.)

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::hub::{self, Hub, Mode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Hub(#[from] hub::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {addr} (LetsEncrypt.http_port): {source}; below 1024 that needs \
         jupyterhub-http.socket (systemctl enable --now jupyterhub-http.socket) or root"
    )]
    PlainBind {
        addr: String,
        source: std::io::Error,
    },
    #[error("LetsEncrypt: no plain-HTTP listener for the ACME challenges")]
    NoPlainListener,
    #[error("invalid {key}: {value:?}")]
    Url { key: &'static str, value: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Proxy(#[from] crate::proxy::Error),
    #[error(transparent)]
    Acme(#[from] crate::proxy::AcmeError),
}

pub fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::new(format!("{level},zbus=warn,hyper=warn,hyper_util=warn")),
        None => EnvFilter::try_from_env("JUPYTERHUB_LOG")
            .unwrap_or_else(|_| EnvFilter::new("info,zbus=warn,hyper=warn,hyper_util=warn")),
    };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Under systemd, structured entries (USER=, SERVER=, …) go to the journal directly;
    // otherwise plain lines go to stderr.
    let journald = crate::systemd::stderr_is_journal()
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|layer| {
            layer
                .with_field_prefix(None)
                .with_syslog_identifier("jupyterhub".into())
        });
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr)
        .try_init();
}

/// What `hub_headers` adds, made once: the CSPs follow `base_url`, as upstream's
/// `csp_report_uri`.
#[derive(Clone)]
struct Headers {
    hub: Hub,
    csp_api: Option<HeaderValue>,
    csp_page: Option<HeaderValue>,
}

impl Headers {
    fn new(hub: Hub) -> Headers {
        let report = format!("{}hub/security/csp-report", hub.base_url());
        Headers {
            csp_api: HeaderValue::from_str(&format!(
                "frame-ancestors 'none'; report-uri {report}; default-src 'none'"
            ))
            .ok(),
            csp_page: HeaderValue::from_str(&format!(
                "frame-ancestors 'none'; report-uri {report}"
            ))
            .ok(),
            hub,
        }
    }
}

/// Headers on every hub response, as upstream: the version (single-user servers parse it)
/// and a CSP that forbids framing.
async fn hub_headers(
    axum::extract::State(Headers {
        hub,
        csp_api,
        csp_page,
    }): axum::extract::State<Headers>,
    request: Request,
    next: Next,
) -> Response {
    let api = request.uri().path().contains("/hub/api");
    let handler = handler_label(&hub, &request);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        "x-jupyterhub-version",
        HeaderValue::from_static(crate::JUPYTERHUB_VERSION),
    );
    if let Some(csp) = if api { csp_api } else { csp_page } {
        headers
            .entry(header::CONTENT_SECURITY_POLICY)
            .or_insert(csp);
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    let status = response.status().as_u16();
    hub.metrics()
        .requests
        .get_or_create(&crate::metrics::RequestLabels {
            method: method.to_string(),
            handler,
            code: status,
        })
        .observe(started.elapsed().as_secs_f64());
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    // Upstream's access log: one line per request, quiet for health checks and static files;
    // the fields become journal fields (METHOD=, PATH=, STATUS=, DURATION_MS=).
    macro_rules! access_log {
        ($level:ident) => {
            tracing::$level!(method = %method, path = %path.escape_debug(), status, duration_ms,
                "{status} {method} {} {duration_ms:.2}ms", path.escape_debug())
        };
    }
    if status >= 500 {
        access_log!(error);
    } else if status >= 400 {
        access_log!(warn);
    } else if path.ends_with("/hub/health") || path.contains("/hub/static/") {
        access_log!(debug);
    } else {
        access_log!(info);
    }
    response
}

/// `request_duration_seconds`'s `handler`: upstream names the Tornado handler class; ours is
/// the route's template without the base URL (`/hub/api/users/{name}`), as stable and as few.
/// Requests no route matched are named as upstream's catch-all handlers: `api_404` under
/// `hub/api/` (`API404`), `page_404` elsewhere under `hub/` (`Template404`), and
/// `prefix_redirect` outside it (`PrefixRedirectHandler`).
fn handler_label(hub: &Hub, request: &Request) -> String {
    let base = hub.base_url().trim_end_matches('/');
    let Some(matched) = request.extensions().get::<axum::extract::MatchedPath>() else {
        let path = request.uri().path().strip_prefix(base).unwrap_or_default();
        return if path.starts_with("/hub/api/") {
            "api_404"
        } else if path.starts_with("/hub/") {
            "page_404"
        } else {
            "prefix_redirect"
        }
        .into();
    };
    let path = matched.as_str();
    path.strip_prefix(base)
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path)
        .to_owned()
}

/// Paths that reach the hub without being under `{base_url}hub/` (upstream's
/// `PrefixRedirectHandler`): `/user/alice/lab` → `/hub/user/alice/lab`, `/` → `/hub/`.
async fn prefix_redirect(hub: axum::extract::State<Hub>, uri: axum::http::Uri) -> Response {
    let base = hub.base_url().to_owned();
    let path = uri.path();
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    if path == base || path == base.trim_end_matches('/') {
        return found(&format!("{base}hub/"));
    }
    if path == format!("{base}hub") {
        return Redirect::permanent(&format!("{base}hub/{query}")).into_response();
    }
    if let Some(rest) = path.strip_prefix(&base)
        && (rest.starts_with("user/") || rest.starts_with("services/"))
    {
        // `/user/alice` without the slash first gains it, as upstream.
        let segments = rest.split('/').filter(|s| !s.is_empty()).count();
        if segments == 2 && !rest.ends_with('/') {
            return Redirect::permanent(&format!("{path}/{query}")).into_response();
        }
        return found(&format!("{base}hub/{rest}{query}"));
    }
    crate::web::PageError::from(hub::Error::NotFound(format!("No page at {path}"))).into_response()
}

fn found(location: &str) -> Response {
    let mut response = axum::http::StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The hub's whole HTTP application (pages, API and OAuth provider), as one router.
pub fn app(hub: Hub) -> Router {
    let base = hub.base_url().trim_end_matches('/').to_owned();
    Router::new()
        // Nested routers match `/hub` and `/hub/api` but not the trailing-slash forms.
        .route(
            &format!("{base}/hub/"),
            axum::routing::get(crate::web::hub_root),
        )
        .route(
            &format!("{base}/hub/api/"),
            axum::routing::get(crate::api::root),
        )
        // The OAuth provider sits beside the API under the same prefix (upstream's paths);
        // unknown paths there get the API's JSON 404.
        .nest(
            &format!("{base}/hub/api"),
            crate::api::router().merge(crate::oauth::router()),
        )
        .nest(&format!("{base}/hub"), crate::web::router())
        .fallback(prefix_redirect)
        .layer(middleware::map_response_with_state(
            hub.clone(),
            crate::web::error_pages,
        ))
        .layer(middleware::from_fn_with_state(
            Headers::new(hub.clone()),
            hub_headers,
        ))
        .with_state(hub)
}

/// Serve the hub on its listeners until `shutdown` resolves or the hub asks to stop.
/// `public` carries browsers' traffic (pages, API, proxied user servers); `internal` is
/// the hub API for user servers and services; `plain` (with `[LetsEncrypt]`) answers ACME
/// challenges and redirects to HTTPS.
pub async fn serve(
    hub: Hub,
    public: TcpListener,
    internal: TcpListener,
    plain: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let internal_addr = internal.local_addr()?;
    if hub.config().hub.hub_connect_url.is_none() {
        let host = match internal_addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
            ip if ip.is_unspecified() => "[::1]".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        hub.set_api_url(format!(
            "http://{host}:{}{}hub/api",
            internal_addr.port(),
            hub.base_url()
        ));
    }
    hub.routes().add(
        hub.base_url(),
        crate::proxy::Target::Hub,
        serde_json::json!({"hub": true}),
    );
    // Config and runtime services alike (runtime ones outlive restarts).
    hub.add_service_routes();
    // Managed services are adopted or started before READY: the API they call is bound.
    hub.start_services().await;
    // As upstream once its services run: the table matches what runs.
    if let Err(e) = hub.check_routes() {
        tracing::warn!(error = %e, "could not check routes");
    }
    hub.start_metrics_collectors();
    let stop = hub.shutdown_token().clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => stop.cancel(),
            _ = stop.cancelled() => {}
        }
        crate::systemd::notify::stopping();
    });
    spawn_activity_flush(&hub);
    let router = app(hub.clone());
    // The public port is the proxy: user routes are forwarded, the hub's own are served
    // in-process by the same router the internal port uses.
    let tls = match (&hub.config().hub.ssl_cert, &hub.config().hub.ssl_key) {
        (Some(cert), Some(key)) => Some(crate::proxy::load_tls(cert, key)?),
        _ => None,
    };
    let (tls, plain_task) = match (&hub.config().letsencrypt, plain) {
        (Some(letsencrypt), plain) if plain.is_some() || letsencrypt.tls_alpn() => {
            let acme = std::sync::Arc::new(crate::proxy::Acme::new(acme_settings(
                hub.config(),
                letsencrypt,
            ))?);
            hub.set_acme(acme.clone());
            let redirect = crate::proxy::Redirect {
                challenges: acme.challenges().clone(),
                domains: letsencrypt.domains.clone(),
                https_port: public.local_addr()?.port(),
            };
            let limits = hub.config().proxy.limits();
            let stop = hub.shutdown_token().clone();
            let task = plain.map(|plain| {
                tokio::spawn(crate::proxy::serve_redirect(plain, redirect, limits, stop))
            });
            let tls = acme.server_config()?;
            tokio::spawn(acme.run(hub.shutdown_token().clone()));
            (Some(tls), task)
        }
        // Never plain HTTP on the public port when HTTPS was asked for.
        (Some(_), _) => return Err(Error::NoPlainListener),
        (None, _) => (tls, None),
    };
    let mut proxy = crate::proxy::Proxy::new(hub.routes().clone(), Some(router.clone()));
    proxy.set_limits(hub.config().proxy.limits());
    let down_hub = hub.clone();
    proxy.set_target_down_hook(std::sync::Arc::new(move |route: &crate::proxy::Route| {
        let user = route.data.get("user").and_then(serde_json::Value::as_str);
        let server = route
            .data
            .get("server_name")
            .and_then(serde_json::Value::as_str);
        if let (Some(user), Some(server)) = (user, server) {
            down_hub.target_unreachable(user, server);
        }
    }));
    let thaw_hub = hub.clone();
    proxy.set_thaw_hook(std::sync::Arc::new(move |route| {
        let hub = thaw_hub.clone();
        Box::pin(async move { hub.thaw_route(route).await })
    }));
    hub.spawn_freezer();
    let public_task = {
        let stop = hub.shutdown_token().clone();
        let proxy = std::sync::Arc::new(proxy);
        tokio::spawn(async move { crate::proxy::serve(public, proxy, tls, stop).await })
    };
    let internal_task = {
        let stop = hub.shutdown_token().clone();
        let limits = hub.config().proxy.limits();
        tokio::spawn(crate::proxy::serve_app(internal, router, limits, stop))
    };
    // Listeners are bound and routes are in place: connections queued meanwhile are served.
    hub.record_startup();
    crate::systemd::notify::ready(&hub.status_line());
    let status_hub = hub.clone();
    crate::systemd::notify::spawn_watchdog(
        move || status_hub.status_line(),
        hub.shutdown_token().clone(),
    );
    let (a, b) = tokio::join!(public_task, internal_task);
    if let Some(task) = plain_task {
        task.await
            .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    }
    hub.stop_services().await;
    hub.thaw_all().await;
    if let Err(e) = hub.flush_route_activity() {
        tracing::warn!(error = %e, "could not save activity at shutdown");
    }
    a.map_err(|e| Error::Io(std::io::Error::other(e)))??;
    b.map_err(|e| Error::Io(std::io::Error::other(e)))??;
    Ok(())
}

/// The ACME client's settings from `[LetsEncrypt]`.
pub fn acme_settings(
    config: &Config,
    letsencrypt: &crate::config::LetsEncryptConfig,
) -> crate::proxy::AcmeSettings {
    crate::proxy::AcmeSettings {
        domains: letsencrypt.domains.clone(),
        contact: letsencrypt
            .email
            .iter()
            .map(|e| format!("mailto:{e}"))
            .collect(),
        directory_url: letsencrypt.directory().to_owned(),
        directory_ca_file: letsencrypt.directory_ca_file.clone(),
        dir: crate::config::LetsEncryptConfig::state_dir(config),
        challenge: if letsencrypt.tls_alpn() {
            crate::proxy::AcmeChallenge::TlsAlpn01
        } else {
            crate::proxy::AcmeChallenge::Http01
        },
    }
}

fn spawn_activity_flush(hub: &Hub) {
    let hub = hub.clone();
    // Proxy activity lives in memory per route; it reaches the database at most this often,
    // and the routes are checked then, as upstream's `update_last_activity` does.
    let every = Duration::from_secs(hub.config().hub.last_activity_interval.clamp(1, 300));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = hub.shutdown_token().cancelled() => break,
                _ = ticker.tick() => {
                    if let Err(e) = hub.flush_route_activity() {
                        tracing::warn!(error = %e, "could not save activity");
                    }
                    if let Err(e) = hub.check_routes() {
                        tracing::warn!(error = %e, "could not check routes");
                    }
                }
            }
        }
    });
}

async fn bind(addr: &str) -> Result<TcpListener, Error> {
    crate::proxy::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            addr: addr.to_owned(),
            source,
        })
}

fn host_port(url: &str, key: &'static str) -> Result<String, Error> {
    let parsed = url::Url::parse(url).map_err(|_| Error::Url {
        key,
        value: url.to_owned(),
    })?;
    let host = parsed.host_str().ok_or_else(|| Error::Url {
        key,
        value: url.to_owned(),
    })?;
    let port = parsed.port_or_known_default().unwrap_or(8081);
    Ok(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// `jupyterhub` with no subcommand: open, listen, reconcile, serve.
pub async fn run(config: Config) -> Result<(), Error> {
    let hub = Hub::open(config, Mode::Serve).await?;
    let public_addr = if hub.config().hub.ip.is_empty() {
        format!("0.0.0.0:{}", hub.config().hub.port)
    } else if hub.config().hub.ip.contains(':') {
        format!("[{}]:{}", hub.config().hub.ip, hub.config().hub.port)
    } else {
        format!("{}:{}", hub.config().hub.ip, hub.config().hub.port)
    };
    // Socket activation first (jupyterhub.socket); bind ourselves when started by hand.
    let activated =
        crate::systemd::activation::listeners().map_err(|e| Error::Io(std::io::Error::other(e)))?;
    let public = match activated.public {
        Some(listener) => listener,
        None => bind(&public_addr).await?,
    };
    let internal = match activated.hub {
        Some(listener) => listener,
        None => bind(&host_port(&hub.config().hub.hub_bind_url, "hub_bind_url")?).await?,
    };
    // With `[LetsEncrypt]`, the plain-HTTP port (jupyterhub-http.socket, or bound here: port 80
    // needs root then) for HTTP-01 and the redirect to HTTPS; TLS-ALPN-01 needs none, and
    // redirects only from a socket-activated one.
    let plain = match (&hub.config().letsencrypt, activated.redirect) {
        (None, _) => None,
        (Some(_), Some(listener)) => Some(listener),
        (Some(letsencrypt), None) if letsencrypt.tls_alpn() => None,
        (Some(letsencrypt), None) => {
            let ip = match hub.config().hub.ip.as_str() {
                "" => "0.0.0.0",
                ip => ip,
            };
            let addr = if ip.contains(':') {
                format!("[{ip}]:{}", letsencrypt.http_port)
            } else {
                format!("{ip}:{}", letsencrypt.http_port)
            };
            let listener = crate::proxy::bind(addr.as_str())
                .await
                .map_err(|source| Error::PlainBind { addr, source })?;
            Some(listener)
        }
    };
    if !hub.spawner_supports_limits() && hub.config().spawner.mem_limit.is_some() {
        tracing::warn!(
            spawner = hub.spawner_name(),
            "memory and CPU limits are configured but this spawner cannot enforce them"
        );
    }
    hub.reconcile().await?;
    hub.start_watchers();
    tracing::info!(public = %public.local_addr()?, internal = %internal.local_addr()?, "JupyterHub is now running");
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    serve(hub, public, internal, plain, shutdown).await
}
