//! Managed services as the hub sees them: each one's token (configured, or derived from the
//! cookie secret, so a restarted hub gives an adopted service the token it already holds),
//! its environment (upstream's `Service.start` on top of `Spawner.get_env`), and the
//! supervisor's start-up pass and periodic checks.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::ServiceConfig;
use crate::services::{Failure, Launch};

use super::Hub;

/// How often the supervisor looks at its services: child processes are restarted about
/// this soon after they exit; units are restarted by systemd itself first.
const CHECK_LOCAL: Duration = Duration::from_secs(1);
const CHECK_UNITS: Duration = Duration::from_secs(5);

impl Hub {
    /// The token a service authenticates with: its `api_token`, else (for a managed service)
    /// one derived from the cookie secret: the same at every start, stored only hashed.
    pub(super) fn service_token(&self, service: &ServiceConfig) -> Option<String> {
        if let Some(token) = &service.api_token {
            return Some(token.expose().to_owned());
        }
        service.managed().then(|| {
            hex::encode(
                self.secret
                    .derive(&format!("managed service token\0{}", service.name)),
            )
        })
    }

    fn service_fingerprint_key(&self) -> [u8; 32] {
        self.secret.derive("managed service fingerprint")
    }

    /// The hub API as a service reaches it: services run on this machine, so a hub bound to
    /// every interface is reached on loopback (upstream's `Service.start`).
    fn service_api_url(&self) -> String {
        let bound_everywhere = url::Url::parse(&self.config.hub.hub_bind_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .is_some_and(|h| matches!(h.as_str(), "" | "0.0.0.0" | "[::]" | "::"));
        if bound_everywhere {
            self.api_url
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        } else {
            self.api_url()
        }
    }

    /// Upstream's environment of a managed service, before its `environment`.
    fn service_env(&self, service: &ServiceConfig, token: &str) -> BTreeMap<String, String> {
        let hub = &self.config.hub;
        let mut env = BTreeMap::new();
        if !self.services.is_systemd() {
            // A child process inherits what upstream's `env_keep` names (PATH among them); a
            // unit gets systemd's own clean environment.
            for key in &self.config.spawner.env_keep {
                if let Ok(value) = std::env::var(key) {
                    env.insert(key.clone(), value);
                }
            }
        }
        let prefix = format!("{}services/{}/", hub.base_url, service.name);
        let access = serde_json::json!([
            "access:services",
            format!("access:services!service={}", service.name)
        ])
        .to_string();
        let public = hub
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization());
        let mut set = |k: &str, v: String| {
            env.insert(k.to_owned(), v);
        };
        set("JUPYTERHUB_SERVICE_NAME", service.name.clone());
        set("JUPYTERHUB_API_TOKEN", token.to_owned());
        set("JPY_API_TOKEN", token.to_owned());
        set(
            "JUPYTERHUB_CLIENT_ID",
            service
                .oauth_client_id
                .clone()
                .unwrap_or_else(|| format!("service-{}", service.name)),
        );
        set("JUPYTERHUB_API_URL", self.service_api_url());
        set("JUPYTERHUB_BASE_URL", hub.base_url.clone());
        set("JUPYTERHUB_USER", service.user.clone().unwrap_or_default());
        set("JUPYTERHUB_SERVER_NAME", String::new());
        set("JUPYTERHUB_HOST", public.clone().unwrap_or_default());
        set(
            "JUPYTERHUB_OAUTH_CALLBACK_URL",
            format!("{prefix}oauth_callback"),
        );
        set("JUPYTERHUB_OAUTH_SCOPES", access.clone());
        set("JUPYTERHUB_OAUTH_ACCESS_SCOPES", access);
        set(
            "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES",
            serde_json::to_string(&service.oauth_client_allowed_scopes)
                .unwrap_or_else(|_| "[]".into()),
        );
        set("JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED", "0".into());
        if hub.admin_access {
            set("JUPYTERHUB_ADMIN_ACCESS", "1".into());
        }
        if let Some(url) = &service.url {
            set("JUPYTERHUB_SERVICE_URL", url.clone());
            set("JUPYTERHUB_SERVICE_PREFIX", prefix.clone());
        }
        set(
            "JUPYTERHUB_PUBLIC_URL",
            match (&public, &service.url) {
                (Some(origin), Some(_)) => format!("{origin}{prefix}"),
                _ => String::new(),
            },
        );
        set(
            "JUPYTERHUB_PUBLIC_HUB_URL",
            public
                .as_ref()
                .map(|origin| format!("{origin}{}hub/", hub.base_url))
                .unwrap_or_default(),
        );
        if let Some(v) = service.mem_limit {
            set("MEM_LIMIT", v.0.to_string());
        }
        if let Some(v) = service.cpu_limit {
            set("CPU_LIMIT", v.0.to_string());
        }
        env
    }

    /// What the config asks to run.
    fn service_launches(&self) -> Vec<Launch> {
        self.config
            .hub
            .services
            .iter()
            .filter(|s| s.managed())
            .filter_map(|service| {
                let token = self.service_token(service)?;
                Launch::new(service, self.service_env(service, &token)).ok()
            })
            .collect()
    }

    /// Start-up, before the hub reports ready: adopt the services still running from before
    /// (units), restart changed ones, stop removed ones, start the rest; then keep them
    /// running until the hub stops.
    pub async fn start_services(&self) {
        let launches = self.service_launches();
        let key = self.service_fingerprint_key();
        if !self.services.is_systemd()
            && launches
                .iter()
                .any(|l| l.limits.mem_limit.is_some() || l.limits.cpu_limit.is_some())
        {
            tracing::warn!(
                "managed services have memory or CPU limits, but child processes cannot be limited"
            );
        }
        self.services.start_all(&launches, &key).await;
        let hub = self.clone();
        let every = if self.services.is_systemd() {
            CHECK_UNITS
        } else {
            CHECK_LOCAL
        };
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = hub.shutdown.cancelled() => break,
                    _ = ticker.tick() => hub.services.check(&launches, &key).await,
                }
            }
        });
    }

    /// At shutdown: child processes stop with the hub (units outlive it).
    pub async fn stop_services(&self) {
        self.services.shutdown().await;
    }

    /// The live pid of a managed service (0 when not running or not managed).
    pub fn service_pid(&self, name: &str) -> u32 {
        self.services.pid(name)
    }

    /// Why a managed service last stopped or failed to start.
    pub fn service_failure(&self, name: &str) -> Option<Failure> {
        self.services.failure(name)
    }
}
