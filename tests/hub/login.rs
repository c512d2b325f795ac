//! Login, cookies, XSRF, logout, next= handling and rate limiting, per authenticator.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestHub, browser, call, extract_xsrf, login, login_with, page_xsrf};

#[tokio::test]
async fn dummy_login_sets_cookies_and_logout_clears_them() {
    let hub = TestHub::start("", "").await;
    let (client, response) = login(&hub, "Alice", "anything").await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let login_cookie = cookies
        .iter()
        .find(|c| c.starts_with("jupyterhub-hub-login="))
        .expect("login cookie");
    assert!(
        login_cookie.contains("HttpOnly")
            && login_cookie.contains("Path=/hub/")
            && login_cookie.contains("SameSite=Lax"),
        "{login_cookie}"
    );
    assert!(
        !login_cookie.contains("Secure"),
        "plain HTTP: no Secure flag"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("jupyterhub-session-id="))
    );
    let home = client
        .get(format!("{}/hub/home", hub.url))
        .send()
        .await
        .expect("home");
    assert_eq!(home.status(), 200);
    let html = home.text().await.expect("html");
    assert!(html.contains("id=\"start\""), "home page has #start");
    assert!(html.contains("alice"), "name was normalised to lower case");
    let logout = client
        .get(format!("{}/hub/logout", hub.url))
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), StatusCode::FOUND);
    let home = client
        .get(format!("{}/hub/home", hub.url))
        .send()
        .await
        .expect("home");
    assert_eq!(home.status(), StatusCode::FOUND);
    assert!(
        home.headers()["location"]
            .to_str()
            .expect("loc")
            .starts_with("/hub/login")
    );
}

#[tokio::test]
async fn dummy_password_is_checked() {
    let hub = TestHub::start("", "[DummyAuthenticator]\npassword = \"sesame\"\n").await;
    let (_, response) = login(&hub, "alice", "wrong").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let html = response.text().await.expect("html");
    assert!(
        html.contains("Invalid username or password"),
        "error shown on the form"
    );
    let (_, response) = login(&hub, "alice", "sesame").await;
    assert_eq!(response.status(), StatusCode::FOUND);
}

#[tokio::test]
async fn shared_password_users_and_admins() {
    let hub = TestHub::start(
        "authenticator_class = \"shared-password\"",
        "[SharedPasswordAuthenticator]\nuser_password = \"user-secret-1\"\nadmin_password = \"admin-secret-1\"\n",
    )
    .await;
    let (_, response) = login(&hub, "alice", "nope-nope").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (_, response) = login(&hub, "alice", "user-secret-1").await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let (_, response) = login(&hub, "boss", "admin-secret-1").await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let token = hub.admin_token();
    let (_, boss) = crate::support::call(&hub, "GET", "/users/boss", &token, None).await;
    assert_eq!(boss["admin"], true, "the admin password makes an admin");
    let (_, alice) = crate::support::call(&hub, "GET", "/users/alice", &token, None).await;
    assert_eq!(alice["admin"], false);
}

#[tokio::test]
async fn null_authenticator_has_no_login_page() {
    let hub = TestHub::start("authenticator_class = \"null\"", "").await;
    let response = reqwest::get(format!("{}/hub/login", hub.url))
        .await
        .expect("get");
    assert_eq!(response.status(), 404);
    let token = hub.admin_token();
    let (status, _) = crate::support::call(&hub, "GET", "/user", &token, None).await;
    assert_eq!(status, 200, "tokens still work");
}

#[tokio::test]
async fn allow_and_block_lists() {
    let hub = TestHub::start(
        "",
        "allowed_users = [\"alice\"]\nblocked_users = [\"mallory\"]\n",
    )
    .await;
    let (_, r) = login(&hub, "alice", "x").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let (_, r) = login(&hub, "eve", "x").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "not on the allow list");
    let (_, r) = login(&hub, "mallory", "x").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "blocked");
    let (_, r) = login(&hub, "a/b", "x").await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "names with / are refused"
    );
}

#[tokio::test]
async fn login_without_xsrf_is_refused() {
    let hub = TestHub::start("", "").await;
    let client = browser();
    let response = client
        .post(format!("{}/hub/login", hub.url))
        .form(&[("username", "alice"), ("password", "x")])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response
            .text()
            .await
            .expect("html")
            .contains("Login form invalid or expired")
    );
}

