//! `spawners`: a user's servers (the default one has an empty name), with the spawner's
//! state, the URL while running, and the last failure.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::json_col;
use crate::db::{Error, Result};

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

/// The spawner rows of one page's users.
pub fn spawners_of_page(conn: &Connection, page: crate::db::UserPage) -> Result<Vec<SpawnerRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SPAWNER_COLS} FROM spawners WHERE user_id IN ({}) ORDER BY user_id, name",
        page.ids_sql()
    ))?;
    let rows = stmt
        .query_map(page.bounds(), spawner_row)?
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
