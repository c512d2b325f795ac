//! The `local` spawner: one child process per server (setuid to the user when root, unless
//! made with `without_setuid` for `--dev`, where servers run as the hub's own account like
//! upstream's `SimpleLocalProcessSpawner`).
//! Each child leads its own process group, so stopping a server also stops what it started
//! (kernels, terminals); limits are not enforced. Children survive the hub's exit (they are
//! not killed on drop and do not share its process group); after a hub restart they are
//! found again by pid and start time from the saved state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::{broadcast, watch};

use super::{Error, Exited, SpawnRequest, Spawner, Started, Status};

/// How long `stop` waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// A child we started: its exit reason is published once it has been reaped.
struct Child {
    user: String,
    server_name: String,
    /// Set by `stop`: the exit is then expected and not announced.
    stopping: bool,
    exited: watch::Receiver<Option<String>>,
}

/// Runs each server as a child process of the hub.
pub struct LocalSpawner {
    children: Arc<Mutex<HashMap<i32, Child>>>,
    exits: broadcast::Sender<Exited>,
    grace: Duration,
    /// Whether a root hub switches to the user's account (false in `--dev`).
    setuid: bool,
}

impl Default for LocalSpawner {
    fn default() -> Self {
        Self::new()
    }
}

/// The account a child switches to before exec.
struct Account {
    name: std::ffi::CString,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    home: std::path::PathBuf,
    shell: std::path::PathBuf,
}

fn exit_reason(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(code) = status.code() {
        format!("exit code {code}")
    } else if let Some(signal) = status.signal() {
        match Signal::try_from(signal) {
            Ok(s) => format!("killed by signal {} ({signal})", s.as_str()),
            Err(_) => format!("killed by signal {signal}"),
        }
    } else {
        status.to_string()
    }
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks): tells a pid from its reuse.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process of a saved state still exists and is the same process.
fn alive(pid: i32, saved_start: Option<u64>) -> bool {
    if pid <= 0 {
        return false;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => match (saved_start, start_time(pid)) {
            (Some(saved), Some(now)) => saved == now,
            _ => true,
        },
        Err(_) => false,
    }
}

fn pid_of(state: &serde_json::Value) -> (i32, Option<u64>) {
    let pid = state
        .get("pid")
        .and_then(|p| p.as_i64())
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or(0);
    let start = state.get("start_time").and_then(|s| s.as_u64());
    (pid, start)
}

impl LocalSpawner {
    pub fn new() -> Self {
        Self::with_grace(STOP_GRACE)
    }

    /// A spawner whose `stop` waits `grace` between SIGTERM and SIGKILL.
    pub fn with_grace(grace: Duration) -> Self {
        let (exits, _) = broadcast::channel(256);
        LocalSpawner {
            children: Arc::new(Mutex::new(HashMap::new())),
            exits,
            grace,
            setuid: true,
        }
    }

    /// A spawner that runs every server as the hub's own account, never switching users.
    pub fn without_setuid() -> Self {
        LocalSpawner {
            setuid: false,
            ..Self::new()
        }
    }

    fn account(&self, request: &SpawnRequest) -> Result<Option<Account>, Error> {
        if !self.setuid || !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        let user = nix::unistd::User::from_name(&request.system_user)
            .map_err(|e| {
                Error::Io(std::io::Error::other(format!(
                    "looking up {:?}: {e}",
                    request.system_user
                )))
            })?
            .ok_or_else(|| Error::NoSuchSystemUser(request.system_user.clone()))?;
        let name = std::ffi::CString::new(user.name.clone())
            .map_err(|_| Error::NoSuchSystemUser(request.system_user.clone()))?;
        Ok(Some(Account {
            name,
            uid: user.uid,
            gid: user.gid,
            home: user.dir,
            shell: user.shell,
        }))
    }

