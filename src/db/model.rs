//! Rows and the queries on them. Functions take a `&Connection` (reads) or a `&Transaction`
//! (writes) so callers compose several into one transaction.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::{Error, Result};

fn json_col(text: String, column: &'static str) -> Result<Value> {
    serde_json::from_str(&text).map_err(|source| Error::Json { column, source })
}

fn list_col(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    pub created: i64,
    pub last_activity: Option<i64>,
    pub cookie_id: String,
    pub encrypted_auth_state: Option<Vec<u8>>,
}

const USER_COLS: &str = "id, name, admin, created, last_activity, cookie_id, encrypted_auth_state";

fn user_row(row: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: row.get(0)?,
        name: row.get(1)?,
        admin: row.get(2)?,
        created: row.get(3)?,
        last_activity: row.get(4)?,
        cookie_id: row.get(5)?,
        encrypted_auth_state: row.get(6)?,
    })
}

pub fn user_by_name(conn: &Connection, name: &str) -> Result<Option<UserRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE name = ?1"))?
        .query_row([name], user_row)
        .optional()?)
}

pub fn user_by_id(conn: &Connection, id: i64) -> Result<Option<UserRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"))?
        .query_row([id], user_row)
        .optional()?)
}

pub fn user_by_cookie_id(conn: &Connection, cookie_id: &str) -> Result<Option<UserRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {USER_COLS} FROM users WHERE cookie_id = ?1"
        ))?
        .query_row([cookie_id], user_row)
        .optional()?)
}

pub fn all_users(conn: &Connection) -> Result<Vec<UserRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {USER_COLS} FROM users ORDER BY id"))?;
    let rows = stmt
        .query_map([], user_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn count_users(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
}

pub fn insert_user(tx: &Connection, name: &str, admin: bool) -> Result<UserRow> {
    let cookie_id = uuid::Uuid::new_v4().simple().to_string();
    let created = super::now();
    let inserted = tx.execute(
        "INSERT INTO users (name, admin, created, cookie_id) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(name) DO NOTHING",
        params![name, admin, created, cookie_id],
    )?;
    if inserted == 0 {
        return Err(Error::Conflict(format!("user {name}")));
    }
    user_by_name(tx, name)?.ok_or_else(|| Error::NotFound(format!("user {name}")))
}

pub fn set_user_admin(tx: &Connection, id: i64, admin: bool) -> Result<()> {
    tx.execute(
        "UPDATE users SET admin = ?2 WHERE id = ?1",
        params![id, admin],
    )?;
    Ok(())
}

pub fn rename_user(tx: &Connection, id: i64, name: &str) -> Result<()> {
    match tx.execute(
        "UPDATE users SET name = ?2 WHERE id = ?1",
        params![id, name],
    ) {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(Error::Conflict(format!("user {name}")))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn set_user_auth_state(tx: &Connection, id: i64, state: Option<&[u8]>) -> Result<()> {
    tx.execute(
        "UPDATE users SET encrypted_auth_state = ?2 WHERE id = ?1",
        params![id, state],
    )?;
    Ok(())
}

/// Only moves forward: an older timestamp never replaces a newer one.
pub fn touch_user(tx: &Connection, id: i64, when: i64) -> Result<()> {
    tx.prepare_cached(
        "UPDATE users SET last_activity = ?2 WHERE id = ?1 AND (last_activity IS NULL OR last_activity < ?2)",
    )?
    .execute(params![id, when])?;
    Ok(())
}

pub fn delete_user(tx: &Connection, id: i64) -> Result<()> {
    tx.execute("DELETE FROM users WHERE id = ?1", [id])?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpawnerRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub display_name: String,
    pub state: Value,
    pub user_options: Value,
    /// Where the server listens, while it runs.
    pub url: Option<String>,
    pub started: Option<i64>,
    pub last_activity: Option<i64>,
    pub last_failure: Option<Value>,
}

const SPAWNER_COLS: &str = "id, user_id, name, display_name, state, user_options, url, started, last_activity, last_failure";

fn spawner_row(row: &Row<'_>) -> rusqlite::Result<(SpawnerRow, String, String, Option<String>)> {
    Ok((
        SpawnerRow {
            id: row.get(0)?,
            user_id: row.get(1)?,
            name: row.get(2)?,
            display_name: row.get(3)?,
            state: Value::Null,
            user_options: Value::Null,
            url: row.get(6)?,
            started: row.get(7)?,
            last_activity: row.get(8)?,
            last_failure: None,
        },
        row.get(4)?,
        row.get(5)?,
        row.get(9)?,
    ))
}

fn finish_spawner(parts: (SpawnerRow, String, String, Option<String>)) -> Result<SpawnerRow> {
    let (mut row, state, options, failure) = parts;
    row.state = json_col(state, "spawners.state")?;
    row.user_options = json_col(options, "spawners.user_options")?;
    row.last_failure = failure
        .map(|f| json_col(f, "spawners.last_failure"))
        .transpose()?;
    Ok(row)
}

pub fn spawners_of(conn: &Connection, user_id: i64) -> Result<Vec<SpawnerRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SPAWNER_COLS} FROM spawners WHERE user_id = ?1"
    ))?;
    let mut rows = stmt
        .query_map([user_id], spawner_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // Sorted here: with ORDER BY the statement is re-prepared on each call (see roles_of).
    rows.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    rows.into_iter().map(finish_spawner).collect()
}

