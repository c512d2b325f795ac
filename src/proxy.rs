//! The built-in proxy. Interim route table with the final API (see issue #3).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

pub enum Target {
    Hub,
    Url(http::Uri),
}

pub struct Route {
    pub spec: String,
    pub target: Target,
    pub data: serde_json::Value,
    last_activity: AtomicI64,
}

impl Route {
    pub fn last_activity(&self) -> Option<i64> {
        let v = self.last_activity.load(Ordering::Relaxed);
        (v != 0).then_some(v)
    }
    pub fn touch(&self) {
        self.last_activity
            .store(jiff::Timestamp::now().as_microsecond(), Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct RouteTable(Mutex<HashMap<String, Arc<Route>>>);

impl RouteTable {
    pub fn new() -> Self {
        RouteTable::default()
    }
    pub fn add(&self, spec: &str, target: Target, data: serde_json::Value) {
        let route = Route {
            spec: spec.to_owned(),
            target,
            data,
            last_activity: AtomicI64::new(0),
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.to_owned(), Arc::new(route));
    }
    pub fn remove(&self, spec: &str) -> Option<Arc<Route>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(spec)
    }
    pub fn get(&self, spec: &str) -> Option<Arc<Route>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(spec)
            .cloned()
    }
    pub fn list(&self) -> Vec<Arc<Route>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// Flags of `jupyterhub proxy`, as configurable-http-proxy's.
#[derive(Debug, clap::Args)]
pub struct ChpArgs {}

pub async fn run_chp(_args: ChpArgs) -> std::io::Result<()> {
    Err(std::io::Error::other("not yet available"))
}
