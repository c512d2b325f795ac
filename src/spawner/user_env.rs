//! The Python environment `--dev` runs servers from, made on first use as
//! `jupyterhub setup-user-env` does (a venv with `jupyterhub` and JupyterLab from PyPI),
//! reporting how far it got. A finished environment is marked, so a half-made one (the hub
//! stopped, the network failed) is made again instead of being run.

use std::path::{Path, PathBuf};

use tokio::io::AsyncBufReadExt as _;

use super::Error;

/// What the dev environment installs.
pub const REQUIREMENTS: &[&str] = &["jupyterhub>=5.3,<7", "jupyterlab"];

/// Written last: its presence says the environment is complete.
const MARKER: &str = ".jupyterhub-dev-complete";

/// Written first (after the venv): a half-made environment may be removed and made again.
const PARTIAL: &str = ".jupyterhub-dev-partial";

/// One environment is made at a time (two users spawning at once share it).
static MAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A line of pip's output that moves the progress bar.
#[derive(Debug, PartialEq, Eq)]
pub enum PipLine {
    /// `Collecting NAME…`: one more package resolved.
    Collecting(String),
    /// `Installing collected packages: a, b, c`: the download is over; this many to install.
    Installing(usize),
    /// `Successfully installed …`.
    Done,
}

/// Read one line of `pip install` output (with `--progress-bar off`).
pub fn parse_pip_line(line: &str) -> Option<PipLine> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("Collecting ") {
        let name = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .next()
            .unwrap_or(rest);
        return Some(PipLine::Collecting(name.to_owned()));
    }
    if let Some(rest) = line.strip_prefix("Installing collected packages:") {
        let count = rest.split(',').filter(|p| !p.trim().is_empty()).count();
        return Some(PipLine::Installing(count));
    }
    if line.starts_with("Successfully installed") {
        return Some(PipLine::Done);
    }
    None
}

/// Progress (of the spawn's 0–100) after `collected` packages: 10 to 40, approaching 40 as
/// the count grows (the total is not known beforehand; JupyterLab pulls in about 90).
pub fn collecting_progress(collected: usize) -> u8 {
    let share = collected as f64 / (collected as f64 + 40.0);
    10 + (30.0 * share) as u8
}

