//! Who is asking: authenticators (PAM, dummy, shared password, first use, null, OAuth,
//! LDAP), the username policy shared by all of them (normalisation, allow/block/admin
//! lists), and API token hashing that is byte-compatible with JupyterHub's `hash_token`.

pub mod accounts;
pub mod cookie;
pub mod first_use;
pub mod ldap;
pub mod oauth2;
pub mod pam;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("user {0:?} is not allowed to log in")]
    NotAllowed(String),
    #[error("invalid username {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("login is not available with this authenticator")]
    NoLogin,
    #[error("PAM: {0}")]
    Pam(String),
    #[error("the privileged helper failed: {0}")]
    Helper(String),
    /// A new password the authenticator refuses; the message is for the person choosing it.
    #[error("{0}")]
    PasswordRejected(String),
    #[error("password store: {0}")]
    Password(String),
    /// The LDAP server cannot be reached or spoken to (not: it refused the credentials).
    #[error("LDAP server {0}")]
    Ldap(String),
}

/// Hash rounds for tokens the hub generated (random, so one round suffices) and for tokens
/// people chose (given in config), as upstream.
pub const GENERATED_ROUNDS: u32 = 1;
pub const PROVIDED_ROUNDS: u32 = 16384;

/// A new API token: 32 lowercase hex characters (uuid4 hex, as upstream).
pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// An OAuth code or access token: 30 characters of `[A-Za-z0-9]`, as oauthlib makes them.
pub fn new_oauth_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 30];
    fill_random(&mut bytes);
    // 256 is a multiple of 62 plus 8: the tiny bias is irrelevant for 178 bits of entropy.
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

pub fn fill_random(bytes: &mut [u8]) {
    getrandom::fill(bytes).expect("the OS random number generator is available");
}

/// `sha512:{rounds}:{salt_hex}:{hexdigest}` of `salt_hex ‖ token × rounds`.
pub fn hash_token(token: &str, rounds: u32) -> String {
    let mut salt = [0u8; 8];
    fill_random(&mut salt);
    hash_token_with_salt(token, rounds, &hex::encode(salt))
}

fn hash_token_with_salt(token: &str, rounds: u32, salt_hex: &str) -> String {
    let mut hasher = Sha512::new();
    hasher.update(salt_hex.as_bytes());
    for _ in 0..rounds {
        hasher.update(token.as_bytes());
    }
    format!(
        "sha512:{rounds}:{salt_hex}:{}",
        hex::encode(hasher.finalize())
    )
}

/// Whether `token` hashes to `hashed` (constant time in the digest comparison).
pub fn compare_token(hashed: &str, token: &str) -> bool {
    let mut parts = hashed.splitn(4, ':');
    let (Some("sha512"), Some(rounds), Some(salt), Some(_)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(rounds) = rounds.parse::<u32>() else {
        return false;
    };
    if rounds > 1 << 20 {
        return false;
    }
    let expected = hash_token_with_salt(token, rounds, salt);
    expected.as_bytes().ct_eq(hashed.as_bytes()).into()
}

/// Tokens this process has already checked against their stored hash: SHA-256 of the token
/// → the stored hash it matched. A config token's hash has 16 384 rounds (as upstream), which
/// upstream pays on every request; here it is paid once. A remembered match counts only while
/// the database still offers that stored hash, so a revoked or expired token never passes.
#[derive(Default)]
pub struct VerifiedTokens(Mutex<HashMap<[u8; 32], String>>);

impl VerifiedTokens {
    /// Bound on remembered tokens; past it the memory starts afresh.
    const MAX: usize = 10_000;

    /// Whether `token` matches the stored `hashed` (as `compare_token`).
    pub fn matches(&self, hashed: &str, token: &str) -> bool {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let remembered = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|h| h == hashed);
        if remembered {
            return true;
        }
        if !compare_token(hashed, token) {
            return false;
        }
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(key, hashed.to_owned());
        true
    }
}

/// What a successful login yields.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    pub name: String,
    /// `Some` when the authenticator decides admin status (e.g. PAM admin groups).
    pub admin: Option<bool>,
    /// Admitted by the authenticator's own rule beyond the policy's lists (LDAP's
    /// `allowed_groups`), as upstream's `check_allowed` overrides.
    pub admitted: bool,
    pub auth_state: Option<serde_json::Value>,
    /// A first-use password to keep once the hub has admitted the login (the policy, the
    /// system account): kept by the hub then, so a refused login reserves nothing.
    pub new_password_hash: Option<String>,
}

