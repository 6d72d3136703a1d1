//! The keyring: data-key terms wrapped under the master key, the blind-index key, and the
//! encryption counter of the current term.
//!
//! Keyring records live in the `keyring` table, sealed under the master key:
//!
//! | key | value |
//! | --- | --- |
//! | `check` | a fixed text; failing to open it means a wrong master key |
//! | `term/<u32>` | the 32 bytes of one data-key term |
//! | `current` | current term (u32) and the encryptions reserved under it (u64) |
//! | `blind` | root key of the blind indexes, separate from every data key |
//! | `rewrite` | while old terms are being rewritten: the target term (u32) and the store key reached so far |
//!
//! The counter is reserved ahead in blocks written in the same batch as the records they
//! cover, so after a crash the count restarts at the reservation and never under-counts.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use ring::hmac;
use zeroize::Zeroizing;

use crate::clock::Random;

use super::seal::{self, KeyRef, SealKey};
use super::{StoreError, Table};

pub const KEYRING: Table = Table::new("keyring");
pub const CHECK_KEY: &[u8] = b"check";
pub const CURRENT_KEY: &[u8] = b"current";
pub const BLIND_KEY: &[u8] = b"blind";
pub const REWRITE_KEY: &[u8] = b"rewrite";
const CHECK_TEXT: &[u8] = b"clientele key check v1";

/// How many encryptions one reservation record covers.
pub const RESERVATION_BLOCK: u64 = 1 << 16;

/// The unwrapped keyring held in memory while the store is open.
#[derive(Debug)]
pub struct Keyring {
    master: SealKey,
    terms: RwLock<BTreeMap<u32, SealKey>>,
    current: AtomicU32,
    /// Encryptions counted under the current term (restarts at the reservation after a crash).
    used: AtomicU64,
    /// Encryptions reserved in the store for the current term.
    reserved: AtomicU64,
    blind: hmac::Key,
}

/// A record of the keyring table, ready to be written.
#[derive(Debug)]
pub struct KeyringRecord {
    pub key: Vec<u8>,
    pub sealed: Vec<u8>,
}

impl Keyring {
    /// Makes the first keyring of a new store: term 1, a blind-index key and the key check.
    pub fn create(
        master: &[u8; 32],
        random: &dyn Random,
    ) -> Result<(Self, Vec<KeyringRecord>), StoreError> {
        let master_key = SealKey::new(master)?;
        let term_bytes = random_key(random)?;
        let blind_bytes = random_key(random)?;
        let mut records = vec![
            seal_record(&master_key, CHECK_KEY, CHECK_TEXT, random)?,
            seal_record(&master_key, &term_key(1), term_bytes.as_ref(), random)?,
            seal_record(&master_key, BLIND_KEY, blind_bytes.as_ref(), random)?,
        ];
        records.push(seal_record(
            &master_key,
            CURRENT_KEY,
            &current_value(1, RESERVATION_BLOCK),
            random,
        )?);
        let mut terms = BTreeMap::new();
        terms.insert(1, SealKey::new(&term_bytes)?);
        let keyring = Self {
            master: master_key,
            terms: RwLock::new(terms),
            current: AtomicU32::new(1),
            used: AtomicU64::new(0),
            reserved: AtomicU64::new(RESERVATION_BLOCK),
            blind: hmac::Key::new(hmac::HMAC_SHA256, blind_bytes.as_ref()),
        };
        Ok((keyring, records))
    }

