//! The SQLite database: one writer connection and a few reader connections (WAL lets readers
//! run beside the writer). Only this module and its children write SQL. Every multi-statement
//! change runs in one transaction, so a crash leaves the database consistent.

mod migrate;
pub mod model;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

pub use migrate::{MIGRATIONS, SchemaState};
pub use model::*;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database {path} has schema version {found}, this jupyterhub knows only up to {known}")]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error(
        "database {path} needs upgrading from schema version {found} to {known}: run `jupyterhub upgrade-db` or set upgrade_db = true"
    )]
    NeedsUpgrade {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error(
        "{path} is Python JupyterHub's database (alembic revision {revision}), which this hub does not read: \
         move it away (its users, groups and tokens do not carry over; recreate them with \
         load_groups, admin_users and api_tokens) or set db_url to a new file"
    )]
    PythonDatabase { path: PathBuf, revision: String },
    #[error("cannot back up the database: {0}")]
    Backup(std::io::Error),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("corrupt JSON in column {column}: {source}")]
    Json {
        column: &'static str,
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

const READERS: usize = 4;
/// Prepared statements kept per connection. rusqlite keeps 16 by default, fewer than one
/// authenticated API request uses, so each request re-parsed most of its SQL.
const STATEMENT_CACHE: usize = 256;

/// Cheap to share behind an `Arc`; queries are short, so they run on the calling thread.
pub struct Db {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Bumped after every committed write: what was read at an older generation may be stale.
    generation: AtomicU64,
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;",
    )?;
    Ok(())
}

impl Db {
    /// Open (creating if needed) and check the schema version. A fresh database is created at
    /// the newest schema; an old one is upgraded only when `upgrade` is true.
    pub fn open(path: &Path, upgrade: bool) -> Result<Db> {
        let conn = Connection::open(path)?;
        // Before `configure`, which switches the file to WAL: a database that is not ours is
        // refused without a byte of it changed.
        let state = migrate::state(&conn)?;
        if let SchemaState::Python(revision) = state {
            return Err(Error::PythonDatabase {
                path: path.to_owned(),
                revision,
            });
        }
        configure(&conn)?;
        match state {
            SchemaState::Current => {}
            SchemaState::Empty => migrate::apply(&conn)?,
            SchemaState::Old(found) if upgrade => {
                drop(conn);
                Db::backup(path)?;
                let conn = Connection::open(path)?;
                configure(&conn)?;
                tracing::info!(
                    from = found,
                    to = MIGRATIONS.len(),
                    "upgrading database schema"
                );
                migrate::apply(&conn)?;
            }
            SchemaState::Old(found) => {
                return Err(Error::NeedsUpgrade {
                    path: path.to_owned(),
                    found,
                    known: MIGRATIONS.len(),
                });
            }
            SchemaState::TooNew(found) => {
                return Err(Error::TooNew {
                    path: path.to_owned(),
                    found,
                    known: MIGRATIONS.len(),
                });
            }
            SchemaState::Python(revision) => {
                return Err(Error::PythonDatabase {
                    path: path.to_owned(),
                    revision,
                });
            }
        }
        let writer = Connection::open(path)?;
        configure(&writer)?;
        writer.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_timeout(std::time::Duration::from_secs(5))?;
            reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            readers.push(reader);
        }
        Ok(Db {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            readers: Mutex::new(readers),
            generation: AtomicU64::new(0),
        })
    }

    /// Apply pending migrations after copying the file to `NAME.YYYY-MM-DD-HHMMSS.bak` (`-2`,
    /// `-3`… before `.bak` for more in the same second).
    /// Returns the backup's path, or `None` when nothing was pending.
    pub fn upgrade(path: &Path) -> Result<Option<PathBuf>> {
        let conn = Connection::open(path)?;
        let state = migrate::state(&conn)?;
        if !matches!(state, SchemaState::Python(_)) {
            configure(&conn)?;
        }
        match state {
            SchemaState::Current => Ok(None),
            SchemaState::Empty => {
                migrate::apply(&conn)?;
                Ok(None)
            }
            SchemaState::TooNew(found) => Err(Error::TooNew {
                path: path.to_owned(),
                found,
                known: MIGRATIONS.len(),
            }),
            SchemaState::Python(revision) => Err(Error::PythonDatabase {
                path: path.to_owned(),
                revision,
            }),
            SchemaState::Old(_) => {
                drop(conn);
                let backup = Db::backup(path)?;
                let conn = Connection::open(path)?;
                configure(&conn)?;
                migrate::apply(&conn)?;
                Ok(Some(backup))
            }
        }
    }

    fn backup(path: &Path) -> Result<PathBuf> {
        let stamp = jiff::Zoned::now().strftime("%Y-%m-%d-%H%M%S").to_string();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A second attempt within the same second (a migration that failed, retried) gets its
        // own file: VACUUM INTO refuses to overwrite one, and an earlier backup is worth keeping.
        let backup = (1..)
            .map(|n| match n {
                1 => path.with_file_name(format!("{name}.{stamp}.bak")),
                n => path.with_file_name(format!("{name}.{stamp}-{n}.bak")),
            })
            .find(|candidate| !candidate.exists())
            .unwrap_or_else(|| path.with_file_name(format!("{name}.{stamp}.bak")));
        // VACUUM INTO writes a consistent copy even with a WAL beside the file.
        let conn = Connection::open(path)?;
        conn.execute("VACUUM INTO ?1", [backup.to_string_lossy()])?;
        Ok(backup)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on a read-only connection.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match conn {
            Some(conn) => {
                let result = f(&conn);
                self.readers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(conn);
                result
            }
            // All readers busy: the writer can read too.
            None => {
                let conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
                f(&conn)
            }
        }
    }

    /// Run `f` in one immediate transaction; it commits only if `f` returns `Ok`.
    pub fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        // Before returning, so a request that starts after this write finishes never takes
        // something cached before it for current.
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(value)
    }

    /// The write generation. Read it *before* reading what is to be cached, and keep what was
    /// read only while the generation is unchanged: any write since may have changed it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_in_the_same_second_get_their_own_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jupyterhub.sqlite");
        Connection::open(&path)
            .expect("open")
            .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .expect("write");
        let first = Db::backup(&path).expect("first backup");
        let second = Db::backup(&path).expect("second backup");
        let third = Db::backup(&path).expect("third backup");
        assert_ne!(first, second);
        assert_ne!(second, third);
        for backup in [&first, &second, &third] {
            let name = backup
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert!(
                name.starts_with("jupyterhub.sqlite.") && name.ends_with(".bak"),
                "{name}"
            );
            let rows: i64 = Connection::open(backup)
                .expect("backup")
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .expect("read");
            assert_eq!(rows, 1, "{name} is a whole copy");
        }
    }
}
