//! `clientele bench store`: the encrypted store next to raw sled on the same machine, disk and
//! cache size, in one run: bulk inserts, random reads, durable acknowledged writes (one flushing
//! writer against many writers sharing group commits), then start-up of `clientele serve` to a
//! 200 on `/healthz` and its idle memory ([`super::startup`]).
//!
//! The insert comparison has two more raw lines: sled's own atomic batches (what makes a change
//! set land whole) without a flush, and the like-for-like line, raw sled written the way the
//! committer writes (one atomic batch and one flush per change set), which separates the cost of
//! the store from the cost of atomic, durable change sets. The read comparison reads that
//! like-for-like database too, since a tree written in atomic batches reads slower than one
//! written key by key.
//!
//! Everything is written under a fresh work folder. The store is driven through its real API
//! ([`Store::commit_blocking`], [`Store::commit`], [`Store::get`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::startup::{StartupFigures, measure_startups};
use super::{
    CliError, SplitMix, WorkDir, median, per_second, percentile, print_row, progress, rate, round3,
    verdict, whole,
};
use crate::clock::{Random, SystemClock, SystemRandom};
use crate::config::Config;
use crate::store::{ChangeSet, MasterKeySource, Store, StoreError, StoreOptions, Table};

/// Sizes of the store benchmark.
#[derive(Debug, Args)]
pub struct StoreBenchArgs {
    /// Records inserted (and then read) in each store
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    records: u64,

    /// Puts per change set in the encrypted insert run
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,

    /// Concurrent writers in the durable group-commit run
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    writers: u64,

    /// What the durable writers are: async tasks calling `Store::commit` on a two-thread
    /// runtime, as in `clientele serve`, or threads calling `Store::commit_blocking`
    #[arg(long, value_name = "KIND", value_enum, default_value_t = WriterKind::Tasks)]
    writers_as: WriterKind,

    /// Length of each durable-write run, in seconds
    #[arg(long, value_name = "S", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    durable_seconds: u64,

    /// Page cache of both databases, in MiB (the `store.cache_mib` default is 64)
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    cache_mib: u64,

    /// Start-ups of `clientele serve` measured (the median is reported)
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=50))]
    startups: u64,

    /// Seconds the started server is left idle before its memory is read
    #[arg(long, value_name = "S", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    idle_seconds: u64,

    /// Group-commit window of the encrypted store, such as `500us` or `2ms`
    /// [default: the shipped `store.group_commit_window`]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    group_commit_window: Option<Duration>,

    /// Folder to work in (a fresh sub-folder is made there and removed at the end)
    /// [default: the system temporary folder]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// How the concurrent durable writers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriterKind {
    Tasks,
    Threads,
}

impl WriterKind {
    fn name(self) -> &'static str {
        match self {
            Self::Tasks => "tasks",
            Self::Threads => "threads",
        }
    }
}

/// Size of every benchmark value, about one customer record.
const VALUE_LEN: usize = 300;
/// The table the encrypted runs write to.
const TABLE: Table = Table::new("bench");
/// Rounds of the read comparison; the median of each side is reported.
const READ_ROUNDS: usize = 3;

/// Targets from the store issue.
const TARGET_INSERT_RATIO: f64 = 0.85;
const TARGET_READ_RATIO: f64 = 0.80;
const TARGET_DURABLE_RATIO: f64 = 5.0;
const TARGET_STARTUP_MS: f64 = 1000.0;
const TARGET_IDLE_RSS_MB: f64 = 50.0;

