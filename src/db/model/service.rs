//! `services`: the services the config declares and those created through the API.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::db::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    /// Declared by the config (start-up adds and deletes these); `false` for services
    /// created at runtime through the API.
    pub from_config: bool,
    /// A runtime service's spec as JSON (no token in it); `None` for config services.
    pub spec: Option<String>,
}

const COLUMNS: &str = "id, name, admin, from_config, spec";

fn service_row(r: &Row<'_>) -> rusqlite::Result<ServiceRow> {
    Ok(ServiceRow {
        id: r.get(0)?,
        name: r.get(1)?,
        admin: r.get(2)?,
        from_config: r.get(3)?,
        spec: r.get(4)?,
    })
}

pub fn service_by_name(conn: &Connection, name: &str) -> Result<Option<ServiceRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM services WHERE name = ?1"))?
        .query_row([name], service_row)
        .optional()?)
}

pub fn service_by_id(conn: &Connection, id: i64) -> Result<Option<ServiceRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM services WHERE id = ?1"))?
        .query_row([id], service_row)
        .optional()?)
}

pub fn all_services(conn: &Connection) -> Result<Vec<ServiceRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM services ORDER BY name"))?;
    let rows = stmt
        .query_map([], service_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A config service: created, or its `admin` flag brought up to date. The caller has checked
/// that the name is not a runtime service's.
pub fn upsert_config_service(tx: &Connection, name: &str, admin: bool) -> Result<ServiceRow> {
    tx.execute(
        "INSERT INTO services (name, admin, from_config) VALUES (?1, ?2, 1)
         ON CONFLICT(name) DO UPDATE SET admin = excluded.admin",
        params![name, admin],
    )?;
    service_by_name(tx, name)?.ok_or_else(|| Error::NotFound(format!("service {name}")))
}

/// A service created through the API; `Conflict` when the name is taken.
pub fn insert_runtime_service(
    tx: &Connection,
    name: &str,
    admin: bool,
    spec: &str,
) -> Result<ServiceRow> {
    let n = tx.execute(
        "INSERT INTO services (name, admin, from_config, spec) VALUES (?1, ?2, 0, ?3)
         ON CONFLICT(name) DO NOTHING",
        params![name, admin, spec],
    )?;
    if n == 0 {
        return Err(Error::Conflict(format!("Service {name}")));
    }
    service_by_name(tx, name)?.ok_or_else(|| Error::NotFound(format!("service {name}")))
}

/// Deleting a service cascades to its tokens and role grants; its OAuth clients are the
/// caller's to delete (`delete_service_oauth_clients`).
pub fn delete_service(tx: &Connection, id: i64) -> Result<()> {
    tx.execute("DELETE FROM services WHERE id = ?1", [id])?;
    Ok(())
}
