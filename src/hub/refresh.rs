//! Refreshing an identity provider's login (upstream's `refresh_auth`): a user's OAuth login
//! is checked with the provider again once it is older than `auth_refresh_age`, and before
//! each spawn with `refresh_pre_spawn`. The stored access token is tried first, then the
//! refresh token; when neither works the person must log in again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::db::{self, UserRow};

use super::identity::Identity;
use super::{Hub, Result};

/// What the hub knows of a user's provider login since it started.
#[derive(Debug, Clone, Copy)]
enum Checked {
    /// Logged in or refreshed then.
    At(Instant),
    /// The provider refused the stored tokens: nothing to try until the next login.
    Stale,
}

/// Per user, behind an async lock so that concurrent requests of one user refresh once (a
/// refresh token used twice may be refused by a provider that rotates them).
#[derive(Default)]
pub(super) struct Refreshes(Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Checked>>>>>);

impl Refreshes {
    fn slot(&self, user: &str) -> Arc<tokio::sync::Mutex<Option<Checked>>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(user.to_owned())
            .or_default()
            .clone()
    }

    pub(super) async fn logged_in(&self, user: &str) {
        *self.slot(user).lock().await = Some(Checked::At(Instant::now()));
    }
}

impl Hub {
    /// The request's identity, or `None` when it is a user whose provider login has gone
    /// stale (the request is then treated as not logged in, as upstream).
    pub async fn fresh(&self, identity: Option<Identity>) -> Result<Option<Identity>> {
        let Some(identity) = identity else {
            return Ok(None);
        };
        let Some(user) = identity.user() else {
            return Ok(Some(identity));
        };
        Ok(self.refresh_auth(user, false).await?.then_some(identity))
    }

    /// Whether `user`'s login still holds, asking the provider when it is due (or `force`).
    pub(super) async fn refresh_auth(&self, user: &UserRow, force: bool) -> Result<bool> {
        // Only identity provider logins refresh, and OAuthenticator only with auth_state.
        let Some(client) = self.oauth.clone() else {
            return Ok(true);
        };
        let config = &self.config.authenticator;
        if !config.enable_auth_state || (!force && config.auth_refresh_age == 0) {
            return Ok(true);
        }
        let slot = self.refreshes.slot(&user.name);
        let mut checked = slot.lock().await;
        match *checked {
            Some(Checked::Stale) => return Ok(false),
            Some(Checked::At(at))
                if !force && at.elapsed() < Duration::from_secs(config.auth_refresh_age) =>
            {
                return Ok(true);
            }
            _ => {}
        }
        let Some(current) = self.db.read(|c| db::user_by_id(c, user.id))? else {
            return Ok(false);
        };
        let state = self.auth_state(&current)?;
        if state.is_null() {
            tracing::info!(user = %user.name, "no auth_state to refresh; a new login is needed");
            *checked = Some(Checked::Stale);
            return Ok(false);
        }
        let Some(found) = client.refresh(&state).await? else {
            tracing::warn!(user = %user.name, "stale auth info: a new login is needed to refresh it");
            *checked = Some(Checked::Stale);
            return Ok(false);
        };
        self.store_auth_state(&current, &found.auth_state)?;
        if let Some(admin) = found.admin {
            let admin = admin || self.policy.is_admin(&current.name);
            if admin != current.admin {
                self.db
                    .write(|tx| db::set_user_admin(tx, current.id, admin))?;
            }
        }
        if client.manage_groups() {
            self.set_user_groups(&current, &found.groups)?;
        }
        tracing::info!(user = %user.name, "refreshed the identity provider's login");
        *checked = Some(Checked::At(Instant::now()));
        Ok(true)
    }
}
