//! `create_system_users` with `username_template = "jupyter-{USERNAME}"` (TLJH's naming):
//! the hub (root, `systemd` spawner, first-use logins) as a unit of a contained systemd. The
//! config's admin has an account from the start; an admin adds a user and the account exists (home, locked password, not in sudo); another
//! user signs up by logging in and gets theirs; a server runs as the account; deleting the
//! user keeps the account and its home.
//! Needs root (fails, saying so, otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Contained, reserve_port, shared_dir};

const CGROUP_NAME: &str = "sdtest-accounts";
const HUB_UNIT: &str = "jupyterhub-accounts-systest.service";
/// Added by the admin through the API.
const ADDED: &str = "jh-acct-added";
/// Unknown to the hub until their first login.
const SIGNUP: &str = "jh-acct-signup";
/// The config's admin: their account is made at start-up.
const ADMIN: &str = "jh-acct-admin";

fn account(user: &str) -> String {
    format!("jupyter-{user}")
}

/// The accounts the hub creates and the test's files, removed on drop (also on panic);
/// declared before the contained systemd so they outlive every process that runs as them.
struct Cleanup {
    accounts: Vec<String>,
    files: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.accounts {
            let _ = Command::new("userdel")
                .args(["--remove", name])
                .stderr(std::process::Stdio::null())
                .status();
        }
        for path in &self.files {
            let _ = std::fs::remove_dir_all(path);
            let _ = std::fs::remove_file(path);
        }
    }
}

