//! Everything about the credentials a request carries, in one place: the cookie secret and
//! the values signed with it (the login cookie and XSRF tokens, in Tornado's signed-value v2
//! format as JupyterHub writes them, so a signed cookie from one hub process is valid in the
//! next), reading cookies and `Authorization` from headers, XSRF ids and checks (upstream's
//! rules for pages and for the API), and the `Set-Cookie` values of login, logout and pages.
//! It knows no `Hub`: the API's and the pages' extractors pass the secret and settings in.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use axum::http::{HeaderMap, HeaderValue, Method, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const LOGIN_COOKIE: &str = "jupyterhub-hub-login";
pub const SESSION_COOKIE: &str = "jupyterhub-session-id";
pub const XSRF_COOKIE: &str = "_xsrf";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cookie secret file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions { path: String, mode: u32 },
    #[error("cookie secret file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cookie secret in {origin} is not valid hex")]
    NotHex { origin: String },
}

/// The key every signature uses. `Debug` hides it.
#[derive(Clone)]
pub struct CookieSecret(Vec<u8>);

impl std::fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSecret(***)")
    }
}

impl CookieSecret {
    pub fn from_bytes(bytes: Vec<u8>) -> CookieSecret {
        CookieSecret(bytes)
    }

    /// `JPY_COOKIE_SECRET` (hex) if set, else the file, created with 32 random bytes (hex,
    /// mode 0600) when missing. A file readable by group or others is refused.
    pub fn load(file: &Path, env: Option<&str>) -> Result<CookieSecret, Error> {
        if let Some(hex_secret) = env.filter(|s| !s.trim().is_empty()) {
            return hex::decode(hex_secret.trim())
                .map(CookieSecret)
                .map_err(|_| Error::NotHex {
                    origin: "JPY_COOKIE_SECRET".into(),
                });
        }
        let shown = file.display().to_string();
        let io = |source| Error::Io {
            path: shown.clone(),
            source,
        };
        match std::fs::metadata(file) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(Error::Permissions { path: shown, mode });
                }
                let text = std::fs::read_to_string(file).map_err(io)?;
                hex::decode(text.trim())
                    .map(CookieSecret)
                    .map_err(|_| Error::NotHex { origin: shown })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = vec![0u8; 32];
                super::fill_random(&mut bytes);
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(file)
                    .map_err(io)?;
                writeln!(out, "{}", hex::encode(&bytes)).map_err(io)?;
                tracing::info!(path = %shown, "wrote a new cookie secret");
                Ok(CookieSecret(bytes))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A key for another purpose, named by `label`: knowing it reveals nothing of the secret.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(b"jupyterhub-rs derived key\0");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }

    /// Tornado `create_signed_value` v2: `2|1:0|len:ts|len:name|len:b64(value)|hexhmac`.
    pub fn sign(&self, name: &str, value: &str, now_secs: i64) -> String {
        let ts = now_secs.to_string();
        let b64 = STANDARD.encode(value.as_bytes());
        let body = format!(
            "2|1:0|{}:{}|{}:{}|{}:{}|",
            ts.len(),
            ts,
            name.len(),
            name,
            b64.len(),
            b64
        );
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        format!("{body}{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Tornado `decode_signed_value` v2; `None` if forged, for another name, or older than
    /// `max_age_secs`.
    pub fn verify(
        &self,
        name: &str,
        signed: &str,
        max_age_secs: i64,
        now_secs: i64,
    ) -> Option<String> {
        let signed = signed.trim_matches('"');
        let rest = signed.strip_prefix("2|")?;
        let (fields, signature) = rest.rsplit_once('|')?;
        let body = &signed[..signed.len() - signature.len()];
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let expected = hex::encode(mac.finalize().into_bytes());
        if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
            return None;
        }
        let mut parts = Vec::with_capacity(4);
        let mut remaining = fields;
        for _ in 0..4 {
            let (len, tail) = remaining.split_once(':')?;
            let len: usize = len.parse().ok()?;
            let value = tail.get(..len)?;
            parts.push(value);
            remaining = tail.get(len..)?.strip_prefix('|').unwrap_or("");
        }
        let [key_version, ts, cookie_name, b64] = parts[..] else {
            return None;
        };
        if key_version != "0" || cookie_name != name {
            return None;
        }
        let ts: i64 = ts.parse().ok()?;
        // Saturating: a configured max age may be any i64 (`cookie_max_age_days` is a float).
        if ts < now_secs.saturating_sub(max_age_secs) || ts > now_secs.saturating_add(31 * 86400) {
            return None;
        }
        String::from_utf8(STANDARD.decode(b64).ok()?).ok()
    }

    /// The XSRF token for an id: URL-safe base64 of the signed id, as JupyterHub makes it.
    pub fn xsrf_token(&self, xsrf_id: &str, now_secs: i64) -> String {
        URL_SAFE_NO_PAD.encode(self.sign(XSRF_COOKIE, xsrf_id, now_secs))
    }

    /// The id inside an XSRF token, if the token is genuine and at most 31 days old.
    pub fn xsrf_id(&self, token: &str, now_secs: i64) -> Option<String> {
        let signed = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).ok()?;
        self.verify(
            XSRF_COOKIE,
            std::str::from_utf8(&signed).ok()?,
            31 * 86400,
            now_secs,
        )
    }
}

