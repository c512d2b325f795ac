//! What every page handler shares, as upstream's `BaseHandler` (`handlers/base.py`):
//! rendering a page with its XSRF cookie, redirects, `next` validation, the login
//! requirement, the spawn paths, and query strings read as Tornado reads them.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::hub::Hub;

use super::session::Session;
use super::{PageError, render};

/// A typed query string that, like Tornado's `get_argument`, tolerates a repeated
/// parameter (the first one counts, as this hub always did) instead of refusing the page.
pub struct FirstQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for FirstQuery<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, PageError> {
        let mut map = serde_json::Map::new();
        for (key, value) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
            map.entry(key.into_owned())
                .or_insert_with(|| Value::String(value.into_owned()));
        }
        serde_json::from_value(Value::Object(map))
            .map(FirstQuery)
            .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, format!("query string: {e}")))
    }
}

pub(super) fn page(
    hub: &Hub,
    session: &Session,
    status: StatusCode,
    template: &str,
    extra: Value,
) -> Response {
    let html = render(
        hub,
        template,
        session.context(hub, with_announcement(hub, template, extra)),
    );
    let mut response = (status, Html(html)).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, session.xsrf_cookie(hub));
    response
}

/// Upstream's per-page announcements: `template_vars.announcement_login` (and `_home`,
/// `_spawn`, `_logout`) replaces `announcement` on that page.
fn with_announcement(hub: &Hub, template: &str, mut extra: Value) -> Value {
    let key = match template {
        "login.html" => "announcement_login",
        "home.html" => "announcement_home",
        "spawn.html" | "spawn_pending.html" => "announcement_spawn",
        "logout.html" => "announcement_logout",
        _ => return extra,
    };
    let own = hub
        .config()
        .hub
        .template_vars
        .get(key)
        .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        .cloned();
    if let (Some(own), Some(object)) = (own, extra.as_object_mut()) {
        object.entry("announcement").or_insert(own);
    }
    extra
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
///
/// The target is judged as a browser will read it (the WHATWG URL parser): browsers drop
/// ASCII tab, LF and CR anywhere and C0 controls and spaces at either end, so `/\t/evil.com`
/// is `//evil.com` to them. Those are removed first; any other control character refuses.
pub fn validate_next_url(next: &str, host: Option<&str>) -> String {
    let cleaned: String = next
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    if cleaned.chars().any(|c| c.is_ascii_control()) {
        return String::new();
    }
    let mut next = cleaned.replace('\\', "%5C");
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

// The error is the redirect to send; pages return it at once, so its size does not matter.
#[allow(clippy::result_large_err)]
pub(super) fn require_user(
    hub: &Hub,
    session: &Session,
    uri: &Uri,
) -> Result<crate::hub::UserRow, Response> {
    match session.identity.as_ref().and_then(|i| i.user()) {
        Some(user) => Ok(user.clone()),
        // Pages are nested under `{base_url}hub`, which the router strips from `uri`: put it
        // back, so the login sends the browser to this page and not to `/token`.
        None => Err(login_redirect(
            hub,
            &format!(
                "{}hub{}",
                hub.base_url(),
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
            ),
        )),
    }
}

pub(super) fn spawn_path(hub: &Hub, user: &str, server: &str) -> String {
    if server.is_empty() {
        format!(
            "{}hub/spawn/{}",
            hub.base_url(),
            crate::hub::escape_path(user)
        )
    } else {
        format!(
            "{}hub/spawn/{}/{}",
            hub.base_url(),
            crate::hub::escape_path(user),
            crate::hub::escape_path(server)
        )
    }
}

pub(super) fn pending_path(hub: &Hub, user: &str, server: &str) -> String {
    spawn_path(hub, user, server).replacen("hub/spawn/", "hub/spawn-pending/", 1)
}

pub(super) fn with_next(path: String, next: Option<&str>) -> String {
    match next.filter(|n| !n.is_empty()) {
        Some(next) => format!("{path}?next={}", encode(next)),
        None => path,
    }
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
            // What browsers drop must not hide a second slash (issue 18).
            ("/\t/evil.com", ""),
            ("/\r/evil.com", ""),
            ("/\n/evil.com", ""),
            ("\t//evil.com", ""),
            ("/\t\t/\r\n/evil.com", ""),
            (" //evil.com", ""),
            ("\x01//evil.com\x1f", ""),
            ("/\t\\evil.com", "/%5Cevil.com"),
            ("\\\t\\evil.com", ""),
            ("/\\\t/evil.com", "/%5C/evil.com"),
            ("\t/\t\\/evil.com", "/%5C/evil.com"),
            ("h\tttps://evil.com/", ""),
            ("https:\t//evil.com/", ""),
            ("/%09/evil.com", "/%09/evil.com"),
            ("/hub/\x00home", ""),
            ("/hub/\x7fhome", ""),
            ("/user/a/\tlab", "/user/a/lab"),
        ] {
            assert_eq!(validate_next_url(input, host), expected, "{input}");
        }
    }
}
