//! The `POSLog` folder connector, run by the sync supervisor, and the file import shared with
//! `clientele import poslog`.
//!
//! Convention for registers: write `NAME.xml` in the folder, ideally as `NAME.xml.part` (or a
//! dot-file) renamed to `NAME.xml` when complete. Only `*.xml` files are read, and only once
//! they are settled: unchanged for the connector's `settle` and with the same size at two
//! looks in a row, so a file still being written is left alone. A file cut short anyway is
//! refused by the parser (it must be whole XML).
//!
//! Each file is one batch: all of its transactions land in one change set or none do. After
//! the commit the file is kept sealed in the store for `[sync] keep_processed` and removed
//! from the folder; a refused file becomes a dead letter (sealed in the store, with a reason
//! naming the line and element) and is removed too, so no plaintext copy of the personal data
//! it carries stays on disk. A process killed between the commit and the removal leaves the
//! file in place: it is read again at the next run, every transaction is a duplicate, nothing
//! counts twice, and it is removed. A failure on our side (disk, store) leaves the file for
//! the next run, after the supervisor's backoff.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::audit::Actor;
use crate::clock::Clock;
use crate::domain::sale::{SaleTransaction, TransactionKey};
use crate::inventory::InventoryError;
use crate::inventory::ingest::{Ingest, IngestReport, Status};

use super::held::{Held, Kept};

/// Wait before the second look at files seen for the first time.
const SECOND_LOOK: std::time::Duration = std::time::Duration::from_millis(200);

/// Largest `POSLog` file read (a file is parsed whole).
pub const MAX_FILE: u64 = 256 * 1024 * 1024;

/// Why a file was not imported.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file is wrong and will stay wrong: set it aside.
    #[error("{0}")]
    Refused(String),
    /// Something on our side failed (disk, store): try again later.
    #[error("{0}")]
    Failed(String),
}

/// What one file did, for the command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileOutcome {
    pub file: PathBuf,
    pub report: Option<IngestReport>,
    pub error: Option<String>,
}

/// Reads, parses and ingests one `POSLog` file as one batch.
pub async fn import_file(
    ingest: &Ingest,
    path: &Path,
    default_currency: &str,
    actor: Actor,
) -> Result<IngestReport, FileError> {
    let size = std::fs::metadata(path)
        .map_err(|e| FileError::Failed(format!("cannot read {}: {e}", path.display())))?
        .len();
    if size > MAX_FILE {
        return Err(FileError::Refused(format!(
            "the file is {size} bytes; split it into files under {MAX_FILE} bytes"
        )));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| FileError::Failed(format!("cannot read {}: {e}", path.display())))?;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    import_bytes(ingest, &bytes, &name, default_currency, actor).await
}

/// Parses and ingests the contents of one `POSLog` file, named `name`, as one batch.
pub async fn import_bytes(
    ingest: &Ingest,
    bytes: &[u8],
    name: &str,
    default_currency: &str,
    actor: Actor,
) -> Result<IngestReport, FileError> {
    let transactions = super::poslog::parse(bytes, default_currency)
        .map_err(|e| FileError::Refused(e.to_string()))?;
    ingest
        .ingest(transactions, actor, &format!("poslog:{name}"), None)
        .await
        .map_err(|err| match err {
            InventoryError::Store(err) => FileError::Failed(err.to_string()),
            InventoryError::Contended { .. } => FileError::Failed(err.to_string()),
            other => FileError::Refused(other.to_string()),
        })
}

/// File sizes at the previous look, to tell a settled file from one still growing.
#[derive(Debug, Default)]
pub struct Looks {
    sizes: HashMap<PathBuf, u64>,
}

/// What a folder connector needs for a run.
#[derive(Debug)]
pub struct Folder<'a> {
    /// The connector's name: the audit actor is `sync:NAME`.
    pub connector: &'a str,
    pub folder: &'a Path,
    pub settle: std::time::Duration,
    pub currency: &'a str,
    pub ingest: &'a Ingest,
    pub held: &'a Held,
    pub clock: &'a dyn Clock,
}

