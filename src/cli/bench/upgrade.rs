//! `clientele bench upgrade`: what a schema upgrade costs at start on N records.
//!
//! The one migration shipped so far (schema 1 to 2) is a full copy of every record with
//! `migrate::copy_all`, the most a migration costs; this runs that same copy as its step: the
//! store is filled with N synthetic records, marked as one schema behind, and opened through
//! `Store::open_with` with one step that copies every record of every tree into the new
//! folder with `migrate::copy_all`. That is the code a real upgrade runs at start: the
//! automatic pre-migration backup into `backups/`, then `migrate::upgrade` and its step (copy
//! into `db.migrating`, flush, swap the folders, remove the old one), then the store opens.
//!
//! The step records when its copy starts and ends, which splits the open into three parts:
//! everything before the copy (the key check and the backup, synced), the copy, and the swap
//! and re-open after it.

use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::backup::filled_store;
use super::{CliError, WorkDir, print_row, progress, round3};
use crate::clock::{SystemClock, SystemRandom};
use crate::store::migrate::{Migration, copy_all};
use crate::store::{Store, StoreError};

/// The upgrade benchmark's sizes: those of the backup benchmark's synthetic store.
pub type UpgradeBenchArgs = super::backup::BackupBenchArgs;

/// When the benchmark's migration step started and ended its copy (a step is a plain `fn`, so
/// it reports through a static; one upgrade runs per process).
static COPY_WINDOW: Mutex<Option<(Instant, Instant)>> = Mutex::new(None);

/// The step measured: every record of every tree rewritten into the new folder, as a schema
/// change touching every record would.
fn rewrite_every_record(old: &sled::Db, new: &sled::Db) -> Result<(), String> {
    let started = Instant::now();
    copy_all(old, new)?;
    *COPY_WINDOW.lock().unwrap_or_else(PoisonError::into_inner) = Some((started, Instant::now()));
    Ok(())
}

const STEP: Migration = Migration {
    to: crate::store::SCHEMA_VERSION,
    name: "bench: rewrite every record",
    apply: rewrite_every_record,
};

/// Figures of one upgrade.
#[derive(Debug)]
struct Upgrade {
    /// Keys and values in every tree before the upgrade.
    payload_bytes: u64,
    records_before: usize,
    records_after: usize,
    backup_bytes: u64,
    before_copy: Duration,
    copy: Duration,
    after_copy: Duration,
}

