//! Upstream's `apihandlers/services.py`: `/hub/api/services` and `/services/{name}`.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use crate::hub::{Hub, ServiceRow};
use crate::rbac::Resource;

use super::error::ApiError;
use super::extract::Auth;

/// Upstream's `service_model` filtered by `_filter_model`: each scope the caller holds for
/// this service shows its set of keys (`read:services` all but `roles`, `read:roles:services`
/// the roles); `None` when it holds none of them.
fn service_model(hub: &Hub, identity: &crate::hub::Identity, row: &ServiceRow) -> Option<Value> {
    let name = row.name.as_str();
    let resource = Resource::Service { name };
    let mut keys: Vec<&str> = Vec::new();
    if identity.allows("read:services", &resource) {
        keys.extend([
            "kind", "name", "admin", "url", "prefix", "command", "pid", "info", "display",
        ]);
    }
    if identity.allows("read:services:name", &resource) {
        keys.extend(["kind", "name", "admin"]);
    }
    if identity.allows("read:roles:services", &resource) {
        keys.extend(["kind", "name", "roles", "admin"]);
    }
    if keys.is_empty() {
        return None;
    }
    let config = hub.config().hub.services.iter().find(|s| s.name == name);
    let url = config.and_then(|c| c.url.clone()).unwrap_or_default();
    // A failed read of the roles shows none rather than failing the whole listing.
    let roles = if keys.contains(&"roles") {
        hub.service_roles(row).unwrap_or_default()
    } else {
        Vec::new()
    };
    let full = json!({
        "kind": "service",
        "name": name,
        "roles": roles,
        "admin": row.admin,
        "prefix": if url.is_empty() { String::new() } else { format!("{}services/{}/", hub.base_url(), name) },
        "url": url,
        "command": config.map(|c| c.command.clone()).unwrap_or_default(),
        "pid": 0,
        "info": config.map(|c| json!(c.info)).unwrap_or(json!({})),
        "display": config.and_then(|c| c.display).unwrap_or(true),
    });
    let mut model = Map::new();
    if let Value::Object(all) = full {
        for (key, value) in all {
            if keys.contains(&key.as_str()) {
                model.insert(key, value);
            }
        }
    }
    Some(Value::Object(model))
}

/// `GET /hub/api/services`: a dict keyed by service name (as the code does, not the spec).
pub async fn services(
    State(hub): State<Hub>,
    Auth(identity): Auth,
) -> Result<Json<Value>, ApiError> {
    if !identity.scopes.has("list:services") {
        identity.require(&["list:services"], &Resource::Hub)?;
    }
    let rows = hub.services()?;
    let mut out = Map::new();
    for row in rows {
        if identity.allows("list:services", &Resource::Service { name: &row.name })
            && let Some(model) = service_model(&hub, &identity, &row)
        {
            out.insert(row.name.clone(), model);
        }
    }
    Ok(Json(Value::Object(out)))
}

pub async fn service(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let resource = Resource::Service { name: &name };
    identity.require(
        &["read:services", "read:services:name", "read:roles:services"],
        &resource,
    )?;
    let row = hub
        .service(&name)?
        .ok_or_else(|| ApiError::not_found(format!("No such service: {name}")))?;
    service_model(&hub, &identity, &row)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("No access"))
}
