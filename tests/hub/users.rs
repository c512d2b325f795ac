//! `/hub/api/users`, `/user`, RBAC refusals, pagination, persistence.

use serde_json::json;

use crate::support::{TestHub, call};

/// `GET /hub/api/users?{query}` with the pagination envelope: its status and body.
async fn listing(
    hub: &TestHub,
    token: &str,
    query: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(hub.api(&format!("/users?{query}")))
        .header("Authorization", format!("token {token}"))
        .header("Accept", "application/jupyterhub-pagination+json")
        .send()
        .await
        .expect("list");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn root_and_version_header_need_no_auth() {
    let hub = TestHub::start("", "").await;
    let response = reqwest::get(hub.api("")).await.expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-jupyterhub-version"], "5.3.0");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body, json!({"version": "5.3.0"}));
}

#[tokio::test]
async fn whoami_answers_403_for_bad_tokens_and_model_for_good() {
    // Upstream: the single-user server treats anything but 403 as a server error.
    let hub = TestHub::start("", "").await;
    for token in ["", "nonsense", "0123456789abcdef0123456789abcdef"] {
        let (status, body) = call(&hub, "GET", "/user", token, None).await;
        assert_eq!(status, 403, "{token:?}");
        assert_eq!(
            body,
            json!({"status": 403, "message": "Missing or invalid credentials."})
        );
    }
    let token = hub.admin_token();
    let (status, me) = call(&hub, "GET", "/user", &token, None).await;
    assert_eq!(status, 200);
    assert_eq!(me["name"], "admin");
    assert_eq!(me["kind"], "user");
    assert_eq!(me["admin"], true);
    assert!(
        me["token_id"]
            .as_str()
            .is_some_and(|id| id.starts_with('a'))
    );
    assert!(me["scopes"].as_array().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn create_get_patch_delete_users() {
    let hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    let (status, created) = call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(json!({"usernames": ["alice", "Bob"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let names: Vec<&str> = created
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["alice", "bob"], "names are lower-cased as upstream");
    let (status, body) = call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(json!({"usernames": ["alice"]})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["message"], "All 1 users already exist");

    let (status, alice) = call(&hub, "GET", "/users/alice", &admin, None).await;
    assert_eq!(status, 200);
    for key in [
        "kind",
        "name",
        "admin",
        "roles",
        "groups",
        "server",
        "pending",
        "created",
        "last_activity",
        "servers",
    ] {
        assert!(alice.get(key).is_some(), "missing {key} in {alice}");
    }
    assert_eq!(alice["admin"], false);

    let (status, patched) = call(
        &hub,
        "PATCH",
        "/users/alice",
        &admin,
        Some(json!({"admin": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(patched["admin"], true);
    let (status, renamed) = call(
        &hub,
        "PATCH",
        "/users/alice",
        &admin,
        Some(json!({"name": "alicia"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(renamed["name"], "alicia");
    let (status, _) = call(&hub, "GET", "/users/alice", &admin, None).await;
    assert_eq!(status, 404);
    let (status, body) = call(
        &hub,
        "PATCH",
        "/users/alicia",
        &admin,
        Some(json!({"name": "bob"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        &hub,
        "PATCH",
        "/users/alicia",
        &admin,
        Some(json!({"admin": "yes"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let (status, _) = call(&hub, "POST", "/users/carol", &admin, None).await;
    assert_eq!(status, 201);
    let (status, _) = call(&hub, "POST", "/users/carol", &admin, None).await;
    assert_eq!(status, 409);
    let (status, body) = call(&hub, "POST", "/users/bad%2Fname", &admin, None).await;
    assert!(status == 400 || status == 404, "{status} {body}");

    let (status, _) = call(&hub, "DELETE", "/users/carol", &admin, None).await;
    assert_eq!(status, 204);
    let (status, body) = call(&hub, "DELETE", "/users/carol", &admin, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(&hub, "DELETE", "/users/admin", &admin, None).await;
    assert_eq!(status, 400, "deleting yourself: {body}");
    let (status, body) = call(&hub, "GET", "/users/nobody", &admin, None).await;
    assert_eq!(status, 404);
    assert_eq!(body["status"], 404);
}

#[tokio::test]
async fn rbac_user_tokens_see_only_themselves() {
    let hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(json!({"usernames": ["alice", "bob"]})),
    )
    .await;
    let alice = hub.token("alice", &[]);
    let (status, body) = call(&hub, "GET", "/users", &alice, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("list:users")),
        "{body}"
    );
    let (status, me) = call(&hub, "GET", "/users/alice", &alice, None).await;
    assert_eq!(status, 200, "{me}");
    // Held scope, filter does not match: 404 as upstream, not 403.
    let (status, body) = call(&hub, "GET", "/users/bob", &alice, None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        body["message"],
        "No access to resources or resources not found"
    );
    let (status, _) = call(
        &hub,
        "POST",
        "/users",
        &alice,
        Some(json!({"usernames": ["eve"]})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(&hub, "DELETE", "/users/bob", &alice, None).await;
    assert_eq!(status, 403);
    let (status, _) = call(&hub, "GET", "/info", &alice, None).await;
    assert_eq!(status, 403);
    let (status, info) = call(&hub, "GET", "/info", &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(info["version"], "5.3.0");
}

#[tokio::test]
async fn scoped_token_is_limited_to_its_scopes() {
    let hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(json!({"usernames": ["alice"]})),
    )
    .await;
    let reader = hub.token("admin", &["read:users:name"]);
    let (status, list) = call(&hub, "GET", "/users", &reader, None).await;
    assert_eq!(status, 403, "no list:users: {list}");
    let (status, alice) = call(&hub, "GET", "/users/alice", &reader, None).await;
    assert_eq!(status, 200);
    assert!(
        alice.get("last_activity").is_none(),
        "read:users:name hides activity: {alice}"
    );
    assert!(alice.get("name").is_some());
    let (status, _) = call(
        &hub,
        "PATCH",
        "/users/alice",
        &reader,
        Some(json!({"admin": true})),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn pagination_envelope_and_bare_list() {
    let hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    let names: Vec<String> = (0..7).map(|i| format!("user{i}")).collect();
    call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(json!({"usernames": names})),
    )
    .await;
    let (_, page) = listing(&hub, &admin, "limit=3&offset=2").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(page["_pagination"]["total"], 8);
    assert_eq!(page["_pagination"]["offset"], 2);
    assert_eq!(page["_pagination"]["next"]["offset"], 5);
    assert!(
        page["_pagination"]["next"]["url"]
            .as_str()
            .is_some_and(|u| u.contains("offset=5"))
    );
    let (_, last) = listing(&hub, &admin, "limit=3&offset=6").await;
    assert_eq!(last["_pagination"]["next"], serde_json::Value::Null);
    let (status, bare) = call(&hub, "GET", "/users?limit=2", &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(bare.as_array().map(Vec::len), Some(2));
    let (status, body) = call(&hub, "GET", "/users?limit=lots", &admin, None).await;
    assert_eq!(status, 400, "{body}");
    let (status, inactive) = call(&hub, "GET", "/users?state=inactive", &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(inactive.as_array().map(Vec::len), Some(8));
    let (status, active) = call(&hub, "GET", "/users?state=active", &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(active, json!([]));
    let (status, _) = call(&hub, "GET", "/users?state=sleepy", &admin, None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn state_persists_across_restart() {
    let mut hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(json!({"usernames": ["alice"]})),
    )
    .await;
    call(
        &hub,
        "POST",
        "/groups/physics",
        &admin,
        Some(json!({"users": ["alice"]})),
    )
    .await;
    hub.restart().await;
    let (status, alice) = call(&hub, "GET", "/users/alice", &admin, None).await;
    assert_eq!(status, 200, "token and user survive a restart");
    assert_eq!(alice["groups"], json!(["physics"]));
}

#[tokio::test]
async fn activity_is_recorded_and_validated() {
    let hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(json!({"usernames": ["alice", "bob"]})),
    )
    .await;
    let alice = hub.token("alice", &[]);
    let (status, body) = call(
        &hub,
        "POST",
        "/users/alice/activity",
        &alice,
        Some(json!({"last_activity": "2026-01-01T10:00:00.000000Z"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, model) = call(&hub, "GET", "/users/alice", &admin, None).await;
    assert!(model["last_activity"].as_str().is_some(), "{model}");
    let (status, _) = call(
        &hub,
        "POST",
        "/users/alice/activity",
        &alice,
        Some(json!({"last_activity": "2999-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, 400, "future timestamps are refused");
    let (status, body) = call(
        &hub,
        "POST",
        "/users/alice/activity",
        &alice,
        Some(json!({"servers": {"nope": {"last_activity": "2026-01-01T10:00:00Z"}}})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "No such server 'nope' for user alice");
    let (status, _) = call(
        &hub,
        "POST",
        "/users/alice/activity",
        &alice,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &hub,
        "POST",
        "/users/bob/activity",
        &alice,
        Some(json!({"last_activity": "2026-01-01T10:00:00Z"})),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn deprecated_and_admin_endpoints() {
    let hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    let (status, _) = call(&hub, "POST", "/authorizations/token", &admin, None).await;
    assert_eq!(status, 404);
    let (status, owner) = call(
        &hub,
        "GET",
        &format!("/authorizations/token/{admin}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(owner["name"], "admin");
    let (status, routes) = call(&hub, "GET", "/proxy", &admin, None).await;
    assert_eq!(status, 200);
    assert!(routes.get("/").is_some(), "{routes}");
    let (status, services) = call(&hub, "GET", "/services", &admin, None).await;
    assert_eq!(status, 200);
    assert!(services.is_object());
    let (status, body) = call(&hub, "GET", "/no/such/endpoint", &admin, None).await;
    assert_eq!(status, 404);
    assert_eq!(body["status"], 404);
}

#[tokio::test]
async fn shutdown_endpoint_stops_the_hub() {
    let mut hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    let user = hub.token("alice", &[]);
    let (status, _) = call(&hub, "POST", "/shutdown", &user, None).await;
    assert_eq!(status, 403);
    let (status, body) = call(
        &hub,
        "POST",
        "/shutdown",
        &admin,
        Some(json!({"servers": "yes"})),
    )
    .await;
    assert_eq!(status, 400, "non-bool: {body}");
    let (status, body) = call(&hub, "POST", "/shutdown", &admin, None).await;
    assert_eq!(status, 202);
    assert_eq!(body["message"], "Shutting down Hub");
    // The process ends. (Its listeners stay open in the harness, as a socket unit's do, so
    // a request now would wait for the next hub instead of failing.)
    hub.exited(std::time::Duration::from_secs(10)).await;
}

#[tokio::test]
async fn metrics_need_read_metrics() {
    let hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    let alice = hub.token("alice", &[]);
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/hub/metrics", hub.url))
        .header("Authorization", format!("token {alice}"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    let r = client
        .get(format!("{}/hub/metrics", hub.url))
        .header("Authorization", format!("token {admin}"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("text");
    assert!(text.contains("jupyterhub_total_users 2"), "{text}");
    assert!(
        text.contains("jupyterhub_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn auth_state_is_encrypted_and_needs_its_scope() {
    // 32 bytes, hex; a second key after `;` is accepted for rotation.
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let other = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    let hub = TestHub::start_with_env(
        "",
        "enable_auth_state = true\n",
        &[("JUPYTERHUB_CRYPT_KEY", &format!("{key};{other}"))],
    )
    .await;
    let admin = hub.admin_token();
    call(&hub, "POST", "/users/alice", &admin, None).await;
    let state = json!({"access_token": "secret-upstream-token", "groups": ["a"]});
    let (status, patched) = call(
        &hub,
        "PATCH",
        "/users/alice",
        &admin,
        Some(json!({"auth_state": state})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["auth_state"], state);
    let (_, alice) = call(&hub, "GET", "/users/alice", &admin, None).await;
    assert_eq!(alice["auth_state"], state);
    // Stored encrypted: the plaintext is not in the database file.
    let db = std::fs::read(hub.dir.path().join("jupyterhub.sqlite")).expect("db");
    let wal = std::fs::read(hub.dir.path().join("jupyterhub.sqlite-wal")).unwrap_or_default();
    let needle = b"secret-upstream-token";
    assert!(
        !db.windows(needle.len()).any(|w| w == needle)
            && !wal.windows(needle.len()).any(|w| w == needle)
    );
    // Without admin:auth_state the field is not given.
    let reader = hub.token("admin", &["read:users"]);
    let (_, limited) = call(&hub, "GET", "/users/alice", &reader, None).await;
    assert_eq!(limited["auth_state"], serde_json::Value::Null);
}

#[tokio::test]
async fn auth_state_without_a_key_refuses_to_start() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("jupyterhub.toml");
    std::fs::write(
        &config,
        crate::support::config_text(0, 0, dir.path(), "", "enable_auth_state = true\n"),
    )
    .expect("config");
    let out = std::process::Command::new(crate::support::BIN)
        .arg("-f")
        .arg(&config)
        .env_remove("JUPYTERHUB_CRYPT_KEY")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("JUPYTERHUB_CRYPT_KEY"));
}

#[tokio::test]
async fn listing_shows_each_user_as_get_user_does() {
    // The listing reads groups, roles and servers for all users at once; a single GET reads
    // them per user. Both must give the same models.
    let hub = TestHub::start(
        "[[JupyterHub.load_roles]]\nname = \"auditor\"\nscopes = [\"read:users\"]\nusers = [\"bob\"]\n\
         [JupyterHub.load_groups.staff]\nusers = [\"bob\", \"carol\"]\n\
         [JupyterHub.load_groups.alumni]\nusers = [\"carol\"]\n",
        "",
    )
    .await;
    let admin = hub.admin_token();
    let (status, _) = call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(json!({"usernames": ["dave"]})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, listed) = call(&hub, "GET", "/users", &admin, None).await;
    assert_eq!(status, 200);
    let listed = listed.as_array().expect("a list").clone();
    assert_eq!(listed.len(), 4, "{listed:?}");
    for model in &listed {
        let name = model["name"].as_str().expect("name");
        let (status, single) = call(&hub, "GET", &format!("/users/{name}"), &admin, None).await;
        assert_eq!(status, 200);
        assert_eq!(model, &single, "{name}");
    }
    let carol = listed.iter().find(|m| m["name"] == "carol").expect("carol");
    assert_eq!(carol["groups"], json!(["alumni", "staff"]));
    let bob = listed.iter().find(|m| m["name"] == "bob").expect("bob");
    assert_eq!(bob["roles"], json!(["auditor", "user"]));
    assert_eq!(bob["groups"], json!(["staff"]));
}

/// The listing parameters the admin panel pages with: `name_filter`, `state`, `sort` (upstream's
/// `id`, `name`, `last_activity`, and this hub's `admin` and `running`), `offset`/`limit` in the
/// pagination envelope, and `include_stopped_servers`.
#[tokio::test]
async fn list_users_filters_sorts_and_pages_on_the_server() {
    let hub = TestHub::start("", &crate::support::stub_spawner_config()).await;
    let admin = hub.admin_token();
    let runner = crate::support::server_user();
    let names = ["carol", "alice", "bob", "dave"];
    let (status, body) = call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(json!({"usernames": names})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    call(&hub, "POST", &format!("/users/{runner}"), &admin, None).await;
    let (status, body) = call(
        &hub,
        "PATCH",
        "/users/bob",
        &admin,
        Some(json!({"admin": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &hub,
        "POST",
        &format!("/users/{runner}/server"),
        &admin,
        None,
    )
    .await;
    assert!(status == 201 || status == 202, "{status} {body}");
    crate::support::wait_ready(&hub, &admin, &runner, "").await;

    let listed = |body: &serde_json::Value| -> Vec<String> {
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|u| u["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let mut everyone: Vec<String> = ["admin", "alice", "bob", "carol", "dave"]
        .iter()
        .map(|s| s.to_string())
        .chain([runner.clone()])
        .collect();
    everyone.sort();
    everyone.dedup();

    let (status, body) = listing(&hub, &admin, "sort=name").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(listed(&body), everyone);
    assert_eq!(body["_pagination"]["total"], everyone.len());
    let (_, body) = listing(&hub, &admin, "sort=-name").await;
    let mut reversed = everyone.clone();
    reversed.reverse();
    assert_eq!(listed(&body), reversed);

    // Pages of two, following `next`, cover everyone once.
    let (_, first) = listing(&hub, &admin, "sort=name&limit=2").await;
    assert_eq!(listed(&first), everyone[..2]);
    assert_eq!(first["_pagination"]["next"]["offset"], 2);
    let (_, second) = listing(&hub, &admin, "sort=name&limit=2&offset=2").await;
    assert_eq!(listed(&second), everyone[2..4]);

    let (_, body) = listing(&hub, &admin, "name_filter=A&sort=name").await;
    let with_a: Vec<String> = everyone
        .iter()
        .filter(|n| n.contains('a'))
        .cloned()
        .collect();
    assert_eq!(
        listed(&body),
        with_a,
        "name_filter is a case-insensitive substring"
    );

    // Admins first (admin, bob), then the rest in id order; descending is the reverse.
    let (status, body) = listing(&hub, &admin, "sort=admin").await;
    assert_eq!(status, 200, "{body}");
    let order = listed(&body);
    assert_eq!(order[..2], ["admin", "bob"], "{order:?}");
    let (_, body) = listing(&hub, &admin, "sort=-admin").await;
    let mut reversed = order.clone();
    reversed.reverse();
    assert_eq!(listed(&body), reversed);

    let (_, body) = listing(&hub, &admin, "sort=running").await;
    assert_eq!(listed(&body)[0], runner, "{body}");
    let (_, body) = listing(&hub, &admin, "sort=-running").await;
    assert_eq!(listed(&body).last(), Some(&runner), "{body}");

    for state in ["active", "ready"] {
        let (_, body) = listing(&hub, &admin, &format!("state={state}")).await;
        assert_eq!(
            listed(&body),
            std::slice::from_ref(&runner),
            "{state}: {body}"
        );
        assert_eq!(body["_pagination"]["total"], 1);
    }
    let (_, body) = listing(&hub, &admin, "state=inactive&sort=name").await;
    let idle: Vec<String> = everyone.iter().filter(|n| **n != runner).cloned().collect();
    assert_eq!(listed(&body), idle);

    // Stopped servers are listed only when asked for.
    let (status, _) = call(
        &hub,
        "DELETE",
        &format!("/users/{runner}/server"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (_, body) = listing(&hub, &admin, &format!("name_filter={runner}")).await;
    assert_eq!(body["items"][0]["servers"], json!({}), "{body}");
    let (_, body) = listing(
        &hub,
        &admin,
        &format!("name_filter={runner}&include_stopped_servers=1"),
    )
    .await;
    assert_eq!(body["items"][0]["servers"][""]["stopped"], true, "{body}");

    let (status, body) = listing(&hub, &admin, "sort=colour").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("colour"))
    );
    let (status, body) = listing(&hub, &admin, "state=sleepy").await;
    assert_eq!(status, 400, "{body}");
}

/// With `create_system_users`, a user whose account cannot be made is not added (upstream's
/// `POST /users` answers 400 and removes the user when `add_user` fails).
#[tokio::test]
async fn a_user_without_a_valid_system_account_name_is_not_added() {
    /// The test hub's `admin` gets `jupyter-admin` at start-up (when the tests run as root);
    /// removed again unless it was there before.
    struct MadeAccount(Option<&'static str>);
    impl Drop for MadeAccount {
        fn drop(&mut self) {
            if let Some(name) = self.0 {
                let _ = std::process::Command::new("userdel")
                    .args(["--remove", name])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
    let existed = nix::unistd::User::from_name("jupyter-admin")
        .ok()
        .flatten()
        .is_some();
    let _made = MadeAccount((!existed).then_some("jupyter-admin"));
    let hub = TestHub::start(
        "authenticator_class = \"firstuse\"",
        "[LocalAuthenticator]\ncreate_system_users = true\n\
         [SystemdSpawner]\nusername_template = \"jupyter-{USERNAME}\"\n",
    )
    .await;
    let token = hub.admin_token();
    // '@' is a fine hub name but no account name: refused before useradd runs.
    let (status, body) = call(&hub, "POST", "/users/ann@example.org", &token, None).await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("Failed to create system user"), "{body}");
    let (status, _) = call(&hub, "GET", "/users/ann@example.org", &token, None).await;
    assert_eq!(status, 404);
    let (status, body) = call(
        &hub,
        "POST",
        "/users",
        &token,
        Some(json!({"usernames": ["bob@example.org"]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = call(&hub, "GET", "/users/bob@example.org", &token, None).await;
    assert_eq!(status, 404);
}

/// `GET /hub/api/users` answers are remembered per token and request: each query, envelope
/// and host has its own, and the next answer after a change shows it (a user added, a
/// server started, a user renamed).
#[tokio::test]
async fn user_listings_follow_every_change() {
    let hub = TestHub::start("", &crate::support::stub_spawner_config()).await;
    let admin = hub.admin_token();
    // A real account, for the server's part.
    let erin = crate::support::server_user();
    let names = |body: &serde_json::Value| -> Vec<String> {
        body.get("items")
            .unwrap_or(body)
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|u| u["name"].as_str().map(str::to_owned))
            .collect()
    };
    let list = |path: &'static str| {
        let (hub, admin) = (&hub, &admin);
        async move {
            let mut last = serde_json::Value::Null;
            for _ in 0..3 {
                let (status, body) = call(hub, "GET", path, admin, None).await;
                assert_eq!(status, 200, "{body}");
                assert!(last.is_null() || body == last, "{body} after {last}");
                last = body;
            }
            last
        }
    };
    assert_eq!(names(&list("/users").await), ["admin"]);
    let (status, _) = call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(json!({"usernames": [erin, "finn"]})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        names(&list("/users").await),
        ["admin", erin.as_str(), "finn"]
    );
    assert_eq!(names(&list("/users?limit=1").await), ["admin"]);
    assert_eq!(
        names(&list("/users?offset=1&limit=1").await),
        [erin.as_str()]
    );
    assert_eq!(
        names(&list("/users?state=ready").await),
        Vec::<String>::new()
    );

    // The envelope and its `next` link follow the Accept and Host headers, not what another
    // request with the same path was answered.
    let client = reqwest::Client::new();
    let get = |accept: &'static str, host: &'static str| {
        client
            .get(hub.api("/users?limit=1"))
            .header("Authorization", format!("token {admin}"))
            .header("Accept", accept)
            .header("Host", host)
            .send()
    };
    for (accept, host) in [
        ("application/json", "a.example"),
        ("application/jupyterhub-pagination+json", "a.example"),
        ("application/jupyterhub-pagination+json", "b.example"),
    ] {
        for _ in 0..2 {
            let body: serde_json::Value = get(accept, host)
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            if accept == "application/json" {
                assert!(body.is_array(), "{body}");
            } else {
                let next = body["_pagination"]["next"]["url"].as_str().expect("next");
                assert!(next.starts_with(&format!("http://{host}/")), "{next}");
            }
        }
    }

    let server = format!("/users/{erin}/server");
    let (status, body) = call(&hub, "POST", &server, &admin, None).await;
    assert!(status == 201 || status == 202, "{status} {body}");
    crate::support::wait_ready(&hub, &admin, &erin, "").await;
    assert_eq!(names(&list("/users?state=ready").await), [erin.as_str()]);
    let (status, _) = call(&hub, "DELETE", &server, &admin, None).await;
    assert!(status == 202 || status == 204, "{status}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !names(
        &call(&hub, "GET", "/users?state=ready", &admin, None)
            .await
            .1,
    )
    .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "erin's server did not stop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, _) = call(
        &hub,
        "PATCH",
        "/users/finn",
        &admin,
        Some(json!({"name": "gus"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        names(&list("/users").await),
        ["admin", erin.as_str(), "gus"]
    );
}

/// A listing of every user is paged in SQL (only the page's users are read); any filter is
/// applied to all users in memory. Both must give the same pages: the same token scopes but
/// `list:users!group=everyone` (a group holding every user) takes the in-memory path. Users
/// never active, ties in activity, several roles and groups, a running and a stopped server.
#[tokio::test]
async fn pages_from_sql_are_the_pages_filtered_in_memory() {
    let runner = crate::support::server_user();
    let mut names: Vec<String> = (0..20).map(|i| format!("u{i:02}")).collect();
    names.insert(7, runner.clone());
    names.push("admin".into());
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    let config = format!(
        "[[JupyterHub.load_roles]]\nname = \"tutor\"\nscopes = [\"read:users\"]\nusers = [\"u03\", \"u07\"]\n\
         [[JupyterHub.load_roles]]\nname = \"viewer\"\nscopes = [\"read:users:name\"]\nusers = [\"u03\", \"u11\"]\n\
         [JupyterHub.load_groups.everyone]\nusers = [{}]\n\
         [JupyterHub.load_groups.odd]\nusers = [\"u01\", \"u03\", \"u05\"]\n{}",
        quoted.join(", "),
        // Services list, so no listed user's activity changes between the two requests.
        [("every", "list:users"), ("grouped", "list:users!group=everyone")]
            .map(|(name, list)| format!(
                "[[JupyterHub.services]]\nname = \"{name}\"\napi_token = \"{name}-lister-token-0123456789\"\n\
                 [[JupyterHub.load_roles]]\nname = \"{name}-lister\"\n\
                 scopes = [\"{list}\", \"read:users\", \"read:roles:users\", \"read:servers\"]\n\
                 services = [\"{name}\"]\n"
            ))
            .concat()
    );
    let hub = TestHub::start(&config, &crate::support::stub_spawner_config()).await;
    let admin = hub.admin_token();
    // Ties (u05, u06, u14), an older one, a newer one; the rest never active.
    for (user, when) in [
        ("u05", "2026-01-01T10:00:00Z"),
        ("u14", "2026-01-01T10:00:00Z"),
        ("u06", "2026-01-01T10:00:00Z"),
        ("u02", "2025-06-01T00:00:00Z"),
        ("u19", "2026-03-01T00:00:00Z"),
    ] {
        let (status, body) = call(
            &hub,
            "POST",
            &format!("/users/{user}/activity"),
            &admin,
            Some(json!({ "last_activity": when })),
        )
        .await;
        assert_eq!(status, 200, "{user}: {body}");
    }
    let (status, body) = call(
        &hub,
        "POST",
        &format!("/users/{runner}/server"),
        &admin,
        None,
    )
    .await;
    assert!(status == 201 || status == 202, "{status} {body}");
    crate::support::wait_ready(&hub, &admin, &runner, "").await;

    let every = "every-lister-token-0123456789";
    let grouped = "grouped-lister-token-0123456789";
    let mut checked = 0;
    // With the server running, then stopped (listed with include_stopped_servers).
    for phase in ["running", "stopped"] {
        if phase == "stopped" {
            let (status, _) = call(
                &hub,
                "DELETE",
                &format!("/users/{runner}/server"),
                &admin,
                None,
            )
            .await;
            assert!(status == 204 || status == 202, "{status}");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let (_, model) = call(&hub, "GET", &format!("/users/{runner}"), &admin, None).await;
                if model["servers"] == json!({}) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "never stopped: {model}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        for sort in [
            "",
            "id",
            "-id",
            "name",
            "-name",
            "last_activity",
            "-last_activity",
        ] {
            for (offset, limit) in [(0, 200), (0, 5), (5, 5), (19, 5), (30, 5)] {
                for stopped in ["0", "1"] {
                    let query = format!(
                        "sort={sort}&offset={offset}&limit={limit}&include_stopped_servers={stopped}"
                    );
                    let (status, from_sql) = listing(&hub, every, &query).await;
                    assert_eq!(status, 200, "{query}: {from_sql}");
                    let (status, in_memory) = listing(&hub, grouped, &query).await;
                    assert_eq!(status, 200, "{query}: {in_memory}");
                    assert_eq!(from_sql, in_memory, "{phase}: {query}");
                    assert_eq!(from_sql["_pagination"]["total"], names.len(), "{query}");
                    checked += from_sql["items"].as_array().map_or(0, Vec::len);
                }
            }
        }
    }
    // The pages were not empty: per phase, sort and include_stopped_servers, every user once
    // on the whole page, then pages of 5 from 0, 5 and 19.
    assert_eq!(
        checked,
        2 * 7 * 2 * (names.len() + 5 + 5 + (names.len() - 19))
    );
    // And the orders are the listing's: never-active users last ascending, first descending.
    let (_, by_activity) = listing(&hub, every, "sort=last_activity").await;
    let order: Vec<&str> = by_activity["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|u| u["name"].as_str().expect("name"))
        .collect();
    assert_eq!(order[..4], ["u02", "u05", "u06", "u14"], "{order:?}");
}
