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
use crate::hub::{Outcome, ServerPatch, StopOutcome};
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

/// A start or create request's body (upstream 6.x's `get_server_json_body`).
#[derive(Debug, Default, PartialEq)]
struct ServerBody {
    display_name: Option<String>,
    user_options: Option<Value>,
}

/// 6.x sends `{"display_name": …, "user_options": {…}}`; 5.x sends the options themselves.
/// A body with either key is the 6.x form, anything else is 5.x's options.
fn server_body(body: Option<Value>) -> Result<ServerBody, ApiError> {
    let object = match body {
        None | Some(Value::Null) => return Ok(ServerBody::default()),
        Some(Value::Object(object)) if object.is_empty() => return Ok(ServerBody::default()),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(ApiError::bad_request("Body must be a JSON object")),
    };
    let display_name = match object.get("display_name") {
        None => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err(ApiError::bad_request("display_name must be a string")),
    };
    match object.get("user_options") {
        None if display_name.is_none() => Ok(ServerBody {
            display_name: None,
            user_options: Some(Value::Object(object)),
        }),
        None | Some(Value::Null) => Ok(ServerBody {
            display_name,
            user_options: None,
        }),
        Some(options @ Value::Object(_)) => Ok(ServerBody {
            display_name,
            user_options: Some(options.clone()),
        }),
        Some(_) => Err(ApiError::bad_request(
            "user_options must be an object or null",
        )),
    }
}

/// A `PATCH` body: upstream's three fields, each checked.
fn server_patch(body: Option<Value>) -> Result<ServerPatch, ApiError> {
    const SUPPORTED: &str = "display_name, name, user_options";
    let object = match body {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(ApiError::bad_request("Body must be a JSON object")),
    };
    if object.is_empty() {
        return Err(ApiError::bad_request(
            "Must specify at least one field to modify.",
        ));
    }
    let unexpected: Vec<&str> = object
        .keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "name" | "display_name" | "user_options"))
        .collect();
    if !unexpected.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Unexpected fields: {}, supported fields: {SUPPORTED}",
            unexpected.join(", ")
        )));
    }
    let name = match object.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err(ApiError::bad_request("name must be a string")),
    };
    // Upstream ignores a null or empty display name.
    let display_name = match object.get("display_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err(ApiError::bad_request("display_name must be a string")),
    };
    let user_options = match object.get("user_options") {
        None => None,
        Some(options @ Value::Object(_)) => Some(options.clone()),
        Some(_) => return Err(ApiError::bad_request("user_options must be a dict")),
    };
    Ok(ServerPatch {
        name,
        display_name,
        user_options,
    })
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
    let body = server_body(body)?;
    match hub
        .start_server(
            &row.name,
            &server,
            body.display_name.as_deref(),
            body.user_options,
        )
        .await?
    {
        Outcome::Done => Ok(plain(StatusCode::CREATED)),
        Outcome::Pending => Ok(plain(StatusCode::ACCEPTED)),
    }
}

/// The server model for a caller, with `state` if it holds `admin:server_state` for it.
fn model_for(
    hub: &Hub,
    identity: &Identity,
    user: &crate::hub::UserRow,
    spawner: &crate::hub::SpawnerRow,
) -> Result<Value, ApiError> {
    let groups = hub.user_groups(user)?;
    let with_state = identity.allows(
        "admin:server_state",
        &Resource::Server {
            user: &user.name,
            server: &spawner.name,
            groups: &groups,
        },
    );
    Ok(hub.server_model(user, spawner, with_state))
}

async fn create(
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
    let body = server_body(body)?;
    let spawner = hub.create_server(
        &row,
        &server,
        body.display_name.as_deref(),
        body.user_options,
    )?;
    let model = model_for(&hub, &identity, &row, &spawner)?;
    Ok((StatusCode::CREATED, Json(model)).into_response())
}

