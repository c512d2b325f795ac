//! Start-up: make the database agree with the config (default and configured roles, admin
//! and allowed users, groups, services and their tokens), all in one transaction. Services
//! created at runtime through the API are left as they are.

use crate::auth::{self, PROVIDED_ROUNDS};
use crate::db::{self, RoleOwner, TokenOwner};
use crate::rbac;

use super::{Error, Hub, Result};

/// Config tokens are stored with this note so they can be replaced when the config changes.
const CONFIG_TOKEN_NOTE: &str = "from config";

fn ensure_user(tx: &rusqlite::Connection, name: &str) -> db::Result<db::UserRow> {
    match db::user_by_name(tx, name)? {
        Some(user) => Ok(user),
        None => db::insert_user(tx, name, false),
    }
}

/// Store a config-given token unless an identical one is already stored.
fn ensure_config_token(
    tx: &rusqlite::Connection,
    owner: TokenOwner,
    token: &str,
) -> db::Result<()> {
    ensure_token(tx, owner, token, CONFIG_TOKEN_NOTE)
}

/// Managed services without `api_token` get one the hub derives (upstream notes its own
/// "generated at startup"; ours is the same at every start, so adopted services keep theirs).
const GENERATED_TOKEN_NOTE: &str = "generated at startup";

fn ensure_token(
    tx: &rusqlite::Connection,
    owner: TokenOwner,
    token: &str,
    note: &str,
) -> db::Result<()> {
    let prefix: String = token.chars().take(4).collect();
    let known = db::tokens_by_prefix(tx, &prefix, crate::time::now())?
        .into_iter()
        .any(|row| row.owner == owner && auth::compare_token(&row.hashed, token));
    if known {
        return Ok(());
    }
    super::tokens::store_token(
        tx,
        token,
        PROVIDED_ROUNDS,
        &super::tokens::TokenGrant {
            owner,
            client_id: "jupyterhub",
            session_id: None,
            expires_in: None,
            note,
            scopes: &["inherit".to_string()],
        },
    )?;
    Ok(())
}

