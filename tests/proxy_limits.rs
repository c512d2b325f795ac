//! What one client may hold, through raw sockets against the proxy in-process: header, body
//! and keep-alive timeouts, the per-address connection cap, the head limit, Host rules and
//! framing normalisation, on both the fast path and the hyper path (a connection is on the
//! hyper path once it has sent a request without a route: `hyper_path`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jupyterhub::proxy::{self, Limits, Proxy, RouteTable, Target};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

#[path = "common/port.rs"]
mod port;

/// The longest any test waits for one event; the events themselves come within seconds.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- the target

/// Where the request the target received ends: the head, then the body as it arrived.
const BODY_MARK: &str = "\r\n--body--\r\n";

/// A raw HTTP/1.1 target that answers each request with the bytes of the request it received
/// (head, `BODY_MARK`, body as framed), or, for a path ending in `bad-chunked`, with a
/// response whose chunked framing is broken.
async fn echo_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo_connection(stream));
        }
    });
    addr
}

async fn echo_connection(mut stream: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let (head_len, path, length, chunked) = loop {
            let mut storage = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut storage);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap_or(0));
                let chunked = header("transfer-encoding").is_some();
                break (n, req.path.unwrap_or("").to_owned(), length, chunked);
            }
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        // The body, by its framing, exactly as it arrived.
        let body_end = loop {
            let end = if chunked {
                chunked_end(&buf[head_len..]).map(|n| head_len + n)
            } else {
                (buf.len() >= head_len + length).then_some(head_len + length)
            };
            if let Some(end) = end {
                break end;
            }
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        if path.ends_with("bad-chunked") {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n",
                )
                .await;
            return;
        }
        let mut echo = buf[..head_len].to_vec();
        echo.extend_from_slice(BODY_MARK.as_bytes());
        echo.extend_from_slice(&buf[head_len..body_end]);
        buf.drain(..body_end);
        let mut res =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", echo.len()).into_bytes();
        res.extend_from_slice(&echo);
        if stream.write_all(&res).await.is_err() {
            return;
        }
    }
}

/// Where a chunked body that starts `body` ends, once it is all there.
fn chunked_end(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let (line, size) = match httparse::parse_chunk_size(&body[at..]) {
            Ok(httparse::Status::Complete(pair)) => pair,
            _ => return None,
        };
        at += line;
        if size == 0 {
            // Trailers, up to the empty line.
            let rest = &body[at..];
            if rest.starts_with(b"\r\n") {
                return Some(at + 2);
            }
            return rest
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| at + i + 4);
        }
        at += usize::try_from(size).ok()? + 2;
        if at > body.len() {
            return None;
        }
    }
}

/// Read more of `stream` into `buf`; false at EOF or on an error (a reset is a close too).
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16384];
    match stream.read(&mut chunk).await {
        Ok(n) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

// ---------------------------------------------------------------- the proxy

struct InProcess {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(30),
        max_connections_per_ip: 0,
    }
}

/// The proxy with `/user/a/` routed to a fresh echo target.
async fn start(limits: Limits) -> InProcess {
    let routes = Arc::new(RouteTable::new());
    let target = echo_target().await;
    routes.add(
        "/user/a/",
        Target::Url(format!("http://{target}").parse().expect("uri")),
        Value::Null,
    );
    let mut proxy = Proxy::new(routes, None);
    proxy.set_limits(limits);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    tokio::spawn(proxy::serve(listener, Arc::new(proxy), None, stop.clone()));
    InProcess { addr, stop }
}

