//! GoogleOAuthenticator's Google groups (`allowed_google_groups`, `admin_google_groups`):
//! a service account's JSON key signs an RS256 JWT assertion (as google-auth's
//! `service_account.Credentials`, delegated with `sub` to the domain's `gsuite_administrator`)
//! that the key's `token_uri` exchanges for an access token (RFC 7523), cached until shortly
//! before it expires; the Admin SDK Directory API's `groups.list(userKey=EMAIL)` then names
//! the user's groups, every page, by their email's local part as upstream matches them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Http;

/// The audience google-auth puts in every service account assertion, whatever `token_uri`.
pub const ASSERTION_AUDIENCE: &str = "https://oauth2.googleapis.com/token";
/// RFC 7523's grant type.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The assertion's lifetime, google-auth's `_DEFAULT_TOKEN_LIFETIME_SECS`.
const ASSERTION_LIFETIME_SECS: i64 = 3600;
/// A cached access token is renewed this long before it expires (google-auth's
/// `REFRESH_THRESHOLD`), so a lookup never starts with a token about to lapse.
const RENEW_BEFORE_SECS: i64 = 225;
/// Bounds, so a directory that always says "next page" or nests without end cannot hold a
/// login: pages per member, and members looked up per login with `include_nested_groups`.
const MAX_PAGES: usize = 50;
const MAX_LOOKUPS: usize = 100;

/// A service account's JSON key file, as Google's console makes it.
pub struct ServiceAccountKey {
    pub client_email: String,
    pub token_uri: String,
    key_id: Option<String>,
    /// PKCS#1 DER, as `jsonwebtoken` signs RS256 with it.
    key: jsonwebtoken::EncodingKey,
}

impl ServiceAccountKey {
    /// Read and check a key file; the message names the file and what is wrong.
    pub fn read(path: &Path) -> Result<ServiceAccountKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot be read: {e}", path.display()))?;
        ServiceAccountKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<ServiceAccountKey, String> {
        let json: Value = serde_json::from_str(text)
            .map_err(|e| format!("not a service account's JSON key: {e}"))?;
        let field = |name: &str| {
            json.get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| format!("the key has no {name:?}"))
        };
        if let Some(kind) = json.get("type").and_then(Value::as_str)
            && kind != "service_account"
        {
            return Err(format!(
                "\"type\" is {kind:?}, not \"service_account\" (a service account's key is needed)"
            ));
        }
        let client_email = field("client_email")?;
        let token_uri = field("token_uri")?;
        url::Url::parse(&token_uri)
            .map_err(|e| format!("\"token_uri\" {token_uri:?} is not a URL: {e}"))?;
        let pem = field("private_key")?;
        let key = rsa_pkcs1_der(&pem).map_err(|e| format!("\"private_key\": {e}"))?;
        let key = ServiceAccountKey {
            client_email,
            token_uri,
            key_id: json
                .get("private_key_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            key: jsonwebtoken::EncodingKey::from_rsa_der(&key),
        };
        // The DER is only parsed when signing: sign once so a bad key is found here.
        key.assertion("check@key.invalid", "check", 0)
            .map_err(|e| format!("\"private_key\" cannot sign: {e}"))?;
        Ok(key)
    }

    /// The JWT assertion google-auth makes: `iss` the service account, `sub` the user it
    /// acts as, `scope`, `aud` Google's token endpoint, an hour from `now`.
    pub fn assertion(&self, subject: &str, scope: &str, now: i64) -> Result<String, String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self.key_id.clone();
        let claims = serde_json::json!({
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
            "iss": self.client_email,
            "aud": ASSERTION_AUDIENCE,
            "scope": scope,
            "sub": subject,
        });
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())
    }
}

