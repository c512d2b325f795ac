//! `--dev`: `admin` is an admin, servers run as the hub's own account in a directory of their
//! own under the state directory, from an environment the hub makes (here: an existing venv
//! named by `JUPYTERHUB_DEV_USER_ENV`, so nothing is downloaded), and a missing Python is a
//! page that names the package to install, not a bare error.

use std::os::unix::fs::MetadataExt as _;
use std::time::{Duration, Instant};

use crate::support::{TestHub, call, login, singleuser_venv};

/// Upstream's bare default command, which `--dev` runs from its own environment.
const DEV_SPAWNER: &str =
    "[Spawner]\ncmd = [\"jupyterhub-singleuser\"]\nstart_timeout = 60\nhttp_timeout = 60\n";

#[tokio::test]
async fn dev_admin_is_admin_and_servers_run_as_the_hub_account() {
    let venv = singleuser_venv();
    let venv = venv.to_string_lossy().into_owned();
    let hub = TestHub::start_dev(DEV_SPAWNER, &[("JUPYTERHUB_DEV_USER_ENV", &venv)]).await;
    assert!(
        hub.log().contains("the user `admin` is an admin"),
        "the banner says who is admin:\n{}",
        hub.log()
    );
    let (browser, response) = login(&hub, "admin", "anything").await;
    assert_eq!(response.status(), 302, "{}", hub.log());
    let admin_page = browser
        .get(format!("{}/hub/admin", hub.url))
        .send()
        .await
        .expect("admin page");
    assert_eq!(admin_page.status(), 200, "admin is admin in --dev");

    // A file in the user's directory shows the server works there.
    let home = hub.dir.path().join("users/admin");
    std::fs::create_dir_all(&home).expect("user dir");
    std::fs::write(home.join("hello.txt"), "hi").expect("file");

    let spawn = browser
        .get(format!("{}/hub/spawn", hub.url))
        .send()
        .await
        .expect("spawn");
    assert_eq!(spawn.status(), 302, "{}", hub.log());
    let token = hub.admin_token();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, model) = call(&hub, "GET", "/users/admin", &token, None).await;
        if model["servers"][""]["ready"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready: {model}\n{}",
            hub.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let contents = reqwest::Client::new()
        .get(format!("{}/user/admin/api/contents", hub.url))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .expect("contents");
    assert_eq!(contents.status(), 200, "{}", hub.log());
    let listing = contents.text().await.expect("listing");
    assert!(listing.contains("hello.txt"), "{listing}");
    // The server wrote its runtime files as the hub's own account, under its own home.
    let runtime = home.join(".local/share/jupyter/runtime");
    let owner = std::fs::metadata(&runtime).expect("runtime dir").uid();
    assert_eq!(owner, nix::unistd::geteuid().as_raw());
    let (status, _) = call(&hub, "DELETE", "/users/admin/server", &token, None).await;
    assert!(status == 204 || status == 202, "{status}");
}

#[tokio::test]
async fn dev_env_that_cannot_be_made_is_a_page_naming_the_package() {
    let hub = TestHub::start_dev(
        DEV_SPAWNER,
        &[("JUPYTERHUB_DEV_PYTHON", "/nonexistent/python3")],
    )
    .await;
    let (browser, response) = login(&hub, "admin", "x").await;
    assert_eq!(response.status(), 302);
    let spawn = browser
        .get(format!("{}/hub/spawn", hub.url))
        .send()
        .await
        .expect("spawn");
    assert_eq!(spawn.status(), 302, "{}", hub.log());
    let location = spawn.headers()["location"].to_str().expect("location");
    assert!(location.contains("/hub/spawn-pending/admin"), "{location}");
    // The progress stream ends with the failure, which names the package.
    let token = hub.admin_token();
    let progress = reqwest::Client::new()
        .get(hub.api("/users/admin/server/progress"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .expect("progress");
    let events = tokio::time::timeout(Duration::from_secs(30), progress.text())
        .await
        .expect("the stream ends")
        .expect("events");
    assert!(
        events.contains("\"failed\":true") && events.contains("python3-venv"),
        "{events}"
    );
    let page = browser
        .get(format!("{}{location}", hub.url))
        .send()
        .await
        .expect("pending page");
    // Upstream's status for a failed spawn's page, with a page that explains.
    assert_eq!(page.status(), 500);
    let html = page.text().await.expect("html");
    assert!(
        html.contains("python3-venv") && html.contains("Relaunch"),
        "{html}"
    );
}

#[tokio::test]
async fn a_failed_spawn_from_the_home_page_is_a_page_saying_what_to_do() {
    // Not --dev: a command that is not installed, as on a hub without setup-user-env.
    let hub = TestHub::start(
        "",
        "[Spawner]\ncmd = [\"/nonexistent/jupyterhub-singleuser\"]\nstart_timeout = 10\n",
    )
    .await;
    let user = crate::support::server_user();
    let (browser, response) = login(&hub, &user, "x").await;
    assert_eq!(response.status(), 302);
    let spawn = browser
        .get(format!("{}/hub/spawn", hub.url))
        .send()
        .await
        .expect("spawn");
    assert_eq!(spawn.status(), 302, "{}", hub.log());
    let location = spawn.headers()["location"].to_str().expect("location");
    assert!(location.contains("/hub/spawn-pending/"), "{location}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let html = loop {
        let page = browser
            .get(format!("{}{location}", hub.url))
            .send()
            .await
            .expect("pending page");
        let status = page.status();
        let html = page.text().await.expect("html");
        if html.contains("failed to start") {
            // Upstream's 500 for a failed spawn, as a page that explains.
            assert_eq!(status, 500, "{html}");
            break html;
        }
        assert_eq!(status, 200, "{html}");
        assert!(Instant::now() < deadline, "{html}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        html.contains("nonexistent") && html.contains("setup-user-env"),
        "{html}"
    );
}