async fn update(
    hub: Hub,
    identity: Identity,
    user: String,
    server: String,
    body: Option<Value>,
) -> Result<Json<Value>, ApiError> {
    let row = authorize_server(
        &hub,
        &identity,
        &user,
        &server,
        &["servers", "start:servers"],
    )?;
    let patch = server_patch(body)?;
    let spawner = hub.update_server(&row, &server, &patch)?;
    Ok(Json(model_for(&hub, &identity, &row, &spawner)?))
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

/// `PUT /users/{name}/server`: upstream's 409 (the default server always exists).
pub async fn create_default(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(user): Path<String>,
    JsonBody(body): JsonBody<Option<Value>>,
) -> Result<Response, ApiError> {
    create(hub, identity, user, String::new(), body).await
}

/// `PUT /users/{name}/servers/{server}` (6.x): create a named server without starting it.
pub async fn create_named(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path((user, server)): Path<(String, String)>,
    JsonBody(body): JsonBody<Option<Value>>,
) -> Result<Response, ApiError> {
    create(hub, identity, user, server, body).await
}

/// `PATCH /users/{name}/server` (6.x).
pub async fn update_default(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(user): Path<String>,
    JsonBody(body): JsonBody<Option<Value>>,
) -> Result<Json<Value>, ApiError> {
    update(hub, identity, user, String::new(), body).await
}

/// `PATCH /users/{name}/servers/{server}` (6.x): rename, display name, user options.
pub async fn update_named(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path((user, server)): Path<(String, String)>,
    JsonBody(body): JsonBody<Option<Value>>,
) -> Result<Json<Value>, ApiError> {
    update(hub, identity, user, server, body).await
}

/// `GET /users/{name}/server` (6.x).
pub async fn get_default(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    get(hub, identity, user, String::new())
}

/// `GET /users/{name}/servers/{server}` (6.x).
pub async fn get_named(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path((user, server)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    get(hub, identity, user, server)
}

fn get(
    hub: Hub,
    identity: Identity,
    user: String,
    server: String,
) -> Result<Json<Value>, ApiError> {
    let row = authorize_server(&hub, &identity, &user, &server, &["read:servers"])?;
    let spawner = hub
        .server_record(&row, &server)?
        .ok_or_else(|| ApiError::not_found(format!("{user} has no server named '{server}'")))?;
    Ok(Json(model_for(&hub, &identity, &row, &spawner)?))
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

    #[test]
    fn start_bodies_of_5x_and_6x() {
        let body = |v: Value| server_body(Some(v)).map_err(|e| e.message.clone());
        let options = |o: Value| ServerBody {
            display_name: None,
            user_options: Some(o),
        };
        assert_eq!(server_body(None).ok(), Some(ServerBody::default()));
        assert_eq!(body(json!({})), Ok(ServerBody::default()));
        assert_eq!(body(json!({"cpu": 2})), Ok(options(json!({"cpu": 2}))));
        assert_eq!(
            body(json!({"user_options": {"cpu": 2}, "other": 1})),
            Ok(options(json!({"cpu": 2})))
        );
        assert_eq!(
            body(json!({"display_name": "My box", "cpu": 2})),
            Ok(ServerBody {
                display_name: Some("My box".into()),
                user_options: None,
            })
        );
        assert_eq!(
            body(json!({"display_name": "x", "user_options": null})),
            Ok(ServerBody {
                display_name: Some("x".into()),
                user_options: None,
            })
        );
        for (bad, message) in [
            (json!([1]), "Body must be a JSON object"),
            (json!({"display_name": 3}), "display_name must be a string"),
            (
                json!({"display_name": null}),
                "display_name must be a string",
            ),
            (
                json!({"user_options": [1]}),
                "user_options must be an object or null",
            ),
        ] {
            assert_eq!(body(bad.clone()), Err(message.to_owned()), "{bad}");
        }
    }

    #[test]
    fn patch_bodies() {
        let patch = |v: Value| server_patch(Some(v)).map_err(|e| e.message.clone());
        let p = patch(json!({"name": "new", "display_name": "New", "user_options": {"a": 1}}))
            .expect("all three");
        assert_eq!(p.name.as_deref(), Some("new"));
        assert_eq!(p.display_name.as_deref(), Some("New"));
        assert_eq!(p.user_options, Some(json!({"a": 1})));
        let p = patch(json!({"display_name": null})).expect("null display name");
        assert!(p.name.is_none() && p.display_name.is_none() && p.user_options.is_none());
        for (bad, message) in [
            (json!({}), "Must specify at least one field to modify."),
            (json!([]), "Body must be a JSON object"),
            (
                json!({"state": {}, "name": "x"}),
                "Unexpected fields: state, supported fields: display_name, name, user_options",
            ),
            (json!({"name": 1}), "name must be a string"),
            (json!({"display_name": 1}), "display_name must be a string"),
            (json!({"user_options": null}), "user_options must be a dict"),
        ] {
            assert_eq!(patch(bad.clone()).err(), Some(message.to_owned()), "{bad}");
        }
        assert_eq!(
            server_patch(None).err().map(|e| e.message.clone()),
            Some("Must specify at least one field to modify.".to_owned())
        );
    }

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
