//! Typed configuration, read from TOML whose sections and keys are JupyterHub's class and
//! option names (`c.Spawner.mem_limit` is `[Spawner] mem_limit`). Every value is validated
//! while it is parsed, so every error carries the file, line and key.

mod authenticators;
mod letsencrypt;
mod oauth_presets;
mod profiles;
mod value;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use authenticators::{
    AuthenticatorConfig, DummyConfig, FirstUseConfig, GenericOAuthConfig, LdapConfig,
    LdapTlsKwargs, LocalConfig, PamConfig, SharedPasswordConfig, TlsStrategy,
};
pub use letsencrypt::LetsEncryptConfig;
pub use oauth_presets::{AzureAdOAuthConfig, GitHubOAuthConfig, GoogleOAuthConfig};
pub use profiles::Profile;
pub use value::{ByteSize, CpuAmount, IpRange, Pattern, Secret, valid_env_name};

/// Where the hub looks for its configuration when `-f` is not given.
pub const SYSTEM_CONFIG: &str = "/etc/jupyterhub/jupyterhub.toml";
pub const LOCAL_CONFIG: &str = "jupyterhub.toml";

/// The commented example config; `generate-config` prints it and a test parses it.
pub const EXAMPLE: &str = include_str!("../packaging/jupyterhub.toml.example");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    #[serde(rename = "JupyterHub")]
    pub hub: HubConfig,
    #[serde(rename = "Authenticator")]
    pub authenticator: AuthenticatorConfig,
    #[serde(rename = "LocalAuthenticator")]
    pub local: LocalConfig,
    #[serde(rename = "PAMAuthenticator")]
    pub pam: PamConfig,
    #[serde(rename = "DummyAuthenticator")]
    pub dummy: DummyConfig,
    #[serde(rename = "SharedPasswordAuthenticator")]
    pub shared_password: SharedPasswordConfig,
    #[serde(rename = "FirstUseAuthenticator")]
    pub first_use: FirstUseConfig,
    #[serde(rename = "GenericOAuthenticator")]
    pub generic_oauth: GenericOAuthConfig,
    #[serde(rename = "LDAPAuthenticator")]
    pub ldap: LdapConfig,
    #[serde(rename = "GitHubOAuthenticator")]
    pub github: GitHubOAuthConfig,
    #[serde(rename = "GoogleOAuthenticator")]
    pub google: GoogleOAuthConfig,
    #[serde(rename = "AzureAdOAuthenticator")]
    pub azuread: AzureAdOAuthConfig,
    #[serde(rename = "Spawner")]
    pub spawner: SpawnerConfig,
    #[serde(rename = "SystemdSpawner")]
    pub systemd_spawner: SystemdSpawnerConfig,
    #[serde(rename = "Proxy")]
    pub proxy: ProxyConfig,
    #[serde(rename = "LetsEncrypt")]
    pub letsencrypt: Option<LetsEncryptConfig>,
    /// The file this was read from, for messages; `None` for built-in defaults.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Set by `--dev` only (never from the file): servers run as the hub's own account.
    #[serde(skip)]
    pub dev: Option<DevMode>,
}

/// What `--dev` changes beyond ordinary options: servers run as the account running the hub
/// (no setuid, as upstream's `SimpleLocalProcessSpawner`), each in its own directory under
/// `state_dir`, from a Python environment the hub creates on first use.
#[derive(Debug, Clone, PartialEq)]
pub struct DevMode {
    /// The hub's state directory (the database's); users' directories are `users/NAME` in it.
    pub state_dir: PathBuf,
    /// The environment servers run from, made on first use when `manage_env`.
    pub user_env: PathBuf,
    /// The Python the environment is made from.
    pub python: PathBuf,
    /// Whether `[Spawner] cmd` is upstream's bare default, to be run from `user_env`.
    pub manage_env: bool,
}

/// Whether `program` is an executable file in a directory of `PATH`.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// `--dev`'s user environment (default `STATE/dev-user-env`); an existing venv may be named
/// to skip the download.
pub const DEV_USER_ENV_VAR: &str = "JUPYTERHUB_DEV_USER_ENV";
/// The Python `--dev` makes its environment from (default `python3` on PATH).
pub const DEV_PYTHON_VAR: &str = "JUPYTERHUB_DEV_PYTHON";

impl DevMode {
    /// Development mode for `config`: its state directory is the database's.
    pub fn for_config(config: &Config) -> DevMode {
        let db = config.db_path();
        let parent = db.parent().filter(|p| !p.as_os_str().is_empty());
        let state_dir = match parent {
            Some(p) => p.to_path_buf(),
            None => PathBuf::from("."),
        };
        let state_dir = std::path::absolute(&state_dir).unwrap_or(state_dir);
        let user_env = std::env::var_os(DEV_USER_ENV_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| state_dir.join("dev-user-env"));
        let python = std::env::var_os(DEV_PYTHON_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("python3"));
        DevMode {
            state_dir,
            user_env,
            python,
            manage_env: config.spawner.cmd == ["jupyterhub-singleuser"]
                && !on_path("jupyterhub-singleuser"),
        }
    }

    /// The command servers run from the managed environment.
    pub fn singleuser(&self) -> PathBuf {
        self.user_env.join("bin/jupyterhub-singleuser")
    }

