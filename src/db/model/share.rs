//! `shares` and `share_codes`: scopes granted on one server to a user or a group, and the
//! hashed codes a user exchanges for such a share. Names of the owner, server, user and group
//! are read alongside, as the API shows them.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::list_col;
use crate::db::Result;

/// Who a share is granted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareWith {
    User(i64),
    Group(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShareRow {
    pub id: i64,
    pub owner_id: i64,
    pub owner: String,
    pub spawner_id: i64,
    pub server: String,
    pub user: Option<String>,
    pub group: Option<String>,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShareCodeRow {
    pub id: i64,
    pub owner_id: i64,
    pub owner: String,
    pub spawner_id: i64,
    pub server: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub hashed: String,
    pub exchange_count: i64,
    pub last_exchanged_at: Option<i64>,
}

/// Which shares (or codes) to list.
#[derive(Debug, Clone, Copy)]
pub enum ShareQuery {
    Owner(i64),
    Server(i64),
    /// Granted to the user directly or to one of the user's groups.
    User(i64),
    Group(i64),
}

const SHARE_COLS: &str = "s.id, s.owner_id, (SELECT name FROM users WHERE id = s.owner_id), \
    s.spawner_id, (SELECT name FROM spawners WHERE id = s.spawner_id), \
    (SELECT name FROM users WHERE id = s.user_id), (SELECT name FROM groups WHERE id = s.group_id), \
    s.scopes, s.created_at, s.expires_at";

fn share_row(row: &Row<'_>) -> rusqlite::Result<ShareRow> {
    let scopes: String = row.get(7)?;
    Ok(ShareRow {
        id: row.get(0)?,
        owner_id: row.get(1)?,
        owner: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
        spawner_id: row.get(3)?,
        server: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
        user: row.get(5)?,
        group: row.get(6)?,
        scopes: list_col(&scopes),
        created_at: row.get(8)?,
        expires_at: row.get(9)?,
    })
}

/// Unexpired shares matching `query`, by id.
pub fn shares(conn: &Connection, query: ShareQuery, now: i64) -> Result<Vec<ShareRow>> {
    let (filter, id) = match query {
        ShareQuery::Owner(id) => ("s.owner_id = ?1", id),
        ShareQuery::Server(id) => ("s.spawner_id = ?1", id),
        ShareQuery::User(id) => (
            "(s.user_id = ?1 OR s.group_id IN (SELECT group_id FROM user_group_map WHERE user_id = ?1))",
            id,
        ),
        ShareQuery::Group(id) => ("s.group_id = ?1", id),
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SHARE_COLS} FROM shares s WHERE {filter} AND (s.expires_at IS NULL OR s.expires_at >= ?2)"
    ))?;
    let mut rows = stmt
        .query_map(params![id, now], share_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // Sorted here: with ORDER BY the statement is re-prepared on each call (see roles_of).
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// The share of one server with one user or group, if any.
pub fn share_of(conn: &Connection, spawner_id: i64, with: ShareWith) -> Result<Option<ShareRow>> {
    let (column, id) = match with {
        ShareWith::User(id) => ("user_id", id),
        ShareWith::Group(id) => ("group_id", id),
    };
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {SHARE_COLS} FROM shares s WHERE s.spawner_id = ?1 AND s.{column} = ?2"
        ))?
        .query_row(params![spawner_id, id], share_row)
        .optional()?)
}

pub fn insert_share(
    tx: &Connection,
    owner_id: i64,
    spawner_id: i64,
    with: ShareWith,
    scopes: &[String],
    now: i64,
) -> Result<()> {
    let (user_id, group_id) = match with {
        ShareWith::User(id) => (Some(id), None),
        ShareWith::Group(id) => (None, Some(id)),
    };
    tx.execute(
        "INSERT INTO shares (owner_id, spawner_id, user_id, group_id, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![owner_id, spawner_id, user_id, group_id, serde_json::to_string(scopes).unwrap_or_default(), now],
    )?;
    Ok(())
}

pub fn set_share_scopes(tx: &Connection, id: i64, scopes: &[String]) -> Result<()> {
    tx.execute(
        "UPDATE shares SET scopes = ?2 WHERE id = ?1",
        params![id, serde_json::to_string(scopes).unwrap_or_default()],
    )?;
    Ok(())
}

pub fn delete_share(tx: &Connection, id: i64) -> Result<()> {
    tx.execute("DELETE FROM shares WHERE id = ?1", [id])?;
    Ok(())
}

pub fn delete_shares_of_server(tx: &Connection, spawner_id: i64) -> Result<usize> {
    Ok(tx.execute("DELETE FROM shares WHERE spawner_id = ?1", [spawner_id])?)
}

