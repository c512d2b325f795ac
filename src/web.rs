//! Server-rendered pages under `{base_url}hub/`: login, logout, home, spawn, spawn-pending,
//! the "server not running" page, token and admin pages, and the redirects upstream makes
//! for paths that reach the hub without a route. Templates are Jinja (minijinja), with
//! upstream's form field names and element ids.

mod pages;
mod session;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use minijinja::Environment;
use serde_json::{Value, json};

use crate::hub::Hub;

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

/// Built-in templates, overridden by files of the same name in `template_paths`.
pub fn environment(template_paths: &[std::path::PathBuf]) -> Environment<'static> {
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

/// A rendered page, or an error page with the same status.
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
}

impl From<crate::hub::Error> for PageError {
    fn from(error: crate::hub::Error) -> PageError {
        let api = crate::api::ApiError::from(error);
        PageError {
            status: api.status,
            message: api.message,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let env = environment(&[]);
        let body = render_with(
            &env,
            "error.html",
            json!({
                "status_code": self.status.as_u16(),
                "status_message": self.status.canonical_reason().unwrap_or(""),
                "message": self.message,
                "base_url": "/",
                "jhdata": {"base_url": "/"},
            }),
        );
        (self.status, Html(body)).into_response()
    }
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
    let env = environment(&hub.config().hub.template_paths);
    render_with(&env, name, context)
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
