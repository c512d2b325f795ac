//! Page handlers, each named after the upstream handler it serves.

use std::time::Duration;

use axum::Form;
use axum::extract::{FromRequest, Multipart, Path, Query, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::cookie::bearer_token;
use crate::hub::{self, Hub, Outcome};
use crate::rbac::Resource;

use super::session::{Session, login_cookies, logout_cookies, set_cookies};
use super::{PageError, render};

fn page(
    hub: &Hub,
    session: &Session,
    status: StatusCode,
    template: &str,
    extra: Value,
) -> Response {
    let html = render(hub, template, session.context(hub, extra));
    let mut response = (status, Html(html)).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, session.xsrf_cookie(hub));
    response
}

fn found(location: &str) -> Response {
    // 302, as upstream (axum's Redirect::to is 303).
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn encode(value: &str) -> String {
    // Python's `quote(value, safe='')`: everything but unreserved characters.
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, SET).to_string()
}

fn login_redirect(hub: &Hub, next: &str) -> Response {
    found(&format!(
        "{}hub/login?next={}",
        hub.base_url(),
        encode(next)
    ))
}

/// Upstream's `_validate_next_url`: only paths on this hub; anything with a foreign host or
/// not starting with `/` becomes empty (the caller then uses the default).
pub fn validate_next_url(next: &str, host: Option<&str>) -> String {
    let mut next = next.replace('\\', "%5C");
    while next.starts_with("///") {
        next.remove(0);
    }
    if let Some(rest) = next
        .strip_prefix("//")
        .map(|r| format!("http://{r}"))
        .or_else(|| {
            (next.starts_with("http://") || next.starts_with("https://")).then(|| next.clone())
        })
    {
        let Ok(url) = url::Url::parse(&rest) else {
            return String::new();
        };
        let same_host = match (url.host_str(), host) {
            (Some(h), Some(expected)) => {
                let with_port = match url.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_owned(),
                };
                with_port == expected || h == expected
            }
            _ => false,
        };
        if !same_host {
            return String::new();
        }
        let mut path = url.path().to_owned();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        if let Some(f) = url.fragment() {
            path.push('#');
            path.push_str(f);
        }
        return path;
    }
    if !next.starts_with('/') || next.starts_with("//") {
        return String::new();
    }
    next
}

/// `?next=…`, the one query parameter most pages read.
#[derive(serde::Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
}

fn host(session: &Session) -> Option<&str> {
    session
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
}

/// Where to go after login or from `/hub/`: a valid `next`, else `default_url`, else the
/// user's running server or the spawn page (`redirect_to_server`), else home.
fn next_url(hub: &Hub, session: &Session, next: Option<&str>) -> String {
    let validated = next
        .map(|n| validate_next_url(n, host(session)))
        .unwrap_or_default();
    if !validated.is_empty() {
        return validated;
    }
    if let Some(url) = &hub.config().hub.default_url {
        return url.clone();
    }
    if let (true, Some(user)) = (
        hub.config().hub.redirect_to_server,
        session.identity.as_ref().and_then(|i| i.user()),
    ) {
        if hub.server_ready(&(user.id, String::new())) {
            return hub.server_url(&user.name, "");
        }
        return format!("{}hub/spawn", hub.base_url());
    }
    format!("{}hub/home", hub.base_url())
}

/// `GET /hub/`.
pub async fn hub_root(State(hub): State<Hub>, session: Session) -> Response {
    if session.identity.is_none() {
        return login_redirect(&hub, &format!("{}hub/", hub.base_url()));
    }
    found(&next_url(&hub, &session, None))
}

/// `GET /hub/login`.
pub async fn login_form(
    State(hub): State<Hub>,
    session: Session,
    Query(query): Query<NextQuery>,
) -> Response {
    if session.identity.is_some() {
        return found(&next_url(&hub, &session, query.next.as_deref()));
    }
    if !hub.has_login_form() {
        return PageError::from(hub::Error::NotFound(
            "This hub has no login page; use an API token.".into(),
        ))
        .into_response();
    }
    let next = query.next.unwrap_or_default();
    let login_url = format!("{}hub/login?next={}", hub.base_url(), encode(&next));
    page(
        &hub,
        &session,
        StatusCode::OK,
        "login.html",
        json!({"login_url": login_url, "username": ""}),
    )
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(rename = "_xsrf")]
    xsrf: Option<String>,
}

