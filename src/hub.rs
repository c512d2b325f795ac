//! The `Hub` handle (being written).
use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Offline,
}

#[derive(Clone)]
pub struct Hub;

impl Hub {
    pub async fn open(_config: Config, _mode: Mode) -> Result<Hub, std::io::Error> {
        Err(std::io::Error::other("not yet"))
    }
    pub fn issue_cli_token(&self, _user: &str, _note: &str, _scopes: &[String], _expires_in: Option<u64>) -> Result<String, std::io::Error> {
        Err(std::io::Error::other("not yet"))
    }
}
