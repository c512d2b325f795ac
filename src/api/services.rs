//! Upstream's `apihandlers/services.py`: `/hub/api/services` and `/services/{name}`, whose
//! `POST` and `DELETE` create and remove services at runtime (JupyterHub 5+).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::hub::{Hub, ServiceRow, ServiceSpec};
use crate::rbac::Resource;

use super::error::ApiError;
use super::extract::{Auth, JsonBody};

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
    let spec = hub.service_spec_of(row);
    let url = spec
        .as_ref()
        .and_then(|c| c.url.clone())
        .unwrap_or_default();
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
        "command": spec.as_ref().map(|c| c.command.clone()).unwrap_or_default(),
        "pid": hub.service_pid(name),
        "info": spec.as_ref().map(|c| json!(c.info)).unwrap_or(json!({})),
        "display": spec.as_ref().is_none_or(|c| c.display),
    });
    let mut model = Map::new();
    if let Value::Object(all) = full {
        for (key, value) in all {
            if keys.contains(&key.as_str()) {
                model.insert(key, value);
            }
        }
    }
    // Ours: why a managed service is not running (reason, journal tail), for admins who
    // would otherwise have to read the hub's log.
    let managed = spec.as_ref().is_some_and(|c| !c.command.is_empty());
    if managed && keys.contains(&"pid") {
        let failure = hub.service_failure(name).map(|f| {
            json!({"reason": f.reason, "log_tail": f.log_tail, "time": crate::time::iso(f.time)})
        });
        model.insert("last_failure".into(), failure.unwrap_or(Value::Null));
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

/// The keys upstream's `_service_model_types` allows, each with its JSON type.
const SERVICE_KEYS: &[(&str, &str)] = &[
    ("name", "string"),
    ("admin", "boolean"),
    ("url", "string"),
    ("oauth_client_allowed_scopes", "array"),
    ("api_token", "string"),
    ("info", "object"),
    ("display", "boolean"),
    ("oauth_no_confirm", "boolean"),
    ("oauth_client_id", "string"),
    ("oauth_redirect_uri", "string"),
];

/// What only a managed service (one the hub runs) has; none can be created at runtime.
const MANAGED_KEYS: &[&str] = &["command", "cwd", "environment", "user"];

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Upstream `_check_service_model` on a `POST` body: an object of known keys, each of its
/// type; the name, if given, is the path's. Returns the spec and the token, if any.
fn parse_service(
    name: &str,
    body: Option<Value>,
) -> Result<(ServiceSpec, Option<String>), ApiError> {
    let body = match body {
        Some(Value::Object(body)) if !body.is_empty() => body,
        _ => return Err(ApiError::bad_request("Invalid service data")),
    };
    let managed = MANAGED_KEYS.iter().any(|key| match body.get(*key) {
        // An empty command is upstream's unmanaged service.
        Some(Value::Array(command)) if *key == "command" => !command.is_empty(),
        Some(_) => true,
        None => false,
    });
    if managed {
        return Err(ApiError::bad_request(format!(
            "Can not create managed service {name} at runtime"
        )));
    }
    let unknown: Vec<&str> = body
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "command" && !SERVICE_KEYS.iter().any(|(key, _)| key == k))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Invalid JSON keys: {}",
            unknown.join(", ")
        )));
    }
    for (key, value) in &body {
        let expected = SERVICE_KEYS
            .iter()
            .find(|(k, _)| k == key)
            .map_or("array", |(_, t)| *t);
        if json_type(value) != expected {
            return Err(ApiError::bad_request(format!(
                "service.{key} must be {expected}, not: {}",
                json_type(value)
            )));
        }
    }
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let flag = |key: &str| body.get(key).and_then(Value::as_bool);
    if let Some(given) = text("name")
        && given != name
    {
        return Err(ApiError::bad_request(format!(
            "service.name {given:?} must be the name in the URL, {name:?}"
        )));
    }
    let mut scopes = Vec::new();
    for scope in body
        .get("oauth_client_allowed_scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let scope = scope.as_str().ok_or_else(|| {
            ApiError::bad_request("service.oauth_client_allowed_scopes must be a list of strings")
        })?;
        scopes.push(scope.to_owned());
    }
    let spec = ServiceSpec {
        name: name.to_owned(),
        from_config: false,
        admin: flag("admin").unwrap_or(false),
        url: text("url").filter(|u| !u.is_empty()),
        info: body
            .get("info")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        display: flag("display").unwrap_or(true),
        oauth_no_confirm: flag("oauth_no_confirm").unwrap_or(false),
        oauth_client_id: text("oauth_client_id").filter(|c| !c.is_empty()),
        oauth_redirect_uri: text("oauth_redirect_uri").filter(|u| !u.is_empty()),
        oauth_client_allowed_scopes: scopes,
        command: Vec::new(),
    };
    Ok((spec, text("api_token")))
}

/// `POST /services/{name}` (admin:services): 201 with the service model.
pub async fn create(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Option<Value>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    identity.require(&["admin:services"], &Resource::Service { name: &name })?;
    // As upstream: an existing name is a conflict whatever the body says.
    if hub.service(&name)?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Service {name} already exists"),
        ));
    }
    let (spec, api_token) = parse_service(&name, body)?;
    let row = hub.create_service(&identity, &spec, api_token.as_deref())?;
    let model = service_model(&hub, &identity, &row).unwrap_or_else(|| json!({}));
    Ok((StatusCode::CREATED, Json(model)))
}

/// `DELETE /services/{name}` (admin:services): only services created at runtime.
pub async fn delete(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    identity.require(&["admin:services"], &Resource::Service { name: &name })?;
    hub.delete_service(&name)?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<(ServiceSpec, Option<String>), String> {
        parse_service("svc", Some(body)).map_err(|e| e.message)
    }

    #[test]
    fn bodies() {
        let (spec, token) = parse(
            json!({"url": "http://127.0.0.1:1", "api_token": "t0123456789",
            "info": {"a": [1]}, "display": false, "oauth_client_allowed_scopes": ["read:users"]}),
        )
        .expect("valid");
        assert_eq!(spec.url.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(token.as_deref(), Some("t0123456789"));
        assert!(!spec.display);
        assert_eq!(spec.oauth_client_allowed_scopes, ["read:users"]);
        assert!(parse(json!({"name": "svc", "command": []})).is_ok());

        let refused = |body: Value| parse(body).expect_err("refused");
        assert_eq!(refused(json!({})), "Invalid service data");
        assert_eq!(refused(json!([1])), "Invalid service data");
        assert_eq!(
            parse_service("svc", None).expect_err("none").message,
            "Invalid service data"
        );
        for managed in [
            json!({"command": ["x"]}),
            json!({"cwd": "/"}),
            json!({"user": "u"}),
            json!({"environment": {}}),
        ] {
            assert_eq!(
                refused(managed),
                "Can not create managed service svc at runtime"
            );
        }
        assert!(refused(json!({"frobnicate": 1, "url": "x"})).contains("frobnicate"));
        assert_eq!(
            refused(json!({"admin": "yes"})),
            "service.admin must be boolean, not: string"
        );
        assert!(refused(json!({"name": "other"})).contains("other"));
        assert!(refused(json!({"oauth_client_allowed_scopes": [1]})).contains("list of strings"));
    }
}
