//! Logging in: normalise the name, slow down failures per user and client address, ask the
//! authenticator, apply the allow/block/admin policy, create the user on first login.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::db::{self, UserRow};

use super::{Error, Hub, Result};

/// The first-use authenticator's passwords, in the hub's database.
pub(super) struct Passwords(pub(super) std::sync::Arc<db::Db>);

impl crate::auth::first_use::PasswordStore for Passwords {
    fn hash_of(&self, name: &str) -> std::result::Result<Option<String>, String> {
        self.0
            .read(|c| db::first_use_password(c, name))
            .map_err(|e| e.to_string())
    }

    fn user_exists(&self, name: &str) -> std::result::Result<bool, String> {
        self.0
            .read(|c| db::user_by_name(c, name))
            .map(|u| u.is_some())
            .map_err(|e| e.to_string())
    }
}

/// The provider's redirect back to `/hub/oauth_callback`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct OAuthCallback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The first wait once a pair is over the limit; each further failure doubles it.
const FIRST_LOCKOUT: Duration = Duration::from_secs(5);

/// Failed logins per (user, client address) pair. Keyed by the pair, not by either alone:
/// failures from one address must not lock the user out everywhere, nor (behind a reverse
/// proxy or NAT, where many people share an address) everyone out. After `limit` failures
/// within `window` the pair waits, 5 s and then twice as long per further failure, at most
/// `window`: a back-off, not a ban, and it ends with the first success.
pub struct LoginLimiter {
    limit: u32,
    window: Duration,
    pairs: Mutex<HashMap<(String, String), Failures>>,
}

#[derive(Default)]
struct Failures {
    at: Vec<Instant>,
    locked_until: Option<Instant>,
}

impl LoginLimiter {
    pub fn new(limit: u32, window_secs: u64) -> LoginLimiter {
        LoginLimiter {
            limit,
            window: Duration::from_secs(window_secs),
            pairs: Mutex::new(HashMap::new()),
        }
    }

    fn key(user: &str, client: &str) -> (String, String) {
        (user.to_owned(), client.to_owned())
    }

    /// Seconds until `user` may try again from `client`, if that pair is waiting.
    pub fn blocked_for(&self, user: &str, client: &str) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        let pairs = self.pairs.lock().unwrap_or_else(|e| e.into_inner());
        let until = pairs.get(&Self::key(user, client))?.locked_until?;
        let left = until.checked_duration_since(Instant::now())?;
        // Rounded up, so a client that waits as told is not refused again.
        Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    pub fn record_failure(&self, user: &str, client: &str) {
        if self.limit == 0 {
            return;
        }
        let mut pairs = self.pairs.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let window = self.window;
        // Bound memory under a flood of distinct pairs: drop stale entries first.
        if pairs.len() > 100_000 {
            pairs.retain(|_, f| {
                f.at.last().is_some_and(|t| now.duration_since(*t) < window)
                    || f.locked_until.is_some_and(|u| u > now)
            });
        }
        let entry = pairs.entry(Self::key(user, client)).or_default();
        entry.at.retain(|t| now.duration_since(*t) < window);
        entry.at.push(now);
        let over = entry.at.len().saturating_sub(self.limit as usize);
        if entry.at.len() >= self.limit as usize {
            let doublings = u32::try_from(over).unwrap_or(u32::MAX).min(20);
            let wait = FIRST_LOCKOUT
                .saturating_mul(1 << doublings)
                .min(window.max(Duration::from_secs(1)));
            entry.locked_until = Some(now + wait);
        }
    }

    pub fn clear(&self, user: &str, client: &str) {
        self.pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&Self::key(user, client));
    }
}

impl Hub {
    /// Check credentials and return the (possibly new) user. `client` is the client's address.
    /// Log in, timed in upstream's `login_duration_seconds{status}` (success or failure).
    pub async fn login(&self, raw_name: &str, password: &str, client: &str) -> Result<UserRow> {
        let started = std::time::Instant::now();
        let result = self.login_checked(raw_name, password, client).await;
        let status = if result.is_ok() { "success" } else { "failure" };
        crate::metrics::Metrics::observe(&self.metrics.logins, status, started);
        result
    }

