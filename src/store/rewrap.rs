//! `keys rewrap`: a new master key file or passphrase, without rewriting any data.
//!
//! Only what is sealed under the master key is sealed again: the keyring records (data-key
//! terms, blind-index key, counters), the key-check file and the subject keystore. The data
//! keys inside stay the same, so no record changes.
//!
//! Ordering, so a crash at any point leaves one key that opens everything:
//!
//! 1. the new key-check file, the new keystore and (for a key file) the new key are written
//!    beside the current ones as `*.new` and synced; the old key still opens everything;
//! 2. a marker `db.rewrap` records the new sealed keyring check record and the renames to do;
//! 3. one sled batch replaces every keyring record and is flushed: this is the switch;
//! 4. the `*.new` files are renamed over the current ones, the folders synced, the marker
//!    removed.
//!
//! [`recover`] runs before every open: with a marker present it looks at the keyring check
//! record in the database: when it is the new one, the switch happened and the renames are
//! completed; otherwise the `*.new` files are dropped and the old key stays.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::clock::Random;

use super::keyring::{self, KEYRING};
use super::seal::SealKey;
use super::subjects::SubjectKeys;
use super::{
    KdfParams, KdfRecord, KeyCheck, MasterKey, MasterKeySource, StoreError, StoreOptions, files,
    keycheck_path, open_sled,
};

/// The new master key.
#[derive(Debug)]
pub enum NewMaster {
    /// A new random key written to this file (it replaces the file when it is the current
    /// key file).
    KeyFile(PathBuf),
    /// A passphrase, stretched with Argon2id under a new salt.
    Passphrase(Zeroizing<Vec<u8>>),
}

/// What a rewrap did.
#[derive(Debug, Clone)]
pub struct RewrapReport {
    pub keyring_records: usize,
    pub subject_keys: usize,
    pub old_fingerprint: String,
    pub new_fingerprint: String,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    /// The new sealed keyring check record, in hex.
    check: String,
    /// `(from, to)` renames that complete the switch.
    renames: Vec<(PathBuf, PathBuf)>,
}

fn marker_path(db_dir: &Path) -> PathBuf {
    let mut name = db_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".rewrap");
    db_dir.with_file_name(name)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Seals everything under the master key again with `new`; the store must not be open.
pub fn rewrap(
    options: &StoreOptions,
    current: &MasterKeySource,
    new: &NewMaster,
    random: &dyn Random,
) -> Result<RewrapReport, StoreError> {
    rewrap_until(options, current, new, random, Stage::Complete)
}

/// How far [`rewrap_until`] goes; the shorter stages stand for a crash in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    #[cfg(test)]
    BeforeSwitch,
    #[cfg(test)]
    AfterSwitch,
    Complete,
}

