//! Server profiles (`[[Spawner.profiles]]`): the choice changes what starts (limits as
//! `MEM_LIMIT`/`CPU_LIMIT`, environment, command), from either API body and from the spawn
//! form; unknown profiles are 400, profiles of other groups 403; the config is checked.

use serde_json::{Value, json};

use crate::support::{TestHub, call, login, page_xsrf, server_user, stub_path, wait_ready};

fn profiles_config(extra_profile: &str) -> String {
    format!(
        r#"[Spawner]
cmd = ["/usr/bin/python3", "{stub}"]
http_timeout = 20
start_timeout = 20
mem_limit = "1G"

[[Spawner.profiles]]
slug = "small"
display_name = "Small (512 MiB)"
description = "For <em>light</em> work"
mem_limit = "512M"
environment = {{ JUPYTERHUB_TEST_PROFILE = "small for {{username}}" }}

[[Spawner.profiles]]
slug = "large"
display_name = "Large"
default = true
mem_limit = "4G"
cpu_limit = 2.0
environment = {{ JUPYTERHUB_TEST_PROFILE = "large" }}

[[Spawner.profiles]]
slug = "gpu"
display_name = "GPU (staff only)"
groups = ["staff"]
cpu_limit = 8.0
{extra_profile}
"#,
        stub = stub_path().display()
    )
}

/// What the running stub server says its environment is.
async fn server_env(hub: &TestHub, user: &str) -> Value {
    let r = reqwest::get(format!("{}/user/{user}/env", hub.url))
        .await
        .expect("env");
    assert_eq!(r.status(), 200, "{}", hub.log());
    r.json().await.expect("json")
}

