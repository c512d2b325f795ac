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

/// Ports handed to starting servers in the last `PORT_QUARANTINE`: the kernel may give the
/// same free port to two spawns that ask within moments of each other (the server binds it
/// only later), and the second server would then fail with "address in use".
static RECENT_PORTS: std::sync::Mutex<std::collections::VecDeque<(u16, std::time::Instant)>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());
const PORT_QUARANTINE: Duration = Duration::from_secs(120);

/// Upstream's `random_port`: a port the kernel says is free now, but never one this hub
/// handed out recently.
fn free_port(ip: &str) -> Result<u16> {
    let mut recent = RECENT_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    while recent
        .front()
        .is_some_and(|(_, at)| at.elapsed() > PORT_QUARANTINE)
    {
        recent.pop_front();
    }
    for _ in 0..64 {
        let listener = std::net::TcpListener::bind((ip, 0))
            .map_err(|e| Error::Unavailable(format!("no free port: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::Unavailable(e.to_string()))?
            .port();
        if !recent.iter().any(|(p, _)| *p == port) {
            recent.push_back((port, std::time::Instant::now()));
            return Ok(port);
        }
    }
    Err(Error::Unavailable(format!(
        "no free port on {ip}: the kernel kept offering ports given to servers moments ago"
    )))
}

/// How often a readiness wait asks the spawner whether the server died.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// The wait between readiness probes of a starting server. A probe is a TCP connect, and a
/// refused connect to a local port costs microseconds, so probing every millisecond for the
/// first 0.1 s (fast servers), then every 5 ms while most servers come up (the first 3 s),
/// sees a server within a few milliseconds of it listening without loading the machine
/// (about 300 probes in the first second); slow starters are probed less often. Many waits at
/// once share a budget of about 2 000 probes a second (each waits at least 0.5 ms per wait
/// in progress), so a burst of spawns does not spend the CPU its servers need to start.
fn probe_interval(elapsed: Duration, waits: usize) -> Duration {
    let base = if elapsed < Duration::from_millis(100) {
        Duration::from_millis(1)
    } else if elapsed < Duration::from_secs(3) {
        Duration::from_millis(5)
    } else if elapsed < Duration::from_secs(10) {
        Duration::from_millis(20)
    } else {
        Duration::from_millis(100)
    };
    let shared = Duration::from_micros(500) * u32::try_from(waits.min(2_000)).unwrap_or(2_000);
    base.max(shared).min(Duration::from_secs(1))
}

/// Counts a readiness wait while it lasts.
struct WaitGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> WaitGuard<'a> {
    fn enter(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WaitGuard(count)
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One readiness probe: `None` while nothing accepts a connection; else when the connection
/// was accepted and the status of a GET sent on it (`None` if it got no answer).
async fn probe(
    addr: std::net::SocketAddr,
    uri: &http::Uri,
) -> Option<(tokio::time::Instant, Option<u16>)> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let accepted = tokio::time::Instant::now();
    let _ = stream.set_nodelay(true);
    let answer = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        let driver = tokio::spawn(conn);
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = http::Request::get(path)
            .header(http::header::HOST, host)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .ok()?;
        let status = sender
            .send_request(request)
            .await
            .ok()
            .map(|r| r.status().as_u16());
        driver.abort();
        status
    };
    Some((accepted, answer.await))
}

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
        let begun = tokio::time::Instant::now();
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
        let credentials = tokio::time::Instant::now();
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
        let starting = tokio::time::Instant::now();
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
        let start_returned = tokio::time::Instant::now();
        row.state = started.state.clone();
        row.url = Some(started.url.clone());
        row.started = Some(crate::time::now());
        row.last_activity = row.started;
        row.last_failure = None;
        self.db.write(|tx| db::update_spawner(tx, row))?;
        let saved = tokio::time::Instant::now();
        self.push_event(
            &key,
            json!({"progress": 75, "message": "Waiting for the server to answer..."}),
        );
        let check_url = format!("{}{}api", started.url.trim_end_matches('/'), prefix);
        let listening = match self
            .wait_for_http(
                &check_url,
                Duration::from_secs(spawner_config.http_timeout),
                user,
                &row.name,
            )
            .await
        {
            Ok(listening) => listening,
            Err(e) => {
                let _ = self
                    .spawner
                    .stop(&user.name, &row.name, &row.state, true)
                    .await;
                return Err(e);
            }
        };
        let answered = tokio::time::Instant::now();
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
        // Where a spawn's time goes (BENCHMARKS.md), each step in ms after the one before.
        let ms =
            |from: tokio::time::Instant, to: tokio::time::Instant| (to - from).as_secs_f64() * 1e3;
        let listening = listening.unwrap_or(answered);
        tracing::debug!(
            user = %user.name, server = %row.name,
            credentials_ms = ms(begun, credentials),
            prepare_ms = ms(credentials, starting),
            start_ms = ms(starting, start_returned),
            save_ms = ms(start_returned, saved),
            listen_ms = ms(saved, listening),
            http_ms = ms(listening, answered),
            route_ms = ms(answered, tokio::time::Instant::now()),
            "spawn steps"
        );
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

    /// Upstream's `wait_for_http_server`: any status below 500 means up; gives up early when
    /// the spawner says the server died. Unlike upstream's backoff from 0.2 s, it probes with
    /// a bare connect (`probe_interval`) and sends the GET only on a connection that was
    /// accepted, so the wait after a server listens is milliseconds, not up to a backoff step.
    /// Returns when the port first accepted a connection, for the spawn's timing log.
    async fn wait_for_http(
        &self,
        url: &str,
        timeout: Duration,
        user: &UserRow,
        server_name: &str,
    ) -> Result<Option<tokio::time::Instant>> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::SpawnFailed(format!("invalid server URL {url}: {e}")))?;
        let invalid = || Error::SpawnFailed(format!("invalid server URL {url}"));
        let host = uri.host().ok_or_else(invalid)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let _guard = WaitGuard::enter(&self.readiness_waits);
        let begun = tokio::time::Instant::now();
        let deadline = begun + timeout;
        let mut last_poll = begun;
        let mut addr = None;
        let mut listening = None;
        loop {
            // Resolved once it resolves (an IP literal at once); the spawner's URL names a
            // host that may only appear with the server.
            if addr.is_none() {
                addr = tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .ok()
                    .and_then(|mut a| a.next());
            }
            if let Some(addr) = addr {
                // Refused, or no connect or answer within 5 s: not up yet.
                if let Ok(Some((accepted, status))) =
                    tokio::time::timeout(Duration::from_secs(5), probe(addr, &uri)).await
                {
                    listening.get_or_insert(accepted);
                    if status.is_some_and(|s| s < 500) {
                        return Ok(listening);
                    }
                }
            }
            let now = tokio::time::Instant::now();
            let waits = self
                .readiness_waits
                .load(std::sync::atomic::Ordering::Relaxed);
            let delay = probe_interval(now - begun, waits);
            if now + delay > deadline {
                return Err(Error::SpawnFailed(format!(
                    "Server at {url} didn't respond in {} seconds",
                    timeout.as_secs()
                )));
            }
            // Whether it died meanwhile: asked of the spawner at most every POLL_EVERY, not
            // at every probe.
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_port_is_handed_out_twice_in_a_row_of_spawns() {
        // The kernel repeats a just-closed port often: about 8 times in 500 here.
        let ports: Vec<u16> = (0..500)
            .map(|_| free_port("127.0.0.1").expect("a free port"))
            .collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
    }

    #[test]
    fn probes_are_frequent_early_and_spread_when_many_wait() {
        let ms = Duration::from_millis;
        assert_eq!(probe_interval(ms(0), 1), ms(1));
        assert_eq!(probe_interval(ms(500), 1), ms(5));
        assert_eq!(probe_interval(ms(5_000), 1), ms(20));
        assert_eq!(probe_interval(ms(60_000), 1), ms(100));
        // Many waits at once share about 2 000 probes a second, each at least once a second.
        for waits in [3, 8, 50, 500] {
            for elapsed in [ms(0), ms(500)] {
                let rate = waits as f64 / probe_interval(elapsed, waits).as_secs_f64();
                assert!(rate <= 2_000.0 + 1e-6, "{waits} waits: {rate} probes/s");
            }
        }
        assert_eq!(probe_interval(ms(0), 50), ms(25));
        assert_eq!(probe_interval(ms(60_000), 100_000), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_probe_connects_then_asks_over_http() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let uri: http::Uri = format!("http://{addr}/user/a/api").parse().expect("uri");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut head = vec![0; 1024];
            let n = stream.read(&mut head).await.expect("read");
            stream
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .await
                .expect("write");
            String::from_utf8_lossy(&head[..n]).into_owned()
        });
        let (_, status) = probe(addr, &uri).await.expect("accepted");
        assert_eq!(status, Some(503));
        let head = server.await.expect("server");
        assert!(head.starts_with("GET /user/a/api HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains(&format!("host: {addr}")),
            "{head}"
        );
        // Nothing listens there any more: refused, no GET.
        assert!(probe(addr, &uri).await.is_none());
    }
}
