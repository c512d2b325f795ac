//! Transient units over the system bus: `Systemd` is one connection with its Manager proxy,
//! and the verbs every user of systemd needs (start with the `JobRemoved` handshake, stop,
//! kill, reset, state and property reads, listing by pattern, how a service's main process
//! ended). Also unit-name escaping and the root-only environment file through which secrets
//! reach a unit without appearing in its properties.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::{Connection, OwnedObjectPath, Variant};

use super::dbus::{self, ManagerProxy, ServiceProxy, SliceProxy, UnitProxy};
use super::properties::{Property, prop};
use super::{Error, journal};

/// How long one D-Bus call may take before we give up on systemd.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// `ExecMainCode` values (`si_code` of the child's SIGCHLD).
const CLD_KILLED: i32 = 2;
const CLD_DUMPED: i32 = 3;

/// Escape one name component as `systemd-escape` does (`\xNN` for every byte outside
/// `[A-Za-z0-9:_.]`, and for a leading `.`), except that `/` is escaped too instead of
/// becoming `-`: so an escaped component never contains `-`, which separates components.
pub fn escape_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b':' || b == b'_' || (b == b'.' && i > 0);
        if keep {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The inverse of `escape_component`; `None` if `escaped` is not a valid escaped name.
pub fn unescape_component(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) != Some(&b'x') {
                return None;
            }
            out.push(u8::from_str_radix(escaped.get(i + 2..i + 4)?, 16).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A unit name as only `[A-Za-z0-9_]` (its object-path escape), for file names: systemd
/// refuses an `EnvironmentFiles=` path containing the `\` of an escaped unit name (the unit
/// then fails with `resources`).
pub fn plain_name(unit: &str) -> String {
    let escaped = dbus::unit_object_path(unit);
    escaped
        .strip_prefix(dbus::UNIT_PATH_PREFIX)
        .unwrap_or(&escaped)
        .to_owned()
}

/// Run one D-Bus call with `CALL_TIMEOUT`: the outer error is systemd not answering.
/// `NotSupported` keeps systemd's own message, which says why (shown to the admin as is).
fn freezer_result(context: &'static str, result: zbus::Result<()>) -> Result<(), Error> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => match dbus::not_supported_message(&e) {
            Some(message) => Err(Error::Unsupported { context, message }),
            None => Err(Error::bus(context)(e)),
        },
    }
}

pub(crate) async fn timed<T>(
    what: &'static str,
    call: impl Future<Output = zbus::Result<T>>,
) -> Result<zbus::Result<T>, Error> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| Error::NoAnswer(what))
}

// ---------------------------------------------------------------------------------------------
// The environment file

/// Variables handed to a unit through a file only root can read, so they never appear in
/// the unit's properties (`systemctl show` is open to everyone).
#[derive(Debug, Clone)]
pub struct EnvironmentFile {
    /// Its directory is created root-only (0700) when missing.
    pub path: PathBuf,
    pub vars: BTreeMap<String, String>,
    /// Keep the file when the unit fails, so systemd's own `Restart=` can start it again;
    /// it is still removed when the unit stops cleanly (a stop asked for, or exit 0).
    pub keep_across_restarts: bool,
}

/// Quote a value for systemd's `EnvironmentFile=` parser (shell-like double quotes).
fn quote_env_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The text of an environment file holding `vars`; names must be shell variable names.
pub fn environment_file_contents(vars: &BTreeMap<String, String>) -> Result<String, Error> {
    let mut out = String::new();
    for (key, value) in vars {
        if !valid_env_name(key) || value.contains('\0') {
            return Err(Error::InvalidEnvironment(key.clone()));
        }
        let _ = writeln!(out, "{key}={}", quote_env_value(value));
    }
    Ok(out)
}

