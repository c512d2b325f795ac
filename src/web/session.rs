//! The browser session of a page request: the logged-in user (from the signed login
//! cookie), the session id, the XSRF token to embed in forms, and the cookies set at
//! login and cleared at logout.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use serde_json::{Value, json};

use crate::api::extract::{cookie, cookie_identity, now_secs, peer_ip, xsrf_id};
use crate::auth::cookie::{LOGIN_COOKIE, SESSION_COOKIE, XSRF_COOKIE};
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
        let identity = cookie_identity(hub, &parts.headers)
            .map_err(|e| PageError::new(e.status, e.message))?;
        let peer = peer_ip(parts);
        let id = xsrf_id(identity.as_ref(), &parts.headers, &peer);
        // Reuse the browser's token while it is valid for this id, so open tabs keep working.
        let token = cookie(&parts.headers, XSRF_COOKIE)
            .filter(|t| hub.secret().xsrf_id(t, now_secs()).is_some_and(|i| i == id))
            .map(str::to_owned)
            .unwrap_or_else(|| hub.secret().xsrf_token(&id, now_secs()));
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
        if let (Some(object), Value::Object(extra)) = (context.as_object_mut(), extra) {
            object.extend(extra);
        }
        context
    }

    /// `Set-Cookie` for the XSRF token, set on every page so forms and scripts have it.
    pub fn xsrf_cookie(&self, hub: &Hub) -> HeaderValue {
        let max_age = if self.identity.is_some() {
            String::new()
        } else {
            "; Max-Age=3600".to_owned()
        };
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{XSRF_COOKIE}={}; Path={}hub/; SameSite=Lax{max_age}{secure}",
            self.xsrf_token,
            hub.base_url()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Whether a submitted form carries the right XSRF token.
    pub fn check_form_xsrf(&self, hub: &Hub, form_value: Option<&str>) -> bool {
        crate::api::extract::xsrf_ok(hub, &self.headers, None, form_value, &self.xsrf_id)
    }
}

/// Cookies set at login: the signed login cookie, a session id, and a fresh XSRF token.
pub fn login_cookies(
    hub: &Hub,
    cookie_id: &str,
    existing_session: Option<&str>,
    secure: bool,
) -> Vec<HeaderValue> {
    let secure_attr = if secure { "; Secure" } else { "" };
    let base = hub.base_url();
    let signed = hub.secret().sign(LOGIN_COOKIE, cookie_id, now_secs());
    let session_id = existing_session
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let xsrf = hub
        .secret()
        .xsrf_token(&format!("{session_id}:{cookie_id}"), now_secs());
    let max_age = (hub.config().hub.cookie_max_age_days * 86400.0) as i64;
    [
        format!("{LOGIN_COOKIE}=\"{signed}\"; Path={base}hub/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure_attr}"),
        format!("{SESSION_COOKIE}={session_id}; Path={base}; HttpOnly; SameSite=Lax{secure_attr}"),
        format!("{XSRF_COOKIE}={xsrf}; Path={base}hub/; SameSite=Lax{secure_attr}"),
    ]
    .into_iter()
    .filter_map(|c| HeaderValue::from_str(&c).ok())
    .collect()
}

/// Cookies cleared at logout.
pub fn logout_cookies(hub: &Hub) -> Vec<HeaderValue> {
    let base = hub.base_url();
    [
        format!("{LOGIN_COOKIE}=; Path={base}hub/; HttpOnly; Max-Age=0"),
        format!("{SESSION_COOKIE}=; Path={base}; HttpOnly; Max-Age=0"),
        format!("{XSRF_COOKIE}=; Path={base}hub/; Max-Age=0"),
        format!("jupyterhub-services=; Path={base}services/; Max-Age=0"),
    ]
    .into_iter()
    .filter_map(|c| HeaderValue::from_str(&c).ok())
    .collect()
}

/// The session id the browser holds, if any.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE).map(str::to_owned)
}

pub fn set_cookies(response: &mut axum::response::Response, cookies: Vec<HeaderValue>) {
    for value in cookies {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}
