//! The `Hub`: one cheap-to-clone handle on everything the hub owns (config, database,
//! authenticator, spawner, routes, running-server state) and the domain verbs handlers call.
//! Handlers never touch `db` or `systemd` directly; they call a method here (the fields are
//! private to `hub`, and `tests/tidy.rs` checks that handlers do not name `db`).

mod cache;
mod freeze;
mod groups;
mod identity;
mod login;
mod managed;
mod metrics;
mod oauth;
mod observe;
mod profiles;
mod reconcile;
mod refresh;
mod routes;
mod servers;
mod services;
mod shares;
mod spawn;
mod sync;
mod tokens;
mod users;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::auth::cookie::CookieSecret;
use crate::auth::{self, Authenticator, Policy};
use crate::config::Config;
use crate::db::{self, Db};
use crate::proxy::RouteTable;
use crate::spawner::{self, Spawner};

pub use crate::db::Error as DbError;
pub use crate::db::{
    ClientOwner, GroupRow, OAuthClientRow, ServiceRow, SpawnerRow, TokenRow, UserRow,
};
pub use cache::Stamp;
pub use identity::{Identity, Principal};
pub use login::{LoginLimiter, OAuthCallback};
pub use oauth::CodeRequest;
pub use servers::{
    Outcome, Progress, ServerKey, ServerPatch, ServerState, StopOutcome, escape_path,
};
pub use services::ServiceSpec;
pub use shares::{DEFAULT_CODE_EXPIRES_IN, ShareTarget};
pub use tokens::TokenRequest;
pub use users::UserListQuery;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    /// The thing exists but is not the API's to change (a config service): upstream's 405.
    #[error("{0}")]
    NotModifiable(String),
    /// Credentials are valid but lack the scope entirely.
    #[error("Action is not authorized with current scopes; requires any of [{0}]")]
    MissingScope(String),
    /// The scope is held but its filter does not cover the resource: upstream answers 404.
    #[error("No access to resources or resources not found")]
    NoAccess,
    #[error("{0}")]
    Forbidden(String),
    #[error("Missing or invalid credentials.")]
    Unauthenticated,
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    #[error("{0}")]
    SpawnFailed(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(#[from] db::Error),
    #[error(transparent)]
    Auth(#[from] auth::Error),
    #[error(transparent)]
    Spawner(#[from] spawner::Error),
    #[error(transparent)]
    Rbac(#[from] crate::rbac::Error),
    #[error(transparent)]
    Cookie(#[from] auth::cookie::Error),
    #[error("auth_state: {0}")]
    Crypt(String),
    #[error(transparent)]
    OAuth(#[from] auth::oauth2::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether `open` prepares for serving (reconcile servers, start watchers) or only for a CLI
/// command such as `jupyterhub token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Offline,
}

#[derive(Clone)]
pub struct Hub(Arc<Inner>);

/// What the hub owns. The fields are private to `hub` (and so the database is reachable only
/// from here): handlers call `Hub` verbs, and read what they may through the accessors below.
pub struct Inner {
    config: Config,
    /// Shared with the first-use authenticator's password store.
    db: Arc<Db>,
    secret: CookieSecret,
    authenticator: Arc<dyn Authenticator>,
    /// The identity provider's client, for `generic-oauth`, `oidc` and the presets.
    oauth: Option<Arc<auth::oauth2::Client>>,
    policy: Policy,
    spawner: Arc<dyn Spawner>,
    /// Runs the config's managed services.
    services: crate::services::Supervisor,
    routes: Arc<RouteTable>,
    /// Counted, so remembered answers that show server state know when it changed.
    servers: cache::Counted<HashMap<ServerKey, ServerState>>,
    /// Rendered `GET /hub/api/user` answers (`hub/cache.rs`).
    answers: cache::Answers,
    /// Each route's activity as last written by `flush_route_activity`.
    flushed_activity: Mutex<HashMap<String, i64>>,
    login_limiter: LoginLimiter,
    shutdown: CancellationToken,
    /// The internal API URL user servers and services use (`…/hub/api`), set once bound.
    api_url: Mutex<String>,
    crypt: Option<fernet::MultiFernet>,
    /// Serialises PAM conversations: failed attempts sleep inside libpam.
    pam_permits: tokio::sync::Semaphore,
    /// API tokens already checked against their (slow) stored hash.
    verified_tokens: crate::auth::VerifiedTokens,
    /// Identities of recent API tokens, valid while the database is unwritten since.
    token_identities: identity::TokenIdentities,
    /// When each user's identity provider login was last checked.
    refreshes: refresh::Refreshes,
    metrics: crate::metrics::Metrics,
    /// When `open` began, for `hub_startup_duration_seconds`.
    opened: std::time::Instant,
    /// The public port's ACME client (`[LetsEncrypt]`), set once listening.
    acme: std::sync::OnceLock<Arc<crate::proxy::Acme>>,
    /// Whether idle servers are still frozen (`freeze_idle_after`).
    freezing: freeze::Freezing,
    /// Readiness waits in progress: they probe less often each when many run at once.
    readiness_waits: std::sync::atomic::AtomicUsize,
}

impl std::ops::Deref for Hub {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

fn crypt_keys() -> Result<Option<fernet::MultiFernet>> {
    use base64::Engine;
    let Ok(value) = std::env::var("JUPYTERHUB_CRYPT_KEY") else {
        return Ok(None);
    };
    let mut keys = Vec::new();
    for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let raw = if part.len() == 44 {
            base64::engine::general_purpose::URL_SAFE
                .decode(part)
                .map_err(|e| Error::Crypt(format!("JUPYTERHUB_CRYPT_KEY: {e}")))?
        } else if part.len() == 64 {
            hex::decode(part).map_err(|e| Error::Crypt(format!("JUPYTERHUB_CRYPT_KEY: {e}")))?
        } else {
            part.as_bytes().to_vec()
        };
        if raw.len() != 32 {
            return Err(Error::Crypt(
                "JUPYTERHUB_CRYPT_KEY: each key must be 32 bytes (44 chars base64url or 64 hex)"
                    .into(),
            ));
        }
        let key = fernet::Fernet::new(&base64::engine::general_purpose::URL_SAFE.encode(&raw))
            .ok_or_else(|| Error::Crypt("JUPYTERHUB_CRYPT_KEY: invalid key".into()))?;
        keys.push(key);
    }
    Ok((!keys.is_empty()).then(|| fernet::MultiFernet::new(keys)))
}

fn make_authenticator(config: &Config, db: &Arc<Db>) -> Result<Arc<dyn Authenticator>> {
    Ok(match config.hub.authenticator_class.as_str() {
        "firstuse" => Arc::new(auth::first_use::FirstUse {
            store: Arc::new(login::Passwords(Arc::clone(db))),
            create_users: config.first_use.create_users,
            min_password_length: config.first_use.min_password_length,
        }),
        "dummy" => Arc::new(auth::Dummy {
            password: config
                .dummy
                .password
                .as_ref()
                .map(|p| p.expose().to_owned()),
        }),
        "shared-password" => Arc::new(auth::SharedPassword {
            user_password: config
                .shared_password
                .user_password
                .as_ref()
                .map(|p| p.expose().to_owned()),
            admin_password: config
                .shared_password
                .admin_password
                .as_ref()
                .map(|p| p.expose().to_owned()),
        }),
        "null" => Arc::new(auth::Null),
        "generic-oauth" | "oidc" | "github" | "google" | "azuread" => Arc::new(auth::oauth2::OAuth),
        "ldap" => Arc::new(auth::ldap::LdapAuth::new(&config.ldap)?),
        _ => Arc::new(auth::pam::Pam::from_config(config)),
    })
}

/// `systemd` when asked, or by default when systemd is PID 1; else `local`.
pub fn spawner_class(config: &Config) -> &'static str {
    match config.hub.spawner_class.as_str() {
        "systemd" => "systemd",
        "local" => "local",
        _ if crate::systemd::is_pid1() => "systemd",
        _ => "local",
    }
}

impl Hub {
    /// Open the database, load secrets, sync config-defined roles, groups, services and
    /// tokens. In `Mode::Serve` the caller then binds listeners and calls `reconcile`.
    pub async fn open(config: Config, mode: Mode) -> Result<Hub> {
        let opened = std::time::Instant::now();
        let db = Arc::new(Db::open(&config.db_path(), config.hub.upgrade_db)?);
        let env_secret = std::env::var("JPY_COOKIE_SECRET").ok();
        let secret = CookieSecret::load(&config.hub.cookie_secret_file, env_secret.as_deref())?;
        let crypt = crypt_keys()?;
        if config.authenticator.enable_auth_state && crypt.is_none() {
            return Err(Error::Crypt(
                "enable_auth_state requires JUPYTERHUB_CRYPT_KEY".into(),
            ));
        }
        let authenticator = make_authenticator(&config, &db)?;
        let oauth = auth::oauth2::Client::from_config(&config).map(Arc::new);
        let policy = Policy::from_config(&config, authenticator.allows_all_by_default());
        // CLI commands never spawn, so they need no D-Bus connection.
        let spawner: Arc<dyn Spawner> = match spawner_class(&config) {
            "systemd" if mode == Mode::Serve => {
                Arc::new(spawner::systemd::SystemdSpawner::connect(Arc::new(config.clone())).await?)
            }
            _ if config.dev.is_some() => Arc::new(spawner::local::LocalSpawner::without_setuid()),
            _ => Arc::new(spawner::local::LocalSpawner::new()),
        };
        // Services run the way servers do: units under the systemd spawner, else children.
        let services = match spawner_class(&config) {
            "systemd" if mode == Mode::Serve => {
                crate::services::Supervisor::connect_systemd(Arc::new(config.clone()))
                    .await
                    .map_err(spawner::Error::from)?
            }
            _ => crate::services::Supervisor::local(config.dev.is_none()),
        };
        let hub = Hub(Arc::new(Inner {
            login_limiter: LoginLimiter::new(
                config.hub.login_rate_limit,
                config.hub.login_rate_window,
            ),
            api_url: Mutex::new(format!(
                "{}/hub/api",
                config.hub.hub_bind_url.trim_end_matches('/')
            )),
            config,
            db,
            secret,
            authenticator,
            oauth,
            policy,
            spawner,
            services,
            routes: Arc::new(RouteTable::new()),
            servers: cache::Counted::new(HashMap::new()),
            answers: Default::default(),
            flushed_activity: Default::default(),
            shutdown: CancellationToken::new(),
            crypt,
            pam_permits: tokio::sync::Semaphore::new(4),
            verified_tokens: Default::default(),
            token_identities: Default::default(),
            refreshes: Default::default(),
            metrics: crate::metrics::Metrics::new(),
            opened,
            acme: std::sync::OnceLock::new(),
            freezing: Default::default(),
            readiness_waits: Default::default(),
        }));
        hub.sync_config()?;
        if mode == Mode::Serve {
            hub.check_existing_users()?;
            hub.add_config_accounts().await;
            hub.db
                .write(|tx| db::purge_expired_tokens(tx, crate::time::now()))?;
        }
        Ok(hub)
    }

    /// `jupyterhub upgrade-db`: apply pending migrations after a backup, without opening the
    /// hub. Returns the backup's path, or `None` when the schema was current.
    pub fn upgrade_db(config: &Config) -> Result<Option<std::path::PathBuf>> {
        Ok(Db::upgrade(&config.db_path())?)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The proxy's route table, for wiring the proxy to the hub.
    pub fn routes(&self) -> &Arc<RouteTable> {
        &self.routes
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The public port's ACME client, once `app::serve` has made it.
    pub fn set_acme(&self, acme: Arc<crate::proxy::Acme>) {
        let _ = self.acme.set(acme);
    }

    /// The certificate's expiry and the last ACME failure (the CA's words, and when), for
    /// admins: the admin panel and `GET /info`. `None` without `[LetsEncrypt]`.
    pub fn acme_report(&self) -> Option<serde_json::Value> {
        let status = self.acme.get()?.status();
        let at = |t: Option<std::time::SystemTime>| {
            t.and_then(|t| jiff::Timestamp::try_from(t).ok())
                .map(|t| t.to_string())
        };
        Some(serde_json::json!({
            "domains": self.config.letsencrypt.as_ref().map(|l| l.domains.clone()),
            "not_after": at(status.not_after),
            "last_error": status.last_error,
            "last_error_at": at(status.last_error_at),
        }))
    }

    /// Upstream's `hub_startup_duration_seconds`: from opening the hub to serving.
    pub fn record_startup(&self) {
        self.metrics
            .hub_startup
            .observe(self.opened.elapsed().as_secs_f64());
    }

    /// Signs and checks the login cookie and XSRF tokens.
    pub fn secret(&self) -> &CookieSecret {
        &self.secret
    }

    /// Cancelled when the hub stops.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Stop the hub shortly: the answer to the request that asked goes out first.
    pub fn shutdown_soon(&self) {
        let stopper = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            stopper.cancel();
        });
    }

    pub fn authenticator_name(&self) -> &'static str {
        self.authenticator.name()
    }

    /// Whether the login page shows a username/password form.
    /// The identity provider's client when logins go through one.
    pub fn oauth(&self) -> Option<&auth::oauth2::Client> {
        self.oauth.as_deref()
    }

    pub fn has_login_form(&self) -> bool {
        self.authenticator.has_login_form()
    }

    pub fn spawner_name(&self) -> &'static str {
        self.spawner.name()
    }

    /// Whether the spawner enforces memory and CPU limits.
    pub fn spawner_supports_limits(&self) -> bool {
        self.spawner.supports_limits()
    }

    pub fn base_url(&self) -> &str {
        &self.config.hub.base_url
    }

    /// `{base_url}hub/`.
    pub fn hub_prefix(&self) -> String {
        format!("{}hub/", self.config.hub.base_url)
    }

    pub fn set_api_url(&self, url: String) {
        *self.api_url.lock().unwrap_or_else(|e| e.into_inner()) = url;
    }

    /// The API URL servers get in `JUPYTERHUB_API_URL`: `hub_connect_url` if set, else the
    /// bound internal listener.
    pub fn api_url(&self) -> String {
        match &self.config.hub.hub_connect_url {
            Some(url) => format!("{}{}hub/api", url.trim_end_matches('/'), self.base_url()),
            None => self
                .api_url
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Bring the user and server gauges up to date (cheap: one count query).
    pub fn refresh_gauges(&self) {
        let users = self.db.read(db::count_users).unwrap_or(0);
        let servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        self.metrics.total_users.set(users);
        self.metrics
            .running_servers
            .set(servers.values().filter(|s| s.is_ready()).count() as i64);
        self.metrics
            .pending_servers
            .set(servers.values().filter(|s| s.pending().is_some()).count() as i64);
    }

    /// Counts for `STATUS=` and metrics.
    pub fn status_line(&self) -> String {
        let users = self.db.read(db::count_users).unwrap_or(0);
        let servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        let running = servers.values().filter(|s| s.is_ready()).count();
        let pending = servers.values().filter(|s| s.pending().is_some()).count();
        format!("{users} users, {running} servers running, {pending} pending")
    }
}
