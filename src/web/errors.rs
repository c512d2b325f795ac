//! Upstream's `base.py` error handling: `PageError` (a status and a message, rendered with
//! `error.html`), the `error_pages` middleware that renders it with the hub's
//! `template_paths`, the proxy's `/hub/error/{code}` target and the pages' 404.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde_json::json;

use crate::hub::{self, Hub};
use crate::status::Failure;

use super::{environment, render_with};

/// An error page: the status, and the message shown on `error.html`.
#[derive(Debug, Clone)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }

    fn render(&self, env: &Environment<'_>) -> String {
        render_with(
            env,
            "error.html",
            json!({
                "status_code": self.status.as_u16(),
                "status_message": self.status.canonical_reason().unwrap_or(""),
                "message": self.message,
                "base_url": "/",
                "jhdata": {"base_url": "/"},
            }),
        )
    }
}

impl From<crate::hub::Error> for PageError {
    fn from(error: crate::hub::Error) -> PageError {
        let failure = Failure::from(error);
        PageError::new(failure.status, failure.message)
    }
}

impl IntoResponse for PageError {
    /// Rendered with the built-in templates here, where no hub is at hand; the app's
    /// `error_pages` layer renders it again with the hub's `template_paths` if it has any.
    fn into_response(self) -> Response {
        let body = self.render(&environment(&[]));
        let mut response = (self.status, Html(body)).into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Middleware: error pages honour `template_paths`, whoever produced them.
pub async fn error_pages(State(hub): State<Hub>, mut response: Response) -> Response {
    if hub.config().hub.template_paths.is_empty() {
        return response;
    }
    if let Some(error) = response.extensions_mut().remove::<PageError>() {
        let env = environment(&hub.config().hub.template_paths);
        *response.body_mut() = axum::body::Body::from(error.render(&env));
        response
            .headers_mut()
            .remove(axum::http::header::CONTENT_LENGTH);
    }
    response
}

#[derive(serde::Deserialize)]
pub struct ErrorQuery {
    #[serde(default)]
    url: String,
}

/// `/hub/error/{code}`: the proxy's error target.
pub async fn error_page(Path(code): Path<u16>, Query(query): Query<ErrorQuery>) -> PageError {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let url = query.url;
    let message = if code == 503 {
        format!("Your server at {url} appears to be down. Try restarting it from the hub.")
    } else {
        format!("Error {code} for {url}")
    };
    PageError::new(status, message)
}

pub async fn not_found(uri: Uri) -> PageError {
    hub::Error::NotFound(format!("No page at {}", uri.path())).into()
}
