//! The `systemd` spawner against a real systemd (a contained PID 1): limits land in the unit
//! and the cgroup, OOM kills are reported as such, no token in `systemctl show`, unit names
//! never collide, failed starts are reported at once. Needs root (fails, saying so, otherwise).
//!
//! The spawner runs inside the container through `examples/spawn_probe.rs` (JSON in and out).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Contained, ensure_user, reserve_port};

const CGROUP_NAME: &str = "sdtest-spawner";
/// The account tests/run.sh creates for servers; created here too when missing.
const TEST_USER: &str = "jh-e2e";
/// Units' environment files go here inside the container (its /run is private).
const CONFIG: &str = r#"
[SystemdSpawner]
env_dir = "/run/jupyterhub-units"
isolate_tmp = true
disable_user_sudo = true
unit_extra_properties = ["IOWeight=50", "RuntimeMaxSec=1h"]
"#;

/// The probe and `systemctl show`, for these scenarios.
impl Contained {
    /// One command to the probe, run inside.
    fn probe(&self, input: Value) -> Value {
        let mut input = input;
        if input.get("config").is_none() {
            input["config"] = json!(CONFIG);
        }
        let mut child = self
            .nsenter()
            .arg(probe_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn probe");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.to_string().as_bytes())
            .expect("write probe input");
        let output = child.wait_with_output().expect("probe output");
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "probe answered {:?}: {e}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    fn show(&self, unit: &str) -> String {
        self.run(&["systemctl", "show", unit])
    }

    /// A cgroup file of the unit, cgroup v2 name first, then v1 (controller, file).
    fn cgroup_value(&self, unit: &str, v2: &str, v1: (&str, &str)) -> String {
        let cg = self.prop(unit, "ControlGroup");
        let script = format!(
            "cat /sys/fs/cgroup{cg}/{v2} 2>/dev/null || cat /sys/fs/cgroup/{}{cg}/{}",
            v1.0, v1.1
        );
        self.run(&["sh", "-c", &script]).trim().to_owned()
    }
}

static PROBE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn probe_path() -> PathBuf {
    PROBE.get_or_init(build_probe).clone()
}

/// Removes the probe's copy in /var/lib when the test ends (a host directory: nothing
/// cleans it otherwise).
struct RemoveProbe;

impl Drop for RemoveProbe {
    fn drop(&mut self) {
        if let Some(path) = PROBE.get() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn build_probe() -> PathBuf {
    // target/debug/deps/system-HASH → target/debug/examples/spawn_probe
    let exe = std::env::current_exe().expect("current exe");
    let path = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join("examples/spawn_probe");
    // `cargo test` builds examples, `cargo test --test system` does not: build it then.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--example",
            "spawn_probe",
            "--manifest-path",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        ])
        .status()
        .expect("cargo build --example spawn_probe");
    assert!(
        status.success() && path.exists(),
        "cannot build {}",
        path.display()
    );
    // The container's /tmp is private, and checkouts often live there: hand the probe over
    // through a directory both sides see.
    let copy = crate::harness::shared_dir().join(format!("spawn_probe-{}", std::process::id()));
    std::fs::copy(&path, &copy).expect("copy the probe");
    copy
}

fn request(user: &str, server: &str, argv: &[&str], port: u16, limits: Value) -> Value {
    json!({
        "user": user,
        "server_name": server,
        "system_user": TEST_USER,
        "argv": argv,
        "env": {"JUPYTERHUB_API_TOKEN": "tok-very-secret-0123456789", "PORT": port.to_string(), "PATH": "/usr/bin:/bin"},
        "working_dir": null,
        "ip": "127.0.0.1",
        "port": port,
        "limits": limits,
    })
}

fn http_server(port: u16) -> Vec<String> {
    [
        "/usr/bin/python3",
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn wait_listening(port: u16) {
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}");
}

#[track_caller]
fn expect_ok(answer: &Value) {
    assert_eq!(answer["ok"], json!(true), "{answer}");
}

/// One contained systemd serves every scenario (booting one per test would run several
/// PID 1s in one cgroup tree); each scenario uses its own hub user, so units never clash.
#[test]
fn systemd_spawner() {
    crate::harness::require_root(
        "the systemd spawner tests boot a contained systemd and add users",
    );
    let _serial = crate::harness::serial();
    let _remove_probe = RemoveProbe;
    ensure_user(TEST_USER);
    let sd = Contained::boot(CGROUP_NAME);
    limits_user_and_no_secret_in_unit(&sd);
    named_servers_never_collide_with_the_default_one(&sd);
    failed_start_is_reported_at_once(&sd);
    oom_kill_is_reported_as_out_of_memory(&sd);
    exit_code_is_reported(&sd);
    dynamic_users_get_a_state_directory_as_home(&sd);
    a_requested_stop_is_not_announced_as_an_exit(&sd);
}

fn a_requested_stop_is_not_announced_as_an_exit(sd: &Contained) {
    let held = reserve_port();
    let port = held.port;
    let argv = http_server(port);
    let first = request(
        "gina",
        "",
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
        port,
        json!({}),
    );
    // The pause keeps the exit after the start job: an instant exit can fail the job itself
    // under load, and then `start` reports it instead of the watcher.
    let then = request(
        "hank",
        "",
        &["/bin/sh", "-c", "sleep 1; exit 5"],
        reserve_port().port,
        json!({}),
    );
    let answer = sd.probe(json!({"action": "stop_is_quiet", "request": first, "then": then}));
    expect_ok(&answer);
    assert_eq!(
        answer["first_exit"],
        json!({"user": "hank", "server": "", "reason": "exit code 5"}),
        "{answer}"
    );
}

fn limits_user_and_no_secret_in_unit(sd: &Contained) {
    let held = reserve_port();
    let port = held.port;
    let limits = json!({"mem_limit": 256u64 << 20, "mem_guarantee": 64u64 << 20, "cpu_limit": 0.5, "cpu_guarantee": 2.0, "tasks_max": 50});
    let req = request(
        "alice",
        "",
        &http_server(port)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        port,
        limits,
    );
    let started = sd.probe(json!({"action": "start", "request": req}));
    expect_ok(&started);
    let unit = "jupyter-alice-singleuser.service";
    assert_eq!(started["state"]["unit"], json!(unit));
    assert!(
        started["state"]["pid"].as_u64().is_some_and(|p| p > 0),
        "{started}"
    );
    assert_eq!(started["url"], json!(format!("http://127.0.0.1:{port}")));
    wait_listening(port);

    // The unit, as systemd sees it.
    assert_eq!(sd.prop(unit, "User"), TEST_USER);
    assert_eq!(sd.prop(unit, "Slice"), "jupyter-users.slice");
    assert_eq!(sd.prop(unit, "MemoryMax"), (256u64 << 20).to_string());
    assert_eq!(sd.prop(unit, "MemoryLow"), (64u64 << 20).to_string());
    assert_eq!(sd.prop(unit, "CPUQuotaPerSecUSec"), "500ms");
    assert_eq!(sd.prop(unit, "CPUWeight"), "200");
    assert_eq!(sd.prop(unit, "TasksMax"), "50");
    assert_eq!(sd.prop(unit, "OOMPolicy"), "continue");
    assert_eq!(sd.prop(unit, "PrivateTmp"), "yes");
    assert_eq!(sd.prop(unit, "NoNewPrivileges"), "yes");
    assert_eq!(sd.prop(unit, "IOWeight"), "50");
    assert_eq!(sd.prop(unit, "RuntimeMaxUSec"), "1h");
    // The process runs as the user.
    let pid = started["state"]["pid"].as_u64().expect("pid").to_string();
    let uid = nix::unistd::User::from_name(TEST_USER)
        .expect("getpwnam")
        .expect("user")
        .uid
        .to_string();
    assert_eq!(sd.run(&["ps", "-o", "uid=", "-p", &pid]).trim(), uid);

    // The kernel's limits.
    assert_eq!(
        sd.cgroup_value(unit, "memory.max", ("memory", "memory.limit_in_bytes")),
        (256u64 << 20).to_string()
    );
    let quota = sd.cgroup_value(unit, "cpu.max", ("cpu", "cpu.cfs_quota_us"));
    assert!(
        quota == "50000" || quota.starts_with("50000 "),
        "cpu quota {quota}"
    );
    assert_eq!(
        sd.cgroup_value(unit, "pids.max", ("pids", "pids.max")),
        "50"
    );

    // No secret anywhere systemd shows to any local user.
    let show = sd.show(unit);
    assert!(show.contains("EnvironmentFiles="), "{show}");
    assert!(
        !show.contains("tok-very-secret"),
        "the token leaks through systemctl show:\n{show}"
    );
    let status = sd.run(&["systemctl", "status", "--no-pager", unit]);
    assert!(!status.contains("tok-very-secret"), "{status}");
    // ... while the server does get it, through the root-only file.
    let environ = sd.run(&["cat", &format!("/proc/{pid}/environ")]);
    assert!(
        environ
            .split('\0')
            .any(|kv| kv == "JUPYTERHUB_API_TOKEN=tok-very-secret-0123456789"),
        "{environ:?}"
    );
    assert!(
        environ
            .split('\0')
            .any(|kv| kv == format!("MEM_LIMIT={}", 256u64 << 20)),
        "{environ:?}"
    );
    let env_file = "/run/jupyterhub-units/jupyter_2dalice_2dsingleuser_2eservice.env";
    assert_eq!(
        sd.run(&["stat", "-c", "%a %U", env_file]).trim(),
        "400 root"
    );
    assert_eq!(
        sd.run(&["stat", "-c", "%a %U", "/run/jupyterhub-units"])
            .trim(),
        "700 root"
    );

    let units = sd.probe(json!({"action": "list"}));
    assert!(
        units["units"]
            .as_array()
            .expect("units")
            .contains(&json!([unit, "active"])),
        "{units}"
    );

    let polled = sd
        .probe(json!({"action": "poll", "user": "alice", "server": "", "state": started["state"]}));
    assert_eq!(polled["status"], json!("running"), "{polled}");
    expect_ok(&sd.probe(json!({"action": "stop", "user": "alice", "server": "", "state": started["state"], "now": false})));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening after stop"
    );
    let polled = sd
        .probe(json!({"action": "poll", "user": "alice", "server": "", "state": started["state"]}));
    assert_eq!(polled["status"], json!("stopped"), "{polled}");
    assert_eq!(
        sd.run(&[
            "sh",
            "-c",
            &format!("test -e {env_file} && echo present || echo gone")
        ])
        .trim(),
        "gone"
    );
}

fn named_servers_never_collide_with_the_default_one(sd: &Contained) {
    let (held1, held2) = (reserve_port(), reserve_port());
    let (p1, p2) = (held1.port, held2.port);
    let default = request(
        "bob",
        "",
        &http_server(p1)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        p1,
        json!({}),
    );
    let named = request(
        "bob",
        "singleuser",
        &http_server(p2)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        p2,
        json!({}),
    );
    let a = sd.probe(json!({"action": "start", "request": default}));
    expect_ok(&a);
    let b = sd.probe(json!({"action": "start", "request": named}));
    expect_ok(&b);
    assert_ne!(a["state"]["unit"], b["state"]["unit"]);
    assert_eq!(
        b["state"]["unit"],
        json!("jupyter-bob-\\x73ingleuser.service")
    );
    wait_listening(p1);
    wait_listening(p2);
    for (server, started) in [("", &a), ("singleuser", &b)] {
        expect_ok(&sd.probe(json!({"action": "stop", "user": "bob", "server": server, "state": started["state"], "now": true})));
    }
}

fn failed_start_is_reported_at_once(sd: &Contained) {
    let req = request(
        "carol",
        "",
        &["/nonexistent/jupyterhub-singleuser"],
        reserve_port().port,
        json!({}),
    );
    let answer = sd.probe(json!({"action": "start", "request": req}));
    assert_eq!(answer["ok"], json!(false), "{answer}");
    assert_eq!(answer["kind"], json!("CommandNotFound"), "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .contains("/nonexistent/jupyterhub-singleuser"),
        "{answer}"
    );
    // Nothing is left behind: the unit is gone and so is the secret file.
    assert_eq!(
        sd.prop("jupyter-carol-singleuser.service", "LoadState"),
        "not-found"
    );
    let file = "/run/jupyterhub-units/jupyter_2dcarol_2dsingleuser_2eservice.env";
    assert_eq!(
        sd.run(&[
            "sh",
            "-c",
            &format!("test -e {file} && echo present || echo gone")
        ])
        .trim(),
        "gone"
    );
    // A respawn after the failure works (no "unit exists").
    let held = reserve_port();
    let port = held.port;
    let req = request(
        "carol",
        "",
        &http_server(port)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        port,
        json!({}),
    );
    let started = sd.probe(json!({"action": "start", "request": req}));
    expect_ok(&started);
    expect_ok(&sd.probe(json!({"action": "stop", "user": "carol", "server": "", "state": started["state"], "now": true})));
}

fn oom_kill_is_reported_as_out_of_memory(sd: &Contained) {
    let hog = "import time; time.sleep(0.5); b = b'x' * (512 << 20); time.sleep(60)";
    let req = request(
        "dave",
        "hog",
        &["/usr/bin/python3", "-c", hog],
        reserve_port().port,
        json!({"mem_limit": 64u64 << 20}),
    );
    let answer = sd.probe(json!({"action": "start_wait_exit", "request": req}));
    expect_ok(&answer);
    assert_eq!(
        answer["exited"]["reason"],
        json!("out of memory"),
        "{answer}"
    );
    assert_eq!(answer["poll"]["status"], json!("stopped"), "{answer}");
    assert_eq!(answer["poll"]["reason"], json!("out of memory"), "{answer}");
}

fn exit_code_is_reported(sd: &Contained) {
    let script = "import sys; print('bye from the server'); sys.exit(3)";
    let req = request(
        "erin",
        "",
        &["/usr/bin/python3", "-c", script],
        reserve_port().port,
        json!({}),
    );
    let answer = sd.probe(json!({"action": "start_wait_exit", "request": req, "poll": false}));
    expect_ok(&answer);
    assert_eq!(answer["exited"]["reason"], json!("exit code 3"), "{answer}");
    // Nobody with root rights cleaned up (no poll, no stop): the unit's own privileged
    // ExecStopPost removed the secret file, as it must for an unprivileged hub.
    let unit = "jupyter-erin-singleuser.service";
    assert_eq!(sd.prop(unit, "ActiveState"), "failed");
    let file = "/run/jupyterhub-units/jupyter_2derin_2dsingleuser_2eservice.env";
    let exists = format!("test -e {file} && echo present || echo gone");
    assert_eq!(sd.run(&["sh", "-c", &exists]).trim(), "gone");
    let tail = answer["exited"]["log_tail"].as_array().expect("log tail");
    assert!(
        tail.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains("bye from the server"))),
        "{answer}"
    );
}