impl Upgrade {
    fn total(&self) -> Duration {
        self.before_copy + self.copy + self.after_copy
    }
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1_000_000.0 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// Keys and values in every tree of the database at `db_dir`, and the records of `data`.
fn sizes(db: &sled::Db) -> Result<(u64, usize), StoreError> {
    let mut bytes = 0u64;
    for name in db.tree_names() {
        for entry in &db.open_tree(&name)? {
            let (key, value) = entry?;
            bytes += (key.len() + value.len()) as u64;
        }
    }
    Ok((bytes, db.open_tree("data")?.len()))
}

/// Sets the schema version stored in the database at `db_dir`.
fn mark_schema(db: &sled::Db, version: u32) -> Result<(), StoreError> {
    db.open_tree("meta")?
        .insert(crate::store::META_SCHEMA, &version.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

pub(super) fn bench_upgrade(args: &UpgradeBenchArgs) -> Result<ExitCode, CliError> {
    let random = Arc::new(SystemRandom::new());
    let work = WorkDir::create(args.dir.as_deref(), random.as_ref())?;
    progress(&format!("working in {}", work.path.display()));

    let data_dir = work.path.join("data");
    // The pre-migration backup is signed with the audit signing key, which this makes.
    let (store, options, source, _) = filled_store(
        &data_dir,
        args.cache_mib,
        args.records,
        args.value_bytes,
        &random,
    )?;
    drop(store);

    // Make the store look one schema behind, so opening it runs the upgrade.
    let previous = crate::store::SCHEMA_VERSION - 1;
    let (payload_bytes, records_before) = {
        let db = crate::store::open_sled(&options.db_dir, args.cache_mib)?;
        mark_schema(&db, previous)?;
        sizes(&db)?
    };

    progress("upgrading (backup, then the rewrite step)");
    let started = Instant::now();
    let store = Store::open_with(
        &options,
        &source,
        Arc::new(SystemClock),
        random.clone(),
        &[STEP],
    )?;
    let ended = Instant::now();
    drop(store);
    let (copy_started, copy_ended) = COPY_WINDOW
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .ok_or_else(|| CliError::Other("the upgrade did not run its migration step".into()))?;

    let backup_bytes = backup_size(&data_dir.join("backups"))?;
    let records_after = {
        let db = crate::store::open_sled(&options.db_dir, args.cache_mib)?;
        sizes(&db)?.1
    };
    let upgrade = Upgrade {
        payload_bytes,
        records_before,
        records_after,
        backup_bytes,
        before_copy: copy_started.saturating_duration_since(started),
        copy: copy_ended.saturating_duration_since(copy_started),
        after_copy: ended.saturating_duration_since(copy_ended),
    };
    if upgrade.records_after != upgrade.records_before {
        return Err(CliError::Other(format!(
            "the upgraded store holds {} records, {} before",
            upgrade.records_after, upgrade.records_before
        )));
    }
    report(args, &upgrade);
    Ok(ExitCode::SUCCESS)
}

/// The size of the one backup file the upgrade wrote into `folder`.
fn backup_size(folder: &std::path::Path) -> Result<u64, CliError> {
    let unreadable = |e: std::io::Error| {
        CliError::Other(format!(
            "cannot read the pre-migration backup in {}: {e}",
            folder.display()
        ))
    };
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(unreadable)? {
        sizes.push(entry.and_then(|e| e.metadata()).map_err(unreadable)?.len());
    }
    match sizes.as_slice() {
        [size] => Ok(*size),
        other => Err(CliError::Other(format!(
            "expected one pre-migration backup in {}, found {}",
            folder.display(),
            other.len()
        ))),
    }
}

fn report(args: &UpgradeBenchArgs, upgrade: &Upgrade) {
    println!(
        "Upgrade at start, {} synthetic records of {} random bytes sealed as customer profiles \
         are ({} MB of keys and values, {} MB backup file)",
        args.records,
        args.value_bytes,
        round3(upgrade.payload_bytes as f64 / 1_000_000.0),
        round3(upgrade.backup_bytes as f64 / 1_000_000.0),
    );
    println!(
        "The step rewrites every record (migrate::copy_all), as the shipped migration from \
         schema 1 to 2 does."
    );
    print_row("measure", "seconds", "MB/s", "", "", "");
    for (name, elapsed, bytes) in [
        (
            "pre-migration backup (open, sync)",
            upgrade.before_copy,
            Some(upgrade.backup_bytes),
        ),
        (
            "rewrite step: copy every record",
            upgrade.copy,
            Some(upgrade.payload_bytes),
        ),
        ("flush, swap folders, re-open", upgrade.after_copy, None),
        ("whole upgrade", upgrade.total(), None),
    ] {
        print_row(
            name,
            &format!("{:.2}", elapsed.as_secs_f64()),
            &bytes.map_or_else(String::new, |b| format!("{:.1}", mb_per_s(b, elapsed))),
            "",
            "",
            "",
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "upgrade",
            "records": args.records,
            "records_kind": "synthetic",
            "migration": "full rewrite (copy_all), as schema 1 to 2",
            "value_bytes": args.value_bytes,
            "payload_bytes": upgrade.payload_bytes,
            "backup_bytes": upgrade.backup_bytes,
            "backup_seconds": round3(upgrade.before_copy.as_secs_f64()),
            "backup_mb_s": round3(mb_per_s(upgrade.backup_bytes, upgrade.before_copy)),
            "copy_seconds": round3(upgrade.copy.as_secs_f64()),
            "copy_mb_s": round3(mb_per_s(upgrade.payload_bytes, upgrade.copy)),
            "after_copy_seconds": round3(upgrade.after_copy.as_secs_f64()),
            "total_seconds": round3(upgrade.total().as_secs_f64()),
        })
    );
}
