//! The built-in proxy through real sockets on 127.0.0.1: routing, websockets, streaming with
//! the proxy process's memory measured, route changes under load, target down, TLS, activity,
//! and the configurable-http-proxy drop-in (`jupyterhub proxy`) with its REST API.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jupyterhub::proxy::{self, Proxy, RouteTable, Target};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

const GIB: u64 = 1 << 30;

// ---------------------------------------------------------------- test backend

/// A body of `left` zero bytes, produced in 64 KiB chunks without ever holding more.
struct Zeros {
    left: u64,
    chunk: Bytes,
}

impl Zeros {
    fn new(n: u64) -> Self {
        Self {
            left: n,
            chunk: Bytes::from(vec![0u8; 64 << 10]),
        }
    }
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

type TestBody = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r
}

async fn count_body(body: Incoming) -> u64 {
    let mut body = body;
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body frame").into_data() {
            n += data.len() as u64;
        }
    }
    n
}

/// The backend: echoes what it was asked (JSON), counts uploads, streams downloads, serves
/// error pages, and echoes websocket messages.
async fn backend_handle(
    tag: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    if req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v == "websocket")
    {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .expect("ws key")
            .as_bytes()
            .to_vec();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.expect("backend upgrade");
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                // tungstenite answers pings and closes by itself; data frames are echoed.
                if matches!(msg, Message::Text(_) | Message::Binary(_))
                    && ws.send(msg).await.is_err()
                {
                    break;
                }
            }
        });
        let mut r = full(StatusCode::SWITCHING_PROTOCOLS, "");
        r.headers_mut()
            .insert("upgrade", "websocket".parse().expect("hv"));
        r.headers_mut()
            .insert("connection", "Upgrade".parse().expect("hv"));
        r.headers_mut()
            .insert("sec-websocket-accept", accept.parse().expect("hv"));
        return Ok(r);
    }
    if path.ends_with("/upload") {
        let n = count_body(req.into_body()).await;
        return Ok(full(StatusCode::OK, n.to_string()));
    }
    if path.ends_with("/download") {
        let n: u64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("n="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        return Ok(Response::new(Zeros::new(n).boxed()));
    }
    if path.ends_with("/missing") {
        return Ok(full(StatusCode::NOT_FOUND, "missing"));
    }
    if path.starts_with("/error/") {
        let mut r = full(StatusCode::OK, format!("custom error page for {pq}"));
        r.headers_mut()
            .insert("content-type", "text/html".parse().expect("hv"));
        return Ok(r);
    }
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body = json!({
        "tag": tag, "path": pq, "host": h("host"), "xff": h("x-forwarded-for"),
        "xfproto": h("x-forwarded-proto"), "xfhost": h("x-forwarded-host"), "connection": h("connection"),
    });
    Ok(full(StatusCode::OK, body.to_string()))
}

/// Start a backend on an ephemeral port; it lives as long as the test's runtime.
async fn backend(tag: &'static str) -> SocketAddr {
    counted_backend(tag).await.0
}

/// A backend, and the number of connections it has accepted.
async fn counted_backend(tag: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(move |req| backend_handle(tag, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, accepted)
}

fn url(addr: SocketAddr) -> Target {
    Target::Url(format!("http://{addr}").parse().expect("uri"))
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

// ---------------------------------------------------------------- proxies under test

struct InProcess {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_proxy(proxy: Proxy, tls: Option<Arc<rustls::ServerConfig>>) -> InProcess {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    tokio::spawn(proxy::serve(listener, Arc::new(proxy), tls, stop.clone()));
    InProcess { addr, stop }
}

/// `jupyterhub proxy` as a child process, killed on drop.
struct ChpProcess {
    child: Child,
    public: SocketAddr,
    api: SocketAddr,
}

impl Drop for ChpProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `jupyterhub proxy` on ports the kernel picks (0), and learn them from the line it
/// logs once both are listening, so no port is chosen here and lost to another test.
async fn start_chp(token: &str, extra: &[&str]) -> ChpProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jupyterhub"))
        .args([
            "proxy",
            "--ip",
            "127.0.0.1",
            "--port",
            "0",
            "--api-ip",
            "127.0.0.1",
            "--api-port",
            "0",
        ])
        .args(extra)
        .env("CONFIGPROXY_AUTH_TOKEN", token)
        .env("JUPYTERHUB_LOG", "info")
        .env_remove("JUPYTERHUB_LOG_LEVEL")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jupyterhub proxy");
    let stderr = child.stderr.take().expect("stderr");
    let (listening_tx, listening) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut listening_tx = Some(listening_tx);
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("proxy listening")
                && let Some(tx) = listening_tx.take()
            {
                let _ = tx.send(line.clone());
            }
            // The proxy's log stays visible in the test's output, as when it was inherited.
            eprintln!("{line}");
        }
    });
    let line = match tokio::time::timeout(Duration::from_secs(30), listening).await {
        Ok(Ok(line)) => line,
        Ok(Err(_)) => panic!("jupyterhub proxy exited before listening"),
        Err(_) => panic!("jupyterhub proxy did not start listening within 30 s"),
    };
    let address = |key: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|field| field.strip_prefix(key))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no {key}ADDRESS in {line:?}"))
    };
    ChpProcess {
        public: address("public="),
        api: address("api="),
        child,
    }
}

/// Microseconds since the epoch on the wall clock, the one activity stamps come from.
fn now_micros() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_micros()).expect("micros fit")
}

