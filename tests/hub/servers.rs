//! Starting and stopping servers through the REST API with the local spawner and a stub
//! single-user server: readiness, the environment, routes through the proxy, progress
//! events, named servers, limits, and jupyterhub-idle-culler against our API.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestHub, call, server_user, stub_spawner_config, wait_ready};

#[tokio::test]
async fn start_proxy_and_stop_a_server() {
    let hub = TestHub::start("", &stub_spawner_config()).await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let (status, body) = call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    assert!(
        status == 201 || status == 202,
        "{status} {body}\n{}",
        hub.log()
    );
    let model = wait_ready(&hub, &admin, &user, "").await;
    assert_eq!(model["server"], format!("/user/{user}/"));
    let (status, body) = call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    assert_eq!(status, 400, "already running: {body}");

    // Through the public port: the proxy routes /user/NAME/ to the server, path unchanged.
    let r = reqwest::get(format!("{}/user/{user}/env", hub.url))
        .await
        .expect("get");
    assert_eq!(r.status(), 200, "{}", hub.log());
    let env: Value = r.json().await.expect("json");
    assert_eq!(env["JUPYTERHUB_USER"], user.as_str());
    assert_eq!(env["JUPYTERHUB_SERVICE_PREFIX"], format!("/user/{user}/"));
    assert_eq!(
        env["JUPYTERHUB_CLIENT_ID"],
        format!("jupyterhub-user-{user}")
    );
    assert_eq!(
        env["JUPYTERHUB_OAUTH_CALLBACK_URL"],
        format!("/user/{user}/oauth_callback")
    );
    assert!(
        env["JUPYTERHUB_API_URL"]
            .as_str()
            .is_some_and(|u| u.ends_with("/hub/api")),
        "{env}"
    );
    assert!(
        env["JUPYTERHUB_ACTIVITY_URL"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/hub/api/users/{user}/activity")))
    );
    let scopes: Value = serde_json::from_str(
        env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"]
            .as_str()
            .expect("scopes"),
    )
    .expect("json");
    assert_eq!(
        scopes,
        json!([
            format!("access:servers!server={user}/"),
            format!("access:servers!user={user}")
        ])
    );

    // The progress stream of a ready server sends the ready event and closes.
    let progress = reqwest::Client::new()
        .get(hub.api(&format!("/users/{user}/server/progress")))
        .header("Authorization", format!("token {admin}"))
        .send()
        .await
        .expect("progress");
    assert_eq!(progress.headers()["content-type"], "text/event-stream");
    let text = progress.text().await.expect("events");
    assert!(
        text.starts_with("data: {") && text.contains("\"ready\":true"),
        "{text}"
    );

    let (status, _) = call(
        &hub,
        "DELETE",
        &format!("/users/{user}/server"),
        &admin,
        None,
    )
    .await;
    assert!(status == 204 || status == 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, model) = call(&hub, "GET", &format!("/users/{user}"), &admin, None).await;
        if model["server"].is_null() && model["pending"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "server did not stop: {model}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The route is gone: the hub answers for the user's URL again.
    let r = crate::support::browser()
        .get(format!("{}/user/{user}/env", hub.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], format!("/hub/user/{user}/env"));
}

#[tokio::test]
async fn failed_spawn_reports_the_reason() {
    let hub = TestHub::start("", "[Spawner]\ncmd = [\"/nonexistent/jupyterhub-singleuser\"]\nstart_timeout = 10\nhttp_timeout = 5\n").await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let (status, body) = call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("nonexistent")),
        "{body}"
    );
    let progress = reqwest::Client::new()
        .get(hub.api(&format!("/users/{user}/server/progress")))
        .header("Authorization", format!("token {admin}"))
        .send()
        .await
        .expect("progress")
        .text()
        .await
        .expect("text");
    assert!(progress.contains("\"failed\":true"), "{progress}");
}

