//! The contained systemd every system test runs against, and small helpers they share.
//! Only one contained systemd may run at a time (they share the host's cgroup tree): every
//! test holds `serial()` while its `Contained` lives.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

#[path = "../common/root.rs"]
mod root;
pub use root::require_root;

/// Held by each test for its whole life, so two contained systemds never run at once.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    // A test that panicked released it by unwinding: its Contained is already gone.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A directory both the host and the container see (the container's /tmp and /run are
/// private, and checkouts often live under /tmp), readable by every user.
pub fn shared_dir() -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let shared = PathBuf::from("/var/lib/jupyterhub-rs-tests");
    std::fs::create_dir_all(&shared).expect("create /var/lib/jupyterhub-rs-tests");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755))
        .expect("chmod /var/lib/jupyterhub-rs-tests");
    shared
}

/// A contained systemd as PID 1 of fresh namespaces; killed (with everything in it) on drop.
pub struct Contained {
    pub pid1: i32,
    unshare: std::process::Child,
}

impl Contained {
    /// Boot one in its own cgroup subtree `cgroup` and wait until it is up.
    pub fn boot(cgroup: &str) -> Contained {
        Self::boot_with(cgroup, "")
    }

    /// As `boot`, but with the cgroup hierarchies mounted afresh inside, so the contained
    /// systemd sees `cgroup` as its root. Without that, on a host with cgroup v1 or hybrid
    /// controllers it sees the host's tree (its own cgroup is `/../init.scope`), which it
    /// survives at boot but not `systemctl daemon-reexec`: the new instance cannot make
    /// its manager object and PID 1 exits.
    pub fn boot_with_own_cgroups(cgroup: &str) -> Contained {
        Self::boot_with(
            cgroup,
            r#"if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
      mount -t cgroup2 cgroup2 /sys/fs/cgroup
    else
      mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
      mkdir /sys/fs/cgroup/unified /sys/fs/cgroup/systemd
      mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
      mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
      for c in memory cpu cpuacct pids; do
        mkdir /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c || true
      done
    fi"#,
        )
    }

    fn boot_with(cgroup: &str, mounts: &str) -> Contained {
        let script = format!(
            r#"for h in systemd unified memory cpu cpuacct pids; do
  mkdir -p /sys/fs/cgroup/$h/{cgroup} 2>/dev/null || true
  echo $$ > /sys/fs/cgroup/$h/{cgroup}/cgroup.procs 2>/dev/null || true
done
exec unshare --pid --fork --kill-child --mount --uts --ipc --cgroup --propagation private --mount-proc \
  env container=unshare sh -c '
    for d in /run /tmp /var/tmp; do mount -t tmpfs -o mode=1777 tmpfs $d; done
    mount -t tmpfs -o mode=755 tmpfs /var/log/journal
    mkdir -p /run/lock
    {mounts}
    exec /lib/systemd/systemd --system --log-target=console --log-level=warning --unit=basic.target' >/dev/null 2>&1"#
        );
        let unshare = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare");
        let mut contained = Contained { pid1: 0, unshare };
        let parent = contained.unshare.id();
        for _ in 0..200 {
            if let Some(pid) = children(parent)
                .into_iter()
                .find(|c| comm(*c).as_deref() == Some("systemd"))
            {
                contained.pid1 = pid;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(contained.pid1 > 0, "the contained systemd did not start");
        for _ in 0..200 {
            let state = contained.run(&["systemctl", "is-system-running"]);
            if matches!(state.trim(), "running" | "degraded") {
                return contained;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the contained systemd did not finish booting");
    }

    /// A command that runs inside (all namespaces of the contained PID 1).
    pub fn nsenter(&self) -> Command {
        let mut command = Command::new("nsenter");
        command.args(["-t", &self.pid1.to_string(), "-a"]);
        command
    }

    fn output(&self, argv: &[&str]) -> std::process::Output {
        self.nsenter()
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// Run a command inside; its stdout.
    pub fn run(&self, argv: &[&str]) -> String {
        String::from_utf8_lossy(&self.output(argv).stdout).into_owned()
    }

    /// Run a command inside and insist that it succeeds; its stdout.
    #[track_caller]
    pub fn run_ok(&self, argv: &[&str]) -> String {
        let output = self.output(argv);
        assert!(
            output.status.success(),
            "{argv:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// One property of a unit (`systemctl show -p NAME --value`).
    pub fn prop(&self, unit: &str, name: &str) -> String {
        self.run(&["systemctl", "show", unit, "-p", name, "--value"])
            .trim()
            .to_owned()
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        if self.pid1 > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid1),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn children(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    out
}

fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Create a login account (with a home) unless it exists.
pub fn ensure_user(name: &str) {
    if nix::unistd::User::from_name(name).ok().flatten().is_none() {
        let status = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/bash", name])
            .status()
            .expect("useradd");
        assert!(status.success(), "useradd {name}");
    }
}

#[path = "../common/port.rs"]
mod port;
pub use port::{ReservedPort, reserve_port};
