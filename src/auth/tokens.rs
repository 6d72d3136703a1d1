//! Integration tokens for `/api/v1`.
//!
//! A token is `clt_` and 32 random bytes in base 32; only its SHA-256 is stored (tokens are long
//! and random, so a slow password hash would only cost every request). Last use is kept in
//! memory and shown on the tokens page.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

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

    /// Creates a token; the secret is returned once and never stored.
    pub async fn create(
        &self,
        name: &str,
        scopes: Vec<String>,
        stores: Vec<Id>,
        by: Id,
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
        self.store.commit(set).await?;
        Ok((token, secret))
    }

    /// The live token for a bearer secret.
    pub fn authenticate(&self, secret: &str) -> Result<Option<ApiToken>, AuthError> {
        if !secret.starts_with(PREFIX) || secret.len() > 200 {
            return Ok(None);
        }
        let Some(id) = self.store.get(TOKEN_HASHES, &sha256(secret))? else {
            return Ok(None);
        };
        let id: [u8; 16] = id
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Decode("token index".into()))?;
        let token: Option<ApiToken> = self.store.get_json(TOKENS, &id)?;
        let token = token.filter(|t| t.revoked_at.is_none());
        if let Some(token) = &token {
            lock(&self.last_used).insert(token.id, self.clock.now());
        }
        Ok(token)
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

    pub async fn revoke(&self, id: Id) -> Result<bool, AuthError> {
        let Some(mut token) = self.store.get_json::<ApiToken>(TOKENS, &id.to_bytes())? else {
            return Ok(false);
        };
        if token.revoked_at.is_some() {
            return Ok(true);
        }
        token.revoked_at = Some(self.clock.now());
        let mut set = ChangeSet::new();
        set.put(TOKENS, id.to_bytes().to_vec(), Store::json(&token)?);
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
