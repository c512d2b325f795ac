//! `/hub/api/services`: upstream's service model, filtered by the caller's scopes, and the
//! services created and deleted at runtime (`POST`/`DELETE /services/NAME`).

use serde_json::{Value, json};

use crate::support::{TestHub, call};

const SERVICES: &str = r#"
[[JupyterHub.services]]
name = "culler"
api_token = "culler-secret-token"

[[JupyterHub.services]]
name = "grader"
url = "http://127.0.0.1:10101"
admin = true
info = { course = "physics" }

[[JupyterHub.load_roles]]
name = "culler-role"
scopes = ["list:users"]
services = ["culler"]
"#;

#[tokio::test]
async fn service_models_show_roles_and_only_what_the_scopes_allow() {
    let hub = TestHub::start(SERVICES, "").await;
    let admin = hub.admin_token();
    let (status, services) = call(&hub, "GET", "/services", &admin, None).await;
    assert_eq!(status, 200, "{services}");
    // As observed on a live upstream hub for the same config.
    assert_eq!(
        services["culler"],
        json!({"info": {}, "name": "culler", "command": [], "kind": "service", "admin": false,
               "pid": 0, "prefix": "", "roles": ["culler-role"], "url": "", "display": true})
    );
    assert_eq!(services["grader"]["roles"], json!(["admin"]));
    assert_eq!(services["grader"]["prefix"], "/services/grader/");
    assert_eq!(services["grader"]["info"], json!({"course": "physics"}));

    let (status, one) = call(&hub, "GET", "/services/culler", &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(one, services["culler"]);
    let (status, body) = call(&hub, "GET", "/services/nope", &admin, None).await;
    assert_eq!(status, 404, "{body}");

    // read:roles:services shows the roles and nothing else of the model.
    let roles_only = hub.token("admin", &["read:roles:services"]);
    let (status, one) = call(&hub, "GET", "/services/culler", &roles_only, None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        one,
        json!({"kind": "service", "name": "culler", "admin": false, "roles": ["culler-role"]})
    );
    // read:services:name (through list:services) shows the name only.
    let names = hub.token("admin", &["list:services"]);
    let (status, listed) = call(&hub, "GET", "/services", &names, None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["grader"],
        json!({"kind": "service", "name": "grader", "admin": true})
    );
    // A plain user holds none of the service scopes.
    let alice = hub.token("alice", &[]);
    let (status, _) = call(&hub, "GET", "/services/culler", &alice, None).await;
    assert_eq!(status, 403);
}

/// A tiny HTTP backend standing in for an external service: every request gets 200 and
/// `body` (keep-alive, as the proxy reuses its upstream connections). Returns its URL.
async fn backend(body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // Requests here have no body: a head ends at the blank line.
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        buffer.drain(..end + 4);
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if socket.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    url
}

/// `GET {hub}/services/NAME/` through the hub's public port (the proxy): status and body.
async fn through_proxy(hub: &TestHub, name: &str) -> (reqwest::StatusCode, String) {
    let response = crate::support::browser()
        .get(format!("{}/services/{name}/", hub.url))
        .send()
        .await
        .expect("proxied request");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

/// Who a token is, as `GET /hub/api/user` says: `(status, kind, name)`.
async fn whoami(hub: &TestHub, token: &str) -> (reqwest::StatusCode, Value) {
    call(hub, "GET", "/user", token, None).await
}

const RUNTIME: &str = r#"
[[JupyterHub.services]]
name = "culler"
api_token = "culler-secret-token"

[[JupyterHub.load_roles]]
name = "service-manager"
scopes = ["admin:services"]
users = ["manager"]

[[JupyterHub.load_roles]]
name = "service-users"
scopes = ["access:services"]
users = ["alice"]
"#;

#[tokio::test]
async fn runtime_service_is_created_routed_authenticated_kept_and_deleted() {
    let mut hub = TestHub::start(RUNTIME, "").await;
    let admin = hub.admin_token();
    let url = backend("hello from the runtime service").await;
    let token = "runtime-service-token";

    let (status, model) = call(
        &hub,
        "POST",
        "/services/runtime",
        &admin,
        Some(
            json!({"url": url, "api_token": token, "info": {"owner": "ops", "n": 1},
                    "oauth_no_confirm": true}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{model}");
    assert_eq!(
        model,
        json!({"kind": "service", "name": "runtime", "admin": false, "url": url,
               "prefix": "/services/runtime/", "command": [], "pid": 0,
               "info": {"owner": "ops", "n": 1}, "display": true, "roles": []})
    );
    // The model is the one GET shows, in the listing too.
    let (status, one) = call(&hub, "GET", "/services/runtime", &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(one, model);
    let (_, listed) = call(&hub, "GET", "/services", &admin, None).await;
    assert_eq!(listed["runtime"], model);
    assert!(
        listed["culler"].is_object(),
        "config services stay: {listed}"
    );

    // Routed through the proxy, and its token is the service's.
    assert_eq!(
        through_proxy(&hub, "runtime").await,
        (
            reqwest::StatusCode::OK,
            "hello from the runtime service".into()
        )
    );
    let (_, routes) = call(&hub, "GET", "/proxy", &admin, None).await;
    assert_eq!(
        routes["/services/runtime/"]["data"]["service"], "runtime",
        "{routes}"
    );
    let (status, me) = whoami(&hub, token).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (&me["kind"], &me["name"]),
        (&json!("service"), &json!("runtime"))
    );

    // Its OAuth client takes the token as secret and skips the confirmation page
    // (oauth_no_confirm read from the runtime spec).
    let (browser, _) = crate::support::login(&hub, "alice", "x").await;
    let authorize = format!(
        "{}/hub/api/oauth2/authorize?client_id=service-runtime&redirect_uri=%2Fservices%2Fruntime%2Foauth_callback&response_type=code&state=s",
        hub.url
    );
    let r = browser.get(&authorize).send().await.expect("authorize");
    assert_eq!(r.status(), reqwest::StatusCode::FOUND, "{}", hub.log());
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        location.starts_with("/services/runtime/oauth_callback?code="),
        "{location}"
    );
    let code = form_urlencoded::parse(location.split_once('?').expect("query").1.as_bytes())
        .find(|(k, _)| k == "code")
        .expect("code")
        .1
        .into_owned();
    let r = reqwest::Client::new()
        .post(format!("{}/hub/api/oauth2/token", hub.url))
        .form(&[
            ("client_id", "service-runtime"),
            ("client_secret", token),
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "/services/runtime/oauth_callback"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let access: Value = r.json().await.expect("json");
    let access = access["access_token"].as_str().expect("access").to_owned();
    assert_eq!(whoami(&hub, &access).await.0, 200);

    // A second POST of the same name conflicts, whatever its body.
    let (status, body) = call(&hub, "POST", "/services/runtime", &admin, Some(json!({}))).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["message"], "Service runtime already exists");
    let (status, _) = call(
        &hub,
        "POST",
        "/services/culler",
        &admin,
        Some(json!({"url": url})),
    )
    .await;
    assert_eq!(status, 409, "a config service's name is taken too");

    // Kept across a restart: model, route and token.
    hub.restart().await;
    let (status, again) = call(&hub, "GET", "/services/runtime", &admin, None).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, model);
    assert_eq!(through_proxy(&hub, "runtime").await.0, 200);
    assert_eq!(whoami(&hub, token).await.0, 200);

    // DELETE removes it with its route, its token and what its OAuth client issued.
    let (status, body) = call(&hub, "DELETE", "/services/runtime", &admin, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(&hub, "GET", "/services/runtime", &admin, None).await;
    assert_eq!(status, 404);
    let (status, body) = through_proxy(&hub, "runtime").await;
    assert!(
        !body.contains("hello from the runtime service"),
        "route still there: {status} {body}"
    );
    let (_, routes) = call(&hub, "GET", "/proxy", &admin, None).await;
    assert!(routes.get("/services/runtime/").is_none(), "{routes}");
    assert_eq!(whoami(&hub, token).await.0, 403);
    assert_eq!(whoami(&hub, &access).await.0, 403);
    let r = browser.get(&authorize).send().await.expect("authorize");
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST, "client gone");
    hub.restart().await;
    let (status, _) = call(&hub, "GET", "/services/runtime", &admin, None).await;
    assert_eq!(status, 404, "still gone after a restart");
    // The name is free again.
    let (status, body) = call(
        &hub,
        "POST",
        "/services/runtime",
        &admin,
        Some(json!({"display": false})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["display"], false);
    assert_eq!(body["prefix"], "");
}

#[tokio::test]
async fn runtime_service_requests_are_checked() {
    let hub = TestHub::start(RUNTIME, "").await;
    let admin = hub.admin_token();
    let post = |name: &'static str, body: Value| {
        let (hub, admin) = (&hub, admin.clone());
        async move {
            call(
                hub,
                "POST",
                &format!("/services/{name}"),
                &admin,
                Some(body),
            )
            .await
        }
    };
    let refused = |(status, body): (reqwest::StatusCode, Value), want: u16, text: &str| {
        assert_eq!(status, want, "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(text), "{message:?} lacks {text:?}");
    };

    refused(
        post("m", json!({"command": ["python3", "-m", "http.server"]})).await,
        400,
        "Can not create managed service m at runtime",
    );
    refused(
        post("m", json!({"cwd": "/tmp"})).await,
        400,
        "Can not create managed service m",
    );
    refused(
        post("m", json!({"frobnicate": true})).await,
        400,
        "frobnicate",
    );
    refused(
        post("m", json!({"admin": "yes"})).await,
        400,
        "service.admin must be boolean",
    );
    refused(post("m", json!({"name": "other"})).await, 400, "other");
    refused(post("m", json!([])).await, 400, "Invalid service data");
    refused(post("m", Value::Null).await, 400, "Invalid service data");
    refused(
        post("-bad", json!({"display": true})).await,
        400,
        "Invalid service name",
    );
    refused(
        post("has.a%20space", json!({"display": true})).await,
        400,
        "Invalid service name",
    );
    refused(
        post("m", json!({"url": "ftp://127.0.0.1/"})).await,
        400,
        "Must be http[s]",
    );
    refused(
        post(
            "m",
            json!({"url": "http://127.0.0.1:1", "oauth_client_id": "mine"}),
        )
        .await,
        400,
        "must start with 'service-'",
    );
    refused(
        post("m", json!({"oauth_client_id": "service-m"})).await,
        400,
        "missing required oauth_redirect_uri",
    );
    refused(
        post("m", json!({"api_token": "culler-secret-token"})).await,
        400,
        "already in use",
    );
    refused(
        post("m", json!({"api_token": "short"})).await,
        400,
        "at least 8",
    );
    refused(
        post(
            "m",
            json!({"oauth_client_allowed_scopes": ["no-such-scope"]}),
        )
        .await,
        400,
        "no-such-scope",
    );
    // Malformed JSON is a 400 too, never a panic.
    let r = reqwest::Client::new()
        .post(hub.api("/services/m"))
        .header("Authorization", format!("token {admin}"))
        .body("{\"url\": ")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    // Nothing of the refused requests was created.
    let (status, _) = call(&hub, "GET", "/services/m", &admin, None).await;
    assert_eq!(status, 404);

    // Without admin:services: 403.
    let alice = hub.token("alice", &[]);
    let (status, body) = call(
        &hub,
        "POST",
        "/services/m",
        &alice,
        Some(json!({"display": true})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = call(&hub, "DELETE", "/services/culler", &alice, None).await;
    assert_eq!(status, 403);

    // A requester with admin:services alone may not hand a service more than it holds.
    let manager = hub.token("manager", &[]);
    refused(
        call(
            &hub,
            "POST",
            "/services/m",
            &manager,
            Some(json!({"oauth_client_allowed_scopes": ["read:users"]})),
        )
        .await,
        400,
        // Listed expanded, as upstream (read:users and its subscopes).
        "Not assigning requested scopes read:users,",
    );
    refused(
        call(
            &hub,
            "POST",
            "/services/m",
            &manager,
            Some(json!({"admin": true})),
        )
        .await,
        400,
        "Not assigning requested scopes",
    );
    // … nor may a token restricted to admin:services, whatever its owner holds.
    let narrow = hub.token("admin", &["admin:services"]);
    refused(
        call(
            &hub,
            "POST",
            "/services/m",
            &narrow,
            Some(json!({"admin": true})),
        )
        .await,
        400,
        "not held by User admin",
    );
    // What it holds it may give: here nothing beyond the service's own access.
    let (status, body) = call(
        &hub,
        "POST",
        "/services/m",
        &manager,
        Some(json!({"oauth_client_allowed_scopes": []})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // The admin may make an admin service, which holds the admin role.
    let (status, body) = call(
        &hub,
        "POST",
        "/services/boss",
        &admin,
        Some(json!({"admin": true, "api_token": "boss-service-token"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["admin"], true);
    assert_eq!(body["roles"], json!(["admin"]));
    let (status, users) = call(&hub, "GET", "/users", "boss-service-token", None).await;
    assert_eq!(status, 200, "an admin service reads users: {users}");

    // DELETE: config services are the config's (405), unknown ones 404.
    let (status, body) = call(&hub, "DELETE", "/services/culler", &admin, None).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(
        body["message"],
        "Service culler is not modifiable at runtime"
    );
    let (status, body) = call(&hub, "DELETE", "/services/nope", &admin, None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["message"], "Service nope does not exist");
    assert_eq!(whoami(&hub, "culler-secret-token").await.0, 200);
    let (status, _) = call(&hub, "DELETE", "/services/m", &manager, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn startup_sync_deletes_gone_config_services_and_keeps_runtime_ones() {
    let mut hub = TestHub::start(RUNTIME, "").await;
    let admin = hub.admin_token();
    let (status, body) = call(
        &hub,
        "POST",
        "/services/late",
        &admin,
        Some(json!({"api_token": "late-runtime-token", "info": {"kind": "runtime"}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // The next config drops `culler` and declares `late`, the runtime service's name.
    let text = std::fs::read_to_string(&hub.config).expect("config");
    let text = text.replace(
        "name = \"culler\"\napi_token = \"culler-secret-token\"",
        "name = \"late\"\napi_token = \"late-config-token\"\nurl = \"http://127.0.0.1:1\"",
    );
    std::fs::write(&hub.config, text).expect("write config");
    hub.restart().await;

    let (status, _) = call(&hub, "GET", "/services/culler", &admin, None).await;
    assert_eq!(
        status, 404,
        "a config service gone from the config is deleted"
    );
    assert_eq!(whoami(&hub, "culler-secret-token").await.0, 403);
    // The config entry naming the runtime service is logged and ignored.
    let (status, late) = call(&hub, "GET", "/services/late", &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(late["info"], json!({"kind": "runtime"}));
    assert_eq!(late["url"], "");
    assert_eq!(whoami(&hub, "late-runtime-token").await.0, 200);
    assert_eq!(whoami(&hub, "late-config-token").await.0, 403);
    assert!(
        hub.log().contains("would modify a runtime-created service"),
        "{}",
        hub.log()
    );
    // Still a runtime service: deletable.
    let (status, _) = call(&hub, "DELETE", "/services/late", &admin, None).await;
    assert_eq!(status, 200);
}
