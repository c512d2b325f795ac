//! What OAuthenticator's provider classes add to the generic client: GitHub's organisation
//! and team membership (`allowed_organizations`, through GitHub's REST API), its primary
//! email and teams in auth_state; Google's `hosted_domain` (a refusal outside it, the
//! `@domain` stripped with one), verified email and groups (`google_groups.rs`); Azure AD's
//! tenant issuer. The endpoints and claims are the config's (`config/oauth_presets.rs`);
//! this is the per-login part.

use std::sync::Arc;

use serde_json::Value;

use super::google_groups::GoogleGroups;
use super::{Error, Http, OAuthUser};
use crate::config::Config;

/// The provider whose class the login follows.
#[derive(Debug, Clone)]
pub enum Preset {
    Generic,
    GitHub {
        api: String,
        allowed_organizations: Vec<OrgTeam>,
        populate_teams: bool,
        scope: Vec<String>,
        /// `auth_state_groups_key`: where in auth_state the groups are (with `manage_groups`).
        groups_key: Option<String>,
    },
    Google {
        hosted_domain: Vec<String>,
        strip_domain: bool,
        allowed_hosted_domains: Vec<String>,
        /// With `allowed_google_groups` or `admin_google_groups`.
        groups: Option<Arc<GoogleGroups>>,
        /// `auth_state_groups_key`.
        groups_key: Option<String>,
    },
    /// The issuer's origin: the tenant's discovery document may name the tenant by GUID
    /// where the config has its domain, so its issuer is taken when it is on this host.
    AzureAd {
        graph_url: String,
    },
}

/// An `allowed_organizations` entry: `org`, or `org:team` (the team's slug).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgTeam {
    pub org: String,
    pub team: Option<String>,
}

impl OrgTeam {
    pub fn parse(entry: &str) -> Result<OrgTeam, String> {
        // Names as in GitHub's URLs: no '/', '?' or '#' that would change the API path.
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        let (org, team) = match entry.split_once(':') {
            Some((org, team)) => (org, Some(team)),
            None => (entry, None),
        };
        if !valid(org) || team.is_some_and(|t| !valid(t)) {
            return Err(format!(
                "{entry:?} is not \"org\" or \"org:team\" (names as in GitHub's URLs)"
            ));
        }
        Ok(OrgTeam {
            org: org.to_owned(),
            team: team.map(str::to_owned),
        })
    }

    /// GitHub's membership endpoint for `user`: 204 when a member.
    pub fn membership_url(&self, api: &str, user: &str) -> String {
        let user: String = form_urlencoded::byte_serialize(user.as_bytes()).collect();
        match &self.team {
            Some(team) => format!("{api}/orgs/{}/teams/{team}/members/{user}", self.org),
            None => format!("{api}/orgs/{}/members/{user}", self.org),
        }
    }
}

impl std::fmt::Display for OrgTeam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.team {
            Some(team) => write!(f, "{}:{team}", self.org),
            None => f.write_str(&self.org),
        }
    }
}

impl Preset {
    /// The preset of the configured authenticator (the config is validated).
    pub fn from_config(config: &Config) -> Preset {
        match config.hub.authenticator_class.as_str() {
            "github" => Preset::GitHub {
                api: config.github.github_api(),
                allowed_organizations: config
                    .github
                    .allowed_organizations
                    .iter()
                    .filter_map(|e| OrgTeam::parse(e).ok())
                    .collect(),
                populate_teams: config.github.populate_teams_in_auth_state,
                scope: config.github.scope.clone(),
                groups_key: config.github.groups_key().map(str::to_owned),
            },
            "google" => Preset::Google {
                groups: {
                    for warning in config.google.warnings() {
                        tracing::warn!("{warning}");
                    }
                    config.google.groups().map(Arc::new)
                },
                hosted_domain: config.google.hosted_domains(),
                strip_domain: config.google.strip_domain(),
                allowed_hosted_domains: config
                    .google
                    .allowed_hosted_domains
                    .iter()
                    .filter(|d| !d.is_empty())
                    .map(|d| d.to_lowercase())
                    .collect(),
                groups_key: config.google.groups_key().map(str::to_owned),
            },
            "azuread" => Preset::AzureAd {
                graph_url: config.azuread.graph_url(),
            },
            _ => Preset::Generic,
        }
    }

