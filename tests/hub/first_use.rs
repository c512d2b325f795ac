//! The first-use authenticator (TLJH's default): the first login sets a name's password,
//! later logins must give it; too short is refused with the minimum; `create_users = false`
//! lets only known users sign up; the change-password page; an admin resets a password;
//! deleting a user forgets theirs.

use reqwest::StatusCode;

use crate::support::{TestHub, call, login, page_xsrf};

const FIRST_USE: &str = "authenticator_class = \"firstuse\"";

async fn login_status(hub: &TestHub, user: &str, password: &str) -> (StatusCode, String) {
    let (_, response) = login(hub, user, password).await;
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn the_first_login_sets_the_password() {
    let hub = TestHub::start(FIRST_USE, "").await;
    // Too short: refused, saying how long it must be; nothing is set.
    let (status, page) = login_status(&hub, "alice", "short").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("at least 7 characters"), "{page}");
    let (status, _) = login_status(&hub, "alice", "alice-secret").await;
    assert_eq!(status, StatusCode::FOUND, "the first login sets it");
    let (status, page) = login_status(&hub, "alice", "other-secret").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a wrong one after that");
    assert!(page.contains("Invalid username or password"), "{page}");
    let (status, _) = login_status(&hub, "alice", "alice-secret").await;
    assert_eq!(status, StatusCode::FOUND);

    // The hash is argon2id, in the database, not the password.
    let db = rusqlite::Connection::open(hub.dir.path().join("jupyterhub.sqlite")).expect("db");
    let hash: String = db
        .query_row(
            "SELECT hash FROM first_use_passwords WHERE name = 'alice'",
            [],
            |r| r.get(0),
        )
        .expect("alice's hash");
    assert!(
        hash.starts_with("$argon2id$") && !hash.contains("alice-secret"),
        "{hash}"
    );

    // Deleting the user forgets the password: the name is free to set one again.
    let admin = hub.admin_token();
    let (status, body) = call(&hub, "DELETE", "/users/alice", &admin, None).await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = login_status(&hub, "alice", "a-new-secret").await;
    assert_eq!(status, StatusCode::FOUND, "a new first login");
}

#[tokio::test]
async fn without_create_users_only_known_users_sign_up() {
    let hub = TestHub::start(
        FIRST_USE,
        "[FirstUseAuthenticator]\ncreate_users = false\nmin_password_length = 10\n",
    )
    .await;
    let (status, _) = login_status(&hub, "mallory", "mallory-secret").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an unknown name cannot sign up"
    );
    let admin = hub.admin_token();
    let (status, body) = call(&hub, "POST", "/users/bob", &admin, None).await;
    assert_eq!(status, 201, "{body}");
    let (status, page) = login_status(&hub, "bob", "123456789").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("at least 10 characters"), "{page}");
    let (status, _) = login_status(&hub, "bob", "1234567890").await;
    assert_eq!(status, StatusCode::FOUND, "an added user sets a password");
}

#[tokio::test]
async fn passwords_are_changed_by_their_owner_and_reset_by_an_admin() {
    let hub = TestHub::start(FIRST_USE, "").await;
    let (alice, response) = login(&hub, "alice", "alice-secret").await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let url = format!("{}/hub/auth/change-password", hub.url);
    let home = alice
        .get(format!("{}/hub/home", hub.url))
        .send()
        .await
        .expect("home")
        .text()
        .await
        .expect("body");
    assert!(
        home.contains("href=\"/hub/auth/change-password\""),
        "{home}"
    );
    let xsrf = page_xsrf(&alice, &url).await;
    let change = |current: &'static str, new: &'static str, confirm: &'static str| {
        let (alice, url, xsrf) = (&alice, &url, &xsrf);
        async move {
            let r = alice
                .post(url)
                .form(&[
                    ("_xsrf", xsrf.as_str()),
                    ("current_password", current),
                    ("password", new),
                    ("password_confirmation", confirm),
                ])
                .send()
                .await
                .expect("post");
            (r.status(), r.text().await.unwrap_or_default())
        }
    };
    let (status, page) = change("wrong-secret", "alice-new-1", "alice-new-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("current password is not correct"), "{page}");
    let (status, page) = change("alice-secret", "alice-new-1", "alice-new-2").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("do not match"), "{page}");
    let (status, page) = change("alice-secret", "tiny", "tiny").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("at least 7"), "{page}");
    let (status, page) = change("alice-secret", "alice-new-1", "alice-new-1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("changed successfully"), "{page}");
    assert_eq!(
        login_status(&hub, "alice", "alice-secret").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        login_status(&hub, "alice", "alice-new-1").await.0,
        StatusCode::FOUND
    );

    // Without the form's XSRF token: refused, nothing changed.
    let r = alice
        .post(&url)
        .form(&[
            ("current_password", "alice-new-1"),
            ("password", "alice-new-2"),
            ("password_confirmation", "alice-new-2"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        login_status(&hub, "alice", "alice-new-1").await.0,
        StatusCode::FOUND
    );

    // alice may not set bob's; an admin may, without knowing the old one.
    assert_eq!(
        login_status(&hub, "bob", "bob-secret").await.0,
        StatusCode::FOUND
    );
    let bobs = format!("{}/hub/auth/change-password/bob", hub.url);
    let r = alice.get(&bobs).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (admin, _) = login(&hub, "admin", "admin-secret").await;
    let xsrf = page_xsrf(&admin, &bobs).await;
    let page = admin
        .get(&bobs)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(page.contains("Set a new password for bob"), "{page}");
    assert!(!page.contains("current_password"), "{page}");
    let r = admin
        .post(&bobs)
        .form(&[
            ("_xsrf", xsrf.as_str()),
            ("password", "bob-reset-1"),
            ("password_confirmation", "bob-reset-1"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("password of bob has been changed")
    );
    assert_eq!(
        login_status(&hub, "bob", "bob-secret").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        login_status(&hub, "bob", "bob-reset-1").await.0,
        StatusCode::FOUND
    );
    let missing = admin
        .get(format!("{}/hub/auth/change-password/nobody", hub.url))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn other_authenticators_have_no_password_page() {
    let hub = TestHub::start("", "").await;
    let (alice, _) = login(&hub, "alice", "any").await;
    let r = alice
        .get(format!("{}/hub/auth/change-password", hub.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// A login the hub refuses (here: not in `allowed_users`) keeps no password, so nobody can
/// reserve a name before its owner is allowed in.
#[tokio::test]
async fn a_refused_first_login_keeps_no_password() {
    let hub = TestHub::start(FIRST_USE, "allowed_users = [\"alice\"]\n").await;
    let (status, _) = login_status(&hub, "bob", "bob-secret-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = login_status(&hub, "alice", "alice-secret").await;
    assert_eq!(status, StatusCode::FOUND);
    let db = rusqlite::Connection::open(hub.dir.path().join("jupyterhub.sqlite")).expect("db");
    let names: Vec<String> = db
        .prepare("SELECT name FROM first_use_passwords ORDER BY name")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("names");
    assert_eq!(names, ["alice"], "bob's refused login reserved his name");
}