/// Upstream's anonymous XSRF id: b64url(sha256(ip ‖ user agent ‖ 0xff)).
pub fn anonymous_xsrf_id(ip: &str, user_agent: &str) -> String {
    let mut h = Sha256::new();
    h.update(ip.as_bytes());
    h.update(user_agent.as_bytes());
    h.update([0xff]);
    URL_SAFE_NO_PAD.encode(h.finalize())
}

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

/// The session id the browser holds, if any.
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// The client's address: the peer the listener recorded (loopback for in-process calls),
/// or, when that peer is one of the `trusted` proxies, the nearest address in
/// `X-Forwarded-For` that is not (Tornado's `xheaders` with `trusted_downstream`): read from
/// the right, as each proxy appends the address it saw.
pub fn peer_ip(parts: &axum::http::request::Parts, trusted: &[crate::config::IpRange]) -> String {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let is_trusted = |ip: std::net::IpAddr| trusted.iter().any(|r| r.contains(ip));
    let mut client = peer;
    if is_trusted(peer) {
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for entry in forwarded.into_iter().rev() {
            // An entry that is not an address ends the chain: what lies beyond is unknown.
            let Ok(ip) = entry.parse::<std::net::IpAddr>() else {
                break;
            };
            client = ip;
            if !is_trusted(ip) {
                break;
            }
        }
    }
    client.to_string()
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

/// The user's `cookie_id` from the signed login cookie, if genuine and younger than
/// `max_age_secs`.
pub fn login_cookie_id(
    secret: &CookieSecret,
    headers: &HeaderMap,
    max_age_secs: i64,
) -> Option<String> {
    let signed = cookie(headers, LOGIN_COOKIE)?;
    secret.verify(LOGIN_COOKIE, signed, max_age_secs, now_secs())
}

/// The XSRF id, as upstream: `{session_id}:{cookie_id}` for a logged-in user (`cookie_id`),
/// else the session and a hash of the peer address and user agent.
pub fn xsrf_id(cookie_id: Option<&str>, headers: &HeaderMap, peer_ip: &str) -> String {
    let session = session_id(headers).unwrap_or("None");
    match cookie_id {
        Some(cookie_id) => format!("{session}:{cookie_id}"),
        None => {
            let agent = headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("{session}:{}", anonymous_xsrf_id(peer_ip, agent))
        }
    }
}

/// The XSRF token a page embeds: the browser's own while it is valid for this id (so open
/// tabs keep working), else a new one.
pub fn page_xsrf_token(secret: &CookieSecret, headers: &HeaderMap, xsrf_id: &str) -> String {
    cookie(headers, XSRF_COOKIE)
        .filter(|t| secret.xsrf_id(t, now_secs()).is_some_and(|i| i == xsrf_id))
        .map(str::to_owned)
        .unwrap_or_else(|| secret.xsrf_token(xsrf_id, now_secs()))
}

/// Whether a cookie-authenticated request carries a valid XSRF token (header, or `_xsrf`
/// in the query or a form body already parsed by the caller).
pub fn xsrf_ok(
    secret: &CookieSecret,
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
        let id_ok = secret
            .xsrf_id(&token, now_secs())
            .is_some_and(|id| id == expected_id);
        // The token must also match the cookie when there is one (double submit).
        let cookie_ok = cookie_token.is_none_or(|c| {
            secret
                .xsrf_id(c, now_secs())
                .is_some_and(|id| id == expected_id)
        });
        id_ok && cookie_ok
    })
}

/// Upstream's rule: cookie-authenticated API requests need XSRF unless they are plain
/// navigations or safe no-cors/websocket reads. A websocket is recognised by
/// `Sec-Fetch-Mode: websocket` (which pages cannot set) and only on a GET, never by an
/// `Upgrade` header, which any client can add to any method.
pub fn api_needs_xsrf(method: &Method, headers: &HeaderMap) -> bool {
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
        "websocket" => *method != Method::GET,
        _ => !matches!(*method, Method::HEAD | Method::OPTIONS),
    }
}

