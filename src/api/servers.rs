//! `/hub/api/users/{name}/server` and `/servers/{server}`: start, stop, the server model and
//! the progress event stream (server-sent events, as upstream frames them).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::hub::{Hub, Identity};
use crate::hub::{Outcome, StopOutcome};
use crate::rbac::Resource;

use super::error::ApiError;
use super::extract::{Auth, JsonBody};

fn authorize_server(
    hub: &Hub,
    identity: &Identity,
    user: &str,
    server: &str,
    scopes: &[&str],
) -> Result<crate::hub::UserRow, ApiError> {
    if !scopes.iter().any(|s| identity.scopes.has(s)) {
        return Err(crate::hub::Error::MissingScope(scopes.join(", ")).into());
    }
    let row = hub
        .user(user)
        .map_err(|_| ApiError::not_found(format!("No such user: {user}")))?;
    let groups = hub.user_groups(&row)?;
    identity.require(
        scopes,
        &Resource::Server {
            user: &row.name,
            server,
            groups: &groups,
        },
    )?;
    Ok(row)
}

fn plain(status: StatusCode) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], "").into_response()
}

/// 5.3 sends the whole body as user_options; 6.x wraps it as `{"user_options": {...}}`.
fn user_options(body: Option<Value>) -> Result<Option<Value>, ApiError> {
    match body {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(mut object)) => {
            if object.contains_key("user_options") || object.contains_key("display_name") {
                Ok(object.remove("user_options").filter(|v| !v.is_null()))
            } else {
                Ok(Some(Value::Object(object)))
            }
        }
        Some(_) => Err(ApiError::bad_request(
            "The request body must be a JSON object",
        )),
    }
}

async fn start(
    hub: Hub,
    identity: Identity,
    user: String,
    server: String,
    body: Option<Value>,
) -> Result<Response, ApiError> {
    let row = authorize_server(
        &hub,
        &identity,
        &user,
        &server,
        &["servers", "start:servers"],
    )?;
    let options = user_options(body)?;
    match hub.start_server(&row.name, &server, options).await? {
        Outcome::Done => Ok(plain(StatusCode::CREATED)),
        Outcome::Pending => Ok(plain(StatusCode::ACCEPTED)),
    }
}

async fn stop(
    hub: Hub,
    identity: Identity,
    user: String,
    server: String,
    remove: bool,
) -> Result<Response, ApiError> {
    let row = authorize_server(
        &hub,
        &identity,
        &user,
        &server,
        &["delete:servers", "servers"],
    )?;
    let outcome = match hub.stop_server(&row, &server).await? {
        StopOutcome::NotFound => {
            return Err(ApiError::not_found(format!(
                "{user} has no server named '{server}'"
            )));
        }
        StopOutcome::Stopping => Outcome::Pending,
        StopOutcome::NotRunning | StopOutcome::Stopped => Outcome::Done,
    };
    if remove {
        if outcome == Outcome::Pending {
            return Err(ApiError::bad_request(
                "Server is stopping; remove it once it has stopped",
            ));
        }
        hub.remove_server_record(&row, &server)?;
    }
    Ok(plain(if outcome == Outcome::Done {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::ACCEPTED
    }))
}

pub async fn start_default(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(user): Path<String>,
    JsonBody(body): JsonBody<Option<Value>>,
) -> Result<Response, ApiError> {
    start(hub, identity, user, String::new(), body).await
}

pub async fn start_named(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path((user, server)): Path<(String, String)>,
    JsonBody(body): JsonBody<Option<Value>>,
) -> Result<Response, ApiError> {
    start(hub, identity, user, server, body).await
}