    /// Upstream's `user_auth_state_key`: where auth_state keeps the user's data.
    pub fn user_key(&self) -> &'static str {
        match self {
            Preset::Generic => "oauth_user",
            Preset::GitHub { .. } => "github_user",
            Preset::Google { .. } => "google_user",
            Preset::AzureAd { .. } => "user",
        }
    }

    /// The classes whose groups are a path into the whole auth_state (upstream's
    /// `auth_state_groups_key`), read after `update` has added what it fetches; the generic
    /// and Azure AD classes read a claim of the user's data instead.
    pub fn auth_state_groups_key(&self) -> Option<&str> {
        match self {
            Preset::GitHub { groups_key, .. } | Preset::Google { groups_key, .. } => {
                groups_key.as_deref()
            }
            _ => None,
        }
    }

    /// Whether a discovered issuer is acceptable for the configured one.
    pub fn issuer_matches(&self, configured: &str, discovered: Option<&str>) -> bool {
        let Some(discovered) = discovered.map(|i| i.trim_end_matches('/')) else {
            return false;
        };
        match self {
            Preset::AzureAd { graph_url } => discovered
                .strip_prefix(graph_url.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .and_then(|rest| rest.strip_suffix("/v2.0"))
                .is_some_and(|tenant| {
                    !tenant.is_empty()
                        && tenant
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                }),
            _ => discovered == configured.trim_end_matches('/'),
        }
    }

    /// Upstream's `user_info_to_username` override: Google strips `@domain` for a hosted
    /// domain when `strip_domain`, and notes the email's domain in the user's data.
    pub fn username(&self, name: String, userdata: &mut Value) -> String {
        let Preset::Google {
            hosted_domain,
            strip_domain,
            ..
        } = self
        else {
            return name;
        };
        let domain = userdata
            .get("email")
            .and_then(Value::as_str)
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.to_lowercase());
        if let (Some(domain), Some(object)) = (&domain, userdata.as_object_mut()) {
            object.insert("domain".into(), domain.clone().into());
        }
        match (domain, name.split_once('@')) {
            (Some(domain), Some((local, _)))
                if *strip_domain && hosted_domain.contains(&domain) =>
            {
                local.to_owned()
            }
            _ => name,
        }
    }

    /// Upstream's `update_auth_model`, at login and at each refresh: GitHub's private primary
    /// email (with the `user` or `user:email` scope) and teams; Google's groups.
    pub(super) async fn update(
        &self,
        http: &Http,
        user: &mut OAuthUser,
        access_token: &str,
    ) -> Result<(), Error> {
        if let Preset::Google { groups, .. } = self {
            return update_google(groups.as_deref(), http, user).await;
        }
        let Preset::GitHub {
            api,
            populate_teams,
            scope,
            ..
        } = self
        else {
            return Ok(());
        };
        let key = self.user_key();
        let no_email = user.auth_state[key].get("email").is_none_or(Value::is_null);
        if no_email && scope.iter().any(|s| s == "user" || s == "user:email") {
            let emails = http
                .get_json(&format!("{api}/user/emails"), Some(access_token))
                .await
                .map_err(Error::Userdata)?;
            let primary = emails.as_array().and_then(|all| {
                all.iter()
                    .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
            });
            if let Some(email) = primary.and_then(|e| e.get("email")).cloned()
                && let Some(data) = user.auth_state.get_mut(key).and_then(Value::as_object_mut)
            {
                data.insert("email".into(), email);
            }
        }
        if *populate_teams {
            let mut teams = Vec::new();
            let mut url = Some(format!("{api}/user/teams?per_page=100"));
            // A bound on pages, so a provider that always says "next" cannot hold the login.
            for _ in 0..50 {
                let Some(page_url) = url.take() else { break };
                let (page, link) = http
                    .get_json_page(&page_url, access_token)
                    .await
                    .map_err(Error::Userdata)?;
                if let Value::Array(items) = page {
                    teams.extend(items);
                }
                url = link.as_deref().and_then(next_link);
            }
            if let Some(state) = user.auth_state.as_object_mut() {
                state.insert("teams".into(), Value::Array(teams));
            }
        }
        Ok(())
    }

    /// Upstream's `check_blocked_users`/`check_allowed` overrides, at login only: an error
    /// refuses the login; `in_allowed_groups = Some(true)` admits it beyond the hub's lists.
    pub(super) async fn admit(
        &self,
        http: &Http,
        user: &mut OAuthUser,
        access_token: &str,
    ) -> Result<(), Error> {
        let key = self.user_key();
        match self {
            Preset::GitHub {
                api,
                allowed_organizations,
                ..
            } if !allowed_organizations.is_empty() => {
                if user.in_allowed_groups == Some(true) {
                    // allowed_groups admitted the user (upstream's `super().check_allowed`).
                    return Ok(());
                }
                let login = user.auth_state[key]
                    .get("login")
                    .and_then(Value::as_str)
                    .unwrap_or(&user.name)
                    .to_owned();
                let mut member = false;
                for org_team in allowed_organizations {
                    let url = org_team.membership_url(api, &login);
                    let status = http
                        .status(&url, access_token)
                        .await
                        .map_err(Error::Userdata)?;
                    tracing::debug!(user = %login, %org_team, %status, "GitHub membership");
                    if status == http::StatusCode::NO_CONTENT {
                        member = true;
                        break;
                    }
                }
                if !member {
                    tracing::warn!(user = %user.name, "not part of allowed_organizations");
                }
                user.in_allowed_groups = Some(member);
                Ok(())
            }
            Preset::Google {
                hosted_domain,
                allowed_hosted_domains,
                groups,
                ..
            } => {
                let data = &user.auth_state[key];
                let hd = data.get("hd").and_then(Value::as_str).unwrap_or_default();
                check_hosted_domain(hosted_domain, hd, &user.name)?;
                // v1 userinfo says `verified_email`, OIDC claims `email_verified`.
                let verified = ["verified_email", "email_verified"]
                    .iter()
                    .any(|k| data.get(k).and_then(Value::as_bool) == Some(true));
                if !verified {
                    let email = data
                        .get("email")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    return Err(Error::Refused(format!(
                        "Login with unverified email {email} is not allowed"
                    )));
                }
                if user.in_allowed_groups == Some(true)
                    || allowed_hosted_domains.iter().any(|d| d == hd)
                {
                    user.in_allowed_groups = Some(true);
                    return Ok(());
                }
                if let Some(groups) = groups {
                    let (found, domain) = google_groups_of(&user.auth_state[key]);
                    if let Some(member) = groups.allows(&found, &domain) {
                        if !member {
                            tracing::info!(user = %user.name, "not in allowed_google_groups");
                        }
                        user.in_allowed_groups = Some(member);
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Google's `update_auth_model`: `google_groups` in the user's data (empty without group
/// options, as upstream), and admin by `admin_google_groups` when it is set.
async fn update_google(
    groups: Option<&GoogleGroups>,
    http: &Http,
    user: &mut OAuthUser,
) -> Result<(), Error> {
    let key = "google_user";
    let data = &user.auth_state[key];
    let email = data
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let domain = data
        .get("domain")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut found = std::collections::BTreeSet::new();
    if let Some(groups) = groups {
        found = groups
            .member_groups(http, &email, &domain)
            .await
            .map_err(|e| {
                tracing::error!(user = %user.name, error = %e, "Google groups lookup failed");
                Error::GoogleGroups(e)
            })?;
        if let Some(admin) = groups.is_admin(&found, &domain) {
            user.admin = Some(admin);
        }
    }
    if let Some(data) = user.auth_state.get_mut(key).and_then(Value::as_object_mut) {
        data.insert(
            "google_groups".into(),
            Value::Array(found.into_iter().map(Value::String).collect()),
        );
    }
    Ok(())
}

/// The groups `update_google` stored, and the email's domain.
fn google_groups_of(data: &Value) -> (std::collections::BTreeSet<String>, String) {
    let groups = super::groups_from(data, "google_groups");
    let domain = data
        .get("domain")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    (groups, domain)
}

/// `hosted_domain`: when set, only accounts whose `hd` claim is one of them log in.
pub fn check_hosted_domain(hosted_domain: &[String], hd: &str, name: &str) -> Result<(), Error> {
    if hosted_domain.is_empty() || hosted_domain.iter().any(|d| d == hd) {
        return Ok(());
    }
    tracing::warn!(user = %name, hd, "blocked: hd not in hosted_domain");
    Err(Error::Refused(format!(
        "The account {name} is not in the Google Workspace domains this hub admits: {}",
        hosted_domain.join(", ")
    )))
}

/// The `rel="next"` URL of an RFC 8288 `Link` header, as GitHub paginates.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|link| {
        let (url, params) = link.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            p.trim()
                .strip_prefix("rel=")
                .is_some_and(|v| v.trim_matches('"').split(' ').any(|r| r == "next"))
        });
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| url.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn org_team_entries() {
        assert_eq!(
            OrgTeam::parse("jupyterhub").expect("org"),
            OrgTeam {
                org: "jupyterhub".into(),
                team: None
            }
        );
        let team = OrgTeam::parse("jupyterhub:mybinder-org-operators").expect("team");
        assert_eq!(team.team.as_deref(), Some("mybinder-org-operators"));
        assert_eq!(team.to_string(), "jupyterhub:mybinder-org-operators");
        assert_eq!(
            team.membership_url("https://ghe.test/api/v3", "alice"),
            "https://ghe.test/api/v3/orgs/jupyterhub/teams/mybinder-org-operators/members/alice"
        );
        assert_eq!(
            OrgTeam::parse("org")
                .expect("org")
                .membership_url("https://api.github.com", "bob"),
            "https://api.github.com/orgs/org/members/bob"
        );
        for bad in [
            "",
            ":team",
            "org:",
            "a:b:c",
            "org/x",
            "org:../admin",
            "o rg",
        ] {
            assert!(OrgTeam::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn google(domains: &[&str], strip: bool) -> Preset {
        Preset::Google {
            hosted_domain: domains.iter().map(|d| d.to_string()).collect(),
            strip_domain: strip,
            allowed_hosted_domains: Vec::new(),
            groups: None,
            groups_key: None,
        }
    }

    #[test]
    fn google_username_and_hosted_domain() {
        let one = google(&["uni.edu"], true);
        let mut data = json!({"email": "Ann@Uni.edu"});
        assert_eq!(one.username("Ann@Uni.edu".into(), &mut data), "Ann");
        assert_eq!(data["domain"], "uni.edu");
        // Another domain's address keeps its domain (and is refused by hd anyway).
        let mut data = json!({"email": "eve@gmail.com"});
        assert_eq!(
            one.username("eve@gmail.com".into(), &mut data),
            "eve@gmail.com"
        );
        let two = google(&["a.edu", "b.edu"], false);
        let mut data = json!({"email": "x@a.edu"});
        assert_eq!(two.username("x@a.edu".into(), &mut data), "x@a.edu");
        // No hosted_domain: nothing is stripped, everyone passes the hd check.
        let none = google(&[], true);
        let mut data = json!({"email": "x@a.edu"});
        assert_eq!(none.username("x@a.edu".into(), &mut data), "x@a.edu");
        assert!(check_hosted_domain(&[], "", "x").is_ok());
        let domains = vec!["a.edu".to_string(), "b.edu".to_string()];
        assert!(check_hosted_domain(&domains, "b.edu", "x").is_ok());
        assert!(matches!(
            check_hosted_domain(&domains, "", "x"),
            Err(Error::Refused(_))
        ));
        assert!(check_hosted_domain(&domains, "c.edu", "x").is_err());
        // Other presets leave the name alone.
        let mut data = json!({"email": "x@a.edu"});
        assert_eq!(
            Preset::Generic.username("x@a.edu".into(), &mut data),
            "x@a.edu"
        );
    }

    #[test]
    fn link_headers_and_azure_issuers() {
        let header = "<https://api.test/user/teams?page=2>; rel=\"next\", \
                      <https://api.test/user/teams?page=5>; rel=\"last\"";
        assert_eq!(
            next_link(header).as_deref(),
            Some("https://api.test/user/teams?page=2")
        );
        assert_eq!(next_link("<https://api.test/x>; rel=\"prev\""), None);
        assert_eq!(next_link(""), None);
        let azure = Preset::AzureAd {
            graph_url: "https://login.microsoftonline.com".into(),
        };
        let configured = "https://login.microsoftonline.com/contoso.test/v2.0";
        let guid = "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0";
        assert!(azure.issuer_matches(configured, Some(guid)));
        assert!(!azure.issuer_matches(configured, Some("https://evil.test/x/v2.0")));
        assert!(!azure.issuer_matches(
            configured,
            Some("https://login.microsoftonline.com/{tenantid}/v2.0")
        ));
        assert!(!azure.issuer_matches(configured, None));
        assert!(Preset::Generic.issuer_matches("https://idp.test/", Some("https://idp.test")));
        assert!(!Preset::Generic.issuer_matches("https://idp.test", Some("https://other.test")));
    }
}
