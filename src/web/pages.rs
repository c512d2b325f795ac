//! Upstream's `pages.py`: `/hub/` and where it sends you, home, the token page, the
//! `/hub/user/…` and `/hub/user-redirect/…` fallbacks for servers without a route, the
//! accept-share page and metrics; with the helpers every page handler shares (rendering, redirects, `next`).

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::cookie::bearer_token;
use crate::hub::{self, Hub};
use crate::rbac::Resource;

use super::PageError;
use super::base::{
    found, login_redirect, next_url, page, pending_path, require_user, spawn_path, with_next,
};
use super::session::Session;

/// `GET /hub/`.
pub async fn hub_root(State(hub): State<Hub>, session: Session) -> Response {
    if session.identity.is_none() {
        return login_redirect(&hub, &format!("{}hub/", hub.base_url()));
    }
    found(&next_url(&hub, &session, None))
}

/// `GET /hub/home`.
pub async fn home(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
) -> Result<Response, PageError> {
    let user = match require_user(&hub, &session, &uri) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let spawners = hub.server_records(&user)?;
    let describe = |row: &crate::hub::SpawnerRow| {
        let key = (user.id, row.name.clone());
        json!({
            "name": row.name,
            "display_name": row.display_name,
            "url": hub.server_url(&user.name, &row.name),
            "running": hub.server_ready(&key),
            "pending": hub.server_pending(&key),
            "last_activity": row.last_activity.map(crate::time::iso),
        })
    };
    let default = spawners.iter().find(|r| r.name.is_empty());
    let failure = default
        .and_then(|r| r.last_failure.clone())
        .filter(|_| default.is_some_and(|r| r.url.is_none()));
    Ok(page(
        &hub,
        &session,
        StatusCode::OK,
        "home.html",
        json!({
            "default_server": default.map(describe).unwrap_or(json!({"running": false, "pending": null})),
            "named_servers": spawners.iter().filter(|r| !r.name.is_empty()).map(describe).collect::<Vec<_>>(),
            "allow_named_servers": hub.config().hub.allow_named_servers,
            "failure": failure,
            "change_password_url": hub.has_own_passwords().then(|| format!("{}hub/auth/change-password", hub.base_url())),
        }),
    ))
}

/// `GET /hub/token`.
pub async fn token_page(State(hub): State<Hub>, session: Session, uri: Uri) -> Response {
    if let Err(redirect) = require_user(&hub, &session, &uri) {
        return redirect;
    }
    page(&hub, &session, StatusCode::OK, "token.html", json!({}))
}

/// `GET /hub/user/{user}` → add the slash.
pub async fn user_url_bare(State(hub): State<Hub>, Path(user): Path<String>) -> Response {
    found(&format!(
        "{}hub/user/{}/",
        hub.base_url(),
        crate::hub::escape_path(&user)
    ))
}

