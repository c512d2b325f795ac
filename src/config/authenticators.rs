//! The sections of single authenticators: `[PAMAuthenticator]`, `[DummyAuthenticator]`,
//! `[SharedPasswordAuthenticator]`, `[FirstUseAuthenticator]`, and `[LocalAuthenticator]`
//! (upstream's base class of PAM's, whose options PAM's section takes too).

use serde::Deserialize;

use super::{Config, Secret};

/// `[PAMAuthenticator]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PamConfig {
    /// PAM service name (`/etc/pam.d/NAME`).
    pub service: String,
    /// Members of these system groups are admins.
    pub admin_groups: Vec<String>,
    /// Members of these system groups may log in.
    pub allowed_groups: Vec<String>,
    /// Run PAM's account stage (expired accounts, `pam_nologin`).
    pub check_account: bool,
    /// Inherited from `LocalAuthenticator` (upstream's PAMAuthenticator is one); either
    /// section turns it on.
    pub create_system_users: bool,
}

impl Default for PamConfig {
    fn default() -> Self {
        PamConfig {
            service: "jupyterhub".into(),
            admin_groups: Vec::new(),
            allowed_groups: Vec::new(),
            check_account: true,
            create_system_users: false,
        }
    }
}

/// `[DummyAuthenticator]`: any name logs in; for development only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DummyConfig {
    /// When set, every user must give this password.
    pub password: Option<Secret>,
}

/// `[SharedPasswordAuthenticator]` (JupyterHub 5).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedPasswordConfig {
    pub user_password: Option<Secret>,
    pub admin_password: Option<Secret>,
}

/// `[FirstUseAuthenticator]` (TLJH's default, firstuseauthenticator's option names): the first
/// login of a name sets its password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirstUseConfig {
    /// Names the hub does not know yet may sign up by logging in; when false, only users
    /// already added (by an admin, or in `allowed_users`) may set their password.
    pub create_users: bool,
    pub min_password_length: usize,
}

impl Default for FirstUseConfig {
    fn default() -> Self {
        FirstUseConfig {
            create_users: true,
            min_password_length: 7,
        }
    }
}

/// `[LocalAuthenticator]`: upstream's authenticators backed by system accounts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Create the system account (`SystemdSpawner.username_template` applied to the name) of
    /// a user added by an admin or logging in for the first time, when it does not exist.
    pub create_system_users: bool,
}

impl Config {
    /// Whether users' system accounts are created (`[LocalAuthenticator]` or, inherited,
    /// `[PAMAuthenticator]` `create_system_users`).
    pub fn create_system_users(&self) -> bool {
        self.local.create_system_users || self.pam.create_system_users
    }
}

/// `username_template` and `create_system_users` against the rest of the config.
pub(super) fn check_system_accounts(config: &Config) -> Result<(), String> {
    crate::auth::accounts::check_template(&config.systemd_spawner.username_template)
        .map_err(|e| format!("SystemdSpawner.username_template: {e}"))?;
    if config.create_system_users() {
        let key = if config.local.create_system_users {
            "LocalAuthenticator.create_system_users"
        } else {
            "PAMAuthenticator.create_system_users"
        };
        // Upstream's LocalAuthenticator family is PAM; first-use is TLJH's, whose
        // spawner makes the accounts. The others know no one a system account is for.
        if !["pam", "firstuse"].contains(&config.hub.authenticator_class.as_str()) {
            return Err(format!(
                "{key}: only the pam and firstuse authenticators create system accounts, \
                 not {:?}",
                config.hub.authenticator_class
            ));
        }
        if config.systemd_spawner.dynamic_users {
            return Err(format!(
                "{key}: servers run as DynamicUser= accounts \
                 (SystemdSpawner.dynamic_users), so there is no account to create"
            ));
        }
    }
    Ok(())
}
