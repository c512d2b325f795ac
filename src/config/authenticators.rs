//! The sections of single authenticators: `[PAMAuthenticator]`, `[DummyAuthenticator]`,
//! `[SharedPasswordAuthenticator]`, `[FirstUseAuthenticator]`.

use serde::Deserialize;

use super::Secret;

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
}

impl Default for PamConfig {
    fn default() -> Self {
        PamConfig {
            service: "jupyterhub".into(),
            admin_groups: Vec::new(),
            allowed_groups: Vec::new(),
            check_account: true,
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
