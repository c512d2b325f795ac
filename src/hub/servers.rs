//! User servers: their state (pending spawn → ready → pending stop → stopped), URLs, the
//! server model, and the start and stop requests. The spawn itself is `hub/spawn.rs`; the
//! check against the spawner after a restart is `hub/reconcile.rs`. The database row is
//! written before the action it records.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::db::{self, SpawnerRow, TokenOwner, UserRow};
use crate::metrics::{self, Metrics, spawn_status};

use super::{Error, Hub, Result};

/// (user id, server name); the default server's name is empty.
pub type ServerKey = (i64, String);

/// One progress event, as the progress stream sends it.
pub type Progress = Value;

/// What the hub knows about a server beyond its database row.
pub struct ServerState {
    pub(super) pending: Option<&'static str>,
    pub(super) ready: bool,
    /// Delete the server's record once the stop under way has succeeded
    /// (`DELETE …/servers/NAME` with `remove` while it was stopping).
    pub(super) remove_when_stopped: bool,
    /// Events so far; the stream sends each new one.
    pub events: watch::Sender<Vec<Progress>>,
}

impl ServerState {
    pub(super) fn new(pending: Option<&'static str>) -> ServerState {
        ServerState {
            pending,
            ready: false,
            remove_when_stopped: false,
            events: watch::channel(Vec::new()).0,
        }
    }
    pub fn pending(&self) -> Option<&'static str> {
        self.pending
    }
    pub fn is_ready(&self) -> bool {
        self.ready
    }
    pub(super) fn push(&self, event: Progress) {
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

/// What a stop request found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// The user has no server of that name.
    NotFound,
    /// The server exists but does not run: nothing to do.
    NotRunning,
    /// Still stopping after `slow_stop_timeout` (or a stop was already under way).
    Stopping,
    Stopped,
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

    /// A server's database record, if the user has one of that name.
    pub fn server_record(&self, user: &UserRow, server_name: &str) -> Result<Option<SpawnerRow>> {
        Ok(self.db.read(|c| db::spawner(c, user.id, server_name))?)
    }

    /// All the user's server records, the default server's included.
    pub fn server_records(&self, user: &UserRow) -> Result<Vec<SpawnerRow>> {
        Ok(self.db.read(|c| db::spawners_of(c, user.id))?)
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
            "last_activity": crate::time::iso_opt(row.last_activity),
            "started": crate::time::iso_opt(row.started),
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
        // Refusals are timed from here, as upstream's `spawn_single_user` times them.
        let requested = std::time::Instant::now();
        let hub = &self.config.hub;
        if !server_name.is_empty() && !hub.allow_named_servers {
            return Err(Error::BadRequest("Named servers are not enabled.".into()));
        }
        if server_name.contains('/') {
            return Err(Error::BadRequest(format!(
                "Invalid server_name: {server_name:?}"
            )));
        }
        // As user names (`auth::validate_username`): a newline would forge lines in the log,
        // a NUL cannot reach the unit name, the environment or the journal.
        if server_name.chars().any(char::is_control) {
            return Err(Error::BadRequest(format!(
                "Invalid server_name {server_name:?}: server names may not contain control characters"
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
            Metrics::observe(
                &self.metrics.spawns,
                spawn_status::TOO_MANY_USERS,
                requested,
            );
            return Err(Error::TooManyRequests {
                message: "Active user limit exceeded. Try again in a few minutes.".into(),
                retry_after: 30,
            });
        }
        {
            let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = servers.get(&key) {
                if state.pending.is_some() {
                    Metrics::observe(
                        &self.metrics.spawns,
                        spawn_status::ALREADY_PENDING,
                        requested,
                    );
                }
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
                Metrics::observe(&self.metrics.spawns, spawn_status::THROTTLED, requested);
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
        let wait = wait_for(hub.slow_spawn_timeout);
        match tokio::time::timeout(wait, done_rx).await {
            Ok(Ok(Ok(()))) => Ok(Outcome::Done),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::SpawnFailed(
                "the spawn task ended unexpectedly".into(),
            )),
            Err(_) => Ok(Outcome::Pending),
        }
    }

    pub(super) fn cleanup_server_credentials(&self, user: &UserRow, server_name: &str) {
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

    /// Stop a server, deciding here whether there is one and whether it runs (a pending
    /// spawn is an error: it must finish first). Returns once stopped, or `Stopping` after
    /// `slow_stop_timeout` (the stop goes on in the background).
    pub async fn stop_server(&self, user: &UserRow, server_name: &str) -> Result<StopOutcome> {
        let key: ServerKey = (user.id, server_name.to_owned());
        let Some(row) = self.db.read(|c| db::spawner(c, user.id, server_name))? else {
            return Ok(StopOutcome::NotFound);
        };
        {
            let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            let pending = servers.get(&key).and_then(|s| s.pending);
            match pending {
                Some("stop") => return Ok(StopOutcome::Stopping),
                Some(_) => {
                    return Err(Error::BadRequest(format!(
                        "{} is pending spawn, cannot stop until spawn completes",
                        user.name
                    )));
                }
                None if row.url.is_none() => return Ok(StopOutcome::NotRunning),
                None => {}
            }
            servers
                .entry(key.clone())
                .or_insert_with(|| ServerState::new(None))
                .pending = Some("stop");
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let task_hub = self.clone();
        let task_user = user.clone();
        tokio::spawn(async move {
            let result = task_hub.stop_task(&task_user, row, "stopped").await;
            let _ = done_tx.send(result);
        });
        let wait = wait_for(self.config.hub.slow_stop_timeout);
        match tokio::time::timeout(wait, done_rx).await {
            Ok(Ok(Ok(()))) => Ok(StopOutcome::Stopped),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::Unavailable(
                "the stop task ended unexpectedly".into(),
            )),
            Err(_) => Ok(StopOutcome::Stopping),
        }
    }

    /// Stop every running server (`POST /shutdown` with `servers`); failures are logged by
    /// the stop itself and do not stop the others.
    pub async fn stop_all_servers(&self) -> Result<()> {
        let rows = self.db.read(db::all_spawners)?;
        for row in rows.into_iter().filter(|r| r.url.is_some()) {
            if let Ok(Some(user)) = self.db.read(|c| db::user_by_id(c, row.user_id)) {
                let _ = self.stop_server(&user, &row.name).await;
            }
        }
        Ok(())
    }

    async fn stop_task(&self, user: &UserRow, row: SpawnerRow, why: &str) -> Result<()> {
        let key: ServerKey = (user.id, row.name.clone());
        let prefix = self.server_url(&user.name, &row.name);
        // Timed as upstream's `stop_single_user`: the route's removal (in-process, so it
        // cannot fail), then the spawner's stop.
        let started = std::time::Instant::now();
        self.routes.remove(&prefix);
        Metrics::observe(&self.metrics.proxy_delete, metrics::SUCCESS, started);
        let result = self
            .spawner
            .stop(&user.name, &row.name, &row.state, false)
            .await;
        match &result {
            Ok(()) => Metrics::observe(&self.metrics.stops, metrics::SUCCESS, started),
            Err(e) => {
                Metrics::observe(&self.metrics.stops, metrics::FAILURE, started);
                tracing::warn!(user = %user.name, server = %row.name, error = %e, "stopping failed");
            }
        }
        self.mark_stopped(user, &row.name, None);
        tracing::info!(user = %user.name, server = %row.name, "server {why}");
        let state = self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if result.is_ok()
            && state.is_some_and(|s| s.remove_when_stopped)
            && let Err(e) = self.remove_server_record(user, &row.name)
        {
            tracing::warn!(user = %user.name, server = %row.name, error = %e, "could not remove a stopped server");
        }
        result.map_err(Error::from)
    }

    /// Delete a server's record, or, while it is stopping, once that stop has succeeded (as
    /// upstream, which leaves the record when a stop fails).
    pub fn remove_server_when_stopped(&self, user: &UserRow, server_name: &str) -> Result<()> {
        {
            let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = servers.get_mut(&(user.id, server_name.to_owned()))
                && state.pending == Some("stop")
            {
                state.remove_when_stopped = true;
                return Ok(());
            }
        }
        self.remove_server_record(user, server_name)
    }

    /// Forget a server that is gone: route, URL, credentials; `failure` is kept for the user.
    pub(super) fn mark_stopped(&self, user: &UserRow, server_name: &str, failure: Option<Value>) {
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
        // Upstream's `user_stopped` times the route's removal.
        let started = std::time::Instant::now();
        self.routes
            .remove(&self.server_url(&user.name, server_name));
        Metrics::observe(&self.metrics.proxy_delete, metrics::SUCCESS, started);
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

/// `slow_spawn_timeout` / `slow_stop_timeout` as a wait: NaN or less than 0 is no wait, and
/// more than a `Duration` holds (`inf`, `1e300`, which TOML allows) is forever, not a panic.
fn wait_for(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX)
}

impl Hub {
    /// Live memory and CPU of `user`'s running server `server_name` beside its limits (ours:
    /// `GET …/usage`), as JSON; `NotFound` when it does not run.
    pub async fn server_usage(&self, user: &UserRow, server_name: &str) -> Result<Value> {
        let row = self
            .db
            .read(|c| db::spawner(c, user.id, server_name))?
            .filter(|row| row.url.is_some())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{} has no running server {server_name:?}",
                    user.name
                ))
            })?;
        let groups = self.user_groups(user)?;
        let limits =
            crate::spawner::LimitsSpec::from(&self.config.spawner.limits_for(&user.name, &groups));
        let usage = self
            .spawner
            .usage(&user.name, server_name, &row.state)
            .await?;
        Ok(json!({
            "user": user.name,
            "server_name": server_name,
            "spawner": self.spawner.name(),
            "memory_bytes": usage.memory_bytes,
            "mem_limit": limits.mem_limit,
            "cpu_seconds": usage.cpu_nsec.map(|n| n as f64 / 1e9),
            "cpu_limit": limits.cpu_limit,
            "time": crate::time::iso(crate::time::now()),
        }))
    }
}
