//! The encrypted store: sled underneath, every value sealed, one write path.
//!
//! Layout of a data folder:
//!
//! ```text
//! db/                  the sled database (one tree `data` for all tables, one tree `meta`)
//! subjects.keystore    per-subject keys, sealed under the master key (see `subjects`)
//! keys/master.key      the master key file (unless a passphrase or credential is used)
//! keys/erasures.ledger every erased subject, re-applied at every open
//! ```
//!
//! Backups (`backup`) copy the sealed values as stored, with a redo section for the writes
//! committed while they stream; `rewrap` changes the master key without rewriting data.
//!
//! Invariants:
//! - every value in `data` is sealed (see `seal`); keys are table prefix + opaque id or blind
//!   index, never plaintext personal data;
//! - `meta` holds only non-secret facts (schema version, creation time, KDF salt);
//! - every write goes through [`Store::commit`] and the committer thread (see `commit`);
//! - a failed open is a typed error, never garbage.

pub mod backup;
mod commit;
pub mod files;
mod keyring;
mod log;
pub mod master;
pub mod migrate;
pub mod rewrap;
mod rewrite;
pub mod seal;
mod subjects;

use crate::lock;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use crate::clock::{Clock, Random};
use crate::domain::Id;

pub use commit::{Chained, ChangeSet, Expect, Link, LogHead, Sealing};
use keyring::{KEYRING, Keyring, OpenFailure};
pub use master::{KdfParams, MasterKey, MasterKeySource};
use seal::KeyRef;
use subjects::SubjectKeys;

/// Entries of a hash-chained log: sequence number and the entry's bytes.
pub type LogEntries<'a> =
    Box<dyn Iterator<Item = Result<(u64, Zeroizing<Vec<u8>>), StoreError>> + 'a>;

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = 2;

pub(crate) const META_SCHEMA: &[u8] = b"schema_version";
/// Set by a migration to "FROM TO" (schema versions), until the audit trail has recorded it.
const META_MIGRATED: &[u8] = b"migrated";
const META_CREATED: &[u8] = b"created_at";

/// A named table: a key prefix inside the `data` tree, bound into every sealed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Table(&'static str);

impl Table {
    /// Names a table. Names are short ASCII words and must not change once data is written.
    #[must_use]
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    #[must_use]
    pub const fn name(self) -> &'static str {
        self.0
    }

    /// The store key of `key` in this table: name length, name, key.
    #[must_use]
    pub fn store_key(self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.0.len() + key.len());
        out.push(self.0.len() as u8);
        out.extend_from_slice(self.0.as_bytes());
        out.extend_from_slice(key);
        out
    }

    fn prefix(self) -> Vec<u8> {
        self.store_key(&[])
    }
}

/// Splits a store key into table name and key.
fn split_store_key(store_key: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = store_key.split_first()?;
    let name = rest.get(..usize::from(len))?;
    Some((
        std::str::from_utf8(name).ok()?,
        rest.get(usize::from(len)..)?,
    ))
}

/// Why a store operation failed. Messages name the place and say what to do; none carries a
/// record's content.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no Clientele store at {path}; run `clientele init` first")]
    NotInitialised { path: PathBuf },
    #[error("a Clientele store already exists at {path}; refusing to create another over it")]
    AlreadyExists { path: PathBuf },
    #[error(
        "the store at {path} is in use by another process (is `clientele serve` running?); \
         stop it, or use a command that talks to the running server"
    )]
    InUse { path: PathBuf },
    #[error(
        "the master key does not open the store at {path} (wrong key file or passphrase); \
         nothing was changed"
    )]
    WrongKey { path: PathBuf },
    #[error("master key {path} {problem}")]
    KeyFile { path: PathBuf, problem: String },
    #[error("record {table}/{key} failed its integrity check: {reason}")]
    Integrity {
        table: String,
        key: String,
        reason: String,
    },
    #[error("the record belongs to an erased subject and can no longer be read")]
    Erased,
    #[error("the key of subject {subject} is missing from the subject keystore")]
    MissingSubjectKey { subject: Id },
    #[error("data-key term {term} is missing from the keyring")]
    MissingTerm { term: u32 },
    #[error("write refused in table {table}: {expectation}")]
    Conflict {
        table: String,
        expectation: &'static str,
    },
    #[error(
        "the store at {path} has schema version {found}, newer than this binary supports \
         ({supported}); install the newer Clientele or restore a backup made by this version"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "migration to schema {to} ({name}) failed: {reason}; the store was left unchanged at \
         schema {from}"
    )]
    Migration {
        from: u32,
        to: u32,
        name: &'static str,
        reason: String,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("the write could not be made durable: {0}")]
    WriteFailed(String),
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
    #[error("a stored value is not in the expected shape: {0}")]
    Decode(String),
    #[error("the store is closed")]
    Closed,
    #[error("the {log} log refused an entry, so the whole write was refused: {reason}")]
    LogRefused { log: &'static str, reason: String },
}

