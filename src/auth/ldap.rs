//! ldapauthenticator 2.x's `LDAPAuthenticator` (`authenticator_class = "ldap"`): bind as the
//! user (a DN from `bind_dn_template`, or looked up with `lookup_dn`), then the optional
//! `search_filter` check, `allowed_groups` membership and `auth_state_attributes`, with
//! upstream's defaults and order. Names are escaped wherever they enter LDAP: RFC 4514 in
//! DNs, RFC 4515 in filters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope};
use serde_json::{Map, Value, json};

use super::{Authenticated, Authenticator, Error};
use crate::config::{LdapConfig, LdapTlsKwargs, TlsStrategy};

/// For connecting and for each operation: a server that stops answering fails the login
/// instead of holding it (upstream has no such bound).
const TIMEOUT: Duration = Duration::from_secs(10);

/// LDAP result codes the login reads.
const NO_SUCH_OBJECT: u32 = 32;

/// RFC 4515 escaping of a value inside a search filter (ldap3's `escape_filter_chars`).
pub fn escape_filter(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\5c"),
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// RFC 4514 escaping of an attribute value inside a DN (ldap3's `escape_rdn`): the special
/// characters, a leading `#` or space and a trailing space.
pub fn escape_rdn(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '\\' | ',' | '+' | '"' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c => out.push(c),
        }
    }
    out
}

/// Python's `str.format` with named fields only (as upstream fills its templates): `{name}`
/// is replaced, `{{` and `}}` are braces. In one pass, so a value is never read as a field.
fn format(template: &str, values: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("unclosed '{{' in {template:?}")),
                    }
                }
                let value = values
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| {
                        let known: Vec<String> =
                            values.iter().map(|(k, _)| format!("{{{k}}}")).collect();
                        format!(
                            "unknown placeholder {{{name}}} in {template:?}, expected {}",
                            known.join(" or ")
                        )
                    })?;
                out.push_str(value);
            }
            '}' => return Err(format!("single '}}' in {template:?}; write '}}}}'")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Whether a template names only `allowed` placeholders, and (for filters, those with a
/// parenthesis) is a filter the client can parse once filled in.
pub fn check_template(template: &str, allowed: &[&str]) -> Result<(), String> {
    let values: Vec<(&str, &str)> = allowed.iter().map(|k| (*k, "x")).collect();
    let filled = format(template, &values)?;
    if template.starts_with('(') && ldap3::parse_filter(&filled).is_err() {
        return Err(format!("{template:?} is not a valid LDAP search filter"));
    }
    Ok(())
}

/// `ldap://HOST:PORT`, or `ldaps://` with `on_connect`.
pub fn server_url(config: &LdapConfig) -> Result<String, String> {
    let host = config.server_address.trim();
    if host.contains("://") || host.contains('/') {
        return Err(format!(
            "{host:?}: give the host name or address only; the scheme follows from \
             tls_strategy and the port from server_port"
        ));
    }
    let scheme = match config.strategy() {
        TlsStrategy::OnConnect => "ldaps",
        _ => "ldap",
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let url = format!("{scheme}://{host}:{}", config.port());
    match url::Url::parse(&url) {
        Ok(parsed) if parsed.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        Ok(_) => Err(format!("{host:?} is not a host name")),
        Err(e) => Err(format!("{host:?} is not a host name: {e}")),
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The client's TLS settings from `tls_kwargs`: the given CAs (only those, as Python's
/// `create_default_context(cafile=…)`), else the system's; a client certificate if given.
pub fn tls_config(kwargs: &LdapTlsKwargs) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut pems = Vec::new();
    if let Some(path) = &kwargs.ca_certs_file {
        pems.push((format!("ca_certs_file {}", path.display()), read(path)?));
    }
    if let Some(data) = &kwargs.ca_certs_data {
        pems.push(("ca_certs_data".to_owned(), data.as_bytes().to_vec()));
    }
    for (what, pem) in &pems {
        let certs = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{what}: no PEM certificate in it"));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{what}: not a usable CA certificate: {e}"))?;
        }
    }
    if pems.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // One unusable system certificate must not make the others unusable.
            let _ = roots.add(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (
        &kwargs.local_certificate_file,
        &kwargs.local_private_key_file,
    ) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("local_certificate_file: {e}"))?;
            let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
                .map_err(|e| format!("local_private_key_file: {e}"))?
                .ok_or("local_private_key_file: no PEM private key in it")?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("local_certificate_file: {e}"))?
        }
        _ => {
            return Err(
                "local_certificate_file and local_private_key_file must be set together".into(),
            );
        }
    };
    Ok(Arc::new(config))
}

