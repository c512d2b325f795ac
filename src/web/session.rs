//! The browser session of a page request: the logged-in user (from the signed login
//! cookie), the XSRF token to embed in forms, and the common template context. The cookie
//! formats and XSRF rules themselves are `auth::cookie`'s; this only applies them to a `Hub`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use serde_json::{Value, json};

use crate::auth::cookie;
use crate::hub::{Hub, Identity};
use crate::rbac::Resource;

use super::PageError;

/// Who is looking at a page.
pub struct Session {
    pub identity: Option<Identity>,
    pub xsrf_id: String,
    pub xsrf_token: String,
    pub headers: HeaderMap,
    pub peer_ip: String,
    pub secure: bool,
}

impl FromRequestParts<Hub> for Session {
    type Rejection = PageError;
    async fn from_request_parts(parts: &mut Parts, hub: &Hub) -> Result<Self, Self::Rejection> {
        let identity = match cookie::login_cookie_id(hub.secret(), &parts.headers, max_age(hub)) {
            Some(cookie_id) => {
                let session_id = cookie::session_id(&parts.headers).map(str::to_owned);
                hub.identify_cookie(&cookie_id, session_id)?
            }
            None => None,
        };
        let peer = cookie::peer_ip(parts, &hub.config().hub.trusted_downstream_ips);
        let cookie_id = identity
            .as_ref()
            .and_then(|i| i.user())
            .map(|u| u.cookie_id.as_str());
        let id = cookie::xsrf_id(cookie_id, &parts.headers, &peer);
        let token = cookie::page_xsrf_token(hub.secret(), &parts.headers, &id);
        let secure = parts
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v == "https")
            || hub
                .config()
                .hub
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https:"))
            || hub.config().hub.ssl_cert.is_some();
        Ok(Session {
            identity,
            xsrf_id: id,
            xsrf_token: token,
            headers: parts.headers.clone(),
            peer_ip: peer,
            secure,
        })
    }
}

impl Session {
    pub fn user_name(&self) -> Option<&str> {
        self.identity
            .as_ref()
            .and_then(|i| i.user())
            .map(|u| u.name.as_str())
    }

    /// Common template context: user, base URL, admin link, data for the page's scripts.
    pub fn context(&self, hub: &Hub, extra: Value) -> Value {
        let user = self.identity.as_ref().and_then(|i| i.user());
        let can_admin = self
            .identity
            .as_ref()
            .is_some_and(|i| i.allows("admin-ui", &Resource::Hub) || i.scopes.has("admin-ui"));
        let mut context = json!({
            "base_url": hub.base_url(),
            "user": user.map(|u| json!({"name": u.name, "admin": u.admin})),
            "can_admin": can_admin,
            "xsrf_token": self.xsrf_token,
            "jhdata": {
                "base_url": hub.base_url(),
                "prefix": hub.base_url(),
                "user": user.map(|u| u.name.clone()),
                "xsrf_token": self.xsrf_token,
            },
        });
        if let (Some(object), Value::Object(mut extra)) = (context.as_object_mut(), extra) {
            // A page's own `jhdata` keys join the common ones instead of replacing them.
            if let (Some(Value::Object(own)), Some(Value::Object(common))) =
                (extra.remove("jhdata"), object.get_mut("jhdata"))
            {
                common.extend(own);
            }
            object.extend(extra);
        }
        context
    }

    /// `Set-Cookie` for the XSRF token, set on every page so forms and scripts have it.
    pub fn xsrf_cookie(&self, hub: &Hub) -> HeaderValue {
        cookie::xsrf_set_cookie(
            &self.xsrf_token,
            hub.base_url(),
            self.identity.is_some(),
            self.secure,
        )
    }

    /// Whether a submitted form carries the right XSRF token.
    pub fn check_form_xsrf(&self, hub: &Hub, form_value: Option<&str>) -> bool {
        cookie::xsrf_ok(hub.secret(), &self.headers, None, form_value, &self.xsrf_id)
    }

    /// The session id the browser holds, if any.
    pub fn session_id(&self) -> Option<&str> {
        cookie::session_id(&self.headers)
    }
}

/// How long a login lasts (`cookie_max_age_days`), in seconds.
fn max_age(hub: &Hub) -> i64 {
    (hub.config().hub.cookie_max_age_days * 86400.0) as i64
}

/// Cookies set at login: the signed login cookie, a session id, and a fresh XSRF token.
pub fn login_cookies(
    hub: &Hub,
    cookie_id: &str,
    existing_session: Option<&str>,
    secure: bool,
) -> Vec<HeaderValue> {
    cookie::login_set_cookies(
        hub.secret(),
        cookie_id,
        existing_session,
        hub.base_url(),
        max_age(hub),
        secure,
    )
}

/// Cookies cleared at logout.
pub fn logout_cookies(hub: &Hub) -> Vec<HeaderValue> {
    cookie::logout_set_cookies(hub.base_url())
}

pub fn set_cookies(response: &mut axum::response::Response, cookies: Vec<HeaderValue>) {
    for value in cookies {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}
