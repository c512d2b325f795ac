//! Upstream's `apihandlers/proxy.py`: `/hub/api/proxy`, the route table and its re-sync.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use crate::hub::Hub;
use crate::rbac::Resource;

use super::error::ApiError;
use super::extract::Auth;

/// `GET /hub/api/proxy`: `{routespec: {routespec, target, data}}`.
pub async fn proxy_routes(
    State(hub): State<Hub>,
    Auth(identity): Auth,
) -> Result<Json<Value>, ApiError> {
    identity.require(&["proxy"], &Resource::Hub)?;
    Ok(Json(hub.proxy_table()))
}

/// `POST /hub/api/proxy`: re-check routes against running servers.
pub async fn proxy_sync(
    State(hub): State<Hub>,
    Auth(identity): Auth,
) -> Result<StatusCode, ApiError> {
    identity.require(&["proxy"], &Resource::Hub)?;
    hub.reconcile().await?;
    Ok(StatusCode::OK)
}
