//! Pages as upstream renders them: a template written for JupyterHub 5 (`template_paths`,
//! extending `templates/page.html` and overriding upstream's blocks, using upstream's
//! template variables), `template_vars` announcements on every page and per page, the
//! stop-pending page, and the token page's sections.

use std::time::{Duration, Instant};

use crate::support::{TestHub, call, login, server_user, stub_spawner_config, wait_ready};

/// A custom `page.html` as JupyterHub's docs show it: extends the built-in page, replaces
/// the announcement block and adds a link to the left of the navigation bar.
const CUSTOM_PAGE: &str = r#"{% extends "templates/page.html" %}
{% block announcement %}<div id="custom-banner">Maintenance tonight at 22:00</div>{% endblock %}
{% block nav_bar_left_items %}{{ super() }}<a id="docs-link" href="{{ prefix }}docs/">Docs</a>{% endblock %}
"#;

/// A custom `home.html` that reads upstream's template variables.
const CUSTOM_HOME: &str = r#"{% extends "page.html" %}
{% block main %}
<p id="vars">base_url={{ base_url }} prefix={{ prefix }} user={{ user.name }} escaped={{ user.json_escaped_name }}</p>
<p id="urls">login={{ login_url }} logout={{ logout_url }} static={{ static_url("js/admin.js", include_version=False) }} join={{ url_path_join(base_url, "spawn", user.name) }}</p>
<p id="scopes">{% if 'admin-ui' in parsed_scopes %}admin-ui held{% else %}no admin-ui{% endif %} {% if 'access:servers' in parsed_scopes %}access held{% endif %}</p>
<ul id="services">{% for service in services %}<li>{{ service.name }} at {{ service.href }}</li>{% endfor %}</ul>
<p id="custom-var">{{ campus_name }}</p>
{% endblock %}
"#;

fn write_templates(hub_dir: &std::path::Path) -> std::path::PathBuf {
    let dir = hub_dir.join("custom-templates");
    std::fs::create_dir_all(&dir).expect("templates dir");
    std::fs::write(dir.join("page.html"), CUSTOM_PAGE).expect("page.html");
    std::fs::write(dir.join("home.html"), CUSTOM_HOME).expect("home.html");
    dir
}

#[tokio::test]
async fn a_jupyterhub_5_template_extends_ours_through_template_paths() {
    // The hub's directory is only known once it is prepared: write the templates into a
    // directory of our own and name it in the config.
    let templates = tempfile::tempdir().expect("tempdir");
    let dir = write_templates(templates.path());
    let hub_extra = format!(
        "template_paths = [\"{}\"]\ntemplate_vars = {{ campus_name = \"North Campus\" }}\n\n\
         [[JupyterHub.services]]\nname = \"grader\"\nurl = \"http://127.0.0.1:1\"\n\
         api_token = \"grader-token-0123456789abcdef\"\n\n\
         [[JupyterHub.services]]\nname = \"hidden\"\nurl = \"http://127.0.0.1:2\"\n\
         api_token = \"hidden-token-0123456789abcdef\"\ndisplay = false\n\n\
         [[JupyterHub.load_roles]]\nname = \"graders\"\nscopes = [\"access:services!service=grader\"]\n\
         users = [\"alice\"]",
        dir.display()
    );
    let hub = TestHub::start(&hub_extra, "").await;

    // The login page: ours, inside the custom page (its banner, not an announcement).
    let login_page = reqwest::get(format!("{}/hub/login", hub.url))
        .await
        .expect("login page")
        .text()
        .await
        .expect("body");
    assert!(login_page.contains("id=\"custom-banner\""), "{login_page}");
    assert!(login_page.contains("id=\"username_input\""), "{login_page}");
    assert!(
        !login_page.contains("id=\"docs-link\""),
        "no navigation items before login: {login_page}"
    );

    let (alice, response) = login(&hub, "alice", "any").await;
    assert!(response.status().is_redirection(), "{}", response.status());
    let home = alice
        .get(format!("{}/hub/home", hub.url))
        .send()
        .await
        .expect("home")
        .text()
        .await
        .expect("body");
    assert!(home.contains("id=\"custom-banner\""), "{home}");
    // `super()` keeps the built-in items; the custom one follows them.
    let home_link = home.find(">Home<").expect("the built-in Home link");
    let docs = home
        .find("id=\"docs-link\" href=\"/docs/\"")
        .expect("the added link");
    assert!(home_link < docs, "{home}");
    assert!(
        home.contains("base_url=/hub/ prefix=/ user=alice escaped=alice"),
        "{home}"
    );
    assert!(
        home.contains(
            "login=/hub/login logout=/hub/logout static=/hub/static/js/admin.js join=/hub/spawn/alice"
        ),
        "{home}"
    );
    assert!(home.contains("no admin-ui access held"), "{home}");
    // Only services with a URL, shown, that alice may access.
    assert!(
        home.contains("<li>grader at /services/grader/</li>"),
        "{home}"
    );
    assert!(!home.contains("hidden at"), "{home}");
    assert!(
        home.contains("<p id=\"custom-var\">North Campus</p>"),
        "{home}"
    );
    // The static file that static_url names is served there.
    let script = reqwest::get(format!("{}/hub/static/js/admin.js", hub.url))
        .await
        .expect("script");
    assert_eq!(script.status(), 200);

    // An admin holds admin-ui; a missing page keeps the custom frame too.
    let (admin, _) = login(&hub, "admin", "any").await;
    let home = admin
        .get(format!("{}/hub/home", hub.url))
        .send()
        .await
        .expect("home")
        .text()
        .await
        .expect("body");
    assert!(home.contains("admin-ui held"), "{home}");
    let missing = admin
        .get(format!("{}/hub/no-such-page", hub.url))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
    assert!(
        missing
            .text()
            .await
            .expect("body")
            .contains("custom-banner"),
        "error pages use the custom page"
    );
}