/// The raw scopes of every unexpired share the user holds, directly or through a group.
pub fn shared_scopes_of_user(conn: &Connection, user_id: i64, now: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT scopes FROM shares WHERE (user_id = ?1 OR group_id IN (SELECT group_id FROM user_group_map WHERE user_id = ?1)) AND (expires_at IS NULL OR expires_at >= ?2)",
    )?;
    let mut scopes = Vec::new();
    for row in stmt.query_map(params![user_id, now], |r| r.get::<_, String>(0))? {
        scopes.extend(list_col(&row?));
    }
    Ok(scopes)
}

/// The earliest expiry, after `now`, of a share with the user or one of the user's groups.
pub fn next_share_expiry(conn: &Connection, user_id: i64, now: i64) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT MIN(expires_at) FROM shares WHERE (user_id = ?1 OR group_id IN (SELECT group_id FROM user_group_map WHERE user_id = ?1)) AND expires_at >= ?2",
    )?;
    Ok(stmt.query_row(params![user_id, now], |r| r.get::<_, Option<i64>>(0))?)
}

const CODE_COLS: &str = "c.id, c.owner_id, (SELECT name FROM users WHERE id = c.owner_id), \
    c.spawner_id, (SELECT name FROM spawners WHERE id = c.spawner_id), \
    c.scopes, c.created_at, c.expires_at, c.hashed, c.exchange_count, c.last_exchanged_at";

fn code_row(row: &Row<'_>) -> rusqlite::Result<ShareCodeRow> {
    let scopes: String = row.get(5)?;
    Ok(ShareCodeRow {
        id: row.get(0)?,
        owner_id: row.get(1)?,
        owner: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
        spawner_id: row.get(3)?,
        server: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
        scopes: list_col(&scopes),
        created_at: row.get(6)?,
        expires_at: row.get(7)?,
        hashed: row.get(8)?,
        exchange_count: row.get(9)?,
        last_exchanged_at: row.get(10)?,
    })
}

/// Unexpired share codes of an owner (`ShareQuery::Owner`) or a server (any other variant
/// names the server), by id.
pub fn share_codes(conn: &Connection, query: ShareQuery, now: i64) -> Result<Vec<ShareCodeRow>> {
    let (filter, id) = match query {
        ShareQuery::Owner(id) => ("c.owner_id = ?1", id),
        ShareQuery::Server(id) | ShareQuery::User(id) | ShareQuery::Group(id) => {
            ("c.spawner_id = ?1", id)
        }
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CODE_COLS} FROM share_codes c WHERE {filter} AND c.expires_at >= ?2"
    ))?;
    let mut rows = stmt
        .query_map(params![id, now], code_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// Codes whose prefix matches, expired ones included; the caller compares hashes.
pub fn share_codes_by_prefix(conn: &Connection, prefix: &str) -> Result<Vec<ShareCodeRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CODE_COLS} FROM share_codes c WHERE c.prefix = ?1"
    ))?;
    let rows = stmt
        .query_map([prefix], code_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn share_code_by_id(conn: &Connection, id: i64) -> Result<Option<ShareCodeRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {CODE_COLS} FROM share_codes c WHERE c.id = ?1"
        ))?
        .query_row([id], code_row)
        .optional()?)
}

pub struct NewShareCode<'a> {
    pub owner_id: i64,
    pub spawner_id: i64,
    pub scopes: &'a [String],
    pub created_at: i64,
    pub expires_at: i64,
    pub hashed: &'a str,
    pub prefix: &'a str,
}

pub fn insert_share_code(tx: &Connection, code: &NewShareCode<'_>) -> Result<i64> {
    tx.execute(
        "INSERT INTO share_codes (owner_id, spawner_id, scopes, created_at, expires_at, hashed, prefix) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            code.owner_id,
            code.spawner_id,
            serde_json::to_string(code.scopes).unwrap_or_default(),
            code.created_at,
            code.expires_at,
            code.hashed,
            code.prefix
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

pub fn note_share_code_exchange(tx: &Connection, id: i64, now: i64) -> Result<()> {
    tx.execute(
        "UPDATE share_codes SET exchange_count = exchange_count + 1, last_exchanged_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

pub fn delete_share_code(tx: &Connection, id: i64) -> Result<()> {
    tx.execute("DELETE FROM share_codes WHERE id = ?1", [id])?;
    Ok(())
}

pub fn delete_share_codes_of_server(tx: &Connection, spawner_id: i64) -> Result<usize> {
    Ok(tx.execute(
        "DELETE FROM share_codes WHERE spawner_id = ?1",
        [spawner_id],
    )?)
}