/// `/hub/user/{user}/…`: a request for a user server that has no route (contract §7.4).
pub async fn user_url(
    State(hub): State<Hub>,
    session: Session,
    method: axum::http::Method,
    uri: Uri,
    Path((user, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let token_identity = match bearer_token(&session.headers) {
        Some(token) => hub.fresh(hub.identify_token(token)?).await?,
        None => None,
    };
    let identity = match token_identity.or_else(|| session.identity.clone()) {
        Some(identity) => identity,
        None => {
            return Ok(login_redirect(
                &hub,
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            ));
        }
    };
    let owner = hub.user(&user).map_err(|_| hub::Error::NoAccess)?;
    let groups = hub.user_groups(&owner)?;
    let first = rest.split('/').next().unwrap_or("").to_owned();
    let spawners = hub.server_records(&owner)?;
    let server = if hub.config().hub.allow_named_servers
        && !first.is_empty()
        && spawners.iter().any(|s| s.name == first)
    {
        first.clone()
    } else {
        String::new()
    };
    if !identity.allows(
        "access:servers",
        &Resource::Server {
            user: &owner.name,
            server: &server,
            groups: &groups,
        },
    ) {
        return Err(hub::Error::NoAccess.into());
    }
    let key = (owner.id, server.clone());
    let original = format!(
        "{}user/{}/{}",
        hub.base_url(),
        crate::hub::escape_path(&owner.name),
        rest
    );
    let original_with_query = match query.as_deref().filter(|q| !q.is_empty()) {
        Some(q) => format!("{original}?{q}"),
        None => original.clone(),
    };
    if hub.server_ready(&key)
        && hub.server_pending(&key).is_none()
        && method == axum::http::Method::GET
    {
        let mut pairs: Vec<(String, String)> = query
            .as_deref()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let redirects: u32 = pairs
            .iter()
            .find(|(k, _)| k == "redirects")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        if redirects >= hub.config().hub.user_redirect_limit {
            return Err(PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Redirect loop detected.",
            ));
        }
        if redirects >= 1 {
            tokio::time::sleep(Duration::from_secs(2u64.pow(redirects).min(10))).await;
        }
        pairs.retain(|(k, _)| k != "redirects");
        pairs.push(("redirects".into(), (redirects + 1).to_string()));
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        return Ok(found(&format!("{original}?{encoded}")));
    }
    let accept = session
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let api_like = accept.starts_with("application/json")
        || rest.split('/').any(|segment| segment == "api")
        || method != axum::http::Method::GET;
    let spawn_url = spawn_path(&hub, &owner.name, &server);
    if api_like {
        let message = format!(
            "JupyterHub server no longer running at {original}. Restart the server at {spawn_url}"
        );
        return Ok((
            StatusCode::FAILED_DEPENDENCY,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"message": message}).to_string(),
        )
            .into_response());
    }
    let row = spawners.iter().find(|s| s.name == server);
    if hub.server_pending(&key).is_some() || row.is_some_and(|r| r.last_failure.is_some()) {
        let mut response = StatusCode::SEE_OTHER.into_response();
        if let Ok(value) = HeaderValue::from_str(&with_next(
            pending_path(&hub, &owner.name, &server),
            Some(&original_with_query),
        )) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        return Ok(response);
    }
    let spawn_url = with_next(spawn_url, Some(&original_with_query));
    Ok(page(
        &hub,
        &session,
        StatusCode::FAILED_DEPENDENCY,
        "not_running.html",
        json!({"spawn_url": spawn_url, "server_name": server}),
    ))
}

/// `/hub/user-redirect/{path}`: the current user's server, starting it if needed.
pub async fn user_redirect(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let me = match require_user(&hub, &session, &uri) {
        Ok(user) => user,
        Err(redirect) => return redirect,
    };
    let mut target = format!("{}{}", hub.server_url(&me.name, ""), path);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        target.push('?');
        target.push_str(&q);
    }
    found(&with_next(spawn_path(&hub, &me.name, ""), Some(&target)))
}

/// `GET /hub/metrics` and `GET /hub/api/metrics` (upstream's `MetricsHandler` serves both):
/// Prometheus metrics; needs `read:metrics` unless `authenticate_prometheus = false`.
pub async fn metrics(State(hub): State<Hub>, session: Session) -> Result<Response, PageError> {
    if hub.config().hub.authenticate_prometheus {
        let identity = match bearer_token(&session.headers) {
            Some(token) => hub.identify_token(token)?,
            None => session.identity.clone(),
        };
        let allowed = identity.is_some_and(|i| i.allows("read:metrics", &Resource::Hub));
        if !allowed {
            return Err(hub::Error::Forbidden(
                "Access to metrics requires scope 'read:metrics'".into(),
            )
            .into());
        }
    }
    hub.refresh_metrics().await;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        hub.metrics().encode(),
    )
        .into_response())
}

/// `POST /hub/security/csp-report` (upstream's `CSPReportHandler`): a browser reporting a
/// Content-Security-Policy violation on our pages. Logged (escaped, at most 4 KiB) for a
/// logged-in user; anyone else gets 403, so the endpoint cannot be used to fill the log.
pub async fn csp_report(
    State(hub): State<Hub>,
    session: Session,
    body: axum::body::Bytes,
) -> StatusCode {
    let Some(user) = session.user_name() else {
        return StatusCode::FORBIDDEN;
    };
    hub.metrics().csp_reports.inc();
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    tracing::warn!(%user, report = ?text, "Content security violation");
    StatusCode::NO_CONTENT
}

