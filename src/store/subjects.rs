//! Per-subject keys for crypto-shredding.
//!
//! Personal data of one person is sealed under that person's own key. sled never overwrites
//! removed bytes, so these keys live outside it, in the subject keystore file:
//!
//! ```text
//! "CLSK1\n"                       magic
//! repeated: 16-byte subject id, then the 32-byte key sealed under the master key
//!           (a fixed 67 bytes: header 7, nonce 12, key 32, tag 16)
//! ```
//!
//! New keys are appended and synced before any record sealed under them is written; erasing a
//! subject rewrites the whole file without its key (write, sync, rename, sync the folder). The
//! erasure ledger, beside the master key, lists every erased subject; opening the store
//! re-applies it, so a restored backup cannot bring an erased person back.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::clock::Random;
use crate::domain::Id;

use super::StoreError;
use super::files;
use super::seal::{self, KeyRef, SealKey};

const MAGIC: &[u8] = b"CLSK1\n";
const SEALED_LEN: usize = 7 + 12 + 32 + 16;
const RECORD_LEN: usize = 16 + SEALED_LEN;

/// The subject keys in memory, with the keystore file and erasure ledger behind them.
#[derive(Debug)]
pub struct SubjectKeys {
    path: PathBuf,
    ledger_path: PathBuf,
    keys: HashMap<Id, Zeroizing<[u8; 32]>>,
    erased: HashSet<Id>,
}

impl SubjectKeys {
    /// Creates an empty keystore file (and the ledger when missing).
    pub fn create(path: &Path, ledger_path: &Path) -> Result<(), StoreError> {
        files::write_atomic(path, MAGIC, 0o600).map_err(|e| io_error(path, e))?;
        if !ledger_path.exists() {
            files::write_atomic(ledger_path, b"", 0o600).map_err(|e| io_error(ledger_path, e))?;
        }
        Ok(())
    }

