//! `/hub/api/groups[/{name}[/users|/properties]]`.

use axum::Json;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::hub::Hub;
use crate::rbac::Resource;

use super::error::ApiError;
use super::extract::{Auth, JsonBody, Page};

/// `GET /groups` (list:groups).
pub async fn list(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    if !identity.scopes.has("list:groups") {
        identity.require(&["list:groups"], &Resource::Hub)?;
    }
    let page = Page::from_request(&hub, &headers, &query)?;
    let (items, total) = hub.list_groups(&identity, page.offset, page.limit)?;
    let host = headers.get("host").and_then(|v| v.to_str().ok());
    Ok(Json(page.wrap(items, total, &uri, host)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroups {
    groups: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
}

/// `POST /groups` (admin:groups): `{"groups": [...], "users": [...]}`.
pub async fn create_many(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    JsonBody(body): JsonBody<Option<CreateGroups>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    identity.require(&["admin:groups"], &Resource::Hub)?;
    let body = body.ok_or_else(|| ApiError::bad_request("Must specify groups"))?;
    if body.groups.is_empty() {
        return Err(ApiError::bad_request(
            "Must specify at least one group to create",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(Value::Array(hub.create_groups(
            &identity,
            &body.groups,
            &body.users,
        )?)),
    ))
}

fn authorize_group(
    hub: &Hub,
    identity: &crate::hub::Identity,
    name: &str,
    scopes: &[&str],
) -> Result<crate::hub::GroupRow, ApiError> {
    if !scopes.iter().any(|s| identity.scopes.has(s)) {
        return Err(crate::hub::Error::MissingScope(scopes.join(", ")).into());
    }
    let group = hub.group(name)?;
    identity.require(scopes, &Resource::Group { name })?;
    Ok(group)
}

/// `GET /groups/{name}`.
pub async fn get(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let group = authorize_group(
        &hub,
        &identity,
        &name,
        &["read:groups", "read:groups:name", "read:roles:groups"],
    )?;
    Ok(Json(hub.group_model(&identity, &group)?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    #[serde(default)]
    users: Vec<String>,
}

/// `POST /groups/{name}` (admin:groups).
pub async fn create(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Option<CreateGroup>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    identity.require(&["admin:groups"], &Resource::Group { name: &name })?;
    let users = body.unwrap_or_default().users;
    let mut created = hub.create_groups(&identity, std::slice::from_ref(&name), &users)?;
    Ok((
        StatusCode::CREATED,
        Json(created.pop().unwrap_or(Value::Null)),
    ))
}

/// `DELETE /groups/{name}` (delete:groups).
pub async fn delete(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize_group(&hub, &identity, &name, &["delete:groups"])?;
    hub.delete_group(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Members {
    users: Vec<String>,
}

/// `POST /groups/{name}/users` (groups).
pub async fn add_users(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Option<Members>>,
) -> Result<Json<Value>, ApiError> {
    authorize_group(&hub, &identity, &name, &["groups"])?;
    let body = body.ok_or_else(|| ApiError::bad_request("Must specify users"))?;
    Ok(Json(hub.change_group_members(
        &identity,
        &name,
        &body.users,
        true,
    )?))
}

/// `DELETE /groups/{name}/users` (groups).
pub async fn remove_users(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Option<Members>>,
) -> Result<Json<Value>, ApiError> {
    authorize_group(&hub, &identity, &name, &["groups"])?;
    let body = body.ok_or_else(|| ApiError::bad_request("Must specify users"))?;
    Ok(Json(hub.change_group_members(
        &identity,
        &name,
        &body.users,
        false,
    )?))
}

/// `PUT /groups/{name}/properties` (groups).
pub async fn set_properties(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    authorize_group(&hub, &identity, &name, &["groups"])?;
    Ok(Json(hub.set_group_properties(&identity, &name, &body)?))
}
