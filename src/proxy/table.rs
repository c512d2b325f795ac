//! The route table: CHP-style route specs mapped to targets, read lock-free on every request.
//! Invariant: a lookup sees one consistent snapshot; replacing the snapshot never touches the
//! `Arc<Route>`s that in-flight requests and websockets already hold.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

/// Where a route sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Dispatch in-process to the hub's axum Router.
    Hub,
    /// Forward over HTTP/1.1 to this base URL (its path, if any, is prepended).
    Url(http::Uri),
}

/// One entry of the table. Shared (`Arc`) by the table and by every request using it.
#[derive(Debug)]
pub struct Route {
    /// The spec as given to [`RouteTable::add`], e.g. `/user/alice/` or `host.tld/user/alice/`.
    pub spec: String,
    pub target: Target,
    /// Extra data kept with the route (CHP keeps the POST body's extra keys here).
    pub data: serde_json::Value,
    /// Unix microseconds of the last activity; 0 = never.
    last_activity: AtomicI64,
    /// The target's processes are frozen: the proxy's thaw hook runs before forwarding.
    frozen: AtomicBool,
    /// Held while the thaw hook runs, so concurrent requests wait on one thaw.
    thawing: tokio::sync::Mutex<()>,
}

/// Activity closer together than this is recorded once (see `Route::touch_coarse`).
const TOUCH_GRANULARITY_MICROS: i64 = 1_000;

/// Unix time in microseconds.
pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Route {
    pub fn new(spec: &str, target: Target, data: serde_json::Value) -> Self {
        Self {
            spec: spec.to_owned(),
            target,
            data,
            last_activity: AtomicI64::new(0),
            frozen: AtomicBool::new(false),
            thawing: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether requests must wait for the thaw hook first.
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::Acquire)
    }

    /// Held while the target is being frozen or thawed: the proxy's thaw waits for a freeze
    /// under way, and concurrent requests for one thaw.
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.thawing.lock().await
    }

    /// Mark the target frozen (before freezing it) or running again.
    pub fn set_frozen(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::Release);
    }

    /// Unix microseconds of the last request or websocket traffic, `None` if never.
    pub fn last_activity(&self) -> Option<i64> {
        match self.last_activity.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Record activity now. Never goes backwards; at most one write per millisecond.
    pub fn touch(&self) {
        self.touch_coarse(now_micros());
    }

    /// Like `touch_at`, but skips the write when the recorded time is less than 1 ms older:
    /// every request of a busy route would otherwise write one cache line that all worker
    /// threads share, and nothing needs activity to the microsecond.
    fn touch_coarse(&self, micros: i64) {
        if micros - self.last_activity.load(Ordering::Relaxed) >= TOUCH_GRANULARITY_MICROS {
            self.touch_at(micros);
        }
    }

    pub(crate) fn touch_at(&self, micros: i64) {
        self.last_activity.fetch_max(micros, Ordering::Relaxed);
    }
}

/// One immutable snapshot of the routes.
#[derive(Default, Clone)]
struct Table {
    /// Path routes, keyed by the decoded path with leading and trailing `/` trimmed (`""` = `/`).
    paths: HashMap<Box<str>, Arc<Route>>,
    /// Host routes: lowercase host without port → path key → route.
    hosts: HashMap<Box<str>, HashMap<Box<str>, Arc<Route>>>,
}

/// The routing table. Reads are a lock-free snapshot load; writers serialize on a mutex and
/// publish a new snapshot (O(routes) per change, fine for thousands of routes).
pub struct RouteTable {
    table: ArcSwap<Table>,
    write: Mutex<()>,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.list().len())
            .finish()
    }
}

/// Percent-decode a path (as CHP's `decodeURIComponent`), borrowing when there is nothing to do.
fn decode(path: &str) -> Cow<'_, str> {
    if path.contains('%') {
        percent_encoding::percent_decode_str(path).decode_utf8_lossy()
    } else {
        Cow::Borrowed(path)
    }
}

fn trim_slashes(s: &str) -> &str {
    s.trim_matches('/')
}

/// Split a spec into (host, path key). A spec not starting with `/` starts with a host.
fn parse_spec(spec: &str) -> (Option<String>, Box<str>) {
    let (host, path) = if spec.starts_with('/') || spec.is_empty() {
        (None, spec)
    } else {
        match spec.find('/') {
            Some(i) => (Some(&spec[..i]), &spec[i..]),
            None => (Some(spec), ""),
        }
    };
    let host = host.map(|h| strip_port(h).to_ascii_lowercase());
    (host, trim_slashes(&decode(path)).into())
}

