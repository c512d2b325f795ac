//! Upstream's `apihandlers/auth.py`: `/hub/api/user` (whoami) and the deprecated
//! `/authorizations/token` endpoints.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::hub::{Hub, Principal};

use super::error::ApiError;
use super::extract::Auth;

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
