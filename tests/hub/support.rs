//! Test harness: runs the real `jupyterhub` binary in a temporary directory and drives it
//! over HTTP. The harness binds the hub's two listeners itself and hands them over by socket
//! activation (so no port is ever picked and then lost to another test, and a restarted hub
//! keeps its ports), and waits for the hub's `READY=1` on a notify socket it owns. The
//! process is killed when the `TestHub` is dropped.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use tokio::net::UnixDatagram;

#[path = "../common/port.rs"]
mod port;
#[path = "../common/root.rs"]
mod root;
pub use port::reserve_port;
pub use root::require_root;

pub const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub");

/// How long a hub may take from exec to `READY=1` (migrations, reconcile) or to exit.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TestHub {
    pub url: String,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
    /// Extra environment for the hub process (e.g. JUPYTERHUB_CRYPT_KEY).
    pub env: Vec<(String, String)>,
    /// Extra arguments for the hub process (e.g. `--dev`).
    pub args: Vec<String>,
    /// A soft open-file limit to start the hub with (the hard one stays).
    pub open_files_soft: Option<u64>,
    /// The public (`http`) and internal (`hub`) listeners, open for the `TestHub`'s whole
    /// life: every launch gets the same two, as systemd keeps a socket unit's across restarts.
    listeners: [TcpListener; 2],
    /// A third, plain-HTTP listener (`redirect`) for a hub with `[LetsEncrypt]`.
    redirect: Option<TcpListener>,
    /// Where the running hub sends `READY=1`, `STATUS=` and `STOPPING=1`; kept open so its
    /// later notifications do not fail.
    notify: Option<UnixDatagram>,
    child: Option<tokio::process::Child>,
}

/// A config with the dummy authenticator, the local spawner, `admin` as admin, and `extra`
/// appended (extra sections must not repeat `[JupyterHub]`; use `hub_extra` for that).
/// Port 0 is right for a hub that is expected to refuse to start; `TestHub` writes the
/// ports of the listeners it hands over.
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

fn bind_local() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind a listener for the hub")
}

fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().expect("listener address").port()
}

impl TestHub {
    pub async fn start(hub_extra: &str, extra: &str) -> TestHub {
        TestHub::start_with_env(hub_extra, extra, &[]).await
    }

    /// Like `start`, with extra environment variables for the hub.
    pub async fn start_with_env(hub_extra: &str, extra: &str, env: &[(&str, &str)]) -> TestHub {
        let mut hub = TestHub::prepare(hub_extra, extra, env);
        hub.launch().await;
        hub
    }

    /// The directory, config and listeners of a hub, not launched yet (`launch` starts it).
    pub fn prepare(hub_extra: &str, extra: &str, env: &[(&str, &str)]) -> TestHub {
        TestHub::prepare_on(hub_extra, extra, env, None)
    }

    fn prepare_on(
        hub_extra: &str,
        extra: &str,
        env: &[(&str, &str)],
        public: Option<TcpListener>,
    ) -> TestHub {
        let dir = tempfile::tempdir().expect("tempdir");
        let listeners = [public.unwrap_or_else(bind_local), bind_local()];
        let (port, hub_port) = (port_of(&listeners[0]), port_of(&listeners[1]));
        // The hub serves on the sockets it is handed; the config names the same ports so
        // that what it derives from them (hub_bind_url in the proxy's route list) is true.
        let config = dir.path().join("jupyterhub.toml");
        std::fs::write(
            &config,
            config_text(port, hub_port, dir.path(), hub_extra, extra),
        )
        .expect("write config");
        TestHub {
            url: format!("http://127.0.0.1:{port}"),
            config,
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: Vec::new(),
            open_files_soft: None,
            listeners,
            redirect: None,
            notify: None,
            child: None,
        }
    }

    /// Like `start`, with the database at `db` instead of in the hub's directory.
    pub async fn start_with_db(db: &Path) -> TestHub {
        let mut hub = TestHub::prepare("", "", &[]);
        let text = std::fs::read_to_string(&hub.config).expect("read config");
        let default = format!(
            "sqlite:///{}",
            hub.dir.path().join("jupyterhub.sqlite").display()
        );
        assert!(text.contains(&default), "{text}");
        let text = text.replace(&default, &format!("sqlite:///{}", db.display()));
        std::fs::write(&hub.config, text).expect("write config");
        hub.launch().await;
        hub
    }