/// Return once the wall clock is at least a millisecond past `stamp` (µs): a route records
/// activity at most once a millisecond, so any later activity gets a newer stamp than
/// `stamp`. Waits on the clock itself, not a guessed pause.
async fn a_millisecond_after(stamp: i64) {
    loop {
        let left = stamp + 1_000 - now_micros();
        if left <= 0 {
            return;
        }
        tokio::time::sleep(Duration::from_micros(left.unsigned_abs())).await;
    }
}

/// The µs a CHP-style `last_activity` (ISO 8601) stands for.
fn iso_micros(iso: &str) -> i64 {
    iso.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{iso:?}: {e}"))
        .as_microsecond()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .expect("field in status");
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("kB value")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let res = client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200, "GET {path}");
    res.json().await.expect("json")
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_precedence_and_headers() {
    let (root, a, ab, nb1) = (
        backend("root").await,
        backend("a").await,
        backend("ab").await,
        backend("nb1").await,
    );
    let routes = Arc::new(RouteTable::new());
    routes.add("/", url(root), Value::Null);
    routes.add("/user/a/", url(a), Value::Null);
    routes.add("/user/ab/", url(ab), Value::Null);
    routes.add("/user/a/nb1/", url(nb1), Value::Null);
    routes.add("/hub/", Target::Hub, Value::Null);
    let hub = axum::Router::new().route(
        "/hub/whoami",
        axum::routing::get(
            |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| async move {
                format!("hub sees {}", peer.ip())
            },
        ),
    );
    let p = start_proxy(Proxy::new(routes, Some(hub)), None).await;
    for (path, tag) in [
        ("/user/a/tree?x=1", "a"),
        ("/user/a", "a"),
        ("/user/ab/tree", "ab"),
        ("/user/abc/tree", "root"),
        ("/user/a/nb1/lab", "nb1"),
        ("/user/a/nb10/lab", "a"),
        ("/user/a/nb1", "nb1"),
        ("/", "root"),
    ] {
        let v = get_json(p.addr, path).await;
        assert_eq!(v["tag"], tag, "{path}");
        assert_eq!(v["path"], path, "full path is forwarded");
    }
    let v = get_json(p.addr, "/user/a/x").await;
    assert_eq!(v["host"], p.addr.to_string(), "Host is preserved");
    assert_eq!(v["xff"], "127.0.0.1");
    assert_eq!(v["xfproto"], "http");
    assert_eq!(v["xfhost"], p.addr.to_string());
    assert_eq!(
        v["connection"],
        Value::Null,
        "hop-by-hop headers are not forwarded"
    );
    let res = client()
        .get(format!("http://{}/user/a/x", p.addr))
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .await
        .expect("req");
    let v: Value = res.json().await.expect("json");
    assert_eq!(
        v["xff"], "10.1.2.3,127.0.0.1",
        "X-Forwarded-For is appended to"
    );
    let hub_text = client()
        .get(format!("http://{}/hub/whoami", p.addr))
        .send()
        .await
        .expect("req")
        .text()
        .await
        .expect("text");
    assert_eq!(hub_text, "hub sees 127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404() {
    let routes = Arc::new(RouteTable::new());
    let p = start_proxy(Proxy::new(routes.clone(), None), None).await;
    let res = client()
        .get(format!("http://{}/user/x/", p.addr))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 404);
    routes.add("/user/x/", url(backend("x").await), Value::Null);
    assert_eq!(get_json(p.addr, "/user/x/").await["tag"], "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo() {
    let routes = Arc::new(RouteTable::new());
    routes.add("/user/a/", url(backend("a").await), Value::Null);
    let p = start_proxy(Proxy::new(routes.clone(), None), None).await;
    let (mut ws, res) =
        tokio_tungstenite::connect_async(format!("ws://{}/user/a/api/kernels/k1/channels", p.addr))
            .await
            .expect("ws connect");
    assert_eq!(res.status(), 101);
    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("msg").expect("ok"),
        Message::text("hello")
    );
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(blob.clone())).await.expect("send");
    assert_eq!(
        ws.next().await.expect("msg").expect("ok"),
        Message::binary(blob)
    );
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .expect("ping");
    assert_eq!(
        ws.next().await.expect("msg").expect("ok"),
        Message::Pong(Bytes::from_static(b"are you there"))
    );
    ws.close(None).await.expect("close");
    match ws.next().await {
        Some(Ok(Message::Close(_))) => {}
        other => panic!("expected the close echoed back, got {other:?}"),
    }
    assert!(
        ws.next().await.is_none(),
        "stream ends after the close handshake"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_advances_on_success_and_websocket_traffic() {
    let routes = Arc::new(RouteTable::new());
    routes.add("/user/a/", url(backend("a").await), Value::Null);
    let route = routes.get("/user/a/").expect("route");
    let p = start_proxy(Proxy::new(routes.clone(), None), None).await;
    assert_eq!(route.last_activity(), None);
    let res = client()
        .get(format!("http://{}/user/a/missing", p.addr))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 404);
    assert_eq!(
        route.last_activity(),
        None,
        "an error response is not activity"
    );
    get_json(p.addr, "/user/a/tree").await;
    let t1 = route.last_activity().expect("touched by a 200");
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/user/a/terminals/1", p.addr))
            .await
            .expect("ws");
    let t2 = route.last_activity().expect("still set");
    assert!(t2 >= t1);
    a_millisecond_after(t2).await;
    ws.send(Message::text("ls")).await.expect("send");
    ws.next().await.expect("echo").expect("ok");
    let t3 = route.last_activity().expect("still set");
    assert!(
        t3 > t2,
        "websocket traffic advances last_activity ({t3} > {t2})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_down_is_503_and_calls_the_hook() {
    let routes = Arc::new(RouteTable::new());
    let dead = closed_port().await;
    routes.add("/user/gone/", url(dead), Value::Null);
    let mut proxy = Proxy::new(routes.clone(), None);
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    proxy.set_target_down_hook(Arc::new(move |route: &jupyterhub::proxy::Route| {
        assert_eq!(route.spec, "/user/gone/");
        seen.fetch_add(1, Ordering::SeqCst);
    }));
    let p = start_proxy(proxy, None).await;
    let res = client()
        .get(format!("http://{}/user/gone/lab", p.addr))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 503);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    let text = res.text().await.expect("text");
    assert!(text.contains("not running"), "{text}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // A websocket to a dead target gets the same answer instead of hanging.
    let err = tokio_tungstenite::connect_async(format!("ws://{}/user/gone/ws", p.addr))
        .await
        .expect_err("no upgrade");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(res) => assert_eq!(res.status(), 503),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        routes.get("/user/gone/").and_then(|r| r.last_activity()),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_changes_during_load() {
    let (a, c) = (backend("a").await, backend("c").await);
    let routes = Arc::new(RouteTable::new());
    routes.add("/user/a/", url(a), Value::Null);
    routes.add("/user/c/", url(c), Value::Null);
    let p = start_proxy(Proxy::new(routes.clone(), None), None).await;
    // A websocket on /user/c/ opened before its route goes away.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/user/c/ws", p.addr))
        .await
        .expect("ws");
    let stop = CancellationToken::new();
    // Requests answered so far, by all load tasks.
    let (answered_tx, mut answered) = tokio::sync::watch::channel(0u32);
    let answered_tx = Arc::new(answered_tx);
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, addr, answered_tx) = (stop.clone(), p.addr, answered_tx.clone());
        load.push(tokio::spawn(async move {
            let http = client();
            let mut ok = 0u32;
            while !stop.is_cancelled() {
                let res = http
                    .get(format!("http://{addr}/user/a/api/status"))
                    .send()
                    .await
                    .expect("request during churn");
                assert_eq!(res.status(), 200);
                let v: Value = res.json().await.expect("json");
                assert_eq!(v["tag"], "a");
                ok += 1;
                answered_tx.send_modify(|n| *n += 1);
            }
            ok
        }));
    }
    let other = backend("other").await;
    for i in 0..300 {
        routes.add(&format!("/user/u{i}/"), url(other), json!({"i": i}));
        if i % 3 == 0 {
            routes.remove(&format!("/user/u{}/", i / 2));
        }
        if i == 150 {
            routes.remove("/user/c/");
            routes.add("/user/a/", url(a), json!({"replaced": true}));
        }
        tokio::task::yield_now().await;
    }
    ws.send(Message::text("still here"))
        .await
        .expect("ws survives its route's removal");
    assert_eq!(
        ws.next().await.expect("echo").expect("ok"),
        Message::text("still here")
    );
    // The load goes on against the settled table: some more requests are answered.
    let settled = *answered.borrow_and_update();
    tokio::time::timeout(
        Duration::from_secs(30),
        answered.wait_for(|n| *n >= settled + 40),
    )
    .await
    .expect("load after the churn answered within 30 s")
    .expect("load tasks alive");
    stop.cancel();
    let mut total = 0;
    for task in load {
        total += task.await.expect("load task");
    }
    assert!(total > 0, "the load made requests");
    let res = client()
        .get(format!("http://{}/user/c/", p.addr))
        .send()
        .await
        .expect("req");
    assert_eq!(
        res.status(),
        404,
        "the removed route is gone for new requests"
    );
}

