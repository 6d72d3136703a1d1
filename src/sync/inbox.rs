//! The `POSLog` drop folder (`[pos] inbox`), polled by the server, and the file import shared
//! with `clientele import poslog`.
//!
//! Convention for registers: write `NAME.xml` in the folder, ideally as `NAME.xml.part` (or a
//! dot-file) renamed to `NAME.xml` when complete. Only `*.xml` files are read, and only once
//! they are settled: unchanged for `pos.settle` and with the same size at two looks in a row,
//! so a file still being written is left alone. A file cut short anyway is refused by the
//! parser (it must be whole XML).
//!
//! Each file is one batch: all of its transactions land in one change set or none do. After
//! the commit the file moves to `processed/`; a refused file moves to `rejected/` with a
//! `NAME.xml.reason` file beside it saying what was wrong, with the line and element. A
//! process killed between the commit and the move leaves the file in place: it is read again
//! at the next look, every transaction is a duplicate, nothing counts twice, and it moves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::audit::Actor;
use crate::clock::Clock;
use crate::config::PosConfig;
use crate::inventory::InventoryError;
use crate::inventory::ingest::{Ingest, IngestReport};

/// Sub-folders of the inbox.
pub const PROCESSED: &str = "processed";
pub const REJECTED: &str = "rejected";

/// The system actor of the drop folder.
pub const INBOX_ACTOR: &str = "sync:poslog-inbox";

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
    let transactions = super::poslog::parse(&bytes, default_currency)
        .map_err(|e| FileError::Refused(e.to_string()))?;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
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

/// Polls the inbox until the task is stopped.
pub async fn watch(
    ingest: Ingest,
    inbox: PathBuf,
    config: PosConfig,
    clock: Arc<dyn Clock>,
) -> std::io::Result<()> {
    let mut seen = Looks::default();
    loop {
        if let Err(err) = look_once(&ingest, &inbox, &config, clock.as_ref(), &mut seen).await {
            warn!(folder = %inbox.display(), error = %err, "POS inbox could not be read");
        }
        tokio::time::sleep(config.poll_interval).await;
    }
}

/// One look at the inbox: every settled file is processed and moved. Returns how many files were moved.
pub async fn look_once(
    ingest: &Ingest,
    inbox: &Path,
    config: &PosConfig,
    clock: &dyn Clock,
    seen: &mut Looks,
) -> std::io::Result<usize> {
    for sub in [PROCESSED, REJECTED] {
        std::fs::create_dir_all(inbox.join(sub))?;
    }
    let now = clock.now();
    let mut candidates = Vec::new();
    for entry in std::fs::read_dir(inbox)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.to_ascii_lowercase().ends_with(".xml") {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|m| jiff::Timestamp::try_from(m).ok())
            .unwrap_or(now);
        let age = now.duration_since(modified);
        let settled =
            age.is_positive() && age.unsigned_abs() >= config.settle || config.settle.is_zero();
        let path = entry.path();
        let same_size = seen.sizes.insert(path.clone(), meta.len()) == Some(meta.len());
        if settled && same_size {
            candidates.push(path);
        }
    }
    seen.sizes.retain(|p, _| p.exists());
    candidates.sort();

    let mut moved = 0;
    for path in candidates {
        let result = import_file(
            ingest,
            &path,
            &config.default_currency,
            Actor::system(INBOX_ACTOR),
        )
        .await;
        match result {
            Ok(report) => {
                move_into(&path, &inbox.join(PROCESSED))?;
                info!(
                    accepted = report.accepted,
                    duplicates = report.duplicates,
                    "poslog file processed"
                );
            }
            Err(FileError::Refused(reason)) => {
                let target = move_into(&path, &inbox.join(REJECTED))?;
                let mut reason_file = target.into_os_string();
                reason_file.push(".reason");
                crate::store::files::write_atomic(
                    Path::new(&reason_file),
                    format!("{reason}\n").as_bytes(),
                    0o640,
                )?;
                warn!("poslog file rejected; the reason is beside it in rejected/");
            }
            Err(FileError::Failed(err)) => {
                warn!(error = %err, "poslog file left in the inbox for the next look");
                continue;
            }
        }
        seen.sizes.remove(&path);
        moved += 1;
    }
    Ok(moved)
}

/// Moves a file into `folder`, keeping its name (with `.1`, `.2`... when taken); returns where
/// it went.
fn move_into(path: &Path, folder: &Path) -> std::io::Result<PathBuf> {
    let name = path
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    let mut target = folder.join(&name);
    let mut n = 0;
    while target.exists() {
        n += 1;
        let mut numbered = name.clone();
        numbered.push(format!(".{n}"));
        target = folder.join(numbered);
    }
    std::fs::rename(path, &target)?;
    Ok(target)
}
