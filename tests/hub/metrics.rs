//! Upstream's Prometheus metrics (`jupyterhub/metrics.py`) and ours: every name is served
//! at `/hub/metrics` and `/hub/api/metrics`, and each moves after what it measures.

use std::time::{Duration, Instant};

use crate::support::{TestHub, call, login, server_user, stub_spawner_config, wait_ready};

/// Every metric upstream 5.3 and 6.x register, with the suffixes the exposition adds.
const UPSTREAM: &[&str] = &[
    "jupyterhub_request_duration_seconds_bucket",
    "jupyterhub_server_spawn_duration_seconds_bucket",
    "jupyterhub_running_servers",
    "jupyterhub_total_users",
    "jupyterhub_active_users{period=\"24h\"}",
    "jupyterhub_active_users{period=\"7d\"}",
    "jupyterhub_active_users{period=\"30d\"}",
    "jupyterhub_check_routes_duration_seconds_count",
    "jupyterhub_hub_startup_duration_seconds_count",
    "jupyterhub_init_spawners_duration_seconds_count",
    "jupyterhub_proxy_poll_duration_seconds_count",
    "jupyterhub_login_duration_seconds_count{status=\"success\"}",
    "jupyterhub_login_duration_seconds_count{status=\"failure\"}",
    "jupyterhub_logout_duration_seconds_count",
    "jupyterhub_csp_reports_total",
    "jupyterhub_proxy_add_duration_seconds_count{status=\"success\"}",
    "jupyterhub_proxy_add_duration_seconds_count{status=\"failure\"}",
    "jupyterhub_server_poll_duration_seconds_count{status=\"running\"}",
    "jupyterhub_server_poll_duration_seconds_count{status=\"stopped\"}",
    "jupyterhub_server_stop_seconds_count{status=\"success\"}",
    "jupyterhub_server_stop_seconds_count{status=\"failure\"}",
    "jupyterhub_proxy_delete_duration_seconds_count{status=\"success\"}",
    "jupyterhub_proxy_delete_duration_seconds_count{status=\"failure\"}",
    "jupyterhub_event_loop_interval_seconds_count",
    "jupyterhub_server_spawn_duration_seconds_count{status=\"success\"}",
    "jupyterhub_server_spawn_duration_seconds_count{status=\"failure\"}",
    "jupyterhub_server_spawn_duration_seconds_count{status=\"already-pending\"}",
    "jupyterhub_server_spawn_duration_seconds_count{status=\"throttled\"}",
    "jupyterhub_server_spawn_duration_seconds_count{status=\"too-many-users\"}",
];

async fn scrape_at(hub: &TestHub, path: &str, token: &str) -> String {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", hub.url))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.expect("text")
}

async fn scrape(hub: &TestHub, token: &str) -> String {
    scrape_at(hub, "/hub/metrics", token).await
}

/// The value of the sample that starts with `series ` (name and labels as encoded).
fn value(text: &str, series: &str) -> f64 {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series}:\n{text}"))
}

