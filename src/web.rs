//! Server-rendered pages under `{base_url}hub/`, a file per upstream handler module:
//! `login` (login, logout), `spawn` (spawn and its options form, spawn-pending), `pages`
//! (`/hub/`, home, token, the `/user/…` fallbacks, metrics), `admin`, `errors` (error pages);
//! `session` is who is looking. Here: the template environment (Jinja via minijinja,
//! upstream's form field names and element ids) and the route table.

mod admin;
mod base;
mod errors;
mod login;
mod pages;
mod session;
mod spawn;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use minijinja::Environment;
use serde_json::Value;

use crate::hub::Hub;

pub use base::FirstQuery;
pub use errors::{PageError, error_pages};
pub use pages::{hub_root, metrics};
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
    (
        "change_password.html",
        include_str!("web/templates/change_password.html"),
    ),
    (
        "accept-share.html",
        include_str!("web/templates/accept-share.html"),
    ),
    (
        "stop_pending.html",
        include_str!("web/templates/stop_pending.html"),
    ),
];

/// The version of the hub's static files, for `?v=` cache busting (upstream's
/// `version_hash`): a hash of what they are.
pub(crate) fn static_version() -> &'static str {
    admin::script_version()
}

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
    env.add_function("static_url", static_url);
    env.add_function("url_path_join", url_path_join);
    let paths = template_paths.to_vec();
    env.set_loader(move |name| {
        // `templates/NAME` is always the built-in one, as in upstream's loader, so a custom
        // `page.html` can extend the page it replaces.
        if let Some(builtin) = name.strip_prefix("templates/") {
            return Ok(TEMPLATES
                .iter()
                .find(|(n, _)| *n == builtin)
                .map(|(_, text)| text.to_string()));
        }
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

/// Upstream's `static_url(path, include_version=True)` in templates: under the page's
/// `base_url` (the hub's), versioned for caching.
fn static_url(
    state: &minijinja::State<'_, '_>,
    path: String,
    kwargs: minijinja::value::Kwargs,
) -> Result<String, minijinja::Error> {
    let versioned = kwargs
        .get::<Option<bool>>("include_version")?
        .unwrap_or(true);
    kwargs.assert_all_used()?;
    let base = state
        .lookup("base_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "/hub/".to_owned());
    let url = format!("{base}static/{}", path.trim_start_matches('/'));
    Ok(if versioned {
        format!("{url}?v={}", static_version())
    } else {
        url
    })
}

/// Upstream's `url_path_join(*pieces)`: joined with exactly one `/` between pieces.
fn url_path_join(pieces: minijinja::value::Rest<String>) -> String {
    let mut out = String::new();
    for piece in pieces.iter().filter(|p| !p.is_empty()) {
        if out.is_empty() {
            out.push_str(piece);
        } else {
            out = format!(
                "{}/{}",
                out.trim_end_matches('/'),
                piece.trim_start_matches('/')
            );
        }
    }
    out
}

pub(crate) fn render_with(env: &Environment<'_>, name: &str, context: Value) -> String {
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
        .route("/login", get(login::login_form).post(login::login_submit))
        .route("/logout", get(login::logout))
        .route("/oauth_login", get(login::oauth_login))
        .route("/oauth_callback", get(login::oauth_callback))
        .route(
            "/auth/change-password",
            get(login::change_password_form).post(login::change_password_submit),
        )
        .route(
            "/auth/change-password/{user}",
            get(login::change_password_form).post(login::change_password_submit),
        )
        .route("/home", get(pages::home))
        .route("/token", get(pages::token_page))
        .route(
            "/accept-share",
            get(pages::accept_share).post(pages::accept_share_post),
        )
        .route("/admin", get(admin::admin_page))
        .route("/static/js/admin.js", get(admin::admin_script))
        .route(
            "/spawn",
            get(spawn::spawn_self).post(spawn::spawn_self_post),
        )
        .route(
            "/spawn/{user}",
            get(spawn::spawn_user).post(spawn::spawn_user_post),
        )
        .route(
            "/spawn/{user}/{server}",
            get(spawn::spawn_named).post(spawn::spawn_named_post),
        )
        .route("/spawn-pending/{user}", get(spawn::spawn_pending_default))
        .route(
            "/spawn-pending/{user}/{server}",
            get(spawn::spawn_pending_named),
        )
        .route("/user/{user}", get(pages::user_url_bare))
        .route("/user/{user}/{*rest}", axum::routing::any(pages::user_url))
        .route("/user-redirect/{*path}", get(pages::user_redirect))
        .route("/error/{code}", get(errors::error_page))
        .route("/metrics", get(pages::metrics))
        .route(
            "/security/csp-report",
            axum::routing::post(pages::csp_report),
        )
        .route("/logo", get(pages::logo))
        .route(
            "/health",
            get(|| async { StatusCode::OK }).head(|| async { StatusCode::OK }),
        )
        .fallback(errors::not_found)
}
