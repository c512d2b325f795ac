//! The `jupyterhub` command: parse the command line, load the config, set up logging and
//! listeners, then hand over to the library. The only place `anyhow` is used.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use jupyterhub::config::{self, Config};

#[derive(Parser)]
#[command(name = "jupyterhub", version = concat!(env!("CARGO_PKG_VERSION"), " (JupyterHub API ", "5.3.0", ")"),
          about = "A systemd-native JupyterHub: hub, proxy and spawner in one binary")]
struct Cli {
    /// Config file (default: /etc/jupyterhub/jupyterhub.toml if it exists, else ./jupyterhub.toml).
    #[arg(short = 'f', long = "config", global = true)]
    config: Option<PathBuf>,
    /// Public IP to listen on (overrides JupyterHub.ip).
    #[arg(long)]
    ip: Option<String>,
    /// Public port to listen on (overrides JupyterHub.port).
    #[arg(long)]
    port: Option<u16>,
    /// error, warn, info, debug or trace (or a tracing filter such as `jupyterhub=debug`).
    #[arg(long, global = true, env = "JUPYTERHUB_LOG_LEVEL")]
    log_level: Option<String>,
    /// Apply pending database migrations at start-up (as upgrade_db = true).
    #[arg(long)]
    upgrade_db: bool,
    /// Development mode: any username logs in (dummy authenticator), `admin` is an admin,
    /// servers are local processes running as the hub's own account from a Python
    /// environment made on first use, and the hub listens on 127.0.0.1 only. Never use it in
    /// production.
    #[arg(long)]
    dev: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a commented config file with every option and its default.
    GenerateConfig,
    /// Validate a config file; exits non-zero naming the file, line and key of each problem.
    CheckConfig,
    /// Create an API token for USER and print it.
    Token {
        user: String,
        #[arg(long, default_value = "")]
        note: String,
        /// Scopes of the token (default: all of the user's).
        #[arg(long, num_args = 1..)]
        scopes: Vec<String>,
        /// Lifetime in seconds (default: no expiry).
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// Apply pending database migrations after writing a timestamped backup.
    UpgradeDb,
    /// Run the proxy alone, as a drop-in for configurable-http-proxy.
    Proxy(jupyterhub::proxy::ChpArgs),
    /// The root helper that starts user units and checks PAM logins for an unprivileged hub.
    PrivilegedHelper(jupyterhub::privileged::HelperArgs),
    /// Create the Python environment user servers run from (jupyterhub-singleuser + JupyterLab).
    SetupUserEnv {
        /// Where to create it.
        #[arg(long, default_value = config::USER_ENV_PREFIX)]
        prefix: PathBuf,
        /// Python to build it from (must be readable by every user).
        #[arg(long, default_value = "/usr/bin/python3")]
        python: PathBuf,
        /// pip requirement for jupyterhub (the single-user server).
        #[arg(long, default_value = "jupyterhub>=5.3,<7")]
        jupyterhub: String,
    },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path.cloned().or_else(Config::default_path) {
        Some(path) => Ok(Config::load(&path)?),
        None => Ok(Config::default()),
    }
}

/// Every client connection and every proxied one holds a descriptor: a hub run by hand
/// with the usual soft limit of 1024 would stop accepting at a few hundred users. Raise the
/// soft limit to the hard one, as nginx's and Go's servers do (`jupyterhub.service` sets
/// `LimitNOFILE=65536` itself).
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open file limit"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Logging may not be up yet: stderr is the one place this surely reaches.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("jupyterhub: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::GenerateConfig) => {
            print!("{}", config::EXAMPLE);
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::CheckConfig) => {
            let path = cli.config.clone().or_else(Config::default_path);
            let Some(path) = path else {
                println!("no config file found; the built-in defaults are valid");
                return Ok(ExitCode::SUCCESS);
            };
            return match Config::load(&path) {
                Ok(config) => {
                    println!("{}: ok", path.display());
                    if config.hub.authenticator_class == "google" {
                        for warning in config.google.warnings() {
                            println!("warning: {warning}");
                        }
                    }
                    let freeze = check_freeze(&config);
                    let letsencrypt = check_letsencrypt(&config);
                    Ok(if freeze == ExitCode::SUCCESS {
                        letsencrypt
                    } else {
                        freeze
                    })
                }
                Err(e) => {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("{e}");
                    }
                    Ok(ExitCode::from(1))
                }
            };
        }
        Some(Command::UpgradeDb) => {
            let config = load_config(cli.config.as_ref())?;
            let path = config.db_path();
            match jupyterhub::Hub::upgrade_db(&config)
                .with_context(|| format!("upgrading {}", path.display()))?
            {
                Some(backup) => {
                    println!("upgraded {} (backup: {})", path.display(), backup.display())
                }
                None => println!("{} is up to date", path.display()),
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Proxy(args)) => {
            jupyterhub::app::init_logging(cli.log_level.as_deref());
            raise_open_file_limit();
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(jupyterhub::proxy::run_chp(args))?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::PrivilegedHelper(args)) => {
            jupyterhub::app::init_logging(cli.log_level.as_deref());
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(jupyterhub::privileged::run_helper(args, cli.config.clone()))?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::SetupUserEnv {
            prefix,
            python,
            jupyterhub: requirement,
        }) => {
            jupyterhub::app::init_logging(cli.log_level.as_deref());
            jupyterhub::spawner::setup_user_env(&prefix, &python, &requirement)?;
            if prefix == std::path::Path::new(config::USER_ENV_PREFIX) {
                println!(
                    "created {}; the default [Spawner] cmd runs its jupyterhub-singleuser",
                    prefix.display()
                );
            } else {
                println!(
                    "created {}; set [Spawner] cmd = [\"{}/bin/jupyterhub-singleuser\"]",
                    prefix.display(),
                    prefix.display()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Token {
            user,
            note,
            scopes,
            expires_in,
        }) => {
            let config = load_config(cli.config.as_ref())?;
            let runtime = tokio::runtime::Runtime::new()?;
            let token = runtime.block_on(async {
                let hub = jupyterhub::Hub::open(config, jupyterhub::hub::Mode::Offline).await?;
                hub.issue_cli_token(&user, &note, &scopes, expires_in)
            })?;
            println!("{token}");
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }

    let mut config = load_config(cli.config.as_ref())?;
    if let Some(ip) = cli.ip {
        config.hub.ip = ip;
    }
    if let Some(port) = cli.port {
        config.hub.port = port;
    }
    if cli.upgrade_db {
        config.hub.upgrade_db = true;
    }
    if cli.dev {
        config.hub.authenticator_class = "dummy".into();
        config.hub.spawner_class = "local".into();
        if config.hub.ip.is_empty() {
            config.hub.ip = "127.0.0.1".into();
        }
        if !config
            .authenticator
            .admin_users
            .iter()
            .any(|u| u == "admin")
        {
            config.authenticator.admin_users.push("admin".into());
        }
        config.dev = Some(config::DevMode::for_config(&config));
    }
    jupyterhub::app::init_logging(cli.log_level.as_deref());
    raise_open_file_limit();
    if let Some(dev) = &config.dev {
        let account = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map_or_else(|| "this process's".into(), |u| u.name);
        let env = if dev.manage_env {
            format!(
                "from {} (made on first start if missing)",
                dev.user_env.display()
            )
        } else {
            format!("with {:?}", config.spawner.cmd)
        };
        tracing::warn!(
            "development mode: any username and password log in, and the user `admin` is an \
             admin; servers run as the {account} account {env}, each in {}/users/NAME; do not \
             expose this hub",
            dev.state_dir.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(jupyterhub::app::run(config))?;
    Ok(ExitCode::SUCCESS)
}

/// `check-config` with `freeze_idle_after`: refused on a host whose cgroups cannot freeze
/// (what the running hub would otherwise only find out at its first freeze).
fn check_freeze(config: &Config) -> ExitCode {
    if config.systemd_spawner.freeze_idle_after == 0 {
        return ExitCode::SUCCESS;
    }
    match jupyterhub::systemd::freezer_available() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            println!("SystemdSpawner.freeze_idle_after: this host cannot freeze servers: {why}");
            ExitCode::from(1)
        }
    }
}

/// `check-config` with `[LetsEncrypt]`: a dry check that the domains resolve and the ports
/// can be listened on (nothing is asked of the CA).
fn check_letsencrypt(config: &Config) -> ExitCode {
    let Some(letsencrypt) = &config.letsencrypt else {
        return ExitCode::SUCCESS;
    };
    let ip: std::net::IpAddr = config.hub.ip.parse().unwrap_or([0, 0, 0, 0].into());
    let ports = [
        ("HTTPS port", (ip, config.hub.port).into()),
        ("HTTP port", (ip, letsencrypt.http_port).into()),
    ];
    let (ok, lines) = jupyterhub::proxy::dry_check(&letsencrypt.domains, &ports);
    println!("LetsEncrypt: directory {}", letsencrypt.directory());
    for line in lines {
        println!("LetsEncrypt: {line}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
