//! Managed services (upstream's `Service` with a `command`): what runs (`Launch`, built from
//! the config entry and the hub's variables, by the hub and again by the privileged helper)
//! and the `Supervisor` that keeps each one running: a transient unit under systemd
//! (`services/unit.rs`), a child process of the hub otherwise. It knows no `Hub`: the hub
//! hands it the launches it wants and reads back pids and failures.

pub mod unit;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::config::{Config, ServiceConfig};
use crate::spawner::local::LocalSpawner;
use crate::spawner::{self, LimitsSpec, SpawnRequest, Spawner, Status};
use crate::systemd::Systemd;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not a managed service of the config")]
    Unknown(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{reason}")]
    StartFailed {
        reason: String,
        log_tail: Vec<String>,
    },
    #[error("systemd: {0}")]
    Systemd(#[from] crate::systemd::Error),
    #[error(transparent)]
    Spawner(#[from] spawner::Error),
}

pub use crate::config::{valid_env_name, valid_service_name as valid_name};

/// The variables the hub itself gives a service (upstream's `get_env` set); the helper takes
/// no other key from the hub.
pub fn hub_variable(key: &str) -> bool {
    key.starts_with("JUPYTERHUB_") || key == "JPY_API_TOKEN"
}

/// Everything about one run of a managed service. Secrets live only in `hub_env`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Launch {
    pub name: String,
    pub argv: Vec<String>,
    /// What the hub sets (`JUPYTERHUB_*`, and in local mode `Spawner.env_keep`).
    pub hub_env: BTreeMap<String, String>,
    /// The config's `environment`, applied last as upstream does.
    pub environment: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// The account; `None` is a dynamic user under systemd (the hub's own account, or
    /// `nobody` for a root hub, in local mode).
    pub user: Option<String>,
    pub limits: LimitsSpec,
    pub extra_properties: Vec<String>,
}

impl Launch {
    /// The config entry of a managed service, run with `hub_env`.
    pub fn new(
        service: &ServiceConfig,
        hub_env: BTreeMap<String, String>,
    ) -> Result<Launch, Error> {
        if !service.managed() {
            return Err(Error::Unknown(service.name.clone()));
        }
        Ok(Launch {
            name: service.name.clone(),
            argv: service.command.clone(),
            hub_env,
            environment: service.environment.clone(),
            cwd: service.cwd.clone(),
            user: service.user.clone().filter(|u| !u.is_empty()),
            limits: LimitsSpec {
                mem_limit: service.mem_limit.map(|b| b.0),
                cpu_limit: service.cpu_limit.map(|c| c.0),
                ..LimitsSpec::default()
            },
            extra_properties: service.unit_extra_properties.clone(),
        })
    }

    /// The process's whole environment.
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env = self.hub_env.clone();
        env.extend(self.environment.clone());
        env
    }

    /// Names this launch without revealing it: a changed command, environment, account or
    /// token gives another fingerprint, so a unit left running is adopted only when unchanged.
    pub fn fingerprint(&self, key: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
        mac.update(&serde_json::to_vec(self).unwrap_or_default());
        hex::encode(&mac.finalize().into_bytes()[..12])
    }
}

/// Why a managed service is not running, for people and `GET /hub/api/services/NAME`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    pub reason: String,
    pub log_tail: Vec<String>,
    /// When it was noticed (the database's microseconds).
    pub time: i64,
}

/// What the supervisor knows of one service.
#[derive(Debug, Clone, Default)]
struct Live {
    fingerprint: String,
    pid: u32,
    /// The local child's state, as `LocalSpawner` returns it.
    state: serde_json::Value,
    running: bool,
    failure: Option<Failure>,
    /// Consecutive failed runs, for the back-off.
    failures: u32,
    /// Failed runs since the hub started (each followed by a start of the hub's own).
    failed_runs: u32,
    started: Option<Instant>,
    retry_at: Option<Instant>,
}

impl Live {
    /// A failed start or an exit: not running, and the next start after the back-off.
    fn failed(&mut self, reason: String, log_tail: Vec<String>) {
        self.running = false;
        self.pid = 0;
        self.failures += 1;
        self.failed_runs += 1;
        self.retry_at = Some(Instant::now() + backoff(self.failures));
        self.failure = Some(Failure {
            reason,
            log_tail,
            time: crate::time::now(),
        });
    }
}

