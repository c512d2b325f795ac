//! The hub's own API beside upstream's (docs/admin-api.md), as the admin panel and scripts use
//! it: `GET /usage` (servers' live use, last failures, the hub's figures) filtered by scopes,
//! and the server and service log endpoints with the local spawner, which keeps no log.

use serde_json::Value;

use crate::support::{TestHub, call, server_user, stub_spawner_config, wait_ready};

fn servers_of<'a>(overview: &'a Value, user: &str) -> Vec<&'a Value> {
    overview["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .filter(|s| s["user"] == user)
        .collect()
}

#[tokio::test]
async fn usage_shows_what_the_caller_may_read() {
    let hub = TestHub::start("allow_named_servers = true", &stub_spawner_config()).await;
    let admin = hub.admin_token();
    let user = server_user();
    for name in [user.as_str(), "bob"] {
        let (status, body) = call(&hub, "POST", &format!("/users/{name}"), &admin, None).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    assert!(status == 201 || status == 202, "{status} {body}");
    wait_ready(&hub, &admin, &user, "").await;

    // An admin: every server of the named users (unknown ones left out) and the hub.
    let path = format!("/usage?user={user}&user=bob&user=nobody");
    let (status, overview) = call(&hub, "GET", &path, &admin, None).await;
    assert_eq!(status, 200, "{overview}");
    assert_eq!(overview["spawner"], "local", "{overview}");
    let mine = servers_of(&overview, &user);
    assert_eq!(mine.len(), 1, "{overview}");
    let server = mine[0];
    assert_eq!(server["server_name"], "");
    assert_eq!(server["running"], true, "{overview}");
    assert_eq!(server["ready"], true, "{overview}");
    assert_eq!(server["pending"], Value::Null);
    assert_eq!(server["last_failure"], Value::Null);
    // The local spawner reads the process group's resident memory and CPU time.
    let memory = server["memory_bytes"].as_u64().expect("memory_bytes");
    assert!(
        memory > 1 << 20,
        "a python process uses more than 1 MiB: {overview}"
    );
    assert!(server["cpu_seconds"].as_f64().is_some(), "{overview}");
    assert!(servers_of(&overview, "nobody").is_empty());
    let figures = &overview["hub"];
    assert_eq!(figures["running_servers"], 1, "{overview}");
    assert_eq!(figures["users"], 3, "admin, bob and {user}: {overview}");
    assert_eq!(figures["pending_spawns"], 0, "{overview}");
    assert_eq!(figures["group"], Value::Null, "no slice without systemd");
    assert!(
        figures["memory_bytes"]
            .as_u64()
            .is_some_and(|m| m >= memory),
        "the sum over running servers: {overview}"
    );

    // bob (his own scopes): his servers only, none of the others', and no hub figures.
    let bob = hub.token("bob", &[]);
    let (status, overview) = call(&hub, "GET", &path, &bob, None).await;
    assert_eq!(status, 200, "{overview}");
    assert!(servers_of(&overview, &user).is_empty(), "{overview}");
    assert_eq!(overview["hub"], Value::Null, "{overview}");

    // read:servers on one user: that user's servers, still no hub figures.
    let scoped = hub.token("admin", &[&format!("read:servers!user={user}")]);
    let (status, overview) = call(&hub, "GET", &path, &scoped, None).await;
    assert_eq!(status, 200, "{overview}");
    assert_eq!(servers_of(&overview, &user).len(), 1, "{overview}");
    assert_eq!(overview["hub"], Value::Null, "{overview}");

    // No read:servers at all: refused, with upstream's error shape.
    let reader = hub.token("admin", &["read:users"]);
    let (status, body) = call(&hub, "GET", &path, &reader, None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["status"], 403, "{body}");

    // Too many users in one call.
    let many: Vec<String> = (0..501).map(|i| format!("user={i}")).collect();
    let (status, body) = call(
        &hub,
        "GET",
        &format!("/usage?{}", many.join("&")),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("500")),
        "{body}"
    );

    // After a stop: not running, no figures, no failure (it was asked to stop).
    let (status, body) = call(
        &hub,
        "DELETE",
        &format!("/users/{user}/server"),
        &admin,
        None,
    )
    .await;
    assert!(status == 202 || status == 204, "{status} {body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, overview) = call(&hub, "GET", &path, &admin, None).await;
        let mine = servers_of(&overview, &user);
        if mine.iter().all(|s| s["running"] == false) {
            assert!(
                mine.iter().all(|s| s["memory_bytes"].is_null()),
                "{overview}"
            );
            assert_eq!(overview["hub"]["running_servers"], 0, "{overview}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {overview}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_failed_start_shows_its_reason_and_output() {
    let spawner = "[Spawner]\ncmd = [\"/bin/sh\", \"-c\", \"exit 3\"]\nstart_timeout = 10\n";
    let hub = TestHub::start("", spawner).await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let (status, body) = call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    assert!(
        [201, 202, 500].contains(&status.as_u16()),
        "{status} {body}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let failure = loop {
        let (status, overview) =
            call(&hub, "GET", &format!("/usage?user={user}"), &admin, None).await;
        assert_eq!(status, 200, "{overview}");
        let failure = servers_of(&overview, &user)
            .first()
            .map(|s| s["last_failure"].clone())
            .unwrap_or_default();
        if !failure.is_null() {
            assert_eq!(servers_of(&overview, &user)[0]["running"], false);
            break failure;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failure recorded: {overview}\n{}",
            hub.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let reason = failure["reason"].as_str().expect("reason");
    assert!(
        reason.contains("exit code 3"),
        "the exit status is named: {failure}"
    );
    // The local spawner's servers write to the hub's log, so it keeps no tail of its own
    // (the systemd spawner's tail from the journal is checked in tests/system).
    assert!(failure["log_tail"].is_array(), "{failure}");
    // The log endpoint carries the same failure.
    let (status, log) = call(
        &hub,
        "GET",
        &format!("/users/{user}/server/log"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["last_failure"], failure);
}

#[tokio::test]
async fn server_logs_answer_by_scope_and_say_when_there_is_none() {
    let hub = TestHub::start("allow_named_servers = true", &stub_spawner_config()).await;
    let admin = hub.admin_token();
    let user = server_user();
    for name in [user.as_str(), "bob"] {
        call(&hub, "POST", &format!("/users/{name}"), &admin, None).await;
    }
    let (status, body) = call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    assert!(status == 201 || status == 202, "{status} {body}");
    wait_ready(&hub, &admin, &user, "").await;

    let log_path = format!("/users/{user}/server/log");
    let (status, log) = call(&hub, "GET", &log_path, &admin, None).await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["user"], user.as_str());
    assert_eq!(log["server_name"], "");
    assert_eq!(log["spawner"], "local");
    // The local spawner's servers write to the hub's own log.
    assert_eq!(log["available"], false, "{log}");
    assert_eq!(log["lines"], serde_json::json!([]), "{log}");
    let (status, body) = call(&hub, "GET", &format!("{log_path}?follow=1"), &admin, None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("hub's log")),
        "{body}"
    );

    // Bad input and what does not exist.
    let (status, body) = call(&hub, "GET", &format!("{log_path}?lines=many"), &admin, None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(&hub, "GET", "/users/nobody/server/log", &admin, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(
        &hub,
        "GET",
        &format!("/users/{user}/servers/nothing-here/log"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // Scopes: `servers` on that server. The owner has it through `self`; bob holds it only
    // for his own (404, as upstream answers for what a caller may not see); read:servers
    // alone does not give the log (403).
    let own = hub.token(&user, &[]);
    let (status, body) = call(&hub, "GET", &log_path, &own, None).await;
    assert_eq!(status, 200, "{body}");
    let bob = hub.token("bob", &[]);
    let (status, body) = call(&hub, "GET", &log_path, &bob, None).await;
    assert_eq!(status, 404, "{body}");
    let reader = hub.token("admin", &["read:servers"]);
    let (status, body) = call(&hub, "GET", &log_path, &reader, None).await;
    assert_eq!(status, 403, "{body}");

    // Local servers outlive the hub by design: stop this one.
    let (status, body) = call(
        &hub,
        "DELETE",
        &format!("/users/{user}/server"),
        &admin,
        None,
    )
    .await;
    assert!(status == 202 || status == 204, "{status} {body}");
}

#[tokio::test]
async fn service_logs_are_for_managed_services_and_admins() {
    let services = r#"
[[JupyterHub.services]]
name = "sleeper"
command = ["/bin/sleep", "600"]

[[JupyterHub.services]]
name = "external"
url = "http://127.0.0.1:1"
api_token = "external-service-token-0123456789"
"#;
    let hub = TestHub::start(services, "").await;
    let admin = hub.admin_token();
    let (status, log) = call(&hub, "GET", "/services/sleeper/log", &admin, None).await;
    assert_eq!(status, 200, "{log}\n{}", hub.log());
    assert_eq!(log["name"], "sleeper");
    assert!(log["pid"].as_u64().is_some_and(|p| p > 0), "{log}");
    assert_eq!(log["restarts"], 0, "{log}");
    assert_eq!(log["last_failure"], Value::Null, "{log}");
    // Run as a child process of the hub: its output is in the hub's log.
    assert_eq!(log["available"], false, "{log}");
    assert_eq!(log["unit"], Value::Null, "{log}");
    let (status, body) = call(&hub, "GET", "/services/sleeper/log?follow=1", &admin, None).await;
    assert_eq!(status, 400, "{body}");

    for missing in ["external", "nothing-here"] {
        let (status, body) = call(
            &hub,
            "GET",
            &format!("/services/{missing}/log"),
            &admin,
            None,
        )
        .await;
        assert_eq!(status, 404, "{missing}: {body}");
    }
    call(&hub, "POST", "/users/bob", &admin, None).await;
    let user = hub.token("bob", &[]);
    let (status, body) = call(&hub, "GET", "/services/sleeper/log", &user, None).await;
    assert_eq!(status, 403, "{body}");
}