    async fn login_checked(&self, raw_name: &str, password: &str, client: &str) -> Result<UserRow> {
        let name = self
            .policy
            .normalize(raw_name)
            .map_err(|_| Error::Auth(crate::auth::Error::InvalidCredentials))?;
        if let Some(wait) = self.login_limiter.blocked_for(&name, client) {
            return Err(Error::TooManyRequests {
                message: format!("Too many failed login attempts. Try again in {wait} seconds."),
                retry_after: wait,
            });
        }
        let outcome = {
            let _permit = self
                .pam_permits
                .acquire()
                .await
                .map_err(|_| Error::Unavailable("shutting down".into()))?;
            self.authenticator.authenticate(&name, password).await?
        };
        let Some(authenticated) = outcome else {
            self.login_limiter.record_failure(&name, client);
            tracing::warn!(user = %name, client, "failed login");
            return Err(Error::Auth(crate::auth::Error::InvalidCredentials));
        };
        let mut authenticated = authenticated;
        // A name the directory gave (LDAP's use_lookup_dn_username) is normalised as the
        // typed one was (upstream normalises whatever authenticate returns).
        if authenticated.name != name {
            authenticated.name = self
                .policy
                .normalize(&authenticated.name)
                .map_err(Error::Auth)?;
        }
        let admitted_by_authenticator = authenticated.admin == Some(true) || authenticated.admitted;
        self.admit(authenticated, client, admitted_by_authenticator)
            .await
    }

    /// The end of every login once the authenticator has said who it is: the policy, the
    /// user created or updated, auth_state stored. `admitted` is the authenticator's own
    /// allowance beyond the policy's lists (its admins, OAuth's `allowed_groups`).
    async fn admit(
        &self,
        authenticated: crate::auth::Authenticated,
        client: &str,
        admitted: bool,
    ) -> Result<UserRow> {
        let name = authenticated.name;
        let existing = self.db.read(|c| db::user_by_name(c, &name))?;
        let config_admin = self.policy.is_admin(&name);
        // blocked_users wins over every allowance, the authenticator's included.
        let blocked = self.policy.blocked_users.contains(&name);
        if blocked || (!self.policy.is_allowed(&name, existing.is_some()) && !admitted) {
            self.login_limiter.record_failure(&name, client);
            tracing::warn!(user = %name, client, "login refused: user not allowed");
            return Err(Error::Auth(crate::auth::Error::NotAllowed(name)));
        }
        self.login_limiter.clear(&name, client);
        // Before the user is recorded: a login whose account cannot be made fails whole
        // (upstream's add_user on a new user's login). Existing users' accounts are made
        // too, so turning the option on later covers users added before.
        self.ensure_system_account(&name).await.map_err(|e| {
            tracing::error!(user = %name, client, error = %e, "login refused: no system account");
            e
        })?;
        let user = self.db.write(|tx| {
            let user = match db::user_by_name(tx, &name)? {
                Some(user) => user,
                None => db::insert_user(tx, &name, false)?,
            };
            // The authenticator's word on admin wins when it gives one (as upstream).
            let admin = match authenticated.admin {
                Some(admin) => admin || config_admin,
                None => user.admin || config_admin,
            };
            if admin != user.admin {
                db::set_user_admin(tx, user.id, admin)?;
            }
            if let Some(hash) = &authenticated.new_password_hash {
                db::set_first_use_password(tx, &name, hash, crate::time::now())?;
                tracing::info!(user = %name, "first login: password set");
            }
            db::touch_user(tx, user.id, crate::time::now())?;
            db::user_by_id(tx, user.id)?.ok_or_else(|| db::Error::NotFound(format!("user {name}")))
        })?;
        if let Some(state) = &authenticated.auth_state {
            self.store_auth_state(&user, state)?;
        }
        tracing::info!(user = %user.name, client, "user logged in");
        Ok(user)
    }

