//! Login through an OAuth 2.0 / OpenID Connect identity provider, as OAuthenticator's
//! `GenericOAuthenticator`: the authorization code flow with `state` (in a signed cookie) and
//! PKCE (S256), the code exchanged at `token_url`, the user's claims from `userdata_url` or
//! the ID token (its signature checked against the provider's JWKS when OIDC discovery gave
//! one), the username and groups read from claims. `presets` adds what OAuthenticator's
//! GitHub, Google and Azure AD classes check on top, `google_groups` Google's groups.

pub mod google_groups;
pub mod presets;

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::GenericOAuthConfig;

/// The state cookie's name, as OAuthenticator's `STATE_COOKIE_NAME`.
pub const STATE_COOKIE: &str = "oauthenticator-state";
/// How long a login may take at the provider before its state cookie is refused.
pub const STATE_MAX_AGE_SECS: i64 = 600;
/// Clock skew tolerated on the ID token's `exp`, `iat` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("The identity provider refused the login: {0}")]
    Provider(String),
    #[error("OAuth state missing or mismatched; start the login again")]
    BadState,
    #[error("The callback has no authorization code")]
    NoCode,
    #[error("OpenID Connect discovery at {url} failed: {why}")]
    Discovery { url: String, why: String },
    #[error("Token exchange with the identity provider failed: {0}")]
    TokenExchange(String),
    #[error("Reading the user's data from the identity provider failed: {0}")]
    Userdata(String),
    #[error("The ID token is invalid: {0}")]
    IdToken(String),
    #[error("The identity provider refused the access token: {0}")]
    TokenRefused(String),
    #[error("The user's data has no {0:?} claim to take the username from")]
    NoUsername(String),
    /// The provider's class refuses this account (Google's `hosted_domain`, an unverified
    /// email).
    #[error("{0}")]
    Refused(String),
    /// Google groups could not be read (the service account's key, its token, the
    /// directory's answer).
    #[error("Looking up the user's Google groups failed: {0}")]
    GoogleGroups(String),
}

/// The provider's endpoints: from the config, or discovered from the issuer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Endpoints {
    #[serde(default)]
    pub issuer: Option<String>,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
}

/// What the state cookie keeps between the redirect and the callback.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct LoginState {
    /// The `state` parameter sent to the provider, which must come back unchanged.
    pub state_id: String,
    pub next_url: String,
    pub code_verifier: String,
}

fn random_urlsafe(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    super::fill_random(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

impl LoginState {
    pub fn new(next_url: &str) -> LoginState {
        LoginState {
            state_id: random_urlsafe(24),
            next_url: next_url.to_owned(),
            // 32 random bytes: 43 characters, the least RFC 7636 allows.
            code_verifier: random_urlsafe(32),
        }
    }

    /// RFC 7636's S256 challenge of the verifier.
    pub fn code_challenge(&self) -> String {
        pkce_challenge(&self.code_verifier)
    }

    /// Whether the provider's `state` parameter is this login's (constant time).
    pub fn matches(&self, state: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.state_id.as_bytes().ct_eq(state.as_bytes()).into()
    }
}

pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A claim by name; a dotted name walks nested objects (`realm_access.roles`), as
/// OAuthenticator does for `username_claim` and `auth_state_groups_key`.
pub fn claim<'a>(data: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(v) = data.get(name) {
        return Some(v);
    }
    name.split('.').try_fold(data, |v, key| v.get(key))
}

/// The groups in a claim: a list of strings, or one string.
pub fn groups_from(data: &Value, key: &str) -> BTreeSet<String> {
    match claim(data, key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(one)) => BTreeSet::from([one.clone()]),
        _ => BTreeSet::new(),
    }
}