impl StoreError {
    /// A copy of a group failure for each set that shared it.
    fn clone_for_reply(&self) -> Self {
        Self::WriteFailed(self.to_string())
    }
}

/// How to open a store; built from [`crate::config::Config`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub db_dir: PathBuf,
    pub keystore: PathBuf,
    pub erasure_ledger: PathBuf,
    pub cache_mib: u64,
    pub max_encryptions_per_term: u64,
    pub group_commit_window: Duration,
}

impl StoreOptions {
    #[must_use]
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            db_dir: config.db_dir(),
            keystore: config.data_dir.join("subjects.keystore"),
            erasure_ledger: config.keys_dir().join("erasures.ledger"),
            cache_mib: config.store.cache_mib,
            max_encryptions_per_term: config.store.max_encryptions_per_term,
            group_commit_window: config.store.group_commit_window,
        }
    }
}

/// State shared by the store handle, the committer and the rewriter.
#[derive(Debug)]
struct Shared {
    db: sled::Db,
    data: sled::Tree,
    keyring: Keyring,
    subjects: RwLock<SubjectKeys>,
    random: Arc<dyn Random>,
    /// The committer's source of nonces: `random`, read in blocks.
    nonces: crate::clock::BufferedRandom,
    clock: Arc<dyn Clock>,
    group_window: Duration,
    max_encryptions_per_term: u64,
    rewriter: Mutex<Option<Sender<()>>>,
    /// Heads of the hash-chained logs, loaded at first use; moved only by the committer.
    log_heads: Mutex<std::collections::HashMap<&'static str, LogHead>>,
    /// Set when the store is being closed; background work stops at its next step.
    closing: std::sync::atomic::AtomicBool,
    /// While a backup streams: every write applied since it started, in order (its redo
    /// section). Held across each batch, so a batch is either wholly in it or wholly after it.
    redo: Mutex<Option<Vec<backup::RedoOp>>>,
    /// Where the files beside the database are.
    paths: StorePaths,
}

/// The files of a store beside the sled database.
#[derive(Debug, Clone)]
pub(crate) struct StorePaths {
    pub db_dir: PathBuf,
    pub keystore: PathBuf,
    pub erasure_ledger: PathBuf,
}

impl Shared {
    fn subjects(&self) -> RwLockReadGuard<'_, SubjectKeys> {
        self.subjects
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn subjects_mut(&self) -> RwLockWriteGuard<'_, SubjectKeys> {
        self.subjects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn log_heads(&self) -> MutexGuard<'_, std::collections::HashMap<&'static str, LogHead>> {
        lock(&self.log_heads)
    }

    /// The newest entry of `log`, read from the store the first time.
    fn log_head(&self, log: Table) -> Result<LogHead, StoreError> {
        if let Some(head) = self.log_heads().get(log.name()) {
            return Ok(*head);
        }
        let head = match self.data.scan_prefix(log.prefix()).next_back() {
            Some(entry) => {
                let (store_key, raw) = entry?;
                let newest = self.open_log_record(log, &store_key, &raw)?.pop();
                newest
                    .and_then(|(seq, value)| log::log_head_of(seq, &value))
                    .ok_or_else(|| StoreError::Decode(format!("{}: bad log entry", log.name())))?
            }
            None => LogHead::EMPTY,
        };
        self.log_heads().insert(log.name(), head);
        Ok(head)
    }

