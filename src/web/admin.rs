//! Upstream's admin page handler: the page the admin panel's script runs in (`admin-ui`), and
//! the script itself (`static/admin.js`, built in: no Node or build step on the hub host).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
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
        json!({
            // A failure to obtain or renew the HTTPS certificate, in the CA's words.
            "letsencrypt": hub.acme_report(),
            "allow_named_servers": hub.config().hub.allow_named_servers,
            "static_version": script_version(),
            // The script shows only the controls these allow (expanded, with filters).
            "jhdata": {
                "scopes": session.identity.as_ref().map(|i| i.scopes.sorted()).unwrap_or_default(),
                "allow_named_servers": hub.config().hub.allow_named_servers,
            },
        }),
    ))
}

const SCRIPT: &str = include_str!("static/admin.js");

/// A digest of the script, so a new hub's page never runs an old cached script.
pub(super) fn script_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(SCRIPT.as_bytes())[..8])
    })
}

/// `GET /hub/static/js/admin.js`: cached for a day when asked for by its version (as the
/// page does), revalidated otherwise.
pub async fn admin_script(uri: Uri, headers: HeaderMap) -> Response {
    let etag = format!("\"{}\"", script_version());
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let versioned = uri.query().is_some_and(|q| q.contains(script_version()));
    let cache = if versioned {
        "public, max-age=86400"
    } else {
        "no-cache"
    };
    (
        [
            (
                header::CONTENT_TYPE,
                "text/javascript; charset=utf-8".to_owned(),
            ),
            (header::CACHE_CONTROL, cache.to_owned()),
            (header::ETAG, etag),
        ],
        SCRIPT,
    )
        .into_response()
}
