//! Sharing (JupyterHub 5): `/shares`, `/share-codes`, `/users|groups/NAME/shared` and the
//! accept-share page, with upstream's statuses.

use serde_json::{Value, json};

use crate::support::{TestHub, browser, call, extract_xsrf, login};

/// Users may share their own servers (upstream's sharing docs give the user role `shares!user`
/// and the names of users and groups); carol is in group `team`.
const CONFIG: &str = "allow_named_servers = true\n\
    [[JupyterHub.load_roles]]\nname = \"user\"\nscopes = [\"self\", \"shares!user\", \"read:users:name\", \"read:groups:name\"]\n\
    [JupyterHub.load_groups.team]\nusers = [\"carol\"]\n";

async fn hub_with_users() -> (TestHub, String) {
    let hub = TestHub::start(CONFIG, "").await;
    let admin = hub.admin_token();
    let (status, body) = call(
        &hub,
        "POST",
        "/users",
        &admin,
        Some(json!({"usernames": ["alice", "bob", "carol"]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    (hub, admin)
}

fn scopes_of(whoami: &Value) -> Vec<String> {
    whoami["scopes"]
        .as_array()
        .expect("scopes")
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn shares_grant_list_revoke() {
    let (hub, admin) = hub_with_users().await;
    let alice = hub.token("alice", &[]);
    let bob = hub.token("bob", &[]);
    let carol = hub.token("carol", &[]);

    let (status, share) = call(
        &hub,
        "POST",
        "/shares/alice/",
        &alice,
        Some(json!({"user": "bob"})),
    )
    .await;
    assert_eq!(status, 200, "{share}");
    assert_eq!(share["kind"], "user");
    assert_eq!(share["user"], json!({"name": "bob"}));
    assert_eq!(share["group"], Value::Null);
    assert_eq!(share["scopes"], json!(["access:servers!server=alice/"]));
    assert_eq!(share["server"]["user"], json!({"name": "alice"}));
    assert_eq!(share["server"]["name"], "");
    assert_eq!(share["server"]["url"], "/user/alice/");
    assert_eq!(share["server"]["ready"], false);
    assert!(
        share["created_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );

    // The share is in bob's scopes, and only there.
    let (_, whoami) = call(&hub, "GET", "/user", &bob, None).await;
    assert!(
        scopes_of(&whoami).contains(&"access:servers!server=alice/".to_owned()),
        "{whoami}"
    );
    let (_, whoami) = call(&hub, "GET", "/user", &carol, None).await;
    assert!(!scopes_of(&whoami).contains(&"access:servers!server=alice/".to_owned()));

    // Granting again extends in place: still one share.
    let (status, share) = call(
        &hub,
        "POST",
        "/shares/alice/",
        &alice,
        Some(json!({"user": "bob", "scopes": ["read:servers"]})),
    )
    .await;
    assert_eq!(status, 200, "{share}");
    assert_eq!(
        share["scopes"],
        json!(["access:servers!server=alice/", "read:servers!server=alice/"])
    );
    for path in ["/shares/alice/", "/shares/alice"] {
        let (status, list) = call(&hub, "GET", path, &alice, None).await;
        assert_eq!(status, 200, "{path}: {list}");
        assert_eq!(list.as_array().map(Vec::len), Some(1), "{path}: {list}");
    }
    let (status, list) = call(&hub, "GET", "/users/bob/shared", &bob, None).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["server"]["user"]["name"], "alice");
    let (status, one) = call(&hub, "GET", "/users/bob/shared/alice/", &bob, None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["user"]["name"], "bob");
    let (status, _) = call(&hub, "GET", "/users/carol/shared/alice/", &admin, None).await;
    assert_eq!(status, 404);

    // A group share reaches its members.
    let (status, share) = call(
        &hub,
        "POST",
        "/shares/alice/",
        &alice,
        Some(json!({"group": "team"})),
    )
    .await;
    assert_eq!(status, 200, "{share}");
    assert_eq!(share["kind"], "group");
    assert_eq!(share["group"], json!({"name": "team"}));
    let (_, whoami) = call(&hub, "GET", "/user", &carol, None).await;
    assert!(
        scopes_of(&whoami).contains(&"access:servers!server=alice/".to_owned()),
        "{whoami}"
    );
    let (_, list) = call(&hub, "GET", "/users/carol/shared", &carol, None).await;
    assert_eq!(list[0]["kind"], "group", "{list}");
    let (status, list) = call(&hub, "GET", "/groups/team/shared", &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let (status, _) = call(&hub, "GET", "/groups/team/shared/alice/", &admin, None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&hub, "DELETE", "/groups/team/shared/alice/", &admin, None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&hub, "GET", "/groups/team/shared/alice/", &admin, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&hub, "GET", "/groups/nogroup/shared", &admin, None).await;
    assert_eq!(status, 404);

    // PATCH revokes some scopes, then the rest; an unknown user is nothing to revoke.
    let (status, share) = call(
        &hub,
        "PATCH",
        "/shares/alice/",
        &alice,
        Some(json!({"user": "bob", "scopes": ["read:servers!server=alice/"]})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(share["scopes"], json!(["access:servers!server=alice/"]));
    let (status, body) = call(
        &hub,
        "PATCH",
        "/shares/alice/",
        &alice,
        Some(json!({"user": "nobody"})),
    )
    .await;
    assert_eq!((status.as_u16(), body), (200, json!({})));
    let (status, body) = call(
        &hub,
        "PATCH",
        "/shares/alice/",
        &alice,
        Some(json!({"user": "bob"})),
    )
    .await;
    assert_eq!((status.as_u16(), body), (200, json!({})));
    let (_, whoami) = call(&hub, "GET", "/user", &bob, None).await;
    assert!(!scopes_of(&whoami).contains(&"access:servers!server=alice/".to_owned()));

    // DELETE removes every share of the server; the grantee may give a share up.
    call(
        &hub,
        "POST",
        "/shares/alice/",
        &alice,
        Some(json!({"user": "bob"})),
    )
    .await;
    call(
        &hub,
        "POST",
        "/shares/alice/",
        &alice,
        Some(json!({"user": "carol"})),
    )
    .await;
    let (status, _) = call(&hub, "DELETE", "/users/bob/shared/alice/", &bob, None).await;
    assert_eq!(status, 204);
    let (_, list) = call(&hub, "GET", "/shares/alice/", &alice, None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let (status, _) = call(&hub, "DELETE", "/shares/alice/", &alice, None).await;
    assert_eq!(status, 204);
    let (_, list) = call(&hub, "GET", "/shares/alice", &alice, None).await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn shares_refuse_bad_requests() {
    let (hub, admin) = hub_with_users().await;
    let alice = hub.token("alice", &[]);
    let bob = hub.token("bob", &[]);
    let cases = [
        (json!({"user": "bob", "group": "team"}), "not both"),
        (json!({}), "exactly one"),
        (json!({"user": "nobody"}), "No such user: nobody"),
        (json!({"group": "nogroup"}), "No such group: nogroup"),
        (
            json!({"user": "bob", "scopes": ["access:servers!user=alice"]}),
            "not allowed on sharing",
        ),
        (
            json!({"user": "bob", "scopes": ["no-such-scope"]}),
            "does not exist",
        ),
        (json!({"user": "bob", "colour": "red"}), "unknown field"),
    ];
    for (body, message) in cases {
        let (status, answer) =
            call(&hub, "POST", "/shares/alice/", &alice, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["status"], 400);
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains(message)),
            "{body}: {answer}"
        );
    }
    // A scope alice does not hold on her server cannot be shared.
    let (status, answer) = call(
        &hub,
        "POST",
        "/shares/alice/",
        &alice,
        Some(json!({"user": "bob", "scopes": ["admin:servers"]})),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    // A server that does not exist; a user that does not exist.
    let (status, _) = call(
        &hub,
        "POST",
        "/shares/alice/nope",
        &alice,
        Some(json!({"user": "bob"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(&hub, "GET", "/shares/nobody", &admin, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&hub, "GET", "/shares/alice/nope", &admin, None).await;
    assert_eq!(status, 404);
    // Bob may share his own servers, not alice's (404: the scope is held, filtered away);
    // a token without `shares` at all is a 403.
    let (status, _) = call(
        &hub,
        "POST",
        "/shares/alice/",
        &bob,
        Some(json!({"user": "carol"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(&hub, "GET", "/shares/alice", &bob, None).await;
    assert_eq!(status, 404);
    let reader = hub.token("bob", &["read:users:name"]);
    let (status, _) = call(&hub, "GET", "/shares/alice", &reader, None).await;
    assert_eq!(status, 403);
    let (status, _) = call(&hub, "GET", "/users/alice/shared", &bob, None).await;
    assert_eq!(status, 404);
    // Without a server, only GET.
    for method in ["POST", "PATCH", "DELETE"] {
        let (status, _) = call(
            &hub,
            method,
            "/shares/alice",
            &alice,
            Some(json!({"user": "bob"})),
        )
        .await;
        assert_eq!(status, 405, "{method}");
    }
    let (status, _) = call(&hub, "POST", "/share-codes/alice", &alice, None).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn share_codes_create_list_delete() {
    let (hub, _admin) = hub_with_users().await;
    let alice = hub.token("alice", &[]);
    let (status, code) = call(&hub, "POST", "/share-codes/alice/", &alice, None).await;
    assert_eq!(status, 200, "{code}");
    let secret = code["code"].as_str().expect("code").to_owned();
    assert_eq!(secret.len(), 43);
    assert_eq!(
        code["accept_url"],
        format!("/hub/accept-share?code={secret}")
    );
    assert_eq!(code["full_accept_url"], Value::Null);
    assert_eq!(code["scopes"], json!(["access:servers!server=alice/"]));
    assert_eq!(code["exchange_count"], 0);
    assert_eq!(code["last_exchanged_at"], Value::Null);
    let id = code["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("sc_"), "{id}");
    let created = code["created_at"].as_str().expect("created");
    let expires = code["expires_at"].as_str().expect("expires");
    assert!(expires > created);

    for expires_in in [json!(59), json!(525_600 * 60 + 1), json!("soon")] {
        let (status, body) = call(
            &hub,
            "POST",
            "/share-codes/alice/",
            &alice,
            Some(json!({"expires_in": expires_in})),
        )
        .await;
        assert_eq!(status, 400, "{expires_in}: {body}");
    }
    let (status, code2) = call(
        &hub,
        "POST",
        "/share-codes/alice/",
        &alice,
        Some(json!({"expires_in": 60})),
    )
    .await;
    assert_eq!(status, 200, "{code2}");

    for path in ["/share-codes/alice/", "/share-codes/alice"] {
        let (status, list) = call(&hub, "GET", path, &alice, None).await;
        assert_eq!(status, 200);
        let list = list.as_array().expect("list").clone();
        assert_eq!(list.len(), 2, "{path}");
        assert!(
            list.iter().all(|c| c.get("code").is_none()),
            "the code is shown once"
        );
    }
    let (status, _) = call(&hub, "DELETE", "/share-codes/alice/?id=sc_x", &alice, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &hub,
        "DELETE",
        "/share-codes/alice/?code=wrong-code",
        &alice,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &hub,
        "DELETE",
        &format!("/share-codes/alice/?id={id}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (_, list) = call(&hub, "GET", "/share-codes/alice/", &alice, None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let secret2 = code2["code"].as_str().expect("code");
    let (status, _) = call(
        &hub,
        "DELETE",
        &format!("/share-codes/alice/?code={secret2}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(status, 204);
    call(&hub, "POST", "/share-codes/alice/", &alice, None).await;
    let (status, _) = call(&hub, "DELETE", "/share-codes/alice/", &alice, None).await;
    assert_eq!(status, 204);
    let (_, list) = call(&hub, "GET", "/share-codes/alice", &alice, None).await;
    assert_eq!(list, json!([]));
    let (status, _) = call(&hub, "POST", "/share-codes/alice/nope", &alice, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn accept_share_page_exchanges_a_code() {
    let (hub, _admin) = hub_with_users().await;
    let alice = hub.token("alice", &[]);
    let (_, code) = call(&hub, "POST", "/share-codes/alice/", &alice, None).await;
    let accept = format!("{}{}", hub.url, code["accept_url"].as_str().expect("url"));

    // Not logged in: the login page, coming back here.
    let anonymous = browser();
    let response = anonymous.get(&accept).send().await.expect("page");
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(location.starts_with("/hub/login?next="), "{location}");

    let (bob, _) = login(&hub, "bob", "any").await;
    let response = bob.get(&accept).send().await.expect("page");
    assert_eq!(response.status(), 200);
    let html = response.text().await.expect("html");
    assert!(html.contains("Accept sharing invitation"), "{html}");
    assert!(
        html.contains("alice&#x27;s server") || html.contains("alice's server"),
        "{html}"
    );
    assert!(
        html.contains("Access user servers via API or browser."),
        "{html}"
    );
    assert!(html.contains("is not running"), "{html}");
    let xsrf = extract_xsrf(&html);
    let secret = code["code"].as_str().expect("code");

    let response = bob
        .post(format!("{}/hub/accept-share", hub.url))
        .form(&[("_xsrf", xsrf.as_str()), ("code", "not-a-code")])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let response = bob
        .post(format!("{}/hub/accept-share", hub.url))
        .form(&[("code", secret)])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 403, "no XSRF token");
    let response = bob
        .post(format!("{}/hub/accept-share", hub.url))
        .form(&[("_xsrf", xsrf.as_str()), ("code", secret)])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/user/alice/");

    let bob_token = hub.token("bob", &[]);
    let (_, list) = call(&hub, "GET", "/users/bob/shared", &bob_token, None).await;
    assert_eq!(
        list[0]["scopes"],
        json!(["access:servers!server=alice/"]),
        "{list}"
    );
    let (_, codes) = call(&hub, "GET", "/share-codes/alice/", &alice, None).await;
    assert_eq!(codes[0]["exchange_count"], 1);
    assert!(codes[0]["last_exchanged_at"].as_str().is_some());

    // The owner cannot accept their own code; an unknown code is not found.
    let (alice_browser, _) = login(&hub, "alice", "any").await;
    let response = alice_browser.get(&accept).send().await.expect("page");
    assert_eq!(response.status(), 403);
    let response = bob
        .get(format!("{}/hub/accept-share?code=unknown-code", hub.url))
        .send()
        .await
        .expect("page");
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn share_lists_are_paginated() {
    let (hub, _admin) = hub_with_users().await;
    let alice = hub.token("alice", &[]);
    for user in ["bob", "carol"] {
        let (status, _) = call(
            &hub,
            "POST",
            "/shares/alice/",
            &alice,
            Some(json!({"user": user})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let page = |path: &str| {
        reqwest::Client::new()
            .get(hub.api(path))
            .header("Authorization", format!("token {alice}"))
            .header("Accept", "application/jupyterhub-pagination+json")
            .send()
    };
    let body: Value = page("/shares/alice/?limit=1")
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["items"][0]["user"]["name"], "bob");
    assert_eq!(body["_pagination"]["total"], 2);
    assert_eq!(body["_pagination"]["next"]["offset"], 1);
    let body: Value = page("/shares/alice?offset=1")
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(body["items"][0]["user"]["name"], "carol", "{body}");
    assert_eq!(body["_pagination"]["next"], Value::Null);
}