pub(super) fn bench_store(args: &StoreBenchArgs) -> Result<ExitCode, CliError> {
    let random = Arc::new(SystemRandom::new());
    let work = WorkDir::create(args.dir.as_deref(), random.as_ref())?;
    progress(&format!("working in {}", work.path.display()));
    let values = ValuePool::new(random.as_ref())?;
    let mut rng = SplitMix::seeded(random.as_ref())?;

    let raw = RawSled::open(&work.path.join("raw"), args.cache_mib)?;
    let store = open_store(&work.path.join("store"), args, random)?;

    let (insert, raw_batched) = compare_inserts(&work.path, &raw, &store, &values, args)?;
    let read = compare_reads(
        [&raw, &raw_batched],
        &store,
        &values,
        &mut rng,
        args.records,
    )?;
    let disk = DiskUse {
        raw_bytes: raw
            .db
            .size_on_disk()
            .map_err(sled_error("size of the raw database"))?,
        encrypted_bytes: store.size_on_disk(),
    };
    let durable = compare_durable(&raw, &store, &values, args)?;

    // The servers measured next must not share the machine with these databases.
    progress("closing both databases");
    drop(store);
    drop(raw);
    drop(raw_batched);

    let startup = measure_startups(
        &work.path,
        args.startups,
        Duration::from_secs(args.idle_seconds),
    )?;

    let report = Report {
        insert,
        read,
        durable,
        startup,
        disk,
    };
    print_table(args, &report);
    println!("{}", report_json(args, &report));
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// Set-up

/// Random bytes from which every value is cut, so values are incompressible and building them
/// costs a copy, not a call to the random source.
#[derive(Debug, Clone)]
struct ValuePool {
    bytes: Arc<[u8]>,
}

impl ValuePool {
    const LEN: usize = (1 << 20) + VALUE_LEN;

    fn new(random: &dyn Random) -> Result<Self, CliError> {
        let mut bytes = vec![0u8; Self::LEN];
        random
            .fill(&mut bytes)
            .map_err(|e| CliError::Other(format!("cannot make benchmark values: {e}")))?;
        Ok(Self {
            bytes: bytes.into(),
        })
    }

    /// Value number `i`; distinct for the first million numbers (7919 is prime to 2^20).
    fn value(&self, i: u64) -> &[u8] {
        let span = (Self::LEN - VALUE_LEN) as u64;
        let start = (i.wrapping_mul(7919) % span) as usize;
        &self.bytes[start..start + VALUE_LEN]
    }
}

/// Record key `i`: a 16-byte big-endian counter, like a sortable id.
fn record_key(i: u64) -> [u8; 16] {
    u128::from(i).to_be_bytes()
}

/// A plain sled database configured like the store's (same cache), in its own folder.
#[derive(Debug)]
struct RawSled {
    db: sled::Db,
    tree: sled::Tree,
}

impl RawSled {
    fn open(path: &Path, cache_mib: u64) -> Result<Self, CliError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_mib * 1024 * 1024)
            .open()
            .map_err(|e| {
                CliError::Other(format!("cannot open raw sled at {}: {e}", path.display()))
            })?;
        let tree = db
            .open_tree("bench")
            .map_err(sled_error("open of the raw tree"))?;
        Ok(Self { db, tree })
    }
}

fn sled_error(what: &'static str) -> impl Fn(sled::Error) -> CliError {
    move |err| CliError::Other(format!("raw sled failed during the {what}: {err}"))
}

/// The group-commit window used: the flag, else the shipped default.
fn group_window(args: &StoreBenchArgs) -> Duration {
    args.group_commit_window
        .unwrap_or_else(|| Config::default().store.group_commit_window)
}

/// Creates and opens an encrypted store with the shipped defaults, a key file and `cache_mib`.
fn open_store(
    data_dir: &Path,
    args: &StoreBenchArgs,
    random: Arc<SystemRandom>,
) -> Result<Store, CliError> {
    let config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    let mut options = StoreOptions::from_config(&config);
    options.cache_mib = args.cache_mib;
    options.group_commit_window = group_window(args);
    let source = MasterKeySource::File(config.master_key_file());
    Store::init(&options, &source, &SystemClock, random.as_ref())?;
    Ok(Store::open(
        &options,
        &source,
        Arc::new(SystemClock),
        random,
    )?)
}

// ---------------------------------------------------------------------------------------------
// 1. Inserts