    /// Opens the keyring from the raw records of the keyring table. A check record that does
    /// not open means the master key is wrong.
    pub fn load(
        master: &[u8; 32],
        raw: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
        db_path: &std::path::Path,
    ) -> Result<(Self, Option<Vec<u8>>), StoreError> {
        let master_key = SealKey::new(master)?;
        let mut terms = BTreeMap::new();
        let mut current = None;
        let mut blind = None;
        let mut checked = false;
        let mut rewrite = None;

        let records: Vec<(Vec<u8>, Vec<u8>)> = raw.collect();
        let check = records
            .iter()
            .find(|(key, _)| key.as_slice() == CHECK_KEY)
            .ok_or_else(|| StoreError::Integrity {
                table: KEYRING.name().into(),
                key: "check".into(),
                reason: "the key check record is missing".into(),
            })?;
        match open_record(&master_key, CHECK_KEY, &check.1) {
            Ok(text) if text == CHECK_TEXT => checked = true,
            _ => {}
        }
        if !checked {
            return Err(StoreError::WrongKey {
                path: db_path.to_owned(),
            });
        }

        for (key, sealed) in &records {
            let plain =
                open_record(&master_key, key, sealed).map_err(|_| StoreError::Integrity {
                    table: KEYRING.name().into(),
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: "keyring record does not open under the master key".into(),
                })?;
            if let Some(term) = key.strip_prefix(b"term/") {
                let term = parse_term(term)?;
                terms.insert(term, SealKey::new(&*key_bytes(&plain)?)?);
            } else if key.as_slice() == CURRENT_KEY {
                current = Some(parse_current(&plain)?);
            } else if key.as_slice() == BLIND_KEY {
                blind = Some(hmac::Key::new(hmac::HMAC_SHA256, &key_bytes(&plain)?[..]));
            } else if key.as_slice() == REWRITE_KEY {
                rewrite = Some(plain);
            }
        }

        let missing = |what: &str| StoreError::Integrity {
            table: KEYRING.name().into(),
            key: what.into(),
            reason: "keyring record is missing".into(),
        };
        let (current, reserved) = current.ok_or_else(|| missing("current"))?;
        if !terms.contains_key(&current) {
            return Err(missing(&format!("term/{current}")));
        }
        let keyring = Self {
            master: master_key,
            terms: RwLock::new(terms),
            current: AtomicU32::new(current),
            used: AtomicU64::new(reserved),
            reserved: AtomicU64::new(reserved),
            blind: blind.ok_or_else(|| missing("blind"))?,
        };
        Ok((keyring, rewrite))
    }

    pub fn master(&self) -> &SealKey {
        &self.master
    }

