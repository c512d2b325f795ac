//! Everything that speaks to systemd: D-Bus (`dbus`: the proxies; `unit`: transient units
//! through them; `properties`: typed unit properties; `watch`: units' exits as they happen),
//! the journal (`journal`), sd_notify (`notify`) and socket activation (`activation`).
//! Nothing here knows about JupyterHub users or servers: spawners and services name the
//! units and decide what goes into them.

pub mod activation;
pub mod dbus;
pub mod journal;
pub mod notify;
pub mod properties;
pub mod unit;
pub mod watch;

pub use properties::Property;
pub use unit::{ExitInfo, SliceUsage, Systemd, TransientUnit};

/// What can go wrong talking to systemd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A D-Bus call (or building its proxy) failed; `context` names the call.
    #[error("{context}: {source}")]
    Bus {
        context: &'static str,
        #[source]
        source: zbus::Error,
    },
    /// systemd did not answer `what` within the call timeout.
    #[error("{0}: no answer from systemd")]
    NoAnswer(&'static str),
    /// The bus connection ended while waiting for a job (`what`: `starting`, `stopping`).
    #[error("the D-Bus connection closed while {0}")]
    Closed(&'static str),
    /// systemd cannot freeze this unit; `message` is its own words.
    #[error("{context}: {message}")]
    Unsupported {
        context: &'static str,
        message: String,
    },
    #[error("{0} did not stop in time")]
    StopTimedOut(String),
    /// A name that cannot go into an environment file.
    #[error("invalid environment variable {0:?}")]
    InvalidEnvironment(String),
    /// A `Key=Value` unit property that is unknown or malformed.
    #[error("{entry:?}: {why}")]
    BadProperty { entry: String, why: &'static str },
    #[error("journalctl did not answer")]
    JournalTimedOut,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn bus(context: &'static str) -> impl FnOnce(zbus::Error) -> Error {
        move |source| Error::Bus { context, source }
    }
}

/// Whether this host's cgroups let systemd freeze units: systemd's `FreezeUnit` uses the
/// cgroup v2 freezer, so it needs the unified hierarchy at /sys/fs/cgroup (a hybrid or v1
/// host answers "does not support freezing"). `Err` says why not.
pub fn freezer_available() -> Result<(), String> {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Ok(())
    } else {
        Err(
            "/sys/fs/cgroup is not the unified cgroup v2 hierarchy (cgroup v1 or hybrid), \
             and systemd freezes units only there"
                .into(),
        )
    }
}

/// Whether systemd runs this machine (as `sd_booted()` checks).
pub fn is_pid1() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

/// Whether stderr is connected to the journal (`JOURNAL_STREAM` names its device and inode).
pub fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    stream == format!("{}:{}", stat.st_dev, stat.st_ino)
}
