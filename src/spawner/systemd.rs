//! The `systemd` spawner: each server is a transient unit started over D-Bus.
