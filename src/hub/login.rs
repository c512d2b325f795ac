//! Logging in: normalise the name, rate-limit failures per user and per client address,
//! ask the authenticator, apply the allow/block/admin policy, create the user on first login.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::db::{self, UserRow};

use super::{Error, Hub, Result};

/// Failed attempts per key (user name or client address) in a sliding window.
pub struct LoginLimiter {
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl LoginLimiter {
    pub fn new(limit: u32, window_secs: u64) -> LoginLimiter {
        LoginLimiter {
            limit,
            window: Duration::from_secs(window_secs),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `key` may try again, if it is over the limit.
    pub fn blocked_for(&self, key: &str) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let list = failures.get_mut(key)?;
        list.retain(|t| now.duration_since(*t) < self.window);
        if list.len() >= self.limit as usize {
            let oldest = list.first().copied().unwrap_or(now);
            return Some(
                (self.window.saturating_sub(now.duration_since(oldest)))
                    .as_secs()
                    .max(1),
            );
        }
        None
    }

    pub fn record_failure(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Bound memory under a flood of distinct keys: drop stale entries first.
        if failures.len() > 100_000 {
            let now = Instant::now();
            let window = self.window;
            failures.retain(|_, list| list.last().is_some_and(|t| now.duration_since(*t) < window));
        }
        failures
            .entry(key.to_owned())
            .or_default()
            .push(Instant::now());
    }

    pub fn clear(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

impl Hub {
    /// Check credentials and return the (possibly new) user. `client` is the client's address.
    pub async fn login(&self, raw_name: &str, password: &str, client: &str) -> Result<UserRow> {
        let name = self
            .policy
            .normalize(raw_name)
            .map_err(|_| Error::Auth(crate::auth::Error::InvalidCredentials))?;
        let user_key = format!("user:{name}");
        let client_key = format!("ip:{client}");
        for key in [&user_key, &client_key] {
            if let Some(wait) = self.login_limiter.blocked_for(key) {
                return Err(Error::TooManyRequests {
                    message: format!(
                        "Too many failed login attempts. Try again in {wait} seconds."
                    ),
                    retry_after: wait,
                });
            }
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
            self.login_limiter.record_failure(&user_key);
            self.login_limiter.record_failure(&client_key);
            tracing::warn!(user = %name, client, "failed login");
            return Err(Error::Auth(crate::auth::Error::InvalidCredentials));
        };
        let name = authenticated.name;
        let existing = self.db.read(|c| db::user_by_name(c, &name))?;
        let config_admin = self.policy.is_admin(&name);
        let admin_by_authenticator = authenticated.admin == Some(true);
        if !self.policy.is_allowed(&name, existing.is_some()) && !admin_by_authenticator {
            self.login_limiter.record_failure(&client_key);
            tracing::warn!(user = %name, client, "login refused: user not allowed");
            return Err(Error::Auth(crate::auth::Error::NotAllowed(name)));
        }
        self.login_limiter.clear(&user_key);
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
            db::touch_user(tx, user.id, crate::time::now())?;
            db::user_by_id(tx, user.id)?.ok_or_else(|| db::Error::NotFound(format!("user {name}")))
        })?;
        if let Some(state) = &authenticated.auth_state {
            self.store_auth_state(&user, state)?;
        }
        tracing::info!(user = %user.name, client, "user logged in");
        Ok(user)
    }

    /// Logout: tokens issued to this browser session (OAuth tokens of servers) are revoked.
    pub async fn logout(&self, user: &UserRow, session_id: Option<&str>) -> Result<()> {
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
    fn limiter_blocks_after_limit_and_clears() {
        let limiter = LoginLimiter::new(3, 60);
        for _ in 0..2 {
            limiter.record_failure("k");
        }
        assert_eq!(limiter.blocked_for("k"), None);
        limiter.record_failure("k");
        assert!(limiter.blocked_for("k").is_some_and(|s| s <= 60));
        assert_eq!(limiter.blocked_for("other"), None);
        limiter.clear("k");
        assert_eq!(limiter.blocked_for("k"), None);
        let off = LoginLimiter::new(0, 60);
        off.record_failure("k");
        assert_eq!(off.blocked_for("k"), None);
    }
}