pub fn all_spawners(conn: &Connection) -> Result<Vec<SpawnerRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SPAWNER_COLS} FROM spawners ORDER BY user_id, name"
    ))?;
    let rows = stmt
        .query_map([], spawner_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(finish_spawner).collect()
}

pub fn spawner(conn: &Connection, user_id: i64, name: &str) -> Result<Option<SpawnerRow>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {SPAWNER_COLS} FROM spawners WHERE user_id = ?1 AND name = ?2"
        ))?
        .query_row(params![user_id, name], spawner_row)
        .optional()?;
    row.map(finish_spawner).transpose()
}

/// The spawner row for (user, name), created if missing.
pub fn ensure_spawner(tx: &Connection, user_id: i64, name: &str) -> Result<SpawnerRow> {
    tx.execute(
        "INSERT INTO spawners (user_id, name) VALUES (?1, ?2) ON CONFLICT(user_id, name) DO NOTHING",
        params![user_id, name],
    )?;
    spawner(tx, user_id, name)?.ok_or_else(|| Error::NotFound(format!("server {name}")))
}

pub fn count_named_spawners(conn: &Connection, user_id: i64) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM spawners WHERE user_id = ?1 AND name != ''",
        [user_id],
        |r| r.get(0),
    )?)
}

pub fn update_spawner(tx: &Connection, row: &SpawnerRow) -> Result<()> {
    tx.prepare_cached(
        "UPDATE spawners SET state = ?2, user_options = ?3, url = ?4, started = ?5, last_activity = ?6,
         last_failure = ?7, display_name = ?8, name = ?9 WHERE id = ?1",
    )?
    .execute(params![
        row.id,
        row.state.to_string(),
        row.user_options.to_string(),
        row.url,
        row.started,
        row.last_activity,
        row.last_failure.as_ref().map(|v| v.to_string()),
        row.display_name,
        row.name,
    ])?;
    Ok(())
}

pub fn touch_spawner(tx: &Connection, id: i64, when: i64) -> Result<()> {
    tx.prepare_cached(
        "UPDATE spawners SET last_activity = ?2 WHERE id = ?1 AND (last_activity IS NULL OR last_activity < ?2)",
    )?
    .execute(params![id, when])?;
    Ok(())
}