    /// The directory that is a user's home and working directory.
    pub fn user_dir(&self, user: &str) -> PathBuf {
        // Names are normalised but may hold characters a path must not.
        let safe: String = user
            .chars()
            .map(|c| if c == '/' || c == '\0' { '_' } else { c })
            .collect();
        let safe = if safe == "." || safe == ".." {
            format!("_{safe}")
        } else {
            safe
        };
        self.state_dir.join("users").join(safe)
    }
}

/// `[JupyterHub]`: the application itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Public IP the proxy listens on (ignored under socket activation).
    pub ip: String,
    /// Public port the proxy listens on.
    pub port: u16,
    /// URL prefix of the whole hub; always starts and ends with `/`.
    pub base_url: String,
    /// Where the hub's internal API listens, for user servers and services.
    pub hub_bind_url: String,
    /// How user servers and services reach the hub, if not `hub_bind_url`.
    pub hub_connect_url: Option<String>,
    /// Public URL of the hub, e.g. `https://hub.example.org`, if it cannot be inferred.
    pub public_url: Option<String>,
    /// `sqlite:///path` or a plain path; relative paths are relative to the working directory.
    pub db_url: String,
    pub cookie_secret_file: PathBuf,
    pub cookie_max_age_days: f64,
    /// Lets admins reach other users' servers.
    pub admin_access: bool,
    pub allow_named_servers: bool,
    /// 0 means no limit.
    pub named_server_limit_per_user: u32,
    /// 0 means no limit.
    pub active_server_limit: u32,
    /// 0 means no limit.
    pub concurrent_spawn_limit: u32,
    /// `pam`, `dummy`, `shared-password`, `firstuse`, `null`, `generic-oauth`, `oidc`, `ldap`, `github`, `google` or `azuread`.
    pub authenticator_class: String,
    /// `systemd` or `local`; empty picks `systemd` when systemd is PID 1, else `local`.
    pub spawner_class: String,
    /// Apply pending database migrations at start-up instead of refusing to start.
    pub upgrade_db: bool,
    pub ssl_cert: Option<PathBuf>,
    pub ssl_key: Option<PathBuf>,
    pub subdomain_host: Option<String>,
    /// An image served at `/hub/logo` (upstream's `logo_file`).
    pub logo_file: Option<PathBuf>,
    /// Page to send logged-in users to instead of their server.
    pub default_url: Option<String>,
    pub redirect_to_server: bool,
    pub shutdown_on_logout: bool,
    pub api_page_default_limit: u32,
    pub api_page_max_limit: u32,
    pub user_redirect_limit: u32,
    /// Seconds an API start request waits before answering 202.
    pub slow_spawn_timeout: f64,
    /// Seconds an API stop request waits before answering 202.
    pub slow_stop_timeout: f64,
    /// Seconds between writes of proxy activity to the database.
    pub last_activity_interval: u64,
    /// Maximum lifetime of API-created tokens in seconds; 0 means none.
    pub token_expires_in_max_seconds: u64,
    pub oauth_token_expires_in: Option<u64>,
    pub authenticate_prometheus: bool,
    /// Directory of templates that override the built-in ones.
    pub template_paths: Vec<PathBuf>,
    /// Extra variables for every page's template (upstream's `template_vars`), e.g.
    /// `announcement`, or `announcement_login`/`_home`/`_spawn`/`_logout` for one page.
    pub template_vars: BTreeMap<String, serde_json::Value>,
    /// Tokens given by the admin: token -> user name.
    pub api_tokens: BTreeMap<String, Secret>,
    pub services: Vec<ServiceConfig>,
    pub load_roles: Vec<RoleConfig>,
    pub load_groups: BTreeMap<String, GroupConfig>,
    /// Scopes of the deployment's own, for roles and tokens (upstream 6.x): name (`custom:…`)
    /// → description and subscopes.
    pub custom_scopes: BTreeMap<String, CustomScopeConfig>,
    /// Failed logins of one user from one client address within `login_rate_window` before
    /// that pair waits (5 s, doubling per further failure, at most `login_rate_window`).
    pub login_rate_limit: u32,
    pub login_rate_window: u64,
    /// Reverse proxies (addresses or CIDR networks) whose `X-Forwarded-For` names the client,
    /// as upstream's `trusted_downstream_ips`; from any other peer the header is ignored.
    pub trusted_downstream_ips: Vec<IpRange>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            ip: String::new(),
            port: 8000,
            base_url: "/".into(),
            hub_bind_url: "http://127.0.0.1:8081".into(),
            hub_connect_url: None,
            public_url: None,
            db_url: "sqlite:///jupyterhub.sqlite".into(),
            cookie_secret_file: "jupyterhub_cookie_secret".into(),
            cookie_max_age_days: 14.0,
            admin_access: false,
            allow_named_servers: false,
            named_server_limit_per_user: 0,
            active_server_limit: 0,
            concurrent_spawn_limit: 100,
            authenticator_class: "pam".into(),
            spawner_class: String::new(),
            upgrade_db: false,
            ssl_cert: None,
            ssl_key: None,
            subdomain_host: None,
            logo_file: None,
            default_url: None,
            redirect_to_server: true,
            shutdown_on_logout: false,
            api_page_default_limit: 50,
            api_page_max_limit: 200,
            user_redirect_limit: 4,
            slow_spawn_timeout: 10.0,
            slow_stop_timeout: 10.0,
            last_activity_interval: 300,
            token_expires_in_max_seconds: 0,
            oauth_token_expires_in: None,
            authenticate_prometheus: true,
            template_paths: Vec::new(),
            template_vars: BTreeMap::new(),
            api_tokens: BTreeMap::new(),
            services: Vec::new(),
            load_roles: Vec::new(),
            load_groups: BTreeMap::new(),
            custom_scopes: BTreeMap::new(),
            login_rate_limit: 10,
            login_rate_window: 300,
            trusted_downstream_ips: Vec::new(),
        }
    }
}

