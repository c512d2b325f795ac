//! OAuth2 provider state: clients, authorization codes and the access tokens they turn into.
//! Codes are single-use, live 5 minutes and are stored as their SHA-256, so the database
//! never holds a usable code; `crate::oauth` speaks the protocol on top of these verbs.

use sha2::{Digest, Sha256};

use crate::db::{self, OAuthClientRow, OAuthCodeRow, TokenOwner, UserRow};

use super::tokens::{TokenForm, TokenGrant, issue_token};
use super::{Hub, Result};

const CODE_LIFETIME_MICROS: i64 = 300 * 1_000_000;

/// Codes are looked up by their SHA-256.
fn code_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}

/// What an authorization code grants, once the user said yes.
pub struct CodeRequest<'a> {
    pub client: &'a OAuthClientRow,
    pub user: &'a UserRow,
    pub redirect_uri: &'a str,
    pub scopes: &'a [String],
    /// The browser session the code (and so the token) belongs to, ended at logout.
    pub session_id: Option<String>,
    /// PKCE: the challenge and its method (`plain` when a challenge comes without one).
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

impl Hub {
    pub fn oauth_client(&self, client_id: &str) -> Result<Option<OAuthClientRow>> {
        Ok(self.db.read(|c| db::oauth_client(c, client_id))?)
    }

    /// Store a new authorization code and return it (only its hash is kept).
    pub fn create_oauth_code(&self, request: &CodeRequest<'_>) -> Result<String> {
        let code = crate::auth::new_oauth_token();
        let method = request.code_challenge.as_ref().map(|_| {
            request
                .code_challenge_method
                .clone()
                .unwrap_or_else(|| "plain".into())
        });
        self.db.write(|tx| {
            db::insert_oauth_code(
                tx,
                &OAuthCodeRow {
                    client_id: request.client.identifier.clone(),
                    code: code_hash(&code),
                    expires_at: crate::time::now() + CODE_LIFETIME_MICROS,
                    redirect_uri: request.redirect_uri.to_owned(),
                    session_id: request.session_id.clone(),
                    user_id: request.user.id,
                    scopes: request.scopes.to_vec(),
                    code_challenge: request.code_challenge.clone(),
                    code_challenge_method: method,
                },
            )
        })?;
        Ok(code)
    }

    /// Redeem a code: it is removed whatever happens next (codes are single-use), and
    /// returned only if it was issued to `client` and has not expired.
    pub fn take_oauth_code(
        &self,
        client: &OAuthClientRow,
        code: &str,
    ) -> Result<Option<OAuthCodeRow>> {
        let row = self
            .db
            .write(|tx| db::take_oauth_code(tx, &code_hash(code)))?;
        Ok(row.filter(|row| {
            row.client_id == client.identifier && row.expires_at >= crate::time::now()
        }))
    }

    /// The access token a redeemed code turns into, with its lifetime in seconds
    /// (`oauth_token_expires_in`, else the login cookie's).
    pub fn issue_oauth_token(
        &self,
        client: &OAuthClientRow,
        code: &OAuthCodeRow,
    ) -> Result<(String, u64)> {
        let hub = &self.config.hub;
        let expires_in = hub
            .oauth_token_expires_in
            .unwrap_or((hub.cookie_max_age_days * 86400.0) as u64);
        let (token, _) = self.db.write(|tx| {
            issue_token(
                tx,
                TokenForm::OAuth,
                &TokenGrant {
                    owner: TokenOwner::User(code.user_id),
                    client_id: &client.identifier,
                    session_id: code.session_id.as_deref(),
                    expires_in: Some(expires_in),
                    note: "",
                    scopes: &code.scopes,
                },
            )
        })?;
        Ok((token, expires_in))
    }
}