    fn wake_rewriter(&self) {
        if let Some(tx) = lock(&self.rewriter).as_ref() {
            let _ = tx.send(());
        }
    }

    /// Opens a raw value found at `store_key`.
    fn open_raw(&self, store_key: &[u8], raw: &[u8]) -> Result<Vec<u8>, StoreError> {
        let integrity = |reason: &str| {
            let (table, key) = split_store_key(store_key).unwrap_or(("?", store_key));
            StoreError::Integrity {
                table: table.to_owned(),
                key: data_encoding::HEXLOWER.encode(key),
                reason: reason.to_owned(),
            }
        };
        let header = seal::header(raw).map_err(integrity)?;
        match header.key {
            KeyRef::Term(term) => self
                .keyring
                .open_term(term, header, store_key, raw)
                .map_err(|failure| match failure {
                    OpenFailure::MissingTerm(term) => StoreError::MissingTerm { term },
                    OpenFailure::Integrity => {
                        integrity("authentication failed (altered, moved or damaged)")
                    }
                }),
            KeyRef::Subject(id) => {
                let key = self.subjects().get(id)?;
                seal::open(&key, header, store_key, raw)
                    .map_err(|_| integrity("authentication failed (altered, moved or damaged)"))
            }
            KeyRef::Master => seal::open(self.keyring.master(), header, store_key, raw)
                .map_err(|_| integrity("authentication failed (altered, moved or damaged)")),
        }
    }
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    queue: Mutex<Option<Sender<commit::Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        lock(&self.queue).take();
        lock(&self.shared.rewriter).take();
        for thread in lock(&self.threads).drain(..) {
            let _ = thread.join();
        }
        let _ = self.shared.db.flush();
    }
}

/// A handle on the open store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// What `init` produced.
#[derive(Debug)]
pub struct InitReport {
    pub db_dir: PathBuf,
    pub keystore: PathBuf,
    pub master_key_file: Option<PathBuf>,
    pub reused_key_file: bool,
}

/// Key state, for the sync of operators and `doctor`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct KeyStatus {
    pub current_term: u32,
    pub terms: Vec<u32>,
    pub encryptions_under_current_term: u64,
    pub rewrite_pending: bool,
    pub subjects: usize,
}

/// Result of opening every record (`doctor --deep`).
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct VerifyReport {
    pub records: u64,
    pub erased: u64,
    pub tables: std::collections::BTreeMap<String, u64>,
    /// Records sealed under each data-key term, by term (others use subject or master keys).
    pub terms: Vec<(u32, u64)>,
    pub failures: Vec<String>,
}

