//! `/hub/api/users/{name}/server` and `/servers/{server}`: start, stop, the server model and
//! the progress event stream (server-sent events: `data: {json}` per event, as upstream).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::hub::{Hub, Identity};
use crate::hub::{Outcome, StopOutcome};
use crate::rbac::Resource;

use super::error::ApiError;
use super::extract::{Auth, JsonBody};

pub(super) fn authorize_server(
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
    // Upstream's order, after the scope check: named servers enabled, then the default
    // server is never removed.
    if !server.is_empty() && !hub.config().hub.allow_named_servers {
        return Err(ApiError::bad_request("Named servers are not enabled."));
    }
    if server.is_empty() && remove {
        return Err(ApiError::bad_request("Cannot delete the default server"));
    }
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
        // While it stops, the record goes once the stop has succeeded (upstream's 202).
        hub.remove_server_when_stopped(&row, &server)?;
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
    stop(hub, identity, user, String::new(), removes(&body)).await
}

pub async fn stop_named(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path((user, server)): Path<(String, String)>,
    JsonBody(body): JsonBody<Option<Value>>,
) -> Result<Response, ApiError> {
    stop(hub, identity, user, server, removes(&body)).await
}

/// Upstream's `(options or {}).get('remove', False)`, read as a flag.
fn removes(body: &Option<Value>) -> bool {
    body.as_ref()
        .and_then(|b| b.get("remove"))
        .and_then(Value::as_bool)
        == Some(true)
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
    let events = progress_events(initial, receiver)
        .map(|event| Ok::<_, Infallible>(Event::default().data(event.to_string())));
    // Upstream keeps the stream alive with an empty line every 8 s; browsers and the
    // single-user server read only `data:` lines, so a comment does the same.
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(8)));
    Ok(([("x-accel-buffering", "no")], sse).into_response())
}

fn is_final(event: &Value) -> bool {
    event.get("ready").and_then(Value::as_bool) == Some(true)
        || event.get("failed").and_then(Value::as_bool) == Some(true)
}

/// Where the progress stream is: replaying fixed events, or following the spawn's events.
enum Feed {
    Fixed(std::vec::IntoIter<Value>),
    Following {
        receiver: tokio::sync::watch::Receiver<Vec<Value>>,
        sent: usize,
        queued: std::collections::VecDeque<Value>,
    },
    Done,
}

/// The events to send: `initial` if there are any (a finished or failed spawn), else each
/// new event of the spawn as it comes, ending after the ready or failed one.
fn progress_events(
    initial: Vec<Value>,
    receiver: Option<tokio::sync::watch::Receiver<Vec<Value>>>,
) -> impl futures_util::Stream<Item = Value> {
    let feed = match (initial.is_empty(), receiver) {
        (false, _) => Feed::Fixed(initial.into_iter()),
        (true, Some(receiver)) => Feed::Following {
            receiver,
            sent: 0,
            queued: Default::default(),
        },
        (true, None) => Feed::Done,
    };
    futures_util::stream::unfold(feed, |feed| async move {
        match feed {
            Feed::Fixed(mut events) => events.next().map(|event| (event, Feed::Fixed(events))),
            Feed::Following {
                mut receiver,
                mut sent,
                mut queued,
            } => loop {
                if let Some(event) = queued.pop_front() {
                    let next = if is_final(&event) {
                        Feed::Done
                    } else {
                        Feed::Following {
                            receiver,
                            sent,
                            queued,
                        }
                    };
                    return Some((event, next));
                }
                let events = receiver.borrow_and_update().clone();
                queued.extend(events.iter().skip(sent).cloned());
                sent = sent.max(events.len());
                if queued.is_empty() && receiver.changed().await.is_err() {
                    return None;
                }
            },
            Feed::Done => None,
        }
    })
}

/// `GET /users/{name}/server/usage` (ours, beside upstream's API): live memory and CPU of a
/// running server with its limits, for `read:servers`. Sample `cpu_seconds` twice and divide
/// by the time between for the CPUs in use.
pub async fn usage_default(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    usage(&hub, &identity, &user, "").await
}

pub async fn usage_named(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path((user, server)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    usage(&hub, &identity, &user, &server).await
}

async fn usage(
    hub: &Hub,
    identity: &Identity,
    user: &str,
    server: &str,
) -> Result<Json<Value>, ApiError> {
    let row = authorize_server(hub, identity, user, server, &["read:servers"])?;
    Ok(Json(hub.server_usage(&row, server).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn progress_follows_events_until_ready() {
        let (tx, rx) = tokio::sync::watch::channel(vec![json!({"progress": 10})]);
        let stream = progress_events(Vec::new(), Some(rx));
        let feeder = tokio::spawn(async move {
            tx.send_modify(|events| events.push(json!({"progress": 50})));
            tx.send_modify(|events| events.push(json!({"progress": 100, "ready": true})));
            tx.send_modify(|events| events.push(json!({"after": "ready"})));
            tx
        });
        let events: Vec<Value> = stream.collect().await;
        let _tx = feeder.await.expect("feeder");
        assert_eq!(events.first(), Some(&json!({"progress": 10})));
        assert_eq!(
            events.last(),
            Some(&json!({"progress": 100, "ready": true}))
        );
        let fixed: Vec<Value> = progress_events(vec![json!({"failed": true})], None)
            .collect()
            .await;
        assert_eq!(fixed, vec![json!({"failed": true})]);
    }
}
