//! Helpers for bench/proxy.sh (not a test): `proxy_bench backend PORT` serves a trivial HTTP
//! backend with a websocket echo on `/ws`; `proxy_bench ws-rtt URL N` prints websocket
//! round-trip latency percentiles over N messages.

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

async fn handle(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.headers().contains_key("sec-websocket-key") {
        let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert("upgrade", "websocket".parse().expect("static header"));
        h.insert("connection", "Upgrade".parse().expect("static header"));
        h.insert(
            "sec-websocket-accept",
            accept.parse().expect("base64 is a valid header"),
        );
        return Ok(r);
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
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let payload = "x".repeat(100);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let start = Instant::now();
        ws.send(Message::text(payload.clone())).await?;
        ws.next().await.ok_or("websocket closed")??;
        if i >= 100 {
            samples.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    samples.sort_by(f64::total_cmp);
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
