//! Load generator and stub server for bench/run.sh (not a test). It drives our hub and Python
//! JupyterHub the same way over HTTP, so both pay the same client cost; it is a Rust binary
//! because a Python client would measure itself.
//!
//! Subcommands (all print one line of space-separated figures on stdout):
//! - `stub`: a single-user server that starts at once: listens where
//!   `JUPYTERHUB_SERVICE_URL` says, answers every GET with a small JSON body, echoes websocket
//!   messages, and posts its activity once as `jupyterhub-singleuser` does.
//! - `wait-up URL SINCE_NS TIMEOUT_S`: polls URL until it answers 200; prints the seconds since
//!   SINCE_NS (nanoseconds since the epoch, taken before the hub was started).
//! - `create API TOKEN NAME...` and `populate API TOKEN PREFIX COUNT`: create users through
//!   `POST {API}/users`, in batches.
//! - `latency URL TOKEN N`: N sequential GETs after a warm-up; prints `p50_ms p99_ms`.
//! - `logins HUB_URL CLIENTS SECONDS PREFIX NUSERS`: form logins as a browser does them
//!   (GET the form, POST it with its `_xsrf` field and cookie); prints `logins_per_s errors`.
//! - `spawn API TOKEN CONCURRENCY NAME...`: starts each user's default server and waits until
//!   it is ready; prints `total_s p50_ms errors`.
//!   "Ready" includes the route answering: after the hub says ready, `GET /user/NAME/api`
//!   through the hub's public port must answer below 500.
//! - `startup N USER PATH CMD...`: a server's own start-up, without any hub: N times, runs CMD
//!   (as USER when root, in its home; environment inherited, `{port}` in it and in CMD replaced
//!   by a free port) and times exec → the port accepting a connection → `GET
//!   http://127.0.0.1:{port}PATH` answering below 500, probing every millisecond; prints
//!   `listen_p50_ms http_p50_ms listen_min_ms http_min_ms`.
//! - `stop API TOKEN NAME...`: stops those servers and waits until they are gone.
//! - `token API TOKEN NAME`: a new token for NAME from `POST {API}/users/NAME/tokens`.
//! - `target API TOKEN NAME`: prints the proxy target (`http://ip:port`) of NAME's server.
//! - `ws-rtt URL N`: websocket round trips of 100-byte messages; prints `p50_ms p99_ms`.
//! - `count`: the length of the JSON list (or paginated `items`) on stdin.
//! - `report FILE`: the table of medians and ratios from the `hub run metric value` lines.

#[path = "common/websocket.rs"]
mod websocket;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .build()
        .expect("reqwest client")
}

// ---------------------------------------------------------------------------------------------
// The stub single-user server

async fn stub_handle(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(upgrade) = websocket::echo_upgrade(&mut req) {
        return Ok(upgrade);
    }
    let mut r = Response::new(Full::new(Bytes::from_static(b"{\"status\": \"ok\"}\n")));
    r.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    // As jupyterhub-singleuser: without it the Python hub logs a warning on every spawn.
    r.headers_mut().insert(
        "x-jupyterhub-version",
        "5.3.0".parse().expect("static header"),
    );
    Ok(r)
}

/// Best effort, like the real server's first activity report.
async fn post_activity() {
    let (Ok(url), Ok(token)) = (
        std::env::var("JUPYTERHUB_ACTIVITY_URL"),
        std::env::var("JUPYTERHUB_API_TOKEN"),
    ) else {
        return;
    };
    let now = jiff::Timestamp::now().to_string();
    let server = std::env::var("JUPYTERHUB_SERVER_NAME").unwrap_or_default();
    let body = json!({"servers": {server: {"last_activity": now}}, "last_activity": now});
    let result = client()
        .post(url)
        .header("Authorization", format!("token {token}"))
        .json(&body)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    if let Err(e) = result {
        eprintln!("activity post failed: {e}");
    }
}

