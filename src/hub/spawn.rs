//! The spawn task: the server's credentials (API token, OAuth client), its environment
//! (upstream's `Spawner.get_env`), `pre_spawn_hook`, `Spawner::start` within `start_timeout`,
//! the wait until it answers HTTP, and its route. Progress events go out as it goes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::db::{self, OAuthClientRow, SpawnerRow, TokenOwner, UserRow};
use crate::metrics::{Metrics, spawn_status};
use crate::proxy::Target;
use crate::rbac;
use crate::spawner::{LimitsSpec, SpawnRequest, Status};

use super::servers::{Progress, ServerKey, escape_path};
use super::tokens::{TokenForm, TokenGrant, issue_token};
use super::{Error, Hub, Result};

fn free_port(ip: &str) -> Result<u16> {
    let listener = std::net::TcpListener::bind((ip, 0))
        .map_err(|e| Error::Unavailable(format!("no free port: {e}")))?;
    Ok(listener
        .local_addr()
        .map_err(|e| Error::Unavailable(e.to_string()))?
        .port())
}

/// The first wait between readiness checks of a starting server; each later one is half as
/// long again, at most a second.
const FIRST_RETRY: Duration = Duration::from_millis(10);
/// How often a readiness wait asks the spawner whether the server died.
const POLL_EVERY: Duration = Duration::from_millis(200);

