//! `/hub/api/users[/{name}]` and `/users/{name}/activity`.

use axum::Json;
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use axum::response::Response;

use crate::hub::{Hub, Identity, UserListQuery};
use crate::rbac::Resource;

use super::error::ApiError;
use super::extract::{Auth, JsonBody, Page, remembered_answer};

fn truthy(query: &[(String, String)], key: &str) -> bool {
    query
        .iter()
        .find(|(k, _)| k == key)
        .is_some_and(|(_, v)| !matches!(v.to_ascii_lowercase().as_str(), "0" | "false"))
}

/// `GET /users` (list:users, rows filtered by its filters). A token's answer is remembered
/// until the database or a server's state changes (`hub/cache.rs`): admin panels and
/// culling services ask the same page again and again.
pub async fn list(State(hub): State<Hub>, request: Request) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.clone(), |u| u.0.clone());
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    // Everything the answer depends on besides the token: the query, whether the envelope
    // was asked for, and the host its `next` link names.
    let what = format!(
        "users?{}\0{}\0{}",
        uri.query().unwrap_or(""),
        header(axum::http::header::ACCEPT),
        header(axum::http::header::HOST)
    );
    remembered_answer(&hub, &mut parts, &what, |parts, identity| {
        let Query(query) = Query::<Vec<(String, String)>>::try_from_uri(&uri)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        list_page(&hub, identity, &parts.headers, &uri, &query)
    })
    .await
}

fn list_page(
    hub: &Hub,
    identity: &Identity,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    query: &[(String, String)],
) -> Result<Value, ApiError> {
    if !identity.scopes.has("list:users") {
        identity.require(&["list:users"], &Resource::Hub)?;
    }
    let page = Page::from_request(hub, headers, query)?;
    let get = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let list_query = UserListQuery {
        state: get("state"),
        offset: page.offset,
        limit: page.limit,
        include_stopped_servers: truthy(query, "include_stopped_servers"),
        sort: get("sort"),
        name_filter: get("name_filter"),
    };
    let (items, total) = hub.list_users(identity, &list_query)?;
    let host = headers.get("host").and_then(|v| v.to_str().ok());
    Ok(page.wrap(items, total, uri, host))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUsers {
    usernames: Vec<String>,
    #[serde(default)]
    admin: bool,
}

/// `POST /users` (admin:users): `{"usernames": [...], "admin": bool}`.
pub async fn create_many(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    JsonBody(body): JsonBody<Option<CreateUsers>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    identity.require(&["admin:users"], &Resource::Hub)?;
    let body = body.ok_or_else(|| ApiError::bad_request("Must specify usernames"))?;
    let created = hub
        .create_users(&identity, &body.usernames, body.admin)
        .await?;
    Ok((StatusCode::CREATED, Json(Value::Array(created))))
}

const READ_USER_SCOPES: &[&str] = &[
    "read:users",
    "read:users:name",
    "read:servers",
    "read:users:groups",
    "read:users:activity",
    "read:roles:users",
];

/// `GET /users/{name}`.
pub async fn get(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let user = authorize_user(&hub, &identity, &name, READ_USER_SCOPES)?;
    let mut model = hub.user_model(&identity, &user, truthy(&query, "include_stopped_servers"))?;
    let groups = hub.user_groups(&user)?;
    if identity.allows(
        "admin:auth_state",
        &Resource::User {
            name: &user.name,
            groups: &groups,
        },
    ) {
        model["auth_state"] = hub.auth_state(&user)?;
    }
    Ok(Json(model))
}

/// Look up a user and check that one of `scopes` covers it (403 vs 404 as upstream). A
/// missing user is a 404 only for callers who could have seen it.
pub fn authorize_user(
    hub: &Hub,
    identity: &crate::hub::Identity,
    name: &str,
    scopes: &[&str],
) -> Result<crate::hub::UserRow, ApiError> {
    if !scopes.iter().any(|s| identity.scopes.has(s)) {
        return Err(crate::hub::Error::MissingScope(scopes.join(", ")).into());
    }
    let user = hub
        .user(name)
        .map_err(|_| ApiError::not_found(format!("No such user: {name}")))?;
    let groups = hub.user_groups(&user)?;
    identity.require(
        scopes,
        &Resource::User {
            name: &user.name,
            groups: &groups,
        },
    )?;
    Ok(user)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[serde(default)]
    admin: bool,
}

/// `POST /users/{name}` (admin:users).
pub async fn create(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Option<CreateUser>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    identity.require(
        &["admin:users"],
        &Resource::User {
            name: &name,
            groups: &[],
        },
    )?;
    let model = hub
        .create_user(&identity, &name, body.unwrap_or_default().admin)
        .await?;
    Ok((StatusCode::CREATED, Json(model)))
}

/// `PATCH /users/{name}` (admin:users): rename, admin, auth_state.
pub async fn update(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    authorize_user(&hub, &identity, &name, &["admin:users"])?;
    Ok(Json(hub.update_user(&identity, &name, &body)?))
}

/// `DELETE /users/{name}` (delete:users).
pub async fn delete(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize_user(&hub, &identity, &name, &["delete:users"])?;
    hub.delete_user(&identity, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /users/{name}/activity` (users:activity).
pub async fn activity(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, [(axum::http::HeaderName, &'static str); 1]), ApiError> {
    authorize_user(&hub, &identity, &name, &["users:activity"])?;
    if !body.is_object() {
        return Err(ApiError::bad_request("body must be a JSON object"));
    }
    hub.record_activity(&name, &body)?;
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
    ))
}

/// `POST /users/{name}/admin-access`: deprecated no-op kept for old clients.
pub async fn admin_access(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize_user(&hub, &identity, &name, &["servers"])?;
    Ok(StatusCode::OK)
}
