//! `/hub/api/`, `/info`, `/user` (whoami), `/health`, services, proxy routes, shutdown and
//! the deprecated authorization endpoints.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::hub::{Hub, Principal};
use crate::rbac::Resource;

use super::error::ApiError;
use super::extract::{Auth, JsonBody};

/// `GET /hub/api/`: the version, for anyone (single-user servers check it at start).
pub async fn root() -> Response {
    (
        [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        Json(json!({"version": crate::JUPYTERHUB_VERSION})),
    )
        .into_response()
}

/// `GET /hub/api/health`.
pub async fn health() -> StatusCode {
    StatusCode::OK
}

/// `GET /hub/api/info` (read:hub).
pub async fn info(State(hub): State<Hub>, Auth(identity): Auth) -> Result<Json<Value>, ApiError> {
    identity.require(&["read:hub"], &Resource::Hub)?;
    Ok(Json(json!({
        "version": crate::JUPYTERHUB_VERSION,
        "python": "none (jupyterhub-rs)",
        "sys_executable": std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
        "spawner": {"class": hub.spawner_name(), "version": env!("CARGO_PKG_VERSION")},
        "authenticator": {"class": hub.authenticator_name(), "version": env!("CARGO_PKG_VERSION")},
    })))
}

/// `GET /hub/api/user`: the caller's own model plus `scopes`. 403 (never 401/404) for a bad
/// token, which is what the single-user server expects.
pub async fn whoami(State(hub): State<Hub>, Auth(identity): Auth) -> Result<Json<Value>, ApiError> {
    let mut model = match &identity.principal {
        Principal::User(user) => {
            // The owner may always read its identity, whatever the token's scopes.
            // Expansion distributes over union, and the token's scopes are expanded already:
            // only the identify scopes are expanded here.
            let mut reader = identity.clone();
            let identify = crate::rbac::expand(
                &crate::rbac::identify_scopes(&user.name),
                &crate::rbac::Owner::User { name: &user.name },
            )
            .map_err(crate::hub::Error::from)?;
            reader.scopes = reader.scopes.union(&identify);
            let mut model = hub.user_model(&reader, user, false)?;
            if let Some(object) = model.as_object_mut() {
                object.entry("admin").or_insert(json!(user.admin));
                object.entry("groups").or_insert(json!(identity.groups));
                object.entry("user_info").or_insert(Value::Null);
            }
            model
        }
        Principal::Service(service) => {
            json!({"kind": "service", "name": service.name, "admin": service.admin})
        }
    };
    model["token_id"] = identity
        .token
        .as_ref()
        .map(|t| json!(format!("a{}", t.id)))
        .unwrap_or(Value::Null);
    model["session_id"] = json!(identity.session_id);
    model["scopes"] = json!(identity.scopes.sorted());
    Ok(Json(model))
}

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

/// `GET /hub/api/proxy`: `{routespec: {routespec, target, data}}`.
pub async fn proxy_routes(
    State(hub): State<Hub>,
    Auth(identity): Auth,
) -> Result<Json<Value>, ApiError> {
    identity.require(&["proxy"], &Resource::Hub)?;
    Ok(Json(hub.proxy_table()))
}

/// `POST /hub/api/proxy`: re-check routes against running servers.
pub async fn proxy_sync(
    State(hub): State<Hub>,
    Auth(identity): Auth,
) -> Result<StatusCode, ApiError> {
    identity.require(&["proxy"], &Resource::Hub)?;
    hub.reconcile().await?;
    Ok(StatusCode::OK)
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ShutdownBody {
    proxy: Option<bool>,
    servers: Option<bool>,
}

/// `POST /hub/api/shutdown`: stops the hub; user servers keep running unless `servers`.
pub async fn shutdown(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    JsonBody(body): JsonBody<Option<ShutdownBody>>,
) -> Result<Response, ApiError> {
    identity.require(&["shutdown"], &Resource::Hub)?;
    let body = body.unwrap_or_default();
    let _ = body.proxy;
    if body.servers == Some(true) {
        hub.stop_all_servers().await?;
    }
    tracing::info!(by = %identity.principal.name(), "shutdown requested through the API");
    hub.shutdown_soon();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message": "Shutting down Hub"})),
    )
        .into_response())
}

/// `POST /hub/api/authorizations/token`: removed in JupyterHub 2.0; always 404.
pub async fn authorizations_removed() -> ApiError {
    ApiError::not_found(
        "This endpoint was removed in JupyterHub 2.0; use POST /hub/api/users/:name/tokens",
    )
}

/// `GET /hub/api/authorizations/token/{token}` (deprecated): the owner of a token.
pub async fn authorization_token(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(token): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(owner) = hub.identify_token(&token)? else {
        return Err(ApiError::not_found("No such token"));
    };
    match &owner.principal {
        Principal::User(user) => Ok(Json(hub.user_model(&identity, user, false)?)),
        Principal::Service(service) => Ok(Json(
            json!({"kind": "service", "name": service.name, "admin": service.admin}),
        )),
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("Not Found")
}
