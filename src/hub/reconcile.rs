//! After a restart, and while serving: the database's idea of which servers run, checked
//! against the spawner. Live servers get their routes back, dead ones are cleared with their
//! reason kept; exits are watched, and polled as a safety net.

use std::time::Duration;

use serde_json::json;

use crate::db;
use crate::proxy::Target;
use crate::spawner::Status;

use super::servers::ServerState;
use super::{Hub, Result};

impl Hub {
    /// After a restart: servers the database says run are polled; live ones get their routes
    /// back, dead ones are cleared. Runs before the hub declares itself ready.
    /// Timed as upstream's `init_spawners_duration_seconds`.
    pub async fn reconcile(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let rows = self.db.read(db::all_spawners)?;
        for row in rows.into_iter().filter(|r| r.url.is_some()) {
            let Some(user) = self.db.read(|c| db::user_by_id(c, row.user_id))? else {
                continue;
            };
            let status = self.poll_server(&user.name, &row.name, &row.state).await;
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
                        // A hub killed while it had servers frozen left them so, and nothing
                        // else would thaw them: requests to them would hang.
                        if self.config.systemd_spawner.freeze_idle_after > 0
                            && let Err(e) =
                                self.spawner.thaw(&user.name, &row.name, &row.state).await
                        {
                            tracing::debug!(user = %user.name, server = %row.name, error = %e, "thaw at start-up");
                        }
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
        self.metrics
            .init_spawners
            .observe(started.elapsed().as_secs_f64());
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
                    if self.stop_unrecorded(&unit).await {
                        continue;
                    }
                    tracing::warn!(%unit, "a server runs that the database does not know; leaving it alone");
                }
            }
            // Only a report: a hub that cannot list still serves.
            Err(e) => tracing::warn!(error = %e, "cannot list servers to look for unknown ones"),
        }
        Ok(())
    }

    /// A server of a user and server record the database has, running though never recorded
    /// as started: a spawn the hub was killed in the middle of (between starting it and
    /// writing it down). Nobody was told it runs and its credentials may be half made, so it
    /// is stopped, and the record says why. `false` when `name` is no such server.
    async fn stop_unrecorded(&self, name: &str) -> bool {
        let Some((user_name, server_name)) = self.spawner.server_of(name) else {
            return false;
        };
        let Ok(Some(user)) = self.db.read(|c| db::user_by_name(c, &user_name)) else {
            return false;
        };
        let Ok(Some(row)) = self.db.read(|c| db::spawner(c, user.id, &server_name)) else {
            return false;
        };
        if row.url.is_some() {
            return false;
        }
        tracing::warn!(unit = %name, user = %user.name, server = %server_name, "a server the hub started but never recorded (it was stopped mid-spawn); stopping it");
        if let Err(e) = self
            .spawner
            .stop(&user.name, &server_name, &json!({"unit": name}), true)
            .await
        {
            tracing::warn!(unit = %name, error = %e, "cannot stop the unrecorded server");
            return true;
        }
        self.cleanup_server_credentials(&user, &server_name);
        self.mark_stopped(
            &user,
            &server_name,
            Some(json!({
                "reason": "the hub restarted while this server was starting; it was stopped, start it again",
                "log_tail": [],
            })),
        );
        true
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
                self.poll_server(&user.name, &row.name, &row.state).await
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
                hub.poll_server(&user, &server_name, &row.state).await
            {
                hub.server_exited(&user, &server_name, &reason, &log_tail);
            }
        });
    }
}