/// The RSA key of a PEM block, as PKCS#1 DER: Google's keys are PKCS#8 `PRIVATE KEY`;
/// `RSA PRIVATE KEY` (PKCS#1) is taken too.
fn rsa_pkcs1_der(pem: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::PrivateKeyDer;
    let key = rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| format!("not a PEM private key: {e}"))?
        .ok_or("no PEM private key in it")?;
    match key {
        PrivateKeyDer::Pkcs1(der) => Ok(der.secret_pkcs1_der().to_vec()),
        PrivateKeyDer::Pkcs8(der) => {
            let info = pkcs8::PrivateKeyInfoRef::try_from(der.secret_pkcs8_der())
                .map_err(|e| format!("not a PKCS#8 key: {e}"))?;
            // rsaEncryption: the only kind of key Google issues and RS256 signs with.
            if info.algorithm.oid.to_string() != "1.2.840.113549.1.1.1" {
                return Err(format!("a {} key, not an RSA key", info.algorithm.oid));
            }
            Ok(info.private_key.as_bytes().to_vec())
        }
        _ => Err("not an RSA key".into()),
    }
}

/// What the config says about groups, per (lowercased) email domain.
pub struct GoogleGroups {
    pub key_files: BTreeMap<String, PathBuf>,
    /// The administrator's username; upstream appends `@DOMAIN`.
    pub administrators: BTreeMap<String, String>,
    pub allowed: BTreeMap<String, BTreeSet<String>>,
    pub admin: BTreeMap<String, BTreeSet<String>>,
    pub include_nested: bool,
    /// `{google_api_url}/auth/admin.directory.group.readonly`, as upstream builds it.
    pub scope: String,
    /// The Directory API's origin.
    pub directory_url: String,
    /// Domain → (access token, expiry in seconds); one lock, so concurrent logins of a
    /// domain ask the token endpoint once.
    tokens: tokio::sync::Mutex<HashMap<String, (String, i64)>>,
}

impl std::fmt::Debug for GoogleGroups {
    // Without the cached tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleGroups")
            .field("key_files", &self.key_files)
            .field("allowed", &self.allowed)
            .field("admin", &self.admin)
            .field("include_nested", &self.include_nested)
            .finish_non_exhaustive()
    }
}

/// A Directory API refusal, told apart so a refused cached token is renewed once.
enum Lookup {
    Unauthorized(String),
    Failed(String),
}

