//! OAuthenticator's provider classes (`github`, `google`, `azuread`), each logging in through
//! the running hub against a stand-in of the provider served by the test (github.com, Google
//! and Microsoft are not reachable from tests): GitHub Enterprise-style `github_url` with its
//! org and team membership endpoints, Google's userinfo with `hd` and `verified_email`, and
//! an Azure AD tenant's discovery document, JWKS and ID tokens signed with a test key; for
//! Google groups, the service account's JWT grant (its signature checked with the public
//! half of a key pair openssl makes) and the Directory API's `groups.list`.
//! The code of the callback names the stand-in's user.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{BIN, TestHub, browser, call};

const SERVICE_TOKEN: &str = "reader-service-token-0123456789";
const CRYPT_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const TENANT_GUID: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
// The RSA test key the unit tests sign with, and its public JWK (kid "k1").
const TEST_KEY_DER: &[u8] = include_bytes!("../../src/auth/oauth2_test_key.der");
const TEST_JWK: &str = include_str!("../../src/auth/oauth2_test_jwk.json");

fn form(body: &str) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

/// The bearer token's user, for tokens the stand-in issued as `PREFIX-USER`.
fn bearer_user(headers: &HeaderMap, prefix: &str) -> Option<String> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix(&format!("Bearer {prefix}-"))
        .map(str::to_owned)
}

