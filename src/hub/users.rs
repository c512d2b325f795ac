//! Users: models filtered by the caller's scopes (as upstream's `user_model`), creation,
//! renaming, admin changes, auth_state, deletion and activity. Groups are `hub/groups.rs`.

use serde_json::{Map, Value, json};

use crate::db::{self, RoleOwner, UserRow};
use crate::rbac::Resource;

use super::{Error, Hub, Identity, Result};

/// `GET /users` query.
#[derive(Debug, Default, Clone)]
pub struct UserListQuery {
    pub state: Option<String>,
    pub offset: usize,
    pub limit: usize,
    pub include_stopped_servers: bool,
    pub sort: Option<String>,
    pub name_filter: Option<String>,
}

/// What a user model shows beyond the user row.
struct UserFacts {
    groups: Vec<String>,
    /// Role names, with the implicit `user` (and `admin`) roles.
    roles: Vec<String>,
    spawners: Vec<db::SpawnerRow>,
}

/// Directly held roles plus the implicit ones, sorted.
fn role_names(mut roles: Vec<String>, user: &UserRow) -> Vec<String> {
    roles.push("user".into());
    if user.admin {
        roles.push("admin".into());
    }
    roles.sort();
    roles.dedup();
    roles
}

/// The page SQL can give for a listing, when it is one: every user is listed (no name or
/// state filter, `list:users` unfiltered) and the sort is one SQL orders as `list_users` does.
/// The other listings filter and sort all users in memory.
fn sql_page(identity: &Identity, query: &UserListQuery) -> Option<db::UserPage> {
    let every_name = query.name_filter.as_deref().is_none_or(str::is_empty);
    let every_state = query.state.as_deref().is_none_or(str::is_empty);
    let every_user = matches!(
        identity.scopes.filters("list:users"),
        Some(crate::rbac::Filters::All)
    );
    if !(every_name && every_state && every_user) {
        return None;
    }
    Some(db::UserPage {
        order: db::UserOrder::from_sort(query.sort.as_deref())?,
        offset: query.offset,
        limit: query.limit,
    })
}

/// Upstream allows an activity timestamp at most this far in the future.
const MAX_FUTURE_MICROS: i64 = 59 * 60 * 1_000_000;

impl Hub {
    pub fn user(&self, name: &str) -> Result<UserRow> {
        self.db
            .read(|c| db::user_by_name(c, name))?
            .ok_or_else(|| Error::NotFound(format!("No such user: {name}")))
    }

    pub fn user_groups(&self, user: &UserRow) -> Result<Vec<String>> {
        Ok(self.db.read(|c| db::user_groups(c, user.id))?)
    }

    fn user_roles(&self, conn: &rusqlite::Connection, user: &UserRow) -> db::Result<Vec<String>> {
        let direct = db::roles_of(conn, RoleOwner::User(user.id))?
            .into_iter()
            .map(|r| r.name)
            .collect();
        Ok(role_names(direct, user))
    }

    /// What a user model shows beyond the row, read per user.
    fn user_facts(&self, user: &UserRow) -> Result<UserFacts> {
        Ok(self.db.read(|c| {
            Ok(UserFacts {
                groups: db::user_groups(c, user.id)?,
                roles: self.user_roles(c, user)?,
                spawners: db::spawners_of(c, user.id)?,
            })
        })?)
    }

    /// The user model with only the keys the identity's scopes allow (contract §2.3).
    pub fn user_model(
        &self,
        identity: &Identity,
        user: &UserRow,
        include_stopped: bool,
    ) -> Result<Value> {
        let facts = self.user_facts(user)?;
        Ok(self.user_model_from(identity, user, include_stopped, &facts))
    }

