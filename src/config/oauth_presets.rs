//! The sections of OAuthenticator's provider classes: `[GitHubOAuthenticator]`
//! (`authenticator_class = "github"`), `[GoogleOAuthenticator]` (`"google"`) and
//! `[AzureAdOAuthenticator]` (`"azuread"`). Each is read into the `GenericOAuthConfig` the
//! OAuth client runs on (the provider's endpoints and claims filled in as upstream's defaults
//! are), plus what only that provider checks (`auth::oauth2::presets`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;

use super::{GenericOAuthConfig, Secret};

/// `[GitHubOAuthenticator]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitHubOAuthConfig {
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub oauth_callback_url: String,
    /// `https://github.com`, or a GitHub Enterprise Server's URL.
    pub github_url: String,
    /// The REST API; by default `https://api.github.com`, or `{github_url}/api/v3`.
    pub github_api: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub userdata_url: Option<String>,
    pub scope: Vec<String>,
    pub username_claim: String,
    pub login_service: String,
    pub basic_auth: bool,
    /// `org` or `org:team` (the names as in GitHub's URLs); members may log in.
    pub allowed_organizations: Vec<String>,
    /// The user's teams (`/user/teams`) in auth_state's `teams`; needs the `read:org` scope.
    pub populate_teams_in_auth_state: bool,
    /// A dotted path into auth_state whose list of strings is the user's groups, as
    /// upstream's string `auth_state_groups_key`.
    pub auth_state_groups_key: Option<String>,
    /// Members of these groups may log in; needs `manage_groups`.
    pub allowed_groups: Vec<String>,
    /// Members of these groups are admins (and others are not); needs `manage_groups`.
    pub admin_groups: Vec<String>,
    /// Make the user's hub groups those at `auth_state_groups_key` at each login and refresh.
    pub manage_groups: bool,
}

impl Default for GitHubOAuthConfig {
    fn default() -> Self {
        GitHubOAuthConfig {
            client_id: String::new(),
            client_secret: None,
            oauth_callback_url: String::new(),
            github_url: "https://github.com".into(),
            github_api: None,
            authorize_url: None,
            token_url: None,
            userdata_url: None,
            scope: Vec::new(),
            username_claim: "login".into(),
            login_service: "GitHub".into(),
            basic_auth: false,
            allowed_organizations: Vec::new(),
            populate_teams_in_auth_state: false,
            auth_state_groups_key: None,
            allowed_groups: Vec::new(),
            admin_groups: Vec::new(),
            manage_groups: false,
        }
    }
}

impl GitHubOAuthConfig {
    /// `github_url` as upstream normalises it: `https://` when no scheme, no trailing `/`.
    pub fn github_url(&self) -> String {
        let url = self.github_url.trim();
        let url = if url.contains("://") {
            url.to_owned()
        } else {
            format!("https://{url}")
        };
        url.trim_end_matches('/').to_owned()
    }

    /// Upstream's `github_api`: only github.com has its API on another host.
    pub fn github_api(&self) -> String {
        if let Some(api) = &self.github_api {
            return api.trim_end_matches('/').to_owned();
        }
        let url = self.github_url();
        if url == "https://github.com" {
            "https://api.github.com".into()
        } else {
            format!("{url}/api/v3")
        }
    }

    pub fn generic(&self) -> GenericOAuthConfig {
        let url = self.github_url();
        GenericOAuthConfig {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            oauth_callback_url: self.oauth_callback_url.clone(),
            authorize_url: self
                .authorize_url
                .clone()
                .unwrap_or_else(|| format!("{url}/login/oauth/authorize")),
            token_url: self
                .token_url
                .clone()
                .unwrap_or_else(|| format!("{url}/login/oauth/access_token")),
            userdata_url: Some(
                self.userdata_url
                    .clone()
                    .unwrap_or_else(|| format!("{}/user", self.github_api())),
            ),
            scope: self.scope.clone(),
            username_claim: self.username_claim.clone(),
            login_service: self.login_service.clone(),
            basic_auth: self.basic_auth,
            // The groups are read from auth_state by the preset, not from the claims.
            auth_state_groups_key: None,
            allowed_groups: self.allowed_groups.clone(),
            admin_groups: self.admin_groups.clone(),
            manage_groups: self.manage_groups,
            ..GenericOAuthConfig::default()
        }
    }

