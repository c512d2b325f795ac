//! Upstream's spawn handlers (`pages.py`): `/hub/spawn[/{user}[/{server}]]` with the
//! options form (url-encoded or multipart), and `/hub/spawn-pending/…` (the progress page,
//! or "not running" with the last failure).

use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::hub::{self, Hub, Outcome};
use crate::rbac::Resource;

use super::PageError;
use super::base::{
    FirstQuery, NextQuery, encode, found, host, page, pending_path, require_user, spawn_path,
    validate_next_url, with_next,
};
use super::session::Session;

/// The spawn page's query: `next`, and 6.x's `display_name` for a named server (upstream
/// reads it on the GET; the options form posts back to the same URL, so the POST has it too).
#[derive(serde::Deserialize, Default)]
pub struct SpawnQuery {
    next: Option<String>,
    display_name: Option<String>,
}

/// Shared by GET and POST `/hub/spawn[/{user}[/{server}]]`.
async fn spawn_page(
    hub: Hub,
    session: Session,
    uri: Uri,
    user: Option<String>,
    server: String,
    form: Option<Value>,
    query: SpawnQuery,
) -> Result<Response, PageError> {
    let me = match require_user(&hub, &session, &uri) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let identity = session
        .identity
        .as_ref()
        .ok_or_else(|| hub::Error::Forbidden("not logged in".into()))?;
    let user_name = user.unwrap_or_else(|| me.name.clone());
    let owner = hub
        .user(&user_name)
        .map_err(|_| hub::Error::NotFound(format!("No such user: {user_name}")))?;
    let groups = hub.user_groups(&owner)?;
    let resource = Resource::Server {
        user: &owner.name,
        server: &server,
        groups: &groups,
    };
    if !identity.allows("servers", &resource) && !identity.allows("start:servers", &resource) {
        return Err(hub::Error::Forbidden(format!(
            "You do not have permission to start {user_name}'s server"
        ))
        .into());
    }
    let next = query
        .next
        .map(|n| validate_next_url(&n, host(&session)))
        .filter(|n| !n.is_empty());
    let key = (owner.id, server.clone());
    if hub.server_ready(&key) && hub.server_pending(&key).is_none() {
        return Ok(found(
            &next.unwrap_or_else(|| hub.server_url(&owner.name, &server)),
        ));
    }
    if hub.server_pending(&key).is_some() {
        return Ok(found(&with_next(
            pending_path(&hub, &owner.name, &server),
            next.as_deref(),
        )));
    }
    // Profiles make the form (a choice among those open to the user), as an options form.
    let profiles = hub.profile_choices(&owner)?;
    // Where the form posts: this page (the router sees its path without `{base_url}hub`).
    let spawn_url = with_next(spawn_path(&hub, &owner.name, &server), next.as_deref());
    let spawn_url = spawn_url.as_str();
    let options = match (&hub.config().spawner.options_form, form) {
        (_, None) if !profiles.is_empty() => {
            return Ok(page(
                &hub,
                &session,
                StatusCode::OK,
                "spawn.html",
                json!({"profiles": profiles, "spawn_url": spawn_url}),
            ));
        }
        (Some(options_form), None) if !options_form.trim().is_empty() => {
            return Ok(page(
                &hub,
                &session,
                StatusCode::OK,
                "spawn.html",
                json!({
                    "options_form": options_form,
                    "spawn_url": spawn_url,
                }),
            ));
        }
        (_, Some(form)) => Some(form),
        _ => None,
    };
    // Upstream waits up to a second, then shows the progress page.
    match tokio::time::timeout(
        Duration::from_secs(1),
        hub.start_server(&owner.name, &server, query.display_name.as_deref(), options),
    )
    .await
    {
        Ok(Ok(Outcome::Done)) => Ok(found(
            &next.unwrap_or_else(|| hub.server_url(&owner.name, &server)),
        )),
        Ok(Ok(Outcome::Pending)) | Err(_) => Ok(found(&with_next(
            pending_path(&hub, &owner.name, &server),
            next.as_deref(),
        ))),
        Ok(Err(e)) => {
            if !profiles.is_empty() {
                let failure = crate::status::Failure::from(e);
                return Ok(page(
                    &hub,
                    &session,
                    failure.status,
                    "spawn.html",
                    json!({"profiles": profiles, "error": failure.message, "spawn_url": spawn_url}),
                ));
            }
            if let Some(form) = &hub.config().spawner.options_form {
                let failure = crate::status::Failure::from(e);
                return Ok(page(
                    &hub,
                    &session,
                    failure.status,
                    "spawn.html",
                    json!({
                        "options_form": form, "error": failure.message,
                        "spawn_url": spawn_url,
                    }),
                ));
            }
            // A failed spawn is shown by the pending page (what happened, what the admin can
            // do, a relaunch button), not as an error page; it was recorded as last_failure.
            if matches!(e, hub::Error::Spawner(_) | hub::Error::SpawnFailed(_)) {
                return Ok(found(&with_next(
                    pending_path(&hub, &owner.name, &server),
                    next.as_deref(),
                )));
            }
            Err(e.into())
        }
    }
}