    /// Wait (up to `timeout`) until the process is gone.
    async fn wait_gone(&self, pid: i32, start: Option<u64>, timeout: Duration) -> bool {
        let exited = self
            .children
            .lock()
            .expect("children map poisoned")
            .get(&pid)
            .map(|c| c.exited.clone());
        match exited {
            Some(mut rx) => tokio::time::timeout(timeout, rx.wait_for(|e| e.is_some()))
                .await
                .is_ok(),
            None => {
                let deadline = tokio::time::Instant::now() + timeout;
                while alive(pid, start) {
                    if tokio::time::Instant::now() >= deadline {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                true
            }
        }
    }
}

#[async_trait::async_trait]
impl Spawner for LocalSpawner {
    fn name(&self) -> &'static str {
        "local"
    }

    fn supports_limits(&self) -> bool {
        false
    }

    async fn start(&self, request: &SpawnRequest) -> Result<Started, Error> {
        let argv0 = request
            .argv
            .first()
            .ok_or_else(|| Error::Refused("empty command".into()))?;
        let account = self.account(request)?;
        let mut command = tokio::process::Command::new(argv0);
        command
            .args(&request.argv[1..])
            .env_clear()
            .envs(&request.env);
        command
            .stdin(std::process::Stdio::null())
            .kill_on_drop(false)
            .process_group(0);
        if let Some(account) = &account {
            // As upstream's LocalProcessSpawner: the user's own basics unless the hub set them.
            for (key, value) in [
                ("HOME", account.home.to_string_lossy().into_owned()),
                ("USER", request.system_user.clone()),
                ("LOGNAME", request.system_user.clone()),
                ("SHELL", account.shell.to_string_lossy().into_owned()),
            ] {
                if !request.env.contains_key(key) {
                    command.env(key, value);
                }
            }
        }
        let cwd = request
            .working_dir
            .clone()
            .or_else(|| account.as_ref().map(|a| a.home.clone()));
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        if let Some(account) = account.filter(|a| a.uid != nix::unistd::geteuid()) {
            let Account { name, uid, gid, .. } = account;
            // SAFETY: the closure runs in the forked child before exec and only calls
            // async-signal-safe functions (initgroups, setgid, setuid are plain system calls
            // through libc); it allocates nothing: `name` was built before the fork.
            #[allow(unsafe_code)]
            unsafe {
                command.pre_exec(move || {
                    nix::unistd::initgroups(&name, gid).map_err(std::io::Error::from)?;
                    nix::unistd::setgid(gid).map_err(std::io::Error::from)?;
                    nix::unistd::setuid(uid).map_err(std::io::Error::from)?;
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::CommandNotFound(argv0.clone())
            } else {
                Error::StartFailed {
                    reason: format!("could not start {argv0}: {e}"),
                    log_tail: Vec::new(),
                }
            }
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| Error::StartFailed {
                reason: "the server exited at once".into(),
                log_tail: Vec::new(),
            })?;
        let (tx, rx) = watch::channel(None);
        self.children.lock().expect("children map poisoned").insert(
            pid,
            Child {
                user: request.user.clone(),
                server_name: request.server_name.clone(),
                stopping: false,
                exited: rx,
            },
        );
        let children = self.children.clone();
        let exits = self.exits.clone();
        tokio::spawn(async move {
            let reason = match child.wait().await {
                Ok(status) => exit_reason(status),
                Err(e) => format!("lost track of the server: {e}"),
            };
            // The entry stays (with its reason) for `poll`; only exits nobody asked for are announced.
            let announce = children
                .lock()
                .expect("children map poisoned")
                .get(&pid)
                .filter(|c| !c.stopping)
                .map(|c| (c.user.clone(), c.server_name.clone()));
            tx.send_replace(Some(reason.clone()));
            if let Some((user, server_name)) = announce {
                tracing::info!(%user, %server_name, %reason, "user server exited");
                let _ = exits.send(Exited {
                    user,
                    server_name,
                    reason,
                    log_tail: Vec::new(),
                });
            }
        });
        let url = match request.ip.as_str() {
            "" | "0.0.0.0" => format!("http://127.0.0.1:{}", request.port),
            ip if ip.contains(':') => format!("http://[{ip}]:{}", request.port),
            ip => format!("http://{ip}:{}", request.port),
        };
        Ok(Started {
            url,
            state: serde_json::json!({ "pid": pid, "start_time": start_time(pid) }),
        })
    }

    async fn poll(
        &self,
        _user: &str,
        _server_name: &str,
        state: &serde_json::Value,
    ) -> Result<Status, Error> {
        let (pid, start) = pid_of(state);
        let known = self
            .children
            .lock()
            .expect("children map poisoned")
            .get(&pid)
            .map(|c| c.exited.borrow().clone());
        match known {
            Some(None) => Ok(Status::Running),
            Some(Some(reason)) => Ok(Status::Stopped {
                reason,
                log_tail: Vec::new(),
            }),
            None if alive(pid, start) => Ok(Status::Running),
            None => Ok(Status::Stopped {
                reason: "the server is gone (exit status unknown)".into(),
                log_tail: Vec::new(),
            }),
        }
    }

    async fn stop(
        &self,
        _user: &str,
        _server_name: &str,
        state: &serde_json::Value,
        now: bool,
    ) -> Result<(), Error> {
        let (pid, start) = pid_of(state);
        let tracked = {
            let children = self.children.lock().expect("children map poisoned");
            children.get(&pid).map(|c| c.exited.borrow().is_some())
        };
        match tracked {
            Some(true) => {
                self.children
                    .lock()
                    .expect("children map poisoned")
                    .remove(&pid);
                return Ok(());
            }
            Some(false) => {
                if let Some(child) = self
                    .children
                    .lock()
                    .expect("children map poisoned")
                    .get_mut(&pid)
                {
                    child.stopping = true;
                }
            }
            None if !alive(pid, start) => return Ok(()),
            None => {}
        }
        let group = Pid::from_raw(pid);
        if !now {
            let _ = killpg(group, Signal::SIGTERM);
            if self.wait_gone(pid, start, self.grace).await {
                self.children
                    .lock()
                    .expect("children map poisoned")
                    .remove(&pid);
                let _ = killpg(group, Signal::SIGKILL); // stragglers of the group
                return Ok(());
            }
        }
        let _ = killpg(group, Signal::SIGKILL);
        let gone = self.wait_gone(pid, start, Duration::from_secs(10)).await;
        self.children
            .lock()
            .expect("children map poisoned")
            .remove(&pid);
        if gone {
            Ok(())
        } else {
            Err(Error::Io(std::io::Error::other(format!(
                "process {pid} did not exit after SIGKILL"
            ))))
        }
    }

    fn subscribe_exits(&self) -> Option<broadcast::Receiver<Exited>> {
        Some(self.exits.subscribe())
    }

    /// The resident memory and CPU time of the server's process group (the server and
    /// what it started: kernels, terminals), from `/proc`.
    async fn usage(
        &self,
        _user: &str,
        _server_name: &str,
        state: &serde_json::Value,
    ) -> Result<super::Usage, Error> {
        let (pid, start) = pid_of(state);
        if !alive(pid, start) {
            return Ok(super::Usage::default());
        }
        Ok(tokio::task::spawn_blocking(move || group_usage(pid))
            .await
            .unwrap_or_default())
    }
}

/// Sum RSS (`statm` pages) and utime + stime (`stat` ticks) over processes in group `pgid`.
fn group_usage(pgid: i32) -> super::Usage {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as u64;
    let (mut rss, mut cpu_ticks, mut seen) = (0u64, 0u64, false);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return super::Usage::default();
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name's last ')': state ppid pgrp ... utime(12) stime(13).
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) != Some(pgid) {
            continue;
        }
        seen = true;
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        cpu_ticks += field(11) + field(12);
        if let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) {
            rss += statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * page;
        }
    }
    if !seen {
        return super::Usage::default();
    }
    super::Usage {
        memory_bytes: Some(rss),
        cpu_nsec: Some(cpu_ticks * (1_000_000_000 / ticks)),
    }
}