    pub fn current_term(&self) -> u32 {
        self.current.load(Ordering::Acquire)
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn terms(&self) -> Vec<u32> {
        read(&self.terms).keys().copied().collect()
    }

    /// Seals a value under the current term and counts the encryption.
    pub fn seal_current(
        &self,
        store_key: &[u8],
        plaintext: &[u8],
        random: &dyn Random,
    ) -> Result<Vec<u8>, StoreError> {
        let term = self.current_term();
        let terms = read(&self.terms);
        let key = terms.get(&term).ok_or(StoreError::MissingTerm { term })?;
        self.used.fetch_add(1, Ordering::Relaxed);
        seal::seal(key, KeyRef::Term(term), store_key, plaintext, random)
    }

    /// Opens a value sealed under any term still in the keyring.
    pub fn open_term(
        &self,
        term: u32,
        header: seal::Header,
        store_key: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, OpenFailure> {
        let terms = read(&self.terms);
        let key = terms.get(&term).ok_or(OpenFailure::MissingTerm(term))?;
        seal::open(key, header, store_key, sealed).map_err(|_| OpenFailure::Integrity)
    }

    /// When the next `count` encryptions would pass the reservation, returns the new
    /// reservation record to write in the same batch.
    pub fn reserve(
        &self,
        count: u64,
        random: &dyn Random,
    ) -> Result<Option<KeyringRecord>, StoreError> {
        let used = self.used.load(Ordering::Relaxed);
        let reserved = self.reserved.load(Ordering::Relaxed);
        if used + count <= reserved {
            return Ok(None);
        }
        let next = used + count.max(RESERVATION_BLOCK);
        self.reserved.store(next, Ordering::Relaxed);
        let value = current_value(self.current_term(), next);
        Ok(Some(seal_record(
            &self.master,
            CURRENT_KEY,
            &value,
            random,
        )?))
    }

    /// Forgets the in-memory reservation after a failed write, so the next seal writes one.
    pub fn forget_reservation(&self) {
        self.reserved.store(0, Ordering::Relaxed);
    }

    /// Prepares a new term: the records to write. The term becomes current only through
    /// [`Keyring::install_term`], after the records are durable.
    pub fn prepare_term(&self, random: &dyn Random) -> Result<PreparedTerm, StoreError> {
        let term = read(&self.terms).keys().next_back().copied().unwrap_or(0) + 1;
        let bytes = random_key(random)?;
        let records = vec![
            seal_record(&self.master, &term_key(term), bytes.as_ref(), random)?,
            seal_record(
                &self.master,
                CURRENT_KEY,
                &current_value(term, RESERVATION_BLOCK),
                random,
            )?,
            seal_record(&self.master, REWRITE_KEY, &term.to_be_bytes(), random)?,
        ];
        Ok((term, bytes, records))
    }

    /// Makes a prepared term current.
    pub fn install_term(&self, term: u32, bytes: &[u8; 32]) -> Result<(), StoreError> {
        let key = SealKey::new(bytes)?;
        write(&self.terms).insert(term, key);
        self.current.store(term, Ordering::Release);
        self.used.store(0, Ordering::Relaxed);
        self.reserved.store(RESERVATION_BLOCK, Ordering::Relaxed);
        Ok(())
    }

    /// Seals a keyring record under the master key.
    pub fn seal_master(
        &self,
        key: &[u8],
        plaintext: &[u8],
        random: &dyn Random,
    ) -> Result<KeyringRecord, StoreError> {
        seal_record(&self.master, key, plaintext, random)
    }

    /// The blind index of a normalised value for one purpose ("email", "phone", ...): an
    /// HMAC-SHA256 under a key derived for that purpose from the blind-index root key,
    /// truncated to 16 bytes.
    pub fn blind_index(&self, purpose: &str, normalised: &[u8]) -> [u8; 16] {
        let derived = hmac::sign(
            &self.blind,
            format!("clientele blind index v1/{purpose}").as_bytes(),
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
        let tag = hmac::sign(&key, normalised);
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag.as_ref()[..16]);
        out
    }
}

/// A new term: its number, its key, and the keyring records that add it.
pub type PreparedTerm = (u32, Zeroizing<[u8; 32]>, Vec<KeyringRecord>);

/// Why a record under a data-key term did not open.
#[derive(Debug, Clone, Copy)]
pub enum OpenFailure {
    MissingTerm(u32),
    Integrity,
}

/// The store key of a keyring record (the keyring table prefix plus `key`).
pub fn keyring_store_key(key: &[u8]) -> Vec<u8> {
    KEYRING.store_key(key)
}

/// Re-seals every keyring record (key within the table, sealed value) from the `old` master
/// key to the `new` one, for `keys rewrap`; the data-key terms inside stay the same.
pub fn reseal_records(
    old: &SealKey,
    new: &SealKey,
    raw: &[(Vec<u8>, Vec<u8>)],
    random: &dyn Random,
) -> Result<Vec<KeyringRecord>, StoreError> {
    raw.iter()
        .map(|(key, sealed)| {
            let plain = Zeroizing::new(open_record(old, key, sealed).map_err(|_| {
                StoreError::Integrity {
                    table: KEYRING.name().into(),
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: "keyring record does not open under the current master key".into(),
                }
            })?);
            seal_record(new, key, &plain, random)
        })
        .collect()
}

fn seal_record(
    master: &SealKey,
    key: &[u8],
    plaintext: &[u8],
    random: &dyn Random,
) -> Result<KeyringRecord, StoreError> {
    let store_key = keyring_store_key(key);
    let sealed = seal::seal(master, KeyRef::Master, &store_key, plaintext, random)?;
    Ok(KeyringRecord {
        key: key.to_vec(),
        sealed,
    })
}

fn open_record(master: &SealKey, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, seal::OpenError> {
    let header = seal::header(sealed).map_err(|_| seal::OpenError)?;
    if header.key != KeyRef::Master {
        return Err(seal::OpenError);
    }
    seal::open(master, header, &keyring_store_key(key), sealed)
}

fn term_key(term: u32) -> Vec<u8> {
    format!("term/{term:010}").into_bytes()
}

fn parse_term(text: &[u8]) -> Result<u32, StoreError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| StoreError::Integrity {
            table: KEYRING.name().into(),
            key: String::from_utf8_lossy(text).into_owned(),
            reason: "malformed term number".into(),
        })
}

fn current_value(term: u32, reserved: u64) -> Vec<u8> {
    let mut value = term.to_be_bytes().to_vec();
    value.extend_from_slice(&reserved.to_be_bytes());
    value
}

fn parse_current(plain: &[u8]) -> Result<(u32, u64), StoreError> {
    let bad = || StoreError::Integrity {
        table: KEYRING.name().into(),
        key: "current".into(),
        reason: "malformed current-term record".into(),
    };
    let term = plain
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(bad)?;
    let reserved = plain
        .get(4..12)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(bad)?;
    Ok((term, reserved))
}

fn key_bytes(plain: &[u8]) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let mut out = Zeroizing::new([0u8; 32]);
    if plain.len() != 32 {
        return Err(StoreError::Crypto("key record has the wrong length"));
    }
    out.copy_from_slice(plain);
    Ok(out)
}

pub fn random_key(random: &dyn Random) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    random
        .fill(bytes.as_mut())
        .map_err(|_| StoreError::Crypto("random source failed"))?;
    Ok(bytes)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
