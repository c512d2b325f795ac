//! Everything that speaks to systemd: D-Bus, sd_notify, socket activation, the journal.

pub mod activation;
pub mod dbus;
pub mod notify;

/// Whether systemd runs this machine (as `sd_booted()` checks).
pub fn is_pid1() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

/// Whether stderr is connected to the journal (`JOURNAL_STREAM` names its device and inode).
pub fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    stream == format!("{}:{}", stat.st_dev, stat.st_ino)
}
