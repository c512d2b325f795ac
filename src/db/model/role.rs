//! `roles` and the role maps: definitions and who holds them (users, groups, services).

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{list_col, names_by_user};
use crate::db::{Error, Result};

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

/// The directly held role names of one page's users, by user id.
pub fn user_role_names_of_page(
    conn: &Connection,
    page: crate::db::UserPage,
) -> Result<HashMap<i64, Vec<String>>> {
    super::names_by_user_with(
        conn,
        &format!(
            "SELECT m.user_id, r.name FROM roles r JOIN user_role_map m ON m.role_id = r.id \
             WHERE m.user_id IN ({}) ORDER BY m.user_id, r.name",
            page.ids_sql()
        ),
        page.bounds(),
    )
}

/// Every user's directly held role names by user id, in one query (for listings).
pub fn all_user_role_names(conn: &Connection) -> Result<HashMap<i64, Vec<String>>> {
    names_by_user(
        conn,
        "SELECT m.user_id, r.name FROM roles r JOIN user_role_map m ON m.role_id = r.id ORDER BY m.user_id, r.name",
    )
}
