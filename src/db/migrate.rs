//! Versioned migrations: `migrations/NNN_*.sql`, embedded, applied in order. The schema
//! version is SQLite's `user_version`, bumped in the same transaction as each migration.

use rusqlite::{Connection, TransactionBehavior};

use super::Result;

/// Every migration, in order; never edit one that has been released.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "001_initial",
        include_str!("../../migrations/001_initial.sql"),
    ),
    (
        "002_spawner_failure_and_client_owner",
        include_str!("../../migrations/002_spawner_failure_and_client_owner.sql"),
    ),
    (
        "003_runtime_services",
        include_str!("../../migrations/003_runtime_services.sql"),
    ),
    (
        "004_shares",
        include_str!("../../migrations/004_shares.sql"),
    ),
    (
        "005_first_use_passwords",
        include_str!("../../migrations/005_first_use_passwords.sql"),
    ),
];

#[derive(Debug, PartialEq, Eq)]
pub enum SchemaState {
    Empty,
    /// Python JupyterHub's database (alembic's `alembic_version` table, no `user_version`):
    /// not ours to migrate.
    Python(String),
    Current,
    Old(usize),
    TooNew(usize),
}

pub fn state(conn: &Connection) -> Result<SchemaState> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let version = usize::try_from(version).unwrap_or(0);
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |row| row.get(0),
    )?;
    if version == 0 && tables > 0 {
        let alembic: Option<String> = conn
            .query_row(
                "SELECT version_num FROM alembic_version LIMIT 1",
                [],
                |row| row.get(0),
            )
            .ok();
        if let Some(revision) = alembic {
            return Ok(SchemaState::Python(revision));
        }
    }
    Ok(match version {
        0 if tables == 0 => SchemaState::Empty,
        v if v == MIGRATIONS.len() => SchemaState::Current,
        v if v > MIGRATIONS.len() => SchemaState::TooNew(v),
        v => SchemaState::Old(v),
    })
}

/// Apply every pending migration, each atomically with its version bump.
pub fn apply(conn: &Connection) -> Result<()> {
    apply_up_to(conn, MIGRATIONS.len())
}

/// Apply pending migrations up to schema version `target` (tests build old databases).
pub(crate) fn apply_up_to(conn: &Connection, target: usize) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let start = usize::try_from(version).unwrap_or(0);
    for (index, (_name, sql)) in MIGRATIONS.iter().enumerate().take(target).skip(start) {
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_in_order_and_report_state() {
        let conn = Connection::open_in_memory().expect("memory db");
        assert_eq!(state(&conn).expect("state"), SchemaState::Empty);
        apply_up_to(&conn, 1).expect("first");
        assert_eq!(state(&conn).expect("state"), SchemaState::Old(1));
        apply(&conn).expect("rest");
        assert_eq!(state(&conn).expect("state"), SchemaState::Current);
        conn.pragma_update(None, "user_version", 99).expect("bump");
        assert_eq!(state(&conn).expect("state"), SchemaState::TooNew(99));
    }
}
