//! `clientele bench backup`: backup, verification and restore throughput on N records.
//!
//! Fills an encrypted store with N synthetic records of `value_bytes` random bytes (sealed
//! under the data key, as customer profiles are; not demo customers), then times, on the same
//! open store, a backup streamed to a file (`Store::backup`, as the server does), a
//! verification of that file (every digest and the signature), and a restore of it into a new
//! folder (checked, written, synced and renamed into place). Throughput is the backup file's
//! size over the elapsed time.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::{CliError, WorkDir, print_row, progress, round3, verdict};
use crate::clock::{Random, SystemClock, SystemRandom};
use crate::config::Config;
use crate::store::backup::{self, RestorePlan};
use crate::store::{ChangeSet, MasterKeySource, Store, StoreOptions, Table};

/// The throughput asked of backup and restore, in MB/s (1M customers in about 10 s each).
const TARGET_MB_S: f64 = 50.0;
const RECORDS: Table = Table::new("bench_customers");

/// Sizes of the backup benchmark, and of the upgrade benchmark (the same synthetic store).
#[derive(Debug, Args)]
pub struct BackupBenchArgs {
    /// Records in the store
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) records: u64,

    /// Size of each record before sealing, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub(super) value_bytes: u64,

    /// Page cache of the store, in MiB (the `store.cache_mib` default is 64)
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) cache_mib: u64,

    /// Parent folder of the benchmark's work folder [default: the system temporary folder]
    #[arg(long, value_name = "DIR")]
    pub(super) dir: Option<PathBuf>,
}

/// One timed step.
#[derive(Debug)]
struct Step {
    elapsed: Duration,
    bytes: u64,
}

impl Step {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1_000_000.0 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

fn failed(what: &str) -> impl FnOnce(backup::BackupError) -> CliError + '_ {
    move |err| CliError::Other(format!("{what}: {err}"))
}

pub(super) fn options_for(
    data_dir: &Path,
    cache_mib: u64,
) -> (StoreOptions, MasterKeySource, Config) {
    let config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    let mut options = StoreOptions::from_config(&config);
    options.cache_mib = cache_mib;
    let source = MasterKeySource::File(config.master_key_file());
    (options, source, config)
}

/// Fills the store with `records` synthetic values of `value_bytes` random bytes (sealed under
/// the data key on commit, as customer profiles are), 1000 per change set.
pub(super) fn fill(
    store: &Store,
    records: u64,
    value_bytes: u64,
    random: &dyn Random,
) -> Result<(), CliError> {
    let len = value_bytes as usize;
    let mut pool = vec![0u8; (1 << 20) + len];
    random
        .fill(&mut pool)
        .map_err(|e| CliError::Other(format!("cannot make benchmark values: {e}")))?;
    let span = (pool.len() - len) as u64;
    let mut set = ChangeSet::new();
    for i in 0..records {
        let start = (i.wrapping_mul(7919) % span) as usize;
        set.put(
            RECORDS,
            u128::from(i).to_be_bytes().to_vec(),
            pool[start..start + len].to_vec(),
        );
        if set.len() >= 1000 {
            store.commit_blocking(std::mem::take(&mut set))?;
        }
        if i > 0 && i % 100_000 == 0 {
            progress(&format!("{i} records written"));
        }
    }
    store.commit_blocking(set)?;
    Ok(())
}

/// A new store in `data_dir` filled with `records` synthetic records, with its audit signing
/// key (backups are signed with it).
pub(super) fn filled_store(
    data_dir: &Path,
    cache_mib: u64,
    records: u64,
    value_bytes: u64,
    random: &Arc<SystemRandom>,
) -> Result<
    (
        Store,
        StoreOptions,
        MasterKeySource,
        crate::audit::SigningKey,
    ),
    CliError,
