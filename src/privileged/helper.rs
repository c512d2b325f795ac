//! The privileged helper (`jupyterhub privileged-helper`): a small root process, reachable
//! only over a unix socket, that does exactly four things for an unprivileged hub: start a
//! user's server unit or a managed service's unit after re-checking the request against the
//! root-owned config, check a PAM login, and create a user's system account when the
//! root-owned config says so. Callers are identified with SO_PEERCRED; everything else is refused.
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
        // The account is the config's template applied to the user, not the hub's choice.
        let expected =
            crate::auth::accounts::apply(&config.systemd_spawner.username_template, &request.user);
        if request.system_user != expected {
            return refuse(format!(
                "the account {:?} is not {expected:?}, SystemdSpawner.username_template \
                 applied to {:?}",
                request.system_user, request.user
            ));
        }
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
    // A profile of this config, open to one of the groups the hub says the user is in (the
    // helper cannot read the hub's groups; it holds the hub to the config's profiles).
    let spawner = &config.spawner;
    let profile = match &request.profile {
        Some(slug) => {
            let profile = spawner.profile(slug).ok_or_else(|| {
                Error::Refused(format!("{slug:?} is not a profile of the config"))
            })?;
            if !profile.groups.is_empty()
                && !profile.groups.iter().any(|g| request.groups.contains(g))
            {
                return refuse(format!(
                    "the profile {slug:?} is not open to the user's groups"
                ));
            }
            Some(profile)
        }
        None if spawner.profiles.is_empty() => None,
        None => return refuse("the config has profiles: a spawn must name one".into()),
    };
    let argv = spawner.argv_for(profile);
    if request.argv != argv {
        return refuse(format!(
            "the command {:?} is not the configured Spawner.cmd + args",
            request.argv
        ));
    }
    let with = |groups: &[String]| {
        LimitsSpec::from(&spawner.limits_with_profile(&request.user, groups, profile))
    };
    let allowed: Vec<LimitsSpec> = std::iter::once(with(&[]))
        .chain(
            spawner
                .group_limits
                .keys()
                .map(|g| with(std::slice::from_ref(g))),
        )
        // A user in several groups: the combination, as the hub computes it.
        .chain(std::iter::once(with(&request.groups)))
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

/// A managed-service start: the service must be a managed one of the root-owned config, and
/// the hub may give only its own variables; command, account, environment, limits and unit
/// properties all come from the config.
pub fn validate_service(
    name: &str,
    env: &std::collections::BTreeMap<String, String>,
    fingerprint: &str,
    config: &Config,
) -> Result<crate::services::Launch, Error> {
    let service = config
        .hub
        .services
        .iter()
        .find(|s| s.name == name && s.managed())
        .ok_or_else(|| {
            Error::Refused(format!("{name:?} is not a managed service of the config"))
        })?;
    if let Some(key) = env.keys().find(|k| !crate::services::hub_variable(k)) {
        return Err(Error::Refused(format!(
            "{key:?} is not a variable the hub sets for a service"
        )));
    }
    if fingerprint.is_empty()
        || fingerprint.len() > 64
        || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(Error::Refused("the fingerprint is not hex".into()));
    }
    crate::services::Launch::new(service, env.clone()).map_err(|e| Error::Refused(e.to_string()))
}

async fn start_service(
    launch: &crate::services::Launch,
    fingerprint: &str,
    config: &Config,
) -> Response {
    let systemd = match crate::systemd::Systemd::connect().await {
        Ok(systemd) => systemd,
        Err(e) => {
            return Response::Error {
                message: e.to_string(),
            };
        }
    };
    match crate::services::unit::start_as_root(&systemd, config, launch, fingerprint).await {
        Ok(pid) => Response::ServiceStarted { pid },
        Err(e) => Response::Error {
            message: e.to_string(),
        },
    }
}

/// A `create_account` request: the helper's own config must create accounts, and the name
/// is its own template applied to the hub's user name, checked as safe for `useradd`.
pub fn validate_account(user: &str, config: &Config) -> Result<String, Error> {
    if !config.create_system_users() {
        return Err(Error::Refused(
            "the config does not set create_system_users".into(),
        ));
    }
    crate::auth::accounts::account_name(&config.systemd_spawner.username_template, user)
        .map_err(|e| Error::Refused(e.to_string()))
}

