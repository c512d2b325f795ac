//! A thousand websockets through the public port, held open with traffic: the proxy runs as
//! its own process (the drop-in, `jupyterhub proxy`, which serves the public port as the hub
//! does) in front of a websocket echo target. Every connection must stay up and every
//! message come back intact for the whole run, and the proxy must still answer a plain
//! request afterwards. Its memory is printed (`--nocapture`), never asserted, and recorded in
//! docs/robustness.md. `SOAK_SECONDS` (default 10) makes the run longer by hand.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

#[path = "common/descriptors.rs"]
mod descriptors;
#[path = "common/drop_in.rs"]
mod drop_in;

const SOCKETS: usize = 1000;
const PROBE: [u8; 4] = [127, 0, 0, 3];

/// A websocket target that echoes every message, on a deep backlog.
async fn echo_target() -> SocketAddr {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind target");
    let listener = socket.listen(4096).expect("listen");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() || ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_websockets_stay_up_with_traffic() {
    descriptors::raise_descriptor_limit(2 * SOCKETS as u64 + 512);
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let target = echo_target().await;
    let (child, addr) = drop_in::start(target, &[], PROBE).await;
    let pid = child.0.id();
    let baseline = drop_in::status_kb(pid, "VmRSS");

    // Opened 50 at a time (a burst of a thousand SYNs could overflow a listen backlog on a
    // loaded machine), each a kernel channel of a notebook as JupyterLab opens it.
    let mut sockets = Vec::with_capacity(SOCKETS);
    let indexes: Vec<usize> = (0..SOCKETS).collect();
    for batch in indexes.chunks(50) {
        let opened = batch.iter().map(|i| async move {
            let url = format!("ws://{addr}/user/u{i}/api/kernels/k{i}/channels");
            let (ws, response) = tokio_tungstenite::connect_async(url)
                .await
                .unwrap_or_else(|e| panic!("websocket {i}: {e}"));
            assert_eq!(response.status(), 101);
            ws
        });
        sockets.extend(futures_util::future::join_all(opened).await);
    }
    let connected = drop_in::status_kb(pid, "VmRSS");

    // One message per socket per second, each checked on its way back.
    let started = Instant::now();
    let mut rounds = 0u64;
    let mut samples = vec![connected];
    while started.elapsed() < Duration::from_secs(seconds) {
        let tick = Instant::now();
        let exchanged = sockets.iter_mut().enumerate().map(|(i, ws)| async move {
            let text = format!("{i}:{rounds}:{}", "x".repeat(64));
            ws.send(Message::text(text.clone()))
                .await
                .unwrap_or_else(|e| panic!("socket {i} round {rounds}: send: {e}"));
            match ws.next().await {
                Some(Ok(Message::Text(echo))) => {
                    assert_eq!(echo.as_str(), text, "socket {i} round {rounds}")
                }
                other => panic!("socket {i} round {rounds}: {other:?}"),
            }
        });
        futures_util::future::join_all(exchanged).await;
        rounds += 1;
        samples.push(drop_in::status_kb(pid, "VmRSS"));
        if let Some(rest) = Duration::from_secs(1).checked_sub(tick.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let peak = drop_in::status_kb(pid, "VmHWM");
    let last = samples.last().copied().unwrap_or(connected);
    println!(
        "{SOCKETS} websockets for {} s ({rounds} rounds, {} messages echoed): proxy VmRSS \
         {baseline} kB idle, {connected} kB connected, {last} kB at the end, VmHWM {peak} kB",
        started.elapsed().as_secs(),
        rounds * SOCKETS as u64,
    );
    assert!(rounds >= 2, "at least two rounds of traffic ran");

    // Closed cleanly, and the proxy serves as before.
    let closed = sockets.iter_mut().map(|ws| ws.close(None));
    futures_util::future::join_all(closed).await;
    let mut probe = tokio::net::TcpStream::connect(addr).await.expect("probe");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    probe
        .write_all(b"GET /api/ HTTP/1.1\r\nHost: hub.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("probe request");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), probe.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 "),
        "the proxy answers after the run: {:?}",
        String::from_utf8_lossy(&answer)
    );
}