/// Upstream's `get_user_groups` for a string `auth_state_groups_key`: the dotted path walked
/// through auth_state's objects as `reduce(dict.get, key.split("."), auth_state)` (no
/// fallback to a key with a dot in its name). A missing key, or a value that is not a list
/// of strings, gives no groups and an error in the log, as upstream (which would also take
/// a string's characters or an object's keys as groups; those are refused here).
pub fn groups_in_auth_state(auth_state: &Value, key: &str) -> BTreeSet<String> {
    let found = key
        .split('.')
        .try_fold(auth_state, |value, part| value.as_object()?.get(part));
    match found {
        None | Some(Value::Null) => {
            let available: Vec<&String> = auth_state
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            tracing::error!(
                "The auth_state_groups_key {key} does not exist in auth_state; its keys are \
                 {available:?}"
            );
            BTreeSet::new()
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(other) => {
            tracing::error!(
                "The value of the auth_state_groups_key {key} is invalid (not a list of \
                 strings): {other}"
            );
            BTreeSet::new()
        }
    }
}

/// The authenticator for `generic-oauth`, `oidc` and the presets: no form; logins go through the
/// provider (`Client`), the hub's `/hub/oauth_login` and `/hub/oauth_callback`.
pub struct OAuth;

#[async_trait::async_trait]
impl super::Authenticator for OAuth {
    fn name(&self) -> &'static str {
        "generic-oauth"
    }
    fn has_login_form(&self) -> bool {
        false
    }
    async fn authenticate(
        &self,
        _username: &str,
        _password: &str,
    ) -> Result<Option<super::Authenticated>, super::Error> {
        Err(super::Error::NoLogin)
    }
}

/// The login's outcome, before the hub's policy.
#[derive(Debug, Clone)]
pub struct OAuthUser {
    pub name: String,
    pub groups: BTreeSet<String>,
    /// `Some` when `admin_groups` is set: whether a group of the user is among them.
    pub admin: Option<bool>,
    /// `Some(false)` when `allowed_groups` (or a preset's allowance: GitHub's
    /// `allowed_organizations`, Google's `allowed_hosted_domains`) is set and does not admit
    /// the user; `Some(true)` when it does.
    pub in_allowed_groups: Option<bool>,
    pub auth_state: Value,
}

/// An OAuth client of one provider.
pub struct Client {
    config: GenericOAuthConfig,
    /// `Some` for `oidc`: endpoints are discovered from here on first use.
    issuer: Option<String>,
    endpoints: tokio::sync::OnceCell<Endpoints>,
    http: Http,
    preset: presets::Preset,
}

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The hub's HTTP(S) client to the provider: rustls (ring) with the system's trust roots.
struct Http(hyper_util::client::legacy::Client<Connector, http_body_util::Full<bytes::Bytes>>);

/// How long one request to the provider may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// The most of a provider's answer that is read.
const MAX_ANSWER: usize = 1 << 20;