/// Write `contents` to `path`, readable by root only (0400), in a root-only (0700) directory.
fn write_env_file(path: &Path, contents: &str) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = path.with_extension("env.tmp");
    let _ = std::fs::remove_file(&tmp);
    {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The properties that load `path` into the unit and remove it after every stop: the
/// `ExecStopPost=` runs as root, also after a crash or a failed start, so the secret file
/// never outlives the unit even when its starter cannot delete it (an unprivileged hub).
fn environment_file_properties(path: &Path, keep_across_restarts: bool) -> [Property; 2] {
    let path = path.to_string_lossy().into_owned();
    let remove = if keep_across_restarts {
        // `$SERVICE_RESULT` is systemd's verdict on the run; `no-env-expand` leaves it to sh.
        (
            "/bin/sh".to_owned(),
            vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                r#"[ "$SERVICE_RESULT" != success ] || exec /bin/rm -f "$1""#.to_owned(),
                "sh".to_owned(),
                path.clone(),
            ],
            vec![
                "privileged".to_owned(),
                "ignore-failure".to_owned(),
                "no-env-expand".to_owned(),
            ],
        )
    } else {
        (
            "/bin/rm".to_owned(),
            vec!["/bin/rm".to_owned(), "-f".to_owned(), path.clone()],
            vec!["privileged".to_owned(), "ignore-failure".to_owned()],
        )
    };
    [
        prop("EnvironmentFiles", vec![(path, false)]),
        prop("ExecStopPostEx", vec![remove]),
    ]
}

// ---------------------------------------------------------------------------------------------
// Units

/// What `start_transient` creates.
#[derive(Debug, Clone, Default)]
pub struct TransientUnit {
    /// In order; later settings override earlier ones.
    pub properties: Vec<Property>,
    /// Written just before the start; its properties are added after `properties`, so
    /// nothing there can override them. Removed again when the start fails.
    pub environment: Option<EnvironmentFile>,
}

/// How `start_transient` ended, short of an error talking to systemd.
#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    /// The start job is done: the main process runs (`main_pid` 0 if it could not be read).
    Started { main_pid: u32 },
    /// A unit of that name is loaded and running (or starting, reloading, stopping).
    AlreadyRunning,
    /// The start job did not finish in time; the unit was asked to stop.
    TimedOut,
    /// The start job ended with `job_result` (`failed`, `dependency`, …); `exit` says how
    /// the main process ended, if systemd still knew. The failed unit was reset.
    Failed {
        job_result: String,
        exit: Option<ExitInfo>,
    },
}

/// How `stop` ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopOutcome {
    /// The stop job finished.
    Stopped,
    /// No such unit was loaded.
    NotLoaded,
}

/// One row of `list_units`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedUnit {
    pub name: String,
    pub description: String,
    /// `active`, `activating`, `deactivating`, `inactive`, `failed`, `reloading`.
    pub active_state: String,
}

/// Live resource use of a running service; `None` when systemd does not know (accounting
/// off, or not running).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub cpu_nsec: Option<u64>,
}

/// Live resource use of a slice and its ceiling (`MemoryMax=`); `None` where systemd does
/// not know or sets no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SliceUsage {
    pub memory_bytes: Option<u64>,
    pub cpu_nsec: Option<u64>,
    pub memory_max: Option<u64>,
}

/// How a service's main process ended, as systemd recorded it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExitInfo {
    /// `Result=`: `success`, `exit-code`, `signal`, `core-dump`, `timeout`, `oom-kill`, ...
    pub result: String,
    /// `ExecMainCode`: 1 exited, 2 killed, 3 dumped.
    pub code: i32,
    /// Exit status or signal number.
    pub status: i32,
    pub pid: u32,
    /// When the main process started (realtime µs); 0 if unknown.
    pub started_usec: u64,
}

impl ExitInfo {
    /// A reason for people. On cgroup v1 systemd cannot see OOM kills (`Result=signal`), so a
    /// SIGKILL is checked against the kernel's OOM report for this unit's main process.
    pub async fn reason(&self, unit: &str) -> String {
        match self.result.as_str() {
            "oom-kill" => "out of memory".into(),
            "timeout" => "timed out".into(),
            // systemd counts SIGTERM, SIGHUP, SIGINT and SIGPIPE as a clean exit: the
            // process was still killed by someone (`systemctl kill`, an admin, the user).
            "success" if self.code == CLD_KILLED || self.code == CLD_DUMPED => {
                format!("killed by signal {}", signal_name(self.status))
            }
            "success" => "exit code 0".into(),
            "exit-code" => match self.status {
                200 => "could not enter the working directory (status 200/CHDIR)".into(),
                203 => {
                    "the server command was not found or is not executable (status 203/EXEC)".into()
                }
                217 => "the system user does not exist (status 217/USER)".into(),
                status => format!("exit code {status}"),
            },
            "signal" | "core-dump" => {
                if self.status == libc::SIGKILL
                    && journal::kernel_oom_killed(unit, self.started_usec).await
                {
                    "out of memory".into()
                } else {
                    format!("killed by signal {}", signal_name(self.status))
                }
            }
            "" => "stopped".into(),
            other => format!("stopped ({other})"),
        }
    }

