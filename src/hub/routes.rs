//! The proxy's route table as the hub sees it: the table `GET /hub/api/proxy` shows, and the
//! activity the proxy counts per route, written to users and servers.

use serde_json::{Map, Value, json};

use crate::db;
use crate::proxy::Target;

use super::{Hub, Result};

impl Hub {
    /// `{routespec: {routespec, target, data}}`, sorted by route, as upstream's proxy API.
    pub fn proxy_table(&self) -> Value {
        let mut routes = self.routes.list();
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

    /// Write proxy activity (per route) to users and servers; called periodically.
    pub fn flush_route_activity(&self) -> Result<()> {
        let mut updates = Vec::new();
        for route in self.routes.list() {
            let Some(when) = route.last_activity() else {
                continue;
            };
            let (Some(user), Some(server)) = (
                route.data.get("user").and_then(Value::as_str),
                route.data.get("server_name").and_then(Value::as_str),
            ) else {
                continue;
            };
            updates.push((user.to_owned(), server.to_owned(), when));
        }
        if updates.is_empty() {
            return Ok(());
        }
        self.db.write(|tx| {
            for (user, server, when) in &updates {
                if let Some(row) = db::user_by_name(tx, user)? {
                    db::touch_user(tx, row.id, *when)?;
                    if let Some(spawner) = db::spawner(tx, row.id, server)? {
                        db::touch_spawner(tx, spawner.id, *when)?;
                    }
                }
            }
            Ok(())
        })?;
        Ok(())
    }
}
