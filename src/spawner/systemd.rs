//! The `systemd` spawner: each server is a transient unit started over D-Bus.
//! Invariants: no secret ever goes into a unit property (the environment reaches the server
//! through a root-only `EnvironmentFiles=` file, removed when the unit stops), and a unit name
//! maps to exactly one (user, server) pair and back (see `unit_name`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use zbus::{Connection, OwnedVariant, Variant};

use super::{Error, Exited, KnownServer, SpawnRequest, Spawner, Started, Status};
use crate::config::{Config, SystemdSpawnerConfig};
use crate::systemd::dbus::{self, ManagerProxy, ServiceProxy, UnitProxy};

/// Every unit we create starts with this; reconcile lists `jupyter-*.service`.
pub const UNIT_PREFIX: &str = "jupyter-";
const UNIT_SUFFIX: &str = ".service";
/// The server part of the default server's unit name.
const DEFAULT_SERVER: &str = "singleuser";
/// How long one D-Bus call may take before we give up on systemd.
const CALL_TIMEOUT: Duration = Duration::from_secs(25);
/// How long systemd waits after SIGTERM before SIGKILL (`TimeoutStopSec=`).
const STOP_TIMEOUT_USEC: u64 = 15_000_000;
/// Journal lines kept with a stop reason.
const LOG_TAIL_LINES: usize = 20;

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

/// The unit of a server: `jupyter-{user}-singleuser.service` for the default server and
/// `jupyter-{user}-{server}.service` for a named one, each part escaped by
/// `escape_component` (so neither part contains `-`). A named server called `singleuser` gets
/// its first letter escaped (`\x73ingleuser`), so it can never take the default server's unit.
pub fn unit_name(user: &str, server: &str) -> String {
    let server_part = if server.is_empty() {
        DEFAULT_SERVER.to_owned()
    } else if server == DEFAULT_SERVER {
        format!("\\x{:02x}{}", b's', &DEFAULT_SERVER[1..])
    } else {
        escape_component(server)
    };
    format!(
        "{UNIT_PREFIX}{}-{server_part}{UNIT_SUFFIX}",
        escape_component(user)
    )
}

/// The (user, server name) a unit belongs to; `None` for units not named by `unit_name`.
pub fn parse_unit_name(unit: &str) -> Option<(String, String)> {
    let middle = unit.strip_prefix(UNIT_PREFIX)?.strip_suffix(UNIT_SUFFIX)?;
    let (user, server) = middle.split_once('-')?;
    if server.contains('-') || user.is_empty() || server.is_empty() {
        return None;
    }
    let user = unescape_component(user)?;
    let server = if server == DEFAULT_SERVER {
        String::new()
    } else {
        unescape_component(server)?
    };
    Some((user, server))
}

fn systemd_error(context: &str, error: impl std::fmt::Display) -> Error {
    Error::Systemd(format!("{context}: {error}"))
}

/// A Manager proxy without a property cache (we read no Manager properties; a cache would
/// only add a match rule per proxy).
pub async fn manager_proxy(conn: &Connection) -> Result<ManagerProxy<'static>, Error> {
    ManagerProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| systemd_error("manager proxy", e))
}

async fn timed<T>(
    what: &str,
    call: impl Future<Output = zbus::Result<T>>,
) -> Result<zbus::Result<T>, Error> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| Error::Systemd(format!("{what}: no answer from systemd")))
}

// ---------------------------------------------------------------------------------------------
// Unit properties

/// A property as sent to `StartTransientUnit`.
pub type Property = (String, Variant<'static>);

fn prop(name: &str, value: impl Into<Variant<'static>>) -> Property {
    (name.to_owned(), value.into())
}

/// Where the environment file of `unit` lives. The name is the unit's object-path escape
/// (only `[A-Za-z0-9_]`): systemd refuses an `EnvironmentFiles=` path containing the `\` of
/// an escaped unit name (the unit then fails with `resources`).
pub fn env_file_path(config: &SystemdSpawnerConfig, unit: &str) -> PathBuf {
    let escaped = dbus::unit_object_path(unit);
    let name = escaped
        .strip_prefix(dbus::UNIT_PATH_PREFIX)
        .unwrap_or(&escaped);
    config.env_dir.join(format!("{name}.env"))
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

/// The contents of the environment file: the request's environment plus upstream's
/// `MEM_LIMIT`-style variables when the hub did not set them.
fn env_file_contents(request: &SpawnRequest, dynamic_users: bool) -> Result<String, Error> {
    let mut env = request.env.clone();
    if dynamic_users {
        // A dynamic user has no home in the user database: its state directory is the home.
        let home = format!("/var/lib/{}", dynamic_state_dir(&request.user));
        env.entry("HOME".to_owned()).or_insert(home);
    }
    let limits = &request.limits;
    let mut add = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            env.entry(key.to_owned()).or_insert(value);
        }
    };
    add("MEM_LIMIT", limits.mem_limit.map(|v| v.to_string()));
    add("MEM_GUARANTEE", limits.mem_guarantee.map(|v| v.to_string()));
    add("CPU_LIMIT", limits.cpu_limit.map(|v| v.to_string()));
    add("CPU_GUARANTEE", limits.cpu_guarantee.map(|v| v.to_string()));
    let mut out = String::new();
    for (key, value) in &env {
        if !valid_env_name(key) || value.contains('\0') {
            return Err(Error::Refused(format!(
                "invalid environment variable {key:?}"
            )));
        }
        let _ = writeln!(out, "{key}={}", quote_env_value(value));
    }
    Ok(out)
}