async fn stub() -> Result<(), BoxError> {
    let service_url = std::env::var("JUPYTERHUB_SERVICE_URL")?;
    let url = url::Url::parse(&service_url)?;
    // An empty host means all interfaces upstream; the bench only needs loopback.
    let host = match url.host_str() {
        None | Some("") | Some("0.0.0.0") => "127.0.0.1".to_owned(),
        Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
    };
    let port = url.port().ok_or("JUPYTERHUB_SERVICE_URL has no port")?;
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    tokio::spawn(post_activity());
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(stub_handle))
                .with_upgrades()
                .await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Hub clients

async fn wait_up(url: &str, since_ns: u128, timeout: Duration) -> Result<(), BoxError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status() == reqwest::StatusCode::OK
        {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            println!("{:.3}", (now.as_nanos() - since_ns) as f64 / 1e9);
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{url} did not answer 200 within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn create_users(api: &str, token: &str, names: &[String]) -> Result<(), BoxError> {
    let http = client();
    // Upstream creates users one by one in a request; batches keep each request short.
    for batch in names.chunks(500) {
        let r = http
            .post(format!("{api}/users"))
            .header("Authorization", format!("token {token}"))
            .json(&json!({ "usernames": batch }))
            .timeout(Duration::from_secs(600))
            .send()
            .await?;
        if !r.status().is_success() {
            let status = r.status();
            return Err(format!("POST /users: {status} {}", r.text().await?).into());
        }
    }
    Ok(())
}

async fn latency(url: &str, token: &str, n: usize) -> Result<(), BoxError> {
    let http = client();
    let get = || async {
        let r = http
            .get(url)
            .header("Authorization", format!("token {token}"))
            .send()
            .await?;
        let status = r.status();
        let body = r.bytes().await?;
        if status != reqwest::StatusCode::OK {
            return Err::<usize, BoxError>(format!("GET {url}: {status}").into());
        }
        Ok(body.len())
    };
    for _ in 0..3.min(n) {
        get().await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        get().await?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let s = sorted(samples);
    println!("{:.3} {:.3}", percentile(&s, 0.5), percentile(&s, 0.99));
    Ok(())
}

/// `name=value` of each Set-Cookie header, joined for a Cookie header.
fn cookies_of(response: &reqwest::Response, jar: &mut BTreeMap<String, String>) {
    for value in response.headers().get_all("set-cookie") {
        if let Ok(text) = value.to_str()
            && let Some((name, rest)) = text.split(';').next().and_then(|p| p.split_once('='))
        {
            jar.insert(name.trim().to_owned(), rest.trim().to_owned());
        }
    }
}

fn cookie_header(jar: &BTreeMap<String, String>) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn extract_xsrf(html: &str) -> Option<String> {
    let marker = "name=\"_xsrf\" value=\"";
    let start = html.find(marker)? + marker.len();
    html[start..].split('"').next().map(str::to_owned)
}

/// One browser login: a fresh cookie jar, the form, then the POST. Success is the redirect
/// that sets the hub's login cookie.
async fn login_once(http: &reqwest::Client, hub: &str, user: &str) -> Result<(), BoxError> {
    let mut jar = BTreeMap::new();
    let form = http.get(format!("{hub}/hub/login")).send().await?;
    cookies_of(&form, &mut jar);
    if form.status() != reqwest::StatusCode::OK {
        return Err(format!("GET /hub/login: {}", form.status()).into());
    }
    let html = form.text().await?;
    let xsrf = extract_xsrf(&html).ok_or("no _xsrf field in the login form")?;
    let mut post = http.post(format!("{hub}/hub/login")).form(&[
        ("username", user),
        ("password", "bench"),
        ("_xsrf", xsrf.as_str()),
    ]);
    if !jar.is_empty() {
        post = post.header("Cookie", cookie_header(&jar));
    }
    let r = post.send().await?;
    let status = r.status();
    let mut set = BTreeMap::new();
    cookies_of(&r, &mut set);
    let _ = r.bytes().await?;
    if status != reqwest::StatusCode::FOUND || !set.contains_key("jupyterhub-hub-login") {
        return Err(format!("POST /hub/login: {status}, cookies {:?}", set.keys()).into());
    }
    Ok(())
}

async fn logins(
    hub: &str,
    clients: usize,
    seconds: f64,
    prefix: &str,
    nusers: usize,
) -> Result<(), BoxError> {
    let http = client();
    // Warm-up: also catches a broken login flow before the timed part.
    login_once(&http, hub, &format!("{prefix}{:05}", 0)).await?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, hub, prefix) = (http.clone(), hub.to_owned(), prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut i) = (0u64, 0u64, c);
            let mut first_error = None;
            while Instant::now() < deadline {
                match login_once(&http, &hub, &format!("{prefix}{:05}", i % nusers)).await {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
                i += clients;
            }
            (ok, errors, first_error)
        }));
    }
    let (mut ok, mut errors) = (0, 0);
    for t in tasks {
        let (o, e, first) = t.await?;
        ok += o;
        errors += e;
        if let Some(first) = first {
            eprintln!("login error: {first}");
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!("{:.1} {errors}", ok as f64 / elapsed);
    Ok(())
}

async fn user_model(http: &reqwest::Client, api: &str, token: &str, name: &str) -> Value {
    match http
        .get(format!("{api}/users/{name}"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Start NAME's default server and wait until the hub says it is ready; milliseconds taken.
async fn spawn_one(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    name: &str,
) -> Result<f64, BoxError> {
    let start = Instant::now();
    let r = http
        .post(format!("{api}/users/{name}/server"))
        .header("Authorization", format!("token {token}"))
        .timeout(Duration::from_secs(300))
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    match status.as_u16() {
        201 => {
            return route_answers(http, api, name, start, start + Duration::from_secs(300)).await;
        }
        202 => {}
        _ => return Err(format!("POST /users/{name}/server: {status} {text}").into()),
    }
    // 202: the spawn goes on. Follow its progress stream as the spawn-pending page does;
    // polling the user model instead would load a busy hub with the client's own requests.
    let deadline = start + Duration::from_secs(300);
    while Instant::now() < deadline {
        if follow_progress(http, api, token, name).await? {
            return route_answers(http, api, name, start, deadline).await;
        }
        // The stream ended without a verdict (or the spawn finished before it opened).
        let model = user_model(http, api, token, name).await;
        let server = &model["servers"][""];
        if server["ready"] == json!(true) {
            return route_answers(http, api, name, start, deadline).await;
        }
        if server.is_null() && model["pending"].is_null() && model.is_object() {
            return Err(format!("{name}'s spawn failed (no server, nothing pending)").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{name}'s server was not ready within 300 s").into())
}

/// Once the hub says ready, the spawn is done for a user when the route answers: milliseconds
/// from `start` until `GET /user/NAME/api` through the public port answers below 500.
async fn route_answers(
    http: &reqwest::Client,
    api: &str,
    name: &str,
    start: Instant,
    deadline: Instant,
) -> Result<f64, BoxError> {
    let url = format!("{}/user/{name}/api", api.trim_end_matches("/hub/api"));
    loop {
        if let Ok(r) = http.get(&url).timeout(Duration::from_secs(30)).send().await
            && r.status().as_u16() < 500
        {
            return Ok(start.elapsed().as_secs_f64() * 1e3);
        }
        if Instant::now() > deadline {
            return Err(format!("{url} did not answer after the hub said ready").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Read `GET …/server/progress` until an event says ready (true) or the stream ends (false).
async fn follow_progress(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    name: &str,
) -> Result<bool, BoxError> {
    let mut r = http
        .get(format!("{api}/users/{name}/server/progress"))
        .header("Authorization", format!("token {token}"))
        .header("Accept", "text/event-stream")
        .timeout(Duration::from_secs(300))
        .send()
        .await?;
    if !r.status().is_success() {
        return Ok(false);
    }
    let mut buffer = String::new();
    while let Some(chunk) = r.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let Some(data) = line.trim().strip_prefix("data:") else {
                continue;
            };
            let event: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
            if event["ready"] == json!(true) {
                return Ok(true);
            }
            if event["failed"] == json!(true) {
                return Err(format!("{name}'s spawn failed: {}", event["message"]).into());
            }
        }
    }
    Ok(false)
}

async fn spawn(
    api: &str,
    token: &str,
    concurrency: usize,
    names: &[String],
) -> Result<(), BoxError> {
    let http = client();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for name in names {
        let (http, api, token, name) =
            (http.clone(), api.to_owned(), token.to_owned(), name.clone());
        let semaphore = semaphore.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore open");
            spawn_one(&http, &api, &token, &name).await
        }));
    }
    let (mut samples, mut errors) = (Vec::new(), 0);
    for t in tasks {
        match t.await? {
            Ok(ms) => samples.push(ms),
            Err(e) => {
                errors += 1;
                eprintln!("spawn error: {e}");
            }
        }
    }
    let total = start.elapsed().as_secs_f64();
    let s = sorted(samples);
    println!("{total:.3} {:.1} {errors}", percentile(&s, 0.5));
    Ok(())
}

/// One start of CMD: (exec → accepting, exec → HTTP below 500) in milliseconds.
async fn startup_once(
    user: Option<&nix::unistd::User>,
    path: &str,
    argv: &[String],
) -> Result<(f64, f64), BoxError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let fill = |s: &str| s.replace("{port}", &port.to_string());
    let mut command = tokio::process::Command::new(fill(&argv[0]));
    command.args(argv[1..].iter().map(|a| fill(a)));
    for (k, v) in std::env::vars() {
        if v.contains("{port}") {
            command.env(k, fill(&v));
        }
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(account) = user {
        command
            .uid(account.uid.as_raw())
            .gid(account.gid.as_raw())
            .current_dir(&account.dir);
        command.env("HOME", &account.dir).env("USER", &account.name);
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let url = format!("http://127.0.0.1:{port}{path}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()?;
    let t0 = Instant::now();
    let mut child = command.spawn()?;
    let deadline = t0 + Duration::from_secs(120);
    let result = async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{} exited before listening: {status}", argv[0]).into());
            }
            if Instant::now() > deadline {
                return Err::<(f64, f64), BoxError>("not listening within 120 s".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let listen = t0.elapsed().as_secs_f64() * 1e3;
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().as_u16() < 500
            {
                return Ok((listen, t0.elapsed().as_secs_f64() * 1e3));
            }
            if Instant::now() > deadline {
                return Err(format!("{url} did not answer within 120 s").into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    .await;
    // The whole process group: the real server's children too.
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &format!("-{pid}")])
            .status();
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            let _ = child.wait().await;
        }
    }
    result
}

async fn startup(n: usize, user: &str, path: &str, argv: &[String]) -> Result<(), BoxError> {
    if argv.is_empty() {
        return Err("startup: no command".into());
    }
    // As the hub's local spawner as root: the server runs as its user, in its home.
    let account = if nix::unistd::geteuid().is_root() {
        Some(nix::unistd::User::from_name(user)?.ok_or_else(|| format!("no account {user}"))?)
    } else {
        None
    };
    let (mut listen, mut http) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (l, h) = startup_once(account.as_ref(), path, argv).await?;
        eprintln!("  startup: listening after {l:.1} ms, answering after {h:.1} ms");
        listen.push(l);
        http.push(h);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (listen, http) = (sorted(listen), sorted(http));
    println!(
        "{:.1} {:.1} {:.1} {:.1}",
        percentile(&listen, 0.5),
        percentile(&http, 0.5),
        listen[0],
        http[0]
    );
    Ok(())
}

async fn stop(api: &str, token: &str, names: &[String]) -> Result<(), BoxError> {
    let http = client();
    let mut tasks = Vec::new();
    for name in names {
        let (http, api, token, name) =
            (http.clone(), api.to_owned(), token.to_owned(), name.clone());
        tasks.push(tokio::spawn(async move {
            let _ = http
                .delete(format!("{api}/users/{name}/server"))
                .header("Authorization", format!("token {token}"))
                .timeout(Duration::from_secs(120))
                .send()
                .await;
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                let model = user_model(&http, &api, &token, &name).await;
                let servers_gone = model["servers"].as_object().is_none_or(|s| s.is_empty());
                if model.is_object() && servers_gone && model["pending"].is_null() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err::<(), String>(format!("{name}'s server did not stop within 120 s"))
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn new_token(api: &str, token: &str, name: &str) -> Result<(), BoxError> {
    let model: Value = client()
        .post(format!("{api}/users/{name}/tokens"))
        .header("Authorization", format!("token {token}"))
        .json(&json!({"note": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let token = model["token"]
        .as_str()
        .ok_or_else(|| format!("no token in {model}"))?;
    println!("{token}");
    Ok(())
}

async fn target(api: &str, token: &str, name: &str) -> Result<(), BoxError> {
    let routes: Value = client()
        .get(format!("{api}/proxy"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await?
        .json()
        .await?;
    let spec = format!("/user/{name}/");
    let target = routes[&spec]["target"]
        .as_str()
        .ok_or_else(|| format!("no route {spec} in {routes}"))?;
    println!("{}", target.trim_end_matches('/'));
    Ok(())
}

async fn ws_rtt(url: &str, n: usize) -> Result<(), BoxError> {
    let s = websocket::round_trips(url, n).await?;
    println!("{:.3} {:.3}", percentile(&s, 0.5), percentile(&s, 0.99));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The report

/// A row of the table, with the target for our hub if the issue sets one.
struct Metric {
    key: &'static str,
    label: &'static str,
    /// Target as (ratio ours/theirs, or absolute value for ours), with its wording.
    target: Option<Target>,
}

enum Target {
    RatioAtLeast(f64, &'static str),
    RatioAtMost(f64, &'static str),
    OursAtLeast(f64, &'static str),
    OursAtMost(f64, &'static str),
}

const fn m(key: &'static str, label: &'static str, target: Option<Target>) -> Metric {
    Metric { key, label, target }
}

const METRICS: &[Metric] = &[
    m(
        "api_user_rps",
        "GET /hub/api/user, 32 clients (req/s)",
        Some(Target::RatioAtLeast(100.0, ">= 100x")),
    ),
    m("api_user_p50_ms", "  same, p50 (ms)", None),
    m(
        "api_user_p99_ms",
        "  same, p99 (ms)",
        Some(Target::RatioAtMost(0.1, "<= 1/10")),
    ),
    m("api_user_errors", "  errors (wrk)", None),
    m(
        "api_user_gen_rps",
        "  same with a hub-issued token (req/s)",
        Some(Target::RatioAtLeast(100.0, ">= 100x")),
    ),
    m("api_user_gen_p99_ms", "  hub-issued token, p99 (ms)", None),
    m("list_users_count", "users in GET /hub/api/users", None),
    m(
        "list_users_p50_ms",
        "GET /hub/api/users, 1000 users, p50 (ms)",
        Some(Target::RatioAtMost(0.01, "<= 1/100")),
    ),
    m(
        "list_users_p99_ms",
        "  same, p99 (ms)",
        Some(Target::RatioAtMost(0.1, "<= 1/10")),
    ),
    m(
        "list_users_written_p50_ms",
        "  after a write each time, p50 (ms)",
        None,
    ),
    m("list_users_written_p99_ms", "  same, p99 (ms)", None),
    m(
        "logins_per_s",
        "form logins, 32 clients (logins/s)",
        Some(Target::RatioAtLeast(20.0, ">= 20x")),
    ),
    m("login_errors", "  failed logins", None),
    m("direct_rps", "user server direct (req/s)", None),
    m("direct_p50_ms", "  direct p50 (ms)", None),
    m("direct_p99_ms", "  direct p99 (ms)", None),
    m(
        "proxied_rps",
        "user server through the proxy (req/s)",
        Some(Target::RatioAtLeast(10.0, ">= 10x")),
    ),
    m("proxied_p50_ms", "  proxied p50 (ms)", None),
    m("proxied_p99_ms", "  proxied p99 (ms)", None),
    m("proxied_errors", "  proxied errors (wrk)", None),
    m(
        "proxied_pct_direct",
        "  proxied / direct req/s (%)",
        Some(Target::OursAtLeast(50.0, ">= 50 %")),
    ),
    m(
        "ws_direct_p50_ms",
        "websocket round trip direct p50 (ms)",
        None,
    ),
    m("ws_direct_p99_ms", "  direct p99 (ms)", None),
    m(
        "ws_proxied_p50_ms",
        "websocket round trip proxied p50 (ms)",
        None,
    ),
    m("ws_proxied_p99_ms", "  proxied p99 (ms)", None),
    m(
        "spawn_p50_ms",
        "spawn a stub server, one at a time, p50 (ms)",
        None,
    ),
    m(
        "stub_http_p50_ms",
        "  the stub alone, exec to answering, p50 (ms)",
        None,
    ),
    m(
        "spawn_share_ms",
        "  hub share: spawn - stub alone (ms)",
        Some(Target::OursAtMost(20.0, "<= 20 ms")),
    ),
    m("spawn_seq_errors", "  failed spawns", None),
    m(
        "spawn50_total_s",
        "50 concurrent spawns, wall time (s)",
        Some(Target::RatioAtMost(1.0 / 3.0, "<= 1/3")),
    ),
    m("spawn50_p50_ms", "  per spawn p50 (ms)", None),
    m("spawn50_errors", "  failed spawns", None),
    m(
        "rss_idle_mib",
        "RSS idle (MiB; Python: hub + proxy)",
        Some(Target::RatioAtMost(1.0 / 6.0, "<= 1/6")),
    ),
    m(
        "rss_1k_mib",
        "RSS with 1000 users (MiB)",
        Some(Target::RatioAtMost(1.0 / 6.0, "<= 1/6")),
    ),
    m(
        "rss_50_mib",
        "RSS with 50 running servers (MiB)",
        Some(Target::RatioAtMost(1.0 / 6.0, "<= 1/6")),
    ),
    m(
        "rss_10k_mib",
        "RSS after start-up with 10000 users (MiB)",
        None,
    ),
    m("startup_empty_s", "start-up, empty database (s)", None),
    m("startup_1k_s", "start-up with 1000 users (s)", None),
    m(
        "startup_10k_s",
        "start-up with 10000 users (s)",
        Some(Target::OursAtMost(1.0, "<= 1 s")),
    ),
];

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn report(path: &str) -> Result<(), BoxError> {
    let text = std::fs::read_to_string(path)?;
    // (hub, metric) -> values over runs; (hub, run) -> load average.
    let mut values: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut loads: BTreeMap<(String, String), String> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 4 {
            continue;
        }
        let (hub, run, metric, value) = (fields[0], fields[1], fields[2], fields[3]);
        if metric == "load" {
            loads.insert((hub.into(), run.into()), value.into());
        } else if let Ok(v) = value.parse::<f64>() {
            values
                .entry((hub.into(), metric.into()))
                .or_default()
                .push(v);
        }
    }
    let mut med = |hub: &str, key: &str| {
        values
            .get_mut(&(hub.to_owned(), key.to_owned()))
            .map_or(f64::NAN, |v| median(v))
    };
    println!(
        "{:<46} {:>9} {:>9} {:>9} {:>9} {:>5}",
        "metric (median of runs)", "ours", "python", "ours/py", "target", "met"
    );
    for metric in METRICS {
        let (ours, theirs) = (med("ours", metric.key), med("python", metric.key));
        // A script that measures only some figures prints only those.
        if ours.is_nan() && theirs.is_nan() {
            continue;
        }
        let ratio = ours / theirs;
        let ratio_text = if ratio.is_finite() {
            format!("{ratio:.3}")
        } else {
            "-".into()
        };
        let (target, met) = match &metric.target {
            None => ("", None),
            Some(Target::RatioAtLeast(t, w)) => (*w, ratio.is_finite().then_some(ratio >= *t)),
            Some(Target::RatioAtMost(t, w)) => (*w, ratio.is_finite().then_some(ratio <= *t)),
            Some(Target::OursAtLeast(t, w)) => (*w, (!ours.is_nan()).then_some(ours >= *t)),
            Some(Target::OursAtMost(t, w)) => (*w, (!ours.is_nan()).then_some(ours <= *t)),
        };
        let met = match met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<46} {:>9} {:>9} {:>9} {:>9} {:>5}",
            metric.label,
            fmt(ours),
            fmt(theirs),
            ratio_text,
            target,
            met
        );
    }
    println!();
    println!("load average (1, 5, 15 min) when each hub's run started:");
    for ((hub, run), load) in &loads {
        println!("  {hub:<7} run {run}: {load}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn arg<'a>(args: &'a [String], i: usize, usage: &str) -> Result<&'a str, BoxError> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| format!("usage: {usage}").into())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let command = args.get(1).map(String::as_str).unwrap_or_default();
    match command {
        "stub" => stub().await,
        "wait-up" => {
            let u = "wait-up URL SINCE_NS TIMEOUT_S";
            let since = arg(&args, 3, u)?.parse()?;
            let timeout = Duration::from_secs_f64(arg(&args, 4, u)?.parse()?);
            wait_up(arg(&args, 2, u)?, since, timeout).await
        }
        "create" => {
            let u = "create API TOKEN NAME...";
            create_users(arg(&args, 2, u)?, arg(&args, 3, u)?, &args[4..]).await
        }
        "populate" => {
            let u = "populate API TOKEN PREFIX COUNT";
            let prefix = arg(&args, 4, u)?;
            let count: usize = arg(&args, 5, u)?.parse()?;
            let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i:05}")).collect();
            create_users(arg(&args, 2, u)?, arg(&args, 3, u)?, &names).await
        }
        "latency" => {
            let u = "latency URL TOKEN N";
            latency(arg(&args, 2, u)?, arg(&args, 3, u)?, arg(&args, 4, u)?.parse()?).await
        }
        "logins" => {
            let u = "logins HUB_URL CLIENTS SECONDS PREFIX NUSERS";
            logins(
                arg(&args, 2, u)?,
                arg(&args, 3, u)?.parse()?,
                arg(&args, 4, u)?.parse()?,
                arg(&args, 5, u)?,
                arg(&args, 6, u)?.parse()?,
            )
            .await
        }
        "spawn" => {
            let u = "spawn API TOKEN CONCURRENCY NAME...";
            let concurrency = arg(&args, 4, u)?.parse()?;
            spawn(arg(&args, 2, u)?, arg(&args, 3, u)?, concurrency, &args[5..]).await
        }
        "startup" => {
            let u = "startup N USER PATH CMD...";
            let n = arg(&args, 2, u)?.parse()?;
            startup(n, arg(&args, 3, u)?, arg(&args, 4, u)?, args.get(5..).unwrap_or_default()).await
        }
        "stop" => {
            let u = "stop API TOKEN NAME...";
            stop(arg(&args, 2, u)?, arg(&args, 3, u)?, &args[4..]).await
        }
        "token" => {
            let u = "token API TOKEN NAME";
            new_token(arg(&args, 2, u)?, arg(&args, 3, u)?, arg(&args, 4, u)?).await
        }
        "target" => {
            let u = "target API TOKEN NAME";
            target(arg(&args, 2, u)?, arg(&args, 3, u)?, arg(&args, 4, u)?).await
        }
        "ws-rtt" => {
            let u = "ws-rtt URL N";
            ws_rtt(arg(&args, 2, u)?, arg(&args, 3, u)?.parse()?).await
        }
        "report" => report(arg(&args, 2, "report FILE")?),
        "count" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            let value: Value = serde_json::from_str(&text)?;
            let items = value.get("items").unwrap_or(&value);
            println!("{}", items.as_array().map_or(0, Vec::len));
            Ok(())
        }
        _ => Err("usage: hub_bench stub|wait-up|create|populate|latency|logins|spawn|startup|stop|token|target|ws-rtt|count|report".into()),
    }
}