impl Http {
    fn new() -> Http {
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        );
        let connector = match builder {
            Ok(b) => b.https_or_http().enable_http1().build(),
            Err(e) => {
                // No system roots: https providers fail with a message, http ones still work.
                tracing::warn!(error = %e, "no TLS trust roots for the identity provider");
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(
                        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                            rustls::crypto::ring::default_provider(),
                        ))
                        .with_safe_default_protocol_versions()
                        .map(|b| {
                            b.with_root_certificates(rustls::RootCertStore::empty())
                                .with_no_client_auth()
                        })
                        .unwrap_or_else(|_| {
                            rustls::ClientConfig::builder()
                                .with_root_certificates(rustls::RootCertStore::empty())
                                .with_no_client_auth()
                        }),
                    )
                    .https_or_http()
                    .enable_http1()
                    .build()
            }
        };
        Http(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector),
        )
    }

    /// Send a request; the status and the answer parsed as JSON.
    async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(http::HeaderName, String)],
        body: Option<String>,
    ) -> Result<(http::StatusCode, Value), String> {
        let (status, _, body) = self.send_raw(method, url, headers, body).await?;
        let value = serde_json::from_slice(&body)
            .map_err(|e| format!("{url}: HTTP {status}, not JSON ({e})"))?;
        Ok((status, value))
    }

    /// Send a request; the status, headers and body (at most `MAX_ANSWER` bytes).
    async fn send_raw(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(http::HeaderName, String)],
        body: Option<String>,
    ) -> Result<(http::StatusCode, http::HeaderMap, bytes::Bytes), String> {
        use http_body_util::BodyExt;
        let mut request = http::Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "jupyterhub-rs");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if body.is_some() {
            request = request.header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        }
        let request = request
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.unwrap_or_default(),
            )))
            .map_err(|e| format!("{url}: {e}"))?;
        let exchange = async {
            let response = self.0.request(request).await.map_err(|e| {
                use std::error::Error as _;
                match e.source() {
                    Some(source) => format!("{url}: {e}: {source}"),
                    None => format!("{url}: {e}"),
                }
            })?;
            let status = response.status();
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            Ok((status, parts.headers, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{url}: no answer within {REQUEST_TIMEOUT:?}"))?
    }

    /// GET a JSON document that must answer 2xx.
    async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Value, String> {
        let headers: Vec<_> = bearer
            .map(|t| (http::header::AUTHORIZATION, format!("Bearer {t}")))
            .into_iter()
            .collect();
        let (status, value) = self.send(http::Method::GET, url, &headers, None).await?;
        if !status.is_success() {
            return Err(format!("{url}: HTTP {status}"));
        }
        Ok(value)
    }

    /// GET a page of a paginated JSON list (2xx), and its `Link` header.
    async fn get_json_page(
        &self,
        url: &str,
        bearer: &str,
    ) -> Result<(Value, Option<String>), String> {
        let headers = [(http::header::AUTHORIZATION, format!("Bearer {bearer}"))];
        let (status, response_headers, body) = self
            .send_raw(http::Method::GET, url, &headers, None)
            .await?;
        if !status.is_success() {
            return Err(format!("{url}: HTTP {status}"));
        }
        let value = serde_json::from_slice(&body)
            .map_err(|e| format!("{url}: HTTP {status}, not JSON ({e})"))?;
        let link = response_headers
            .get(http::header::LINK)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((value, link))
    }

    /// GET with a bearer token for the status alone (GitHub's membership checks answer
    /// 204 with no body).
    async fn status(&self, url: &str, bearer: &str) -> Result<http::StatusCode, String> {
        let headers = [(http::header::AUTHORIZATION, format!("Bearer {bearer}"))];
        let (status, _, _) = self
            .send_raw(http::Method::GET, url, &headers, None)
            .await?;
        Ok(status)
    }
}

impl Client {
    pub fn new(config: &GenericOAuthConfig, discover: bool) -> Client {
        Client::with_preset(config, discover, presets::Preset::Generic)
    }

    /// The client of the identity-provider authenticator the config names, if it names one.
    pub fn from_config(config: &crate::config::Config) -> Option<Client> {
        let settings = config.oauth_settings()?;
        let discover = ["oidc", "azuread"].contains(&config.hub.authenticator_class.as_str());
        Some(Client::with_preset(
            &settings,
            discover,
            presets::Preset::from_config(config),
        ))
    }

    fn with_preset(config: &GenericOAuthConfig, discover: bool, preset: presets::Preset) -> Client {
        Client {
            config: config.clone(),
            issuer: discover.then(|| config.oidc_issuer.clone().unwrap_or_default()),
            endpoints: tokio::sync::OnceCell::new(),
            http: Http::new(),
            preset,
        }
    }

    /// Whether the user's hub groups follow the provider's at each login and refresh.
    pub fn manage_groups(&self) -> bool {
        self.config.manage_groups
    }

    pub fn login_service(&self) -> &str {
        &self.config.login_service
    }

    /// The endpoints, discovering them on first use for OIDC (a failure is retried next time).
    pub async fn endpoints(&self) -> Result<&Endpoints, Error> {
        self.endpoints
            .get_or_try_init(|| async {
                let Some(issuer) = &self.issuer else {
                    return Ok(Endpoints {
                        issuer: None,
                        authorization_endpoint: self.config.authorize_url.clone(),
                        token_endpoint: self.config.token_url.clone(),
                        userinfo_endpoint: self.config.userdata_url.clone(),
                        jwks_uri: None,
                    });
                };
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let failed = |why: String| Error::Discovery {
                    url: url.clone(),
                    why,
                };
                let document = self.http.get_json(&url, None).await.map_err(&failed)?;
                let mut found: Endpoints =
                    serde_json::from_value(document).map_err(|e| failed(e.to_string()))?;
                if !self.preset.issuer_matches(issuer, found.issuer.as_deref()) {
                    return Err(failed(format!(
                        "its issuer {:?} is not the configured one",
                        found.issuer
                    )));
                }
                // Options set explicitly win over what the provider announces.
                if !self.config.authorize_url.is_empty() {
                    found.authorization_endpoint = self.config.authorize_url.clone();
                }
                if !self.config.token_url.is_empty() {
                    found.token_endpoint = self.config.token_url.clone();
                }
                if self.config.userdata_url.is_some() {
                    found.userinfo_endpoint = self.config.userdata_url.clone();
                }
                Ok(found)
            })
            .await
    }

    /// Where to send the browser to log in.
    pub async fn authorize_redirect(&self, state: &LoginState) -> Result<String, Error> {
        let endpoints = self.endpoints().await?;
        let mut url = url::Url::parse(&endpoints.authorization_endpoint).map_err(|e| {
            Error::Provider(format!(
                "authorize_url {:?}: {e}",
                endpoints.authorization_endpoint
            ))
        })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.oauth_callback_url)
            .append_pair("scope", &self.config.scope.join(" "))
            .append_pair("state", &state.state_id)
            .append_pair("code_challenge", &state.code_challenge())
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// The callback: exchange the code and read who logged in.
    pub async fn complete(&self, code: &str, state: &LoginState) -> Result<OAuthUser, Error> {
        let endpoints = self.endpoints().await?;
        let (body, headers) = self.token_request(code, state);
        let (status, token_response) = self
            .http
            .send(
                http::Method::POST,
                &endpoints.token_endpoint,
                &headers,
                Some(body),
            )
            .await
            .map_err(Error::TokenExchange)?;
        if !status.is_success() || token_response.get("error").is_some() {
            return Err(Error::TokenExchange(provider_error(
                &token_response,
                status,
            )));
        }
        let mut user = self.user_with(token_response, endpoints).await?;
        let access_token = user.auth_state["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.preset
            .admit(&self.http, &mut user, &access_token)
            .await?;
        Ok(user)
    }

    /// Who the token endpoint's answer belongs to: the ID token's claims or the userdata
    /// endpoint's answer for its access token (OAuthenticator's `_token_to_auth_model`).
    async fn user_with(
        &self,
        token_response: Value,
        endpoints: &Endpoints,
    ) -> Result<OAuthUser, Error> {
        let access_token = token_response
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::TokenExchange("the answer has no access_token".into()))?
            .to_owned();
        let id_token = token_response
            .get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id_claims = match &id_token {
            Some(token) => Some(self.id_token_claims(token, endpoints).await?),
            None => None,
        };
        let from_id_token =
            self.config.userdata_from_id_token || endpoints.userinfo_endpoint.is_none();
        let userdata = if from_id_token {
            id_claims.clone().ok_or_else(|| {
                Error::Userdata("no userdata_url, and the provider gave no ID token".into())
            })?
        } else {
            let url = endpoints.userinfo_endpoint.as_deref().unwrap_or_default();
            let bearer = [(
                http::header::AUTHORIZATION,
                format!("Bearer {access_token}"),
            )];
            let (status, answer) = self
                .http
                .send(http::Method::GET, url, &bearer, None)
                .await
                .map_err(Error::Userdata)?;
            // A client error is taken as the token's refusal (expired, revoked), as upstream.
            if status.is_client_error() {
                return Err(Error::TokenRefused(format!("{url}: HTTP {status}")));
            }
            if !status.is_success() {
                return Err(Error::Userdata(format!("{url}: HTTP {status}")));
            }
            answer
        };
        let mut user = self.user_from(userdata, access_token.clone(), id_token, token_response)?;
        self.preset
            .update(&self.http, &mut user, &access_token)
            .await?;
        // After `update`, as upstream's `_apply_managed_groups` follows `update_auth_model`:
        // Google's groups are in auth_state by now.
        if let Some(key) = self.preset.auth_state_groups_key() {
            user.groups = groups_in_auth_state(&user.auth_state, key);
        }
        self.apply_group_options(&mut user);
        Ok(user)
    }

    /// OAuthenticator's `refresh_user` with auth_state: the login as the stored tokens show it
    /// now. The stored access token first; if the provider refuses it (4xx, or an ID token
    /// that no longer verifies), the refresh token. `Ok(None)`: the person must log in again.
    /// An unreachable provider is an error, as upstream (the login's state is unknown).
    pub async fn refresh(&self, auth_state: &Value) -> Result<Option<OAuthUser>, Error> {
        let endpoints = self.endpoints().await?;
        let stored = auth_state.get("token_response").cloned();
        if let Some(token_response) = stored.filter(Value::is_object) {
            match self.user_with(token_response, endpoints).await {
                Ok(user) => return Ok(Some(user)),
                Err(e) if refused_token(&e) => {
                    tracing::info!(error = %e, "the stored access token is refused; trying the refresh token");
                }
                Err(e) => return Err(e),
            }
        }
        let Some(refresh_token) = auth_state.get("refresh_token").and_then(Value::as_str) else {
            return Ok(None);
        };
        let (body, headers) = self.form_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ]);
        let answer = self
            .http
            .send(
                http::Method::POST,
                &endpoints.token_endpoint,
                &headers,
                Some(body),
            )
            .await;
        let mut token_response = match answer {
            Ok((status, answer)) if status.is_success() && answer.get("error").is_none() => answer,
            Ok((status, answer)) => {
                tracing::info!(error = %provider_error(&answer, status), "the refresh token is refused");
                return Ok(None);
            }
            Err(e) => {
                tracing::info!(error = %e, "refreshing the access token failed");
                return Ok(None);
            }
        };
        // A provider may not send a new refresh token; the old one stays good then.
        if token_response.get("refresh_token").is_none()
            && let Some(object) = token_response.as_object_mut()
        {
            object.insert("refresh_token".into(), refresh_token.into());
        }
        match self.user_with(token_response, endpoints).await {
            Ok(user) => Ok(Some(user)),
            Err(e) => {
                tracing::error!(error = %e, "a fresh access token did not work");
                Ok(None)
            }
        }
    }

    /// The token endpoint's form body and headers (kept out of the async fn: the form
    /// serializer is not Send).
    fn token_request(
        &self,
        code: &str,
        state: &LoginState,
    ) -> (String, Vec<(http::HeaderName, String)>) {
        self.form_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.config.oauth_callback_url),
            ("code_verifier", &state.code_verifier),
        ])
    }

    /// A token endpoint request: `pairs`, and the client's credentials as `basic_auth` says.
    fn form_request(&self, pairs: &[(&str, &str)]) -> (String, Vec<(http::HeaderName, String)>) {
        let secret = self
            .config
            .client_secret
            .as_ref()
            .map(|s| s.expose())
            .unwrap_or_default();
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (key, value) in pairs {
            form.append_pair(key, value);
        }
        let mut headers = Vec::new();
        if self.config.basic_auth {
            // RFC 6749 2.3.1: each part form-urlencoded before the Basic encoding.
            let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(&self.config.client_id), enc(secret));
            headers.push((
                http::header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ),
            ));
        } else {
            form.append_pair("client_id", &self.config.client_id)
                .append_pair("client_secret", secret);
        }
        (form.finish(), headers)
    }

    /// The user, groups and auth_state from the claims (pure, apart from the config).
    fn user_from(
        &self,
        mut userdata: Value,
        access_token: String,
        id_token: Option<String>,
        token_response: Value,
    ) -> Result<OAuthUser, Error> {
        let claim_name = &self.config.username_claim;
        let name = match claim(&userdata, claim_name) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(Error::NoUsername(claim_name.clone())),
        };
        let name = self.preset.username(name, &mut userdata);
        let groups = self
            .config
            .groups_key()
            .map(|key| groups_from(&userdata, key))
            .unwrap_or_default();
        let refresh_token = token_response.get("refresh_token").cloned();
        let mut auth_state = json!({
            "access_token": access_token,
            "refresh_token": refresh_token,
            "id_token": id_token,
            "scope": self.config.scope,
            "token_response": token_response,
        });
        auth_state[self.preset.user_key()] = userdata;
        Ok(OAuthUser {
            name,
            groups,
            admin: None,
            in_allowed_groups: None,
            auth_state,
        })
    }

    /// `admin_groups` and `allowed_groups` on the user's groups. An admin flag already true
    /// (Google's `admin_google_groups`) stays, as upstream's `if not auth_model["admin"]`.
    fn apply_group_options(&self, user: &mut OAuthUser) {
        let any = |list: &[String]| list.iter().any(|g| user.groups.contains(g));
        if !self.config.admin_groups.is_empty() {
            user.admin = Some(user.admin == Some(true) || any(&self.config.admin_groups));
        }
        if !self.config.allowed_groups.is_empty() {
            user.in_allowed_groups = Some(any(&self.config.allowed_groups));
        }
    }

    /// The ID token's claims: verified against the JWKS when there is one (OIDC), else read
    /// as they are, as OAuthenticator does for a token it got straight from `token_url`.
    async fn id_token_claims(&self, token: &str, endpoints: &Endpoints) -> Result<Value, Error> {
        let Some(jwks_uri) = &endpoints.jwks_uri else {
            return unverified_claims(token);
        };
        let document = self
            .http
            .get_json(jwks_uri, None)
            .await
            .map_err(|e| Error::IdToken(format!("fetching the JWKS: {e}")))?;
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(document)
            .map_err(|e| Error::IdToken(format!("reading the JWKS: {e}")))?;
        verify_id_token(
            token,
            &jwks,
            endpoints.issuer.as_deref().unwrap_or_default(),
            &self.config.client_id,
        )
    }
}

