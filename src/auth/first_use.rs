//! The first-use authenticator (TLJH's default, `firstuseauthenticator`'s behaviour): the
//! first login of a name sets its password; later logins must give it. Passwords are kept as
//! argon2id PHC strings by a `PasswordStore` the hub provides (its database), so this module
//! knows no database.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use super::{Authenticated, Authenticator, Error};

/// Where the hashes live.
pub trait PasswordStore: Send + Sync + 'static {
    fn hash_of(&self, name: &str) -> Result<Option<String>, String>;
    /// Whether `name` is a user of the hub already (for `create_users = false`).
    fn user_exists(&self, name: &str) -> Result<bool, String>;
}

/// Hash a password (argon2id, the crate's defaults: 19 MiB, 2 passes). CPU-bound: call it
/// off the async threads.
pub fn hash_password(password: &str) -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    super::fill_random(&mut bytes);
    let salt = SaltString::encode_b64(&bytes)
        .map_err(|e| Error::Password(format!("cannot make a salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Password(format!("cannot hash the password: {e}")))
}

/// Whether `password` is the one `hash` was made from. A hash that does not parse matches
/// nothing.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Why a new password is refused, if it is.
pub fn check_new_password(password: &str, min_length: usize) -> Result<(), Error> {
    if password.chars().count() < min_length {
        return Err(Error::PasswordRejected(format!(
            "Password too short! Please choose a password at least {min_length} characters long."
        )));
    }
    Ok(())
}

pub struct FirstUse {
    pub store: Arc<dyn PasswordStore>,
    /// A name the hub does not know may sign up by logging in (upstream's `create_users`).
    pub create_users: bool,
    pub min_password_length: usize,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Password(format!("the password check failed: {e}")))
}

#[async_trait::async_trait]
impl Authenticator for FirstUse {
    fn name(&self) -> &'static str {
        "firstuse"
    }

    async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Authenticated>, Error> {
        let store = Arc::clone(&self.store);
        let authenticated = |new_password_hash| {
            Some(Authenticated {
                name: username.to_owned(),
                admitted: false,
                admin: None,
                auth_state: None,
                new_password_hash,
            })
        };
        match store.hash_of(username).map_err(Error::Password)? {
            Some(hash) => {
                let password = password.to_owned();
                let ok = blocking(move || verify_password(&hash, &password)).await?;
                Ok(if ok { authenticated(None) } else { None })
            }
            None => {
                if !self.create_users && !store.user_exists(username).map_err(Error::Password)? {
                    return Ok(None);
                }
                check_new_password(password, self.min_password_length)?;
                let password = password.to_owned();
                let hash = blocking(move || hash_password(&password)).await??;
                // The hub keeps it once it admits the login.
                Ok(authenticated(Some(hash)))
            }
        }
    }

    /// Whoever this authenticator lets in may log in unless allow lists say otherwise: with
    /// `create_users` anyone may sign up, without it only users the hub has (an admin added
    /// them) get past `authenticate`, as firstuseauthenticator promises.
    fn allows_all_by_default(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify_only_their_password() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct hors"));
        assert!(!verify_password("not a hash", "correct horse"));
        // Salted: the same password hashes differently.
        assert_ne!(hash, hash_password("correct horse").expect("hash"));
    }

    #[test]
    fn short_passwords_are_refused_with_the_minimum() {
        let err = check_new_password("abc", 7).expect_err("too short");
        assert!(err.to_string().contains("at least 7 characters"), "{err}");
        check_new_password("abcdefg", 7).expect("long enough");
        // Characters, not bytes.
        check_new_password("ééééééé", 7).expect("seven characters");
    }
}
