//! PAM (interim; see issue #6).
use crate::config::Config;

pub struct Pam;

impl Pam {
    pub fn from_config(_config: &Config) -> Pam {
        Pam
    }
}

#[async_trait::async_trait]
impl super::Authenticator for Pam {
    fn name(&self) -> &'static str {
        "pam"
    }
    async fn authenticate(
        &self,
        _username: &str,
        _password: &str,
    ) -> Result<Option<super::Authenticated>, super::Error> {
        Err(super::Error::Pam("not yet available".into()))
    }
}