    /// `user_model` from facts already read (a listing reads them for all users at once).
    fn user_model_from(
        &self,
        identity: &Identity,
        user: &UserRow,
        include_stopped: bool,
        facts: &UserFacts,
    ) -> Value {
        let groups = &facts.groups;
        let resource = Resource::User {
            name: &user.name,
            groups,
        };
        let can = |scope: &str| identity.allows(scope, &resource);
        let mut model = Map::new();
        model.insert("kind".into(), json!("user"));
        model.insert("name".into(), json!(user.name));
        let full = can("read:users");
        if full || can("read:users:name") || can("read:roles:users") {
            model.insert("admin".into(), json!(user.admin));
        }
        if full || can("read:users:groups") {
            model.insert("groups".into(), json!(groups));
        }
        if full || can("read:roles:users") {
            model.insert("roles".into(), json!(facts.roles));
        }
        if full || can("read:users:activity") {
            model.insert(
                "last_activity".into(),
                crate::time::iso_opt(user.last_activity),
            );
        }
        if full {
            model.insert("created".into(), json!(crate::time::iso(user.created)));
            let key = (user.id, String::new());
            let pending = self.server_pending(&key);
            model.insert("pending".into(), json!(pending));
            let ready = self.server_ready(&key) && pending.is_none();
            model.insert(
                "server".into(),
                if ready {
                    json!(self.server_url(&user.name, ""))
                } else {
                    Value::Null
                },
            );
            model.insert("auth_state".into(), Value::Null);
        }
        let with_state = identity.scopes.has("admin:server_state");
        let mut servers = Map::new();
        for row in &facts.spawners {
            let server_resource = Resource::Server {
                user: &user.name,
                server: &row.name,
                groups,
            };
            if !identity.allows("read:servers", &server_resource) {
                continue;
            }
            let active =
                row.url.is_some() || self.server_pending(&(user.id, row.name.clone())).is_some();
            if active || include_stopped {
                let allowed_state =
                    with_state && identity.allows("admin:server_state", &server_resource);
                servers.insert(
                    row.name.clone(),
                    self.server_model(user, row, allowed_state),
                );
            }
        }
        if identity.allows("read:servers", &resource) || !servers.is_empty() {
            model.insert("servers".into(), Value::Object(servers));
        }
        Value::Object(model)
    }