/// Resource limits; each may be overridden per user or per group.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub mem_limit: Option<ByteSize>,
    pub mem_guarantee: Option<ByteSize>,
    pub cpu_limit: Option<CpuAmount>,
    pub cpu_guarantee: Option<CpuAmount>,
    pub tasks_max: Option<u64>,
}

impl Limits {
    /// Fields set in `other` replace ours.
    pub fn overlay(&mut self, other: &Limits) {
        if other.mem_limit.is_some() {
            self.mem_limit = other.mem_limit;
        }
        if other.mem_guarantee.is_some() {
            self.mem_guarantee = other.mem_guarantee;
        }
        if other.cpu_limit.is_some() {
            self.cpu_limit = other.cpu_limit;
        }
        if other.cpu_guarantee.is_some() {
            self.cpu_guarantee = other.cpu_guarantee;
        }
        if other.tasks_max.is_some() {
            self.tasks_max = other.tasks_max;
        }
    }
}

/// `[Spawner]`: options every spawner shares, named as upstream's `Spawner`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpawnerConfig {
    pub cmd: Vec<String>,
    pub args: Vec<String>,
    /// `{username}` is replaced; `~` is the user's home.
    pub notebook_dir: Option<String>,
    pub default_url: Option<String>,
    pub environment: BTreeMap<String, String>,
    /// Variables set from the user's auth_state: `NAME = "dotted.key"` (our declarative
    /// stand-in for upstream's `auth_state_hook`), e.g. `ACCESS_TOKEN = "access_token"`.
    pub auth_state_env: BTreeMap<String, String>,
    pub env_keep: Vec<String>,
    pub mem_limit: Option<ByteSize>,
    pub mem_guarantee: Option<ByteSize>,
    pub cpu_limit: Option<CpuAmount>,
    pub cpu_guarantee: Option<CpuAmount>,
    pub tasks_max: Option<u64>,
    /// Limits for single users, overriding the defaults and group limits.
    pub user_limits: BTreeMap<String, Limits>,
    /// Limits for members of hub groups, overriding the defaults.
    pub group_limits: BTreeMap<String, Limits>,
    pub start_timeout: u64,
    pub http_timeout: u64,
    pub poll_interval: u64,
    /// HTML fields shown before spawning; the answers become `user_options`.
    pub options_form: Option<String>,
    /// Server profiles to choose from (as KubeSpawner's `profile_list`, declarative): shown
    /// as the options form when `options_form` is unset, chosen by `user_options.profile`.
    pub profiles: Vec<Profile>,
    /// A command run before each spawn with the user name as argument and the spawn
    /// environment (less secrets); a non-zero exit fails the spawn.
    pub pre_spawn_hook: Vec<String>,
    /// IP user servers listen on.
    pub ip: String,
    pub debug: bool,
    pub disable_user_config: bool,
    pub oauth_client_allowed_scopes: Vec<String>,
}

impl SpawnerConfig {
    /// The limits for a user: defaults, then each of the user's groups (in name order), then the user.
    pub fn limits_for(&self, user: &str, groups: &[String]) -> Limits {
        let mut limits = Limits {
            mem_limit: self.mem_limit,
            mem_guarantee: self.mem_guarantee,
            cpu_limit: self.cpu_limit,
            cpu_guarantee: self.cpu_guarantee,
            tasks_max: self.tasks_max,
        };
        for (group, group_limits) in &self.group_limits {
            if groups.contains(group) {
                limits.overlay(group_limits);
            }
        }
        if let Some(user_limits) = self.user_limits.get(user) {
            limits.overlay(user_limits);
        }
        limits
    }
}

/// Where `jupyterhub setup-user-env` creates the Python environment user servers run from.
pub const USER_ENV_PREFIX: &str = "/opt/jupyterhub/user-env";

/// Upstream's default command is `jupyterhub-singleuser` on PATH. A packaged hub has none on
/// PATH, so once `jupyterhub setup-user-env` has created its environment, that is the default.
fn default_cmd() -> Vec<String> {
    let packaged = Path::new(USER_ENV_PREFIX).join("bin/jupyterhub-singleuser");
    if packaged.is_file() {
        vec![packaged.to_string_lossy().into_owned()]
    } else {
        vec!["jupyterhub-singleuser".into()]
    }
}

