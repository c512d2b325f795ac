//! Upstream's `apihandlers/proxy.py`: `/hub/api/proxy`, the route table (paginated as
//! upstream) and its re-sync (`POST`, and `PATCH`, which upstream uses to point the hub at a
//! new external proxy).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use crate::hub::Hub;
use crate::rbac::Resource;

use super::error::ApiError;
use super::extract::{Auth, Page};

/// `GET /hub/api/proxy`: `{routespec: {routespec, target, data}}`, sorted by route; `offset`
/// and `limit` take a slice of that order, and `Accept: application/jupyterhub-pagination+json`
/// wraps it in `{items, _pagination}` (the items stay an object, as upstream's).
pub async fn proxy_routes(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    identity.require(&["proxy"], &Resource::Hub)?;
    let page = Page::from_request(&hub, &headers, &query)?;
    let Value::Object(all) = hub.proxy_table() else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the route table is not an object",
        ));
    };
    let total = all.len();
    let routes: Map<String, Value> = all.into_iter().skip(page.offset).take(page.limit).collect();
    let host = headers.get("host").and_then(|v| v.to_str().ok());
    Ok(Json(page.wrap_value(
        Value::Object(routes),
        total,
        &uri,
        host,
    )))
}

/// `POST /hub/api/proxy`: re-check routes against running servers (`check_routes`).
pub async fn proxy_sync(
    State(hub): State<Hub>,
    Auth(identity): Auth,
) -> Result<StatusCode, ApiError> {
    identity.require(&["proxy"], &Resource::Hub)?;
    hub.check_routes()?;
    Ok(StatusCode::OK)
}

/// `PATCH /hub/api/proxy`: upstream's way to tell the hub that a new proxy is in charge
/// (`api_url`, `auth_token`), then the same re-sync as `POST`. The proxy here is built in, so
/// those keys have nothing to point at and are only logged; the body is checked as upstream's.
pub async fn proxy_update(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    identity.require(&["proxy"], &Resource::Hub)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("need JSON body"));
    }
    let model: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("Request body must be JSON dict"))?;
    let Value::Object(model) = model else {
        return Err(ApiError::bad_request("Request body must be JSON dict"));
    };
    for key in ["api_url", "auth_token"] {
        if model.contains_key(key) {
            tracing::info!(
                by = %identity.principal.name(),
                key,
                "PATCH /hub/api/proxy: the proxy is built in; {key} is ignored"
            );
        }
    }
    hub.check_routes()?;
    Ok(StatusCode::OK)
}