impl GoogleGroups {
    pub fn new(
        key_files: BTreeMap<String, PathBuf>,
        administrators: BTreeMap<String, String>,
        allowed: BTreeMap<String, BTreeSet<String>>,
        admin: BTreeMap<String, BTreeSet<String>>,
        include_nested: bool,
        scope: String,
        directory_url: String,
    ) -> GoogleGroups {
        GoogleGroups {
            key_files,
            administrators,
            allowed,
            admin,
            include_nested,
            scope,
            directory_url: directory_url.trim_end_matches('/').to_owned(),
            tokens: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Upstream's admin rule: with `admin_google_groups` set, admin exactly when one of the
    /// user's groups is an admin group of the user's domain.
    pub fn is_admin(&self, groups: &BTreeSet<String>, domain: &str) -> Option<bool> {
        if self.admin.is_empty() {
            return None;
        }
        Some(
            self.admin
                .get(domain)
                .is_some_and(|admin| !admin.is_disjoint(groups)),
        )
    }

    /// Whether `allowed_google_groups` admits the user (`None` when it is not set).
    pub fn allows(&self, groups: &BTreeSet<String>, domain: &str) -> Option<bool> {
        if self.allowed.is_empty() {
            return None;
        }
        Some(
            self.allowed
                .get(domain)
                .is_some_and(|allowed| !allowed.is_disjoint(groups)),
        )
    }

    /// The groups of `email`, nested ones too with `include_nested_groups`. A domain
    /// without a service account has no group the options name: nothing is asked.
    pub(super) async fn member_groups(
        &self,
        http: &Http,
        email: &str,
        domain: &str,
    ) -> Result<BTreeSet<String>, String> {
        if !self.key_files.contains_key(domain) || !self.administrators.contains_key(domain) {
            return Ok(BTreeSet::new());
        }
        let mut found = BTreeSet::new();
        let mut queue = vec![email.to_owned()];
        let mut looked_up = BTreeSet::new();
        while let Some(member) = queue.pop() {
            if looked_up.len() >= MAX_LOOKUPS {
                tracing::warn!(user = %email, "include_nested_groups: stopped after {MAX_LOOKUPS} lookups");
                break;
            }
            looked_up.insert(member.clone());
            let direct = self.direct_groups(http, &member, domain).await?;
            tracing::debug!(%member, groups = ?direct, "Google groups");
            if self.include_nested {
                // Upstream looks a group up as GROUP@DOMAIN, the user's domain.
                for group in &direct {
                    let key = format!("{group}@{domain}");
                    if !looked_up.contains(&key) && !queue.contains(&key) {
                        queue.push(key);
                    }
                }
            }
            found.extend(direct);
        }
        Ok(found)
    }

    /// One member's direct groups, every page; a refused cached token is renewed once.
    async fn direct_groups(
        &self,
        http: &Http,
        member: &str,
        domain: &str,
    ) -> Result<BTreeSet<String>, String> {
        let token = self.access_token(http, domain, false).await?;
        match self.list(http, &token, member).await {
            Ok(groups) => Ok(groups),
            Err(Lookup::Unauthorized(why)) => {
                tracing::info!(%domain, error = %why, "the directory refused the cached token; asking for a new one");
                let token = self.access_token(http, domain, true).await?;
                match self.list(http, &token, member).await {
                    Ok(groups) => Ok(groups),
                    Err(Lookup::Unauthorized(why) | Lookup::Failed(why)) => Err(why),
                }
            }
            Err(Lookup::Failed(why)) => Err(why),
        }
    }

    async fn list(
        &self,
        http: &Http,
        token: &str,
        member: &str,
    ) -> Result<BTreeSet<String>, Lookup> {
        let mut groups = BTreeSet::new();
        let mut page_token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let url = self.groups_url(member, page_token.as_deref());
            let bearer = [(http::header::AUTHORIZATION, format!("Bearer {token}"))];
            let (status, answer) = http
                .send(http::Method::GET, &url, &bearer, None)
                .await
                .map_err(|e| Lookup::Failed(format!("the Directory API: {e}")))?;
            if !status.is_success() {
                let message = answer
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let why = format!(
                    "the Directory API refused groups.list for {member} (HTTP {status}{}{message})",
                    if message.is_empty() { "" } else { ": " }
                );
                return Err(if status == http::StatusCode::UNAUTHORIZED {
                    Lookup::Unauthorized(why)
                } else {
                    Lookup::Failed(why)
                });
            }
            groups.extend(group_names(&answer));
            page_token = answer
                .get("nextPageToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if page_token.is_none() {
                return Ok(groups);
            }
        }
        tracing::warn!(%member, "the Directory API gave more than {MAX_PAGES} pages of groups; the rest are ignored");
        Ok(groups)
    }

    /// `groups.list(userKey=MEMBER[, pageToken])`.
    pub fn groups_url(&self, member: &str, page_token: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("userKey", member);
        if let Some(page) = page_token {
            query.append_pair("pageToken", page);
        }
        format!(
            "{}/admin/directory/v1/groups?{}",
            self.directory_url,
            query.finish()
        )
    }

    /// The domain's access token: the cached one while it has `RENEW_BEFORE_SECS` left
    /// (unless `renew`), else a new one from the key's `token_uri`. The key file is read
    /// each time a token is needed, as upstream, so a replaced key takes effect.
    async fn access_token(&self, http: &Http, domain: &str, renew: bool) -> Result<String, String> {
        let mut tokens = self.tokens.lock().await;
        let now = jiff::Timestamp::now().as_second();
        if !renew
            && let Some((token, expires)) = tokens.get(domain)
            && now + RENEW_BEFORE_SECS < *expires
        {
            return Ok(token.clone());
        }
        tokens.remove(domain);
        let (Some(path), Some(admin)) =
            (self.key_files.get(domain), self.administrators.get(domain))
        else {
            return Err(format!("no service account for {domain}"));
        };
        let key = ServiceAccountKey::read(path)
            .map_err(|e| format!("google_service_account_keys for {domain}: {e}"))?;
        let subject = format!("{admin}@{domain}");
        let assertion = key.assertion(&subject, &self.scope, now)?;
        let body = form_body(&assertion);
        let (status, answer) = http
            .send(http::Method::POST, &key.token_uri, &[], Some(body))
            .await
            .map_err(|e| format!("the service account's token endpoint: {e}"))?;
        let token = answer.get("access_token").and_then(Value::as_str);
        let Some(token) = token.filter(|_| status.is_success()) else {
            return Err(format!(
                "{} refused the service account {} acting as {subject}: {}",
                key.token_uri,
                key.client_email,
                super::provider_error(&answer, status)
            ));
        };
        // google-auth treats a token without expires_in as good until refused (the 401
        // retry above covers that); an hour, as Google's tokens last, is the bound here.
        let lifetime = answer
            .get("expires_in")
            .and_then(Value::as_i64)
            .unwrap_or(ASSERTION_LIFETIME_SECS);
        tracing::debug!(%domain, lifetime, "service account access token");
        tokens.insert(domain.to_owned(), (token.to_owned(), now + lifetime));
        Ok(token.to_owned())
    }
}

/// The token request's form (kept out of the async fn: the serializer is not Send).
fn form_body(assertion: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", JWT_BEARER)
        .append_pair("assertion", assertion)
        .finish()
}

/// The groups of one `groups.list` page: each group's email before the `@`, as upstream.
pub fn group_names(page: &Value) -> BTreeSet<String> {
    page.get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("email").and_then(Value::as_str))
        .filter(|e| !e.is_empty())
        .map(|e| e.split('@').next().unwrap_or(e).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;

    // The RSA test key the ID token tests sign with (PKCS#1 DER) and its public JWK.
    const TEST_KEY_DER: &[u8] = include_bytes!("../oauth2_test_key.der");
    const TEST_JWK: &str = include_str!("../oauth2_test_jwk.json");

    fn pem(label: &str, der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// The test key wrapped as PKCS#8 (RFC 5208), the form Google's key files have.
    fn pkcs8(pkcs1: &[u8]) -> Vec<u8> {
        fn der(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            let len = body.len();
            if len < 128 {
                out.push(len as u8);
            } else {
                out.extend([0x82, (len >> 8) as u8, len as u8]);
            }
            out.extend(body);
            out
        }
        let algorithm = [
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00,
        ];
        let mut body = vec![0x02, 0x01, 0x00];
        body.extend(algorithm);
        body.extend(der(0x04, pkcs1));
        der(0x30, &body)
    }

    fn key_json(private_key: &str) -> String {
        json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "k1",
            "private_key": private_key,
            "client_email": "hub@p.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string()
    }

    fn verify(assertion: &str) -> Value {
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(TEST_JWK).expect("jwks");
        let header = jsonwebtoken::decode_header(assertion).expect("header");
        assert_eq!(header.kid.as_deref(), Some("k1"));
        let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find("k1").expect("k1")).expect("key");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[ASSERTION_AUDIENCE]);
        jsonwebtoken::decode::<Value>(assertion, &key, &validation)
            .expect("verifies")
            .claims
    }

