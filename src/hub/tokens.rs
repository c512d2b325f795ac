//! API tokens: creation (with note, expiry, scopes bounded by the owner's), listing, the token
//! model, deletion, and the tokens the `jupyterhub token` command prints. `issue_token` is the
//! one place a token is made and stored, whoever asks (the API, OAuth, a spawn, the config).

use serde_json::{Value, json};

use crate::auth;
use crate::db::{self, NewToken, TokenOwner, TokenRow, UserRow};
use crate::rbac::{self, Owner};
use rusqlite::Connection;

use super::{Error, Hub, Identity, Principal, Result};

/// A token request: `POST /users/{name}/tokens`.
#[derive(Debug, Default)]
pub struct TokenRequest {
    pub note: Option<String>,
    pub expires_in: Option<u64>,
    pub scopes: Option<Vec<String>>,
    pub roles: Option<Vec<String>>,
}

/// How a new token looks: an API token is uuid4 hex (as upstream's API), an OAuth access
/// token oauthlib's 30 alphanumerics.
#[derive(Debug, Clone, Copy)]
pub(super) enum TokenForm {
    Api,
    OAuth,
}

/// Who a token is for and what it may do.
pub(super) struct TokenGrant<'a> {
    pub owner: TokenOwner,
    pub client_id: &'a str,
    pub session_id: Option<&'a str>,
    /// Seconds from now; `None` never expires.
    pub expires_in: Option<u64>,
    pub note: &'a str,
    pub scopes: &'a [String],
}

/// Make a token and store its hash, in the caller's transaction (so a token can be written
/// together with what it belongs to, such as a server's OAuth client). Returns the token,
/// which is never stored, and its row.
pub(super) fn issue_token(
    tx: &Connection,
    form: TokenForm,
    grant: &TokenGrant<'_>,
) -> db::Result<(String, TokenRow)> {
    let token = match form {
        TokenForm::Api => auth::new_token(),
        TokenForm::OAuth => auth::new_oauth_token(),
    };
    let row = store_token(tx, &token, auth::GENERATED_ROUNDS, grant)?;
    Ok((token, row))
}

/// Store a token's hash: generated ones (few hash rounds: they are random) or ones the
/// config gives (many rounds: an admin may have chosen a weak one).
pub(super) fn store_token(
    tx: &Connection,
    token: &str,
    rounds: u32,
    grant: &TokenGrant<'_>,
) -> db::Result<TokenRow> {
    let prefix: String = token.chars().take(4).collect();
    db::insert_token(
        tx,
        &NewToken {
            hashed: &auth::hash_token(token, rounds),
            prefix: &prefix,
            owner: grant.owner,
            client_id: grant.client_id,
            session_id: grant.session_id,
            expires_at: grant
                .expires_in
                .map(|s| crate::time::now() + (s as i64).saturating_mul(1_000_000)),
            note: grant.note,
            scopes: grant.scopes,
        },
    )
}

impl Hub {
    /// The token model (contract §2.3). Its scopes are what the token may do, as upstream's
    /// `get_scopes_for(token)`: the owner's for `inherit`, otherwise the expanded token scopes
    /// with the owner's identify scopes (and an OAuth client's access scope), intersected
    /// with the owner's: the same scopes a request with the token is given.
    pub fn token_model(&self, user: &UserRow, row: &TokenRow) -> Result<Value> {
        let principal = Principal::User(user.clone());
        let (owner_scopes, _groups) = self.owner_scopes(&principal)?;
        let oauth_client = if row.client_id == "jupyterhub" {
            None
        } else {
            self.db.read(|c| db::oauth_client(c, &row.client_id))?
        };
        let client = oauth_client.as_ref().and_then(|c| match &c.owner {
            db::ClientOwner::Server { user, server } => Some(rbac::Client::Spawner {
                user: user.as_str(),
                server: server.as_str(),
            }),
            db::ClientOwner::Service(name) => Some(rbac::Client::Service {
                name: name.as_str(),
            }),
            db::ClientOwner::Hub => None,
        });
        let scopes = rbac::token_scopes(
            &row.scopes,
            &Owner::User { name: &user.name },
            client.as_ref(),
            &owner_scopes,
            &self.membership(),
        )?;
        let client = match (&oauth_client, row.client_id.as_str()) {
            (_, "jupyterhub") => "JupyterHub".to_owned(),
            (Some(c), _) if !c.description.is_empty() => c.description.clone(),
            _ => row.client_id.clone(),
        };
        Ok(json!({
            "id": format!("a{}", row.id),
            "kind": "api_token",
            "user": user.name,
            "roles": [],
            "scopes": scopes.sorted(),
            "created": crate::time::iso(row.created),
            "last_activity": crate::time::iso_opt(row.last_activity),
            "expires_at": crate::time::iso_opt(row.expires_at),
            "note": row.note,
            "session_id": row.session_id,
            "oauth_client": client,
        }))
    }