/// Form fields → user_options, as upstream's `options_from_form` with `'simple'`: single
/// values unpacked, checkbox `on` → true.
fn options_from_form(fields: Vec<(String, String)>) -> (Value, Option<String>) {
    let mut map = serde_json::Map::new();
    let mut xsrf = None;
    for (key, value) in fields {
        if key == "_xsrf" {
            xsrf = Some(value);
            continue;
        }
        let entry = map.entry(key).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!(value));
        }
    }
    for value in map.values_mut() {
        if let Some(list) = value.as_array()
            && list.len() == 1
        {
            let single = list[0].clone();
            *value = if single == json!("on") {
                json!(true)
            } else {
                single
            };
        }
    }
    (Value::Object(map), xsrf)
}

/// The spawn form's fields, sent url-encoded or (as upstream's template does) as
/// multipart/form-data; file fields are ignored. Checks the form's XSRF token.
async fn read_form(session: &Session, hub: &Hub, request: Request) -> Result<Value, PageError> {
    let (options, xsrf) = options_from_form(form_fields(request).await?);
    if !session.check_form_xsrf(hub, xsrf.as_deref()) {
        return Err(
            hub::Error::Forbidden("XSRF cookie does not match POST argument".into()).into(),
        );
    }
    Ok(options)
}

/// A form body's text fields in order, url-encoded or multipart/form-data.
async fn form_fields(request: Request) -> Result<Vec<(String, String)>, PageError> {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let unreadable = |e: &dyn std::fmt::Display| {
        PageError::from(hub::Error::BadRequest(format!(
            "Could not read the form: {e}"
        )))
    };
    if !multipart {
        let body = axum::body::Bytes::from_request(request, &())
            .await
            .map_err(|e| unreadable(&e))?;
        return Ok(form_urlencoded::parse(&body).into_owned().collect());
    }
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| unreadable(&e))?;
    let mut fields = Vec::new();
    while let Some(field) = form.next_field().await.map_err(|e| unreadable(&e))? {
        let Some(name) = field.name().map(str::to_owned) else {
            continue;
        };
        if field.file_name().is_some() {
            continue;
        }
        fields.push((name, field.text().await.map_err(|e| unreadable(&e))?));
    }
    Ok(fields)
}

pub async fn spawn_self(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    FirstQuery(query): FirstQuery<SpawnQuery>,
) -> Result<Response, PageError> {
    spawn_page(hub, session, uri, None, String::new(), None, query).await
}

pub async fn spawn_self_post(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    FirstQuery(query): FirstQuery<SpawnQuery>,
    request: Request,
) -> Result<Response, PageError> {
    let form = read_form(&session, &hub, request).await?;
    spawn_page(hub, session, uri, None, String::new(), Some(form), query).await
}

pub async fn spawn_user(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    Path(user): Path<String>,
    FirstQuery(query): FirstQuery<SpawnQuery>,
) -> Result<Response, PageError> {
    spawn_page(hub, session, uri, Some(user), String::new(), None, query).await
}

pub async fn spawn_user_post(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    Path(user): Path<String>,
    FirstQuery(query): FirstQuery<SpawnQuery>,
    request: Request,
) -> Result<Response, PageError> {
    let form = read_form(&session, &hub, request).await?;
    spawn_page(
        hub,
        session,
        uri,
        Some(user),
        String::new(),
        Some(form),
        query,
    )
    .await
}

pub async fn spawn_named(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    Path((user, server)): Path<(String, String)>,
    FirstQuery(query): FirstQuery<SpawnQuery>,
) -> Result<Response, PageError> {
    spawn_page(hub, session, uri, Some(user), server, None, query).await
}

pub async fn spawn_named_post(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    Path((user, server)): Path<(String, String)>,
    FirstQuery(query): FirstQuery<SpawnQuery>,
    request: Request,
) -> Result<Response, PageError> {
    let form = read_form(&session, &hub, request).await?;
    spawn_page(hub, session, uri, Some(user), server, Some(form), query).await
}