pub fn delete_spawner(tx: &Connection, id: i64) -> Result<()> {
    tx.execute("DELETE FROM spawners WHERE id = ?1", [id])?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupRow {
    pub id: i64,
    pub name: String,
    pub properties: Value,
}

fn group_row(row: &Row<'_>) -> rusqlite::Result<(i64, String, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn finish_group((id, name, properties): (i64, String, String)) -> Result<GroupRow> {
    Ok(GroupRow {
        id,
        name,
        properties: json_col(properties, "groups.properties")?,
    })
}

pub fn group_by_name(conn: &Connection, name: &str) -> Result<Option<GroupRow>> {
    conn.prepare_cached("SELECT id, name, properties FROM groups WHERE name = ?1")?
        .query_row([name], group_row)
        .optional()?
        .map(finish_group)
        .transpose()
}

pub fn all_groups(conn: &Connection) -> Result<Vec<GroupRow>> {
    let mut stmt = conn.prepare_cached("SELECT id, name, properties FROM groups ORDER BY id")?;
    let rows = stmt
        .query_map([], group_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(finish_group).collect()
}

pub fn insert_group(tx: &Connection, name: &str) -> Result<GroupRow> {
    let n = tx.execute(
        "INSERT INTO groups (name) VALUES (?1) ON CONFLICT(name) DO NOTHING",
        [name],
    )?;
    if n == 0 {
        return Err(Error::Conflict(format!("group {name}")));
    }
    group_by_name(tx, name)?.ok_or_else(|| Error::NotFound(format!("group {name}")))
}

pub fn set_group_properties(tx: &Connection, id: i64, properties: &Value) -> Result<()> {
    tx.execute(
        "UPDATE groups SET properties = ?2 WHERE id = ?1",
        params![id, properties.to_string()],
    )?;
    Ok(())
}

pub fn delete_group(tx: &Connection, id: i64) -> Result<()> {
    tx.execute("DELETE FROM groups WHERE id = ?1", [id])?;
    Ok(())
}

pub fn add_group_member(tx: &Connection, group_id: i64, user_id: i64) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO user_group_map (user_id, group_id) VALUES (?1, ?2)",
        params![user_id, group_id],
    )?;
    Ok(())
}

pub fn remove_group_member(tx: &Connection, group_id: i64, user_id: i64) -> Result<()> {
    tx.execute(
        "DELETE FROM user_group_map WHERE user_id = ?1 AND group_id = ?2",
        params![user_id, group_id],
    )?;
    Ok(())
}

pub fn group_members(conn: &Connection, group_id: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name FROM users WHERE id IN (SELECT user_id FROM user_group_map WHERE group_id = ?1) ORDER BY name",
    )?;
    let rows = stmt
        .query_map([group_id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn user_groups(conn: &Connection, user_id: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name FROM groups WHERE id IN (SELECT group_id FROM user_group_map WHERE user_id = ?1) ORDER BY name",
    )?;
    let rows = stmt
        .query_map([user_id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// `(user_id, name)` rows gathered by user id.
fn names_by_user(conn: &Connection, sql: &str) -> Result<HashMap<i64, Vec<String>>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut map: HashMap<i64, Vec<String>> = HashMap::new();
    for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))? {
        let (user_id, name) = row?;
        map.entry(user_id).or_default().push(name);
    }
    Ok(map)
}

/// Every user's group names by user id, in one query (for listings).
pub fn all_user_groups(conn: &Connection) -> Result<HashMap<i64, Vec<String>>> {
    names_by_user(
        conn,
        "SELECT m.user_id, g.name FROM groups g JOIN user_group_map m ON m.group_id = g.id ORDER BY m.user_id, g.name",
    )
}

/// Every user's directly held role names by user id, in one query (for listings).
pub fn all_user_role_names(conn: &Connection) -> Result<HashMap<i64, Vec<String>>> {
    names_by_user(
        conn,
        "SELECT m.user_id, r.name FROM roles r JOIN user_role_map m ON m.role_id = r.id ORDER BY m.user_id, r.name",
    )
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoleRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub scopes: Vec<String>,
}

fn role_row(row: &Row<'_>) -> rusqlite::Result<RoleRow> {
    let scopes: String = row.get(3)?;
    Ok(RoleRow {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        scopes: list_col(&scopes),
    })
}

pub fn all_roles(conn: &Connection) -> Result<Vec<RoleRow>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, name, description, scopes FROM roles ORDER BY id")?;
    let rows = stmt
        .query_map([], role_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn role_by_name(conn: &Connection, name: &str) -> Result<Option<RoleRow>> {
    Ok(conn
        .prepare_cached("SELECT id, name, description, scopes FROM roles WHERE name = ?1")?
        .query_row([name], role_row)
        .optional()?)
}

/// Create or replace a role's definition, keeping its assignments.
pub fn upsert_role(
    tx: &Connection,
    name: &str,
    description: &str,
    scopes: &[String],
) -> Result<RoleRow> {
    let scopes_json = serde_json::to_string(scopes).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "INSERT INTO roles (name, description, scopes) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET description = excluded.description, scopes = excluded.scopes",
        params![name, description, scopes_json],
    )?;
    role_by_name(tx, name)?.ok_or_else(|| Error::NotFound(format!("role {name}")))
}

/// Which kind of owner a role is assigned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleOwner {
    User(i64),
    Group(i64),
    Service(i64),
}