/// One search result: its DN and its attributes' text values.
struct Entry {
    dn: String,
    attrs: HashMap<String, Vec<String>>,
}

impl Entry {
    /// ldap3's `SearchEntry::construct` without its panics on a malformed reply.
    fn parse(entry: ldap3::ResultEntry) -> Option<Entry> {
        let mut tags = entry.0.match_id(4)?.expect_constructed()?.into_iter();
        let dn = String::from_utf8(tags.next()?.expect_primitive()?).ok()?;
        let mut attrs = HashMap::new();
        for attr in tags.next()?.expect_constructed()? {
            let mut parts = attr.expect_constructed()?.into_iter();
            let name = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
            let values = parts
                .next()?
                .expect_constructed()?
                .into_iter()
                .filter_map(|v| String::from_utf8(v.expect_primitive()?).ok())
                .collect();
            attrs.insert(name, values);
        }
        Some(Entry { dn, attrs })
    }

    /// An attribute's values; names are case-insensitive in LDAP.
    fn get(&self, name: &str) -> Option<&Vec<String>> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

pub struct LdapAuth {
    config: LdapConfig,
    url: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl LdapAuth {
    /// From a validated config (`Config::validate` has checked what this reads).
    pub fn new(config: &LdapConfig) -> Result<LdapAuth, Error> {
        let url = server_url(config).map_err(Error::Ldap)?;
        let tls = match config.strategy() {
            TlsStrategy::Insecure => None,
            _ => Some(tls_config(&config.tls_kwargs).map_err(Error::Ldap)?),
        };
        if config.escape_userdn.is_some() {
            tracing::warn!(
                "LDAPAuthenticator.escape_userdn was removed in 2.0 and no longer has any \
                 effect: names are always escaped"
            );
        }
        if config.use_ssl.is_some() {
            tracing::warn!(
                "LDAPAuthenticator.use_ssl is deprecated in 2.0 in favor of tls_strategy \
                 (use_ssl = true is tls_strategy = \"on_connect\")"
            );
        }
        if config.bind_dn_template.iter().any(String::is_empty) {
            tracing::warn!("Ignoring blank 'bind_dn_template' entry!");
        }
        Ok(LdapAuth {
            config: config.clone(),
            url,
            tls,
        })
    }

    fn unreachable(&self, e: ldap3::LdapError) -> Error {
        let hint = if matches!(e, ldap3::LdapError::Io { .. })
            && e.to_string().to_lowercase().contains("certificate")
        {
            " (is the server's CA trusted? LDAPAuthenticator.tls_kwargs ca_certs_file)"
        } else {
            ""
        };
        Error::Ldap(format!("{}: {e}{hint}", self.url))
    }

    /// A connection, with TLS as `tls_strategy` says, not bound yet.
    async fn connect(&self) -> Result<Ldap, Error> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(TIMEOUT)
            .set_starttls(self.config.strategy() == TlsStrategy::BeforeBind);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(Arc::clone(tls));
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|e| self.unreachable(e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        Ok(ldap)
    }

    /// A connection bound as `dn`, or `None` when the server refuses the bind.
    async fn bind(&self, dn: &str, password: &str) -> Result<Option<Ldap>, Error> {
        let mut ldap = self.connect().await?;
        let result = ldap
            .with_timeout(TIMEOUT)
            .simple_bind(dn, password)
            .await
            .map_err(|e| self.unreachable(e))?;
        if result.rc == 0 {
            tracing::debug!(dn, "LDAP bind succeeded");
            Ok(Some(ldap))
        } else {
            tracing::debug!(dn, rc = result.rc, text = %result.text, "LDAP bind refused");
            let _ = ldap.unbind().await;
            Ok(None)
        }
    }

    /// Entries of a search; a failed search (no such base, no access) finds nothing, as
    /// ldap3's `search` returning False upstream.
    async fn search(
        &self,
        ldap: &mut Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<Entry>, Error> {
        let attrs: Vec<&str> = if attrs.is_empty() {
            vec!["1.1"]
        } else {
            attrs.to_vec()
        };
        let result = ldap
            .with_timeout(TIMEOUT)
            .search(base, scope, filter, attrs)
            .await
            .map_err(|e| self.unreachable(e))?;
        let (entries, outcome) = (result.0, result.1);
        if outcome.rc != 0 {
            if outcome.rc != NO_SUCH_OBJECT {
                tracing::warn!(base, filter, rc = outcome.rc, text = %outcome.text, "LDAP search failed");
            }
            return Ok(Vec::new());
        }
        Ok(entries.into_iter().filter_map(Entry::parse).collect())
    }

    /// `lookup_dn`: the user's DN and the `lookup_dn_user_dn_attribute` value, if exactly
    /// one entry matches (upstream's `resolve_username`).
    async fn resolve_username(&self, login: &str) -> Result<Option<(String, String)>, Error> {
        let c = &self.config;
        let mut ldap = match &c.lookup_dn_search_user {
            Some(user) => {
                let password = c
                    .lookup_dn_search_password
                    .as_ref()
                    .map(|p| p.expose())
                    .unwrap_or_default();
                match self.bind(user, password).await? {
                    Some(ldap) => ldap,
                    None => {
                        tracing::error!(
                            "Failed to bind lookup_dn_search_user '{user}': check \
                             LDAPAuthenticator.lookup_dn_search_user and lookup_dn_search_password"
                        );
                        return Ok(None);
                    }
                }
            }
            None => self.connect().await?,
        };
        let attribute = c.lookup_dn_user_dn_attribute.as_deref().unwrap_or_default();
        let filter = format(
            &c.lookup_dn_search_filter,
            &[
                (
                    "login_attr",
                    c.user_attribute.as_deref().unwrap_or_default(),
                ),
                ("login", &escape_filter(login)),
            ],
        )
        .map_err(Error::Ldap)?;
        let base = c.user_search_base.as_deref().unwrap_or_default();
        let entries = self
            .search(&mut ldap, base, Scope::Subtree, &filter, &[attribute])
            .await?;
        let _ = ldap.unbind().await;
        let entry = match entries.as_slice() {
            [] => {
                tracing::warn!("No response looking up '{login}'");
                return Ok(None);
            }
            [entry] => entry,
            many => {
                tracing::error!(
                    "Looking up '{login}' gave {} entries, expected 0 or 1. Are \
                     lookup_dn_search_filter and user_attribute configured to get a unique match?",
                    many.len()
                );
                return Ok(None);
            }
        };
        match entry.get(attribute).map(Vec::as_slice) {
            Some([value]) => Ok(Some((value.clone(), entry.dn.clone()))),
            Some([]) | None => {
                tracing::error!(
                    "No attribute values for '{attribute}' of {}. Is \
                     lookup_dn_user_dn_attribute configured correctly?",
                    entry.dn
                );
                Ok(None)
            }
            Some(values) => {
                tracing::error!(
                    "Attribute '{attribute}' of {} had {} values, expected one. Is \
                     lookup_dn_user_dn_attribute configured correctly?",
                    entry.dn,
                    values.len()
                );
                Ok(None)
            }
        }
    }

    /// `auth_state_attributes` of the user's entry (upstream's `get_user_attributes`).
    async fn user_attributes(&self, ldap: &mut Ldap, userdn: &str) -> Result<Value, Error> {
        let wanted = &self.config.auth_state_attributes;
        if wanted.is_empty() {
            return Ok(json!({}));
        }
        let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
        let entries = self
            .search(ldap, userdn, Scope::Subtree, "(objectClass=*)", &names)
            .await?;
        let [entry] = entries.as_slice() else {
            tracing::error!(
                "Expected 1 but got {} search response entries for DN '{userdn}' when looking \
                 up attributes configured via auth_state_attributes. The user's auth state \
                 will not include any attributes.",
                entries.len()
            );
            return Ok(json!({}));
        };
        let map: Map<String, Value> = entry
            .attrs
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        Ok(Value::Object(map))
    }
}

#[async_trait::async_trait]
impl Authenticator for LdapAuth {
    fn name(&self) -> &'static str {
        "ldap"
    }

    /// The directory decides who has an account; `allowed_groups` narrows that.
    fn allows_all_by_default(&self) -> bool {
        self.config.allowed_groups.is_empty()
    }

    fn admits_at_login(&self) -> bool {
        !self.config.allowed_groups.is_empty() || !self.config.admin_groups.is_empty()
    }

    async fn authenticate(
        &self,
        login: &str,
        password: &str,
    ) -> Result<Option<Authenticated>, Error> {
        let c = &self.config;
        let at_start = c.valid_username_regex.0.find(login);
        if at_start.is_none_or(|m| m.start() != 0) {
            tracing::warn!(
                "username:{login} Illegal characters in username, must match regex {}",
                c.valid_username_regex.0.as_str()
            );
            return Ok(None);
        }
        // An empty password is an unauthenticated bind, which servers let "succeed".
        if password.trim().is_empty() {
            tracing::warn!("username:{login} Login denied for blank password");
            return Ok(None);
        }
        let mut resolved = login.to_owned();
        let mut templates: Vec<String> = c.templates().map(str::to_owned).collect();
        let mut looked_up_dn = None;
        if c.lookup_dn {
            let Some((name, dn)) = self.resolve_username(login).await? else {
                tracing::warn!("username:{login} Login denied for failed lookup");
                return Ok(None);
            };
            resolved = name;
            if templates.is_empty() {
                looked_up_dn = Some(dn);
            }
        }
        let candidates: Vec<String> = match looked_up_dn {
            Some(dn) => vec![dn],
            None => templates
                .drain(..)
                .map(|t| format(&t, &[("username", &escape_rdn(&resolved))]))
                .collect::<Result<_, _>>()
                .map_err(Error::Ldap)?,
        };
        let mut bound = None;
        for dn in candidates {
            if let Some(ldap) = self.bind(&dn, password).await? {
                bound = Some((ldap, dn));
                break;
            }
        }
        let Some((mut ldap, userdn)) = bound else {
            if resolved == login {
                tracing::warn!("Failed to bind user '{login}' to an LDAP user.");
            } else {
                tracing::warn!(
                    "Failed to bind login username '{login}', with looked up user attribute \
                     value '{resolved}', to an LDAP user."
                );
            }
            return Ok(None);
        };
        if !c.search_filter.is_empty() {
            let filter = format(
                &c.search_filter,
                &[
                    ("userattr", c.user_attribute.as_deref().unwrap_or_default()),
                    ("username", &escape_filter(&resolved)),
                ],
            )
            .map_err(Error::Ldap)?;
            let base = c.user_search_base.as_deref().unwrap_or_default();
            let attrs: Vec<&str> = c.attributes.iter().map(String::as_str).collect();
            let found = self
                .search(&mut ldap, base, Scope::Subtree, &filter, &attrs)
                .await?;
            if found.len() != 1 {
                tracing::warn!(
                    "Login of '{login}' denied. Configured search_filter found {} users \
                     associated with userattr='{}' and username='{resolved}', and a unique \
                     match is required.",
                    found.len(),
                    c.user_attribute.as_deref().unwrap_or_default()
                );
                let _ = ldap.unbind().await;
                return Ok(None);
            }
        }
        let mut ldap_groups = Vec::new();
        let mut admin_groups = Vec::new();
        let group_attrs: Vec<&str> = c.group_attributes.iter().map(String::as_str).collect();
        for (group, admin) in c
            .allowed_groups
            .iter()
            .map(|g| (g, false))
            .chain(c.admin_groups.iter().map(|g| (g, true)))
        {
            let filter = format(
                &c.group_search_filter,
                &[
                    ("userdn", &escape_filter(&userdn)),
                    ("uid", &escape_filter(&resolved)),
                ],
            )
            .map_err(Error::Ldap)?;
            let found = self
                .search(&mut ldap, group, Scope::Base, &filter, &group_attrs)
                .await?;
            if found.is_empty() {
                continue;
            }
            if admin {
                admin_groups.push(group.clone());
            } else {
                ldap_groups.push(group.clone());
            }
        }
        let user_attributes = self.user_attributes(&mut ldap, &userdn).await?;
        let _ = ldap.unbind().await;
        tracing::debug!(user = login, groups = ?ldap_groups, "LDAP login");
        let name = if c.use_lookup_dn_username {
            resolved
        } else {
            login.to_owned()
        };
        // admin_groups decide the admin flag at every login (`admin_users` still make
        // admins), as PAM's and OAuthenticator's do.
        let admin = (!c.admin_groups.is_empty()).then_some(!admin_groups.is_empty());
        Ok(Some(Authenticated {
            name,
            admin,
            admitted: !ldap_groups.is_empty() || !admin_groups.is_empty(),
            auth_state: Some(json!({
                "ldap_groups": ldap_groups,
                "user_attributes": user_attributes,
            })),
            new_password_hash: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_escaped_as_rfc_4515() {
        assert_eq!(escape_filter("alice"), "alice");
        assert_eq!(escape_filter("*"), "\\2a");
        assert_eq!(escape_filter(")(uid=*"), "\\29\\28uid=\\2a");
        assert_eq!(escape_filter("a\\b"), "a\\5cb");
        assert_eq!(escape_filter("nul\0"), "nul\\00");
        assert_eq!(escape_filter("名前,=+"), "名前,=+");
        // Filled into a filter, the escaped value stays one assertion value.
        let filter =
            format("(uid={login})", &[("login", &escape_filter("*)(|(uid=*"))]).expect("formats");
        assert_eq!(filter, "(uid=\\2a\\29\\28|\\28uid=\\2a)");
        assert!(ldap3::parse_filter(&filter).is_ok());
    }

    #[test]
    fn dn_values_are_escaped_as_rfc_4514() {
        assert_eq!(escape_rdn("alice"), "alice");
        assert_eq!(
            escape_rdn("a,b+c\"d\\e<f>g;h=i"),
            "a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h\\=i"
        );
        assert_eq!(escape_rdn("#admin"), "\\#admin");
        assert_eq!(escape_rdn("a#b"), "a#b");
        assert_eq!(escape_rdn(" pad "), "\\ pad\\ ");
        assert_eq!(escape_rdn(" "), "\\ ");
        assert_eq!(escape_rdn("nul\0"), "nul\\00");
        assert_eq!(escape_rdn(""), "");
        assert_eq!(
            format(
                "uid={username},ou=people,dc=example,dc=org",
                &[("username", &escape_rdn("x,ou=admins"))]
            )
            .expect("formats"),
            "uid=x\\,ou\\=admins,ou=people,dc=example,dc=org"
        );
    }

    #[test]
    fn templates_are_filled_in_one_pass() {
        let values = [("login_attr", "uid"), ("login", "{login_attr}")];
        assert_eq!(
            format("({login_attr}={login})", &values).expect("formats"),
            "(uid={login_attr})"
        );
        assert_eq!(format("{{x}}", &[]).expect("formats"), "{x}");
        let err = format("(cn={user})", &values).expect_err("unknown field");
        assert!(err.contains("{user}") && err.contains("{login}"), "{err}");
        assert!(format("a}b", &[]).is_err());
        assert!(format("(uid={login", &values).is_err());
        assert!(check_template("(uid={username}", &["username"]).is_err());
        assert!(check_template("(&(objectClass=person)(uid={username}))", &["username"]).is_ok());
        assert!(check_template("uid={username},dc=org", &["username"]).is_ok());
    }
}
