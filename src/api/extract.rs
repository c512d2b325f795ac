//! The API's request extractors: who is asking (token or login cookie, with upstream's XSRF
//! rule for cookie-authenticated calls, both read by `auth::cookie`), JSON bodies that fail
//! in JupyterHub's error shape, and pagination parameters.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use serde::de::DeserializeOwned;

use crate::auth::cookie;
use crate::hub::{Hub, Identity};

use super::error::ApiError;

/// The user's login, from the signed login cookie.
fn cookie_identity(hub: &Hub, headers: &HeaderMap) -> Result<Option<Identity>, ApiError> {
    let max_age = (hub.config().hub.cookie_max_age_days * 86400.0) as i64;
    let Some(cookie_id) = cookie::login_cookie_id(hub.secret(), headers, max_age) else {
        return Ok(None);
    };
    let session_id = cookie::session_id(headers).map(str::to_owned);
    Ok(hub.identify_cookie(&cookie_id, session_id)?)
}

/// An authenticated caller of the REST API. Rejects with 403 "Missing or invalid credentials."
pub struct Auth(pub Identity);

/// Like `Auth`, but anonymous callers are let through.
pub struct MaybeAuth(pub Option<Identity>);

async fn resolve(parts: &Parts, hub: &Hub) -> Result<Option<Identity>, ApiError> {
    // `fresh`: a user whose identity provider login went stale counts as not logged in.
    if let Some(token) = cookie::bearer_token(&parts.headers) {
        return Ok(hub.fresh(hub.identify_token(token)?).await?);
    }
    let Some(identity) = hub.fresh(cookie_identity(hub, &parts.headers)?).await? else {
        return Ok(None);
    };
    if cookie::api_needs_xsrf(&parts.method, &parts.headers) {
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
        let cookie_id = identity.user().map(|u| u.cookie_id.as_str());
        let peer = cookie::peer_ip(parts, &hub.config().hub.trusted_downstream_ips);
        let expected = cookie::xsrf_id(cookie_id, &parts.headers, &peer);
        if !cookie::xsrf_ok(
            hub.secret(),
            &parts.headers,
            parts.uri.query(),
            None,
            &expected,
        ) {
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

/// A token-authenticated GET answered from what the hub remembers for that token and `what`
/// (what the answer depends on besides the token), or rendered by `render` and remembered
/// (`hub/cache.rs`). Cookie-authenticated calls are always rendered.
pub async fn remembered_answer(
    hub: &Hub,
    parts: &mut Parts,
    what: &str,
    render: impl FnOnce(&Parts, &Identity) -> Result<serde_json::Value, ApiError>,
) -> Result<axum::response::Response, ApiError> {
    // Before anything is read: an answer rendered from later reads is at least this fresh.
    let stamp = hub.answer_stamp();
    if let Some(token) = cookie::bearer_token(&parts.headers)
        && let Some(body) = hub.remembered(token, what, stamp).await?
    {
        return Ok(json_response(body));
    }
    let Auth(identity) = Auth::from_request_parts(parts, hub).await?;
    let body = serde_json::to_vec(&render(parts, &identity)?)
        .map(axum::body::Bytes::from)
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot render the answer: {e}"),
            )
        })?;
    if let Some(token) = cookie::bearer_token(&parts.headers) {
        hub.remember(token, what, stamp, &identity, body.clone());
    }
    Ok(json_response(body))
}

fn json_response(body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
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
                // Python's int(), which upstream uses, allows surrounding whitespace.
                Some((_, v)) => v
                    .trim()
                    .parse::<i64>()
                    .map(|n| Some(n.saturating_abs()))
                    .map_err(|_| {
                        ApiError::bad_request(
                            "Invalid argument type, offset and limit must be integers",
                        )
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
        self.wrap_value(serde_json::Value::Array(items), total, uri, host)
    }

    /// Like `wrap`, for a page of any shape (the proxy's routes are an object).
    pub fn wrap_value(
        &self,
        items: serde_json::Value,
        total: usize,
        uri: &axum::http::Uri,
        host: Option<&str>,
    ) -> serde_json::Value {
        if !self.envelope {
            return items;
        }
        let next_offset = self.offset + self.limit;
        let next = if next_offset < total {
            // As upstream's `paginated_model`: the request's own query with `offset` and
            // `limit` replaced where they were, or added (offset first) when they were not.
            let mut query: Vec<(String, String)> = uri
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            for (key, value) in [
                ("offset", next_offset.to_string()),
                ("limit", self.limit.to_string()),
            ] {
                match query.iter().position(|(k, _)| k == key) {
                    Some(first) => {
                        query[first].1 = value;
                        let mut index = 0;
                        query.retain(|(k, _)| {
                            index += 1;
                            k != key || index - 1 == first
                        });
                    }
                    None => query.push((key.to_owned(), value)),
                }
            }
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
