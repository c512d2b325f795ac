//! The privileged helper (`jupyterhub privileged-helper`) and its wire protocol.
//! `protocol` is what callers use (the request and response types and `call`): the PAM
//! authenticator and the systemd spawner of an unprivileged hub. `helper` is the root process
//! behind the socket, on top of both: it validates each request and carries it out.

pub mod helper;
pub mod protocol;

pub use helper::{HelperArgs, run_helper};
pub use protocol::{Request, Response, StartedWire, call};