async fn handle(request: Request, config: &Config) -> Response {
    match request {
        Request::CreateAccount { user } => {
            tracing::info!(user = %user, "helper: create account requested");
            let name = match validate_account(&user, config) {
                Ok(name) => name,
                Err(e) => {
                    tracing::warn!(user = %user, error = %e, "helper: refused");
                    return Response::Error {
                        message: e.to_string(),
                    };
                }
            };
            let result =
                tokio::task::spawn_blocking(move || crate::auth::accounts::ensure_as_root(&name))
                    .await;
            match result {
                Ok(Ok(outcome)) => Response::Account { outcome },
                Ok(Err(e)) => Response::Error {
                    message: e.to_string(),
                },
                Err(e) => Response::Error {
                    message: format!("account thread failed: {e}"),
                },
            }
        }
        Request::StartService {
            name,
            env,
            fingerprint,
        } => {
            tracing::info!(service = %name, "helper: start service requested");
            match validate_service(&name, &env, &fingerprint, config) {
                Ok(launch) => start_service(&launch, &fingerprint, config).await,
                Err(e) => {
                    tracing::warn!(service = %name, error = %e, "helper: refused");
                    Response::Error {
                        message: e.to_string(),
                    }
                }
            }
        }
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
        Request::ThawUnit { unit } => {
            tracing::info!(%unit, "helper: thaw requested");
            if config.systemd_spawner.freeze_idle_after == 0 {
                return Response::Error {
                    message: "refused: freeze_idle_after is off in the helper's config".into(),
                };
            }
            if crate::spawner::systemd::parse_unit_name(&unit).is_none() {
                tracing::warn!(%unit, "helper: refused");
                return Response::Error {
                    message: format!("refused: {unit:?} is not a user server's unit"),
                };
            }
            let thawed = async { crate::systemd::Systemd::connect().await?.thaw(&unit).await };
            match thawed.await {
                Ok(()) => Response::Thawed,
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
    let mut line = Vec::new();
    // One request per connection, at most 1 MiB (a SpawnRequest with its environment); read
    // as bytes, so a line that is not UTF-8 is refused with an answer like any other.
    let n = (&mut reader)
        .take(protocol::MAX_REQUEST)
        .read_until(b'\n', &mut line)
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
        match serde_json::from_slice::<Request>(&line) {
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
            groups: Vec::new(),
            profile: None,
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

    #[test]
    fn the_account_is_the_configs_template_applied_to_the_user() {
        let mut config = Config::default();
        config.systemd_spawner.username_template = "jupyter-{USERNAME}".into();
        // The hub may not pick another account, not even the user's own name.
        let mut plain = request("alice", &["jupyterhub-singleuser"]);
        let err = validate(&plain, &config).expect_err("not the template");
        assert!(err.to_string().contains("username_template"), "{err}");
        plain.system_user = "jupyter-alice".into();
        // Past the template check: the account itself is checked next.
        let err = validate(&plain, &config).expect_err("no such account here");
        assert!(err.to_string().contains("not a system account"), "{err}");
    }

    #[test]
    fn account_creation_follows_the_helpers_own_config() {
        let mut config = Config::default();
        let err = validate_account("alice", &config).expect_err("option off");
        assert!(err.to_string().contains("create_system_users"), "{err}");
        config.local.create_system_users = true;
        assert_eq!(validate_account("alice", &config).expect("on"), "alice");
        config.systemd_spawner.username_template = "jupyter-{USERNAME}".into();
        assert_eq!(
            validate_account("alice", &config).expect("template"),
            "jupyter-alice"
        );
        for user in ["", "Alice", "a b", "a/b", "a:b", "root\n", &"x".repeat(30)] {
            assert!(validate_account(user, &config).is_err(), "{user:?}");
        }
        // PAM's section turns it on too (upstream's PAMAuthenticator inherits it).
        config.local.create_system_users = false;
        config.pam.create_system_users = true;
        assert!(validate_account("alice", &config).is_ok());
        // Over the socket, a refused name is answered, nothing is run.
        config.systemd_spawner.username_template = "{USERNAME}".into();
        let line =
            protocol::encode(&Request::CreateAccount { user: "-rf".into() }).expect("encode");
        match answer(line.as_bytes(), &config) {
            Response::Error { message } => assert!(message.contains("refused"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_user_in_several_groups_gets_their_combined_limits() {
        let mut config = Config::default();
        config.systemd_spawner.dynamic_users = true;
        let limits =
            |text: &str| -> crate::config::Limits { toml::from_str(text).expect("limits") };
        config
            .spawner
            .group_limits
            .insert("big-memory".into(), limits("mem_limit = \"4G\""));
        config
            .spawner
            .group_limits
            .insert("many-cpus".into(), limits("cpu_limit = 4"));
        let mut both = request("alice", &[]);
        both.argv = {
            let mut argv = config.spawner.cmd.clone();
            argv.extend(config.spawner.args.iter().cloned());
            argv
        };
        both.groups = vec!["big-memory".into(), "many-cpus".into()];
        both.limits = LimitsSpec::from(&config.spawner.limits_for("alice", &both.groups));
        assert_eq!(both.limits.mem_limit, Some(4 << 30));
        assert_eq!(both.limits.cpu_limit, Some(4.0));
        validate(&both, &config).expect("the combination of her groups");
        // Without naming the groups, the combination is more than any one gives.
        let mut unnamed = both.clone();
        unnamed.groups.clear();
        assert!(validate(&unnamed, &config).is_err());
        // Naming a group the config gives no limits changes nothing.
        let mut other = both.clone();
        other.groups.push("made-up".into());
        validate(&other, &config).expect("unknown groups add nothing");
        other.limits.mem_limit = Some(8 << 30);
        assert!(validate(&other, &config).is_err());
    }

    #[test]
    fn a_profile_is_held_to_the_configs_command_limits_and_groups() {
        let mut config = Config::default();
        config.systemd_spawner.dynamic_users = true;
        let profiles: crate::config::SpawnerConfig = toml::from_str(
            "[[profiles]]\nslug = \"small\"\nmem_limit = \"1G\"\n\
             [[profiles]]\nslug = \"gpu\"\ngroups = [\"staff\"]\ncpu_limit = 8\n\
             cmd = [\"/opt/gpu/bin/jupyterhub-singleuser\"]\n",
        )
        .expect("profiles");
        config.spawner.profiles = profiles.profiles;
        let for_profile = |slug: &str, groups: &[&str]| {
            let mut r = request("alice", &[]);
            let profile = config.spawner.profile(slug);
            r.profile = Some(slug.to_owned());
            r.groups = groups.iter().map(|g| g.to_string()).collect();
            r.argv = config.spawner.argv_for(profile);
            r.limits = LimitsSpec::from(
                &config
                    .spawner
                    .limits_with_profile("alice", &r.groups, profile),
            );
            r
        };
        let small = for_profile("small", &[]);
        assert_eq!(small.limits.mem_limit, Some(1 << 30));
        validate(&small, &config).expect("an open profile");
        // The config has profiles: a request must name one of them.
        let mut none = small.clone();
        none.profile = None;
        assert!(validate(&none, &config).is_err());
        let mut unknown = small.clone();
        unknown.profile = Some("huge".into());
        assert!(validate(&unknown, &config).is_err());
        // Another profile's limits, or the default command for gpu, are refused.
        let mut bigger = small.clone();
        bigger.limits.mem_limit = Some(2 << 30);
        assert!(validate(&bigger, &config).is_err());
        let gpu = for_profile("gpu", &["staff"]);
        assert_eq!(gpu.argv, ["/opt/gpu/bin/jupyterhub-singleuser"]);
        validate(&gpu, &config).expect("staff may use gpu");
        let mut wrong_command = gpu.clone();
        wrong_command.argv = config.spawner.argv_for(None);
        assert!(validate(&wrong_command, &config).is_err());
        // Not in the profile's groups.
        assert!(validate(&for_profile("gpu", &[]), &config).is_err());
    }

    #[test]
    fn service_starts_name_a_managed_service_and_carry_only_the_hubs_variables() {
        let mut config = Config::default();
        config.hub.services.push(crate::config::ServiceConfig {
            name: "culler".into(),
            command: vec!["/usr/bin/python3".into(), "-m".into(), "culler".into()],
            environment: [("LEVEL".to_string(), "1".to_string())].into(),
            ..Default::default()
        });
        config.hub.services.push(crate::config::ServiceConfig {
            name: "external".into(),
            url: Some("http://127.0.0.1:1".into()),
            ..Default::default()
        });
        let env: std::collections::BTreeMap<String, String> =
            [("JUPYTERHUB_API_TOKEN".to_string(), "t".to_string())].into();
        let launch = validate_service("culler", &env, "0a1b", &config).expect("managed");
        // Command and environment come from the helper's config.
        assert_eq!(launch.argv[2], "culler");
        assert_eq!(launch.env()["LEVEL"], "1");
        for (name, fingerprint) in [("nope", "0a1b"), ("external", "0a1b"), ("culler", "x y")] {
            assert!(
                validate_service(name, &env, fingerprint, &config).is_err(),
                "{name}"
            );
        }
        let mut foreign = env.clone();
        foreign.insert("LD_PRELOAD".into(), "/tmp/x.so".into());
        let err = validate_service("culler", &foreign, "0a1b", &config).expect_err("refused");
        assert!(err.to_string().contains("LD_PRELOAD"), "{err}");
    }

    /// Send `line` as a request over a socket pair to `serve_connection` and read the
    /// answer: every connection gets one, even when the task would otherwise fail.
    fn answer(line: &[u8], config: &Config) -> Response {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (server, mut client) = UnixStream::pair().expect("socket pair");
            let uid = nix::unistd::getuid().as_raw();
            let config = config.clone();
            let task = tokio::spawn(async move { serve_connection(server, &config, uid).await });
            client.write_all(line).await.expect("write");
            client.shutdown().await.expect("shutdown");
            let mut text = String::new();
            BufReader::new(client)
                .read_line(&mut text)
                .await
                .expect("read");
            task.await.expect("no panic").expect("served");
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("answer {text:?}: {e}"))
        })
    }

    /// A well-formed request the helper refuses before acting: the command is not the
    /// configured one (so neither systemd nor PAM is ever reached).
    fn start_unit(argv: Vec<String>, user: String, env: Vec<(String, String)>) -> Request {
        let mut request = request(&user, &[]);
        request.argv = argv;
        request.env = env.into_iter().collect();
        Request::StartUnit {
            request: Box::new(request),
        }
    }

    proptest::proptest! {
        // Bounded for CI; run longer by hand with PROPTEST_CASES=100000.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(128)
        ))]

        #[test]
        fn arbitrary_request_lines_are_refused_with_an_answer(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)
        ) {
            let config = Config::default();
            match serde_json::from_slice::<Request>(&bytes) {
                // Random bytes are essentially never a request; if one is, it is not ours
                // to run here.
                Ok(_) => {}
                Err(_) => {
                    let answer = answer(&bytes, &config);
                    proptest::prop_assert!(matches!(answer, Response::Error { .. }), "{answer:?}");
                }
            }
        }

        #[test]
        fn well_formed_foreign_commands_are_refused(
            argv in proptest::collection::vec("[ -~]{0,12}", 0..4),
            user in "[a-z0-9._@-]{0,12}",
            env in proptest::collection::vec(("[A-Z_]{1,8}", "\\PC{0,16}"), 0..4),
        ) {
            let config = Config::default();
            let request = start_unit(argv, user, env);
            let line = protocol::encode(&request).expect("encode");
            let answer = answer(line.as_bytes(), &config);
            match answer {
                Response::Error { message } => {
                    proptest::prop_assert!(message.contains("refused"), "{message}");
                }
                other => proptest::prop_assert!(false, "{other:?}"),
            }
        }
    }

    #[test]
    fn empty_oversized_and_non_utf8_requests_are_refused() {
        let config = Config::default();
        for line in [
            &b""[..],
            b"\n",
            b"\xff\xfe{\"op\":\"check_pam\"}\n",
            b"{\"op\":\"start_unit\"}\n",
            b"{\"op\":\"check_pam\",\"user\":1}\n",
            b"[]\n",
        ] {
            let answer = answer(line, &config);
            assert!(
                matches!(answer, Response::Error { .. }),
                "{line:?}: {answer:?}"
            );
        }
        // Over MAX_REQUEST without a newline: the first 1 MiB is not a request either.
        let mut huge = b"{\"op\":\"check_pam\",\"user\":\"".to_vec();
        huge.resize(protocol::MAX_REQUEST as usize + 4096, b'a');
        assert!(matches!(answer(&huge, &config), Response::Error { .. }));
    }
}
