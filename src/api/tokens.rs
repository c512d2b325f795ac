//! `/hub/api/users/{name}/tokens[/{id}]`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::hub::{Hub, TokenRequest};

use super::error::ApiError;
use super::extract::{Auth, JsonBody};
use super::users::authorize_user;

/// `GET /users/{name}/tokens` (read:tokens).
pub async fn list(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = authorize_user(&hub, &identity, &name, &["read:tokens"])?;
    Ok(Json(json!({"api_tokens": hub.list_tokens(&user)?})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    note: Option<String>,
    expires_in: Option<u64>,
    scopes: Option<Vec<String>>,
    roles: Option<Vec<String>>,
    #[allow(dead_code)]
    auth: Option<Value>,
}

/// `POST /users/{name}/tokens` (tokens).
pub async fn create(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Option<CreateToken>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = authorize_user(&hub, &identity, &name, &["tokens"])?;
    let body = body.unwrap_or_default();
    let request = TokenRequest {
        note: body.note,
        expires_in: body.expires_in,
        scopes: body.scopes,
        roles: body.roles,
    };
    let (_, model) = hub.create_token(&user, Some(&identity), &request)?;
    Ok((StatusCode::CREATED, Json(model)))
}

/// `GET /users/{name}/tokens/{id}` (read:tokens).
pub async fn get(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let user = authorize_user(&hub, &identity, &name, &["read:tokens"])?;
    Ok(Json(hub.get_token(&user, &id)?))
}

/// `DELETE /users/{name}/tokens/{id}` (tokens).
pub async fn delete(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user = authorize_user(&hub, &identity, &name, &["tokens"])?;
    hub.delete_token(&user, &id)?;
    Ok(StatusCode::NO_CONTENT)
}
