//! Backups as an operation: writing a verified file, recording it in the audit trail, the
//! status the admin pages show, and the schedule the server runs.
//!
//! The format itself lives in [`crate::store::backup`]. Every backup written here is read
//! back and verified before it replaces anything, so a file named like a backup is one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::audit::{Action, Actor, Event, SigningKey};
use crate::clock::{Clock, Random};
use crate::config::BackupConfig;
use crate::store::backup::{self, BackupError, ManifestSigner, Verified};
use crate::store::{ChangeSet, Store, StoreError, files};

/// The last backup's outcome, in the data folder, for the admin pages.
pub const STATUS_FILE: &str = "backup-status.json";
/// Extension of backup files.
pub const EXTENSION: &str = "clbk";
/// Prefix of scheduled backups' names; pruning only touches these.
pub const SCHEDULED_PREFIX: &str = "clientele";

/// The last backup written by this appliance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastBackup {
    pub at: String,
    /// File name (no folder).
    pub file: String,
    pub bytes: u64,
    pub records: u64,
    /// `ok` or the reason it failed.
    pub result: String,
    /// `scheduled`, `command line` or `before migration`.
    pub trigger: String,
}

impl LastBackup {
    #[must_use]
    pub fn ok(&self) -> bool {
        self.result == "ok"
    }
}

