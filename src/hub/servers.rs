//! User servers: the spawn and stop lifecycle (pending spawn → ready → pending stop →
//! stopped), progress events, readiness checks, routes, and reconciling with the spawner
//! after a hub restart. The database row is written before the action it records.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::db::{self, NewToken, OAuthClientRow, SpawnerRow, TokenOwner, UserRow};
use crate::proxy::Target;
use crate::rbac;
use crate::spawner::{LimitsSpec, SpawnRequest, Status};

use super::{Error, Hub, Result};

/// (user id, server name); the default server's name is empty.
pub type ServerKey = (i64, String);

/// One progress event, as the progress stream sends it.
pub type Progress = Value;

/// What the hub knows about a server beyond its database row.
pub struct ServerState {
    pending: Option<&'static str>,
    ready: bool,
    /// Events so far; the stream sends each new one.
    pub events: watch::Sender<Vec<Progress>>,
}

impl ServerState {
    fn new(pending: Option<&'static str>) -> ServerState {
        ServerState {
            pending,
            ready: false,
            events: watch::channel(Vec::new()).0,
        }
    }
    pub fn pending(&self) -> Option<&'static str> {
        self.pending
    }
    pub fn is_ready(&self) -> bool {
        self.ready
    }
    fn push(&self, event: Progress) {
        self.events.send_modify(|events| events.push(event));
    }
}

/// Upstream's `url_escape_path`: percent-encode, keeping `@` and `~`.
pub fn escape_path(segment: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'@');
    percent_encoding::utf8_percent_encode(segment, SET).to_string()
}

/// How a start request ended within `slow_spawn_timeout`.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Pending,
}

fn free_port(ip: &str) -> Result<u16> {
    let listener = std::net::TcpListener::bind((ip, 0))
        .map_err(|e| Error::Unavailable(format!("no free port: {e}")))?;
    Ok(listener
        .local_addr()
        .map_err(|e| Error::Unavailable(e.to_string()))?
        .port())
}

impl Hub {
    /// `/user/NAME/` or `/user/NAME/SERVER/` under the base URL.
    pub fn server_url(&self, user: &str, server: &str) -> String {
        if server.is_empty() {
            format!("{}user/{}/", self.base_url(), escape_path(user))
        } else {
            format!(
                "{}user/{}/{}/",
                self.base_url(),
                escape_path(user),
                escape_path(server)
            )
        }
    }

    pub fn progress_url(&self, user: &str, server: &str) -> String {
        if server.is_empty() {
            format!(
                "{}hub/api/users/{}/server/progress",
                self.base_url(),
                escape_path(user)
            )
        } else {
            format!(
                "{}hub/api/users/{}/servers/{}/progress",
                self.base_url(),
                escape_path(user),
                escape_path(server)
            )
        }
    }

    pub fn oauth_client_id(user: &str, server: &str) -> String {
        if server.is_empty() {
            format!("jupyterhub-user-{}", escape_path(user))
        } else {
            format!(
                "jupyterhub-user-{}-{}",
                escape_path(user),
                escape_path(server)
            )
        }
    }