/// `GET /hub/logo` (upstream's `LogoHandler`): `JupyterHub.logo_file`, or 404 when none is
/// configured.
pub async fn logo(State(hub): State<Hub>) -> Response {
    let Some(path) = hub.config().hub.logo_file.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let content_type = match path.extension().and_then(|e| e.to_str()) {
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("ico") => "image/x-icon",
        Some("webp") => "image/webp",
        _ => "application/octet-stream",
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "logo_file cannot be read");
            StatusCode::NOT_FOUND.into_response()
        }
    }
}

#[derive(serde::Deserialize)]
pub struct AcceptShareQuery {
    code: Option<String>,
    next: Option<String>,
}

/// Upstream's scope descriptions for people (`describe_raw_scopes`).
fn describe_share_scopes(scopes: &[String], username: &str) -> Vec<serde_json::Value> {
    scopes
        .iter()
        .map(|raw| {
            let (scope, filter) = raw.split_once('!').unwrap_or((raw, ""));
            let filter_text = match filter.split_once('=') {
                _ if filter.is_empty() => String::new(),
                None if filter == "user" => "only you".to_owned(),
                Some(("user", name)) if name == username => "only you".to_owned(),
                Some(("group", name)) => format!("users in group {name}"),
                Some((kind, name)) => format!("{kind} {name}"),
                None => filter.to_owned(),
            };
            json!({
                "scope": scope,
                "description": crate::rbac::scope_description(scope).unwrap_or_default(),
                "filter": filter_text,
            })
        })
        .collect()
}

/// Where accepting leads: a valid `next`, else the shared server (upstream's `_get_next_url`).
fn accept_share_next(
    hub: &Hub,
    session: &Session,
    next: Option<&str>,
    owner: &str,
    server: &str,
) -> String {
    let host = super::base::host(session);
    let next = next
        .map(|n| super::base::validate_next_url(n, host))
        .unwrap_or_default();
    if !next.is_empty() {
        return next;
    }
    super::base::validate_next_url(&hub.server_url(owner, server), host)
}

/// `GET /hub/accept-share?code=…`: what accepting the invitation grants, and a form to do it.
pub async fn accept_share(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    super::base::FirstQuery(query): super::base::FirstQuery<AcceptShareQuery>,
) -> Result<Response, PageError> {
    let user = match require_user(&hub, &session, &uri) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let code = query
        .code
        .ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, "Missing argument code"))?;
    let share_code = hub
        .share_code(&code)?
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "Share not found or expired"))?;
    if share_code.owner_id == user.id {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "You can't share with yourself!",
        ));
    }
    let key = (share_code.owner_id, share_code.server.clone());
    let ready = hub.server_ready(&key) && hub.server_pending(&key).is_none();
    let spawner_url = hub.server_url(&share_code.owner, &share_code.server);
    let next = accept_share_next(
        &hub,
        &session,
        query.next.as_deref(),
        &share_code.owner,
        &share_code.server,
    );
    Ok(page(
        &hub,
        &session,
        StatusCode::OK,
        "accept-share.html",
        json!({
            "code": code,
            "owner": {"name": share_code.owner},
            "spawner": {"name": share_code.server, "ready": ready},
            "spawner_ready": ready,
            "spawner_url": spawner_url,
            "scope_descriptions": describe_share_scopes(&share_code.scopes, &user.name),
            "next_url": next,
        }),
    ))
}

/// `POST /hub/accept-share`: exchange the code for a share, then go to the server.
pub async fn accept_share_post(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    super::base::FirstQuery(query): super::base::FirstQuery<AcceptShareQuery>,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let user = match require_user(&hub, &session, &uri) {
        Ok(user) => user,
        Err(redirect) => return Ok(redirect),
    };
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |key: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    if !session.check_form_xsrf(&hub, field("_xsrf").as_deref()) {
        return Err(
            hub::Error::Forbidden("XSRF cookie does not match POST argument".into()).into(),
        );
    }
    // Tornado's get_argument reads the query and the form body alike.
    let code = field("code")
        .or(query.code)
        .ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, "Missing argument code"))?;
    let share_code = hub.share_code(&code)?.ok_or_else(|| {
        PageError::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid share code: {code}"),
        )
    })?;
    if share_code.owner_id == user.id {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "You can't share with yourself!",
        ));
    }
    let share = hub.accept_share_code(&user, &share_code)?;
    let next = field("next").or(query.next);
    Ok(found(&accept_share_next(
        &hub,
        &session,
        next.as_deref(),
        &share.owner,
        &share.server,
    )))
}
