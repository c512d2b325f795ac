//! Websocket pieces both bench helpers use: the echo a stub backend serves, and the
//! round-trip probe. Included with `#[path]` (examples cannot share a library of their own).

use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// If `req` asks for a websocket, accept it and echo text and binary messages; the 101
/// answer to send back. `None` for ordinary requests.
pub fn echo_upgrade(req: &mut Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let key = req.headers().get("sec-websocket-key")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
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
    Some(r)
}

/// `n` round trips of 100-byte text messages after 100 warm-ups: milliseconds, sorted.
pub async fn round_trips(
    url: &str,
    n: usize,
) -> Result<Vec<f64>, Box<dyn std::error::Error + Send + Sync>> {
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
    Ok(samples)
}