    fn validate(&self) -> Result<(), String> {
        let section = "GitHubOAuthenticator";
        common(section, &self.generic())?;
        for entry in &self.allowed_organizations {
            crate::auth::oauth2::presets::OrgTeam::parse(entry)
                .map_err(|e| format!("{section}.allowed_organizations: {e}"))?;
        }
        if self.populate_teams_in_auth_state && !self.scope.iter().any(|s| s == "read:org") {
            // Upstream only logs this at each login; refusing says it once, before anyone
            // finds the teams missing.
            return Err(format!(
                "{section}.populate_teams_in_auth_state needs \"read:org\" in {section}.scope"
            ));
        }
        let key = check_groups(
            section,
            self.auth_state_groups_key.as_deref(),
            &self.allowed_groups,
            &self.admin_groups,
            self.manage_groups,
        )?;
        if key.is_some_and(|k| k.split('.').next() == Some("teams")) {
            // Upstream's path gives no groups here (a list of objects, or a walk through a
            // list); upstream users write a callable, which TOML cannot hold.
            return Err(format!(
                "{section}.auth_state_groups_key: auth_state's \"teams\" holds GitHub's team \
                 objects, not names, so no path into it gives groups (upstream needs a Python \
                 callable for that, which this config cannot hold)"
            ));
        }
        Ok(())
    }

    /// `auth_state_groups_key` when set (an empty string is unset, as upstream).
    pub fn groups_key(&self) -> Option<&str> {
        self.auth_state_groups_key
            .as_deref()
            .filter(|k| !k.is_empty())
    }
}

/// `[GoogleOAuthenticator]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GoogleOAuthConfig {
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub oauth_callback_url: String,
    /// The base of `token_url` and `userdata_url`.
    pub google_api_url: String,
    pub authorize_url: String,
    pub token_url: Option<String>,
    pub userdata_url: Option<String>,
    pub scope: Vec<String>,
    pub username_claim: String,
    pub login_service: String,
    pub basic_auth: bool,
    /// Only accounts of these Google Workspace domains (the `hd` claim) may log in; with one,
    /// usernames lose their `@domain`. A string is one domain (upstream's old form).
    #[serde(deserialize_with = "super::authenticators::one_or_many")]
    pub hosted_domain: Vec<String>,
    /// Default: true with at most one `hosted_domain`.
    pub strip_domain: Option<bool>,
    /// Accounts of these domains may log in (an allowance, like `allowed_users`).
    pub allowed_hosted_domains: Vec<String>,
    /// Email domain → groups (their email's local part) whose members may log in.
    pub allowed_google_groups: BTreeMap<String, Vec<String>>,
    /// Email domain → groups whose members are admins (and others are not).
    pub admin_google_groups: BTreeMap<String, Vec<String>>,
    /// Email domain → the JSON key file of the service account that reads its groups.
    pub google_service_account_keys: BTreeMap<String, PathBuf>,
    /// Email domain → the username (without `@domain`) the service account acts as.
    pub gsuite_administrator: BTreeMap<String, String>,
    /// Groups of the user's groups count too.
    pub include_nested_groups: bool,
    /// Ours: the Admin SDK Directory API's origin (upstream always asks
    /// `https://www.googleapis.com`), for tests and proxies.
    pub google_directory_api_url: String,
    /// A dotted path into auth_state whose list of strings is the user's groups, as
    /// upstream's string `auth_state_groups_key`.
    pub auth_state_groups_key: Option<String>,
    /// Members of these groups may log in; needs `manage_groups`.
    pub allowed_groups: Vec<String>,
    /// Members of these groups are admins (and others are not); needs `manage_groups`.
    pub admin_groups: Vec<String>,
    /// Make the user's hub groups those at `auth_state_groups_key` at each login and refresh.
    pub manage_groups: bool,
}

