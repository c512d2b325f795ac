//! The one place errors become HTTP statuses, in JupyterHub's JSON shape
//! `{"status": N, "message": "..."}`. Internal details (SQL, D-Bus, I/O) are logged, not sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::hub;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "Missing or invalid credentials.")
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"status": self.status.as_u16(), "message": self.message})),
        )
            .into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<hub::Error> for ApiError {
    fn from(error: hub::Error) -> ApiError {
        use hub::Error as E;
        let (status, message) = match &error {
            E::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            E::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
            E::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            E::MissingScope(_) | E::Forbidden(_) | E::Unauthenticated => {
                (StatusCode::FORBIDDEN, error.to_string())
            }
            E::NoAccess => (StatusCode::NOT_FOUND, error.to_string()),
            E::TooManyRequests {
                message,
                retry_after,
            } => {
                return ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: message.clone(),
                    retry_after: Some(*retry_after),
                };
            }
            E::SpawnFailed(m) => (StatusCode::INTERNAL_SERVER_ERROR, m.clone()),
            E::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m.clone()),
            E::Auth(e) => match e {
                crate::auth::Error::InvalidName { .. } => (StatusCode::BAD_REQUEST, e.to_string()),
                crate::auth::Error::InvalidCredentials | crate::auth::Error::NotAllowed(_) => {
                    (StatusCode::FORBIDDEN, e.to_string())
                }
                crate::auth::Error::NoLogin => (StatusCode::NOT_FOUND, e.to_string()),
                crate::auth::Error::Pam(_) | crate::auth::Error::Helper(_) => {
                    tracing::error!(error = %e, "authentication backend failed");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Authentication failed for internal reasons".into(),
                    )
                }
            },
            E::Spawner(e) => match e {
                crate::spawner::Error::StartFailed { reason, .. } => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Spawn failed: {reason}"),
                ),
                crate::spawner::Error::NoSuchSystemUser(_)
                | crate::spawner::Error::CommandNotFound(_)
                | crate::spawner::Error::Refused(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                }
                crate::spawner::Error::Systemd(_) | crate::spawner::Error::Io(_) => {
                    tracing::error!(error = %e, "spawner failed");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "The spawner failed; see the hub's log".into(),
                    )
                }
            },
            E::Rbac(e) => (StatusCode::BAD_REQUEST, e.to_string()),
            E::Db(db_error) => match db_error {
                crate::hub::DbError::NotFound(what) => {
                    (StatusCode::NOT_FOUND, format!("{what} not found"))
                }
                crate::hub::DbError::Conflict(what) => {
                    (StatusCode::CONFLICT, format!("{what} already exists"))
                }
                _ => {
                    tracing::error!(error = %db_error, "database error");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal database error; see the hub's log".into(),
                    )
                }
            },
            E::Cookie(e) => {
                tracing::error!(error = %e, "cookie secret");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error; see the hub's log".into(),
                )
            }
            E::Crypt(m) => (StatusCode::BAD_REQUEST, m.clone()),
        };
        ApiError {
            status,
            message,
            retry_after: None,
        }
    }
}