enum Runner {
    Local(LocalSpawner),
    Systemd {
        systemd: Systemd,
        config: Arc<Config>,
    },
}

/// Keeps the hub's managed services running.
pub struct Supervisor {
    runner: Runner,
    live: Mutex<BTreeMap<String, Live>>,
}

/// The wait before the next start after `failures` failed runs: 1 s, doubling to 128 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.clamp(1, 8).saturating_sub(1))
}

/// A run that lasted this long was a success: the back-off starts again from the beginning.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

impl Supervisor {
    /// Services as child processes; `setuid` as for `LocalSpawner` (false in `--dev`).
    pub fn local(setuid: bool) -> Supervisor {
        let spawner = if setuid {
            LocalSpawner::new()
        } else {
            LocalSpawner::without_setuid()
        };
        Supervisor {
            runner: Runner::Local(spawner),
            live: Mutex::new(BTreeMap::new()),
        }
    }

    /// Services as transient units of the system's systemd, over a connection of their own.
    pub async fn connect_systemd(config: Arc<Config>) -> Result<Supervisor, crate::systemd::Error> {
        let systemd = Systemd::connect().await?;
        Ok(Supervisor {
            runner: Runner::Systemd { systemd, config },
            live: Mutex::new(BTreeMap::new()),
        })
    }

