//! Load generator for bench/campus.sh and a figure of bench/run.sh (not a test): the campus-sized figures, driven over HTTP
//! the same way against our hub and Python JupyterHub. The stub servers, user creation and
//! spawns are `hub_bench`'s; this adds what only a campus needs.
//!
//! Subcommands (each prints one line of space-separated figures on stdout):
//! - `pages API TOKEN LIMIT PASSES`: pages through `GET {API}/users` with the pagination
//!   envelope, LIMIT users a page, PASSES times after one warm-up pass; prints
//!   `users_per_pass pages p50_ms p99_ms` over all timed pages.
//! - `activity API TOKEN HUB_URL SECONDS EVERY NAME...`: for SECONDS, every EVERY seconds, as
//!   each NAME's server would: `POST {API}/users/NAME/activity` (what `jupyterhub-singleuser`
//!   sends) and one request to `{HUB_URL}/user/NAME/api/status` through the proxy (route
//!   activity); prints `posts proxied errors`.
//! - `ws-hold HUB_URL SECONDS READY_FILE NAME...`: one websocket through the proxy to each
//!   NAME's server at once, one echo each; writes `open errors` to READY_FILE once all are
//!   open, holds them SECONDS, echoes once more on each; prints `open errors_after_hold`.
//! - `latency-after-write URL API TOKEN N`: N GETs of URL with TOKEN, each after a write
//!   (the admin's activity), so neither hub answers from memory; prints `p50_ms p99_ms`
//!   (bench/run.sh's listing figure "after a write").
//! - `report FILE`: the table of medians, ours against Python's, from the `hub run metric
//!   value` lines bench/campus.sh records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client")
}

/// A write both hubs make (the admin's activity), so no answer either hub remembers is
/// still valid after it: what follows is rendered afresh.
async fn touch(http: &reqwest::Client, api: &str, token: &str) -> Result<(), BoxError> {
    let now = jiff::Timestamp::now().to_string();
    let r = http
        .post(format!("{api}/users/admin/activity"))
        .header("Authorization", format!("token {token}"))
        .json(&json!({"last_activity": now}))
        .send()
        .await?;
    if !r.status().is_success() {
        return Err(format!("POST /users/admin/activity: {}", r.status()).into());
    }
    Ok(())
}

