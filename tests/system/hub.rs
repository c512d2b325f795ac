//! The whole hub (root, `systemd` spawner) as a `Type=notify` unit of a contained systemd,
//! driven over its REST API and public port from outside (the network namespace is shared):
//! user servers survive `kill -9` of the hub and are picked up again before it reports ready;
//! stray `jupyter-*` units are reported and left alone; a unit that dies on its own loses its
//! route and keeps its reason; an admin reads a server's memory (its cgroup's) against its
//! limit, its journal (followed live) and "out of memory" once the kernel kills it; a
//! profile's limits and properties are its unit's; a unit a hub killed mid-spawn started
//! but never recorded is stopped at the next start; `kill -9` at random moments of spawns
//! and stops loses no user, token or server and leaves no unit orphaned;
//! `concurrent_spawn_limit` holds with 20 real users at once; with `freeze_idle_after`, an
//! idle server's unit is frozen (a busy one is not) and the next request thaws it (or, where the host's cgroups
//! cannot freeze, the hub logs systemd's refusal once and the server keeps serving).
//! Needs root (fails, saying so, otherwise).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Contained, ReservedPort, ensure_user, reserve_port, shared_dir};

const CGROUP_NAME: &str = "sdtest-hub";
pub(crate) const HUB_UNIT: &str = "jupyterhub-systest.service";
/// Started by hand before the hub, unknown to its database.
const STRAY_UNIT: &str = "jupyter-stray-x.service";
/// `concurrent_spawn_limit` of the test hub.
const SPAWN_LIMIT: usize = 5;
/// How many real users fire a spawn at once.
const CROWD: usize = 20;

/// The crowd user whose server has a memory limit of its own (`LIMITED_MEMORY`).
const LIMITED_USER: usize = 4;
const LIMITED_MEMORY: &str = "96M";

fn crowd_user(i: usize) -> String {
    format!("jh-sys-{i:02}")
}

/// The unit the spawner gives a user's default server (`-` is escaped inside a component).
pub(crate) fn server_unit(user: &str) -> String {
    format!("jupyter-{}-singleuser.service", user.replace('-', "\\x2d"))
}

/// Files handed to the container, removed on drop (also on panic).
struct Workspace {
    dir: PathBuf,
    bin: PathBuf,
    stub: PathBuf,
    /// The managed service's program (tests/fixtures/env_service.py).
    service: PathBuf,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.bin);
        let _ = std::fs::remove_file(&self.stub);
        let _ = std::fs::remove_file(&self.service);
    }
}

/// The test's system users, removed (with their homes) on drop; declared before the
/// contained systemd so they outlive every process that runs as them.
pub(crate) struct Users(pub(crate) Vec<String>);