#[derive(Debug)]
struct InsertFigures {
    raw: Duration,
    /// Raw sled in atomic batches of the change-set size, one flush at the end.
    raw_atomic: Duration,
    /// Raw sled with the store's durability: one atomic batch and one flush per change set.
    raw_batched: Duration,
    encrypted: Duration,
    records: u64,
}

impl InsertFigures {
    fn raw_rate(&self) -> f64 {
        rate(self.records, self.raw)
    }

    fn raw_atomic_rate(&self) -> f64 {
        rate(self.records, self.raw_atomic)
    }

    fn raw_batched_rate(&self) -> f64 {
        rate(self.records, self.raw_batched)
    }

    fn encrypted_rate(&self) -> f64 {
        rate(self.records, self.encrypted)
    }

    fn ratio(&self) -> f64 {
        self.encrypted_rate() / self.raw_rate()
    }

    /// Encrypted against raw sled doing the same flushes: the cost of the store itself.
    fn like_for_like_ratio(&self) -> f64 {
        self.encrypted_rate() / self.raw_batched_rate()
    }
}

fn compare_inserts(
    work: &Path,
    raw: &RawSled,
    store: &Store,
    values: &ValuePool,
    args: &StoreBenchArgs,
) -> Result<(InsertFigures, RawSled), CliError> {
    progress(&format!(
        "raw sled: inserting {} records, one flush at the end",
        args.records
    ));
    let start = Instant::now();
    for i in 0..args.records {
        raw.tree
            .insert(record_key(i), values.value(i))
            .map_err(sled_error("insert run"))?;
    }
    raw.db
        .flush()
        .map_err(sled_error("flush after the insert run"))?;
    let raw_time = start.elapsed();

    let (raw_atomic, atomic_db) =
        raw_batched_inserts(&work.join("raw-atomic"), values, args, false)?;
    drop(atomic_db);
    let (raw_batched, batched_db) =
        raw_batched_inserts(&work.join("raw-batched"), values, args, true)?;

    progress(&format!(
        "encrypted store: inserting {} records in change sets of {}",
        args.records, args.batch
    ));
    let start = Instant::now();
    let mut next = 0;
    while next < args.records {
        let end = next.saturating_add(args.batch).min(args.records);
        let mut set = ChangeSet::new();
        for i in next..end {
            set.put(TABLE, record_key(i), values.value(i));
        }
        store.commit_blocking(set)?;
        next = end;
    }
    let encrypted_time = start.elapsed();

    let figures = InsertFigures {
        raw: raw_time,
        raw_atomic,
        raw_batched,
        encrypted: encrypted_time,
        records: args.records,
    };
    Ok((figures, batched_db))
}

/// Raw sled on a fresh database in atomic batches of `batch` records; with `flush_each`, written
/// the way the committer writes: a batch, then a flush, and the next batch only after it.
/// Returns the time and the database, still open.
fn raw_batched_inserts(
    path: &Path,
    values: &ValuePool,
    args: &StoreBenchArgs,
    flush_each: bool,
) -> Result<(Duration, RawSled), CliError> {
    progress(&format!(
        "raw sled: inserting {} records in atomic batches of {}, {}",
        args.records,
        args.batch,
        if flush_each {
            "flush after each"
        } else {
            "one flush at the end"
        }
    ));
    let raw = RawSled::open(path, args.cache_mib)?;
    let start = Instant::now();
    let mut next = 0;
    while next < args.records {
        let end = next.saturating_add(args.batch).min(args.records);
        let mut batch = sled::Batch::default();
        for i in next..end {
            batch.insert(&record_key(i)[..], values.value(i));
        }
        raw.tree
            .apply_batch(batch)
            .map_err(sled_error("batched insert run"))?;
        if flush_each {
            raw.db.flush().map_err(sled_error("batched insert run"))?;
        }
        next = end;
    }
    raw.db.flush().map_err(sled_error("batched insert run"))?;
    Ok((start.elapsed(), raw))
}

// ---------------------------------------------------------------------------------------------
// 2. Reads