    #[test]
    fn key_files_sign_assertions() {
        let now = jiff::Timestamp::now().as_second();
        for label_der in [
            ("PRIVATE KEY", pkcs8(TEST_KEY_DER)),
            ("RSA PRIVATE KEY", TEST_KEY_DER.to_vec()),
        ] {
            let key = ServiceAccountKey::parse(&key_json(&pem(label_der.0, &label_der.1)))
                .expect("a valid key");
            assert_eq!(key.client_email, "hub@p.iam.gserviceaccount.com");
            let assertion = key
                .assertion("admin@uni.test", "https://x.test/auth/s", now)
                .expect("signs");
            let claims = verify(&assertion);
            assert_eq!(claims["iss"], "hub@p.iam.gserviceaccount.com");
            assert_eq!(claims["sub"], "admin@uni.test");
            assert_eq!(claims["scope"], "https://x.test/auth/s");
            assert_eq!(claims["exp"], now + 3600);
        }
    }

    #[test]
    fn bad_key_files_say_what_is_wrong() {
        let good = pem("PRIVATE KEY", &pkcs8(TEST_KEY_DER));
        let err = |text: &str| match ServiceAccountKey::parse(text) {
            Ok(_) => panic!("accepted {text}"),
            Err(e) => e,
        };
        assert!(err("{").contains("not a service account's JSON key"));
        let mut no_email: Value = serde_json::from_str(&key_json(&good)).expect("json");
        no_email
            .as_object_mut()
            .expect("object")
            .remove("client_email");
        assert!(err(&no_email.to_string()).contains("\"client_email\""));
        let mut user = no_email.clone();
        user["type"] = json!("authorized_user");
        assert!(err(&user.to_string()).contains("authorized_user"));
        assert!(err(&key_json("garbage")).contains("\"private_key\""));
        // A PEM block that is not a key of this kind, and a truncated one.
        let mut broken = pkcs8(TEST_KEY_DER);
        broken.truncate(200);
        assert!(err(&key_json(&pem("PRIVATE KEY", &broken))).contains("\"private_key\""));
        let mut ec = pkcs8(TEST_KEY_DER);
        ec[19] = 0x02; // rsaEncryption's last arc changed
        assert!(err(&key_json(&pem("PRIVATE KEY", &ec))).contains("not an RSA key"));
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("missing.json");
        let e = ServiceAccountKey::read(&missing)
            .err()
            .expect("missing file");
        assert!(e.contains("missing.json: cannot be read"), "{e}");
    }

