//! Everything that speaks to systemd (being written: see issues #4 and #6).

pub mod dbus;