impl RoleOwner {
    fn table(self) -> (&'static str, &'static str, i64) {
        match self {
            RoleOwner::User(id) => ("user_role_map", "user_id", id),
            RoleOwner::Group(id) => ("group_role_map", "group_id", id),
            RoleOwner::Service(id) => ("service_role_map", "service_id", id),
        }
    }
}

pub fn grant_role(tx: &Connection, owner: RoleOwner, role_id: i64) -> Result<()> {
    let (table, column, id) = owner.table();
    tx.execute(
        &format!("INSERT OR IGNORE INTO {table} ({column}, role_id) VALUES (?1, ?2)"),
        params![id, role_id],
    )?;
    Ok(())
}

pub fn revoke_role(tx: &Connection, owner: RoleOwner, role_id: i64) -> Result<()> {
    let (table, column, id) = owner.table();
    tx.execute(
        &format!("DELETE FROM {table} WHERE {column} = ?1 AND role_id = ?2"),
        params![id, role_id],
    )?;
    Ok(())
}

/// Roles held directly (not through groups).
// Membership lookups are `IN (SELECT …)` rather than joins: the bundled SQLite plans joins on
// a bound parameter with STAT4, so a cached join statement is re-prepared on every execution
// (SQLITE_STMTSTATUS_REPREPARE counts one per call), which cost a third of the REST API's time.
pub fn roles_of(conn: &Connection, owner: RoleOwner) -> Result<Vec<RoleRow>> {
    let (table, column, id) = owner.table();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, name, description, scopes FROM roles
         WHERE id IN (SELECT role_id FROM {table} WHERE {column} = ?1) ORDER BY name"
    ))?;
    let rows = stmt
        .query_map([id], role_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Roles held through the user's groups, by name, each once. One query per group: a single
/// statement over both maps is either a join (re-prepared on every call, see above) or a
/// nested `IN`, which SQLite plans worse than this.
pub fn group_roles_of_user(conn: &Connection, user_id: i64) -> Result<Vec<RoleRow>> {
    let groups: Vec<i64> = conn
        .prepare_cached("SELECT group_id FROM user_group_map WHERE user_id = ?1")?
        .query_map([user_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, description, scopes FROM roles
         WHERE id IN (SELECT role_id FROM group_role_map WHERE group_id = ?1)",
    )?;
    let mut rows: Vec<RoleRow> = Vec::new();
    for group in groups {
        for row in stmt.query_map([group], role_row)? {
            let row = row?;
            if !rows.iter().any(|r| r.id == row.id) {
                rows.push(row);
            }
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow {
    pub id: i64,
    pub name: String,
    pub admin: bool,
}

pub fn service_by_name(conn: &Connection, name: &str) -> Result<Option<ServiceRow>> {
    Ok(conn
        .prepare_cached("SELECT id, name, admin FROM services WHERE name = ?1")?
        .query_row([name], |r| {
            Ok(ServiceRow {
                id: r.get(0)?,
                name: r.get(1)?,
                admin: r.get(2)?,
            })
        })
        .optional()?)
}

pub fn service_by_id(conn: &Connection, id: i64) -> Result<Option<ServiceRow>> {
    Ok(conn
        .prepare_cached("SELECT id, name, admin FROM services WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(ServiceRow {
                id: r.get(0)?,
                name: r.get(1)?,
                admin: r.get(2)?,
            })
        })
        .optional()?)
}

pub fn all_services(conn: &Connection) -> Result<Vec<ServiceRow>> {
    let mut stmt = conn.prepare_cached("SELECT id, name, admin FROM services ORDER BY name")?;
    let rows = stmt
        .query_map([], |r| {
            Ok(ServiceRow {
                id: r.get(0)?,
                name: r.get(1)?,
                admin: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn upsert_service(tx: &Connection, name: &str, admin: bool) -> Result<ServiceRow> {
    tx.execute(
        "INSERT INTO services (name, admin) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET admin = excluded.admin",
        params![name, admin],
    )?;
    service_by_name(tx, name)?.ok_or_else(|| Error::NotFound(format!("service {name}")))
}

pub fn delete_service(tx: &Connection, id: i64) -> Result<()> {
    tx.execute("DELETE FROM services WHERE id = ?1", [id])?;
    Ok(())
}

/// Owner of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOwner {
    User(i64),
    Service(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    pub id: i64,
    pub hashed: String,
    pub prefix: String,
    pub owner: TokenOwner,
    pub client_id: String,
    pub session_id: Option<String>,
    pub created: i64,
    pub expires_at: Option<i64>,
    pub last_activity: Option<i64>,
    pub note: String,
    /// Raw scopes as requested (may contain `inherit`), not yet intersected with the owner's.
    pub scopes: Vec<String>,
}

const TOKEN_COLS: &str = "id, hashed, prefix, user_id, service_id, client_id, session_id, created, expires_at, last_activity, note, scopes";

fn token_row(row: &Row<'_>) -> rusqlite::Result<TokenRow> {
    let user_id: Option<i64> = row.get(3)?;
    let service_id: Option<i64> = row.get(4)?;
    let owner = match (user_id, service_id) {
        (Some(id), _) => TokenOwner::User(id),
        (None, Some(id)) => TokenOwner::Service(id),
        (None, None) => TokenOwner::User(-1),
    };
    let scopes: String = row.get(11)?;
    Ok(TokenRow {
        id: row.get(0)?,
        hashed: row.get(1)?,
        prefix: row.get(2)?,
        owner,
        client_id: row.get(5)?,
        session_id: row.get(6)?,
        created: row.get(7)?,
        expires_at: row.get(8)?,
        last_activity: row.get(9)?,
        note: row.get(10)?,
        scopes: list_col(&scopes),
    })
}

/// Unexpired tokens whose prefix matches; the caller compares hashes.
pub fn tokens_by_prefix(conn: &Connection, prefix: &str, now: i64) -> Result<Vec<TokenRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLS} FROM api_tokens WHERE prefix = ?1 AND (expires_at IS NULL OR expires_at >= ?2)"
    ))?;
    let rows = stmt
        .query_map(params![prefix, now], token_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn token_by_id(conn: &Connection, id: i64) -> Result<Option<TokenRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {TOKEN_COLS} FROM api_tokens WHERE id = ?1"
        ))?
        .query_row([id], token_row)
        .optional()?)
}

pub fn tokens_of(conn: &Connection, owner: TokenOwner, now: i64) -> Result<Vec<TokenRow>> {
    let (column, id) = match owner {
        TokenOwner::User(id) => ("user_id", id),
        TokenOwner::Service(id) => ("service_id", id),
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLS} FROM api_tokens WHERE {column} = ?1 AND (expires_at IS NULL OR expires_at >= ?2)
         ORDER BY coalesce(last_activity, created), id"
    ))?;
    let rows = stmt
        .query_map(params![id, now], token_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub struct NewToken<'a> {
    pub hashed: &'a str,
    pub prefix: &'a str,
    pub owner: TokenOwner,
    pub client_id: &'a str,
    pub session_id: Option<&'a str>,
    pub expires_at: Option<i64>,
    pub note: &'a str,
    pub scopes: &'a [String],
}

