//! What an admin reads about what runs (ours, beside upstream's API, for the admin panel and
//! scripts): servers' logs and live resource use in one call for a page of users, the
//! figures of all servers together, and managed services' restarts and logs.

use serde_json::{Value, json};

use crate::db;
use crate::rbac::Resource;
use crate::spawner::LogStream;

use super::{Error, Hub, Identity, Result, UserRow};

/// At most this many lines in one log answer.
pub const MAX_LOG_LINES: usize = 5000;

/// At most this many users in one overview (a page of the admin panel is at most 200).
pub const MAX_OVERVIEW_USERS: usize = 500;

impl Hub {
    fn spawner_row(&self, user: &UserRow, server_name: &str) -> Result<db::SpawnerRow> {
        self.db
            .read(|c| db::spawner(c, user.id, server_name))?
            .ok_or_else(|| {
                Error::NotFound(format!("{} has no server named '{server_name}'", user.name))
            })
    }

    /// The last `lines` lines of `user`'s server `server_name` (this run or the last), and why
    /// it last failed, as JSON. `available` is false when the spawner keeps no log of its own.
    pub async fn server_log(
        &self,
        user: &UserRow,
        server_name: &str,
        lines: usize,
    ) -> Result<Value> {
        let row = self.spawner_row(user, server_name)?;
        let log = self
            .spawner
            .log(
                &user.name,
                server_name,
                &row.state,
                lines.min(MAX_LOG_LINES),
            )
            .await?;
        Ok(json!({
            "user": user.name,
            "server_name": server_name,
            "spawner": self.spawner.name(),
            "available": log.is_some(),
            "lines": log.unwrap_or_default(),
            "last_failure": row.last_failure,
        }))
    }

    /// The same lines, then each new one as the server logs it; `None` when the spawner keeps
    /// no log of its own.
    pub fn follow_server_log(
        &self,
        user: &UserRow,
        server_name: &str,
        lines: usize,
    ) -> Result<Option<LogStream>> {
        let row = self.spawner_row(user, server_name)?;
        Ok(self.spawner.follow_log(
            &user.name,
            server_name,
            &row.state,
            lines.min(MAX_LOG_LINES),
        )?)
    }

    /// For each of `users` the caller may see servers of: every server's state, live use and
    /// limits, and its last failure; and, for a caller holding `read:servers` on every server,
    /// the figures of the hub as a whole. Unknown users are left out, as are servers the
    /// caller may not read.
    pub async fn usage_overview(&self, identity: &Identity, users: &[String]) -> Result<Value> {
        if users.len() > MAX_OVERVIEW_USERS {
            return Err(Error::BadRequest(format!(
                "at most {MAX_OVERVIEW_USERS} users at once, not {}",
                users.len()
            )));
        }
        let mut servers = Vec::new();
        for name in users {
            let Ok(user) = self.user(name) else { continue };
            let groups = self.user_groups(&user)?;
            let limits = crate::spawner::LimitsSpec::from(
                &self.config.spawner.limits_for(&user.name, &groups),
            );
            for row in self.server_records(&user)? {
                let resource = Resource::Server {
                    user: &user.name,
                    server: &row.name,
                    groups: &groups,
                };
                if !identity.allows("read:servers", &resource) {
                    continue;
                }
                let key = (user.id, row.name.clone());
                let pending = self.server_pending(&key);
                let running = row.url.is_some();
                let usage = if running && pending.is_none() {
                    // A server that cannot be read now (gone between the query and the
                    // read) shows no figures rather than failing the whole page.
                    self.spawner
                        .usage(&user.name, &row.name, &row.state)
                        .await
                        .unwrap_or_default()
                } else {
                    crate::spawner::Usage::default()
                };
                servers.push(json!({
                    "user": user.name,
                    "server_name": row.name,
                    "running": running,
                    "ready": running && self.server_ready(&key) && pending.is_none(),
                    "pending": pending,
                    "memory_bytes": usage.memory_bytes,
                    "mem_limit": limits.mem_limit,
                    "cpu_seconds": usage.cpu_nsec.map(|n| n as f64 / 1e9),
                    "cpu_limit": limits.cpu_limit,
                    "last_failure": if running { Value::Null } else { row.last_failure.clone().unwrap_or(Value::Null) },
                }));
            }
        }
        let hub = if identity.allows("read:servers", &Resource::Hub) {
            Some(self.hub_figures().await?)
        } else {
            None
        };
        Ok(json!({
            "time": crate::time::iso(crate::time::now()),
            "spawner": self.spawner.name(),
            "hub": hub,
            "servers": servers,
        }))
    }

