//! Upstream's `apihandlers/shares.py` (JupyterHub 5): `/shares/{owner}[/{server}]`,
//! `/share-codes/{owner}[/{server}]`, `/users/{name}/shared[/{owner}/{server}]` and
//! `/groups/{name}/shared[/{owner}/{server}]`. The default server is the empty segment
//! (`/shares/alice/`), as upstream's `([^/]*)`.

use axum::Json;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use serde_json::Value;

use crate::hub::{DEFAULT_CODE_EXPIRES_IN, Hub, Identity, ShareTarget};
use crate::rbac::Resource;

use super::error::ApiError;
use super::extract::{Auth, JsonBody, Page};

type Query_ = Query<Vec<(String, String)>>;

/// `{owner}/{server}`; the default server's routes end in `/` and have no `server`.
#[derive(Deserialize)]
pub struct ServerPath {
    owner: String,
    #[serde(default)]
    server: String,
}

/// `{name}/shared/{owner}/{server}`, the server optional as in `ServerPath`.
#[derive(Deserialize)]
pub struct SharePath {
    name: String,
    owner: String,
    #[serde(default)]
    server: String,
}

/// The scope check of upstream's `needs_scope` with `user_name` (and `server_name`).
fn require_on_owner(
    hub: &Hub,
    identity: &Identity,
    scope: &str,
    owner: &str,
    server: Option<&str>,
) -> Result<(), ApiError> {
    let groups = hub
        .user(owner)
        .and_then(|u| hub.user_groups(&u))
        .unwrap_or_default();
    let resource = match server {
        Some(server) => Resource::Server {
            user: owner,
            server,
            groups: &groups,
        },
        None => Resource::User {
            name: owner,
            groups: &groups,
        },
    };
    Ok(identity.require(&[scope], &resource)?)
}

fn paginate(
    hub: &Hub,
    headers: &HeaderMap,
    uri: &Uri,
    query: &[(String, String)],
    items: Vec<Value>,
) -> Result<Json<Value>, ApiError> {
    let page = Page::from_request(hub, headers, query)?;
    let total = items.len();
    let items = items
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .collect();
    let host = headers.get("host").and_then(|v| v.to_str().ok());
    Ok(Json(page.wrap(items, total, uri, host)))
}

fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    group: Option<String>,
}

impl ShareRequest {
    /// Upstream's `user_group_exclusive` validator.
    fn target(&self) -> Result<ShareTarget<'_>, ApiError> {
        match (&self.user, &self.group) {
            (Some(u), Some(g)) if !u.is_empty() && !g.is_empty() => Err(ApiError::bad_request(
                "Expected exactly one of `user` or `group`, not both.",
            )),
            (None, None) => Err(ApiError::bad_request(
                "Specify exactly one of `user` or `group`",
            )),
            (Some(u), _) if !u.is_empty() || self.group.is_none() => Ok(ShareTarget::User(u)),
            (_, Some(g)) => Ok(ShareTarget::Group(g)),
            (Some(u), None) => Ok(ShareTarget::User(u)),
        }
    }
}

/// `GET /shares/{owner}` (read:shares).
pub async fn owner_shares(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(owner): Path<String>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(query): Query_,
) -> Result<Json<Value>, ApiError> {
    require_on_owner(&hub, &identity, "read:shares", &owner, None)?;
    let items = hub.server_shares(&owner, None)?;
    paginate(&hub, &headers, &uri, &query, items)
}

/// `POST|PATCH|DELETE /shares/{owner}`: only `GET` names no server.
pub async fn owner_shares_other(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(owner): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_on_owner(&hub, &identity, "shares", &owner, None)?;
    Err(method_not_allowed())
}

/// `GET /shares/{owner}/{server}` (read:shares).
pub async fn server_shares(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(ServerPath { owner, server }): Path<ServerPath>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(query): Query_,
) -> Result<Json<Value>, ApiError> {
    require_on_owner(&hub, &identity, "read:shares", &owner, Some(&server))?;
    let items = hub.server_shares(&owner, Some(&server))?;
    paginate(&hub, &headers, &uri, &query, items)
}

/// `POST /shares/{owner}/{server}` (shares): `{"user"|"group": name, "scopes": [...]}`.
pub async fn grant(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(ServerPath { owner, server }): Path<ServerPath>,
    JsonBody(body): JsonBody<Option<ShareRequest>>,
) -> Result<Json<Value>, ApiError> {
    require_on_owner(&hub, &identity, "shares", &owner, Some(&server))?;
    let body = body.unwrap_or_default();
    let target = body.target()?;
    Ok(Json(hub.grant_share(
        &identity,
        &owner,
        &server,
        target,
        body.scopes.as_deref(),
    )?))
}

/// `PATCH /shares/{owner}/{server}` (shares): revoke scopes (all, without `scopes`).
pub async fn revoke(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(ServerPath { owner, server }): Path<ServerPath>,
    JsonBody(body): JsonBody<Option<ShareRequest>>,
) -> Result<Json<Value>, ApiError> {
    require_on_owner(&hub, &identity, "shares", &owner, Some(&server))?;
    let body = body.unwrap_or_default();
    let target = body.target()?;
    Ok(Json(hub.revoke_share(
        &owner,
        &server,
        target,
        body.scopes.as_deref(),
    )?))
}