    /// `GET /users`: filtered by `list:users` filters, paginated; returns (models, total).
    pub fn list_users(
        &self,
        identity: &Identity,
        query: &UserListQuery,
    ) -> Result<(Vec<Value>, usize)> {
        if let Some(page) = sql_page(identity, query) {
            return self.list_users_page(identity, query, page);
        }
        // Four queries for the whole listing, not four per user.
        let (users, spawners, mut groups, mut roles) = self.db.read(|c| {
            Ok((
                db::all_users(c)?,
                db::all_spawners(c)?,
                db::all_user_groups(c)?,
                db::all_user_role_names(c)?,
            ))
        })?;
        let mut spawners_by_user: std::collections::HashMap<i64, Vec<db::SpawnerRow>> =
            std::collections::HashMap::new();
        for row in spawners {
            spawners_by_user.entry(row.user_id).or_default().push(row);
        }
        let no_servers = Vec::new();
        let no_groups = Vec::new();
        let mut selected = Vec::new();
        // Whether each selected user has a server running or pending, for `sort=running`.
        let mut running = std::collections::HashSet::new();
        for user in users {
            let user_groups = groups.get(&user.id).unwrap_or(&no_groups);
            if !identity.allows(
                "list:users",
                &Resource::User {
                    name: &user.name,
                    groups: user_groups,
                },
            ) {
                continue;
            }
            if let Some(filter) = &query.name_filter
                && !user.name.to_lowercase().contains(&filter.to_lowercase())
            {
                continue;
            }
            let mine = spawners_by_user.get(&user.id).unwrap_or(&no_servers);
            let active = mine.iter().any(|s| {
                s.url.is_some() || self.server_pending(&(user.id, s.name.clone())).is_some()
            });
            let keep = match query.state.as_deref() {
                None | Some("") => true,
                Some("active") => active,
                Some("ready") => mine
                    .iter()
                    .any(|s| self.server_ready(&(user.id, s.name.clone()))),
                Some("inactive") => !active,
                Some(other) => {
                    return Err(Error::BadRequest(format!(
                        "Unrecognized state filter: {other:?}"
                    )));
                }
            };
            if keep {
                if active {
                    running.insert(user.id);
                }
                selected.push(user);
            }
        }
        match query.sort.as_deref() {
            None | Some("") | Some("id") => {}
            Some("-id") => selected.reverse(),
            Some("name") => selected.sort_by(|a, b| a.name.cmp(&b.name)),
            Some("-name") => selected.sort_by(|a, b| b.name.cmp(&a.name)),
            // NULLs last ascending, first descending, as upstream.
            Some("last_activity") => {
                selected.sort_by_key(|u| (u.last_activity.is_none(), u.last_activity))
            }
            Some("-last_activity") => selected
                .sort_by_key(|u| std::cmp::Reverse((u.last_activity.is_none(), u.last_activity))),
            // Beyond upstream (which sorts by id, name and last_activity only), for the admin
            // panel's columns: admins first, or users with a running server first; ties keep
            // id order (the sorts are stable), descending reverses the whole order.
            Some("admin") => selected.sort_by_key(|u| !u.admin),
            Some("-admin") => {
                selected.reverse();
                selected.sort_by_key(|u| u.admin);
            }
            Some("running") => selected.sort_by_key(|u| !running.contains(&u.id)),
            Some("-running") => {
                selected.reverse();
                selected.sort_by_key(|u| running.contains(&u.id));
            }
            Some(other) => {
                return Err(Error::BadRequest(format!(
                    "sort must be 'id', 'name', 'last_activity', 'admin' or 'running', not {other:?}"
                )));
            }
        }
        let total = selected.len();
        let mut models = Vec::new();
        for user in selected.into_iter().skip(query.offset).take(query.limit) {
            let facts = UserFacts {
                groups: groups.remove(&user.id).unwrap_or_default(),
                roles: role_names(roles.remove(&user.id).unwrap_or_default(), &user),
                spawners: spawners_by_user.remove(&user.id).unwrap_or_default(),
            };
            models.push(self.user_model_from(
                identity,
                &user,
                query.include_stopped_servers,
                &facts,
            ));
        }
        Ok((models, total))
    }

    /// `list_users` for a listing SQL can page (`sql_page`): only the page's users are read
    /// and modelled (SQLite still orders, and steps over the offset, by index or sort).
    fn list_users_page(
        &self,
        identity: &Identity,
        query: &UserListQuery,
        page: db::UserPage,
    ) -> Result<(Vec<Value>, usize)> {
        let (total, users, spawners, mut groups, mut roles) = self.db.read(|c| {
            Ok((
                db::count_users(c)?,
                db::users_page(c, page)?,
                db::spawners_of_page(c, page)?,
                db::user_groups_of_page(c, page)?,
                db::user_role_names_of_page(c, page)?,
            ))
        })?;
        let mut spawners_by_user: std::collections::HashMap<i64, Vec<db::SpawnerRow>> =
            std::collections::HashMap::new();
        for row in spawners {
            spawners_by_user.entry(row.user_id).or_default().push(row);
        }
        let models = users
            .iter()
            .map(|user| {
                let facts = UserFacts {
                    groups: groups.remove(&user.id).unwrap_or_default(),
                    roles: role_names(roles.remove(&user.id).unwrap_or_default(), user),
                    spawners: spawners_by_user.remove(&user.id).unwrap_or_default(),
                };
                self.user_model_from(identity, user, query.include_stopped_servers, &facts)
            })
            .collect();
        Ok((models, usize::try_from(total).unwrap_or(usize::MAX)))
    }