    /// Whether the main process could not be executed (`203/EXEC`).
    pub fn is_exec_failure(&self) -> bool {
        self.result == "exit-code" && self.status == 203
    }
}

fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(s) => format!("{} ({signal})", s.as_str()),
        Err(_) => signal.to_string(),
    }
}

/// One connection to the system's service manager. Cheap to clone (one connection shared).
/// The connection is replaced when it closes (the system bus restarted): the call that was
/// under way fails, the next one goes over a new connection.
#[derive(Clone)]
pub struct Systemd {
    shared: Arc<Shared>,
}

struct Shared {
    bus: std::sync::Mutex<Bus>,
    /// One reconnection at a time.
    reconnecting: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Bus {
    conn: Connection,
    manager: ManagerProxy<'static>,
}

async fn open_bus() -> Result<Bus, Error> {
    let conn = Connection::system()
        .await
        .map_err(Error::bus("connecting to the system bus"))?;
    // No property cache: we read no Manager properties, and a cache would only add a
    // match rule per proxy.
    let manager = ManagerProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(Error::bus("manager proxy"))?;
    Ok(Bus { conn, manager })
}

impl Systemd {
    /// Connect to the system bus. Starting units needs root (systemd 252 cannot restrict
    /// `StartTransientUnit` by polkit); the rest is allowed by polkit or to everyone.
    pub async fn connect() -> Result<Self, Error> {
        let bus = open_bus().await?;
        Ok(Systemd {
            shared: Arc::new(Shared {
                bus: std::sync::Mutex::new(bus),
                reconnecting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn current(&self) -> Bus {
        self.shared
            .bus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The open connection, made anew first if the last one closed (`dbus-daemon` was
    /// restarted or killed). systemd's own re-execution does not close it: the bus stays.
    async fn bus(&self) -> Result<Bus, Error> {
        let bus = self.current();
        if !bus.conn.is_closed() {
            return Ok(bus);
        }
        let _one = self.shared.reconnecting.lock().await;
        let bus = self.current();
        if !bus.conn.is_closed() {
            return Ok(bus);
        }
        let bus = open_bus().await?;
        tracing::warn!(
            bus = ?bus.conn.unique_name().map(|n| n.to_string()),
            "the system bus connection had closed (D-Bus restarted?): reconnected"
        );
        *self.shared.bus.lock().unwrap_or_else(|e| e.into_inner()) = bus.clone();
        Ok(bus)
    }

    /// The open connection (see `bus`), for signal streams.
    pub(crate) async fn connection(&self) -> Result<Connection, Error> {
        Ok(self.bus().await?.conn)
    }

    /// Whether the connection signal streams were made on has closed since (so they ended
    /// because of the bus, and a new `watch` on a new connection picks up again).
    pub fn is_closed(&self) -> bool {
        self.current().conn.is_closed()
    }

    /// Ask systemd for unit signals (without a subscriber it sends no unit
    /// `PropertiesChanged`, and may not send `JobRemoved`). A second subscription on the
    /// same connection is fine.
    pub async fn subscribe(&self) -> Result<(), Error> {
        let bus = self.bus().await?;
        match timed("Subscribe", bus.manager.subscribe()).await? {
            Err(e) if !dbus::is_already_subscribed(&e) => Err(Error::bus("Subscribe")(e)),
            _ => Ok(()),
        }
    }

    /// Start `name` as a transient unit and wait (up to `timeout`) for its start job.
    /// A failed unit of the same name left loaded is reset first.
    pub async fn start_transient(
        &self,
        name: &str,
        unit: TransientUnit,
        timeout: Duration,
    ) -> Result<StartOutcome, Error> {
        let bus = self.bus().await?;
        let manager = &bus.manager;
        // Best effort: the JobRemoved we wait for may not come without it.
        let _ = timed("Subscribe", manager.subscribe()).await;

        // A unit left loaded (failed, or still running although its starter thinks not).
        if let Ok(path) = timed("GetUnit", manager.get_unit(name)).await? {
            let state = self.active_state_at(&path).await.unwrap_or_default();
            if matches!(
                state.as_str(),
                "active" | "activating" | "reloading" | "deactivating"
            ) {
                return Ok(StartOutcome::AlreadyRunning);
            }
            if let Err(e) = timed("ResetFailedUnit", manager.reset_failed_unit(name)).await?
                && !dbus::is_no_such_unit(&e)
            {
                tracing::warn!(unit = %name, "reset-failed: {e}");
            }
        }

        let TransientUnit {
            mut properties,
            environment,
        } = unit;
        let env_path = match environment {
            Some(env) => {
                write_env_file(&env.path, &environment_file_contents(&env.vars)?)?;
                properties.extend(environment_file_properties(
                    &env.path,
                    env.keep_across_restarts,
                ));
                Some(env.path)
            }
            None => None,
        };
        let remove_env = || {
            if let Some(path) = &env_path {
                let _ = std::fs::remove_file(path);
            }
        };
        let (names, values): (Vec<String>, Vec<Variant<'static>>) = properties.into_iter().unzip();
        let props_ref: Vec<(&str, Variant<'_>)> =
            names.iter().map(String::as_str).zip(values).collect();

        // Subscribe before starting, or the JobRemoved of a quick failure could be missed.
        let mut removed = manager
            .receive_job_removed()
            .await
            .map_err(Error::bus("subscribing to JobRemoved"))?;
        let job = match timed(
            "StartTransientUnit",
            manager.start_transient_unit(name, "fail", &props_ref, &[]),
        )
        .await?
        {
            Ok(job) => job,
            Err(e) => {
                remove_env();
                if dbus::is_unit_exists(&e) {
                    return Ok(StartOutcome::AlreadyRunning);
                }
                return Err(Error::bus("StartTransientUnit")(e));
            }
        };
        let result = tokio::time::timeout(timeout, async {
            while let Some(signal) = removed.next().await {
                if let Ok(args) = signal.args()
                    && args.job() == &job
                {
                    return Some(args.result().clone());
                }
            }
            None
        })
        .await;
        let job_result = match result {
            Ok(Some(result)) => result,
            Ok(None) => {
                remove_env();
                return Err(Error::Closed("starting"));
            }
            Err(_) => {
                let _ = timed("StopUnit", manager.stop_unit(name, "replace")).await;
                remove_env();
                return Ok(StartOutcome::TimedOut);
            }
        };
        if job_result != "done" {
            remove_env();
            let exit = self.exit_info(name).await;
            let _ = timed("ResetFailedUnit", manager.reset_failed_unit(name)).await;
            return Ok(StartOutcome::Failed { job_result, exit });
        }
        let main_pid = self.main_pid(name).await.unwrap_or(0);
        Ok(StartOutcome::Started { main_pid })
    }

    /// Stop `name` and wait (up to `timeout`) for the stop job.
    pub async fn stop(&self, name: &str, timeout: Duration) -> Result<StopOutcome, Error> {
        let bus = self.bus().await?;
        let manager = &bus.manager;
        let mut removed = manager
            .receive_job_removed()
            .await
            .map_err(Error::bus("subscribing to JobRemoved"))?;
        let job = match timed("StopUnit", manager.stop_unit(name, "replace")).await? {
            Ok(job) => job,
            Err(e) if dbus::is_no_such_unit(&e) => return Ok(StopOutcome::NotLoaded),
            Err(e) => return Err(Error::bus("StopUnit")(e)),
        };
        let done = tokio::time::timeout(timeout, async {
            while let Some(signal) = removed.next().await {
                if let Ok(args) = signal.args()
                    && args.job() == &job
                {
                    return true;
                }
            }
            false
        })
        .await;
        match done {
            Ok(true) => Ok(StopOutcome::Stopped),
            Ok(false) => Err(Error::Closed("stopping")),
            Err(_) => Err(Error::StopTimedOut(name.to_owned())),
        }
    }

    /// Send `signal` to the unit's processes (`whom`: `all`, `main` or `control`). A unit
    /// that is not loaded has nothing to kill: that is not an error.
    pub async fn kill(&self, name: &str, whom: &str, signal: i32) -> Result<(), Error> {
        let bus = self.bus().await?;
        match timed("KillUnit", bus.manager.kill_unit(name, whom, signal)).await? {
            Err(e) if !dbus::is_no_such_unit(&e) => Err(Error::bus("KillUnit")(e)),
            _ => Ok(()),
        }
    }

    /// Freeze the unit's processes (`FreezeUnit`): they keep their memory and sockets and use
    /// no CPU until `thaw`. Answers once frozen.
    pub async fn freeze(&self, name: &str) -> Result<(), Error> {
        freezer_result(
            "FreezeUnit",
            timed("FreezeUnit", self.bus().await?.manager.freeze_unit(name)).await?,
        )
    }

    /// Let a frozen unit run again (`ThawUnit`). Answers once it runs.
    pub async fn thaw(&self, name: &str) -> Result<(), Error> {
        freezer_result(
            "ThawUnit",
            timed("ThawUnit", self.bus().await?.manager.thaw_unit(name)).await?,
        )
    }

    /// The unit's `FreezerState` (`running`, `frozen`, …); `None` when it is not loaded.
    pub async fn freezer_state(&self, name: &str) -> Result<Option<String>, Error> {
        let bus = self.bus().await?;
        let path = match timed("GetUnit", bus.manager.get_unit(name)).await? {
            Ok(path) => path,
            Err(e) if dbus::is_no_such_unit(&e) => return Ok(None),
            Err(e) => return Err(Error::bus("GetUnit")(e)),
        };
        let unit = UnitProxy::builder(&bus.conn)
            .path(path)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(Error::bus("unit proxy"))?;
        timed("FreezerState", unit.freezer_state())
            .await?
            .map(Some)
            .map_err(Error::bus("FreezerState"))
    }

    /// Forget a failed unit's failure (and with it the unit, once nothing else holds it).
    pub async fn reset_failed(&self, name: &str) -> Result<(), Error> {
        let bus = self.bus().await?;
        match timed("ResetFailedUnit", bus.manager.reset_failed_unit(name)).await? {
            Err(e) if !dbus::is_no_such_unit(&e) => Err(Error::bus("ResetFailedUnit")(e)),
            _ => Ok(()),
        }
    }

    /// The unit's `ActiveState`; `None` when it is not loaded.
    pub async fn unit_state(&self, name: &str) -> Result<Option<String>, Error> {
        let bus = self.bus().await?;
        let path = match timed("GetUnit", bus.manager.get_unit(name)).await? {
            Ok(path) => path,
            Err(e) if dbus::is_no_such_unit(&e) => return Ok(None),
            Err(e) => return Err(Error::bus("GetUnit")(e)),
        };
        self.active_state_at(&path).await.map(Some)
    }

    async fn active_state_at(&self, path: &OwnedObjectPath) -> Result<String, Error> {
        let unit = UnitProxy::builder(&self.bus().await?.conn)
            .path(path.clone())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(Error::bus("unit proxy"))?;
        timed("ActiveState", unit.active_state())
            .await?
            .map_err(Error::bus("ActiveState"))
    }

    /// Loaded units whose names match one of `patterns` (shell globs, as `systemctl
    /// list-units PATTERN`), with their active state.
    pub async fn list_units(&self, patterns: &[&str]) -> Result<Vec<ListedUnit>, Error> {
        let rows = timed(
            "ListUnitsByPatterns",
            self.bus()
                .await?
                .manager
                .list_units_by_patterns(&[], patterns),
        )
        .await?
        .map_err(Error::bus("ListUnitsByPatterns"))?;
        Ok(rows
            .into_iter()
            .map(|row| ListedUnit {
                name: row.0,
                description: row.1,
                active_state: row.3,
            })
            .collect())
    }

    async fn service(&self, name: &str) -> Result<ServiceProxy<'static>, Error> {
        ServiceProxy::builder(&self.bus().await?.conn)
            .path(dbus::unit_object_path(name))
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(Error::bus("service proxy"))
    }

    /// One property of the unit's `org.freedesktop.systemd1.Service` interface, read fresh
    /// (`MemoryCurrent`, `CPUUsageNSec`, `ControlGroup`, … are not change-signalled).
    pub async fn service_property<T>(&self, name: &str, property: &'static str) -> Result<T, Error>
    where
        T: serde::de::DeserializeOwned + zbus::Type,
    {
        let service = self.service(name).await?;
        timed(property, service.inner().get_property::<T>(property))
            .await?
            .map_err(Error::bus(property))
    }

    /// The main process of a running service.
    pub async fn main_pid(&self, name: &str) -> Result<u32, Error> {
        let service = self.service(name).await?;
        timed("ExecMainPID", service.exec_main_pid())
            .await?
            .map_err(Error::bus("ExecMainPID"))
    }

    /// Live memory and CPU time of a running service.
    pub async fn usage(&self, name: &str) -> Result<Usage, Error> {
        let service = self.service(name).await?;
        // systemd answers "unknown" as u64::MAX.
        let known = |v: u64| (v != u64::MAX).then_some(v);
        let memory_bytes = timed("MemoryCurrent", service.memory_current())
            .await?
            .ok()
            .and_then(known);
        let cpu_nsec = timed("CPUUsageNSec", service.cpu_usage_nsec())
            .await?
            .ok()
            .and_then(known);
        Ok(Usage {
            memory_bytes,
            cpu_nsec,
        })
    }

    /// Live memory and CPU time of a slice (all it holds) and its memory ceiling; every
    /// figure `None` when systemd does not know (no such slice loaded, accounting off).
    pub async fn slice_usage(&self, name: &str) -> Result<SliceUsage, Error> {
        let slice = SliceProxy::builder(&self.bus().await?.conn)
            .path(dbus::unit_object_path(name))
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(Error::bus("slice proxy"))?;
        let known = |v: u64| (v != u64::MAX).then_some(v);
        Ok(SliceUsage {
            memory_bytes: timed("MemoryCurrent", slice.memory_current())
                .await?
                .ok()
                .and_then(known),
            cpu_nsec: timed("CPUUsageNSec", slice.cpu_usage_nsec())
                .await?
                .ok()
                .and_then(known),
            memory_max: timed("MemoryMax", slice.memory_max())
                .await?
                .ok()
                .and_then(known),
        })
    }

    /// How the service's main process ended; `None` when the unit is not loaded (never
    /// started, or garbage-collected) or systemd does not answer.
    pub async fn exit_info(&self, name: &str) -> Option<ExitInfo> {
        let service = self.service(name).await.ok()?;
        let result = timed("Result", service.result()).await.ok()?.ok()?;
        let code = timed("ExecMainCode", service.exec_main_code())
            .await
            .ok()?
            .ok()?;
        let status = timed("ExecMainStatus", service.exec_main_status())
            .await
            .ok()?
            .ok()?;
        let pid = timed("ExecMainPID", service.exec_main_pid())
            .await
            .ok()?
            .ok()?;
        let started_usec = timed(
            "ExecMainStartTimestamp",
            service.exec_main_start_timestamp(),
        )
        .await
        .ok()?
        .unwrap_or(0);
        Some(ExitInfo {
            result,
            code,
            status,
            pid,
            started_usec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clean_signals_are_still_reported_as_kills() {
        let killed = ExitInfo {
            result: "success".into(),
            code: CLD_KILLED,
            status: libc::SIGTERM,
            ..Default::default()
        };
        assert_eq!(
            killed.reason("x.service").await,
            "killed by signal SIGTERM (15)"
        );
        let exited = ExitInfo {
            result: "success".into(),
            code: 1,
            ..Default::default()
        };
        assert_eq!(exited.reason("x.service").await, "exit code 0");
    }

    #[test]
    fn environment_file_quoting() {
        let vars: BTreeMap<String, String> = [("A".to_owned(), "x \"y\" $HOME `z` \\".to_owned())]
            .into_iter()
            .collect();
        assert_eq!(
            environment_file_contents(&vars).expect("valid"),
            "A=\"x \\\"y\\\" \\$HOME \\`z\\` \\\\\"\n"
        );
        let bad: BTreeMap<String, String> = [("BAD NAME".to_owned(), "1".to_owned())]
            .into_iter()
            .collect();
        assert!(environment_file_contents(&bad).is_err());
    }
}
