//! The `systemd` spawner: a user's server is a transient unit, started, watched and stopped
//! through the `systemd` layer. This file only maps "a user's server" to "a unit": its name,
//! its properties (limits, account, sandboxing) and its environment file.
//! Invariants: no secret ever goes into a unit property (the environment reaches the server
//! through a root-only `EnvironmentFiles=` file, removed when the unit stops), and a unit name
//! maps to exactly one (user, server) pair and back (see `unit_name`).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use super::{Error, Exited, KnownServer, SpawnRequest, Spawner, Started, Status};
use crate::config::{Config, SystemdSpawnerConfig};
use crate::privileged::protocol;
use crate::systemd::properties::{self, Property, prop};
use crate::systemd::unit::{
    EnvironmentFile, StartOutcome, StopOutcome, TransientUnit, escape_component, plain_name,
    unescape_component,
};
use crate::systemd::watch::Watch;
use crate::systemd::{self, Systemd, journal};

/// Every unit we create starts with this; reconcile lists `jupyter-*.service`.
pub const UNIT_PREFIX: &str = "jupyter-";
const UNIT_SUFFIX: &str = ".service";
/// The server part of the default server's unit name.
const DEFAULT_SERVER: &str = "singleuser";
/// How long systemd waits after SIGTERM before SIGKILL (`TimeoutStopSec=`).
const STOP_TIMEOUT_USEC: u64 = 15_000_000;
/// Journal lines kept with a stop reason.
const LOG_TAIL_LINES: usize = 20;

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

/// Where the environment file of `unit` lives (named by `plain_name`: systemd refuses an
/// `EnvironmentFiles=` path with the `\` of an escaped unit name).
pub fn env_file_path(config: &SystemdSpawnerConfig, unit: &str) -> PathBuf {
    config.env_dir.join(format!("{}.env", plain_name(unit)))
}

/// The environment of the server: the request's plus upstream's `MEM_LIMIT`-style variables
/// when the hub did not set them.
fn env_vars(request: &SpawnRequest, dynamic_users: bool) -> BTreeMap<String, String> {
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
    env
}

