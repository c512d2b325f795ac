//! The privileged helper's wire protocol: one JSON request line per unix-socket connection,
//! one JSON response line back. A leaf: it carries the spawner's `SpawnRequest` data type
//! (and the managed services' variables) but knows neither the helper nor any spawner,
//! authenticator or service runner.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::spawner::SpawnRequest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("privileged helper: {0}")]
    Io(#[from] std::io::Error),
    #[error("privileged helper protocol error: {0}")]
    Protocol(String),
}

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
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Started { started: StartedWire },
    Pam { valid: bool },
    ServiceStarted { pid: u32 },
    Account { outcome: AccountOutcome },
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
    let mut stream = UnixStream::connect(socket).await?;
    stream.write_all(encode(request)?.as_bytes()).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    serde_json::from_str(&line).map_err(|e| Error::Protocol(format!("bad answer {line:?}: {e}")))
}