    pub fn server_pending(&self, key: &ServerKey) -> Option<&'static str> {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .and_then(|s| s.pending)
    }

    pub fn server_ready(&self, key: &ServerKey) -> bool {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .is_some_and(|s| s.ready)
    }

    /// Subscribe to a server's progress events, if it has any.
    pub fn server_progress(&self, key: &ServerKey) -> Option<watch::Receiver<Vec<Progress>>> {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|s| s.events.subscribe())
    }

    /// The server model (`server_model` upstream).
    pub fn server_model(&self, user: &UserRow, row: &SpawnerRow, with_state: bool) -> Value {
        let key = (user.id, row.name.clone());
        let pending = self.server_pending(&key);
        let ready = self.server_ready(&key) && pending.is_none();
        let active = row.url.is_some() || pending.is_some();
        let mut model = json!({
            "name": row.name,
            "display_name": row.display_name,
            "full_name": format!("{}/{}", user.name, row.name),
            "last_activity": db::iso_opt(row.last_activity),
            "started": db::iso_opt(row.started),
            "pending": pending,
            "ready": ready,
            "stopped": !active,
            "url": self.server_url(&user.name, &row.name),
            "user_options": if row.user_options.is_null() { json!({}) } else { row.user_options.clone() },
            "progress_url": self.progress_url(&user.name, &row.name),
            "full_url": Value::Null,
            "full_progress_url": Value::Null,
        });
        if with_state {
            model["state"] = row.state.clone();
        }
        model
    }

    fn running_count(&self) -> usize {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| s.ready || s.pending == Some("spawn"))
            .count()
    }

    fn pending_spawns(&self) -> usize {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| s.pending == Some("spawn"))
            .count()
    }

    /// Start a server. Returns once it is ready or `slow_spawn_timeout` passed (then the
    /// spawn goes on in the background and the API answers 202).
    pub async fn start_server(
        &self,
        user_name: &str,
        server_name: &str,
        user_options: Option<Value>,
    ) -> Result<Outcome> {
        let hub = &self.config.hub;
        if !server_name.is_empty() && !hub.allow_named_servers {
            return Err(Error::BadRequest("Named servers are not enabled.".into()));
        }
        if server_name.contains('/') {
            return Err(Error::BadRequest(format!(
                "Invalid server_name: {server_name:?}"
            )));
        }
        let user = self.user(user_name)?;
        let key: ServerKey = (user.id, server_name.to_owned());
        let existing = self.db.read(|c| db::spawner(c, user.id, server_name))?;
        if !server_name.is_empty() && existing.is_none() && hub.named_server_limit_per_user > 0 {
            let count = self.db.read(|c| db::count_named_spawners(c, user.id))?;
            if count >= i64::from(hub.named_server_limit_per_user) {
                return Err(Error::BadRequest(format!(
                    "User {user_name} already has the maximum of {} named servers.  One must be deleted before a new server can be created",
                    hub.named_server_limit_per_user
                )));
            }
        }
        if hub.active_server_limit > 0 && self.running_count() >= hub.active_server_limit as usize {
            return Err(Error::TooManyRequests {
                message: "Active user limit exceeded. Try again in a few minutes.".into(),
                retry_after: 30,
            });
        }
        {
            let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = servers.get(&key) {
                match state.pending {
                    Some("spawn") => return Ok(Outcome::Pending),
                    Some("stop") => {
                        return Err(Error::BadRequest(format!("{user_name} is pending stop")));
                    }
                    _ if state.ready => {
                        return Err(Error::BadRequest(format!(
                            "{user_name}'s server {server_name} is already running"
                        )));
                    }
                    _ => {}
                }
            }
            let limit = hub.concurrent_spawn_limit as usize;
            let pending = servers
                .values()
                .filter(|s| s.pending == Some("spawn"))
                .count();
            if limit > 0 && pending >= limit {
                return Err(Error::TooManyRequests {
                    message: format!(
                        "Too many users trying to log in right now. Try again in {} seconds.",
                        30
                    ),
                    retry_after: 30,
                });
            }
            let state = ServerState::new(Some("spawn"));
            state.push(json!({"progress": 0, "message": "Server requested"}));
            servers.insert(key.clone(), state);
        }
        let spawner_row = self.db.write(|tx| {
            let mut row = db::ensure_spawner(tx, user.id, server_name)?;
            if let Some(options) = &user_options {
                row.user_options = options.clone();
            }
            row.last_failure = None;
            db::update_spawner(tx, &row)?;
            Ok(row)
        });
        let spawner_row = match spawner_row {
            Ok(row) => row,
            Err(e) => {
                self.servers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                return Err(e.into());
            }
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let task_hub = self.clone();
        tokio::spawn(async move {
            let result = task_hub.spawn_task(user, spawner_row).await;
            let _ = done_tx.send(result);
        });
        let wait = Duration::from_secs_f64(hub.slow_spawn_timeout.max(0.0));
        match tokio::time::timeout(wait, done_rx).await {
            Ok(Ok(Ok(()))) => Ok(Outcome::Done),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::SpawnFailed(
                "the spawn task ended unexpectedly".into(),
            )),
            Err(_) => Ok(Outcome::Pending),
        }
    }

    fn build_env(
        &self,
        user: &UserRow,
        server_name: &str,
        token: &str,
        ip: &str,
        port: u16,
        limits: &LimitsSpec,
    ) -> BTreeMap<String, String> {
        let spawner = &self.config.spawner;
        let hub = &self.config.hub;
        let prefix = self.server_url(&user.name, server_name);
        let api_url = self.api_url();
        let mut env = BTreeMap::new();
        for key in &spawner.env_keep {
            if let Ok(value) = std::env::var(key) {
                env.insert(key.clone(), value);
            }
        }
        // Upstream's `Spawner.oauth_access_scopes`: this server, or any server of the user.
        let mut access = rbac::access_scopes_for_server(&user.name, server_name);
        access.push(format!("access:servers!user={}", user.name));
        access.dedup();
        let access_json = serde_json::to_string(&access).unwrap_or_else(|_| "[]".into());
        let host_ip = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        let mut set = |k: &str, v: String| {
            env.insert(k.to_owned(), v);
        };
        set("JUPYTERHUB_API_TOKEN", token.to_owned());
        set("JPY_API_TOKEN", token.to_owned());
        set(
            "JUPYTERHUB_CLIENT_ID",
            Hub::oauth_client_id(&user.name, server_name),
        );
        set("JUPYTERHUB_API_URL", api_url.clone());
        set(
            "JUPYTERHUB_ACTIVITY_URL",
            format!("{api_url}/users/{}/activity", escape_path(&user.name)),
        );
        set("JUPYTERHUB_BASE_URL", hub.base_url.clone());
        set("JUPYTERHUB_SERVICE_PREFIX", prefix.clone());
        set(
            "JUPYTERHUB_SERVICE_URL",
            format!("http://{host_ip}:{port}{prefix}"),
        );
        set("JUPYTERHUB_USER", user.name.clone());
        set("JUPYTERHUB_SERVER_NAME", server_name.to_owned());
        set(
            "JUPYTERHUB_OAUTH_CALLBACK_URL",
            format!("{prefix}oauth_callback"),
        );
        set("JUPYTERHUB_OAUTH_ACCESS_SCOPES", access_json.clone());
        set("JUPYTERHUB_OAUTH_SCOPES", access_json);
        set(
            "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES",
            serde_json::to_string(&spawner.oauth_client_allowed_scopes)
                .unwrap_or_else(|_| "[]".into()),
        );
        let public = hub
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned());
        set("JUPYTERHUB_HOST", public.clone().unwrap_or_default());
        set(
            "JUPYTERHUB_PUBLIC_URL",
            public
                .as_ref()
                .map(|p| format!("{p}{prefix}"))
                .unwrap_or_default(),
        );
        set(
            "JUPYTERHUB_PUBLIC_HUB_URL",
            public
                .as_ref()
                .map(|p| format!("{p}{}hub/", hub.base_url))
                .unwrap_or_default(),
        );
        set("JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED", "0".into());
        if hub.admin_access {
            set("JUPYTERHUB_ADMIN_ACCESS", "1".into());
        }
        if let Some(dir) = &spawner.notebook_dir {
            set("JUPYTERHUB_ROOT_DIR", dir.replace("{username}", &user.name));
        }
        if let Some(url) = &spawner.default_url {
            set(
                "JUPYTERHUB_DEFAULT_URL",
                url.replace("{username}", &user.name),
            );
        }
        if spawner.debug {
            set("JUPYTERHUB_DEBUG", "1".into());
        }
        if spawner.disable_user_config {
            set("JUPYTERHUB_DISABLE_USER_CONFIG", "1".into());
        }
        if let Some(v) = limits.mem_limit {
            set("MEM_LIMIT", v.to_string());
        }
        if let Some(v) = limits.mem_guarantee {
            set("MEM_GUARANTEE", v.to_string());
        }
        if let Some(v) = limits.cpu_limit {
            set("CPU_LIMIT", v.to_string());
        }
        if let Some(v) = limits.cpu_guarantee {
            set("CPU_GUARANTEE", v.to_string());
        }
        for (k, v) in &spawner.environment {
            env.insert(k.clone(), v.replace("{username}", &user.name));
        }
        env
    }

    fn push_event(&self, key: &ServerKey, event: Progress) {
        if let Some(state) = self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            state.push(event);
        }
    }

    /// The body of a spawn: token, OAuth client, start, wait for HTTP, route.
    async fn spawn_task(&self, user: UserRow, mut row: SpawnerRow) -> Result<()> {
        let key: ServerKey = (user.id, row.name.clone());
        let started_at = std::time::Instant::now();
        let result = self.spawn_inner(&user, &mut row).await;
        match &result {
            Ok(()) => {
                self.metrics
                    .spawns
                    .get_or_create(&crate::metrics::StatusLabel {
                        status: "success".into(),
                    })
                    .observe(started_at.elapsed().as_secs_f64());
                let url = self.server_url(&user.name, &row.name);
                tracing::info!(user = %user.name, server = %row.name, spawn_seconds = started_at.elapsed().as_secs_f64(), "server ready");
                let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(state) = servers.get_mut(&key) {
                    state.pending = None;
                    state.ready = true;
                    state.push(json!({
                        "progress": 100, "ready": true, "message": format!("Server ready at {url}"),
                        "html_message": format!("Server ready at <a href=\"{url}\">{url}</a>"), "url": url,
                    }));
                }
            }
            Err(e) => {
                self.metrics
                    .spawns
                    .get_or_create(&crate::metrics::StatusLabel {
                        status: "failure".into(),
                    })
                    .observe(started_at.elapsed().as_secs_f64());
                let message = format!("Spawn failed: {e}");
                tracing::warn!(user = %user.name, server = %row.name, error = %e, "spawn failed");
                let failure = json!({"reason": e.to_string(), "log_tail": match e {
                    Error::Spawner(crate::spawner::Error::StartFailed { log_tail, .. }) => json!(log_tail),
                    _ => json!([]),
                }});
                let _ = self.db.write(|tx| {
                    if let Some(mut current) = db::spawner(tx, user.id, &row.name)? {
                        current.url = None;
                        current.last_failure = Some(failure.clone());
                        db::update_spawner(tx, &current)?;
                    }
                    Ok(())
                });
                self.cleanup_server_credentials(&user, &row.name);
                let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(state) = servers.get_mut(&key) {
                    state.pending = None;
                    state.ready = false;
                    state.push(json!({"progress": 100, "failed": true, "message": message}));
                }
            }
        }
        result
    }

    async fn spawn_inner(&self, user: &UserRow, row: &mut SpawnerRow) -> Result<()> {
        let spawner_config = &self.config.spawner;
        let key: ServerKey = (user.id, row.name.clone());
        let prefix = self.server_url(&user.name, &row.name);
        let note = format!("Server at {prefix}");
        let token = crate::auth::new_token();
        let client_id = Hub::oauth_client_id(&user.name, &row.name);
        // Credentials first: the server reads them at start.
        self.db.write(|tx| {
            db::delete_tokens_with_note(tx, TokenOwner::User(user.id), &note)?;
            db::upsert_oauth_client(
                tx,
                &OAuthClientRow {
                    identifier: client_id.clone(),
                    description: note.clone(),
                    secret: crate::auth::hash_token(&token, crate::auth::GENERATED_ROUNDS),
                    redirect_uri: format!("{prefix}oauth_callback"),
                    allowed_scopes: spawner_config.oauth_client_allowed_scopes.clone(),
                    owner: db::ClientOwner::Server {
                        user: user.name.clone(),
                        server: row.name.clone(),
                    },
                },
            )?;
            let scopes = rbac::server_token_scopes(&user.name, &row.name);
            db::insert_token(
                tx,
                &NewToken {
                    hashed: &crate::auth::hash_token(&token, crate::auth::GENERATED_ROUNDS),
                    prefix: &token[..4],
                    owner: TokenOwner::User(user.id),
                    client_id: "jupyterhub",
                    session_id: None,
                    expires_at: None,
                    note: &note,
                    scopes: &scopes,
                },
            )?;
            Ok(())
        })?;
        let groups = self.db.read(|c| db::user_groups(c, user.id))?;
        let limits = LimitsSpec::from(&spawner_config.limits_for(&user.name, &groups));
        let ip = spawner_config.ip.clone();
        let port = free_port(&ip)?;
        let env = self.build_env(user, &row.name, &token, &ip, port, &limits);
        let mut argv = spawner_config.cmd.clone();
        argv.extend(spawner_config.args.iter().cloned());
        let request = SpawnRequest {
            user: user.name.clone(),
            server_name: row.name.clone(),
            system_user: user.name.clone(),
            argv,
            env,
            working_dir: spawner_config
                .notebook_dir
                .as_ref()
                .filter(|d| !d.starts_with('~'))
                .map(|d| std::path::PathBuf::from(d.replace("{username}", &user.name))),
            ip: ip.clone(),
            port,
            limits,
        };
        if !spawner_config.pre_spawn_hook.is_empty() {
            self.run_pre_spawn_hook(&request).await?;
        }
        self.push_event(
            &key,
            json!({"progress": 50, "message": "Spawning server..."}),
        );
        let start_timeout = Duration::from_secs(spawner_config.start_timeout);
        let started = match tokio::time::timeout(start_timeout, self.spawner.start(&request)).await
        {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::SpawnFailed(format!(
                    "Spawner failed to start [status=timeout]. The server did not start within {} seconds",
                    spawner_config.start_timeout
                )));
            }
        };
        row.state = started.state.clone();
        row.url = Some(started.url.clone());
        row.started = Some(db::now());
        row.last_activity = row.started;
        row.last_failure = None;
        self.db.write(|tx| db::update_spawner(tx, row))?;
        self.push_event(
            &key,
            json!({"progress": 75, "message": "Waiting for the server to answer..."}),
        );
        let check_url = format!("{}{}api", started.url.trim_end_matches('/'), prefix);
        if let Err(e) = self
            .wait_for_http(
                &check_url,
                Duration::from_secs(spawner_config.http_timeout),
                user,
                &row.name,
            )
            .await
        {
            let _ = self
                .spawner
                .stop(&user.name, &row.name, &row.state, true)
                .await;
            return Err(e);
        }
        let target: http::Uri = started.url.parse().map_err(|e| {
            Error::SpawnFailed(format!(
                "the spawner returned an invalid URL {:?}: {e}",
                started.url
            ))
        })?;
        self.routes.add(
            &prefix,
            Target::Url(target),
            json!({"user": user.name, "server_name": row.name}),
        );
        Ok(())
    }

    async fn run_pre_spawn_hook(&self, request: &SpawnRequest) -> Result<()> {
        let hook = &self.config.spawner.pre_spawn_hook;
        let mut command = tokio::process::Command::new(&hook[0]);
        command.args(&hook[1..]).arg(&request.user).env_clear();
        for (k, v) in &request.env {
            if k != "JUPYTERHUB_API_TOKEN" && k != "JPY_API_TOKEN" {
                command.env(k, v);
            }
        }
        if let Ok(path) = std::env::var("PATH") {
            command.env("PATH", path);
        }
        let output = command.output().await.map_err(|e| {
            Error::SpawnFailed(format!("pre_spawn_hook {:?} could not run: {e}", hook[0]))
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(Error::SpawnFailed(format!(
                "pre_spawn_hook failed ({}): {}",
                output.status,
                stderr.trim()
            )));
        }
        Ok(())
    }

    /// Upstream's `wait_for_http_server`: any status below 500 means up; backoff from 0.2 s
    /// to 1 s; also gives up early when the spawner says the server died.
    async fn wait_for_http(
        &self,
        url: &str,
        timeout: Duration,
        user: &UserRow,
        server_name: &str,
    ) -> Result<()> {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::SpawnFailed(format!("invalid server URL {url}: {e}")))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = Duration::from_millis(200);
        loop {
            let request = http::Request::get(uri.clone())
                .body(http_body_util::Empty::new())
                .map_err(|e| Error::SpawnFailed(e.to_string()))?;
            if let Ok(Ok(response)) =
                tokio::time::timeout(Duration::from_secs(5), client.request(request)).await
                && response.status().as_u16() < 500
            {
                return Ok(());
            }
            if tokio::time::Instant::now() + delay > deadline {
                return Err(Error::SpawnFailed(format!(
                    "Server at {url} didn't respond in {} seconds",
                    timeout.as_secs()
                )));
            }
            let state = self
                .db
                .read(|c| db::spawner(c, user.id, server_name))?
                .map(|r| r.state)
                .unwrap_or(Value::Null);
            if let Ok(Status::Stopped { reason, log_tail }) =
                self.spawner.poll(&user.name, server_name, &state).await
            {
                return Err(Error::Spawner(crate::spawner::Error::StartFailed {
                    reason,
                    log_tail,
                }));
            }
            tokio::time::sleep(delay).await;
            // Upstream caps the backoff at 5 s; a local check is cheap, and 1 s keeps the
            // wait after a server comes up short.
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    fn cleanup_server_credentials(&self, user: &UserRow, server_name: &str) {
        let note = format!("Server at {}", self.server_url(&user.name, server_name));
        let client_id = Hub::oauth_client_id(&user.name, server_name);
        let result = self.db.write(|tx| {
            db::delete_tokens_with_note(tx, TokenOwner::User(user.id), &note)?;
            db::delete_oauth_client(tx, &client_id)?;
            Ok(())
        });
        if let Err(e) = result {
            tracing::warn!(user = %user.name, error = %e, "could not remove a server's credentials");
        }
    }

    /// Stop a server; returns once stopped or after `slow_stop_timeout` (then pending).
    pub async fn stop_server(&self, user_name: &str, server_name: &str) -> Result<Outcome> {
        let user = self.user(user_name)?;
        let key: ServerKey = (user.id, server_name.to_owned());
        let row = self.db.read(|c| db::spawner(c, user.id, server_name))?;
        let Some(row) = row else {
            return Err(Error::NotFound(format!(
                "{user_name} has no server named '{server_name}'"
            )));
        };
        {
            let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            let state = servers
                .entry(key.clone())
                .or_insert_with(|| ServerState::new(None));
            match state.pending {
                Some("stop") => return Ok(Outcome::Pending),
                Some("spawn") => {
                    return Err(Error::BadRequest(format!(
                        "{user_name} is pending spawn, cannot stop until spawn completes"
                    )));
                }
                _ => {}
            }
            if row.url.is_none() && !state.ready {
                return Err(Error::BadRequest(format!(
                    "{user_name}'s server is not running"
                )));
            }
            state.pending = Some("stop");
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let task_hub = self.clone();
        tokio::spawn(async move {
            let result = task_hub.stop_task(&user, row, "stopped").await;
            let _ = done_tx.send(result);
        });
        let wait = Duration::from_secs_f64(self.config.hub.slow_stop_timeout.max(0.0));
        match tokio::time::timeout(wait, done_rx).await {
            Ok(Ok(Ok(()))) => Ok(Outcome::Done),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::Unavailable(
                "the stop task ended unexpectedly".into(),
            )),
            Err(_) => Ok(Outcome::Pending),
        }
    }

    async fn stop_task(&self, user: &UserRow, row: SpawnerRow, why: &str) -> Result<()> {
        let key: ServerKey = (user.id, row.name.clone());
        let prefix = self.server_url(&user.name, &row.name);
        self.routes.remove(&prefix);
        let result = self
            .spawner
            .stop(&user.name, &row.name, &row.state, false)
            .await;
        if let Err(e) = &result {
            tracing::warn!(user = %user.name, server = %row.name, error = %e, "stopping failed");
        }
        self.mark_stopped(user, &row.name, None);
        tracing::info!(user = %user.name, server = %row.name, "server {why}");
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        result.map_err(Error::from)
    }

    /// Forget a server that is gone: route, URL, credentials; `failure` is kept for the user.
    fn mark_stopped(&self, user: &UserRow, server_name: &str, failure: Option<Value>) {
        self.routes
            .remove(&self.server_url(&user.name, server_name));
        let result = self.db.write(|tx| {
            if let Some(mut current) = db::spawner(tx, user.id, server_name)? {
                current.url = None;
                current.state = json!({});
                if failure.is_some() {
                    current.last_failure = failure.clone();
                }
                db::update_spawner(tx, &current)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::warn!(user = %user.name, error = %e, "could not record a stopped server");
        }
        self.cleanup_server_credentials(user, server_name);
    }

    /// A server went away without being asked (exit, OOM kill, unreachable).
    pub fn server_exited(
        &self,
        user_name: &str,
        server_name: &str,
        reason: &str,
        log_tail: &[String],
    ) {
        let Ok(user) = self.user(user_name) else {
            return;
        };
        let key: ServerKey = (user.id, server_name.to_owned());
        {
            let servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            if servers.get(&key).is_some_and(|s| s.pending.is_some()) {
                // The spawn or stop in progress reports the outcome itself.
                return;
            }
        }
        tracing::warn!(user = %user_name, server = %server_name, reason, "server stopped unexpectedly");
        self.mark_stopped(
            &user,
            server_name,
            Some(json!({"reason": reason, "log_tail": log_tail})),
        );
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// After a restart: servers the database says run are polled; live ones get their routes
    /// back, dead ones are cleared. Runs before the hub declares itself ready.
    pub async fn reconcile(&self) -> Result<()> {
        let rows = self.db.read(db::all_spawners)?;
        for row in rows.into_iter().filter(|r| r.url.is_some()) {
            let Some(user) = self.db.read(|c| db::user_by_id(c, row.user_id))? else {
                continue;
            };
            let status = self.spawner.poll(&user.name, &row.name, &row.state).await;
            match status {
                Ok(Status::Running) => {
                    let prefix = self.server_url(&user.name, &row.name);
                    if let Some(Ok(target)) = row.url.as_deref().map(str::parse::<http::Uri>) {
                        self.routes.add(
                            &prefix,
                            Target::Url(target),
                            json!({"user": user.name, "server_name": row.name}),
                        );
                        let mut state = ServerState::new(None);
                        state.ready = true;
                        self.servers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert((user.id, row.name.clone()), state);
                        tracing::info!(user = %user.name, server = %row.name, "server still running");
                    }
                }
                Ok(Status::Stopped { reason, log_tail }) => {
                    tracing::info!(user = %user.name, server = %row.name, reason = %reason, "server stopped while the hub was down");
                    self.mark_stopped(
                        &user,
                        &row.name,
                        Some(json!({"reason": reason, "log_tail": log_tail})),
                    );
                }
                Err(e) => {
                    tracing::warn!(user = %user.name, server = %row.name, error = %e, "cannot poll server")
                }
            }
        }
        self.report_unknown_servers().await
    }

    /// Warn about servers the spawner runs that the database does not know (a unit started
    /// by hand, or one a hub killed mid-spawn started but never recorded). They are left
    /// alone: they may be someone's work, and an admin decides.
    async fn report_unknown_servers(&self) -> Result<()> {
        let mut known = Vec::new();
        for row in self.db.read(db::all_spawners)?.into_iter() {
            if row.url.is_none() {
                continue;
            }
            if let Some(user) = self.db.read(|c| db::user_by_id(c, row.user_id))? {
                known.push((user.name, row.name, row.state));
            }
        }
        match self.spawner.unknown_servers(&known).await {
            Ok(units) => {
                for unit in units {
                    tracing::warn!(%unit, "a server runs that the database does not know; leaving it alone");
                }
            }
            // Only a report: a hub that cannot list still serves.
            Err(e) => tracing::warn!(error = %e, "cannot list servers to look for unknown ones"),
        }
        Ok(())
    }

    /// Background: servers that exit on their own, and a periodic poll as a safety net.
    pub fn start_watchers(&self) {
        if let Some(mut exits) = self.spawner.subscribe_exits() {
            let hub = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = hub.shutdown.cancelled() => break,
                        exit = exits.recv() => match exit {
                            Ok(exit) => hub.server_exited(&exit.user, &exit.server_name, &exit.reason, &exit.log_tail),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => break,
                        },
                    }
                }
            });
        }
        let hub = self.clone();
        let interval = Duration::from_secs(self.config.spawner.poll_interval.max(1));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = hub.shutdown.cancelled() => break,
                    _ = ticker.tick() => hub.poll_all().await,
                }
            }
        });
    }

    async fn poll_all(&self) {
        let Ok(rows) = self.db.read(db::all_spawners) else {
            return;
        };
        for row in rows.into_iter().filter(|r| r.url.is_some()) {
            let Ok(Some(user)) = self.db.read(|c| db::user_by_id(c, row.user_id)) else {
                continue;
            };
            if self.server_pending(&(user.id, row.name.clone())).is_some() {
                continue;
            }
            if let Ok(Status::Stopped { reason, log_tail }) =
                self.spawner.poll(&user.name, &row.name, &row.state).await
            {
                self.server_exited(&user.name, &row.name, &reason, &log_tail);
            }
        }
    }

    /// The proxy could not reach a server: check whether it is gone.
    pub fn target_unreachable(&self, user: &str, server_name: &str) {
        let hub = self.clone();
        let (user, server_name) = (user.to_owned(), server_name.to_owned());
        tokio::spawn(async move {
            let Ok(user_row) = hub.user(&user) else {
                return;
            };
            let Ok(Some(row)) = hub.db.read(|c| db::spawner(c, user_row.id, &server_name)) else {
                return;
            };
            if let Ok(Status::Stopped { reason, log_tail }) =
                hub.spawner.poll(&user, &server_name, &row.state).await
            {
                hub.server_exited(&user, &server_name, &reason, &log_tail);
            }
        });
    }

    /// Delete a named server's record (must be stopped).
    pub fn remove_server_record(&self, user: &UserRow, server_name: &str) -> Result<()> {
        self.db.write(|tx| {
            if let Some(row) = db::spawner(tx, user.id, server_name)? {
                db::delete_spawner(tx, row.id)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// How many spawns are in progress (for metrics and tests).
    pub fn spawns_pending(&self) -> usize {
        self.pending_spawns()
    }
}
