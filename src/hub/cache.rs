//! What the hub remembers between requests while nothing it was read from has changed: the
//! servers' in-memory state behind a lock that counts its changes, and rendered answers of
//! `GET /hub/api/user` and `GET /hub/api/users`, each valid for the database's and that
//! state's generations it was rendered at.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LockResult, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{Hub, Identity, Result};

/// A mutex whose every mutable access bumps a generation: a cache of something rendered from
/// the value is valid while the generation it read first is unchanged. Reads (`Deref`) leave
/// it alone; anything that could change the value goes through `DerefMut`, so no writer can
/// forget to bump it.
#[derive(Default)]
pub struct Counted<T> {
    value: Mutex<T>,
    generation: AtomicU64,
}

pub struct CountedGuard<'a, T> {
    guard: MutexGuard<'a, T>,
    generation: &'a AtomicU64,
}

impl<T> Counted<T> {
    pub fn new(value: T) -> Counted<T> {
        Counted {
            value: Mutex::new(value),
            generation: AtomicU64::new(0),
        }
    }

    /// As `Mutex::lock`, so callers keep `unwrap_or_else(|e| e.into_inner())`.
    pub fn lock(&self) -> LockResult<CountedGuard<'_, T>> {
        let wrap = |guard| CountedGuard {
            guard,
            generation: &self.generation,
        };
        match self.value.lock() {
            Ok(guard) => Ok(wrap(guard)),
            Err(poisoned) => Err(PoisonError::new(wrap(poisoned.into_inner()))),
        }
    }

    /// Read it before reading the value: what is read after is at least that fresh.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl<T> Deref for CountedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for CountedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // Bumped while the lock is held and before the change: a reader that sees the new
        // generation cannot read the value until the change is done.
        self.generation.fetch_add(1, Ordering::AcqRel);
        &mut self.guard
    }
}

/// The generations an answer was rendered at: the database's writes and the servers' state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stamp {
    db: u64,
    servers: u64,
}

struct Answer {
    stamp: Stamp,
    identity: Arc<Identity>,
    body: Bytes,
}

/// Answers by SHA-256 of the token and what was asked (the request's path and query, and
/// what else the answer depends on). What they show comes only from the database and the
/// servers' state (names, admin, groups, roles, last_activity, servers, pending, ready, the
/// token's scopes), so an answer stays right until either changes.
#[derive(Default)]
pub struct Answers(Mutex<Remembered>);

#[derive(Default)]
struct Remembered {
    answers: HashMap<[u8; 32], Answer>,
    /// The bodies' bytes: a listing of every user can be megabytes.
    bytes: usize,
}

impl Answers {
    /// Bounds on remembered answers and their bytes; past either the memory starts afresh.
    const MAX: usize = 4096;
    const MAX_BYTES: usize = 64 << 20;

    fn lock(&self) -> MutexGuard<'_, Remembered> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(token: &str, what: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(token.as_bytes());
    // The token holds no NUL (it is a header value), so the pair is unambiguous.
    hash.update([0]);
    hash.update(what.as_bytes());
    hash.finalize().into()
}

impl Hub {
    /// Take this before resolving and rendering an answer to remember.
    pub fn answer_stamp(&self) -> Stamp {
        Stamp {
            db: self.db.generation(),
            servers: self.servers.generation(),
        }
    }

    /// The remembered answer to `what` for `token`, if nothing it shows changed since; the
    /// request's side effects are those of the full path (token expiry, token and user
    /// activity, the identity provider's refresh). `None`: render it again.
    pub async fn remembered(&self, token: &str, what: &str, stamp: Stamp) -> Result<Option<Bytes>> {
        let key = key(token, what);
        let hit = {
            let mut memory = self.answers.lock();
            match memory.answers.get(&key) {
                Some(a) if a.stamp == stamp => Some((a.identity.clone(), a.body.clone())),
                Some(_) => {
                    if let Some(old) = memory.answers.remove(&key) {
                        memory.bytes -= old.body.len();
                    }
                    None
                }
                None => None,
            }
        };
        let Some((identity, body)) = hit else {
            return Ok(None);
        };
        let Some(row) = &identity.token else {
            return Ok(None);
        };
        let now = crate::time::now();
        if row.expires_at.is_some_and(|t| t < now) || identity.valid_until.is_some_and(|t| t < now)
        {
            return Ok(None);
        }
        if let Some(user) = identity.user()
            && !self.refresh_auth(user, false).await?
        {
            return Ok(None);
        }
        self.note_token_activity(row, &identity.principal);
        Ok(Some(body))
    }

    /// Remember `body` as the answer to `what` for `token`, rendered for `identity` after
    /// `stamp` was taken.
    pub fn remember(
        &self,
        token: &str,
        what: &str,
        stamp: Stamp,
        identity: &Identity,
        body: Bytes,
    ) {
        if identity.token.is_none() {
            return;
        }
        if body.len() > Answers::MAX_BYTES / 4 {
            return;
        }
        let mut memory = self.answers.lock();
        if memory.answers.len() >= Answers::MAX || memory.bytes + body.len() > Answers::MAX_BYTES {
            memory.answers.clear();
            memory.bytes = 0;
        }
        memory.bytes += body.len();
        let answer = Answer {
            stamp,
            identity: Arc::new(identity.clone()),
            body,
        };
        if let Some(old) = memory.answers.insert(key(token, what), answer) {
            memory.bytes -= old.body.len();
        }
    }
}