/// The code exchange every stand-in shares: client credentials in the form (upstream's
/// `basic_auth = False`), the code is the user.
fn exchange(body: &str, prefix: &str) -> (StatusCode, axum::Json<Value>) {
    let form = form(body);
    let credentials = form.get("client_id").map(String::as_str) == Some("hub-client")
        && form.get("client_secret").map(String::as_str) == Some("hub-secret")
        && form.get("grant_type").map(String::as_str) == Some("authorization_code");
    match form.get("code") {
        Some(code) if credentials => (
            StatusCode::OK,
            axum::Json(json!({"access_token": format!("{prefix}-{code}"), "token_type": "bearer"})),
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_client"})),
        ),
    }
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// GitHub Enterprise's paths: `/login/oauth/access_token`, and the API under `/api/v3`.
async fn github() -> String {
    async fn token(body: String) -> (StatusCode, axum::Json<Value>) {
        exchange(&body, "gh")
    }
    async fn user(headers: HeaderMap) -> (StatusCode, axum::Json<Value>) {
        match bearer_user(&headers, "gh") {
            Some(login) => {
                let mut profile = json!({"login": login, "id": 7, "email": null});
                // A `groups` list, as upstream's own tests give GitHub's user model.
                let groups = match login.as_str() {
                    "carl" => Some(json!(["gh-staff", "gh-admins"])),
                    "dora" => Some(json!(["gh-guests"])),
                    "olaf" => Some(json!([{"name": "gh-staff"}])),
                    _ => None,
                };
                if let Some(groups) = groups {
                    profile["groups"] = groups;
                }
                (StatusCode::OK, axum::Json(profile))
            }
            None => (StatusCode::UNAUTHORIZED, axum::Json(json!({}))),
        }
    }
    async fn emails(headers: HeaderMap) -> axum::Json<Value> {
        let login = bearer_user(&headers, "gh").unwrap_or_default();
        axum::Json(json!([
            {"email": format!("{login}@old.test"), "primary": false},
            {"email": format!("{login}@corp.test"), "primary": true},
        ]))
    }
    /// GitHub's answers: 204 for a member, 404 (with a message) otherwise; the user's own
    /// token is required.
    fn membership(headers: &HeaderMap, user: &str, member: bool) -> (StatusCode, String) {
        if bearer_user(headers, "gh").as_deref() != Some(user) || !member {
            return (StatusCode::NOT_FOUND, r#"{"message":"Not Found"}"#.into());
        }
        (StatusCode::NO_CONTENT, String::new())
    }
    async fn org_member(
        headers: HeaderMap,
        Path((org, user)): Path<(String, String)>,
    ) -> (StatusCode, String) {
        membership(&headers, &user, org == "ok-org" && user == "Alice")
    }
    async fn team_member(
        headers: HeaderMap,
        Path((org, team, user)): Path<(String, String, String)>,
    ) -> (StatusCode, String) {
        membership(
            &headers,
            &user,
            org == "other-org" && team == "team-a" && user == "bob",
        )
    }
    async fn teams(
        State(base): State<Arc<std::sync::OnceLock<String>>>,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> (HeaderMap, axum::Json<Value>) {
        let mut headers = HeaderMap::new();
        if q.get("page").map(String::as_str) == Some("2") {
            return (headers, axum::Json(json!([{"slug": "team-b"}])));
        }
        let next = format!(
            "<{}/api/v3/user/teams?per_page=100&page=2>; rel=\"next\"",
            base.get().map(String::as_str).unwrap_or_default()
        );
        headers.insert("link", next.parse().expect("header"));
        (headers, axum::Json(json!([{"slug": "team-a"}])))
    }
    let base = Arc::new(std::sync::OnceLock::new());
    let app = axum::Router::new()
        .route("/login/oauth/access_token", post(token))
        .route("/api/v3/user", get(user))
        .route("/api/v3/user/emails", get(emails))
        .route("/api/v3/user/teams", get(teams))
        .route("/api/v3/orgs/{org}/members/{user}", get(org_member))
        .route(
            "/api/v3/orgs/{org}/teams/{team}/members/{user}",
            get(team_member),
        )
        .with_state(Arc::clone(&base));
    let url = serve(app).await;
    base.set(url.clone()).expect("once");
    url
}

/// Google's token endpoint and v1 userinfo, under `google_api_url`.
async fn google() -> String {
    async fn token(body: String) -> (StatusCode, axum::Json<Value>) {
        exchange(&body, "g")
    }
    async fn userinfo(headers: HeaderMap) -> (StatusCode, axum::Json<Value>) {
        let info = match bearer_user(&headers, "g").as_deref() {
            Some("ann") => {
                json!({"email": "Ann@Uni.test", "verified_email": true, "hd": "uni.test"})
            }
            Some("eve") => json!({"email": "eve@gmail.test", "verified_email": true}),
            Some("oz") => {
                json!({"email": "oz@other.test", "verified_email": true, "hd": "other.test"})
            }
            Some("unverified") => {
                json!({"email": "uv@uni.test", "verified_email": false, "hd": "uni.test"})
            }
            _ => return (StatusCode::UNAUTHORIZED, axum::Json(json!({}))),
        };
        (StatusCode::OK, axum::Json(info))
    }
    serve(
        axum::Router::new()
            .route("/oauth2/v4/token", post(token))
            .route("/oauth2/v1/userinfo", get(userinfo)),
    )
    .await
}

/// An Azure AD tenant at `graph_url`: its v2.0 discovery document names the issuer by the
/// tenant's GUID (the config names it by domain), the token endpoint answers with an ID
/// token signed by the JWKS's key.
async fn azure() -> String {
    type Base = State<Arc<std::sync::OnceLock<String>>>;
    fn base(state: &Base) -> String {
        state.get().cloned().unwrap_or_default()
    }
    async fn discovery(state: Base) -> axum::Json<Value> {
        let base = base(&state);
        axum::Json(json!({
            "issuer": format!("{base}/{TENANT_GUID}/v2.0"),
            "authorization_endpoint": format!("{base}/contoso.test/oauth2/v2.0/authorize"),
            "token_endpoint": format!("{base}/contoso.test/oauth2/v2.0/token"),
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "jwks_uri": format!("{base}/contoso.test/discovery/v2.0/keys"),
        }))
    }
    async fn keys() -> String {
        TEST_JWK.into()
    }
    async fn token(state: Base, body: String) -> (StatusCode, axum::Json<Value>) {
        let form = form(&body);
        if form.get("client_secret").map(String::as_str) != Some("hub-secret") {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "invalid_client"})),
            );
        }
        let code = form.get("code").cloned().unwrap_or_default();
        let groups = match code.as_str() {
            "carol" => json!(["staff-id", "admins-id"]),
            "dave" | "tampered" => json!(["staff-id"]),
            _ => json!([]),
        };
        let now = jiff::Timestamp::now().as_second();
        let claims = json!({
            "iss": format!("{}/{TENANT_GUID}/v2.0", base(&state)), "aud": "hub-client",
            "exp": now + 300, "iat": now, "tid": TENANT_GUID,
            "name": code, "preferred_username": format!("{code}@contoso.test"), "groups": groups,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("k1".into());
        let key = jsonwebtoken::EncodingKey::from_rsa_der(TEST_KEY_DER);
        let mut id_token = jsonwebtoken::encode(&header, &claims, &key).expect("signs");
        if code == "tampered" {
            // The same claims with admin's group, the signature left as it was.
            let mut parts: Vec<String> = id_token.split('.').map(str::to_owned).collect();
            let mut forged = claims.clone();
            forged["groups"] = json!(["staff-id", "admins-id"]);
            parts[1] = base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                serde_json::to_vec(&forged).expect("json"),
            );
            id_token = parts.join(".");
        }
        (
            StatusCode::OK,
            axum::Json(
                json!({"access_token": format!("az-{code}"), "token_type": "Bearer",
                "id_token": id_token}),
            ),
        )
    }
    let state = Arc::new(std::sync::OnceLock::new());
    let app = axum::Router::new()
        .route(
            "/contoso.test/v2.0/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/contoso.test/discovery/v2.0/keys", get(keys))
        .route("/contoso.test/oauth2/v2.0/token", post(token))
        .with_state(Arc::clone(&state));
    let url = serve(app).await;
    state.set(url.clone()).expect("once");
    url
}

