//! System tests: real systemd (a contained PID 1), real users. Run as root.

mod accounts;
mod chaos;
mod harness;
mod hub;
mod spawner;