impl Default for GoogleOAuthConfig {
    fn default() -> Self {
        GoogleOAuthConfig {
            client_id: String::new(),
            client_secret: None,
            oauth_callback_url: String::new(),
            google_api_url: "https://www.googleapis.com".into(),
            authorize_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
            token_url: None,
            userdata_url: None,
            scope: vec!["openid".into(), "email".into()],
            username_claim: "email".into(),
            login_service: "Google".into(),
            basic_auth: false,
            hosted_domain: Vec::new(),
            strip_domain: None,
            allowed_hosted_domains: Vec::new(),
            allowed_google_groups: BTreeMap::new(),
            admin_google_groups: BTreeMap::new(),
            google_service_account_keys: BTreeMap::new(),
            gsuite_administrator: BTreeMap::new(),
            include_nested_groups: false,
            google_directory_api_url: "https://www.googleapis.com".into(),
            auth_state_groups_key: None,
            allowed_groups: Vec::new(),
            admin_groups: Vec::new(),
            manage_groups: false,
        }
    }
}

impl GoogleOAuthConfig {
    pub fn generic(&self) -> GenericOAuthConfig {
        let api = self.google_api_url.trim_end_matches('/');
        GenericOAuthConfig {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            oauth_callback_url: self.oauth_callback_url.clone(),
            authorize_url: self.authorize_url.clone(),
            token_url: self
                .token_url
                .clone()
                .unwrap_or_else(|| format!("{api}/oauth2/v4/token")),
            userdata_url: Some(
                self.userdata_url
                    .clone()
                    .unwrap_or_else(|| format!("{api}/oauth2/v1/userinfo")),
            ),
            scope: self.scope.clone(),
            username_claim: self.username_claim.clone(),
            login_service: self.login_service.clone(),
            basic_auth: self.basic_auth,
            // The groups are read from auth_state by the preset, not from the claims.
            auth_state_groups_key: None,
            allowed_groups: self.allowed_groups.clone(),
            admin_groups: self.admin_groups.clone(),
            manage_groups: self.manage_groups,
            ..GenericOAuthConfig::default()
        }
    }

    /// The domains, lowercased as upstream does.
    pub fn hosted_domains(&self) -> Vec<String> {
        self.hosted_domain
            .iter()
            .filter(|d| !d.is_empty())
            .map(|d| d.to_lowercase())
            .collect()
    }

    pub fn strip_domain(&self) -> bool {
        self.strip_domain
            .unwrap_or(self.hosted_domains().len() <= 1)
    }

    /// The groups lookup, when `allowed_google_groups` or `admin_google_groups` is set (the
    /// config is validated); domains lowercased, as the email's domain is compared.
    pub fn groups(&self) -> Option<crate::auth::oauth2::google_groups::GoogleGroups> {
        if self.allowed_google_groups.is_empty() && self.admin_google_groups.is_empty() {
            return None;
        }
        fn lower<V: Clone>(map: &BTreeMap<String, V>) -> BTreeMap<String, V> {
            map.iter()
                .map(|(d, v)| (d.to_lowercase(), v.clone()))
                .collect()
        }
        let sets = |map: &BTreeMap<String, Vec<String>>| {
            map.iter()
                .map(|(d, g)| (d.to_lowercase(), g.iter().cloned().collect::<BTreeSet<_>>()))
                .collect()
        };
        Some(crate::auth::oauth2::google_groups::GoogleGroups::new(
            lower(&self.google_service_account_keys),
            lower(&self.gsuite_administrator),
            sets(&self.allowed_google_groups),
            sets(&self.admin_google_groups),
            self.include_nested_groups,
            format!(
                "{}/auth/admin.directory.group.readonly",
                self.google_api_url.trim_end_matches('/')
            ),
            self.google_directory_api_url.clone(),
        ))
    }