/// Write `contents` to `path`, readable by root only (0400), in a root-only (0700) directory.
fn write_env_file(dir: &Path, path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
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

/// The kind of D-Bus value a known `unit_extra_properties` key takes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Str,
    /// `t`; accepts `K`/`M`/`G`/`T` suffixes (base 1024) and `infinity`.
    Bytes,
    U64,
    I32,
    /// `u` written in octal (`UMask`).
    Octal,
    /// `as`, whitespace-separated.
    StrList,
    /// A time span; the D-Bus name ends in `USec` instead of `Sec` (`t`, microseconds).
    Sec,
    /// `CPUQuota=150%` → `CPUQuotaPerSecUSec`.
    Percent,
}

const EXTRA_PROPERTIES: &[(&str, Kind)] = &[
    ("CPUAccounting", Kind::Bool),
    ("Delegate", Kind::Bool),
    ("IOAccounting", Kind::Bool),
    ("IPAccounting", Kind::Bool),
    ("LockPersonality", Kind::Bool),
    ("MemoryAccounting", Kind::Bool),
    ("MemoryDenyWriteExecute", Kind::Bool),
    ("NoNewPrivileges", Kind::Bool),
    ("PrivateDevices", Kind::Bool),
    ("PrivateIPC", Kind::Bool),
    ("PrivateMounts", Kind::Bool),
    ("PrivateNetwork", Kind::Bool),
    ("PrivateTmp", Kind::Bool),
    ("PrivateUsers", Kind::Bool),
    ("ProtectClock", Kind::Bool),
    ("ProtectControlGroups", Kind::Bool),
    ("ProtectHostname", Kind::Bool),
    ("ProtectKernelLogs", Kind::Bool),
    ("ProtectKernelModules", Kind::Bool),
    ("ProtectKernelTunables", Kind::Bool),
    ("RemoveIPC", Kind::Bool),
    ("RestrictRealtime", Kind::Bool),
    ("RestrictSUIDSGID", Kind::Bool),
    ("SendSIGHUP", Kind::Bool),
    ("SendSIGKILL", Kind::Bool),
    ("TasksAccounting", Kind::Bool),
    ("Description", Kind::Str),
    ("DevicePolicy", Kind::Str),
    ("KillMode", Kind::Str),
    ("PAMName", Kind::Str),
    ("ProcSubset", Kind::Str),
    ("ProtectHome", Kind::Str),
    ("ProtectProc", Kind::Str),
    ("ProtectSystem", Kind::Str),
    ("StandardError", Kind::Str),
    ("StandardOutput", Kind::Str),
    ("SyslogIdentifier", Kind::Str),
    ("LimitAS", Kind::Bytes),
    ("LimitCORE", Kind::Bytes),
    ("LimitDATA", Kind::Bytes),
    ("LimitFSIZE", Kind::Bytes),
    ("LimitMEMLOCK", Kind::Bytes),
    ("LimitSTACK", Kind::Bytes),
    ("MemoryHigh", Kind::Bytes),
    ("MemoryLow", Kind::Bytes),
    ("MemoryMax", Kind::Bytes),
    ("MemoryMin", Kind::Bytes),
    ("MemorySwapMax", Kind::Bytes),
    ("CPUWeight", Kind::U64),
    ("IOWeight", Kind::U64),
    ("LimitNOFILE", Kind::U64),
    ("LimitNPROC", Kind::U64),
    ("StartupCPUWeight", Kind::U64),
    ("StartupIOWeight", Kind::U64),
    ("TasksMax", Kind::U64),
    ("IOSchedulingClass", Kind::I32),
    ("IOSchedulingPriority", Kind::I32),
    ("KillSignal", Kind::I32),
    ("Nice", Kind::I32),
    ("OOMScoreAdjust", Kind::I32),
    ("UMask", Kind::Octal),
    ("ExecPaths", Kind::StrList),
    ("InaccessiblePaths", Kind::StrList),
    ("NoExecPaths", Kind::StrList),
    ("ReadOnlyPaths", Kind::StrList),
    ("ReadWritePaths", Kind::StrList),
    ("SupplementaryGroups", Kind::StrList),
    ("RuntimeMaxSec", Kind::Sec),
    ("RuntimeRandomizedExtraSec", Kind::Sec),
    ("TimeoutAbortSec", Kind::Sec),
    ("TimeoutStartSec", Kind::Sec),
    ("TimeoutStopSec", Kind::Sec),
    ("WatchdogSec", Kind::Sec),
    ("CPUQuota", Kind::Percent),
];

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

fn parse_bytes(value: &str) -> Option<u64> {
    if value == "infinity" {
        return Some(u64::MAX);
    }
    let (number, shift) = match value.as_bytes().last()? {
        b'K' | b'k' => (&value[..value.len() - 1], 10),
        b'M' | b'm' => (&value[..value.len() - 1], 20),
        b'G' | b'g' => (&value[..value.len() - 1], 30),
        b'T' | b't' => (&value[..value.len() - 1], 40),
        _ => (value, 0),
    };
    number
        .trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(1u64 << shift)
}

/// A systemd time span (`90`, `1min 30s`, `500ms`, `infinity`) in microseconds.
fn parse_timespan_usec(value: &str) -> Option<u64> {
    if value == "infinity" {
        return Some(u64::MAX);
    }
    let mut total: u64 = 0;
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let factor: f64 = match &rest[..unit_end] {
            "us" | "usec" => 1.0,
            "ms" | "msec" => 1e3,
            "" | "s" | "sec" | "second" | "seconds" => 1e6,
            "m" | "min" | "minute" | "minutes" => 60e6,
            "h" | "hr" | "hour" | "hours" => 3600e6,
            "d" | "day" | "days" => 86400e6,
            _ => return None,
        };
        rest = rest[unit_end..].trim_start();
        total = total.checked_add((number * factor) as u64)?;
    }
    Some(total)
}

