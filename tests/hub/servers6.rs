//! JupyterHub 6.x's server endpoints: `PUT` (create without starting), `PATCH` (rename,
//! display name, user options), `GET` of one server, the 6.x start body beside 5.x's bare
//! options, display names on the home page and from the spawn page's query; and
//! `JupyterHub.custom_scopes` in roles and tokens.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::{BIN, TestHub, call, login, server_user, stub_spawner_config, wait_ready};

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn put_creates_named_servers_without_starting_them() {
    let hub = TestHub::start(
        "allow_named_servers = true\nnamed_server_limit_per_user = 2",
        &stub_spawner_config(),
    )
    .await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let path = |server: &str| format!("/users/{user}/servers/{server}");

    let (status, model) = call(
        &hub,
        "PUT",
        &path("nb"),
        &admin,
        Some(json!({"display_name": "My Notebook", "user_options": {"profile": "small"}})),
    )
    .await;
    assert_eq!(status, 201, "{model}");
    assert_eq!(model["name"], "nb");
    assert_eq!(model["display_name"], "My Notebook");
    assert_eq!(model["full_name"], format!("{user}/nb"));
    assert_eq!(model["user_options"], json!({"profile": "small"}));
    assert_eq!(model["stopped"], true);
    assert_eq!(model["ready"], false);
    assert_eq!(model["pending"], Value::Null);
    assert_eq!(model["url"], format!("/user/{user}/nb/"));
    assert_eq!(model["started"], Value::Null);
    assert!(
        model.get("state").is_some(),
        "an admin sees the state: {model}"
    );

    // Created, not started: nothing runs and GET shows the same record.
    let (status, got) = call(&hub, "GET", &path("nb"), &admin, None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["display_name"], "My Notebook");
    assert_eq!(got["stopped"], true);
    let (_, user_model) = call(
        &hub,
        "GET",
        &format!("/users/{user}?include_stopped_servers=1"),
        &admin,
        None,
    )
    .await;
    assert_eq!(user_model["servers"]["nb"]["display_name"], "My Notebook");
    let (_, user_model) = call(&hub, "GET", &format!("/users/{user}"), &admin, None).await;
    assert_eq!(
        user_model["servers"],
        json!({}),
        "stopped servers are not listed"
    );

    // Existing, default, invalid.
    let (status, body) = call(&hub, "PUT", &path("nb"), &admin, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(message(&body), format!("User {user} already has server nb"));
    let (status, body) = call(&hub, "PUT", &format!("/users/{user}/server"), &admin, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        message(&body),
        format!("User {user} already has a default server")
    );
    for (bad, needle) in [
        (json!({"display_name": " padded"}), "Invalid display_name"),
        (json!({"display_name": "tab\there"}), "Invalid display_name"),
        (json!({"display_name": 7}), "display_name must be a string"),
        (
            json!({"user_options": "big"}),
            "user_options must be an object",
        ),
        (json!(["list"]), "Body must be a JSON object"),
    ] {
        let (status, body) = call(&hub, "PUT", &path("other"), &admin, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(message(&body).contains(needle), "{bad}: {body}");
    }
    let (status, _) = call(&hub, "GET", &path("other"), &admin, None).await;
    assert_eq!(status, 404, "a refused PUT creates nothing");
    let (status, _) = call(&hub, "PUT", "/users/nobody-here/servers/x", &admin, None).await;
    assert_eq!(status, 404);

    // 5.x's bare options as the body; the display name defaults to the name.
    let (status, model) = call(
        &hub,
        "PUT",
        &path("legacy"),
        &admin,
        Some(json!({"answer": 42})),
    )
    .await;
    assert_eq!(status, 201, "{model}");
    assert_eq!(model["display_name"], "legacy");
    assert_eq!(model["user_options"], json!({"answer": 42}));

    // The limit counts created servers.
    let (status, body) = call(&hub, "PUT", &path("third"), &admin, None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        message(&body).contains("already has the maximum of 2 named servers"),
        "{body}"
    );

    // Creating needs start:servers on the server.
    let reader = hub.token(&user, &[&format!("read:servers!user={user}")]);
    let (status, body) = call(&hub, "PUT", &path("mine"), &reader, None).await;
    assert_eq!(status, 403, "{body}");
    let starter = hub.token(&user, &[&format!("servers!server={user}/nb")]);
    let (status, body) = call(&hub, "PUT", &path("mine"), &starter, None).await;
    assert_eq!(status, 404, "a filter that misses the server: {body}");

    // A created server starts with its stored options, and is shown on the home page by its
    // display name.
    let (status, body) = call(&hub, "POST", &path("legacy"), &admin, None).await;
    assert!(status == 201 || status == 202, "{status} {body}");
    wait_ready(&hub, &admin, &user, "legacy").await;
    let (_, got) = call(&hub, "GET", &path("legacy"), &admin, None).await;
    assert_eq!(got["user_options"], json!({"answer": 42}));
    assert_eq!(got["ready"], true);
    let (client, _) = login(&hub, &user, "any").await;
    let home = client
        .get(format!("{}/hub/home", hub.url))
        .send()
        .await
        .expect("home");
    assert_eq!(home.status(), 200);
    let html = home.text().await.expect("html");
    assert!(
        html.contains("<td class=\"server-name\">My Notebook</td>")
            && html.contains("<td class=\"server-name\">legacy</td>"),
        "{html}"
    );
    let (status, _) = call(&hub, "DELETE", &path("legacy"), &admin, None).await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn patch_renames_and_edits_stopped_servers() {
    let hub = TestHub::start("allow_named_servers = true", &stub_spawner_config()).await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let path = |server: &str| format!("/users/{user}/servers/{server}");
    for name in ["nb", "taken"] {
        let (status, body) = call(&hub, "PUT", &path(name), &admin, None).await;
        assert_eq!(status, 201, "{body}");
    }

    let (status, model) = call(
        &hub,
        "PATCH",
        &path("nb"),
        &admin,
        Some(json!({"display_name": "Big box", "user_options": {"cpu": 4}})),
    )
    .await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["display_name"], "Big box");
    assert_eq!(model["user_options"], json!({"cpu": 4}));
    // A null or empty display name changes nothing.
    let (status, model) = call(
        &hub,
        "PATCH",
        &path("nb"),
        &admin,
        Some(json!({"display_name": null, "user_options": {}})),
    )
    .await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["display_name"], "Big box");
    assert_eq!(model["user_options"], json!({}));

    for (bad, needle) in [
        (json!({}), "Must specify at least one field to modify."),
        (json!({"state": {}}), "Unexpected fields: state"),
        (json!({"user_options": null}), "user_options must be a dict"),
        (
            json!({"display_name": ["x"]}),
            "display_name must be a string",
        ),
        (
            json!({"display_name": "two  spaces"}),
            "Invalid display_name",
        ),
        (json!({"name": "a/b"}), "Invalid server_name"),
        (json!({"name": ""}), "Invalid server_name"),
    ] {
        let (status, body) = call(&hub, "PATCH", &path("nb"), &admin, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(message(&body).contains(needle), "{bad}: {body}");
    }
    let (status, body) = call(
        &hub,
        "PATCH",
        &path("missing"),
        &admin,
        Some(json!({"user_options": {}})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(
        &hub,
        "PATCH",
        &path("nb"),
        &admin,
        Some(json!({"name": "taken"})),
    )
    .await;
    assert_eq!(status, 409, "{body}");

    // Rename: the old name is gone, the display name and options move with it.
    let (status, model) = call(
        &hub,
        "PATCH",
        &path("nb"),
        &admin,
        Some(json!({"name": "renamed"})),
    )
    .await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["name"], "renamed");
    assert_eq!(model["url"], format!("/user/{user}/renamed/"));
    assert_eq!(model["display_name"], "Big box");
    let (status, _) = call(&hub, "GET", &path("nb"), &admin, None).await;
    assert_eq!(status, 404);

    // The 6.x start body: the display name is updated, the options are the server's.
    let (status, body) = call(
        &hub,
        "POST",
        &path("renamed"),
        &admin,
        Some(json!({"display_name": "Started box", "user_options": {"cpu": 2}})),
    )
    .await;
    assert!(status == 201 || status == 202, "{status} {body}");
    wait_ready(&hub, &admin, &user, "renamed").await;
    let (_, model) = call(&hub, "GET", &path("renamed"), &admin, None).await;
    assert_eq!(model["display_name"], "Started box");
    assert_eq!(model["user_options"], json!({"cpu": 2}));

    // A running server is not modified.
    let (status, body) = call(
        &hub,
        "PATCH",
        &path("renamed"),
        &admin,
        Some(json!({"display_name": "Other"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        message(&body),
        format!("{user}:renamed is active. Please stop it before modifying it.")
    );
    let (status, _) = call(&hub, "DELETE", &path("renamed"), &admin, None).await;
    assert_eq!(status, 204);

    // A new server started with 5.x's bare options gets them and its name as display name.
    let (status, body) = call(
        &hub,
        "POST",
        &path("fresh"),
        &admin,
        Some(json!({"answer": 42})),
    )
    .await;
    assert!(status == 201 || status == 202, "{status} {body}");
    wait_ready(&hub, &admin, &user, "fresh").await;
    let (_, model) = call(&hub, "GET", &path("fresh"), &admin, None).await;
    assert_eq!(model["display_name"], "fresh");
    assert_eq!(model["user_options"], json!({"answer": 42}));
    let (status, _) = call(&hub, "DELETE", &path("fresh"), &admin, None).await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn the_spawn_page_takes_a_display_name() {
    let hub = TestHub::start("allow_named_servers = true", &stub_spawner_config()).await;
    let admin = hub.admin_token();
    let user = server_user();
    let (client, _) = login(&hub, &user, "any").await;
    let spawn = |query: &str| format!("{}/hub/spawn/{user}/box{query}", hub.url);
    let r = client
        .get(spawn("?display_name=Bad%09tab"))
        .send()
        .await
        .expect("spawn");
    assert_eq!(r.status(), 400, "an invalid display name is refused");
    let r = client
        .get(spawn("?display_name=My%20Box"))
        .send()
        .await
        .expect("spawn");
    assert!(r.status().is_redirection(), "{}", r.status());
    wait_ready(&hub, &admin, &user, "box").await;
    let (_, model) = call(
        &hub,
        "GET",
        &format!("/users/{user}/servers/box"),
        &admin,
        None,
    )
    .await;
    assert_eq!(model["display_name"], "My Box");
    let (status, _) = call(
        &hub,
        "DELETE",
        &format!("/users/{user}/servers/box"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn without_named_servers_put_and_patch_are_refused() {
    let hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    call(&hub, "POST", "/users/alice", &admin, None).await;
    let (status, body) = call(&hub, "PUT", "/users/alice/servers/nb", &admin, None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(message(&body), "Named servers are not enabled.");
    let (status, body) = call(
        &hub,
        "PATCH",
        "/users/alice/server",
        &admin,
        Some(json!({"display_name": "Mine"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(message(&body), "Named servers are not enabled.");
    let (status, body) = call(
        &hub,
        "PATCH",
        "/users/alice/server",
        &admin,
        Some(json!({"user_options": {}})),
    )
    .await;
    assert_eq!(status, 404, "no default server record yet: {body}");
    let (status, body) = call(&hub, "GET", "/users/alice/server", &admin, None).await;
    assert_eq!(status, 404, "{body}");
}

const CUSTOM_SCOPES: &str = r#"
[JupyterHub.custom_scopes."custom:read:thing"]
description = "Read things"
subscopes = ["custom:read:thing:detail"]

[JupyterHub.custom_scopes."custom:read:thing:detail"]
description = "Details of things"

[[JupyterHub.load_roles]]
name = "thing-reader"
scopes = ["custom:read:thing!user=alice"]
users = ["alice"]
"#;

#[tokio::test]
async fn custom_scopes_in_roles_and_tokens() {
    let hub = TestHub::start("", CUSTOM_SCOPES).await;
    let admin = hub.admin_token();
    call(&hub, "POST", "/users/bob", &admin, None).await;
    let alice = hub.token("alice", &[]);
    let (status, me) = call(&hub, "GET", "/user", &alice, None).await;
    assert_eq!(status, 200, "{me}");
    let scopes: Vec<&str> = me["scopes"]
        .as_array()
        .expect("scopes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        scopes.contains(&"custom:read:thing!user=alice")
            && scopes.contains(&"custom:read:thing:detail!user=alice"),
        "the role's scope and its subscope: {scopes:?}"
    );

    // A token asking for the custom scope alone holds it (and its subscope), nothing else.
    let (status, created) = call(
        &hub,
        "POST",
        "/users/alice/tokens",
        &alice,
        Some(json!({"scopes": ["custom:read:thing!user=alice"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().expect("token");
    let (status, me) = call(&hub, "GET", "/user", token, None).await;
    assert_eq!(status, 200, "{me}");
    let mut scopes: Vec<String> = me["scopes"]
        .as_array()
        .expect("scopes")
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    scopes.sort();
    // Beside what it asked for, a token always identifies its owner (upstream's identify scopes).
    assert_eq!(
        scopes,
        [
            "custom:read:thing!user=alice",
            "custom:read:thing:detail!user=alice",
            "read:users:groups!user=alice",
            "read:users:name!user=alice",
        ]
    );
    let cli_token = hub.token("alice", &["custom:read:thing:detail!user=alice"]);
    let (_, me) = call(&hub, "GET", "/user", &cli_token, None).await;
    let scopes = me["scopes"].as_array().expect("scopes");
    assert!(
        scopes.contains(&json!("custom:read:thing:detail!user=alice"))
            && !scopes.contains(&json!("custom:read:thing!user=alice")),
        "{me}"
    );

    // Bob holds no such scope (upstream's 400); an undefined one is refused too.
    let bob = hub.token("bob", &[]);
    let (status, body) = call(
        &hub,
        "POST",
        "/users/bob/tokens",
        &bob,
        Some(json!({"scopes": ["custom:read:thing"]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        message(&body).starts_with("Not assigning requested scopes custom:read:thing"),
        "{body}"
    );
    let (status, body) = call(
        &hub,
        "POST",
        "/users/alice/tokens",
        &alice,
        Some(json!({"scopes": ["custom:undefined"]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[test]
fn bad_custom_scopes_are_refused_at_config_load() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("jupyterhub.toml");
    for (text, needle) in [
        (
            "[JupyterHub.custom_scopes.\"read:thing\"]\ndescription = \"x\"\n",
            "Invalid scope name: \"read:thing\"",
        ),
        (
            "[JupyterHub.custom_scopes.\"custom:thing\"]\ndescription = \"x\"\nsubscopes = [\"custom:other\"]\n",
            "subscope custom:other in custom:thing not found",
        ),
        (
            "[JupyterHub.custom_scopes.\"custom:thing\"]\nsubscopes = []\n",
            "description",
        ),
        (
            "[[JupyterHub.load_roles]]\nname = \"thing-reader\"\nscopes = [\"custom:thing\"]\n",
            "JupyterHub.load_roles[0].scopes",
        ),
    ] {
        std::fs::write(&path, text).expect("write");
        let out = Command::new(BIN)
            .args(["check-config", "-f"])
            .arg(&path)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{text}: {err}");
        assert!(
            err.contains("custom_scopes") || err.contains("load_roles"),
            "names the key: {err}"
        );
    }
    std::fs::write(&path, CUSTOM_SCOPES).expect("write");
    let out = Command::new(BIN)
        .args(["check-config", "-f"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
