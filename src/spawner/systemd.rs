//! The `systemd` spawner (interim; see issue #4).
use super::*;
use crate::config::Config;

pub struct SystemdSpawner;

impl SystemdSpawner {
    pub async fn new(_config: &Config) -> Result<SystemdSpawner, Error> {
        Ok(SystemdSpawner)
    }
}

#[async_trait::async_trait]
impl Spawner for SystemdSpawner {
    fn name(&self) -> &'static str {
        "systemd"
    }
    fn supports_limits(&self) -> bool {
        false
    }
    async fn start(&self, _request: &SpawnRequest) -> Result<Started, Error> {
        Err(Error::Refused("not yet".into()))
    }
    async fn poll(&self, _u: &str, _s: &str, _state: &serde_json::Value) -> Result<Status, Error> {
        Ok(Status::Stopped {
            reason: "unknown".into(),
            log_tail: vec![],
        })
    }
    async fn stop(
        &self,
        _u: &str,
        _s: &str,
        _state: &serde_json::Value,
        _now: bool,
    ) -> Result<(), Error> {
        Ok(())
    }
}
