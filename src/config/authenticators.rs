//! `[Authenticator]` (what every authenticator shares) and the sections of single
//! authenticators: `[PAMAuthenticator]`, `[DummyAuthenticator]`,
//! `[SharedPasswordAuthenticator]`, `[FirstUseAuthenticator]`, `[GenericOAuthenticator]`,
//! `[LDAPAuthenticator]` and `[LocalAuthenticator]` (upstream's base class of PAM's, whose options PAM's section
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

/// Each authenticator's own section, when it is the one in use; messages name the key.
pub(super) fn check_sections(config: &Config) -> Result<(), String> {
    if ["generic-oauth", "oidc"].contains(&config.hub.authenticator_class.as_str()) {
        config
            .generic_oauth
            .validate(config.hub.authenticator_class == "oidc")?;
    }
    if config.hub.authenticator_class == "shared-password" {
        let sp = &config.shared_password;
        if sp.user_password.is_none() && sp.admin_password.is_none() {
            return Err("SharedPasswordAuthenticator: set user_password or admin_password".into());
        }
        for (key, secret) in [
            ("user_password", &sp.user_password),
            ("admin_password", &sp.admin_password),
        ] {
            if let Some(secret) = secret
                && secret.expose().len() < 8
            {
                return Err(format!(
                    "SharedPasswordAuthenticator.{key}: must be at least 8 characters"
                ));
            }
        }
        if let (Some(u), Some(a)) = (&sp.user_password, &sp.admin_password)
            && u.expose() == a.expose()
        {
            return Err(
                "SharedPasswordAuthenticator: user_password and admin_password must differ".into(),
            );
        }
    }
    if config.hub.authenticator_class == "ldap" {
        config.ldap.validate()?;
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

    /// The claim the groups are read from. Upstream's `auth_state_groups_key` is a path in
    /// auth_state, where the provider's claims are under `oauth_user`, so its configs say
    /// `"oauth_user.groups"`; a bare claim path (`"groups"`, as `claim_groups_key` takes) is
    /// read as a claim too.
    pub fn groups_key(&self) -> Option<&str> {
        match self.auth_state_groups_key.as_deref() {
            Some(key) => Some(key.strip_prefix("oauth_user.").unwrap_or(key)),
            None => self.claim_groups_key.as_deref(),
        }
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

/// `[LDAPAuthenticator]`, ldapauthenticator 2.x's option names and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    pub server_address: String,
    /// Default 636 with `tls_strategy = "on_connect"`, else 389.
    pub server_port: Option<u16>,
    pub tls_strategy: TlsStrategy,
    /// Deprecated in 2.0: `true` means `tls_strategy = "on_connect"`; `false` does nothing.
    pub use_ssl: Option<bool>,
    pub tls_kwargs: LdapTlsKwargs,
    /// One template or a list, each with `{username}`; blank entries are ignored.
    #[serde(deserialize_with = "one_or_many")]
    pub bind_dn_template: Vec<String>,
    /// Removed in 2.0 (names are always escaped); accepted with a warning, as upstream.
    pub escape_userdn: Option<bool>,
    pub lookup_dn: bool,
    pub user_search_base: Option<String>,
    pub user_attribute: Option<String>,
    pub lookup_dn_search_filter: String,
    pub lookup_dn_search_user: Option<String>,
    pub lookup_dn_search_password: Option<Secret>,
    pub lookup_dn_user_dn_attribute: Option<String>,
    pub use_lookup_dn_username: bool,
    pub search_filter: String,
    pub attributes: Vec<String>,
    pub allowed_groups: Vec<String>,
    /// Members of these groups (DNs) are admins and may log in. Not an ldapauthenticator
    /// option: PAM's and OAuthenticator's `admin_groups`, for the directory's groups.
    pub admin_groups: Vec<String>,
    pub group_search_filter: String,
    pub group_attributes: Vec<String>,
    pub auth_state_attributes: Vec<String>,
    /// Matched at the start of the name, as Python's `re.match`.
    pub valid_username_regex: Pattern,
}

/// `tls_strategy`: when the connection becomes TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsStrategy {
    /// StartTLS before any bind (upstream's default).
    #[default]
    BeforeBind,
    /// TLS from the first byte (ldaps).
    OnConnect,
    /// No TLS at all.
    Insecure,
}

/// The keys of ldap3's `Tls` object that the hub implements; others are refused by name.
/// Certificates are always verified (ldap3's own default, `validate = CERT_NONE`, is not
/// offered): against these CAs when given, else the system's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapTlsKwargs {
    pub ca_certs_file: Option<std::path::PathBuf>,
    /// PEM text of trusted CAs.
    pub ca_certs_data: Option<String>,
    /// A client certificate (PEM), with its key, for servers that ask for one.
    pub local_certificate_file: Option<std::path::PathBuf>,
    pub local_private_key_file: Option<std::path::PathBuf>,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            server_address: String::new(),
            server_port: None,
            tls_strategy: TlsStrategy::BeforeBind,
            use_ssl: None,
            tls_kwargs: LdapTlsKwargs::default(),
            bind_dn_template: Vec::new(),
            escape_userdn: None,
            lookup_dn: false,
            user_search_base: None,
            user_attribute: None,
            lookup_dn_search_filter: "({login_attr}={login})".into(),
            lookup_dn_search_user: None,
            lookup_dn_search_password: None,
            lookup_dn_user_dn_attribute: None,
            use_lookup_dn_username: false,
            search_filter: String::new(),
            attributes: Vec::new(),
            allowed_groups: Vec::new(),
            admin_groups: Vec::new(),
            group_search_filter: "(|(member={userdn})(uniqueMember={userdn})(memberUid={uid}))"
                .into(),
            group_attributes: vec!["member".into(), "uniqueMember".into(), "memberUid".into()],
            auth_state_attributes: Vec::new(),
            valid_username_regex: Pattern(
                regex::Regex::new(r"^[a-z][.a-z0-9_-]*$").expect("the default pattern is valid"),
            ),
        }
    }
}