    /// Like `start_with_env`, with a third listener handed over as `redirect` (the plain-HTTP
    /// port beside an ACME-certified public port).
    pub async fn start_with_redirect(
        hub_extra: &str,
        extra: &str,
        env: &[(&str, &str)],
        redirect: TcpListener,
    ) -> TestHub {
        TestHub::start_with_listeners(hub_extra, extra, env, None, Some(redirect)).await
    }

    /// Like `start_with_env`, on a public listener the caller bound (when another program
    /// must know its port first), and with an optional `redirect` listener.
    pub async fn start_with_listeners(
        hub_extra: &str,
        extra: &str,
        env: &[(&str, &str)],
        public: Option<TcpListener>,
        redirect: Option<TcpListener>,
    ) -> TestHub {
        let mut hub = TestHub::prepare_on(hub_extra, extra, env, public);
        hub.redirect = redirect;
        hub.launch().await;
        hub
    }

    /// The internal API port's URL (the same hub router as the public port, plain HTTP).
    pub fn internal_url(&self) -> String {
        format!("http://127.0.0.1:{}", port_of(&self.listeners[1]))
    }

    /// The public port's number.
    pub fn public_port(&self) -> u16 {
        port_of(&self.listeners[0])
    }

    /// A hub run with `--dev` (which makes `admin` an admin itself: the config names none),
    /// with `extra` config and environment.
    pub async fn start_dev(extra: &str, env: &[(&str, &str)]) -> TestHub {
        let mut hub = TestHub::prepare("", extra, env);
        let text = std::fs::read_to_string(&hub.config).expect("read config");
        let text = text.replace("admin_users = [\"admin\"]", "admin_users = []");
        std::fs::write(&hub.config, text).expect("write config");
        hub.args = vec!["--dev".into()];
        hub.launch().await;
        hub
    }

    /// Start the hub process on the harness's listeners and return once it has said
    /// `READY=1` (listeners served, database open, servers reconciled).
    pub async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("hub.log"))
            .expect("log file");
        // A fresh socket per launch: nothing a previous process sent can be taken for this
        // one's readiness.
        let notify_path = self.dir.path().join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
        // LISTEN_PID must be the hub's own pid, which only the child knows: a shell sets it
        // to its own (`$$`) and execs the hub, which keeps that pid.
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
            .arg(BIN)
            .arg("-f")
            .arg(&self.config)
            .args(&self.args)
            .current_dir(self.dir.path())
            .env("JUPYTERHUB_LOG", "info")
            .env_remove("JPY_COOKIE_SECRET")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "LISTEN_FDS",
                if self.redirect.is_some() { "3" } else { "2" },
            )
            .env(
                "LISTEN_FDNAMES",
                if self.redirect.is_some() {
                    "http:hub:redirect"
                } else {
                    "http:hub"
                },
            )
            .env_remove("LISTEN_PID")
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(soft) = self.open_files_soft {
            lower_open_files(&mut command, soft);
        }
        let mut fds = vec![self.listeners[0].as_raw_fd(), self.listeners[1].as_raw_fd()];
        fds.extend(self.redirect.as_ref().map(|l| l.as_raw_fd()));
        pass_listeners(&mut command, fds);
        let mut child = tokio::process::Command::from(command)
            .spawn()
            .expect("start jupyterhub");
        let deadline = tokio::time::sleep(START_TIMEOUT);
        tokio::pin!(deadline);
        let mut buffer = [0u8; 4096];
        loop {
            tokio::select! {
                received = notify.recv(&mut buffer) => {
                    let n = received.expect("read the notify socket");
                    let message = String::from_utf8_lossy(&buffer[..n]);
                    if message.lines().any(|line| line == "READY=1") {
                        break;
                    }
                }
                status = child.wait() => {
                    panic!("jupyterhub exited early ({status:?}):\n{}", self.log());
                }
                () = &mut deadline => {
                    let _ = child.start_kill();
                    panic!(
                        "hub did not report READY=1 within {START_TIMEOUT:?}:\n{}",
                        self.log()
                    );
                }
            }
        }
        self.notify = Some(notify);
        self.child = Some(child);
    }

    /// Wait up to `within` for the hub to exit on its own (e.g. after `POST /shutdown`).
    pub async fn exited(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the hub was launched");
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => {
                self.child = None;
                status.expect("wait for jupyterhub")
            }
            Err(_) => panic!("hub still running {within:?} later:\n{}", self.log()),
        }
    }

    /// SIGTERM, without waiting for the exit.
    pub fn terminate(&self) {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| c.id())
            .expect("the hub runs");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM the hub");
    }

    /// The running hub's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .expect("the hub runs")
    }

    /// The internal listener's address (`hub_bind_url`), `127.0.0.1:PORT`.
    pub fn internal_addr(&self) -> String {
        format!("127.0.0.1:{}", port_of(&self.listeners[1]))
    }

    /// SIGTERM, as systemd stops the hub; SIGKILL if it has not exited 10 s later.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        // Synchronous (Drop calls it), so the exit is polled rather than awaited.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
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
    let response = login_with(hub, &client, user, password).await;
    (client, response)
}

