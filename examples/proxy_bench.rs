//! Helpers for bench/proxy.sh (not a test): `proxy_bench backend PORT` serves a trivial HTTP
//! backend with a websocket echo on `/ws`; `proxy_bench ws-rtt URL N` prints websocket
//! round-trip latency percentiles over N messages; `proxy_bench rate ADDR PATH RPS SECONDS
//! CONNECTIONS` sends GETs at a fixed rate (open loop) and prints latency percentiles.

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

/// Requests at a fixed rate, spread over `conns` keep-alive connections, each on its own
/// thread: request `j` is due at `j / rps` seconds and its latency counts from then, so a slow
/// answer that delays the next requests shows in their latencies too (no coordinated
/// omission). wrk keeps its connections busy, which saturates the machine; at a fixed rate
/// below capacity the figure is the latency a request meets under that load.
fn rate(addr: &str, path: &str, rps: f64, seconds: f64, conns: usize) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let total = (rps * seconds) as usize;
    let start = Instant::now() + Duration::from_millis(100);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            let (addr, request) = (addr.to_owned(), request.clone());
            std::thread::spawn(move || -> Result<Vec<f64>, String> {
                let mut stream = std::net::TcpStream::connect(&addr).map_err(|e| e.to_string())?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                let mut lat = Vec::with_capacity(total / conns + 1);
                let mut buf = Vec::with_capacity(4096);
                let mut chunk = [0u8; 4096];
                for j in (i..total).step_by(conns) {
                    let due = start + Duration::from_secs_f64(j as f64 / rps);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    stream
                        .write_all(request.as_bytes())
                        .map_err(|e| e.to_string())?;
                    buf.clear();
                    loop {
                        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
                        if n == 0 {
                            return Err("connection closed".into());
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let mut headers = [httparse::EMPTY_HEADER; 32];
                        let mut res = httparse::Response::new(&mut headers);
                        if let Ok(httparse::Status::Complete(head)) = res.parse(&buf) {
                            let len = res
                                .headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                .and_then(|h| {
                                    std::str::from_utf8(h.value).ok()?.parse::<usize>().ok()
                                })
                                .ok_or("response without Content-Length")?;
                            if buf.len() >= head + len {
                                break;
                            }
                        }
                    }
                    lat.push(due.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for t in threads {
        all.extend(t.join().map_err(|_| "load thread panicked")??);
    }
    let took = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let p = |q: f64| all[((all.len() as f64 - 1.0) * q) as usize];
    println!(
        "rate_ms p50={:.3} p99={:.3} n={} achieved={:.0}",
        p(0.5),
        p(0.99),
        all.len(),
        all.len() as f64 / took
    );
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
        Some("rate") => match &args[2..] {
            [addr, path, rps, seconds, conns, ..] => {
                rate(addr, path, rps.parse()?, seconds.parse()?, conns.parse()?)?;
            }
            _ => return Err("usage: rate ADDR PATH RPS SECONDS CONNECTIONS".into()),
        },
        _ => {
            return Err(
                "usage: proxy_bench backend PORT | ws-rtt URL N | rate ADDR PATH RPS SECONDS CONNECTIONS"
                    .into(),
            );
        }
    }
    Ok(())
}
