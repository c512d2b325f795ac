//! The OAuth2 provider, driven as HubOAuth clients drive it (contract §1.6).

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{TestHub, login};

const SERVICE: &str = "[[JupyterHub.services]]\nname = \"grader\"\nurl = \"http://127.0.0.1:1\"\napi_token = \"grader-secret-token\"\noauth_no_confirm = true\n[[JupyterHub.load_roles]]\nname = \"grader-users\"\nscopes = [\"access:services!service=grader\"]\nusers = [\"alice\"]\n";

fn authorize_url(hub: &TestHub, extra: &str) -> String {
    format!(
        "{}/hub/api/oauth2/authorize?client_id=service-grader&redirect_uri=%2Fservices%2Fgrader%2Foauth_callback&response_type=code&state=xyz{extra}",
        hub.url
    )
}

fn code_from(location: &str) -> String {
    let query = location.split_once('?').expect("query").1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "code")
        .expect("code")
        .1
        .into_owned()
}

#[tokio::test]
async fn authorization_code_flow_with_pkce() {
    let hub = TestHub::start(SERVICE, "").await;
    // Not logged in: sent to the login page with the authorize URL as next.
    let anonymous = crate::support::browser();
    let r = anonymous
        .get(authorize_url(&hub, ""))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(
        r.headers()["location"]
            .to_str()
            .expect("loc")
            .starts_with("/hub/login?next=%2Fhub%2Fapi%2Foauth2%2Fauthorize")
    );

    let (browser, _) = login(&hub, "alice", "x").await;
    let verifier = "dBjftJeZ4CVP-mJ92K9qbcWFFzAmpbMHQ9-CvnoYqQk";
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
    let r = browser
        .get(authorize_url(
            &hub,
            &format!("&code_challenge={challenge}&code_challenge_method=S256"),
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = r.headers()["location"].to_str().expect("loc").to_owned();
    assert!(
        location.starts_with("/services/grader/oauth_callback?code="),
        "{location}"
    );
    assert!(
        location.ends_with("&state=xyz"),
        "state round trip: {location}"
    );
    let code = code_from(&location);
    assert_eq!(code.len(), 30);

    let client = reqwest::Client::new();
    let token_url = format!("{}/hub/api/oauth2/token", hub.url);
    let form = |code: &str, secret: &str, verifier: Option<&str>| {
        let mut form = vec![
            ("client_id".to_string(), "service-grader".to_string()),
            ("client_secret".to_string(), secret.to_string()),
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".to_string(), code.to_string()),
            (
                "redirect_uri".to_string(),
                "/services/grader/oauth_callback".to_string(),
            ),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier".to_string(), v.to_string()));
        }
        form
    };
    let r = client
        .post(&token_url)
        .form(&form(&code, "wrong-secret", Some(verifier)))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_client"
    );
    let r = client
        .post(&token_url)
        .form(&form(&code, "grader-secret-token", None))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "verifier required");
    // The failed attempt consumed the code (single use); start again.
    let r = browser
        .get(authorize_url(
            &hub,
            &format!("&code_challenge={challenge}&code_challenge_method=S256"),
        ))
        .send()
        .await
        .expect("get");
    let code = code_from(r.headers()["location"].to_str().expect("loc"));
    let r = client
        .post(&token_url)
        .form(&form(&code, "grader-secret-token", Some(verifier)))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1_209_600);
    let access = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(access.len(), 30);
    let r = client
        .post(&token_url)
        .form(&form(&code, "grader-secret-token", Some(verifier)))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "codes are single-use");
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );

    let me: Value = client
        .get(hub.api("/user"))
        .header("Authorization", format!("Bearer {access}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(me["name"], "alice");
    assert!(
        me["session_id"].is_string(),
        "OAuth tokens carry the browser session: {me}"
    );
    let scopes: Vec<&str> = me["scopes"]
        .as_array()
        .expect("scopes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        scopes.contains(&"access:services!service=grader"),
        "{scopes:?}"
    );
    assert!(scopes.contains(&"read:users:name!user=alice"), "{scopes:?}");

    // Logout revokes tokens issued to that browser session.
    browser
        .get(format!("{}/hub/logout", hub.url))
        .send()
        .await
        .expect("logout");
    let r = client
        .get(hub.api("/user"))
        .header("Authorization", format!("Bearer {access}"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn users_without_access_scope_are_refused() {
    let hub = TestHub::start(SERVICE, "").await;
    let (browser, _) = login(&hub, "bob", "x").await;
    let r = browser
        .get(authorize_url(&hub, ""))
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "bob holds no access:services"
    );
}

#[tokio::test]
async fn bad_client_or_redirect_is_a_400_page() {
    let hub = TestHub::start(SERVICE, "").await;
    let (browser, _) = login(&hub, "alice", "x").await;
    let r = browser
        .get(format!(
            "{}/hub/api/oauth2/authorize?client_id=nope&redirect_uri=/x&response_type=code&state=s",
            hub.url
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = browser
        .get(format!("{}/hub/api/oauth2/authorize?client_id=service-grader&redirect_uri=https%3A%2F%2Fevil.com%2F&response_type=code", hub.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = reqwest::Client::new()
        .post(format!("{}/hub/api/oauth2/token", hub.url))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}