/// `POST /hub/login`.
pub async fn login_submit(
    State(hub): State<Hub>,
    session: Session,
    Query(query): Query<NextQuery>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = query.next.unwrap_or_default();
    let login_url = format!("{}hub/login?next={}", hub.base_url(), encode(&next));
    let rerender = |status: StatusCode, error: &str| {
        page(
            &hub,
            &session,
            status,
            "login.html",
            json!({"login_url": login_url, "username": form.username, "login_error": error}),
        )
    };
    if !session.check_form_xsrf(&hub, form.xsrf.as_deref()) {
        return rerender(
            StatusCode::FORBIDDEN,
            "Login form invalid or expired. Try again.",
        );
    }
    match hub
        .login(&form.username, &form.password, &session.peer_ip)
        .await
    {
        Ok(user) => {
            let existing = session.session_id().map(str::to_owned);
            let secure = session.secure;
            let mut logged_in = session;
            logged_in.identity = hub
                .identify_cookie(&user.cookie_id, existing.clone())
                .ok()
                .flatten();
            let target = next_url(&hub, &logged_in, Some(&next));
            let mut response = found(&target);
            set_cookies(
                &mut response,
                login_cookies(&hub, &user.cookie_id, existing.as_deref(), secure),
            );
            response
        }
        Err(e) => {
            let failure = crate::status::login_failure(e);
            rerender(failure.status, &failure.message)
        }
    }
}

/// `GET /hub/logout`: revokes this session's tokens and clears the cookies.
pub async fn logout(State(hub): State<Hub>, session: Session) -> Response {
    if let Some(user) = session.identity.as_ref().and_then(|i| i.user()) {
        if let Err(e) = hub.logout(user, session.session_id()).await {
            tracing::warn!(error = %e, "logout cleanup failed");
        }
        tracing::info!(user = %user.name, "user logged out");
    }
    let mut response = found(&format!("{}hub/login", hub.base_url()));
    set_cookies(&mut response, logout_cookies(&hub));
    response
}