/// Reads the last backup's status; `None` when no backup was made yet or it is unreadable.
#[must_use]
pub fn read_status(data_dir: &Path) -> Option<LastBackup> {
    let bytes = std::fs::read(data_dir.join(STATUS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Records the last backup's outcome (best effort: a status that cannot be written is
/// logged, the backup itself stands).
pub fn write_status(data_dir: &Path, status: &LastBackup) {
    let path = data_dir.join(STATUS_FILE);
    let written = serde_json::to_vec_pretty(status)
        .map_err(std::io::Error::other)
        .and_then(|bytes| files::write_atomic(&path, &bytes, 0o600));
    if let Err(err) = written {
        warn!(path = %path.display(), error = %err, "backup status not written");
    }
}

/// The audit entry of a backup action on `file` (a name, never a path with personal data).
#[must_use]
pub fn event(action: Action, actor: &str, file: &str, result: Result<u64, &str>) -> Event {
    let event = Event::new(action)
        .by(Actor::system(actor))
        .target("backup", file);
    match result {
        Ok(records) => event.reason(format!("{records} records")),
        Err(reason) => event.failed(reason.to_owned()),
    }
}

/// Records one event through the store's single write path.
pub fn record_blocking(store: &Store, event: Event) -> Result<(), StoreError> {
    let mut set = ChangeSet::new();
    event.add_to(&mut set);
    store.commit_blocking(set)
}

/// The name part of a path, for messages and audit entries.
#[must_use]
pub fn name_of(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Writes `produce` to `path` through a temporary file beside it, syncs it, reads it back
/// and verifies it (structure, digests, signature, and `expected_key` when given), and only
/// then renames it into place.
pub fn write_verified(
    path: &Path,
    expected_key: Option<&[u8; 32]>,
    produce: impl FnOnce(&mut dyn std::io::Write) -> Result<(), BackupError>,
) -> Result<Verified, BackupError> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Io { path, source }
    };
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        produce(&mut out)?;
        let file = out.into_inner().map_err(|err| BackupError::Io {
            path: tmp.clone(),
            source: err.into_error(),
        })?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        let verified = backup::read(
            std::fs::File::open(&tmp).map_err(io(&tmp))?,
            expected_key,
            |_| Ok(()),
        )?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        files::sync_dir(path).map_err(io(path))?;
        Ok(verified)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Backs up an open store into `path`, verified, and records it in the trail as `actor`.
pub fn create(
    store: &Store,
    key: &SigningKey,
    path: &Path,
    actor: &str,
) -> Result<Verified, BackupError> {
    let public = key.public_key();
    let written = write_verified(path, Some(&public), |out| {
        store.backup(out, key).map(|_| ())
    });
    let file = name_of(path);
    let message = written.as_ref().err().map(ToString::to_string);
    let recorded = record_blocking(
        store,
        event(
            Action::BackupCreated,
            actor,
            &file,
            match (&written, &message) {
                (Ok(verified), _) => Ok(verified.manifest.records()),
                (Err(_), Some(message)) => Err(message.as_str()),
                (Err(_), None) => Err("failed"),
            },
        ),
    );
    let verified = written?;
    recorded?;
    Ok(verified)
}

/// Runs scheduled backups while the server runs (only when enabled).
pub async fn run_schedule(
    store: Store,
    config: BackupConfig,
    folder: PathBuf,
    data_dir: PathBuf,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
) -> std::io::Result<()> {
    if !config.enabled {
        return Ok(());
    }
    let mut every = tokio::time::interval(config.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: wait one interval before the first backup.
    every.tick().await;
    loop {
        every.tick().await;
        let (store, folder, data_dir, clock, random) = (
            store.clone(),
            folder.clone(),
            data_dir.clone(),
            Arc::clone(&clock),
            Arc::clone(&random),
        );
        let retention = config.retention;
        let done = tokio::task::spawn_blocking(move || {
            scheduled_once(
                &store,
                &folder,
                &data_dir,
                retention,
                clock.as_ref(),
                random.as_ref(),
            )
        })
        .await;
        if let Err(err) = done {
            warn!(error = %err, "scheduled backup task failed");
        }
    }
}

/// One scheduled backup: write, verify, record, update the status, prune.
pub fn scheduled_once(
    store: &Store,
    folder: &Path,
    data_dir: &Path,
    retention: usize,
    clock: &dyn Clock,
    random: &dyn Random,
) -> Option<LastBackup> {
    let name = backup::file_name(SCHEDULED_PREFIX, clock);
    let path = folder.join(&name);
    let outcome = files::create_private_dir(folder, 0o700)
        .map_err(|source| BackupError::Io {
            path: folder.to_owned(),
            source,
        })
        .and_then(|()| {
            let key = crate::audit::load_signing_key(store, random)?;
            create(store, &key, &path, "backup")
        });
    let status = status_of(&name, &outcome, "scheduled", clock);
    match &outcome {
        Ok(verified) => {
            info!(
                file = %name,
                bytes = verified.bytes,
                records = verified.manifest.records(),
                "scheduled backup written"
            );
            prune(folder, retention);
        }
        Err(err) => warn!(file = %name, error = %err, "scheduled backup failed"),
    }
    write_status(data_dir, &status);
    Some(status)
}

/// The status line of a backup attempt.
#[must_use]
pub fn status_of(
    file: &str,
    outcome: &Result<Verified, BackupError>,
    trigger: &str,
    clock: &dyn Clock,
) -> LastBackup {
    let (bytes, records, result) = match outcome {
        Ok(verified) => (verified.bytes, verified.manifest.records(), "ok".to_owned()),
        Err(err) => (0, 0, err.to_string()),
    };
    LastBackup {
        at: clock.now().to_string(),
        file: file.to_owned(),
        bytes,
        records,
        result,
        trigger: trigger.to_owned(),
    }
}

/// Deletes the oldest scheduled backups beyond `keep` (names sort by time).
pub fn prune(folder: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| {
            name.starts_with(&format!("{SCHEDULED_PREFIX}-"))
                && name.ends_with(&format!(".{EXTENSION}"))
        })
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for name in names.into_iter().take(excess) {
        let path = folder.join(&name);
        match std::fs::remove_file(&path) {
            Ok(()) => info!(file = %name, "old scheduled backup deleted"),
            Err(err) => warn!(file = %name, error = %err, "old scheduled backup not deleted"),
        }
    }
}

/// How long `backup` waits for a running server's first answer.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(3600);
