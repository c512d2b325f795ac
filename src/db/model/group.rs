//! `groups` and `user_group_map`: groups, their properties and members.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::{json_col, names_by_user};
use crate::db::{Error, Result};

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

/// The group names of one page's users, by user id.
pub fn user_groups_of_page(
    conn: &Connection,
    page: crate::db::UserPage,
) -> Result<HashMap<i64, Vec<String>>> {
    super::names_by_user_with(
        conn,
        &format!(
            "SELECT m.user_id, g.name FROM groups g JOIN user_group_map m ON m.group_id = g.id \
             WHERE m.user_id IN ({}) ORDER BY m.user_id, g.name",
            page.ids_sql()
        ),
        page.bounds(),
    )
}

/// Every user's group names by user id, in one query (for listings).
pub fn all_user_groups(conn: &Connection) -> Result<HashMap<i64, Vec<String>>> {
    names_by_user(
        conn,
        "SELECT m.user_id, g.name FROM groups g JOIN user_group_map m ON m.group_id = g.id ORDER BY m.user_id, g.name",
    )
}
