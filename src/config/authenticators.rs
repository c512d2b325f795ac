//! `[Authenticator]` (what every authenticator shares) and the sections of single
//! authenticators: `[PAMAuthenticator]`, `[DummyAuthenticator]`,
//! `[SharedPasswordAuthenticator]`, `[FirstUseAuthenticator]`, `[GenericOAuthenticator]`,
//! and `[LocalAuthenticator]` (upstream's base class of PAM's, whose options PAM's section
//! takes too).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Config, Pattern, Secret};

/// `[Authenticator]`: options every authenticator shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthenticatorConfig {
    pub admin_users: Vec<String>,
    pub allowed_users: Vec<String>,
    pub blocked_users: Vec<String>,
    pub allow_all: bool,
    pub allow_existing_users: Option<bool>,
    pub username_pattern: Option<Pattern>,
    pub username_map: BTreeMap<String, String>,
    pub auto_login: bool,
    pub enable_auth_state: bool,
    /// Seconds an identity provider's login is trusted before the provider is asked again
    /// (upstream's default 300; 0 never asks). Only OAuth logins with auth_state refresh.
    pub auth_refresh_age: u64,
    /// Ask the identity provider before every spawn, so a server never starts with an
    /// expired access token in its auth_state.
    pub refresh_pre_spawn: bool,
    /// At start-up, delete users from the database the authenticator no longer accepts (a
    /// name outside `username_pattern`, a PAM user whose system account is gone); without it
    /// they are kept and logged, as upstream's `init_users`.
    pub delete_invalid_users: bool,
}

impl Default for AuthenticatorConfig {
    fn default() -> Self {
        AuthenticatorConfig {
            admin_users: Vec::new(),
            allowed_users: Vec::new(),
            blocked_users: Vec::new(),
            allow_all: false,
            allow_existing_users: None,
            username_pattern: None,
            username_map: BTreeMap::new(),
            auto_login: false,
            enable_auth_state: false,
            auth_refresh_age: 300,
            refresh_pre_spawn: false,
            delete_invalid_users: false,
        }
    }
}

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

/// `[GenericOAuthenticator]`, OAuthenticator's option names, for `authenticator_class =
/// "generic-oauth"` and `"oidc"` (the endpoints discovered from `oidc_issuer`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenericOAuthConfig {
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// The hub's `/hub/oauth_callback` as the provider sees it.
    pub oauth_callback_url: String,
    pub authorize_url: String,
    pub token_url: String,
    pub userdata_url: Option<String>,
    /// For `oidc`: the issuer whose `/.well-known/openid-configuration` names the endpoints
    /// and the JWKS. Not an OAuthenticator option (it has no discovery).
    pub oidc_issuer: Option<String>,
    pub scope: Vec<String>,
    pub username_claim: String,
    /// Take the user's claims from the ID token rather than `userdata_url`.
    pub userdata_from_id_token: bool,
    pub login_service: String,
    /// Send the client's credentials with HTTP Basic auth (else in the form body).
    pub basic_auth: bool,
    pub auth_state_groups_key: Option<String>,
    /// OAuthenticator's deprecated name for `auth_state_groups_key`.
    pub claim_groups_key: Option<String>,
    pub allowed_groups: Vec<String>,
    pub admin_groups: Vec<String>,
    /// Make the user's hub groups those of the claim at each login.
    pub manage_groups: bool,
}

impl GenericOAuthConfig {
    /// The options `generic-oauth` (`oidc` false) or `oidc` need; messages name the key.
    pub(super) fn validate(&self, oidc: bool) -> Result<(), String> {
        let oauth = self;
        let mut required = vec![
            ("client_id", Some(oauth.client_id.as_str())),
            (
                "oauth_callback_url",
                Some(oauth.oauth_callback_url.as_str()),
            ),
        ];
        if oidc {
            required.push(("oidc_issuer", oauth.oidc_issuer.as_deref()));
        } else {
            required.push(("authorize_url", Some(oauth.authorize_url.as_str())));
            required.push(("token_url", Some(oauth.token_url.as_str())));
        }
        for (key, value) in required {
            let value = value.unwrap_or_default();
            if value.is_empty() {
                return Err(format!("GenericOAuthenticator.{key} must be set"));
            }
            if key != "client_id" {
                url::Url::parse(value).map_err(|e| {
                    format!("GenericOAuthenticator.{key}: invalid URL {value:?}: {e}")
                })?;
            }
        }
        if !oidc && oauth.userdata_url.is_none() && !oauth.userdata_from_id_token {
            return Err(
                "GenericOAuthenticator: set userdata_url, or userdata_from_id_token = true".into(),
            );
        }
        if (oauth.manage_groups
            || !oauth.allowed_groups.is_empty()
            || !oauth.admin_groups.is_empty())
            && oauth.groups_key().is_none()
        {
            return Err("GenericOAuthenticator: allowed_groups, admin_groups and manage_groups need auth_state_groups_key".into());
        }
        Ok(())
    }

    pub fn groups_key(&self) -> Option<&str> {
        self.auth_state_groups_key
            .as_deref()
            .or(self.claim_groups_key.as_deref())
    }
}

impl Default for GenericOAuthConfig {
    fn default() -> Self {
        GenericOAuthConfig {
            client_id: String::new(),
            client_secret: None,
            oauth_callback_url: String::new(),
            authorize_url: String::new(),
            token_url: String::new(),
            userdata_url: None,
            oidc_issuer: None,
            scope: Vec::new(),
            username_claim: "username".into(),
            userdata_from_id_token: false,
            login_service: "OAuth 2.0".into(),
            basic_auth: true,
            auth_state_groups_key: None,
            claim_groups_key: None,
            allowed_groups: Vec::new(),
            admin_groups: Vec::new(),
            manage_groups: false,
        }
    }
}

/// `[Spawner] auth_state_env`: needs auth_state, and names variables of its own (not the
/// hub's `JUPYTERHUB_*` ones, nor any `environment` sets too, which would leave it unclear
/// which wins).
pub(super) fn check_auth_state_env(config: &Config) -> Result<(), String> {
    let env = &config.spawner.auth_state_env;
    if env.is_empty() {
        return Ok(());
    }
    if !config.authenticator.enable_auth_state {
        return Err("Spawner.auth_state_env needs [Authenticator] enable_auth_state = true".into());
    }
    for (name, key) in env {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "Spawner.auth_state_env: {name:?} is not a valid environment variable name"
            ));
        }
        if name.starts_with("JUPYTERHUB_") || name.starts_with("JPY_") {
            return Err(format!(
                "Spawner.auth_state_env: {name} is one of the hub's own variables"
            ));
        }
        if config.spawner.environment.contains_key(name) {
            return Err(format!(
                "Spawner.auth_state_env: {name} is also in Spawner.environment; set it in one"
            ));
        }
        if key.is_empty() {
            return Err(format!(
                "Spawner.auth_state_env.{name}: empty auth_state key"
            ));
        }
    }
    Ok(())
}
