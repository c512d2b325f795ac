//! `[LetsEncrypt]`: HTTPS with a certificate the built-in proxy obtains and renews itself from
//! an ACME certificate authority (Let's Encrypt, or another through `directory_url`), as
//! TLJH's `https.letsencrypt`. Not a JupyterHub option (its proxy is a separate program).

use std::path::PathBuf;

use serde::Deserialize;

use super::Config;

/// Let's Encrypt's production and staging directories.
pub const LETSENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETSENCRYPT_STAGING_DIRECTORY: &str =
    "https://acme-staging-v02.api.letsencrypt.org/directory";

/// `[LetsEncrypt]`; its presence turns ACME on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LetsEncryptConfig {
    /// The account's contact address (expiry notices); optional, as for Let's Encrypt.
    pub email: Option<String>,
    /// The names the certificate covers; each must resolve to this host.
    pub domains: Vec<String>,
    /// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
    pub staging: bool,
    /// Another ACME CA's directory URL.
    pub directory_url: Option<String>,
    /// PEM CA certificates the directory's own HTTPS is checked against (besides the
    /// system's), for a private ACME server.
    pub directory_ca_file: Option<PathBuf>,
    /// The plain-HTTP port: HTTP-01 challenges, and a redirect to HTTPS for everything else.
    pub http_port: u16,
    /// How the CA checks this host: `http-01` (on `http_port`) or `tls-alpn-01` (on the HTTPS
    /// port itself, so port 80 may stay closed).
    pub challenge: String,
}

impl Default for LetsEncryptConfig {
    fn default() -> Self {
        LetsEncryptConfig {
            email: None,
            domains: Vec::new(),
            staging: false,
            directory_url: None,
            directory_ca_file: None,
            http_port: 80,
            challenge: "http-01".into(),
        }
    }
}

impl LetsEncryptConfig {
    /// `challenge` is TLS-ALPN-01 (else HTTP-01; checked by `validate`).
    pub fn tls_alpn(&self) -> bool {
        self.challenge == "tls-alpn-01"
    }

    /// The ACME directory to order from.
    pub fn directory(&self) -> &str {
        match (&self.directory_url, self.staging) {
            (Some(url), _) => url,
            (None, true) => LETSENCRYPT_STAGING_DIRECTORY,
            (None, false) => LETSENCRYPT_DIRECTORY,
        }
    }

    /// Where the account and certificate are kept: `letsencrypt/` in the state directory,
    /// beside the cookie secret.
    pub fn state_dir(config: &Config) -> PathBuf {
        let parent = config
            .hub
            .cookie_secret_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        parent.join("letsencrypt")
    }

    pub(super) fn validate(&self, config: &Config) -> Result<(), String> {
        if config.hub.ssl_cert.is_some() || config.hub.ssl_key.is_some() {
            return Err(
                "LetsEncrypt: cannot be used with JupyterHub.ssl_cert/ssl_key (the certificate \
                 comes from one or the other)"
                    .into(),
            );
        }
        if self.domains.is_empty() {
            return Err("LetsEncrypt.domains: name at least one domain".into());
        }
        for domain in &self.domains {
            let valid = !domain.is_empty()
                && domain.len() <= 253
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid {
                return Err(format!(
                    "LetsEncrypt.domains: {domain:?} is not a DNS name (HTTP-01 cannot validate \
                     wildcards or addresses)"
                ));
            }
        }
        if self.staging && self.directory_url.is_some() {
            return Err("LetsEncrypt: set staging or directory_url, not both".into());
        }
        if let Some(url) = &self.directory_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| format!("LetsEncrypt.directory_url: invalid URL {url:?}: {e}"))?;
            if parsed.scheme() != "https" {
                return Err(format!(
                    "LetsEncrypt.directory_url: {url:?} must be an https URL"
                ));
            }
        }
        if self.directory_ca_file.is_some() && self.directory_url.is_none() {
            return Err(
                "LetsEncrypt.directory_ca_file: only for a private ACME server's directory_url"
                    .into(),
            );
        }
        if let Some(email) = &self.email
            && (!email.contains('@') || email.chars().any(|c| c.is_whitespace() || c == ','))
        {
            return Err(format!(
                "LetsEncrypt.email: {email:?} is not an email address"
            ));
        }
        if !["http-01", "tls-alpn-01"].contains(&self.challenge.as_str()) {
            return Err(format!(
                "LetsEncrypt.challenge: {:?} is not http-01 or tls-alpn-01",
                self.challenge
            ));
        }
        if self.http_port == 0 {
            return Err("LetsEncrypt.http_port: must be a port number (80 for HTTP-01)".into());
        }
        if self.http_port == config.hub.port {
            return Err(
                "LetsEncrypt.http_port: must differ from JupyterHub.port (the HTTPS port)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let config = Config::parse(text)?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn directory_defaults_to_lets_encrypt_and_follows_staging_and_url() {
        let production = parse("[LetsEncrypt]\ndomains = [\"hub.example.org\"]\n").expect("ok");
        let section = production.letsencrypt.as_ref().expect("section");
        assert_eq!(section.directory(), LETSENCRYPT_DIRECTORY);
        assert_eq!(section.http_port, 80);
        let staging =
            parse("[LetsEncrypt]\ndomains = [\"hub.example.org\"]\nstaging = true\n").expect("ok");
        assert_eq!(
            staging.letsencrypt.expect("section").directory(),
            LETSENCRYPT_STAGING_DIRECTORY
        );
        let other = parse(
            "[LetsEncrypt]\ndomains = [\"hub.example.org\"]\ndirectory_url = \"https://ca.test/dir\"\n",
        )
        .expect("ok");
        assert_eq!(
            other.letsencrypt.expect("section").directory(),
            "https://ca.test/dir"
        );
        assert!(parse("").expect("ok").letsencrypt.is_none());
    }

    #[test]
    fn state_dir_is_beside_the_cookie_secret() {
        let relative = parse("[LetsEncrypt]\ndomains = [\"a.example.org\"]\n").expect("ok");
        assert_eq!(
            LetsEncryptConfig::state_dir(&relative),
            PathBuf::from("./letsencrypt")
        );
        let absolute = parse(
            "[JupyterHub]\ncookie_secret_file = \"/var/lib/jh/secret\"\n\
             [LetsEncrypt]\ndomains = [\"a.example.org\"]\n",
        )
        .expect("ok");
        assert_eq!(
            LetsEncryptConfig::state_dir(&absolute),
            PathBuf::from("/var/lib/jh/letsencrypt")
        );
    }

    #[test]
    fn refusals_name_the_key() {
        for (text, key) in [
            ("domains = []", "LetsEncrypt.domains"),
            ("domains = [\"a..b\"]", "LetsEncrypt.domains"),
            ("domains = [\"1.2.3.4:80\"]", "LetsEncrypt.domains"),
            (
                "domains = [\"a.b\"]\ndirectory_url = \"http://ca/\"",
                "LetsEncrypt.directory_url",
            ),
            (
                "domains = [\"a.b\"]\ndirectory_ca_file = \"/ca.pem\"",
                "LetsEncrypt.directory_ca_file",
            ),
            (
                "domains = [\"a.b\"]\nemail = \"nobody\"",
                "LetsEncrypt.email",
            ),
            (
                "domains = [\"a.b\"]\nhttp_port = 8000",
                "LetsEncrypt.http_port",
            ),
            (
                "domains = [\"a.b\"]\nchallenge = \"dns-01\"",
                "LetsEncrypt.challenge",
            ),
        ] {
            let err = parse(&format!("[LetsEncrypt]\n{text}\n")).expect_err(text);
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
