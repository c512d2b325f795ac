//! The cookie secret and the values signed with it: the login cookie and XSRF tokens, in
//! Tornado's signed-value v2 format as JupyterHub writes them (so the format is documented
//! and a signed cookie from one hub process is valid in the next).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

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
        if ts < now_secs - max_age_secs || ts > now_secs + 31 * 86400 {
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
}