impl Hub {
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
        self.auth_state_env(user, &mut env);
        env
    }

    /// `auth_state_env`: each variable from its (dotted) auth_state key; strings as they
    /// are, other values as JSON; a key the auth_state lacks sets nothing.
    fn auth_state_env(&self, user: &UserRow, env: &mut BTreeMap<String, String>) {
        let wanted = &self.config.spawner.auth_state_env;
        if wanted.is_empty() {
            return;
        }
        let state = match self.auth_state(user) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(user = %user.name, error = %e, "auth_state_env: no auth_state");
                return;
            }
        };
        for (name, key) in wanted {
            match crate::auth::oauth2::claim(&state, key) {
                Some(serde_json::Value::String(s)) => {
                    env.insert(name.clone(), s.clone());
                }
                None | Some(serde_json::Value::Null) => {
                    tracing::debug!(user = %user.name, key, "auth_state_env: not in auth_state");
                }
                Some(other) => {
                    env.insert(name.clone(), other.to_string());
                }
            }
        }
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
    pub(super) async fn spawn_task(&self, user: UserRow, mut row: SpawnerRow) -> Result<()> {
        let key: ServerKey = (user.id, row.name.clone());
        let started_at = std::time::Instant::now();
        let result = self.spawn_inner(&user, &mut row).await;
        match &result {
            Ok(()) => {
                Metrics::observe(&self.metrics.spawns, spawn_status::SUCCESS, started_at);
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
                Metrics::observe(&self.metrics.spawns, spawn_status::FAILURE, started_at);
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
        let client_id = Hub::oauth_client_id(&user.name, &row.name);
        // Credentials first: the server reads them at start. Its API token is also its OAuth
        // client's secret.
        let token = self.db.write(|tx| {
            db::delete_tokens_with_note(tx, TokenOwner::User(user.id), &note)?;
            let scopes = rbac::server_token_scopes(&user.name, &row.name);
            let (token, _) = issue_token(
                tx,
                TokenForm::Api,
                &TokenGrant {
                    owner: TokenOwner::User(user.id),
                    client_id: "jupyterhub",
                    session_id: None,
                    expires_in: None,
                    note: &note,
                    scopes: &scopes,
                },
            )?;
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
            Ok(token)
        })?;
        let mut groups = self.db.read(|c| db::user_groups(c, user.id))?;
        let profile = self.profile_for(user, Some(&row.user_options))?;
        let limits =
            LimitsSpec::from(&spawner_config.limits_with_profile(&user.name, &groups, profile));
        // What the privileged helper needs to re-derive limits and profile access from its
        // own config: the groups that give limits or open a profile.
        groups.retain(|g| {
            spawner_config.group_limits.contains_key(g)
                || spawner_config.profiles.iter().any(|p| p.groups.contains(g))
        });
        let ip = spawner_config.ip.clone();
        let port = free_port(&ip)?;
        let mut env = self.build_env(user, &row.name, &token, &ip, port, &limits);
        if let Some(profile) = profile {
            for (k, v) in &profile.environment {
                env.insert(k.clone(), v.replace("{username}", &user.name));
            }
        }
        let argv = spawner_config.argv_for(profile);
        let mut request = SpawnRequest {
            user: user.name.clone(),
            server_name: row.name.clone(),
            system_user: crate::auth::accounts::apply(
                &self.config.systemd_spawner.username_template,
                &user.name,
            ),
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
            groups,
            profile: profile.map(|p| p.slug.clone()),
        };
        if let Some(dev) = &self.config.dev {
            self.dev_request(dev, &key, &mut request).await?;
        }
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
        row.started = Some(crate::time::now());
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
        // The table is in-process: adding cannot fail, so only `success` moves.
        let adding = std::time::Instant::now();
        self.routes.add(
            &prefix,
            Target::Url(target),
            json!({"user": user.name, "server_name": row.name}),
        );
        Metrics::observe(&self.metrics.proxy_add, crate::metrics::SUCCESS, adding);
        Ok(())
    }

    /// `--dev`: the server runs as the hub's account, in its own directory under the state
    /// directory, from the environment the hub makes on first use (with progress events).
    async fn dev_request(
        &self,
        dev: &crate::config::DevMode,
        key: &ServerKey,
        request: &mut SpawnRequest,
    ) -> Result<()> {
        if dev.manage_env {
            let singleuser = crate::spawner::user_env::ensure(
                &dev.user_env,
                &dev.python,
                |progress, message| {
                    self.push_event(key, json!({"progress": progress, "message": message}));
                },
            )
            .await?;
            request.argv[0] = singleuser.to_string_lossy().into_owned();
        }
        let uid = nix::unistd::geteuid();
        let singleuser = request
            .argv
            .first()
            .is_some_and(|a| a.ends_with("jupyterhub-singleuser"));
        if uid.is_root() && singleuser {
            // jupyter-server refuses to run as root unless told; only --dev runs servers so.
            request.argv.push("--allow-root".into());
        }
        if let Ok(Some(account)) = nix::unistd::User::from_uid(uid) {
            request.system_user = account.name;
        }
        let home = dev.user_dir(&request.user);
        std::fs::create_dir_all(&home)
            .map_err(|e| Error::SpawnFailed(format!("could not create {}: {e}", home.display())))?;
        request
            .env
            .entry("HOME".into())
            .or_insert_with(|| home.to_string_lossy().into_owned());
        if request.working_dir.is_none() {
            request.working_dir = Some(home);
        }
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
        // Most servers listen within a few hundred milliseconds of exec: try again soon at
        // first (a refused local connect costs microseconds), then back off, so the wait
        // after a server comes up stays a fraction of its own start-up, without busy polling
        // (about ten tries in the first second, then one a second).
        let mut delay = FIRST_RETRY;
        let mut last_poll = tokio::time::Instant::now();
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
            // Whether it died meanwhile: asked of the spawner at most every POLL_EVERY, not
            // at every early retry.
            if last_poll.elapsed() >= POLL_EVERY {
                last_poll = tokio::time::Instant::now();
                let state = self
                    .db
                    .read(|c| db::spawner(c, user.id, server_name))?
                    .map(|r| r.state)
                    .unwrap_or(Value::Null);
                if let Ok(Status::Stopped { reason, log_tail }) =
                    self.poll_server(&user.name, server_name, &state).await
                {
                    return Err(Error::Spawner(crate::spawner::Error::StartFailed {
                        reason,
                        log_tail,
                    }));
                }
            }
            tokio::time::sleep(delay).await;
            // Upstream caps the backoff at 5 s; a local check is cheap, and 1 s keeps the
            // wait after a server comes up short.
            delay = (delay * 3 / 2).min(Duration::from_secs(1));
        }
    }
}