/// A string or a list of strings (upstream's `Union([List(), Unicode()])`).
pub(super) fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a string or a list of strings"))?
    {
        OneOrMany::One(s) => Ok(vec![s]),
        OneOrMany::Many(v) => Ok(v),
    }
}

impl LdapConfig {
    /// The effective TLS strategy (`use_ssl = true` is the deprecated `on_connect`).
    pub fn strategy(&self) -> TlsStrategy {
        if self.use_ssl == Some(true) {
            TlsStrategy::OnConnect
        } else {
            self.tls_strategy
        }
    }

    pub fn port(&self) -> u16 {
        self.server_port.unwrap_or(match self.strategy() {
            TlsStrategy::OnConnect => 636,
            _ => 389,
        })
    }

    /// The bind DN templates without blank entries (upstream ignores them, with a warning).
    pub fn templates(&self) -> impl Iterator<Item = &str> {
        self.bind_dn_template
            .iter()
            .map(String::as_str)
            .filter(|t| !t.is_empty())
    }

    /// What must hold together for a login to be possible; messages name the key.
    pub(super) fn validate(&self) -> Result<(), String> {
        const S: &str = "LDAPAuthenticator";
        if self.server_address.trim().is_empty() {
            return Err(format!("{S}.server_address must be set"));
        }
        crate::auth::ldap::server_url(self).map_err(|e| format!("{S}.server_address: {e}"))?;
        if !self.lookup_dn && self.templates().next().is_none() {
            return Err(format!(
                "{S} requires either lookup_dn or bind_dn_template to be configured"
            ));
        }
        let placeholders = |key: &str, value: &str, allowed: &[&str]| {
            crate::auth::ldap::check_template(value, allowed).map_err(|e| format!("{S}.{key}: {e}"))
        };
        for template in self.templates() {
            placeholders("bind_dn_template", template, &["username"])?;
        }
        if self.lookup_dn {
            for (key, value) in [
                ("user_search_base", &self.user_search_base),
                ("user_attribute", &self.user_attribute),
                (
                    "lookup_dn_user_dn_attribute",
                    &self.lookup_dn_user_dn_attribute,
                ),
            ] {
                if value.as_deref().is_none_or(str::is_empty) {
                    return Err(format!("{S}.{key} must be set with lookup_dn = true"));
                }
            }
            placeholders(
                "lookup_dn_search_filter",
                &self.lookup_dn_search_filter,
                &["login_attr", "login"],
            )?;
            if self.lookup_dn_search_password.is_some() && self.lookup_dn_search_user.is_none() {
                return Err(format!(
                    "{S}.lookup_dn_search_password is set without lookup_dn_search_user"
                ));
            }
        } else if self.use_lookup_dn_username {
            return Err(format!("{S}.use_lookup_dn_username needs lookup_dn = true"));
        }
        if !self.search_filter.is_empty() {
            if self.user_search_base.as_deref().is_none_or(str::is_empty) {
                return Err(format!("{S}.search_filter needs user_search_base"));
            }
            placeholders(
                "search_filter",
                &self.search_filter,
                &["userattr", "username"],
            )?;
            if self.search_filter.contains("{userattr}") && self.user_attribute.is_none() {
                return Err(format!(
                    "{S}.search_filter uses {{userattr}}, so user_attribute must be set"
                ));
            }
        }
        if !self.allowed_groups.is_empty() || !self.admin_groups.is_empty() {
            if self.group_search_filter.is_empty() || self.group_attributes.is_empty() {
                return Err(format!(
                    "{S}.allowed_groups and admin_groups require both group_search_filter and \
                     group_attributes to be configured"
                ));
            }
            placeholders(
                "group_search_filter",
                &self.group_search_filter,
                &["userdn", "uid"],
            )?;
        }
        if self.strategy() != TlsStrategy::Insecure {
            crate::auth::ldap::tls_config(&self.tls_kwargs)
                .map_err(|e| format!("{S}.tls_kwargs: {e}"))?;
        } else if self.tls_kwargs.ca_certs_file.is_some()
            || self.tls_kwargs.ca_certs_data.is_some()
            || self.tls_kwargs.local_certificate_file.is_some()
        {
            return Err(format!(
                "{S}.tls_kwargs is set, but tls_strategy = \"insecure\" uses no TLS"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "[JupyterHub]\nauthenticator_class = \"ldap\"\n[LDAPAuthenticator]\n";

    /// `extra` in an LDAP section, with a server address unless it names one.
    fn check(extra: &str) -> Result<Config, String> {
        let server = if extra.contains("server_address") {
            ""
        } else {
            "server_address = \"ldap.example.org\"\n"
        };
        let config = Config::parse(&format!("{HEAD}{server}{extra}"))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn ldap_defaults_are_upstreams() {
        let config = check("bind_dn_template = \"uid={username},ou=people,dc=example,dc=org\"\n")
            .expect("valid");
        let ldap = &config.ldap;
        assert_eq!(ldap.strategy(), TlsStrategy::BeforeBind);
        assert_eq!(ldap.port(), 389);
        assert_eq!(
            ldap.bind_dn_template.len(),
            1,
            "one string is a list of one"
        );
        assert_eq!(ldap.lookup_dn_search_filter, "({login_attr}={login})");
        assert_eq!(
            ldap.group_attributes,
            ["member", "uniqueMember", "memberUid"]
        );
        assert!(ldap.valid_username_regex.is_full_match("alice.b-2"));
        assert!(!ldap.valid_username_regex.is_full_match("Alice"));
        let ldaps =
            check("tls_strategy = \"on_connect\"\nbind_dn_template = [\"uid={username}\"]\n")
                .expect("valid");
        assert_eq!(ldaps.ldap.port(), 636);
        assert_eq!(
            crate::auth::ldap::server_url(&ldaps.ldap).expect("url"),
            "ldaps://ldap.example.org:636"
        );
        let deprecated =
            check("use_ssl = true\nbind_dn_template = [\"uid={username}\"]\n").expect("valid");
        assert_eq!(deprecated.ldap.strategy(), TlsStrategy::OnConnect);
    }

    #[test]
    fn ldap_errors_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").expect("write");
        let template = "bind_dn_template = \"uid={username},dc=org\"\n";
        let lookup = "lookup_dn = true\nuser_search_base = \"dc=org\"\nuser_attribute = \"uid\"\n\
                      lookup_dn_user_dn_attribute = \"uid\"\n";
        for (extra, needle) in [
            ("tls_strategy = \"starttls\"\n", "tls_strategy"),
            (
                "tls_strategy = \"insecure\"\n",
                "either lookup_dn or bind_dn_template",
            ),
            (
                "bind_dn_template = [\"\"]\n",
                "either lookup_dn or bind_dn_template",
            ),
            (
                "bind_dn_template = \"uid={user},dc=org\"\n",
                "bind_dn_template",
            ),
            ("bind_dn_template = 3\n", "bind_dn_template"),
            (
                "lookup_dn = true\nuser_attribute = \"uid\"\n",
                "user_search_base",
            ),
            (
                "lookup_dn = true\nuser_search_base = \"dc=org\"\nuser_attribute = \"uid\"\n",
                "lookup_dn_user_dn_attribute",
            ),
            (
                &format!("{lookup}lookup_dn_search_filter = \"(uid={{login}}\"\n"),
                "lookup_dn_search_filter",
            ),
            (
                &format!("{template}use_lookup_dn_username = true\n"),
                "use_lookup_dn_username",
            ),
            (
                &format!("{template}search_filter = \"(uid={{username}})\"\n"),
                "user_search_base",
            ),
            (
                &format!("{template}allowed_groups = [\"cn=g,dc=org\"]\ngroup_attributes = []\n"),
                "group_attributes",
            ),
            (
                &format!("{template}tls_kwargs = {{ validate = 2 }}\n"),
                "validate",
            ),
            (
                &format!("{template}tls_kwargs = {{ ca_certs_file = \"/nonexistent/ca.pem\" }}\n"),
                "tls_kwargs",
            ),
            (
                &format!(
                    "{template}tls_kwargs = {{ ca_certs_file = {:?} }}\n",
                    not_pem
                ),
                "no PEM certificate",
            ),
            (
                &format!(
                    "{template}tls_strategy = \"insecure\"\ntls_kwargs = {{ ca_certs_data = \"x\" }}\n"
                ),
                "insecure",
            ),
            (&format!("{template}server_port = 70000\n"), "server_port"),
            (
                &format!("{template}valid_username_regex = \"(\"\n"),
                "valid_username_regex",
            ),
            (
                &format!("{template}server_address = \"ldap://x\"\n"),
                "server_address",
            ),
            (
                &format!("{template}allowed_groups_from = 1\n"),
                "allowed_groups_from",
            ),
        ] {
            let err = check(extra).expect_err(extra);
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
        let err = Config::parse("[JupyterHub]\nauthenticator_class = \"ldap\"\n")
            .and_then(|c| c.validate())
            .expect_err("no server");
        assert!(err.contains("LDAPAuthenticator.server_address"), "{err}");
        check(lookup).expect("lookup_dn alone is enough");
    }
}