    /// What `check-config` prints and the starting hub logs (logging is not up while the
    /// config is validated): key files others can read, options that do nothing.
    pub fn warnings(&self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let section = "GoogleOAuthenticator";
        let mut warnings = Vec::new();
        if self.strip_domain == Some(true) && self.hosted_domains().len() > 1 {
            warnings.push(format!(
                "{section}.strip_domain with several hosted_domain entries: the same name in \
                 two domains is one hub user"
            ));
        }
        let grouped =
            !self.allowed_google_groups.is_empty() || !self.admin_google_groups.is_empty();
        if !grouped
            && (!self.google_service_account_keys.is_empty()
                || !self.gsuite_administrator.is_empty())
        {
            warnings.push(format!(
                "{section}: google_service_account_keys and gsuite_administrator are only used \
                 with allowed_google_groups or admin_google_groups"
            ));
        }
        if !grouped
            && self
                .groups_key()
                .is_some_and(|k| k.starts_with("google_user.google_groups"))
        {
            warnings.push(format!(
                "{section}.auth_state_groups_key: google_user.google_groups is always empty \
                 without allowed_google_groups or admin_google_groups (the groups are only \
                 looked up for them), so managed groups would be none"
            ));
        }
        let readable = self
            .google_service_account_keys
            .iter()
            .filter_map(|(domain, path)| {
                let mode = std::fs::metadata(path).ok()?.permissions().mode();
                (mode & 0o004 != 0).then(|| {
                    format!(
                        "GoogleOAuthenticator.google_service_account_keys[{domain:?}]: {} is \
                         readable by every account (mode {:o}); make it readable by the hub's \
                         account only (chmod 0640, group jupyterhub)",
                        path.display(),
                        mode & 0o7777
                    )
                })
            });
        warnings.extend(readable);
        warnings
    }

    fn validate_groups(&self) -> Result<(), String> {
        let section = "GoogleOAuthenticator";
        for (key, map) in [
            ("allowed_google_groups", &self.allowed_google_groups),
            ("admin_google_groups", &self.admin_google_groups),
        ] {
            for (domain, groups) in map {
                let lower = domain.to_lowercase();
                let has = |mut keys: Box<dyn Iterator<Item = &String> + '_>| {
                    keys.any(|d| d.to_lowercase() == lower)
                };
                if !has(Box::new(self.google_service_account_keys.keys()))
                    || !has(Box::new(self.gsuite_administrator.keys()))
                {
                    return Err(format!(
                        "{section}.{key} names the domain {domain:?}, which needs entries for it \
                         in {section}.google_service_account_keys and {section}.gsuite_administrator"
                    ));
                }
                if let Some(bad) = groups.iter().find(|g| g.is_empty() || g.contains('@')) {
                    return Err(format!(
                        "{section}.{key}[{domain:?}]: {bad:?}: a group is named by its email's \
                         part before the '@' (\"students\" for students@{lower}), as upstream \
                         compares them"
                    ));
                }
            }
        }
        for (domain, admin) in &self.gsuite_administrator {
            if admin.is_empty() || admin.contains('@') {
                return Err(format!(
                    "{section}.gsuite_administrator[{domain:?}]: {admin:?}: give the \
                     administrator's username without '@' (upstream appends \"@{domain}\")"
                ));
            }
        }
        for (domain, path) in &self.google_service_account_keys {
            crate::auth::oauth2::google_groups::ServiceAccountKey::read(path)
                .map_err(|e| format!("{section}.google_service_account_keys[{domain:?}]: {e}"))?;
        }
        url::Url::parse(&self.google_directory_api_url).map_err(|e| {
            format!(
                "{section}.google_directory_api_url: invalid URL {:?}: {e}",
                self.google_directory_api_url
            )
        })?;
        Ok(())
    }

    fn validate(&self) -> Result<(), String> {
        let section = "GoogleOAuthenticator";
        common(section, &self.generic())?;
        self.validate_groups()?;
        check_groups(
            section,
            self.auth_state_groups_key.as_deref(),
            &self.allowed_groups,
            &self.admin_groups,
            self.manage_groups,
        )?;
        Ok(())
    }

    /// `auth_state_groups_key` when set (an empty string is unset, as upstream).
    pub fn groups_key(&self) -> Option<&str> {
        self.auth_state_groups_key
            .as_deref()
            .filter(|k| !k.is_empty())
    }
}

/// `[AzureAdOAuthenticator]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureAdOAuthConfig {
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub oauth_callback_url: String,
    /// The directory (tenant) the application is registered in: its GUID or a domain.
    pub tenant_id: String,
    /// The cloud's login host (`https://login.microsoftonline.com`, or a national cloud's).
    pub graph_url: String,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub scope: Vec<String>,
    pub username_claim: String,
    pub login_service: String,
    pub basic_auth: bool,
    /// Where the groups are, in upstream's auth_state terms: `user.` is the ID token's claims.
    pub auth_state_groups_key: String,
    /// Deprecated for `auth_state_groups_key = "user.CLAIM"`.
    pub user_groups_claim: Option<String>,
    pub allowed_groups: Vec<String>,
    pub admin_groups: Vec<String>,
    pub manage_groups: bool,
}

