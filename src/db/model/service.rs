//! `services`: the services the config declares.

use rusqlite::{Connection, OptionalExtension, params};

use crate::db::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow {
    pub id: i64,
    pub name: String,
    pub admin: bool,
}

pub fn service_by_name(conn: &Connection, name: &str) -> Result<Option<ServiceRow>> {
    Ok(conn
        .prepare_cached("SELECT id, name, admin FROM services WHERE name = ?1")?
        .query_row([name], |r| {
            Ok(ServiceRow {
                id: r.get(0)?,
                name: r.get(1)?,
                admin: r.get(2)?,
            })
        })
        .optional()?)
}

pub fn service_by_id(conn: &Connection, id: i64) -> Result<Option<ServiceRow>> {
    Ok(conn
        .prepare_cached("SELECT id, name, admin FROM services WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(ServiceRow {
                id: r.get(0)?,
                name: r.get(1)?,
                admin: r.get(2)?,
            })
        })
        .optional()?)
}

pub fn all_services(conn: &Connection) -> Result<Vec<ServiceRow>> {
    let mut stmt = conn.prepare_cached("SELECT id, name, admin FROM services ORDER BY name")?;
    let rows = stmt
        .query_map([], |r| {
            Ok(ServiceRow {
                id: r.get(0)?,
                name: r.get(1)?,
                admin: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn upsert_service(tx: &Connection, name: &str, admin: bool) -> Result<ServiceRow> {
    tx.execute(
        "INSERT INTO services (name, admin) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET admin = excluded.admin",
        params![name, admin],
    )?;
    service_by_name(tx, name)?.ok_or_else(|| Error::NotFound(format!("service {name}")))
}

pub fn delete_service(tx: &Connection, id: i64) -> Result<()> {
    tx.execute("DELETE FROM services WHERE id = ?1", [id])?;
    Ok(())
}
