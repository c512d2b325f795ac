//! Login through an OAuth 2.0 provider (`generic-oauth`): a small provider in the test checks
//! what the hub sends (Basic client credentials, the code, the PKCE verifier against the
//! challenge of the redirect) and answers with tokens and userinfo. The login page's button,
//! `auto_login`, the state cookie, groups and admin from a claim, auth_state, and the error
//! pages of a forged state, a provider's refusal and a failed exchange; auth_state fields in
//! a server's environment (`auth_state_env`).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest;

use crate::support::{TestHub, browser, call, server_user, stub_spawner_config, wait_ready};

/// An admin service's token: services have no provider login to refresh.
const SERVICE_TOKEN: &str = "reader-service-token-0123456789";
const CRYPT_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[derive(Default)]
struct Seen {
    challenge: Option<String>,
    verifier_ok: bool,
}

/// The provider: `/token` and `/userinfo`; returns its base URL.
async fn provider(seen: Arc<Mutex<Seen>>) -> String {
    async fn token(
        State(seen): State<Arc<Mutex<Seen>>>,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, axum::Json<Value>) {
        let form: std::collections::HashMap<String, String> =
            form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("hub-client:hub-secret")
        );
        let auth_ok = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&basic);
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let mut seen = seen.lock().expect("lock");
        seen.verifier_ok = seen.challenge.as_deref() == Some(challenge.as_str());
        if !auth_ok || !seen.verifier_ok || form.get("code").map(String::as_str) != Some("good") {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "invalid_grant", "error_description": "bad code"})),
            );
        }
        (
            StatusCode::OK,
            axum::Json(json!({"access_token": "at-1", "refresh_token": "rt-1",
                "token_type": "Bearer", "expires_in": 3600})),
        )
    }
    async fn userinfo(headers: HeaderMap) -> (StatusCode, axum::Json<Value>) {
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer at-1") {
            return (StatusCode::UNAUTHORIZED, axum::Json(json!({})));
        }
        (
            StatusCode::OK,
            axum::Json(json!({"login": "Bob", "org": {"teams": ["staff", "x"]}})),
        )
    }
    let app = axum::Router::new()
        .route("/token", post(token))
        .route("/userinfo", get(userinfo))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn start(extra: &str) -> (TestHub, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let idp = provider(Arc::clone(&seen)).await;
    let hub = TestHub::start_with_env(
        &format!(
            "authenticator_class = \"generic-oauth\"\n[[JupyterHub.services]]\n\
             name = \"reader\"\napi_token = \"{SERVICE_TOKEN}\"\nadmin = true\n"
        ),
        &format!(
            "enable_auth_state = true\n{extra}\n[GenericOAuthenticator]\n\
             client_id = \"hub-client\"\nclient_secret = \"hub-secret\"\n\
             oauth_callback_url = \"http://hub.test/hub/oauth_callback\"\n\
             authorize_url = \"{idp}/authorize\"\ntoken_url = \"{idp}/token\"\n\
             userdata_url = \"{idp}/userinfo\"\nscope = [\"read\"]\nusername_claim = \"login\"\n\
             login_service = \"Test IdP\"\nauth_state_groups_key = \"oauth_user.org.teams\"\n\
             allowed_groups = [\"staff\"]\nmanage_groups = true\n"
        ),
        &[("JUPYTERHUB_CRYPT_KEY", CRYPT_KEY)],
    )
    .await;
    (hub, seen)
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn login_through_the_provider() {
    let (hub, seen) = start("").await;
    let client = browser();
    let page = client
        .get(format!("{}/hub/login?next=/hub/token", hub.url))
        .send()
        .await
        .expect("login page");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("body");
    assert!(html.contains("Sign in with Test IdP"), "{html}");
    assert!(
        html.contains("/hub/oauth_login?next=%2Fhub%2Ftoken"),
        "{html}"
    );
    assert!(!html.contains("password_input"), "no form");

    let redirect = client
        .get(format!("{}/hub/oauth_login?next=%2Fhub%2Ftoken", hub.url))
        .send()
        .await
        .expect("oauth_login");
    assert_eq!(redirect.status(), StatusCode::FOUND);
    let cookie = redirect
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(cookie.starts_with("oauthenticator-state="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let location = redirect.headers()["location"].to_str().expect("location");
    assert!(location.contains("/authorize?"), "{location}");
    assert_eq!(
        query_param(location, "client_id").as_deref(),
        Some("hub-client")
    );
    assert_eq!(
        query_param(location, "response_type").as_deref(),
        Some("code")
    );
    assert_eq!(
        query_param(location, "redirect_uri").as_deref(),
        Some("http://hub.test/hub/oauth_callback")
    );
    assert_eq!(
        query_param(location, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let state = query_param(location, "state").expect("state");
    seen.lock().expect("lock").challenge = query_param(location, "code_challenge");

    // Another browser (no state cookie) with the right state is refused, as is a wrong state.
    let other = browser()
        .get(format!(
            "{}/hub/oauth_callback?code=good&state={state}",
            hub.url
        ))
        .send()
        .await
        .expect("callback");
    assert_eq!(other.status(), StatusCode::BAD_REQUEST);
    assert!(
        other
            .text()
            .await
            .expect("body")
            .contains("OAuth state missing or mismatched")
    );
    let wrong = client
        .get(format!(
            "{}/hub/oauth_callback?code=good&state=forged",
            hub.url
        ))
        .send()
        .await
        .expect("callback");
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);

    let done = client
        .get(format!(
            "{}/hub/oauth_callback?code=good&state={state}",
            hub.url
        ))
        .send()
        .await
        .expect("callback");
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    assert_eq!(done.headers()["location"], "/hub/token");
    assert!(
        seen.lock().expect("lock").verifier_ok,
        "PKCE verifier matched"
    );
    // The browser is logged in: a page that needs a login renders for bob.
    let home = client
        .get(format!("{}/hub/home", hub.url))
        .send()
        .await
        .expect("home");
    assert_eq!(home.status(), StatusCode::OK);
    assert!(home.text().await.expect("body").contains("bob"));

    // As upstream: a user with no provider login (the config's admin) has no auth_state to
    // refresh, so once a refresh is due (always, for a login this hub never saw) the token
    // counts as logged out. A service's token is not refreshed.
    let (status, _) = call(&hub, "GET", "/users/bob", &hub.admin_token(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        hub.log().contains("no auth_state to refresh"),
        "{}",
        hub.log()
    );
    let (status, bob) = call(&hub, "GET", "/users/bob", SERVICE_TOKEN, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bob["groups"], json!(["staff", "x"]), "manage_groups");
    assert_eq!(bob["admin"], false);
    let state = &bob["auth_state"];
    assert_eq!(state["access_token"], "at-1", "{bob}");
    assert_eq!(state["refresh_token"], "rt-1");
    assert_eq!(state["token_response"]["expires_in"], 3600);
    assert_eq!(state["oauth_user"]["login"], "Bob");
}

#[tokio::test]
async fn refusals_are_pages_that_say_why() {
    let (hub, seen) = start("auto_login = true").await;
    let client = browser();
    // auto_login: the login page sends the browser on at once.
    let login = client
        .get(format!("{}/hub/login?next=/hub/home", hub.url))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::FOUND);
    assert_eq!(
        login.headers()["location"],
        "/hub/oauth_login?next=%2Fhub%2Fhome"
    );

    let denied = client
        .get(format!(
            "{}/hub/oauth_callback?error=access_denied&error_description=no+thanks",
            hub.url
        ))
        .send()
        .await
        .expect("callback");
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert!(
        denied
            .text()
            .await
            .expect("body")
            .contains("access_denied no thanks")
    );

    // The provider refuses the exchange (wrong verifier: the challenge is not recorded).
    let redirect = client
        .get(format!("{}/hub/oauth_login", hub.url))
        .send()
        .await
        .expect("oauth_login");
    let state = query_param(
        redirect.headers()["location"].to_str().expect("loc"),
        "state",
    )
    .expect("state");
    seen.lock().expect("lock").challenge = Some("something else".into());
    let failed = client
        .get(format!(
            "{}/hub/oauth_callback?code=good&state={state}",
            hub.url
        ))
        .send()
        .await
        .expect("callback");
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    let page = failed.text().await.expect("body");
    assert!(
        page.contains("Token exchange with the identity provider failed"),
        "{page}"
    );
    assert!(page.contains("invalid_grant: bad code"), "{page}");
}

/// Log `client` in through the provider (the code flow `login_through_the_provider` checks
/// step by step).
async fn provider_login(hub: &TestHub, seen: &Arc<Mutex<Seen>>, client: &reqwest::Client) {
    let redirect = client
        .get(format!("{}/hub/oauth_login", hub.url))
        .send()
        .await
        .expect("oauth_login");
    let location = redirect.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    seen.lock().expect("lock").challenge = query_param(&location, "code_challenge");
    let state = query_param(&location, "state").expect("state");
    let done = client
        .get(format!(
            "{}/hub/oauth_callback?code=good&state={state}",
            hub.url
        ))
        .send()
        .await
        .expect("callback");
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
}

#[tokio::test]
async fn auth_state_reaches_the_server_environment() {
    // The provider's "Bob" runs servers as the test's system user.
    let system_user = server_user();
    let extra = format!(
        "username_map = {{ bob = \"{system_user}\" }}\n{}\
         auth_state_env = {{ AUTH_STATE_LOGIN = \"oauth_user.login\", \
         AUTH_STATE_TEAMS = \"oauth_user.org.teams\", AUTH_STATE_ACCESS = \"access_token\", \
         AUTH_STATE_MISSING = \"no.such.key\" }}\n",
        stub_spawner_config()
    );
    let (hub, seen) = start(&extra).await;
    provider_login(&hub, &seen, &browser()).await;
    let path = format!("/users/{system_user}/server");
    let (status, body) = call(&hub, "POST", &path, SERVICE_TOKEN, None).await;
    assert!(status.is_success(), "{status} {body}\n{}", hub.log());
    wait_ready(&hub, SERVICE_TOKEN, &system_user, "").await;
    let env: Value = reqwest::get(format!("{}/user/{system_user}/env", hub.url))
        .await
        .expect("env")
        .json()
        .await
        .expect("json");
    assert_eq!(env["AUTH_STATE_LOGIN"], "Bob", "{env}");
    assert_eq!(
        env["AUTH_STATE_TEAMS"], r#"["staff","x"]"#,
        "non-strings as JSON"
    );
    assert_eq!(env["AUTH_STATE_ACCESS"], "at-1");
    assert!(env.get("AUTH_STATE_MISSING").is_none(), "{env}");
    let (status, _) = call(&hub, "DELETE", &path, SERVICE_TOKEN, None).await;
    assert!(status.is_success());
}