/// `DELETE /shares/{owner}/{server}` (shares): every share of the server.
pub async fn delete_all(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(ServerPath { owner, server }): Path<ServerPath>,
) -> Result<StatusCode, ApiError> {
    require_on_owner(&hub, &identity, "shares", &owner, Some(&server))?;
    hub.delete_server_shares(&owner, &server)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /share-codes/{owner}` (read:shares).
pub async fn owner_codes(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(owner): Path<String>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(query): Query_,
) -> Result<Json<Value>, ApiError> {
    require_on_owner(&hub, &identity, "read:shares", &owner, None)?;
    let items = hub.share_codes(&owner, None)?;
    paginate(&hub, &headers, &uri, &query, items)
}

/// `GET /share-codes/{owner}/{server}` (read:shares).
pub async fn server_codes(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(ServerPath { owner, server }): Path<ServerPath>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(query): Query_,
) -> Result<Json<Value>, ApiError> {
    require_on_owner(&hub, &identity, "read:shares", &owner, Some(&server))?;
    let items = hub.share_codes(&owner, Some(&server))?;
    paginate(&hub, &headers, &uri, &query, items)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default = "default_expires_in")]
    expires_in: Value,
}

fn default_expires_in() -> Value {
    Value::from(DEFAULT_CODE_EXPIRES_IN)
}

/// Upstream's `conint(ge=60, le=525600 * 60)`: at least a minute, at most a year.
fn expires_in(value: &Value) -> Result<i64, ApiError> {
    const MAX: i64 = 525_600 * 60;
    let n = match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        _ => None,
    }
    .ok_or_else(|| ApiError::bad_request("expires_in: Input should be a valid integer"))?;
    if n < 60 {
        return Err(ApiError::bad_request(
            "expires_in: Input should be greater than or equal to 60",
        ));
    }
    if n > MAX {
        return Err(ApiError::bad_request(format!(
            "expires_in: Input should be less than or equal to {MAX}"
        )));
    }
    Ok(n)
}

/// `POST /share-codes/{owner}/{server}` (shares): a new code, returned this once.
pub async fn create_code(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(ServerPath { owner, server }): Path<ServerPath>,
    JsonBody(body): JsonBody<Option<CodeRequest>>,
) -> Result<Json<Value>, ApiError> {
    require_on_owner(&hub, &identity, "shares", &owner, Some(&server))?;
    let (scopes, expires) = match &body {
        Some(body) => (body.scopes.as_deref(), expires_in(&body.expires_in)?),
        None => (None, DEFAULT_CODE_EXPIRES_IN),
    };
    Ok(Json(hub.create_share_code(
        &identity, &owner, &server, scopes, expires,
    )?))
}

/// `DELETE /share-codes/{owner}/{server}[?code=…|?id=sc_N]` (shares).
pub async fn delete_codes(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(ServerPath { owner, server }): Path<ServerPath>,
    Query(query): Query_,
) -> Result<StatusCode, ApiError> {
    require_on_owner(&hub, &identity, "shares", &owner, Some(&server))?;
    let arg = |key: &str| {
        query
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    hub.delete_share_codes(&owner, &server, arg("code"), arg("id"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST|PATCH|DELETE /share-codes/{owner}`: only `GET` names no server.
pub async fn owner_codes_other(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(owner): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_on_owner(&hub, &identity, "shares", &owner, None)?;
    Err(method_not_allowed())
}

/// `GET /users/{name}/shared` (read:users:shares).
pub async fn user_shared(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(query): Query_,
) -> Result<Json<Value>, ApiError> {
    require_on_owner(&hub, &identity, "read:users:shares", &name, None)?;
    let items = hub.user_shared(&name)?;
    paginate(&hub, &headers, &uri, &query, items)
}

/// `GET /users/{name}/shared/{owner}/{server}` (read:users:shares).
pub async fn user_share(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(SharePath {
        name,
        owner,
        server,
    }): Path<SharePath>,
) -> Result<Json<Value>, ApiError> {
    require_on_owner(&hub, &identity, "read:users:shares", &name, None)?;
    Ok(Json(hub.share(
        ShareTarget::User(&name),
        &owner,
        &server,
    )?))
}

/// `DELETE /users/{name}/shared/{owner}/{server}` (users:shares): give a share up.
pub async fn delete_user_share(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(SharePath {
        name,
        owner,
        server,
    }): Path<SharePath>,
) -> Result<StatusCode, ApiError> {
    require_on_owner(&hub, &identity, "users:shares", &name, None)?;
    hub.delete_share(ShareTarget::User(&name), &owner, &server)?;
    Ok(StatusCode::NO_CONTENT)
}

fn require_on_group(identity: &Identity, scope: &str, name: &str) -> Result<(), ApiError> {
    Ok(identity.require(&[scope], &Resource::Group { name })?)
}

/// `GET /groups/{name}/shared` (read:groups:shares).
pub async fn group_shared(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(query): Query_,
) -> Result<Json<Value>, ApiError> {
    require_on_group(&identity, "read:groups:shares", &name)?;
    let items = hub.group_shared(&name)?;
    paginate(&hub, &headers, &uri, &query, items)
}

/// `GET /groups/{name}/shared/{owner}/{server}` (read:groups:shares).
pub async fn group_share(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(SharePath {
        name,
        owner,
        server,
    }): Path<SharePath>,
) -> Result<Json<Value>, ApiError> {
    require_on_group(&identity, "read:groups:shares", &name)?;
    Ok(Json(hub.share(
        ShareTarget::Group(&name),
        &owner,
        &server,
    )?))
}

/// `DELETE /groups/{name}/shared/{owner}/{server}` (groups:shares).
pub async fn delete_group_share(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(SharePath {
        name,
        owner,
        server,
    }): Path<SharePath>,
) -> Result<StatusCode, ApiError> {
    require_on_group(&identity, "groups:shares", &name)?;
    hub.delete_share(ShareTarget::Group(&name), &owner, &server)?;
    Ok(StatusCode::NO_CONTENT)
}
