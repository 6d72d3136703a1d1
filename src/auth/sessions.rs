//! Server-side sessions, kept in the encrypted store.
//!
//! The cookie holds 32 random bytes; the store keeps the session under the SHA-256 of them, so
//! neither the database nor a log ever holds a usable cookie. Last-seen times live in memory
//! and are written lazily (a page view is not a durable write); the idle timeout uses the
//! newer of the two.
//!
//! Starting and ending a session take the audit event that explains it (sign-in, sign-out,
//! timeout, revocation), which lands in the same change set.

use crate::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::audit::{Action, Actor, Event};
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

/// What a session cookie leads to.
#[derive(Debug)]
pub enum Lookup {
    Live(SessionKey, Session),
    /// Past a timeout: the caller ends it with [`Sessions::end`] and records why.
    Expired(SessionKey, Session, Timeout),
    /// No session has this cookie (never did, or it has ended).
    Unknown,
}

/// Which timeout ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    Idle,
    Absolute,
}

impl Timeout {
    /// The reason recorded in the audit entry.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Idle => "idle timeout",
            Self::Absolute => "absolute timeout",
        }
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

    /// Starts a session; returns the cookie value (shown to the browser only). `event` (the
    /// sign-in) lands with it.
    pub async fn start(
        &self,
        user: Id,
        stage: Stage,
        client: &str,
        event: Event,
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
        event.add_to(&mut set);
        self.store.commit(set).await?;
        Ok((cookie, session))
    }

    /// Finds the session of a cookie and marks a live one seen. An expired one is returned as
    /// such, for the caller to end and record.
    pub fn find(&self, cookie: &str) -> Result<Lookup, AuthError> {
        let key = SessionKey::of_cookie(cookie);
        let Some(mut session) = self.store.get_json::<Session>(SESSIONS, &key.0)? else {
            return Ok(Lookup::Unknown);
        };
        let now = self.clock.now();
        if let Some(seen) = lock(&self.seen).get(&key) {
            session.last_seen_at = session.last_seen_at.max(*seen);
        }
        let idle_for = now.duration_since(session.last_seen_at);
        let age = now.duration_since(session.created_at);
        if age > self.absolute {
            return Ok(Lookup::Expired(key, session, Timeout::Absolute));
        }
        if idle_for > self.idle {
            return Ok(Lookup::Expired(key, session, Timeout::Idle));
        }
        lock(&self.seen).insert(key, now);
        Ok(Lookup::Live(key, session))
    }

    /// The live session of a cookie, without marking it seen or ending it (to name the actor
    /// of a refused request); `None` when there is none or it has timed out.
    pub fn peek(&self, cookie: &str) -> Result<Option<Session>, AuthError> {
        let key = SessionKey::of_cookie(cookie);
        let Some(mut session) = self.store.get_json::<Session>(SESSIONS, &key.0)? else {
            return Ok(None);
        };
        if let Some(seen) = lock(&self.seen).get(&key) {
            session.last_seen_at = session.last_seen_at.max(*seen);
        }
        let now = self.clock.now();
        let live = now.duration_since(session.created_at) <= self.absolute
            && now.duration_since(session.last_seen_at) <= self.idle;
        Ok(live.then_some(session))
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

    /// Ends a session; `event` (sign-out, timeout, revocation) lands with it.
    pub async fn end(&self, key: SessionKey, event: Event) -> Result<(), AuthError> {
        lock(&self.seen).remove(&key);
        let mut set = ChangeSet::new();
        set.delete(SESSIONS, key.0.to_vec());
        event.add_to(&mut set);
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

    /// Ends every session of a user but `keep` (disabled account, password reset or change);
    /// each ended session gets an `auth.session_revoked` entry by `actor` giving `reason`, in
    /// the same change set. Returns how many ended.
    pub async fn end_all(
        &self,
        user: Id,
        keep: Option<SessionKey>,
        actor: &Actor,
        reason: &'static str,
    ) -> Result<usize, AuthError> {
        let mut set = ChangeSet::new();
        let mut ended = 0;
        for (key, _) in self.of_user(user)? {
            if Some(key) == keep {
                continue;
            }
            lock(&self.seen).remove(&key);
            set.delete(SESSIONS, key.0.to_vec());
            Event::new(Action::SessionRevoked)
                .by(actor.clone())
                .target("session", key.handle())
                .reason(reason)
                .add_to(&mut set);
            ended += 1;
        }
        self.store.commit(set).await?;
        Ok(ended)
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