fn strip_port(host: &str) -> &str {
    // `[v6]:port` keeps its brackets; `name:port` loses the port.
    if let Some(end) = host.strip_prefix('[').and_then(|h| h.find(']')) {
        return &host[..end + 2];
    }
    match host.rfind(':') {
        Some(i) => &host[..i],
        None => host,
    }
}

/// Longest-prefix match on `/`-separated segments: `user/a` matches `user/a/x` but not `user/ab`.
fn longest_prefix<'m>(
    map: &'m HashMap<Box<str>, Arc<Route>>,
    mut key: &str,
) -> Option<&'m Arc<Route>> {
    if map.is_empty() {
        return None;
    }
    loop {
        if let Some(route) = map.get(key) {
            return Some(route);
        }
        if key.is_empty() {
            return None;
        }
        key = match key.rfind('/') {
            Some(i) => key[..i].trim_end_matches('/'),
            None => "",
        };
    }
}

impl RouteTable {
    pub fn new() -> Self {
        Self {
            table: ArcSwap::from_pointee(Table::default()),
            write: Mutex::new(()),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Table)) {
        let _guard = self
            .write
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut table = Table::clone(&self.table.load());
        f(&mut table);
        self.table.store(Arc::new(table));
    }

    /// Add or replace the route at `spec`. A replaced route's activity and frozen flag carry over; requests
    /// already using the old route finish on it.
    pub fn add(&self, spec: &str, target: Target, data: serde_json::Value) {
        let route = Route::new(spec, target, data);
        let (host, key) = parse_spec(spec);
        self.update(|table| {
            let map = match host {
                Some(host) => table.hosts.entry(host.into()).or_default(),
                None => &mut table.paths,
            };
            if let Some(old) = map.get(&key) {
                route.touch_at(old.last_activity.load(Ordering::Relaxed));
                // A re-added route to a frozen server must still thaw it first.
                route.set_frozen(old.is_frozen());
            }
            map.insert(key, Arc::new(route));
        });
    }

    /// Remove the route at `spec` (exact spec, trailing slash optional).
    pub fn remove(&self, spec: &str) -> Option<Arc<Route>> {
        let (host, key) = parse_spec(spec);
        let mut removed = None;
        self.update(|table| match host {
            Some(host) => {
                if let Some(map) = table.hosts.get_mut(host.as_str()) {
                    removed = map.remove(&key);
                    if map.is_empty() {
                        table.hosts.remove(host.as_str());
                    }
                }
            }
            None => removed = table.paths.remove(&key),
        });
        removed
    }

    /// The route at exactly `spec` (trailing slash optional), not a prefix match.
    pub fn get(&self, spec: &str) -> Option<Arc<Route>> {
        let (host, key) = parse_spec(spec);
        let table = self.table.load();
        match host {
            Some(host) => table.hosts.get(host.as_str())?.get(&key).cloned(),
            None => table.paths.get(&key).cloned(),
        }
    }

    /// Every route, in no particular order.
    pub fn list(&self) -> Vec<Arc<Route>> {
        let table = self.table.load();
        table
            .paths
            .values()
            .chain(table.hosts.values().flat_map(|m| m.values()))
            .cloned()
            .collect()
    }

