//! Everything that speaks to systemd: D-Bus, sd_notify, socket activation, the journal.

pub mod dbus;

/// Whether systemd runs this machine (as `sd_booted()` checks).
pub fn is_pid1() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}