fn rewrap_until(
    options: &StoreOptions,
    current: &MasterKeySource,
    new: &NewMaster,
    random: &dyn Random,
    stage: Stage,
) -> Result<RewrapReport, StoreError> {
    recover(options)?;
    let check_path = keycheck_path(&options.db_dir);
    let old = KeyCheck::read(&check_path)?.verify(current, &options.db_dir)?;

    let (new_key, kdf) = match new {
        NewMaster::KeyFile(_) => (MasterKey::generate(random)?, None),
        NewMaster::Passphrase(passphrase) => {
            let mut salt = [0u8; 16];
            random
                .fill(&mut salt)
                .map_err(|_| StoreError::Crypto("random source failed"))?;
            let params = KdfParams::default();
            let key = MasterKey::from_passphrase(passphrase, &salt, params)?;
            let record = KdfRecord {
                salt: data_encoding::HEXLOWER.encode(&salt),
                params,
            };
            (key, Some(record))
        }
    };
    if new_key.bytes() == old.bytes() {
        return Err(StoreError::KeyFile {
            path: options.db_dir.clone(),
            problem: "rewrap: the new key is the current one; give another passphrase".into(),
        });
    }
    let old_seal = SealKey::new(old.bytes())?;
    let new_seal = SealKey::new(new_key.bytes())?;

    // 1. Everything new beside the current files.
    let db = open_sled(&options.db_dir, 8)?;
    let data = db.open_tree("data")?;
    let prefix = KEYRING.store_key(b"");
    let raw: Vec<(Vec<u8>, Vec<u8>)> = data
        .scan_prefix(&prefix)
        .map(|entry| entry.map(|(k, v)| (k[prefix.len()..].to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()?;
    let records = keyring::reseal_records(&old_seal, &new_seal, &raw, random)?;
    let new_check = records
        .iter()
        .find(|record| record.key == keyring::CHECK_KEY)
        .map(|record| data_encoding::HEXLOWER.encode(&record.sealed))
        .ok_or_else(|| StoreError::Integrity {
            table: KEYRING.name().into(),
            key: "check".into(),
            reason: "the key check record is missing".into(),
        })?;

    let subjects = SubjectKeys::open(
        &options.keystore,
        &options.erasure_ledger,
        &old_seal,
        random,
    )?;
    let keystore_new = with_suffix(&options.keystore, ".new");
    subjects.write_sealed(&keystore_new, &new_seal, random)?;
    let check_new = with_suffix(&check_path, ".new");
    KeyCheck::create(&new_key, kdf, random)?.write(&check_new)?;
    let mut renames = vec![
        (keystore_new, options.keystore.clone()),
        (check_new, check_path),
    ];
    if let NewMaster::KeyFile(path) = new {
        let key_new = with_suffix(path, ".new");
        if key_new.exists() {
            std::fs::remove_file(&key_new).map_err(io(&key_new))?;
        }
        new_key.write_new_file(&key_new)?;
        renames.push((key_new, path.clone()));
    }

    // 2. The marker, then 3. the switch.
    let marker = Marker {
        check: new_check,
        renames,
    };
    let marker_file = marker_path(&options.db_dir);
    let marker_bytes =
        serde_json::to_vec_pretty(&marker).map_err(|e| StoreError::Decode(e.to_string()))?;
    files::write_atomic(&marker_file, &marker_bytes, 0o600).map_err(io(&marker_file))?;
    #[cfg(test)]
    if stage == Stage::BeforeSwitch {
        return Err(StoreError::Closed);
    }
    let mut batch = sled::Batch::default();
    for record in &records {
        batch.insert(KEYRING.store_key(&record.key), record.sealed.as_slice());
    }
    data.apply_batch(batch)?;
    db.flush()?;
    drop(data);
    drop(db);

    // 4. Complete.
    if stage == Stage::Complete {
        complete(&marker, &marker_file)?;
    }
    Ok(RewrapReport {
        keyring_records: records.len(),
        subject_keys: subjects.len(),
        old_fingerprint: old.fingerprint(),
        new_fingerprint: new_key.fingerprint(),
        key_file: match new {
            NewMaster::KeyFile(path) => Some(path.clone()),
            NewMaster::Passphrase(_) => None,
        },
    })
}

fn complete(marker: &Marker, marker_file: &Path) -> Result<(), StoreError> {
    for (from, to) in &marker.renames {
        if from.exists() {
            std::fs::rename(from, to).map_err(io(to))?;
            files::sync_dir(to).map_err(io(to))?;
        }
    }
    std::fs::remove_file(marker_file).map_err(io(marker_file))?;
    files::sync_dir(marker_file).map_err(io(marker_file))
}

/// Finishes or undoes a rewrap cut short by a crash (see the module notes).
pub fn recover(options: &StoreOptions) -> Result<(), StoreError> {
    let marker_file = marker_path(&options.db_dir);
    let bytes = match std::fs::read(&marker_file) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(io(&marker_file)(err)),
    };
    let marker: Marker = serde_json::from_slice(&bytes).map_err(|err| StoreError::Integrity {
        table: "rewrap marker".into(),
        key: marker_file.display().to_string(),
        reason: format!("unreadable ({err}); the keys were not switched, remove it"),
    })?;
    let switched = {
        let db = open_sled(&options.db_dir, 8)?;
        let data = db.open_tree("data")?;
        let current = data.get(KEYRING.store_key(keyring::CHECK_KEY))?;
        current.is_some_and(|raw| data_encoding::HEXLOWER.encode(&raw) == marker.check)
    };
    if switched {
        tracing::warn!("completing a master-key rewrap that was cut short");
        return complete(&marker, &marker_file);
    }
    tracing::warn!("dropping a master-key rewrap that was cut short before the switch");
    for (from, _) in &marker.renames {
        if from.exists() {
            std::fs::remove_file(from).map_err(io(from))?;
        }
    }
    std::fs::remove_file(&marker_file).map_err(io(&marker_file))?;
    files::sync_dir(&marker_file).map_err(io(&marker_file))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::{SystemClock, SystemRandom};
    use crate::store::{ChangeSet, Store, Table};

    const THINGS: Table = Table::new("things");

    fn store_with_a_record(dir: &Path) -> (StoreOptions, MasterKeySource) {
        let config = crate::config::Config {
            data_dir: dir.to_owned(),
            ..crate::config::Config::default()
        };
        let mut options = StoreOptions::from_config(&config);
        options.cache_mib = 8;
        let source = MasterKeySource::File(config.master_key_file());
        Store::init(&options, &source, &SystemClock, &SystemRandom::new()).unwrap();
        let store = open(&options, &source).unwrap();
        let mut set = ChangeSet::new();
        set.put(THINGS, b"k".to_vec(), b"v".to_vec());
        store.commit_blocking(set).unwrap();
        (options, source)
    }

    fn open(options: &StoreOptions, source: &MasterKeySource) -> Result<Store, StoreError> {
        Store::open(
            options,
            source,
            Arc::new(SystemClock),
            Arc::new(SystemRandom::new()),
        )
    }

    #[test]
    fn a_crash_before_the_switch_keeps_the_old_key() {
        let tmp = tempfile::tempdir().unwrap();
        let (options, source) = store_with_a_record(tmp.path());
        let MasterKeySource::File(key_file) = &source else {
            unreachable!()
        };
        let old = std::fs::read(key_file).unwrap();
        let new = NewMaster::KeyFile(key_file.clone());
        let cut = rewrap_until(
            &options,
            &source,
            &new,
            &SystemRandom::new(),
            Stage::BeforeSwitch,
        );
        assert!(cut.is_err());
        assert!(marker_path(&options.db_dir).exists());

        let store = open(&options, &source).unwrap();
        assert_eq!(store.get(THINGS, b"k").unwrap().unwrap().as_slice(), b"v");
        assert_eq!(std::fs::read(key_file).unwrap(), old);
        assert!(!marker_path(&options.db_dir).exists());
        assert!(!with_suffix(key_file, ".new").exists());
    }

    #[test]
    fn a_crash_after_the_switch_is_completed_at_the_next_open() {
        let tmp = tempfile::tempdir().unwrap();
        let (options, source) = store_with_a_record(tmp.path());
        let MasterKeySource::File(key_file) = &source else {
            unreachable!()
        };
        let old_copy = tmp.path().join("old.key");
        std::fs::copy(key_file, &old_copy).unwrap();
        let new = NewMaster::KeyFile(key_file.clone());
        rewrap_until(
            &options,
            &source,
            &new,
            &SystemRandom::new(),
            Stage::AfterSwitch,
        )
        .unwrap();
        assert!(with_suffix(key_file, ".new").exists());

        let old = open(&options, &MasterKeySource::File(old_copy));
        assert!(matches!(old, Err(StoreError::WrongKey { .. })), "{old:?}");
        let store = open(&options, &source).unwrap();
        assert_eq!(store.get(THINGS, b"k").unwrap().unwrap().as_slice(), b"v");
        assert!(!marker_path(&options.db_dir).exists());
    }
}