#[tokio::test]
async fn cookie_api_calls_need_xsrf() {
    let hub = TestHub::start("", "").await;
    let (client, _) = login(&hub, "alice", "x").await;
    // Navigation-style GET with the cookie: allowed.
    let r = client.get(hub.api("/user")).send().await.expect("get");
    assert_eq!(r.status(), 200);
    // A POST with the cookie but no XSRF token: refused.
    let r = client
        .post(hub.api("/users/alice/tokens"))
        .json(&json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    // The same with the page's token in X-XSRFToken: accepted.
    let xsrf = page_xsrf(&client, &format!("{}/hub/home", hub.url)).await;
    let r = client
        .post(hub.api("/users/alice/tokens"))
        .header("X-XSRFToken", &xsrf)
        .json(&json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    // A CORS-mode GET needs it too.
    let r = client
        .get(hub.api("/user"))
        .header("Sec-Fetch-Mode", "cors")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    let r = client
        .get(hub.api("/user"))
        .header("Sec-Fetch-Mode", "cors")
        .header("X-XSRFToken", &xsrf)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_upgrade_header_does_not_skip_xsrf() {
    // Issue 18: any `Upgrade:` header used to exempt cookie-authenticated calls of every
    // method; upstream exempts only websocket GETs, known by `Sec-Fetch-Mode: websocket`.
    let hub = TestHub::start("", "").await;
    let (client, _) = login(&hub, "alice", "x").await;
    for mode in [None, Some("websocket")] {
        let mut request = client
            .post(hub.api("/users/alice/tokens"))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .json(&json!({}));
        if let Some(mode) = mode {
            request = request.header("Sec-Fetch-Mode", mode);
        }
        let r = request.send().await.expect("post");
        assert_eq!(r.status(), 403, "{mode:?}");
    }
    let (status, tokens) = call(&hub, "GET", "/users/alice/tokens", &hub.admin_token(), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        tokens["api_tokens"].as_array().map(Vec::len),
        Some(0),
        "{tokens}"
    );
}

#[tokio::test]
async fn next_parameter_stays_on_this_hub() {
    let hub = TestHub::start("", "").await;
    let (client, _) = login(&hub, "alice", "x").await;
    for (next, expected) in [
        ("/hub/token", "/hub/token"),
        ("https://evil.com/x", "/hub/spawn"),
        ("//evil.com/x", "/hub/spawn"),
    ] {
        let r = client
            .get(format!("{}/hub/login?next={}", hub.url, urlencode(next)))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::FOUND, "{next}");
        assert_eq!(r.headers()["location"], expected, "{next}");
    }
}

/// How a browser reads a `Location`: tab, CR and LF dropped anywhere, C0 controls and spaces
/// trimmed at the ends, `\\` as `/`. The target stays on the hub only if that is a path
/// with one leading slash.
fn stays_on_hub(location: &str) -> bool {
    let read: String = location
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .map(|c| if c == '\\' { '/' } else { c })
        .collect();
    read.starts_with('/')
        && !read.starts_with("//")
        && !location.contains(|c: char| c.is_ascii_control())
}

#[tokio::test]
async fn next_with_what_browsers_drop_stays_on_this_hub() {
    // Issue 18: `/\t/evil.com` was sent back as is and browsers followed `//evil.com`.
    let hub = TestHub::start("", "").await;
    let (client, _) = login(&hub, "alice", "x").await;
    let inputs = [
        "/\t/evil.com",
        "/\r/evil.com",
        "/\n/evil.com",
        "\t//evil.com",
        " //evil.com",
        "/\t\\evil.com",
        "\\\t\\evil.com",
        "/\\\t/evil.com",
        "https:\t//evil.com/",
        "/%09/evil.com",
        "/\x00/evil.com",
    ];
    for next in inputs {
        let r = client
            .get(format!("{}/hub/login?next={}", hub.url, urlencode(next)))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::FOUND, "{next:?}");
        let location = r.headers()["location"].to_str().expect("location");
        assert!(stays_on_hub(location), "{next:?} -> {location:?}");
    }
    // The same through the form, as a browser that is not yet logged in submits it.
    for next in inputs {
        let anonymous = crate::support::browser();
        let url = format!("{}/hub/login?next={}", hub.url, urlencode(next));
        let xsrf = extract_xsrf(
            &anonymous
                .get(&url)
                .send()
                .await
                .expect("form")
                .text()
                .await
                .expect("html"),
        );
        let r = anonymous
            .post(&url)
            .form(&[
                ("username", "alice"),
                ("password", "x"),
                ("_xsrf", xsrf.as_str()),
            ])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::FOUND, "{next:?}");
        let location = r.headers()["location"].to_str().expect("location");
        assert!(stays_on_hub(location), "{next:?} -> {location:?}");
    }
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn failed_logins_are_rate_limited() {
    let hub = TestHub::start(
        "login_rate_limit = 3\nlogin_rate_window = 60",
        "[DummyAuthenticator]\npassword = \"sesame\"\n",
    )
    .await;
    for _ in 0..3 {
        let (_, r) = login(&hub, "alice", "wrong").await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let (_, r) = login(&hub, "alice", "sesame").await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(
        r.text()
            .await
            .expect("html")
            .contains("Too many failed login attempts")
    );
}

/// A browser-like client whose connections come from `source` (any 127/8 address reaches the
/// hub on loopback) and that sends `forwarded_for` as `X-Forwarded-For`, if given.
fn client_from(source: &str, forwarded_for: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = forwarded_for {
        headers.insert("x-forwarded-for", value.parse().expect("header"));
    }
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(source.parse::<std::net::IpAddr>().expect("ip"))
        .default_headers(headers)
        .build()
        .expect("client")
}

#[tokio::test]
async fn failures_from_one_address_do_not_lock_the_user_out_elsewhere() {
    // Issue 18: ten wrong passwords for alice from anywhere refused her everywhere.
    let hub = TestHub::start(
        "login_rate_limit = 3\nlogin_rate_window = 60",
        "[DummyAuthenticator]\npassword = \"sesame\"\n",
    )
    .await;
    let attacker = client_from("127.0.0.2", None);
    for _ in 0..3 {
        let r = login_with(&hub, &attacker, "alice", "wrong").await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let r = login_with(&hub, &attacker, "alice", "sesame").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    // Alice from her own address, and bob from the attacker's, are not held up.
    let r = login_with(&hub, &client_from("127.0.0.3", None), "alice", "sesame").await;
    assert_eq!(r.status(), StatusCode::FOUND, "alice elsewhere");
    let r = login_with(&hub, &attacker, "bob", "sesame").await;
    assert_eq!(
        r.status(),
        StatusCode::FOUND,
        "another user from that address"
    );
}

#[tokio::test]
async fn x_forwarded_for_counts_only_from_trusted_proxies() {
    let config = "[DummyAuthenticator]\npassword = \"sesame\"\n";
    // Trusted: the proxy at 127.0.0.2 names the clients, so they are told apart.
    let hub = TestHub::start(
        "login_rate_limit = 3\nlogin_rate_window = 60\ntrusted_downstream_ips = [\"127.0.0.2/32\"]",
        config,
    )
    .await;
    let attacker = client_from("127.0.0.2", Some("192.0.2.1"));
    for _ in 0..3 {
        let r = login_with(&hub, &attacker, "alice", "wrong").await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let r = login_with(&hub, &attacker, "alice", "sesame").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = login_with(
        &hub,
        &client_from("127.0.0.2", Some("192.0.2.2")),
        "alice",
        "sesame",
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::FOUND,
        "another client behind the same proxy"
    );
    assert!(
        hub.log().contains("192.0.2.1"),
        "the log names the real client"
    );
    // Untrusted: the header is ignored, so changing it does not escape the wait.
    let hub = TestHub::start("login_rate_limit = 3\nlogin_rate_window = 60", config).await;
    for forwarded in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        let r = login_with(
            &hub,
            &client_from("127.0.0.2", Some(forwarded)),
            "alice",
            "wrong",
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let r = login_with(
        &hub,
        &client_from("127.0.0.2", Some("192.0.2.4")),
        "alice",
        "sesame",
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a forged X-Forwarded-For is not believed"
    );
    assert!(
        !hub.log().contains("192.0.2."),
        "forged addresses are not logged"
    );
}

#[tokio::test]
async fn unrouted_user_paths_go_to_the_hub() {
    let hub = TestHub::start("", "").await;
    let r = browser()
        .get(format!("{}/user/alice/lab?x=1", hub.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "/hub/user/alice/lab?x=1");
    let r = browser()
        .get(format!("{}/", hub.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.headers()["location"], "/hub/");
    let (client, _) = login(&hub, "alice", "x").await;
    let r = client
        .get(format!("{}/hub/user/alice/lab", hub.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FAILED_DEPENDENCY);
    assert!(r.text().await.expect("html").contains("/hub/spawn/alice"));
    let r = client
        .get(format!("{}/hub/user/alice/api/contents", hub.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FAILED_DEPENDENCY);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Restart the server"))
    );
    let r = client
        .get(format!("{}/hub/user/bob/lab", hub.url))
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "no access to another user's server"
    );
}

#[tokio::test]
async fn a_repeated_next_parameter_is_read_as_tornado_does_not_refused() {
    // Tornado's get_argument tolerates repeated parameters; a typed query must not turn a
    // link with `next` twice into a bare 400.
    let hub = TestHub::start("", "").await;
    let client = browser();
    let page = client
        .get(format!(
            "{}/hub/login?next=%2Fhub%2Ftoken&next=%2Fhub%2Fhome",
            hub.url
        ))
        .send()
        .await
        .expect("login page");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    let xsrf = extract_xsrf(&html);
    let response = client
        .post(format!(
            "{}/hub/login?next=%2Fhub%2Ftoken&next=%2Fhub%2Fhome",
            hub.url
        ))
        .form(&[("username", "alice"), ("password", "x"), ("_xsrf", &xsrf)])
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        response.headers()["location"],
        "/hub/token",
        "the first `next` counts"
    );
}

/// Upstream's `/hub/security/csp-report` (the CSP header names it) and `/hub/logo`.
#[tokio::test]
async fn csp_reports_are_logged_for_users_and_the_logo_is_served() {
    let dir = tempfile::tempdir().expect("dir");
    let logo = dir.path().join("logo.png");
    std::fs::write(&logo, b"\x89PNG\r\n\x1a\nnot really").expect("logo");
    let hub = TestHub::start(&format!("logo_file = \"{}\"", logo.display()), "").await;
    let page = reqwest::get(format!("{}/hub/login", hub.url))
        .await
        .expect("login page");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("report-uri /hub/security/csp-report"), "{csp}");
    let report = r#"{"csp-report": {"violated-directive": "script-src"}}"#;
    let anonymous = reqwest::Client::new()
        .post(format!("{}/hub/security/csp-report", hub.url))
        .body(report)
        .send()
        .await
        .expect("post");
    assert_eq!(anonymous.status(), 403);
    let (browser, _) = crate::support::login(&hub, "alice", "pw").await;
    let r = browser
        .post(format!("{}/hub/security/csp-report", hub.url))
        .header("content-type", "application/csp-report")
        .body(report)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 204);
    assert!(
        hub.log().contains("Content security violation")
            && hub.log().contains("violated-directive"),
        "{}",
        hub.log()
    );
    let r = reqwest::get(format!("{}/hub/logo", hub.url))
        .await
        .expect("logo");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(
        &r.bytes().await.expect("bytes")[..],
        b"\x89PNG\r\n\x1a\nnot really"
    );
    let plain = TestHub::start("", "").await;
    let r = reqwest::get(format!("{}/hub/logo", plain.url))
        .await
        .expect("logo");
    assert_eq!(r.status(), 404);
}

/// Upstream's `login_duration_seconds{status}` and `logout_duration_seconds` move.
#[tokio::test]
async fn logins_and_logouts_are_timed_in_upstreams_metrics() {
    let hub = TestHub::start("", "[DummyAuthenticator]\npassword = \"sesame\"\n").await;
    let (_, r) = login(&hub, "alice", "wrong").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (alice, r) = login(&hub, "alice", "sesame").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let r = alice
        .get(format!("{}/hub/logout", hub.url))
        .send()
        .await
        .expect("logout");
    assert!(r.status().is_redirection() || r.status().is_success());
    let admin = hub.admin_token();
    let text = reqwest::Client::new()
        .get(format!("{}/hub/metrics", hub.url))
        .header("Authorization", format!("token {admin}"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "jupyterhub_login_duration_seconds_count{status=\"success\"} 1",
        "jupyterhub_login_duration_seconds_count{status=\"failure\"} 1",
        "jupyterhub_logout_duration_seconds_count 1",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
}

/// Pages that need a login send the browser back to themselves: `next` is the page's whole
/// path, `/hub/…` included (the router sees it without the prefix).
#[tokio::test]
async fn a_login_returns_to_the_page_that_asked_for_it() {
    let hub = TestHub::start("", "").await;
    for (page, next) in [
        ("/hub/token", "%2Fhub%2Ftoken"),
        ("/hub/home", "%2Fhub%2Fhome"),
        ("/hub/admin", "%2Fhub%2Fadmin"),
        (
            "/hub/accept-share?code=x",
            "%2Fhub%2Faccept-share%3Fcode%3Dx",
        ),
    ] {
        let r = crate::support::browser()
            .get(format!("{}{page}", hub.url))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 302, "{page}");
        assert_eq!(
            r.headers()["location"],
            format!("/hub/login?next={next}").as_str(),
            "{page}"
        );
    }
    let client = crate::support::browser();
    let xsrf = crate::support::page_xsrf(&client, &format!("{}/hub/login", hub.url)).await;
    let r = client
        .post(format!("{}/hub/login?next=%2Fhub%2Ftoken", hub.url))
        .form(&[
            ("_xsrf", xsrf.as_str()),
            ("username", "alice"),
            ("password", "x"),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(r.headers()["location"], "/hub/token");
}