#[derive(Debug)]
struct ReadFigures {
    raw_rates: Vec<f64>,
    /// Reads of the like-for-like database (written in atomic batches with a flush each).
    raw_batched_rates: Vec<f64>,
    encrypted_rates: Vec<f64>,
}

impl ReadFigures {
    fn raw_rate(&self) -> f64 {
        median(&self.raw_rates)
    }

    fn raw_batched_rate(&self) -> f64 {
        median(&self.raw_batched_rates)
    }

    /// Encrypted against raw sled written the way the store writes.
    fn like_for_like_ratio(&self) -> f64 {
        self.encrypted_rate() / self.raw_batched_rate()
    }

    fn encrypted_rate(&self) -> f64 {
        median(&self.encrypted_rates)
    }

    fn ratio(&self) -> f64 {
        self.encrypted_rate() / self.raw_rate()
    }
}

fn compare_reads(
    raws: [&RawSled; 2],
    store: &Store,
    values: &ValuePool,
    rng: &mut SplitMix,
    records: u64,
) -> Result<ReadFigures, CliError> {
    let picks: Vec<u64> = (0..records).map(|_| rng.below(records)).collect();
    let mut figures = ReadFigures {
        raw_rates: Vec::with_capacity(READ_ROUNDS),
        raw_batched_rates: Vec::with_capacity(READ_ROUNDS),
        encrypted_rates: Vec::with_capacity(READ_ROUNDS),
    };

    // Alternating rounds, so no side always reads from a cache another has warmed.
    for round in 1..=READ_ROUNDS {
        progress(&format!(
            "reads, round {round} of {READ_ROUNDS}: {records} random keys in each store"
        ));
        let sides = [
            ("raw sled", &mut figures.raw_rates),
            (
                "raw sled written in batches",
                &mut figures.raw_batched_rates,
            ),
        ];
        for (raw, (side, rates)) in raws.into_iter().zip(sides) {
            let start = Instant::now();
            let mut wrong = 0u64;
            for &i in &picks {
                let found = raw
                    .tree
                    .get(record_key(i))
                    .map_err(sled_error("read run"))?;
                wrong += u64::from(found.as_deref() != Some(values.value(i)));
            }
            rates.push(rate(records, start.elapsed()));
            check_reads(side, wrong)?;
        }

        let start = Instant::now();
        let mut wrong = 0u64;
        for &i in &picks {
            let found = store.get(TABLE, &record_key(i))?;
            wrong += u64::from(found.as_deref().map(Vec::as_slice) != Some(values.value(i)));
        }
        figures.encrypted_rates.push(rate(records, start.elapsed()));
        check_reads("encrypted store", wrong)?;
    }
    Ok(figures)
}

fn check_reads(side: &str, wrong: u64) -> Result<(), CliError> {
    if wrong == 0 {
        return Ok(());
    }
    Err(CliError::Other(format!(
        "{side} returned {wrong} missing or wrong values in the read run; the figures would mean \
         nothing, so the benchmark stopped (check the disk with `clientele doctor`)"
    )))
}

// ---------------------------------------------------------------------------------------------
// 3. Durable acknowledged writes

#[derive(Debug)]
struct DurableRun {
    acknowledged: u64,
    elapsed: Duration,
    /// Time from each write's start to its acknowledgement, sorted.
    latencies: Vec<Duration>,
}

impl DurableRun {
    fn rate(&self) -> f64 {
        rate(self.acknowledged, self.elapsed)
    }

    fn latency_ms(&self, per_mille: usize) -> f64 {
        percentile(&self.latencies, per_mille).as_secs_f64() * 1000.0
    }
}

#[derive(Debug)]
struct DurableFigures {
    raw: DurableRun,
    encrypted: DurableRun,
}

impl DurableFigures {
    fn ratio(&self) -> f64 {
        self.encrypted.rate() / self.raw.rate()
    }
}