> {
    let (options, source, _) = options_for(data_dir, cache_mib);
    crate::store::files::create_private_dir(data_dir, 0o700)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", data_dir.display())))?;
    Store::init(&options, &source, &SystemClock, random.as_ref())?;
    let store = Store::open(&options, &source, Arc::new(SystemClock), random.clone())?;
    progress(&format!("writing {records} records"));
    fill(&store, records, value_bytes, random.as_ref())?;
    let key = crate::audit::load_signing_key(&store, random.as_ref())?;
    Ok((store, options, source, key))
}

pub(super) fn bench_backup(args: &BackupBenchArgs) -> Result<ExitCode, CliError> {
    let random = Arc::new(SystemRandom::new());
    let work = WorkDir::create(args.dir.as_deref(), random.as_ref())?;
    progress(&format!("working in {}", work.path.display()));

    let source_dir = work.path.join("source");
    let (store, options, source, key) = filled_store(
        &source_dir,
        args.cache_mib,
        args.records,
        args.value_bytes,
        &random,
    )?;

    progress("backing up");
    let file = work.path.join("bench.clbk");
    let started = Instant::now();
    let (_, bytes) = backup::write_file(&store, &file, &key).map_err(failed("backup"))?;
    let backed_up = Step {
        elapsed: started.elapsed(),
        bytes,
    };
    drop(store);

    progress("verifying");
    let started = Instant::now();
    let input = std::fs::File::open(&file)
        .map_err(|e| CliError::Other(format!("cannot open {}: {e}", file.display())))?;
    let verified = backup::read(input, None, |_| Ok(())).map_err(failed("verify"))?;
    let verify = Step {
        elapsed: started.elapsed(),
        bytes,
    };

    progress("restoring");
    let target = work.path.join("restored");
    let (target_options, _, target_config) = options_for(&target, args.cache_mib);
    let plan = RestorePlan {
        options: &target_options,
        source: &source,
        current_ledger: Some(&options.erasure_ledger),
        install_key_file: Some(target_config.master_key_file()),
        expected_key: Some(&verified.public_key),
    };
    let started = Instant::now();
    let input = std::fs::File::open(&file)
        .map_err(|e| CliError::Other(format!("cannot open {}: {e}", file.display())))?;
    let restored = backup::restore(input, &plan, random.as_ref()).map_err(failed("restore"))?;
    let restore = Step {
        elapsed: started.elapsed(),
        bytes,
    };

    report(args, &backed_up, &verify, &restore, restored.records);
    Ok(ExitCode::SUCCESS)
}

fn report(args: &BackupBenchArgs, backed_up: &Step, verify: &Step, restore: &Step, records: u64) {
    println!(
        "Backup and restore, {} synthetic records of {} random bytes sealed as customer \
         profiles are ({} MB backup file)",
        args.records,
        args.value_bytes,
        round3(backed_up.bytes as f64 / 1_000_000.0)
    );
    print_row("measure", "seconds", "MB/s", "", "target", "result");
    for (name, step, target) in [
        ("backup (stream, sealed as stored)", backed_up, true),
        ("verify (digests, signature)", verify, false),
        ("restore (check, write, sync, rename)", restore, true),
    ] {
        let mb_s = step.mb_per_s();
        print_row(
            name,
            &format!("{:.2}", step.elapsed.as_secs_f64()),
            &format!("{mb_s:.1}"),
            "",
            if target { ">= 50 MB/s" } else { "" },
            if target {
                verdict(mb_s >= TARGET_MB_S)
            } else {
                ""
            },
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "backup",
            "records": args.records,
            "records_kind": "synthetic",
            "restored_records": records,
            "value_bytes": args.value_bytes,
            "file_bytes": backed_up.bytes,
            "backup_seconds": round3(backed_up.elapsed.as_secs_f64()),
            "backup_mb_s": round3(backed_up.mb_per_s()),
            "verify_seconds": round3(verify.elapsed.as_secs_f64()),
            "verify_mb_s": round3(verify.mb_per_s()),
            "restore_seconds": round3(restore.elapsed.as_secs_f64()),
            "restore_mb_s": round3(restore.mb_per_s()),
            "target_mb_s": TARGET_MB_S,
        })
    );
}