impl Hub {
    pub(super) fn sync_config(&self) -> Result<()> {
        let hub = &self.config.hub;
        // Before the roles, which may use them (upstream's `init_role_creation`).
        let custom_scopes = self.config.custom_scopes();
        if !custom_scopes.is_empty() {
            tracing::info!("Defining {} custom scopes.", custom_scopes.len());
            rbac::define_custom_scopes(&custom_scopes)?;
        }
        for role in &hub.load_roles {
            rbac::validate(&role.scopes)?;
        }
        let mut normalized_admins = Vec::new();
        for name in &self.config.authenticator.admin_users {
            normalized_admins.push(self.policy.normalize(name)?);
        }
        let mut normalized_allowed = Vec::new();
        for name in &self.config.authenticator.allowed_users {
            normalized_allowed.push(self.policy.normalize(name)?);
        }
        self.db
            .write(|tx| {
                for role in rbac::default_roles() {
                    db::upsert_role(tx, &role.name, &role.description, &role.scopes)?;
                }
                for name in &normalized_admins {
                    let user = ensure_user(tx, name)?;
                    db::set_user_admin(tx, user.id, true)?;
                }
                for name in &normalized_allowed {
                    ensure_user(tx, name)?;
                }
                for (group_name, group) in &hub.load_groups {
                    let row = match db::group_by_name(tx, group_name)? {
                        Some(row) => row,
                        None => db::insert_group(tx, group_name)?,
                    };
                    for member in &group.users {
                        let user = ensure_user(tx, &member.to_lowercase())?;
                        db::add_group_member(tx, row.id, user.id)?;
                    }
                    if !group.properties.is_empty() {
                        db::set_group_properties(
                            tx,
                            row.id,
                            &serde_json::Value::Object(group.properties.clone()),
                        )?;
                    }
                }
                for service in &hub.services {
                    // Upstream logs and skips a config entry that would take over a service
                    // created at runtime: the runtime one keeps its spec and tokens.
                    if let Some(existing) = db::service_by_name(tx, &service.name)?
                        && !existing.from_config
                    {
                        tracing::error!(
                            service = %service.name,
                            "the config's service {} would modify a runtime-created service of the same name; the config entry is ignored",
                            service.name
                        );
                        continue;
                    }
                    let row = db::upsert_config_service(tx, &service.name, service.admin)?;
                    let note = if service.api_token.is_some() {
                        CONFIG_TOKEN_NOTE
                    } else {
                        GENERATED_TOKEN_NOTE
                    };
                    if let Some(token) = self.service_token(service) {
                        let token = token.as_str();
                        ensure_token(tx, TokenOwner::Service(row.id), token, note)?;
                        // A service with a URL logs users in through OAuth, with its token as secret.
                        if service.url.is_some() || service.oauth_redirect_uri.is_some() {
                            let client_id = service
                                .oauth_client_id
                                .clone()
                                .unwrap_or_else(|| format!("service-{}", service.name));
                            let redirect_uri =
                                service.oauth_redirect_uri.clone().unwrap_or_else(|| {
                                    format!(
                                        "{}services/{}/oauth_callback",
                                        hub.base_url, service.name
                                    )
                                });
                            db::upsert_oauth_client(
                                tx,
                                &db::OAuthClientRow {
                                    identifier: client_id,
                                    description: format!("Service {}", service.name),
                                    secret: auth::hash_token(token, PROVIDED_ROUNDS),
                                    redirect_uri,
                                    allowed_scopes: service.oauth_client_allowed_scopes.clone(),
                                    owner: db::ClientOwner::Service(service.name.clone()),
                                },
                            )?;
                        }
                    }
                }
                // Config services gone from the config go from the database, with their
                // tokens and role grants (cascades) and OAuth clients (upstream
                // `init_services`); runtime services stay.
                for row in db::all_services(tx)? {
                    if row.from_config && !hub.services.iter().any(|s| s.name == row.name) {
                        db::delete_service_oauth_clients(tx, &row.name)?;
                        db::delete_service(tx, row.id)?;
                        tracing::info!(service = %row.name, "service no longer in the config; deleted");
                    }
                }
                for role in &hub.load_roles {
                    let row = db::upsert_role(
                        tx,
                        &role.name,
                        role.description.as_deref().unwrap_or(""),
                        &role.scopes,
                    )?;
                    for name in &role.users {
                        let user = ensure_user(tx, &name.to_lowercase())?;
                        db::grant_role(tx, RoleOwner::User(user.id), row.id)?;
                    }
                    for name in &role.groups {
                        let group = match db::group_by_name(tx, name)? {
                            Some(group) => group,
                            None => db::insert_group(tx, name)?,
                        };
                        db::grant_role(tx, RoleOwner::Group(group.id), row.id)?;
                    }
                    for name in &role.services {
                        let service = db::service_by_name(tx, name)?.ok_or_else(|| {
                            db::Error::NotFound(format!(
                                "service {name} named in role {}",
                                role.name
                            ))
                        })?;
                        db::grant_role(tx, RoleOwner::Service(service.id), row.id)?;
                    }
                }
                for (token, user) in &hub.api_tokens {
                    let user = ensure_user(tx, &user.expose().to_lowercase())?;
                    ensure_config_token(tx, TokenOwner::User(user.id), token)?;
                }
                Ok(())
            })
            .map_err(|e| match e {
                db::Error::NotFound(what) => Error::BadRequest(format!("config: unknown {what}")),
                other => Error::Db(other),
            })
    }
}

impl Hub {
    /// Upstream's `init_users`: users already in the database that the authenticator no
    /// longer accepts (name outside the pattern, PAM account gone) are deleted with
    /// `delete_invalid_users`, else kept and named in the log. Blocked users are left alone.
    pub(super) fn check_existing_users(&self) -> Result<()> {
        let delete = self.config.authenticator.delete_invalid_users;
        let blocked = &self.config.authenticator.blocked_users;
        for user in self.db.read(db::all_users)? {
            if blocked.iter().any(|b| b.eq_ignore_ascii_case(&user.name)) {
                continue;
            }
            let why = match self.policy.normalize(&user.name) {
                Ok(_) => match self.authenticator.check_existing_user(&user.name) {
                    Ok(()) => continue,
                    Err(why) => why,
                },
                Err(e) => e.to_string(),
            };
            if delete {
                tracing::warn!(user = %user.name, reason = %why, "deleting invalid user from the database (delete_invalid_users)");
                self.db.write(|tx| db::delete_user(tx, user.id))?;
            } else {
                tracing::warn!(user = %user.name, reason = %why, "user in the database no longer passes the authenticator's checks; set Authenticator.delete_invalid_users = true to delete such users at start-up");
            }
        }
        Ok(())
    }
}
