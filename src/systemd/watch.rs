//! Units' exits as they happen: a stream of systemd's `PropertiesChanged` signals for units,
//! turned into "this unit stopped after it had run". The Service properties arrive in their
//! own signal just before the Unit one; they are kept, because a unit may be
//! garbage-collected before its exit could be read.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use zbus::OwnedVariant;

use super::unit::{ExitInfo, Systemd};
use super::{Error, dbus};

/// A unit that became inactive or failed after it had left `inactive`.
#[derive(Debug, Clone)]
pub struct UnitExit {
    pub unit: String,
    /// What the signals said about the main process (empty if none came).
    pub signalled: ExitInfo,
}

/// The exits of the units a filter accepts. Call `Systemd::subscribe` after `Systemd::watch`,
/// or systemd sends no unit signals.
pub struct Watch {
    stream: zbus::MessageStream,
    /// systemd taking its bus name again (after `daemon-reexec`, or reconnecting to a
    /// restarted bus): the watch subscribes again, as a stop after a re-execution was once
    /// seen to wait in vain for its `JobRemoved`. A repeated `Subscribe` is harmless.
    owners: zbus::MessageStream,
    systemd: Systemd,
    wanted: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// Service properties signalled per unit, until its exit.
    last: HashMap<String, ExitInfo>,
    /// Units seen in a state other than inactive/failed.
    ran: HashSet<String>,
}

type Changed = (String, HashMap<String, OwnedVariant>, Vec<String>);

fn take<T: TryFrom<OwnedVariant>>(
    changed: &mut HashMap<String, OwnedVariant>,
    key: &str,
) -> Option<T> {
    changed.remove(key).and_then(|v| T::try_from(v).ok())
}

impl Systemd {
    /// Watch the units whose names `wanted` accepts.
    pub async fn watch(
        &self,
        wanted: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Result<Watch, Error> {
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(dbus::DESTINATION)
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .path_namespace("/org/freedesktop/systemd1/unit")
            .build()
            .map_err(Error::bus("match rule"))?;
        let conn = self.connection().await?;
        let stream = zbus::MessageStream::for_match_rule(rule, &conn, None)
            .await
            .map_err(Error::bus("adding the match rule"))?;
        let owner_rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender("org.freedesktop.DBus")
            .interface("org.freedesktop.DBus")
            .member("NameOwnerChanged")
            .arg(0, dbus::DESTINATION)
            .build()
            .map_err(Error::bus("match rule"))?;
        let owners = zbus::MessageStream::for_match_rule(owner_rule, &conn, None)
            .await
            .map_err(Error::bus("adding the match rule"))?;
        Ok(Watch {
            stream,
            owners,
            systemd: self.clone(),
            wanted: Box::new(wanted),
            last: HashMap::new(),
            ran: HashSet::new(),
        })
    }

    /// How the unit of `exit` ended: read from systemd while the unit is loaded, else what
    /// the signals said. Asked about a unit it already garbage-collected (a clean exit),
    /// systemd loads an empty stub (`Result=success`, no PID), which is not believed.
    pub async fn exit_info_of(&self, exit: UnitExit) -> ExitInfo {
        match self.exit_info(&exit.unit).await {
            Some(info) if !info.result.is_empty() && info.pid != 0 => info,
            _ => exit.signalled,
        }
    }
}

impl Watch {
    /// The next exit; `None` once the signal stream has ended.
    pub async fn next_exit(&mut self) -> Option<UnitExit> {
        loop {
            let message = tokio::select! {
                message = self.stream.next() => message?,
                Some(owner) = self.owners.next() => {
                    self.owner_changed(owner).await;
                    continue;
                }
            };
            let Ok(message) = message else { continue };
            let header = message.header();
            let Some(unit) = header
                .path()
                .and_then(|p| dbus::unit_from_object_path(p.as_str()))
            else {
                continue;
            };
            if !(self.wanted)(&unit) {
                continue;
            }
            let Ok((interface, mut changed, _)) = message.body().deserialize::<Changed>() else {
                continue;
            };
            match interface.as_str() {
                "org.freedesktop.systemd1.Service" => {
                    let info = self.last.entry(unit).or_default();
                    if let Some(v) = take(&mut changed, "Result") {
                        info.result = v;
                    }
                    if let Some(v) = take(&mut changed, "ExecMainCode") {
                        info.code = v;
                    }
                    if let Some(v) = take(&mut changed, "ExecMainStatus") {
                        info.status = v;
                    }
                    if let Some(v) = take::<u32>(&mut changed, "ExecMainPID")
                        && v != 0
                    {
                        info.pid = v;
                    }
                    if let Some(v) = take::<u64>(&mut changed, "ExecMainStartTimestamp")
                        && v != 0
                    {
                        info.started_usec = v;
                    }
                }
                "org.freedesktop.systemd1.Unit" => {
                    let Some(state) = take::<String>(&mut changed, "ActiveState") else {
                        continue;
                    };
                    if !matches!(state.as_str(), "inactive" | "failed") {
                        self.ran.insert(unit);
                        continue;
                    }
                    // A new transient unit is announced as `inactive` before it starts: only
                    // a unit that has left `inactive` at least once has exited.
                    let seen_running = self.ran.remove(&unit);
                    let has_run = match take::<u64>(&mut changed, "InactiveExitTimestampMonotonic")
                    {
                        Some(t) => t != 0,
                        None => seen_running,
                    };
                    if !has_run {
                        continue;
                    }
                    let signalled = self.last.remove(&unit).unwrap_or_default();
                    return Some(UnitExit { unit, signalled });
                }
                _ => {}
            }
        }
    }

    async fn owner_changed(&self, message: zbus::Result<zbus::Message>) {
        let Ok(message) = message else { return };
        let Ok((_, _, new_owner)) = message.body().deserialize::<(String, String, String)>() else {
            return;
        };
        if new_owner.is_empty() {
            return;
        }
        // A Subscribe sent the moment the new instance takes its name can go unanswered
        // (seen with systemd 252): retried with short timeouts, beside the watch, which
        // goes on reading signals meanwhile.
        let systemd = self.systemd.clone();
        tokio::spawn(async move {
            for attempt in 1..=20u32 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                match tokio::time::timeout(Duration::from_secs(2), systemd.subscribe()).await {
                    Ok(Ok(())) => {
                        tracing::warn!(
                            owner = %new_owner,
                            attempt,
                            "systemd took its bus name again (re-executed): subscribed to its signals again"
                        );
                        return;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "Subscribe after re-execution"),
                    Err(_) => tracing::debug!("Subscribe after re-execution: no answer yet"),
                }
            }
            tracing::error!(
                "systemd re-executed and does not take a subscription again: exits are noticed by polling only"
            );
        });
    }
}
