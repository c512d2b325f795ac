//! Listeners and start-up (being written).
use crate::config::Config;

pub fn init_logging(_level: Option<&str>) {}

pub async fn run(_config: Config) -> std::io::Result<()> {
    Err(std::io::Error::other("not yet"))
}

pub async fn serve() {}
