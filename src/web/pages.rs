//! Upstream's `pages.py`: `/hub/` and where it sends you, home, the token page, the
//! `/hub/user/…` and `/hub/user-redirect/…` fallbacks for servers without a route, and
//! metrics; with the helpers every page handler shares (rendering, redirects, `next`).

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::cookie::bearer_token;
use crate::hub::{self, Hub};
use crate::rbac::Resource;

use super::session::Session;
use super::spawn::{pending_path, spawn_path, with_next};
use super::{PageError, render};

pub(super) fn page(
    hub: &Hub,
    session: &Session,
    status: StatusCode,
    template: &str,
    extra: Value,
) -> Response {
    let html = render(hub, template, session.context(hub, extra));
    let mut response = (status, Html(html)).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, session.xsrf_cookie(hub));
    response
}

pub(super) fn found(location: &str) -> Response {
    // 302, as upstream (axum's Redirect::to is 303).
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

pub(super) fn encode(value: &str) -> String {
    // Python's `quote(value, safe='')`: everything but unreserved characters.
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, SET).to_string()
}

pub(super) fn login_redirect(hub: &Hub, next: &str) -> Response {
    found(&format!(
        "{}hub/login?next={}",
        hub.base_url(),
        encode(next)
    ))
}

/// Upstream's `_validate_next_url`: only paths on this hub; anything with a foreign host or
/// not starting with `/` becomes empty (the caller then uses the default).
pub fn validate_next_url(next: &str, host: Option<&str>) -> String {
    let mut next = next.replace('\\', "%5C");
    while next.starts_with("///") {
        next.remove(0);
    }
    if let Some(rest) = next
        .strip_prefix("//")
        .map(|r| format!("http://{r}"))
        .or_else(|| {
            (next.starts_with("http://") || next.starts_with("https://")).then(|| next.clone())
        })
    {
        let Ok(url) = url::Url::parse(&rest) else {
            return String::new();
        };
        let same_host = match (url.host_str(), host) {
            (Some(h), Some(expected)) => {
                let with_port = match url.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_owned(),
                };
                with_port == expected || h == expected
            }
            _ => false,
        };
        if !same_host {
            return String::new();
        }
        let mut path = url.path().to_owned();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        if let Some(f) = url.fragment() {
            path.push('#');
            path.push_str(f);
        }
        return path;
    }
    if !next.starts_with('/') || next.starts_with("//") {
        return String::new();
    }
    next
}

/// `?next=…`, the one query parameter most pages read.
#[derive(serde::Deserialize, Default)]
pub struct NextQuery {
    pub next: Option<String>,
}

pub(super) fn host(session: &Session) -> Option<&str> {
    session
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
}

/// Where to go after login or from `/hub/`: a valid `next`, else `default_url`, else the
/// user's running server or the spawn page (`redirect_to_server`), else home.
pub(super) fn next_url(hub: &Hub, session: &Session, next: Option<&str>) -> String {
    let validated = next
        .map(|n| validate_next_url(n, host(session)))
        .unwrap_or_default();
    if !validated.is_empty() {
        return validated;
    }
    if let Some(url) = &hub.config().hub.default_url {
        return url.clone();
    }
    if let (true, Some(user)) = (
        hub.config().hub.redirect_to_server,
        session.identity.as_ref().and_then(|i| i.user()),
    ) {
        if hub.server_ready(&(user.id, String::new())) {
            return hub.server_url(&user.name, "");
        }
        return format!("{}hub/spawn", hub.base_url());
    }
    format!("{}hub/home", hub.base_url())
}

/// `GET /hub/`.
pub async fn hub_root(State(hub): State<Hub>, session: Session) -> Response {
    if session.identity.is_none() {
        return login_redirect(&hub, &format!("{}hub/", hub.base_url()));
    }
    found(&next_url(&hub, &session, None))
}

// The error is the redirect to send; pages return it at once, so its size does not matter.
#[allow(clippy::result_large_err)]
pub(super) fn require_user(
    hub: &Hub,
    session: &Session,
    uri: &Uri,
) -> Result<crate::hub::UserRow, Response> {
    match session.identity.as_ref().and_then(|i| i.user()) {
        Some(user) => Ok(user.clone()),
        None => Err(login_redirect(
            hub,
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/hub/"),
        )),
    }
}

/// `GET /hub/home`.
pub async fn home(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
) -> Result<Response, PageError> {
    let user = match require_user(&hub, &session, &uri) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let spawners = hub.server_records(&user)?;
    let describe = |row: &crate::hub::SpawnerRow| {
        let key = (user.id, row.name.clone());
        json!({
            "name": row.name,
            "url": hub.server_url(&user.name, &row.name),
            "running": hub.server_ready(&key),
            "pending": hub.server_pending(&key),
            "last_activity": row.last_activity.map(crate::time::iso),
        })
    };
    let default = spawners.iter().find(|r| r.name.is_empty());
    let failure = default
        .and_then(|r| r.last_failure.clone())
        .filter(|_| default.is_some_and(|r| r.url.is_none()));
    Ok(page(
        &hub,
        &session,
        StatusCode::OK,
        "home.html",
        json!({
            "default_server": default.map(describe).unwrap_or(json!({"running": false, "pending": null})),
            "named_servers": spawners.iter().filter(|r| !r.name.is_empty()).map(describe).collect::<Vec<_>>(),
            "allow_named_servers": hub.config().hub.allow_named_servers,
            "failure": failure,
        }),
    ))
}

/// `GET /hub/token`.
pub async fn token_page(State(hub): State<Hub>, session: Session, uri: Uri) -> Response {
    if let Err(redirect) = require_user(&hub, &session, &uri) {
        return redirect;
    }
    page(&hub, &session, StatusCode::OK, "token.html", json!({}))
}

