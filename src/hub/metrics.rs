//! What the metrics read that no single request does (upstream's `PeriodicMetricsCollector`):
//! `active_users{period}` at start-up and hourly, the event-loop probe behind
//! `event_loop_interval_seconds`, the gauges brought up to date at scrape time, and ours, the
//! running servers' memory and CPU read from the spawner at scrape time. Also the timed poll
//! every server check goes through (`server_poll_duration_seconds`).

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::db;
use crate::metrics::{self, Metrics, ServerLabels, UsageSample};
use crate::spawner::{Error as SpawnerError, Status};

use super::Hub;

/// Upstream's `active_users_update_interval` default: the counts scan the users table.
const ACTIVE_USERS_EVERY: Duration = Duration::from_secs(3600);

/// Upstream's `event_loop_interval_resolution` and `event_loop_interval_log_threshold`.
const EVENT_LOOP_RESOLUTION: Duration = Duration::from_millis(50);
const EVENT_LOOP_LOG_THRESHOLD: Duration = Duration::from_secs(1);

/// Ours: servers read per scrape at most (further ones are left out of that scrape, and the
/// omission logged), reads at once, the wait for one read, and how long one reading serves
/// further scrapes, so that many users or many scrapers cost a bounded number of reads.
const MAX_USAGE_SERVERS: usize = 2000;
const USAGE_READS_AT_ONCE: usize = 16;
const USAGE_READ_TIMEOUT: Duration = Duration::from_secs(2);
const USAGE_FRESH_FOR: Duration = Duration::from_secs(5);

impl Hub {
    /// `Spawner::poll`, timed under `status="running"` or `"stopped"` as upstream's
    /// `ServerPollStatus.from_status` (a poll that fails is not observed, as upstream's
    /// exception is not).
    pub(super) async fn poll_server(
        &self,
        user: &str,
        server_name: &str,
        state: &serde_json::Value,
    ) -> Result<Status, SpawnerError> {
        let started = Instant::now();
        let status = self.spawner.poll(user, server_name, state).await;
        match &status {
            Ok(Status::Running) => Metrics::observe(&self.metrics.polls, metrics::RUNNING, started),
            Ok(Status::Stopped { .. }) => {
                Metrics::observe(&self.metrics.polls, metrics::STOPPED, started)
            }
            Err(_) => {}
        }
        status
    }

    /// Upstream's `update_active_users`: users active in the last 24 hours, 7 and 30 days,
    /// from one fixed point in time.
    pub fn update_active_users(&self) {
        let now = crate::time::now();
        for (period, seconds) in metrics::ACTIVE_USER_PERIODS {
            let since = now - seconds * 1_000_000;
            match self.db.read(|c| db::count_users_active_since(c, since)) {
                Ok(count) => {
                    tracing::info!("Found {count} active users in the last {period}");
                    self.metrics
                        .active_users
                        .get_or_create(&metrics::PeriodLabel { period })
                        .set(count);
                }
                Err(e) => tracing::warn!(error = %e, "cannot count active users"),
            }
        }
    }

    /// Start upstream's periodic collectors: active users now and hourly, and the event-loop
    /// probe, until the hub stops.
    pub fn start_metrics_collectors(&self) {
        self.update_active_users();
        let hub = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(ACTIVE_USERS_EVERY);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = hub.shutdown.cancelled() => break,
                    _ = ticker.tick() => hub.update_active_users(),
                }
            }
        });
        let hub = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = hub.shutdown.cancelled() => {}
                _ = measure_event_loop(&hub.metrics.event_loop_interval) => {}
            }
        });
    }

    /// Bring what is read at scrape time up to date: the user and server gauges, and (ours)
    /// each running server's memory and CPU, at most every `USAGE_FRESH_FOR`.
    pub async fn refresh_metrics(&self) {
        self.refresh_gauges();
        let mut last = self.metrics.usage_read.lock().await;
        if last.is_some_and(|t| t.elapsed() < USAGE_FRESH_FOR) {
            // A server stopped since the last reading is no longer shown.
            self.metrics.usage.retain(|l| {
                self.routes
                    .get(&self.server_url(&l.user, &l.server_name))
                    .is_some()
            });
            return;
        }
        let Ok(rows) = self.db.read(db::all_spawners) else {
            return;
        };
        let running: Vec<db::SpawnerRow> = rows
            .into_iter()
            .filter(|r| r.url.is_some())
            .filter(|r| self.server_ready(&(r.user_id, r.name.clone())))
            .collect();
        if running.len() > MAX_USAGE_SERVERS {
            tracing::warn!(
                running = running.len(),
                "more running servers than {MAX_USAGE_SERVERS}: the rest have no usage metrics this scrape"
            );
        }
        let samples: Vec<UsageSample> =
            futures_util::stream::iter(running.into_iter().take(MAX_USAGE_SERVERS))
                .map(|row| async move {
                    let user = self
                        .db
                        .read(|c| db::user_by_id(c, row.user_id))
                        .ok()
                        .flatten()?;
                    let read = self.spawner.usage(&user.name, &row.name, &row.state);
                    let usage = match tokio::time::timeout(USAGE_READ_TIMEOUT, read).await {
                        Ok(Ok(usage)) => usage,
                        _ => return None,
                    };
                    Some(UsageSample {
                        labels: Some(ServerLabels {
                            user: user.name,
                            server_name: row.name,
                        }),
                        memory_bytes: usage.memory_bytes,
                        cpu_nsec: usage.cpu_nsec,
                    })
                })
                .buffer_unordered(USAGE_READS_AT_ONCE)
                .filter_map(|sample| async move { sample })
                .collect()
                .await;
        self.metrics.usage.replace(samples);
        *last = Some(Instant::now());
    }
}

/// Upstream's `_measure_event_loop_interval`: sleep for the resolution and observe how much
/// longer the wake-up took, i.e. how long the runtime could not schedule this task (below
/// twice the resolution there is no telling, and the resolution is observed).
async fn measure_event_loop(histogram: &prometheus_client::metrics::histogram::Histogram) {
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(EVENT_LOOP_RESOLUTION).await;
        let now = Instant::now();
        let tick = now - last;
        last = now;
        let delay = if tick < 2 * EVENT_LOOP_RESOLUTION {
            EVENT_LOOP_RESOLUTION
        } else {
            let delay = tick - EVENT_LOOP_RESOLUTION;
            if delay >= EVENT_LOOP_LOG_THRESHOLD {
                tracing::warn!(
                    "Event loop was unresponsive for at least {:.2}s!",
                    delay.as_secs_f64()
                );
            }
            delay
        };
        histogram.observe(delay.as_secs_f64());
    }
}
