//! A systemd-native JupyterHub: the hub, its REST API, the proxy and the spawners in one
//! binary. Modules are listed in reading order; `hub::Hub` is the one shared handle.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod hub;
pub mod metrics;
pub mod oauth;
pub mod privileged;
pub mod proxy;
pub mod rbac;
pub mod services;
pub mod spawner;
pub mod status;
pub mod systemd;
pub mod time;
pub mod web;

pub use hub::Hub;

/// The JupyterHub version we speak. Single-user servers compare it with their own and parse
/// it as a PEP 440 version, so it must be upstream's numbering, not this crate's.
pub const JUPYTERHUB_VERSION: &str = "5.3.0";