pub async fn stop_default(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(user): Path<String>,
    JsonBody(body): JsonBody<Option<Value>>,
) -> Result<Response, ApiError> {
    if body
        .as_ref()
        .and_then(|b| b.get("remove"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Err(ApiError::bad_request("Cannot remove the default server"));
    }
    stop(hub, identity, user, String::new(), false).await
}

pub async fn stop_named(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path((user, server)): Path<(String, String)>,
    JsonBody(body): JsonBody<Option<Value>>,
) -> Result<Response, ApiError> {
    let remove = body
        .as_ref()
        .and_then(|b| b.get("remove"))
        .and_then(Value::as_bool)
        == Some(true);
    stop(hub, identity, user, server, remove).await
}

/// `GET /users/{name}/servers/{server}` (6.x).
pub async fn get_named(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path((user, server)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let row = authorize_server(&hub, &identity, &user, &server, &["read:servers"])?;
    let spawner = hub
        .server_record(&row, &server)?
        .ok_or_else(|| ApiError::not_found(format!("{user} has no server named '{server}'")))?;
    let groups = hub.user_groups(&row)?;
    let with_state = identity.allows(
        "admin:server_state",
        &Resource::Server {
            user: &row.name,
            server: &server,
            groups: &groups,
        },
    );
    Ok(Json(hub.server_model(&row, &spawner, with_state)))
}

pub async fn progress_default(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    progress(hub, identity, user, String::new())
}

pub async fn progress_named(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path((user, server)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    progress(hub, identity, user, server)
}

/// The progress stream: `data: {json}\n\n` per event, a keep-alive every 8 s, closing after
/// the ready or failed event.
fn progress(
    hub: Hub,
    identity: Identity,
    user: String,
    server: String,
) -> Result<Response, ApiError> {
    let row = authorize_server(&hub, &identity, &user, &server, &["read:servers"])?;
    let key = (row.id, server.clone());
    let spawner = hub.server_record(&row, &server)?;
    let Some(spawner) = spawner else {
        return Err(ApiError::not_found(format!(
            "{user} has no server named '{server}'"
        )));
    };
    let url = hub.server_url(&row.name, &server);
    let receiver = hub.server_progress(&key);
    let ready = hub.server_ready(&key) && hub.server_pending(&key).is_none();
    let initial: Vec<Value> = if ready {
        vec![
            json!({"progress": 100, "ready": true, "message": format!("Server ready at {url}"),
            "html_message": format!("Server ready at <a href=\"{url}\">{url}</a>"), "url": url}),
        ]
    } else if receiver.is_none() || hub.server_pending(&key).is_none() {
        match spawner
            .last_failure
            .as_ref()
            .and_then(|f| f.get("reason"))
            .and_then(Value::as_str)
        {
            Some(reason) => vec![
                json!({"progress": 100, "failed": true, "message": format!("Spawn failed: {reason}")}),
            ],
            None if receiver.is_some() => Vec::new(),
            None => return Err(ApiError::bad_request(format!("{user} is not starting..."))),
        }
    } else {
        Vec::new()
    };
    let stream = async_stream(initial, receiver);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR)))
}

fn is_final(event: &Value) -> bool {
    event.get("ready").and_then(Value::as_bool) == Some(true)
        || event.get("failed").and_then(Value::as_bool) == Some(true)
}

fn frame(event: &Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("data: {event}\n\n"))
}

fn async_stream(
    initial: Vec<Value>,
    receiver: Option<tokio::sync::watch::Receiver<Vec<Value>>>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    tokio::spawn(async move {
        if !initial.is_empty() {
            for event in &initial {
                if tx.send(frame(event)).await.is_err() {
                    return;
                }
            }
            return;
        }
        let Some(mut receiver) = receiver else { return };
        let mut sent = 0;
        loop {
            let events = receiver.borrow_and_update().clone();
            for event in events.iter().skip(sent) {
                if tx.send(frame(event)).await.is_err() {
                    return;
                }
                if is_final(event) {
                    return;
                }
            }
            sent = events.len();
            tokio::select! {
                changed = receiver.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(8)) => {
                    if tx.send(bytes::Bytes::from_static(b"\n\n")).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}