/// What one run did.
#[derive(Debug, Clone, Default)]
pub struct FolderRun {
    /// Files imported (processed and removed from the folder).
    pub files: u64,
    /// Transactions they added, and those already known.
    pub accepted: u64,
    pub duplicates: u64,
    /// Files refused and held as dead letters.
    pub set_aside: u64,
    /// The last file imported: the connector's cursor.
    pub last_file: Option<String>,
    /// `*.xml` files still in the folder after the run, and when the oldest was last changed.
    pub waiting: u64,
    pub oldest_waiting: Option<jiff::Timestamp>,
}

/// Files imported together in one batch: at most this many...
const GROUP_FILES: usize = 1_000;
/// ...or this many transactions (within the ingest's batch limit).
const GROUP_TRANSACTIONS: usize = 5_000;

/// A file read and parsed, waiting for its batch.
#[derive(Debug)]
struct Parsed {
    path: PathBuf,
    name: String,
    bytes: Vec<u8>,
    transactions: Vec<SaleTransaction>,
}

/// Small files taken together, so a folder of one-sale files costs one commit per batch
/// rather than per file. Every file stays whole: the batch lands whole or not at all.
#[derive(Debug, Default)]
struct Group {
    files: Vec<Parsed>,
    transactions: usize,
    keys: HashSet<TransactionKey>,
}

impl Group {
    /// Whether `file` may join: within the limits, and no transaction key twice (a file
    /// dropped twice goes in the next batch, where it is a duplicate).
    fn fits(&self, file: &Parsed) -> bool {
        self.files.len() < GROUP_FILES
            && self.transactions + file.transactions.len() <= GROUP_TRANSACTIONS
            && file
                .transactions
                .iter()
                .all(|t| !self.keys.contains(&t.key))
            && {
                let mut own = HashSet::with_capacity(file.transactions.len());
                file.transactions.iter().all(|t| own.insert(&t.key))
            }
    }

    fn push(&mut self, file: Parsed) {
        self.transactions += file.transactions.len();
        self.keys
            .extend(file.transactions.iter().map(|t| t.key.clone()));
        self.files.push(file);
    }
}

fn remove(path: &Path, looks: &mut Looks) -> Result<(), String> {
    std::fs::remove_file(path)
        .map_err(|e| format!("cannot remove {} after its import: {e}", path.display()))?;
    looks.sizes.remove(path);
    Ok(())
}

