//! Retention: entries older than `audit.retention` are archived, then dropped.
//!
//! The cut is made at a signed checkpoint, so the trail that remains starts right after one
//! (and an export of it is anchored there). Before anything is deleted, the entries up to the
//! cut are written as a signed JSONL bundle into `data_dir/audit-archive/` (a new file, mode
//! 0600, synced and renamed into place) and that file is verified. Deletion then goes through
//! change sets, one stretch between two checkpoints (or several small ones) at a time, oldest
//! first, each with the checkpoint it leaves behind, so after any crash the trail still starts
//! right after a checkpoint. Last, an `audit.pruned` entry names the range and the archive.
//!
//! `audit.legal_hold` stops all of it. The newest entry is never deleted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::export::{self, ExportError, Selection};
use super::{AUDIT, Action, Actor, Audit, CHECKPOINTS, Event};
use crate::store::{ChangeSet, StoreError, files};

/// The archive folder, inside the data folder.
pub const ARCHIVE_DIR: &str = "audit-archive";

/// Entries deleted per change set, at most (unless two checkpoints lie further apart).
const BATCH: u64 = 5000;

/// What one retention run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retention {
    /// `audit.legal_hold` is set: nothing was deleted.
    Held,
    /// No entry is both older than the retention and below a checkpoint that is not the
    /// newest entry.
    NothingDue,
    /// Entries `from..=to` were archived in `archive` and dropped.
    Pruned {
        from: u64,
        to: u64,
        archive: PathBuf,
    },
}

/// Why a retention run stopped; whatever it had not deleted is still there.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("archiving old audit entries: {0}")]
    Export(#[from] ExportError),
    #[error("audit archive folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the archive {path} does not verify, so nothing was deleted: {reason}")]
    Unverified { path: PathBuf, reason: String },
}

/// Archives and drops the entries past retention, once (blocking).
pub fn run_once(audit: &Audit, data_dir: &Path) -> Result<Retention, RetentionError> {
    let config = audit.config();
    if config.legal_hold {
        return Ok(Retention::Held);
    }
    let head = audit.head()?;
    if head.seq < 2 {
        return Ok(Retention::NothingDue);
    }
    let now = audit.now();
    let retention =
        jiff::SignedDuration::try_from(config.retention).unwrap_or(jiff::SignedDuration::MAX);
    let Ok(cutoff) = now.checked_sub(retention) else {
        return Ok(Retention::NothingDue);
    };
    let (first, last_old) = export::seq_range_for_times(audit, None, Some(cutoff))?;
    if last_old < first {
        return Ok(Retention::NothingDue);
    }
    // The newest checkpoint among the old entries, never the newest entry.
    let Some(cut) = audit.checkpoint_at_or_below(last_old.min(head.seq - 1))? else {
        return Ok(Retention::NothingDue);
    };
    let cut = cut.size;
    if cut < first {
        return Ok(Retention::NothingDue);
    }

    let archive = write_archive(audit, data_dir, first, cut)?;
    delete(audit, first, cut)?;
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    audit.record_blocking(
        Event::new(Action::AuditPruned)
            .by(Actor::system("audit-retention"))
            .target("audit_archive", &name)
            .reason(format!(
                "entries {first} to {cut} (older than {}) archived in {ARCHIVE_DIR}/{name} and \
                 dropped",
                super::entry::format_time(cutoff)
            )),
    )?;
    Ok(Retention::Pruned {
        from: first,
        to: cut,
        archive,
    })
}

/// Writes the bundle of entries `first..=cut` into the archive folder and checks it.
fn write_archive(
    audit: &Audit,
    data_dir: &Path,
    first: u64,
    cut: u64,
) -> Result<PathBuf, RetentionError> {
    let dir = data_dir.join(ARCHIVE_DIR);
    files::create_private_dir(&dir, 0o700).map_err(|source| RetentionError::Folder {
        path: dir.clone(),
        source,
    })?;
    let stamp = audit.now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let path = dir.join(format!("audit-{first:012}-{cut:012}-{stamp}.jsonl"));
    // The trail starts right after a checkpoint (or at 1): the bundle starts at `first`.
    let start = match first {
        1 => 1,
        _ => match audit.checkpoint_at_or_below(first - 1)? {
            Some(cp) if cp.size == first - 1 => first,
            _ => {
                return Err(ExportError::Broken {
                    seq: first,
                    reason: "no signed checkpoint anchors the oldest kept entry".into(),
                }
                .into());
            }
        },
    };
    export::write_file(&path, |out| {
        export::write_bundle(
            audit,
            &Selection::range(first, cut),
            start,
            cut,
            out,
            &mut |_, _| {},
        )
    })?;

    let unverified = |reason: String| RetentionError::Unverified {
        path: path.clone(),
        reason,
    };
    let file = std::fs::File::open(&path).map_err(|err| unverified(err.to_string()))?;
    let report = super::verify::verify(
        std::io::BufReader::new(file),
        Some(&audit.public_key()),
        None,
    )
    .map_err(|err| unverified(err.to_string()))?;
    if (report.first_seq, report.last_seq, report.entries) != (first, cut, cut - first + 1) {
        return Err(unverified(format!(
            "it holds entries {} to {} ({} in full)",
            report.first_seq, report.last_seq, report.entries
        )));
    }
    Ok(path)
}

/// Deletes entries `first..=cut` oldest first, in change sets that each end at a checkpoint
/// and take the checkpoints below it along.
fn delete(audit: &Audit, first: u64, cut: u64) -> Result<(), StoreError> {
    let checkpoints: Vec<u64> = audit
        .checkpoints(0, cut)?
        .into_iter()
        .map(|cp| cp.size)
        .collect();
    let mut done = first - 1;
    let mut stale: Vec<u64> = checkpoints.iter().copied().filter(|s| *s < first).collect();
    let mut boundaries = checkpoints
        .iter()
        .copied()
        .filter(|s| *s >= first)
        .peekable();
    while let Some(mut to) = boundaries.next() {
        // Join stretches while the batch stays small.
        while let Some(next) = boundaries.next_if(|next| next - done <= BATCH) {
            stale.push(to);
            to = next;
        }
        let mut set = ChangeSet::new();
        // Entries are stored several to a record; a checkpoint is always made at the head,
        // which ends a record, so the stretch is a run of whole records.
        for key in audit.store().log_record_keys(AUDIT, done + 1, to)? {
            set.delete(AUDIT, key);
        }
        for size in stale.drain(..) {
            set.delete(CHECKPOINTS, size.to_be_bytes());
        }
        audit.store().commit_blocking(set)?;
        stale.push(to);
        done = to;
        if done == cut {
            break;
        }
    }
    Ok(())
}

/// Runs retention at start and then once a day, until the task is dropped.
pub async fn run(audit: Audit, data_dir: PathBuf) -> std::io::Result<()> {
    let mut every = tokio::time::interval(Duration::from_secs(24 * 3600));
    loop {
        every.tick().await;
        let (audit, data_dir) = (audit.clone(), data_dir.clone());
        match tokio::task::spawn_blocking(move || run_once(&audit, &data_dir)).await {
            Ok(Ok(Retention::Pruned { from, to, archive })) => info!(
                from,
                to,
                archive = %archive.display(),
                "old audit entries archived and dropped"
            ),
            Ok(Ok(Retention::Held)) => info!("audit legal hold: no entry is dropped"),
            Ok(Ok(Retention::NothingDue)) => {}
            Ok(Err(err)) => warn!(error = %err, "audit retention did not run"),
            Err(err) => warn!(error = %err, "audit retention task failed"),
        }
    }
}