fn dynamic_users_get_a_state_directory_as_home(sd: &Contained) {
    let config = format!("{CONFIG}dynamic_users = true\n");
    let held = reserve_port();
    let port = held.port;
    let argv = http_server(port);
    let req = request(
        "frank",
        "",
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
        port,
        json!({}),
    );
    let started = sd.probe(json!({"action": "start", "request": req, "config": config}));
    expect_ok(&started);
    wait_listening(port);
    let unit = "jupyter-frank-singleuser.service";
    assert_eq!(sd.prop(unit, "DynamicUser"), "yes");
    assert!(
        sd.prop(unit, "User").starts_with("jupyter-"),
        "{}",
        sd.prop(unit, "User")
    );
    let pid = started["state"]["pid"].as_u64().expect("pid").to_string();
    let uid: u32 = sd
        .run(&["ps", "-o", "uid=", "-p", &pid])
        .trim()
        .parse()
        .expect("uid");
    // systemd's range for dynamic users.
    assert!((61184..=65519).contains(&uid), "uid {uid}");
    let environ = sd.run(&["cat", &format!("/proc/{pid}/environ")]);
    assert!(
        environ
            .split('\0')
            .any(|kv| kv == "HOME=/var/lib/jupyterhub-users/frank"),
        "{environ:?}"
    );
    let owner = sd.run(&["stat", "-L", "-c", "%u", "/var/lib/jupyterhub-users/frank"]);
    assert_eq!(owner.trim(), uid.to_string());
    expect_ok(&sd.probe(json!({"action": "stop", "user": "frank", "server": "", "state": started["state"], "now": true, "config": config})));
    // The filesystem is the host's: leave nothing behind.
    sd.run(&[
        "rm",
        "-rf",
        "/var/lib/jupyterhub-users/frank",
        "/var/lib/private/jupyterhub-users/frank",
    ]);
}
