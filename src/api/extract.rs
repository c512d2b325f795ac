//! Request extractors shared by the API and the pages: who is asking (token or login cookie,
//! with XSRF checks for cookie-authenticated calls), JSON bodies that fail in JupyterHub's
//! error shape, and pagination parameters.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use serde::de::DeserializeOwned;

use crate::auth::cookie::{LOGIN_COOKIE, SESSION_COOKIE, XSRF_COOKIE};
use crate::hub::{Hub, Identity};

use super::error::ApiError;

/// A cookie's value from the `Cookie` header.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// `Authorization: token X` or `bearer X` (case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(char::is_whitespace)?;
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        .then(|| token.trim())
        .filter(|t| !t.is_empty() && !t.contains(char::is_whitespace))
}

pub fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The user's login, from the signed login cookie.
pub fn cookie_identity(hub: &Hub, headers: &HeaderMap) -> Result<Option<Identity>, ApiError> {
    let Some(signed) = cookie(headers, LOGIN_COOKIE) else {
        return Ok(None);
    };
    let max_age = (hub.config().hub.cookie_max_age_days * 86400.0) as i64;
    let Some(cookie_id) = hub
        .secret()
        .verify(LOGIN_COOKIE, signed, max_age, now_secs())
    else {
        return Ok(None);
    };
    let session_id = cookie(headers, SESSION_COOKIE).map(str::to_owned);
    Ok(hub.identify_cookie(&cookie_id, session_id)?)
}

/// The XSRF id for a logged-in session, as upstream: `{session_id}:{cookie_id}`.
pub fn xsrf_id(identity: Option<&Identity>, headers: &HeaderMap, peer_ip: &str) -> String {
    let session = cookie(headers, SESSION_COOKIE).unwrap_or("None");
    match identity.and_then(|i| i.user()) {
        Some(user) => format!("{session}:{}", user.cookie_id),
        None => {
            let agent = headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!(
                "{session}:{}",
                crate::auth::cookie::anonymous_xsrf_id(peer_ip, agent)
            )
        }
    }
}

/// Whether a cookie-authenticated request carries a valid XSRF token (header, or `_xsrf`
/// in the query or a form body already parsed by the caller).
pub fn xsrf_ok(
    hub: &Hub,
    headers: &HeaderMap,
    query: Option<&str>,
    form_value: Option<&str>,
    expected_id: &str,
) -> bool {
    let from_header = ["x-xsrftoken", "x-csrftoken"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()));
    let from_query = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "_xsrf")
            .map(|(_, v)| v.into_owned())
    });
    let candidates = [
        from_header.map(str::to_owned),
        from_query,
        form_value.map(str::to_owned),
    ];
    let cookie_token = cookie(headers, XSRF_COOKIE);
    candidates.into_iter().flatten().any(|token| {
        let id_ok = hub
            .secret()
            .xsrf_id(&token, now_secs())
            .is_some_and(|id| id == expected_id);
        // The token must also match the cookie when there is one (double submit).
        let cookie_ok = cookie_token.is_none_or(|c| {
            hub.secret()
                .xsrf_id(c, now_secs())
                .is_some_and(|id| id == expected_id)
        });
        id_ok && cookie_ok
    })
}

/// Upstream's rule: cookie-authenticated API requests need XSRF unless they are plain
/// navigations or safe no-cors/websocket reads.
fn api_needs_xsrf(method: &Method, headers: &HeaderMap) -> bool {
    if headers.get(header::UPGRADE).is_some() {
        return false;
    }
    let mode = headers
        .get("sec-fetch-mode")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let safe_method = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    match mode {
        "" | "navigate" => !safe_method,
        "no-cors" => {
            let site = headers
                .get("sec-fetch-site")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            !(safe_method && site == "same-origin")
        }
        _ => !matches!(*method, Method::HEAD | Method::OPTIONS),
    }
}

/// The peer address the listener recorded, or loopback for in-process calls.
pub fn peer_ip(parts: &Parts) -> String {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into())
}

/// An authenticated caller of the REST API. Rejects with 403 "Missing or invalid credentials."
pub struct Auth(pub Identity);

/// Like `Auth`, but anonymous callers are let through.
pub struct MaybeAuth(pub Option<Identity>);

async fn resolve(parts: &Parts, hub: &Hub) -> Result<Option<Identity>, ApiError> {
    if let Some(token) = bearer_token(&parts.headers) {
        return Ok(hub.identify_token(token)?);
    }
    let Some(identity) = cookie_identity(hub, &parts.headers)? else {
        return Ok(None);
    };
    if api_needs_xsrf(&parts.method, &parts.headers) {
        // A cookie-authenticated POST with a non-JSON body is treated as unauthenticated.
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if parts.method == Method::POST
            && !content_type.is_empty()
            && !content_type.starts_with("application/json")
        {
            return Ok(None);
        }
        let expected = xsrf_id(Some(&identity), &parts.headers, &peer_ip(parts));
        if !xsrf_ok(hub, &parts.headers, parts.uri.query(), None, &expected) {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "'_xsrf' argument missing from POST or XSRF cookie does not match",
            ));
        }
    }
    Ok(Some(identity))
}

