//! Managed services as child processes (the local spawner's mode): upstream's environment,
//! the live pid in the service model, a restart when the process dies, the real
//! `jupyterhub-idle-culler` culling an idle server, and config keys only managed services
//! have refused on other services.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestHub, call, reserve_port, server_user, stub_spawner_config, wait_ready};

/// A fixture program, copied where any account (a root hub runs services as `nobody`) can
/// read it.
fn fixture(name: &str) -> String {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let target = std::env::temp_dir().join(format!("jupyterhub-rs-{name}"));
    std::fs::copy(&source, &target).expect("copy fixture");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    target.display().to_string()
}

/// The jupyterhub 6 venv `tests/run.sh` makes (with jupyterhub-idle-culler).
fn venv_6() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var("SINGLEUSER_VENV_6")
            .unwrap_or_else(|_| "/var/cache/jupyterhub-rs-tests/venv-6".into()),
    )
}

/// What the service answers through the hub's proxy, once it answers with a pid other than
/// `not_pid` (30 s at most).
async fn service_answer(hub: &TestHub, not_pid: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/services/echo/", hub.url)).await
            && r.status() == 200
            && let Ok(body) = r.json::<Value>().await
            && body["pid"].as_i64() != Some(not_pid)
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not answer:\n{}",
            hub.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn alive(pid: i64) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

#[tokio::test]
async fn managed_service_gets_upstreams_environment_and_comes_back_when_it_dies() {
    let port = reserve_port();
    let services = format!(
        r#"
[[JupyterHub.services]]
name = "echo"
url = "http://127.0.0.1:{port}"
command = ["/usr/bin/python3", "{script}"]
environment = {{ EXTRA = "from-config", JUPYTERHUB_BASE_URL = "/" }}
"#,
        port = port.port,
        script = fixture("env_service.py")
    );
    let mut hub = TestHub::start(&services, "").await;
    let admin = hub.admin_token();
    let first = service_answer(&hub, 0).await;
    let env = &first["env"];
    // The token the hub gave (generated: none is configured) is the service's own.
    assert_eq!(first["whoami"]["kind"], "service", "{first}");
    assert_eq!(first["whoami"]["name"], "echo");
    for (key, value) in [
        ("JUPYTERHUB_SERVICE_NAME", json!("echo")),
        ("JUPYTERHUB_CLIENT_ID", json!("service-echo")),
        ("JUPYTERHUB_SERVICE_PREFIX", json!("/services/echo/")),
        (
            "JUPYTERHUB_SERVICE_URL",
            json!(format!("http://127.0.0.1:{}", port.port)),
        ),
        (
            "JUPYTERHUB_OAUTH_CALLBACK_URL",
            json!("/services/echo/oauth_callback"),
        ),
        (
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES",
            json!(r#"["access:services","access:services!service=echo"]"#),
        ),
        ("JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES", json!("[]")),
        ("JUPYTERHUB_BASE_URL", json!("/")),
        ("EXTRA", json!("from-config")),
    ] {
        assert_eq!(env[key], value, "{key} in {env}");
    }
    assert!(
        env["JUPYTERHUB_API_URL"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:") && u.ends_with("/hub/api")),
        "{env}"
    );
    assert!(env.get("JUPYTERHUB_ACTIVITY_URL").is_none(), "{env}");

    // The model shows the live pid.
    let pid = first["pid"].as_i64().expect("pid");
    let (status, model) = call(&hub, "GET", "/services/echo", &admin, None).await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["pid"], pid, "{model}");
    assert_eq!(model["command"][0], "/usr/bin/python3");
    assert_eq!(model["last_failure"], Value::Null);

    // Killed, it is started again, and the model says why it stopped.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the service");
    let second = service_answer(&hub, pid).await;
    let new_pid = second["pid"].as_i64().expect("pid");
    assert_ne!(new_pid, pid);
    let (_, model) = call(&hub, "GET", "/services/echo", &admin, None).await;
    assert_eq!(model["pid"], new_pid, "{model}");
    assert!(
        model["last_failure"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("SIGKILL")),
        "{model}"
    );
    // Child processes stop with the hub.
    hub.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(new_pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alive(new_pid), "the service outlived its hub");
}

#[tokio::test]
async fn the_real_idle_culler_culls_an_idle_server() {
    let venv = venv_6();
    let python = venv.join("bin/python");
    assert!(
        std::process::Command::new(&python)
            .args(["-c", "import jupyterhub_idle_culler"])
            .status()
            .is_ok_and(|s| s.success()),
        "{} lacks jupyterhub-idle-culler: run `bash tests/run.sh`, which installs it",
        venv.display()
    );
    // As the packaged example config has it, with short times.
    let services = format!(
        r#"allow_named_servers = true

[[JupyterHub.services]]
name = "idle-culler"
command = ["{python}", "-m", "jupyterhub_idle_culler", "--timeout=3", "--cull-every=1"]

[[JupyterHub.load_roles]]
name = "idle-culler"
scopes = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
services = ["idle-culler"]
"#,
        python = python.display()
    );
    let hub = TestHub::start(&services, &stub_spawner_config()).await;
    let admin = hub.admin_token();
    let (status, model) = call(&hub, "GET", "/services/idle-culler", &admin, None).await;
    assert_eq!(status, 200, "{model}");
    assert!(model["pid"].as_u64().is_some_and(|p| p > 0), "{model}");

    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let (status, body) = call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    assert!(status == 201 || status == 202, "{status} {body}");
    wait_ready(&hub, &admin, &user, "").await;
    // Named servers are culled too.
    let (status, body) = call(
        &hub,
        "POST",
        &format!("/users/{user}/servers/lab"),
        &admin,
        None,
    )
    .await;
    assert!(status == 201 || status == 202, "{status} {body}");
    wait_ready(&hub, &admin, &user, "lab").await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, model) = call(&hub, "GET", &format!("/users/{user}"), &admin, None).await;
        if model["servers"].as_object().is_some_and(|s| s.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle server was not culled: {model}\n{}",
            hub.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // It was the culler: nobody else here deletes servers.
    assert!(
        hub.log()
            .contains(&format!("DELETE /hub/api/users/{user}/server")),
        "{}",
        hub.log()
    );
}

#[tokio::test]
async fn keys_only_managed_services_have_are_refused_elsewhere() {
    let services = r#"
[[JupyterHub.services]]
name = "external"
url = "http://127.0.0.1:10101"
cwd = "/srv"
"#;
    let hub = TestHub::start("", "").await;
    let text = std::fs::read_to_string(&hub.config).expect("config");
    let text = text.replace("[Authenticator]", &format!("{services}\n[Authenticator]"));
    std::fs::write(&hub.config, text).expect("write");
    let out = hub.cli(&["check-config"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("services[0].cwd") && stderr.contains("command"),
        "{stderr}"
    );
}

/// Follow redirects by hand (the client keeps cookies for the hub's host), up to 10 hops;
/// the last response's status, `Location`-free, and body.
async fn follow(hub: &TestHub, client: &reqwest::Client, url: String) -> (u16, String) {
    let mut url = url;
    for _ in 0..10 {
        let response = client.get(&url).send().await.expect("get");
        let status = response.status().as_u16();
        if !(300..400).contains(&status) {
            return (status, response.text().await.unwrap_or_default());
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .expect("a redirect has a Location")
            .to_owned();
        url = if location.starts_with('/') {
            format!("{}{location}", hub.url)
        } else {
            location
        };
    }
    panic!("too many redirects, last {url}");
}

#[tokio::test]
async fn a_hub_oauth_service_logs_users_in_and_refuses_those_without_access() {
    let venv = venv_6();
    let script = fixture("whoami_service.py");
    let port = reserve_port();
    let services = format!(
        r#"
[[JupyterHub.services]]
name = "whoami"
url = "http://127.0.0.1:{port}"
command = ["{python}", "{script}"]
oauth_no_confirm = true

[[JupyterHub.load_roles]]
name = "whoami-users"
scopes = ["access:services!service=whoami"]
users = ["alice"]
"#,
        port = port.port,
        python = venv.join("bin/python").display(),
    );
    let hub = TestHub::start(&services, "").await;
    // Wait until the service listens (it answers 302 to the login then).
    let deadline = Instant::now() + Duration::from_secs(30);
    let anonymous = crate::support::browser();
    loop {
        if let Ok(r) = anonymous
            .get(format!("{}/services/whoami/", hub.url))
            .send()
            .await
            && r.status().is_redirection()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "whoami never answered:\n{}",
            hub.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (alice, _) = crate::support::login(&hub, "alice", "pw").await;
    let (status, body) = follow(&hub, &alice, format!("{}/services/whoami/", hub.url)).await;
    assert_eq!(status, 200, "{body}\n{}", hub.log());
    let model: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(model["name"], "alice", "{model}");
    // The service's own cookie keeps her logged in: no trip to the hub this time.
    let again = alice
        .get(format!("{}/services/whoami/", hub.url))
        .send()
        .await
        .expect("get");
    assert_eq!(again.status(), 200);

    // bob holds no access:services for it: the hub refuses to log him in there.
    let (bob, _) = crate::support::login(&hub, "bob", "pw").await;
    let (status, body) = follow(&hub, &bob, format!("{}/services/whoami/", hub.url)).await;
    assert_eq!(status, 403, "{body}");
}
