//! Ours, beside upstream's API (docs/admin-api.md): what the admin panel and scripts read
//! about what runs. `GET /usage` (live use and last failures for a page of users, and the
//! hub's figures), a server's log (`…/log`, `servers` scope: whoever may start and stop a
//! server may read its output) and a managed service's log (`admin:services`), each as JSON
//! or, with `follow=1`, as an event stream that follows the journal.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::hub::{Hub, Identity};
use crate::rbac::Resource;
use crate::spawner::LogStream;

use super::error::ApiError;
use super::extract::Auth;
use super::servers::authorize_server;

/// Lines of log when the query names none.
const DEFAULT_LINES: usize = 200;

type Params = Query<Vec<(String, String)>>;

fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn lines(query: &[(String, String)]) -> Result<usize, ApiError> {
    match param(query, "lines") {
        None => Ok(DEFAULT_LINES),
        Some(n) => n.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!("lines must be a non-negative integer, not {n:?}"))
        }),
    }
}

fn follow(query: &[(String, String)]) -> bool {
    param(query, "follow").is_some_and(|v| !matches!(v, "" | "0" | "false"))
}

/// `GET /usage?user=NAME…` (any `read:servers`; the `hub` figures need it unfiltered).
pub async fn usage(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Query(query): Params,
) -> Result<Json<Value>, ApiError> {
    if !identity.scopes.has("read:servers") {
        identity.require(&["read:servers"], &Resource::Hub)?;
    }
    let users: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "user")
        .map(|(_, v)| v.clone())
        .collect();
    Ok(Json(hub.usage_overview(&identity, &users).await?))
}

pub async fn server_log_default(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(user): Path<String>,
    Query(query): Params,
) -> Result<Response, ApiError> {
    server_log(&hub, &identity, &user, "", &query).await
}

pub async fn server_log_named(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path((user, server)): Path<(String, String)>,
    Query(query): Params,
) -> Result<Response, ApiError> {
    server_log(&hub, &identity, &user, &server, &query).await
}

async fn server_log(
    hub: &Hub,
    identity: &Identity,
    user: &str,
    server: &str,
    query: &[(String, String)],
) -> Result<Response, ApiError> {
    let row = authorize_server(hub, identity, user, server, &["servers"])?;
    let lines = lines(query)?;
    if follow(query) {
        return match hub.follow_server_log(&row, server, lines)? {
            Some(stream) => Ok(event_stream(stream)),
            None => Err(not_kept()),
        };
    }
    Ok(Json(hub.server_log(&row, server, lines).await?).into_response())
}

/// `GET /services/{name}/log` (admin:services).
pub async fn service_log(
    State(hub): State<Hub>,
    Auth(identity): Auth,
    Path(name): Path<String>,
    Query(query): Params,
) -> Result<Response, ApiError> {
    identity.require(&["admin:services"], &Resource::Service { name: &name })?;
    let lines = lines(query.as_slice())?;
    if follow(&query) {
        return match hub.follow_service_log(&name, lines)? {
            Some(stream) => Ok(event_stream(stream)),
            None => Err(not_kept()),
        };
    }
    Ok(Json(hub.service_log(&name, lines).await?).into_response())
}

fn not_kept() -> ApiError {
    ApiError::bad_request(
        "this hub keeps no log of its own for it: its output is in the hub's log".to_owned(),
    )
}

/// One `data: {"line": "…"}` event per line, with a keep-alive comment every 15 s so proxies
/// in between keep the connection open.
fn event_stream(stream: LogStream) -> Response {
    let events = stream
        .map(|line| Ok::<_, Infallible>(Event::default().data(json!({"line": line}).to_string())));
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    ([("x-accel-buffering", "no")], sse).into_response()
}