/// Write a CA and a leaf signed by it; the cert file holds the chain (leaf, then CA).
fn make_certs(dir: &Path) -> bool {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    let ok = run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=proxy test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]) && run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
    ]);
    if ok {
        let chain = std::fs::read_to_string(dir.join("leaf.pem")).expect("leaf")
            + &std::fs::read_to_string(dir.join("ca.pem")).expect("ca");
        std::fs::write(dir.join("chain.pem"), chain).expect("chain");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_chained_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(
        make_certs(dir.path()),
        "openssl could not make test certificates"
    );
    let tls = proxy::load_tls(&dir.path().join("chain.pem"), &dir.path().join("leaf.key"))
        .expect("load_tls");
    let routes = Arc::new(RouteTable::new());
    routes.add("/", url(backend("root").await), Value::Null);
    let p = start_proxy(Proxy::new(routes, None), Some(tls)).await;

    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(dir.path().join("ca.pem")).expect("ca");
    for cert in rustls_pemfile::certs(&mut &ca[..]) {
        roots.add(cert.expect("pem")).expect("root");
    }
    // Only the CA is trusted: the handshake succeeds only if the server sends the whole chain.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(p.addr).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the proxy");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1");
    tokio::spawn(conn);
    let req = Request::get("/user/z/")
        .header("host", "localhost")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("req");
    let res = sender.send_request(req).await.expect("response");
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["tag"], "root");
    assert_eq!(v["xfproto"], "https");
    // Plain HTTP on the TLS port is refused, not served.
    let plain = client().get(format!("http://{}/", p.addr)).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));
}

