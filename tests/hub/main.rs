//! Integration tests: the real `jupyterhub` binary, driven over HTTP like clients do.
//! One module per upstream API area.

mod support;

mod acme;
mod admin_api;
mod cli;
mod dev;
mod disk_full;
mod first_use;
mod groups;
mod ldap;
mod login;
mod managed;
mod metrics;
mod oauth;
mod oauth_login;
mod oauth_presets;
mod pam;
mod privileged;
mod profiles;
mod rest;
mod robustness;
mod servers;
mod servers6;
mod services;
mod shares;
mod systemd_integration;
mod templates;
mod tokens;
mod users;
