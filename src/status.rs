//! The one place domain errors become HTTP: the status, the message a client may see
//! (internal details — SQL, D-Bus, I/O — are logged, not sent) and `Retry-After`. The REST
//! API's JSON errors (`api::ApiError`), the pages' error pages (`web::PageError`) and the
//! OAuth endpoints all take their status from here; handlers name what went wrong as a
//! `hub::Error` and do not pick statuses themselves.

use axum::http::StatusCode;

use crate::hub;

/// A domain error as HTTP sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

/// A failed login form, as upstream answers it: every refusal (unknown name, wrong
/// password, not allowed, a name the policy rejects) is the same 403, so the page never
/// tells which names exist; rate limits keep their 429; anything else is the hub's fault.
pub fn login_failure(error: hub::Error) -> Failure {
    use crate::auth::Error as A;
    let refused = |message: &str| Failure {
        status: StatusCode::FORBIDDEN,
        message: message.to_owned(),
        retry_after: None,
    };
    match error {
        hub::Error::TooManyRequests {
            message,
            retry_after,
        } => Failure {
            status: StatusCode::TOO_MANY_REQUESTS,
            message,
            retry_after: Some(retry_after),
        },
        hub::Error::Auth(A::NotAllowed(_) | A::InvalidCredentials | A::InvalidName { .. }) => {
            refused("Invalid username or password")
        }
        // A first login's password that is refused: say why, so a better one can be chosen.
        hub::Error::Auth(A::PasswordRejected(message)) => refused(&message),
        // The directory is down or TLS failed: the admin's problem, said as such (the
        // details go to the log, not to the page).
        hub::Error::Auth(e @ A::Ldap(_)) => {
            tracing::error!(error = %e, "LDAP login failed");
            Failure {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "The login service cannot reach its directory (LDAP) server. \
                          Try again later, or tell the hub's administrator."
                    .into(),
                retry_after: None,
            }
        }
        e => {
            tracing::error!(error = %e, "login failed");
            Failure {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "Login failed for an internal reason; see the hub's log.".into(),
                retry_after: None,
            }
        }
    }
}

impl From<hub::Error> for Failure {
    fn from(error: hub::Error) -> Failure {
        use hub::Error as E;
        let (status, message) = match &error {
            E::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            E::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
            E::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            E::NotModifiable(m) => (StatusCode::METHOD_NOT_ALLOWED, m.clone()),
            E::MissingScope(_) | E::Forbidden(_) | E::Unauthenticated => {
                (StatusCode::FORBIDDEN, error.to_string())
            }
            E::NoAccess => (StatusCode::NOT_FOUND, error.to_string()),
            E::TooManyRequests {
                message,
                retry_after,
            } => {
                return Failure {
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
                crate::auth::Error::PasswordRejected(m) => (StatusCode::BAD_REQUEST, m.clone()),
                crate::auth::Error::Ldap(_) => {
                    tracing::error!(error = %e, "LDAP server unavailable");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The directory (LDAP) server cannot be reached".into(),
                    )
                }
                crate::auth::Error::Pam(_)
                | crate::auth::Error::Helper(_)
                | crate::auth::Error::Password(_) => {
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
                | crate::spawner::Error::UserEnv(_)
                | crate::spawner::Error::Refused(_)
                | crate::spawner::Error::FreezeUnsupported(_) => {
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
                // The write was rolled back; the admin can act on this one, so say it.
                crate::hub::DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DiskFull =>
                {
                    tracing::error!(error = %db_error, "the database's disk is full");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The hub's database disk is full; nothing was changed. Try again once \
                         the administrator has freed space."
                            .into(),
                    )
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
            E::OAuth(e) => {
                use crate::auth::oauth2::Error as O;
                let status = match e {
                    O::Provider(_) | O::NoUsername(_) | O::Refused(_) => StatusCode::FORBIDDEN,
                    O::BadState | O::NoCode => StatusCode::BAD_REQUEST,
                    O::Discovery { .. }
                    | O::TokenExchange(_)
                    | O::Userdata(_)
                    | O::IdToken(_)
                    | O::TokenRefused(_)
                    | O::GoogleGroups(_) => {
                        tracing::warn!(error = %e, "identity provider login failed");
                        StatusCode::BAD_GATEWAY
                    }
                };
                (status, e.to_string())
            }
        };
        Failure {
            status,
            message,
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let status = |e: hub::Error| Failure::from(e).status;
        assert_eq!(
            status(hub::Error::NotFound("x".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(status(hub::Error::NoAccess), StatusCode::NOT_FOUND);
        assert_eq!(
            status(hub::Error::NotModifiable("x".into())),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status(hub::Error::Forbidden("x".into())),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(hub::Error::Auth(crate::auth::Error::InvalidCredentials)),
            StatusCode::FORBIDDEN
        );
        let limited = Failure::from(hub::Error::TooManyRequests {
            message: "slow down".into(),
            retry_after: 7,
        });
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.retry_after, Some(7));
    }

    #[test]
    fn login_refusals_look_alike() {
        for error in [
            crate::auth::Error::InvalidCredentials,
            crate::auth::Error::NotAllowed("x".into()),
        ] {
            let failure = login_failure(hub::Error::Auth(error));
            assert_eq!(failure.status, StatusCode::FORBIDDEN);
            assert_eq!(failure.message, "Invalid username or password");
        }
    }

    #[test]
    fn an_unreachable_directory_is_unavailable_without_details() {
        let error = || {
            hub::Error::Auth(crate::auth::Error::Ldap(
                "ldap://ldap.example.org:389: connection refused".into(),
            ))
        };
        let failure = login_failure(error());
        assert_eq!(failure.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(failure.message.contains("directory (LDAP) server"));
        assert!(
            !failure.message.contains("ldap.example.org"),
            "{}",
            failure.message
        );
        assert_eq!(
            Failure::from(error()).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
