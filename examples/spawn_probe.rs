//! Test helper for the system tests: drives the `systemd` spawner from one JSON command on
//! stdin and prints one JSON answer. The tests run it inside the contained systemd (nsenter),
//! so it talks to that systemd's system bus exactly as the hub would.
//!
//! Input: `{"config": "<TOML>", "action": "start"|"poll"|"stop"|"list"|"start_wait_exit", ...}`.

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use jupyterhub::config::Config;
use jupyterhub::spawner::systemd::SystemdSpawner;
use jupyterhub::spawner::{Error, SpawnRequest, Spawner, Status};
use serde_json::{Value, json};

fn error_json(e: &Error) -> Value {
    let (kind, log_tail) = match e {
        Error::StartFailed { log_tail, .. } => ("StartFailed", log_tail.clone()),
        Error::CommandNotFound(_) => ("CommandNotFound", Vec::new()),
        Error::NoSuchSystemUser(_) => ("NoSuchSystemUser", Vec::new()),
        Error::Refused(_) => ("Refused", Vec::new()),
        Error::Systemd(_) => ("Systemd", Vec::new()),
        Error::Io(_) => ("Io", Vec::new()),
        Error::UserEnv(_) => ("UserEnv", Vec::new()),
        Error::FreezeUnsupported(_) => ("FreezeUnsupported", Vec::new()),
    };
    json!({"ok": false, "kind": kind, "error": e.to_string(), "log_tail": log_tail})
}

fn status_json(status: Status) -> Value {
    match status {
        Status::Running => json!({"status": "running"}),
        Status::Stopped { reason, log_tail } => {
            json!({"status": "stopped", "reason": reason, "log_tail": log_tail})
        }
    }
}

fn str_field<'a>(input: &'a Value, key: &str) -> &'a str {
    input.get(key).and_then(Value::as_str).unwrap_or_default()
}

async fn run(input: Value) -> Result<Value, Error> {
    let config: Config = toml::from_str(str_field(&input, "config"))
        .map_err(|e| Error::Refused(format!("config: {e}")))?;
    let spawner = SystemdSpawner::connect(Arc::new(config)).await?;
    let request = || -> Result<SpawnRequest, Error> {
        serde_json::from_value(input.get("request").cloned().unwrap_or_default())
            .map_err(|e| Error::Refused(format!("request: {e}")))
    };
    let (user, server) = (str_field(&input, "user"), str_field(&input, "server"));
    let state = input.get("state").cloned().unwrap_or_default();
    Ok(match str_field(&input, "action") {
        "start" => {
            let started = spawner.start(&request()?).await?;
            json!({"ok": true, "url": started.url, "state": started.state})
        }
        "poll" => {
            let mut answer = status_json(spawner.poll(user, server, &state).await?);
            answer["ok"] = json!(true);
            answer
        }
        "stop" => {
            let now = input.get("now").and_then(Value::as_bool).unwrap_or(false);
            spawner.stop(user, server, &state, now).await?;
            json!({"ok": true})
        }
        "list" => json!({"ok": true, "units": spawner.list_units().await?}),
        // Start, then wait for the spawner to announce the server's own exit, then poll it.
        "start_wait_exit" => {
            let request = request()?;
            let mut exits = spawner
                .subscribe_exits()
                .ok_or_else(|| Error::Refused("no exit announcements".into()))?;
            let started = spawner.start(&request).await?;
            let exited = tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    match exits.recv().await {
                        Ok(e) if e.user == request.user && e.server_name == request.server_name => {
                            return Some(e);
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            continue;
                        }
                        Err(_) => return None,
                    }
                }
            })
            .await
            .ok()
            .flatten();
            // `"poll": false` leaves the unit as the exit left it (poll cleans up).
            let polled = if input.get("poll") == Some(&json!(false)) {
                Value::Null
            } else {
                status_json(
                    spawner
                        .poll(&request.user, &request.server_name, &started.state)
                        .await?,
                )
            };
            json!({
                "ok": true,
                "state": started.state,
                "exited": exited.map(|e| json!({"reason": e.reason, "log_tail": e.log_tail})),
                "poll": polled,
            })
        }
        // Start `request` and stop it, then start `then` (which exits by itself): the first
        // exit announced must be `then`'s, since systemd's signals arrive in order and a stop
        // we asked for is not an exit.
        "stop_is_quiet" => {
            let first = request()?;
            let then: SpawnRequest = serde_json::from_value(input["then"].clone())
                .map_err(|e| Error::Refused(format!("then: {e}")))?;
            let mut exits = spawner
                .subscribe_exits()
                .ok_or_else(|| Error::Refused("no exit announcements".into()))?;
            let started = spawner.start(&first).await?;
            spawner
                .stop(&first.user, &first.server_name, &started.state, false)
                .await?;
            spawner.start(&then).await?;
            let exited = tokio::time::timeout(Duration::from_secs(60), exits.recv())
                .await
                .ok()
                .and_then(Result::ok);
            json!({
                "ok": true,
                "first_exit": exited.map(|e| json!({"user": e.user, "server": e.server_name, "reason": e.reason})),
            })
        }
        other => return Err(Error::Refused(format!("unknown action {other:?}"))),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut text = String::new();
    let answer = match std::io::stdin().read_to_string(&mut text) {
        Err(e) => json!({"ok": false, "kind": "Io", "error": e.to_string()}),
        Ok(_) => match serde_json::from_str::<Value>(&text) {
            Err(e) => json!({"ok": false, "kind": "Input", "error": e.to_string()}),
            Ok(input) => run(input).await.unwrap_or_else(|e| error_json(&e)),
        },
    };
    println!("{answer}");
}