/// Whether a failure means the stored tokens are no longer good (so the refresh token is
/// next), rather than that the provider could not be asked.
fn refused_token(error: &Error) -> bool {
    matches!(error, Error::TokenRefused(_) | Error::IdToken(_))
}

fn provider_error(answer: &Value, status: http::StatusCode) -> String {
    let error = answer.get("error").and_then(Value::as_str);
    let description = answer.get("error_description").and_then(Value::as_str);
    match (error, description) {
        (Some(e), Some(d)) => format!("{e}: {d}"),
        (Some(e), None) => e.to_owned(),
        _ => format!("HTTP {status}"),
    }
}

fn unverified_claims(token: &str) -> Result<Value, Error> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| Error::IdToken("not a JWT".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| Error::IdToken(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::IdToken(e.to_string()))
}

/// Check an ID token's signature with the key its header names, and its `iss`, `aud` and
/// `exp` (within `LEEWAY_SECS`).
pub fn verify_id_token(
    token: &str,
    jwks: &jsonwebtoken::jwk::JwkSet,
    issuer: &str,
    client_id: &str,
) -> Result<Value, Error> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let bad = |why: String| Error::IdToken(why);
    let header = jsonwebtoken::decode_header(token).map_err(|e| bad(e.to_string()))?;
    let allowed = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    if !allowed.contains(&header.alg) {
        return Err(bad(format!("algorithm {:?} is not accepted", header.alg)));
    }
    let jwk = match &header.kid {
        Some(kid) => jwks.find(kid),
        None if jwks.keys.len() == 1 => jwks.keys.first(),
        None => None,
    }
    .ok_or_else(|| bad("no key in the provider's JWKS matches it".into()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_SECS;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let data =
        jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| bad(e.to_string()))?;
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc7636_example() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let state = LoginState::new("/hub/home");
        assert_eq!(state.code_verifier.len(), 43);
        assert!(state.matches(&state.state_id.clone()));
        assert!(!state.matches("other"));
        assert_ne!(state, LoginState::new("/hub/home"));
    }

    #[test]
    fn claims_nested_and_groups() {
        let data = json!({
            "preferred_username": "alice",
            "realm_access": {"roles": ["staff", "x"]},
            "group": "solo",
            "a.b": "dotted",
        });
        assert_eq!(claim(&data, "preferred_username"), Some(&json!("alice")));
        assert_eq!(claim(&data, "a.b"), Some(&json!("dotted")));
        assert_eq!(
            groups_from(&data, "realm_access.roles"),
            BTreeSet::from(["staff".into(), "x".into()])
        );
        assert_eq!(groups_from(&data, "group"), BTreeSet::from(["solo".into()]));
        assert!(groups_from(&data, "missing").is_empty());
    }

    #[test]
    fn groups_in_auth_state_as_upstream() {
        let state = json!({
            "google_user": {"email": "a@b", "google_groups": ["a", "b"]},
            "teams": [{"slug": "t"}],
            "flat.key": ["dotted"],
            "name": "solo",
            "none": null,
        });
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            groups_in_auth_state(&state, "google_user.google_groups"),
            set(&["a", "b"])
        );
        // Upstream walks dict.get per part: a key with a dot in its name is not found, nor a
        // path through a list or a string; a list of objects or a string is no groups.
        for key in [
            "flat.key",
            "teams",
            "teams.0",
            "name",
            "name.x",
            "none",
            "none.x",
            "missing",
            "google_user.missing",
            "",
        ] {
            assert!(groups_in_auth_state(&state, key).is_empty(), "{key}");
        }
    }

    fn client(config: GenericOAuthConfig) -> Client {
        Client::new(&config, false)
    }

    #[test]
    fn user_from_claims_applies_groups() {
        let c = client(GenericOAuthConfig {
            username_claim: "preferred_username".into(),
            auth_state_groups_key: Some("groups".into()),
            admin_groups: vec!["staff".into()],
            allowed_groups: vec!["students".into(), "staff".into()],
            ..GenericOAuthConfig::default()
        });
        let mut user = c
            .user_from(
                json!({"preferred_username": "alice", "groups": ["staff"]}),
                "at".into(),
                Some("idt".into()),
                json!({"access_token": "at", "refresh_token": "rt"}),
            )
            .expect("user");
        c.apply_group_options(&mut user);
        assert_eq!(user.name, "alice");
        assert_eq!(user.admin, Some(true));
        assert_eq!(user.in_allowed_groups, Some(true));
        assert_eq!(user.auth_state["refresh_token"], "rt");
        assert_eq!(user.auth_state["id_token"], "idt");
        assert_eq!(user.auth_state["oauth_user"]["groups"][0], "staff");
        let mut other = c
            .user_from(
                json!({"preferred_username": "bob", "groups": "guests"}),
                "at".into(),
                None,
                json!({}),
            )
            .expect("user");
        c.apply_group_options(&mut other);
        assert_eq!(other.admin, Some(false));
        assert_eq!(other.in_allowed_groups, Some(false));
        assert!(matches!(
            c.user_from(json!({"sub": "1"}), "at".into(), None, json!({})),
            Err(Error::NoUsername(_))
        ));
    }

    // A 2048-bit RSA test key (PKCS#1 DER) and its public JWK; used for nothing else.
    const TEST_KEY_DER: &[u8] = include_bytes!("oauth2_test_key.der");
    const TEST_JWK: &str = include_str!("oauth2_test_jwk.json");

    fn sign(claims: &Value, kid: &str) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.into());
        let key = jsonwebtoken::EncodingKey::from_rsa_der(TEST_KEY_DER);
        jsonwebtoken::encode(&header, claims, &key).expect("signs")
    }

    #[test]
    fn id_token_verified_against_jwks() {
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(TEST_JWK).expect("jwks");
        let now = jiff::Timestamp::now().as_second();
        let good = json!({"iss": "https://idp.test", "aud": "hub", "exp": now + 300,
            "iat": now, "sub": "1", "preferred_username": "alice"});
        let claims = verify_id_token(&sign(&good, "k1"), &jwks, "https://idp.test", "hub")
            .expect("valid token");
        assert_eq!(claims["preferred_username"], "alice");
        // Expired only within the leeway still passes; beyond it fails.
        let mut skewed = good.clone();
        skewed["exp"] = json!(now - 30);
        assert!(verify_id_token(&sign(&skewed, "k1"), &jwks, "https://idp.test", "hub").is_ok());
        skewed["exp"] = json!(now - 600);
        assert!(verify_id_token(&sign(&skewed, "k1"), &jwks, "https://idp.test", "hub").is_err());
        // Another audience, another issuer, an unknown key, a tampered payload.
        assert!(verify_id_token(&sign(&good, "k1"), &jwks, "https://idp.test", "other").is_err());
        assert!(verify_id_token(&sign(&good, "k1"), &jwks, "https://evil.test", "hub").is_err());
        assert!(verify_id_token(&sign(&good, "k2"), &jwks, "https://idp.test", "hub").is_err());
        let token = sign(&good, "k1");
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&json!({"iss": "https://idp.test", "aud": "hub",
                "exp": now + 300, "preferred_username": "root"}))
            .expect("json"),
        );
        parts[1] = &forged;
        assert!(verify_id_token(&parts.join("."), &jwks, "https://idp.test", "hub").is_err());
    }
}