/// Make the environment at `prefix` from `python` unless it is there; `progress` is told
/// (percent, message) as it goes. Errors name the Debian package that would fix them.
pub async fn ensure(
    prefix: &Path,
    python: &Path,
    progress: impl Fn(u8, String),
) -> Result<PathBuf, Error> {
    let _making = MAKING.lock().await;
    let singleuser = prefix.join("bin/jupyterhub-singleuser");
    let partial = prefix.join(PARTIAL);
    if prefix.join(MARKER).is_file() || (singleuser.is_file() && !partial.exists()) {
        // Ours, finished; or a venv made elsewhere (`setup-user-env`, a test's), used as is.
        return Ok(singleuser);
    }
    if partial.exists() {
        tracing::info!(prefix = %prefix.display(), "removing a half-made single-user environment");
        std::fs::remove_dir_all(prefix)?;
    } else if std::fs::read_dir(prefix).is_ok_and(|mut d| d.next().is_some()) {
        // Not ours: never removed.
        return Err(Error::UserEnv(format!(
            "{} exists but holds no bin/jupyterhub-singleuser: remove it, or name another \
             directory in {}",
            prefix.display(),
            crate::config::DEV_USER_ENV_VAR
        )));
    }
    // Marked half-made before anything is in it, so whatever an interruption leaves is ours
    // to remove.
    std::fs::create_dir_all(prefix)?;
    std::fs::write(&partial, b"")?;
    let message = format!(
        "Creating the single-user Python environment in {} (first start only)",
        prefix.display()
    );
    tracing::info!("{message}");
    progress(5, message);
    let output = tokio::process::Command::new(python)
        .arg("-m")
        .arg("venv")
        .arg(prefix)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::UserEnv(format!(
                    "{} was not found: install the Debian packages python3 and python3-venv \
                     (apt install python3 python3-venv)",
                    python.display()
                ))
            } else {
                Error::UserEnv(format!("could not run {}: {e}", python.display()))
            }
        })?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(prefix);
        let stderr = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("ensurepip") || stderr.contains("venv") {
            "install the Debian package python3-venv (apt install python3-venv)"
        } else {
            "check that python3 and python3-venv are installed"
        };
        return Err(Error::UserEnv(format!(
            "{} -m venv failed ({}): {hint}; it said: {}",
            python.display(),
            output.status,
            last_lines(&stderr, 3)
        )));
    }
    progress(
        10,
        format!("Installing {} from PyPI", REQUIREMENTS.join(" and ")),
    );
    let pip = prefix.join("bin/pip");
    let mut child = tokio::process::Command::new(&pip)
        .args([
            "install",
            "--progress-bar",
            "off",
            "--disable-pip-version-check",
        ])
        .args(REQUIREMENTS)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::UserEnv(format!("could not run {}: {e}", pip.display())))?;
    let stderr = child.stderr.take().map(|s| {
        tokio::spawn(async move {
            let mut text = String::new();
            let mut lines = tokio::io::BufReader::new(s).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(pip = %line);
                text.push_str(&line);
                text.push('\n');
            }
            text
        })
    });
    let mut collected = 0usize;
    if let Some(stdout) = child.stdout.take() {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(pip = %line);
            match parse_pip_line(&line) {
                Some(PipLine::Collecting(name)) => {
                    collected += 1;
                    let message =
                        format!("Installing: collecting {name} ({collected} packages so far)");
                    if collected % 10 == 1 {
                        tracing::info!("{message}");
                    }
                    progress(collecting_progress(collected), message);
                }
                Some(PipLine::Installing(count)) => {
                    let message = format!("Installing {count} downloaded packages");
                    tracing::info!("{message}");
                    progress(42, message);
                }
                Some(PipLine::Done) | None => {}
            }
        }
    }
    let status = child.wait().await?;
    let stderr = match stderr {
        Some(task) => task.await.unwrap_or_default(),
        None => String::new(),
    };
    if !status.success() {
        let network = [
            "connection",
            "resolve",
            "network",
            "No matching distribution",
            "timed out",
        ]
        .iter()
        .any(|w| stderr.contains(w));
        let hint = if network {
            "pip could not reach PyPI (no network, or a proxy is needed?)"
        } else {
            "pip failed"
        };
        return Err(Error::UserEnv(format!(
            "{hint}; the half-made environment in {} is made again next time; pip said: {}",
            prefix.display(),
            last_lines(&stderr, 3)
        )));
    }
    std::fs::write(prefix.join(MARKER), b"")?;
    let _ = std::fs::remove_file(&partial);
    let message = format!(
        "The single-user environment in {} is ready",
        prefix.display()
    );
    tracing::info!("{message}");
    progress(45, message);
    Ok(singleuser)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_lines() {
        assert_eq!(
            parse_pip_line("Collecting jupyterlab"),
            Some(PipLine::Collecting("jupyterlab".into()))
        );
        assert_eq!(
            parse_pip_line("Collecting jupyterhub<7,>=5.3"),
            Some(PipLine::Collecting("jupyterhub".into()))
        );
        assert_eq!(
            parse_pip_line("  Collecting async-lru>=1.0.0 (from jupyterlab)"),
            Some(PipLine::Collecting("async-lru".into()))
        );
        assert_eq!(
            parse_pip_line("Installing collected packages: six, idna, jupyterlab"),
            Some(PipLine::Installing(3))
        );
        assert_eq!(
            parse_pip_line("Successfully installed idna-3.7 six-1.16.0"),
            Some(PipLine::Done)
        );
        assert_eq!(
            parse_pip_line("  Downloading jupyterlab-4.2.0-py3-none-any.whl (11.6 MB)"),
            None
        );
        assert_eq!(parse_pip_line("Requirement already satisfied: six"), None);
    }

    #[test]
    fn progress_grows_and_stays_below_the_install_step() {
        assert_eq!(collecting_progress(0), 10);
        let mut last = 10;
        for n in 1..500 {
            let p = collecting_progress(n);
            assert!(p >= last && p < 42, "{n}: {p}");
            last = p;
        }
        assert!(collecting_progress(90) >= 30);
    }
}