async fn chp_api(
    chp: &ChpProcess,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = client().request(method, format!("http://{}/api/routes{path}", chp.api));
    if let Some(t) = token {
        req = req.header("authorization", format!("token {t}"));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.expect("api request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chp_api_and_activity() {
    use reqwest::Method;
    let errors = backend("errors").await;
    let chp = start_chp(
        "s3cret",
        &["--error-target", &format!("http://{errors}/error")],
    )
    .await;
    let b = backend("b").await;
    let t = Some("s3cret");

    assert_eq!(
        chp_api(&chp, Method::GET, "", None, None).await.status(),
        403
    );
    assert_eq!(
        chp_api(&chp, Method::GET, "", Some("wrong"), None)
            .await
            .status(),
        403
    );
    assert_eq!(
        chp_api(
            &chp,
            Method::POST,
            "/user/b/",
            Some("wrong"),
            Some(json!({"target": "http://x"}))
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        chp_api(
            &chp,
            Method::POST,
            "/user/b/",
            t,
            Some(json!({"user": "b"}))
        )
        .await
        .status(),
        400
    );
    let add = json!({"target": format!("http://{b}"), "user": "b", "server_name": "", "jupyterhub": true});
    assert_eq!(
        chp_api(&chp, Method::POST, "/user/b/", t, Some(add))
            .await
            .status(),
        201
    );

    let all: Value = chp_api(&chp, Method::GET, "", t, None)
        .await
        .json()
        .await
        .expect("json");
    let route = &all["/user/b"];
    assert_eq!(route["target"], format!("http://{b}"));
    assert_eq!(route["user"], "b");
    assert_eq!(route["jupyterhub"], true);
    let added_at = route["last_activity"]
        .as_str()
        .expect("last_activity set on add")
        .to_owned();
    assert!(
        added_at.ends_with('Z') && added_at.contains('T'),
        "{added_at}"
    );

    let one: Value = chp_api(&chp, Method::GET, "/user/b", t, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(one["user"], "b");

    // Unmatched path with no default route: 404 from the error target.
    let res = client()
        .get(format!("http://{}/nowhere?x=1", chp.public))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.text().await.expect("text"),
        "custom error page for /error/404?url=%2Fnowhere%3Fx%3D1"
    );

    // Activity: advanced by a 200, not by a 404 (either would give a newer stamp now).
    a_millisecond_after(iso_micros(&added_at)).await;
    let res = client()
        .get(format!("http://{}/user/b/missing", chp.public))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 404);
    let last = |v: &Value| {
        v["/user/b"]["last_activity"]
            .as_str()
            .expect("set")
            .to_owned()
    };
    let after_404: Value = chp_api(&chp, Method::GET, "", t, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(last(&after_404), added_at, "a 404 is not activity");
    assert_eq!(get_json(chp.public, "/user/b/api").await["tag"], "b");
    let after_200: Value = chp_api(&chp, Method::GET, "", t, None)
        .await
        .json()
        .await
        .expect("json");
    let active_at = last(&after_200);
    assert!(active_at > added_at, "{active_at} > {added_at}");
    // ... and by websocket frames.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/user/b/ws", chp.public))
        .await
        .expect("ws");
    let after_upgrade = last(
        &chp_api(&chp, Method::GET, "", t, None)
            .await
            .json()
            .await
            .expect("json"),
    );
    a_millisecond_after(iso_micros(&after_upgrade)).await;
    ws.send(Message::text("x")).await.expect("send");
    ws.next().await.expect("echo").expect("ok");
    let after_ws = last(
        &chp_api(&chp, Method::GET, "", t, None)
            .await
            .json()
            .await
            .expect("json"),
    );
    assert!(after_ws > after_upgrade, "{after_ws} > {after_upgrade}");

    // inactive_since filters.
    let future: Value = chp_api(
        &chp,
        Method::GET,
        "?inactive_since=2999-01-01T00:00:00.000Z",
        t,
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    assert!(future.get("/user/b").is_some());
    let past: Value = chp_api(
        &chp,
        Method::GET,
        "?inactive_since=2000-01-01T00:00:00",
        t,
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    assert!(past.get("/user/b").is_none());
    assert_eq!(
        chp_api(&chp, Method::GET, "?inactive_since=notadate", t, None)
            .await
            .status(),
        400
    );

    // Delete: 204, then 404; the path then goes to the error target.
    assert_eq!(
        chp_api(&chp, Method::DELETE, "/user/b", t, None)
            .await
            .status(),
        204
    );
    assert_eq!(
        chp_api(&chp, Method::DELETE, "/user/b", t, None)
            .await
            .status(),
        404
    );
    assert_eq!(
        chp_api(&chp, Method::GET, "/user/b", t, None)
            .await
            .status(),
        404
    );

    // A dead target: 503 with the error target's page.
    let dead = closed_port().await;
    assert_eq!(
        chp_api(
            &chp,
            Method::POST,
            "/user/dead",
            t,
            Some(json!({"target": format!("http://{dead}")}))
        )
        .await
        .status(),
        201
    );
    let res = client()
        .get(format!("http://{}/user/dead/lab", chp.public))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.text().await.expect("text"),
        "custom error page for /error/503?url=%2Fuser%2Fdead%2Flab"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chp_default_target() {
    let root = backend("root").await;
    let chp = start_chp("t", &["--default-target", &format!("http://{root}")]).await;
    assert_eq!(
        get_json(chp.public, "/anything/at/all").await["tag"],
        "root"
    );
    let all: Value = chp_api(&chp, reqwest::Method::GET, "/", Some("t"), None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(all["/"]["target"], format!("http://{root}"));
}

/// 1 GiB up and 1 GiB down through the real `jupyterhub proxy` process; its peak RSS must stay
/// far below the transfer size (bodies are streamed, not buffered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_1gib_both_ways_without_growing() {
    let chp = start_chp("t", &[]).await;
    let b = backend("big").await;
    let add = chp_api(
        &chp,
        reqwest::Method::POST,
        "/user/big/",
        Some("t"),
        Some(json!({"target": format!("http://{b}")})),
    )
    .await;
    assert_eq!(add.status(), 201);
    let pid = chp.child.id();
    // Warm up: one small request of each kind, so pools and buffers exist before measuring.
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(
        TcpStream::connect(chp.public).await.expect("tcp"),
    ))
    .await
    .expect("http1");
    tokio::spawn(conn);
    let host = chp.public.to_string();
    let upload = |n: u64| {
        Request::post("/user/big/upload")
            .header("host", &host)
            .body(Zeros::new(n))
            .expect("req")
    };
    sender.ready().await.expect("connection ready");
    let res = sender
        .send_request(upload(1 << 20))
        .await
        .expect("small upload");
    assert_eq!(count_text(res).await, (1u64 << 20).to_string());
    let before = rss_kib(pid, "VmRSS:");

    sender.ready().await.expect("connection ready");
    let res = sender
        .send_request(upload(GIB))
        .await
        .expect("1 GiB upload");
    assert_eq!(res.status(), 200);
    assert_eq!(
        count_text(res).await,
        GIB.to_string(),
        "the backend received every byte"
    );

    let req = Request::get(format!("/user/big/download?n={GIB}"))
        .header("host", &host)
        .body(Zeros::new(0))
        .expect("req");
    sender.ready().await.expect("connection ready");
    let res = sender.send_request(req).await.expect("1 GiB download");
    assert_eq!(res.status(), 200);
    assert_eq!(
        count_body(res.into_body()).await,
        GIB,
        "the client received every byte"
    );

    let peak = rss_kib(pid, "VmHWM:");
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!("proxy RSS before {before} KiB, peak {peak} KiB, growth {growth_mib} MiB");
    assert!(
        growth_mib < 100,
        "proxy memory grew by {growth_mib} MiB while streaming 2 GiB"
    );
}

async fn count_text(res: Response<Incoming>) -> String {
    let body = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_routes() {
    let (root, a) = (backend("root").await, backend("a").await);
    let routes = Arc::new(RouteTable::new());
    routes.add("/", url(root), Value::Null);
    routes.add("a.hub.test/user/a/", url(a), Value::Null);
    let p = start_proxy(Proxy::new(routes, None), None).await;
    let get = |host: &'static str, path: &'static str| {
        let addr = p.addr;
        async move {
            let res = client()
                .get(format!("http://{addr}{path}"))
                .header("host", host)
                .send()
                .await
                .expect("req");
            let v: Value = res.json().await.expect("json");
            v["tag"].as_str().expect("tag").to_owned()
        }
    };
    assert_eq!(get("a.hub.test:8000", "/user/a/lab").await, "a");
    assert_eq!(get("A.HUB.TEST", "/user/a/").await, "a");
    assert_eq!(get("b.hub.test", "/user/a/lab").await, "root");
    assert_eq!(get("a.hub.test", "/user/b/").await, "root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chp_host_routing() {
    let (root, a) = (backend("root").await, backend("a").await);
    let chp = start_chp(
        "t",
        &[
            "--host-routing",
            "--default-target",
            &format!("http://{root}"),
        ],
    )
    .await;
    let add = json!({"target": format!("http://{a}"), "jupyterhub": true});
    let res = chp_api(
        &chp,
        reqwest::Method::POST,
        "/a.hub.test/user/a",
        Some("t"),
        Some(add),
    )
    .await;
    assert_eq!(res.status(), 201);
    let res = client()
        .get(format!("http://{}/user/a/tree", chp.public))
        .header("host", "a.hub.test")
        .send()
        .await
        .expect("req");
    assert_eq!(res.json::<Value>().await.expect("json")["tag"], "a");
    let res = client()
        .get(format!("http://{}/user/a/tree", chp.public))
        .header("host", "other.test")
        .send()
        .await
        .expect("req");
    assert_eq!(res.json::<Value>().await.expect("json")["tag"], "root");
    let all: Value = chp_api(&chp, reqwest::Method::GET, "", Some("t"), None)
        .await
        .json()
        .await
        .expect("json");
    assert!(all.get("/a.hub.test/user/a").is_some(), "{all}");
    assert!(all.get("/").is_some(), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_from_the_in_process_hub() {
    let routes = Arc::new(RouteTable::new());
    routes.add("/user/gone/", url(closed_port().await), Value::Null);
    let hub = axum::Router::new().route(
        "/hub/error/{code}",
        axum::routing::get(
            |axum::extract::Path(code): axum::extract::Path<String>,
             axum::extract::RawQuery(q): axum::extract::RawQuery| async move {
                (
                    [("content-type", "text/html")],
                    format!("hub error page {code} {}", q.unwrap_or_default()),
                )
            },
        ),
    );
    let mut proxy = Proxy::new(routes, Some(hub));
    proxy.set_error_target("/hub/error".parse().expect("uri"));
    let p = start_proxy(proxy, None).await;
    let res = client()
        .get(format!("http://{}/user/gone/tree", p.addr))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["content-type"], "text/html");
    assert_eq!(
        res.text().await.expect("text"),
        "hub error page 503 url=%2Fuser%2Fgone%2Ftree"
    );
    let res = client()
        .get(format!("http://{}/nothing", p.addr))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.text().await.expect("text"),
        "hub error page 404 url=%2Fnothing"
    );
}

// ---------------------------------------------------------------- raw HTTP/1.1

/// A response as read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }
}

/// Read more of `stream` into `buf`; false at EOF.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 16384];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
        .await
        .expect("no answer within 10 s")
        .expect("read");
    buf.extend_from_slice(&chunk[..n]);
    n > 0
}

/// Take one `\r\n`-terminated line off the front of `buf`, reading as needed.
async fn line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let l = String::from_utf8(buf[..i].to_vec()).expect("utf-8 line");
            buf.drain(..i + 2);
            return l;
        }
        assert!(fill(stream, buf).await, "EOF inside a line");
    }
}

/// Read one response (head, and body by its framing) from `stream`; `buf` keeps what follows.
async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> RawResponse {
    let (status, headers, head_len) = loop {
        let mut storage = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut storage);
        if let httparse::Status::Complete(n) = res.parse(buf).expect("valid response head") {
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
            break (res.code.expect("code"), headers, n);
        }
        assert!(fill(stream, buf).await, "EOF inside a response head");
    };
    buf.drain(..head_len);
    let mut res = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if head_request || status < 200 || status == 204 || status == 304 {
        return res;
    }
    if res.header("transfer-encoding") == Some("chunked") {
        loop {
            let size = line(stream, buf).await;
            let size =
                usize::from_str_radix(size.split(';').next().expect("size"), 16).expect("hex");
            if size == 0 {
                // Trailers, up to the empty line, are kept as headers.
                loop {
                    let l = line(stream, buf).await;
                    let Some((n, v)) = l.split_once(": ") else {
                        break;
                    };
                    res.headers.push((n.to_owned(), v.to_owned()));
                }
                return res;
            }
            while buf.len() < size + 2 {
                assert!(fill(stream, buf).await, "EOF inside a chunk");
            }
            res.body.extend_from_slice(&buf[..size]);
            assert_eq!(&buf[size..size + 2], b"\r\n");
            buf.drain(..size + 2);
        }
    }
    if let Some(n) = res.header("content-length") {
        let n: usize = n.parse().expect("length");
        while buf.len() < n {
            assert!(fill(stream, buf).await, "EOF inside a body");
        }
        res.body = buf.drain(..n).collect();
    } else {
        while fill(stream, buf).await {}
        res.body = std::mem::take(buf);
    }
    res
}

async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    stream.write_all(bytes).await.expect("write");
}