    /// `POST /users`: create several users at once; existing names are skipped, all
    /// existing is 409.
    pub async fn create_users(
        &self,
        identity: &Identity,
        names: &[String],
        admin: bool,
    ) -> Result<Vec<Value>> {
        if admin && !identity.scopes.has("admin:users") {
            return Err(Error::Forbidden(
                "Only admins can create admin users".into(),
            ));
        }
        let mut normalized = Vec::new();
        for name in names {
            let name = self.policy.normalize(name)?;
            if !normalized.contains(&name) {
                normalized.push(name);
            }
        }
        if normalized.is_empty() {
            return Err(Error::BadRequest(
                "Must specify at least one user to create".into(),
            ));
        }
        let created = self.db.write(|tx| {
            let mut created = Vec::new();
            for name in &normalized {
                if db::user_by_name(tx, name)?.is_some() {
                    continue;
                }
                created.push(db::insert_user(tx, name, admin)?);
            }
            Ok(created)
        })?;
        if created.is_empty() {
            return Err(Error::Conflict(format!(
                "All {} users already exist",
                normalized.len()
            )));
        }
        for user in &created {
            self.add_system_account_or_undo(user).await?;
        }
        created
            .iter()
            .map(|u| self.user_model(identity, u, false))
            .collect()
    }

    /// `POST /users/{name}`.
    pub async fn create_user(&self, identity: &Identity, name: &str, admin: bool) -> Result<Value> {
        if admin && !identity.scopes.has("admin:users") {
            return Err(Error::Forbidden(
                "Only admins can create admin users".into(),
            ));
        }
        let name = self.policy.normalize(name)?;
        let user = self
            .db
            .write(|tx| db::insert_user(tx, &name, admin))
            .map_err(|e| match e {
                db::Error::Conflict(_) => Error::Conflict(format!("User {name} already exists")),
                other => Error::Db(other),
            })?;
        self.add_system_account_or_undo(&user).await?;
        self.user_model(identity, &user, false)
    }

    /// `create_system_users`: make the user's system account (upstream's
    /// `LocalAuthenticator.add_user`); off, nothing happens. The hub never deletes accounts.
    pub(crate) async fn ensure_system_account(&self, name: &str) -> Result<()> {
        if !self.config.create_system_users() {
            return Ok(());
        }
        let spawner = &self.config.systemd_spawner;
        match crate::auth::accounts::ensure(
            &spawner.username_template,
            name,
            &spawner.helper_socket,
        )
        .await
        {
            Ok(outcome) => {
                tracing::debug!(user = %name, ?outcome, "system account");
                Ok(())
            }
            Err(e) => Err(Error::BadRequest(format!(
                "Failed to create system user for {name}: {e}"
            ))),
        }
    }

    /// At start-up, the accounts of `admin_users` and `allowed_users` (upstream's
    /// `init_users` calls `add_user` on them). A failure is logged, not fatal: the user's
    /// login or spawn then fails with the reason.
    pub(crate) async fn add_config_accounts(&self) {
        if !self.config.create_system_users() {
            return;
        }
        let auth = &self.config.authenticator;
        for name in auth.admin_users.iter().chain(&auth.allowed_users) {
            let Ok(name) = self.policy.normalize(name) else {
                continue;
            };
            if let Err(e) = self.ensure_system_account(&name).await {
                tracing::error!(user = %name, error = %e, "no system account for a user of the config");
            }
        }
    }

    /// An added user whose account cannot be made is removed again, as upstream's
    /// `POST /users` does when `add_user` fails: 400 with the reason.
    async fn add_system_account_or_undo(&self, user: &UserRow) -> Result<()> {
        if let Err(e) = self.ensure_system_account(&user.name).await {
            tracing::warn!(user = %user.name, error = %e, "removing the user just added");
            self.db.write(|tx| db::delete_user(tx, user.id))?;
            return Err(e);
        }
        Ok(())
    }

