//! Who a request acts as and with which scopes: token lookup, login-cookie lookup, and the
//! owner's scopes from roles (direct, through groups, and the implicit `user`/`admin` roles)
//! and from servers shared with the user.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::db::{self, RoleOwner, ServiceRow, TokenOwner, TokenRow, UserRow};
use crate::rbac::{self, Owner, Resource, Scopes};

use super::{Error, Hub, Result};

#[derive(Debug, Clone)]
pub enum Principal {
    User(UserRow),
    Service(ServiceRow),
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::User(u) => &u.name,
            Principal::Service(s) => &s.name,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::User(_) => "user",
            Principal::Service(_) => "service",
        }
    }
}

/// An authenticated request's identity.
#[derive(Debug, Clone)]
pub struct Identity {
    pub principal: Principal,
    /// The token used, if the request was token-authenticated.
    pub token: Option<TokenRow>,
    /// Effective scopes (for tokens: the token's scopes intersected with its owner's).
    pub scopes: Scopes,
    /// Groups of the user (empty for services).
    pub groups: Vec<String>,
    pub session_id: Option<String>,
    /// For a token's identity, which is remembered: when its scopes change without a write
    /// (the first expiry of a share they include).
    pub valid_until: Option<i64>,
}

impl Identity {
    pub fn user(&self) -> Option<&UserRow> {
        match &self.principal {
            Principal::User(u) => Some(u),
            Principal::Service(_) => None,
        }
    }

    /// Check one of `scopes` against `resource`: 403 when none is held in any form, 404 when
    /// held but filtered away from this resource (as upstream).
    pub fn require(&self, scopes: &[&str], resource: &Resource<'_>) -> Result<()> {
        if scopes.iter().any(|s| self.scopes.allows(s, resource)) {
            return Ok(());
        }
        if scopes.iter().any(|s| self.scopes.has(s)) {
            return Err(Error::NoAccess);
        }
        Err(Error::MissingScope(scopes.join(", ")))
    }

    pub fn allows(&self, scope: &str, resource: &Resource<'_>) -> bool {
        self.scopes.allows(scope, resource)
    }
}

/// An owned OAuth client, borrowed as `rbac::Client` when scopes are computed.
enum ClientRef {
    Server(String, String),
    Service(String),
}

impl ClientRef {
    fn as_client(&self) -> rbac::Client<'_> {
        match self {
            ClientRef::Server(user, server) => rbac::Client::Spawner { user, server },
            ClientRef::Service(name) => rbac::Client::Service { name },
        }
    }
}

/// What an API token resolved to, by SHA-256 of the token, with the database generation it
/// was computed at. Any write (a role, group, user, token or service changed, a token used
/// after `ACTIVITY_RESOLUTION_MICROS`) bumps the generation and so drops every entry, which
/// keeps revocation immediate; in between, a token's requests skip the role expansion and the
/// half-dozen reads it costs.
#[derive(Default)]
pub struct TokenIdentities(std::sync::Mutex<HashMap<[u8; 32], (u64, Identity)>>);

