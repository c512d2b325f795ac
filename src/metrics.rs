//! Prometheus metrics under JupyterHub's names, labels and buckets (upstream's
//! `jupyterhub/metrics.py`, 5.3 with 6.x's additions), served at `/hub/metrics` and
//! `/hub/api/metrics`; and ours, which only this hub can measure (memory and CPU of each
//! running server, read from the spawner), under `{prefix}_rs_`. `docs/metrics.md` lists them.
//!
//! As upstream, every value of a `status` or `period` label exists from the start (at 0), so
//! dashboards and alerts see a series before the first event of its kind.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route's template (`/hub/api/users/{name}`), standing in for upstream's handler
    /// class (`jupyterhub.apihandlers.users.UserAPIHandler`): as stable, as few.
    pub handler: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeriodLabel {
    pub period: &'static str,
}

/// Upstream 5.3's `ServerSpawnStatus`.
pub mod spawn_status {
    pub const SUCCESS: &str = "success";
    pub const FAILURE: &str = "failure";
    pub const ALREADY_PENDING: &str = "already-pending";
    pub const THROTTLED: &str = "throttled";
    pub const TOO_MANY_USERS: &str = "too-many-users";
    pub const ALL: [&str; 5] = [SUCCESS, FAILURE, ALREADY_PENDING, THROTTLED, TOO_MANY_USERS];
}

/// `ServerStopStatus`, `ProxyAddStatus`, `ProxyDeleteStatus` and `LoginStatus`.
pub const SUCCESS: &str = "success";
pub const FAILURE: &str = "failure";

/// `ServerPollStatus`.
pub const RUNNING: &str = "running";
pub const STOPPED: &str = "stopped";

/// `ActiveUserPeriods` with their lengths in seconds.
pub const ACTIVE_USER_PERIODS: [(&str, i64); 3] = [
    ("24h", 24 * 3600),
    ("7d", 7 * 24 * 3600),
    ("30d", 30 * 24 * 3600),
];

/// prometheus_client's (Python) default buckets, which upstream's histograms use unless
/// they say otherwise.
const DEFAULT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

const SPAWN_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0,
];

/// Upstream's `event_loop_interval_seconds` buckets: 5 ms steps from 50 ms (the default
/// resolution) to 75 ms, then the defaults.
const EVENT_LOOP_BUCKETS: [f64; 15] = [
    0.05, 0.055, 0.06, 0.065, 0.07, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The buckets of a histogram family (`+Inf` is always added).
#[derive(Clone, Debug)]
pub struct Buckets(Arc<[f64]>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// Upstream's `JUPYTERHUB_SERVER_SPAWN_DURATION_SECONDS_BUCKETS` and
/// `…_STOP_DURATION_SECONDS_BUCKETS`: comma-separated seconds replacing the defaults.
fn buckets_from_env(var: &str, default: &[f64]) -> Buckets {
    let text = std::env::var(var).ok();
    match parse_buckets(text.as_deref()) {
        Ok(Some(values)) => Buckets(values.into()),
        Ok(None) => Buckets(default.into()),
        // Upstream fails to import instead; a hub that starts with the defaults is kinder.
        Err(e) => {
            tracing::warn!(%var, error = %e, "not a list of numbers; default buckets kept");
            Buckets(default.into())
        }
    }
}

/// `None` for no value or an empty one; `+Inf` is dropped (the encoder always adds it,
/// upstream lists it explicitly).
fn parse_buckets(text: Option<&str>) -> Result<Option<Vec<f64>>, std::num::ParseFloatError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let values = text
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<Vec<f64>, _>>()?;
    Ok(Some(values.into_iter().filter(|v| v.is_finite()).collect()))
}

pub type StatusHistograms = Family<StatusLabel, Histogram, Buckets>;

/// One running server's use, as the last scrape read it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub user: String,
    pub server_name: String,
}

#[derive(Clone, Debug, Default)]
pub struct UsageSample {
    pub labels: Option<ServerLabels>,
    pub memory_bytes: Option<u64>,
    pub cpu_nsec: Option<u64>,
}

/// Ours: each running server's memory and CPU time, read from the spawner at scrape time
/// (`Hub::refresh_usage_metrics`) and encoded from that snapshot, so a stopped server's
/// series go with it.
#[derive(Debug, Default)]
pub struct UsageCollector {
    samples: Mutex<Vec<UsageSample>>,
}

impl UsageCollector {
    pub fn replace(&self, samples: Vec<UsageSample>) {
        *self.samples.lock().unwrap_or_else(|e| e.into_inner()) = samples;
    }

    /// Keep only the samples of servers `keep` says still run.
    pub fn retain(&self, keep: impl Fn(&ServerLabels) -> bool) {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s.labels.as_ref().is_some_and(&keep));
    }
}

