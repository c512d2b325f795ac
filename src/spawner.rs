//! The `Spawner` contract: start a user's server from a fully prepared `SpawnRequest`, poll
//! it, stop it. The hub decides everything (port, environment, limits); a spawner only
//! carries it out, so spawners stay small and the privileged helper can re-check requests.

pub mod local;
pub mod systemd;
pub mod user_env;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Limits;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "system user {0:?} does not exist: an admin can create the account (useradd -m {0}), \
         or run the hub with --dev, where servers run as the hub's own account"
    )]
    NoSuchSystemUser(String),
    #[error("the server failed to start: {reason}")]
    StartFailed {
        reason: String,
        log_tail: Vec<String>,
    },
    #[error(
        "the server command was not found: {0}: an admin can create the single-user \
         environment (jupyterhub setup-user-env) or set [Spawner] cmd"
    )]
    CommandNotFound(String),
    #[error("the single-user environment could not be created: {0}")]
    UserEnv(String),
    #[error("refused: {0}")]
    Refused(String),
    /// This spawner, or this host, cannot freeze servers; the words say why.
    #[error("freezing is not supported: {0}")]
    FreezeUnsupported(String),
    #[error("systemd: {0}")]
    Systemd(crate::systemd::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<crate::systemd::Error> for Error {
    fn from(error: crate::systemd::Error) -> Self {
        use crate::systemd::Error as E;
        match error {
            // Writing the environment file: the same I/O error a local spawner reports.
            E::Io(e) => Error::Io(e),
            // The hub asked for an environment no unit can carry.
            e @ E::InvalidEnvironment(_) => Error::Refused(e.to_string()),
            e @ E::Unsupported { .. } => Error::FreezeUnsupported(e.to_string()),
            e => Error::Systemd(e),
        }
    }
}

/// Everything needed to start one server. Built by the hub; secrets live only in `env`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpawnRequest {
    /// Hub user name (what upstream calls `user.name`).
    pub user: String,
    /// Server name; empty for the default server.
    pub server_name: String,
    /// System account to run as (the user name after mapping), unless `dynamic_users`.
    pub system_user: String,
    /// argv: `Spawner.cmd + Spawner.args`.
    pub argv: Vec<String>,
    /// The full environment (includes `JUPYTERHUB_API_TOKEN`: never put it in argv or unit
    /// properties).
    pub env: BTreeMap<String, String>,
    /// Working directory; `None` means the user's home.
    pub working_dir: Option<PathBuf>,
    /// The IP and port the server must listen on (also inside `JUPYTERHUB_SERVICE_URL`).
    pub ip: String,
    pub port: u16,
    pub limits: LimitsSpec,
    /// The user's groups that have `group_limits`: the privileged helper recomputes the
    /// limits from its own config for exactly these (a hub can name no group the config
    /// does not give limits, and no limit the config does not give those groups).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The `[[Spawner.profiles]]` slug the server runs with; the helper takes its command,
    /// limits and unit properties from its own config.
    #[serde(default)]
    pub profile: Option<String>,
}

/// Limits in the units systemd and cgroups use.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LimitsSpec {
    pub mem_limit: Option<u64>,
    pub mem_guarantee: Option<u64>,
    pub cpu_limit: Option<f64>,
    pub cpu_guarantee: Option<f64>,
    pub tasks_max: Option<u64>,
}

impl From<&Limits> for LimitsSpec {
    fn from(limits: &Limits) -> Self {
        LimitsSpec {
            mem_limit: limits.mem_limit.map(|b| b.0),
            mem_guarantee: limits.mem_guarantee.map(|b| b.0),
            cpu_limit: limits.cpu_limit.map(|c| c.0),
            cpu_guarantee: limits.cpu_guarantee.map(|c| c.0),
            tasks_max: limits.tasks_max,
        }
    }
}

impl LimitsSpec {
    pub fn is_empty(&self) -> bool {
        *self == LimitsSpec::default()
    }
}

/// What `start` returns: where the server will listen and the state to persist, which is
/// handed back to `poll` and `stop`, also after a hub restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    pub url: String,
    pub state: serde_json::Value,
}

/// The result of `poll`.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Running,
    /// Gone; `reason` is for people ("exit code 1", "out of memory", ...).
    Stopped {
        reason: String,
        log_tail: Vec<String>,
    },
}

/// A change noticed without polling (systemd signals, a child's exit).
#[derive(Debug, Clone)]
pub struct Exited {
    pub user: String,
    pub server_name: String,
    pub reason: String,
    pub log_tail: Vec<String>,
}