async fn start(class: &str, section: &str) -> TestHub {
    TestHub::start_with_env(
        &format!(
            "authenticator_class = \"{class}\"\n[[JupyterHub.services]]\n\
             name = \"reader\"\napi_token = \"{SERVICE_TOKEN}\"\nadmin = true\n"
        ),
        &format!(
            "enable_auth_state = true\n{section}\nclient_id = \"hub-client\"\n\
             client_secret = \"hub-secret\"\n\
             oauth_callback_url = \"http://hub.test/hub/oauth_callback\"\n"
        ),
        &[("JUPYTERHUB_CRYPT_KEY", CRYPT_KEY)],
    )
    .await
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A login in a new browser: the redirect to the provider (its authorize URL is returned),
/// then the callback with `code`.
async fn login(hub: &TestHub, code: &str) -> (String, reqwest::Response) {
    login_with(hub, &browser(), code).await
}

async fn login_with(
    hub: &TestHub,
    client: &reqwest::Client,
    code: &str,
) -> (String, reqwest::Response) {
    let redirect = client
        .get(format!("{}/hub/oauth_login", hub.url))
        .send()
        .await
        .expect("oauth_login");
    assert_eq!(redirect.status(), StatusCode::FOUND, "{}", hub.log());
    let location = redirect.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let state = query_param(&location, "state").expect("state");
    let done = client
        .get(format!(
            "{}/hub/oauth_callback?code={code}&state={state}",
            hub.url
        ))
        .send()
        .await
        .expect("callback");
    (location, done)
}

async fn refused(hub: &TestHub, code: &str, status: StatusCode, says: &str) {
    let (_, done) = login(hub, code).await;
    assert_eq!(done.status(), status, "{code}: {}", hub.log());
    let page = done.text().await.expect("body");
    assert!(page.contains(says), "{code}: {page}");
}

async fn user(hub: &TestHub, name: &str) -> Value {
    let (status, body) = call(hub, "GET", &format!("/users/{name}"), SERVICE_TOKEN, None).await;
    assert_eq!(status, StatusCode::OK, "{name}: {body}");
    body
}

#[tokio::test]
async fn github_enterprise_organizations_and_teams() {
    let idp = github().await;
    let hub = start(
        "github",
        &format!(
            "[GitHubOAuthenticator]\ngithub_url = \"{idp}/\"\n\
             allowed_organizations = [\"ok-org\", \"other-org:team-a\"]\n\
             scope = [\"read:org\", \"user:email\"]\npopulate_teams_in_auth_state = true\n"
        ),
    )
    .await;
    let page = browser()
        .get(format!("{}/hub/login", hub.url))
        .send()
        .await
        .expect("login page");
    assert!(
        page.text()
            .await
            .expect("body")
            .contains("Sign in with GitHub")
    );

    // An organisation's member: the login, lowercased as upstream normalises names.
    let (location, done) = login(&hub, "Alice").await;
    assert!(
        location.starts_with(&format!("{idp}/login/oauth/authorize?")),
        "{location}"
    );
    assert_eq!(
        query_param(&location, "scope").as_deref(),
        Some("read:org user:email")
    );
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    let alice = user(&hub, "alice").await;
    let state = &alice["auth_state"];
    assert_eq!(state["github_user"]["login"], "Alice", "{alice}");
    assert_eq!(
        state["github_user"]["email"], "Alice@corp.test",
        "the primary email, as the profile has none"
    );
    assert_eq!(
        state["teams"],
        json!([{"slug": "team-a"}, {"slug": "team-b"}]),
        "both pages of /user/teams"
    );
    assert_eq!(alice["admin"], false);

    // A team's member, and someone in neither.
    let (_, done) = login(&hub, "bob").await;
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    user(&hub, "bob").await;
    refused(
        &hub,
        "mallory",
        StatusCode::FORBIDDEN,
        "User mallory is not allowed to use this hub",
    )
    .await;
    let (status, _) = call(&hub, "GET", "/users/mallory", SERVICE_TOKEN, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no user for a refusal");
}

#[tokio::test]
async fn google_hosted_domain() {
    let idp = google().await;
    let hub = start(
        "google",
        &format!(
            "allowed_users = [\"oz@other.test\"]\n[GoogleOAuthenticator]\n\
             google_api_url = \"{idp}\"\nauthorize_url = \"{idp}/auth\"\n\
             hosted_domain = [\"uni.test\"]\nallowed_hosted_domains = [\"uni.test\"]\n"
        ),
    )
    .await;
    // The domain's account logs in, its name without `@uni.test`.
    let (location, done) = login(&hub, "ann").await;
    assert!(location.starts_with(&format!("{idp}/auth?")), "{location}");
    assert_eq!(
        query_param(&location, "scope").as_deref(),
        Some("openid email")
    );
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    let ann = user(&hub, "ann").await;
    assert_eq!(
        ann["auth_state"]["google_user"]["domain"], "uni.test",
        "{ann}"
    );
    // Outside hosted_domain nobody logs in, not even an allowed_users entry.
    refused(
        &hub,
        "eve",
        StatusCode::FORBIDDEN,
        "The account eve@gmail.test is not in the Google Workspace domains this hub admits",
    )
    .await;
    refused(
        &hub,
        "oz",
        StatusCode::FORBIDDEN,
        "domains this hub admits: uni.test",
    )
    .await;
    refused(
        &hub,
        "unverified",
        StatusCode::FORBIDDEN,
        "Login with unverified email uv@uni.test is not allowed",
    )
    .await;
    for name in ["eve@gmail.test", "uv"] {
        let (status, _) = call(&hub, "GET", &format!("/users/{name}"), SERVICE_TOKEN, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name} was refused");
    }
}

#[tokio::test]
async fn azure_ad_groups_from_the_verified_id_token() {
    let idp = azure().await;
    let hub = start(
        "azuread",
        &format!(
            "auth_refresh_age = 1\n[AzureAdOAuthenticator]\ngraph_url = \"{idp}\"\n\
             tenant_id = \"contoso.test\"\n\
             allowed_groups = [\"staff-id\"]\nadmin_groups = [\"admins-id\"]\n\
             manage_groups = true\n"
        ),
    )
    .await;
    let carol_browser = browser();
    let (location, done) = login_with(&hub, &carol_browser, "carol").await;
    assert!(
        location.starts_with(&format!("{idp}/contoso.test/oauth2/v2.0/authorize?")),
        "{location}"
    );
    assert_eq!(
        query_param(&location, "scope").as_deref(),
        Some("openid profile")
    );
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    // The default username claim is `name`, as upstream's.
    let carol = user(&hub, "carol").await;
    assert_eq!(carol["admin"], true, "admin_groups: {carol}");
    assert_eq!(carol["groups"], json!(["admins-id", "staff-id"]));
    assert_eq!(carol["auth_state"]["user"]["tid"], TENANT_GUID);
    // Once auth_refresh_age has passed, the stored ID token is verified again and the
    // session goes on.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let home = carol_browser
        .get(format!("{}/hub/home", hub.url))
        .send()
        .await
        .expect("home");
    assert_eq!(home.status(), StatusCode::OK, "{}", hub.log());
    assert!(
        hub.log()
            .contains("refreshed the identity provider's login"),
        "{}",
        hub.log()
    );

    let (_, done) = login(&hub, "dave").await;
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    let dave = user(&hub, "dave").await;
    assert_eq!(dave["admin"], false);
    assert_eq!(dave["groups"], json!(["staff-id"]));

    refused(
        &hub,
        "mallory",
        StatusCode::FORBIDDEN,
        "User mallory is not allowed to use this hub",
    )
    .await;
    // A token whose claims were changed after signing is refused before anything is read.
    refused(
        &hub,
        "tampered",
        StatusCode::BAD_GATEWAY,
        "The ID token is invalid",
    )
    .await;
    let (status, _) = call(&hub, "GET", "/users/tampered", SERVICE_TOKEN, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A fresh RSA key pair from openssl: the private key's PEM (PKCS#8, as Google's key files
/// have it) and the public key as PKCS#1 DER, for the stand-in to check signatures with.
fn rsa_key_pair(dir: &std::path::Path, name: &str) -> (String, Vec<u8>) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.der"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl (the openssl package) runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let (private_path, public_path) = (
        private.to_str().expect("utf-8"),
        public.to_str().expect("utf-8"),
    );
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private_path,
    ]);
    run(&[
        "rsa",
        "-in",
        private_path,
        "-RSAPublicKey_out",
        "-outform",
        "DER",
        "-out",
        public_path,
    ]);
    (
        std::fs::read_to_string(&private).expect("pem"),
        std::fs::read(&public).expect("der"),
    )
}

