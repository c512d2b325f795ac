//! The proxy's route table as the hub sees it: the table `GET /hub/api/proxy` shows, the
//! check that it routes what runs (upstream's `Proxy.check_routes`), and the activity the
//! proxy counts per route, written to users and servers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::db;
use crate::proxy::{Route, Target};

use super::{Hub, Result};

impl Hub {
    /// `{routespec: {routespec, target, data}}`, sorted by route, as upstream's proxy API.
    pub fn proxy_table(&self) -> Value {
        let mut routes = self.poll_routes();
        routes.sort_by(|a, b| a.spec.cmp(&b.spec));
        let mut out = Map::new();
        for route in routes {
            let target = match &route.target {
                Target::Hub => self.config.hub.hub_bind_url.clone(),
                Target::Url(uri) => uri.to_string().trim_end_matches('/').to_owned(),
            };
            let mut data = route.data.clone();
            if let (Some(object), Some(when)) = (data.as_object_mut(), route.last_activity()) {
                object.insert("last_activity".into(), json!(crate::time::iso(when)));
            }
            out.insert(
                route.spec.clone(),
                json!({"routespec": route.spec, "target": target, "data": data}),
            );
        }
        Value::Object(out)
    }

    /// Every route, timed as upstream's `get_all_routes` (`proxy_poll_duration_seconds`).
    fn poll_routes(&self) -> Vec<Arc<Route>> {
        let started = Instant::now();
        let routes = self.routes.list();
        self.metrics
            .proxy_poll
            .observe(started.elapsed().as_secs_f64());
        routes
    }

    /// Upstream's `Proxy.check_routes`, timed as `check_routes_duration_seconds`: the hub's
    /// route, a route to each ready server and each service with a URL (added when missing
    /// or pointing elsewhere), routes of servers starting or stopping left alone, and every
    /// other route deleted as stale.
    pub fn check_routes(&self) -> Result<()> {
        let started = Instant::now();
        let routes = self.poll_routes();
        let base = self.base_url().to_owned();
        let mut good: HashSet<String> = HashSet::from([base.clone()]);
        if !routes
            .iter()
            .any(|r| r.spec == base && r.target == Target::Hub)
        {
            tracing::warn!(route = %base, "Adding the missing route of the Hub");
            self.routes.add(&base, Target::Hub, json!({"hub": true}));
        }
        for row in self.db.read(db::all_spawners)?.into_iter() {
            let key = (row.user_id, row.name.clone());
            let pending = self.server_pending(&key).is_some();
            if !pending && !self.server_ready(&key) {
                continue;
            }
            let Some(user) = self.db.read(|c| db::user_by_id(c, row.user_id))? else {
                continue;
            };
            let spec = self.server_url(&user.name, &row.name);
            good.insert(spec.clone());
            let target = row.url.as_deref().map(str::parse::<http::Uri>);
            let (false, Some(Ok(target))) = (pending, target) else {
                continue;
            };
            let target = Target::Url(target);
            if self.routes.get(&spec).is_none_or(|r| r.target != target) {
                tracing::warn!(route = %spec, "Adding missing route for a running server");
                self.routes.add(
                    &spec,
                    target,
                    json!({"user": user.name, "server_name": row.name}),
                );
            }
        }
        for spec in self
            .services()?
            .iter()
            .filter_map(|row| self.service_spec_of(row))
        {
            let Some(url) = &spec.url else { continue };
            let prefix = spec.prefix(&base);
            good.insert(prefix.clone());
            let Ok(target) = super::services::service_target(&spec.name, url) else {
                continue;
            };
            let target = Target::Url(target);
            if self.routes.get(&prefix).is_none_or(|r| r.target != target) {
                tracing::warn!(service = %spec.name, "Adding missing route for a service");
                self.add_service_route(&spec);
            }
        }
        for route in routes {
            if !good.contains(&route.spec) {
                tracing::warn!(route = %route.spec, "Deleting stale route");
                self.routes.remove(&route.spec);
            }
        }
        self.metrics
            .check_routes
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Write proxy activity (per route) to users and servers; called periodically. Only
    /// routes with activity since the last flush are written: with a thousand idle servers a
    /// flush is then no write at all (and leaves what is remembered at that generation).
    pub fn flush_route_activity(&self) -> Result<()> {
        let routes = self.routes.list();
        let mut flushed = self
            .flushed_activity
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Forget routes that are gone, so the memory stays the table's size.
        let live: HashSet<&str> = routes.iter().map(|r| r.spec.as_str()).collect();
        flushed.retain(|spec, _| live.contains(spec.as_str()));
        let mut updates = Vec::new();
        for route in &routes {
            let Some(when) = route.last_activity() else {
                continue;
            };
            if flushed.get(&route.spec).is_some_and(|&t| t >= when) {
                continue;
            }
            let (Some(user), Some(server)) = (
                route.data.get("user").and_then(Value::as_str),
                route.data.get("server_name").and_then(Value::as_str),
            ) else {
                continue;
            };
            updates.push((route.spec.as_str(), user, server, when));
        }
        if updates.is_empty() {
            return Ok(());
        }
        self.db.write(|tx| {
            for (_, user, server, when) in &updates {
                if let Some(row) = db::user_by_name(tx, user)? {
                    db::touch_user(tx, row.id, *when)?;
                    if let Some(spawner) = db::spawner(tx, row.id, server)? {
                        db::touch_spawner(tx, spawner.id, *when)?;
                    }
                }
            }
            Ok(())
        })?;
        for (spec, _, _, when) in updates {
            flushed.insert(spec.to_owned(), when);
        }
        Ok(())
    }
}
