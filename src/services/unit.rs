//! A managed service as a transient unit: `jupyterhub-service-NAME.service` in
//! `jupyterhub-services.slice`, restarted by systemd on failure, its secrets in the same
//! root-only environment file as user servers (kept across systemd's own restarts, removed
//! when the unit stops cleanly). Its `Description` carries the launch's fingerprint, so a
//! restarted hub adopts an unchanged unit and restarts a changed one.

use std::sync::Arc;
use std::time::Duration;

use super::{Error, Launch};
use crate::config::Config;
use crate::privileged::protocol;
use crate::systemd::properties::{self, Property, prop};
use crate::systemd::unit::{EnvironmentFile, StartOutcome, TransientUnit};
use crate::systemd::{Systemd, journal};

pub const UNIT_PREFIX: &str = "jupyterhub-service-";
const UNIT_SUFFIX: &str = ".service";
pub const SLICE: &str = "jupyterhub-services.slice";
/// systemd's own restarts: every 3 s, at most 10 starts in 5 minutes; then the unit fails
/// and the hub's supervisor takes over with its longer back-off.
const RESTART_USEC: u64 = 3_000_000;
const START_LIMIT_BURST: u32 = 10;
const START_LIMIT_INTERVAL_USEC: u64 = 300_000_000;
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 20;

/// The unit of service `name` (a valid managed-service name needs no escaping).
pub fn unit_name(name: &str) -> String {
    format!("{UNIT_PREFIX}{name}{UNIT_SUFFIX}")
}

fn service_of(unit: &str) -> Option<&str> {
    unit.strip_prefix(UNIT_PREFIX)?.strip_suffix(UNIT_SUFFIX)
}

/// `DynamicUser=`'s account for a service without `user`: stable per service, within
/// systemd's 31 characters.
fn dynamic_user_name(service: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(service.as_bytes());
    format!("jupyterhub-svc-{}", &hex::encode(digest)[..12])
}

/// A dynamic user's home and working directory, under `/var/lib`.
fn state_dir(service: &str) -> String {
    format!("jupyterhub-services/{service}")
}

fn description(name: &str, fingerprint: &str) -> String {
    format!("JupyterHub service {name} [{fingerprint}]")
}

fn fingerprint_of(description: &str) -> &str {
    description
        .rsplit_once('[')
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .unwrap_or("")
}

/// The unit's properties, in order (later settings override earlier ones).
pub fn unit_properties(launch: &Launch, fingerprint: &str) -> Result<Vec<Property>, Error> {
    let argv0 = launch
        .argv
        .first()
        .ok_or_else(|| Error::Refused("empty command".into()))?;
    let mut props = vec![
        prop("Description", description(&launch.name, fingerprint)),
        prop("Type", "exec"),
        // Without `no-env-expand` systemd would expand `$VAR` inside argv.
        prop(
            "ExecStartEx",
            vec![(
                argv0.clone(),
                launch.argv.clone(),
                vec!["no-env-expand".to_owned()],
            )],
        ),
        prop("Slice", SLICE),
        prop("Restart", "on-failure"),
        prop("RestartUSec", RESTART_USEC),
        prop("StartLimitBurst", START_LIMIT_BURST),
        prop("StartLimitIntervalUSec", START_LIMIT_INTERVAL_USEC),
        prop("TimeoutStopUSec", STOP_TIMEOUT.as_micros() as u64),
        prop("MemoryAccounting", true),
        prop("CPUAccounting", true),
        prop("NoNewPrivileges", true),
        prop("PrivateTmp", true),
    ];
    match &launch.user {
        Some(user) => {
            let account = nix::unistd::User::from_name(user)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    Error::Refused(format!("the service's system user {user:?} does not exist"))
                })?;
            if account.uid.is_root() {
                return Err(Error::Refused(format!(
                    "service {:?} would run as root: name an unprivileged user, or none for a \
                     dynamic user",
                    launch.name
                )));
            }
            let group = nix::unistd::Group::from_gid(account.gid)
                .ok()
                .flatten()
                .map(|g| g.name)
                .unwrap_or_else(|| account.gid.to_string());
            props.push(prop("User", user.clone()));
            props.push(prop("Group", group));
            props.push(prop(
                "WorkingDirectory",
                launch.cwd.clone().unwrap_or_else(|| "~".into()),
            ));
        }
        None => {
            let dir = state_dir(&launch.name);
            props.push(prop("DynamicUser", true));
            props.push(prop("User", dynamic_user_name(&launch.name)));
            props.push(prop("StateDirectory", vec![dir.clone()]));
            props.push(prop(
                "WorkingDirectory",
                launch.cwd.clone().unwrap_or(format!("/var/lib/{dir}")),
            ));
        }
    }
    if let Some(v) = launch.limits.mem_limit {
        props.push(prop("MemoryMax", v));
    }
    if let Some(v) = launch.limits.cpu_limit {
        props.push(prop("CPUQuotaPerSecUSec", (v * 1e6).round() as u64));
    }
    for entry in &launch.extra_properties {
        props.push(
            properties::parse(entry)
                .map_err(|e| Error::Refused(format!("unit_extra_properties: {e}")))?,
        );
    }
    Ok(props)
}