impl Store {
    /// Creates a new store: database, keyring, subject keystore, erasure ledger, and (for a
    /// key-file source whose file does not exist yet) the master key file.
    pub fn init(
        options: &StoreOptions,
        source: &MasterKeySource,
        clock: &dyn Clock,
        random: &dyn Random,
    ) -> Result<InitReport, StoreError> {
        if options.db_dir.exists() {
            return Err(StoreError::AlreadyExists {
                path: options.db_dir.clone(),
            });
        }
        for dir in [options.db_dir.parent(), options.erasure_ledger.parent()]
            .into_iter()
            .flatten()
        {
            files::create_private_dir(dir, 0o700).map_err(|source| StoreError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }

        let mut report = InitReport {
            db_dir: options.db_dir.clone(),
            keystore: options.keystore.clone(),
            master_key_file: None,
            reused_key_file: false,
        };
        let mut kdf = None;
        let master = match source {
            MasterKeySource::File(path) => {
                report.master_key_file = Some(path.clone());
                if path.exists() {
                    report.reused_key_file = true;
                    MasterKey::read_file(path, true)?
                } else {
                    if let Some(dir) = path.parent() {
                        files::create_private_dir(dir, 0o700).map_err(|source| StoreError::Io {
                            path: dir.to_owned(),
                            source,
                        })?;
                    }
                    let key = MasterKey::generate(random)?;
                    key.write_new_file(path)?;
                    key
                }
            }
            MasterKeySource::Credential(path) => MasterKey::read_file(path, false)?,
            MasterKeySource::Passphrase(passphrase) => {
                let mut salt = [0u8; 16];
                random
                    .fill(&mut salt)
                    .map_err(|_| StoreError::Crypto("random source failed"))?;
                let params = KdfParams::default();
                kdf = Some(KdfRecord {
                    salt: data_encoding::HEXLOWER.encode(&salt),
                    params,
                });
                MasterKey::from_passphrase(passphrase, &salt, params)?
            }
        };

        let db = open_sled(&options.db_dir, options.cache_mib)?;
        let meta = db.open_tree("meta")?;
        let data = db.open_tree("data")?;
        let (_, records) = Keyring::create(master.bytes(), random)?;
        let mut batch = sled::Batch::default();
        for record in records {
            batch.insert(KEYRING.store_key(&record.key), record.sealed);
        }
        data.apply_batch(batch)?;
        meta.insert(META_CREATED, clock.now().to_string().as_bytes())?;
        meta.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
        SubjectKeys::create(&options.keystore, &options.erasure_ledger)?;
        db.flush()?;
        KeyCheck::create(&master, kdf, random)?.write(&keycheck_path(&options.db_dir))?;
        Ok(report)
    }

    /// Opens an existing store, upgrading its schema first when it is older.
    pub fn open(
        options: &StoreOptions,
        source: &MasterKeySource,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
    ) -> Result<Self, StoreError> {
        Self::open_with(options, source, clock, random, migrate::MIGRATIONS)
    }

    /// [`Store::open`] with a given list of migrations. When a migration is pending, the
    /// store is first opened as it is and backed up into `backups/` beside the database (see
    /// [`backup::before_migration`]); a failed backup stops the migration.
    pub(crate) fn open_with(
        options: &StoreOptions,
        source: &MasterKeySource,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        migrations: &[migrate::Migration],
    ) -> Result<Self, StoreError> {
        migrate::recover(&options.db_dir)?;
        rewrap::recover(options)?;
        if !options.db_dir.join("conf").exists() {
            return Err(StoreError::NotInitialised {
                path: options.db_dir.clone(),
            });
        }
        // The key is checked before sled opens anything, so a wrong key changes no byte.
        let master =
            KeyCheck::read(&keycheck_path(&options.db_dir))?.verify(source, &options.db_dir)?;
        Self::open_inner(options, &master, clock, random, Some(migrations))
    }

    /// Backs up the store as it is (when a step is pending), then runs the migrations.
    fn migrate(
        options: &StoreOptions,
        master: &MasterKey,
        clock: &Arc<dyn Clock>,
        random: &Arc<dyn Random>,
        version: u32,
        migrations: &[migrate::Migration],
    ) -> Result<(), StoreError> {
        if !migrations.is_empty() {
            let current =
                Self::open_inner(options, master, Arc::clone(clock), Arc::clone(random), None)?;
            backup::before_migration(&current, version).map_err(|err| StoreError::Migration {
                from: version,
                to: SCHEMA_VERSION,
                name: "backup before migrating",
                reason: err.to_string(),
            })?;
        }
        migrate::upgrade(
            &options.db_dir,
            version,
            SCHEMA_VERSION,
            migrations,
            options.cache_mib,
        )
    }

    /// Opens the store with a master key already proven against its key check.
    fn open_inner(
        options: &StoreOptions,
        master: &MasterKey,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        migrations: Option<&[migrate::Migration]>,
    ) -> Result<Self, StoreError> {
        let db = open_sled(&options.db_dir, options.cache_mib)?;
        let meta = db.open_tree("meta")?;
        let version = schema_version(&meta, &options.db_dir)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: options.db_dir.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let data = db.open_tree("data")?;
        let raw = data
            .scan_prefix(KEYRING.prefix())
            .filter_map(Result::ok)
            .map(|(k, v)| (k[KEYRING.prefix().len()..].to_vec(), v.to_vec()));
        let (keyring, rewrite_cursor) = Keyring::load(master.bytes(), raw, &options.db_dir)?;

        let (db, data) = if let Some(migrations) = migrations.filter(|_| version < SCHEMA_VERSION) {
            drop((meta, data));
            drop(db);
            Self::migrate(options, master, &clock, &random, version, migrations)?;
            let db = open_sled(&options.db_dir, options.cache_mib)?;
            let data = db.open_tree("data")?;
            (db, data)
        } else {
            (db, data)
        };

        let subjects = SubjectKeys::open(
            &options.keystore,
            &options.erasure_ledger,
            keyring.master(),
            random.as_ref(),
        )?;
        let shared = Arc::new(Shared {
            db,
            data,
            keyring,
            subjects: RwLock::new(subjects),
            nonces: crate::clock::BufferedRandom::new(Arc::clone(&random)),
            random,
            clock,
            group_window: options.group_commit_window,
            max_encryptions_per_term: options.max_encryptions_per_term,
            rewriter: Mutex::new(None),
            log_heads: Mutex::new(std::collections::HashMap::new()),
            closing: std::sync::atomic::AtomicBool::new(false),
            redo: Mutex::new(None),
            paths: StorePaths {
                db_dir: options.db_dir.clone(),
                keystore: options.keystore.clone(),
                erasure_ledger: options.erasure_ledger.clone(),
            },
        });

        let (queue_tx, queue_rx) = mpsc::channel();
        let committer_shared = Arc::clone(&shared);
        let committer = std::thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || commit::run(&committer_shared, &queue_rx))
            .map_err(|source| StoreError::Io {
                path: options.db_dir.clone(),
                source,
            })?;

        let (wake_tx, wake_rx) = mpsc::channel();
        *lock(&shared.rewriter) = Some(wake_tx.clone());
        let store = Self {
            inner: Arc::new(Inner {
                shared: Arc::clone(&shared),
                queue: Mutex::new(Some(queue_tx.clone())),
                threads: Mutex::new(vec![committer]),
            }),
        };
        let rewriter =
            rewrite::spawn(Arc::clone(&shared), queue_tx, wake_rx).map_err(|source| {
                StoreError::Io {
                    path: options.db_dir.clone(),
                    source,
                }
            })?;
        lock(&store.inner.threads).push(rewriter);
        if rewrite_cursor.is_some() {
            let _ = wake_tx.send(());
        }
        Ok(store)
    }

