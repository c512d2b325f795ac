//! Freezing idle servers (`SystemdSpawner.freeze_idle_after`): a periodic pass freezes each
//! ready server idle longer than that (the spawner's `freeze`, systemd's cgroup freezer),
//! marks it and its route frozen, and the proxy's thaw hook lets it run again on the next
//! request. The first "cannot freeze here" answer turns freezing off for this run, logged
//! once with the spawner's own words.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::db;
use crate::proxy::Route;

use super::Hub;
use super::servers::ServerKey;

/// More CPU than this share of one CPU since the previous pass is work, not idleness.
const BUSY_CPU: f64 = 0.02;

/// Whether freezing is still tried, and why not once it is not.
#[derive(Default)]
pub(super) struct Freezing {
    off: Mutex<Option<String>>,
}

impl Freezing {
    fn off(&self) -> Option<String> {
        self.off.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn turn_off(&self, why: String) {
        *self.off.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }
}

impl Hub {
    /// `freeze_idle_after` as a duration; `None` when off.
    fn freeze_after(&self) -> Option<Duration> {
        match self.config.systemd_spawner.freeze_idle_after {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        }
    }

    /// Whether the server is frozen now.
    pub fn server_frozen(&self, key: &ServerKey) -> bool {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .is_some_and(|s| s.frozen)
    }

    /// Whether a freeze failed at this same last activity (then it is not retried yet).
    fn freeze_failed_at(&self, key: &ServerKey, last: i64) -> bool {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .is_some_and(|s| s.freeze_failed == Some(last))
    }

    fn set_freeze_failed(&self, key: &ServerKey, last: i64) {
        if let Some(state) = self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(key)
        {
            state.freeze_failed = Some(last);
        }
    }

    fn set_server_frozen(&self, key: &ServerKey, frozen: bool) {
        if let Some(state) = self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(key)
        {
            state.frozen = frozen;
        }
    }