    /// Whether services run as units (and so outlive the hub).
    pub fn is_systemd(&self) -> bool {
        matches!(self.runner, Runner::Systemd { .. })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live main pid of a service; 0 when it does not run (upstream's `pid`).
    pub fn pid(&self, name: &str) -> u32 {
        self.live()
            .get(name)
            .filter(|l| l.running)
            .map_or(0, |l| l.pid)
    }

    /// The main pid as systemd knows it now: a unit systemd restarted by itself has a new one
    /// before the next round of `check` notices. For child processes, `pid`.
    pub async fn current_pid(&self, name: &str) -> u32 {
        match &self.runner {
            Runner::Systemd { systemd, .. } => systemd
                .service_property::<u32>(&unit::unit_name(name), "MainPID")
                .await
                .unwrap_or_else(|_| self.pid(name)),
            Runner::Local(_) => self.pid(name),
        }
    }

    /// Why the service last stopped or failed to start, if it did.
    pub fn failure(&self, name: &str) -> Option<Failure> {
        self.live().get(name).and_then(|l| l.failure.clone())
    }

    /// How often the service was started again after failing: by the hub since it started,
    /// plus systemd's own restarts of the current unit (`NRestarts`).
    pub async fn restarts(&self, name: &str) -> u32 {
        let ours = self.live().get(name).map_or(0, |l| l.failed_runs);
        let theirs = match &self.runner {
            Runner::Systemd { systemd, .. } => systemd
                .service_property::<u32>(&unit::unit_name(name), "NRestarts")
                .await
                .unwrap_or(0),
            Runner::Local(_) => 0,
        };
        ours + theirs
    }

    /// The unit whose journal holds the service's output; `None` for child processes (their
    /// output is in the hub's log).
    pub fn log_unit(&self, name: &str) -> Option<String> {
        match &self.runner {
            Runner::Systemd { .. } => Some(unit::unit_name(name)),
            Runner::Local(_) => None,
        }
    }

    /// At start-up: adopt what runs unchanged, restart what changed, stop units of services
    /// the config no longer has, start the rest. `key` signs fingerprints.
    pub async fn start_all(&self, wanted: &[Launch], key: &[u8]) {
        if let Runner::Systemd { systemd, .. } = &self.runner {
            let running = match unit::list(systemd).await {
                Ok(running) => running,
                Err(e) => {
                    tracing::error!(error = %e, "could not list the services' units");
                    Vec::new()
                }
            };
            for listed in &running {
                let wanted_here = wanted.iter().find(|l| l.name == listed.service);
                let fingerprint = wanted_here.map(|l| l.fingerprint(key));
                let active = listed.active_state == "active";
                match (wanted_here, fingerprint) {
                    (Some(launch), Some(fp)) if active && listed.fingerprint == fp => {
                        let pid = systemd.main_pid(&listed.unit).await.unwrap_or(0);
                        tracing::info!(service = %launch.name, pid, unit = %listed.unit, "adopted the running service");
                        self.live().insert(
                            launch.name.clone(),
                            Live {
                                fingerprint: fp,
                                pid,
                                running: true,
                                started: Some(Instant::now()),
                                ..Live::default()
                            },
                        );
                    }
                    (Some(_), _) => {
                        tracing::info!(service = %listed.service, unit = %listed.unit, state = %listed.active_state, "the service's unit is not running or its config changed: starting it anew");
                        unit::stop(systemd, &listed.unit).await;
                    }
                    (None, _) => {
                        tracing::info!(service = %listed.service, unit = %listed.unit, "the service is no longer configured: stopping it");
                        unit::stop(systemd, &listed.unit).await;
                    }
                }
            }
        }
        for launch in wanted {
            let adopted = self.live().get(&launch.name).is_some_and(|l| l.running);
            if !adopted {
                self.start_one(launch, key).await;
            }
        }
    }

    async fn start_one(&self, launch: &Launch, key: &[u8]) {
        let fingerprint = launch.fingerprint(key);
        tracing::info!(service = %launch.name, command = ?launch.argv, "starting managed service");
        let result = match &self.runner {
            Runner::Local(spawner) => spawner
                .start(&local_request(launch))
                .await
                .map(|started| {
                    let pid = started
                        .state
                        .get("pid")
                        .and_then(|p| p.as_u64())
                        .unwrap_or(0) as u32;
                    (pid, started.state)
                })
                .map_err(Error::from),
            Runner::Systemd { systemd, config } => {
                unit::start(systemd, config, launch, &fingerprint)
                    .await
                    .map(|pid| (pid, serde_json::Value::Null))
            }
        };
        let mut live = self.live();
        let entry = live.entry(launch.name.clone()).or_default();
        entry.fingerprint = fingerprint;
        match result {
            Ok((pid, state)) => {
                entry.pid = pid;
                entry.state = state;
                entry.running = true;
                entry.started = Some(Instant::now());
                entry.retry_at = None;
            }
            Err(e) => {
                let (reason, log_tail) = match e {
                    Error::StartFailed { reason, log_tail } => (reason, log_tail),
                    Error::Spawner(spawner::Error::StartFailed { reason, log_tail }) => {
                        (reason, log_tail)
                    }
                    other => (other.to_string(), Vec::new()),
                };
                tracing::error!(service = %launch.name, %reason, log = ?log_tail, "the managed service failed to start");
                entry.failed(reason, log_tail);
            }
        }
    }

    /// One round of supervision: notice services that stopped (recording why) and start
    /// again those whose back-off has passed. systemd restarts a failing unit by itself a
    /// few times; this covers what it gave up on, and child processes.
    pub async fn check(&self, wanted: &[Launch], key: &[u8]) {
        for launch in wanted {
            let snapshot = self.live().get(&launch.name).cloned().unwrap_or_default();
            if snapshot.running {
                let stopped = match &self.runner {
                    Runner::Local(spawner) => {
                        match spawner.poll("", &launch.name, &snapshot.state).await {
                            Ok(Status::Running) => None,
                            Ok(Status::Stopped { reason, log_tail }) => Some((reason, log_tail)),
                            Err(e) => Some((e.to_string(), Vec::new())),
                        }
                    }
                    Runner::Systemd { systemd, .. } => {
                        match unit::poll(systemd, &launch.name).await {
                            Ok(unit::Polled::Running { pid }) => {
                                if let Some(l) = self.live().get_mut(&launch.name) {
                                    l.pid = pid;
                                }
                                None
                            }
                            Ok(unit::Polled::Stopped { reason, log_tail }) => {
                                Some((reason, log_tail))
                            }
                            Err(e) => {
                                tracing::warn!(service = %launch.name, error = %e, "could not poll the service");
                                None
                            }
                        }
                    }
                };
                let mut live = self.live();
                let entry = live.entry(launch.name.clone()).or_default();
                match stopped {
                    None => {
                        if entry.started.is_some_and(|t| t.elapsed() >= HEALTHY_AFTER) {
                            entry.failures = 0;
                        }
                    }
                    Some((reason, log_tail)) => {
                        tracing::error!(service = %launch.name, %reason, log = ?log_tail, "the managed service stopped; starting it again");
                        if entry.started.is_some_and(|t| t.elapsed() >= HEALTHY_AFTER) {
                            entry.failures = 0;
                        }
                        entry.failed(reason, log_tail);
                    }
                }
            }
            let due = {
                let live = self.live();
                live.get(&launch.name)
                    .is_none_or(|l| !l.running && l.retry_at.is_none_or(|at| Instant::now() >= at))
            };
            if due {
                self.start_one(launch, key).await;
            }
        }
    }

    /// Child processes end with the hub (as upstream's); units are left running.
    pub async fn shutdown(&self) {
        let Runner::Local(spawner) = &self.runner else {
            return;
        };
        let running: Vec<(String, serde_json::Value)> = self
            .live()
            .iter()
            .filter(|(_, l)| l.running)
            .map(|(name, l)| (name.clone(), l.state.clone()))
            .collect();
        for (name, state) in running {
            tracing::info!(service = %name, "stopping managed service");
            if let Err(e) = spawner.stop("", &name, &state, false).await {
                tracing::warn!(service = %name, error = %e, "could not stop the service");
            }
            if let Some(l) = self.live().get_mut(&name) {
                l.running = false;
                l.pid = 0;
            }
        }
    }
}

/// A local child's request: the service's account, or `nobody` for a root hub (upstream
/// would run it as root; a service needs no privilege to talk to the hub's API).
fn local_request(launch: &Launch) -> SpawnRequest {
    // `nobody`'s home does not exist: without a `cwd` it runs in `/`.
    let working_dir = match (&launch.cwd, &launch.user) {
        (Some(cwd), _) => Some(cwd.into()),
        (None, None) if nix::unistd::geteuid().is_root() => Some("/".into()),
        (None, _) => None,
    };
    SpawnRequest {
        user: String::new(),
        server_name: launch.name.clone(),
        system_user: launch.user.clone().unwrap_or_else(|| "nobody".into()),
        argv: launch.argv.clone(),
        env: launch.env(),
        working_dir,
        ip: String::new(),
        port: 0,
        limits: LimitsSpec::default(),
        groups: Vec::new(),
        profile: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_variables() {
        assert!(valid_name("idle-culler"));
        assert!(valid_name("a.b_c"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
        assert!(hub_variable("JUPYTERHUB_API_TOKEN"));
        assert!(hub_variable("JPY_API_TOKEN"));
        assert!(!hub_variable("LD_PRELOAD"));
    }

    #[test]
    fn backoff_doubles_to_two_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(50), Duration::from_secs(128));
    }

    #[test]
    fn environment_comes_last_and_changes_the_fingerprint() {
        let service = ServiceConfig {
            name: "s".into(),
            command: vec!["run".into()],
            environment: BTreeMap::from([("JUPYTERHUB_API_URL".into(), "mine".into())]),
            ..ServiceConfig::default()
        };
        let hub_env = BTreeMap::from([("JUPYTERHUB_API_URL".to_string(), "hub".to_string())]);
        let launch = Launch::new(&service, hub_env.clone()).expect("managed");
        assert_eq!(launch.env()["JUPYTERHUB_API_URL"], "mine");
        let mut other = launch.clone();
        other.argv.push("--x".into());
        assert_ne!(launch.fingerprint(b"k"), other.fingerprint(b"k"));
        assert_eq!(launch.fingerprint(b"k"), launch.clone().fingerprint(b"k"));
        assert_ne!(launch.fingerprint(b"k"), launch.fingerprint(b"other key"));
        let unmanaged = ServiceConfig {
            name: "u".into(),
            ..ServiceConfig::default()
        };
        assert!(matches!(
            Launch::new(&unmanaged, hub_env),
            Err(Error::Unknown(_))
        ));
    }
}