fn compare_durable(
    raw: &RawSled,
    store: &Store,
    values: &ValuePool,
    args: &StoreBenchArgs,
) -> Result<DurableFigures, CliError> {
    let length = Duration::from_secs(args.durable_seconds);

    progress(&format!(
        "raw sled: one writer, flush after every write, {}s",
        args.durable_seconds
    ));
    let first_key = args.records;
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut i = first_key;
    while start.elapsed() < length {
        let began = Instant::now();
        raw.tree
            .insert(record_key(i), values.value(i))
            .map_err(sled_error("durable run"))?;
        raw.db.flush().map_err(sled_error("durable run"))?;
        latencies.push(began.elapsed());
        i += 1;
    }
    let raw_run = finish_run(start.elapsed(), vec![latencies]);

    progress(&format!(
        "encrypted store: {} writers ({}), one record per change set, {}s",
        args.writers,
        args.writers_as.name(),
        args.durable_seconds
    ));
    let encrypted_run = match args.writers_as {
        WriterKind::Tasks => durable_tasks(store, values, args.writers, args.records, length)?,
        WriterKind::Threads => durable_threads(store, values, args.writers, args.records, length)?,
    };

    Ok(DurableFigures {
        raw: raw_run,
        encrypted: encrypted_run,
    })
}

/// First key of durable writer `writer`: each has its own range above the inserted records.
fn writer_first_key(records: u64, writer: u64) -> u64 {
    records + (writer + 1) * (1 << 32)
}

/// `writers` async tasks on a two-thread runtime (like `clientele serve`), each awaiting
/// one-record commits until `length` has passed.
fn durable_tasks(
    store: &Store,
    values: &ValuePool,
    writers: u64,
    records: u64,
    length: Duration,
) -> Result<DurableRun, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for writer in 0..writers {
            let store = store.clone();
            let values = values.clone();
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                let mut i = writer_first_key(records, writer);
                while start.elapsed() < length {
                    let began = Instant::now();
                    let mut set = ChangeSet::new();
                    set.put(TABLE, record_key(i), values.value(i));
                    store.commit(set).await?;
                    latencies.push(began.elapsed());
                    i += 1;
                }
                Ok::<_, StoreError>(latencies)
            });
        }
        let mut per_task = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let latencies = joined.map_err(|e| {
                CliError::Other(format!("a benchmark writer task stopped unexpectedly: {e}"))
            })??;
            per_task.push(latencies);
        }
        Ok(finish_run(start.elapsed(), per_task))
    })
}

/// `writers` threads each committing one-record change sets until `length` has passed.
fn durable_threads(
    store: &Store,
    values: &ValuePool,
    writers: u64,
    records: u64,
    length: Duration,
) -> Result<DurableRun, CliError> {
    let start = Instant::now();
    let per_thread = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|writer| {
                let first = writer_first_key(records, writer);
                scope.spawn(move || -> Result<Vec<Duration>, StoreError> {
                    let mut latencies = Vec::new();
                    let mut i = first;
                    while start.elapsed() < length {
                        let began = Instant::now();
                        let mut set = ChangeSet::new();
                        set.put(TABLE, record_key(i), values.value(i));
                        store.commit_blocking(set)?;
                        latencies.push(began.elapsed());
                        i += 1;
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .map_err(|_| {
                        CliError::Other("a benchmark writer thread stopped unexpectedly".into())
                    })?
                    .map_err(CliError::from)
            })
            .collect::<Result<Vec<_>, CliError>>()
    })?;
    Ok(finish_run(start.elapsed(), per_thread))
}

fn finish_run(elapsed: Duration, per_thread: Vec<Vec<Duration>>) -> DurableRun {
    let mut latencies: Vec<Duration> = per_thread.into_iter().flatten().collect();
    latencies.sort_unstable();
    DurableRun {
        acknowledged: latencies.len() as u64,
        elapsed,
        latencies,
    }
}

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Debug)]
struct DiskUse {
    raw_bytes: u64,
    encrypted_bytes: u64,
}

#[derive(Debug)]
struct Report {
    insert: InsertFigures,
    read: ReadFigures,
    durable: DurableFigures,
    startup: StartupFigures,
    disk: DiskUse,
}