/// Convert one `unit_extra_properties` entry (`Key=Value`) to its typed D-Bus form.
/// Unknown keys and malformed values are errors, so a typo never passes silently.
pub fn parse_extra_property(entry: &str) -> Result<Property, Error> {
    let bad = |why: &str| Error::Refused(format!("unit_extra_properties: {entry:?}: {why}"));
    let (key, value) = entry
        .split_once('=')
        .ok_or_else(|| bad("expected Key=Value"))?;
    let (key, value) = (key.trim(), value.trim());
    let kind = EXTRA_PROPERTIES
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, kind)| *kind)
        .ok_or_else(|| bad("unknown or unsupported key"))?;
    Ok(match kind {
        Kind::Bool => prop(
            key,
            parse_bool(value).ok_or_else(|| bad("expected a boolean"))?,
        ),
        Kind::Str => prop(key, value.to_owned()),
        Kind::Bytes => prop(
            key,
            parse_bytes(value).ok_or_else(|| bad("expected a size"))?,
        ),
        Kind::U64 => prop(
            key,
            value.parse::<u64>().map_err(|_| bad("expected a number"))?,
        ),
        Kind::I32 => prop(
            key,
            value.parse::<i32>().map_err(|_| bad("expected a number"))?,
        ),
        Kind::Octal => prop(
            key,
            u32::from_str_radix(value, 8).map_err(|_| bad("expected an octal number"))?,
        ),
        Kind::StrList => prop(
            key,
            value
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<String>>(),
        ),
        Kind::Sec => {
            let usec = parse_timespan_usec(value).ok_or_else(|| bad("expected a time span"))?;
            let name = format!("{}USec", key.strip_suffix("Sec").unwrap_or(key));
            prop(&name, usec)
        }
        Kind::Percent => {
            let percent: f64 = value
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| bad("expected a percentage"))?;
            if percent.is_nan() || percent <= 0.0 {
                return Err(bad("expected a positive percentage"));
            }
            prop("CPUQuotaPerSecUSec", (percent * 10_000.0) as u64)
        }
    })
}

/// `cpu_guarantee` (in CPUs) as a `CPUWeight=`: 100 per CPU, within systemd's 1..=10000.
fn cpu_weight(guarantee: f64) -> u64 {
    (guarantee * 100.0).round().clamp(1.0, 10_000.0) as u64
}

/// A name systemd accepts for `DynamicUser=`'s account: stable per hub user.
fn dynamic_user_name(user: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(user.as_bytes());
    format!("jupyter-{}", &hex::encode(digest)[..16])
}

/// The `StateDirectory=` (under `/var/lib`) that is a dynamic user's home: the user name
/// with every byte outside `[A-Za-z0-9]` written as `_xx`, so distinct names never share it.
pub fn dynamic_state_dir(user: &str) -> String {
    let mut out = String::from("jupyterhub-users/");
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "_{b:02x}");
        }
    }
    out
}

/// Everything `StartTransientUnit` is given, in order (later settings override earlier).
pub fn unit_properties(
    request: &SpawnRequest,
    config: &SystemdSpawnerConfig,
    env_file: &Path,
) -> Result<Vec<Property>, Error> {
    let argv0 = request
        .argv
        .first()
        .ok_or_else(|| Error::Refused("empty command".into()))?;
    let mut props = vec![
        prop(
            "Description",
            format!(
                "JupyterHub server {:?} of user {:?}",
                request.server_name, request.user
            ),
        ),
        prop("Type", "exec"),
        // Without `no-env-expand` systemd would expand `$VAR` inside argv.
        prop(
            "ExecStartEx",
            vec![(
                argv0.clone(),
                request.argv.clone(),
                vec!["no-env-expand".to_owned()],
            )],
        ),
        prop(
            "EnvironmentFiles",
            vec![(env_file.to_string_lossy().into_owned(), false)],
        ),
        // Runs as root after every stop, also after a crash or a failed start, so the secret
        // file never outlives the server even when the hub cannot delete it (unprivileged hub).
        prop(
            "ExecStopPostEx",
            vec![(
                "/bin/rm".to_owned(),
                vec![
                    "/bin/rm".to_owned(),
                    "-f".to_owned(),
                    env_file.to_string_lossy().into_owned(),
                ],
                vec!["privileged".to_owned(), "ignore-failure".to_owned()],
            )],
        ),
        prop("Slice", config.slice.clone()),
        prop("OOMPolicy", "continue"),
        prop("MemoryAccounting", true),
        prop("CPUAccounting", true),
        prop("TimeoutStopUSec", STOP_TIMEOUT_USEC),
    ];
    if config.dynamic_users {
        let state_dir = dynamic_state_dir(&request.user);
        let home = format!("/var/lib/{state_dir}");
        props.push(prop("DynamicUser", true));
        props.push(prop("User", dynamic_user_name(&request.user)));
        props.push(prop("StateDirectory", vec![state_dir]));
        let dir = request
            .working_dir
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or(home);
        props.push(prop("WorkingDirectory", dir));
    } else {
        let user = nix::unistd::User::from_name(&request.system_user)
            .map_err(|e| Error::Systemd(format!("looking up {:?}: {e}", request.system_user)))?
            .ok_or_else(|| Error::NoSuchSystemUser(request.system_user.clone()))?;
        let group = nix::unistd::Group::from_gid(user.gid)
            .ok()
            .flatten()
            .map(|g| g.name)
            .unwrap_or_else(|| user.gid.to_string());
        props.push(prop("User", request.system_user.clone()));
        props.push(prop("Group", group));
        let dir = request
            .working_dir
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_else(|| "~".to_owned());
        props.push(prop("WorkingDirectory", dir));
    }
    let limits = &request.limits;
    if let Some(v) = limits.mem_limit {
        props.push(prop("MemoryMax", v));
    }
    if let Some(v) = limits.mem_guarantee {
        props.push(prop("MemoryLow", v));
    }
    if let Some(v) = limits.cpu_limit {
        props.push(prop("CPUQuotaPerSecUSec", (v * 1e6).round() as u64));
    }
    if let Some(v) = limits.cpu_guarantee {
        props.push(prop("CPUWeight", cpu_weight(v)));
    }
    if let Some(v) = limits.tasks_max {
        props.push(prop("TasksMax", v));
    }
    if config.isolate_tmp {
        props.push(prop("PrivateTmp", true));
    }
    if config.isolate_devices {
        props.push(prop("PrivateDevices", true));
    }
    if config.disable_user_sudo {
        props.push(prop("NoNewPrivileges", true));
    }
    if !config.readonly_paths.is_empty() {
        props.push(prop("ReadOnlyPaths", config.readonly_paths.clone()));
    }
    if !config.readwrite_paths.is_empty() {
        props.push(prop("ReadWritePaths", config.readwrite_paths.clone()));
    }
    for entry in &config.unit_extra_properties {
        props.push(parse_extra_property(entry)?);
    }
    Ok(props)
}

