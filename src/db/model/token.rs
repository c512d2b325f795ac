//! `api_tokens`: stored token hashes, their owners, scopes, expiry and activity.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::list_col;
use crate::db::{Error, Result};

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
        crate::time::now(),
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