    /// Users, running servers and what they use together: the spawner's group (the systemd
    /// slice) when it has one, else the sum over the running servers.
    async fn hub_figures(&self) -> Result<Value> {
        let (users, spawners) = self
            .db
            .read(|c| Ok((db::count_users(c)?, db::all_spawners(c)?)))?;
        let running: Vec<&db::SpawnerRow> = spawners.iter().filter(|s| s.url.is_some()).collect();
        let total = match self.spawner.total_usage().await {
            Ok(total) => total,
            Err(e) => {
                tracing::debug!(error = %e, "no figures for all servers together");
                None
            }
        };
        let (group, memory, cpu, ceiling) = match total {
            Some(t) => (Some(t.group), t.memory_bytes, t.cpu_nsec, t.memory_max),
            None => {
                // Nothing running uses nothing; else the sum of what could be read.
                let nothing = running.is_empty().then_some(0);
                let (mut memory, mut cpu) = (nothing, nothing);
                for row in &running {
                    let Ok(Some(user)) = self.db.read(|c| db::user_by_id(c, row.user_id)) else {
                        continue;
                    };
                    let usage = self
                        .spawner
                        .usage(&user.name, &row.name, &row.state)
                        .await
                        .unwrap_or_default();
                    if let Some(m) = usage.memory_bytes {
                        memory = Some(memory.unwrap_or(0) + m);
                    }
                    if let Some(c) = usage.cpu_nsec {
                        cpu = Some(cpu.unwrap_or(0) + c);
                    }
                }
                (None, memory, cpu, None)
            }
        };
        Ok(json!({
            "users": users,
            "running_servers": running.len(),
            "pending_spawns": self.spawns_pending(),
            "group": group,
            "memory_bytes": memory,
            "memory_limit": ceiling,
            "cpu_seconds": cpu.map(|n| n as f64 / 1e9),
        }))
    }

    /// A managed service's restarts and the last `lines` of its log (ours).
    pub async fn service_log(&self, name: &str, lines: usize) -> Result<Value> {
        self.managed_service(name)?;
        let unit = self.services.log_unit(name);
        let lines = match &unit {
            Some(unit) => crate::systemd::journal::tail(unit, lines.min(MAX_LOG_LINES), 0).await,
            None => Vec::new(),
        };
        Ok(json!({
            "name": name,
            "unit": unit,
            "available": unit.is_some(),
            "pid": self.services.current_pid(name).await,
            "restarts": self.services.restarts(name).await,
            "lines": lines,
            "last_failure": self.services.failure(name).map(|f| json!({
                "reason": f.reason, "log_tail": f.log_tail, "time": crate::time::iso(f.time)
            })),
        }))
    }

    /// The same lines, then each new one; `None` for services run as child processes.
    pub fn follow_service_log(&self, name: &str, lines: usize) -> Result<Option<LogStream>> {
        self.managed_service(name)?;
        match self.services.log_unit(name) {
            Some(unit) => {
                let stream = crate::systemd::journal::follow(&unit, lines.min(MAX_LOG_LINES))
                    .map_err(|e| Error::Unavailable(format!("cannot read the journal: {e}")))?;
                Ok(Some(Box::pin(stream)))
            }
            None => Ok(None),
        }
    }

    /// `name` is a service the hub runs (it has a command); else `NotFound`.
    fn managed_service(&self, name: &str) -> Result<()> {
        let managed = self
            .service_spec(name)?
            .is_some_and(|spec| !spec.command.is_empty());
        if managed {
            Ok(())
        } else {
            Err(Error::NotFound(format!("No managed service named {name}")))
        }
    }
}