/// `Set-Cookie` for the XSRF token, set on every page so forms and scripts have it; an
/// anonymous visitor's lasts an hour.
pub fn xsrf_set_cookie(token: &str, base_url: &str, logged_in: bool, secure: bool) -> HeaderValue {
    let max_age = if logged_in { "" } else { "; Max-Age=3600" };
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{XSRF_COOKIE}={token}; Path={base_url}hub/; SameSite=Lax{max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Cookies set at login: the signed login cookie, a session id (the browser's own if it has
/// one), and a fresh XSRF token.
pub fn login_set_cookies(
    secret: &CookieSecret,
    cookie_id: &str,
    existing_session: Option<&str>,
    base_url: &str,
    max_age_secs: i64,
    secure: bool,
) -> Vec<HeaderValue> {
    let secure_attr = if secure { "; Secure" } else { "" };
    let base = base_url;
    let signed = secret.sign(LOGIN_COOKIE, cookie_id, now_secs());
    let session_id = existing_session
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let xsrf = secret.xsrf_token(&format!("{session_id}:{cookie_id}"), now_secs());
    [
        format!("{LOGIN_COOKIE}=\"{signed}\"; Path={base}hub/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure_attr}"),
        format!("{SESSION_COOKIE}={session_id}; Path={base}; HttpOnly; SameSite=Lax{secure_attr}"),
        format!("{XSRF_COOKIE}={xsrf}; Path={base}hub/; SameSite=Lax{secure_attr}"),
    ]
    .into_iter()
    .filter_map(|c| HeaderValue::from_str(&c).ok())
    .collect()
}

/// Cookies cleared at logout.
pub fn logout_set_cookies(base_url: &str) -> Vec<HeaderValue> {
    let base = base_url;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> CookieSecret {
        CookieSecret(b"0123456789abcdef0123456789abcdef".to_vec())
    }

    #[test]
    fn signed_value_round_trip_and_tamper() {
        let s = secret();
        let signed = s.sign(LOGIN_COOKIE, "4d7591eb510f4a1e", 1_795_339_421);
        assert!(signed.starts_with("2|1:0|10:1795339421|20:jupyterhub-hub-login|24:"));
        assert_eq!(
            s.verify(LOGIN_COOKIE, &signed, 86400, 1_795_339_500)
                .as_deref(),
            Some("4d7591eb510f4a1e")
        );
        assert_eq!(
            s.verify(LOGIN_COOKIE, &format!("\"{signed}\""), 86400, 1_795_339_500)
                .as_deref(),
            Some("4d7591eb510f4a1e")
        );
        assert_eq!(
            s.verify(XSRF_COOKIE, &signed, 86400, 1_795_339_500),
            None,
            "other name"
        );
        assert_eq!(
            s.verify(LOGIN_COOKIE, &signed, 10, 1_795_339_500),
            None,
            "expired"
        );
        let tampered = signed.replacen("NGQ3", "NGQ4", 1);
        assert_eq!(
            s.verify(LOGIN_COOKIE, &tampered, 86400, 1_795_339_500),
            None
        );
        let other = CookieSecret(b"another secret".to_vec());
        assert_eq!(
            other.verify(LOGIN_COOKIE, &signed, 86400, 1_795_339_500),
            None
        );
        assert_eq!(s.verify(LOGIN_COOKIE, "2|garbage", 86400, 0), None);
    }

    #[test]
    fn xsrf_round_trip() {
        let s = secret();
        let token = s.xsrf_token("sess:cookie", 1000);
        assert_eq!(s.xsrf_id(&token, 1000).as_deref(), Some("sess:cookie"));
        assert_eq!(s.xsrf_id("bogus", 1000), None);
    }

    #[test]
    fn secret_file_is_created_0600_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        let first = CookieSecret::load(&path, None).expect("created");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let again = CookieSecret::load(&path, None).expect("read back");
        assert_eq!(first.0, again.0);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            CookieSecret::load(&path, None),
            Err(Error::Permissions { .. })
        ));
        let from_env = CookieSecret::load(&path, Some("00ff")).expect("env wins");
        assert_eq!(from_env.0, vec![0, 255]);
        assert!(CookieSecret::load(&path, Some("zz")).is_err());
    }

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

    #[test]
    fn only_websocket_gets_skip_xsrf() {
        // Issue 18: an `Upgrade` header alone used to exempt every method.
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, "websocket".parse().expect("header"));
        headers.insert(header::CONNECTION, "Upgrade".parse().expect("header"));
        for method in [Method::POST, Method::DELETE, Method::PATCH, Method::PUT] {
            assert!(api_needs_xsrf(&method, &headers), "{method}");
        }
        headers.insert("sec-fetch-mode", "websocket".parse().expect("header"));
        assert!(!api_needs_xsrf(&Method::GET, &headers));
        for method in [Method::POST, Method::DELETE, Method::PATCH, Method::PUT] {
            assert!(api_needs_xsrf(&method, &headers), "{method}");
        }
    }
}