impl Default for SpawnerConfig {
    fn default() -> Self {
        SpawnerConfig {
            cmd: default_cmd(),
            args: Vec::new(),
            notebook_dir: None,
            default_url: None,
            environment: BTreeMap::new(),
            auth_state_env: BTreeMap::new(),
            env_keep: vec!["JUPYTERHUB_SINGLEUSER_APP".into()],
            mem_limit: None,
            mem_guarantee: None,
            cpu_limit: None,
            cpu_guarantee: None,
            tasks_max: None,
            user_limits: BTreeMap::new(),
            group_limits: BTreeMap::new(),
            start_timeout: 60,
            http_timeout: 30,
            poll_interval: 30,
            options_form: None,
            profiles: Vec::new(),
            pre_spawn_hook: Vec::new(),
            ip: "127.0.0.1".into(),
            debug: false,
            disable_user_config: false,
            oauth_client_allowed_scopes: Vec::new(),
        }
    }
}

/// `[SystemdSpawner]`: options of systemdspawner, the unit each server runs in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemdSpawnerConfig {
    pub slice: String,
    pub isolate_tmp: bool,
    pub isolate_devices: bool,
    pub disable_user_sudo: bool,
    pub readonly_paths: Vec<String>,
    pub readwrite_paths: Vec<String>,
    /// `Key=Value` unit settings applied last, e.g. `"IOWeight=50"`.
    pub unit_extra_properties: Vec<String>,
    /// Run servers as `DynamicUser=` with a persistent state directory as home.
    pub dynamic_users: bool,
    /// Unix socket of the privileged helper, used when the hub is not root.
    pub helper_socket: PathBuf,
    /// Directory for the root-only environment files of user units.
    pub env_dir: PathBuf,
    /// The system account a hub user's servers run as (systemdspawner's option; TLJH's
    /// `jupyter-{USERNAME}`). Also the local spawner's: one account per user either way.
    pub username_template: String,
    /// Seconds without activity after which a running server is frozen (cgroup freezer)
    /// instead of left running, and thawed by the proxy's next request to it; 0 = never.
    pub freeze_idle_after: u64,
}

impl Default for SystemdSpawnerConfig {
    fn default() -> Self {
        SystemdSpawnerConfig {
            slice: "jupyter-users.slice".into(),
            isolate_tmp: false,
            isolate_devices: false,
            // systemdspawner's default since 1.0: no sudo or setuid gains inside servers.
            disable_user_sudo: true,
            readonly_paths: Vec::new(),
            readwrite_paths: Vec::new(),
            unit_extra_properties: Vec::new(),
            dynamic_users: false,
            helper_socket: "/run/jupyterhub-helper.sock".into(),
            env_dir: "/run/jupyterhub-units".into(),
            username_template: crate::auth::accounts::USERNAME.into(),
            freeze_idle_after: 0,
        }
    }
}

/// `[Proxy]`: what one client connection may hold on the hub's ports (the built-in proxy and
/// the internal API). Not JupyterHub options (its proxy is a separate program): ours.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Seconds from the end of the previous response (or the connection) to a whole request head.
    pub header_timeout: f64,
    /// Seconds a request body may go without a byte arriving.
    pub body_timeout: f64,
    /// Seconds an idle connection is kept open waiting for its next request.
    pub keepalive_timeout: f64,
    /// Connections at once from one client address on the public port; 0 = no limit.
    pub max_connections_per_ip: u32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let limits = crate::proxy::Limits::default();
        ProxyConfig {
            header_timeout: limits.header_timeout.as_secs_f64(),
            body_timeout: limits.body_timeout.as_secs_f64(),
            keepalive_timeout: limits.keepalive_timeout.as_secs_f64(),
            max_connections_per_ip: u32::try_from(limits.max_connections_per_ip)
                .unwrap_or(u32::MAX),
        }
    }
}

impl ProxyConfig {
    /// The proxy's limits (values checked by `Config::validate`).
    pub fn limits(&self) -> crate::proxy::Limits {
        let secs = |s: f64| std::time::Duration::try_from_secs_f64(s).unwrap_or_default();
        crate::proxy::Limits {
            header_timeout: secs(self.header_timeout),
            body_timeout: secs(self.body_timeout),
            keepalive_timeout: secs(self.keepalive_timeout),
            max_connections_per_ip: self.max_connections_per_ip as usize,
        }
    }
}

/// A managed (or runtime) service's name: it is part of a unit name and of URLs.
pub fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.len() <= 200
}

/// One entry of `[[JupyterHub.services]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    pub name: String,
    pub url: Option<String>,
    pub api_token: Option<Secret>,
    /// A managed service: the hub runs this command.
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub user: Option<String>,
    pub cwd: Option<String>,
    pub oauth_no_confirm: bool,
    pub oauth_client_id: Option<String>,
    pub oauth_redirect_uri: Option<String>,
    pub oauth_client_allowed_scopes: Vec<String>,
    pub display: Option<bool>,
    pub info: BTreeMap<String, String>,
    /// Deprecated upstream in favour of roles, still honoured.
    pub admin: bool,
    /// A managed service's limits (ours, not upstream's): as `Spawner.mem_limit` and
    /// `cpu_limit`, enforced by its unit under systemd.
    pub mem_limit: Option<ByteSize>,
    pub cpu_limit: Option<CpuAmount>,
    /// Further properties of a managed service's unit, as `SystemdSpawner.unit_extra_properties`.
    pub unit_extra_properties: Vec<String>,
}