/// The login form's GET (for its XSRF token) and POST, with a client of the caller's (e.g.
/// one bound to another source address).
pub async fn login_with(hub: &TestHub, client: &Client, user: &str, password: &str) -> Response {
    let form = client
        .get(format!("{}/hub/login", hub.url))
        .send()
        .await
        .expect("login page");
    assert_eq!(form.status(), StatusCode::OK);
    let html = form.text().await.expect("html");
    let xsrf = extract_xsrf(&html);
    client
        .post(format!("{}/hub/login", hub.url))
        .form(&[
            ("username", user),
            ("password", password),
            ("_xsrf", xsrf.as_str()),
        ])
        .send()
        .await
        .expect("login post")
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
    format!(
        "[Spawner]\ncmd = [\"/usr/bin/python3\", \"{}\"]\nhttp_timeout = 20\nstart_timeout = 20\n",
        stub_path().display()
    )
}

/// The stub single-user server (tests/fixtures), copied where any user can read it.
pub fn stub_path() -> PathBuf {
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stub_singleuser.py");
    let target = std::env::temp_dir().join("jupyterhub-rs-stub_singleuser.py");
    std::fs::copy(&source, &target).expect("copy stub");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod stub");
    target
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

/// Read a child's output on a thread until `count` lines have contained `needle` (a program
/// saying it is listening), failing the test with what was read if they do not come within
/// `within` or the output ends first. The rest is read and dropped, so the child never blocks
/// on a full pipe.
pub fn wait_for_lines(
    output: impl std::io::Read + Send + 'static,
    needle: &'static str,
    count: usize,
    within: Duration,
) {
    use std::io::BufRead as _;
    let (seen_tx, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut matched, mut read) = (0, String::new());
        for line in std::io::BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if matched < count {
                read.push_str(&line);
                read.push('\n');
                if line.contains(needle) {
                    matched += 1;
                    if matched == count {
                        let _ = seen_tx.send(Ok(()));
                    }
                }
            }
        }
        if matched < count {
            let _ = seen_tx.send(Err(read));
        }
    });
    match seen.recv_timeout(within) {
        Ok(Ok(())) => {}
        Ok(Err(read)) => panic!("output ended before {count} × {needle:?}:\n{read}"),
        Err(_) => panic!("no {count} × {needle:?} within {within:?}"),
    }
}

/// Start the child with a soft open-file limit of `soft`.
#[allow(unsafe_code)]
fn lower_open_files(command: &mut Command, soft: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use std::os::unix::process::CommandExt;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
    // which is async-signal-safe, allocating nothing.
    unsafe {
        command.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard).map_err(std::io::Error::from)
        });
    }
}

/// Put `fds` at 3, 4, … in the child, where socket activation expects them (`LISTEN_FDS`).
#[allow(unsafe_code)]
fn pass_listeners(command: &mut Command, fds: Vec<RawFd>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec. It only calls fcntl and
    // dup2, which are async-signal-safe, and allocates nothing (an OS error is a plain code).
    unsafe {
        command.pre_exec(move || {
            // First above every target (close-on-exec, so they vanish at exec), then into
            // place: one listener may sit where the other must go, and dup2 onto the same
            // number would leave close-on-exec set.
            let mut high = [0; 3];
            let high = &mut high[..fds.len()];
            for (slot, &fd) in high.iter_mut().zip(&fds) {
                *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if *slot < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (target, &fd) in (3..).zip(high.iter()) {
                if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Wait (30 s at most) until `user`'s server `server` is ready; returns the user's model.
pub async fn wait_ready(hub: &TestHub, token: &str, user: &str, server: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, model) = call(hub, "GET", &format!("/users/{user}"), token, None).await;
        if model["servers"][server]["ready"] == true {
            return model;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server {user}/{server} not ready: {model}\n{}",
            hub.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
