//! `/hub/api/users/{name}/tokens`.

use serde_json::json;

use crate::support::{TestHub, call};

#[tokio::test]
async fn token_lifecycle() {
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
    let alice = hub.token("alice", &[]);
    let (status, created) = call(
        &hub,
        "POST",
        "/users/alice/tokens",
        &alice,
        Some(json!({"note": "laptop", "expires_in": 3600})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let new_token = created["token"].as_str().expect("token").to_owned();
    assert_eq!(new_token.len(), 32);
    assert_eq!(created["note"], "laptop");
    assert_eq!(created["kind"], "api_token");
    assert!(created["expires_at"].is_string());
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, me) = call(&hub, "GET", "/user", &new_token, None).await;
    assert_eq!(status, 200);
    assert_eq!(me["name"], "alice");

    let (status, list) = call(&hub, "GET", "/users/alice/tokens", &alice, None).await;
    assert_eq!(status, 200);
    assert!(
        list["api_tokens"]
            .as_array()
            .is_some_and(|l| l.iter().any(|t| t["id"] == id.as_str()))
    );
    assert!(
        list["api_tokens"]
            .as_array()
            .is_some_and(|l| l.iter().all(|t| t.get("token").is_none())),
        "tokens are never listed"
    );
    let (status, one) = call(
        &hub,
        "GET",
        &format!("/users/alice/tokens/{id}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["note"], "laptop");
    let (status, _) = call(
        &hub,
        "DELETE",
        &format!("/users/alice/tokens/{id}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(&hub, "GET", "/user", &new_token, None).await;
    assert_eq!(status, 403, "deleted token no longer works");
    let (status, _) = call(
        &hub,
        "GET",
        &format!("/users/alice/tokens/{id}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(&hub, "GET", "/users/alice/tokens/a999999", &alice, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&hub, "GET", "/users/alice/tokens/garbage", &alice, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn token_requests_are_validated() {
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
        "/users/alice/tokens",
        &alice,
        Some(json!({"expires_in": 0})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        &hub,
        "POST",
        "/users/alice/tokens",
        &alice,
        Some(json!({"expires_in": "soon"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        &hub,
        "POST",
        "/users/alice/tokens",
        &alice,
        Some(json!({"scopes": ["admin:users"]})),
    )
    .await;
    assert_eq!(
        status, 400,
        "scopes beyond the owner's, as upstream: {body}"
    );
    let (status, body) = call(
        &hub,
        "POST",
        "/users/alice/tokens",
        &alice,
        Some(json!({"unknown": 1})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = call(&hub, "POST", "/users/bob/tokens", &alice, None).await;
    assert_eq!(status, 404, "another user's tokens");
    let (status, created) = call(
        &hub,
        "POST",
        "/users/alice/tokens",
        &admin,
        Some(json!({"scopes": ["read:users:name!user=alice"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert!(
        created["note"]
            .as_str()
            .is_some_and(|n| n.contains("admin")),
        "{created}"
    );
}

#[tokio::test]
async fn expired_tokens_stop_working() {
    let hub = TestHub::start("", "").await;
    let alice = hub.token("alice", &[]);
    let (status, created) = call(
        &hub,
        "POST",
        "/users/alice/tokens",
        &alice,
        Some(json!({"expires_in": 1})),
    )
    .await;
    assert_eq!(status, 201);
    let short = created["token"].as_str().expect("token").to_owned();
    let (status, _) = call(&hub, "GET", "/user", &short, None).await;
    assert_eq!(status, 200);
    // Asked until the hub itself rejects it: the expiry is its clock's business.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _) = call(&hub, "GET", "/user", &short, None).await;
        if status != 200 {
            assert_eq!(status, 403);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a token that expires in 1 s still works 10 s later"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bearer_header_is_accepted_and_query_token_is_not() {
    let hub = TestHub::start("", "").await;
    let token = hub.admin_token();
    let client = reqwest::Client::new();
    let r = client
        .get(hub.api("/user"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    // Upstream's hub API does not take ?token=.
    let r = client
        .get(hub.api(&format!("/user?token={token}")))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
}

/// A token's scopes follow its owner's at the next request: identities of tokens are
/// remembered between requests, and any change to the database must drop them.
#[tokio::test]
async fn owner_changes_reach_a_token_at_once() {
    let hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(json!({"usernames": ["carol"]})),
    )
    .await;
    let carol = hub.token("carol", &[]);
    for _ in 0..3 {
        let (status, _) = call(&hub, "GET", "/users", &carol, None).await;
        assert_eq!(status, 403, "a plain user may not list users");
    }
    let (status, _) = call(
        &hub,
        "PATCH",
        "/users/carol",
        &admin,
        Some(json!({"admin": true})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, me) = call(&hub, "GET", "/user", &carol, None).await;
    assert_eq!(status, 200);
    assert_eq!(me["admin"], true);
    let (status, _) = call(&hub, "GET", "/users", &carol, None).await;
    assert_eq!(status, 200, "made admin: may list users at once");
    let (status, _) = call(
        &hub,
        "PATCH",
        "/users/carol",
        &admin,
        Some(json!({"admin": false})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(&hub, "GET", "/users", &carol, None).await;
    assert_eq!(status, 403, "no longer admin: refused at once");
    let (status, _) = call(&hub, "DELETE", "/users/carol", &admin, None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&hub, "GET", "/user", &carol, None).await;
    assert_eq!(status, 403, "a deleted user's token stops working");
}

/// `GET /hub/api/user` answers are remembered per token; every change to what they show must
/// be in the very next answer: admin and roles, groups, the name, a server started and
/// stopped, the token revoked.
#[tokio::test]
async fn whoami_answers_follow_every_change() {
    let hub = TestHub::start("", &crate::support::stub_spawner_config()).await;
    let admin = hub.admin_token();
    // A real account, for the server's part.
    let dora = crate::support::server_user();
    let (status, _) = call(&hub, "POST", &format!("/users/{dora}"), &admin, None).await;
    assert_eq!(status, 201);
    let token = hub.token(&dora, &[]);
    // Asked more than once, so each check below follows a remembered answer (the first
    // answer after a change is itself a change: the request records the token's activity).
    let me = || async {
        let (status, first) = call(&hub, "GET", "/user", &token, None).await;
        assert_eq!(status, 200, "{first}");
        let mut last = serde_json::Value::Null;
        for _ in 0..3 {
            let (status, body) = call(&hub, "GET", "/user", &token, None).await;
            assert_eq!(status, 200, "{body}");
            assert!(last.is_null() || body == last, "{body} after {last}");
            last = body;
        }
        assert_eq!(first["name"], last["name"]);
        first
    };
    let before = me().await;
    assert_eq!(before["admin"], false);
    assert_eq!(before["groups"], json!([]));

    let path = format!("/users/{dora}");
    let patch = |body| call(&hub, "PATCH", &path, &admin, Some(body));
    assert_eq!(patch(json!({"admin": true})).await.0, 200);
    let now = me().await;
    assert_eq!(now["admin"], true);
    assert!(
        now["roles"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("admin"))),
        "{now}"
    );
    assert!(
        now["scopes"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("admin:users")))
    );
    assert_eq!(patch(json!({"admin": false})).await.0, 200);
    assert_eq!(me().await["admin"], false);

    assert_eq!(call(&hub, "POST", "/groups/lab", &admin, None).await.0, 201);
    let members = json!({"users": [dora]});
    let (status, _) = call(
        &hub,
        "POST",
        "/groups/lab/users",
        &admin,
        Some(members.clone()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(me().await["groups"], json!(["lab"]));
    let (status, _) = call(&hub, "DELETE", "/groups/lab/users", &admin, Some(members)).await;
    assert_eq!(status, 200);
    assert_eq!(me().await["groups"], json!([]));

    let server = format!("/users/{dora}/server");
    let (status, body) = call(&hub, "POST", &server, &admin, None).await;
    assert!(
        status == 201 || status == 202,
        "{status} {body}\n{}",
        hub.log()
    );
    crate::support::wait_ready(&hub, &admin, &dora, "").await;
    let now = me().await;
    assert_eq!(now["servers"][""]["ready"], true, "{now}");
    assert_eq!(now["server"], format!("/user/{dora}/"), "{now}");
    let (status, _) = call(&hub, "DELETE", &server, &admin, None).await;
    assert!(status == 202 || status == 204, "{status}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // No sleep needed to see it: the first answer after the stop shows it.
        let (_, model) = call(&hub, "GET", &path, &admin, None).await;
        if model["servers"].as_object().is_some_and(|s| s.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{model}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let now = me().await;
    assert_eq!(now["servers"], json!({}), "{now}");
    assert_eq!(now["server"], serde_json::Value::Null, "{now}");

    let renamed = format!("{dora}-renamed");
    assert_eq!(patch(json!({"name": renamed})).await.0, 200);
    assert_eq!(me().await["name"], renamed.as_str());

    let id = me().await["token_id"]
        .as_str()
        .expect("token id")
        .to_owned();
    let revoke = format!("/users/{renamed}/tokens/{id}");
    let (status, _) = call(&hub, "DELETE", &revoke, &admin, None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&hub, "GET", "/user", &token, None).await;
    assert_eq!(status, 403, "a revoked token is refused at once");
}