#[async_trait::async_trait]
pub trait Spawner: Send + Sync + 'static {
    /// Short name for `/hub/api/info` and logs (`systemd`, `local`).
    fn name(&self) -> &'static str;
    /// Whether `LimitsSpec` is enforced; the hub warns at start-up when limits are configured
    /// and this is false.
    fn supports_limits(&self) -> bool;
    /// Start the process. Returns once it exists (not once it answers HTTP: the hub waits).
    async fn start(&self, request: &SpawnRequest) -> Result<Started, Error>;
    /// Whether the server described by `state` still runs.
    async fn poll(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
    ) -> Result<Status, Error>;
    /// Stop it; `now` skips the grace period.
    async fn stop(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
        now: bool,
    ) -> Result<(), Error>;
    /// Servers that exited on their own are announced here, if the spawner can tell.
    fn subscribe_exits(&self) -> Option<tokio::sync::broadcast::Receiver<Exited>> {
        None
    }
    /// What runs under this spawner's naming scheme but is none of `known` (the servers the
    /// database says run, as `(user, server name, state)`): names for the log. The hub reports
    /// them at start-up and leaves them alone; a spawner that cannot list returns none.
    async fn unknown_servers(&self, known: &[KnownServer]) -> Result<Vec<String>, Error> {
        let _ = known;
        Ok(Vec::new())
    }

    /// The user and server name one of `unknown_servers`' names stands for, when the
    /// naming scheme says.
    fn server_of(&self, name: &str) -> Option<(String, String)> {
        let _ = name;
        None
    }
    /// Memory and CPU time of the running server described by `state`.
    async fn usage(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
    ) -> Result<Usage, Error> {
        let _ = (user, server_name, state);
        Ok(Usage::default())
    }
    /// The last `lines` lines the server described by `state` logged (this run or earlier
    /// ones); `None` when this spawner keeps no log of its own (the server's output goes to
    /// the hub's).
    async fn log(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
        lines: usize,
    ) -> Result<Option<Vec<String>>, Error> {
        let _ = (user, server_name, state, lines);
        Ok(None)
    }
    /// The same last `lines`, then each new line as it comes, until the stream is dropped.
    fn follow_log(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
        lines: usize,
    ) -> Result<Option<LogStream>, Error> {
        let _ = (user, server_name, state, lines);
        Ok(None)
    }
    /// Freeze the running server described by `state`: its processes keep their memory and
    /// connections and use no CPU until `thaw`. Answers once frozen.
    async fn freeze(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
    ) -> Result<(), Error> {
        let _ = (user, server_name, state);
        Err(freeze_unsupported(self.name()))
    }
    /// Let a frozen server run again. Answers once it runs.
    async fn thaw(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
    ) -> Result<(), Error> {
        let _ = (user, server_name, state);
        Err(freeze_unsupported(self.name()))
    }
    /// What all servers of this spawner use together, with the ceiling they share (the
    /// systemd spawner's slice); `None` when the spawner has no such grouping.
    async fn total_usage(&self) -> Result<Option<TotalUsage>, Error> {
        Ok(None)
    }
}

/// Live resource use of a running server (ours, not upstream's: `GET …/usage`); `None` where
/// the spawner cannot tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    /// CPU time used since the server started, in nanoseconds.
    pub cpu_nsec: Option<u64>,
}

/// Log lines as they come (`Spawner::follow_log`).
pub type LogStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = String> + Send>>;

/// All servers together (`Spawner::total_usage`): the group's name (a slice), its memory and
/// CPU time, and its memory ceiling; `None` where unknown or unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TotalUsage {
    pub group: String,
    pub memory_bytes: Option<u64>,
    pub cpu_nsec: Option<u64>,
    pub memory_max: Option<u64>,
}

/// A server the database says runs: user, server name, the state `start` returned.
pub type KnownServer = (String, String, serde_json::Value);

/// Create the Python environment user servers run from: a venv with `jupyterhub`
/// (for `jupyterhub-singleuser`), JupyterLab and `jupyterhub-idle-culler`, readable by every
/// user.
pub fn setup_user_env(
    prefix: &std::path::Path,
    python: &std::path::Path,
    requirement: &str,
) -> Result<(), Error> {
    let run = |program: &std::path::Path, args: &[&str]| -> Result<(), Error> {
        #[allow(clippy::disallowed_methods)] // a one-off admin command, not a user server
        let status = std::process::Command::new(program).args(args).status()?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::StartFailed {
                reason: format!("{} {} failed: {status}", program.display(), args.join(" ")),
                log_tail: Vec::new(),
            })
        }
    };
    let prefix_str = prefix.to_string_lossy();
    run(python, &["-m", "venv", &prefix_str])?;
    let pip = prefix.join("bin/pip");
    run(&pip, &["install", "--upgrade", "pip"])?;
    // The idle culler too, so the example config's managed service runs out of the box.
    run(
        &pip,
        &[
            "install",
            requirement,
            "jupyterlab",
            "jupyterhub-idle-culler",
        ],
    )?;
    Ok(())
}

/// What a spawner that cannot freeze answers to `freeze` and `thaw`.
fn freeze_unsupported(spawner: &str) -> Error {
    Error::FreezeUnsupported(format!("the {spawner} spawner cannot freeze servers"))
}