pub fn insert_token(tx: &Connection, token: &NewToken<'_>) -> Result<TokenRow> {
    let (user_id, service_id) = match token.owner {
        TokenOwner::User(id) => (Some(id), None),
        TokenOwner::Service(id) => (None, Some(id)),
    };
    let scopes = serde_json::to_string(token.scopes).unwrap_or_else(|_| "[]".into());
    tx.prepare_cached(
        "INSERT INTO api_tokens (hashed, prefix, user_id, service_id, client_id, session_id, created, expires_at, note, scopes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        token.hashed,
        token.prefix,
        user_id,
        service_id,
        token.client_id,
        token.session_id,
        super::now(),
        token.expires_at,
        token.note,
        scopes
    ])?;
    let id = tx.last_insert_rowid();
    token_by_id(tx, id)?.ok_or_else(|| Error::NotFound("token".into()))
}

pub fn touch_token(tx: &Connection, id: i64, when: i64) -> Result<()> {
    tx.prepare_cached("UPDATE api_tokens SET last_activity = ?2 WHERE id = ?1")?
        .execute(params![id, when])?;
    Ok(())
}

pub fn delete_token(tx: &Connection, id: i64) -> Result<()> {
    tx.execute("DELETE FROM api_tokens WHERE id = ?1", [id])?;
    Ok(())
}