    /// Run the freeze pass every quarter of `freeze_idle_after` (1 s to 30 s) until shutdown.
    pub fn spawn_freezer(&self) {
        let Some(after) = self.freeze_after() else {
            return;
        };
        if let Err(why) = crate::systemd::freezer_available()
            && self.spawner.name() == "systemd"
        {
            // Only a warning: systemd's own answer at the first freeze is what decides.
            tracing::warn!("freeze_idle_after: {why}; the first freeze will tell");
        }
        let hub = self.clone();
        let every = (after / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = hub.shutdown_token().cancelled() => break,
                    _ = ticker.tick() => {
                        if hub.freezing.off().is_some() {
                            break;
                        }
                        hub.freeze_idle_servers(after).await;
                    }
                }
            }
        });
    }

    /// Freeze every ready server whose last activity (the proxy's, or the database's) is
    /// older than `after`.
    async fn freeze_idle_servers(&self, after: Duration) {
        let rows = match self.db.read(db::all_spawners) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "freeze pass: could not list servers");
                return;
            }
        };
        let now = crate::time::now();
        let after = i64::try_from(after.as_micros()).unwrap_or(i64::MAX);
        for row in rows.into_iter().filter(|r| r.url.is_some()) {
            let key: ServerKey = (row.user_id, row.name.clone());
            if !self.server_ready(&key)
                || self.server_pending(&key).is_some()
                || self.server_frozen(&key)
            {
                continue;
            }
            let Ok(Some(user)) = self.db.read(|c| db::user_by_id(c, row.user_id)) else {
                continue;
            };
            let Some(route) = self.routes.get(&self.server_url(&user.name, &row.name)) else {
                continue;
            };
            let last = [route.last_activity(), row.last_activity, row.started]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(now);
            if now - last < after
                || self.freeze_failed_at(&key, last)
                || self.cpu_busy(&key, &user.name, &row).await
            {
                continue;
            }
            // Held while freezing: a request arriving meanwhile waits, then thaws it.
            let _one = route.exclusive().await;
            if route.last_activity().is_some_and(|t| now - t < after) {
                continue;
            }
            route.set_frozen(true);
            match self.spawner.freeze(&user.name, &row.name, &row.state).await {
                Ok(()) => {
                    self.set_server_frozen(&key, true);
                    tracing::info!(user = %user.name, server = %row.name, "server frozen after {}s idle", (now - last) / 1_000_000);
                }
                Err(e) => {
                    route.set_frozen(false);
                    if let crate::spawner::Error::FreezeUnsupported(why) = &e {
                        tracing::error!(error = %why, "freeze_idle_after: cannot freeze servers, freezing is off until the hub restarts");
                        self.freezing.turn_off(why.clone());
                        return;
                    }
                    tracing::warn!(user = %user.name, server = %row.name, error = %e, "could not freeze an idle server; tried again after its next activity");
                    self.set_freeze_failed(&key, last);
                }
            }
        }
    }

    /// Whether the server used more than `BUSY_CPU` since the previous pass looked: a kernel
    /// computing with no browser attached makes no requests, and must not be frozen. The
    /// first look only takes a sample (no rate yet); a spawner that cannot tell is idle.
    async fn cpu_busy(&self, key: &ServerKey, user: &str, row: &db::SpawnerRow) -> bool {
        let Ok(usage) = self.spawner.usage(user, &row.name, &row.state).await else {
            return false;
        };
        let Some(cpu) = usage.cpu_nsec else {
            return false;
        };
        let now = std::time::Instant::now();
        let previous = match self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(key)
        {
            Some(state) => state.cpu_sample.replace((now, cpu)),
            None => return true,
        };
        let Some((then, before)) = previous else {
            return true;
        };
        let wall = now.duration_since(then).as_nanos() as f64;
        let busy = wall <= 0.0 || cpu.saturating_sub(before) as f64 / wall > BUSY_CPU;
        if busy {
            tracing::debug!(%user, server = %row.name, "idle but using CPU: not frozen");
        }
        busy
    }

    /// The proxy's thaw hook: let the route's server run again; false when it could not.
    pub async fn thaw_route(&self, route: Arc<Route>) -> bool {
        let (Some(user), Some(server)) = (
            route.data.get("user").and_then(Value::as_str),
            route.data.get("server_name").and_then(Value::as_str),
        ) else {
            // Not a server's route: nothing of ours is frozen behind it.
            return true;
        };
        let Ok(user) = self.user(user) else {
            return false;
        };
        let Ok(Some(row)) = self.db.read(|c| db::spawner(c, user.id, server)) else {
            return false;
        };
        self.thaw_server(&user.name, &row).await
    }

    /// Thaw every frozen server (at shutdown: servers outlive the hub, and the next one
    /// would not know they are frozen).
    pub async fn thaw_all(&self) {
        let frozen: Vec<ServerKey> = self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, s)| s.frozen)
            .map(|(k, _)| k.clone())
            .collect();
        for (user_id, name) in frozen {
            let Ok(Some(user)) = self.db.read(|c| db::user_by_id(c, user_id)) else {
                continue;
            };
            if let Ok(Some(row)) = self.db.read(|c| db::spawner(c, user_id, &name)) {
                self.thaw_server(&user.name, &row).await;
            }
        }
    }

    /// Thaw one server (before a request, or before stopping it).
    pub(super) async fn thaw_server(&self, user: &str, row: &db::SpawnerRow) -> bool {
        let key: ServerKey = (row.user_id, row.name.clone());
        match self.spawner.thaw(user, &row.name, &row.state).await {
            Ok(()) => {
                self.set_server_frozen(&key, false);
                tracing::info!(%user, server = %row.name, "server thawed");
                true
            }
            Err(e) => {
                tracing::warn!(%user, server = %row.name, error = %e, "could not thaw a frozen server");
                false
            }
        }
    }
}
