//! Integration tokens for `/api/v1`.
//!
//! A token is `clt_` and 32 random bytes in base 32; only its SHA-256 is stored (tokens are long
//! and random, so a slow password hash would only cost every request). Last use is kept in
//! memory and shown on the tokens page. Creating and revoking a token take the actor, whose
//! audit entry lands with the change.

use crate::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use crate::audit::{Action, Actor, Event};
use crate::clock::{Clock, Random};
use crate::domain::Id;
use crate::domain::account::{ApiToken, SCOPES};
use crate::store::{ChangeSet, Store, StoreError, Table};

use super::AuthError;
use super::accounts::new_id;

pub const TOKENS: Table = Table::new("tokens");
/// SHA-256 of the secret → token id.
pub const TOKEN_HASHES: Table = Table::new("token_hashes");
const PREFIX: &str = "clt_";

/// What a bearer secret turned out to be.
#[derive(Debug)]
pub enum TokenCheck {
    Valid(ApiToken),
    /// A token that existed and was revoked.
    Revoked(ApiToken),
    /// Not a token of this appliance.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Tokens {
    store: Store,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    last_used: Arc<Mutex<HashMap<Id, Timestamp>>>,
}

impl Tokens {
    #[must_use]
    pub fn new(store: Store, clock: Arc<dyn Clock>, random: Arc<dyn Random>) -> Self {
        Self {
            store,
            clock,
            random,
            last_used: Arc::default(),
        }
    }

    /// Creates a token for the user `by`; the secret is returned once and never stored. The
    /// `token.created` entry by `actor` lands with it.
    pub async fn create(
        &self,
        name: &str,
        scopes: Vec<String>,
        stores: Vec<Id>,
        by: Id,
        actor: Actor,
    ) -> Result<(ApiToken, String), AuthError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(AuthError::Invalid {
                field: "name",
                message: "give the token a name of 1 to 100 characters".into(),
            });
        }
        if scopes.is_empty() {
            return Err(AuthError::Invalid {
                field: "scopes",
                message: "choose at least one scope".into(),
            });
        }
        if let Some(unknown) = scopes
            .iter()
            .find(|s| !SCOPES.iter().any(|(known, _)| known == s))
        {
            return Err(AuthError::Invalid {
                field: "scopes",
                message: format!("unknown scope `{unknown}`"),
            });
        }
        let mut raw = [0u8; 32];
        self.random
            .fill(&mut raw)
            .map_err(|_| AuthError::Store(StoreError::Crypto("random source failed")))?;
        let secret = format!(
            "{PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&raw).to_lowercase()
        );
        let hash = sha256(&secret);
        let token = ApiToken {
            id: new_id(self.clock.as_ref(), self.random.as_ref())?,
            name: name.to_owned(),
            scopes,
            stores,
            secret_sha256: data_encoding::HEXLOWER.encode(&hash),
            created_by: by,
            created_at: self.clock.now(),
            revoked_at: None,
        };
        let mut set = ChangeSet::new();
        set.insert_new(TOKEN_HASHES, hash.to_vec(), token.id.to_bytes().to_vec());
        set.insert_new(TOKENS, token.id.to_bytes().to_vec(), Store::json(&token)?);
        Event::new(Action::TokenCreated)
            .by(actor)
            .target("token", token.id)
            .fields(["name", "scopes", "stores"])
            .add_to(&mut set);
        self.store.commit(set).await?;
        Ok((token, secret))
    }

    /// The token of a bearer secret; a valid one is marked used.
    pub fn authenticate(&self, secret: &str) -> Result<TokenCheck, AuthError> {
        if !secret.starts_with(PREFIX) || secret.len() > 200 {
            return Ok(TokenCheck::Unknown);
        }
        let Some(id) = self.store.get(TOKEN_HASHES, &sha256(secret))? else {
            return Ok(TokenCheck::Unknown);
        };
        let id: [u8; 16] = id
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Decode("token index".into()))?;
        let Some(token) = self.store.get_json::<ApiToken>(TOKENS, &id)? else {
            return Ok(TokenCheck::Unknown);
        };
        if token.revoked_at.is_some() {
            return Ok(TokenCheck::Revoked(token));
        }
        lock(&self.last_used).insert(token.id, self.clock.now());
        Ok(TokenCheck::Valid(token))
    }

    pub fn list(&self) -> Result<Vec<(ApiToken, Option<Timestamp>)>, AuthError> {
        let used = lock(&self.last_used).clone();
        let mut out: Vec<(ApiToken, Option<Timestamp>)> = self
            .store
            .scan_json::<ApiToken>(TOKENS)?
            .into_iter()
            .map(|(_, token)| {
                let last = used.get(&token.id).copied();
                (token, last)
            })
            .collect();
        out.sort_by_key(|(token, _)| std::cmp::Reverse(token.created_at));
        Ok(out)
    }

    /// Revokes a token; the `token.revoked` entry by `actor` lands with it. `false` when there
    /// is no such token; revoking a revoked token changes and records nothing.
    pub async fn revoke(&self, id: Id, actor: Actor) -> Result<bool, AuthError> {
        let Some(mut token) = self.store.get_json::<ApiToken>(TOKENS, &id.to_bytes())? else {
            return Ok(false);
        };
        if token.revoked_at.is_some() {
            return Ok(true);
        }
        token.revoked_at = Some(self.clock.now());
        let mut set = ChangeSet::new();
        set.put(TOKENS, id.to_bytes().to_vec(), Store::json(&token)?);
        Event::new(Action::TokenRevoked)
            .by(actor)
            .target("token", id)
            .fields(["revoked_at"])
            .add_to(&mut set);
        self.store.commit(set).await?;
        Ok(true)
    }
}

fn sha256(text: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