/// Delete a user's tokens for one OAuth client (upstream deletes them together).
pub fn delete_client_tokens_of_user(
    tx: &Connection,
    user_id: i64,
    client_id: &str,
) -> Result<usize> {
    Ok(tx.execute(
        "DELETE FROM api_tokens WHERE user_id = ?1 AND client_id = ?2",
        params![user_id, client_id],
    )?)
}

/// On logout: every token issued to that browser session.
pub fn delete_session_tokens(tx: &Connection, user_id: i64, session_id: &str) -> Result<usize> {
    Ok(tx.execute(
        "DELETE FROM api_tokens WHERE user_id = ?1 AND session_id = ?2",
        params![user_id, session_id],
    )?)
}

pub fn purge_expired_tokens(tx: &Connection, now: i64) -> Result<usize> {
    let tokens = tx.execute(
        "DELETE FROM api_tokens WHERE expires_at IS NOT NULL AND expires_at < ?1",
        [now],
    )?;
    tx.execute("DELETE FROM oauth_codes WHERE expires_at < ?1", [now])?;
    Ok(tokens)
}

pub fn delete_tokens_with_note(tx: &Connection, owner: TokenOwner, note: &str) -> Result<usize> {
    let (column, id) = match owner {
        TokenOwner::User(id) => ("user_id", id),
        TokenOwner::Service(id) => ("service_id", id),
    };
    Ok(tx.execute(
        &format!("DELETE FROM api_tokens WHERE {column} = ?1 AND note = ?2"),
        params![id, note],
    )?)
}

#[derive(Debug, Clone, PartialEq)]
pub struct OAuthClientRow {
    pub identifier: String,
    pub description: String,
    /// `hash_token` of the client secret, or empty for none.
    pub secret: String,
    pub redirect_uri: String,
    pub allowed_scopes: Vec<String>,
    pub owner: ClientOwner,
}

/// Whose OAuth client this is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClientOwner {
    #[default]
    Hub,
    Server {
        user: String,
        server: String,
    },
    Service(String),
}

