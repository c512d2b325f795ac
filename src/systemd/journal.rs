//! Reading the journal: a unit's last lines (its output and systemd's messages about it) and
//! the kernel's OOM reports. Through `journalctl`, the journal's stable reading interface.

use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::Error;

/// How long `journalctl` may take before we give up on it.
const TIMEOUT: Duration = Duration::from_secs(25);

async fn journalctl(args: &[&str]) -> Result<Vec<String>, Error> {
    #[allow(clippy::disallowed_methods)] // reads the journal; no user input reaches argv unescaped
    let output = tokio::process::Command::new("journalctl")
        .args(["--no-pager", "-q", "-o", "cat"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output();
    let output = tokio::time::timeout(TIMEOUT, output)
        .await
        .map_err(|_| Error::JournalTimedOut)??;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// The last `lines` lines `unit` logged, from `since_usec` (realtime µs, second granularity)
/// on, so earlier runs of the same unit are left out; 0 means no bound. Empty when the
/// journal cannot be read.
pub async fn tail(unit: &str, lines: usize, since_usec: u64) -> Vec<String> {
    let n = lines.to_string();
    let since = format!("@{}", since_usec / 1_000_000);
    let mut args = vec!["-u", unit, "-n", &n];
    if since_usec > 0 {
        args.extend(["--since", &since]);
    }
    journalctl(&args).await.unwrap_or_default()
}

/// Whether the kernel log reports an OOM kill in `unit`'s cgroup since `since_usec` (the
/// unit's main process start; pids are not compared: the kernel logs them as seen from the
/// root pid namespace). journald reads the kernel log on its own schedule, so a missing
/// report is looked for a few more times.
pub async fn kernel_oom_killed(unit: &str, since_usec: u64) -> bool {
    let memcg = "task_memcg=";
    let unit_memcg = format!("/{unit},");
    let since = format!("@{}", since_usec / 1_000_000);
    let args: Vec<&str> = if since_usec > 0 {
        vec!["-k", "--since", &since]
    } else {
        vec!["-k", "-n", "400"]
    };
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let Ok(lines) = journalctl(&args).await else {
            return false;
        };
        if lines.iter().any(|line| {
            line.starts_with("oom-kill:")
                && line
                    .split(memcg)
                    .nth(1)
                    .is_some_and(|rest| rest.contains(&unit_memcg))
        }) {
            return true;
        }
    }
    false
}

/// `unit`'s last `lines` lines, then each new line as it is logged, for as long as the stream
/// is kept: dropping it ends `journalctl -f` (killed on drop). One process, so no line falls
/// between the tail and the follow.
pub fn follow(
    unit: &str,
    lines: usize,
) -> Result<impl Stream<Item = String> + Send + use<>, Error> {
    let n = lines.to_string();
    #[allow(clippy::disallowed_methods)] // reads the journal; the unit name is one argv entry
    let mut child = tokio::process::Command::new("journalctl")
        .args(["--no-pager", "-q", "-o", "cat", "-f", "-n", &n, "-u", unit])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Io(std::io::Error::other("journalctl has no stdout")))?;
    let reader = BufReader::new(stdout).lines();
    Ok(futures_util::stream::unfold(
        (child, reader),
        |(child, mut reader)| async move {
            match reader.next_line().await {
                Ok(Some(line)) => Some((line, (child, reader))),
                _ => None,
            }
        },
    ))
}
