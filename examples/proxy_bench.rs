//! Helpers for bench/proxy.sh (not a test): `proxy_bench backend PORT` serves a trivial HTTP
//! backend with a websocket echo on `/ws`; `proxy_bench ws-rtt URL N` prints websocket
//! round-trip latency percentiles over N messages.

#[path = "common/websocket.rs"]
mod websocket;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

async fn handle(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(upgrade) = websocket::echo_upgrade(&mut req) {
        return Ok(upgrade);
    }
    let mut r = Response::new(Full::new(Bytes::from_static(b"{\"status\": \"ok\"}\n")));
    r.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    Ok(r)
}

async fn backend(port: u16) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .with_upgrades()
                .await;
        });
    }
}

async fn ws_rtt(url: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let samples = websocket::round_trips(url, n)
        .await
        .map_err(|e| e.to_string())?;
    let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!("ws_rtt_ms p50={:.3} p99={:.3} n={n}", p(0.5), p(0.99));
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("backend") => {
            let port = args.get(2).ok_or("usage: backend PORT")?.parse()?;
            backend(port).await?;
        }
        Some("ws-rtt") => {
            let url = args.get(2).ok_or("usage: ws-rtt URL N")?;
            let n = args.get(3).map_or(Ok(2000), |n| n.parse())?;
            ws_rtt(url, n).await?;
        }
        _ => return Err("usage: proxy_bench backend PORT | ws-rtt URL N".into()),
    }
    Ok(())
}
