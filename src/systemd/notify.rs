//! sd_notify: `READY=1` once the hub can serve, `STATUS=` lines, `WATCHDOG=1` from the event
//! loop, `STOPPING=1` on the way out. All are no-ops when `NOTIFY_SOCKET` is unset.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping; user servers keep running"),
    ]);
}

/// Ping the watchdog at half its interval from a task on the runtime, so a wedged event
/// loop gets the hub restarted. `status` is refreshed on the same tick.
pub fn spawn_watchdog(
    status_line: impl Fn() -> String + Send + 'static,
    stop: tokio_util::sync::CancellationToken,
) {
    let every = sd_notify::watchdog_enabled()
        .map(|d| d / 2)
        .unwrap_or(Duration::from_secs(30));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {
                    let line = status_line();
                    send(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
                }
            }
        }
    });
}
