//! The built-in proxy (being written: see issue #3).

/// Flags of `jupyterhub proxy`, as configurable-http-proxy's.
#[derive(Debug, clap::Args)]
pub struct ChpArgs {}

pub async fn run_chp(_args: ChpArgs) -> std::io::Result<()> {
    Err(std::io::Error::other("not yet available"))
}
