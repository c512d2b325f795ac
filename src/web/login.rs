//! Upstream's `handlers/login.py`: the login form, its answer (cookies set, a validated
//! `next`) and logout (this session's tokens revoked, cookies cleared).

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::hub::{self, Hub};

use super::PageError;
use super::base::{FirstQuery, NextQuery, encode, found, next_url, page};
use super::session::{Session, login_cookies, logout_cookies, set_cookies};

/// `GET /hub/login`.
pub async fn login_form(
    State(hub): State<Hub>,
    session: Session,
    FirstQuery(query): FirstQuery<NextQuery>,
) -> Response {
    if session.identity.is_some() {
        return found(&next_url(&hub, &session, query.next.as_deref()));
    }
    if let Some(oauth) = hub.oauth() {
        let next = query.next.unwrap_or_default();
        let oauth_login = format!("{}hub/oauth_login?next={}", hub.base_url(), encode(&next));
        if hub.config().authenticator.auto_login {
            return found(&oauth_login);
        }
        return page(
            &hub,
            &session,
            StatusCode::OK,
            "login.html",
            json!({"login_service": oauth.login_service(), "authenticator_login_url": oauth_login}),
        );
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
    FirstQuery(query): FirstQuery<NextQuery>,
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
            let mut response = rerender(failure.status, &failure.message);
            if let Some(seconds) = failure.retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
    }
}

/// `GET /hub/oauth_login`: to the provider, with `state` and the PKCE verifier kept in a
/// signed cookie for the callback.
pub async fn oauth_login(
    State(hub): State<Hub>,
    session: Session,
    FirstQuery(query): FirstQuery<NextQuery>,
) -> Result<Response, PageError> {
    let next = query.next.unwrap_or_default();
    let (redirect, cookie) = hub.oauth_start(&next).await?;
    let mut response = found(&redirect);
    let secure = if session.secure { "; Secure" } else { "" };
    let value = format!(
        "{}={cookie}; Path={}hub/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        crate::auth::oauth2::STATE_COOKIE,
        hub.base_url(),
        crate::auth::oauth2::STATE_MAX_AGE_SECS,
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `GET /hub/oauth_callback`: the provider's answer; the same finish as the form login.
pub async fn oauth_callback(
    State(hub): State<Hub>,
    session: Session,
    headers: axum::http::HeaderMap,
    FirstQuery(query): FirstQuery<hub::OAuthCallback>,
) -> Result<Response, PageError> {
    let cookie = crate::auth::cookie::cookie(&headers, crate::auth::oauth2::STATE_COOKIE);
    let (user, next) = hub
        .oauth_finish(&query, cookie, &session.peer_ip)
        .await
        .map_err(|e| match e {
            // Say who was refused, not "invalid password": there was none.
            hub::Error::Auth(crate::auth::Error::NotAllowed(name)) => PageError::new(
                StatusCode::FORBIDDEN,
                format!("User {name} is not allowed to use this hub."),
            ),
            other => PageError::from(other),
        })?;
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
    let clear = format!(
        "{}=; Path={}hub/; Max-Age=0; HttpOnly; SameSite=Lax",
        crate::auth::oauth2::STATE_COOKIE,
        hub.base_url()
    );
    if let Ok(value) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
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

#[derive(serde::Deserialize)]
pub struct ChangePasswordForm {
    #[serde(default)]
    current_password: Option<String>,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirmation: String,
    #[serde(rename = "_xsrf")]
    xsrf: Option<String>,
}

/// Whose password a change-password page is for: the logged-in user's own, or (for a holder
/// of `admin:users` on them) another user's.
fn password_target(
    hub: &Hub,
    session: &Session,
    uri: &axum::http::Uri,
    name: Option<String>,
) -> Result<Result<(hub::UserRow, bool), Response>, PageError> {
    if !hub.has_own_passwords() {
        return Err(hub::Error::NotFound(
            "This hub's authenticator keeps no passwords of its own".into(),
        )
        .into());
    }
    let me = match super::base::require_user(hub, session, uri) {
        Ok(me) => me,
        Err(redirect) => return Ok(Err(redirect)),
    };
    let Some(name) = name.filter(|n| *n != me.name) else {
        return Ok(Ok((me, false)));
    };
    let identity = session
        .identity
        .as_ref()
        .ok_or_else(|| hub::Error::Forbidden("not logged in".into()))?;
    let target = hub
        .user(&name)
        .map_err(|_| hub::Error::NotFound(format!("No such user: {name}")))?;
    let groups = hub.user_groups(&target)?;
    if !identity.allows(
        "admin:users",
        &crate::rbac::Resource::User {
            name: &target.name,
            groups: &groups,
        },
    ) {
        return Err(hub::Error::Forbidden(format!("You may not set {name}'s password")).into());
    }
    Ok(Ok((target, true)))
}

fn password_page(
    hub: &Hub,
    session: &Session,
    status: StatusCode,
    target: &hub::UserRow,
    for_other: bool,
    outcome: (Option<&str>, Option<&str>),
) -> Response {
    let action = if for_other {
        format!(
            "{}hub/auth/change-password/{}",
            hub.base_url(),
            encode(&target.name)
        )
    } else {
        format!("{}hub/auth/change-password", hub.base_url())
    };
    page(
        hub,
        session,
        status,
        "change_password.html",
        json!({
            "action": action,
            "target": target.name,
            "for_other": for_other,
            "min_length": hub.config().first_use.min_password_length,
            "error": outcome.0,
            "result": outcome.1,
        }),
    )
}

/// `GET /hub/auth/change-password[/{user}]`.
pub async fn change_password_form(
    State(hub): State<Hub>,
    session: Session,
    uri: axum::http::Uri,
    name: Option<axum::extract::Path<String>>,
) -> Result<Response, PageError> {
    let (target, for_other) = match password_target(&hub, &session, &uri, name.map(|p| p.0))? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    Ok(password_page(
        &hub,
        &session,
        StatusCode::OK,
        &target,
        for_other,
        (None, None),
    ))
}

/// `POST /hub/auth/change-password[/{user}]`.
pub async fn change_password_submit(
    State(hub): State<Hub>,
    session: Session,
    uri: axum::http::Uri,
    name: Option<axum::extract::Path<String>>,
    Form(form): Form<ChangePasswordForm>,
) -> Result<Response, PageError> {
    let (target, for_other) = match password_target(&hub, &session, &uri, name.map(|p| p.0))? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    if !session.check_form_xsrf(&hub, form.xsrf.as_deref()) {
        return Ok(password_page(
            &hub,
            &session,
            StatusCode::FORBIDDEN,
            &target,
            for_other,
            (Some("The form is invalid or expired. Try again."), None),
        ));
    }
    let current = if for_other {
        None
    } else {
        Some(form.current_password.as_deref().unwrap_or(""))
    };
    let answer = hub
        .change_password(
            &target,
            current,
            &form.password,
            &form.password_confirmation,
        )
        .await;
    Ok(match answer {
        Ok(()) => {
            let done = if for_other {
                format!("The password of {} has been changed.", target.name)
            } else {
                "Your password has been changed successfully!".to_owned()
            };
            password_page(
                &hub,
                &session,
                StatusCode::OK,
                &target,
                for_other,
                (None, Some(&done)),
            )
        }
        Err(e) => {
            let failure = crate::status::Failure::from(e);
            password_page(
                &hub,
                &session,
                failure.status,
                &target,
                for_other,
                (Some(&failure.message), None),
            )
        }
    })
}