/// Readiness probes connect first and send the GET only on an accepted connection: a server
/// that listens but answers 503 is still starting, and the spawn is ready (and routed) only
/// once it answers below 500.
#[tokio::test]
async fn a_listening_server_is_ready_only_once_it_answers() {
    let flag = std::env::temp_dir().join(format!(
        "jupyterhub-rs-ready-flag-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let _ = std::fs::remove_file(&flag);
    let config = format!(
        "{}environment = {{ STUB_UNAVAILABLE_UNTIL = \"{}\" }}\n",
        stub_spawner_config(),
        flag.display()
    );
    let hub = TestHub::start("", &config).await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let post = {
        let (url, admin) = (hub.api(&format!("/users/{user}/server")), admin.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .header("Authorization", format!("token {admin}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    // The server listens and has been probed over HTTP: still pending, not routed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !hub.log().contains("stub answered 503") {
        assert!(
            Instant::now() < deadline,
            "never probed over HTTP:\n{}",
            hub.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, model) = call(&hub, "GET", &format!("/users/{user}"), &admin, None).await;
    assert_eq!(model["pending"], "spawn", "{model}");
    assert_eq!(model["servers"][""]["ready"], false, "{model}");
    let r = crate::support::browser()
        .get(format!("{}/user/{user}/api", hub.url))
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.status(),
        302,
        "no route yet: the hub answers for the user's URL"
    );

    std::fs::write(&flag, b"").expect("flag");
    let status = post.await.expect("task").expect("post");
    assert_eq!(status, 201, "{}", hub.log());
    let model = wait_ready(&hub, &admin, &user, "").await;
    assert_eq!(model["pending"], Value::Null, "{model}");
    let r = reqwest::get(format!("{}/user/{user}/api", hub.url))
        .await
        .expect("get");
    assert_eq!(r.status(), 200, "{}", hub.log());
    let _ = std::fs::remove_file(&flag);
}

#[tokio::test]
async fn named_servers_and_their_limit() {
    let hub = TestHub::start(
        "allow_named_servers = true\nnamed_server_limit_per_user = 1",
        &stub_spawner_config(),
    )
    .await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let (status, body) = call(
        &hub,
        "POST",
        &format!("/users/{user}/servers/nb1"),
        &admin,
        None,
    )
    .await;
    assert!(status == 201 || status == 202, "{status} {body}");
    wait_ready(&hub, &admin, &user, "nb1").await;
    let r = reqwest::get(format!("{}/user/{user}/nb1/env", hub.url))
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let env: Value = r.json().await.expect("json");
    assert_eq!(env["JUPYTERHUB_SERVER_NAME"], "nb1");
    assert_eq!(
        env["JUPYTERHUB_CLIENT_ID"],
        format!("jupyterhub-user-{user}-nb1")
    );
    let (status, body) = call(
        &hub,
        "POST",
        &format!("/users/{user}/servers/nb2"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("maximum of 1 named servers"))
    );
    let (status, _) = call(
        &hub,
        "DELETE",
        &format!("/users/{user}/servers/nb1"),
        &admin,
        Some(json!({"remove": true})),
    )
    .await;
    assert!(status == 204 || status == 202 || status == 400);
}

#[tokio::test]
async fn named_servers_disabled_by_default() {
    let hub = TestHub::start("", &stub_spawner_config()).await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let (status, body) = call(
        &hub,
        "POST",
        &format!("/users/{user}/servers/nb1"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "Named servers are not enabled.");
}

#[tokio::test]
async fn concurrent_spawn_limit_answers_429_with_retry_after() {
    let hub = TestHub::start(
        "allow_named_servers = true\nconcurrent_spawn_limit = 2\nslow_spawn_timeout = 0.0",
        &stub_spawner_config(),
    )
    .await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = client
            .post(hub.api(&format!("/users/{user}/servers/s{i}")))
            .header("Authorization", format!("token {admin}"))
            .send()
            .await
            .expect("post");
        if r.status() == 429 {
            assert!(
                r.headers().get("retry-after").is_some(),
                "429 carries Retry-After"
            );
        }
        statuses.push(r.status().as_u16());
    }
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 202 || **s == 201).count() >= 2,
        "{statuses:?}"
    );
    // Local servers outlive the hub: stop the ones that started.
    for (i, status) in statuses.iter().enumerate() {
        if *status == 201 || *status == 202 {
            let name = format!("s{i}");
            wait_ready(&hub, &admin, &user, &name).await;
            call(
                &hub,
                "DELETE",
                &format!("/users/{user}/servers/{name}"),
                &admin,
                None,
            )
            .await;
        }
    }
}

#[tokio::test]
async fn idle_culler_from_pypi_culls_idle_servers() {
    let venv = crate::support::singleuser_venv();
    let hub = TestHub::start("", &stub_spawner_config()).await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    wait_ready(&hub, &admin, &user, "").await;
    // Make the server look idle for an hour.
    let (status, body) = call(&hub, "GET", &format!("/users/{user}"), &admin, None).await;
    assert_eq!(status, 200, "{body}");
    let culler = tokio::process::Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "jupyterhub_idle_culler",
            "--timeout=1",
            "--cull-every=1",
            "--concurrency=1",
        ])
        .env("JUPYTERHUB_API_TOKEN", &admin)
        .env("JUPYTERHUB_API_URL", hub.api(""))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run jupyterhub-idle-culler");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, model) = call(&hub, "GET", &format!("/users/{user}"), &admin, None).await;
        if model["server"].is_null() && model["pending"].is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the culler did not stop the server: {model}\n{}",
            hub.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(culler);
}

#[tokio::test]
async fn options_form_spawn_page_and_user_redirect() {
    let mut extra = stub_spawner_config();
    extra.push_str("options_form = \"<select name='flavor'><option value='small'>small</option><option value='big'>big</option></select>\"\n");
    let hub = TestHub::start("", &extra).await;
    let admin = hub.admin_token();
    let user = server_user();
    let (browser, _) = crate::support::login(&hub, &user, "x").await;
    // user-redirect sends the user to the spawn page with the server URL as next.
    let r = browser
        .get(format!(
            "{}/hub/user-redirect/lab/tree/x.ipynb?y=1",
            hub.url
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        format!("/hub/spawn/{user}?next=%2Fuser%2F{user}%2Flab%2Ftree%2Fx.ipynb%3Fy%3D1").as_str()
    );
    let page = browser
        .get(format!("{}/hub/spawn", hub.url))
        .send()
        .await
        .expect("spawn page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("name='flavor'"), "the options form is shown");
    let xsrf = crate::support::extract_xsrf(&html);
    let r = browser
        .post(format!("{}/hub/spawn", hub.url))
        .form(&[("flavor", "big"), ("_xsrf", xsrf.as_str())])
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), 302, "{}", hub.log());
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        location == format!("/user/{user}/")
            || location.starts_with(&format!("/hub/spawn-pending/{user}")),
        "{location}"
    );
    let model = wait_ready(&hub, &admin, &user, "").await;
    assert_eq!(
        model["servers"][""]["user_options"],
        json!({"flavor": "big"})
    );
    let pending = browser
        .get(format!("{}/hub/spawn-pending/{user}", hub.url))
        .send()
        .await
        .expect("pending");
    assert_eq!(pending.status(), 302, "a ready server redirects to itself");
    call(
        &hub,
        "DELETE",
        &format!("/users/{user}/server"),
        &admin,
        None,
    )
    .await;
}

