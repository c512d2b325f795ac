//! The OAuth2 provider single-user servers and services log in through, at upstream's
//! paths: `GET|POST /hub/api/oauth2/authorize` (a page: cookie login) and
//! `POST /hub/api/oauth2/token` (client credentials). Codes are single-use, live 5 minutes,
//! are stored hashed, and may carry a PKCE S256 challenge (6.x single-user servers send one).
//! The routes are mounted beside the REST API (`app`), not inside its route table: the
//! authorize endpoint is a page (`web::Session`, an HTML confirmation), the token endpoint
//! answers in RFC 6749's error shape; both take statuses for domain errors from `status`.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::hub::{self, ClientOwner, CodeRequest, Hub, OAuthClientRow};
use crate::rbac::{self, Resource};
use crate::status::Failure;
use crate::web::{FirstQuery, PageError, Session};

/// The provider's routes, relative to `{base_url}hub/api` (upstream's paths).
pub fn router() -> Router<Hub> {
    Router::new()
        .route("/oauth2/authorize", get(authorize).post(authorize_confirm))
        .route("/oauth2/token", post(token))
}

/// The authorize request's parameters (RFC 6749 §4.1.1, RFC 7636 §4.3).
#[derive(serde::Deserialize, Default)]
pub struct AuthorizeQuery {
    #[serde(default)]
    client_id: String,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    #[serde(default)]
    state: String,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    scope: Option<String>,
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn found(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{encoded}")
}

/// The scopes a token issued to this client gets: identify + the client's access scopes +
/// its allowed scopes, each only if the user holds it (upstream's `_resolve_requested_scopes`).
fn resolve_scopes(
    identity: &crate::hub::Identity,
    membership: &impl rbac::Membership,
    user: &str,
    client: &OAuthClientRow,
    requested: Option<&str>,
) -> Vec<String> {
    let mut wanted: Vec<String> = match requested.filter(|s| !s.trim().is_empty()) {
        Some(scopes) => scopes
            .split_whitespace()
            .filter(|s| *s != "identify")
            .map(str::to_owned)
            .collect(),
        None => client.allowed_scopes.clone(),
    };
    wanted.extend(rbac::identify_scopes(user));
    match &client.owner {
        ClientOwner::Server {
            user: owner,
            server,
        } => wanted.push(format!("access:servers!server={owner}/{server}")),
        ClientOwner::Service(name) => wanted.push(format!("access:services!service={name}")),
        ClientOwner::Hub => {}
    }
    wanted.sort();
    wanted.dedup();
    let owner = rbac::Owner::User { name: user };
    wanted
        .into_iter()
        .filter(
            |scope| match rbac::expand(std::slice::from_ref(scope), &owner) {
                Ok(expanded) => rbac::excess(&expanded, &identity.scopes, membership).is_empty(),
                Err(_) => false,
            },
        )
        .collect()
}

/// `GET /hub/api/oauth2/authorize`.
pub async fn authorize(
    State(hub): State<Hub>,
    session: Session,
    FirstQuery(params): FirstQuery<AuthorizeQuery>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    authorize_inner(hub, session, params, query, false).await
}

/// `POST /hub/api/oauth2/authorize`: the confirmation form's answer.
pub async fn authorize_confirm(
    State(hub): State<Hub>,
    session: Session,
    FirstQuery(params): FirstQuery<AuthorizeQuery>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    if !session.check_form_xsrf(&hub, param(&form, "_xsrf")) {
        return Err(
            hub::Error::Forbidden("XSRF cookie does not match POST argument".into()).into(),
        );
    }
    authorize_inner(hub, session, params, query, true).await
}

async fn authorize_inner(
    hub: Hub,
    session: Session,
    params: AuthorizeQuery,
    query: Option<String>,
    confirmed: bool,
) -> Result<Response, PageError> {
    let Some(identity) = session.identity.clone() else {
        let here = format!(
            "{}hub/api/oauth2/authorize?{}",
            hub.base_url(),
            query.unwrap_or_default()
        );
        let next = percent_encoding::utf8_percent_encode(&here, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
        return Ok(found(&format!("{}hub/login?next={next}", hub.base_url())));
    };
    let Some(user) = identity.user().cloned() else {
        return Err(hub::Error::Forbidden("Only users can authorize OAuth clients".into()).into());
    };
    let client_id = params.client_id.as_str();
    let client = hub
        .oauth_client(client_id)?
        .filter(|c| !c.secret.is_empty())
        .ok_or_else(|| hub::Error::BadRequest(format!("Invalid client_id: {client_id:?}")))?;
    let redirect_uri = params
        .redirect_uri
        .unwrap_or_else(|| client.redirect_uri.clone());
    if redirect_uri != client.redirect_uri {
        return Err(hub::Error::BadRequest("Mismatching redirect URI.".into()).into());
    }
    if params.response_type.as_deref() != Some("code") {
        return Err(hub::Error::BadRequest(
            "Unsupported response_type: only 'code' is supported.".into(),
        )
        .into());
    }
    let state = params.state;
    let challenge = params.code_challenge;
    let method = params.code_challenge_method;
    if let Some(method) = &method
        && method != "S256"
        && method != "plain"
    {
        return Ok(found(&with_query(
            &redirect_uri,
            &[
                ("error", "invalid_request"),
                ("error_description", "unsupported code_challenge_method"),
                ("state", &state),
            ],
        )));
    }
    // Access: the client's server or service must be reachable by this user.
    let own = match &client.owner {
        ClientOwner::Server {
            user: owner,
            server,
        } => {
            let owner_row = hub
                .user(owner)
                .map_err(|_| hub::Error::NotFound("The server's owner no longer exists".into()))?;
            let groups = hub.user_groups(&owner_row)?;
            if !identity.allows(
                "access:servers",
                &Resource::Server {
                    user: owner,
                    server,
                    groups: &groups,
                },
            ) {
                return Err(no_permission(&client));
            }
            *owner == user.name
        }
        ClientOwner::Service(name) => {
            if !identity.allows("access:services", &Resource::Service { name }) {
                return Err(no_permission(&client));
            }
            hub.service_spec(name)?.is_some_and(|s| s.oauth_no_confirm)
        }
        ClientOwner::Hub => false,
    };
    let scopes = resolve_scopes(
        &identity,
        &hub.membership(),
        &user.name,
        &client,
        params.scope.as_deref(),
    );
    if !own && !confirmed {
        let html = crate::web::render(
            &hub,
            "oauth.html",
            session.context(&hub, json!({"client": client.description, "scopes": scopes, "action": format!("?{}", query.unwrap_or_default())})),
        );
        let mut response = (StatusCode::OK, axum::response::Html(html)).into_response();
        response
            .headers_mut()
            .append(header::SET_COOKIE, session.xsrf_cookie(&hub));
        return Ok(response);
    }
    let session_id = session.session_id().map(str::to_owned);
    let code = hub.create_oauth_code(&CodeRequest {
        client: &client,
        user: &user,
        redirect_uri: &redirect_uri,
        scopes: &scopes,
        session_id,
        code_challenge: challenge,
        code_challenge_method: method,
    })?;
    Ok(found(&with_query(
        &redirect_uri,
        &[("code", &code), ("state", &state)],
    )))
}

fn no_permission(client: &OAuthClientRow) -> PageError {
    hub::Error::Forbidden(format!(
        "You do not have permission to access {}",
        client.description
    ))
    .into()
}

/// RFC 6749 §5.2 when the hub itself failed: the status of the domain error, the body
/// `server_error`.
fn server_error(what: &str, error: impl Into<hub::Error>) -> Response {
    let error = error.into();
    tracing::error!(error = %error, "{what}");
    oauth_error(Failure::from(error).status, "server_error", None)
}

fn oauth_error(status: StatusCode, error: &str, description: Option<&str>) -> Response {
    let mut body = json!({"error": error});
    if let Some(description) = description {
        body["error_description"] = json!(description);
    }
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response()
}

/// Client credentials from the form, or HTTP Basic.
fn client_credentials(form: &[(String, String)], headers: &HeaderMap) -> Option<(String, String)> {
    if let (Some(id), Some(secret)) = (param(form, "client_id"), param(form, "client_secret")) {
        return Some((id.to_owned(), secret.to_owned()));
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?,
    )
    .ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((unescape(id), unescape(secret)))
}

/// `POST /hub/api/oauth2/token`: exchange a code for an access token.
pub async fn token(
    State(hub): State<Hub>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    if param(&form, "grant_type") != Some("authorization_code") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", None);
    }
    let Some((client_id, secret)) = client_credentials(&form, &headers) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", None);
    };
    let client = match hub.oauth_client(&client_id) {
        Ok(Some(client))
            if !client.secret.is_empty() && crate::auth::compare_token(&client.secret, &secret) =>
        {
            client
        }
        Ok(_) => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", None),
        Err(e) => return server_error("oauth client lookup failed", e),
    };
    let Some(code) = param(&form, "code") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("Missing code parameter."),
        );
    };
    let row = match hub.take_oauth_code(&client, code) {
        Ok(Some(row)) => row,
        Ok(_) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None),
        Err(e) => return server_error("oauth code lookup failed", e),
    };
    if param(&form, "redirect_uri").is_some_and(|uri| uri != row.redirect_uri) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("Mismatching redirect URI."),
        );
    }
    if let Some(challenge) = &row.code_challenge {
        let Some(verifier) = param(&form, "code_verifier") else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("Code verifier required."),
            );
        };
        let computed = match row.code_challenge_method.as_deref() {
            Some("S256") => base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(verifier.as_bytes())),
            _ => verifier.to_owned(),
        };
        if computed != *challenge {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None);
        }
    }
    let (access_token, expires_in) = match hub.issue_oauth_token(&client, &row) {
        Ok(issued) => issued,
        Err(e) => return server_error("could not store an oauth token", e),
    };
    let body: Value = json!({
        "access_token": access_token,
        "expires_in": expires_in,
        "token_type": "Bearer",
        "scope": row.scopes.join(" "),
    });
    (
        StatusCode::OK,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_python_hashlib() {
        // base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b'='), as the
        // 6.x single-user server computes it.
        let verifier = "dBjftJeZ4CVP-mJ92K9qbcWFFzAmpbMHQ9-CvnoYqQk";
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(verifier.as_bytes()));
        assert_eq!(challenge, "U78HZsPpN6hRyxhrnL6Gm-WFGirexV2KS2QVYlsxqJw");
    }

    #[test]
    fn basic_credentials() {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("service-x:s%3Acret");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {encoded}").parse().expect("header"),
        );
        assert_eq!(
            client_credentials(&[], &headers),
            Some(("service-x".into(), "s:cret".into()))
        );
        let form = vec![
            ("client_id".to_string(), "a".to_string()),
            ("client_secret".to_string(), "b".to_string()),
        ];
        assert_eq!(
            client_credentials(&form, &HeaderMap::new()),
            Some(("a".into(), "b".into()))
        );
    }

    #[test]
    fn redirect_query_is_appended() {
        assert_eq!(
            with_query("/user/a/oauth_callback", &[("code", "x"), ("state", "s t")]),
            "/user/a/oauth_callback?code=x&state=s+t"
        );
        assert_eq!(with_query("/cb?x=1", &[("code", "y")]), "/cb?x=1&code=y");
    }
}
