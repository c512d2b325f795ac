//! REST API details matched to upstream 5.3: `/proxy` (pagination, `PATCH`), the deprecated
//! `/authorizations/cookie`, token scopes (refused beyond the owner's, listed as upstream's
//! `get_scopes_for`), `/shutdown`'s scope before its body, and removing a stopping server.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestHub, call, login, server_user, stub_spawner_config, wait_ready};

const PAGINATION: &str = "application/jupyterhub-pagination+json";

/// Three routed services beside the hub's own `/` route.
const SERVICES: &str = r#"
[[JupyterHub.services]]
name = "a"
url = "http://127.0.0.1:10201"

[[JupyterHub.services]]
name = "b"
url = "http://127.0.0.1:10202"

[[JupyterHub.services]]
name = "c"
url = "http://127.0.0.1:10203"
"#;

/// A request with any method, headers and raw body; returns status and JSON (or the text).
async fn send(
    hub: &TestHub,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::Client::new().request(method, hub.api(path));
    if let Some(token) = token {
        request = request.header("Authorization", format!("token {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

fn keys(value: &Value) -> Vec<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn error(status: u16, message: &str) -> Value {
    json!({"status": status, "message": message})
}

#[tokio::test]
async fn proxy_routes_paginate_as_upstream() {
    let hub = TestHub::start("", SERVICES).await;
    let admin = hub.admin_token();
    let all = ["/", "/services/a/", "/services/b/", "/services/c/"];

    let (status, routes) = call(&hub, "GET", "/proxy", &admin, None).await;
    assert_eq!(status, 200, "{routes}");
    assert_eq!(keys(&routes), all, "{routes}");
    assert_eq!(routes["/services/b/"]["target"], "http://127.0.0.1:10202");

    // offset and limit slice the sorted routes, still an object without the envelope.
    let (status, page) = call(&hub, "GET", "/proxy?offset=1&limit=2", &admin, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(keys(&page), ["/services/a/", "/services/b/"], "{page}");

    let accept = [("Accept", PAGINATION)];
    let (status, first) = send(&hub, "GET", "/proxy?limit=2", Some(&admin), &accept, None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(keys(&first["items"]), ["/", "/services/a/"], "{first}");
    let pagination = &first["_pagination"];
    assert_eq!(
        (
            &pagination["offset"],
            &pagination["limit"],
            &pagination["total"]
        ),
        (&json!(0), &json!(2), &json!(4)),
        "{first}"
    );
    assert_eq!(pagination["next"]["offset"], 2, "{first}");
    assert_eq!(pagination["next"]["limit"], 2, "{first}");
    let next = pagination["next"]["url"].as_str().expect("next url");
    assert!(next.ends_with("/hub/api/proxy?limit=2&offset=2"), "{next}");
    let (status, last) = send(
        &hub,
        "GET",
        "/proxy?limit=2&offset=2",
        Some(&admin),
        &accept,
        None,
    )
    .await;
    assert_eq!(status, 200, "{last}");
    assert_eq!(keys(&last["items"]), ["/services/b/", "/services/c/"]);
    assert_eq!(last["_pagination"]["next"], Value::Null, "{last}");
    // Past the end: an empty page, not an error.
    let (status, past) = send(&hub, "GET", "/proxy?offset=9", Some(&admin), &accept, None).await;
    assert_eq!(status, 200, "{past}");
    assert_eq!(past["items"], json!({}));
    assert_eq!(past["_pagination"]["total"], 4);

    for query in ["limit=lots", "offset=1.5", "offset=99999999999999999999"] {
        let (status, body) = call(&hub, "GET", &format!("/proxy?{query}"), &admin, None).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(
            body,
            error(
                400,
                "Invalid argument type, offset and limit must be integers"
            )
        );
    }

    // Without the proxy scope: 403 for every method, before any body is read.
    let alice = hub.token("alice", &[]);
    for (method, body) in [("GET", None), ("POST", None), ("PATCH", Some("not json"))] {
        let (status, answer) = send(&hub, method, "/proxy", Some(&alice), &[], body).await;
        assert_eq!(status, 403, "{method}: {answer}");
    }

    // POST and PATCH re-sync; PATCH wants a JSON dict, as upstream.
    let (status, body) = send(&hub, "POST", "/proxy", Some(&admin), &[], None).await;
    assert_eq!((status, &body), (StatusCode::OK, &Value::Null));
    let (status, body) = send(&hub, "PATCH", "/proxy", Some(&admin), &[], None).await;
    assert_eq!(status, 400);
    assert_eq!(body, error(400, "need JSON body"));
    for bad in [
        "not json",
        "[1, 2]",
        "\"api_url\"",
        "null",
        "{\"api_url\": ",
    ] {
        let (status, body) = send(&hub, "PATCH", "/proxy", Some(&admin), &[], Some(bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body, error(400, "Request body must be JSON dict"), "{bad}");
    }
    for good in [
        json!({}),
        json!({"api_url": "http://127.0.0.1:8001", "auth_token": "x"}),
    ] {
        let (status, body) = send(
            &hub,
            "PATCH",
            "/proxy",
            Some(&admin),
            &[],
            Some(&good.to_string()),
        )
        .await;
        assert_eq!((status, &body), (StatusCode::OK, &Value::Null), "{good}");
    }
    let (_, routes) = call(&hub, "GET", "/proxy", &admin, None).await;
    assert_eq!(keys(&routes), all, "the routes survive a re-sync");
}

/// The signed login cookie's value from a login answer's `Set-Cookie` headers.
fn login_cookie(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("jupyterhub-hub-login="))
        .and_then(|v| v.split(';').next())
        .expect("login cookie")
        .trim_matches('"')
        .to_owned()
}

fn path_segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn cookie_authorization_names_the_cookies_user() {
    let hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    let (browser, response) = login(&hub, "alice", "any password").await;
    assert!(response.status().is_redirection(), "{}", response.status());
    let cookie = login_cookie(&response);
    let path = format!(
        "/authorizations/cookie/jupyterhub-hub-login/{}",
        path_segment(&cookie)
    );

    let (status, model) = call(&hub, "GET", &path, &admin, None).await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(
        (&model["kind"], &model["name"]),
        (&json!("user"), &json!("alice"))
    );
    assert_eq!(model["admin"], false);

    // The value in the body (the older form) answers the same.
    let (status, same) = send(
        &hub,
        "GET",
        "/authorizations/cookie/jupyterhub-hub-login",
        Some(&admin),
        &[],
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["name"], "alice");

    // Forged, truncated, or signed for another name: upstream's bare 404.
    let mut forged = cookie.clone();
    let last = forged.pop().expect("non-empty");
    forged.push(if last == '0' { '1' } else { '0' });
    for (name, value) in [
        ("jupyterhub-hub-login", forged.as_str()),
        ("jupyterhub-hub-login", &cookie[..cookie.len() / 2]),
        ("jupyterhub-hub-login", "garbage"),
        ("jupyterhub-session-id", cookie.as_str()),
        ("some%20other cookie", cookie.as_str()),
    ] {
        let path = format!(
            "/authorizations/cookie/{}/{}",
            path_segment(name),
            path_segment(value)
        );
        let (status, body) = call(&hub, "GET", &path, &admin, None).await;
        assert_eq!(status, 404, "{name}={value}: {body}");
        assert_eq!(body, error(404, "Not Found"));
    }
    let (status, body) = send(
        &hub,
        "GET",
        "/authorizations/cookie/jupyterhub-hub-login",
        Some(&admin),
        &[],
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, error(404, "Not Found"))
    );

    // Token-authenticated only: no token, a bad token or the login cookie itself is 403.
    let (status, body) = send(&hub, "GET", &path, None, &[], None).await;
    assert_eq!(
        (status, body),
        (StatusCode::FORBIDDEN, error(403, "Forbidden"))
    );
    let (status, body) = call(&hub, "GET", &path, "not-a-real-token", None).await;
    assert_eq!(
        (status, body),
        (StatusCode::FORBIDDEN, error(403, "Forbidden"))
    );
    let r = browser.get(hub.api(&path)).send().await.expect("get");
    assert_eq!(
        r.status(),
        403,
        "a cookie does not authenticate this endpoint"
    );

    // A deleted user has no identity behind the old cookie.
    let (status, _) = call(&hub, "DELETE", "/users/alice", &admin, None).await;
    assert_eq!(status, 204);
    let (status, body) = call(&hub, "GET", &path, &admin, None).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, error(404, "Not Found"))
    );
}

fn as_set(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The scopes upstream's `get_scopes_for(token)` gives each token, computed with upstream's
/// own code for a plain user `alice` and an admin (6.x's scope table, which the hub uses:
/// `servers` includes `start:servers`; otherwise the same as 5.3's).
#[tokio::test]
async fn token_models_list_upstreams_scopes() {
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
    let identify = ["read:users:groups!user=alice", "read:users:name!user=alice"];
    let cases: &[(&str, &str, Vec<&str>, Vec<&str>)] = &[
        (
            "alice",
            alice.as_str(),
            vec!["read:users!user=alice"],
            vec![
                "read:users!user=alice",
                "read:users:activity!user=alice",
                "read:users:groups!user=alice",
                "read:users:name!user=alice",
            ],
        ),
        (
            "alice",
            alice.as_str(),
            vec!["read:servers!user=alice"],
            [&["read:servers!user=alice"][..], &identify].concat(),
        ),
        (
            "alice",
            alice.as_str(),
            vec!["tokens!user=alice"],
            [
                &["read:tokens!user=alice", "tokens!user=alice"][..],
                &identify,
            ]
            .concat(),
        ),
        (
            "alice",
            alice.as_str(),
            vec!["servers!server=alice/"],
            [
                &[
                    "delete:servers!server=alice/",
                    "read:servers!server=alice/",
                    "servers!server=alice/",
                    "start:servers!server=alice/",
                ][..],
                &identify,
            ]
            .concat(),
        ),
        (
            "admin",
            admin.as_str(),
            vec!["read:users"],
            vec![
                "read:users",
                "read:users:activity",
                "read:users:groups",
                "read:users:name",
            ],
        ),
        (
            "admin",
            admin.as_str(),
            vec!["users"],
            vec![
                "list:users",
                "read:users",
                "read:users:activity",
                "read:users:groups",
                "read:users:name",
                "users",
                "users:activity",
            ],
        ),
    ];
    for (owner, token, requested, expected) in cases {
        let (status, created) = call(
            &hub,
            "POST",
            &format!("/users/{owner}/tokens"),
            token,
            Some(json!({"scopes": requested})),
        )
        .await;
        assert_eq!(status, 201, "{requested:?}: {created}");
        assert_eq!(as_set(&created["scopes"]), set(expected), "{requested:?}");
        // The same list when read back, and the same scopes a request with it is given.
        let id = created["id"].as_str().expect("id");
        let (_, read) = call(
            &hub,
            "GET",
            &format!("/users/{owner}/tokens/{id}"),
            token,
            None,
        )
        .await;
        assert_eq!(read["scopes"], created["scopes"], "{requested:?}");
        let new_token = created["token"].as_str().expect("token");
        let (status, me) = call(&hub, "GET", "/user", new_token, None).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(as_set(&me["scopes"]), set(expected), "{requested:?}");
    }
    // inherit (the default): exactly the owner's scopes.
    let (status, created) = call(&hub, "POST", "/users/alice/tokens", &alice, None).await;
    assert_eq!(status, 201, "{created}");
    let owner: Vec<String> = [
        "access:servers",
        "delete:servers",
        "read:servers",
        "read:shares",
        "read:tokens",
        "read:users",
        "read:users:activity",
        "read:users:groups",
        "read:users:name",
        "read:users:shares",
        "servers",
        "start:servers",
        "tokens",
        "users:activity",
        "users:shares",
    ]
    .iter()
    .map(|s| format!("{s}!user=alice"))
    .collect();
    assert_eq!(
        as_set(&created["scopes"]),
        owner.iter().cloned().collect::<BTreeSet<_>>()
    );
}

#[tokio::test]
async fn token_scopes_beyond_the_owners_are_400() {
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
    // Upstream's messages (its set order varies; the names are compared as sets).
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["admin:users"],
            &[
                "admin:users",
                "users:activity",
                "read:users:name",
                "read:users:groups",
                "read:users:activity",
                "admin:auth_state",
                "read:roles:users",
                "list:users",
                "read:users",
                "users",
                "delete:users",
            ],
        ),
        (
            &["users!user=alice"],
            &["list:users!user=alice", "users!user=alice"],
        ),
        (
            &["read:users", "read:users!user=alice"],
            &[
                "read:users:name",
                "read:users:activity",
                "read:users:groups",
                "read:users",
            ],
        ),
    ];
    for (requested, excess) in cases {
        for token in [&alice, &admin] {
            let (status, body) = call(
                &hub,
                "POST",
                "/users/alice/tokens",
                token,
                Some(json!({"scopes": requested})),
            )
            .await;
            assert_eq!(status, 400, "{requested:?}: {body}");
            assert_eq!(body["status"], 400);
            let message = body["message"].as_str().expect("message");
            let listed = message
                .strip_prefix("Not assigning requested scopes ")
                .and_then(|m| m.strip_suffix(" not held by User alice"))
                .unwrap_or_else(|| panic!("upstream's message: {message}"));
            assert_eq!(
                listed
                    .split(',')
                    .map(str::to_owned)
                    .collect::<BTreeSet<_>>(),
                set(excess),
                "{message}"
            );
        }
    }
    // Within the owner's: created, no matter how it is written.
    for scopes in [
        json!(["read:users!user=alice"]),
        json!(["self"]),
        json!(["inherit"]),
        json!([]),
    ] {
        let (status, body) = call(
            &hub,
            "POST",
            "/users/alice/tokens",
            &alice,
            Some(json!({"scopes": scopes})),
        )
        .await;
        assert_eq!(status, 201, "{scopes}: {body}");
    }
    // Malformed requests stay 400 and never reach the scope check.
    for body in [
        json!({"scopes": "read:users"}),
        json!({"scopes": [1]}),
        json!({"scopes": ["no-such-scope"]}),
    ] {
        let (status, answer) = call(
            &hub,
            "POST",
            "/users/alice/tokens",
            &alice,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
}

#[tokio::test]
async fn shutdown_checks_its_scope_before_the_body() {
    let mut hub = TestHub::start("", "").await;
    let admin = hub.admin_token();
    let alice = hub.token("alice", &[]);
    let missing = "Action is not authorized with current scopes; requires any of [shutdown]";
    for body in [
        None,
        Some("{\"servers\": \"yes\"}"),
        Some("{\"unknown\": 1}"),
        Some("not json"),
    ] {
        let (status, answer) = send(&hub, "POST", "/shutdown", Some(&alice), &[], body).await;
        assert_eq!(status, 403, "{body:?}: {answer}");
        assert_eq!(answer["status"], 403);
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("shutdown"),
            "{message} (upstream: {missing})"
        );
    }
    let (status, answer) = send(&hub, "POST", "/shutdown", None, &[], None).await;
    assert_eq!(status, 403, "{answer}");

    // With the scope, upstream's body checks.
    for (body, message) in [
        ("not json", "Invalid JSON in body of request"),
        (
            "{\"servers\": \"yes\"}",
            "servers must be true or false, got 'yes'",
        ),
        ("{\"proxy\": null}", "proxy must be true or false, got None"),
        (
            "{\"proxy\": [true]}",
            "proxy must be true or false, got [True]",
        ),
        ("{\"servers\": 2}", "servers must be true or false, got 2"),
    ] {
        let (status, answer) = send(&hub, "POST", "/shutdown", Some(&admin), &[], Some(body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer, error(400, message), "{body}");
    }
    // Unknown keys are ignored, as upstream's.
    let (status, answer) = send(
        &hub,
        "POST",
        "/shutdown",
        Some(&admin),
        &[],
        Some("{\"proxy\": false, \"servers\": false, \"extra\": 1}"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, json!({"message": "Shutting down Hub"}));
    hub.exited(Duration::from_secs(10)).await;
}

/// A stub server that ignores SIGTERM (the ignored disposition survives `exec`), so a stop
/// lasts the local spawner's grace before SIGKILL.
fn slow_stopping_spawner() -> String {
    let stub = stub_spawner_config();
    let script = stub
        .split('"')
        .find(|s| s.ends_with("stub_singleuser.py"))
        .expect("the stub's path")
        .to_owned();
    format!(
        "[Spawner]\ncmd = [\"/bin/sh\", \"-c\", \"trap '' TERM; exec /usr/bin/python3 {script}\"]\n\
         http_timeout = 20\nstart_timeout = 20\n"
    )
}

#[tokio::test]
async fn removing_a_stopping_named_server_is_accepted() {
    let hub = TestHub::start(
        "allow_named_servers = true\nslow_stop_timeout = 0.2",
        &slow_stopping_spawner(),
    )
    .await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let server = format!("/users/{user}/servers/nb1");
    let (status, body) = call(&hub, "POST", &server, &admin, None).await;
    assert!(status == 201 || status == 202, "{status} {body}");
    wait_ready(&hub, &admin, &user, "nb1").await;

    let (status, body) = call(&hub, "DELETE", &server, &admin, None).await;
    assert_eq!(
        status, 202,
        "still stopping after slow_stop_timeout: {body}"
    );
    for _ in 0..2 {
        let (status, body) = call(
            &hub,
            "DELETE",
            &server,
            &admin,
            Some(json!({"remove": true})),
        )
        .await;
        assert_eq!(status, 202, "remove while stopping: {body}\n{}", hub.log());
        assert_eq!(body, Value::Null);
    }
    let (status, model) = call(&hub, "GET", &server, &admin, None).await;
    assert_eq!(status, 200, "kept until the stop is done: {model}");
    // Once the stop is done (SIGKILL after the grace), the record is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, model) = call(&hub, "GET", &server, &admin, None).await;
        if status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not removed: {status} {model}\n{}",
            hub.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, model) = call(&hub, "GET", &format!("/users/{user}"), &admin, None).await;
    assert!(model["servers"].get("nb1").is_none(), "{model}");
    let (_, routes) = call(&hub, "GET", "/proxy", &admin, None).await;
    assert!(
        routes.get(format!("/user/{user}/nb1/")).is_none(),
        "{routes}"
    );

    // A stopped server is removed at once (204); a missing one is 404; the default server
    // is never removed, as upstream.
    let (status, _) = call(
        &hub,
        "POST",
        &format!("/users/{user}/servers/nb2"),
        &admin,
        None,
    )
    .await;
    assert!(status == 201 || status == 202);
    wait_ready(&hub, &admin, &user, "nb2").await;
    let nb2 = format!("/users/{user}/servers/nb2");
    let (status, _) = call(&hub, "DELETE", &nb2, &admin, None).await;
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, model) = call(&hub, "GET", &nb2, &admin, None).await;
        if model["ready"] == false && model["pending"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "nb2 never stopped: {model}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = call(&hub, "DELETE", &nb2, &admin, Some(json!({"remove": true}))).await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = call(&hub, "GET", &nb2, &admin, None).await;
    assert_eq!(status, 404);
    let (status, body) = call(&hub, "DELETE", &nb2, &admin, Some(json!({"remove": true}))).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(
        &hub,
        "DELETE",
        &format!("/users/{user}/server"),
        &admin,
        Some(json!({"remove": true})),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            error(400, "Cannot delete the default server")
        )
    );
    // Without a scope for the server, the scope check comes first.
    let alice = hub.token("alice", &[]);
    let (status, _) = call(
        &hub,
        "DELETE",
        &server,
        &alice,
        Some(json!({"remove": true})),
    )
    .await;
    assert_eq!(status, 404, "filtered away from alice: upstream's 404");
}