/// Requests on one raw connection: the connection, and what has been read but not used.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }
    async fn get(&mut self, path: &str) -> RawResponse {
        send(
            &mut self.stream,
            format!("GET {path} HTTP/1.1\r\nHost: hub.test\r\n\r\n").as_bytes(),
        )
        .await;
        self.response(false).await
    }
    async fn response(&mut self, head_request: bool) -> RawResponse {
        read_response(&mut self.stream, &mut self.buf, head_request).await
    }
    /// True when the proxy has closed this connection (and sent nothing more).
    async fn closed(&mut self) -> bool {
        !fill(&mut self.stream, &mut self.buf).await && self.buf.is_empty()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_requests_framing_and_upstream_reuse() {
    let (a, accepted) = counted_backend("a").await;
    let routes = Arc::new(RouteTable::new());
    routes.add("/user/a/", url(a), Value::Null);
    let p = start_proxy(Proxy::new(routes, None), None).await;
    let mut c = Raw::connect(p.addr).await;

    // Pipelined requests, answered in order.
    send(
        &mut c.stream,
        b"GET /user/a/one HTTP/1.1\r\nHost: hub.test\r\n\r\nGET /user/a/two HTTP/1.1\r\nHost: hub.test\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n",
    )
    .await;
    let one: Value = serde_json::from_slice(&c.response(false).await.body).expect("json");
    let two: Value = serde_json::from_slice(&c.response(false).await.body).expect("json");
    assert_eq!(
        (one["path"].as_str(), two["path"].as_str()),
        (Some("/user/a/one"), Some("/user/a/two"))
    );
    assert_eq!(one["xff"], "127.0.0.1");
    assert_eq!(two["xff"], "10.9.9.9,127.0.0.1");
    assert_eq!(two["xfhost"], "hub.test");

    // HEAD: a length, no body, and the connection goes on.
    send(
        &mut c.stream,
        b"HEAD /user/a/x HTTP/1.1\r\nHost: hub.test\r\n\r\n",
    )
    .await;
    let head = c.response(true).await;
    assert_eq!(head.status, 200);
    assert!(head.header("content-length").is_some());
    assert_eq!(c.get("/user/a/after-head").await.status, 200);

    // A chunked upload, and a body that arrives after its head.
    send(
        &mut c.stream,
        b"POST /user/a/upload HTTP/1.1\r\nHost: hub.test\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
    )
    .await;
    assert_eq!(c.response(false).await.text(), "5");
    send(
        &mut c.stream,
        b"POST /user/a/upload HTTP/1.1\r\nHost: hub.test\r\nContent-Length: 1000\r\n\r\n",
    )
    .await;
    // The pauses are the point: the body must reach the proxy in reads of its own, after
    // the head has been forwarded.
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut c.stream, &[b'x'; 600]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut c.stream, &[b'y'; 400]).await;
    assert_eq!(c.response(false).await.text(), "1000");
    // A 200 kB download, longer than any one read.
    let big = c.get("/user/a/download?n=200000").await;
    assert_eq!((big.status, big.body.len()), (200, 200_000));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "every request so far went over one upstream connection"
    );

    // A body too large to hold is streamed (by the hyper path), and the connection goes on.
    let n = 300_000;
    send(
        &mut c.stream,
        format!("PUT /user/a/upload HTTP/1.1\r\nHost: hub.test\r\nContent-Length: {n}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    send(&mut c.stream, &vec![b'z'; n]).await;
    assert_eq!(c.response(false).await.text(), n.to_string());
    assert_eq!(c.get("/user/a/last").await.status, 200);

    // Connection: close is honoured.
    send(
        &mut c.stream,
        b"GET /user/a/bye HTTP/1.1\r\nHost: hub.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let bye = c.response(false).await;
    assert_eq!((bye.status, bye.header("connection")), (200, Some("close")));
    assert!(c.closed().await, "the proxy closes after Connection: close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_requests_the_fast_path_hands_on() {
    let routes = Arc::new(RouteTable::new());
    routes.add("/user/a/", url(backend("a").await), Value::Null);
    let p = start_proxy(Proxy::new(routes, None), None).await;

    // A request with no route (404 from the hyper path) between two routed ones.
    let mut c = Raw::connect(p.addr).await;
    assert_eq!(c.get("/user/a/x").await.status, 200);
    assert_eq!(c.get("/nowhere").await.status, 404);
    let after: Value = serde_json::from_slice(&c.get("/user/a/y").await.body).expect("json");
    assert_eq!(after["path"], "/user/a/y");

    // HTTP/1.0.
    let mut c = Raw::connect(p.addr).await;
    send(
        &mut c.stream,
        b"GET /user/a/old HTTP/1.0\r\nHost: hub.test\r\n\r\n",
    )
    .await;
    let old = c.response(false).await;
    assert_eq!(old.status, 200);
    assert!(old.text().contains("/user/a/old"), "{}", old.text());

    // Expect: 100-continue.
    let mut c = Raw::connect(p.addr).await;
    send(
        &mut c.stream,
        b"PUT /user/a/upload HTTP/1.1\r\nHost: hub.test\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    assert_eq!(c.response(false).await.status, 100);
    send(&mut c.stream, b"123456789").await;
    assert_eq!(c.response(false).await.text(), "9");

    // A malformed request gets hyper's 400, not a hang.
    let mut c = Raw::connect(p.addr).await;
    send(&mut c.stream, b"GET /user/a/ HTTP/1.1\r\nHost: hub.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").await;
    assert_eq!(c.response(false).await.status, 400);
}

/// A target speaking raw HTTP/1.1, answering by path what hyper would not produce; counts
/// the connections it accepts and those it closes after answering.
async fn raw_backend() -> (
    SocketAddr,
    Arc<AtomicUsize>,
    tokio::sync::watch::Receiver<usize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let (closed_tx, closed) = tokio::sync::watch::channel(0);
    let closed_tx = Arc::new(closed_tx);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let path = loop {
                        let mut storage = [httparse::EMPTY_HEADER; 64];
                        let mut req = httparse::Request::new(&mut storage);
                        if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                            let path = req.path.expect("path").to_owned();
                            buf.drain(..n);
                            break path;
                        }
                        if !fill(&mut stream, &mut buf).await {
                            return;
                        }
                    };
                    let (answer, keep): (&[u8], bool) = match path.rsplit('/').next() {
                        Some("close-after") => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
                        Some("no-length") => (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", false),
                        Some("chunked") => (
                            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
                              HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
                              5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n",
                            true,
                        ),
                        Some("garbage") => (b"NOT HTTP AT ALL\r\n\r\n", false),
                        Some("hangup") => (b"", false),
                        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain", true),
                    };
                    send(&mut stream, answer).await;
                    if !keep {
                        drop(stream);
                        closed_tx.send_modify(|n| *n += 1);
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_targets_that_close_stream_or_misbehave() {
    let (r, accepted, mut closed) = raw_backend().await;
    let routes = Arc::new(RouteTable::new());
    routes.add("/user/r/", url(r), Value::Null);
    let p = start_proxy(Proxy::new(routes, None), None).await;

    let mut c = Raw::connect(p.addr).await;
    // The target closes after answering, without saying so: the next request gets a new
    // upstream connection instead of a dead one.
    let first = c.get("/user/r/close-after").await;
    assert_eq!((first.status, first.text()), (200, "ok"));
    // Once the target has closed, the proxy must not send the next request down that dead
    // connection (racing the close is not the case under test).
    tokio::time::timeout(Duration::from_secs(10), closed.wait_for(|n| *n >= 1))
        .await
        .expect("the target closed its connection")
        .expect("raw backend alive");
    let second = c.get("/user/r/plain").await;
    assert_eq!((second.status, second.text()), (200, "plain"));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // 103 Early Hints passes through, then the chunked response with its trailer.
    let hints = c.get("/user/r/chunked").await;
    assert_eq!(
        (hints.status, hints.header("link")),
        (103, Some("</s.css>; rel=preload"))
    );
    let chunked = c.response(false).await;
    assert_eq!((chunked.status, chunked.text()), (200, "hello world"));
    assert_eq!(chunked.header("x-sum"), Some("11"));
    // Kept alive: the same upstream connection answers again.
    assert_eq!(c.get("/user/r/plain").await.text(), "plain");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // A body delimited by the target closing: the client is told, and the connection ends.
    let until = c.get("/user/r/no-length").await;
    assert_eq!(
        (until.status, until.header("connection")),
        (200, Some("close"))
    );
    assert_eq!(until.text(), "until close");
    assert!(c.closed().await);

    for path in ["/user/r/garbage", "/user/r/hangup"] {
        let mut c = Raw::connect(p.addr).await;
        assert_eq!(c.get(path).await.status, 502, "{path}");
        assert!(c.closed().await, "{path}");
    }
    let mut c = Raw::connect(p.addr).await;
    send(
        &mut c.stream,
        b"POST /user/r/hangup HTTP/1.1\r\nHost: hub.test\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await;
    assert_eq!(c.response(false).await.status, 502);
}

// ---------------------------------------------------------------- frozen routes

/// A backend standing in for a frozen server: a request that reaches it before `running` is
/// set was forwarded too early and gets a 500 saying so.
async fn frozen_backend(running: Arc<std::sync::atomic::AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let running = running.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let running = running.load(Ordering::SeqCst);
                    async move {
                        if running {
                            backend_handle("thawed", req).await
                        } else {
                            Ok(full(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "forwarded while frozen",
                            ))
                        }
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A proxy whose thaw hook counts its calls, takes 200 ms (as `ThawUnit` takes a moment),
/// then lets the backend run; `thaws` says whether it succeeds.
async fn frozen_setup(
    thaws: bool,
) -> (
    InProcess,
    Arc<RouteTable>,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<AtomicUsize>,
) {
    let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let routes = Arc::new(RouteTable::new());
    routes.add(
        "/user/ice/",
        url(frozen_backend(running.clone()).await),
        Value::Null,
    );
    routes.get("/user/ice/").expect("route").set_frozen(true);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut proxy = Proxy::new(routes.clone(), None);
    let (seen, thawed) = (calls.clone(), running.clone());
    proxy.set_thaw_hook(Arc::new(move |route: Arc<jupyterhub::proxy::Route>| {
        assert_eq!(route.spec, "/user/ice/");
        seen.fetch_add(1, Ordering::SeqCst);
        let thawed = thawed.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            thawed.store(thaws, Ordering::SeqCst);
            thaws
        })
    }));
    (start_proxy(proxy, None).await, routes, running, calls)
}

/// Freeze the route again, as the hub does before freezing its server.
fn refreeze(routes: &RouteTable, running: &std::sync::atomic::AtomicBool) {
    running.store(false, Ordering::SeqCst);
    routes.get("/user/ice/").expect("route").set_frozen(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_route_is_thawed_once_before_forwarding_on_both_paths() {
    let (p, routes, running, calls) = frozen_setup(true).await;
    let route = routes.get("/user/ice/").expect("route");

    // The fast path: ten concurrent GETs on ten connections wait for one thaw.
    let requests = (0..10).map(|i| {
        let url = format!("http://{}/user/ice/lab/{i}", p.addr);
        async move {
            let res = client().get(url).send().await.expect("req");
            (res.status(), res.text().await.expect("body"))
        }
    });
    for (status, body) in futures_util::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"thawed\""), "{body}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one thaw for all of them");
    assert!(
        !route.is_frozen(),
        "the proxy clears the flag after the thaw"
    );
    assert!(route.last_activity().is_some(), "a thaw is activity");
    // Running again: no more thaws.
    get_json(p.addr, "/user/ice/tree").await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The hyper path: a body over the fast path's 64 KiB.
    refreeze(&routes, &running);
    let res = client()
        .post(format!("http://{}/user/ice/upload", p.addr))
        .body(vec![7u8; 200_000])
        .send()
        .await
        .expect("upload");
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.expect("body"), "200000");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A websocket (always the hyper path) thaws before its upgrade goes upstream.
    refreeze(&routes, &running);
    let (mut ws, res) = tokio_tungstenite::connect_async(format!(
        "ws://{}/user/ice/api/kernels/k/channels",
        p.addr
    ))
    .await
    .expect("ws connect after the thaw");
    assert_eq!(res.status(), 101);
    ws.send(Message::text("warm")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("msg").expect("ok"),
        Message::text("warm")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Frozen again while the websocket stays open (an idle kernel's): the client's next
    // message thaws it before it is written to the target.
    refreeze(&routes, &running);
    ws.send(Message::text("after a pause")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("msg").expect("ok"),
        Message::text("after a pause")
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "the open websocket thawed it"
    );
    assert!(running.load(Ordering::SeqCst));
    assert!(!route.is_frozen());

    // A route re-added (as the hub's route check does) stays frozen.
    refreeze(&routes, &running);
    routes.add("/user/ice/", route.target.clone(), Value::Null);
    assert!(routes.get("/user/ice/").expect("route").is_frozen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_thaw_is_503_and_is_tried_again() {
    let (p, routes, _running, calls) = frozen_setup(false).await;
    for (n, path) in ["/user/ice/lab", "/user/ice/api/contents"]
        .iter()
        .enumerate()
    {
        let res = client()
            .get(format!("http://{}{path}", p.addr))
            .send()
            .await
            .expect("req");
        assert_eq!(res.status(), 503, "never forwarded to a frozen target");
        assert_eq!(calls.load(Ordering::SeqCst), n + 1);
    }
    assert!(routes.get("/user/ice/").expect("route").is_frozen());
}