// ---------------------------------------------------------------------------------------------
// Starting

/// The URL a server listening on `ip:port` is reached at.
fn server_url(ip: &str, port: u16) -> String {
    match ip {
        "" | "0.0.0.0" => format!("http://127.0.0.1:{port}"),
        "::" => format!("http://[::1]:{port}"),
        ip if ip.contains(':') => format!("http://[{ip}]:{port}"),
        ip => format!("http://{ip}:{port}"),
    }
}

/// Start the unit of `request` over a fresh system-bus connection. Needs root (systemd 252
/// cannot restrict `StartTransientUnit` by polkit); the privileged helper calls this after
/// validating a request, and the hub calls it directly when it runs as root.
pub async fn start_unit_as_root(request: &SpawnRequest, config: &Config) -> Result<Started, Error> {
    let conn = Connection::system()
        .await
        .map_err(|e| systemd_error("connecting to the system bus", e))?;
    start_unit(&conn, request, config).await
}

/// `start_unit_as_root` over an existing connection.
pub async fn start_unit(
    conn: &Connection,
    request: &SpawnRequest,
    config: &Config,
) -> Result<Started, Error> {
    let sd = &config.systemd_spawner;
    let unit = unit_name(&request.user, &request.server_name);
    if unit.len() > 255 {
        return Err(Error::Refused(format!(
            "the unit name for user {:?} is too long",
            request.user
        )));
    }
    let env_file = env_file_path(sd, &unit);
    let props = unit_properties(request, sd, &env_file)?;
    let manager = manager_proxy(conn).await?;
    // Without a subscriber systemd may not send the JobRemoved we wait for. A connection
    // that is already subscribed gets `AlreadySubscribed`, which is fine.
    let _ = timed("Subscribe", manager.subscribe()).await;

    // A unit left loaded (failed, or still running although the hub thinks it stopped).
    if let Ok(path) = timed("GetUnit", manager.get_unit(&unit)).await? {
        let state = unit_active_state(conn, &path).await.unwrap_or_default();
        if matches!(
            state.as_str(),
            "active" | "activating" | "reloading" | "deactivating"
        ) {
            return Err(Error::StartFailed {
                reason: format!("{unit} is already running"),
                log_tail: Vec::new(),
            });
        }
        if let Err(e) = timed("ResetFailedUnit", manager.reset_failed_unit(&unit)).await?
            && !dbus::is_no_such_unit(&e)
        {
            tracing::warn!(%unit, "reset-failed: {e}");
        }
    }

    write_env_file(
        &sd.env_dir,
        &env_file,
        &env_file_contents(request, sd.dynamic_users)?,
    )?;
    let (names, values): (Vec<String>, Vec<Variant<'static>>) = props.into_iter().unzip();
    let props_ref: Vec<(&str, Variant<'_>)> =
        names.iter().map(String::as_str).zip(values).collect();

    // Subscribe before starting, or the JobRemoved of a quick failure could be missed.
    let mut removed = manager
        .receive_job_removed()
        .await
        .map_err(|e| systemd_error("subscribing to JobRemoved", e))?;
    let job = match timed(
        "StartTransientUnit",
        manager.start_transient_unit(&unit, "fail", &props_ref, &[]),
    )
    .await?
    {
        Ok(job) => job,
        Err(e) => {
            let _ = std::fs::remove_file(&env_file);
            if dbus::is_unit_exists(&e) {
                return Err(Error::StartFailed {
                    reason: format!("{unit} is already running"),
                    log_tail: Vec::new(),
                });
            }
            return Err(systemd_error("StartTransientUnit", e));
        }
    };
    let start_timeout = Duration::from_secs(config.spawner.start_timeout.max(1));
    let result = tokio::time::timeout(start_timeout, async {
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
    let result = match result {
        Ok(Some(result)) => result,
        Ok(None) => {
            let _ = std::fs::remove_file(&env_file);
            return Err(Error::Systemd(
                "the D-Bus connection closed while starting".into(),
            ));
        }
        Err(_) => {
            let _ = timed("StopUnit", manager.stop_unit(&unit, "replace")).await;
            let _ = std::fs::remove_file(&env_file);
            return Err(Error::StartFailed {
                reason: "timed out starting the server".into(),
                log_tail: journal_tail(&unit).await,
            });
        }
    };
    if result != "done" {
        let _ = std::fs::remove_file(&env_file);
        let info = read_exit_info(conn, &unit).await;
        let log_tail = journal_tail(&unit).await;
        let _ = timed("ResetFailedUnit", manager.reset_failed_unit(&unit)).await;
        if info
            .as_ref()
            .is_some_and(|i| i.result == "exit-code" && i.status == 203)
        {
            return Err(Error::CommandNotFound(
                request.argv.first().cloned().unwrap_or_default(),
            ));
        }
        let reason = match info {
            Some(info) => info.reason(&unit).await,
            None => format!("the start job ended with {result:?}"),
        };
        return Err(Error::StartFailed { reason, log_tail });
    }
    let pid = main_pid(conn, &unit).await.unwrap_or(0);
    Ok(Started {
        url: server_url(&request.ip, request.port),
        state: serde_json::json!({ "unit": unit, "pid": pid }),
    })
}

/// Start through the privileged helper, for a hub that is not root.
pub async fn start_via_helper(request: &SpawnRequest, config: &Config) -> Result<Started, Error> {
    let socket = &config.systemd_spawner.helper_socket;
    let call = crate::privileged::Request::StartUnit {
        request: Box::new(request.clone()),
    };
    match crate::privileged::call(socket, &call).await {
        Ok(crate::privileged::Response::Started { started }) => Ok(Started {
            url: started.url,
            state: started.state,
        }),
        Ok(crate::privileged::Response::Error { message }) => Err(Error::Refused(message)),
        Ok(other) => Err(Error::Refused(format!(
            "unexpected answer from the privileged helper: {other:?}"
        ))),
        Err(e) => Err(Error::Refused(format!("{e} (socket {})", socket.display()))),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading state

async fn unit_active_state(
    conn: &Connection,
    path: &zbus::OwnedObjectPath,
) -> Result<String, Error> {
    let unit = UnitProxy::builder(conn)
        .path(path.clone())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| systemd_error("unit proxy", e))?;
    timed("ActiveState", unit.active_state())
        .await?
        .map_err(|e| systemd_error("ActiveState", e))
}

async fn service_proxy<'a>(conn: &Connection, unit: &str) -> Result<ServiceProxy<'a>, Error> {
    ServiceProxy::builder(conn)
        .path(dbus::unit_object_path(unit))
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| systemd_error("service proxy", e))
}

async fn main_pid(conn: &Connection, unit: &str) -> Result<u32, Error> {
    let service = service_proxy(conn, unit).await?;
    timed("ExecMainPID", service.exec_main_pid())
        .await?
        .map_err(|e| systemd_error("ExecMainPID", e))
}

/// `ExecMainCode` values (`si_code` of the child's SIGCHLD).
const CLD_KILLED: i32 = 2;
const CLD_DUMPED: i32 = 3;

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
            // server was still killed by someone (`systemctl kill`, an admin, the user).
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
                if self.status == libc::SIGKILL && kernel_oom_killed(unit, self.started_usec).await
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
}

fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(s) => format!("{} ({signal})", s.as_str()),
        Err(_) => signal.to_string(),
    }
}

/// Whether the kernel log reports an OOM kill in `unit`'s cgroup since the unit's main
/// process started (pids are not compared: the kernel logs them as seen from the root pid
/// namespace). journald reads the kernel log on its own schedule, so a missing report is
/// looked for a few more times.
async fn kernel_oom_killed(unit: &str, since_usec: u64) -> bool {
    let memcg = "task_memcg=";
    let unit_memcg = format!("/{unit},");
    let since = format!("@{}", since_usec / 1_000_000);
    let args: Vec<&str> = if since_usec > 0 {
        vec!["-k", "--since", &since]
    } else {
        vec!["-k", "-n", "400"]
    };
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let Ok(lines) = run_journalctl(&args).await else {
            return false;
        };
        if lines.iter().any(|line| {
            line.starts_with("oom-kill:")
                && line
                    .split(memcg)
                    .nth(1)
                    .is_some_and(|rest| rest.contains(&unit_memcg))
        }) {
            return true;
        }
    }
    false
}

