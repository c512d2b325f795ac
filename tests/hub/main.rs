//! Integration tests: the real `jupyterhub` binary, driven over HTTP like clients do.
//! One module per upstream API area.

mod support;

mod admin_api;
mod cli;
mod dev;
mod groups;
mod login;
mod managed;
mod metrics;
mod oauth;
mod pam;
mod privileged;
mod rest;
mod robustness;
mod servers;
mod services;
mod systemd_integration;
mod tokens;
mod users;
