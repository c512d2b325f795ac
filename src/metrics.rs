//! Prometheus metrics under JupyterHub's names (`jupyterhub_request_duration_seconds`,
//! `jupyterhub_server_spawn_duration_seconds`, `jupyterhub_total_users`,
//! `jupyterhub_running_servers`, …), served at `/hub/metrics` in the OpenMetrics format.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub handler: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Histogram>,
    pub spawns: Family<StatusLabel, Histogram>,
    /// Upstream's `login_duration_seconds{status}`.
    pub logins: Family<StatusLabel, Histogram>,
    /// Upstream's `logout_duration_seconds`.
    pub logouts: Histogram,
    pub total_users: Gauge<i64, AtomicI64>,
    pub running_servers: Gauge<i64, AtomicI64>,
    pub pending_servers: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let prefix =
            std::env::var("JUPYTERHUB_METRICS_PREFIX").unwrap_or_else(|_| "jupyterhub".into());
        let mut registry = Registry::with_prefix(prefix);
        let requests = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let spawns = Family::<StatusLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0,
            ])
        });
        // prometheus_client's (Python) default buckets, as upstream's histograms use.
        const DEFAULT_BUCKETS: [f64; 14] = [
            0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
        ];
        let logins = Family::<StatusLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(DEFAULT_BUCKETS)
        });
        let logouts = Histogram::new(DEFAULT_BUCKETS);
        let total_users = Gauge::<i64, AtomicI64>::default();
        let running_servers = Gauge::<i64, AtomicI64>::default();
        let pending_servers = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "request_duration_seconds",
            "Request duration for all HTTP requests",
            requests.clone(),
        );
        registry.register(
            "server_spawn_duration_seconds",
            "Time taken for server spawning operation",
            spawns.clone(),
        );
        registry.register(
            "login_duration_seconds",
            "Time taken for login",
            logins.clone(),
        );
        registry.register(
            "logout_duration_seconds",
            "duration for all logout requests",
            logouts.clone(),
        );
        registry.register("total_users", "Total number of users", total_users.clone());
        registry.register(
            "running_servers",
            "The number of user servers currently running",
            running_servers.clone(),
        );
        registry.register(
            "pending_servers",
            "The number of user servers starting or stopping",
            pending_servers.clone(),
        );
        Metrics {
            registry,
            requests,
            spawns,
            logins,
            logouts,
            total_users,
            running_servers,
            pending_servers,
        }
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
                status: "success".into(),
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
}
