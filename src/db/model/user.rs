//! `users`: accounts, their admin flag, login cookie id, auth_state and activity.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::db::{Error, Result};

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

/// An order of the user listing that SQL gives exactly as the hub's own sorts of all users in
/// id order do: ties in id order, users never active last ascending and first descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserOrder {
    Id,
    IdDesc,
    Name,
    NameDesc,
    LastActivity,
    LastActivityDesc,
}

impl UserOrder {
    /// The listing's `sort` values SQL can order by; `None` for the others.
    pub fn from_sort(sort: Option<&str>) -> Option<UserOrder> {
        Some(match sort {
            None | Some("") | Some("id") => UserOrder::Id,
            Some("-id") => UserOrder::IdDesc,
            Some("name") => UserOrder::Name,
            Some("-name") => UserOrder::NameDesc,
            Some("last_activity") => UserOrder::LastActivity,
            Some("-last_activity") => UserOrder::LastActivityDesc,
            Some(_) => return None,
        })
    }

    fn sql(self) -> &'static str {
        // Names are unique and compared bytewise (BINARY), as Rust compares strings.
        match self {
            UserOrder::Id => "id",
            UserOrder::IdDesc => "id DESC",
            UserOrder::Name => "name",
            UserOrder::NameDesc => "name DESC",
            UserOrder::LastActivity => "last_activity IS NULL, last_activity, id",
            UserOrder::LastActivityDesc => "last_activity IS NULL DESC, last_activity DESC, id",
        }
    }
}

/// One page of the user listing: `limit` users from `offset` in `order`.
#[derive(Debug, Clone, Copy)]
pub struct UserPage {
    pub order: UserOrder,
    pub offset: usize,
    pub limit: usize,
}

impl UserPage {
    /// The page's user ids, with `?1` the limit and `?2` the offset (`bounds`).
    pub(crate) fn ids_sql(self) -> String {
        format!(
            "SELECT id FROM users ORDER BY {} LIMIT ?1 OFFSET ?2",
            self.order.sql()
        )
    }

    pub(crate) fn bounds(self) -> [i64; 2] {
        let clamp = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        [clamp(self.limit), clamp(self.offset)]
    }
}

/// The users of one page, in its order.
pub fn users_page(conn: &Connection, page: UserPage) -> Result<Vec<UserRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLS} FROM users ORDER BY {} LIMIT ?1 OFFSET ?2",
        page.order.sql()
    ))?;
    let rows = stmt
        .query_map(page.bounds(), user_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn count_users(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
}

/// Users active at or after `since` (UTC microseconds), for `active_users{period}`.
pub fn count_users_active_since(conn: &Connection, since: i64) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM users WHERE last_activity >= ?1",
        [since],
        |r| r.get(0),
    )?)
}

pub fn insert_user(tx: &Connection, name: &str, admin: bool) -> Result<UserRow> {
    let cookie_id = uuid::Uuid::new_v4().simple().to_string();
    let created = crate::time::now();
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
