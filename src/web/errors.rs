//! Upstream's `base.py` error handling: `PageError` (a status and a message, rendered with
//! `error.html`), the `error_pages` middleware that renders it with the hub's
//! `template_paths`, the proxy's `/hub/error/{code}` target and the pages' 404.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde_json::{Map, Value, json};

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

    /// `error.html` with upstream's names for the hub's URLs, under `prefix` (the hub's
    /// `base_url`), and `extra` (the config's `template_vars`).
    fn render(&self, env: &Environment<'_>, prefix: &str, extra: &Map<String, Value>) -> String {
        let hub_url = format!("{prefix}hub/");
        let mut context = json!({
            "status_code": self.status.as_u16(),
            "status_message": self.status.canonical_reason().unwrap_or(""),
            "message": self.message,
            "base_url": hub_url,
            "prefix": prefix,
            "login_url": format!("{hub_url}login"),
            "logout_url": format!("{hub_url}logout"),
            "jhdata": {"base_url": hub_url, "prefix": prefix},
        });
        if let Some(object) = context.as_object_mut() {
            for (key, value) in extra {
                object.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        render_with(env, "error.html", context)
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
    /// `error_pages` layer renders it again with the hub's base URL, `template_paths` and
    /// `template_vars`.
    fn into_response(self) -> Response {
        let body = self.render(&environment(&[]), "/", &Map::new());
        let mut response = (self.status, Html(body)).into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Middleware: error pages honour the hub's base URL, `template_paths` and
/// `template_vars`, whoever produced them.
pub async fn error_pages(State(hub): State<Hub>, mut response: Response) -> Response {
    if let Some(error) = response.extensions_mut().remove::<PageError>() {
        let config = &hub.config().hub;
        let env = environment(&config.template_paths);
        let vars: Map<String, Value> = config
            .template_vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        *response.body_mut() = axum::body::Body::from(error.render(&env, hub.base_url(), &vars));
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
