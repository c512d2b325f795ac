//! Slowloris against the public port: 2 000 connections that each send part of a request
//! head and stall must neither starve a normal client nor outlive the header timeout, and
//! with the per-address cap on, connections over it are refused while another address is
//! served. The proxy runs as its own process (the drop-in, `jupyterhub proxy`, which serves
//! the public port exactly as the hub does) so its memory can be read from /proc; the peak
//! is printed (`--nocapture`) and recorded in docs/robustness.md.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

#[path = "common/descriptors.rs"]
mod descriptors;
#[path = "common/drop_in.rs"]
mod drop_in;
use descriptors::raise_descriptor_limit;
use drop_in::{Child, status_kb};

/// Stalled connections in the main test.
const STALLED: usize = 2000;
/// The proxy's header timeout there, in seconds.
const HEADER_TIMEOUT: u64 = 2;
/// The longest any test waits for one event.
const DEADLINE: Duration = Duration::from_secs(20);
/// What each stalled connection sends: a head cut off inside a header.
const PARTIAL: &[u8] = b"GET /x HTTP/1.1\r\nHost: hub.test\r\nX-Slow: ";
const REQUEST: &[u8] = b"GET /x HTTP/1.1\r\nHost: hub.test\r\n\r\n";

const NORMAL: [u8; 4] = [127, 0, 0, 2];
/// Where the readiness probe comes from, so it never counts against 127.0.0.1's cap.
const PROBE: [u8; 4] = [127, 0, 0, 3];

/// The tests take turns: each loads the machine on its own, and their timings are about
/// the proxy, not about each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A backend that answers every request head with a 200 `ok`.
async fn backend() -> SocketAddr {
    // A deep backlog: the proxy may connect for a thousand clients at once.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind backend");
    let listener = socket.listen(4096).expect("listen");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
            });
        }
    });
    addr
}

/// The drop-in proxy, everything routed to `target`, once it accepts connections.
async fn proxy(target: SocketAddr, flags: &[&str]) -> (Child, SocketAddr) {
    drop_in::start(target, flags, PROBE).await
}

async fn connect_from(addr: SocketAddr, from: [u8; 4]) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(addr).await
}

