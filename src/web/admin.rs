//! Upstream's admin page handler: the page the admin panel's scripts run in (`admin-ui`).

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::json;

use crate::hub::{self, Hub};

use super::PageError;
use super::base::{page, require_user};
use super::session::Session;

/// `GET /hub/admin` (admin-ui).
pub async fn admin_page(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
) -> Result<Response, PageError> {
    if let Err(redirect) = require_user(&hub, &session, &uri) {
        return Ok(redirect);
    }
    let allowed = session
        .identity
        .as_ref()
        .is_some_and(|i| i.scopes.has("admin-ui"));
    if !allowed {
        return Err(hub::Error::Forbidden(
            "You do not have permission to view the admin page (admin-ui).".into(),
        )
        .into());
    }
    Ok(page(
        &hub,
        &session,
        StatusCode::OK,
        "admin.html",
        json!({"allow_named_servers": hub.config().hub.allow_named_servers}),
    ))
}
