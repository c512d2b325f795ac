//! Rows and the queries on them, a file per table (`model/user.rs`, `spawner.rs`, `group.rs`,
//! `role.rs`, `service.rs`, `share.rs`, `token.rs`, `oauth.rs`), all re-exported here so `db::foo` names
//! them. Functions take a `&Connection` (reads) or a `&Transaction` (writes) so callers
//! compose several into one transaction.

mod group;
mod oauth;
mod password;
mod role;
mod service;
mod share;
mod spawner;
mod token;
mod user;

use std::collections::HashMap;

use rusqlite::Connection;
use serde_json::Value;

use super::{Error, Result};

pub use group::*;
pub use oauth::*;
pub use password::*;
pub use role::*;
pub use service::*;
pub use share::*;
pub use spawner::*;
pub use token::*;
pub use user::*;

fn json_col(text: String, column: &'static str) -> Result<Value> {
    serde_json::from_str(&text).map_err(|source| Error::Json { column, source })
}

fn list_col(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// `(user_id, name)` rows gathered by user id.
fn names_by_user(conn: &Connection, sql: &str) -> Result<HashMap<i64, Vec<String>>> {
    names_by_user_with(conn, sql, [])
}

/// As `names_by_user`, for a statement with parameters (a page's bounds).
fn names_by_user_with(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<HashMap<i64, Vec<String>>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut map: HashMap<i64, Vec<String>> = HashMap::new();
    for row in stmt.query_map(params, |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })? {
        let (user_id, name) = row?;
        map.entry(user_id).or_default().push(name);
    }
    Ok(map)
}
