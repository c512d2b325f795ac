//! Upstream's `apihandlers/auth.py`: `/hub/api/user` (whoami) and the deprecated
//! `/authorizations/token` and `/authorizations/cookie` endpoints.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::auth::cookie;
use crate::hub::{Hub, Identity, Principal};

use super::error::ApiError;
use super::extract::{Auth, remembered_answer};

/// `GET /hub/api/user`: the caller's own model plus `scopes`. 403 (never 401/404) for a bad
/// token, which is what the single-user server expects. A token's answer is remembered until
/// the database or a server's state changes (`hub/cache.rs`): single-user servers and
/// services ask it for every request they authenticate.
pub async fn whoami(State(hub): State<Hub>, request: Request) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    remembered_answer(&hub, &mut parts, "user", |_, identity| {
        whoami_model(&hub, identity)
    })
    .await
}

fn whoami_model(hub: &Hub, identity: &Identity) -> Result<Value, ApiError> {
    let mut model = match &identity.principal {
        Principal::User(user) => {
            // The owner may always read its identity, whatever the token's scopes.
            // Expansion distributes over union, and the token's scopes are expanded already:
            // only the identify scopes are expanded here.
            let mut reader = identity.clone();
            let identify = crate::rbac::expand(
                &crate::rbac::identify_scopes(&user.name),
                &crate::rbac::Owner::User { name: &user.name },
            )
            .map_err(crate::hub::Error::from)?;
            reader.scopes = reader.scopes.union(&identify);
            let mut model = hub.user_model(&reader, user, false)?;
            if let Some(object) = model.as_object_mut() {
                object.entry("admin").or_insert(json!(user.admin));
                object.entry("groups").or_insert(json!(identity.groups));
                object.entry("user_info").or_insert(Value::Null);
            }
            model
        }
        Principal::Service(service) => {
            json!({"kind": "service", "name": service.name, "admin": service.admin})
        }
    };
    model["token_id"] = identity
        .token
        .as_ref()
        .map(|t| json!(format!("a{}", t.id)))
        .unwrap_or(Value::Null);
    model["session_id"] = json!(identity.session_id);
    model["scopes"] = json!(identity.scopes.sorted());
    Ok(model)
}

/// `POST /hub/api/authorizations/token`: removed in JupyterHub 2.0; always 404.
pub async fn authorizations_removed() -> ApiError {
    ApiError::not_found(
        "This endpoint was removed in JupyterHub 2.0; use POST /hub/api/users/:name/tokens",
    )
}

/// `GET /hub/api/authorizations/token/{token}` (deprecated): the owner of a token.
pub async fn authorization_token(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(token): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(owner) = hub.identify_token(&token)? else {
        return Err(ApiError::not_found("No such token"));
    };
    match &owner.principal {
        Principal::User(user) => Ok(Json(hub.user_model(&identity, user, false)?)),
        Principal::Service(service) => Ok(Json(
            json!({"kind": "service", "name": service.name, "admin": service.admin}),
        )),
    }
}

/// Upstream's `@token_authenticated`: only a token in `Authorization` counts (no cookie), and
/// anything else is tornado's bare 403.
fn token_caller(hub: &Hub, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let forbidden = || ApiError::new(StatusCode::FORBIDDEN, "Forbidden");
    let token = cookie::bearer_token(headers).ok_or_else(forbidden)?;
    hub.identify_token(token)?.ok_or_else(forbidden)
}

/// Python's `urllib.parse.quote(name, safe='')`, which upstream applies to the cookie's name
/// before checking the signature (the name is part of what is signed).
fn quote(name: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'_')
        .remove(b'.')
        .remove(b'-')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(name, SET).to_string()
}

/// The user a signed login cookie belongs to, in the caller's view of users (upstream's
/// `CookieAPIHandler.get`): 404 for a forged, expired or unknown cookie.
fn cookie_owner(
    hub: &Hub,
    headers: &HeaderMap,
    cookie_name: &str,
    cookie_value: &str,
) -> Result<Json<Value>, ApiError> {
    let caller = token_caller(hub, headers)?;
    tracing::warn!(
        "/authorizations/cookie endpoint is deprecated in JupyterHub 2.0. Use /api/user with OAuth tokens."
    );
    let not_found = || ApiError::not_found("Not Found");
    let max_age = (hub.config().hub.cookie_max_age_days * 86400.0) as i64;
    let cookie_id = hub
        .secret()
        .verify(
            &quote(cookie_name),
            cookie_value,
            max_age,
            cookie::now_secs(),
        )
        .ok_or_else(not_found)?;
    let owner = hub
        .identify_cookie(&cookie_id, None)?
        .ok_or_else(not_found)?;
    let Principal::User(user) = &owner.principal else {
        return Err(not_found());
    };
    Ok(Json(hub.user_model(&caller, user, false)?))
}

/// `GET /hub/api/authorizations/cookie/{cookie_name}/{cookie_value}` (deprecated, token only).
pub async fn authorization_cookie(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path((cookie_name, cookie_value)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    cookie_owner(&hub, &headers, &cookie_name, &cookie_value)
}

/// `GET /hub/api/authorizations/cookie/{cookie_name}` with the cookie's value as the body
/// (deprecated twice over upstream, still served).
pub async fn authorization_cookie_in_body(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path(cookie_name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    tracing::warn!("Cookie values in request body is deprecated, use `/cookie_name/cookie_value`");
    cookie_owner(
        &hub,
        &headers,
        &cookie_name,
        &String::from_utf8_lossy(&body),
    )
}