/// The process's environment: a dynamic user's home is its state directory.
fn unit_env(launch: &Launch) -> std::collections::BTreeMap<String, String> {
    let mut env = launch.env();
    if launch.user.is_none() {
        env.entry("HOME".into())
            .or_insert_with(|| format!("/var/lib/{}", state_dir(&launch.name)));
    }
    env
}

/// Start the unit over `systemd` (as root: the helper, or a root hub). Returns the main pid.
pub async fn start_as_root(
    systemd: &Systemd,
    config: &Config,
    launch: &Launch,
    fingerprint: &str,
) -> Result<u32, Error> {
    let unit = unit_name(&launch.name);
    let transient = TransientUnit {
        properties: unit_properties(launch, fingerprint)?,
        environment: Some(EnvironmentFile {
            path: config
                .systemd_spawner
                .env_dir
                .join(format!("{}.env", unit.trim_end_matches(UNIT_SUFFIX))),
            vars: unit_env(launch),
            keep_across_restarts: true,
        }),
    };
    match systemd
        .start_transient(&unit, transient, START_TIMEOUT)
        .await?
    {
        StartOutcome::Started { main_pid } => Ok(main_pid),
        StartOutcome::AlreadyRunning => Err(Error::StartFailed {
            reason: format!("{unit} is already running"),
            log_tail: Vec::new(),
        }),
        StartOutcome::TimedOut => Err(Error::StartFailed {
            reason: "timed out starting the service".into(),
            log_tail: journal::tail(&unit, LOG_TAIL_LINES, 0).await,
        }),
        StartOutcome::Failed { job_result, exit } => {
            let log_tail = journal::tail(&unit, LOG_TAIL_LINES, 0).await;
            let reason = match exit {
                Some(info) => info.reason(&unit).await,
                None => format!("the start job ended with {job_result:?}"),
            };
            Err(Error::StartFailed { reason, log_tail })
        }
    }
}

/// Start the unit: directly as root, else through the privileged helper, which rebuilds the
/// launch from its own (root-owned) config and takes only the hub's variables from us.
pub async fn start(
    systemd: &Systemd,
    config: &Arc<Config>,
    launch: &Launch,
    fingerprint: &str,
) -> Result<u32, Error> {
    if nix::unistd::geteuid().is_root() {
        return start_as_root(systemd, config, launch, fingerprint).await;
    }
    let socket = &config.systemd_spawner.helper_socket;
    let request = protocol::Request::StartService {
        name: launch.name.clone(),
        env: launch.hub_env.clone(),
        fingerprint: fingerprint.to_owned(),
    };
    match protocol::call(socket, &request).await {
        Ok(protocol::Response::ServiceStarted { pid }) => Ok(pid),
        Ok(protocol::Response::Error { message }) => Err(Error::StartFailed {
            reason: message,
            log_tail: journal::tail(&unit_name(&launch.name), LOG_TAIL_LINES, 0).await,
        }),
        Ok(other) => Err(Error::Refused(format!(
            "unexpected answer from the privileged helper: {other:?}"
        ))),
        Err(e) => Err(Error::Refused(format!("{e} (socket {})", socket.display()))),
    }
}

/// A service unit that is loaded.
#[derive(Debug, Clone)]
pub struct Listed {
    pub unit: String,
    pub service: String,
    pub active_state: String,
    pub fingerprint: String,
}

