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