impl Collector for UsageCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        {
            let mut family = encoder.encode_descriptor(
                "server_memory_bytes",
                "Memory used by a running user server (its unit's MemoryCurrent, or the RSS of its processes)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for sample in &samples {
                if let (Some(labels), Some(bytes)) = (&sample.labels, sample.memory_bytes) {
                    ConstGauge::new(bytes as i64).encode(family.encode_family(labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "server_cpu_seconds",
            "CPU time used by a running user server since it started",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for sample in &samples {
            if let (Some(labels), Some(nsec)) = (&sample.labels, sample.cpu_nsec) {
                ConstCounter::new(nsec as f64 / 1e9).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Histogram, Buckets>,
    pub spawns: StatusHistograms,
    pub stops: StatusHistograms,
    pub polls: StatusHistograms,
    pub proxy_add: StatusHistograms,
    pub proxy_delete: StatusHistograms,
    /// 6.x's `login_duration_seconds{status}`.
    pub logins: StatusHistograms,
    /// 6.x's `logout_duration_seconds`.
    pub logouts: Histogram,
    pub check_routes: Histogram,
    pub hub_startup: Histogram,
    pub init_spawners: Histogram,
    pub proxy_poll: Histogram,
    pub event_loop_interval: Histogram,
    pub active_users: Family<PeriodLabel, Gauge<i64, AtomicI64>>,
    pub total_users: Gauge<i64, AtomicI64>,
    pub running_servers: Gauge<i64, AtomicI64>,
    /// 6.x's `csp_reports` counter.
    pub csp_reports: Counter<u64, AtomicU64>,
    /// Ours: servers starting or stopping.
    pub pending_servers: Gauge<i64, AtomicI64>,
    /// Ours: per-server memory and CPU.
    pub usage: Arc<UsageCollector>,
    /// When `usage` was last read, so frequent scrapes do not each ask every server.
    pub usage_read: tokio::sync::Mutex<Option<Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn statuses(buckets: &Buckets, values: &[&'static str]) -> StatusHistograms {
    let family = Family::new_with_constructor(buckets.clone());
    for &status in values {
        drop(family.get_or_create(&StatusLabel { status }));
    }
    family
}

impl Metrics {
    pub fn new() -> Metrics {
        let prefix =
            std::env::var("JUPYTERHUB_METRICS_PREFIX").unwrap_or_else(|_| "jupyterhub".into());
        let mut registry = Registry::with_prefix(prefix);
        let default = Buckets(DEFAULT_BUCKETS.into());
        let spawn_buckets = buckets_from_env(
            "JUPYTERHUB_SERVER_SPAWN_DURATION_SECONDS_BUCKETS",
            &SPAWN_BUCKETS,
        );
        let stop_buckets = buckets_from_env(
            "JUPYTERHUB_SERVER_STOP_DURATION_SECONDS_BUCKETS",
            &DEFAULT_BUCKETS,
        );
        let ok_or_not = [SUCCESS, FAILURE];
        let metrics = Metrics {
            requests: Family::new_with_constructor(default.clone()),
            spawns: statuses(&spawn_buckets, &spawn_status::ALL),
            stops: statuses(&stop_buckets, &ok_or_not),
            polls: statuses(&default, &[RUNNING, STOPPED]),
            proxy_add: statuses(&default, &ok_or_not),
            proxy_delete: statuses(&default, &ok_or_not),
            logins: statuses(&default, &ok_or_not),
            logouts: Histogram::new(DEFAULT_BUCKETS),
            check_routes: Histogram::new(DEFAULT_BUCKETS),
            hub_startup: Histogram::new(DEFAULT_BUCKETS),
            init_spawners: Histogram::new(DEFAULT_BUCKETS),
            proxy_poll: Histogram::new(DEFAULT_BUCKETS),
            event_loop_interval: Histogram::new(EVENT_LOOP_BUCKETS),
            active_users: Family::default(),
            total_users: Gauge::default(),
            running_servers: Gauge::default(),
            csp_reports: Counter::default(),
            pending_servers: Gauge::default(),
            usage: Arc::new(UsageCollector::default()),
            usage_read: tokio::sync::Mutex::new(None),
            registry: Registry::default(),
        };
        for (period, _) in ACTIVE_USER_PERIODS {
            drop(metrics.active_users.get_or_create(&PeriodLabel { period }));
        }
        let m = &metrics;
        let r = &mut registry;
        r.register(
            "request_duration_seconds",
            "Request duration for all HTTP requests",
            m.requests.clone(),
        );
        r.register(
            "server_spawn_duration_seconds",
            "Time taken for server spawning operation",
            m.spawns.clone(),
        );
        r.register(
            "running_servers",
            "The number of user servers currently running",
            m.running_servers.clone(),
        );
        r.register(
            "total_users",
            "Total number of users",
            m.total_users.clone(),
        );
        r.register(
            "active_users",
            "Number of users who were active in the given time period",
            m.active_users.clone(),
        );
        r.register(
            "check_routes_duration_seconds",
            "Time taken to validate all routes in proxy",
            m.check_routes.clone(),
        );
        r.register(
            "hub_startup_duration_seconds",
            "Time taken for Hub to start",
            m.hub_startup.clone(),
        );
        r.register(
            "init_spawners_duration_seconds",
            "Time taken for spawners to initialize",
            m.init_spawners.clone(),
        );
        r.register(
            "proxy_poll_duration_seconds",
            "Duration for polling all routes from proxy",
            m.proxy_poll.clone(),
        );
        r.register(
            "login_duration_seconds",
            "duration for all authentication attempts",
            m.logins.clone(),
        );
        r.register(
            "logout_duration_seconds",
            "duration for all logout requests",
            m.logouts.clone(),
        );
        r.register(
            "csp_reports",
            "content security policy violation reports",
            m.csp_reports.clone(),
        );
        r.register(
            "proxy_add_duration_seconds",
            "Duration for adding user routes to proxy",
            m.proxy_add.clone(),
        );
        r.register(
            "server_poll_duration_seconds",
            "Time taken to poll if server is running",
            m.polls.clone(),
        );
        r.register(
            "server_stop_seconds",
            "Time taken for server stopping operation",
            m.stops.clone(),
        );
        r.register(
            "proxy_delete_duration_seconds",
            "Duration for deleting user routes from proxy",
            m.proxy_delete.clone(),
        );
        r.register(
            "event_loop_interval_seconds",
            "Distribution of measured event loop intervals",
            m.event_loop_interval.clone(),
        );
        let ours = r.sub_registry_with_prefix("rs");
        ours.register(
            "pending_servers",
            "The number of user servers starting or stopping",
            m.pending_servers.clone(),
        );
        ours.register_collector(Box::new(m.usage.clone()));
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Observe the seconds since `started` under `status`.
    pub fn observe(family: &StatusHistograms, status: &'static str, started: Instant) {
        family
            .get_or_create(&StatusLabel { status })
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "could not encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_jupyterhub() {
        let metrics = Metrics::new();
        metrics.total_users.set(3);
        metrics
            .spawns
            .get_or_create(&StatusLabel {
                status: spawn_status::SUCCESS,
            })
            .observe(1.2);
        let text = metrics.encode();
        assert!(text.contains("jupyterhub_total_users 3"), "{text}");
        assert!(
            text.contains(
                "jupyterhub_server_spawn_duration_seconds_bucket{le=\"2.5\",status=\"success\"} 1"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn every_status_and_period_exists_before_its_first_event() {
        let text = Metrics::new().encode();
        for status in spawn_status::ALL {
            let line =
                format!("jupyterhub_server_spawn_duration_seconds_count{{status=\"{status}\"}} 0");
            assert!(text.contains(&line), "{line}\n{text}");
        }
        for line in [
            "jupyterhub_server_stop_seconds_count{status=\"failure\"} 0",
            "jupyterhub_server_poll_duration_seconds_count{status=\"stopped\"} 0",
            "jupyterhub_proxy_add_duration_seconds_count{status=\"failure\"} 0",
            "jupyterhub_proxy_delete_duration_seconds_count{status=\"failure\"} 0",
            "jupyterhub_active_users{period=\"30d\"} 0",
            "jupyterhub_csp_reports_total 0",
            "jupyterhub_rs_pending_servers 0",
            "jupyterhub_event_loop_interval_seconds_bucket{le=\"0.055\"} 0",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn bucket_lists_parse_as_upstreams() {
        assert_eq!(parse_buckets(None), Ok(None));
        assert_eq!(parse_buckets(Some("  ")), Ok(None));
        assert_eq!(
            parse_buckets(Some("1, 2.5,10,inf")),
            Ok(Some(vec![1.0, 2.5, 10.0]))
        );
        assert!(parse_buckets(Some("1,two")).is_err());
    }

    #[test]
    fn usage_series_follow_the_last_snapshot() {
        let metrics = Metrics::new();
        metrics.usage.replace(vec![UsageSample {
            labels: Some(ServerLabels {
                user: "alice".into(),
                server_name: "".into(),
            }),
            memory_bytes: Some(1024),
            cpu_nsec: Some(1_500_000_000),
        }]);
        let text = metrics.encode();
        assert!(
            text.contains(
                "jupyterhub_rs_server_memory_bytes{user=\"alice\",server_name=\"\"} 1024"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "jupyterhub_rs_server_cpu_seconds_total{user=\"alice\",server_name=\"\"} 1.5"
            ),
            "{text}"
        );
        metrics.usage.replace(Vec::new());
        assert!(!metrics.encode().contains("user=\"alice\""));
    }
}
