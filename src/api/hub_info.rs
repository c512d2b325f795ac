//! Upstream's `apihandlers/hub.py`: `/hub/api/` (the version), `/info`, `/health`,
//! `/shutdown`, and the API's 404.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::hub::Hub;
use crate::rbac::Resource;

use super::error::ApiError;
use super::extract::Auth;

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
    let mut info = json!({
        "version": crate::JUPYTERHUB_VERSION,
        "python": "none (jupyterhub-rs)",
        "sys_executable": std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
        "spawner": {"class": hub.spawner_name(), "version": env!("CARGO_PKG_VERSION")},
        "authenticator": {"class": hub.authenticator_name(), "version": env!("CARGO_PKG_VERSION")},
    });
    // Ours, only with `[LetsEncrypt]`: the certificate's expiry and the last ACME failure.
    if let (Some(report), Some(info)) = (hub.acme_report(), info.as_object_mut()) {
        info.insert("letsencrypt".into(), report);
    }
    Ok(Json(info))
}

/// `POST /hub/api/shutdown` (shutdown): stops the hub; user servers keep running unless
/// `servers`. The scope is checked before the body is read, as upstream's `@needs_scope`.
pub async fn shutdown(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    body: Bytes,
) -> Result<Response, ApiError> {
    identity.require(&["shutdown"], &Resource::Hub)?;
    let mut servers = false;
    if !body.trim_ascii().is_empty() {
        let data: Value = serde_json::from_slice(body.trim_ascii())
            .map_err(|_| ApiError::bad_request("Invalid JSON in body of request"))?;
        // Upstream reads the keys of a dict and ignores anything else it is sent; its check
        // is `value in {True, False}`, which 1 and 0 pass too.
        if let Value::Object(data) = &data {
            for key in ["proxy", "servers"] {
                let Some(value) = data.get(key) else {
                    continue;
                };
                let Some(flag) = python_bool(value) else {
                    return Err(ApiError::bad_request(format!(
                        "{key} must be true or false, got {}",
                        python_repr(value)
                    )));
                };
                if key == "servers" {
                    servers = flag;
                }
            }
        }
    }
    if servers {
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

/// A value equal to Python's `True` or `False` (`true`, `false`, 1, 0, 1.0, 0.0).
fn python_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(1.0) => Some(true),
            Some(0.0) => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// How Python's `repr` shows a JSON value, for upstream's messages.
fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.contains('\'') && !s.contains('"') => {
            format!("\"{}\"", s.replace('\\', "\\\\"))
        }
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(python_repr).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}: {}",
                        python_repr(&Value::String(k.clone())),
                        python_repr(v)
                    )
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("Not Found")
}