async fn run_journalctl(args: &[&str]) -> Result<Vec<String>, Error> {
    #[allow(clippy::disallowed_methods)] // reads the journal; no user input reaches argv unescaped
    let output = tokio::process::Command::new("journalctl")
        .args(["--no-pager", "-q", "-o", "cat"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output();
    let output = tokio::time::timeout(CALL_TIMEOUT, output)
        .await
        .map_err(|_| Error::Systemd("journalctl did not answer".into()))??;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// The last lines the unit logged (its output and systemd's messages about it).
pub async fn journal_tail(unit: &str) -> Vec<String> {
    journal_tail_since(unit, 0).await
}

/// As `journal_tail`, from `since_usec` (realtime µs, second granularity) on, so earlier runs
/// of the same unit are left out; 0 means no bound.
async fn journal_tail_since(unit: &str, since_usec: u64) -> Vec<String> {
    let n = LOG_TAIL_LINES.to_string();
    let since = format!("@{}", since_usec / 1_000_000);
    let mut args = vec!["-u", unit, "-n", &n];
    if since_usec > 0 {
        args.extend(["--since", &since]);
    }
    run_journalctl(&args).await.unwrap_or_default()
}

/// `None` when the unit is not loaded (never started, or garbage-collected).
async fn read_exit_info(conn: &Connection, unit: &str) -> Option<ExitInfo> {
    let service = service_proxy(conn, unit).await.ok()?;
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

// ---------------------------------------------------------------------------------------------
// The spawner

/// Runs each server as a transient unit of the system's systemd.
pub struct SystemdSpawner {
    conn: Connection,
    manager: ManagerProxy<'static>,
    config: Arc<Config>,
    exits: broadcast::Sender<Exited>,
    /// Units we stopped ourselves (until their next start): their deactivation is not
    /// announced as an exit.
    stopping: Arc<Mutex<HashSet<String>>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for SystemdSpawner {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl SystemdSpawner {
    /// Connect to the system bus, subscribe to systemd's signals and start watching units.
    pub async fn connect(config: Arc<Config>) -> Result<Self, Error> {
        let conn = Connection::system()
            .await
            .map_err(|e| systemd_error("connecting to the system bus", e))?;
        Self::with_connection(conn, config).await
    }

    /// As `connect`, over a connection the caller made.
    pub async fn with_connection(conn: Connection, config: Arc<Config>) -> Result<Self, Error> {
        for entry in &config.systemd_spawner.unit_extra_properties {
            parse_extra_property(entry)?;
        }
        let (exits, _) = broadcast::channel(256);
        let stopping = Arc::new(Mutex::new(HashSet::new()));
        let stream = watch_stream(&conn).await?;
        let manager = manager_proxy(&conn).await?;
        if let Err(e) = timed("Subscribe", manager.subscribe()).await?
            && !dbus::is_already_subscribed(&e)
        {
            return Err(systemd_error("Subscribe", e));
        }
        let watcher = tokio::spawn(watch_units(
            conn.clone(),
            stream,
            exits.clone(),
            stopping.clone(),
        ));
        Ok(SystemdSpawner {
            conn,
            manager,
            config,
            exits,
            stopping,
            watcher,
        })
    }

    /// The unit of a server (see the free function `unit_name`).
    pub fn unit_name(user: &str, server: &str) -> String {
        unit_name(user, server)
    }

    /// Every loaded `jupyter-*.service` with its active state, for reconciling at start-up.
    pub async fn list_units(&self) -> Result<Vec<(String, String)>, Error> {
        let manager = &self.manager;
        let pattern = format!("{UNIT_PREFIX}*{UNIT_SUFFIX}");
        let rows = timed(
            "ListUnitsByPatterns",
            manager.list_units_by_patterns(&[], &[&pattern]),
        )
        .await?
        .map_err(|e| systemd_error("ListUnitsByPatterns", e))?;
        Ok(rows.into_iter().map(|row| (row.0, row.3)).collect())
    }

    /// Live memory (bytes) and CPU time (ns) of a running unit; `None` when unknown.
    pub async fn usage(&self, unit: &str) -> Result<(Option<u64>, Option<u64>), Error> {
        let service = service_proxy(&self.conn, unit).await?;
        let known = |v: u64| (v != u64::MAX).then_some(v);
        let memory = timed("MemoryCurrent", service.memory_current())
            .await?
            .ok()
            .and_then(known);
        let cpu = timed("CPUUsageNSec", service.cpu_usage_nsec())
            .await?
            .ok()
            .and_then(known);
        Ok((memory, cpu))
    }

    fn unit_of(user: &str, server: &str, state: &serde_json::Value) -> String {
        state
            .get("unit")
            .and_then(|u| u.as_str())
            .filter(|u| parse_unit_name(u).is_some())
            .map(str::to_owned)
            .unwrap_or_else(|| unit_name(user, server))
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// After a unit stopped: forget it in systemd and remove its secret file if we can.
    async fn clean_up(&self, unit: &str) {
        let _ = timed("ResetFailedUnit", self.manager.reset_failed_unit(unit)).await;
        if Self::is_root() {
            let _ = std::fs::remove_file(env_file_path(&self.config.systemd_spawner, unit));
        }
    }
}

#[async_trait::async_trait]
impl Spawner for SystemdSpawner {
    fn name(&self) -> &'static str {
        "systemd"
    }

    fn supports_limits(&self) -> bool {
        true
    }

    async fn start(&self, request: &SpawnRequest) -> Result<Started, Error> {
        // A unit we stopped earlier is announced again once it runs anew.
        self.stopping
            .lock()
            .expect("stopping set poisoned")
            .remove(&unit_name(&request.user, &request.server_name));
        if Self::is_root() {
            start_unit(&self.conn, request, &self.config).await
        } else {
            start_via_helper(request, &self.config).await
        }
    }

    async fn poll(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
    ) -> Result<Status, Error> {
        let unit = Self::unit_of(user, server_name, state);
        let manager = &self.manager;
        let path = match timed("GetUnit", manager.get_unit(&unit)).await? {
            Ok(path) => path,
            Err(e) if dbus::is_no_such_unit(&e) => {
                return Ok(Status::Stopped {
                    reason: "the server is gone (exit status unknown)".into(),
                    log_tail: journal_tail(&unit).await,
                });
            }
            Err(e) => return Err(systemd_error("GetUnit", e)),
        };
        let state = unit_active_state(&self.conn, &path).await?;
        if !matches!(state.as_str(), "inactive" | "failed") {
            return Ok(Status::Running);
        }
        // A stub systemd loaded for a property read after the unit was collected has no PID:
        // it knows nothing about how the server ended.
        let info = read_exit_info(&self.conn, &unit)
            .await
            .filter(|info| info.pid != 0);
        let reason = match &info {
            Some(info) => info.reason(&unit).await,
            None => "the server is gone (exit status unknown)".into(),
        };
        let log_tail = journal_tail_since(&unit, info.map_or(0, |i| i.started_usec)).await;
        self.clean_up(&unit).await;
        Ok(Status::Stopped { reason, log_tail })
    }

    async fn stop(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
        now: bool,
    ) -> Result<(), Error> {
        let unit = Self::unit_of(user, server_name, state);
        let manager = &self.manager;
        self.stopping
            .lock()
            .expect("stopping set poisoned")
            .insert(unit.clone());
        let mut removed = manager
            .receive_job_removed()
            .await
            .map_err(|e| systemd_error("subscribing to JobRemoved", e))?;
        if now
            && let Err(e) =
                timed("KillUnit", manager.kill_unit(&unit, "all", libc::SIGKILL)).await?
            && !dbus::is_no_such_unit(&e)
        {
            tracing::warn!(%unit, "kill: {e}");
        }
        let job = match timed("StopUnit", manager.stop_unit(&unit, "replace")).await? {
            Ok(job) => job,
            Err(e) if dbus::is_no_such_unit(&e) => {
                self.clean_up(&unit).await;
                return Ok(());
            }
            Err(e) => return Err(systemd_error("StopUnit", e)),
        };
        // systemd itself sends SIGKILL after TimeoutStopSec; allow a margin beyond that.
        let wait = Duration::from_micros(STOP_TIMEOUT_USEC) + Duration::from_secs(15);
        let done = tokio::time::timeout(wait, async {
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
        self.clean_up(&unit).await;
        match done {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Systemd(
                "the D-Bus connection closed while stopping".into(),
            )),
            Err(_) => Err(Error::Systemd(format!("{unit} did not stop in time"))),
        }
    }

    fn subscribe_exits(&self) -> Option<broadcast::Receiver<Exited>> {
        Some(self.exits.subscribe())
    }

    /// Running `jupyter-*.service` units that none of `known` maps to: started by hand, left
    /// by a hub that died between starting a unit and recording it, or by another hub.
    async fn unknown_servers(&self, known: &[KnownServer]) -> Result<Vec<String>, Error> {
        let known: HashSet<String> = known
            .iter()
            .map(|(user, server, state)| Self::unit_of(user, server, state))
            .collect();
        let mut strays: Vec<String> = self
            .list_units()
            .await?
            .into_iter()
            .filter(|(unit, state)| {
                // A failed or inactive unit left loaded runs nothing: not worth a warning.
                matches!(state.as_str(), "active" | "activating" | "reloading")
                    && !known.contains(unit)
            })
            .map(|(unit, _)| unit)
            .collect();
        strays.sort();
        Ok(strays)
    }
}

// ---------------------------------------------------------------------------------------------
// Watching units

async fn watch_stream(conn: &Connection) -> Result<zbus::MessageStream, Error> {
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(dbus::DESTINATION)
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .path_namespace("/org/freedesktop/systemd1/unit")
        .build()
        .map_err(|e| systemd_error("match rule", e))?;
    zbus::MessageStream::for_match_rule(rule, conn, None)
        .await
        .map_err(|e| systemd_error("adding the match rule", e))
}

type Changed = (String, HashMap<String, OwnedVariant>, Vec<String>);

fn take<T: TryFrom<OwnedVariant>>(
    changed: &mut HashMap<String, OwnedVariant>,
    key: &str,
) -> Option<T> {
    changed.remove(key).and_then(|v| T::try_from(v).ok())
}

/// Announce every `jupyter-*` unit that becomes inactive or failed without our asking.
/// The Service properties arrive in their own signal just before the Unit one; they are kept,
/// because a unit may be garbage-collected before we could ask for them.
async fn watch_units(
    conn: Connection,
    mut stream: zbus::MessageStream,
    exits: broadcast::Sender<Exited>,
    stopping: Arc<Mutex<HashSet<String>>>,
) {
    let mut last: HashMap<String, ExitInfo> = HashMap::new();
    let mut ran: HashSet<String> = HashSet::new();
    while let Some(message) = stream.next().await {
        let Ok(message) = message else { continue };
        let header = message.header();
        let Some(unit) = header
            .path()
            .and_then(|p| dbus::unit_from_object_path(p.as_str()))
        else {
            continue;
        };
        let Some((user, server_name)) = parse_unit_name(&unit) else {
            continue;
        };
        let Ok((interface, mut changed, _)) = message.body().deserialize::<Changed>() else {
            continue;
        };
        match interface.as_str() {
            "org.freedesktop.systemd1.Service" => {
                let info = last.entry(unit).or_default();
                if let Some(v) = take(&mut changed, "Result") {
                    info.result = v;
                }
                if let Some(v) = take(&mut changed, "ExecMainCode") {
                    info.code = v;
                }
                if let Some(v) = take(&mut changed, "ExecMainStatus") {
                    info.status = v;
                }
                if let Some(v) = take::<u32>(&mut changed, "ExecMainPID")
                    && v != 0
                {
                    info.pid = v;
                }
                if let Some(v) = take::<u64>(&mut changed, "ExecMainStartTimestamp")
                    && v != 0
                {
                    info.started_usec = v;
                }
            }
            "org.freedesktop.systemd1.Unit" => {
                let Some(state) = take::<String>(&mut changed, "ActiveState") else {
                    continue;
                };
                if !matches!(state.as_str(), "inactive" | "failed") {
                    ran.insert(unit);
                    continue;
                }
                // A new transient unit is announced as `inactive` before it starts: only a
                // unit that has left `inactive` at least once has exited.
                let seen_running = ran.remove(&unit);
                let has_run = match take::<u64>(&mut changed, "InactiveExitTimestampMonotonic") {
                    Some(t) => t != 0,
                    None => seen_running,
                };
                if !has_run {
                    continue;
                }
                let ours = stopping
                    .lock()
                    .expect("stopping set poisoned")
                    .contains(&unit);
                let signalled = last.remove(&unit);
                if ours {
                    continue;
                }
                let info = match read_exit_info(&conn, &unit).await {
                    // Asked about a unit it already garbage-collected (a clean exit), systemd
                    // loads an empty stub (Result=success, no PID): then only the signals
                    // tell how the server ended.
                    Some(info) if !info.result.is_empty() && info.pid != 0 => info,
                    _ => signalled.unwrap_or_default(),
                };
                let reason = info.reason(&unit).await;
                let log_tail = journal_tail_since(&unit, info.started_usec).await;
                tracing::info!(%unit, %reason, "user server exited");
                let _ = exits.send(Exited {
                    user,
                    server_name,
                    reason,
                    log_tail,
                });
            }
            _ => {}
        }
    }
    tracing::warn!("the systemd signal stream ended; exits are noticed by polling only");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_round_trip_and_never_collide() {
        let cases = [
            ("alice", "", "jupyter-alice-singleuser.service"),
            (
                "alice",
                "singleuser",
                "jupyter-alice-\\x73ingleuser.service",
            ),
            ("alice", "lab", "jupyter-alice-lab.service"),
            ("a-b", "c", "jupyter-a\\x2db-c.service"),
            ("a", "b-c", "jupyter-a-b\\x2dc.service"),
            ("x@y.org", "", "jupyter-x\\x40y.org-singleuser.service"),
            (".dot", "", "jupyter-\\x2edot-singleuser.service"),
            ("jörg", "", "jupyter-j\\xc3\\xb6rg-singleuser.service"),
            ("a/b", "", "jupyter-a\\x2fb-singleuser.service"),
        ];
        for (user, server, unit) in cases {
            assert_eq!(unit_name(user, server), unit);
            assert_eq!(
                parse_unit_name(unit),
                Some((user.to_owned(), server.to_owned()))
            );
        }
        assert_ne!(unit_name("alice", ""), unit_name("alice", "singleuser"));
        assert_ne!(unit_name("a-b", "c"), unit_name("a", "b-c"));
        assert_eq!(parse_unit_name("jupyter-a-b-c.service"), None);
        assert_eq!(parse_unit_name("other.service"), None);
    }

    #[test]
    fn extra_properties() {
        let check = |entry: &str, name: &str, value: Variant<'static>| {
            let (n, v) = parse_extra_property(entry).expect("valid entry");
            assert_eq!(n, name);
            assert_eq!(v, value, "{entry}");
        };
        check("IOWeight=50", "IOWeight", Variant::from(50u64));
        check("PrivateNetwork=yes", "PrivateNetwork", Variant::from(true));
        check(
            "RuntimeMaxSec=1h 30min",
            "RuntimeMaxUSec",
            Variant::from(5_400_000_000u64),
        );
        check(
            "TimeoutStopSec=500ms",
            "TimeoutStopUSec",
            Variant::from(500_000u64),
        );
        check("MemoryHigh=1G", "MemoryHigh", Variant::from(1u64 << 30));
        check(
            "CPUQuota=150%",
            "CPUQuotaPerSecUSec",
            Variant::from(1_500_000u64),
        );
        check("Nice=-5", "Nice", Variant::from(-5i32));
        check("UMask=0077", "UMask", Variant::from(0o77u32));
        check(
            "ProtectSystem=strict",
            "ProtectSystem",
            Variant::from("strict"),
        );
        check(
            "InaccessiblePaths=/a /b",
            "InaccessiblePaths",
            Variant::from(vec!["/a".to_owned(), "/b".to_owned()]),
        );
        for bad in [
            "Bogus=1",
            "IOWeight=x",
            "PrivateNetwork=maybe",
            "noequals",
            "RuntimeMaxSec=3 fortnights",
            "CPUQuota=0%",
        ] {
            assert!(parse_extra_property(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_file_quoting_and_limits() {
        let request = SpawnRequest {
            user: "alice".into(),
            server_name: String::new(),
            system_user: "alice".into(),
            argv: vec!["jupyterhub-singleuser".into()],
            env: [("A".to_owned(), "x \"y\" $HOME `z` \\".to_owned())]
                .into_iter()
                .collect(),
            working_dir: None,
            ip: "127.0.0.1".into(),
            port: 1,
            limits: crate::spawner::LimitsSpec {
                mem_limit: Some(1024),
                ..Default::default()
            },
        };
        let contents = env_file_contents(&request, false).expect("valid env");
        assert_eq!(
            contents,
            "A=\"x \\\"y\\\" \\$HOME \\`z\\` \\\\\"\nMEM_LIMIT=\"1024\"\n"
        );
        let mut bad = request.clone();
        bad.env.insert("BAD NAME".into(), "1".into());
        assert!(env_file_contents(&bad, false).is_err());
    }

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
    fn limits_and_urls() {
        assert_eq!(cpu_weight(0.001), 1);
        assert_eq!(cpu_weight(1.5), 150);
        assert_eq!(cpu_weight(500.0), 10_000);
        assert_eq!(server_url("", 8888), "http://127.0.0.1:8888");
        assert_eq!(server_url("::1", 8888), "http://[::1]:8888");
        assert_eq!(server_url("10.0.0.2", 1), "http://10.0.0.2:1");
    }
}
