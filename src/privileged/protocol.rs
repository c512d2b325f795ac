//! The privileged helper's wire protocol: one JSON request line per unix-socket connection,
//! one JSON response line back. A leaf: it carries the spawner's `SpawnRequest` data type
//! (and the managed services' variables) but knows neither the helper nor any spawner,
//! authenticator or service runner.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::spawner::SpawnRequest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("privileged helper: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "cannot reach the privileged helper at {socket}: {error} (is jupyterhub-helper.socket running?)"
    )]
    Connect {
        socket: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the privileged helper closed the connection without answering (did it stop or crash? \
         see journalctl -u jupyterhub-helper)"
    )]
    Closed,
    #[error("the privileged helper did not answer within {0:?}")]
    Timeout(Duration),
    #[error("privileged helper protocol error: {0}")]
    Protocol(String),
}

/// How long the hub waits for the helper's answer: a PAM check or a unit start takes seconds
/// at most, so a helper still silent after this is stuck, and a login or spawn must not
/// wait on it forever.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    StartUnit {
        request: Box<SpawnRequest>,
    },
    CheckPam {
        user: String,
        password: String,
    },
    /// Make the system account of hub user `user` (`create_system_users`); the helper
    /// derives the account name from its own `username_template`.
    CreateAccount {
        user: String,
    },
    /// Start the managed service `name` of the helper's own config with the hub's variables
    /// (`JUPYTERHUB_*` only); `fingerprint` labels the unit for adoption.
    StartService {
        name: String,
        env: std::collections::BTreeMap<String, String>,
        fingerprint: String,
    },
    /// Thaw the frozen unit of a user's server (`freeze_idle_after`): systemd checks
    /// `ThawUnit` as starting the unit, which polkit cannot grant the hub without granting
    /// transient starts of any unit of that name.
    ThawUnit {
        unit: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Started { started: StartedWire },
    Pam { valid: bool },
    ServiceStarted { pid: u32 },
    Account { outcome: AccountOutcome },
    Thawed,
    Error { message: String },
}

/// Whether a `CreateAccount` made the account now or found it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountOutcome {
    Created,
    Existed,
}

/// `Started` on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartedWire {
    pub url: String,
    pub state: serde_json::Value,
}

/// The longest request line the helper reads (a `SpawnRequest` with its environment).
pub const MAX_REQUEST: u64 = 1 << 20;

/// One message as a line.
pub fn encode(message: &impl Serialize) -> Result<String, Error> {
    let mut text = serde_json::to_string(message).map_err(|e| Error::Protocol(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// Send one request to the helper and read its answer.
pub async fn call(socket: &Path, request: &Request) -> Result<Response, Error> {
    call_within(socket, request, ANSWER_TIMEOUT).await
}

/// `call`, giving up after `within`.
pub async fn call_within(
    socket: &Path,
    request: &Request,
    within: Duration,
) -> Result<Response, Error> {
    let exchange = async {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(|error| Error::Connect {
                socket: socket.to_owned(),
                error,
            })?;
        // A helper that dies after accepting resets the connection or simply closes it.
        let closed = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => Error::Closed,
            _ => Error::Io(e),
        };
        stream
            .write_all(encode(request)?.as_bytes())
            .await
            .map_err(closed)?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if reader.read_line(&mut line).await.map_err(closed)? == 0 {
            return Err(Error::Closed);
        }
        serde_json::from_str(&line)
            .map_err(|e| Error::Protocol(format!("bad answer {line:?}: {e}")))
    };
    tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| Error::Timeout(within))?
}