async fn stop(hub: &TestHub, admin: &str, user: &str) {
    let (status, body) = call(hub, "DELETE", &format!("/users/{user}/server"), admin, None).await;
    assert!(status == 202 || status == 204, "{status} {body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, model) = call(hub, "GET", &format!("/users/{user}"), admin, None).await;
        if model["server"].is_null() && model["pending"].is_null() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{model}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_profile_changes_what_starts_and_is_checked() {
    let user = server_user();
    let hub = TestHub::start(
        &format!("load_groups = {{ staff = {{ users = [\"{user}\"] }} }}"),
        &profiles_config(""),
    )
    .await;
    let admin = hub.admin_token();
    for name in [user.as_str(), "bob"] {
        call(&hub, "POST", &format!("/users/{name}"), &admin, None).await;
    }
    let start = |body: Option<Value>| {
        let (hub, admin, user) = (&hub, &admin, &user);
        async move { call(hub, "POST", &format!("/users/{user}/server"), admin, body).await }
    };

    // No choice: the default profile.
    let (status, body) = start(None).await;
    assert!(status == 201 || status == 202, "{status} {body}");
    wait_ready(&hub, &admin, &user, "").await;
    let env = server_env(&hub, &user).await;
    assert_eq!(env["JUPYTERHUB_TEST_PROFILE"], "large", "{env}");
    assert_eq!(env["MEM_LIMIT"], (4u64 << 30).to_string(), "{env}");
    assert_eq!(env["CPU_LIMIT"], "2", "{env}");
    stop(&hub, &admin, &user).await;

    // 5.x's body (the options themselves): the profile's limits and environment.
    let (status, body) = start(Some(json!({"profile": "small"}))).await;
    assert!(status == 201 || status == 202, "{status} {body}");
    let model = wait_ready(&hub, &admin, &user, "").await;
    assert_eq!(
        model["servers"][""]["user_options"]["profile"], "small",
        "{model}"
    );
    let env = server_env(&hub, &user).await;
    assert_eq!(
        env["JUPYTERHUB_TEST_PROFILE"],
        format!("small for {user}"),
        "{env}"
    );
    assert_eq!(env["MEM_LIMIT"], (512u64 << 20).to_string(), "{env}");
    assert!(env.get("CPU_LIMIT").is_none(), "{env}");
    stop(&hub, &admin, &user).await;

    // Refused before anything starts: unknown (400), not a string (400), another group's (403).
    let (status, body) = start(Some(json!({"profile": "huge"}))).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("huge") && m.contains("small")),
        "{body}"
    );
    let (status, body) = start(Some(json!({"profile": 3}))).await;
    assert_eq!(status, 400, "{body}");
    // bob is not staff: the staff's profile is refused for him, and nothing starts.
    let (status, body) = call(
        &hub,
        "POST",
        "/users/bob/server",
        &admin,
        Some(json!({"profile": "gpu"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (_, model) = call(&hub, "GET", "/users/bob", &admin, None).await;
    assert!(
        model["server"].is_null() && model["pending"].is_null(),
        "nothing started: {model}"
    );
    let (_, model) = call(&hub, "GET", &format!("/users/{user}"), &admin, None).await;
    assert!(model["server"].is_null(), "nothing started: {model}");

    // A member of the group may use it.
    let (status, body) = start(Some(json!({"profile": "gpu"}))).await;
    assert!(
        status == 201 || status == 202,
        "{status} {body}\n{}",
        hub.log()
    );
    wait_ready(&hub, &admin, &user, "").await;
    assert_eq!(server_env(&hub, &user).await["CPU_LIMIT"], "8");
    stop(&hub, &admin, &user).await;
}

#[tokio::test]
async fn the_spawn_form_offers_the_users_profiles() {
    let hub = TestHub::start(
        "load_groups = { staff = { users = [\"admin\"] } }",
        &profiles_config(""),
    )
    .await;
    let user = server_user();
    let (browser, _) = login(&hub, &user, "any").await;
    let spawn = format!("{}/hub/spawn", hub.url);
    let html = browser
        .get(&spawn)
        .send()
        .await
        .expect("spawn page")
        .text()
        .await
        .expect("body");
    assert!(html.contains("id=\"profile-list\""), "{html}");
    assert!(html.contains("value=\"small\""), "{html}");
    assert!(
        html.contains("For <em>light</em> work"),
        "descriptions are HTML: {html}"
    );
    assert!(
        html.contains("id=\"profile-item-large\" value=\"large\" checked"),
        "the default is chosen: {html}"
    );
    assert!(
        !html.contains("value=\"gpu\""),
        "not the staff's profile: {html}"
    );

    // Choosing from the form starts that profile.
    let xsrf = page_xsrf(&browser, &spawn).await;
    let r = browser
        .post(&spawn)
        .form(&[("_xsrf", xsrf.as_str()), ("profile", "small")])
        .send()
        .await
        .expect("post the form");
    assert!(r.status().is_redirection(), "{}", r.status());
    let admin = hub.admin_token();
    wait_ready(&hub, &admin, &user, "").await;
    let env = server_env(&hub, &user).await;
    assert_eq!(env["MEM_LIMIT"], (512u64 << 20).to_string(), "{env}");
    stop(&hub, &admin, &user).await;

    // Forging another group's profile in the form: the form again, saying why.
    let r = browser
        .post(&spawn)
        .form(&[("_xsrf", xsrf.as_str()), ("profile", "gpu")])
        .send()
        .await
        .expect("post the form");
    assert_eq!(r.status(), 403);
    let html = r.text().await.expect("body");
    assert!(html.contains("id=\"spawn_error\""), "{html}");
    assert!(html.contains("may not use the profile"), "{html}");
}

#[tokio::test]
async fn bad_profiles_are_refused_at_check_config() {
    let hub = TestHub::start("", &profiles_config("")).await;
    for (profile, expected) in [
        (
            "[[Spawner.profiles]]\nslug = \"small\"\n",
            "used by another profile",
        ),
        (
            "[[Spawner.profiles]]\nslug = \"Bad Slug\"\n",
            "Spawner.profiles[3].slug",
        ),
        (
            "[[Spawner.profiles]]\nslug = \"x\"\ndefault = true\n",
            "more than one profile has default",
        ),
        (
            "[[Spawner.profiles]]\nslug = \"x\"\nmem_limt = \"1G\"\n",
            "mem_limt",
        ),
        (
            "[[Spawner.profiles]]\nslug = \"x\"\nunit_extra_properties = [\"IOWeight\"]\n",
            "Key=Value",
        ),
    ] {
        let text = std::fs::read_to_string(&hub.config).expect("config");
        let path = hub.dir.path().join("bad.toml");
        std::fs::write(&path, format!("{text}\n{profile}")).expect("write");
        let out = std::process::Command::new(crate::support::BIN)
            .args(["check-config", "-f"])
            .arg(&path)
            .output()
            .expect("check-config");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {profile}");
        assert!(stderr.contains(expected), "{profile}: {stderr}");
    }
}