fn print_table(args: &StoreBenchArgs, report: &Report) {
    let Report {
        insert,
        read,
        durable,
        startup,
        ..
    } = report;
    let runs = startup.runs.len();
    println!(
        "Clientele store benchmark: {} records of {VALUE_LEN} bytes, change sets of {}, \
         {} durable writers for {}s, {} MiB cache, group-commit window {:?}",
        args.records,
        args.batch,
        args.writers,
        args.durable_seconds,
        args.cache_mib,
        group_window(args)
    );
    println!();
    print_row(
        "measure",
        "raw sled",
        "encrypted store",
        "ratio",
        "target",
        "result",
    );
    print_row(
        "insert, no flush per write",
        &per_second(insert.raw_rate()),
        &per_second(insert.encrypted_rate()),
        &format!("{:.2}", insert.ratio()),
        ">= 0.85",
        verdict(insert.ratio() >= TARGET_INSERT_RATIO),
    );
    print_row(
        &format!("  raw atomic batches of {}", args.batch),
        &per_second(insert.raw_atomic_rate()),
        "",
        "",
        "",
        "",
    );
    print_row(
        &format!("  raw batches of {} + flush each", args.batch),
        &per_second(insert.raw_batched_rate()),
        &per_second(insert.encrypted_rate()),
        &format!("{:.2}", insert.like_for_like_ratio()),
        "",
        "(like for like)",
    );
    print_row(
        &format!("read, random keys (median of {READ_ROUNDS})"),
        &per_second(read.raw_rate()),
        &per_second(read.encrypted_rate()),
        &format!("{:.2}", read.ratio()),
        ">= 0.80",
        verdict(read.ratio() >= TARGET_READ_RATIO),
    );
    print_row(
        "  raw written as batches + flush",
        &per_second(read.raw_batched_rate()),
        &per_second(read.encrypted_rate()),
        &format!("{:.2}", read.like_for_like_ratio()),
        "",
        "(like for like)",
    );
    print_row(
        &format!(
            "durable writes (1 vs {} {})",
            args.writers,
            args.writers_as.name()
        ),
        &per_second(durable.raw.rate()),
        &per_second(durable.encrypted.rate()),
        &format!("{:.1}x", durable.ratio()),
        ">= 5x",
        verdict(durable.ratio() >= TARGET_DURABLE_RATIO),
    );
    let healthy = median(&startup.healthy_ms());
    print_row(
        &format!("start-up to /healthz (median of {runs})"),
        "",
        &format!("{healthy:.0} ms"),
        "",
        "< 1000 ms",
        verdict(healthy < TARGET_STARTUP_MS),
    );
    let rss = startup.rss_mb_median();
    print_row(
        &format!("idle memory, VmRSS (median of {runs})"),
        "",
        &format!("{rss:.1} MB"),
        "",
        "< 50 MB",
        verdict(rss < TARGET_IDLE_RSS_MB),
    );
    println!();
    print_details(report);
}

fn print_details(report: &Report) {
    let Report {
        durable,
        startup,
        disk,
        ..
    } = report;
    println!(
        "durable ack latency p50/p99: raw {:.2}/{:.2} ms, encrypted {:.2}/{:.2} ms",
        durable.raw.latency_ms(500),
        durable.raw.latency_ms(990),
        durable.encrypted.latency_ms(500),
        durable.encrypted.latency_ms(990)
    );
    println!(
        "start-up: listening after {:.0} ms, stopped {:.0} ms after SIGTERM (medians)",
        median(&startup.listening_ms()),
        median(&startup.stop_ms()),
    );
    println!(
        "disk after inserts: raw {:.0} MB, encrypted {:.0} MB",
        disk.raw_bytes as f64 / 1e6,
        disk.encrypted_bytes as f64 / 1e6
    );
}