    /// Commits a set of changes; returns once they are on disk.
    pub async fn commit(&self, set: ChangeSet) -> Result<(), StoreError> {
        if set.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.send(commit::Job::Commit { set, reply })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::commit`] for threads outside the async runtime.
    pub fn commit_blocking(&self, set: ChangeSet) -> Result<(), StoreError> {
        if set.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.send(commit::Job::Commit { set, reply })?;
        answer.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    fn send(&self, job: commit::Job) -> Result<(), StoreError> {
        lock(&self.inner.queue)
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(job)
            .map_err(|_| StoreError::Closed)
    }

    /// Reads and opens one value.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let store_key = table.store_key(key);
        match self.shared().data.get(&store_key)? {
            Some(raw) => Ok(Some(Zeroizing::new(
                self.shared().open_raw(&store_key, &raw)?,
            ))),
            None => Ok(None),
        }
    }

    /// Reads a JSON value.
    pub fn get_json<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.get(table, key)?
            .map(|bytes| {
                serde_json::from_slice(&bytes)
                    .map_err(|err| StoreError::Decode(format!("{}: {err}", table.name())))
            })
            .transpose()
    }

    /// Whether `key` exists in `table`.
    pub fn contains(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.shared().data.contains_key(table.store_key(key))?)
    }

    /// Opens every record of `table` whose key starts with `prefix`, in key order.
    pub fn scan(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Zeroizing<Vec<u8>>), StoreError>> + '_ {
        let table_len = table.prefix().len();
        self.shared()
            .data
            .scan_prefix(table.store_key(prefix))
            .map(move |entry| {
                let (store_key, raw) = entry?;
                let plain = self.shared().open_raw(&store_key, &raw)?;
                Ok((store_key[table_len..].to_vec(), Zeroizing::new(plain)))
            })
    }

    /// Opens the records of `table` whose keys come after `after` (all when empty), in key
    /// order: a page of a long table without opening what came before it.
    pub fn scan_after(
        &self,
        table: Table,
        after: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Zeroizing<Vec<u8>>), StoreError>> + '_ {
        let table_prefix = table.prefix();
        let table_len = table_prefix.len();
        let start = table.store_key(after);
        self.shared()
            .data
            .range(start.clone()..)
            .filter(move |entry| {
                entry
                    .as_ref()
                    .map_or(true, |(key, _)| key.as_ref() != start.as_slice())
            })
            .take_while(move |entry| {
                entry
                    .as_ref()
                    .map_or(true, |(key, _)| key.starts_with(&table_prefix))
            })
            .map(move |entry| {
                let (store_key, raw) = entry?;
                let plain = self.shared().open_raw(&store_key, &raw)?;
                Ok((store_key[table_len..].to_vec(), Zeroizing::new(plain)))
            })
    }

    /// Opens and decodes every JSON record of `table`, with its key, in key order.
    pub fn scan_json<T: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        self.scan(table, b"")
            .map(|entry| {
                let (key, bytes) = entry?;
                let value = serde_json::from_slice(&bytes)
                    .map_err(|err| StoreError::Decode(format!("{}: {err}", table.name())))?;
                Ok((key, value))
            })
            .collect()
    }

    /// The newest entry of a hash-chained log (sequence 0 when it is empty).
    pub fn log_head(&self, log: Table) -> Result<LogHead, StoreError> {
        self.shared().log_head(log)
    }

    /// The schema versions of the last migration, `(from, to)`, until
    /// [`Store::clear_migration_note`]: `serve` records it in the audit trail at start, also
    /// when another command ran the migration.
    pub fn migration_note(&self) -> Result<Option<(u32, u32)>, StoreError> {
        migration_note(&self.shared().db.open_tree("meta")?)
    }

    /// Forgets the migration note once it is recorded.
    pub fn clear_migration_note(&self) -> Result<(), StoreError> {
        let meta = self.shared().db.open_tree("meta")?;
        meta.remove(META_MIGRATED)?;
        self.shared().db.flush()?;
        Ok(())
    }

    /// Number of records in `table`.
    #[must_use]
    pub fn count(&self, table: Table) -> usize {
        self.shared().data.scan_prefix(table.prefix()).count()
    }

    /// The blind index of a normalised value for one purpose ("email", "phone", "card").
    #[must_use]
    pub fn blind_index(&self, purpose: &str, normalised: &str) -> [u8; 16] {
        self.shared()
            .keyring
            .blind_index(purpose, normalised.as_bytes())
    }

    /// Destroys a subject's key: every record sealed under it becomes unreadable, in this
    /// store and in every backup restored later.
    pub fn erase_subject(&self, subject: Id) -> Result<(), StoreError> {
        let shared = self.shared();
        let now = shared.clock.now();
        shared.subjects_mut().erase(
            subject,
            now,
            shared.keyring.master(),
            shared.random.as_ref(),
        )
    }

    /// Adds a data-key term and makes it current; older records are rewritten in the
    /// background while the store keeps serving.
    pub async fn rotate(&self) -> Result<u32, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(commit::Job::Rotate { reply })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::rotate`] outside the async runtime.
    pub fn rotate_blocking(&self) -> Result<u32, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(commit::Job::Rotate { reply })?;
        answer.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// Current key state.
    #[must_use]
    pub fn key_status(&self) -> KeyStatus {
        let shared = self.shared();
        KeyStatus {
            current_term: shared.keyring.current_term(),
            terms: shared.keyring.terms(),
            encryptions_under_current_term: shared.keyring.used(),
            rewrite_pending: shared
                .data
                .contains_key(KEYRING.store_key(keyring::REWRITE_KEY))
                .unwrap_or(false),
            subjects: shared.subjects().len(),
        }
    }