/// One request on `stream`; its status (the body is read and dropped).
async fn get(stream: &mut TcpStream) -> u16 {
    stream.write_all(REQUEST).await.expect("write request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut res = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = res.parse(&buf).expect("a response head") {
            let length: usize = res
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map_or(0, |h| {
                    std::str::from_utf8(h.value)
                        .expect("length")
                        .parse()
                        .expect("length")
                });
            let status = res.code.expect("status");
            while buf.len() < n + length {
                let got = stream.read(&mut chunk).await.expect("read body");
                assert!(got > 0, "EOF inside a body");
                buf.extend_from_slice(&chunk[..got]);
            }
            return status;
        }
        let got = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(got > 0, "closed before an answer");
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// A normal request on a fresh connection from `from`.
async fn get_fresh(addr: SocketAddr, from: [u8; 4]) -> u16 {
    let mut stream = connect_from(addr, from).await.expect("connect");
    get(&mut stream).await
}

/// What a stalled connection saw first.
#[derive(Debug)]
enum Seen {
    /// Closed (or reset) without a byte, this long after it was opened.
    Closed(Duration),
    /// These first bytes.
    Data(Vec<u8>),
}

/// Open a connection from 127.0.0.1 that sends `PARTIAL` and stalls; a task reports on
/// `events` what it first sees. The write half is returned (to finish the head with).
async fn stall(
    addr: SocketAddr,
    index: usize,
    events: &mpsc::UnboundedSender<(usize, Seen)>,
) -> tokio::net::tcp::OwnedWriteHalf {
    let opened = Instant::now();
    let stream = TcpStream::connect(addr).await.expect("connect stalled");
    let (mut read, mut write) = stream.into_split();
    // A refused connection may already be closed by the proxy: that shows on the read.
    let _ = write.write_all(PARTIAL).await;
    let events = events.clone();
    tokio::spawn(async move {
        let mut chunk = [0u8; 256];
        let seen = match read.read(&mut chunk).await {
            Ok(n) if n > 0 => Seen::Data(chunk[..n].to_vec()),
            _ => Seen::Closed(opened.elapsed()),
        };
        let _ = events.send((index, seen));
    });
    write
}

/// Descriptors the process `pid` has open.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// `stall` for each index, 32 at a time, never more than 64 ahead of what the proxy (`pid`)
/// has accepted (counting at most `admitted` connections, the cap): connecting much faster
/// than it accepts could overflow its listen backlog on a loaded machine, and a dropped SYN
/// is retried a second later, which a 2 s header timeout notices. A batch starts once the
/// previous one is connected, so the proxy accepts batches in order.
async fn stall_many(
    addr: SocketAddr,
    pid: u32,
    count: usize,
    admitted: usize,
    events: &mpsc::UnboundedSender<(usize, Seen)>,
) -> Vec<tokio::net::tcp::OwnedWriteHalf> {
    let before = descriptors(pid);
    let mut all = Vec::with_capacity(count);
    let indexes: Vec<usize> = (0..count).collect();
    for batch in indexes.chunks(32) {
        let started = Instant::now();
        while descriptors(pid) + 64 < before + all.len().min(admitted) {
            assert!(
                started.elapsed() < DEADLINE,
                "the proxy stopped accepting at {} of {} connections",
                descriptors(pid).saturating_sub(before),
                all.len(),
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let opened = batch.iter().map(|&index| stall(addr, index, events));
        all.extend(futures_util::future::join_all(opened).await);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_stalled_heads_neither_starve_others_nor_outlive_the_header_timeout() {
    let _turn = ONE_AT_A_TIME.lock().await;
    raise_descriptor_limit(STALLED as u64 + 512);
    let target = backend().await;
    let (child, addr) = proxy(
        target,
        &[
            "--header-timeout",
            &HEADER_TIMEOUT.to_string(),
            "--max-connections-per-ip",
            "0",
        ],
    )
    .await;
    let pid = child.0.id();
    for _ in 0..20 {
        assert_eq!(get_fresh(addr, NORMAL).await, 200);
    }
    let baseline_kb = status_kb(pid, "VmRSS");

    let (events, mut seen) = mpsc::unbounded_channel();
    let closed = Arc::new(AtomicUsize::new(0));
    let opening = Instant::now();
    let stalled = stall_many(addr, pid, STALLED, usize::MAX, &events).await;
    drop(events);
    let opened_in = opening.elapsed();
    // Count the closes as they come, for the normal client to see.
    let counter = closed.clone();
    let collect = tokio::spawn(async move {
        let mut all = Vec::with_capacity(STALLED);
        while let Some(event) = seen.recv().await {
            counter.fetch_add(1, Ordering::SeqCst);
            all.push(event);
        }
        all
    });
    tokio::task::yield_now().await;
    assert_eq!(
        closed.load(Ordering::SeqCst),
        0,
        "a stalled connection closed before all {STALLED} were open ({opened_in:?}): \
         this machine is too slow for a {HEADER_TIMEOUT} s header timeout"
    );

    // A normal client, on one kept-alive connection and on fresh ones, until the proxy has
    // closed every stalled connection.
    let mut kept = connect_from(addr, NORMAL).await.expect("connect");
    let (mut while_all_held, mut total, mut slowest) = (0, 0, Duration::ZERO);
    let mut peak_kb = 0;
    let started = Instant::now();
    while closed.load(Ordering::SeqCst) < STALLED {
        assert!(
            started.elapsed() < DEADLINE,
            "only {} of {STALLED} stalled connections were closed",
            closed.load(Ordering::SeqCst)
        );
        let held = closed.load(Ordering::SeqCst) == 0;
        let asked = Instant::now();
        assert_eq!(get(&mut kept).await, 200, "kept-alive request");
        assert_eq!(get_fresh(addr, NORMAL).await, 200, "fresh request");
        slowest = slowest.max(asked.elapsed());
        total += 2;
        if held {
            while_all_held += 2;
        }
        peak_kb = peak_kb.max(status_kb(pid, "VmRSS"));
    }
    // The high-water mark is updated lazily; the larger of it and the samples is the peak.
    let peak_kb = peak_kb.max(status_kb(pid, "VmHWM"));
    let events = collect.await.expect("collector");
    assert_eq!(events.len(), STALLED);
    let mut latest = Duration::ZERO;
    for (index, event) in &events {
        match event {
            Seen::Closed(after) => {
                assert!(
                    *after >= Duration::from_secs(HEADER_TIMEOUT) - Duration::from_millis(300),
                    "stalled connection {index} closed after only {after:?}"
                );
                latest = latest.max(*after);
            }
            Seen::Data(bytes) => panic!(
                "stalled connection {index} got {:?}",
                String::from_utf8_lossy(bytes)
            ),
        }
    }
    // Closed by the timeout, not by the end of the test: well before twice it (and slack
    // for a loaded machine).
    assert!(
        latest < Duration::from_secs(2 * HEADER_TIMEOUT + 2),
        "the last stalled connection was closed only after {latest:?}"
    );
    assert!(
        while_all_held > 0,
        "no normal request finished while all {STALLED} were held"
    );
    // And afterwards, of course.
    assert_eq!(get_fresh(addr, NORMAL).await, 200);
    drop(stalled);
    println!(
        "slowloris: {STALLED} stalled connections opened in {opened_in:?}; {total} normal \
         requests ({while_all_held} while all were held), slowest pair {slowest:?}; all \
         closed by {latest:?} (header timeout {HEADER_TIMEOUT} s); proxy VmRSS {baseline_kb} kB \
         before, peak {peak_kb} kB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_default_cap_one_address_is_refused_and_another_is_served() {
    // The default cap (1024 per address) and header timeout (30 s, so none is closed for it).
    const CAP: usize = 1024;
    const OVER: usize = 76;
    let _turn = ONE_AT_A_TIME.lock().await;
    raise_descriptor_limit((CAP + OVER) as u64 + 512);
    let target = backend().await;
    let (child, addr) = proxy(target, &[]).await;
    let (events, mut seen) = mpsc::unbounded_channel();
    let mut stalled = stall_many(addr, child.0.id(), CAP + OVER, CAP, &events).await;
    // The proxy admits in accept order: the last OVER are refused (a 503, or just the close).
    for _ in 0..OVER {
        let (index, event) = tokio::time::timeout(DEADLINE, seen.recv())
            .await
            .expect("refusals in time")
            .expect("an event");
        assert!(
            index >= CAP,
            "connection {index} (under the cap) saw {event:?}"
        );
        if let Seen::Data(bytes) = &event {
            assert!(
                bytes.starts_with(b"HTTP/1.1 503"),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    // Another address is served, over and over, while 127.0.0.1 is at its cap.
    for _ in 0..10 {
        assert_eq!(get_fresh(addr, NORMAL).await, 200);
    }
    let mut refused = TcpStream::connect(addr).await.expect("connect");
    refused.write_all(REQUEST).await.expect("write");
    let mut chunk = [0u8; 256];
    match tokio::time::timeout(DEADLINE, refused.read(&mut chunk))
        .await
        .expect("refused in time")
    {
        Ok(n) if n > 0 => assert!(chunk.starts_with(b"HTTP/1.1 503")),
        _ => {}
    }
    // The admitted ones were held, not dropped: finishing their heads gets each a 200.
    for write in stalled.iter_mut().take(CAP) {
        write.write_all(b"1\r\n\r\n").await.expect("finish head");
    }
    let mut answered = 0;
    while answered < CAP {
        let (index, event) = tokio::time::timeout(DEADLINE, seen.recv())
            .await
            .expect("answers in time")
            .expect("an event");
        match event {
            Seen::Data(bytes) if bytes.starts_with(b"HTTP/1.1 200") => answered += 1,
            other => panic!("admitted connection {index}: {other:?}"),
        }
    }
}