async fn pages(api: &str, token: &str, limit: usize, passes: usize) -> Result<(), BoxError> {
    let http = client();
    let mut samples = Vec::new();
    let mut users_per_pass = 0;
    for pass in 0..=passes {
        // Each page of a pass is asked once, after a write: none is a remembered answer.
        touch(&http, api, token).await?;
        let mut offset = 0;
        let mut users = 0;
        loop {
            let start = Instant::now();
            let r = http
                .get(format!("{api}/users?offset={offset}&limit={limit}"))
                .header("Authorization", format!("token {token}"))
                .header("Accept", "application/jupyterhub-pagination+json")
                .send()
                .await?;
            let status = r.status();
            let body: Value = r.json().await?;
            if !status.is_success() {
                return Err(format!("GET /users: {status} {body}").into());
            }
            if pass > 0 {
                samples.push(start.elapsed().as_secs_f64() * 1e3);
            }
            let n = body["items"].as_array().map_or(0, Vec::len);
            users += n;
            // Both hubs give the next page's offset, or null on the last page.
            match body["_pagination"]["next"]["offset"].as_u64() {
                Some(next) if n > 0 => offset = next as usize,
                _ => break,
            }
        }
        users_per_pass = users;
    }
    let pages = samples.len() / passes.max(1);
    samples.sort_by(f64::total_cmp);
    println!(
        "{users_per_pass} {pages} {:.3} {:.3}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );
    Ok(())
}

async fn activity(
    api: &str,
    token: &str,
    hub_url: &str,
    seconds: f64,
    every: f64,
    names: &[String],
) -> Result<(), BoxError> {
    let http = client();
    let semaphore = Arc::new(Semaphore::new(32));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let (mut posts, mut proxied, mut errors) = (0usize, 0usize, 0usize);
    while Instant::now() < deadline {
        let round = Instant::now();
        let now = jiff::Timestamp::now().to_string();
        let mut tasks = Vec::with_capacity(names.len());
        for name in names {
            let (http, semaphore) = (http.clone(), semaphore.clone());
            let post = http
                .post(format!("{api}/users/{name}/activity"))
                .header("Authorization", format!("token {token}"))
                .json(&json!({"servers": {"": {"last_activity": now}}, "last_activity": now}));
            let get = http.get(format!("{hub_url}/user/{name}/api/status"));
            tasks.push(tokio::spawn(async move {
                let _permit = semaphore.acquire_owned().await.expect("semaphore open");
                let posted = post.send().await.is_ok_and(|r| r.status().is_success());
                let got = get.send().await.is_ok_and(|r| r.status().is_success());
                (posted, got)
            }));
        }
        for task in tasks {
            let (posted, got) = task.await?;
            posts += usize::from(posted);
            proxied += usize::from(got);
            errors += usize::from(!posted) + usize::from(!got);
        }
        let left = Duration::from_secs_f64(every).saturating_sub(round.elapsed());
        tokio::time::sleep(left.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
    println!("{posts} {proxied} {errors}");
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn echo(ws: &mut Ws) -> Result<(), BoxError> {
    ws.send(Message::text("x".repeat(100))).await?;
    match ws.next().await {
        Some(Ok(m)) if m.is_text() => Ok(()),
        other => Err(format!("no echo: {other:?}").into()),
    }
}

async fn ws_hold(
    hub_url: &str,
    seconds: f64,
    ready_file: &str,
    names: &[String],
) -> Result<(), BoxError> {
    let base = hub_url
        .strip_prefix("http://")
        .ok_or("HUB_URL must be http://")?;
    // Opening is what loads the hub (an upgrade each); 64 at a time keeps it from being a
    // connect storm the backlog would have to absorb.
    let semaphore = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    for name in names {
        let url = format!("ws://{base}/user/{name}/ws");
        let semaphore = semaphore.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore open");
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
            echo(&mut ws).await?;
            Ok::<Ws, BoxError>(ws)
        }));
    }
    let mut open = Vec::new();
    let mut errors = 0;
    for task in tasks {
        match task.await? {
            Ok(ws) => open.push(ws),
            Err(e) => {
                errors += 1;
                eprintln!("websocket: {e}");
            }
        }
    }
    std::fs::write(ready_file, format!("{} {errors}\n", open.len()))?;
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let mut after = 0;
    for ws in &mut open {
        if echo(ws).await.is_err() {
            after += 1;
        }
    }
    println!("{} {after}", open.len());
    Ok(())
}

/// The table's rows, in order: (key as bench/campus.sh records it, label).
const METRICS: &[(&str, &str)] = &[
    ("routes", "routes in the proxy's table"),
    ("proxied_few_rps", "proxied req/s, 10 routes"),
    ("proxied_few_p99_ms", "  p99 (ms)"),
    ("proxied_many_rps", "proxied req/s, all servers' routes"),
    ("proxied_many_p99_ms", "  p99 (ms)"),
    ("proxied_many_errors", "  errors (wrk)"),
    (
        "rss_campus_mib",
        "hub RSS, all users, servers running (MiB)",
    ),
    ("pages_users", "users paged through"),
    ("pages_p50_ms", "GET /hub/api/users page of 200, p50 (ms)"),
    ("pages_p99_ms", "  p99 (ms)"),
    (
        "cpu_per_flush_active_ms",
        "hub CPU per activity interval, active (ms)",
    ),
    (
        "cpu_per_flush_quiet_ms",
        "hub CPU per activity interval, quiet (ms)",
    ),
    ("ws_open", "proxied websockets open at once"),
    ("ws_errors", "  websocket errors"),
    ("ws_rss_mib", "  hub RSS with them open (MiB)"),
    ("ws_kib_each", "  hub memory per websocket (KiB)"),
    ("ready_before_restart", "servers ready before the restart"),
    ("startup_api_s", "restart: API answers (s)"),
    (
        "startup_adopted_s",
        "restart: all servers adopted and routed (s)",
    ),
    ("rss_restarted_mib", "  hub RSS after restart (MiB)"),
    ("populate_s", "creating the users through the API (s)"),
    ("spawn_rest_s", "starting the servers, 50 at a time (s)"),
    ("spawn_rest_errors", "  failed spawns"),
];

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians per hub and metric from `hub run metric value` lines, ours against Python's.
fn report(path: &str) -> Result<(), BoxError> {
    use std::collections::BTreeMap;
    let text = std::fs::read_to_string(path)?;
    let mut values: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut notes = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [hub, run, key, value] = fields[..] else {
            continue;
        };
        if key == "load" || key.ends_with("_abandoned_after_s") {
            notes.push(format!("  {hub:<7} run {run}: {key} {value}"));
            continue;
        }
        if let Ok(v) = value.parse() {
            values.entry((hub.into(), key.into())).or_default().push(v);
        }
    }
    let get = |hub: &str, key: &str| {
        median(
            values
                .get(&(hub.into(), key.into()))
                .cloned()
                .unwrap_or_default(),
        )
    };
    let fmt = |v: f64| {
        if v.is_nan() {
            "-".to_owned()
        } else if v.abs() >= 100.0 || v == v.trunc() {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    println!(
        "{:<46} {:>9} {:>9} {:>9}",
        "metric (median of runs)", "ours", "python", "ours/py"
    );
    for (key, label) in METRICS {
        let (ours, theirs) = (get("ours", key), get("python", key));
        let ratio = if theirs.is_nan() || theirs == 0.0 {
            f64::NAN
        } else {
            ours / theirs
        };
        let ratio = if ratio.is_nan() {
            "-".to_owned()
        } else {
            format!("{ratio:.3}")
        };
        println!("{label:<46} {:>9} {:>9} {ratio:>9}", fmt(ours), fmt(theirs));
    }
    println!();
    println!("load average (1, 5, 15 min) when each run started, and abandoned steps:");
    for note in notes {
        println!("{note}");
    }
    Ok(())
}

/// N GETs of URL, each after a write (`touch`), after 3 warm-ups: the cost of rendering the
/// answer, not of remembering it.
async fn latency_after_write(url: &str, api: &str, token: &str, n: usize) -> Result<(), BoxError> {
    let http = client();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 3 {
        touch(&http, api, token).await?;
        let start = Instant::now();
        let r = http
            .get(url)
            .header("Authorization", format!("token {token}"))
            .send()
            .await?;
        let status = r.status();
        r.bytes().await?;
        if !status.is_success() {
            return Err(format!("GET {url}: {status}").into());
        }
        if i >= 3 {
            samples.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "{:.3} {:.3}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );
    Ok(())
}

fn arg<'a>(args: &'a [String], i: usize, usage: &str) -> Result<&'a str, BoxError> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| format!("usage: {usage}").into())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str).unwrap_or_default() {
        "pages" => {
            let u = "pages API TOKEN LIMIT PASSES";
            let limit = arg(&args, 4, u)?.parse()?;
            let passes = arg(&args, 5, u)?.parse()?;
            pages(arg(&args, 2, u)?, arg(&args, 3, u)?, limit, passes).await
        }
        "activity" => {
            let u = "activity API TOKEN HUB_URL SECONDS EVERY NAME...";
            let seconds = arg(&args, 5, u)?.parse()?;
            let every = arg(&args, 6, u)?.parse()?;
            let (api, token, hub) = (arg(&args, 2, u)?, arg(&args, 3, u)?, arg(&args, 4, u)?);
            activity(api, token, hub, seconds, every, &args[7..]).await
        }
        "ws-hold" => {
            let u = "ws-hold HUB_URL SECONDS READY_FILE NAME...";
            let seconds = arg(&args, 3, u)?.parse()?;
            ws_hold(arg(&args, 2, u)?, seconds, arg(&args, 4, u)?, &args[5..]).await
        }
        "latency-after-write" => {
            let u = "latency-after-write URL API TOKEN N";
            let (url, api, token) = (arg(&args, 2, u)?, arg(&args, 3, u)?, arg(&args, 4, u)?);
            latency_after_write(url, api, token, arg(&args, 5, u)?.parse()?).await
        }
        "report" => report(arg(&args, 2, "report FILE")?),
        _ => Err("usage: campus_bench pages|activity|ws-hold|latency-after-write|report".into()),
    }
}