    /// Opens every record and reports what fails; records of erased subjects are counted,
    /// not failed.
    #[must_use]
    pub fn verify_all(&self) -> VerifyReport {
        let mut report = VerifyReport::default();
        for entry in &self.shared().data {
            let (store_key, raw) = match entry {
                Ok(pair) => pair,
                Err(err) => {
                    report
                        .failures
                        .push(format!("storage error while scanning: {err}"));
                    break;
                }
            };
            report.records += 1;
            let table = split_store_key(&store_key)
                .map_or("?", |(t, _)| t)
                .to_owned();
            *report.tables.entry(table).or_default() += 1;
            if let Ok(seal::Header {
                key: KeyRef::Term(term),
                ..
            }) = seal::header(&raw)
            {
                match report.terms.iter_mut().find(|(t, _)| *t == term) {
                    Some((_, count)) => *count += 1,
                    None => report.terms.push((term, 1)),
                }
            }
            match self.shared().open_raw(&store_key, &raw) {
                Ok(_) => {}
                Err(StoreError::Erased) => report.erased += 1,
                Err(err) => report.failures.push(err.to_string()),
            }
        }
        report.terms.sort_unstable();
        report
    }

    /// Waits until the background rewrite of older terms has finished (for tools and tests).
    #[must_use]
    pub fn wait_for_rewrite(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if !self.key_status().rewrite_pending {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The schema version and size on disk, for health pages.
    #[must_use]
    pub fn size_on_disk(&self) -> u64 {
        self.shared().db.size_on_disk().unwrap_or(0)
    }

    /// Writes a value as JSON into a change set (helper for services).
    pub fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|err| StoreError::Decode(err.to_string()))
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }
}