pub fn oauth_client(conn: &Connection, identifier: &str) -> Result<Option<OAuthClientRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT identifier, description, secret, redirect_uri, allowed_scopes, owner_user, owner_server, owner_service
             FROM oauth_clients WHERE identifier = ?1",
        )?
        .query_row([identifier], |r| {
            let scopes: String = r.get(4)?;
            let user: Option<String> = r.get(5)?;
            let server: Option<String> = r.get(6)?;
            let service: Option<String> = r.get(7)?;
            let owner = match (user, service) {
                (Some(user), _) => ClientOwner::Server { user, server: server.unwrap_or_default() },
                (None, Some(service)) => ClientOwner::Service(service),
                (None, None) => ClientOwner::Hub,
            };
            Ok(OAuthClientRow {
                identifier: r.get(0)?,
                description: r.get(1)?,
                secret: r.get(2)?,
                redirect_uri: r.get(3)?,
                allowed_scopes: list_col(&scopes),
                owner,
            })
        })
        .optional()?)
}

pub fn upsert_oauth_client(tx: &Connection, client: &OAuthClientRow) -> Result<()> {
    tx.execute(
        "INSERT INTO oauth_clients (identifier, description, secret, redirect_uri, allowed_scopes, owner_user, owner_server, owner_service)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(identifier) DO UPDATE SET description = excluded.description, secret = excluded.secret,
         redirect_uri = excluded.redirect_uri, allowed_scopes = excluded.allowed_scopes, owner_user = excluded.owner_user,
         owner_server = excluded.owner_server, owner_service = excluded.owner_service",
        params![
            client.identifier,
            client.description,
            client.secret,
            client.redirect_uri,
            serde_json::to_string(&client.allowed_scopes).unwrap_or_else(|_| "[]".into()),
            match &client.owner { ClientOwner::Server { user, .. } => Some(user.as_str()), _ => None },
            match &client.owner { ClientOwner::Server { server, .. } => Some(server.as_str()), _ => None },
            match &client.owner { ClientOwner::Service(name) => Some(name.as_str()), _ => None },
        ],
    )?;
    Ok(())
}

/// Deleting a client cascades to its tokens and codes.
pub fn delete_oauth_client(tx: &Connection, identifier: &str) -> Result<()> {
    tx.execute(
        "DELETE FROM oauth_clients WHERE identifier = ?1 AND identifier != 'jupyterhub'",
        [identifier],
    )?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct OAuthCodeRow {
    pub client_id: String,
    pub code: String,
    pub expires_at: i64,
    pub redirect_uri: String,
    pub session_id: Option<String>,
    pub user_id: i64,
    pub scopes: Vec<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

pub fn insert_oauth_code(tx: &Connection, code: &OAuthCodeRow) -> Result<()> {
    tx.execute(
        "INSERT INTO oauth_codes (client_id, code, expires_at, redirect_uri, session_id, user_id, scopes, code_challenge, code_challenge_method)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            code.client_id,
            code.code,
            code.expires_at,
            code.redirect_uri,
            code.session_id,
            code.user_id,
            serde_json::to_string(&code.scopes).unwrap_or_else(|_| "[]".into()),
            code.code_challenge,
            code.code_challenge_method
        ],
    )?;
    Ok(())
}

/// Remove and return a code: codes are single-use.
pub fn take_oauth_code(tx: &Connection, code: &str) -> Result<Option<OAuthCodeRow>> {
    let row = tx
        .prepare_cached(
            "SELECT client_id, code, expires_at, redirect_uri, session_id, user_id, scopes, code_challenge, code_challenge_method
             FROM oauth_codes WHERE code = ?1",
        )?
        .query_row([code], |r| {
            let scopes: String = r.get(6)?;
            Ok(OAuthCodeRow {
                client_id: r.get(0)?,
                code: r.get(1)?,
                expires_at: r.get(2)?,
                redirect_uri: r.get(3)?,
                session_id: r.get(4)?,
                user_id: r.get(5)?,
                scopes: list_col(&scopes),
                code_challenge: r.get(7)?,
                code_challenge_method: r.get(8)?,
            })
        })
        .optional()?;
    if row.is_some() {
        tx.execute("DELETE FROM oauth_codes WHERE code = ?1", [code])?;
    }
    Ok(row)
}
