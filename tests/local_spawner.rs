//! The `local` spawner against real processes: a Python HTTP server stands in for
//! `jupyterhub-singleuser` (readiness checks are the hub's job, not the spawner's).

use std::collections::BTreeMap;
use std::time::Duration;

use jupyterhub::spawner::local::LocalSpawner;
use jupyterhub::spawner::{Error, SpawnRequest, Spawner, Started, Status};

/// Kills the process group of a started server when the test ends, pass or fail.
struct Reap(i32);

impl Drop for Reap {
    fn drop(&mut self) {
        if self.0 > 0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn reap(started: &Started) -> Reap {
    Reap(started.state["pid"].as_i64().expect("pid in state") as i32)
}

/// Processes of process group `pgid` that are not zombies (a killed grandchild stays a zombie
/// until init reaps it, which is not ours to wait for).
fn live_group_members(pgid: i32) -> Vec<i32> {
    let mut live = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // Fields after the command: state, ppid, pgrp.
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
            && fields.first() != Some(&"Z")
        {
            live.push(pid);
        }
    }
    live
}

#[path = "common/port.rs"]
mod port;
#[path = "common/root.rs"]
mod root;

use port::reserve_port;

fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .expect("getpwuid")
        .expect("current user exists")
        .name
}

fn request(argv: &[&str], env: &[(&str, &str)], port: u16) -> SpawnRequest {
    SpawnRequest {
        user: "alice".into(),
        server_name: String::new(),
        system_user: current_user(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        working_dir: None,
        ip: "127.0.0.1".into(),
        port,
        limits: Default::default(),
        groups: Vec::new(),
        profile: None,
    }
}

async fn wait_listening(port: u16) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on port {port}");
}

async fn wait_stopped(spawner: &LocalSpawner, state: &serde_json::Value) -> String {
    for _ in 0..400 {
        if let Status::Stopped { reason, .. } =
            spawner.poll("alice", "", state).await.expect("poll")
        {
            return reason;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not stop");
}

#[tokio::test]
async fn serves_with_exactly_the_given_environment_and_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env_out = dir.path().join("env");
    let reserved = reserve_port();
    let port = reserved.port;
    let spawner = LocalSpawner::new();
    let script =
        r#"env > "$ENV_OUT"; exec /usr/bin/python3 -m http.server "$PORT" --bind 127.0.0.1"#;
    let mut req = request(
        &["/bin/sh", "-c", script],
        &[
            ("ENV_OUT", env_out.to_str().expect("utf-8 path")),
            ("JUPYTERHUB_API_TOKEN", "secret-token"),
            ("PORT", &port.to_string()),
        ],
        port,
    );
    req.working_dir = Some(dir.path().to_owned());
    let started = spawner.start(&req).await.expect("start");
    let _reap = reap(&started);
    assert_eq!(started.url, format!("http://127.0.0.1:{port}"));
    wait_listening(port).await;

    let env = std::fs::read_to_string(&env_out).expect("the server wrote its environment");
    assert!(
        env.lines()
            .any(|l| l == "JUPYTERHUB_API_TOKEN=secret-token"),
        "{env}"
    );
    assert!(
        env.lines()
            .any(|l| l == format!("PWD={}", dir.path().display())),
        "{env}"
    );
    // The hub's own environment must not leak into servers (env_clear).
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    assert!(!env.contains("CARGO_MANIFEST_DIR"), "{env}");

    assert_eq!(
        spawner
            .poll("alice", "", &started.state)
            .await
            .expect("poll"),
        Status::Running
    );
    spawner
        .stop("alice", "", &started.state, false)
        .await
        .expect("stop");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
    assert!(matches!(
        spawner
            .poll("alice", "", &started.state)
            .await
            .expect("poll"),
        Status::Stopped { .. }
    ));
}

#[tokio::test]
async fn exit_reason_is_polled_and_announced() {
    let spawner = LocalSpawner::new();
    let mut exits = spawner
        .subscribe_exits()
        .expect("local spawner announces exits");
    let started = spawner
        .start(&request(
            &["/bin/sh", "-c", "exit 3"],
            &[],
            reserve_port().port,
        ))
        .await
        .expect("start");
    let _reap = reap(&started);
    let exited = tokio::time::timeout(Duration::from_secs(20), exits.recv())
        .await
        .expect("an exit within 20 s")
        .expect("exit");
    assert_eq!(
        (
            exited.user.as_str(),
            exited.server_name.as_str(),
            exited.reason.as_str()
        ),
        ("alice", "", "exit code 3")
    );
    assert_eq!(wait_stopped(&spawner, &started.state).await, "exit code 3");
}

#[tokio::test]
async fn stop_kills_a_server_that_ignores_sigterm_and_its_children() {
    let spawner = LocalSpawner::with_grace(Duration::from_millis(300));
    let mut exits = spawner.subscribe_exits().expect("exits");
    // The shell ignores SIGTERM and so does its child `sleep`; only SIGKILL ends them.
    let started = spawner
        .start(&request(
            &[
                "/bin/sh",
                "-c",
                "trap '' TERM; sleep 1000 & wait; sleep 1000",
            ],
            &[],
            reserve_port().port,
        ))
        .await
        .expect("start");
    let _reap = reap(&started);
    let pid = started.state["pid"].as_i64().expect("pid") as i32;
    spawner
        .stop("alice", "", &started.state, false)
        .await
        .expect("stop");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        "the server survived stop"
    );
    // The whole process group is gone, `sleep` included.
    assert_eq!(
        live_group_members(pid),
        Vec::<i32>::new(),
        "a child survived stop"
    );
    assert!(matches!(
        spawner
            .poll("alice", "", &started.state)
            .await
            .expect("poll"),
        Status::Stopped { .. }
    ));
    // A stop we asked for is not announced as an exit.
    assert!(matches!(
        exits.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty)
    ));
}