/// The services' units systemd has loaded.
pub async fn list(systemd: &Systemd) -> Result<Vec<Listed>, Error> {
    let pattern = format!("{UNIT_PREFIX}*{UNIT_SUFFIX}");
    Ok(systemd
        .list_units(&[&pattern])
        .await?
        .into_iter()
        .filter_map(|u| {
            Some(Listed {
                service: service_of(&u.name)?.to_owned(),
                fingerprint: fingerprint_of(&u.description).to_owned(),
                active_state: u.active_state,
                unit: u.name,
            })
        })
        .collect())
}

/// Stop a unit and forget its failure, logging what goes wrong.
pub async fn stop(systemd: &Systemd, unit: &str) {
    if let Err(e) = systemd.stop(unit, STOP_TIMEOUT).await {
        tracing::warn!(%unit, error = %e, "could not stop the service's unit");
    }
    let _ = systemd.reset_failed(unit).await;
}

/// What `poll` saw.
pub enum Polled {
    Running {
        pid: u32,
    },
    Stopped {
        reason: String,
        log_tail: Vec<String>,
    },
}

/// Whether the service's unit runs (or is between systemd's restarts, which counts as
/// running: systemd is handling it).
pub async fn poll(systemd: &Systemd, name: &str) -> Result<Polled, Error> {
    let unit = unit_name(name);
    let state = systemd.unit_state(&unit).await?;
    match state.as_deref() {
        Some("active") | Some("reloading") => Ok(Polled::Running {
            pid: systemd.main_pid(&unit).await.unwrap_or(0),
        }),
        Some("activating") | Some("deactivating") => Ok(Polled::Running { pid: 0 }),
        _ => {
            let reason = match systemd.exit_info(&unit).await {
                Some(info) => info.reason(&unit).await,
                None => "the unit is gone".into(),
            };
            let log_tail = journal::tail(&unit, LOG_TAIL_LINES, 0).await;
            let _ = systemd.reset_failed(&unit).await;
            Ok(Polled::Stopped { reason, log_tail })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServiceConfig;

    fn launch(user: Option<&str>) -> Launch {
        let service = ServiceConfig {
            name: "idle-culler".into(),
            command: vec!["python3".into(), "-m".into(), "culler".into()],
            user: user.map(Into::into),
            mem_limit: Some(crate::config::ByteSize(1 << 30)),
            unit_extra_properties: vec!["Nice=5".into()],
            ..ServiceConfig::default()
        };
        let env = [("JUPYTERHUB_API_TOKEN".to_string(), "secret".to_string())].into();
        Launch::new(&service, env).expect("managed")
    }

    fn names(props: &[Property]) -> Vec<&str> {
        props.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn names_round_trip_and_carry_the_fingerprint() {
        assert_eq!(
            unit_name("idle-culler"),
            "jupyterhub-service-idle-culler.service"
        );
        assert_eq!(
            service_of("jupyterhub-service-idle-culler.service"),
            Some("idle-culler")
        );
        assert_eq!(service_of("jupyter-alice-singleuser.service"), None);
        assert_eq!(
            fingerprint_of(&description("a [b]", "0123abcd")),
            "0123abcd"
        );
        assert!(dynamic_user_name("a-very-long-service-name-indeed-yes").len() <= 31);
    }

    #[test]
    fn a_service_without_user_gets_a_dynamic_user_and_no_secret_in_properties() {
        let props = unit_properties(&launch(None), "fp").expect("properties");
        let keys = names(&props);
        for key in [
            "Restart",
            "RestartUSec",
            "Slice",
            "DynamicUser",
            "StateDirectory",
            "MemoryMax",
            "Nice",
            "NoNewPrivileges",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        assert!(!format!("{props:?}").contains("secret"));
        assert_eq!(
            unit_env(&launch(None))["HOME"],
            "/var/lib/jupyterhub-services/idle-culler"
        );
    }

    #[test]
    fn root_and_unknown_accounts_are_refused() {
        assert!(matches!(
            unit_properties(&launch(Some("root")), "fp"),
            Err(Error::Refused(_))
        ));
        assert!(matches!(
            unit_properties(&launch(Some("no-such-user-here")), "fp"),
            Err(Error::Refused(_))
        ));
    }
}
