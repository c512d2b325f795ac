//! The privileged helper (being written: see issue #6).

#[derive(Debug, clap::Args)]
pub struct HelperArgs {}

pub async fn run_helper(_args: HelperArgs) -> std::io::Result<()> {
    Err(std::io::Error::other("not yet available"))
}