impl Drop for Users {
    fn drop(&mut self) {
        for user in &self.0 {
            let _ = Command::new("userdel")
                .args(["--remove", user])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

pub(crate) struct Hub<'a> {
    pub(crate) sd: &'a Contained,
    work: Workspace,
    pub(crate) config: PathBuf,
    /// Pre-spawn hooks wait while this file is missing, which holds spawns pending.
    gate: PathBuf,
    pub(crate) public: String,
    /// The hub's two ports, held for the hub's whole life (it restarts on them).
    _ports: (ReservedPort, ReservedPort),
    pub(crate) token: String,
    pub(crate) http: reqwest::Client,
    /// The managed service's port, held until it binds it.
    service_port: ReservedPort,
}

/// Where `set_services` cuts the config: services go last.
const SERVICES_MARK: &str = "\n# managed services\n";
pub(crate) const SERVICE_UNIT: &str = "jupyterhub-service-echo.service";
const SERVICE_TOKEN: &str = "systest-echo-service-secret";

impl<'a> Hub<'a> {
    pub(crate) fn new(sd: &'a Contained) -> Hub<'a> {
        use std::os::unix::fs::PermissionsExt as _;
        let shared = shared_dir();
        let id = std::process::id();
        let dir = shared.join(format!("hub-{id}"));
        let work = Workspace {
            bin: shared.join(format!("jupyterhub-{id}")),
            stub: shared.join(format!("stub_singleuser-{id}.py")),
            service: shared.join(format!("env_service-{id}.py")),
            dir: dir.clone(),
        };
        std::fs::create_dir_all(&dir).expect("hub dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::copy(env!("CARGO_BIN_EXE_jupyterhub"), &work.bin).expect("copy the hub");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stub_singleuser.py"),
            &work.stub,
        )
        .expect("copy the stub server");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/env_service.py"),
            &work.service,
        )
        .expect("copy the service");
        // Servers run as the users, services as dynamic users: both must read their programs.
        for program in [&work.stub, &work.service] {
            std::fs::set_permissions(program, std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        // Held until the hub binds them (with SO_REUSEADDR), so nothing else takes them.
        let ports = (reserve_port(), reserve_port());
        let (port, hub_port) = (ports.0.port, ports.1.port);
        let token = format!("systest-admin-{id}-{port}");
        let gate = dir.join("gate");
        std::fs::write(&gate, "").expect("open the gate");
        let config = dir.join("jupyterhub.toml");
        let text = format!(
            r#"[JupyterHub]
ip = "127.0.0.1"
port = {port}
hub_bind_url = "http://127.0.0.1:{hub_port}"
db_url = "sqlite:///{db}"
cookie_secret_file = "{secret}"
spawner_class = "systemd"
authenticator_class = "dummy"
concurrent_spawn_limit = {SPAWN_LIMIT}
slow_spawn_timeout = 0.5
api_tokens = {{ "{token}" = "admin" }}

[Authenticator]
admin_users = ["admin"]

[Spawner]
cmd = ["/usr/bin/python3", "{stub}"]
pre_spawn_hook = ["/bin/sh", "-c", "while [ ! -e {gate} ]; do sleep 0.1; done", "hook"]
start_timeout = 60
http_timeout = 60
# Exits must be noticed through systemd's signals, not a periodic poll.
poll_interval = 3600

[Spawner.user_limits."{limited}"]
mem_limit = "{LIMITED_MEMORY}"

# The default profile changes nothing; "tiny" sets the unit's limits and a property.
[[Spawner.profiles]]
slug = "standard"
default = true

[[Spawner.profiles]]
slug = "tiny"
mem_limit = "48M"
cpu_limit = 0.5
unit_extra_properties = ["IOWeight=42"]
"#,
            limited = crowd_user(LIMITED_USER),
            db = dir.join("jupyterhub.sqlite").display(),
            secret = dir.join("cookie_secret").display(),
            stub = work.stub.display(),
            gate = gate.display(),
        );
        std::fs::write(&config, text).expect("write config");
        Hub {
            sd,
            work,
            config,
            gate,
            public: format!("http://127.0.0.1:{port}"),
            _ports: ports,
            token,
            service_port: reserve_port(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    /// Start the hub as a `Type=notify` unit. `systemd-run` returns once the start job is
    /// done, which for `Type=notify` is when the hub sent READY=1.
    pub(crate) fn start(&self) {
        self.start_with(&[]);
    }

    /// As `start`, with more `systemd-run` flags (`--no-block`: return at once).
    pub(crate) fn start_with(&self, flags: &[&str]) {
        // A previous, killed run leaves the unit failed and its name taken.
        self.sd.run(&["systemctl", "reset-failed", HUB_UNIT]);
        let output = self
            .sd
            .nsenter()
            .arg("systemd-run")
            .args(flags)
            .args([
                "--unit",
                HUB_UNIT,
                "--property=Type=notify",
                "--property=NotifyAccess=main",
                "--setenv=JUPYTERHUB_LOG=info",
            ])
            .arg(&self.work.bin)
            .arg("-f")
            .arg(&self.config)
            .output()
            .expect("systemd-run");
        assert!(
            output.status.success(),
            "the hub did not start: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.journal()
        );
    }

    /// The hub's SQLite database.
    pub(crate) fn db_path(&self) -> PathBuf {
        self.work.dir.join("jupyterhub.sqlite")
    }

    pub(crate) fn main_pid(&self) -> String {
        self.sd.prop(HUB_UNIT, "MainPID")
    }

    /// Replace the config's managed services with `services` (TOML).
    pub(crate) fn set_services(&self, services: &str) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let base = text.split(SERVICES_MARK).next().unwrap_or(&text).to_owned();
        std::fs::write(&self.config, format!("{base}{SERVICES_MARK}{services}"))
            .expect("write config");
    }

    /// The echo service, with `extra` config lines.
    pub(crate) fn echo_service(&self, extra: &str) -> String {
        format!(
            "[[JupyterHub.services]]\nname = \"echo\"\nurl = \"http://127.0.0.1:{port}\"\n\
             api_token = \"{SERVICE_TOKEN}\"\ncommand = [\"/usr/bin/python3\", \"{script}\"]\n\
             mem_limit = \"256M\"\n{extra}\n",
            port = self.service_port.port,
            script = self.work.service.display(),
        )
    }

    /// Stop the hub cleanly (as `systemctl restart` does) and start it again.
    pub(crate) fn restart(&self) {
        self.sd.run_ok(&["systemctl", "stop", HUB_UNIT]);
        self.start();
    }

    /// What the echo service answers through the proxy, once its pid is not `not_pid`.
    pub(crate) async fn echo_answer(&self, not_pid: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = self
                .http
                .get(format!("{}/services/echo/", self.public))
                .send()
                .await
                && response.status() == StatusCode::OK
                && let Ok(body) = response.json::<Value>().await
                && body["pid"].as_u64().map(|p| p.to_string()).as_deref() != Some(not_pid)
            {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "the echo service never answered:\n{}\n{}",
                self.journal(),
                self.sd
                    .run(&["journalctl", "--no-pager", "-u", SERVICE_UNIT])
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The hub's log, for failure messages.
    pub(crate) fn journal(&self) -> String {
        self.sd.run(&["journalctl", "--no-pager", "-u", HUB_UNIT])
    }

    /// The hub's structured log entries from process `pid`, as the journal keeps them.
    pub(crate) fn entries(&self, pid: &str) -> Vec<Value> {
        self.sd
            .run(&[
                "journalctl",
                "--no-pager",
                "-o",
                "json",
                &format!("_PID={pid}"),
            ])
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait until the hub process `pid` logged an entry matching `matches`; all its entries.
    pub(crate) async fn wait_for_entry(
        &self,
        pid: &str,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let entries = self.entries(pid);
            if entries.iter().any(&matches) {
                return entries;
            }
            assert!(
                Instant::now() < deadline,
                "the hub never logged {what}:\n{}",
                self.journal()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(crate) fn api(&self, path: &str) -> String {
        format!("{}/hub/api{path}", self.public)
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .request(method, self.api(path))
            .header("Authorization", format!("token {}", self.token));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request to the hub");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let (status, _, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// The default server's model of `user`, `None` when it is not active.
    pub(crate) async fn server(&self, user: &str) -> Option<Value> {
        let model = self.get(&format!("/users/{user}")).await;
        model["servers"].get("").cloned()
    }

    /// Start `user`'s default server (201 or 202) and wait until it is ready.
    pub(crate) async fn spawn(&self, user: &str) -> Value {
        let (status, _, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/users/{user}/server"),
                None,
            )
            .await;
        assert!(matches!(status.as_u16(), 201 | 202), "{status} {body}");
        self.wait_ready(user).await
    }

    pub(crate) async fn wait_ready(&self, user: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(server) = self.server(user).await
                && server["ready"] == json!(true)
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "{user}'s server never became ready:\n{}",
                self.journal()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(crate) async fn wait_stopped(&self, user: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.server(user).await.is_some() {
            assert!(
                Instant::now() < deadline,
                "{user}'s server never stopped:\n{}",
                self.journal()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(crate) async fn routes(&self) -> Value {
        self.get("/proxy").await
    }

    /// A request through the public port (the proxy) to the user's server.
    pub(crate) async fn through_proxy(&self, user: &str) -> (StatusCode, Value) {
        self.through_proxy_path(user, "api").await
    }

    /// A request for `path` under the user's server, through the proxy.
    pub(crate) async fn through_proxy_path(&self, user: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/user/{user}/{path}", self.public))
            .header("Authorization", format!("token {}", self.token))
            .send()
            .await
            .expect("request through the proxy");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// How many servers the hub reports pending a spawn right now.
    pub(crate) async fn pending_spawns(&self) -> usize {
        let users = self.get("/users?limit=200").await;
        let users = users
            .as_array()
            .cloned()
            .or_else(|| users["items"].as_array().cloned())
            .expect("a user list");
        users
            .iter()
            .filter_map(|u| u["servers"].as_object())
            .flat_map(|servers| servers.values())
            .filter(|s| s["pending"] == json!("spawn"))
            .count()
    }
}

/// One contained systemd and one hub for every scenario, in order: each builds on the state
/// the previous one left (a running server, a killed hub).
#[test]
fn hub_with_systemd_spawner() {
    crate::harness::require_root("the hub system tests boot a contained systemd and add users");
    let _serial = crate::harness::serial();
    let users = Users((1..=CROWD).map(crowd_user).collect());
    for user in &users.0 {
        ensure_user(user);
    }
    let sd = Contained::boot(CGROUP_NAME);
    let hub = Hub::new(&sd);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            stray_units_are_reported_and_left_alone(&hub).await;
            servers_survive_kill_9_of_the_hub(&hub).await;
            a_unit_that_dies_loses_its_route_and_keeps_the_reason(&hub).await;
            admins_read_live_use_logs_and_out_of_memory(&hub).await;
            a_profile_sets_the_units_limits(&hub).await;
            concurrent_spawn_limit_holds(&hub).await;
            a_unit_started_but_never_recorded_is_stopped(&hub).await;
            kill_9_at_random_points_of_spawns_and_stops_loses_nothing(&hub).await;
            managed_services_are_units_that_outlive_the_hub(&hub).await;
        });
    sd.run(&["systemctl", "stop", HUB_UNIT]);
}

/// `freeze_idle_after = 2` on a hub of its own: the idle server's unit is frozen (systemd's
/// `FreezerState`, and `frozen` in the API), and a request through the proxy is answered by
/// it, thawed, without a new spawn. Where this host's cgroups cannot freeze (cgroup v1 or
/// hybrid), systemd's own refusal must be in the hub's log, freezing off, the server
/// unfrozen and serving: which of the two is decided by the host, and both are checked.
#[test]
fn idle_servers_are_frozen_and_thawed_by_a_request() {
    crate::harness::require_root(
        "the freeze system test boots a contained systemd and adds a user",
    );
    let _serial = crate::harness::serial();
    let user = "jh-sys-frozen".to_owned();
    let _users = Users(vec![user.clone()]);
    ensure_user(&user);
    let sd = Contained::boot("sdtest-freeze");
    let hub = Hub::new(&sd);
    let text = std::fs::read_to_string(&hub.config).expect("read config");
    std::fs::write(
        &hub.config,
        format!("{text}\n[SystemdSpawner]\nfreeze_idle_after = 2\n"),
    )
    .expect("write config");
    let unit = server_unit(&user);
    let can_freeze = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            hub.start();
            let pid = hub.main_pid();
            let (status, _, body) = hub
                .call(
                    reqwest::Method::POST,
                    "/users",
                    Some(json!({"usernames": [user]})),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let server = hub.spawn(&user).await;
            assert_eq!(server["frozen"], json!(false), "{server}");
            let main_pid = hub.sd.prop(&unit, "ExecMainPID");
            // Computing without requests (a kernel with no browser attached) is not idle:
            // 5 s without a request, 3 s past freeze_idle_after, and not frozen (nor tried).
            // The hub tells by the unit's CPUUsageNSec, which a cgroup v2 host always has;
            // where systemd cannot account CPU (this contained systemd on a v1 or hybrid
            // host says "[not set]") the hub cannot tell, and this part cannot be checked.
            let cpu_known = hub.sd.prop(&unit, "CPUUsageNSec") != "[not set]";
            assert!(
                cpu_known || !can_freeze,
                "no CPU accounting on a host that can freeze"
            );
            if cpu_known {
                let (status, answer) = hub.through_proxy_path(&user, "spin?seconds=7").await;
                assert_eq!(status, StatusCode::OK, "{answer}");
                tokio::time::sleep(Duration::from_secs(5)).await;
                assert_eq!(hub.sd.prop(&unit, "FreezerState"), "running");
                let tried = |e: &Value| {
                    e["MESSAGE"].as_str().is_some_and(|m| {
                        ["server frozen", "cannot freeze", "could not freeze"]
                            .iter()
                            .any(|w| m.contains(w))
                    })
                };
                let early: Vec<Value> =
                    hub.entries(&pid).into_iter().filter(|e| tried(e)).collect();
                assert!(early.is_empty(), "a busy server was frozen: {early:?}");
            } else {
                eprintln!("CPUUsageNSec is not set here: the busy-server check cannot run");
            }
            if can_freeze {
                let deadline = Instant::now() + Duration::from_secs(30);
                while hub.sd.prop(&unit, "FreezerState") != "frozen" {
                    assert!(
                        Instant::now() < deadline,
                        "the idle server was never frozen:\n{}",
                        hub.journal()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let server = hub.server(&user).await.expect("still active");
                assert_eq!(server["frozen"], json!(true), "{server}");
                assert_eq!(server["ready"], json!(true), "{server}");
                let asked = Instant::now();
                let (status, answer) = hub.through_proxy(&user).await;
                let took = asked.elapsed();
                assert_eq!(status, StatusCode::OK, "{answer}");
                assert_eq!(answer["user"], json!(user), "{answer}");
                // A thaw, not a cold start: well under the stub's own start-up.
                assert!(
                    took < Duration::from_secs(2),
                    "the thawed answer took {took:?}"
                );
                assert_eq!(hub.sd.prop(&unit, "FreezerState"), "running");
                let server = hub.server(&user).await.expect("still active");
                assert_eq!(server["frozen"], json!(false), "{server}");
            } else {
                let refused = |e: &Value| {
                    e["MESSAGE"]
                        .as_str()
                        .is_some_and(|m| m.contains("cannot freeze servers"))
                        && e["ERROR"]
                            .as_str()
                            .is_some_and(|m| m.contains("does not support freezing"))
                };
                let entries = hub
                    .wait_for_entry(&pid, "systemd's refusal to freeze", refused)
                    .await;
                let refusal = entries.iter().find(|e| refused(e)).expect("found");
                assert_eq!(
                    refusal["ERROR"],
                    json!(format!(
                        "FreezeUnit: Unit '{unit}' does not support freezing."
                    )),
                    "{refusal}"
                );
                // Tried once, then off: two more passes' worth of time, still one entry.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let tries = hub.entries(&pid).iter().filter(|e| refused(e)).count();
                assert_eq!(tries, 1, "freezing was tried again after the refusal");
                assert_eq!(hub.sd.prop(&unit, "FreezerState"), "running");
                let server = hub.server(&user).await.expect("still active");
                assert_eq!(server["frozen"], json!(false), "{server}");
                let (status, answer) = hub.through_proxy(&user).await;
                assert_eq!(status, StatusCode::OK, "{answer}");
                assert_eq!(answer["user"], json!(user), "{answer}");
            }
            assert_eq!(
                hub.sd.prop(&unit, "ExecMainPID"),
                main_pid,
                "the same process answered, not a new spawn"
            );
            let (status, _, body) = hub
                .call(
                    reqwest::Method::DELETE,
                    &format!("/users/{user}/server"),
                    None,
                )
                .await;
            assert!(matches!(status.as_u16(), 202 | 204), "{status} {body}");
            hub.wait_stopped(&user).await;
        });
    sd.run(&["systemctl", "stop", HUB_UNIT]);
}

async fn stray_units_are_reported_and_left_alone(hub: &Hub<'_>) {
    hub.sd.run_ok(&[
        "systemd-run",
        "--unit",
        STRAY_UNIT,
        "/bin/sleep",
        "infinity",
    ]);
    hub.start();
    let pid = hub.main_pid();
    let warned = |e: &Value| e["UNIT"] == json!(STRAY_UNIT) && e["PRIORITY"] == json!("4");
    hub.wait_for_entry(&pid, "a warning about the stray unit", warned)
        .await;
    assert_eq!(
        hub.sd.prop(STRAY_UNIT, "ActiveState"),
        "active",
        "the stray unit was touched"
    );
    let (status, _, users) = hub.call(reqwest::Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !users.to_string().contains("stray"),
        "a stray unit became a user: {users}"
    );
}

async fn servers_survive_kill_9_of_the_hub(hub: &Hub<'_>) {
    let user = crowd_user(1);
    let unit = server_unit(&user);
    let (status, _, body) = hub
        .call(
            reqwest::Method::POST,
            "/users",
            Some(json!({"usernames": (1..=CROWD).map(crowd_user).collect::<Vec<_>>()})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let server = hub.spawn(&user).await;
    assert_eq!(server["state"]["unit"], json!(unit), "{server}");
    let invocation = hub.sd.prop(&unit, "InvocationID");
    let main_pid = hub.sd.prop(&unit, "ExecMainPID");
    assert!(
        !invocation.is_empty() && main_pid != "0",
        "{invocation} {main_pid}"
    );
    let (status, answer) = hub.through_proxy(&user).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["user"], json!(user), "{answer}");

    // kill -9: no shutdown path runs; the unit keeps running on its own.
    let old_hub = hub.main_pid();
    hub.sd.run_ok(&[
        "systemctl",
        "kill",
        "--kill-who=main",
        "--signal=KILL",
        HUB_UNIT,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while hub.sd.prop(HUB_UNIT, "ActiveState") == "active" {
        assert!(Instant::now() < deadline, "the hub survived SIGKILL");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hub.sd.prop(HUB_UNIT, "Result"), "signal");
    assert!(
        reqwest::get(hub.api("/")).await.is_err(),
        "something still answers on the hub's port"
    );

    hub.start();
    assert_ne!(hub.main_pid(), old_hub);
    // READY=1 came only after reconciling: the server is ready and routed already.
    let server = hub
        .server(&user)
        .await
        .expect("the server is known after the restart");
    assert_eq!(server["ready"], json!(true), "{server}");
    assert_eq!(server["pending"], Value::Null, "{server}");
    let (status, answer) = hub.through_proxy(&user).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["user"], json!(user), "{answer}");
    // Live use, read from systemd: the unit's own MemoryCurrent, and its CPU time.
    let usage = hub.get(&format!("/users/{user}/server/usage")).await;
    let memory = usage["memory_bytes"].as_f64().expect("memory");
    let current: f64 = hub
        .sd
        .prop(&unit, "MemoryCurrent")
        .parse()
        .expect("MemoryCurrent");
    assert!(
        memory > 0.0 && (memory - current).abs() <= current * 0.5,
        "usage {usage} against MemoryCurrent={current}"
    );
    // CPU time as systemd knows it: none where the container gives systemd no CPU figure.
    let systemd_cpu = hub.sd.prop(&unit, "CPUUsageNSec");
    match systemd_cpu.parse::<u64>() {
        Ok(_) => assert!(
            usage["cpu_seconds"].as_f64().is_some_and(|c| c > 0.0),
            "{usage} against CPUUsageNSec={systemd_cpu}"
        ),
        Err(_) => assert_eq!(usage["cpu_seconds"], Value::Null, "{usage} {systemd_cpu}"),
    }
    assert_eq!(usage["spawner"], json!("systemd"));
    // The same process of the same unit run: nothing was spawned again.
    assert_eq!(hub.sd.prop(&unit, "InvocationID"), invocation);
    assert_eq!(hub.sd.prop(&unit, "ExecMainPID"), main_pid);
    assert_eq!(hub.sd.prop(&unit, "ActiveState"), "active");

    // Known units are not reported as strays; the stray one is, again. Units are reported
    // in name order and ours sorts first, so once the stray's warning is in, ours would be.
    let pid = hub.main_pid();
    let entries = hub
        .wait_for_entry(&pid, "a warning about the stray unit", |e| {
            e["UNIT"] == json!(STRAY_UNIT)
        })
        .await;
    let reported: Vec<&Value> = entries
        .iter()
        .filter(|e| e.get("UNIT").is_some() && e["PRIORITY"] == json!("4"))
        .collect();
    assert!(
        reported.iter().all(|e| e["UNIT"] == json!(STRAY_UNIT)),
        "a known unit was reported as a stray: {reported:?}"
    );
    assert_eq!(hub.sd.prop(STRAY_UNIT, "ActiveState"), "active");
}

async fn a_unit_that_dies_loses_its_route_and_keeps_the_reason(hub: &Hub<'_>) {
    let user = crowd_user(1);
    let unit = server_unit(&user);
    let prefix = format!("/user/{user}/");
    assert!(hub.routes().await.get(&prefix).is_some(), "no route before");
    hub.sd
        .run_ok(&["systemctl", "kill", "--signal=TERM", &unit]);
    hub.wait_stopped(&user).await;
    assert!(
        hub.routes().await.get(&prefix).is_none(),
        "the route outlived the server: {}",
        hub.routes().await
    );
    let (status, answer) = hub.through_proxy(&user).await;
    assert_ne!(answer["user"], json!(user), "{status} {answer}");
    // The reason is kept: the progress stream of a stopped server ends with it.
    let response = hub
        .http
        .get(hub.api(&format!("/users/{user}/server/progress")))
        .header("Authorization", format!("token {}", hub.token))
        .send()
        .await
        .expect("progress");
    assert_eq!(response.status(), StatusCode::OK);
    let events = response.text().await.expect("progress body");
    assert!(
        events.contains("\"failed\":true") && events.contains("SIGTERM"),
        "{events}"
    );
}

/// What the admin panel reads (docs/admin-api.md), from systemd: a server's memory in use
/// (its cgroup's) next to its limit, the slice's, its journal as lines and as a followed
/// stream, and, once the kernel kills it for its limit, "out of memory" with its last lines.
async fn admins_read_live_use_logs_and_out_of_memory(hub: &Hub<'_>) {
    let user = crowd_user(LIMITED_USER);
    let unit = server_unit(&user);
    hub.spawn(&user).await;
    let limit: u64 = 96 << 20;
    assert_eq!(hub.sd.prop(&unit, "MemoryMax"), limit.to_string());

    let usage = |overview: &Value| -> Value {
        overview["servers"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["user"] == json!(user)))
            .cloned()
            .unwrap_or_else(|| panic!("no server of {user}: {overview}"))
    };
    let path = format!("/usage?user={user}");
    let overview = hub.get(&path).await;
    let before = usage(&overview);
    assert_eq!(overview["spawner"], json!("systemd"), "{overview}");
    assert_eq!(before["running"], json!(true), "{overview}");
    assert_eq!(before["mem_limit"], json!(limit), "{overview}");
    let memory = before["memory_bytes"].as_u64().expect("memory_bytes");
    let cgroup: u64 = hub
        .sd
        .prop(&unit, "MemoryCurrent")
        .parse()
        .expect("MemoryCurrent");
    assert!(
        memory > 1 << 20 && memory < limit,
        "{memory} bytes in use; the cgroup says {cgroup}"
    );
    // CPU time as systemd accounts it; where it cannot (cgroup v1 with cpuacct mounted
    // apart from cpu, as on some CI hosts), systemd says "[not set]" and the API null.
    match hub.sd.prop(&unit, "CPUUsageNSec").parse::<u64>() {
        Ok(nsec) => {
            let seconds = before["cpu_seconds"].as_f64().expect("cpu_seconds");
            assert!(
                seconds > 0.0 && seconds <= nsec as f64 / 1e9 + 1e-9,
                "{seconds} s read before systemd said {nsec} ns"
            );
        }
        Err(_) => assert_eq!(before["cpu_seconds"], Value::Null, "{overview}"),
    }
    let figures = &overview["hub"];
    assert_eq!(figures["group"], json!("jupyter-users.slice"), "{overview}");
    assert!(
        figures["memory_bytes"]
            .as_u64()
            .is_some_and(|m| m >= memory),
        "the slice holds the server: {overview}"
    );
    assert!(
        figures["running_servers"].as_u64().is_some_and(|n| n >= 1),
        "{overview}"
    );

    // 40 MiB more in the server: the figure follows the cgroup.
    let (status, _) = hub.through_proxy_path(&user, "alloc?mb=40").await;
    assert_eq!(status, StatusCode::OK);
    let grown = usage(&hub.get(&path).await)["memory_bytes"]
        .as_u64()
        .expect("memory_bytes");
    assert!(
        grown >= memory + (35 << 20),
        "after allocating 40 MiB: {grown} bytes, before {memory}"
    );

    // Its log: what it printed, from the journal of its unit, and followed live.
    let said = format!("a-line-from-the-server-{}", std::process::id());
    let (status, _) = hub
        .through_proxy_path(&user, &format!("say?line={said}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let log_path = format!("/users/{user}/server/log?lines=50");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = hub.get(&log_path).await;
        assert_eq!(log["available"], json!(true), "{log}");
        let lines = log["lines"].as_array().expect("lines");
        if lines
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains(&said)))
        {
            assert!(lines.len() <= 50, "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "never in the log: {log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut stream = hub
        .http
        .get(hub.api(&format!("/users/{user}/server/log?follow=1&lines=1")))
        .header("Authorization", format!("token {}", hub.token))
        .send()
        .await
        .expect("follow the log");
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let later = format!("{said}-later");
    let (status, _) = hub
        .through_proxy_path(&user, &format!("say?line={later}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut events = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !events.contains(&later) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(chunk))) => events.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the followed log ended or stalled ({other:?}): {events}"),
        }
    }
    let event = events
        .lines()
        .find(|l| l.contains(&later))
        .and_then(|l| l.strip_prefix("data: "))
        .expect("a data event");
    let event: Value = serde_json::from_str(event).expect("an event is JSON");
    assert!(
        event["line"].as_str().is_some_and(|l| l.contains(&later)),
        "{event}"
    );
    drop(stream);

    // Past its limit the kernel kills it: the row says why, with its last lines.
    let _ = hub.through_proxy_path(&user, "alloc?mb=200").await;
    hub.wait_stopped(&user).await;
    let stopped = usage(&hub.get(&path).await);
    assert_eq!(stopped["running"], json!(false), "{stopped}");
    assert_eq!(stopped["memory_bytes"], Value::Null, "{stopped}");
    let failure = &stopped["last_failure"];
    assert!(
        failure["reason"]
            .as_str()
            .is_some_and(|r| r.contains("out of memory")),
        "{stopped}\n{}",
        hub.journal()
    );
    assert!(
        failure["log_tail"].as_array().is_some_and(|t| t
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains(&later)))),
        "the tail holds its last lines: {failure}"
    );
    // The log of the run that failed is still there to read.
    let log = hub.get(&log_path).await;
    assert!(
        log["lines"].as_array().is_some_and(|l| l
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains(&later)))),
        "{log}"
    );
    assert_eq!(&log["last_failure"], failure, "{log}");
}

/// `[[Spawner.profiles]]`: the chosen profile's limits and unit properties are the unit's.
async fn a_profile_sets_the_units_limits(hub: &Hub<'_>) {
    let user = crowd_user(5);
    let unit = server_unit(&user);
    let (status, _, body) = hub
        .call(
            reqwest::Method::POST,
            &format!("/users/{user}/server"),
            Some(json!({"profile": "tiny"})),
        )
        .await;
    assert!(matches!(status.as_u16(), 201 | 202), "{status} {body}");
    hub.wait_ready(&user).await;
    assert_eq!(hub.sd.prop(&unit, "MemoryMax"), (48u64 << 20).to_string());
    assert_eq!(hub.sd.prop(&unit, "CPUQuotaPerSecUSec"), "500ms");
    assert_eq!(hub.sd.prop(&unit, "IOWeight"), "42");
    let (status, _, body) = hub
        .call(
            reqwest::Method::DELETE,
            &format!("/users/{user}/server"),
            None,
        )
        .await;
    assert!(matches!(status.as_u16(), 202 | 204), "{status} {body}");
    hub.wait_stopped(&user).await;
    // Unknown profiles are refused before any unit starts.
    let (status, _, body) = hub
        .call(
            reqwest::Method::POST,
            &format!("/users/{user}/server"),
            Some(json!({"profile": "huge"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

async fn concurrent_spawn_limit_holds(hub: &Hub<'_>) {
    let names: Vec<String> = (1..=CROWD).map(crowd_user).collect();
    // Spawns wait in their pre-spawn hook until the gate opens, so they stay pending.
    std::fs::remove_file(&hub.gate).expect("close the gate");
    let answers = futures_util::future::join_all(names.iter().map(|user| async move {
        let (status, headers, body) = hub
            .call(
                reqwest::Method::POST,
                &format!("/users/{user}/server"),
                None,
            )
            .await;
        (user.clone(), status, headers, body)
    }))
    .await;
    let mut accepted = BTreeSet::new();
    for (user, status, headers, body) in &answers {
        match status.as_u16() {
            202 => {
                accepted.insert(user.clone());
            }
            429 => {
                let retry = headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                assert!(
                    retry.is_some_and(|s| s > 0),
                    "429 without Retry-After: {headers:?}"
                );
            }
            other => panic!("{user}: unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted.len(), SPAWN_LIMIT, "{answers:?}");
    assert_eq!(hub.pending_spawns().await, SPAWN_LIMIT);

    // Open the gate; retry the refused until every server runs. The test retries sooner
    // than Retry-After asks: the limit, not the client's patience, is under test.
    std::fs::write(&hub.gate, "").expect("open the gate");
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut most_pending = 0;
    loop {
        let pending = hub.pending_spawns().await;
        most_pending = most_pending.max(pending);
        assert!(pending <= SPAWN_LIMIT, "{pending} spawns pending at once");
        let mut ready = 0;
        for user in &names {
            match hub.server(user).await {
                Some(server) if server["ready"] == json!(true) => ready += 1,
                Some(_) => {}
                None => {
                    let (status, headers, body) = hub
                        .call(
                            reqwest::Method::POST,
                            &format!("/users/{user}/server"),
                            None,
                        )
                        .await;
                    match status.as_u16() {
                        201 | 202 => {}
                        429 => assert!(headers.get("retry-after").is_some(), "{headers:?}"),
                        other => panic!("{user}: unexpected {other}: {body}"),
                    }
                }
            }
        }
        if ready == CROWD {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {ready} of {CROWD} servers ran:\n{}",
            hub.journal()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(most_pending <= SPAWN_LIMIT);
    eprintln!(
        "spawn limit: first burst {} accepted, {} refused with 429; at most {most_pending} pending while retrying",
        accepted.len(),
        CROWD - accepted.len()
    );
    let mut pids = BTreeMap::new();
    for user in &names {
        let unit = server_unit(user);
        assert_eq!(hub.sd.prop(&unit, "ActiveState"), "active", "{unit}");
        assert_eq!(hub.sd.prop(&unit, "User"), *user, "{unit}");
        pids.insert(hub.sd.prop(&unit, "ExecMainPID"), unit);
        let (status, answer) = hub.through_proxy(user).await;
        assert_eq!(status, StatusCode::OK, "{user}: {answer}");
        assert_eq!(answer["user"], json!(user), "{answer}");
    }
    assert_eq!(pids.len(), CROWD, "servers share a process: {pids:?}");

    // Stop them all at once; their units go away.
    let stops = futures_util::future::join_all(names.iter().map(|user| async move {
        hub.call(
            reqwest::Method::DELETE,
            &format!("/users/{user}/server"),
            None,
        )
        .await
    }))
    .await;
    for (status, _, body) in &stops {
        assert!(matches!(status.as_u16(), 202 | 204), "{status} {body}");
    }
    for user in &names {
        hub.wait_stopped(user).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for user in &names {
        let unit = server_unit(user);
        while hub.sd.prop(&unit, "LoadState") != "not-found" {
            assert!(
                Instant::now() < deadline,
                "{unit} is still loaded: {}",
                hub.sd.prop(&unit, "ActiveState")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let left = hub.sd.run(&[
        "systemctl",
        "list-units",
        "--all",
        "--plain",
        "--no-legend",
        "jupyter-jh*",
    ]);
    assert!(left.trim().is_empty(), "units left: {left}");
    assert_eq!(hub.sd.prop(STRAY_UNIT, "ActiveState"), "active");
}

/// The real idle culler (jupyterhub 6's venv, which the test set-up gives it), with
/// short times, and the role the packaged example config gives it.
/// `kill -9` of the hub and a restart, waiting until systemd has it inactive first.
pub(crate) async fn kill_9_and_restart(hub: &Hub<'_>) {
    hub.sd.run_ok(&[
        "systemctl",
        "kill",
        "--kill-who=main",
        "--signal=KILL",
        HUB_UNIT,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Killed before READY it was `activating`; either way, gone once no longer loaded as
    // running (its name is free for the next start).
    while matches!(
        hub.sd.prop(HUB_UNIT, "ActiveState").as_str(),
        "active" | "activating" | "deactivating" | "reloading"
    ) {
        assert!(Instant::now() < deadline, "the hub survived SIGKILL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.start();
}

/// A spawn the hub was killed in the middle of, between starting the unit and recording it:
/// made here by starting the user's unit by hand while the hub is down. At the next start
/// the hub stops it and says why, rather than leaving a server nobody was told about.
async fn a_unit_started_but_never_recorded_is_stopped(hub: &Hub<'_>) {
    let user = crowd_user(7);
    let unit = server_unit(&user);
    assert!(hub.server(&user).await.is_none(), "{user} has no server");
    hub.sd.run_ok(&["systemctl", "stop", HUB_UNIT]);
    hub.sd.run_ok(&[
        "systemd-run",
        "--unit",
        &unit,
        &format!("--property=User={user}"),
        "/bin/sleep",
        "infinity",
    ]);
    assert_eq!(hub.sd.prop(&unit, "ActiveState"), "active");
    hub.start();
    let state = hub.sd.prop(&unit, "ActiveState");
    assert!(
        state != "active" && state != "activating",
        "the unrecorded unit still runs ({state}):\n{}",
        hub.journal()
    );
    let model = hub
        .get(&format!("/users/{user}?include_stopped_servers=1"))
        .await;
    assert!(model["server"].is_null(), "{model}");
    let overview = hub.get(&format!("/usage?user={user}")).await;
    let reason = overview["servers"][0]["last_failure"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("hub restarted while this server was starting"),
        "{overview}"
    );
    // A unit of no user the database has is still only reported (the stray scenario).
    assert_eq!(hub.sd.prop(STRAY_UNIT, "ActiveState"), "active");
    // The user can start again.
    hub.spawn(&user).await;
    let (status, _, body) = hub
        .call(
            reqwest::Method::DELETE,
            &format!("/users/{user}/server"),
            None,
        )
        .await;
    assert!(matches!(status.as_u16(), 202 | 204), "{status} {body}");
    hub.wait_stopped(&user).await;
}

/// `kill -9` of the hub at random moments of spawns and stops, several times: after each
/// restart every server is either running (unit active, routed to its user) or stopped
/// (no unit left running), nothing stays pending, and users and tokens are all still there.
async fn kill_9_at_random_points_of_spawns_and_stops_loses_nothing(hub: &Hub<'_>) {
    let users: Vec<String> = (8..=10).map(crowd_user).collect();
    let (status, _, token) = hub
        .call(
            reqwest::Method::POST,
            &format!("/users/{}/tokens", users[0]),
            Some(json!({"note": "before the chaos"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    let token = token["token"].as_str().expect("token").to_owned();
    let user_count = hub.get("/users?limit=200").await.as_array().map(Vec::len);
    // A small deterministic generator: the same moments in every run of this process.
    let mut seed = u64::from(std::process::id()) | 1;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..6 {
        let user = &users[round % users.len()];
        let running = hub.server(user).await.is_some();
        let method = if running {
            reqwest::Method::DELETE
        } else {
            reqwest::Method::POST
        };
        let request = hub
            .http
            .request(method.clone(), hub.api(&format!("/users/{user}/server")))
            .header("Authorization", format!("token {}", hub.token))
            .send();
        // The request runs while the hub is killed; its answer (or the lost connection)
        // does not matter, only what the hub knows after its restart.
        let pending = tokio::spawn(request);
        let wait = next() % 700;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        kill_9_and_restart(hub).await;
        let _ = pending.await;
        // Consistency once nothing is pending any more.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut settled = true;
            for u in &users {
                let model = hub.get(&format!("/users/{u}")).await;
                let server = &model["servers"][""];
                let unit = hub.sd.prop(&server_unit(u), "ActiveState");
                if !server["pending"].is_null() {
                    settled = false;
                } else if server["ready"] == json!(true) {
                    assert_eq!(
                        unit,
                        "active",
                        "round {round} ({method} {user} after {wait} ms): {u} is ready without a unit\n{}",
                        hub.journal()
                    );
                    let (status, answer) = hub.through_proxy(u).await;
                    assert_eq!(
                        answer["user"],
                        json!(u),
                        "round {round}: {u}'s route: {status} {answer}"
                    );
                } else if unit == "active" || unit == "activating" {
                    // A unit still running that the hub does not show: orphaned, unless a
                    // stop is still under way (deactivating).
                    settled = false;
                }
            }
            if settled {
                let after = hub.server(user).await.is_some();
                eprintln!(
                    "chaos round {round}: {method} {user}, kill -9 after {wait} ms: {}",
                    if after { "running" } else { "stopped" }
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round} ({method} {user} after {wait} ms): never consistent\n{}",
                hub.journal()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Nothing acknowledged before was lost.
    let r = hub
        .http
        .get(hub.api("/user"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .expect("whoami");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.expect("json")["name"],
        json!(users[0])
    );
    assert_eq!(
        hub.get("/users?limit=200").await.as_array().map(Vec::len),
        user_count
    );
    for user in &users {
        if hub.server(user).await.is_some() {
            let _ = hub
                .call(
                    reqwest::Method::DELETE,
                    &format!("/users/{user}/server"),
                    None,
                )
                .await;
            hub.wait_stopped(user).await;
        }
    }
}

fn culler_service() -> String {
    let venv = std::env::var("SINGLEUSER_VENV_6")
        .unwrap_or_else(|_| "/var/cache/jupyterhub-rs-tests/venv-6".into());
    format!(
        "[[JupyterHub.services]]\nname = \"idle-culler\"\n\
         command = [\"{venv}/bin/python\", \"-m\", \"jupyterhub_idle_culler\", \"--timeout=3\", \"--cull-every=1\"]\n\
         [[JupyterHub.load_roles]]\nname = \"idle-culler\"\n\
         scopes = [\"list:users\", \"read:users:activity\", \"read:servers\", \"delete:servers\"]\n\
         services = [\"idle-culler\"]\n"
    )
}

async fn managed_services_are_units_that_outlive_the_hub(hub: &Hub<'_>) {
    // First the idle culler, as a unit, culls an idle server.
    let user = crowd_user(2);
    if hub.server(&user).await.is_none() {
        let (status, _, body) = hub
            .call(
                reqwest::Method::POST,
                &format!("/users/{user}/server"),
                None,
            )
            .await;
        assert!(matches!(status.as_u16(), 201 | 202), "{status} {body}");
    }
    hub.wait_ready(&user).await;
    hub.set_services(&format!("{}\n{}", hub.echo_service(""), culler_service()));
    hub.restart();
    assert_eq!(
        hub.sd
            .prop("jupyterhub-service-idle-culler.service", "ActiveState"),
        "active"
    );
    hub.wait_stopped(&user).await;

    let first = hub.echo_answer("0").await;
    assert_eq!(first["whoami"]["kind"], json!("service"), "{first}");
    assert_eq!(first["whoami"]["name"], json!("echo"), "{first}");
    assert_eq!(first["env"]["JUPYTERHUB_SERVICE_NAME"], json!("echo"));
    assert_eq!(first["env"]["MEM_LIMIT"], json!("268435456"));
    // Its own unit, in its own slice, as a dynamic user, limited, restarted on failure.
    let sd = hub.sd;
    assert_eq!(sd.prop(SERVICE_UNIT, "ActiveState"), "active");
    assert_eq!(sd.prop(SERVICE_UNIT, "Slice"), "jupyterhub-services.slice");
    assert_eq!(sd.prop(SERVICE_UNIT, "DynamicUser"), "yes");
    assert_eq!(sd.prop(SERVICE_UNIT, "Restart"), "on-failure");
    assert_eq!(sd.prop(SERVICE_UNIT, "MemoryMax"), "268435456");
    let uid: u32 = sd
        .run_ok(&["ps", "-o", "uid=", "-p", &first["pid"].to_string()])
        .trim()
        .parse()
        .expect("uid");
    assert_ne!(uid, 0, "the service runs as root");
    // No secret where everyone can read it.
    let shown = sd.run_ok(&["systemctl", "show", SERVICE_UNIT]);
    assert!(
        !shown.contains(SERVICE_TOKEN) && !shown.contains("JUPYTERHUB_API_TOKEN"),
        "systemctl show reveals the token"
    );
    // The model has the live pid.
    let main_pid = sd.prop(SERVICE_UNIT, "MainPID");
    let invocation = sd.prop(SERVICE_UNIT, "InvocationID");
    assert_eq!(first["pid"].to_string(), main_pid);
    let model = hub.get("/services/echo").await;
    assert_eq!(model["pid"].to_string(), main_pid, "{model}");

    // kill -9 of the hub: the service keeps running and is adopted, not started again.
    sd.run_ok(&[
        "systemctl",
        "kill",
        "--kill-who=main",
        "--signal=KILL",
        HUB_UNIT,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sd.prop(HUB_UNIT, "ActiveState") == "active" {
        assert!(Instant::now() < deadline, "the hub survived SIGKILL");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sd.prop(SERVICE_UNIT, "ActiveState"), "active");
    hub.start();
    assert_eq!(sd.prop(SERVICE_UNIT, "InvocationID"), invocation);
    assert_eq!(sd.prop(SERVICE_UNIT, "MainPID"), main_pid);
    let model = hub.get("/services/echo").await;
    assert_eq!(
        model["pid"].to_string(),
        main_pid,
        "adopted before READY: {model}"
    );

    // Killed, systemd starts it again (and the environment file is still there for it).
    sd.run_ok(&["systemctl", "kill", "--signal=KILL", SERVICE_UNIT]);
    let again = hub.echo_answer(&main_pid).await;
    assert_eq!(again["whoami"]["name"], json!("echo"), "{again}");
    assert_ne!(sd.prop(SERVICE_UNIT, "MainPID"), main_pid);
    // The admin reads that restart, and what the new process printed, from its journal.
    let pid = sd.prop(SERVICE_UNIT, "MainPID");
    let printed = format!(" pid {pid}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = hub.get("/services/echo/log?lines=100").await;
        assert_eq!(log["unit"], json!(SERVICE_UNIT), "{log}");
        assert_eq!(log["available"], json!(true), "{log}");
        assert_eq!(log["pid"].to_string(), pid, "{log}");
        assert!(log["restarts"].as_u64().is_some_and(|n| n >= 1), "{log}");
        let lines = log["lines"].as_array().expect("lines");
        if lines.iter().any(|l| {
            l.as_str()
                .is_some_and(|l| l.contains("echo service listening on") && l.ends_with(&printed))
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{printed:?} never in the service's log: {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A changed environment restarts it at the next start.
    let invocation = sd.prop(SERVICE_UNIT, "InvocationID");
    let account = crowd_user(3);
    hub.set_services(&hub.echo_service(&format!(
        "environment = {{ COLOUR = \"blue\" }}\nuser = \"{account}\""
    )));
    hub.restart();
    let changed = hub.echo_answer("0").await;
    assert_eq!(changed["env"]["COLOUR"], json!("blue"), "{changed}");
    assert_ne!(sd.prop(SERVICE_UNIT, "InvocationID"), invocation);
    // Now as the configured account, in its home.
    assert_eq!(sd.prop(SERVICE_UNIT, "User"), account);
    assert_eq!(sd.prop(SERVICE_UNIT, "DynamicUser"), "no");
    assert_eq!(
        changed["cwd"],
        json!(format!("/home/{account}")),
        "{changed}"
    );
    assert_eq!(
        changed["env"]["JUPYTERHUB_USER"],
        json!(account),
        "{changed}"
    );

    // Gone from the config, it is stopped at the next start.
    hub.set_services("");
    hub.restart();
    let state = sd.prop(SERVICE_UNIT, "ActiveState");
    assert!(
        state == "inactive" || state.is_empty(),
        "a removed service still runs: {state}"
    );
    let (status, _, _) = hub.call(reqwest::Method::GET, "/services/echo", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