/// `GET /hub/user/{user}` → add the slash.
pub async fn user_url_bare(State(hub): State<Hub>, Path(user): Path<String>) -> Response {
    found(&format!(
        "{}hub/user/{}/",
        hub.base_url(),
        crate::hub::escape_path(&user)
    ))
}

/// `/hub/user/{user}/…`: a request for a user server that has no route (contract §7.4).
pub async fn user_url(
    State(hub): State<Hub>,
    session: Session,
    method: axum::http::Method,
    uri: Uri,
    Path((user, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let token_identity = match bearer_token(&session.headers) {
        Some(token) => hub.identify_token(token)?,
        None => None,
    };
    let identity = match token_identity.or_else(|| session.identity.clone()) {
        Some(identity) => identity,
        None => {
            return Ok(login_redirect(
                &hub,
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            ));
        }
    };
    let owner = hub.user(&user).map_err(|_| hub::Error::NoAccess)?;
    let groups = hub.user_groups(&owner)?;
    let first = rest.split('/').next().unwrap_or("").to_owned();
    let spawners = hub.server_records(&owner)?;
    let server = if hub.config().hub.allow_named_servers
        && !first.is_empty()
        && spawners.iter().any(|s| s.name == first)
    {
        first.clone()
    } else {
        String::new()
    };
    if !identity.allows(
        "access:servers",
        &Resource::Server {
            user: &owner.name,
            server: &server,
            groups: &groups,
        },
    ) {
        return Err(hub::Error::NoAccess.into());
    }
    let key = (owner.id, server.clone());
    let original = format!(
        "{}user/{}/{}",
        hub.base_url(),
        crate::hub::escape_path(&owner.name),
        rest
    );
    let original_with_query = match query.as_deref().filter(|q| !q.is_empty()) {
        Some(q) => format!("{original}?{q}"),
        None => original.clone(),
    };
    if hub.server_ready(&key)
        && hub.server_pending(&key).is_none()
        && method == axum::http::Method::GET
    {
        let mut pairs: Vec<(String, String)> = query
            .as_deref()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let redirects: u32 = pairs
            .iter()
            .find(|(k, _)| k == "redirects")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        if redirects >= hub.config().hub.user_redirect_limit {
            return Err(PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Redirect loop detected.",
            ));
        }
        if redirects >= 1 {
            tokio::time::sleep(Duration::from_secs(2u64.pow(redirects).min(10))).await;
        }
        pairs.retain(|(k, _)| k != "redirects");
        pairs.push(("redirects".into(), (redirects + 1).to_string()));
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        return Ok(found(&format!("{original}?{encoded}")));
    }
    let accept = session
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let api_like = accept.starts_with("application/json")
        || rest.split('/').any(|segment| segment == "api")
        || method != axum::http::Method::GET;
    let spawn_url = spawn_path(&hub, &owner.name, &server);
    if api_like {
        let message = format!(
            "JupyterHub server no longer running at {original}. Restart the server at {spawn_url}"
        );
        return Ok((
            StatusCode::FAILED_DEPENDENCY,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"message": message}).to_string(),
        )
            .into_response());
    }
    let row = spawners.iter().find(|s| s.name == server);
    if hub.server_pending(&key).is_some() || row.is_some_and(|r| r.last_failure.is_some()) {
        let mut response = StatusCode::SEE_OTHER.into_response();
        if let Ok(value) = HeaderValue::from_str(&with_next(
            pending_path(&hub, &owner.name, &server),
            Some(&original_with_query),
        )) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        return Ok(response);
    }
    let spawn_url = with_next(spawn_url, Some(&original_with_query));
    Ok(page(
        &hub,
        &session,
        StatusCode::FAILED_DEPENDENCY,
        "not_running.html",
        json!({"spawn_url": spawn_url, "server_name": server}),
    ))
}

/// `/hub/user-redirect/{path}`: the current user's server, starting it if needed.
pub async fn user_redirect(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let me = match require_user(&hub, &session, &uri) {
        Ok(user) => user,
        Err(redirect) => return redirect,
    };
    let mut target = format!("{}{}", hub.server_url(&me.name, ""), path);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        target.push('?');
        target.push_str(&q);
    }
    found(&with_next(spawn_path(&hub, &me.name, ""), Some(&target)))
}

/// `GET /hub/metrics`: Prometheus metrics; needs `read:metrics` unless
/// `authenticate_prometheus = false`.
pub async fn metrics(State(hub): State<Hub>, session: Session) -> Result<Response, PageError> {
    if hub.config().hub.authenticate_prometheus {
        let identity = match bearer_token(&session.headers) {
            Some(token) => hub.identify_token(token)?,
            None => session.identity.clone(),
        };
        let allowed = identity.is_some_and(|i| i.allows("read:metrics", &Resource::Hub));
        if !allowed {
            return Err(hub::Error::Forbidden("read:metrics is required".into()).into());
        }
    }
    hub.refresh_gauges();
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        hub.metrics().encode(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_url_validation() {
        let host = Some("hub.example.org");
        for (input, expected) in [
            ("/hub/home", "/hub/home"),
            ("/user/alice/lab?x=1", "/user/alice/lab?x=1"),
            ("https://evil.com/x", ""),
            ("//evil.com/x", ""),
            ("///evil.com/x", ""),
            ("https://hub.example.org/user/a/?q=1#f", "/user/a/?q=1#f"),
            ("//hub.example.org/hub/", "/hub/"),
            ("relative/path", ""),
            ("/\\evil.com", "/%5Cevil.com"),
        ] {
            assert_eq!(validate_next_url(input, host), expected, "{input}");
        }
    }
}