impl Default for AzureAdOAuthConfig {
    fn default() -> Self {
        AzureAdOAuthConfig {
            client_id: String::new(),
            client_secret: None,
            oauth_callback_url: String::new(),
            tenant_id: String::new(),
            graph_url: "https://login.microsoftonline.com".into(),
            authorize_url: None,
            token_url: None,
            // The v2.0 endpoints give an ID token only for `openid`, and `name` with `profile`.
            scope: vec!["openid".into(), "profile".into()],
            username_claim: "name".into(),
            login_service: "Azure AD".into(),
            basic_auth: false,
            auth_state_groups_key: "user.groups".into(),
            user_groups_claim: None,
            allowed_groups: Vec::new(),
            admin_groups: Vec::new(),
            manage_groups: false,
        }
    }
}

impl AzureAdOAuthConfig {
    pub fn graph_url(&self) -> String {
        self.graph_url.trim_end_matches('/').to_owned()
    }

    /// The tenant's OIDC issuer, whose discovery document names the endpoints and the JWKS.
    pub fn issuer(&self) -> String {
        format!("{}/{}/v2.0", self.graph_url(), self.tenant_id.trim())
    }

    /// The claim the groups are read from (`auth_state_groups_key` without `user.`).
    pub fn groups_claim(&self) -> Option<String> {
        if let Some(claim) = &self.user_groups_claim {
            return Some(claim.clone());
        }
        self.auth_state_groups_key
            .strip_prefix("user.")
            .map(str::to_owned)
    }

    pub fn generic(&self) -> GenericOAuthConfig {
        GenericOAuthConfig {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            oauth_callback_url: self.oauth_callback_url.clone(),
            // Empty: taken from the tenant's discovery document.
            authorize_url: self.authorize_url.clone().unwrap_or_default(),
            token_url: self.token_url.clone().unwrap_or_default(),
            userdata_url: None,
            oidc_issuer: Some(self.issuer()),
            scope: self.scope.clone(),
            username_claim: self.username_claim.clone(),
            userdata_from_id_token: true,
            login_service: self.login_service.clone(),
            basic_auth: self.basic_auth,
            auth_state_groups_key: self.groups_claim(),
            claim_groups_key: None,
            allowed_groups: self.allowed_groups.clone(),
            admin_groups: self.admin_groups.clone(),
            manage_groups: self.manage_groups,
        }
    }

    fn validate(&self) -> Result<(), String> {
        let section = "AzureAdOAuthenticator";
        let tenant = self.tenant_id.trim();
        if tenant.is_empty() {
            return Err(format!("{section}.tenant_id must be set"));
        }
        if ["common", "organizations", "consumers"].contains(&tenant.to_lowercase().as_str()) {
            return Err(format!(
                "{section}.tenant_id: {tenant:?} is a multi-tenant endpoint, whose ID tokens \
                 have no one issuer to verify; set the directory's own tenant ID"
            ));
        }
        if !tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(format!(
                "{section}.tenant_id: {tenant:?} is neither a tenant GUID nor a domain"
            ));
        }
        url::Url::parse(&self.graph_url)
            .map_err(|e| format!("{section}.graph_url: invalid URL {:?}: {e}", self.graph_url))?;
        common(section, &self.generic())?;
        if !self.scope.iter().any(|s| s == "openid") {
            return Err(format!(
                "{section}.scope must include \"openid\": the user is read from the ID token"
            ));
        }
        if self.user_groups_claim.is_some() {
            tracing::warn!(
                "{section}.user_groups_claim is deprecated in OAuthenticator 17; use \
                 auth_state_groups_key = \"user.CLAIM\""
            );
        } else if self.groups_claim().is_none() {
            return Err(format!(
                "{section}.auth_state_groups_key: {:?} must start with \"user.\" (the ID \
                 token's claims, the only part of auth_state groups are read from)",
                self.auth_state_groups_key
            ));
        }
        // As upstream 17: group options without manage_groups are an error.
        for (key, set) in [
            ("allowed_groups", !self.allowed_groups.is_empty()),
            ("admin_groups", !self.admin_groups.is_empty()),
        ] {
            if set && !self.manage_groups {
                return Err(format!(
                    "{section}.{key} requires {section}.manage_groups to also be set"
                ));
            }
        }
        Ok(())
    }
}

