//! Upstream's `apihandlers/hub.py`: `/hub/api/` (the version), `/info`, `/health`,
//! `/shutdown`, and the API's 404.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::hub::Hub;
use crate::rbac::Resource;

use super::error::ApiError;
use super::extract::{Auth, JsonBody};

/// `GET /hub/api/`: the version, for anyone (single-user servers check it at start).
pub async fn root() -> Response {
    (
        [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        Json(json!({"version": crate::JUPYTERHUB_VERSION})),
    )
        .into_response()
}

/// `GET /hub/api/health`.
pub async fn health() -> StatusCode {
    StatusCode::OK
}

/// `GET /hub/api/info` (read:hub).
pub async fn info(State(hub): State<Hub>, Auth(identity): Auth) -> Result<Json<Value>, ApiError> {
    identity.require(&["read:hub"], &Resource::Hub)?;
    Ok(Json(json!({
        "version": crate::JUPYTERHUB_VERSION,
        "python": "none (jupyterhub-rs)",
        "sys_executable": std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
        "spawner": {"class": hub.spawner_name(), "version": env!("CARGO_PKG_VERSION")},
        "authenticator": {"class": hub.authenticator_name(), "version": env!("CARGO_PKG_VERSION")},
    })))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ShutdownBody {
    proxy: Option<bool>,
    servers: Option<bool>,
}

/// `POST /hub/api/shutdown`: stops the hub; user servers keep running unless `servers`.
pub async fn shutdown(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    JsonBody(body): JsonBody<Option<ShutdownBody>>,
) -> Result<Response, ApiError> {
    identity.require(&["shutdown"], &Resource::Hub)?;
    let body = body.unwrap_or_default();
    let _ = body.proxy;
    if body.servers == Some(true) {
        hub.stop_all_servers().await?;
    }
    tracing::info!(by = %identity.principal.name(), "shutdown requested through the API");
    hub.shutdown_soon();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message": "Shutting down Hub"})),
    )
        .into_response())
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("Not Found")
}