    /// The route for a request: host routes for `host` first (if any), then path routes; the
    /// longest matching prefix wins.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<Arc<Route>> {
        let table = self.table.load();
        let path = decode(path);
        let key = trim_slashes(&path);
        if let Some(host) = host.filter(|_| !table.hosts.is_empty()) {
            let host = strip_port(host);
            let by_host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                table.hosts.get(host.to_ascii_lowercase().as_str())
            } else {
                table.hosts.get(host)
            };
            if let Some(route) = by_host.and_then(|map| longest_prefix(map, key)) {
                return Some(route.clone());
            }
        }
        longest_prefix(&table.paths, key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(specs: &[&str]) -> RouteTable {
        let t = RouteTable::new();
        for s in specs {
            t.add(s, Target::Hub, serde_json::Value::String((*s).to_owned()));
        }
        t
    }

    fn check(t: &RouteTable, host: Option<&str>, path: &str, expected: Option<&str>) {
        let got = t.lookup(host, path).map(|r| r.spec.clone());
        assert_eq!(got.as_deref(), expected, "lookup({host:?}, {path:?})");
    }

    #[test]
    fn precedence() {
        let t = table(&[
            "/",
            "/user/a/",
            "/user/ab/",
            "/user/a/nb1/",
            "/services/x/",
            "/hub/",
        ]);
        check(&t, None, "/user/a/tree", Some("/user/a/"));
        check(&t, None, "/user/a", Some("/user/a/"));
        check(&t, None, "/user/ab/tree", Some("/user/ab/"));
        check(&t, None, "/user/abc/tree", Some("/"));
        check(&t, None, "/user/a/nb1/api/kernels", Some("/user/a/nb1/"));
        check(&t, None, "/user/a/nb10/api", Some("/user/a/"));
        check(&t, None, "/services/x", Some("/services/x/"));
        check(&t, None, "//user/a//x", Some("/user/a/"));
        // As in CHP's trie, an empty segment is a segment: `user//a` is not under `user/a`.
        check(&t, None, "/user//a/x", Some("/"));
        check(&t, None, "/user/%61/x", Some("/user/a/"));
        check(&t, None, "/", Some("/"));
        check(&t, None, "", Some("/"));
        assert!(t.remove("/").is_some());
        check(&t, None, "/nothing", None);
        assert!(t.remove("/").is_none());
        assert_eq!(
            t.get("/user/a").map(|r| r.spec.clone()).as_deref(),
            Some("/user/a/")
        );
        assert_eq!(t.list().len(), 5);
    }

    #[test]
    fn hosts() {
        let t = table(&["/", "a.hub.tld/user/a/", "a.hub.tld/", "b.hub.tld/user/b/"]);
        check(
            &t,
            Some("a.hub.tld:8000"),
            "/user/a/x",
            Some("a.hub.tld/user/a/"),
        );
        check(&t, Some("A.Hub.TLD"), "/other", Some("a.hub.tld/"));
        check(&t, Some("b.hub.tld"), "/other", Some("/"));
        check(&t, Some("c.hub.tld"), "/user/a/x", Some("/"));
        check(&t, None, "/user/a/x", Some("/"));
        assert!(t.remove("b.hub.tld/user/b/").is_some());
        check(&t, Some("b.hub.tld"), "/user/b/", Some("/"));
    }

    #[test]
    fn activity_survives_replacement() {
        let t = table(&["/user/a/"]);
        let old = t.get("/user/a/").expect("added");
        assert_eq!(old.last_activity(), None);
        old.touch_at(42);
        old.touch_at(7);
        assert_eq!(old.last_activity(), Some(42));
        t.add(
            "/user/a/",
            Target::Url(http::Uri::from_static("http://127.0.0.1:1")),
            serde_json::Value::Null,
        );
        let new = t.get("/user/a").expect("replaced");
        assert_eq!(new.last_activity(), Some(42));
        assert!(matches!(new.target, Target::Url(_)));
    }

    #[test]
    fn touch_writes_at_most_once_a_millisecond() {
        let route = Route::new("/user/a/", Target::Hub, serde_json::Value::Null);
        for (now, expected) in [
            (5_000, 5_000),
            (5_999, 5_000),
            (6_000, 6_000),
            (4_000, 6_000),
        ] {
            route.touch_coarse(now);
            assert_eq!(
                route.last_activity(),
                Some(expected),
                "after touching at {now}"
            );
        }
    }

    /// The naive reference: CHP's trie, as "longest route whose segments prefix the path's".
    fn reference<'a>(routes: &'a [String], path: &str) -> Option<&'a String> {
        let segs = |s: &str| -> Vec<String> {
            let t = s.trim_matches('/');
            if t.is_empty() {
                vec![]
            } else {
                t.split('/').map(str::to_owned).collect()
            }
        };
        let p = segs(path);
        routes
            .iter()
            .filter(|r| {
                let r = segs(r);
                r.len() <= p.len() && r[..] == p[..r.len()]
            })
            .max_by_key(|r| segs(r).len())
    }

    fn seg() -> impl Strategy<Value = String> {
        prop_oneof![Just("a"), Just("ab"), Just("b"), Just("user"), Just("")]
            .prop_map(str::to_owned)
    }

    fn spec() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(seg().prop_filter("no empty", |s| !s.is_empty()), 0..4),
            any::<bool>(),
        )
            .prop_map(|(segs, slash)| {
                let mut s = format!("/{}", segs.join("/"));
                if slash && s.len() > 1 {
                    s.push('/');
                }
                s
            })
    }

    proptest! {
        #[test]
        fn matches_reference(specs in proptest::collection::vec(spec(), 0..8),
                             path in proptest::collection::vec(seg(), 0..6), trailing in any::<bool>()) {
            let t = RouteTable::new();
            // Later adds replace earlier ones with the same normalized key, as in the reference.
            let mut routes: Vec<String> = Vec::new();
            for s in &specs {
                t.add(s, Target::Hub, serde_json::Value::Null);
                routes.retain(|r| r.trim_matches('/') != s.trim_matches('/'));
                routes.push(s.clone());
            }
            let mut path = format!("/{}", path.join("/"));
            if trailing { path.push('/'); }
            let got = t.lookup(None, &path).map(|r| r.spec.clone());
            prop_assert_eq!(got.as_ref(), reference(&routes, &path));
        }
    }
}