#[tokio::test]
async fn control_characters_in_server_names_are_refused() {
    // Issue 18: a newline forged a line in the hub's log, a NUL answered 500.
    let hub = TestHub::start("allow_named_servers = true", &stub_spawner_config()).await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    for name in [
        "a%0Aforged-line",
        "a%00b",
        "a%0Db",
        "a%09b",
        "a%1Bb",
        "a%7Fb",
    ] {
        let (status, body) = call(
            &hub,
            "POST",
            &format!("/users/{user}/servers/{name}"),
            &admin,
            None,
        )
        .await;
        assert_eq!(status, 400, "{name}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("control characters")),
            "{name}: {body}"
        );
    }
    let (_, model) = call(&hub, "GET", &format!("/users/{user}"), &admin, None).await;
    assert_eq!(model["servers"], json!({}), "nothing was created: {model}");
    // Other verbs on such names find nothing; none is an internal error.
    for (method, path) in [
        ("DELETE", format!("/users/{user}/servers/a%00b")),
        ("GET", format!("/users/{user}/servers/a%00b/progress")),
        ("DELETE", format!("/users/{user}/servers/a%0Aforged-line")),
    ] {
        let (status, body) = call(&hub, method, &path, &admin, None).await;
        assert!(status.is_client_error(), "{method} {path}: {status} {body}");
    }
    // The spawn page refuses them too, and no line of the log starts with what followed
    // the newline, nor holds a NUL.
    let (client, _) = crate::support::login(&hub, &user, "x").await;
    let r = client
        .get(format!("{}/hub/spawn/{user}/b%0Aforged-line", hub.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
    for path in [
        format!("/hub/spawn-pending/{user}/a%00b"),
        format!("/user/{user}/a%00b/lab"),
        format!("/hub/user/{user}/a%0Aforged-line/lab"),
    ] {
        let r = client
            .get(format!("{}{path}", hub.url))
            .send()
            .await
            .expect("get");
        assert!(r.status().as_u16() < 500, "{path}: {}", r.status());
    }
    let log = hub.log();
    assert!(!log.contains('\0'), "a NUL reached the log");
    assert!(
        !log.lines().any(|l| l.starts_with("forged-line")),
        "a newline forged a log line:\n{log}"
    );
}

/// Ours beside upstream's API: a running server's live memory and CPU time with its limits,
/// for `read:servers`.
#[tokio::test]
async fn usage_of_a_running_server() {
    let spawner = format!("{}mem_limit = \"1G\"\n", stub_spawner_config());
    let hub = TestHub::start("", &spawner).await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let (status, body) = call(
        &hub,
        "GET",
        &format!("/users/{user}/server/usage"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 404, "not running: {body}");
    call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    wait_ready(&hub, &admin, &user, "").await;
    let (status, usage) = call(
        &hub,
        "GET",
        &format!("/users/{user}/server/usage"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{usage}");
    // The stub is a Python process: some megabytes resident, some CPU time spent.
    let memory = usage["memory_bytes"].as_u64().expect("memory");
    assert!(memory > 1 << 20 && memory < 1 << 30, "{usage}");
    assert!(
        usage["cpu_seconds"].as_f64().is_some_and(|c| c > 0.0),
        "{usage}"
    );
    assert_eq!(usage["mem_limit"], 1u64 << 30);
    assert_eq!(usage["spawner"], "local");
    // Someone else's server needs read:servers for it.
    let other = hub.token("someone-else", &[]);
    let (status, _) = call(
        &hub,
        "GET",
        &format!("/users/{user}/server/usage"),
        &other,
        None,
    )
    .await;
    assert!(status == 403 || status == 404, "{status}");
    let reader = hub.token("admin", &["read:servers"]);
    let (status, _) = call(
        &hub,
        "GET",
        &format!("/users/{user}/server/usage"),
        &reader,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(&hub, "GET", "/users/nobody-here/server/usage", &admin, None).await;
    assert_eq!(status, 404);
}