#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Whether the hub shows a login form.
    fn has_login_form(&self) -> bool {
        true
    }
    /// Check a username (already normalised) and password; `Ok(None)` is "wrong credentials".
    async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Authenticated>, Error>;
    /// Whether any login is possible without an allow list (PAM: any system user may try).
    fn allows_all_by_default(&self) -> bool {
        false
    }
    /// Whether it admits users by what it sees only at login (LDAP's `allowed_groups`), so
    /// the policy's lists alone cannot recheck a login cookie.
    fn admits_at_login(&self) -> bool {
        false
    }
    /// Upstream's `add_user` check for a user already in the database: `Err(why)` when the
    /// authenticator could no longer log them in (PAM: the system account is gone).
    fn check_existing_user(&self, name: &str) -> Result<(), String> {
        let _ = name;
        Ok(())
    }
}

/// Any name logs in, with `password` if set. For development and tests only.
pub struct Dummy {
    pub password: Option<String>,
}

#[async_trait::async_trait]
impl Authenticator for Dummy {
    fn name(&self) -> &'static str {
        "dummy"
    }
    async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Authenticated>, Error> {
        if let Some(expected) = &self.password
            && !bool::from(expected.as_bytes().ct_eq(password.as_bytes()))
        {
            return Ok(None);
        }
        Ok(Some(Authenticated {
            name: username.to_owned(),
            admin: None,
            admitted: false,
            auth_state: None,
            new_password_hash: None,
        }))
    }
    fn allows_all_by_default(&self) -> bool {
        true
    }
}

/// JupyterHub 5's SharedPasswordAuthenticator: one password for users, another for admins.
pub struct SharedPassword {
    pub user_password: Option<String>,
    pub admin_password: Option<String>,
}

#[async_trait::async_trait]
impl Authenticator for SharedPassword {
    fn name(&self) -> &'static str {
        "shared-password"
    }
    async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Authenticated>, Error> {
        let matches = |expected: &Option<String>| {
            expected
                .as_ref()
                .is_some_and(|e| bool::from(e.as_bytes().ct_eq(password.as_bytes())))
        };
        if matches(&self.admin_password) {
            return Ok(Some(Authenticated {
                name: username.to_owned(),
                admin: Some(true),
                admitted: false,
                auth_state: None,
                new_password_hash: None,
            }));
        }
        if matches(&self.user_password) {
            return Ok(Some(Authenticated {
                name: username.to_owned(),
                admin: None,
                admitted: false,
                auth_state: None,
                new_password_hash: None,
            }));
        }
        Ok(None)
    }
    fn allows_all_by_default(&self) -> bool {
        true
    }
}

/// No login at all: only API tokens work (upstream's NullAuthenticator).
pub struct Null;

#[async_trait::async_trait]
impl Authenticator for Null {
    fn name(&self) -> &'static str {
        "null"
    }
    fn has_login_form(&self) -> bool {
        false
    }
    async fn authenticate(
        &self,
        _username: &str,
        _password: &str,
    ) -> Result<Option<Authenticated>, Error> {
        Err(Error::NoLogin)
    }
}

/// The `[Authenticator]` rules that apply whatever checks the password.
#[derive(Debug, Clone)]
pub struct Policy {
    pub admin_users: BTreeSet<String>,
    pub allowed_users: BTreeSet<String>,
    pub blocked_users: BTreeSet<String>,
    pub allow_all: bool,
    pub allow_existing_users: bool,
    pub username_pattern: Option<crate::config::Pattern>,
    pub username_map: std::collections::BTreeMap<String, String>,
}

impl Policy {
    pub fn from_config(config: &Config, authenticator_allows_all: bool) -> Policy {
        let auth = &config.authenticator;
        let normalize = |names: &Vec<String>| {
            names
                .iter()
                .map(|n| n.to_lowercase())
                .collect::<BTreeSet<_>>()
        };
        Policy {
            admin_users: normalize(&auth.admin_users),
            allowed_users: normalize(&auth.allowed_users),
            blocked_users: normalize(&auth.blocked_users),
            // Differs from JupyterHub 5, where allow_all defaults to False for every
            // authenticator and nobody may log in until a list is set: the dummy and
            // shared-password authenticators exist to let anyone in, and PAM already limits
            // logins to system accounts, so an empty allow list means "everyone the
            // authenticator accepts" here, as in JupyterHub 4.
            allow_all: auth.allow_all
                || (authenticator_allows_all && auth.allowed_users.is_empty()),
            allow_existing_users: auth
                .allow_existing_users
                .unwrap_or(!auth.allowed_users.is_empty()),
            username_pattern: auth.username_pattern.clone(),
            username_map: auth.username_map.clone(),
        }
    }

    /// Upstream's `normalize_username` + `username_map`, then validation.
    pub fn normalize(&self, raw: &str) -> Result<String, Error> {
        let lowered = raw.trim().to_lowercase();
        let name = self.username_map.get(&lowered).cloned().unwrap_or(lowered);
        validate_username(&name)?;
        if let Some(pattern) = &self.username_pattern
            && !pattern.is_full_match(&name)
        {
            return Err(Error::InvalidName {
                name,
                why: "it does not match username_pattern",
            });
        }
        Ok(name)
    }