/// Upstream 17's group options on a class whose `auth_state_groups_key` has no default: each
/// needs `manage_groups` (`_requires_manage_groups`), and `manage_groups` needs the key
/// (upstream would find no groups at every login, logging an error each time). The key, if
/// any, is returned.
fn check_groups<'a>(
    section: &str,
    key: Option<&'a str>,
    allowed_groups: &[String],
    admin_groups: &[String],
    manage_groups: bool,
) -> Result<Option<&'a str>, String> {
    let key = key.filter(|k| !k.is_empty());
    for (name, set) in [
        ("auth_state_groups_key", key.is_some()),
        ("allowed_groups", !allowed_groups.is_empty()),
        ("admin_groups", !admin_groups.is_empty()),
    ] {
        if set && !manage_groups {
            return Err(format!(
                "{section}.{name} requires {section}.manage_groups to also be set"
            ));
        }
    }
    if manage_groups && key.is_none() {
        return Err(format!(
            "{section}.manage_groups needs {section}.auth_state_groups_key, the dotted path \
             in auth_state of the user's groups"
        ));
    }
    Ok(key)
}

/// What every preset needs: a client, the callback URL, URLs that parse.
fn common(section: &str, generic: &GenericOAuthConfig) -> Result<(), String> {
    if generic.client_id.is_empty() {
        return Err(format!("{section}.client_id must be set"));
    }
    if generic.oauth_callback_url.is_empty() {
        return Err(format!("{section}.oauth_callback_url must be set"));
    }
    let urls = [
        (
            "oauth_callback_url",
            Some(generic.oauth_callback_url.as_str()),
        ),
        ("authorize_url", Some(generic.authorize_url.as_str())),
        ("token_url", Some(generic.token_url.as_str())),
        ("userdata_url", generic.userdata_url.as_deref()),
        ("oidc_issuer", generic.oidc_issuer.as_deref()),
    ];
    for (key, value) in urls {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        url::Url::parse(value).map_err(|e| {
            // github_url and the others are where the defaults come from; say which.
            format!("{section}: {key} {value:?} is not a valid URL: {e}")
        })?;
    }
    Ok(())
}

/// The section of the preset in use, checked; messages name the key.
pub(super) fn check(config: &super::Config) -> Result<(), String> {
    match config.hub.authenticator_class.as_str() {
        "github" => config.github.validate(),
        "google" => config.google.validate(),
        "azuread" => config.azuread.validate(),
        _ => Ok(()),
    }
}

