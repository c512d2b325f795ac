//! Upstream's `apihandlers/services.py`: `/hub/api/services` and `/services/{name}`.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use crate::hub::Hub;
use crate::rbac::Resource;

use super::error::ApiError;
use super::extract::Auth;

fn service_model(
    hub: &Hub,
    identity: &crate::hub::Identity,
    name: &str,
    admin: bool,
) -> Option<Value> {
    let resource = Resource::Service { name };
    let config = hub.config().hub.services.iter().find(|s| s.name == name);
    if identity.allows("read:services", &resource) {
        let url = config.and_then(|c| c.url.clone()).unwrap_or_default();
        return Some(json!({
            "kind": "service",
            "name": name,
            "admin": admin,
            "url": url,
            "prefix": if url.is_empty() { String::new() } else { format!("{}services/{}/", hub.base_url(), name) },
            "command": config.map(|c| c.command.clone()).unwrap_or_default(),
            "pid": 0,
            "info": config.map(|c| json!(c.info)).unwrap_or(json!({})),
            "display": config.and_then(|c| c.display).unwrap_or(true),
        }));
    }
    if identity.allows("read:services:name", &resource)
        || identity.allows("read:roles:services", &resource)
    {
        return Some(json!({"kind": "service", "name": name, "admin": admin}));
    }
    None
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
            && let Some(model) = service_model(&hub, &identity, &row.name, row.admin)
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
    service_model(&hub, &identity, &row.name, row.admin)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("No access"))
}