    /// Upstream's `check_allowed` + `check_blocked_users`; `exists` is whether the user is
    /// already in the database (for `allow_existing_users`).
    pub fn is_allowed(&self, name: &str, exists: bool) -> bool {
        if self.blocked_users.contains(name) {
            return false;
        }
        self.allow_all
            || self.allowed_users.contains(name)
            || self.admin_users.contains(name)
            || (self.allow_existing_users && exists)
    }

    pub fn is_admin(&self, name: &str) -> bool {
        self.admin_users.contains(name)
    }
}

/// Names the hub can hold at all: non-empty, no `/`, not only dots, no surrounding spaces,
/// no control characters, at most 255 bytes.
pub fn validate_username(name: &str) -> Result<(), Error> {
    let invalid = |why| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.contains('/') {
        return invalid("it contains '/'");
    }
    if name.chars().all(|c| c == '.') {
        return invalid("it consists only of dots");
    }
    if name.trim() != name {
        return invalid("it has leading or trailing spaces");
    }
    if name.chars().any(char::is_control) {
        return invalid("it contains control characters");
    }
    if name.len() > 255 {
        return invalid("it is longer than 255 bytes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_python_hash_token() {
        // hashlib.sha512(b"0123456789abcdef" + b"secret-token").hexdigest(), as jupyterhub.utils.hash_token.
        let hashed = hash_token_with_salt("secret-token", 1, "0123456789abcdef");
        assert!(hashed.starts_with("sha512:1:0123456789abcdef:"));
        let expected = {
            let mut h = Sha512::new();
            h.update(b"0123456789abcdefsecret-token");
            hex::encode(h.finalize())
        };
        assert!(hashed.ends_with(&expected));
        assert!(compare_token(&hashed, "secret-token"));
        assert!(!compare_token(&hashed, "secret-tokeN"));
        assert!(!compare_token("md5:1:aa:bb", "secret-token"));
        assert!(!compare_token("garbage", "secret-token"));
    }

    #[test]
    fn provided_tokens_use_many_rounds() {
        let hashed = hash_token("a-token-from-config", PROVIDED_ROUNDS);
        assert!(hashed.starts_with("sha512:16384:"));
        assert!(compare_token(&hashed, "a-token-from-config"));
    }

    #[test]
    fn verified_tokens_remember_only_the_hash_they_matched() {
        let verified = VerifiedTokens::default();
        let hashed = hash_token("a-token-from-config", PROVIDED_ROUNDS);
        assert!(!verified.matches(&hashed, "another-token"));
        assert!(verified.matches(&hashed, "a-token-from-config"));
        assert!(verified.matches(&hashed, "a-token-from-config"));
        // The same token against another stored hash (the row was replaced: a new salt)
        // is checked afresh, and a wrong stored hash never passes from memory.
        let rehashed = hash_token("a-token-from-config", PROVIDED_ROUNDS);
        assert!(verified.matches(&rehashed, "a-token-from-config"));
        assert!(!verified.matches(&hash_token("other", 1), "a-token-from-config"));
    }

    #[test]
    fn token_formats() {
        let t = new_token();
        assert_eq!(t.len(), 32);
        assert!(
            t.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let o = new_oauth_token();
        assert_eq!(o.len(), 30);
        assert!(o.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn username_validation() {
        for good in ["alice", "a.b", "bob@example.org", "名前"] {
            assert!(validate_username(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "..", " alice", "al\nice"] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn policy_lists() {
        let mut config = Config::default();
        config.authenticator.allowed_users = vec!["Alice".into()];
        config.authenticator.blocked_users = vec!["mallory".into()];
        config.authenticator.admin_users = vec!["root2".into()];
        config.authenticator.username_map = [("al".to_string(), "alice".to_string())].into();
        let policy = Policy::from_config(&config, true);
        assert_eq!(policy.normalize(" AL ").expect("valid"), "alice");
        assert!(policy.is_allowed("alice", false));
        assert!(policy.is_allowed("root2", false));
        assert!(!policy.is_allowed("bob", false));
        assert!(
            policy.is_allowed("bob", true),
            "allow_existing_users defaults on with an allow list"
        );
        assert!(!policy.is_allowed("mallory", true));
        config.authenticator.allowed_users.clear();
        let open = Policy::from_config(&config, true);
        assert!(open.is_allowed("bob", false));
        assert!(!open.is_allowed("mallory", false));
        let pam_like = Policy::from_config(&config, false);
        assert!(!pam_like.is_allowed("bob", false));
    }
}
