//! `first_use_passwords`: the first-use authenticator's password hashes, by name.

use rusqlite::{Connection, OptionalExtension, params};

use crate::db::Result;

pub fn first_use_password(conn: &Connection, name: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT hash FROM first_use_passwords WHERE name = ?1")?
        .query_row([name], |row| row.get(0))
        .optional()?)
}

/// Set (or replace) `name`'s password hash.
pub fn set_first_use_password(conn: &Connection, name: &str, hash: &str, now: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO first_use_passwords (name, hash, updated) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET hash = excluded.hash, updated = excluded.updated",
    )?
    .execute(params![name, hash, now])?;
    Ok(())
}