impl Folder<'_> {
    fn actor(&self) -> Actor {
        Actor::system(&format!("sync:{}", self.connector))
    }

    /// One look at the folder: every settled file is imported or set aside, in name order,
    /// until `stop` says the server is stopping (the file in hand is finished first). An error
    /// is a failure on our side, in words; the files it concerns stay for the next run.
    pub async fn run(
        &self,
        looks: &mut Looks,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<FolderRun, String> {
        let cannot =
            |e: std::io::Error| format!("cannot read the folder {}: {e}", self.folder.display());
        let mut run = FolderRun::default();
        let (mut ready, unseen) = self.settled(looks).map_err(cannot)?;
        if unseen {
            // Files seen for the first time get their second look within this run, so a run
            // started by hand does not wait for the next one.
            tokio::time::sleep(SECOND_LOOK).await;
            ready = self.settled(looks).map_err(cannot)?.0;
        }
        let mut group = Group::default();
        for path in ready {
            if stop() {
                break;
            }
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            // What is held in the store never carries a card number.
            let bytes =
                read_whole(&path)?.map(
                    |bytes| match crate::domain::card::mask_card_numbers_in_xml(&bytes) {
                        std::borrow::Cow::Owned(masked) => masked,
                        std::borrow::Cow::Borrowed(_) => bytes,
                    },
                );
            let parsed = bytes.map_err(|reason| (None, reason)).and_then(|bytes| {
                match super::poslog::parse(&bytes, self.currency) {
                    Ok(transactions) if transactions.is_empty() => {
                        Err((bytes, "the file holds no transaction".to_owned()))
                    }
                    Ok(transactions) => Ok(Parsed {
                        path: path.clone(),
                        name: name.clone(),
                        bytes,
                        transactions,
                    }),
                    Err(err) => Err((bytes, err.to_string())),
                }
                .map_err(|(bytes, reason)| (Some(bytes), reason))
            });
            match parsed {
                Ok(file) => {
                    if !group.fits(&file) {
                        self.import_group(std::mem::take(&mut group), looks, &mut run)
                            .await?;
                    }
                    group.push(file);
                }
                Err((bytes, reason)) => {
                    let bytes = bytes.unwrap_or_default();
                    self.set_aside(&path, &name, &bytes, &reason, looks, &mut run)
                        .await?;
                }
            }
        }
        self.import_group(group, looks, &mut run).await?;
        self.count_waiting(&mut run).map_err(cannot)?;
        Ok(run)
    }

    /// Imports a group of parsed files in one batch, then keeps and removes them. When the
    /// batch is refused, each file is imported on its own, so only the bad one is set aside.
    async fn import_group(
        &self,
        group: Group,
        looks: &mut Looks,
        run: &mut FolderRun,
    ) -> Result<(), String> {
        let files = group.files;
        if files.len() > 1 {
            let counts: Vec<usize> = files.iter().map(|f| f.transactions.len()).collect();
            let mut transactions = Vec::with_capacity(counts.iter().sum());
            let mut kept = Vec::with_capacity(files.len());
            for file in files {
                transactions.extend(file.transactions);
                kept.push((file.path, file.name, file.bytes));
            }
            let source = format!("poslog:{} and {} more files", kept[0].1, kept.len() - 1);
            match self
                .ingest
                .ingest(transactions, self.actor(), &source, None)
                .await
            {
                Ok(report) => return self.done(&kept, &counts, &report, looks, run).await,
                Err(InventoryError::Store(err)) => return Err(err.to_string()),
                Err(err @ InventoryError::Contended { .. }) => return Err(err.to_string()),
                Err(_) => {
                    // One of them is refused: find which, file by file.
                    for (path, name, bytes) in kept {
                        self.import_one(path, name, bytes, looks, run).await?;
                    }
                    return Ok(());
                }
            }
        }
        for file in files {
            self.import_one(file.path, file.name, file.bytes, looks, run)
                .await?;
        }
        Ok(())
    }

    async fn import_one(
        &self,
        path: PathBuf,
        name: String,
        bytes: Vec<u8>,
        looks: &mut Looks,
        run: &mut FolderRun,
    ) -> Result<(), String> {
        match import_bytes(self.ingest, &bytes, &name, self.currency, self.actor()).await {
            Ok(report) => {
                let count = report.received;
                self.done(&[(path, name, bytes)], &[count], &report, looks, run)
                    .await
            }
            Err(FileError::Refused(reason)) => {
                self.set_aside(&path, &name, &bytes, &reason, looks, run)
                    .await
            }
            Err(FileError::Failed(err)) => Err(err),
        }
    }

    /// Keeps imported files (their share of `report` each, by `counts`) and removes them.
    async fn done(
        &self,
        files: &[(PathBuf, String, Vec<u8>)],
        counts: &[usize],
        report: &IngestReport,
        looks: &mut Looks,
        run: &mut FolderRun,
    ) -> Result<(), String> {
        let mut outcomes = report.transactions.iter();
        let mut kept = Vec::with_capacity(files.len());
        for ((_, name, bytes), count) in files.iter().zip(counts) {
            let (mut accepted, mut duplicates) = (0u64, 0u64);
            for outcome in outcomes.by_ref().take(*count) {
                if outcome.status == Status::Accepted {
                    accepted += 1;
                } else {
                    duplicates += 1;
                }
            }
            kept.push(Kept {
                name: name.as_str(),
                bytes: bytes.as_slice(),
                accepted,
                duplicates,
            });
            run.accepted += accepted;
            run.duplicates += duplicates;
        }
        self.held
            .archive_all(self.connector, &kept)
            .await
            .map_err(|e| e.to_string())?;
        info!(
            files = files.len(),
            accepted = report.accepted,
            duplicates = report.duplicates,
            "poslog files processed"
        );
        for (path, name, _) in files {
            remove(path, looks)?;
            run.files += 1;
            run.last_file = Some(name.clone());
        }
        Ok(())
    }

    async fn set_aside(
        &self,
        path: &Path,
        name: &str,
        bytes: &[u8],
        reason: &str,
        looks: &mut Looks,
        run: &mut FolderRun,
    ) -> Result<(), String> {
        self.held
            .set_aside(self.connector, name, bytes, reason, self.actor())
            .await
            .map_err(|e| e.to_string())?;
        run.set_aside += 1;
        warn!(
            connector = self.connector,
            "poslog file refused; it is held as a dead letter"
        );
        remove(path, looks)
    }

    /// Looks at the folder without importing (the first of the two looks a file needs).
    pub fn look(&self, looks: &mut Looks) -> std::io::Result<()> {
        self.settled(looks).map(drop)
    }

    /// The settled `*.xml` files of the folder, in name order, and whether some were passed
    /// over only because this was the first look at them.
    fn settled(&self, looks: &mut Looks) -> std::io::Result<(Vec<PathBuf>, bool)> {
        let now = self.clock.now();
        let mut candidates = Vec::new();
        let mut unseen = false;
        for (path, meta) in xml_files(self.folder)? {
            let modified = modified_at(&meta).unwrap_or(now);
            let age = now.duration_since(modified);
            let settled =
                self.settle.is_zero() || (age.is_positive() && age.unsigned_abs() >= self.settle);
            let before = looks.sizes.insert(path.clone(), meta.len());
            if settled && before == Some(meta.len()) {
                candidates.push(path);
            } else if settled && before.is_none() {
                unseen = true;
            }
        }
        looks.sizes.retain(|p, _| p.exists());
        candidates.sort();
        Ok((candidates, unseen))
    }

    fn count_waiting(&self, run: &mut FolderRun) -> std::io::Result<()> {
        for (_, meta) in xml_files(self.folder)? {
            run.waiting += 1;
            let modified = modified_at(&meta).unwrap_or_else(|| self.clock.now());
            if run.oldest_waiting.is_none_or(|oldest| modified < oldest) {
                run.oldest_waiting = Some(modified);
            }
        }
        Ok(())
    }
}

/// The `*.xml` files of a folder (not dot-files, not `.part` files), with their metadata.
fn xml_files(folder: &Path) -> std::io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.to_ascii_lowercase().ends_with(".xml") {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_file() {
            files.push((entry.path(), meta));
        }
    }
    Ok(files)
}

fn modified_at(meta: &std::fs::Metadata) -> Option<jiff::Timestamp> {
    meta.modified()
        .ok()
        .and_then(|m| jiff::Timestamp::try_from(m).ok())
}

/// Reads a file whole: `Ok(Err(reason))` when it is too large to take (it is set aside),
/// `Err` when it cannot be read (it stays for the next run).
fn read_whole(path: &Path) -> Result<Result<Vec<u8>, String>, String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let size = std::fs::metadata(path).map_err(cannot)?.len();
    if size > MAX_FILE {
        return Ok(Err(format!(
            "the file is {size} bytes; split it into files under {MAX_FILE} bytes"
        )));
    }
    std::fs::read(path).map(Ok).map_err(cannot)
}
