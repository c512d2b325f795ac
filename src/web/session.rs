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

/// `name` as it reads inside a JSON string, without the quotes.
fn json_escaped(name: &str) -> String {
    let quoted = serde_json::to_string(name).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or("")
        .to_owned()
}

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
                // A stale identity provider login counts as logged out.
                hub.fresh(hub.identify_cookie(&cookie_id, session_id)?)
                    .await?
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

    /// Common template context, with upstream's names (`BaseHandler.template_namespace`), so
    /// a template written for JupyterHub renders: `base_url` is the hub's (`/hub/`),
    /// `prefix` the whole hub's; then `template_vars` from the config; then the page's own
    /// `extra` (which wins, as upstream's render arguments do).
    pub fn context(&self, hub: &Hub, extra: Value) -> Value {
        let user = self.identity.as_ref().and_then(|i| i.user());
        let can_admin = self
            .identity
            .as_ref()
            .is_some_and(|i| i.allows("admin-ui", &Resource::Hub) || i.scopes.has("admin-ui"));
        let prefix = hub.base_url();
        let hub_url = format!("{prefix}hub/");
        let scopes = self.identity.as_ref().map(|i| &i.scopes);
        let mut context = json!({
            "base_url": hub_url,
            "prefix": prefix,
            "user": user.map(|u| json!({
                "name": u.name,
                "admin": u.admin,
                // The name as it goes inside a JSON string (upstream's `json_escaped_name`).
                "json_escaped_name": json_escaped(&u.name),
            })),
            "login_url": format!("{hub_url}login"),
            "logout_url": format!("{hub_url}logout"),
            "version_hash": super::static_version(),
            "services": self.identity.as_ref().map(|i| hub.visible_services(i)).unwrap_or_default(),
            "parsed_scopes": scopes.map(|s| s.parsed_json()).unwrap_or_else(|| json!({})),
            "expanded_scopes": scopes.map(|s| s.sorted()).unwrap_or_default(),
            "admin_access": hub.config().hub.admin_access,
            "can_admin": can_admin,
            "xsrf": self.xsrf_token,
            "xsrf_token": self.xsrf_token,
            "jhdata": {
                "base_url": hub_url,
                "prefix": prefix,
                "user": user.map(|u| u.name.clone()),
                "admin_access": hub.config().hub.admin_access,
                "xsrf_token": self.xsrf_token,
            },
        });
        if let Some(object) = context.as_object_mut() {
            for (key, value) in &hub.config().hub.template_vars {
                object.insert(key.clone(), value.clone());
            }
        }
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
