//! The built-in proxy: the one public listener, routing by longest path prefix (and host) to
//! the in-process hub or to user servers and services, with websockets, activity and TLS.
//! `jupyterhub proxy` runs it standalone as a drop-in for configurable-http-proxy. Every
//! listener bounds what one client may hold (`Limits`: timeouts, head size, connections).

mod acme;
mod chp;
mod forward;
mod h1;
mod limits;
mod listen;
mod redirect;
mod table;
mod upstream;
mod websocket;

use std::path::PathBuf;

pub use acme::{
    Acme, AcmeSettings, AcmeStatus, Challenge as AcmeChallenge, Error as AcmeError, dry_check,
};
pub use chp::{ChpArgs, run_chp};
pub use forward::{Proxy, TargetDownHook, ThawHook};
pub use limits::{Limits, MAX_REQUEST_HEAD};
pub use listen::{LISTEN_BACKLOG, bind, load_tls, serve, serve_app};
pub use redirect::{Redirect, serve_redirect};
pub use table::{Route, RouteTable, Target};

/// Errors of the proxy's setup (request-time failures become error pages, not errors).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found")]
    NoKey { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("--ssl-cert and --ssl-key must be given together")]
    TlsPair,
    #[error("invalid proxy target {url:?}: expected http://host[:port][/path]")]
    BadTarget { url: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("proxy server: {0}")]
    Serve(std::io::Error),
}
