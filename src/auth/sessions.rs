//! Server-side sessions, kept in the encrypted store.
//!
//! The cookie holds 32 random bytes; the store keeps the session under the SHA-256 of them, so
//! neither the database nor a log ever holds a usable cookie. Last-seen times live in memory
//! and are written lazily (a page view is not a durable write); the idle timeout uses the
//! newer of the two.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, Random};
use crate::domain::Id;
use crate::store::{ChangeSet, Store, StoreError, Table};

use super::AuthError;

pub const SESSIONS: Table = Table::new("sessions");

/// How far a session has come through sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Password accepted; the second factor is still due.
    SecondFactor,
    /// Signed in, but must choose a new password before anything else.
    ChangePassword,
    /// Signed in, but the role requires a second factor that is not set up yet.
    Enrol,
    /// Fully signed in.
    Full,
}

/// One session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user_id: Id,
    pub stage: Stage,
    /// Token that every form and state-changing request of this session must carry.
    pub csrf: String,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// Client address at sign-in.
    pub client: String,
}

/// The store key of a session: SHA-256 of the cookie value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey(pub [u8; 32]);

impl SessionKey {
    #[must_use]
    pub fn of_cookie(cookie: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, cookie.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        Self(key)
    }

    /// A public handle for lists and revoke buttons (not the cookie).
    #[must_use]
    pub fn handle(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    #[must_use]
    pub fn from_handle(handle: &str) -> Option<Self> {
        let bytes = data_encoding::HEXLOWER.decode(handle.as_bytes()).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

/// Session services.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Store,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    idle: SignedDuration,
    absolute: SignedDuration,
    seen: Arc<Mutex<HashMap<SessionKey, Timestamp>>>,
}

impl Sessions {
    #[must_use]
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        idle: Duration,
        absolute: Duration,
    ) -> Self {
        Self {
            store,
            clock,
            random,
            idle: SignedDuration::try_from(idle).unwrap_or(SignedDuration::from_mins(30)),
            absolute: SignedDuration::try_from(absolute).unwrap_or(SignedDuration::from_hours(12)),
            seen: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Starts a session; returns the cookie value (shown to the browser only).
    pub async fn start(
        &self,
        user: Id,
        stage: Stage,
        client: &str,
    ) -> Result<(String, Session), AuthError> {
        let cookie = random_token(self.random.as_ref(), 32)?;
        let now = self.clock.now();
        let session = Session {
            user_id: user,
            stage,
            csrf: random_token(self.random.as_ref(), 24)?,
            created_at: now,
            last_seen_at: now,
            client: client.to_owned(),
        };
        let mut set = ChangeSet::new();
        set.insert_new(
            SESSIONS,
            SessionKey::of_cookie(&cookie).0.to_vec(),
            Store::json(&session)?,
        );
        self.store.commit(set).await?;
        Ok((cookie, session))
    }

    /// Finds a live session by cookie and marks it seen; an expired one is ended.
    pub async fn find(&self, cookie: &str) -> Result<Option<(SessionKey, Session)>, AuthError> {
        let key = SessionKey::of_cookie(cookie);
        let Some(mut session) = self.store.get_json::<Session>(SESSIONS, &key.0)? else {
            return Ok(None);
        };
        let now = self.clock.now();
        if let Some(seen) = lock(&self.seen).get(&key) {
            session.last_seen_at = session.last_seen_at.max(*seen);
        }
        let idle_for = now.duration_since(session.last_seen_at);
        let age = now.duration_since(session.created_at);
        if idle_for > self.idle || age > self.absolute {
            self.end(key).await?;
            return Ok(None);
        }
        lock(&self.seen).insert(key, now);
        Ok(Some((key, session)))
    }

    /// Moves a session to another stage (after the second factor, a password change...).
    pub async fn set_stage(
        &self,
        key: SessionKey,
        session: &mut Session,
        stage: Stage,
    ) -> Result<(), AuthError> {
        session.stage = stage;
        let mut set = ChangeSet::new();
        set.put_with(
            SESSIONS,
            key.0.to_vec(),
            Store::json(session)?,
            crate::store::Sealing::DataKey,
            crate::store::Expect::Present,
        );
        Ok(self.store.commit(set).await?)
    }

    pub async fn end(&self, key: SessionKey) -> Result<(), AuthError> {
        lock(&self.seen).remove(&key);
        let mut set = ChangeSet::new();
        set.delete(SESSIONS, key.0.to_vec());
        Ok(self.store.commit(set).await?)
    }

    /// Every live session of a user.
    pub fn of_user(&self, user: Id) -> Result<Vec<(SessionKey, Session)>, AuthError> {
        let mut out = Vec::new();
        for (key, mut session) in self.store.scan_json::<Session>(SESSIONS)? {
            if session.user_id == user {
                let key = SessionKey(
                    key.as_slice()
                        .try_into()
                        .map_err(|_| StoreError::Decode("session key".into()))?,
                );
                if let Some(seen) = lock(&self.seen).get(&key) {
                    session.last_seen_at = session.last_seen_at.max(*seen);
                }
                out.push((key, session));
            }
        }
        out.sort_by_key(|(_, session)| std::cmp::Reverse(session.created_at));
        Ok(out)
    }

    /// Ends every session of a user (disabled account, password reset).
    pub async fn end_all(&self, user: Id) -> Result<usize, AuthError> {
        let sessions = self.of_user(user)?;
        let mut set = ChangeSet::new();
        for (key, _) in &sessions {
            lock(&self.seen).remove(key);
            set.delete(SESSIONS, key.0.to_vec());
        }
        self.store.commit(set).await?;
        Ok(sessions.len())
    }

    /// Writes the last-seen times gathered in memory; run every minute or so.
    pub async fn write_last_seen(&self) -> Result<(), AuthError> {
        let seen: Vec<(SessionKey, Timestamp)> =
            lock(&self.seen).iter().map(|(k, t)| (*k, *t)).collect();
        let mut set = ChangeSet::new();
        for (key, at) in seen {
            if let Some(mut session) = self.store.get_json::<Session>(SESSIONS, &key.0)?
                && session.last_seen_at < at
            {
                session.last_seen_at = at;
                set.put_with(
                    SESSIONS,
                    key.0.to_vec(),
                    Store::json(&session)?,
                    crate::store::Sealing::DataKey,
                    crate::store::Expect::Present,
                );
            }
        }
        match self.store.commit(set).await {
            Ok(()) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

/// URL-safe random text of `bytes` random bytes.
pub fn random_token(random: &dyn Random, bytes: usize) -> Result<String, AuthError> {
    let mut buf = vec![0u8; bytes];
    random
        .fill(&mut buf)
        .map_err(|_| AuthError::Store(StoreError::Crypto("random source failed")))?;
    Ok(data_encoding::BASE64URL_NOPAD.encode(&buf))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