impl ServiceConfig {
    /// Upstream's `Service.managed`: the hub runs it.
    pub fn managed(&self) -> bool {
        !self.command.is_empty()
    }

    fn names_dup(&self, all: &[ServiceConfig], index: usize) -> bool {
        all[..index].iter().any(|other| other.name == self.name)
    }
}

/// One entry of `[[JupyterHub.load_roles]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleConfig {
    pub name: String,
    pub description: Option<String>,
    pub scopes: Vec<String>,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub services: Vec<String>,
}

/// One entry of `[JupyterHub.custom_scopes."custom:NAME"]`; a description is required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomScopeConfig {
    pub description: String,
    #[serde(default)]
    pub subscopes: Vec<String>,
}

/// One entry of `[JupyterHub.load_groups.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    pub users: Vec<String>,
    pub properties: serde_json::Map<String, serde_json::Value>,
}

impl Config {
    /// The default path: `/etc/jupyterhub/jupyterhub.toml` if it exists, then
    /// `./jupyterhub.toml`, else none (built-in defaults).
    pub fn default_path() -> Option<PathBuf> {
        [SYSTEM_CONFIG, LOCAL_CONFIG]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    }

    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|message| Error::Parse {
            path: path.to_owned(),
            message,
        })?;
        config.source = Some(path.to_owned());
        config.validate().map_err(|message| Error::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Parse TOML text; the error names line, column and key.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.normalize();
        Ok(config)
    }

    fn normalize(&mut self) {
        let base = &mut self.hub.base_url;
        if !base.starts_with('/') {
            base.insert(0, '/');
        }
        if !base.ends_with('/') {
            base.push('/');
        }
        self.hub.authenticator_class = self.hub.authenticator_class.to_ascii_lowercase();
        self.hub.spawner_class = self.hub.spawner_class.to_ascii_lowercase();
    }

    /// Cross-field checks that serde cannot express; messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        let hub = &self.hub;
        let known_auth = [
            "pam",
            "dummy",
            "shared-password",
            "firstuse",
            "null",
            "generic-oauth",
            "oidc",
            "ldap",
            "github",
            "google",
            "azuread",
        ];
        if !known_auth.contains(&hub.authenticator_class.as_str()) {
            return Err(format!(
                "JupyterHub.authenticator_class: unknown authenticator {:?}, expected one of {}",
                hub.authenticator_class,
                known_auth.join(", ")
            ));
        }
        if !["", "systemd", "local"].contains(&hub.spawner_class.as_str()) {
            return Err(format!(
                "JupyterHub.spawner_class: unknown spawner {:?}, expected systemd or local",
                hub.spawner_class
            ));
        }
        if self.systemd_spawner.freeze_idle_after > 0 && hub.spawner_class == "local" {
            return Err(
                "SystemdSpawner.freeze_idle_after: only the systemd spawner can freeze servers \
                 (JupyterHub.spawner_class is \"local\")"
                    .into(),
            );
        }
        for (key, value) in [
            ("hub_bind_url", Some(&hub.hub_bind_url)),
            ("hub_connect_url", hub.hub_connect_url.as_ref()),
            ("public_url", hub.public_url.as_ref()),
        ] {
            if let Some(value) = value {
                let url = url::Url::parse(value)
                    .map_err(|e| format!("JupyterHub.{key}: invalid URL {value:?}: {e}"))?;
                if !["http", "https"].contains(&url.scheme()) {
                    return Err(format!(
                        "JupyterHub.{key}: {value:?} must be an http or https URL"
                    ));
                }
            }
        }
        if hub.ssl_cert.is_some() != hub.ssl_key.is_some() {
            return Err("JupyterHub.ssl_cert and JupyterHub.ssl_key must be set together".into());
        }
        self.letsencrypt
            .as_ref()
            .map_or(Ok(()), |l| l.validate(self))?;
        authenticators::check_sections(self)?;
        oauth_presets::check(self)?;
        if self.spawner.cmd.is_empty() {
            return Err("Spawner.cmd: must not be empty".into());
        }
        for (i, service) in hub.services.iter().enumerate() {
            if service.name.is_empty() || service.name.contains('/') {
                return Err(format!(
                    "JupyterHub.services[{i}].name: {:?} is not a valid service name",
                    service.name
                ));
            }
            // Keys that only mean something for a process the hub runs: refused, not ignored.
            if !service.managed() {
                let set = [
                    ("environment", !service.environment.is_empty()),
                    ("user", service.user.is_some()),
                    ("cwd", service.cwd.is_some()),
                    ("mem_limit", service.mem_limit.is_some()),
                    ("cpu_limit", service.cpu_limit.is_some()),
                    (
                        "unit_extra_properties",
                        !service.unit_extra_properties.is_empty(),
                    ),
                ];
                if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "JupyterHub.services[{i}].{key}: only a managed service (one with a \
                         command) has {key}; {:?} has no command",
                        service.name
                    ));
                }
            } else if !valid_service_name(&service.name) {
                return Err(format!(
                    "JupyterHub.services[{i}].name: {:?}: a managed service's name is letters, \
                     digits, '.', '_' and '-', starting with a letter or digit",
                    service.name
                ));
            }
            for key in service.environment.keys() {
                if !valid_env_name(key) {
                    return Err(format!(
                        "JupyterHub.services[{i}].environment: {key:?} is not a variable name"
                    ));
                }
            }
            for property in &service.unit_extra_properties {
                if let Err(e) = crate::systemd::properties::parse(property) {
                    return Err(format!(
                        "JupyterHub.services[{i}].unit_extra_properties: {e}"
                    ));
                }
            }
            if service.names_dup(&hub.services, i) {
                return Err(format!(
                    "JupyterHub.services[{i}].name: {:?} is declared twice",
                    service.name
                ));
            }
            if let Some(token) = &service.api_token
                && token.expose().len() < 8
            {
                return Err(format!(
                    "JupyterHub.services[{i}].api_token: must be at least 8 characters"
                ));
            }
        }
        for (token, user) in &hub.api_tokens {
            if token.len() < 8 || token.len() > 64 {
                return Err(format!(
                    "JupyterHub.api_tokens: the token for {:?} must be 8 to 64 characters",
                    user.expose()
                ));
            }
        }
        let custom_scopes = self.custom_scopes();
        crate::rbac::check_custom_scopes(&custom_scopes)
            .map_err(|e| format!("JupyterHub.custom_scopes: {e}"))?;
        for (i, role) in hub.load_roles.iter().enumerate() {
            if role.name.is_empty() {
                return Err(format!(
                    "JupyterHub.load_roles[{i}].name: must not be empty"
                ));
            }
            crate::rbac::validate_with(&role.scopes, &custom_scopes).map_err(|e| {
                format!(
                    "JupyterHub.load_roles[{i}].scopes: role {:?}: {e}",
                    role.name
                )
            })?;
        }
        let proxy = &self.proxy;
        for (key, value) in [
            ("header_timeout", proxy.header_timeout),
            ("body_timeout", proxy.body_timeout),
            ("keepalive_timeout", proxy.keepalive_timeout),
        ] {
            // A day is far more than any client needs; zero or less would close everything.
            if !(value > 0.0 && value <= 86400.0) {
                return Err(format!(
                    "Proxy.{key}: {value} must be more than 0 and at most 86400 seconds"
                ));
            }
        }
        // Parsed for upstream's configs, but not built yet: refused rather than ignored.
        if hub.subdomain_host.as_deref().is_some_and(|h| !h.is_empty()) {
            return Err(
                "JupyterHub.subdomain_host: per-user subdomains are not supported yet; remove \
                 the key (servers are then served under /user/NAME/ on the hub's host)"
                    .into(),
            );
        }
        if self.authenticator.auto_login && self.oauth_settings().is_none() {
            return Err(format!(
                "Authenticator.auto_login: the {:?} authenticator has no login page of its own \
                 to send people to; remove the key",
                hub.authenticator_class
            ));
        }
        if let Some((scheme, _)) = hub.db_url.split_once("://")
            && scheme != "sqlite"
        {
            return Err(format!(
                "JupyterHub.db_url: only SQLite is supported (sqlite:///PATH, or a file path), \
                 not {scheme}://"
            ));
        }
        authenticators::check_system_accounts(self)?;
        for property in &self.systemd_spawner.unit_extra_properties {
            if !property.contains('=') {
                return Err(format!(
                    "SystemdSpawner.unit_extra_properties: {property:?} is not Key=Value"
                ));
            }
        }
        authenticators::check_auth_state_env(self)?;
        self.validate_profiles()
    }

    /// `JupyterHub.custom_scopes` as the scope registry takes them.
    pub fn custom_scopes(&self) -> Vec<crate::rbac::CustomScope> {
        self.hub
            .custom_scopes
            .iter()
            .map(|(name, scope)| crate::rbac::CustomScope {
                name: name.clone(),
                description: scope.description.clone(),
                subscopes: scope.subscopes.clone(),
            })
            .collect()
    }

    /// The SQLite file named by `db_url`.
    pub fn db_path(&self) -> PathBuf {
        let url = &self.hub.db_url;
        let path = url
            .strip_prefix("sqlite:///")
            .or_else(|| url.strip_prefix("sqlite://"))
            .unwrap_or(url);
        PathBuf::from(path)
    }

    /// Defaults for tests: SQLite and cookie secret in `dir`, dummy authenticator, local spawner.
    pub fn for_tests(dir: &Path) -> Config {
        let mut config = Config::default();
        config.hub.db_url = dir.join("jupyterhub.sqlite").display().to_string();
        config.hub.cookie_secret_file = dir.join("jupyterhub_cookie_secret");
        config.hub.authenticator_class = "dummy".into();
        config.hub.spawner_class = "local".into();
        config.hub.hub_bind_url = "http://127.0.0.1:0".into();
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_matches_defaults() {
        let config = Config::parse(EXAMPLE).expect("example config parses");
        config.validate().expect("example config is valid");
        assert_eq!(config.hub.port, HubConfig::default().port);
        assert_eq!(config.spawner.cmd, SpawnerConfig::default().cmd);
        assert_eq!(config.proxy.limits(), crate::proxy::Limits::default());
        // The short file the packages install in /etc: valid, and all defaults.
        let packaged = Config::parse(include_str!("../packaging/jupyterhub.toml"))
            .expect("packaged config parses");
        packaged.validate().expect("packaged config is valid");
        assert_eq!(packaged.hub.port, HubConfig::default().port);
    }

    #[test]
    fn proxy_limits() {
        let config = Config::parse(
            "[Proxy]\nheader_timeout = 1.5\nbody_timeout = 2\nkeepalive_timeout = 0.25\nmax_connections_per_ip = 0\n",
        )
        .expect("parses");
        config.validate().expect("valid");
        let limits = config.proxy.limits();
        assert_eq!(
            limits.header_timeout,
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(limits.body_timeout, std::time::Duration::from_secs(2));
        assert_eq!(
            limits.keepalive_timeout,
            std::time::Duration::from_millis(250)
        );
        assert_eq!(limits.max_connections_per_ip, 0);
        let err = Config::parse("[Proxy]\nheader_timout = 1\n").expect_err("unknown key");
        assert!(err.contains("header_timout"), "{err}");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = Config::parse("[Spawner]\nmem_limt = \"2G\"\n").expect_err("unknown key");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("mem_limt"), "{err}");
    }

    #[test]
    fn bad_size_names_line() {
        let err = Config::parse("[Spawner]\n\nmem_limit = \"2X\"\n").expect_err("bad size");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("2X"), "{err}");
    }

    #[test]
    fn limits_and_overrides() {
        let config = Config::parse(
            "[Spawner]\nmem_limit = \"2G\"\ncpu_limit = 1.5\n[Spawner.user_limits.alice]\nmem_limit = \"4G\"\n",
        )
        .expect("parses");
        assert_eq!(config.spawner.mem_limit, Some(ByteSize(2 << 30)));
        let alice = config.spawner.limits_for("alice", &[]);
        assert_eq!(alice.mem_limit, Some(ByteSize(4 << 30)));
        assert_eq!(alice.cpu_limit, Some(CpuAmount(1.5)));
        assert_eq!(
            config.spawner.user_limits["alice"].mem_limit,
            Some(ByteSize(4 << 30))
        );
    }

    #[test]
    fn base_url_is_normalized() {
        let config = Config::parse("[JupyterHub]\nbase_url = \"jh\"\n").expect("parses");
        assert_eq!(config.hub.base_url, "/jh/");
    }

    #[test]
    fn custom_scopes_are_checked_with_the_roles_using_them() {
        let good = "[JupyterHub.custom_scopes.\"custom:read:thing\"]\ndescription = \"read things\"\nsubscopes = [\"custom:read:thing:part\"]\n\
                    [JupyterHub.custom_scopes.\"custom:read:thing:part\"]\ndescription = \"part of things\"\n\
                    [[JupyterHub.load_roles]]\nname = \"thing-reader\"\nscopes = [\"custom:read:thing!user=alice\"]\n";
        let config = Config::parse(good).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.custom_scopes().len(), 2);
        for (text, needle) in [
            (
                "[JupyterHub.custom_scopes.\"notcustom:x\"]\ndescription = \"d\"\n",
                "notcustom:x",
            ),
            (
                "[JupyterHub.custom_scopes.\"custom:x-\"]\ndescription = \"d\"\n",
                "Invalid scope name",
            ),
            (
                "[JupyterHub.custom_scopes.\"custom:abc\"]\ndescription = \"d\"\nsubscopes = [\"custom:nope\"]\n",
                "subscope custom:nope in custom:abc not found",
            ),
            (
                "[JupyterHub.custom_scopes.\"custom:abc\"]\ndescription = \"d\"\nsubscopes = [\"read:users\"]\n",
                "non-custom subscope read:users",
            ),
            (
                "[[JupyterHub.load_roles]]\nname = \"r1x\"\nscopes = [\"custom:undefined\"]\n",
                "JupyterHub.load_roles[0].scopes",
            ),
        ] {
            let config = Config::parse(text).expect(text);
            let err = config.validate().expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
        let err = Config::parse("[JupyterHub.custom_scopes.\"custom:abc\"]\nsubscopes = []\n")
            .expect_err("no description");
        assert!(err.contains("description"), "{err}");
        let err = Config::parse(
            "[JupyterHub.custom_scopes.\"custom:abc\"]\ndescription = \"d\"\nsubscope = []\n",
        )
        .expect_err("unknown key");
        assert!(err.contains("subscope"), "{err}");
    }

    #[test]
    fn oauth_section_refuses_unknown_keys() {
        let ok = Config::parse(
            "[GenericOAuthenticator]\nclient_id = \"hub\"\nclaim_groups_key = \"groups\"\n",
        )
        .expect("parses");
        assert_eq!(
            ok.generic_oauth.groups_key(),
            Some("groups"),
            "the deprecated alias"
        );
        let upstream = Config::parse(
            "[GenericOAuthenticator]\nclient_id = \"hub\"\nauth_state_groups_key = \"oauth_user.org.teams\"\n",
        )
        .expect("parses");
        assert_eq!(
            upstream.generic_oauth.groups_key(),
            Some("org.teams"),
            "upstream's path in auth_state"
        );
        assert_eq!(
            ok.generic_oauth.username_claim, "username",
            "OAuthenticator's default"
        );
        assert!(ok.generic_oauth.basic_auth);
        // Options every authenticator shares live in [Authenticator], with upstream's defaults.
        assert_eq!(ok.authenticator.auth_refresh_age, 300);
        assert!(!ok.authenticator.refresh_pre_spawn);
        let refresh =
            Config::parse("[Authenticator]\nauth_refresh_age = 60\nrefresh_pre_spawn = true\n")
                .expect("refresh options");
        assert_eq!(refresh.authenticator.auth_refresh_age, 60);
        assert!(refresh.authenticator.refresh_pre_spawn);
        let err = Config::parse("[GenericOAuthenticator]\nrefresh_pre_spawn = true\n")
            .expect_err("unknown key");
        assert!(err.to_string().contains("refresh_pre_spawn"), "{err}");
    }

    #[test]
    fn cross_field_errors() {
        for (text, needle) in [
            (
                "[JupyterHub]\nauthenticator_class = \"kerberos\"\n",
                "authenticator_class",
            ),
            ("[JupyterHub]\nssl_cert = \"/x\"\n", "ssl_key"),
            ("[JupyterHub]\nhub_bind_url = \"nope\"\n", "hub_bind_url"),
            (
                "[Spawner]\nauth_state_env = { TOKEN = \"access_token\" }\n",
                "enable_auth_state",
            ),
            (
                "[Authenticator]\nenable_auth_state = true\n\
                 [Spawner]\nauth_state_env = { \"1X\" = \"access_token\" }\n",
                "not a valid environment variable name",
            ),
            (
                "[Authenticator]\nenable_auth_state = true\n\
                 [Spawner]\nauth_state_env = { JUPYTERHUB_USER = \"name\" }\n",
                "the hub's own variables",
            ),
            (
                "[Authenticator]\nenable_auth_state = true\n\
                 [Spawner]\nenvironment = { T = \"x\" }\nauth_state_env = { T = \"a\" }\n",
                "also in Spawner.environment",
            ),
            ("[Proxy]\nbody_timeout = 0\n", "Proxy.body_timeout"),
            ("[Proxy]\nheader_timeout = -1.5\n", "Proxy.header_timeout"),
            (
                "[JupyterHub]\nauthenticator_class = \"shared-password\"\n",
                "user_password",
            ),
            (
                "[JupyterHub]\nauthenticator_class = \"dummy\"\n\
                 [LocalAuthenticator]\ncreate_system_users = true\n",
                "LocalAuthenticator.create_system_users",
            ),
            (
                "[JupyterHub]\nauthenticator_class = \"null\"\n\
                 [PAMAuthenticator]\ncreate_system_users = true\n",
                "PAMAuthenticator.create_system_users",
            ),
            (
                "[LocalAuthenticator]\ncreate_system_users = true\n\
                 [SystemdSpawner]\ndynamic_users = true\n",
                "dynamic_users",
            ),
            (
                "[SystemdSpawner]\nusername_template = \"jupyter\"\n",
                "SystemdSpawner.username_template",
            ),
            (
                "[SystemdSpawner]\nusername_template = \"j/{USERNAME}\"\n",
                "SystemdSpawner.username_template",
            ),
            (
                "[JupyterHub]\nauthenticator_class = \"oidc\"\n[GenericOAuthenticator]\n\
                 client_id = \"hub\"\noauth_callback_url = \"https://hub.test/hub/oauth_callback\"\n",
                "GenericOAuthenticator.oidc_issuer",
            ),
            (
                "[JupyterHub]\nauthenticator_class = \"generic-oauth\"\n[GenericOAuthenticator]\n\
                 client_id = \"hub\"\noauth_callback_url = \"https://hub.test/cb\"\n\
                 authorize_url = \"https://idp.test/a\"\ntoken_url = \"https://idp.test/t\"\n\
                 userdata_url = \"https://idp.test/u\"\nallowed_groups = [\"staff\"]\n",
                "auth_state_groups_key",
            ),
            (
                "[JupyterHub]\nauthenticator_class = \"generic-oauth\"\n[GenericOAuthenticator]\n\
                 client_id = \"hub\"\noauth_callback_url = \"https://hub.test/cb\"\n\
                 authorize_url = \"https://idp.test/a\"\ntoken_url = \"https://idp.test/t\"\n",
                "userdata_url",
            ),
            (
                "[Authenticator]\nauto_login = true\n",
                "Authenticator.auto_login",
            ),
        ] {
            let config = Config::parse(text).expect("parses");
            let err = config.validate().expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
        for text in [
            "[LocalAuthenticator]\ncreate_system_users = true\n\
             [SystemdSpawner]\nusername_template = \"jupyter-{USERNAME}\"\n",
            "[JupyterHub]\nauthenticator_class = \"firstuse\"\n\
             [PAMAuthenticator]\ncreate_system_users = true\n",
        ] {
            let config = Config::parse(text).expect("parses");
            config.validate().expect(text);
            assert!(config.create_system_users());
        }
    }
}