/// Scrape until `series` reaches `at_least` (30 s at most): for what a background task moves.
async fn wait_for(hub: &TestHub, token: &str, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(hub, token).await;
        if text.lines().any(|l| l.starts_with(&format!("{series} ")))
            && value(&text, series) >= at_least
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_upstream_metric_is_served_at_both_paths_and_needs_read_metrics() {
    let mut hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    // request_duration_seconds has series once a request has finished.
    let (status, _) = call(&hub, "GET", "/", &admin, None).await;
    assert_eq!(status, 200);
    for path in ["/hub/metrics", "/hub/api/metrics"] {
        let text = scrape_at(&hub, path, &admin).await;
        for name in UPSTREAM {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing at {path}:\n{text}"
            );
        }
        let alice = hub.token("alice", &[]);
        let r = reqwest::Client::new()
            .get(format!("{}{path}", hub.url))
            .header("Authorization", format!("token {alice}"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 403, "{path}");
    }
    let text = scrape(&hub, &admin).await;
    // Once per process, before READY.
    assert_eq!(
        value(&text, "jupyterhub_hub_startup_duration_seconds_count"),
        1.0
    );
    assert_eq!(
        value(&text, "jupyterhub_init_spawners_duration_seconds_count"),
        1.0
    );
    // At start-up, once services run.
    assert!(value(&text, "jupyterhub_check_routes_duration_seconds_count") >= 1.0);
    // The previous scrapes were timed under their route's template.
    assert!(
        value(
            &text,
            "jupyterhub_request_duration_seconds_count{method=\"GET\",handler=\"/hub/api/metrics\",code=\"200\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(
        value(
            &text,
            "jupyterhub_request_duration_seconds_count{method=\"GET\",handler=\"/hub/metrics\",code=\"403\"}"
        ) >= 1.0,
        "{text}"
    );
    // Paths no route matches are named as upstream's catch-all handlers.
    let (status, _) = call(&hub, "GET", "/no-such-thing", &admin, None).await;
    assert_eq!(status, 404);
    let r = reqwest::get(format!("{}/hub/no-such-page", hub.url))
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let r = reqwest::get(format!("{}/elsewhere", hub.url))
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let text = scrape(&hub, &admin).await;
    for (handler, code) in [
        ("api_404", 404),
        ("page_404", 404),
        ("prefix_redirect", 404),
        ("/hub/api/", 200),
    ] {
        let series = format!(
            "jupyterhub_request_duration_seconds_count{{method=\"GET\",handler=\"{handler}\",code=\"{code}\"}}"
        );
        assert!(value(&text, &series) >= 1.0, "{series}\n{text}");
    }
    // The probe observes every 50 ms from start-up.
    wait_for(
        &hub,
        &admin,
        "jupyterhub_event_loop_interval_seconds_count",
        2.0,
    )
    .await;

    // The route table: GET polls it, POST checks it.
    let polled = value(&text, "jupyterhub_proxy_poll_duration_seconds_count");
    let checked = value(&text, "jupyterhub_check_routes_duration_seconds_count");
    let (status, _) = call(&hub, "GET", "/proxy", &admin, None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&hub, "POST", "/proxy", &admin, None).await;
    assert_eq!(status, 200);
    let text = scrape(&hub, &admin).await;
    // GET polls once, POST's check polls once more.
    assert!(value(&text, "jupyterhub_proxy_poll_duration_seconds_count") >= polled + 2.0);
    assert!(value(&text, "jupyterhub_check_routes_duration_seconds_count") >= checked + 1.0);

    // A CSP report from a logged-in user counts.
    let (browser, _) = login(&hub, "carol", "pw").await;
    let r = browser
        .post(format!("{}/hub/security/csp-report", hub.url))
        .header("content-type", "application/csp-report")
        .body(r#"{"csp-report": {}}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 204);
    let text = scrape(&hub, &admin).await;
    assert_eq!(value(&text, "jupyterhub_csp_reports_total"), 1.0);
    // admin, alice and carol.
    assert_eq!(value(&text, "jupyterhub_total_users"), 3.0);

    // Counted at start-up (and hourly): carol's login made her active in the last 24 h.
    hub.restart().await;
    let text = scrape(&hub, &admin).await;
    for period in ["24h", "7d", "30d"] {
        assert!(
            value(
                &text,
                &format!("jupyterhub_active_users{{period=\"{period}\"}}")
            ) >= 1.0,
            "{text}"
        );
    }
}

#[tokio::test]
async fn metrics_are_open_without_authenticate_prometheus() {
    let hub = TestHub::start("authenticate_prometheus = false", "").await;
    for path in ["/hub/metrics", "/hub/api/metrics"] {
        let r = reqwest::get(format!("{}{path}", hub.url))
            .await
            .expect("get");
        assert_eq!(r.status(), 200, "{path}");
    }
}

/// Spawn outcomes with upstream 5.3's statuses, the route added and deleted, the poll, the
/// stop, and (ours) the server's memory and CPU. A pre-spawn hook keeps each spawn pending
/// for a few seconds, so the requests made meanwhile meet a pending spawn; it fails for the
/// server named `bad`.
#[tokio::test]
async fn servers_move_spawn_poll_route_stop_and_usage_metrics() {
    let hub = TestHub::start(
        "allow_named_servers = true\nconcurrent_spawn_limit = 1\nactive_server_limit = 2\nslow_spawn_timeout = 0.0",
        &format!(
            "{}poll_interval = 1\npre_spawn_hook = [\"/bin/sh\", \"-c\", \"sleep 3; [ \\\"$JUPYTERHUB_SERVER_NAME\\\" != bad ]\", \"hook\"]\n",
            stub_spawner_config()
        ),
    )
    .await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let series = |status: &str| {
        format!("jupyterhub_server_spawn_duration_seconds_count{{status=\"{status}\"}}")
    };

    let (status, body) = call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    assert_eq!(status, 202, "{body}");
    // The same server again while its spawn is pending.
    let (status, body) = call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    assert_eq!(status, 202, "{body}");
    // Another one: one spawn pending is the limit.
    let (status, body) = call(
        &hub,
        "POST",
        &format!("/users/{user}/servers/b"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    wait_ready(&hub, &admin, &user, "").await;
    let (status, body) = call(
        &hub,
        "POST",
        &format!("/users/{user}/servers/bad"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    // One ready and one pending: the active server limit is reached.
    let (status, body) = call(
        &hub,
        "POST",
        &format!("/users/{user}/servers/c"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    let text = wait_for(&hub, &admin, &series("failure"), 1.0).await;
    for (status, count) in [
        ("success", 1.0),
        ("failure", 1.0),
        ("already-pending", 1.0),
        ("throttled", 1.0),
        ("too-many-users", 1.0),
    ] {
        assert_eq!(value(&text, &series(status)), count, "{status}\n{text}");
    }
    assert_eq!(
        value(
            &text,
            "jupyterhub_proxy_add_duration_seconds_count{status=\"success\"}"
        ),
        1.0
    );
    // The route table is in-process: adding and deleting a route cannot fail, so the
    // `failure` series of proxy_add and proxy_delete stay at 0.
    assert_eq!(
        value(
            &text,
            "jupyterhub_proxy_add_duration_seconds_count{status=\"failure\"}"
        ),
        0.0
    );
    assert_eq!(value(&text, "jupyterhub_running_servers"), 1.0);

    // The periodic poll (every second here) finds the server running.
    wait_for(
        &hub,
        &admin,
        "jupyterhub_server_poll_duration_seconds_count{status=\"running\"}",
        1.0,
    )
    .await;

    // Ours: the stub's memory (RSS of its processes, under the local spawner) and CPU time.
    let memory = format!("jupyterhub_rs_server_memory_bytes{{user=\"{user}\",server_name=\"\"}}");
    let text = scrape(&hub, &admin).await;
    assert!(value(&text, &memory) > 1_000_000.0, "{text}");
    let cpu = format!("jupyterhub_rs_server_cpu_seconds_total{{user=\"{user}\",server_name=\"\"}}");
    assert!(value(&text, &cpu) > 0.0, "{text}");

    let (status, body) = call(
        &hub,
        "DELETE",
        &format!("/users/{user}/server"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let text = scrape(&hub, &admin).await;
    assert_eq!(
        value(
            &text,
            "jupyterhub_server_stop_seconds_count{status=\"success\"}"
        ),
        1.0
    );
    // The local spawner's stop does not fail for a server that runs: `failure` stays at 0.
    assert_eq!(
        value(
            &text,
            "jupyterhub_server_stop_seconds_count{status=\"failure\"}"
        ),
        0.0
    );
    assert_eq!(
        value(
            &text,
            "jupyterhub_proxy_delete_duration_seconds_count{status=\"success\"}"
        ),
        1.0
    );
    assert_eq!(value(&text, "jupyterhub_running_servers"), 0.0);
    // A stopped server's usage series goes with it.
    assert!(!text.contains(&memory), "{text}");
}

/// SIGKILL a server's process and wait until it is gone.
async fn kill_server(model: &serde_json::Value) {
    let pid = model["servers"][""]["state"]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("the local spawner's state has the pid: {model}"));
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill the server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the server outlived SIGKILL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server that died while the hub was down is polled `stopped` at start-up; one that dies
/// while it runs has its route deleted.
#[tokio::test]
async fn servers_that_die_are_polled_stopped_and_lose_their_route() {
    let mut hub = TestHub::start("", &stub_spawner_config()).await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    let model = wait_ready(&hub, &admin, &user, "").await;
    hub.stop();
    kill_server(&model).await;
    hub.launch().await;
    let text = scrape(&hub, &admin).await;
    assert_eq!(
        value(
            &text,
            "jupyterhub_server_poll_duration_seconds_count{status=\"stopped\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&text, "jupyterhub_init_spawners_duration_seconds_count"),
        1.0
    );

    call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    let model = wait_ready(&hub, &admin, &user, "").await;
    kill_server(&model).await;
    // Noticed by the exit watch (or the poll), which removes the route.
    wait_for(
        &hub,
        &admin,
        "jupyterhub_proxy_delete_duration_seconds_count{status=\"success\"}",
        1.0,
    )
    .await;
}