fn journal(sd: &Contained) -> String {
    sd.run(&["journalctl", "-u", HUB_UNIT, "--no-pager", "-n", "80"])
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
) -> (StatusCode, Value) {
    let response = http
        .request(method, format!("{base}/hub/api{path}"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .expect("request to the hub");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The first-use login (its password set by this first login), as a browser does it.
async fn log_in(base: &str, user: &str) -> StatusCode {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("browser");
    let html = browser
        .get(format!("{base}/hub/login"))
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("login html");
    let marker = "name=\"_xsrf\" value=\"";
    let start = html.find(marker).expect("an _xsrf field") + marker.len();
    let xsrf = html[start..].split('"').next().expect("xsrf value");
    browser
        .post(format!("{base}/hub/login"))
        .form(&[
            ("username", user),
            ("password", "a first-use password"),
            ("_xsrf", xsrf),
        ])
        .send()
        .await
        .expect("login post")
        .status()
}

/// `getent passwd NAME` inside the container: (uid, home), or `None`.
fn passwd(sd: &Contained, name: &str) -> Option<(String, String)> {
    let line = sd.run(&["getent", "passwd", name]);
    let fields: Vec<&str> = line.trim().split(':').collect();
    (fields.len() == 7).then(|| (fields[2].to_owned(), fields[5].to_owned()))
}

/// What `create_system_users` promises of an account: a home, no password login, no sudo.
fn assert_locked_account_with_home(sd: &Contained, name: &str) -> String {
    let (uid, home) = passwd(sd, name)
        .unwrap_or_else(|| panic!("getent passwd {name} shows no account:\n{}", journal(sd)));
    assert_eq!(home, format!("/home/{name}"));
    sd.run_ok(&["test", "-d", &home]);
    let owner = sd.run_ok(&["stat", "-c", "%U", &home]);
    assert_eq!(owner.trim(), name, "the home is the account's");
    // `passwd -S NAME`: "NAME L ..." (locked: no password set).
    let status = sd.run_ok(&["passwd", "-S", name]);
    assert_eq!(
        status.split_whitespace().nth(1),
        Some("L"),
        "the password is locked: {status}"
    );
    let groups = sd.run_ok(&["id", "-nG", name]);
    assert!(
        !groups
            .split_whitespace()
            .any(|g| g == "sudo" || g == "wheel" || g == "admin"),
        "{name} is in an admin group: {groups}"
    );
    uid
}

#[test]
fn create_system_users_makes_accounts_servers_run_as() {
    crate::harness::require_root("the accounts system test creates system accounts");
    let _serial = crate::harness::serial();
    use std::os::unix::fs::PermissionsExt as _;
    let shared = shared_dir();
    let id = std::process::id();
    let dir = shared.join(format!("accounts-{id}"));
    let bin = shared.join(format!("jupyterhub-accounts-{id}"));
    let stub = shared.join(format!("stub_singleuser-accounts-{id}.py"));
    let _cleanup = Cleanup {
        accounts: [ADDED, SIGNUP, ADMIN].iter().map(|u| account(u)).collect(),
        files: vec![dir.clone(), bin.clone(), stub.clone()],
    };
    for user in [ADDED, SIGNUP, ADMIN] {
        assert!(
            nix::unistd::User::from_name(&account(user))
                .ok()
                .flatten()
                .is_none(),
            "{} exists before the test (left by an earlier run?)",
            account(user)
        );
    }
    std::fs::create_dir_all(&dir).expect("hub dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::copy(env!("CARGO_BIN_EXE_jupyterhub"), &bin).expect("copy the hub");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stub_singleuser.py"),
        &stub,
    )
    .expect("copy the stub server");
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let ports = (reserve_port(), reserve_port());
    let (port, hub_port) = (ports.0.port, ports.1.port);
    let token = format!("systest-accounts-{id}-{port}");
    let config = dir.join("jupyterhub.toml");
    std::fs::write(
        &config,
        format!(
            r#"[JupyterHub]
ip = "127.0.0.1"
port = {port}
hub_bind_url = "http://127.0.0.1:{hub_port}"
db_url = "sqlite:///{db}"
cookie_secret_file = "{secret}"
spawner_class = "systemd"
authenticator_class = "firstuse"
api_tokens = {{ "{token}" = "{ADMIN}" }}

[Authenticator]
admin_users = ["{ADMIN}"]
allow_all = true

[LocalAuthenticator]
create_system_users = true

[SystemdSpawner]
username_template = "jupyter-{{USERNAME}}"

[Spawner]
cmd = ["/usr/bin/python3", "{stub}"]
start_timeout = 60
http_timeout = 60
"#,
            db = dir.join("jupyterhub.sqlite").display(),
            secret = dir.join("cookie_secret").display(),
            stub = stub.display(),
        ),
    )
    .expect("write config");
    let sd = Contained::boot(CGROUP_NAME);
    let output = sd
        .nsenter()
        .args([
            "systemd-run",
            "--unit",
            HUB_UNIT,
            "--property=Type=notify",
            "--property=NotifyAccess=main",
            "--setenv=JUPYTERHUB_LOG=info",
        ])
        .arg(&bin)
        .arg("-f")
        .arg(&config)
        .output()
        .expect("systemd-run");
    assert!(
        output.status.success(),
        "the hub did not start: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        journal(&sd)
    );
    drop(ports);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            use reqwest::Method;
            // The config's users have theirs from the start (upstream's init_users).
            assert_locked_account_with_home(&sd, &account(ADMIN));
            // The admin adds a user: the account is made before the API answers.
            let (status, body) = call(
                &http,
                &base,
                &token,
                Method::POST,
                &format!("/users/{ADDED}"),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}\n{}", journal(&sd));
            let uid = assert_locked_account_with_home(&sd, &account(ADDED));
            // The user logs in (first use: this sets the password); the account is theirs.
            assert_eq!(
                log_in(&base, ADDED).await,
                StatusCode::FOUND,
                "{}",
                journal(&sd)
            );
            assert_eq!(passwd(&sd, &account(ADDED)).map(|p| p.0), Some(uid.clone()));
            // Someone the hub does not know signs up by logging in: an account for them too.
            assert!(passwd(&sd, &account(SIGNUP)).is_none());
            assert_eq!(
                log_in(&base, SIGNUP).await,
                StatusCode::FOUND,
                "{}",
                journal(&sd)
            );
            assert_locked_account_with_home(&sd, &account(SIGNUP));

            // The server's unit runs as the account, and so does its process.
            let (status, body) = call(
                &http,
                &base,
                &token,
                Method::POST,
                &format!("/users/{ADDED}/server"),
            )
            .await;
            assert!(
                [StatusCode::CREATED, StatusCode::ACCEPTED].contains(&status),
                "{status}: {body}\n{}",
                journal(&sd)
            );
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let (_, user) = call(
                    &http,
                    &base,
                    &token,
                    Method::GET,
                    &format!("/users/{ADDED}"),
                )
                .await;
                if user["servers"][""]["ready"] == json!(true) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the server never became ready: {user}\n{}",
                    journal(&sd)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let unit = format!("jupyter-{}-singleuser.service", ADDED.replace('-', "\\x2d"));
            assert_eq!(sd.prop(&unit, "User"), account(ADDED));
            let pid = sd.prop(&unit, "MainPID");
            assert_ne!(pid, "0", "{unit} has a main process");
            let proc_uid = sd.run_ok(&["stat", "-c", "%u", &format!("/proc/{pid}")]);
            assert_eq!(
                proc_uid.trim(),
                uid,
                "the server's process runs as the account"
            );

            // Deleting the user stops the server and keeps the account and its home.
            let (status, body) = call(
                &http,
                &base,
                &token,
                Method::DELETE,
                &format!("/users/{ADDED}"),
            )
            .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}\n{}", journal(&sd));
            assert_eq!(passwd(&sd, &account(ADDED)).map(|p| p.0), Some(uid.clone()));
            sd.run_ok(&["test", "-d", &format!("/home/{}", account(ADDED))]);
            assert!(
                journal(&sd).contains("the system account and its home directory are kept"),
                "the deletion says the account was kept:\n{}",
                journal(&sd)
            );
        });
    sd.run(&["systemctl", "stop", HUB_UNIT]);
}