#[tokio::test]
async fn template_vars_announce_on_every_page_or_on_one() {
    let hub = TestHub::start(
        "[JupyterHub.template_vars]\nannouncement = \"The hub restarts at <b>noon</b>\"\n\
         announcement_login = \"Sign in with your campus account\"",
        "",
    )
    .await;
    let announcement = |html: &str| -> Option<String> {
        let start = html.find("id=\"announcement\">")? + "id=\"announcement\">".len();
        let end = html[start..].find("</div>")? + start;
        Some(html[start..end].to_owned())
    };
    let login_page = reqwest::get(format!("{}/hub/login", hub.url))
        .await
        .expect("login")
        .text()
        .await
        .expect("body");
    assert_eq!(
        announcement(&login_page).as_deref(),
        Some("Sign in with your campus account"),
        "the login page's own: {login_page}"
    );
    let (alice, _) = login(&hub, "alice", "any").await;
    let home = alice
        .get(format!("{}/hub/home", hub.url))
        .send()
        .await
        .expect("home")
        .text()
        .await
        .expect("body");
    // Announcements are HTML, as upstream's (`| safe`): the admin writes them.
    assert_eq!(
        announcement(&home).as_deref(),
        Some("The hub restarts at <b>noon</b>"),
        "{home}"
    );
    let token_page = alice
        .get(format!("{}/hub/token", hub.url))
        .send()
        .await
        .expect("token page")
        .text()
        .await
        .expect("body");
    assert_eq!(
        announcement(&token_page).as_deref(),
        Some("The hub restarts at <b>noon</b>")
    );
    let missing = reqwest::get(format!("{}/hub/nothing", hub.url))
        .await
        .expect("404")
        .text()
        .await
        .expect("body");
    assert_eq!(
        announcement(&missing).as_deref(),
        Some("The hub restarts at <b>noon</b>"),
        "{missing}"
    );
    // A hub without template_vars shows none.
    let plain = TestHub::start("", "").await;
    let page = reqwest::get(format!("{}/hub/login", plain.url))
        .await
        .expect("login")
        .text()
        .await
        .expect("body");
    assert_eq!(announcement(&page), None, "{page}");
}

#[tokio::test]
async fn a_stopping_server_has_the_stop_pending_page() {
    // A server that ignores SIGTERM stays stopping for the local spawner's grace (5 s).
    let stub = crate::support::stub_path();
    let spawner = format!(
        "[Spawner]\ncmd = [\"/usr/bin/python3\", \"-c\", \"import runpy, signal, sys; \
         signal.signal(signal.SIGTERM, signal.SIG_IGN); sys.argv = ['stub']; \
         runpy.run_path('{}', run_name='__main__')\"]\nhttp_timeout = 20\nstart_timeout = 20\n",
        stub.display()
    );
    let hub = TestHub::start("slow_stop_timeout = 0.1", &spawner).await;
    let admin = hub.admin_token();
    let user = server_user();
    call(&hub, "POST", &format!("/users/{user}"), &admin, None).await;
    let (status, body) = call(&hub, "POST", &format!("/users/{user}/server"), &admin, None).await;
    assert!(status == 201 || status == 202, "{status} {body}");
    wait_ready(&hub, &admin, &user, "").await;
    let (browser, _) = login(&hub, &user, "any").await;
    let (status, body) = call(
        &hub,
        "DELETE",
        &format!("/users/{user}/server"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 202, "still stopping after 0.1 s: {body}");
    let page = browser
        .get(format!("{}/hub/spawn-pending/{user}", hub.url))
        .send()
        .await
        .expect("spawn-pending");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("body");
    assert!(html.contains("Your server is stopping."), "{html}");
    assert!(html.contains("id=\"refresh\""), "{html}");
    // Once stopped, the same page offers a start instead.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let html = browser
            .get(format!("{}/hub/spawn-pending/{user}", hub.url))
            .send()
            .await
            .expect("spawn-pending")
            .text()
            .await
            .expect("body");
        if !html.contains("Your server is stopping.") {
            break;
        }
        assert!(Instant::now() < deadline, "never stopped: {html}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_token_page_has_upstreams_sections() {
    let hub = TestHub::start("", &stub_spawner_config()).await;
    let (alice, _) = login(&hub, "alice", "any").await;
    let html = alice
        .get(format!("{}/hub/token", hub.url))
        .send()
        .await
        .expect("token page")
        .text()
        .await
        .expect("body");
    for id in [
        "request-token-form",
        "token-note",
        "token-expiration-seconds",
        "token-scopes",
        "token-area",
        "token-result",
        "api-tokens",
        "oauth-clients",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "no #{id}: {html}");
    }
    assert!(html.contains("Authorized Applications"), "{html}");
}