    fn groups(admin: &[(&str, &[&str])], allowed: &[(&str, &[&str])]) -> GoogleGroups {
        let map = |m: &[(&str, &[&str])]| {
            m.iter()
                .map(|(d, g)| (d.to_string(), g.iter().map(|s| s.to_string()).collect()))
                .collect()
        };
        GoogleGroups::new(
            BTreeMap::new(),
            BTreeMap::new(),
            map(allowed),
            map(admin),
            false,
            "s".into(),
            "https://dir.test/".into(),
        )
    }

    #[test]
    fn membership_rules_and_pages() {
        let g = groups(&[("uni.test", &["admins"])], &[("uni.test", &["students"])]);
        let set = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(g.is_admin(&set(&["admins", "x"]), "uni.test"), Some(true));
        assert_eq!(g.is_admin(&set(&["students"]), "uni.test"), Some(false));
        // Another domain's groups of the same name do not count.
        assert_eq!(g.is_admin(&set(&["admins"]), "other.test"), Some(false));
        assert_eq!(g.allows(&set(&["students"]), "uni.test"), Some(true));
        assert_eq!(g.allows(&set(&["admins"]), "uni.test"), Some(false));
        let none = groups(&[], &[]);
        assert_eq!(none.is_admin(&set(&["admins"]), "uni.test"), None);
        assert_eq!(none.allows(&set(&["students"]), "uni.test"), None);
        assert_eq!(
            g.groups_url("a+b@uni.test", Some("p/2")),
            "https://dir.test/admin/directory/v1/groups?userKey=a%2Bb%40uni.test&pageToken=p%2F2"
        );
        let page = json!({"groups": [
            {"email": "students@uni.test", "name": "Students"},
            {"email": "Staff@uni.test"},
            {"name": "no email"},
        ], "nextPageToken": "x"});
        assert_eq!(group_names(&page), set(&["Staff", "students"]));
        assert!(group_names(&json!({})).is_empty());
    }
}