/// A service account's JSON key file, as Google's console writes it, mode 0600.
fn write_key_file(path: &std::path::Path, pem: &str, email: &str, token_uri: &str) {
    use std::os::unix::fs::PermissionsExt;
    let key = json!({
        "type": "service_account", "project_id": "hub-test", "private_key_id": "sa-key-1",
        "private_key": pem, "client_email": email, "client_id": "1",
        "token_uri": token_uri,
    });
    std::fs::write(path, key.to_string()).expect("write key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

const SERVICE_ACCOUNT: &str = "hub-groups@hub-test.iam.gserviceaccount.com";

/// What the Google stand-in saw: the service account tokens it issued.
#[derive(Default)]
struct GoogleSeen {
    tokens_issued: std::sync::atomic::AtomicUsize,
    /// The directory's groups of mover@uni.test, as the test sets them.
    mover_groups: std::sync::Mutex<Vec<&'static str>>,
}

/// Google's token endpoint (both the login's code exchange and the service account's JWT
/// bearer grant, whose RS256 assertion is verified with `public_der`), the v1 userinfo (the
/// code `NAME-DOMAIN` is NAME@DOMAIN) and the Directory API's `groups.list`, two pages for
/// ann.
async fn google_with_directory(public_der: Vec<u8>) -> (String, Arc<GoogleSeen>) {
    #[derive(Clone)]
    struct Standin {
        base: Arc<std::sync::OnceLock<String>>,
        public_der: Arc<Vec<u8>>,
        seen: Arc<GoogleSeen>,
    }
    fn refuse(why: String) -> (StatusCode, axum::Json<Value>) {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
    }
    async fn token(State(s): State<Standin>, body: String) -> (StatusCode, axum::Json<Value>) {
        let form = form(&body);
        if form.get("grant_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        {
            return exchange(&body, "g");
        }
        let assertion = form.get("assertion").cloned().unwrap_or_default();
        let key = jsonwebtoken::DecodingKey::from_rsa_der(&s.public_der);
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.leeway = 0;
        validation.set_audience(&["https://oauth2.googleapis.com/token"]);
        validation.set_issuer(&[SERVICE_ACCOUNT]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let claims = match jsonwebtoken::decode::<Value>(&assertion, &key, &validation) {
            Ok(data) => data.claims,
            Err(e) => return refuse(format!("Invalid JWT Signature. ({e})")),
        };
        let base = s.base.get().cloned().unwrap_or_default();
        let scope = format!("{base}/auth/admin.directory.group.readonly");
        let now = jiff::Timestamp::now().as_second();
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap_or(0),
            claims["exp"].as_i64().unwrap_or(0),
        );
        if claims["scope"] != json!(scope)
            || claims["sub"] != "hub-reader@uni.test"
            || exp - iat != 3600
            || (now - iat).abs() > 60
        {
            return refuse(format!("unexpected claims {claims}"));
        }
        let n = s
            .seen
            .tokens_issued
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (
            StatusCode::OK,
            axum::Json(
                json!({"access_token": format!("sa-token-{n}"), "expires_in": 3599,
                "token_type": "Bearer"}),
            ),
        )
    }
    async fn userinfo(headers: HeaderMap) -> (StatusCode, axum::Json<Value>) {
        match bearer_user(&headers, "g")
            .and_then(|c| c.split_once('-').map(|(n, d)| (n.to_owned(), d.to_owned())))
        {
            Some((name, domain)) => (
                StatusCode::OK,
                axum::Json(json!({"email": format!("{name}@{domain}"),
                    "verified_email": true, "hd": domain})),
            ),
            None => (StatusCode::UNAUTHORIZED, axum::Json(json!({}))),
        }
    }
    async fn groups(
        State(s): State<Standin>,
        headers: HeaderMap,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> (StatusCode, axum::Json<Value>) {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let user = q.get("userKey").map(String::as_str).unwrap_or_default();
        // The first token is revoked by the time `renew` logs in.
        let revoked = user == "renew@uni.test" && bearer == "Bearer sa-token-0";
        if !bearer.starts_with("Bearer sa-token-") || revoked {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": {"code": 401, "message": "Login Required."}})),
            );
        }
        let page = q.get("pageToken").map(String::as_str);
        let answer = match (user, page) {
            ("ann@uni.test", None) => json!({"kind": "admin#directory#groups",
                "groups": [{"email": "everyone@uni.test", "name": "Everyone"}],
                "nextPageToken": "page-2"}),
            ("ann@uni.test", Some("page-2")) => json!({"kind": "admin#directory#groups",
                "groups": [{"email": "students@uni.test", "name": "Students"}]}),
            ("boss@uni.test", None) => json!({"groups": [{"email": "admins@uni.test"}]}),
            ("renew@uni.test", None) => json!({"groups": [{"email": "students@uni.test"}]}),
            ("mover@uni.test", None) => {
                let names = s
                    .seen
                    .mover_groups
                    .lock()
                    .map(|g| g.clone())
                    .unwrap_or_default();
                let groups: Vec<Value> = names
                    .iter()
                    .map(|n| json!({"email": format!("{n}@uni.test")}))
                    .collect();
                json!({"groups": groups})
            }
            // Nested: students are learners, and learners students (a cycle).
            ("students@uni.test", None) => json!({"groups": [{"email": "learners@uni.test"}]}),
            ("learners@uni.test", None) => json!({"groups": [{"email": "students@uni.test"}]}),
            ("broken@uni.test", None) => {
                return (
                    StatusCode::FORBIDDEN,
                    axum::Json(json!({"error": {"code": 403,
                        "message": "Not Authorized to access this resource/api"}})),
                );
            }
            _ => json!({"kind": "admin#directory#groups"}),
        };
        (StatusCode::OK, axum::Json(answer))
    }
    let standin = Standin {
        base: Arc::new(std::sync::OnceLock::new()),
        public_der: Arc::new(public_der),
        seen: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/oauth2/v4/token", post(token))
        .route("/oauth2/v1/userinfo", get(userinfo))
        .route("/admin/directory/v1/groups", get(groups))
        .with_state(standin.clone());
    let url = serve(app).await;
    standin.base.set(url.clone()).expect("once");
    (url, standin.seen)
}

/// The `[GoogleOAuthenticator]` lines for groups of uni.test (key `good`) and other.test
/// (key `other`, signed with a key the stand-in does not know).
fn google_groups_section(idp: &str, good: &std::path::Path, other: &std::path::Path) -> String {
    format!(
        "[GoogleOAuthenticator]\ngoogle_api_url = \"{idp}\"\nauthorize_url = \"{idp}/auth\"\n\
         google_directory_api_url = \"{idp}\"\n\
         google_service_account_keys = {{ \"uni.test\" = {good:?}, \"other.test\" = {other:?} }}\n\
         gsuite_administrator = {{ \"uni.test\" = \"hub-reader\", \"other.test\" = \"hub-reader\" }}\n\
         allowed_google_groups = {{ \"uni.test\" = [\"students\"], \"other.test\" = [\"students\"] }}\n\
         admin_google_groups = {{ \"uni.test\" = [\"admins\"] }}\ninclude_nested_groups = true\n"
    )
}

#[tokio::test]
async fn google_groups_through_a_service_account() {
    let keys = tempfile::tempdir().expect("dir");
    let (pem, public_der) = rsa_key_pair(keys.path(), "sa");
    let (unknown_pem, _) = rsa_key_pair(keys.path(), "unknown");
    let (idp, seen) = google_with_directory(public_der).await;
    let (good, other) = (keys.path().join("sa.json"), keys.path().join("other.json"));
    let token_uri = format!("{idp}/oauth2/v4/token");
    write_key_file(&good, &pem, SERVICE_ACCOUNT, &token_uri);
    write_key_file(&other, &unknown_pem, SERVICE_ACCOUNT, &token_uri);
    let hub = start("google", &google_groups_section(&idp, &good, &other)).await;

    // A member of an allowed group (on the directory's second page) logs in, not admin; the
    // groups of their groups are theirs too (include_nested_groups).
    let (_, done) = login(&hub, "ann-uni.test").await;
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    let ann = user(&hub, "ann@uni.test").await;
    assert_eq!(
        ann["auth_state"]["google_user"]["google_groups"],
        json!(["everyone", "learners", "students"]),
        "{ann}"
    );
    assert_eq!(ann["admin"], false);
    // An admin group's member is admitted by it, and is an admin.
    let (_, done) = login(&hub, "boss-uni.test").await;
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    let boss = user(&hub, "boss@uni.test").await;
    assert_eq!(boss["admin"], true, "admin_google_groups: {boss}");
    // In no allowed group: refused.
    refused(
        &hub,
        "nobody-uni.test",
        StatusCode::FORBIDDEN,
        "User nobody@uni.test is not allowed to use this hub",
    )
    .await;
    // The directory refuses the lookup: the login fails saying so; nobody is created.
    refused(
        &hub,
        "broken-uni.test",
        StatusCode::BAD_GATEWAY,
        "Google groups failed: the Directory API refused groups.list for broken@uni.test (HTTP 403",
    )
    .await;
    assert!(
        hub.log()
            .contains("Not Authorized to access this resource/api"),
        "{}",
        hub.log()
    );
    // A key the token endpoint does not accept (its signature does not verify).
    refused(
        &hub,
        "zed-other.test",
        StatusCode::BAD_GATEWAY,
        "Invalid JWT Signature",
    )
    .await;
    for name in ["nobody@uni.test", "broken@uni.test", "zed@other.test"] {
        let (status, _) = call(&hub, "GET", &format!("/users/{name}"), SERVICE_TOKEN, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name} was refused");
    }
    // The hub goes on; uni.test's token was asked for once and reused since.
    let (_, done) = login(&hub, "ann-uni.test").await;
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    let issued = || seen.tokens_issued.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(issued(), 1, "{}", hub.log());
    // The directory refuses the cached token (401): a new one is asked for, once.
    let (_, done) = login(&hub, "renew-uni.test").await;
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    assert_eq!(issued(), 2, "{}", hub.log());
}

/// `manage_groups` with `auth_state_groups_key = "google_user.google_groups"`: the Google
/// groups become hub groups, followed at each login and refresh; `allowed_groups` admits,
/// `admin_groups` makes admins, beside the Google group options.
#[tokio::test]
async fn google_groups_managed_as_hub_groups() {
    let keys = tempfile::tempdir().expect("dir");
    let (pem, public_der) = rsa_key_pair(keys.path(), "sa");
    let (idp, seen) = google_with_directory(public_der).await;
    let good = keys.path().join("sa.json");
    write_key_file(
        &good,
        &pem,
        SERVICE_ACCOUNT,
        &format!("{idp}/oauth2/v4/token"),
    );
    let section = google_groups_section(&idp, &good, &good);
    let hub = start(
        "google",
        &format!(
            "auth_refresh_age = 1
{section}manage_groups = true
             auth_state_groups_key = \"google_user.google_groups\"
             allowed_groups = [\"team-a\"]
admin_groups = [\"team-b\"]
"
        ),
    )
    .await;
    let set_mover = |groups: &[&'static str]| {
        *seen.mover_groups.lock().expect("lock") = groups.to_vec();
    };
    let groups_of = |body: &Value| body["groups"].clone();

    // In team-a (allowed_groups, not an allowed Google group) and team-b (admin_groups).
    set_mover(&["team-a", "team-b"]);
    let mover_browser = browser();
    let (_, done) = login_with(&hub, &mover_browser, "mover-uni.test").await;
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    let mover = user(&hub, "mover@uni.test").await;
    assert_eq!(groups_of(&mover), json!(["team-a", "team-b"]), "{mover}");
    assert_eq!(mover["admin"], true, "admin_groups: {mover}");
    let (status, b) = call(&hub, "GET", "/groups/team-b", SERVICE_TOKEN, None).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["users"], json!(["mover@uni.test"]), "{b}");

    // The directory drops team-b: the next login leaves it, and admin with it.
    set_mover(&["team-a"]);
    let (_, done) = login_with(&hub, &mover_browser, "mover-uni.test").await;
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    let mover = user(&hub, "mover@uni.test").await;
    assert_eq!(groups_of(&mover), json!(["team-a"]), "{mover}");
    assert_eq!(mover["admin"], false, "{mover}");
    let (_, b) = call(&hub, "GET", "/groups/team-b", SERVICE_TOKEN, None).await;
    assert_eq!(b["users"], json!([]), "{b}");

    // team-b again: a refresh (auth_refresh_age) follows the directory without a login.
    set_mover(&["team-a", "team-b"]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let home = mover_browser
        .get(format!("{}/hub/home", hub.url))
        .send()
        .await
        .expect("home");
    assert_eq!(home.status(), StatusCode::OK, "{}", hub.log());
    let mover = user(&hub, "mover@uni.test").await;
    assert_eq!(groups_of(&mover), json!(["team-a", "team-b"]), "{mover}");
    assert_eq!(mover["admin"], true, "{mover}");

    // A Google group's member (allowed_google_groups) gets every group of theirs.
    let (_, done) = login(&hub, "ann-uni.test").await;
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    let ann = user(&hub, "ann@uni.test").await;
    assert_eq!(
        groups_of(&ann),
        json!(["everyone", "learners", "students"]),
        "{ann}"
    );
    assert_eq!(ann["admin"], false);
    // admin_google_groups still makes admins when admin_groups does not.
    let (_, done) = login(&hub, "boss-uni.test").await;
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    let boss = user(&hub, "boss@uni.test").await;
    assert_eq!(boss["admin"], true, "{boss}");
    assert_eq!(groups_of(&boss), json!(["admins"]), "{boss}");

    // In neither team-a nor an allowed Google group: refused, and the hub groups stay.
    set_mover(&["team-c"]);
    refused(
        &hub,
        "mover-uni.test",
        StatusCode::FORBIDDEN,
        "User mover@uni.test is not allowed to use this hub",
    )
    .await;
    let mover = user(&hub, "mover@uni.test").await;
    assert_eq!(groups_of(&mover), json!(["team-a", "team-b"]), "{mover}");
    let (status, all) = call(&hub, "GET", "/groups", SERVICE_TOKEN, None).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let mut names: Vec<&str> = all
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "admins", "everyone", "learners", "students", "team-a", "team-b"
        ],
        "{all}"
    );
}

/// `manage_groups` on the GitHub class: the groups at `auth_state_groups_key`
/// (`github_user.groups`, as upstream's tests) admit beside `allowed_organizations`; a
/// missing key or a list of objects is no groups, logged, as upstream.
#[tokio::test]
async fn github_groups_from_auth_state() {
    let idp = github().await;
    let hub = start(
        "github",
        &format!(
            "[GitHubOAuthenticator]\ngithub_url = \"{idp}/\"\n\
             allowed_organizations = [\"ok-org\"]\nmanage_groups = true\n\
             auth_state_groups_key = \"github_user.groups\"\n\
             allowed_groups = [\"gh-staff\"]\nadmin_groups = [\"gh-admins\"]\n"
        ),
    )
    .await;
    // Not in ok-org, admitted by allowed_groups, admin by admin_groups.
    let (_, done) = login(&hub, "carl").await;
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    let carl = user(&hub, "carl").await;
    assert_eq!(carl["groups"], json!(["gh-admins", "gh-staff"]), "{carl}");
    assert_eq!(carl["admin"], true, "{carl}");
    // In ok-org with no groups key in the profile: admitted, no groups, an error logged.
    let (_, done) = login(&hub, "Alice").await;
    assert_eq!(done.status(), StatusCode::FOUND, "{}", hub.log());
    let alice = user(&hub, "alice").await;
    assert_eq!(alice["groups"], json!([]), "{alice}");
    assert_eq!(alice["admin"], false, "{alice}");
    assert!(
        hub.log()
            .contains("The auth_state_groups_key github_user.groups does not exist in auth_state"),
        "{}",
        hub.log()
    );
    // Groups that allow nothing, and a list that is not of names: refused.
    refused(
        &hub,
        "dora",
        StatusCode::FORBIDDEN,
        "User dora is not allowed to use this hub",
    )
    .await;
    refused(
        &hub,
        "olaf",
        StatusCode::FORBIDDEN,
        "User olaf is not allowed to use this hub",
    )
    .await;
    assert!(
        hub.log()
            .contains("The value of the auth_state_groups_key github_user.groups is invalid"),
        "{}",
        hub.log()
    );
    let (_, staff) = call(&hub, "GET", "/groups/gh-staff", SERVICE_TOKEN, None).await;
    assert_eq!(staff["users"], json!(["carl"]), "{staff}");
}

#[test]
fn check_config_checks_service_account_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let (pem, _) = rsa_key_pair(dir.path(), "sa");
    let (good, bad) = (dir.path().join("sa.json"), dir.path().join("bad.json"));
    write_key_file(
        &good,
        &pem,
        SERVICE_ACCOUNT,
        "https://oauth2.googleapis.com/token",
    );
    let path = dir.path().join("hub.toml");
    let check = |other: &std::path::Path| {
        std::fs::write(
            &path,
            format!(
                "[JupyterHub]\nauthenticator_class = \"google\"\n{}\
                 client_id = \"c\"\noauth_callback_url = \"https://hub.test/hub/oauth_callback\"\n",
                google_groups_section("https://www.googleapis.com", &good, other)
            ),
        )
        .expect("write");
        std::process::Command::new(BIN)
            .args(["check-config", "-f"])
            .arg(&path)
            .output()
            .expect("run")
    };
    let out = check(&good);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("warning"),
        "{out:?}"
    );
    // Readable by everyone: accepted, with a warning naming the file.
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = check(&good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("warning: GoogleOAuthenticator.google_service_account_keys")
            && stdout.contains("sa.json is readable by every account"),
        "{stdout}"
    );
    // A file that is not a key, one whose private key is not one, and one that is missing.
    for (text, says) in [
        (
            "{\"type\": \"service_account\",",
            "not a service account's JSON key",
        ),
        (
            "{\"client_email\": \"a@b\", \"token_uri\": \"https://t.test\", \
              \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n\"}",
            "\"private_key\"",
        ),
    ] {
        std::fs::write(&bad, text).expect("write");
        let out = check(&bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(
            err.contains("GoogleOAuthenticator.google_service_account_keys[\"other.test\"]")
                && err.contains("bad.json")
                && err.contains(says),
            "{err}"
        );
    }
    let out = check(&dir.path().join("missing.json"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("missing.json: cannot be read"),
        "{err}"
    );
}

#[test]
fn check_config_refuses_incomplete_presets() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("preset.toml");
    let common =
        "client_id = \"c\"\noauth_callback_url = \"https://hub.test/hub/oauth_callback\"\n";
    for (class, section, says) in [
        (
            "azuread",
            "[AzureAdOAuthenticator]\n",
            "AzureAdOAuthenticator.tenant_id must be set",
        ),
        (
            "azuread",
            "[AzureAdOAuthenticator]\ntenant_id = \"t\"\nadmin_groups = [\"g\"]\n",
            "AzureAdOAuthenticator.admin_groups requires AzureAdOAuthenticator.manage_groups",
        ),
        (
            "google",
            "[GoogleOAuthenticator]\nadmin_google_groups = { \"uni.test\" = [\"staff\"] }\n",
            "GoogleOAuthenticator.admin_google_groups names the domain \"uni.test\"",
        ),
        (
            "github",
            "[GitHubOAuthenticator]\nallowed_organizations = [\"org/x\"]\n",
            "GitHubOAuthenticator.allowed_organizations",
        ),
        (
            "github",
            "[GitHubOAuthenticator]\nteam_whitelist = [\"x\"]\n",
            "team_whitelist",
        ),
        (
            "github",
            "[GitHubOAuthenticator]\nallowed_groups = [\"x\"]\n",
            "GitHubOAuthenticator.allowed_groups requires GitHubOAuthenticator.manage_groups",
        ),
        (
            "google",
            "[GoogleOAuthenticator]\nauth_state_groups_key = \"google_user.google_groups\"\n",
            "GoogleOAuthenticator.auth_state_groups_key requires GoogleOAuthenticator.manage_groups",
        ),
    ] {
        std::fs::write(
            &path,
            format!("[JupyterHub]\nauthenticator_class = \"{class}\"\n{section}{common}"),
        )
        .expect("write");
        let out = std::process::Command::new(BIN)
            .args(["check-config", "-f"])
            .arg(&path)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{section}");
        assert!(err.contains(says), "{section}: {err}");
    }
    // Without client_id: the section's own message.
    std::fs::write(
        &path,
        "[JupyterHub]\nauthenticator_class = \"github\"\n[GitHubOAuthenticator]\n",
    )
    .expect("write");
    let out = std::process::Command::new(BIN)
        .args(["check-config", "-f"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GitHubOAuthenticator.client_id must be set")
    );
}