/// One `unit_extra_properties` entry in its typed form.
pub fn parse_extra_property(entry: &str) -> Result<Property, Error> {
    properties::parse(entry).map_err(|e| Error::Refused(format!("unit_extra_properties: {e}")))
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

/// The unit's properties, in order (later settings override earlier). The environment file's
/// own (`EnvironmentFiles=`, the `ExecStopPost=` that removes it) are added by the layer.
pub fn unit_properties(
    request: &SpawnRequest,
    config: &SystemdSpawnerConfig,
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
            .map_err(|e| {
                Error::Io(std::io::Error::other(format!(
                    "looking up {:?}: {e}",
                    request.system_user
                )))
            })?
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
    let systemd = Systemd::connect().await?;
    start_unit(&systemd, request, config).await
}

/// `start_unit_as_root` over an existing connection.
pub async fn start_unit(
    systemd: &Systemd,
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
    let mut properties = unit_properties(request, sd)?;
    // The profile's own unit settings come from this config (the helper's, when it starts
    // the unit), never from the request.
    if let Some(slug) = &request.profile {
        let profile = config
            .spawner
            .profile(slug)
            .ok_or_else(|| Error::Refused(format!("{slug:?} is not a profile of the config")))?;
        for entry in &profile.unit_extra_properties {
            properties.push(parse_extra_property(entry)?);
        }
    }
    let transient = TransientUnit {
        properties,
        environment: Some(EnvironmentFile {
            path: env_file_path(sd, &unit),
            vars: env_vars(request, sd.dynamic_users),
            keep_across_restarts: false,
        }),
    };
    let start_timeout = Duration::from_secs(config.spawner.start_timeout.max(1));
    match systemd
        .start_transient(&unit, transient, start_timeout)
        .await?
    {
        StartOutcome::Started { main_pid } => Ok(Started {
            url: server_url(&request.ip, request.port),
            state: serde_json::json!({ "unit": unit, "pid": main_pid }),
        }),
        StartOutcome::AlreadyRunning => Err(Error::StartFailed {
            reason: format!("{unit} is already running"),
            log_tail: Vec::new(),
        }),
        StartOutcome::TimedOut => Err(Error::StartFailed {
            reason: "timed out starting the server".into(),
            log_tail: journal::tail(&unit, LOG_TAIL_LINES, 0).await,
        }),
        StartOutcome::Failed { job_result, exit } => {
            let log_tail = journal::tail(&unit, LOG_TAIL_LINES, 0).await;
            if exit.as_ref().is_some_and(|i| i.is_exec_failure()) {
                return Err(Error::CommandNotFound(
                    request.argv.first().cloned().unwrap_or_default(),
                ));
            }
            let reason = match exit {
                Some(info) => info.reason(&unit).await,
                None => format!("the start job ended with {job_result:?}"),
            };
            Err(Error::StartFailed { reason, log_tail })
        }
    }
}

/// Start through the privileged helper, for a hub that is not root.
pub async fn start_via_helper(request: &SpawnRequest, config: &Config) -> Result<Started, Error> {
    let socket = &config.systemd_spawner.helper_socket;
    let call = protocol::Request::StartUnit {
        request: Box::new(request.clone()),
    };
    match protocol::call(socket, &call).await {
        Ok(protocol::Response::Started { started }) => Ok(Started {
            url: started.url,
            state: started.state,
        }),
        Ok(protocol::Response::Error { message }) => Err(Error::Refused(message)),
        Ok(other) => Err(Error::Refused(format!(
            "unexpected answer from the privileged helper: {other:?}"
        ))),
        Err(e) => Err(Error::Refused(format!("{e} (socket {})", socket.display()))),
    }
}

// ---------------------------------------------------------------------------------------------
// The spawner

/// Runs each server as a transient unit of the system's systemd.
pub struct SystemdSpawner {
    systemd: Systemd,
    config: Arc<Config>,
    exits: broadcast::Sender<Exited>,
    /// Units we stopped ourselves (until their next start): their deactivation is not
    /// announced as an exit.
    stopping: Arc<Mutex<HashSet<String>>>,
    /// Units the hub was told run (started, or polled as running): checked again after the
    /// signal stream was lost, so an exit in between is still announced.
    running: Arc<Mutex<HashSet<String>>>,
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
        Self::with_systemd(Systemd::connect().await?, config).await
    }

    /// As `connect`, over a connection the caller made.
    pub async fn with_systemd(systemd: Systemd, config: Arc<Config>) -> Result<Self, Error> {
        for entry in config.systemd_spawner.unit_extra_properties.iter().chain(
            config
                .spawner
                .profiles
                .iter()
                .flat_map(|p| &p.unit_extra_properties),
        ) {
            parse_extra_property(entry)?;
        }
        let (exits, _) = broadcast::channel(256);
        let stopping = Arc::new(Mutex::new(HashSet::new()));
        let running = Arc::new(Mutex::new(HashSet::new()));
        // The match rule first, then Subscribe, so no signal falls between them.
        let watch = systemd
            .watch(|unit| parse_unit_name(unit).is_some())
            .await?;
        systemd.subscribe().await?;
        let watcher = tokio::spawn(watch_units(
            systemd.clone(),
            watch,
            exits.clone(),
            stopping.clone(),
            running.clone(),
        ));
        Ok(SystemdSpawner {
            systemd,
            config,
            exits,
            stopping,
            running,
            watcher,
        })
    }

    /// The unit of a server (see the free function `unit_name`).
    pub fn unit_name(user: &str, server: &str) -> String {
        unit_name(user, server)
    }

    /// Every loaded `jupyter-*.service` with its active state, for reconciling at start-up.
    pub async fn list_units(&self) -> Result<Vec<(String, String)>, Error> {
        let pattern = format!("{UNIT_PREFIX}*{UNIT_SUFFIX}");
        let units = self.systemd.list_units(&[&pattern]).await?;
        Ok(units
            .into_iter()
            .map(|u| (u.name, u.active_state))
            .collect())
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
        let _ = self.systemd.reset_failed(unit).await;
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
        let started = if Self::is_root() {
            start_unit(&self.systemd, request, &self.config).await
        } else {
            start_via_helper(request, &self.config).await
        }?;
        lock(&self.running).insert(unit_name(&request.user, &request.server_name));
        Ok(started)
    }

    async fn poll(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
    ) -> Result<Status, Error> {
        let unit = Self::unit_of(user, server_name, state);
        let Some(state) = self.systemd.unit_state(&unit).await? else {
            return Ok(Status::Stopped {
                reason: "the server is gone (exit status unknown)".into(),
                log_tail: journal::tail(&unit, LOG_TAIL_LINES, 0).await,
            });
        };
        if !matches!(state.as_str(), "inactive" | "failed") {
            lock(&self.running).insert(unit);
            return Ok(Status::Running);
        }
        lock(&self.running).remove(&unit);
        // A stub systemd loaded for a property read after the unit was collected has no PID:
        // it knows nothing about how the server ended.
        let info = self
            .systemd
            .exit_info(&unit)
            .await
            .filter(|info| info.pid != 0);
        let reason = match &info {
            Some(info) => info.reason(&unit).await,
            None => "the server is gone (exit status unknown)".into(),
        };
        let since = info.map_or(0, |i| i.started_usec);
        let log_tail = journal::tail(&unit, LOG_TAIL_LINES, since).await;
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
        lock(&self.running).remove(&unit);
        self.stopping
            .lock()
            .expect("stopping set poisoned")
            .insert(unit.clone());
        if now {
            match self.systemd.kill(&unit, "all", libc::SIGKILL).await {
                Ok(()) => {}
                Err(e @ systemd::Error::NoAnswer(_)) => return Err(e.into()),
                Err(e) => tracing::warn!(%unit, "kill: {e}"),
            }
        }
        // systemd itself sends SIGKILL after TimeoutStopSec; allow a margin beyond that.
        let wait = Duration::from_micros(STOP_TIMEOUT_USEC) + Duration::from_secs(15);
        match self.systemd.stop(&unit, wait).await {
            Ok(StopOutcome::Stopped | StopOutcome::NotLoaded) => {
                self.clean_up(&unit).await;
                Ok(())
            }
            // The stop was asked for: whatever happens next, the unit is on its way out.
            Err(e @ (systemd::Error::Closed(_) | systemd::Error::StopTimedOut(_))) => {
                self.clean_up(&unit).await;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn subscribe_exits(&self) -> Option<broadcast::Receiver<Exited>> {
        Some(self.exits.subscribe())
    }

    /// `FreezeUnit`: the cgroup freezer (cgroup v2 only; systemd says so otherwise).
    async fn freeze(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
    ) -> Result<(), Error> {
        let unit = Self::unit_of(user, server_name, state);
        Ok(self.systemd.freeze(&unit).await?)
    }

    async fn thaw(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
    ) -> Result<(), Error> {
        let unit = Self::unit_of(user, server_name, state);
        if Self::is_root() {
            return Ok(self.systemd.thaw(&unit).await?);
        }
        // Freezing is a "stop" to polkit (granted), thawing a "start" (only the helper).
        let socket = &self.config.systemd_spawner.helper_socket;
        match protocol::call(socket, &protocol::Request::ThawUnit { unit }).await {
            Ok(protocol::Response::Thawed) => Ok(()),
            Ok(protocol::Response::Error { message }) => Err(Error::Refused(message)),
            Ok(other) => Err(Error::Refused(format!(
                "unexpected answer from the privileged helper: {other:?}"
            ))),
            Err(e) => Err(Error::Refused(format!("{e} (socket {})", socket.display()))),
        }
    }

    /// `MemoryCurrent` and `CPUUsageNSec` of the unit (readable by anyone on the bus).
    async fn usage(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
    ) -> Result<super::Usage, Error> {
        let unit = Self::unit_of(user, server_name, state);
        let usage = self.systemd.usage(&unit).await?;
        Ok(super::Usage {
            memory_bytes: usage.memory_bytes,
            cpu_nsec: usage.cpu_nsec,
        })
    }

    async fn log(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
        lines: usize,
    ) -> Result<Option<Vec<String>>, Error> {
        let unit = Self::unit_of(user, server_name, state);
        Ok(Some(journal::tail(&unit, lines, 0).await))
    }

    fn follow_log(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
        lines: usize,
    ) -> Result<Option<super::LogStream>, Error> {
        let unit = Self::unit_of(user, server_name, state);
        Ok(Some(Box::pin(journal::follow(&unit, lines)?)))
    }

    async fn total_usage(&self) -> Result<Option<super::TotalUsage>, Error> {
        let slice = &self.config.systemd_spawner.slice;
        let usage = self.systemd.slice_usage(slice).await?;
        Ok(Some(super::TotalUsage {
            group: slice.clone(),
            memory_bytes: usage.memory_bytes,
            cpu_nsec: usage.cpu_nsec,
            memory_max: usage.memory_max,
        }))
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

    fn server_of(&self, name: &str) -> Option<(String, String)> {
        parse_unit_name(name)
    }
}

/// Announce every `jupyter-*` unit that becomes inactive or failed without our asking.
/// A unit state that is not (yet, or any more) down.
fn is_up(state: &str) -> bool {
    !matches!(state, "inactive" | "failed")
}

fn lock(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

async fn watch_units(
    systemd: Systemd,
    mut watch: Watch,
    exits: broadcast::Sender<Exited>,
    stopping: Arc<Mutex<HashSet<String>>>,
    running: Arc<Mutex<HashSet<String>>>,
) {
    loop {
        while let Some(exit) = watch.next_exit().await {
            let unit = exit.unit.clone();
            if lock(&stopping).contains(&unit) {
                lock(&running).remove(&unit);
                continue;
            }
            // Checked beside the watch: while systemd re-executes, a call can go unanswered
            // for a while, and the signals must go on being read meanwhile.
            tokio::spawn(confirm_exit(
                systemd.clone(),
                exit,
                exits.clone(),
                running.clone(),
            ));
        }
        // The stream ends when the bus connection closes (dbus-daemon restarted or killed):
        // watch again over a new connection, then look at what exited in between.
        tracing::warn!(
            closed = systemd.is_closed(),
            "the systemd signal stream ended; watching again over a new bus connection"
        );
        watch = rewatch(&systemd).await;
        tracing::warn!("watching systemd's units again after the bus connection was lost");
        let known: Vec<String> = lock(&running).iter().cloned().collect();
        for unit in known {
            let state = match systemd.unit_state(&unit).await {
                Ok(state) => state,
                // Not known either way: the periodic poll is left to decide.
                Err(_) => continue,
            };
            if state.as_deref().is_some_and(is_up) {
                continue;
            }
            lock(&running).remove(&unit);
            if lock(&stopping).contains(&unit) {
                continue;
            }
            let info = systemd.exit_info(&unit).await.unwrap_or_default();
            announce_exit(&exits, &unit, &info).await;
        }
    }
}

/// An exit from the signals is believed only once systemd says the unit is down: around
/// `daemon-reload` and `daemon-reexec` exits were seen announced for units still running.
/// Asked again (every second, for a minute) while systemd does not answer; undecided, it is
/// left to the periodic poll.
async fn confirm_exit(
    systemd: Systemd,
    exit: systemd::watch::UnitExit,
    exits: broadcast::Sender<Exited>,
    running: Arc<Mutex<HashSet<String>>>,
) {
    let unit = exit.unit.clone();
    // A re-executed systemd may answer before it has loaded its units again ("no such
    // unit"), so a unit must be seen down twice, a second apart.
    let mut seen_down = false;
    for _ in 0..60 {
        match tokio::time::timeout(Duration::from_secs(3), systemd.unit_state(&unit)).await {
            Ok(Ok(Some(state))) if is_up(&state) => {
                tracing::debug!(%unit, %state, "a unit announced as stopped still runs");
                return;
            }
            Ok(Ok(_)) if seen_down => {
                lock(&running).remove(&unit);
                let info = systemd.exit_info_of(exit).await;
                announce_exit(&exits, &unit, &info).await;
                return;
            }
            Ok(Ok(_)) => seen_down = true,
            Ok(Err(_)) | Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tracing::warn!(%unit, "systemd does not say whether this unit still runs");
}

/// A new `watch` and `Subscribe`, retried (100 ms doubling to 5 s) until the bus answers.
async fn rewatch(systemd: &Systemd) -> Watch {
    let mut wait = Duration::from_millis(100);
    loop {
        let watched = async {
            let watch = systemd
                .watch(|unit| parse_unit_name(unit).is_some())
                .await?;
            systemd.subscribe().await?;
            Ok::<_, systemd::Error>(watch)
        };
        match watched.await {
            Ok(watch) => return watch,
            Err(e) => tracing::debug!(error = %e, "cannot watch units yet"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

async fn announce_exit(exits: &broadcast::Sender<Exited>, unit: &str, info: &systemd::ExitInfo) {
    let Some((user, server_name)) = parse_unit_name(unit) else {
        return;
    };
    let reason = info.reason(unit).await;
    let log_tail = journal::tail(unit, LOG_TAIL_LINES, info.started_usec).await;
    tracing::info!(%unit, %reason, "user server exited");
    let _ = exits.send(Exited {
        user,
        server_name,
        reason,
        log_tail,
    });
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
            groups: Vec::new(),
            profile: None,
        };
        let contents = |request: &SpawnRequest| {
            crate::systemd::unit::environment_file_contents(&env_vars(request, false))
        };
        assert_eq!(
            contents(&request).expect("valid env"),
            "A=\"x \\\"y\\\" \\$HOME \\`z\\` \\\\\"\nMEM_LIMIT=\"1024\"\n"
        );
        let mut bad = request.clone();
        bad.env.insert("BAD NAME".into(), "1".into());
        assert!(contents(&bad).is_err());
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