fn report_json(args: &StoreBenchArgs, report: &Report) -> serde_json::Value {
    let Report {
        insert,
        read,
        durable,
        startup,
        disk,
    } = report;
    let healthy = median(&startup.healthy_ms());
    let rss_mb = startup.rss_mb_median();
    serde_json::json!({
        "bench": "store",
        "version": env!("CARGO_PKG_VERSION"),
        "records": args.records,
        "value_bytes": VALUE_LEN,
        "batch": args.batch,
        "cache_mib": args.cache_mib,
        "group_commit_window_us": group_window(args).as_micros(),
        "insert": {
            "raw_per_s": whole(insert.raw_rate()),
            "encrypted_per_s": whole(insert.encrypted_rate()),
            "raw_atomic_per_s": whole(insert.raw_atomic_rate()),
            "raw_batched_per_s": whole(insert.raw_batched_rate()),
            "raw_seconds": round3(insert.raw.as_secs_f64()),
            "raw_atomic_seconds": round3(insert.raw_atomic.as_secs_f64()),
            "raw_batched_seconds": round3(insert.raw_batched.as_secs_f64()),
            "encrypted_seconds": round3(insert.encrypted.as_secs_f64()),
            "ratio": round3(insert.ratio()),
            "like_for_like_ratio": round3(insert.like_for_like_ratio()),
            "target_ratio": TARGET_INSERT_RATIO,
            "met": insert.ratio() >= TARGET_INSERT_RATIO,
        },
        "read": {
            "rounds": READ_ROUNDS,
            "raw_per_s": whole(read.raw_rate()),
            "raw_batched_per_s": whole(read.raw_batched_rate()),
            "encrypted_per_s": whole(read.encrypted_rate()),
            "ratio": round3(read.ratio()),
            "like_for_like_ratio": round3(read.like_for_like_ratio()),
            "target_ratio": TARGET_READ_RATIO,
            "met": read.ratio() >= TARGET_READ_RATIO,
        },
        "durable": {
            "seconds": args.durable_seconds,
            "raw_writers": 1,
            "raw_per_s": whole(durable.raw.rate()),
            "raw_p50_ms": round3(durable.raw.latency_ms(500)),
            "raw_p99_ms": round3(durable.raw.latency_ms(990)),
            "encrypted_writers": args.writers,
            "encrypted_writers_as": args.writers_as.name(),
            "encrypted_per_s": whole(durable.encrypted.rate()),
            "encrypted_p50_ms": round3(durable.encrypted.latency_ms(500)),
            "encrypted_p99_ms": round3(durable.encrypted.latency_ms(990)),
            "ratio": round3(durable.ratio()),
            "target_ratio": TARGET_DURABLE_RATIO,
            "met": durable.ratio() >= TARGET_DURABLE_RATIO,
        },
        "startup": {
            "runs": startup.runs.len(),
            "healthz_ms_median": round3(healthy),
            "healthz_ms": startup.healthy_ms().into_iter().map(round3).collect::<Vec<_>>(),
            "listening_ms_median": round3(median(&startup.listening_ms())),
            "stop_ms_median": round3(median(&startup.stop_ms())),
            "target_ms": TARGET_STARTUP_MS,
            "met": healthy < TARGET_STARTUP_MS,
        },
        "idle_memory": {
            "idle_seconds": args.idle_seconds,
            "rss_kib": startup.runs.iter().map(|r| r.idle_rss_kib).collect::<Vec<_>>(),
            "rss_mb_median": round3(rss_mb),
            "target_mb": TARGET_IDLE_RSS_MB,
            "met": rss_mb < TARGET_IDLE_RSS_MB,
        },
        "disk": {
            "raw_bytes": disk.raw_bytes,
            "encrypted_bytes": disk.encrypted_bytes,
            "ratio": round3(disk.encrypted_bytes as f64 / disk.raw_bytes.max(1) as f64),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_distinct_and_full_length() {
        let pool = ValuePool {
            bytes: (0..ValuePool::LEN)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>()
                .into(),
        };
        assert_eq!(pool.value(0).len(), VALUE_LEN);
        assert_eq!(pool.value(u64::MAX).len(), VALUE_LEN);
        assert_ne!(pool.value(1), pool.value(2));
    }
}
