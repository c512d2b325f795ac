//! The machine misbehaving under a running hub (issue 18), each on a hub and contained
//! systemd of its own: the system bus restarted (`systemctl restart dbus`) and killed
//! (`kill -9` of dbus-daemon, socket-activated again), and systemd re-executing and reloading
//! itself, while servers run and during spawns: the hub reconnects, says so in its journal,
//! keeps its servers (same units, same PIDs), notices exits again, and spawns and stops.
//! `kill -9` of the hub at random moments of a stream of API writes (everything answered 2xx
//! survives, the database stays whole) and of its managed service's start (one unit, adopted
//! or started once). `CHAOS_ROUNDS` (default 4) sets how many spawns are interrupted,
//! `CHAOS_KILLS` (default 12) how often the hub is killed.
//! Needs root (fails, saying so, otherwise).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Contained, ensure_user};
use crate::hub::{HUB_UNIT, Hub, SERVICE_UNIT, Users, server_unit};

fn rounds() -> u64 {
    std::env::var("CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// A small deterministic generator (xorshift), seeded by the process id and printed.
fn generator() -> impl FnMut() -> u64 {
    let mut seed = u64::from(std::process::id()) | 1;
    eprintln!("chaos seed {seed}");
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn add_users(hub: &Hub<'_>, users: &[String]) {
    let (status, _, body) = hub
        .call(
            reqwest::Method::POST,
            "/users",
            Some(json!({ "usernames": users })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn stop(hub: &Hub<'_>, user: &str) {
    let (status, _, body) = hub
        .call(
            reqwest::Method::DELETE,
            &format!("/users/{user}/server"),
            None,
        )
        .await;
    assert!(matches!(status.as_u16(), 202 | 204), "{status} {body}");
    hub.wait_stopped(user).await;
    let state = hub.sd.prop(&server_unit(user), "ActiveState");
    assert!(
        state == "inactive" || state == "failed" || state.is_empty(),
        "{user}'s unit after the stop: {state}"
    );
}

/// The server is ready, its unit runs and its route answers as that user's.
async fn serving(hub: &Hub<'_>, user: &str) {
    assert_eq!(hub.sd.prop(&server_unit(user), "ActiveState"), "active");
    let (status, answer) = hub.through_proxy(user).await;
    if status != StatusCode::OK {
        let pid = hub.main_pid();
        let exits: Vec<Value> = hub
            .entries(&pid)
            .into_iter()
            .filter(|e| message_contains(e, "exited") || message_contains(e, "stopped"))
            .collect();
        panic!("{user}: {status} {answer}\n{exits:#?}\n{}", hub.journal());
    }
    assert_eq!(answer["user"], json!(user), "{answer}");
}

/// Kill the user's unit behind the hub's back: the hub must notice through systemd's
/// signals alone (the test hub's `poll_interval` is an hour).
async fn dies_and_is_noticed(hub: &Hub<'_>, user: &str) {
    hub.sd
        .run_ok(&["systemctl", "kill", "--signal=KILL", &server_unit(user)]);
    hub.wait_stopped(user).await;
}

/// `systemctl VERB`, then wait until systemd answers again (`daemon-reexec` returns while
/// the new systemd is still starting).
fn systemctl_and_settle(sd: &Contained, verb: &str) {
    sd.run_ok(&["systemctl", verb]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(
        sd.run(&["systemctl", "is-system-running"]).trim(),
        "running" | "degraded"
    ) {
        assert!(
            Instant::now() < deadline,
            "systemd never came back from {verb}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until `user`'s spawn is over: "ready", or "failed" cleanly (no unit left running),
/// in which case a new spawn must work.
async fn settle_spawn(hub: &Hub<'_>, user: &str, what: &str) -> &'static str {
    let deadline = Instant::now() + Duration::from_secs(120);
    let outcome = loop {
        match hub.server(user).await {
            Some(s) if s["ready"] == json!(true) => break "ready",
            Some(s) if s["pending"].is_null() => panic!("{what}: neither ready nor pending: {s}"),
            None => break "failed",
            Some(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the spawn never settled:\n{}",
            hub.journal()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if outcome == "failed" {
        let overview = hub.get(&format!("/usage?user={user}")).await;
        eprintln!(
            "  {what}: failed: {}",
            overview["servers"][0]["last_failure"]
        );
        let state = hub.sd.prop(&server_unit(user), "ActiveState");
        assert!(
            state != "active" && state != "activating",
            "{what}: the spawn failed but its unit runs ({state}):\n{}",
            hub.journal()
        );
        hub.spawn(user).await;
    }
    outcome
}

/// Start `user`'s server and let it settle (see `settle_spawn`).
async fn spawn_or_retry(hub: &Hub<'_>, user: &str, what: &str) {
    let (status, _, body) = hub
        .call(
            reqwest::Method::POST,
            &format!("/users/{user}/server"),
            None,
        )
        .await;
    if !status.is_success() {
        eprintln!("  {what}: the spawn was refused at once ({status} {body})");
        hub.spawn(user).await;
        return;
    }
    let outcome = settle_spawn(hub, user, what).await;
    eprintln!("{what}: {outcome}");
}

fn message_contains(entry: &Value, text: &str) -> bool {
    entry["MESSAGE"].as_str().is_some_and(|m| m.contains(text))
}

#[test]
fn the_bus_restarting_and_systemd_reexecuting_lose_nothing() {
    crate::harness::require_root("the chaos system tests boot a contained systemd and add users");
    let _serial = crate::harness::serial();
    let names: Vec<String> = (1..=2).map(|i| format!("jh-chaos-{i}")).collect();
    let _users = Users(names.clone());
    for user in &names {
        ensure_user(user);
    }
    let sd = Contained::boot_with_own_cgroups("sdtest-chaos-bus");
    let hub = Hub::new(&sd);
    runtime().block_on(async {
        hub.start();
        let hub_pid = hub.main_pid();
        add_users(&hub, &names).await;
        let (a, b) = (&names[0], &names[1]);
        hub.spawn(a).await;
        let a_pid = sd.prop(&server_unit(a), "ExecMainPID");

        // 1. `systemctl restart dbus`, which Debian 12's dbus.service allows.
        let dbus_pid = sd.prop("dbus.service", "MainPID");
        sd.run_ok(&["systemctl", "restart", "dbus.service"]);
        assert_ne!(sd.prop("dbus.service", "MainPID"), dbus_pid);
        let again = |e: &Value| message_contains(e, "watching systemd's units again");
        hub.wait_for_entry(
            &hub_pid,
            "watching units again after the bus restart",
            again,
        )
        .await;
        assert_eq!(hub.main_pid(), hub_pid, "the hub restarted");
        assert_eq!(sd.prop(&server_unit(a), "ExecMainPID"), a_pid);
        serving(&hub, a).await;
        // A spawn and an exit over the new connection.
        hub.spawn(b).await;
        serving(&hub, b).await;
        dies_and_is_noticed(&hub, b).await;
        let reconnected = |e: &Value| message_contains(e, "reconnected");
        let entries = hub.entries(&hub_pid);
        assert!(
            entries.iter().any(reconnected),
            "the reconnection is not in the journal:\n{}",
            hub.journal()
        );

        // 2. `kill -9` of dbus-daemon, and a server dying while there is no bus: systemd
        // starts dbus again on the next connection to dbus.socket; the exit is noticed.
        let seen = hub.entries(&hub_pid).iter().filter(|e| again(e)).count();
        let dbus_pid = sd.prop("dbus.service", "MainPID");
        sd.run_ok(&["kill", "-9", &dbus_pid]);
        sd.run_ok(&["systemctl", "kill", "--signal=KILL", &server_unit(a)]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while hub.entries(&hub_pid).iter().filter(|e| again(e)).count() == seen {
            assert!(
                Instant::now() < deadline,
                "the hub never watched again after kill -9 of dbus-daemon:\n{}",
                hub.journal()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_ne!(sd.prop("dbus.service", "MainPID"), dbus_pid);
        hub.wait_stopped(a).await;
        let model = hub.get(&format!("/usage?user={a}")).await;
        eprintln!(
            "after kill -9 of dbus-daemon: {}",
            model["servers"][0]["last_failure"]
        );
        hub.spawn(a).await;
        serving(&hub, a).await;

        // 3. systemd re-executing and reloading while a server runs: same unit, same PID,
        // signals still arrive, stops and spawns work.
        let a_pid = sd.prop(&server_unit(a), "ExecMainPID");
        for verb in ["daemon-reexec", "daemon-reload"] {
            for _ in 0..3 {
                systemctl_and_settle(&sd, verb);
            }
            // What systemd announces while it reloads reaches the hub a moment later.
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert_eq!(sd.prop(&server_unit(a), "ExecMainPID"), a_pid, "{verb}");
            assert_eq!(hub.main_pid(), hub_pid, "{verb}");
            let server = hub.server(a).await;
            assert!(
                server.as_ref().is_some_and(|s| s["ready"] == json!(true)),
                "{verb}: {a}'s running server is gone from the hub: {server:?}\n{}",
                hub.journal()
            );
            serving(&hub, a).await;
            spawn_or_retry(&hub, b, &format!("a spawn right after {verb}")).await;
            serving(&hub, b).await;
            dies_and_is_noticed(&hub, b).await;
        }
        stop(&hub, a).await;

        // 4. Re-executing or reloading at a random moment of a spawn: it completes, or fails
        // cleanly and the next try works.
        let mut next = generator();
        for round in 0..rounds() {
            let verb = if round % 2 == 0 {
                "daemon-reexec"
            } else {
                "daemon-reload"
            };
            let request = hub
                .http
                .post(hub.api(&format!("/users/{a}/server")))
                .header("Authorization", format!("token {}", hub.token))
                .send();
            let pending = tokio::spawn(request);
            let wait = next() % 400;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            systemctl_and_settle(&sd, verb);
            let answer = pending.await.expect("join").expect("the spawn request");
            let outcome = settle_spawn(&hub, a, &format!("round {round}")).await;
            eprintln!(
                "chaos round {round}: {verb} {wait} ms into a spawn ({}): {outcome}",
                answer.status()
            );
            serving(&hub, a).await;
            assert_eq!(hub.main_pid(), hub_pid);
            stop(&hub, a).await;
        }
        let units = sd.run(&[
            "systemctl",
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "jupyter-*.service",
        ]);
        let running: Vec<&str> = units.lines().filter(|l| l.contains(" active ")).collect();
        assert!(running.is_empty(), "units left running: {running:?}");
    });
    sd.run(&["systemctl", "stop", HUB_UNIT]);
}

/// How many times the hub is killed in the write and service-start tests (`CHAOS_KILLS`,
/// default 12).
fn kills() -> u64 {
    std::env::var("CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

/// What a stream of API writes got a 2xx answer for.
#[derive(Default)]
struct Acknowledged {
    users: Vec<String>,
    tokens: Vec<(String, String)>,
    groups: Vec<String>,
    members: Vec<(String, String)>,
    /// (owner, the user the owner's default server is shared with)
    shares: Vec<(String, String)>,
}

/// Writes, one after the other, until one gets no 2xx answer (the hub was killed).
async fn write_stream(
    http: reqwest::Client,
    api: String,
    token: String,
    round: u64,
    with: String,
) -> Acknowledged {
    let mut acked = Acknowledged::default();
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{api}{path}"))
            .header("Authorization", format!("token {token}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            response.json::<Value>().await.ok()
        }
    };
    for i in 0.. {
        let user = format!("cw-{round}-{i}");
        let group = format!("cg-{round}-{i}");
        if call(reqwest::Method::POST, format!("/users/{user}"), None)
            .await
            .is_none()
        {
            break;
        }
        acked.users.push(user.clone());
        let Some(made) = call(
            reqwest::Method::POST,
            format!("/users/{user}/tokens"),
            Some(json!({"note": "chaos"})),
        )
        .await
        else {
            break;
        };
        let Some(secret) = made["token"].as_str() else {
            break;
        };
        acked.tokens.push((user.clone(), secret.to_owned()));
        if call(reqwest::Method::POST, format!("/groups/{group}"), None)
            .await
            .is_none()
        {
            break;
        }
        acked.groups.push(group.clone());
        if call(
            reqwest::Method::POST,
            format!("/groups/{group}/users"),
            Some(json!({"users": [user]})),
        )
        .await
        .is_none()
        {
            break;
        }
        acked.members.push((group.clone(), user.clone()));
        if call(
            reqwest::Method::POST,
            format!("/shares/{user}/"),
            Some(json!({"user": with})),
        )
        .await
        .is_none()
        {
            break;
        }
        acked.shares.push((user.clone(), with.clone()));
    }
    acked
}

/// The database as SQLite itself judges it, and what the schema cannot say by constraints.
fn database_is_whole(path: &std::path::Path) {
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database");
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok");
    let dangling: i64 = db
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .expect("foreign_key_check");
    assert_eq!(dangling, 0, "rows pointing at nothing");
    let crossed: i64 = db
        .query_row(
            "SELECT count(*) FROM shares s JOIN spawners p ON p.id = s.spawner_id WHERE p.user_id != s.owner_id",
            [],
            |r| r.get(0),
        )
        .expect("shares");
    assert_eq!(crossed, 0, "a share of a server its owner does not have");
}

/// `kill -9` of the hub at random moments of a stream of API writes: everything answered
/// 2xx is there after the restart, the database is whole.
#[test]
fn kill_9_during_api_writes_loses_nothing_acknowledged() {
    crate::harness::require_root("the chaos system tests boot a contained systemd");
    let _serial = crate::harness::serial();
    let sd = Contained::boot("sdtest-chaos-db");
    let hub = Hub::new(&sd);
    runtime().block_on(async {
        hub.start();
        let with = "cw-friend".to_owned();
        add_users(&hub, std::slice::from_ref(&with)).await;
        let mut next = generator();
        let mut total = Acknowledged::default();
        for round in 0..kills() {
            let writer = tokio::spawn(write_stream(
                hub.http.clone(),
                hub.api(""),
                hub.token.clone(),
                round,
                with.clone(),
            ));
            let wait = 20 + next() % 1500;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            crate::hub::kill_9_and_restart(&hub).await;
            let acked = writer.await.expect("writer");
            eprintln!(
                "chaos round {round}: kill -9 after {wait} ms: {} users, {} tokens, {} groups, {} memberships, {} shares acknowledged",
                acked.users.len(),
                acked.tokens.len(),
                acked.groups.len(),
                acked.members.len(),
                acked.shares.len()
            );
            total.users.extend(acked.users);
            total.tokens.extend(acked.tokens);
            total.groups.extend(acked.groups);
            total.members.extend(acked.members);
            total.shares.extend(acked.shares);
            database_is_whole(&hub.db_path());
        }
        // Everything acknowledged in any round, after all the kills.
        for user in &total.users {
            let (status, _, body) = hub.call(reqwest::Method::GET, &format!("/users/{user}"), None).await;
            assert_eq!(status, StatusCode::OK, "user {user} lost: {body}");
        }
        for (user, secret) in &total.tokens {
            let r = hub
                .http
                .get(hub.api("/user"))
                .header("Authorization", format!("token {secret}"))
                .send()
                .await
                .expect("whoami");
            assert_eq!(r.status(), StatusCode::OK, "{user}'s token lost");
            assert_eq!(r.json::<Value>().await.expect("json")["name"], json!(user));
        }
        for group in &total.groups {
            let (status, _, body) = hub.call(reqwest::Method::GET, &format!("/groups/{group}"), None).await;
            assert_eq!(status, StatusCode::OK, "group {group} lost: {body}");
        }
        for (group, user) in &total.members {
            let model = hub.get(&format!("/groups/{group}")).await;
            assert!(
                model["users"].as_array().is_some_and(|u| u.contains(&json!(user))),
                "{user} lost from {group}: {model}"
            );
        }
        for (owner, with) in &total.shares {
            let shares = hub.get(&format!("/shares/{owner}")).await;
            let items = shares
                .as_array()
                .or_else(|| shares["items"].as_array())
                .cloned()
                .unwrap_or_default();
            assert!(
                items.iter().any(|s| s["user"]["name"] == json!(with)),
                "{owner}'s share with {with} lost: {shares}"
            );
        }
        eprintln!(
            "after {} kills: {} users, {} tokens, {} groups, {} memberships, {} shares, all there",
            kills(),
            total.users.len(),
            total.tokens.len(),
            total.groups.len(),
            total.members.len(),
            total.shares.len()
        );
    });
    sd.run(&["systemctl", "stop", HUB_UNIT]);
}

/// `kill -9` of the hub while it starts its managed service (the unit stopped first, so the
/// start-up pass must start it), then a normal start: one unit, started once and adopted
/// from then on, answering through its route as the process systemd names.
#[test]
fn kill_9_during_managed_service_starts_leaves_one_unit() {
    crate::harness::require_root("the chaos system tests boot a contained systemd");
    let _serial = crate::harness::serial();
    let sd = Contained::boot("sdtest-chaos-svc");
    let hub = Hub::new(&sd);
    hub.set_services(&hub.echo_service(""));
    runtime().block_on(async {
        hub.start();
        hub.echo_answer("0").await;
        let mut next = generator();
        for round in 0..kills() {
            sd.run_ok(&["systemctl", "stop", HUB_UNIT]);
            sd.run_ok(&["systemctl", "stop", SERVICE_UNIT]);
            hub.start_with(&["--no-block"]);
            let wait = next() % 500;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let killed_at = sd.prop(SERVICE_UNIT, "ActiveState");
            let pid_then = sd.prop(SERVICE_UNIT, "MainPID");
            crate::hub::kill_9_and_restart(&hub).await;
            // Ready: the start-up pass is over. A unit started just before the kill may have
            // asked the dead hub who it is and exited; systemd restarts it by itself
            // (`deactivating`, then `activating` for a while). Once it answers through its
            // route it has its answer and serves: from here on it must stay the same unit.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let state = sd.prop(SERVICE_UNIT, "ActiveState");
                if state == "active" {
                    break;
                }
                assert!(
                    Instant::now() < deadline && (state == "activating" || state == "deactivating"),
                    "round {round}: the service is {state}:\n{}",
                    hub.journal()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let answer = hub.echo_answer("0").await;
            let invocation = sd.prop(SERVICE_UNIT, "InvocationID");
            let main_pid = sd.prop(SERVICE_UNIT, "MainPID");
            assert_eq!(
                answer["pid"].to_string(),
                main_pid,
                "round {round}: {answer}\n{}\n{}",
                sd.run(&["journalctl", "--no-pager", "-u", SERVICE_UNIT]),
                hub.journal()
            );
            // The model's pid follows systemd's own restarts at the supervisor's next check.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let model = hub.get("/services/echo").await;
                if model["pid"].to_string().as_str() == main_pid.as_str() {
                    break;
                }
                assert!(Instant::now() < deadline, "round {round}: {model}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let units = sd.run(&[
                "systemctl",
                "list-units",
                "--all",
                "--plain",
                "--no-legend",
                "jupyterhub-service-*.service",
            ]);
            assert_eq!(units.lines().count(), 1, "round {round}: {units}");
            // A few supervision rounds later: not started again.
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(sd.prop(SERVICE_UNIT, "InvocationID"), invocation, "round {round}");
            assert_eq!(sd.prop(SERVICE_UNIT, "MainPID"), main_pid, "round {round}");
            let how = if pid_then == main_pid {
                "adopted"
            } else {
                "started"
            };
            eprintln!(
                "chaos round {round}: kill -9 {wait} ms into the hub's start (service {killed_at}): one unit, {how}"
            );
        }
    });
    sd.run(&["systemctl", "stop", HUB_UNIT]);
}
