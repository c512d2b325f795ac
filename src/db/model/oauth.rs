//! `oauth_clients` and `oauth_codes`: OAuth clients (servers, services) and pending
//! authorization codes.

use rusqlite::{Connection, OptionalExtension, params};

use super::list_col;
use crate::db::Result;

#[derive(Debug, Clone, PartialEq)]
pub struct OAuthClientRow {
    pub identifier: String,
    pub description: String,
    /// `hash_token` of the client secret, or empty for none.
    pub secret: String,
    pub redirect_uri: String,
    pub allowed_scopes: Vec<String>,
    pub owner: ClientOwner,
}

/// Whose OAuth client this is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClientOwner {
    #[default]
    Hub,
    Server {
        user: String,
        server: String,
    },
    Service(String),
}

pub fn oauth_client(conn: &Connection, identifier: &str) -> Result<Option<OAuthClientRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT identifier, description, secret, redirect_uri, allowed_scopes, owner_user, owner_server, owner_service
             FROM oauth_clients WHERE identifier = ?1",
        )?
        .query_row([identifier], |r| {
            let scopes: String = r.get(4)?;
            let user: Option<String> = r.get(5)?;
            let server: Option<String> = r.get(6)?;
            let service: Option<String> = r.get(7)?;
            let owner = match (user, service) {
                (Some(user), _) => ClientOwner::Server { user, server: server.unwrap_or_default() },
                (None, Some(service)) => ClientOwner::Service(service),
                (None, None) => ClientOwner::Hub,
            };
            Ok(OAuthClientRow {
                identifier: r.get(0)?,
                description: r.get(1)?,
                secret: r.get(2)?,
                redirect_uri: r.get(3)?,
                allowed_scopes: list_col(&scopes),
                owner,
            })
        })
        .optional()?)
}

pub fn upsert_oauth_client(tx: &Connection, client: &OAuthClientRow) -> Result<()> {
    tx.execute(
        "INSERT INTO oauth_clients (identifier, description, secret, redirect_uri, allowed_scopes, owner_user, owner_server, owner_service)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(identifier) DO UPDATE SET description = excluded.description, secret = excluded.secret,
         redirect_uri = excluded.redirect_uri, allowed_scopes = excluded.allowed_scopes, owner_user = excluded.owner_user,
         owner_server = excluded.owner_server, owner_service = excluded.owner_service",
        params![
            client.identifier,
            client.description,
            client.secret,
            client.redirect_uri,
            serde_json::to_string(&client.allowed_scopes).unwrap_or_else(|_| "[]".into()),
            match &client.owner { ClientOwner::Server { user, .. } => Some(user.as_str()), _ => None },
            match &client.owner { ClientOwner::Server { server, .. } => Some(server.as_str()), _ => None },
            match &client.owner { ClientOwner::Service(name) => Some(name.as_str()), _ => None },
        ],
    )?;
    Ok(())
}

/// Deleting a client cascades to its tokens and codes.
pub fn delete_oauth_client(tx: &Connection, identifier: &str) -> Result<()> {
    tx.execute(
        "DELETE FROM oauth_clients WHERE identifier = ?1 AND identifier != 'jupyterhub'",
        [identifier],
    )?;
    Ok(())
}

/// A service's OAuth clients (and so, by cascade, the tokens and codes they issued).
pub fn delete_service_oauth_clients(tx: &Connection, service: &str) -> Result<usize> {
    Ok(tx.execute(
        "DELETE FROM oauth_clients WHERE owner_service = ?1 AND identifier != 'jupyterhub'",
        [service],
    )?)
}

#[derive(Debug, Clone, PartialEq)]
pub struct OAuthCodeRow {
    pub client_id: String,
    pub code: String,
    pub expires_at: i64,
    pub redirect_uri: String,
    pub session_id: Option<String>,
    pub user_id: i64,
    pub scopes: Vec<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

pub fn insert_oauth_code(tx: &Connection, code: &OAuthCodeRow) -> Result<()> {
    tx.execute(
        "INSERT INTO oauth_codes (client_id, code, expires_at, redirect_uri, session_id, user_id, scopes, code_challenge, code_challenge_method)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            code.client_id,
            code.code,
            code.expires_at,
            code.redirect_uri,
            code.session_id,
            code.user_id,
            serde_json::to_string(&code.scopes).unwrap_or_else(|_| "[]".into()),
            code.code_challenge,
            code.code_challenge_method
        ],
    )?;
    Ok(())
}

/// Remove and return a code: codes are single-use.
pub fn take_oauth_code(tx: &Connection, code: &str) -> Result<Option<OAuthCodeRow>> {
    let row = tx
        .prepare_cached(
            "SELECT client_id, code, expires_at, redirect_uri, session_id, user_id, scopes, code_challenge, code_challenge_method
             FROM oauth_codes WHERE code = ?1",
        )?
        .query_row([code], |r| {
            let scopes: String = r.get(6)?;
            Ok(OAuthCodeRow {
                client_id: r.get(0)?,
                code: r.get(1)?,
                expires_at: r.get(2)?,
                redirect_uri: r.get(3)?,
                session_id: r.get(4)?,
                user_id: r.get(5)?,
                scopes: list_col(&scopes),
                code_challenge: r.get(7)?,
                code_challenge_method: r.get(8)?,
            })
        })
        .optional()?;
    if row.is_some() {
        tx.execute("DELETE FROM oauth_codes WHERE code = ?1", [code])?;
    }
    Ok(row)
}