    /// Reads the keystore and the ledger, drops keys of erased subjects, and cuts a torn last
    /// record (one whose append was never acknowledged).
    pub fn open(
        path: &Path,
        ledger_path: &Path,
        master: &SealKey,
        random: &dyn Random,
    ) -> Result<Self, StoreError> {
        let erased = read_ledger(ledger_path)?;
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| io_error(path, e))?;
        let body = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| StoreError::Integrity {
                table: "subject keystore".into(),
                key: path.display().to_string(),
                reason: "not a Clientele subject keystore".into(),
            })?;

        let whole = body.len() / RECORD_LEN * RECORD_LEN;
        let torn = whole != body.len();
        let mut keys = HashMap::new();
        let mut dropped = false;
        for record in body[..whole].chunks_exact(RECORD_LEN) {
            let (id_bytes, sealed) = record.split_at(16);
            let id = Id::from_bytes(
                id_bytes
                    .try_into()
                    .map_err(|_| StoreError::Crypto("id length"))?,
            );
            if erased.contains(&id) {
                dropped = true;
                continue;
            }
            let header = seal::header(sealed).map_err(|reason| integrity(id, reason))?;
            let plain = seal::open(master, header, &aad_key(id), sealed)
                .map_err(|_| integrity(id, "does not open under the master key"))?;
            let mut key = Zeroizing::new([0u8; 32]);
            if plain.len() != 32 {
                return Err(integrity(id, "wrong key length"));
            }
            key.copy_from_slice(&plain);
            keys.insert(id, key);
        }

        let store = Self {
            path: path.to_owned(),
            ledger_path: ledger_path.to_owned(),
            keys,
            erased,
        };
        if torn || dropped {
            store.rewrite(master, random)?;
        }
        Ok(store)
    }

    /// The key of a subject, when it exists and was not erased.
    pub fn get(&self, id: Id) -> Result<SealKey, StoreError> {
        match self.keys.get(&id) {
            Some(bytes) => SealKey::new(bytes),
            None if self.erased.contains(&id) => Err(StoreError::Erased),
            None => Err(StoreError::MissingSubjectKey { subject: id }),
        }
    }

    pub fn contains(&self, id: Id) -> bool {
        self.keys.contains_key(&id)
    }

    pub fn is_erased(&self, id: Id) -> bool {
        self.erased.contains(&id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Appends new subject keys and syncs the file, before anything sealed under them is
    /// written.
    pub fn append(
        &mut self,
        new: Vec<(Id, Zeroizing<[u8; 32]>)>,
        master: &SealKey,
        random: &dyn Random,
    ) -> Result<(), StoreError> {
        if new.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(new.len() * RECORD_LEN);
        for (id, key) in &new {
            if self.erased.contains(id) {
                return Err(StoreError::Erased);
            }
            out.extend_from_slice(&id.to_bytes());
            out.extend_from_slice(&seal::seal(
                master,
                KeyRef::Master,
                &aad_key(*id),
                key.as_ref(),
                random,
            )?);
        }
        let mut file = OpenOptions::new()
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| io_error(&self.path, e))?;
        file.write_all(&out).map_err(|e| io_error(&self.path, e))?;
        file.sync_data().map_err(|e| io_error(&self.path, e))?;
        for (id, key) in new {
            self.keys.insert(id, key);
        }
        Ok(())
    }

    /// Destroys a subject's key: records the erasure in the ledger (synced), then rewrites
    /// the keystore without it. Every record sealed under that key is unreadable from then on.
    pub fn erase(
        &mut self,
        id: Id,
        at: jiff::Timestamp,
        master: &SealKey,
        random: &dyn Random,
    ) -> Result<(), StoreError> {
        let mut ledger = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.ledger_path)
            .map_err(|e| io_error(&self.ledger_path, e))?;
        writeln!(ledger, "erased {id} {at}").map_err(|e| io_error(&self.ledger_path, e))?;
        ledger
            .sync_data()
            .map_err(|e| io_error(&self.ledger_path, e))?;
        self.erased.insert(id);
        self.keys.remove(&id);
        self.rewrite(master, random)
    }

    fn rewrite(&self, master: &SealKey, random: &dyn Random) -> Result<(), StoreError> {
        self.write_sealed(&self.path, master, random)
    }

    /// Writes every key, sealed under `master`, to `path` (atomically); `keys rewrap` uses it
    /// to prepare the keystore under a new master key beside the current one.
    pub fn write_sealed(
        &self,
        path: &Path,
        master: &SealKey,
        random: &dyn Random,
    ) -> Result<(), StoreError> {
        let mut out = Vec::with_capacity(MAGIC.len() + self.keys.len() * RECORD_LEN);
        out.extend_from_slice(MAGIC);
        for (id, key) in &self.keys {
            out.extend_from_slice(&id.to_bytes());
            out.extend_from_slice(&seal::seal(
                master,
                KeyRef::Master,
                &aad_key(*id),
                key.as_ref(),
                random,
            )?);
        }
        files::write_atomic(path, &out, 0o600).map_err(|e| io_error(path, e))
    }
}

/// Reads the erasure ledger: one `erased <id> <time>` line per erasure.
pub fn read_ledger(path: &Path) -> Result<HashSet<Id>, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(io_error(path, err)),
    };
    let mut erased = HashSet::new();
    for (number, line) in text.lines().enumerate() {
        let id = line
            .strip_prefix("erased ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| StoreError::Integrity {
                table: "erasure ledger".into(),
                key: format!("{}:{}", path.display(), number + 1),
                reason: "unreadable line; fix or restore the ledger before starting, \
                         because skipping it could bring an erased person back"
                    .into(),
            })?;
        erased.insert(id);
    }
    Ok(erased)
}

fn aad_key(id: Id) -> Vec<u8> {
    let mut key = b"subject-key/".to_vec();
    key.extend_from_slice(&id.to_bytes());
    key
}

fn integrity(id: Id, reason: &str) -> StoreError {
    StoreError::Integrity {
        table: "subject keystore".into(),
        key: id.to_string(),
        reason: reason.into(),
    }
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        source,
    }
}