impl super::Config {
    /// The OAuth client's settings for the identity-provider authenticator in use, if any.
    pub fn oauth_settings(&self) -> Option<GenericOAuthConfig> {
        match self.hub.authenticator_class.as_str() {
            "generic-oauth" | "oidc" => Some(self.generic_oauth.clone()),
            "github" => Some(self.github.generic()),
            "google" => Some(self.google.generic()),
            "azuread" => Some(self.azuread.generic()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn check_err(text: &str) -> String {
        let config = Config::parse(text).expect("parses");
        config.validate().expect_err("refused")
    }

    const GITHUB: &str = "[JupyterHub]\nauthenticator_class = \"github\"\n\
        [GitHubOAuthenticator]\nclient_id = \"c\"\noauth_callback_url = \"https://hub.test/cb\"\n";

    #[test]
    fn github_urls_follow_github_url() {
        let config = Config::parse(GITHUB).expect("parses");
        config.validate().expect("valid");
        let generic = config.oauth_settings().expect("oauth");
        assert_eq!(
            generic.authorize_url,
            "https://github.com/login/oauth/authorize"
        );
        assert_eq!(
            generic.userdata_url.as_deref(),
            Some("https://api.github.com/user")
        );
        assert_eq!(generic.username_claim, "login");
        assert!(!generic.basic_auth, "upstream sends the secret in the form");
        let enterprise =
            Config::parse(&format!("{GITHUB}github_url = \"ghe.corp.test/\"\n")).expect("parses");
        assert_eq!(
            enterprise.github.github_api(),
            "https://ghe.corp.test/api/v3"
        );
        assert_eq!(
            enterprise.github.generic().token_url,
            "https://ghe.corp.test/login/oauth/access_token"
        );
        let err = check_err(&format!(
            "{GITHUB}allowed_organizations = [\"org:team:x\"]\n"
        ));
        assert!(
            err.contains("GitHubOAuthenticator.allowed_organizations"),
            "{err}"
        );
        let err = check_err(&format!("{GITHUB}populate_teams_in_auth_state = true\n"));
        assert!(err.contains("read:org"), "{err}");
    }

    #[test]
    fn github_and_google_group_options_need_manage_groups() {
        for (base, section) in [
            (GITHUB, "GitHubOAuthenticator"),
            (GOOGLE, "GoogleOAuthenticator"),
        ] {
            for (line, key) in [
                ("allowed_groups = [\"x\"]", "allowed_groups"),
                ("admin_groups = [\"x\"]", "admin_groups"),
                ("auth_state_groups_key = \"a.b\"", "auth_state_groups_key"),
            ] {
                let err = check_err(&format!("{base}{line}\n"));
                assert!(
                    err.contains(&format!(
                        "{section}.{key} requires {section}.manage_groups to also be set"
                    )),
                    "{err}"
                );
            }
            let err = check_err(&format!("{base}manage_groups = true\n"));
            assert!(
                err.contains(&format!(
                    "{section}.manage_groups needs {section}.auth_state_groups_key"
                )),
                "{err}"
            );
            let config = Config::parse(&format!(
                "{base}manage_groups = true\nauth_state_groups_key = \"x.groups\"\n\
                 allowed_groups = [\"a\"]\nadmin_groups = [\"b\"]\n"
            ))
            .expect("parses");
            config.validate().expect("valid");
            let generic = config.oauth_settings().expect("oauth");
            assert!(generic.manage_groups);
            assert_eq!(generic.allowed_groups, ["a"]);
            assert_eq!(generic.admin_groups, ["b"]);
            // Read from auth_state by the preset, never as a claim.
            assert_eq!(generic.groups_key(), None);
            let preset = crate::auth::oauth2::presets::Preset::from_config(&config);
            assert_eq!(preset.auth_state_groups_key(), Some("x.groups"));
        }
        let err = check_err(&format!(
            "{GITHUB}manage_groups = true\nauth_state_groups_key = \"teams\"\n"
        ));
        assert!(err.contains("team objects, not names"), "{err}");
        let config = Config::parse(&format!(
            "{GOOGLE}manage_groups = true\nauth_state_groups_key = \"google_user.google_groups\"\n"
        ))
        .expect("parses");
        config.validate().expect("valid");
        let warnings = config.google.warnings();
        assert!(
            warnings.len() == 1 && warnings[0].contains("always empty"),
            "{warnings:?}"
        );
    }

    const GOOGLE: &str = "[JupyterHub]\nauthenticator_class = \"google\"\n\
        [GoogleOAuthenticator]\nclient_id = \"c\"\noauth_callback_url = \"https://hub.test/cb\"\n";

    #[test]
    fn google_defaults_and_refusals() {
        let config =
            Config::parse(&format!("{GOOGLE}hosted_domain = \"Uni.EDU\"\n")).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.google.hosted_domains(), ["uni.edu"]);
        assert!(config.google.strip_domain());
        let generic = config.oauth_settings().expect("oauth");
        assert_eq!(generic.scope, ["openid", "email"]);
        assert_eq!(generic.username_claim, "email");
        assert_eq!(
            generic.token_url,
            "https://www.googleapis.com/oauth2/v4/token"
        );
        let two = Config::parse(&format!("{GOOGLE}hosted_domain = [\"a.edu\", \"b.edu\"]\n"))
            .expect("parses");
        assert!(!two.google.strip_domain(), "two domains keep @domain");
        assert!(
            config.google.groups().is_none(),
            "no group options, no lookup"
        );
    }

    #[test]
    fn google_groups_need_a_service_account_per_domain() {
        let err = check_err(&format!(
            "{GOOGLE}allowed_google_groups = {{ \"uni.edu\" = [\"staff\"] }}\n"
        ));
        assert!(
            err.contains("GoogleOAuthenticator.allowed_google_groups names the domain \"uni.edu\"")
                && err.contains("google_service_account_keys"),
            "{err}"
        );
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("sa.json");
        let base = format!(
            "{GOOGLE}[GoogleOAuthenticator.google_service_account_keys]\n\"Uni.EDU\" = {missing:?}\n\
             [GoogleOAuthenticator.gsuite_administrator]\n\"uni.edu\" = \"hub-reader\"\n"
        );
        let err = check_err(&format!(
            "{base}[GoogleOAuthenticator.admin_google_groups]\n\"uni.edu\" = [\"admins\"]\n"
        ));
        assert!(
            err.contains("google_service_account_keys[\"Uni.EDU\"]")
                && err.contains("sa.json: cannot be read"),
            "{err}"
        );
        std::fs::write(&missing, "{\"type\": \"service_account\"}").expect("write");
        let err = check_err(&format!(
            "{base}[GoogleOAuthenticator.admin_google_groups]\n\"uni.edu\" = [\"admins\"]\n"
        ));
        assert!(err.contains("the key has no \"client_email\""), "{err}");
        let err = check_err(&format!(
            "{base}[GoogleOAuthenticator.allowed_google_groups]\n\"uni.edu\" = [\"staff@uni.edu\"]\n"
        ));
        assert!(err.contains("part before the '@'"), "{err}");
        let err = check_err(&format!(
            "{GOOGLE}[GoogleOAuthenticator.gsuite_administrator]\n\"uni.edu\" = \"admin@uni.edu\"\n"
        ));
        assert!(err.contains("without '@'"), "{err}");
        let unused = Config::parse(&format!(
            "{GOOGLE}[GoogleOAuthenticator.gsuite_administrator]\n\"uni.edu\" = \"reader\"\n"
        ))
        .expect("parses");
        unused.validate().expect("valid");
        let warnings = unused.google.warnings();
        assert!(
            warnings.len() == 1 && warnings[0].contains("only used with allowed_google_groups"),
            "{warnings:?}"
        );
    }

    const AZURE: &str = "[JupyterHub]\nauthenticator_class = \"azuread\"\n\
        [AzureAdOAuthenticator]\nclient_id = \"c\"\noauth_callback_url = \"https://hub.test/cb\"\n";

    #[test]
    fn azuread_needs_a_tenant_and_manage_groups() {
        let err = check_err(AZURE);
        assert!(
            err.contains("AzureAdOAuthenticator.tenant_id must be set"),
            "{err}"
        );
        let err = check_err(&format!("{AZURE}tenant_id = \"common\"\n"));
        assert!(err.contains("multi-tenant"), "{err}");
        let ok = format!("{AZURE}tenant_id = \"contoso.onmicrosoft.com\"\n");
        let config = Config::parse(&ok).expect("parses");
        config.validate().expect("valid");
        let generic = config.oauth_settings().expect("oauth");
        assert_eq!(
            generic.oidc_issuer.as_deref(),
            Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0")
        );
        assert_eq!(generic.username_claim, "name");
        assert_eq!(generic.auth_state_groups_key.as_deref(), Some("groups"));
        let err = check_err(&format!("{ok}allowed_groups = [\"g\"]\n"));
        assert!(
            err.contains("allowed_groups requires AzureAdOAuthenticator.manage_groups"),
            "{err}"
        );
        let err = check_err(&format!("{ok}auth_state_groups_key = \"groups\"\n"));
        assert!(err.contains("user."), "{err}");
        let err = check_err(&format!("{ok}scope = [\"profile\"]\n"));
        assert!(err.contains("openid"), "{err}");
        let claim = Config::parse(&format!("{ok}user_groups_claim = \"roles\"\n")).expect("parses");
        assert_eq!(claim.azuread.groups_claim().as_deref(), Some("roles"));
    }
}