    /// `/hub/oauth_login`: the provider's authorize URL, and the signed state cookie's value
    /// that the callback checks.
    pub async fn oauth_start(&self, next_url: &str) -> Result<(String, String)> {
        use crate::auth::oauth2;
        let client = self
            .oauth()
            .ok_or(Error::Auth(crate::auth::Error::NoLogin))?;
        let state = oauth2::LoginState::new(next_url);
        let redirect = client.authorize_redirect(&state).await?;
        let value = serde_json::to_string(&state).unwrap_or_default();
        let cookie = self.secret.sign(
            oauth2::STATE_COOKIE,
            &value,
            crate::auth::cookie::now_secs(),
        );
        Ok((redirect, cookie))
    }

    /// `/hub/oauth_callback`: check `state` against the cookie, exchange the code, apply
    /// the groups and the policy. Returns the user and the `next` URL the login began with.
    pub async fn oauth_finish(
        &self,
        query: &OAuthCallback,
        cookie: Option<&str>,
        client_ip: &str,
    ) -> Result<(UserRow, String)> {
        let started = std::time::Instant::now();
        let result = self.oauth_finish_checked(query, cookie, client_ip).await;
        let status = if result.is_ok() { "success" } else { "failure" };
        crate::metrics::Metrics::observe(&self.metrics.logins, status, started);
        if let Err(e) = &result {
            tracing::warn!(error = %e, client = client_ip, "OAuth login failed");
        }
        result
    }

    async fn oauth_finish_checked(
        &self,
        query: &OAuthCallback,
        cookie: Option<&str>,
        client_ip: &str,
    ) -> Result<(UserRow, String)> {
        use crate::auth::oauth2::{self, Error as O};
        let client = self
            .oauth()
            .ok_or(Error::Auth(crate::auth::Error::NoLogin))?;
        if let Some(error) = &query.error {
            let description = query.error_description.as_deref().unwrap_or_default();
            return Err(O::Provider(format!("{error} {description}").trim().to_owned()).into());
        }
        let state: oauth2::LoginState = cookie
            .and_then(|c| {
                self.secret.verify(
                    oauth2::STATE_COOKIE,
                    c,
                    oauth2::STATE_MAX_AGE_SECS,
                    crate::auth::cookie::now_secs(),
                )
            })
            .and_then(|v| serde_json::from_str(&v).ok())
            .ok_or(O::BadState)?;
        if !query.state.as_deref().is_some_and(|s| state.matches(s)) {
            return Err(O::BadState.into());
        }
        let code = query
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or(O::NoCode)?;
        let found = client.complete(code, &state).await?;
        let name = self.policy.normalize(&found.name).map_err(Error::Auth)?;
        if self.policy.blocked_users.contains(&name) {
            return Err(Error::Auth(crate::auth::Error::NotAllowed(name)));
        }
        let admitted = found.admin == Some(true) || found.in_allowed_groups == Some(true);
        let user = self
            .admit(
                crate::auth::Authenticated {
                    name,
                    admin: found.admin,
                    admitted: false,
                    auth_state: Some(found.auth_state),
                    new_password_hash: None,
                },
                client_ip,
                admitted,
            )
            .await?;
        if client.manage_groups() {
            self.set_user_groups(&user, &found.groups)?;
        }
        self.refreshes.logged_in(&user.name).await;
        Ok((user, state.next_url))
    }