/// Salt and cost of a passphrase-derived master key.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct KdfRecord {
    salt: String,
    params: KdfParams,
}

/// The key-check file beside the database (`db.keycheck`): the KDF salt for passphrase stores
/// and a value sealed under the master key. Read before sled is opened, so a wrong key or
/// passphrase is refused without touching the database.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(crate) struct KeyCheck {
    format: u32,
    kdf: Option<KdfRecord>,
    check: String,
}

const KEYCHECK_AAD: &[u8] = b"clientele/keycheck";
const KEYCHECK_TEXT: &[u8] = b"clientele master key check v1";

pub(crate) fn keycheck_path(db_dir: &Path) -> PathBuf {
    let mut name = db_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".keycheck");
    db_dir.with_file_name(name)
}

impl KeyCheck {
    pub(crate) fn create(
        master: &MasterKey,
        kdf: Option<KdfRecord>,
        random: &dyn Random,
    ) -> Result<Self, StoreError> {
        let key = seal::SealKey::new(master.bytes())?;
        let sealed = seal::seal(&key, KeyRef::Master, KEYCHECK_AAD, KEYCHECK_TEXT, random)?;
        Ok(Self {
            format: 1,
            kdf,
            check: data_encoding::HEXLOWER.encode(&sealed),
        })
    }

