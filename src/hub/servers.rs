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
    /// Frozen by `freeze_idle_after` (`hub/freeze.rs`); thawed by the next request.
    pub(super) frozen: bool,
    /// The last activity when a freeze last failed: not tried again until there is newer.
    pub(super) freeze_failed: Option<i64>,
    /// The server's CPU time at the freeze pass that last looked (`hub/freeze.rs`).
    pub(super) cpu_sample: Option<(std::time::Instant, u64)>,
    /// Events so far; the stream sends each new one.
    pub events: watch::Sender<Vec<Progress>>,
}

impl ServerState {
    pub(super) fn new(pending: Option<&'static str>) -> ServerState {
        ServerState {
            pending,
            ready: false,
            remove_when_stopped: false,
            frozen: false,
            freeze_failed: None,
            cpu_sample: None,
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
            // Ours: extra keys leave upstream's clients working.
            "frozen": self.server_frozen(&key),
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
        display_name: Option<&str>,
        user_options: Option<Value>,
    ) -> Result<Outcome> {
        // Refusals are timed from here, as upstream's `spawn_single_user` times them.
        let requested = std::time::Instant::now();
        let hub = &self.config.hub;
        if !server_name.is_empty() && !hub.allow_named_servers {
            return Err(Error::BadRequest("Named servers are not enabled.".into()));
        }
        check_server_name(server_name)?;
        // The default server has no display name of its own (upstream ignores one).
        let display_name = display_name
            .filter(|d| !d.is_empty() && !server_name.is_empty())
            .map(valid_display_name)
            .transpose()?;
        let mut user = self.user(user_name)?;
        // Upstream's `refresh_pre_spawn`: a server never starts on an expired provider login;
        // the user is read again for the fresh auth_state (`auth_state_env`).
        if self.config.authenticator.refresh_pre_spawn {
            if !self.refresh_auth(&user, true).await? {
                return Err(Error::Forbidden(format!(
                    "auth has expired for {user_name}, login again"
                )));
            }
            user = self.user(user_name)?;
        }
        let key: ServerKey = (user.id, server_name.to_owned());
        let existing = self.db.read(|c| db::spawner(c, user.id, server_name))?;
        // A profile that does not exist or is not the user's is refused now, not in the
        // background spawn.
        self.profile_for(
            &user,
            user_options
                .as_ref()
                .or(existing.as_ref().map(|r| &r.user_options)),
        )?;
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
            // A new named server is shown by its name unless the request names it otherwise.
            match &display_name {
                Some(given) => row.display_name = given.clone(),
                None if existing.is_none() => row.display_name = server_name.to_owned(),
                None => {}
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
        // A frozen server could not act on its stop signal until systemd's SIGKILL.
        if self.server_frozen(&key) {
            self.thaw_server(&user.name, &row).await;
        }
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

/// What `PATCH /users/{name}/servers/{server}` changes; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ServerPatch {
    /// A new name (a rename).
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub user_options: Option<Value>,
}

/// A server name the hub can route and log: no `/` (it is one path segment) and, as user
/// names (`auth::validate_username`), no control characters (a newline would forge lines in
/// the log, a NUL cannot reach the unit name, the environment or the journal).
fn check_server_name(server_name: &str) -> Result<()> {
    if server_name.contains('/') {
        return Err(Error::BadRequest(format!(
            "Invalid server_name: {server_name:?}"
        )));
    }
    if server_name.chars().any(char::is_control) {
        return Err(Error::BadRequest(format!(
            "Invalid server_name {server_name:?}: server names may not contain control characters"
        )));
    }
    Ok(())
}

/// Upstream 6.x's `normalise_unicode` (NFC) then `is_valid_display_name`: 1 to 255
/// characters, printable (letters, marks, numbers, punctuation, symbols) or single spaces
/// between them. Returns the normalised name.
pub fn valid_display_name(given: &str) -> Result<String> {
    use icu_properties::CodePointMapData;
    use icu_properties::props::GeneralCategory as G;
    let name = icu_normalizer::ComposingNormalizerBorrowed::new_nfc()
        .normalize(given)
        .into_owned();
    let categories = CodePointMapData::<G>::new();
    let printable = |c: char| {
        !matches!(
            categories.get(c),
            G::Control
                | G::Format
                | G::Unassigned
                | G::PrivateUse
                | G::Surrogate
                | G::SpaceSeparator
                | G::LineSeparator
                | G::ParagraphSeparator
        )
    };
    let ok = (1..=255).contains(&name.chars().count())
        && !name.contains("  ")
        && !name.starts_with(' ')
        && !name.ends_with(' ')
        && name.chars().all(|c| c == ' ' || printable(c));
    if ok {
        Ok(name)
    } else {
        Err(Error::BadRequest(format!(
            "Invalid display_name: {given:?}"
        )))
    }
}

impl Hub {
    /// Upstream's `_check_named_server_request` limit: a new named server may not exceed
    /// `named_server_limit_per_user`.
    fn check_named_server_limit(
        tx: &rusqlite::Connection,
        limit: u32,
        user: &UserRow,
    ) -> Result<()> {
        if limit > 0 && db::count_named_spawners(tx, user.id)? >= i64::from(limit) {
            return Err(Error::BadRequest(format!(
                "User {} already has the maximum of {limit} named servers.  One must be deleted before a new server can be created",
                user.name
            )));
        }
        Ok(())
    }

    /// `PUT /users/{name}/servers/{server}` (6.x): a named server's record, not started.
    /// Upstream's order: 409 for the default server or an existing one, then the named-server
    /// checks (enabled, the limit, a valid name and display name).
    pub fn create_server(
        &self,
        user: &UserRow,
        server_name: &str,
        display_name: Option<&str>,
        user_options: Option<Value>,
    ) -> Result<SpawnerRow> {
        if server_name.is_empty() {
            return Err(Error::Conflict(format!(
                "User {} already has a default server",
                user.name
            )));
        }
        let exists = || {
            Error::Conflict(format!(
                "User {} already has server {server_name}",
                user.name
            ))
        };
        if self.server_record(user, server_name)?.is_some() {
            return Err(exists());
        }
        let hub = &self.config.hub;
        if !hub.allow_named_servers {
            return Err(Error::BadRequest("Named servers are not enabled.".into()));
        }
        check_server_name(server_name)?;
        let display_name = match display_name.filter(|d| !d.is_empty()) {
            Some(given) => valid_display_name(given)?,
            None => server_name.to_owned(),
        };
        // Upstream stores only options that say something (`if user_options:`).
        let user_options = user_options.filter(|o| o.as_object().is_some_and(|m| !m.is_empty()));
        let limit = hub.named_server_limit_per_user;
        // The checks run again in the transaction, so two concurrent requests create one.
        self.db
            .write(|tx| {
                if db::spawner(tx, user.id, server_name)?.is_some() {
                    return Ok(Err(exists()));
                }
                if let Err(e) = Hub::check_named_server_limit(tx, limit, user) {
                    return Ok(Err(e));
                }
                let mut row = db::ensure_spawner(tx, user.id, server_name)?;
                row.display_name = display_name.clone();
                if let Some(options) = &user_options {
                    row.user_options = options.clone();
                }
                db::update_spawner(tx, &row)?;
                Ok(Ok(row))
            })
            .map_err(Error::from)
            .and_then(|created| created)
    }

    /// `PATCH /users/{name}/servers/{server}` (6.x): rename a stopped server, or set its
    /// display name or user options. As upstream: a rename or a display name needs named
    /// servers, renaming the default server counts against the limit, an active server is
    /// refused (400) and a taken name is 409.
    pub fn update_server(
        &self,
        user: &UserRow,
        server_name: &str,
        patch: &ServerPatch,
    ) -> Result<SpawnerRow> {
        let hub = &self.config.hub;
        let display_name = patch.display_name.as_deref().filter(|d| !d.is_empty());
        if (patch.name.is_some() || display_name.is_some()) && !hub.allow_named_servers {
            return Err(Error::BadRequest("Named servers are not enabled.".into()));
        }
        if let Some(new_name) = &patch.name {
            if new_name.is_empty() {
                return Err(Error::BadRequest(format!(
                    "Invalid server_name: {new_name:?}"
                )));
            }
            check_server_name(new_name)?;
        }
        let display_name = display_name.map(valid_display_name).transpose()?;
        let key: ServerKey = (user.id, server_name.to_owned());
        // Held until the record is written, so no start of this server begins in between
        // (nothing takes this lock inside a database write, so the order cannot deadlock).
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(record) = self.server_record(user, server_name)? else {
            return Err(Error::NotFound(format!(
                "User {} has no such server {server_name}",
                user.name
            )));
        };
        let running = servers
            .get(&key)
            .is_some_and(|s| s.pending.is_some() || s.ready);
        if record.url.is_some() || running {
            let log_name = if server_name.is_empty() {
                user.name.clone()
            } else {
                format!("{}:{server_name}", user.name)
            };
            return Err(Error::BadRequest(format!(
                "{log_name} is active. Please stop it before modifying it."
            )));
        }
        let limit = hub.named_server_limit_per_user;
        let row = self
            .db
            .write(|tx| {
                let Some(mut row) = db::spawner(tx, user.id, server_name)? else {
                    return Err(db::Error::NotFound(format!("server {server_name}")));
                };
                if let Some(new_name) = &patch.name {
                    if db::spawner(tx, user.id, new_name)?.is_some() {
                        return Ok(Err(Error::Conflict(format!(
                            "User {} already has server {new_name:?}",
                            user.name
                        ))));
                    }
                    // Renaming the default server makes one more named server.
                    if server_name.is_empty()
                        && let Err(e) = Hub::check_named_server_limit(tx, limit, user)
                    {
                        return Ok(Err(e));
                    }
                    row.name = new_name.clone();
                }
                if let Some(options) = &patch.user_options {
                    row.user_options = options.clone();
                }
                if let Some(display_name) = &display_name {
                    row.display_name = display_name.clone();
                }
                db::update_spawner(tx, &row)?;
                Ok(Ok(row))
            })
            .map_err(Error::from)
            .and_then(|updated| updated)?;
        if let Some(new_name) = &patch.name {
            // The old name's leftover events (a failed spawn's) are not the new name's.
            servers.remove(&key);
            tracing::info!(user = %user.name, server = %server_name, new_name = %new_name, "server renamed");
        }
        Ok(row)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_as_upstream() {
        for good in ["My server", "Ünïcödé ✓", "a", "x-y_z.1", &"n".repeat(255)] {
            assert_eq!(
                valid_display_name(good).ok().as_deref(),
                Some(good),
                "{good:?}"
            );
        }
        // NFC: `e` and a combining acute accent become one character.
        assert_eq!(
            valid_display_name("e\u{301}").ok().as_deref(),
            Some("\u{e9}")
        );
        for bad in [
            "",
            " lead",
            "trail ",
            "two  spaces",
            "tab\there",
            "new\nline",
            "nbsp\u{a0}x",
            "zero\u{200b}width",
            "private\u{e000}",
            &"n".repeat(256),
        ] {
            assert!(valid_display_name(bad).is_err(), "{bad:?}");
        }
    }
}
