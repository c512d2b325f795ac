//! Test harness: runs the real `jupyterhub` binary on free ports in a temporary directory
//! and drives it over HTTP. The process is killed when the `TestHub` is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub struct TestHub {
    pub url: String,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
    /// Extra environment for the hub process (e.g. JUPYTERHUB_CRYPT_KEY).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

/// A config with the dummy authenticator, the local spawner, `admin` as admin, and `extra`
/// appended (extra sections must not repeat `[JupyterHub]`; use `hub_extra` for that).
pub fn config_text(port: u16, hub_port: u16, dir: &Path, hub_extra: &str, extra: &str) -> String {
    let authenticator = if hub_extra.contains("authenticator_class") {
        ""
    } else {
        "authenticator_class = \"dummy\""
    };
    format!(
        "[JupyterHub]\nip = \"127.0.0.1\"\nport = {port}\nhub_bind_url = \"http://127.0.0.1:{hub_port}\"\n\
         db_url = \"sqlite:///{db}\"\ncookie_secret_file = \"{secret}\"\nspawner_class = \"local\"\n\
         {authenticator}\n{hub_extra}\n[Authenticator]\nadmin_users = [\"admin\"]\n{extra}\n",
        db = dir.join("jupyterhub.sqlite").display(),
        secret = dir.join("cookie_secret").display(),
    )
}

impl TestHub {
    pub async fn start(hub_extra: &str, extra: &str) -> TestHub {
        TestHub::start_with_env(hub_extra, extra, &[]).await
    }

    /// Like `start`, with extra environment variables for the hub.
    pub async fn start_with_env(hub_extra: &str, extra: &str, env: &[(&str, &str)]) -> TestHub {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, hub_port) = (free_port(), free_port());
        let config = dir.path().join("jupyterhub.toml");
        std::fs::write(
            &config,
            config_text(port, hub_port, dir.path(), hub_extra, extra),
        )
        .expect("write config");
        let mut hub = TestHub {
            url: format!("http://127.0.0.1:{port}"),
            config,
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        hub.launch().await;
        hub
    }

    pub async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("hub.log"))
            .expect("log file");
        let child = Command::new(BIN)
            .arg("-f")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .env("JUPYTERHUB_LOG", "info")
            .env_remove("JPY_COOKIE_SECRET")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start jupyterhub");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = Client::new();
        loop {
            if let Ok(r) = client.get(format!("{}/hub/api/", self.url)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("jupyterhub exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "hub did not come up:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hub.log")).unwrap_or_default()
    }

    /// Run `jupyterhub ARGS -f CONFIG` and return its output.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .arg("-f")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run cli")
    }

    /// A token with every scope, for the configured admin.
    pub fn token(&self, user: &str, scopes: &[&str]) -> String {
        let mut args = vec!["token", user];
        if !scopes.is_empty() {
            args.push("--scopes");
            args.extend_from_slice(scopes);
        }
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    }

    pub fn admin_token(&self) -> String {
        self.token("admin", &[])
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/hub/api{path}", self.url)
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client that keeps cookies and does not follow redirects (to see them).
pub fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Call the API with a token; returns status and JSON body (Null when empty).
pub async fn call(
    hub: &TestHub,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let client = Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client
        .request(method, hub.api(path))
        .header("Authorization", format!("token {token}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// Log in through the form like a browser; returns the client holding the cookies.
pub async fn login(hub: &TestHub, user: &str, password: &str) -> (Client, Response) {
    let client = browser();
    let form = client
        .get(format!("{}/hub/login", hub.url))
        .send()
        .await
        .expect("login page");
    assert_eq!(form.status(), StatusCode::OK);
    let html = form.text().await.expect("html");
    let xsrf = extract_xsrf(&html);
    let response = client
        .post(format!("{}/hub/login", hub.url))
        .form(&[
            ("username", user),
            ("password", password),
            ("_xsrf", xsrf.as_str()),
        ])
        .send()
        .await
        .expect("login post");
    (client, response)
}

pub fn extract_xsrf(html: &str) -> String {
    let marker = "name=\"_xsrf\" value=\"";
    let start = html
        .find(marker)
        .map(|i| i + marker.len())
        .expect("xsrf field in page");
    html[start..].split('"').next().expect("value").to_owned()
}

/// The xsrf token the hub embeds in pages for scripts.
pub async fn page_xsrf(client: &Client, url: &str) -> String {
    let html = client
        .get(url)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    let marker = "\"xsrf_token\": \"";
    let start = html
        .find(marker)
        .map(|i| i + marker.len())
        .expect("xsrf in jhdata");
    html[start..].split('"').next().expect("value").to_owned()
}

/// The system user local-spawner tests run servers as when the tests run as root
/// (`tests/run.sh` creates it); otherwise servers run as the current user.
pub fn server_user() -> String {
    if nix::unistd::geteuid().is_root() {
        let name = std::env::var("E2E_USER").unwrap_or_else(|_| "jh-e2e".into());
        assert!(
            nix::unistd::User::from_name(&name).ok().flatten().is_some(),
            "system user {name} is missing: run `useradd -m {name}` (tests/run.sh does)"
        );
        name
    } else {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .expect("current user")
    }
}

/// `[Spawner]` settings that run the stub single-user server (tests/fixtures), copied where
/// any user can read it.
pub fn stub_spawner_config() -> String {
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stub_singleuser.py");
    let target = std::env::temp_dir().join("jupyterhub-rs-stub_singleuser.py");
    std::fs::copy(&source, &target).expect("copy stub");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod stub");
    format!(
        "[Spawner]\ncmd = [\"/usr/bin/python3\", \"{}\"]\nhttp_timeout = 20\nstart_timeout = 20\n",
        target.display()
    )
}

/// A venv with `jupyterhub` (5.3), `jupyterlab` and `jupyterhub-idle-culler` from PyPI.
pub fn singleuser_venv() -> PathBuf {
    let venv = PathBuf::from(
        std::env::var("SINGLEUSER_VENV")
            .unwrap_or_else(|_| "/var/cache/jupyterhub-rs-tests/venv-5.3".into()),
    );
    assert!(
        venv.join("bin/jupyterhub-singleuser").exists() && venv.join("lib").exists(),
        "{} lacks jupyterhub-singleuser: run `bash tests/run.sh`, which creates it",
        venv.display()
    );
    venv
}