    pub(crate) fn write(&self, path: &Path) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| StoreError::Decode(e.to_string()))?;
        files::write_atomic(path, &bytes, 0o600).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })
    }

    pub(crate) fn read(path: &Path) -> Result<Self, StoreError> {
        let bytes = std::fs::read(path).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|err| StoreError::Integrity {
            table: "key check file".into(),
            key: path.display().to_string(),
            reason: format!("unreadable ({err}); restore it from a backup of the data folder"),
        })
    }

    /// Derives the master key from `source` and proves it is the store's key.
    pub(crate) fn verify(
        &self,
        source: &MasterKeySource,
        db_dir: &Path,
    ) -> Result<MasterKey, StoreError> {
        let master = match (source, &self.kdf) {
            (MasterKeySource::File(path), None) => MasterKey::read_file(path, true)?,
            (MasterKeySource::Credential(path), None) => MasterKey::read_file(path, false)?,
            (MasterKeySource::Passphrase(passphrase), Some(kdf)) => {
                let salt = data_encoding::HEXLOWER
                    .decode(kdf.salt.as_bytes())
                    .map_err(|err| StoreError::Decode(format!("key check salt: {err}")))?;
                MasterKey::from_passphrase(passphrase, &salt, kdf.params)?
            }
            (MasterKeySource::Passphrase(_), None) => {
                return Err(StoreError::KeyFile {
                    path: db_dir.to_owned(),
                    problem: "was created with a key file, but a passphrase was given; \
                              remove keys.passphrase_file or --passphrase-* and use the key file"
                        .into(),
                });
            }
            (MasterKeySource::File(path) | MasterKeySource::Credential(path), Some(_)) => {
                return Err(StoreError::KeyFile {
                    path: path.clone(),
                    problem: "is not used: this store was created with a passphrase; \
                              set keys.passphrase_file or use --passphrase-file / --passphrase-stdin"
                        .into(),
                });
            }
        };
        let sealed = data_encoding::HEXLOWER
            .decode(self.check.as_bytes())
            .map_err(|err| StoreError::Decode(format!("key check value: {err}")))?;
        let key = seal::SealKey::new(master.bytes())?;
        let opened = seal::header(&sealed)
            .ok()
            .and_then(|header| seal::open(&key, header, KEYCHECK_AAD, &sealed).ok());
        if opened.as_deref() != Some(KEYCHECK_TEXT) {
            return Err(StoreError::WrongKey {
                path: db_dir.to_owned(),
            });
        }
        Ok(master)
    }
}

/// The table of the audit signing key (owned by the audit trail; the store reads it only to
/// sign its own backup before a migration).
pub const AUDIT_KEYS: Table = Table::new("audit_keys");
/// The key of the audit signing seed in [`AUDIT_KEYS`].
pub const AUDIT_SIGNING_SEED: &[u8] = b"signing";

/// The note a migration leaves in `meta`: the schema versions `(from, to)`.
fn migration_note(meta: &sled::Tree) -> Result<Option<(u32, u32)>, StoreError> {
    Ok(meta.get(META_MIGRATED)?.and_then(|raw| {
        let text = std::str::from_utf8(&raw).ok()?;
        let (from, to) = text.split_once(' ')?;
        Some((from.parse().ok()?, to.parse().ok()?))
    }))
}

fn schema_version(meta: &sled::Tree, path: &Path) -> Result<u32, StoreError> {
    let raw = meta
        .get(META_SCHEMA)?
        .ok_or_else(|| StoreError::NotInitialised {
            path: path.to_owned(),
        })?;
    let bytes: [u8; 4] = raw
        .as_ref()
        .try_into()
        .map_err(|_| StoreError::Decode("meta schema_version is not 4 bytes".into()))?;
    Ok(u32::from_be_bytes(bytes))
}

/// Opens sled, turning its lock failure into [`StoreError::InUse`]. sled releases its file
/// lock from background threads shortly after a handle is dropped, so a lock failure is retried
/// for up to a second before it is reported.
pub(crate) fn open_sled(path: &Path, cache_mib: u64) -> Result<sled::Db, StoreError> {
    let mut attempts = 0;
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_mib * 1024 * 1024)
            .flush_every_ms(None)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io))
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                attempts += 1;
                if attempts >= 50 {
                    return Err(StoreError::InUse {
                        path: path.to_owned(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(other) => return Err(StoreError::Sled(other)),
        }
    }
}