    /// `PATCH /users/{name}`: `name`, `admin`, `auth_state`.
    pub fn update_user(
        &self,
        identity: &Identity,
        name: &str,
        patch: &Map<String, Value>,
    ) -> Result<Value> {
        let user = self.user(name)?;
        let caller_is_admin = identity.user().is_some_and(|u| u.admin)
            || matches!(
                identity.scopes.filters("admin:users"),
                Some(crate::rbac::Filters::All)
            );
        for key in patch.keys() {
            if !["name", "admin", "auth_state", "groups", "roles"].contains(&key.as_str()) {
                return Err(Error::BadRequest(format!(
                    "Unknown field in user patch: {key}"
                )));
            }
        }
        let new_admin = match patch.get("admin") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                return Err(Error::BadRequest(format!(
                    "admin must be a boolean, not {other}"
                )));
            }
        };
        if (new_admin == Some(true) || user.admin) && !caller_is_admin {
            return Err(Error::Forbidden(
                "Only admins can modify admin users or grant admin".into(),
            ));
        }
        let new_name = match patch.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(self.policy.normalize(s)?),
            Some(other) => {
                return Err(Error::BadRequest(format!(
                    "name must be a string, not {other}"
                )));
            }
        };
        if let Some(new_name) = &new_name
            && *new_name != user.name
            && self.db.read(|c| db::user_by_name(c, new_name))?.is_some()
        {
            return Err(Error::BadRequest(format!(
                "User {new_name} already exists, username must be unique"
            )));
        }
        let auth_state = match patch.get("auth_state") {
            None => None,
            Some(value) => {
                if !identity.scopes.has("admin:auth_state") {
                    return Err(Error::MissingScope("admin:auth_state".into()));
                }
                Some(self.encrypt_auth_state(value)?)
            }
        };
        self.db.write(|tx| {
            if let Some(admin) = new_admin {
                db::set_user_admin(tx, user.id, admin)?;
            }
            if let Some(new_name) = &new_name {
                db::rename_user(tx, user.id, new_name)?;
            }
            if let Some(state) = &auth_state {
                db::set_user_auth_state(tx, user.id, state.as_deref())?;
            }
            Ok(())
        })?;
        let updated = self
            .db
            .read(|c| db::user_by_id(c, user.id))?
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        let mut model = self.user_model(identity, &updated, false)?;
        if identity.scopes.has("admin:auth_state") {
            model["auth_state"] = self.auth_state(&updated)?;
        }
        Ok(model)
    }

    fn encrypt_auth_state(&self, value: &Value) -> Result<Option<Vec<u8>>> {
        if value.is_null() {
            return Ok(None);
        }
        let crypt = self
            .crypt
            .as_ref()
            .ok_or_else(|| Error::Crypt("auth_state requires JUPYTERHUB_CRYPT_KEY".into()))?;
        Ok(Some(
            crypt.encrypt(value.to_string().as_bytes()).into_bytes(),
        ))
    }

    /// The decrypted auth_state, or null (a key that cannot decrypt it is logged, not fatal).
    pub fn auth_state(&self, user: &UserRow) -> Result<Value> {
        let (Some(crypt), Some(stored)) = (&self.crypt, &user.encrypted_auth_state) else {
            return Ok(Value::Null);
        };
        let Ok(token) = std::str::from_utf8(stored) else {
            return Ok(Value::Null);
        };
        match crypt.decrypt(token) {
            Ok(plain) => Ok(serde_json::from_slice(&plain).unwrap_or(Value::Null)),
            Err(_) => {
                tracing::warn!(user = %user.name, "could not decrypt auth_state (wrong JUPYTERHUB_CRYPT_KEY?)");
                Ok(Value::Null)
            }
        }
    }

    pub fn store_auth_state(&self, user: &UserRow, state: &Value) -> Result<()> {
        if self.crypt.is_none() || !self.config.authenticator.enable_auth_state {
            return Ok(());
        }
        let encrypted = self.encrypt_auth_state(state)?;
        self.db
            .write(|tx| db::set_user_auth_state(tx, user.id, encrypted.as_deref()))?;
        Ok(())
    }

    /// `DELETE /users/{name}`: stops the user's servers first.
    pub async fn delete_user(&self, identity: &Identity, name: &str) -> Result<()> {
        let user = self.user(name)?;
        if identity.user().is_some_and(|me| me.id == user.id) {
            return Err(Error::BadRequest("Cannot delete yourself!".into()));
        }
        let spawners = self.db.read(|c| db::spawners_of(c, user.id))?;
        for row in &spawners {
            if self.server_pending(&(user.id, row.name.clone())).is_some() {
                return Err(Error::BadRequest(format!(
                    "{name}'s server is pending, cannot delete until it is done"
                )));
            }
        }
        for row in spawners.iter().filter(|r| r.url.is_some()) {
            if let Err(e) = self
                .spawner
                .stop(&user.name, &row.name, &row.state, true)
                .await
            {
                tracing::warn!(user = %name, error = %e, "could not stop server of deleted user");
            }
            self.routes.remove(&self.server_url(&user.name, &row.name));
            self.servers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(user.id, row.name.clone()));
        }
        self.db.write(|tx| {
            for row in &spawners {
                db::delete_oauth_client(tx, &Hub::oauth_client_id(&user.name, &row.name))?;
            }
            db::delete_user(tx, user.id)
        })?;
        if self.config.create_system_users() {
            // Upstream never removes system accounts either; say so, so no one expects it.
            tracing::info!(
                user = %name,
                account = %crate::auth::accounts::apply(
                    &self.config.systemd_spawner.username_template,
                    name
                ),
                "user deleted; the system account and its home directory are kept"
            );
        }
        Ok(())
    }

    /// `POST /users/{name}/activity` (contract §1.8).
    pub fn record_activity(&self, name: &str, body: &Value) -> Result<()> {
        let user = self.user(name)?;
        let now = crate::time::now();
        let parse = |value: &Value, what: &str| -> Result<i64> {
            let text = value
                .as_str()
                .ok_or_else(|| Error::BadRequest(format!("{what} must be a timestamp string")))?;
            let when = crate::time::parse_iso(text).ok_or_else(|| {
                Error::BadRequest(format!("Invalid timestamp for {what}: {text:?}"))
            })?;
            if when > now + MAX_FUTURE_MICROS {
                return Err(Error::BadRequest(format!("{what} {text} is in the future")));
            }
            Ok(when)
        };
        let user_activity = body
            .get("last_activity")
            .map(|v| parse(v, "last_activity"))
            .transpose()?;
        let mut server_activity = Vec::new();
        if let Some(servers) = body.get("servers") {
            let servers = servers
                .as_object()
                .ok_or_else(|| Error::BadRequest("servers must be a dict".into()))?;
            for (server_name, info) in servers {
                let when = info
                    .get("last_activity")
                    .map(|v| parse(v, "last_activity"))
                    .transpose()?
                    .ok_or_else(|| {
                        Error::BadRequest(format!(
                            "servers.{server_name}.last_activity is required"
                        ))
                    })?;
                let row = self.db.read(|c| db::spawner(c, user.id, server_name))?;
                let row = row.ok_or_else(|| {
                    Error::BadRequest(format!("No such server '{server_name}' for user {name}"))
                })?;
                server_activity.push((row.id, when));
            }
        }
        if user_activity.is_none() && server_activity.is_empty() {
            return Err(Error::BadRequest(
                "body must contain at least one of `last_activity` or `servers`".into(),
            ));
        }
        self.db.write(|tx| {
            if let Some(when) = user_activity {
                db::touch_user(tx, user.id, when)?;
            }
            for (id, when) in &server_activity {
                db::touch_spawner(tx, *id, *when)?;
            }
            Ok(())
        })?;
        Ok(())
    }
}