// ---------------------------------------------------------------- a client

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The head the target received (lowercase), when this is the echo target's answer.
    fn seen_head(&self) -> String {
        let text = self.text();
        text.split(BODY_MARK)
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
    }
    fn seen_body(&self) -> String {
        let text = self.text();
        text.split_once(BODY_MARK)
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    /// A connection from another loopback address.
    async fn connect_from(addr: SocketAddr, from: [u8; 4]) -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((from, 0)))
            .expect("bind client");
        Self {
            stream: socket.connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    /// A connection the hyper path serves: its first request has no route (404).
    async fn hyper_path(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr).await;
        assert_eq!(
            c.ask(b"GET /nowhere HTTP/1.1\r\nHost: hub.test\r\n\r\n")
                .await
                .status,
            404
        );
        c
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn ask(&mut self, bytes: &[u8]) -> Answer {
        self.send(bytes).await;
        self.answer().await.expect("an answer")
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.ask(format!("GET {path} HTTP/1.1\r\nHost: hub.test\r\n\r\n").as_bytes())
            .await
    }

    async fn more(&mut self) -> bool {
        tokio::time::timeout(DEADLINE, read_more(&mut self.stream, &mut self.buf))
            .await
            .expect("the proxy neither answered nor closed in time")
    }

    /// The next response, or `None` if the connection closed first.
    async fn answer(&mut self) -> Option<Answer> {
        let (status, headers, head_len) = loop {
            let mut storage = [httparse::EMPTY_HEADER; 64];
            let mut res = httparse::Response::new(&mut storage);
            if let httparse::Status::Complete(n) = res.parse(&self.buf).expect("a response head") {
                let headers = res
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (res.code.expect("status"), headers, n);
            }
            if !self.more().await {
                return None;
            }
        };
        self.buf.drain(..head_len);
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        match answer
            .header("content-length")
            .map(|n| n.parse::<usize>().expect("length"))
        {
            Some(n) => {
                while self.buf.len() < n {
                    assert!(self.more().await, "EOF inside a body");
                }
                answer.body = self.buf.drain(..n).collect();
            }
            None => {
                while self.more().await {}
                answer.body = std::mem::take(&mut self.buf);
            }
        }
        Some(answer)
    }

    /// Wait (up to `DEADLINE`) for the proxy to close this connection without answering;
    /// how long that took.
    async fn closed_silently(&mut self) -> Duration {
        let started = Instant::now();
        assert!(
            !self.more().await,
            "expected a close, got {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        assert!(self.buf.is_empty());
        started.elapsed()
    }
}

// ---------------------------------------------------------------- timeouts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_are_closed_after_the_header_timeout() {
    let p = start(Limits {
        header_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    // Fast path: nothing at all, and half a head.
    let mut silent = Client::connect(p.addr).await;
    let mut half = Client::connect(p.addr).await;
    half.send(b"GET /user/a/ HTTP/1.1\r\nHost: hub.test\r\nX-Slow: ")
        .await;
    let waited = silent.closed_silently().await;
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    half.closed_silently().await;
    // Hyper path: the same after a first request.
    let mut silent = Client::hyper_path(p.addr).await;
    let mut half = Client::hyper_path(p.addr).await;
    half.send(b"GET /user/a/ HTTP/1.1\r\nHost: hub.test\r\nX-Slow: ")
        .await;
    let waited = silent.closed_silently().await;
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    half.closed_silently().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_closed() {
    let p = start(Limits {
        body_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let stalled =
        b"POST /user/a/upload HTTP/1.1\r\nHost: hub.test\r\nContent-Length: 100\r\n\r\n0123456789";
    for mut c in [
        Client::connect(p.addr).await,
        Client::hyper_path(p.addr).await,
    ] {
        c.send(stalled).await;
        let started = Instant::now();
        // 408, then the close; or the close alone.
        if let Some(answer) = c.answer().await {
            assert_eq!(answer.status, 408);
            assert!(c.answer().await.is_none(), "closed after the 408");
        }
        assert!(started.elapsed() >= Duration::from_millis(700));
    }
    // A body that keeps coming, slower than the timeout in total, is not cut.
    let mut c = Client::connect(p.addr).await;
    c.send(b"POST /user/a/upload HTTP/1.1\r\nHost: hub.test\r\nContent-Length: 6\r\n\r\n")
        .await;
    for piece in [&b"ab"[..], b"cd", b"ef"] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        c.send(piece).await;
    }
    let answer = c.answer().await.expect("answer");
    assert_eq!(
        (answer.status, answer.seen_body()),
        (200, "abcdef".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let p = start(Limits {
        keepalive_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut fast = Client::connect(p.addr).await;
    assert_eq!(fast.get("/user/a/x").await.status, 200);
    let waited = fast.closed_silently().await;
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let mut slow = Client::hyper_path(p.addr).await;
    assert_eq!(slow.get("/user/a/x").await.status, 200);
    let waited = slow.closed_silently().await;
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // A connection in use is not idle: requests 0.6 s apart keep it open past the timeout.
    let mut busy = Client::connect(p.addr).await;
    for _ in 0..4 {
        assert_eq!(busy.get("/user/a/x").await.status, 200);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}

// ---------------------------------------------------------------- the connection cap

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_refuses_one_address_only() {
    let p = start(Limits {
        max_connections_per_ip: 3,
        ..limits()
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(p.addr).await;
        assert_eq!(c.get("/user/a/x").await.status, 200);
        open.push(c);
    }
    // The fourth from 127.0.0.1 is refused: a 503, or just the close.
    let mut over = Client::connect(p.addr).await;
    over.send(b"GET /user/a/x HTTP/1.1\r\nHost: hub.test\r\n\r\n")
        .await;
    if let Some(answer) = over.answer().await {
        assert_eq!(answer.status, 503);
    }
    // Another address is not affected, nor are the open connections.
    let mut other = Client::connect_from(p.addr, [127, 0, 0, 2]).await;
    assert_eq!(other.get("/user/a/x").await.status, 200);
    for c in &mut open {
        assert_eq!(c.get("/user/a/again").await.status, 200);
    }
    // Once one closes, there is room again (as soon as the proxy has seen the close).
    drop(open.pop());
    let started = Instant::now();
    loop {
        let mut c = Client::connect(p.addr).await;
        c.send(b"GET /user/a/x HTTP/1.1\r\nHost: hub.test\r\n\r\n")
            .await;
        match c.answer().await {
            Some(a) if a.status == 200 => break,
            _ => assert!(started.elapsed() < DEADLINE, "no room after a close"),
        }
        tokio::task::yield_now().await;
    }
}

// ---------------------------------------------------------------- heads and Host

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_kib_head_gets_431_on_both_paths() {
    let p = start(limits()).await;
    let big = format!(
        "GET /user/a/x HTTP/1.1\r\nHost: hub.test\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20 << 10)
    );
    let mut fast = Client::connect(p.addr).await;
    assert_eq!(fast.ask(big.as_bytes()).await.status, 431);
    let mut slow = Client::hyper_path(p.addr).await;
    assert_eq!(slow.ask(big.as_bytes()).await.status, 431);
    // An upgrade request goes to hyper too, and is refused the same.
    let upgrade = big.replace(
        "Host: hub.test\r\n",
        "Host: hub.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n",
    );
    let mut c = Client::connect(p.addr).await;
    assert_eq!(c.ask(upgrade.as_bytes()).await.status, 431);
    // Just under the limit is fine.
    let fits = format!(
        "GET /user/a/x HTTP/1.1\r\nHost: hub.test\r\nX-Big: {}\r\n\r\n",
        "b".repeat(15 << 10)
    );
    let mut c = Client::connect(p.addr).await;
    assert_eq!(c.ask(fits.as_bytes()).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_must_be_one_valid_header() {
    let p = start(limits()).await;
    for bad in [
        "GET /user/a/x HTTP/1.1\r\n\r\n",
        "GET /user/a/x HTTP/1.1\r\nHost: hub.test\r\nHost: other.test\r\n\r\n",
        "GET /user/a/x HTTP/1.1\r\nHost: hub.test\r\nhost: hub.test\r\n\r\n",
        "GET /user/a/x HTTP/1.1\r\nHost: user@hub.test\r\n\r\n",
        "GET /user/a/x HTTP/1.1\r\nHost: hub test\r\n\r\n",
        "GET /user/a/x HTTP/1.1\r\nHost: hub.test:80x\r\n\r\n",
        "GET /user/a/x HTTP/1.1\r\nHost:\r\n\r\n",
        "GET /user/a/x HTTP/1.1\r\nHost: hub.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nHost: x\r\n\r\n",
    ] {
        let mut fast = Client::connect(p.addr).await;
        assert_eq!(
            fast.ask(bad.as_bytes()).await.status,
            400,
            "fast path: {bad:?}"
        );
        let mut slow = Client::hyper_path(p.addr).await;
        assert_eq!(
            slow.ask(bad.as_bytes()).await.status,
            400,
            "hyper path: {bad:?}"
        );
    }
    for good in [
        "hub.test",
        "hub.test:8000",
        "127.0.0.1:8000",
        "[::1]:8000",
        "[::1]",
    ] {
        let req = format!("GET /user/a/x HTTP/1.1\r\nHost: {good}\r\n\r\n");
        let mut fast = Client::connect(p.addr).await;
        assert_eq!(fast.ask(req.as_bytes()).await.status, 200, "{good}");
        let mut slow = Client::hyper_path(p.addr).await;
        assert_eq!(slow.ask(req.as_bytes()).await.status, 200, "{good}");
    }
    // HTTP/1.0 may leave Host out.
    let mut c = Client::connect(p.addr).await;
    assert_eq!(c.ask(b"GET /user/a/x HTTP/1.0\r\n\r\n").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_host_never_drops_host() {
    let p = start(limits()).await;
    let req =
        b"GET /user/a/x HTTP/1.1\r\nHost: hub.test\r\nConnection: host, x-hop\r\nX-Hop: 1\r\n\r\n";
    for mut c in [
        Client::connect(p.addr).await,
        Client::hyper_path(p.addr).await,
    ] {
        let answer = c.ask(req).await;
        assert_eq!(answer.status, 200);
        let head = answer.seen_head();
        assert!(head.contains("\r\nhost: hub.test\r\n"), "{head}");
        assert!(!head.contains("x-hop"), "{head}");
    }
}

// ---------------------------------------------------------------- framing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunked_requests_get_400() {
    let p = start(limits()).await;
    for bad in [
        &b"POST /user/a/up HTTP/1.1\r\nHost: hub.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
        b"POST /user/a/up HTTP/1.1\r\nHost: hub.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    ] {
        let mut fast = Client::connect(p.addr).await;
        assert_eq!(fast.ask(bad).await.status, 400);
        let mut slow = Client::hyper_path(p.addr).await;
        assert_eq!(slow.ask(bad).await.status, 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_s_bad_chunked_response_is_502() {
    let p = start(limits()).await;
    let mut c = Client::connect(p.addr).await;
    let answer = c.get("/user/a/bad-chunked").await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.header("connection"), Some("close"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_reaches_the_target_normalised() {
    let p = start(limits()).await;
    let mut c = Client::connect(p.addr).await;
    // Two identical Content-Length lines arrive as one.
    let answer = c
        .ask(b"POST /user/a/up HTTP/1.1\r\nHost: hub.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc")
        .await;
    let head = answer.seen_head();
    assert_eq!(head.matches("content-length").count(), 1, "{head}");
    assert!(head.contains("content-length: 3\r\n"), "{head}");
    assert_eq!(answer.seen_body(), "abc");
    let mut slow = Client::hyper_path(p.addr).await;
    let answer = slow
        .ask(b"POST /user/a/up HTTP/1.1\r\nHost: hub.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc")
        .await;
    let head = answer.seen_head();
    assert_eq!(
        head.matches("content-length").count(),
        1,
        "hyper path: {head}"
    );
    assert_eq!(answer.seen_body(), "abc");
    // Leading zeros go.
    let answer = c
        .ask(b"POST /user/a/up HTTP/1.1\r\nHost: hub.test\r\nContent-Length: 003\r\n\r\nabc")
        .await;
    assert!(answer.seen_head().contains("content-length: 3\r\n"));
    // Chunk sizes with whitespace, extensions, leading zeros and trailers are re-emitted
    // plainly; the data is unchanged.
    let answer = c
        .ask(b"POST /user/a/up HTTP/1.1\r\nHost: hub.test\r\nTransfer-Encoding: Chunked\r\nTrailer: X-Sum\r\n\r\n\
            03 \t\r\nabc\r\n2;ext=\"v\"\r\nde\r\n000\r\nX-Sum: 5\r\n\r\n")
        .await;
    assert_eq!(answer.status, 200);
    let head = answer.seen_head();
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert!(!head.contains("trailer"), "{head}");
    assert_eq!(answer.seen_body(), "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    // The same connection still works.
    assert_eq!(c.get("/user/a/last").await.status, 200);
}

// ---------------------------------------------------------------- the internal API

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_app_has_the_same_limits() {
    let app = axum::Router::new().route(
        "/hub/api/",
        axum::routing::get(
            |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| async move {
                peer.ip().to_string()
            },
        ),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    tokio::spawn(proxy::serve_app(
        listener,
        app,
        Limits {
            header_timeout: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
            ..limits()
        },
        stop.clone(),
    ));
    let mut c = Client::connect(addr).await;
    let answer = c.get("/hub/api/").await;
    assert_eq!(
        (answer.status, answer.text()),
        (200, "127.0.0.1".to_owned())
    );
    c.closed_silently().await;
    let mut c = Client::connect(addr).await;
    c.closed_silently().await;
    let mut c = Client::connect(addr).await;
    assert_eq!(c.ask(b"GET /hub/api/ HTTP/1.1\r\n\r\n").await.status, 400);
    let big = format!(
        "GET /hub/api/ HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20 << 10)
    );
    let mut c = Client::connect(addr).await;
    assert_eq!(c.ask(big.as_bytes()).await.status, 431);
    stop.cancel();
}

// ---------------------------------------------------------------- out of descriptors

/// CPU time (user + system, in clock ticks) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// A child process, killed on drop, with the ports it was given.
struct Child(
    std::process::Child,
    #[expect(dead_code, reason = "held, not read: it keeps the ports reserved")]
    [port::ReservedPort; 2],
);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_accept_loop_backs_off_and_recovers() {
    let target = echo_target().await;
    // Held (bound, not listening) until the child binds them with SO_REUSEADDR, so no other
    // test takes them in between.
    let ports = [port::reserve_port(), port::reserve_port()];
    let (port, api_port) = (ports[0].port, ports[1].port);
    // The drop-in with room for only a few dozen descriptors.
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 48 && exec {} proxy --ip 127.0.0.1 --port {port} --api-ip 127.0.0.1 \
             --api-port {api_port} --default-target http://{target} --max-connections-per-ip 0",
            env!("CARGO_BIN_EXE_jupyterhub")
        ))
        .env("CONFIGPROXY_AUTH_TOKEN", "limits-test-token")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn jupyterhub proxy");
    let child = Child(child, ports);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(started.elapsed() < DEADLINE, "the proxy did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // More idle connections than descriptors: the rest wait in the backlog, and accept fails.
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = cpu_ticks(child.0.id());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(child.0.id()) - before;
    // A spinning loop would use the whole second (100 ticks); backing off uses almost nothing.
    assert!(
        used < 20,
        "{used} ticks in one second while out of descriptors"
    );
    drop(held);
    let started = Instant::now();
    loop {
        if let Ok(stream) = TcpStream::connect(addr).await {
            let mut c = Client {
                stream,
                buf: Vec::new(),
            };
            c.send(b"GET /x HTTP/1.1\r\nHost: hub.test\r\n\r\n").await;
            if matches!(c.answer().await, Some(a) if a.status == 200) {
                break;
            }
        }
        assert!(started.elapsed() < DEADLINE, "the proxy did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
