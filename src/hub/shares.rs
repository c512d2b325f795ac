//! Sharing (JupyterHub 5, upstream `apihandlers/shares.py` and `orm.Share`/`ShareCode`):
//! shares of one server with a user or a group, share codes a user exchanges for a share,
//! and the models the API shows. A share's scopes always carry the server's own
//! `!server=owner/name` filter; `identity.rs` adds them to the grantee's scopes.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::db::{self, ShareCodeRow, ShareQuery, ShareRow, ShareWith, SpawnerRow, UserRow};
use crate::rbac::Resource;

use super::{Error, Hub, Identity, Result};

/// Who a share is for, by name, as the request names them.
#[derive(Debug, Clone, Copy)]
pub enum ShareTarget<'a> {
    User(&'a str),
    Group(&'a str),
}

/// Share codes last a day unless asked otherwise (upstream's `default_expires_in`).
pub const DEFAULT_CODE_EXPIRES_IN: i64 = 86_400;

/// Prefix length of stored codes, as tokens' (upstream's `Hashed.prefix_length`).
const CODE_PREFIX_LEN: usize = 4;

/// Upstream's `_apply_filter`: every scope gets `!server=owner/server`; any other filter is
/// refused.
pub fn apply_server_filter(scopes: &[String], owner: &str, server: &str) -> Result<Vec<String>> {
    let server_filter = format!("server={owner}/{server}");
    let mut filtered = BTreeSet::new();
    for scope in scopes {
        let (base, filter) = scope.split_once('!').unwrap_or((scope, ""));
        if !filter.is_empty() && filter != server_filter {
            return Err(Error::BadRequest(format!(
                "!{filter} not allowed on sharing {scope}, only !{server_filter}"
            )));
        }
        filtered.insert(format!("{base}!{server_filter}"));
    }
    Ok(filtered.into_iter().collect())
}

/// Share scopes as requested: checked to exist (400), the default when none are given.
fn requested_scopes(scopes: Option<&[String]>, owner: &str, server: &str) -> Result<Vec<String>> {
    let scopes = match scopes.filter(|s| !s.is_empty()) {
        Some(scopes) => {
            crate::rbac::validate(scopes)?;
            scopes.to_vec()
        }
        None => vec![format!("access:servers!server={owner}/{server}")],
    };
    apply_server_filter(&scopes, owner, server)
}

/// A user's server that may be shared: the owner and, if it exists, its record. The default
/// server counts as existing for every user (upstream's user always has one), its record is
/// made when something is written for it.
struct Shared {
    owner: UserRow,
    server: String,
    row: Option<SpawnerRow>,
}

impl Hub {
    fn shared_server(&self, owner: &str, server: &str) -> Result<Shared> {
        let not_found = || Error::NotFound(format!("No such server: {owner}/{server}"));
        let owner_row = self
            .db
            .read(|c| db::user_by_name(c, owner))?
            .ok_or_else(not_found)?;
        let row = self.db.read(|c| db::spawner(c, owner_row.id, server))?;
        if row.is_none() && !server.is_empty() {
            return Err(not_found());
        }
        Ok(Shared {
            owner: owner_row,
            server: server.to_owned(),
            row,
        })
    }

    /// The server's record, created for a default server that has none yet.
    fn shared_server_row(&self, shared: &Shared) -> Result<SpawnerRow> {
        if let Some(row) = &shared.row {
            return Ok(row.clone());
        }
        Ok(self
            .db
            .write(|tx| db::ensure_spawner(tx, shared.owner.id, &shared.server))?)
    }

    /// The truncated server model of shares: owner, name, URLs, readiness.
    fn share_server_model(&self, owner_id: i64, owner: &str, server: &str) -> Value {
        let key = (owner_id, server.to_owned());
        json!({
            "user": {"name": owner},
            "name": server,
            "url": self.server_url(owner, server),
            "full_url": Value::Null,
            "ready": self.server_ready(&key) && self.server_pending(&key).is_none(),
        })
    }

    fn share_model(&self, share: &ShareRow) -> Value {
        json!({
            "server": self.share_server_model(share.owner_id, &share.owner, &share.server),
            "scopes": share.scopes,
            "user": share.user.as_ref().map(|name| json!({"name": name})),
            "group": share.group.as_ref().map(|name| json!({"name": name})),
            "kind": if share.group.is_some() { "group" } else { "user" },
            "created_at": crate::time::iso(share.created_at),
        })
    }

    fn share_code_model(&self, code: &ShareCodeRow, secret: Option<&str>) -> Value {
        let mut model = json!({
            "server": self.share_server_model(code.owner_id, &code.owner, &code.server),
            "scopes": code.scopes,
            "id": format!("sc_{}", code.id),
            "created_at": crate::time::iso(code.created_at),
            "expires_at": crate::time::iso(code.expires_at),
            "exchange_count": code.exchange_count,
            "last_exchanged_at": crate::time::iso_opt(code.last_exchanged_at),
        });
        if let Some(secret) = secret {
            let accept_url = format!(
                "{}hub/accept-share?code={}",
                self.base_url(),
                form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()
            );
            model["code"] = json!(secret);
            model["accept_url"] = json!(accept_url);
            model["full_accept_url"] = Value::Null;
        }
        model
    }

    /// `GET /shares/{owner}[/{server}]`: shares of one server, or of all the owner's.
    pub fn server_shares(&self, owner: &str, server: Option<&str>) -> Result<Vec<Value>> {
        let query = match server {
            Some(server) => match self.shared_server(owner, server)?.row {
                Some(row) => ShareQuery::Server(row.id),
                None => return Ok(Vec::new()),
            },
            None => ShareQuery::Owner(self.user(owner)?.id),
        };
        let now = crate::time::now();
        let rows = self.db.read(|c| db::shares(c, query, now))?;
        Ok(rows.iter().map(|s| self.share_model(s)).collect())
    }

    /// `POST /shares/{owner}/{server}`: grant (or extend) a share. Each scope must be held
    /// by the caller, and the target's name readable by them.
    pub fn grant_share(
        &self,
        identity: &Identity,
        owner: &str,
        server: &str,
        target: ShareTarget<'_>,
        scopes: Option<&[String]>,
    ) -> Result<Value> {
        let scopes = requested_scopes(scopes, owner, server)?;
        let shared = self.shared_server(owner, server)?;
        let owner_groups = self.user_groups(&shared.owner)?;
        let resource = Resource::Server {
            user: owner,
            server,
            groups: &owner_groups,
        };
        for scope in &scopes {
            let base = scope.split_once('!').map_or(scope.as_str(), |(b, _)| b);
            if !identity.allows(base, &resource) {
                return Err(Error::Forbidden(format!(
                    "Do not have permission to grant share with scope {scope}"
                )));
            }
        }
        let with = match target {
            ShareTarget::User(name) => {
                let row = self.db.read(|c| db::user_by_name(c, name))?;
                let groups = match &row {
                    Some(row) => self.user_groups(row)?,
                    None => Vec::new(),
                };
                if !identity.allows(
                    "read:users:name",
                    &Resource::User {
                        name,
                        groups: &groups,
                    },
                ) {
                    return Err(Error::Forbidden(
                        "Need scope 'read:users:name' to share with users by name".into(),
                    ));
                }
                let row = row.ok_or_else(|| Error::BadRequest(format!("No such user: {name}")))?;
                ShareWith::User(row.id)
            }
            ShareTarget::Group(name) => {
                if !identity.allows("read:groups:name", &Resource::Group { name }) {
                    return Err(Error::Forbidden(
                        "Need scope 'read:groups:name' to share with groups by name".into(),
                    ));
                }
                let row = self
                    .db
                    .read(|c| db::group_by_name(c, name))?
                    .ok_or_else(|| Error::BadRequest(format!("No such group: {name}")))?;
                ShareWith::Group(row.id)
            }
        };
        let row = self.shared_server_row(&shared)?;
        let share = self.grant(&shared.owner, &row, with, &scopes)?;
        Ok(self.share_model(&share))
    }

    /// Upstream's `Share.grant`: a new share, or the existing one's scopes extended.
    fn grant(
        &self,
        owner: &UserRow,
        row: &SpawnerRow,
        with: ShareWith,
        scopes: &[String],
    ) -> Result<ShareRow> {
        let share = self.db.write(|tx| {
            match db::share_of(tx, row.id, with)? {
                Some(existing) => {
                    let mut all: BTreeSet<String> = existing.scopes.iter().cloned().collect();
                    all.extend(scopes.iter().cloned());
                    let all: Vec<String> = all.into_iter().collect();
                    if all != existing.scopes {
                        db::set_share_scopes(tx, existing.id, &all)?;
                    }
                }
                None => {
                    db::insert_share(tx, owner.id, row.id, with, scopes, crate::time::now())?;
                }
            }
            db::share_of(tx, row.id, with)?.ok_or_else(|| db::Error::NotFound("share".into()))
        })?;
        tracing::info!(owner = %owner.name, server = %row.name, scopes = ?share.scopes, "shared");
        Ok(share)
    }

    /// `PATCH /shares/{owner}/{server}`: revoke some scopes (all without `scopes`); `{}` when
    /// nothing is left, or there was nothing to revoke from.
    pub fn revoke_share(
        &self,
        owner: &str,
        server: &str,
        target: ShareTarget<'_>,
        scopes: Option<&[String]>,
    ) -> Result<Value> {
        let shared = self.shared_server(owner, server)?;
        let with = match target {
            ShareTarget::User(name) => self
                .db
                .read(|c| db::user_by_name(c, name))?
                .map(|u| ShareWith::User(u.id)),
            ShareTarget::Group(name) => self
                .db
                .read(|c| db::group_by_name(c, name))?
                .map(|g| ShareWith::Group(g.id)),
        };
        let (Some(with), Some(row)) = (with, shared.row) else {
            return Ok(json!({}));
        };
        let scopes = scopes.filter(|s| !s.is_empty());
        let share = self.db.write(|tx| {
            let Some(share) = db::share_of(tx, row.id, with)? else {
                return Ok(None);
            };
            let Some(scopes) = scopes else {
                db::delete_share(tx, share.id)?;
                return Ok(None);
            };
            let left: Vec<String> = share
                .scopes
                .iter()
                .filter(|s| !scopes.contains(s))
                .cloned()
                .collect();
            if left.is_empty() {
                db::delete_share(tx, share.id)?;
                return Ok(None);
            }
            if left != share.scopes {
                db::set_share_scopes(tx, share.id, &left)?;
            }
            db::share_of(tx, row.id, with)
        })?;
        Ok(share.map_or_else(|| json!({}), |s| self.share_model(&s)))
    }

    /// `DELETE /shares/{owner}/{server}`: every share of the server.
    pub fn delete_server_shares(&self, owner: &str, server: &str) -> Result<()> {
        if let Some(row) = self.shared_server(owner, server)?.row {
            let n = self
                .db
                .write(|tx| db::delete_shares_of_server(tx, row.id))?;
            tracing::info!(owner, server, deleted = n, "deleted shares");
        }
        Ok(())
    }

    /// `GET /users/{name}/shared`: shares the user holds, directly or through groups.
    pub fn user_shared(&self, name: &str) -> Result<Vec<Value>> {
        let user = self
            .db
            .read(|c| db::user_by_name(c, name))?
            .ok_or_else(|| Error::NotFound(format!("No such user: {name}")))?;
        let now = crate::time::now();
        let rows = self
            .db
            .read(|c| db::shares(c, ShareQuery::User(user.id), now))?;
        Ok(rows.iter().map(|s| self.share_model(s)).collect())
    }

    /// `GET /groups/{name}/shared`.
    pub fn group_shared(&self, name: &str) -> Result<Vec<Value>> {
        let group = self.group(name)?;
        let now = crate::time::now();
        let rows = self
            .db
            .read(|c| db::shares(c, ShareQuery::Group(group.id), now))?;
        Ok(rows.iter().map(|s| self.share_model(s)).collect())
    }

    /// The one share of `owner/server` with a user or group (404 without one).
    fn find_share(&self, target: ShareTarget<'_>, owner: &str, server: &str) -> Result<ShareRow> {
        let not_found = || {
            let (kind, name) = match target {
                ShareTarget::User(n) => ("user", n),
                ShareTarget::Group(n) => ("group", n),
            };
            Error::NotFound(format!(
                "No such share for {kind} {name} on {owner}/{server}"
            ))
        };
        let with = match target {
            ShareTarget::User(name) => self
                .db
                .read(|c| db::user_by_name(c, name))?
                .map(|u| ShareWith::User(u.id)),
            ShareTarget::Group(name) => Some(ShareWith::Group(self.group(name)?.id)),
        }
        .ok_or_else(not_found)?;
        let row = self
            .db
            .read(|c| match db::user_by_name(c, owner)? {
                Some(o) => db::spawner(c, o.id, server),
                None => Ok(None),
            })?
            .ok_or_else(not_found)?;
        self.db
            .read(|c| db::share_of(c, row.id, with))?
            .ok_or_else(not_found)
    }

    /// `GET /users|groups/{name}/shared/{owner}/{server}`.
    pub fn share(&self, target: ShareTarget<'_>, owner: &str, server: &str) -> Result<Value> {
        Ok(self.share_model(&self.find_share(target, owner, server)?))
    }

    /// `DELETE /users|groups/{name}/shared/{owner}/{server}`.
    pub fn delete_share(&self, target: ShareTarget<'_>, owner: &str, server: &str) -> Result<()> {
        let share = self.find_share(target, owner, server)?;
        self.db.write(|tx| db::delete_share(tx, share.id))?;
        Ok(())
    }

    /// `GET /share-codes/{owner}[/{server}]`.
    pub fn share_codes(&self, owner: &str, server: Option<&str>) -> Result<Vec<Value>> {
        let query = match server {
            Some(server) => match self.shared_server(owner, server)?.row {
                Some(row) => ShareQuery::Server(row.id),
                None => return Ok(Vec::new()),
            },
            None => ShareQuery::Owner(self.user(owner)?.id),
        };
        let now = crate::time::now();
        let rows = self.db.read(|c| db::share_codes(c, query, now))?;
        Ok(rows
            .iter()
            .map(|c| self.share_code_model(c, None))
            .collect())
    }

    /// `POST /share-codes/{owner}/{server}`: a new code, shown (with its accept URL) once.
    pub fn create_share_code(
        &self,
        identity: &Identity,
        owner: &str,
        server: &str,
        scopes: Option<&[String]>,
        expires_in: i64,
    ) -> Result<Value> {
        let scopes = requested_scopes(scopes, owner, server)?;
        // As upstream: the scopes are checked before the server is looked up.
        let owner_groups = match self.db.read(|c| db::user_by_name(c, owner))? {
            Some(row) => self.user_groups(&row)?,
            None => Vec::new(),
        };
        let resource = Resource::Server {
            user: owner,
            server,
            groups: &owner_groups,
        };
        for scope in &scopes {
            let base = scope.split_once('!').map_or(scope.as_str(), |(b, _)| b);
            if !identity.allows(base, &resource) {
                return Err(Error::Forbidden(format!(
                    "Do not have permission to grant share with scope {scope}"
                )));
            }
        }
        let shared = self.shared_server(owner, server)?;
        let row = self.shared_server_row(&shared)?;
        let secret = new_share_code();
        let hashed = crate::auth::hash_token(&secret, crate::auth::GENERATED_ROUNDS);
        let now = crate::time::now();
        let code = self.db.write(|tx| {
            let id = db::insert_share_code(
                tx,
                &db::NewShareCode {
                    owner_id: shared.owner.id,
                    spawner_id: row.id,
                    scopes: &scopes,
                    created_at: now,
                    expires_at: now + expires_in * 1_000_000,
                    hashed: &hashed,
                    prefix: &secret[..CODE_PREFIX_LEN],
                },
            )?;
            db::share_code_by_id(tx, id)?.ok_or_else(|| db::Error::NotFound("share code".into()))
        })?;
        tracing::info!(owner, server, "created share code");
        Ok(self.share_code_model(&code, Some(&secret)))
    }

    /// `DELETE /share-codes/{owner}/{server}[?code=…|?id=sc_N]`: one code, or all of the
    /// server's.
    pub fn delete_share_codes(
        &self,
        owner: &str,
        server: &str,
        code: Option<&str>,
        id: Option<&str>,
    ) -> Result<()> {
        let shared = self.shared_server(owner, server)?;
        let spawner_id = shared.row.as_ref().map(|r| r.id);
        if let Some(code) = code.filter(|c| !c.is_empty()) {
            let found = self
                .find_share_code(code)?
                .filter(|c| Some(c.spawner_id) == spawner_id)
                .ok_or_else(|| Error::NotFound("No matching code found".into()))?;
            self.db.write(|tx| db::delete_share_code(tx, found.id))?;
        } else if let Some(id) = id.filter(|i| !i.is_empty()) {
            let not_found = || Error::NotFound(format!("No code found matching id={id}"));
            let number = id
                .strip_prefix("sc_")
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(not_found)?;
            let found = self
                .db
                .read(|c| db::share_code_by_id(c, number))?
                .filter(|c| Some(c.spawner_id) == spawner_id)
                .ok_or_else(not_found)?;
            self.db.write(|tx| db::delete_share_code(tx, found.id))?;
        } else if let Some(spawner_id) = spawner_id {
            let n = self
                .db
                .write(|tx| db::delete_share_codes_of_server(tx, spawner_id))?;
            tracing::info!(owner, server, deleted = n, "deleted share codes");
        }
        Ok(())
    }

    /// The stored code a secret matches, expired or not.
    fn find_share_code(&self, code: &str) -> Result<Option<ShareCodeRow>> {
        let Some(prefix) = code.get(..CODE_PREFIX_LEN) else {
            return Ok(None);
        };
        let candidates = self.db.read(|c| db::share_codes_by_prefix(c, prefix))?;
        Ok(candidates
            .into_iter()
            .find(|c| crate::auth::compare_token(&c.hashed, code)))
    }

    /// An unexpired share code, for the accept page; an expired one is deleted on sight.
    pub fn share_code(&self, code: &str) -> Result<Option<ShareCodeRow>> {
        let Some(found) = self.find_share_code(code)? else {
            return Ok(None);
        };
        if found.expires_at < crate::time::now() {
            self.db.write(|tx| db::delete_share_code(tx, found.id))?;
            return Ok(None);
        }
        Ok(Some(found))
    }

    /// Exchange a share code for a share of the user's own (upstream `ShareCode.exchange`).
    pub fn accept_share_code(&self, user: &UserRow, code: &ShareCodeRow) -> Result<ShareRow> {
        let owner = self
            .db
            .read(|c| db::user_by_id(c, code.owner_id))?
            .ok_or_else(|| Error::NotFound("Share not found or expired".into()))?;
        let row = self
            .db
            .read(|c| db::spawner(c, owner.id, &code.server))?
            .ok_or_else(|| Error::NotFound("Share not found or expired".into()))?;
        let share = self.grant(&owner, &row, ShareWith::User(user.id), &code.scopes)?;
        self.db
            .write(|tx| db::note_share_code_exchange(tx, code.id, crate::time::now()))?;
        tracing::info!(user = %user.name, owner = %owner.name, server = %row.name, "accepted share code");
        Ok(share)
    }
}

/// A new share code: 32 random bytes, URL-safe base64 (upstream's `token_urlsafe(32)`).
fn new_share_code() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    crate::auth::fill_random(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_filter_is_applied_and_others_refused() {
        let scopes = vec![
            "access:servers".to_owned(),
            "read:servers!server=alice/nb".to_owned(),
        ];
        assert_eq!(
            apply_server_filter(&scopes, "alice", "nb").expect("filtered"),
            vec![
                "access:servers!server=alice/nb".to_owned(),
                "read:servers!server=alice/nb".to_owned()
            ]
        );
        let other = vec!["access:servers!user=alice".to_owned()];
        let err = apply_server_filter(&other, "alice", "nb").expect_err("refused");
        assert_eq!(
            err.to_string(),
            "!user=alice not allowed on sharing access:servers!user=alice, only !server=alice/nb"
        );
    }

    #[test]
    fn default_scope_is_access_to_the_server() {
        assert_eq!(
            requested_scopes(None, "alice", "").expect("default"),
            vec!["access:servers!server=alice/".to_owned()]
        );
        assert_eq!(
            requested_scopes(Some(&[]), "alice", "").expect("default"),
            vec!["access:servers!server=alice/".to_owned()]
        );
        assert!(requested_scopes(Some(&["nope".to_owned()]), "alice", "").is_err());
    }

    #[test]
    fn codes_are_url_safe_and_long() {
        let code = new_share_code();
        assert_eq!(code.len(), 43);
        assert!(
            code.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
