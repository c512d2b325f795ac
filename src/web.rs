//! Server-rendered pages under `{base_url}hub/`: login, logout, home, spawn, spawn-pending,
//! the "server not running" page, token and admin pages, and the redirects upstream makes
//! for paths that reach the hub without a route. Templates are Jinja (minijinja), with
//! upstream's form field names and element ids.

mod pages;
mod session;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use minijinja::Environment;
use serde_json::{Value, json};

use crate::hub::Hub;
use crate::status::Failure;

pub use pages::hub_root;
pub use session::{Session, login_cookies, logout_cookies};

const TEMPLATES: &[(&str, &str)] = &[
    ("page.html", include_str!("web/templates/page.html")),
    ("login.html", include_str!("web/templates/login.html")),
    ("home.html", include_str!("web/templates/home.html")),
    ("spawn.html", include_str!("web/templates/spawn.html")),
    (
        "spawn_pending.html",
        include_str!("web/templates/spawn_pending.html"),
    ),
    (
        "not_running.html",
        include_str!("web/templates/not_running.html"),
    ),
    ("error.html", include_str!("web/templates/error.html")),
    ("token.html", include_str!("web/templates/token.html")),
    ("admin.html", include_str!("web/templates/admin.html")),
    ("oauth.html", include_str!("web/templates/oauth.html")),
];

/// The template environment for these `template_paths`, built once per set of paths (a
/// process may run several hubs, as the tests do) and kept for the life of the process:
/// templates are read from disk on first use, as upstream's Tornado loader does.
pub fn environment(template_paths: &[PathBuf]) -> Arc<Environment<'static>> {
    static ENVIRONMENTS: OnceLock<Mutex<HashMap<Vec<PathBuf>, Arc<Environment<'static>>>>> =
        OnceLock::new();
    let mut built = ENVIRONMENTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    built
        .entry(template_paths.to_vec())
        .or_insert_with(|| Arc::new(build_environment(template_paths)))
        .clone()
}

/// Built-in templates, overridden by files of the same name in `template_paths`.
fn build_environment(template_paths: &[PathBuf]) -> Environment<'static> {
    let mut env = Environment::new();
    // minijinja's HTML escaping also escapes `/`, which makes URLs in pages unreadable;
    // escape what HTML needs and leave slashes alone.
    env.set_formatter(|out, state, value| {
        if *state.auto_escape() != minijinja::AutoEscape::None
            && !value.is_safe()
            && let Some(text) = value.as_str()
        {
            let escaped = text
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#x27;");
            return out.write_str(&escaped).map_err(minijinja::Error::from);
        }
        minijinja::escape_formatter(out, state, value)
    });
    let paths = template_paths.to_vec();
    env.set_loader(move |name| {
        for dir in &paths {
            let path = dir.join(name);
            if path.is_file() {
                return std::fs::read_to_string(&path).map(Some).map_err(|e| {
                    minijinja::Error::new(minijinja::ErrorKind::TemplateNotFound, e.to_string())
                });
            }
        }
        Ok(TEMPLATES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| text.to_string()))
    });
    env
}

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

fn render_with(env: &Environment<'_>, name: &str, context: Value) -> String {
    match env
        .get_template(name)
        .and_then(|t| t.render(minijinja::value::Serde(&context)))
    {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(template = name, error = %e, "template failed");
            format!(
                "<h1>Template error</h1><p>{}</p>",
                minijinja::HtmlEscape(&e.to_string())
            )
        }
    }
}

/// Render a template with the hub's environment.
pub fn render(hub: &Hub, name: &str, context: Value) -> String {
    render_with(
        &environment(&hub.config().hub.template_paths),
        name,
        context,
    )
}

/// Page routes, relative to `{base_url}hub`.
pub fn router() -> Router<Hub> {
    Router::new()
        .route("/", get(pages::hub_root))
        .route("/login", get(pages::login_form).post(pages::login_submit))
        .route("/logout", get(pages::logout))
        .route("/home", get(pages::home))
        .route("/token", get(pages::token_page))
        .route("/admin", get(pages::admin_page))
        .route(
            "/spawn",
            get(pages::spawn_self).post(pages::spawn_self_post),
        )
        .route(
            "/spawn/{user}",
            get(pages::spawn_user).post(pages::spawn_user_post),
        )
        .route(
            "/spawn/{user}/{server}",
            get(pages::spawn_named).post(pages::spawn_named_post),
        )
        .route("/spawn-pending/{user}", get(pages::spawn_pending_default))
        .route(
            "/spawn-pending/{user}/{server}",
            get(pages::spawn_pending_named),
        )
        .route("/user/{user}", get(pages::user_url_bare))
        .route("/user/{user}/{*rest}", axum::routing::any(pages::user_url))
        .route("/user-redirect/{*path}", get(pages::user_redirect))
        .route("/error/{code}", get(pages::error_page))
        .route("/metrics", get(pages::metrics))
        .route(
            "/health",
            get(|| async { StatusCode::OK }).head(|| async { StatusCode::OK }),
        )
        .fallback(pages::not_found)
}