    /// `manage_groups`: the user's hub groups become exactly the provider's, created as needed.
    pub(super) fn set_user_groups(
        &self,
        user: &UserRow,
        groups: &std::collections::BTreeSet<String>,
    ) -> Result<()> {
        self.db.write(|tx| {
            for old in db::user_groups(tx, user.id)? {
                if !groups.contains(&old)
                    && let Some(group) = db::group_by_name(tx, &old)?
                {
                    db::remove_group_member(tx, group.id, user.id)?;
                }
            }
            for name in groups.iter().filter(|g| !g.is_empty() && !g.contains('/')) {
                let group = match db::group_by_name(tx, name)? {
                    Some(group) => group,
                    None => db::insert_group(tx, name)?,
                };
                db::add_group_member(tx, group.id, user.id)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Whether logins set and check passwords the hub keeps (the first-use authenticator).
    pub fn has_own_passwords(&self) -> bool {
        self.config.hub.authenticator_class == "firstuse"
    }

    /// Change `target`'s first-use password. `current` is the password the person changing
    /// their own gives (checked); an admin resetting another user's gives none (the caller
    /// holds `admin:users` on them, which the page checks).
    pub async fn change_password(
        &self,
        target: &UserRow,
        current: Option<&str>,
        new: &str,
        confirmation: &str,
    ) -> Result<()> {
        use crate::auth::first_use;
        if !self.has_own_passwords() {
            return Err(Error::NotFound(
                "This hub's authenticator keeps no passwords of its own".into(),
            ));
        }
        if let Some(current) = current {
            let hash = self.db.read(|c| db::first_use_password(c, &target.name))?;
            let current = current.to_owned();
            let ok = match hash {
                Some(hash) => {
                    tokio::task::spawn_blocking(move || first_use::verify_password(&hash, &current))
                        .await
                        .unwrap_or(false)
                }
                None => false,
            };
            if !ok {
                return Err(Error::Forbidden(
                    "Your current password is not correct.".into(),
                ));
            }
        }
        if new != confirmation {
            return Err(Error::BadRequest(
                "The new password and its confirmation do not match.".into(),
            ));
        }
        first_use::check_new_password(new, self.config.first_use.min_password_length)
            .map_err(Error::Auth)?;
        let new = new.to_owned();
        let hash = tokio::task::spawn_blocking(move || first_use::hash_password(&new))
            .await
            .map_err(|e| Error::Unavailable(format!("hashing failed: {e}")))?
            .map_err(Error::Auth)?;
        let now = crate::time::now();
        self.db
            .write(|tx| db::set_first_use_password(tx, &target.name, &hash, now))?;
        tracing::info!(user = %target.name, by_self = current.is_some(), "password changed");
        Ok(())
    }

    /// Logout: tokens issued to this browser session (OAuth tokens of servers) are revoked.
    /// Log out, timed in upstream's `logout_duration_seconds`.
    pub async fn logout(&self, user: &UserRow, session_id: Option<&str>) -> Result<()> {
        let started = std::time::Instant::now();
        let result = self.logout_session(user, session_id).await;
        self.metrics
            .logouts
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn logout_session(&self, user: &UserRow, session_id: Option<&str>) -> Result<()> {
        if let Some(session_id) = session_id {
            self.db
                .write(|tx| db::delete_session_tokens(tx, user.id, session_id))?;
        }
        if self.config.hub.shutdown_on_logout {
            let spawners = self.db.read(|c| db::spawners_of(c, user.id))?;
            for row in spawners.into_iter().filter(|r| r.url.is_some()) {
                let _ = self.stop_server(user, &row.name).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_backs_off_per_pair_and_clears() {
        let limiter = LoginLimiter::new(3, 60);
        for _ in 0..2 {
            limiter.record_failure("alice", "10.0.0.1");
        }
        assert_eq!(limiter.blocked_for("alice", "10.0.0.1"), None);
        limiter.record_failure("alice", "10.0.0.1");
        assert_eq!(limiter.blocked_for("alice", "10.0.0.1"), Some(5));
        // The same user from elsewhere, and another user from the same address, go on.
        assert_eq!(limiter.blocked_for("alice", "10.0.0.2"), None);
        assert_eq!(limiter.blocked_for("bob", "10.0.0.1"), None);
        // Each further failure doubles the wait, up to the window.
        limiter.record_failure("alice", "10.0.0.1");
        assert_eq!(limiter.blocked_for("alice", "10.0.0.1"), Some(10));
        for _ in 0..5 {
            limiter.record_failure("alice", "10.0.0.1");
        }
        assert_eq!(limiter.blocked_for("alice", "10.0.0.1"), Some(60));
        limiter.clear("alice", "10.0.0.1");
        assert_eq!(limiter.blocked_for("alice", "10.0.0.1"), None);
        let off = LoginLimiter::new(0, 60);
        for _ in 0..5 {
            off.record_failure("alice", "10.0.0.1");
        }
        assert_eq!(off.blocked_for("alice", "10.0.0.1"), None);
    }
}