// The error is the redirect to send; pages return it at once, so its size does not matter.
#[allow(clippy::result_large_err)]
fn require_user(hub: &Hub, session: &Session, uri: &Uri) -> Result<crate::hub::UserRow, Response> {
    match session.identity.as_ref().and_then(|i| i.user()) {
        Some(user) => Ok(user.clone()),
        None => Err(login_redirect(
            hub,
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/hub/"),
        )),
    }
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

/// `GET /hub/admin` (admin-ui).
pub async fn admin_page(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
) -> Result<Response, PageError> {
    if let Err(redirect) = require_user(&hub, &session, &uri) {
        return Ok(redirect);
    }
    let allowed = session
        .identity
        .as_ref()
        .is_some_and(|i| i.scopes.has("admin-ui"));
    if !allowed {
        return Err(hub::Error::Forbidden(
            "You do not have permission to view the admin page (admin-ui).".into(),
        )
        .into());
    }
    Ok(page(
        &hub,
        &session,
        StatusCode::OK,
        "admin.html",
        json!({"allow_named_servers": hub.config().hub.allow_named_servers}),
    ))
}

fn spawn_path(hub: &Hub, user: &str, server: &str) -> String {
    if server.is_empty() {
        format!(
            "{}hub/spawn/{}",
            hub.base_url(),
            crate::hub::escape_path(user)
        )
    } else {
        format!(
            "{}hub/spawn/{}/{}",
            hub.base_url(),
            crate::hub::escape_path(user),
            crate::hub::escape_path(server)
        )
    }
}

fn pending_path(hub: &Hub, user: &str, server: &str) -> String {
    spawn_path(hub, user, server).replacen("hub/spawn/", "hub/spawn-pending/", 1)
}

fn with_next(path: String, next: Option<&str>) -> String {
    match next.filter(|n| !n.is_empty()) {
        Some(next) => format!("{path}?next={}", encode(next)),
        None => path,
    }
}

/// Shared by GET and POST `/hub/spawn[/{user}[/{server}]]`.
async fn spawn_page(
    hub: Hub,
    session: Session,
    uri: Uri,
    user: Option<String>,
    server: String,
    form: Option<Value>,
    query: NextQuery,
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
    let options = match (&hub.config().spawner.options_form, form) {
        (Some(options_form), None) if !options_form.trim().is_empty() => {
            return Ok(page(
                &hub,
                &session,
                StatusCode::OK,
                "spawn.html",
                json!({
                    "options_form": options_form,
                    "spawn_url": uri.path_and_query().map(|p| p.as_str()).unwrap_or(""),
                }),
            ));
        }
        (_, Some(form)) => Some(form),
        _ => None,
    };
    // Upstream waits up to a second, then shows the progress page.
    match tokio::time::timeout(
        Duration::from_secs(1),
        hub.start_server(&owner.name, &server, options),
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
            if let Some(form) = &hub.config().spawner.options_form {
                let failure = crate::status::Failure::from(e);
                return Ok(page(
                    &hub,
                    &session,
                    failure.status,
                    "spawn.html",
                    json!({
                        "options_form": form, "error": failure.message,
                        "spawn_url": uri.path_and_query().map(|p| p.as_str()).unwrap_or(""),
                    }),
                ));
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
    let multipart = session
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let unreadable = |e: &dyn std::fmt::Display| {
        PageError::from(hub::Error::BadRequest(format!(
            "Could not read the form: {e}"
        )))
    };
    let mut fields: Vec<(String, String)> = Vec::new();
    if multipart {
        let mut form = Multipart::from_request(request, hub)
            .await
            .map_err(|e| unreadable(&e))?;
        while let Some(field) = form.next_field().await.map_err(|e| unreadable(&e))? {
            let Some(name) = field.name().map(str::to_owned) else {
                continue;
            };
            if field.file_name().is_some() {
                continue;
            }
            fields.push((name, field.text().await.map_err(|e| unreadable(&e))?));
        }
    } else {
        let body = axum::body::Bytes::from_request(request, hub)
            .await
            .map_err(|e| unreadable(&e))?;
        fields = form_urlencoded::parse(&body).into_owned().collect();
    }
    let (options, xsrf) = options_from_form(fields);
    if !session.check_form_xsrf(hub, xsrf.as_deref()) {
        return Err(
            hub::Error::Forbidden("XSRF cookie does not match POST argument".into()).into(),
        );
    }
    Ok(options)
}

pub async fn spawn_self(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    Query(query): Query<NextQuery>,
) -> Result<Response, PageError> {
    spawn_page(hub, session, uri, None, String::new(), None, query).await
}

pub async fn spawn_self_post(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    Query(query): Query<NextQuery>,
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
    Query(query): Query<NextQuery>,
) -> Result<Response, PageError> {
    spawn_page(hub, session, uri, Some(user), String::new(), None, query).await
}

pub async fn spawn_user_post(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    Path(user): Path<String>,
    Query(query): Query<NextQuery>,
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
    Query(query): Query<NextQuery>,
) -> Result<Response, PageError> {
    spawn_page(hub, session, uri, Some(user), server, None, query).await
}

pub async fn spawn_named_post(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    Path((user, server)): Path<(String, String)>,
    Query(query): Query<NextQuery>,
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
    let row = hub.server_record(&owner, &server)?;
    let failure = row.and_then(|r| r.last_failure);
    let spawn_url = with_next(spawn_path(&hub, &owner.name, &server), next.as_deref());
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
    Query(query): Query<NextQuery>,
) -> Result<Response, PageError> {
    spawn_pending(hub, session, uri, user, String::new(), query).await
}

pub async fn spawn_pending_named(
    State(hub): State<Hub>,
    session: Session,
    uri: Uri,
    Path((user, server)): Path<(String, String)>,
    Query(query): Query<NextQuery>,
) -> Result<Response, PageError> {
    spawn_pending(hub, session, uri, user, server, query).await
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
        Some(token) => hub.identify_token(token)?,
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

/// `GET /hub/metrics`: Prometheus metrics; needs `read:metrics` unless
/// `authenticate_prometheus = false`.
pub async fn metrics(State(hub): State<Hub>, session: Session) -> Result<Response, PageError> {
    if hub.config().hub.authenticate_prometheus {
        let identity = match bearer_token(&session.headers) {
            Some(token) => hub.identify_token(token)?,
            None => session.identity.clone(),
        };
        let allowed = identity.is_some_and(|i| i.allows("read:metrics", &Resource::Hub));
        if !allowed {
            return Err(hub::Error::Forbidden("read:metrics is required".into()).into());
        }
    }
    hub.refresh_gauges();
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        hub.metrics().encode(),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
pub struct ErrorQuery {
    #[serde(default)]
    url: String,
}

/// `/hub/error/{code}`: the proxy's error target.
pub async fn error_page(Path(code): Path<u16>, Query(query): Query<ErrorQuery>) -> PageError {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let url = query.url;
    let message = if code == 503 {
        format!("Your server at {url} appears to be down. Try restarting it from the hub.")
    } else {
        format!("Error {code} for {url}")
    };
    PageError::new(status, message)
}

pub async fn not_found(uri: Uri) -> PageError {
    hub::Error::NotFound(format!("No page at {}", uri.path())).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_url_validation() {
        let host = Some("hub.example.org");
        for (input, expected) in [
            ("/hub/home", "/hub/home"),
            ("/user/alice/lab?x=1", "/user/alice/lab?x=1"),
            ("https://evil.com/x", ""),
            ("//evil.com/x", ""),
            ("///evil.com/x", ""),
            ("https://hub.example.org/user/a/?q=1#f", "/user/a/?q=1#f"),
            ("//hub.example.org/hub/", "/hub/"),
            ("relative/path", ""),
            ("/\\evil.com", "/%5Cevil.com"),
        ] {
            assert_eq!(validate_next_url(input, host), expected, "{input}");
        }
    }

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
}