impl TokenIdentities {
    /// Bound on remembered tokens; past it the memory starts afresh.
    const MAX: usize = 4096;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (u64, Identity)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &[u8; 32], generation: u64) -> Option<Identity> {
        let mut map = self.lock();
        match map.get(key) {
            Some((g, identity)) if *g == generation => Some(identity.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&self, key: [u8; 32], generation: u64, identity: Identity) {
        let mut map = self.lock();
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(key, (generation, identity));
    }
}

/// Tokens are checked against `last_activity` at most this often (upstream's
/// `activity_resolution`), so a busy client does not write once per request.
const ACTIVITY_RESOLUTION_MICROS: i64 = 30_000_000;

impl Hub {
    /// The raw (unexpanded) scopes of a principal's roles.
    fn role_scopes(
        &self,
        conn: &rusqlite::Connection,
        principal: &Principal,
    ) -> Result<Vec<String>> {
        let mut raw = Vec::new();
        let mut push_role = |name: &str| -> Result<()> {
            if let Some(role) = db::role_by_name(conn, name)? {
                raw.extend(role.scopes);
            }
            Ok(())
        };
        match principal {
            Principal::User(user) => {
                push_role("user")?;
                if user.admin {
                    push_role("admin")?;
                }
                for role in db::roles_of(conn, RoleOwner::User(user.id))? {
                    raw.extend(role.scopes);
                }
                for role in db::group_roles_of_user(conn, user.id)? {
                    raw.extend(role.scopes);
                }
            }
            Principal::Service(service) => {
                if service.admin {
                    push_role("admin")?;
                }
                for role in db::roles_of(conn, RoleOwner::Service(service.id))? {
                    raw.extend(role.scopes);
                }
            }
        }
        Ok(raw)
    }

    /// Expanded scopes of a principal, and its groups.
    pub fn owner_scopes(&self, principal: &Principal) -> Result<(Scopes, Vec<String>)> {
        self.db
            .read(|conn| Ok(self.owner_scopes_in(conn, principal)))?
    }

    fn owner_scopes_in(
        &self,
        conn: &rusqlite::Connection,
        principal: &Principal,
    ) -> Result<(Scopes, Vec<String>)> {
        let mut raw = self.role_scopes(conn, principal)?;
        // Upstream's `get_scopes_for`: what is shared with the user, directly or with one of
        // the user's groups, joins the user's own scopes (always `!server=`-filtered).
        if let Principal::User(user) = principal {
            raw.extend(db::shared_scopes_of_user(
                conn,
                user.id,
                crate::time::now(),
            )?);
        }
        let groups = match principal {
            Principal::User(user) => db::user_groups(conn, user.id)?,
            Principal::Service(_) => Vec::new(),
        };
        let owner = match principal {
            Principal::User(u) => Owner::User { name: &u.name },
            Principal::Service(s) => Owner::Service { name: &s.name },
        };
        Ok((rbac::expand(&raw, &owner)?, groups))
    }

    /// The first expiry of a share the principal's scopes include: an identity remembered
    /// past it would keep the share's scopes.
    fn shares_valid_until(&self, principal: &Principal) -> Result<Option<i64>> {
        let Principal::User(user) = principal else {
            return Ok(None);
        };
        Ok(self
            .db
            .read(|c| db::next_share_expiry(c, user.id, crate::time::now()))?)
    }

    /// Group membership from the database, for `!group=` filters of other users.
    pub fn membership(&self) -> impl rbac::Membership + '_ {
        move |user: &str| {
            self.db
                .read(|c| match db::user_by_name(c, user)? {
                    Some(row) => db::user_groups(c, row.id),
                    None => Ok(Vec::new()),
                })
                .unwrap_or_default()
        }
    }

    /// The OAuth client a token was issued to, unless it is the hub's own.
    fn token_client(&self, client_id: &str) -> Result<Option<ClientRef>> {
        if client_id == "jupyterhub" {
            return Ok(None);
        }
        let client = self.db.read(|c| db::oauth_client(c, client_id))?;
        Ok(client.and_then(|c| match c.owner {
            db::ClientOwner::Server { user, server } => Some(ClientRef::Server(user, server)),
            db::ClientOwner::Service(name) => Some(ClientRef::Service(name)),
            db::ClientOwner::Hub => None,
        }))
    }

    /// Find a token's row; `None` for unknown, expired or over-long tokens.
    pub fn find_token(&self, token: &str) -> Result<Option<TokenRow>> {
        // Upstream never matches tokens longer than 64 characters (6.1), nor shorter than 8.
        if token.len() < 8 || token.len() > 64 {
            return Ok(None);
        }
        let prefix: String = token.chars().take(4).collect();
        let candidates = self
            .db
            .read(|conn| db::tokens_by_prefix(conn, &prefix, crate::time::now()))?;
        Ok(candidates
            .into_iter()
            .find(|row| self.verified_tokens.matches(&row.hashed, token)))
    }

    /// Resolve an API token to an identity.
    pub fn identify_token(&self, token: &str) -> Result<Option<Identity>> {
        // The generation first: what is read after it is at least that fresh.
        let generation = self.db.generation();
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = crate::time::now();
        if let Some(identity) = self.token_identities.get(&key, generation)
            && let Some(row) = &identity.token
            && row.expires_at.is_none_or(|t| t >= now)
            && identity.valid_until.is_none_or(|t| t >= now)
        {
            self.note_token_activity(row, &identity.principal);
            return Ok(Some(identity));
        }
        let identity = self.identify_token_uncached(token)?;
        if let Some(identity) = &identity {
            self.token_identities.put(key, generation, identity.clone());
        }
        Ok(identity)
    }

    fn identify_token_uncached(&self, token: &str) -> Result<Option<Identity>> {
        let Some(row) = self.find_token(token)? else {
            return Ok(None);
        };
        let principal = self.db.read(|conn| {
            Ok(match row.owner {
                TokenOwner::User(id) => db::user_by_id(conn, id)?.map(Principal::User),
                TokenOwner::Service(id) => db::service_by_id(conn, id)?.map(Principal::Service),
            })
        })?;
        let Some(principal) = principal else {
            return Ok(None);
        };
        let (owner_scopes, groups) = self.owner_scopes(&principal)?;
        let owner = match &principal {
            Principal::User(u) => Owner::User { name: &u.name },
            Principal::Service(s) => Owner::Service { name: &s.name },
        };
        let client = self.token_client(&row.client_id)?;
        let scopes = rbac::token_scopes(
            &row.scopes,
            &owner,
            client.as_ref().map(|c| c.as_client()).as_ref(),
            &owner_scopes,
            &self.membership(),
        )?;
        self.note_token_activity(&row, &principal);
        Ok(Some(Identity {
            session_id: row.session_id.clone(),
            valid_until: self.shares_valid_until(&principal)?,
            principal,
            token: Some(row),
            scopes,
            groups,
        }))
    }

    /// Record token use, throttled; user activity too unless it is a server's own token.
    pub(super) fn note_token_activity(&self, row: &TokenRow, principal: &Principal) {
        let now = crate::time::now();
        if row
            .last_activity
            .is_some_and(|t| now - t < ACTIVITY_RESOLUTION_MICROS)
        {
            return;
        }
        let result = self.db.write(|tx| {
            db::touch_token(tx, row.id, now)?;
            if let Principal::User(user) = principal
                && !row.note.starts_with("Server at ")
            {
                db::touch_user(tx, user.id, now)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record token activity");
        }
    }

    /// Resolve a login cookie's `cookie_id` to an identity with the user's full scopes.
    pub fn identify_cookie(
        &self,
        cookie_id: &str,
        session_id: Option<String>,
    ) -> Result<Option<Identity>> {
        let Some(user) = self
            .db
            .read(|conn| db::user_by_cookie_id(conn, cookie_id))?
        else {
            return Ok(None);
        };
        // An identity provider's or LDAP's logins may be admitted by groups the hub only
        // sees at login (allowed_groups): there, only blocked_users withdraws a login cookie.
        let admitted_at_login = (self.oauth.is_some() || self.authenticator.admits_at_login())
            && !self.policy.blocked_users.contains(&user.name);
        if !self.policy.is_allowed(&user.name, true) && !user.admin && !admitted_at_login {
            return Ok(None);
        }
        let principal = Principal::User(user);
        let (scopes, groups) = self.owner_scopes(&principal)?;
        Ok(Some(Identity {
            // Only token identities are remembered; a cookie's is read per request.
            valid_until: None,
            principal,
            token: None,
            scopes,
            groups,
            session_id,
        }))
    }
}