#[tokio::test]
async fn a_restarted_hub_finds_and_stops_a_running_server() {
    let reserved = reserve_port();
    let port = reserved.port;
    let first = LocalSpawner::new();
    let started = first
        .start(&request(
            &[
                "/usr/bin/python3",
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ],
            &[],
            port,
        ))
        .await
        .expect("start");
    let _reap = reap(&started);
    wait_listening(port).await;
    // Only the saved state survives a hub restart.
    let state: serde_json::Value =
        serde_json::from_str(&started.state.to_string()).expect("state is JSON");
    drop(first);
    let second = LocalSpawner::new();
    assert_eq!(
        second.poll("alice", "", &state).await.expect("poll"),
        Status::Running
    );
    second.stop("alice", "", &state, true).await.expect("stop");
    assert!(matches!(
        second.poll("alice", "", &state).await.expect("poll"),
        Status::Stopped { .. }
    ));
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_missing_command_is_reported() {
    let spawner = LocalSpawner::new();
    let err = spawner
        .start(&request(
            &["/nonexistent/jupyterhub-singleuser"],
            &[],
            reserve_port().port,
        ))
        .await
        .expect_err("must fail");
    assert!(
        matches!(err, Error::CommandNotFound(ref c) if c == "/nonexistent/jupyterhub-singleuser"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_missing_system_user_is_reported() {
    root::require_root("only root runs servers as other users");
    let spawner = LocalSpawner::new();
    let mut req = request(&["/bin/true"], &[], reserve_port().port);
    req.system_user = "no-such-user-xyz".into();
    let err = spawner.start(&req).await.expect_err("must fail");
    assert!(
        matches!(err, Error::NoSuchSystemUser(ref u) if u == "no-such-user-xyz"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_root_hub_runs_servers_as_the_system_user() {
    root::require_root("the server runs as `nobody`");
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("getpwnam")
        .expect("user nobody exists");
    let spawner = LocalSpawner::new();
    let mut req = request(&["/bin/sleep", "1000"], &[], reserve_port().port);
    req.system_user = "nobody".into();
    req.working_dir = Some("/".into());
    let started = spawner.start(&req).await.expect("start");
    let _reap = reap(&started);
    let pid = started.state["pid"].as_i64().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    let gid_line = status
        .lines()
        .find(|l| l.starts_with("Gid:"))
        .expect("Gid line");
    let uid = nobody.uid.to_string();
    let gid = nobody.gid.to_string();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == uid),
        "{uid_line}"
    );
    assert!(
        gid_line.split_whitespace().skip(1).all(|g| g == gid),
        "{gid_line}"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.split('\0').any(|kv| kv == "USER=nobody"),
        "{environ}"
    );
    spawner
        .stop("alice", "", &started.state, true)
        .await
        .expect("stop");
}