    /// Create a token for `user`; `by` names the requester in the note when it differs.
    pub fn create_token(
        &self,
        user: &UserRow,
        by: Option<&Identity>,
        request: &TokenRequest,
    ) -> Result<(String, Value)> {
        let max = self.config.hub.token_expires_in_max_seconds;
        let expires_in = match request.expires_in {
            Some(0) => {
                return Err(Error::BadRequest(
                    "expires_in must be a positive integer or null, not 0".into(),
                ));
            }
            Some(n) if max > 0 && n > max => {
                return Err(Error::BadRequest(format!(
                    "expires_in: {n} must not exceed {max} (token_expires_in_max_seconds)"
                )));
            }
            Some(n) => Some(n),
            None if max > 0 => Some(max),
            None => None,
        };
        let mut raw = match (&request.scopes, &request.roles) {
            (Some(scopes), _) => scopes.clone(),
            (None, Some(roles)) => {
                let mut scopes = Vec::new();
                for name in roles {
                    let role = self
                        .db
                        .read(|c| db::role_by_name(c, name))?
                        .ok_or_else(|| Error::BadRequest(format!("Role {name} does not exist")))?;
                    scopes.extend(role.scopes);
                }
                scopes
            }
            (None, None) => vec!["inherit".to_owned()],
        };
        if raw.is_empty() {
            raw = vec!["inherit".to_owned()];
        }
        rbac::validate(&raw).map_err(|e| Error::BadRequest(e.to_string()))?;
        let principal = Principal::User(user.clone());
        let (owner_scopes, groups) = self.owner_scopes(&principal)?;
        let requested = rbac::expand(&raw, &Owner::User { name: &user.name })?;
        let _ = groups;
        let excess = rbac::excess(&requested, &owner_scopes, &self.membership());
        if !excess.is_empty() {
            // Upstream's `_check_token_scopes` ValueError, which its handler answers with 400.
            return Err(Error::BadRequest(format!(
                "Not assigning requested scopes {} not held by User {}",
                excess.join(","),
                user.name
            )));
        }
        // The requester may not hand out more than it holds either.
        if let Some(identity) = by {
            let excess = rbac::excess(&requested, &identity.scopes, &self.membership());
            if !excess.is_empty() && !raw.iter().all(|s| s == "inherit") {
                return Err(Error::Forbidden(format!(
                    "Not assigning requested scopes {} not held by the requester",
                    excess.join(", ")
                )));
            }
        }
        let note = match (&request.note, by) {
            (Some(note), _) if !note.is_empty() => note.clone(),
            (_, Some(identity)) if identity.principal.name() != user.name => {
                format!(
                    "Requested via api by {} {}",
                    identity.principal.kind(),
                    identity.principal.name()
                )
            }
            _ => "Requested via api".to_owned(),
        };
        let (token, row) = self.db.write(|tx| {
            issue_token(
                tx,
                TokenForm::Api,
                &TokenGrant {
                    owner: TokenOwner::User(user.id),
                    client_id: "jupyterhub",
                    session_id: None,
                    expires_in,
                    note: &note,
                    scopes: &raw,
                },
            )
        })?;
        let mut model = self.token_model(user, &row)?;
        model["token"] = json!(token);
        Ok((token, model))
    }

    pub fn list_tokens(&self, user: &UserRow) -> Result<Vec<Value>> {
        self.db
            .write(|tx| db::purge_expired_tokens(tx, crate::time::now()))?;
        let rows = self
            .db
            .read(|c| db::tokens_of(c, TokenOwner::User(user.id), crate::time::now()))?;
        rows.iter().map(|row| self.token_model(user, row)).collect()
    }

    fn token_of(&self, user: &UserRow, id: &str) -> Result<TokenRow> {
        let not_found = || Error::NotFound(format!("No such token: {id}"));
        let number: i64 = id
            .strip_prefix('a')
            .and_then(|n| n.parse().ok())
            .ok_or_else(not_found)?;
        let row = self
            .db
            .read(|c| db::token_by_id(c, number))?
            .ok_or_else(not_found)?;
        if row.owner != TokenOwner::User(user.id)
            || row.expires_at.is_some_and(|t| t < crate::time::now())
        {
            return Err(not_found());
        }
        Ok(row)
    }

    pub fn get_token(&self, user: &UserRow, id: &str) -> Result<Value> {
        let row = self.token_of(user, id)?;
        self.token_model(user, &row)
    }

    /// Deleting an OAuth token deletes all the user's tokens of that client, as upstream.
    pub fn delete_token(&self, user: &UserRow, id: &str) -> Result<()> {
        let row = self.token_of(user, id)?;
        self.db.write(|tx| {
            if row.client_id == "jupyterhub" {
                db::delete_token(tx, row.id)
            } else {
                db::delete_client_tokens_of_user(tx, user.id, &row.client_id).map(|_| ())
            }
        })?;
        Ok(())
    }

    /// `jupyterhub token USER`: creates the user if needed (as upstream's `token` command).
    pub fn issue_cli_token(
        &self,
        user: &str,
        note: &str,
        scopes: &[String],
        expires_in: Option<u64>,
    ) -> Result<String> {
        let name = self.policy.normalize(user)?;
        let row = match self.db.read(|c| db::user_by_name(c, &name))? {
            Some(row) => row,
            None => self.db.write(|tx| db::insert_user(tx, &name, false))?,
        };
        let request = TokenRequest {
            note: Some(if note.is_empty() {
                "command-line generated".to_owned()
            } else {
                note.to_owned()
            }),
            expires_in,
            scopes: (!scopes.is_empty()).then(|| scopes.to_vec()),
            roles: None,
        };
        let (token, _) = self.create_token(&row, None, &request)?;
        Ok(token)
    }
}
