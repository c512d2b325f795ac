//! The privileged helper (`jupyterhub privileged-helper`): a small root process, reachable
//! only over a unix socket, that does exactly two things for an unprivileged hub: start a
//! user's server unit after re-checking the request against the root-owned config, and
//! check a PAM login. Callers are identified with SO_PEERCRED; everything else is refused.
//! It sits on top: the protocol, the systemd spawner's unit start and PAM are beneath it.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::protocol::{self, Request, Response, StartedWire};
use crate::config::Config;
use crate::spawner::{LimitsSpec, SpawnRequest, Started};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("privileged helper: {0}")]
    Io(#[from] std::io::Error),
    #[error("privileged helper: {0}")]
    Config(#[from] crate::config::Error),
    #[error("privileged helper refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Protocol(#[from] protocol::Error),
    #[error("privileged helper: {0}")]
    Activation(#[from] crate::systemd::activation::Error),
}

/// `jupyterhub privileged-helper`.
#[derive(Debug, clap::Args)]
pub struct HelperArgs {
    /// Unix socket to listen on when not socket-activated.
    #[arg(long, default_value = "/run/jupyterhub-helper.sock")]
    socket: PathBuf,
    /// The only non-root user allowed to call (the hub's account).
    #[arg(long, default_value = "jupyterhub")]
    allowed_user: String,
}

/// The lowest uid of a login account (`UID_MIN` in /etc/login.defs, 1000 by default).
fn uid_min() -> u32 {
    std::fs::read_to_string("/etc/login.defs")
        .ok()
        .and_then(|text| {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("UID_MIN"))
                .find_map(|v| v.trim().parse().ok())
        })
        .unwrap_or(1000)
}

/// Re-derive what the request may contain from the root-owned config; the hub's word counts
/// for nothing but the user, the server name, the port and the environment.
pub fn validate(request: &SpawnRequest, config: &Config) -> Result<(), Error> {
    let refuse = |why: String| Err(Error::Refused(why));
    if !config.systemd_spawner.dynamic_users {
        let account = nix::unistd::User::from_name(&request.system_user)
            .ok()
            .flatten()
            .ok_or_else(|| {
                Error::Refused(format!("{:?} is not a system account", request.system_user))
            })?;
        if account.uid.is_root() || account.uid.as_raw() < uid_min() {
            return refuse(format!(
                "{:?} is a system account (uid {}), not a user",
                request.system_user, account.uid
            ));
        }
    }
    if request.user.contains('/') || request.server_name.contains('/') {
        return refuse("user and server names must not contain '/'".into());
    }
    let mut argv = config.spawner.cmd.clone();
    argv.extend(config.spawner.args.iter().cloned());
    if request.argv != argv {
        return refuse(format!(
            "the command {:?} is not the configured Spawner.cmd + args",
            request.argv
        ));
    }
    let allowed: Vec<LimitsSpec> = std::iter::once(LimitsSpec::from(
        &config.spawner.limits_for(&request.user, &[]),
    ))
    .chain(config.spawner.group_limits.keys().map(|g| {
        LimitsSpec::from(
            &config
                .spawner
                .limits_for(&request.user, std::slice::from_ref(g)),
        )
    }))
    .collect();
    if !allowed.contains(&request.limits) {
        return refuse("the limits are not ones the config gives this user".into());
    }
    if let Some(dir) = &request.working_dir
        && !dir.is_absolute()
    {
        return refuse("the working directory must be absolute".into());
    }
    Ok(())
}

async fn handle(request: Request, config: &Config) -> Response {
    match request {
        Request::StartUnit { request } => {
            tracing::info!(user = %request.user, server = %request.server_name, "helper: start unit requested");
            if let Err(e) = validate(&request, config) {
                tracing::warn!(user = %request.user, error = %e, "helper: refused");
                return Response::Error {
                    message: e.to_string(),
                };
            }
            match crate::spawner::systemd::start_unit_as_root(&request, config).await {
                Ok(Started { url, state }) => Response::Started {
                    started: StartedWire { url, state },
                },
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            }
        }
        Request::CheckPam { user, password } => {
            tracing::info!(user = %user, "helper: PAM check requested");
            let service = config.pam.service.clone();
            let check = config.pam.check_account;
            let result = tokio::task::spawn_blocking(move || {
                crate::auth::pam::authenticate(&service, &user, &password, check)
            })
            .await;
            match result {
                Ok(Ok(valid)) => Response::Pam { valid },
                Ok(Err(e)) => Response::Error {
                    message: e.to_string(),
                },
                Err(e) => Response::Error {
                    message: format!("PAM thread failed: {e}"),
                },
            }
        }
    }
}

async fn serve_connection(
    stream: UnixStream,
    config: &Config,
    allowed_uid: u32,
) -> Result<(), Error> {
    let credentials = stream.peer_cred()?;
    let uid = credentials.uid();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    // One request per connection, at most 1 MiB (a SpawnRequest with its environment).
    let n = (&mut reader)
        .take(protocol::MAX_REQUEST)
        .read_line(&mut line)
        .await?;
    let response = if uid != 0 && uid != allowed_uid {
        tracing::warn!(uid, "helper: caller refused");
        Response::Error {
            message: format!("uid {uid} may not use the privileged helper"),
        }
    } else if n == 0 {
        Response::Error {
            message: "empty request".into(),
        }
    } else {
        match serde_json::from_str::<Request>(&line) {
            Ok(request) => handle(request, config).await,
            Err(e) => Response::Error {
                message: format!("unknown request: {e}"),
            },
        }
    };
    let mut stream = reader.into_inner();
    stream
        .write_all(protocol::encode(&response)?.as_bytes())
        .await?;
    Ok(())
}

/// Serve until killed. Takes the socket from systemd (jupyterhub-helper.socket) if given.
pub async fn run_helper(args: HelperArgs, config_path: Option<PathBuf>) -> Result<(), Error> {
    let config = match config_path.or_else(Config::default_path) {
        Some(path) => Config::load(&path)?,
        None => Config::default(),
    };
    let allowed_uid = nix::unistd::User::from_name(&args.allowed_user)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
        .unwrap_or(0);
    let listener = match crate::systemd::activation::unix_listener()? {
        Some(listener) => listener,
        None => {
            let _ = std::fs::remove_file(&args.socket);
            let listener = UnixListener::bind(&args.socket)?;
            // Peer credentials are the real check; the mode keeps strangers from connecting.
            std::fs::set_permissions(&args.socket, std::fs::Permissions::from_mode(0o660))?;
            if allowed_uid != 0 {
                let _ = nix::unistd::chown(
                    &args.socket,
                    None,
                    nix::unistd::User::from_uid(allowed_uid.into())
                        .ok()
                        .flatten()
                        .map(|u| u.gid),
                );
            }
            listener
        }
    };
    tracing::info!(allowed_uid, "privileged helper ready");
    let config = std::sync::Arc::new(config);
    loop {
        let (stream, _) = listener.accept().await?;
        let config = config.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &config, allowed_uid).await {
                tracing::warn!(error = %e, "helper: connection failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(user: &str, argv: &[&str]) -> SpawnRequest {
        SpawnRequest {
            user: user.into(),
            server_name: String::new(),
            system_user: user.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: Default::default(),
            working_dir: None,
            ip: "127.0.0.1".into(),
            port: 1234,
            limits: LimitsSpec::default(),
        }
    }

    #[test]
    fn root_and_system_accounts_and_foreign_commands_are_refused() {
        let config = Config::default();
        let err =
            validate(&request("root", &["jupyterhub-singleuser"]), &config).expect_err("root");
        assert!(err.to_string().contains("system account"), "{err}");
        let err =
            validate(&request("daemon", &["jupyterhub-singleuser"]), &config).expect_err("daemon");
        assert!(err.to_string().contains("system account"), "{err}");
        let err = validate(
            &request("no-such-user-xyz", &["jupyterhub-singleuser"]),
            &config,
        )
        .expect_err("missing");
        assert!(err.to_string().contains("not a system account"), "{err}");
    }
}