impl FromRequestParts<Hub> for Auth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, hub: &Hub) -> Result<Self, Self::Rejection> {
        match resolve(parts, hub).await? {
            Some(identity) => Ok(Auth(identity)),
            None => Err(ApiError::forbidden()),
        }
    }
}

impl FromRequestParts<Hub> for MaybeAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, hub: &Hub) -> Result<Self, Self::Rejection> {
        Ok(MaybeAuth(resolve(parts, hub).await?))
    }
}

/// A JSON body; malformed input is a 400 in JupyterHub's error shape. An empty body is
/// read as `null` where the type allows (upstream treats a missing body as none).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Hub> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(request: Request, hub: &Hub) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(request, hub)
            .await
            .map_err(|e| ApiError::bad_request(format!("Could not read the request body: {e}")))?;
        let text = if bytes.iter().all(u8::is_ascii_whitespace) {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        if std::str::from_utf8(text).is_err() {
            return Err(ApiError::bad_request(
                "Invalid JSON in body of request: not UTF-8",
            ));
        }
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("Invalid JSON in body of request: {e}")))
    }
}

/// `offset`/`limit` and whether the client asked for the pagination envelope.
pub struct Page {
    pub offset: usize,
    pub limit: usize,
    pub envelope: bool,
}

pub const PAGINATION_MEDIA_TYPE: &str = "application/jupyterhub-pagination+json";

impl Page {
    pub fn from_request(
        hub: &Hub,
        headers: &HeaderMap,
        query: &[(String, String)],
    ) -> Result<Page, ApiError> {
        let envelope = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(PAGINATION_MEDIA_TYPE));
        let max = hub.config().hub.api_page_max_limit.max(1) as i64;
        let default = if envelope {
            hub.config().hub.api_page_default_limit as i64
        } else {
            max
        };
        let number = |key: &str| -> Result<Option<i64>, ApiError> {
            match query.iter().find(|(k, _)| k == key) {
                None => Ok(None),
                Some((_, v)) => v
                    .parse::<i64>()
                    .map(|n| Some(n.saturating_abs()))
                    .map_err(|_| {
                        ApiError::bad_request(format!("{key} must be an integer, not {v:?}"))
                    }),
            }
        };
        let offset = number("offset")?.unwrap_or(0);
        let limit = number("limit")?.unwrap_or(default).clamp(1, max);
        Ok(Page {
            offset: offset as usize,
            limit: limit as usize,
            envelope,
        })
    }

    /// The answer: a bare list, or `{items, _pagination}` when asked for.
    pub fn wrap(
        &self,
        items: Vec<serde_json::Value>,
        total: usize,
        uri: &axum::http::Uri,
        host: Option<&str>,
    ) -> serde_json::Value {
        if !self.envelope {
            return serde_json::Value::Array(items);
        }
        let next_offset = self.offset + self.limit;
        let next = if next_offset < total {
            let mut query: Vec<(String, String)> = uri
                .query()
                .map(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .into_owned()
                        .filter(|(k, _)| k != "offset" && k != "limit")
                        .collect()
                })
                .unwrap_or_default();
            query.push(("limit".into(), self.limit.to_string()));
            query.push(("offset".into(), next_offset.to_string()));
            let encoded = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish();
            let url = format!(
                "http://{}{}?{encoded}",
                host.unwrap_or("localhost"),
                uri.path()
            );
            serde_json::json!({"offset": next_offset, "limit": self.limit, "url": url})
        } else {
            serde_json::Value::Null
        };
        serde_json::json!({
            "items": items,
            "_pagination": {"offset": self.offset, "limit": self.limit, "total": total, "next": next},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_forms() {
        let mut headers = HeaderMap::new();
        for (value, expected) in [
            ("token abc123", Some("abc123")),
            ("Bearer abc123", Some("abc123")),
            ("TOKEN   abc123", Some("abc123")),
            ("Basic abc123", None),
            ("token", None),
        ] {
            headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
            assert_eq!(bearer_token(&headers), expected, "{value}");
        }
    }

    #[test]
    fn cookie_parsing() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; jupyterhub-session-id=abc; q=\"x|y\""
                .parse()
                .expect("header"),
        );
        assert_eq!(cookie(&headers, "jupyterhub-session-id"), Some("abc"));
        assert_eq!(cookie(&headers, "q"), Some("x|y"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn xsrf_rules() {
        let mut headers = HeaderMap::new();
        assert!(!api_needs_xsrf(&Method::GET, &headers));
        assert!(api_needs_xsrf(&Method::POST, &headers));
        headers.insert("sec-fetch-mode", "cors".parse().expect("header"));
        assert!(api_needs_xsrf(&Method::GET, &headers));
        headers.insert("sec-fetch-mode", "no-cors".parse().expect("header"));
        headers.insert("sec-fetch-site", "same-origin".parse().expect("header"));
        assert!(!api_needs_xsrf(&Method::GET, &headers));
        assert!(api_needs_xsrf(&Method::DELETE, &headers));
    }
}