async fn spawn_pending(
    hub: Hub,
    session: Session,
    uri: Uri,
    user: String,
    server: String,
    query: NextQuery,
) -> Result<Response, PageError> {
    if let Err(redirect) = require_user(&hub, &session, &uri) {
        return Ok(redirect);
    }
    let identity = session
        .identity
        .as_ref()
        .ok_or_else(|| hub::Error::Forbidden("not logged in".into()))?;
    let owner = hub
        .user(&user)
        .map_err(|_| hub::Error::NotFound(format!("No such user: {user}")))?;
    let groups = hub.user_groups(&owner)?;
    if !identity.allows(
        "servers",
        &Resource::Server {
            user: &owner.name,
            server: &server,
            groups: &groups,
        },
    ) {
        return Err(hub::Error::Forbidden(format!(
            "You do not have permission to view {user}'s server"
        ))
        .into());
    }
    let key = (owner.id, server.clone());
    let next = query
        .next
        .map(|n| validate_next_url(&n, host(&session)))
        .filter(|n| !n.is_empty());
    let server_url = hub.server_url(&owner.name, &server);
    if hub.server_ready(&key) && hub.server_pending(&key).is_none() {
        return Ok(found(&next.unwrap_or(server_url)));
    }
    if hub.server_pending(&key) == Some("spawn") {
        let progress_url = format!(
            "{}?_xsrf={}",
            hub.progress_url(&owner.name, &server),
            encode(&session.xsrf_token)
        );
        return Ok(page(
            &hub,
            &session,
            StatusCode::OK,
            "spawn_pending.html",
            json!({
                "progress_url": progress_url, "next_url": next.unwrap_or(server_url),
            }),
        ));
    }
    if hub.server_pending(&key) == Some("stop") {
        // Upstream's stop_pending.html: it reloads until the stop is done.
        return Ok(page(
            &hub,
            &session,
            StatusCode::OK,
            "stop_pending.html",
            json!({"server_name": server}),
        ));
    }
    let row = hub.server_record(&owner, &server)?;
    let failure = row.and_then(|r| r.last_failure);
    let spawn_url = with_next(spawn_path(&hub, &owner.name, &server), next.as_deref());
    // Upstream answers a failed spawn's page with 500 (clients and monitoring read it); the
    // page itself says what happened and what the admin can do, with a relaunch button.
    let status = if failure.is_some() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    Ok(page(
        &hub,
        &session,
        status,
        "not_running.html",
        json!({"failure": failure, "spawn_url": spawn_url, "server_name": server}),
    ))
}

pub async fn spawn_pending_default(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    Path(user): Path<String>,
    FirstQuery(query): FirstQuery<NextQuery>,
) -> Result<Response, PageError> {
    spawn_pending(hub, session, uri, user, String::new(), query).await
}

pub async fn spawn_pending_named(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    Path((user, server)): Path<(String, String)>,
    FirstQuery(query): FirstQuery<NextQuery>,
) -> Result<Response, PageError> {
    spawn_pending(hub, session, uri, user, server, query).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_options_simple() {
        let (options, xsrf) = options_from_form(vec![
            ("_xsrf".into(), "t".into()),
            ("image".into(), "big".into()),
            ("gpu".into(), "on".into()),
            ("tags".into(), "a".into()),
            ("tags".into(), "b".into()),
        ]);
        assert_eq!(xsrf.as_deref(), Some("t"));
        assert_eq!(
            options,
            json!({"image": "big", "gpu": true, "tags": ["a", "b"]})
        );
    }

    #[tokio::test]
    async fn form_fields_multipart_and_urlencoded() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"_xsrf\"\r\n\r\ntok\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nbig\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"up\"; filename=\"a.txt\"\r\n\r\nfile\r\n\
                    --XyZ--\r\n";
        let request = Request::builder()
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XyZ")
            .body(axum::body::Body::from(body))
            .expect("request");
        let fields = form_fields(request)
            .await
            .map_err(|e| e.message)
            .expect("fields");
        assert_eq!(
            fields,
            vec![
                ("_xsrf".into(), "tok".into()),
                ("image".into(), "big".into())
            ]
        );
        let request = Request::builder()
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(axum::body::Body::from("image=big&tags=a&tags=b"))
            .expect("request");
        let fields = form_fields(request)
            .await
            .map_err(|e| e.message)
            .expect("fields");
        assert_eq!(fields.len(), 3);
    }
}
