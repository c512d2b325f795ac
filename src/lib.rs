//! A systemd-native JupyterHub: the hub, its REST API, the proxy and the spawners in one
//! binary. Modules are listed in reading order; `hub::Hub` is the one shared handle.

pub mod config;
pub mod db;
pub mod rbac;
pub mod auth;
pub mod spawner;
pub mod systemd;
pub mod privileged;
pub mod proxy;
pub mod metrics;
pub mod hub;
pub mod oauth;
pub mod api;
pub mod web;
pub mod server;

pub use hub::Hub;
pub use server::serve;

/// The JupyterHub version we speak. Single-user servers compare it with their own and parse
/// it as a PEP 440 version, so it must be upstream's numbering, not this crate's.
pub const JUPYTERHUB_VERSION: &str = "5.3.0";
