//! `clientele bench`: measurements an operator can run when sizing hardware.
//!
//! `bench store` puts the encrypted store next to raw sled on the same machine, disk and cache
//! size, in one run: bulk inserts, random reads, durable acknowledged writes (one flushing
//! writer against many writers sharing group commits), then start-up of `clientele serve` to a
//! 200 on `/healthz` and its idle memory. It prints a table for people, then one JSON line with
//! every figure for the records. Progress goes to standard error so standard output holds only
//! the table and the JSON.
//!
//! The insert comparison has a second, like-for-like line: raw sled written the way the committer
//! writes (one atomic batch and one flush per change set), which separates the cost of the store
//! from the cost of its durability.
//!
//! Everything is written under a fresh folder (in `--dir`, or the system temporary folder) that
//! is removed at the end, whatever happens. The store is driven through its real API
//! ([`Store::commit_blocking`], [`Store::commit`], [`Store::get`]) and the server is the real
//! binary, started as a child process exactly as an operator would. Figures move with whatever
//! else the machine is doing: run it on an otherwise idle appliance.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::CliError;
use crate::clock::{Random, SystemClock, SystemRandom};
use crate::config::Config;
use crate::store::{ChangeSet, MasterKeySource, Store, StoreError, StoreOptions, Table};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Encrypted store against raw sled: inserts, reads, durable group commit, start-up, memory
    Store(StoreBenchArgs),
}

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

pub fn run(command: &BenchCommand) -> Result<ExitCode, CliError> {
    match command {
        BenchCommand::Store(args) => bench_store(args),
    }
}

/// Size of every benchmark value, about one customer record.
const VALUE_LEN: usize = 300;
/// The table the encrypted runs write to.
const TABLE: Table = Table::new("bench");
/// Rounds of the read comparison; the median of each side is reported.
const READ_ROUNDS: usize = 3;
/// Longest wait for a started server to answer before the run is abandoned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a stopped server to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The line `clientele serve` prints once it listens.
const SERVING_PREFIX: &str = "Clientele is serving on https://";

/// Targets from the store issue.
const TARGET_INSERT_RATIO: f64 = 0.85;
const TARGET_READ_RATIO: f64 = 0.80;
const TARGET_DURABLE_RATIO: f64 = 5.0;
const TARGET_STARTUP_MS: f64 = 1000.0;
const TARGET_IDLE_RSS_MB: f64 = 50.0;

fn bench_store(args: &StoreBenchArgs) -> Result<ExitCode, CliError> {
    let random = Arc::new(SystemRandom::new());
    let work = WorkDir::create(args.dir.as_deref(), random.as_ref())?;
    progress(&format!("working in {}", work.path.display()));
    let values = ValuePool::new(random.as_ref())?;
    let mut rng = SplitMix::seeded(random.as_ref())?;

    let raw = RawSled::open(&work.path.join("raw"), args.cache_mib)?;
    let store = open_store(&work.path.join("store"), args, random)?;

    let insert = compare_inserts(&work.path, &raw, &store, &values, args)?;
    let read = compare_reads(&raw, &store, &values, &mut rng, args.records)?;
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

    let startup = measure_startups(&work.path, args)?;

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

/// The benchmark's own folder, removed when dropped (on success and on every error path).
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(parent: Option<&Path>, random: &dyn Random) -> Result<Self, CliError> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        std::fs::create_dir_all(&parent).map_err(|e| {
            CliError::Other(format!("cannot create folder {}: {e}", parent.display()))
        })?;
        let mut tag = [0u8; 4];
        random
            .fill(&mut tag)
            .map_err(|e| CliError::Other(format!("cannot name the benchmark folder: {e}")))?;
        let path = parent.join(format!(
            "clientele-bench-{}-{}",
            std::process::id(),
            data_encoding::HEXLOWER.encode(&tag)
        ));
        std::fs::create_dir(&path).map_err(|e| {
            CliError::Other(format!("cannot create folder {}: {e}", path.display()))
        })?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.path) {
            eprintln!(
                "warning: could not remove {}: {err}; remove it by hand",
                self.path.display()
            );
        }
    }
}

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

/// A small, fast generator for picking keys to read (not for anything secret).
#[derive(Debug)]
struct SplitMix {
    state: u64,
}

impl SplitMix {
    fn seeded(random: &dyn Random) -> Result<Self, CliError> {
        let mut seed = [0u8; 8];
        random
            .fill(&mut seed)
            .map_err(|e| CliError::Other(format!("cannot seed the key picker: {e}")))?;
        Ok(Self {
            state: u64::from_le_bytes(seed),
        })
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
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

fn progress(message: &str) {
    eprintln!("bench: {message}");
}

// ---------------------------------------------------------------------------------------------
// 1. Inserts

#[derive(Debug)]
struct InsertFigures {
    raw: Duration,
    /// Raw sled with the store's durability: one atomic batch and one flush per change set.
    raw_batched: Duration,
    encrypted: Duration,
    records: u64,
}

impl InsertFigures {
    fn raw_rate(&self) -> f64 {
        rate(self.records, self.raw)
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
) -> Result<InsertFigures, CliError> {
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

    let raw_batched = raw_batched_inserts(&work.join("raw-batched"), values, args)?;

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

    Ok(InsertFigures {
        raw: raw_time,
        raw_batched,
        encrypted: encrypted_time,
        records: args.records,
    })
}

/// Raw sled on a fresh database, written the way the committer writes: an atomic batch of
/// `batch` records, then a flush, and the next batch only after it.
fn raw_batched_inserts(
    path: &Path,
    values: &ValuePool,
    args: &StoreBenchArgs,
) -> Result<Duration, CliError> {
    progress(&format!(
        "raw sled: inserting {} records in atomic batches of {}, flush after each",
        args.records, args.batch
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
        raw.db.flush().map_err(sled_error("batched insert run"))?;
        next = end;
    }
    Ok(start.elapsed())
}

// ---------------------------------------------------------------------------------------------
// 2. Reads

#[derive(Debug)]
struct ReadFigures {
    raw_rates: Vec<f64>,
    encrypted_rates: Vec<f64>,
}

impl ReadFigures {
    fn raw_rate(&self) -> f64 {
        median(&self.raw_rates)
    }

    fn encrypted_rate(&self) -> f64 {
        median(&self.encrypted_rates)
    }

    fn ratio(&self) -> f64 {
        self.encrypted_rate() / self.raw_rate()
    }
}

fn compare_reads(
    raw: &RawSled,
    store: &Store,
    values: &ValuePool,
    rng: &mut SplitMix,
    records: u64,
) -> Result<ReadFigures, CliError> {
    let picks: Vec<u64> = (0..records).map(|_| rng.below(records)).collect();
    let mut figures = ReadFigures {
        raw_rates: Vec::with_capacity(READ_ROUNDS),
        encrypted_rates: Vec::with_capacity(READ_ROUNDS),
    };

    // Alternating rounds, so neither side always reads from a cache the other has warmed.
    for round in 1..=READ_ROUNDS {
        progress(&format!(
            "reads, round {round} of {READ_ROUNDS}: {records} random keys in each store"
        ));
        let start = Instant::now();
        let mut wrong = 0u64;
        for &i in &picks {
            let found = raw
                .tree
                .get(record_key(i))
                .map_err(sled_error("read run"))?;
            wrong += u64::from(found.as_deref() != Some(values.value(i)));
        }
        figures.raw_rates.push(rate(records, start.elapsed()));
        check_reads("raw sled", wrong)?;

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
// 4. Start-up and idle memory

#[derive(Debug)]
struct StartupRun {
    /// Spawn to the "serving on" line.
    listening: Duration,
    /// Spawn to the first 200 from `/healthz`.
    healthy: Duration,
    /// Resident memory after the idle wait.
    idle_rss_kib: u64,
    /// SIGTERM to exit.
    stop: Duration,
}

#[derive(Debug)]
struct StartupFigures {
    runs: Vec<StartupRun>,
}

impl StartupFigures {
    fn healthy_ms(&self) -> Vec<f64> {
        self.runs
            .iter()
            .map(|r| r.healthy.as_secs_f64() * 1000.0)
            .collect()
    }

    fn listening_ms(&self) -> Vec<f64> {
        self.runs
            .iter()
            .map(|r| r.listening.as_secs_f64() * 1000.0)
            .collect()
    }

    fn stop_ms(&self) -> Vec<f64> {
        self.runs
            .iter()
            .map(|r| r.stop.as_secs_f64() * 1000.0)
            .collect()
    }

    fn rss_kib(&self) -> Vec<f64> {
        self.runs.iter().map(|r| r.idle_rss_kib as f64).collect()
    }

    fn rss_mb_median(&self) -> f64 {
        median(&self.rss_kib()) * 1024.0 / 1_000_000.0
    }
}

fn measure_startups(root: &Path, args: &StoreBenchArgs) -> Result<StartupFigures, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Other(format!("cannot find the clientele binary to start: {e}")))?;
    // An empty file, so neither a packaged configuration nor the caller's is picked up.
    let config = root.join("empty.toml");
    std::fs::write(&config, b"")
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", config.display())))?;

    let mut runs = Vec::new();
    for run in 1..=args.startups {
        let data_dir = root.join(format!("serve-{run}"));
        init_data_dir(&exe, &config, &data_dir)?;
        progress(&format!(
            "start-up {run} of {}: `clientele serve` to a 200 from /healthz, then {}s idle",
            args.startups, args.idle_seconds
        ));
        runs.push(measure_startup(
            &exe,
            &config,
            &data_dir,
            Duration::from_secs(args.idle_seconds),
        )?);
    }
    Ok(StartupFigures { runs })
}

/// `clientele` with a clean environment: our config file and data folder, nothing inherited.
fn clientele(exe: &Path, config: &Path, data_dir: &Path) -> Command {
    let mut command = Command::new(exe);
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .starts_with(crate::config::ENV_PREFIX)
        {
            command.env_remove(name);
        }
    }
    command
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .env("CLIENTELE_LOG__STDERR", "false")
        .env("CLIENTELE_SERVER__WORKERS", "2")
        .stdin(Stdio::null());
    command
}

fn init_data_dir(exe: &Path, config: &Path, data_dir: &Path) -> Result<(), CliError> {
    let output = clientele(exe, config, data_dir)
        .arg("init")
        .output()
        .map_err(|e| CliError::Other(format!("cannot run {} init: {e}", exe.display())))?;
    if output.status.success() {
        return Ok(());
    }
    Err(CliError::Other(format!(
        "`clientele init` for the start-up run failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// A started server, stopped (killed if need be) when dropped.
#[derive(Debug)]
struct Server {
    child: Child,
}

impl Server {
    /// SIGTERM, then a kill if it has not exited within [`STOP_TIMEOUT`]; returns the time to exit.
    fn stop(&mut self) -> Result<Duration, CliError> {
        let start = Instant::now();
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .map_err(|e| CliError::Other(format!("cannot stop the started server: {e}")))?;
        while start.elapsed() < STOP_TIMEOUT {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(start.elapsed()),
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => {
                    return Err(CliError::Other(format!(
                        "cannot wait for the started server: {e}"
                    )));
                }
            }
        }
        Err(CliError::Other(format!(
            "the started server did not exit within {}s of SIGTERM; it was killed",
            STOP_TIMEOUT.as_secs()
        )))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn measure_startup(
    exe: &Path,
    config: &Path,
    data_dir: &Path,
    idle: Duration,
) -> Result<StartupRun, CliError> {
    let tls = tls_client(&data_dir.join("tls").join("cert.pem"))?;
    let stderr_path = data_dir.join("serve.stderr");
    let stderr = std::fs::File::create(&stderr_path)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", stderr_path.display())))?;
    let failed = |what: String| {
        let said = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        CliError::Other(format!("{what}; the server said: {}", said.trim()))
    };

    let start = Instant::now();
    let child = clientele(exe, config, data_dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| CliError::Other(format!("cannot start {} serve: {e}", exe.display())))?;
    let mut server = Server { child };
    let lines = stdout_lines(&mut server.child)?;

    let port = wait_for_port(&lines, start).map_err(&failed)?;
    let listening = start.elapsed();
    wait_for_health(port, &tls, start).map_err(&failed)?;
    let healthy = start.elapsed();

    std::thread::sleep(idle);
    let idle_rss_kib = resident_kib(server.child.id())?;
    let stop = server.stop()?;
    Ok(StartupRun {
        listening,
        healthy,
        idle_rss_kib,
        stop,
    })
}

/// The child's standard output, line by line, read on a thread so waits can time out.
fn stdout_lines(child: &mut Child) -> Result<Receiver<String>, CliError> {
    let stdout = child.stdout.take().ok_or_else(|| {
        CliError::Other("the started server has no standard output to read".into())
    })?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("bench-serve-stdout".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| CliError::Other(format!("cannot start a reader thread: {e}")))?;
    Ok(rx)
}

fn wait_for_port(lines: &Receiver<String>, start: Instant) -> Result<u16, String> {
    loop {
        let left = START_TIMEOUT.saturating_sub(start.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(port) = serving_port(&line) {
                    return Ok(port);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "the server did not say it was serving within {}s",
                    START_TIMEOUT.as_secs()
                ));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err("the server exited before it was serving".into());
            }
        }
    }
}

/// The port in `Clientele is serving on https://HOST:PORT/`.
fn serving_port(line: &str) -> Option<u16> {
    let rest = line.trim().strip_prefix(SERVING_PREFIX)?;
    let authority = rest.trim_end_matches('/');
    let (_, port) = authority.rsplit_once(':')?;
    port.parse().ok()
}

fn wait_for_health(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    start: Instant,
) -> Result<(), String> {
    let mut last = String::new();
    while start.elapsed() < START_TIMEOUT {
        match healthz_status(port, tls) {
            Ok(200) => return Ok(()),
            Ok(status) => last = format!("/healthz answered {status}"),
            Err(err) => last = err,
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(format!(
        "no 200 from /healthz within {}s (last: {last})",
        START_TIMEOUT.as_secs()
    ))
}

/// A TLS client that trusts only the started server's self-signed certificate.
fn tls_client(cert: &Path) -> Result<Arc<rustls::ClientConfig>, CliError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        CliError::Other(format!(
            "cannot use {} as a trust root: {e}",
            cert.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(cert).map_err(|e| unreadable(&e))? {
        roots
            .add(der.map_err(|e| unreadable(&e))?)
            .map_err(|e| unreadable(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unreadable(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One `GET /healthz` over a fresh TLS connection; the HTTP status.
fn healthz_status(port: u16, tls: &Arc<rustls::ClientConfig>) -> Result<u16, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| format!("socket: {e}"))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| format!("socket: {e}"))?;
    let name = ServerName::try_from("localhost").map_err(|e| format!("server name: {e}"))?;
    let connection =
        rustls::ClientConnection::new(Arc::clone(tls), name).map_err(|e| format!("TLS: {e}"))?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("request: {e}"))?;

    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        // A close without close_notify after a full answer is still an answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(format!("response: {e}")),
    }
    http_status(&response).ok_or_else(|| "the answer was not HTTP".into())
}

/// The status code of an HTTP/1.x response.
fn http_status(response: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(response.get(..response.len().min(64))?).ok()?;
    let mut words = text.split_whitespace();
    words
        .next()
        .filter(|version| version.starts_with("HTTP/1."))?;
    words.next()?.parse().ok()
}

/// `VmRSS` of a process, in KiB.
fn resident_kib(pid: u32) -> Result<u64, CliError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|e| CliError::Other(format!("cannot read {path}: {e}")))?;
    vm_rss_kib(&status).ok_or_else(|| CliError::Other(format!("{path} has no VmRSS line")))
}

fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
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

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn print_row(name: &str, raw: &str, encrypted: &str, ratio: &str, target: &str, result: &str) {
    println!("{name:<36} {raw:>16} {encrypted:>18} {ratio:>8}  {target:<10} {result}");
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
            "raw_batched_per_s": whole(insert.raw_batched_rate()),
            "raw_seconds": round3(insert.raw.as_secs_f64()),
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
            "encrypted_per_s": whole(read.encrypted_rate()),
            "ratio": round3(read.ratio()),
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

// ---------------------------------------------------------------------------------------------
// Arithmetic

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// The median; 0 for no figures.
fn median(figures: &[f64]) -> f64 {
    let mut sorted = figures.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match (
        sorted.len() % 2,
        sorted.get(mid),
        mid.checked_sub(1).and_then(|m| sorted.get(m)),
    ) {
        (1, Some(&middle), _) => middle,
        (0, Some(&high), Some(&low)) => f64::midpoint(low, high),
        _ => 0.0,
    }
}

/// The `per_mille` quantile of sorted durations (nearest rank); zero for none.
fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    let Some(last) = sorted.len().checked_sub(1) else {
        return Duration::ZERO;
    };
    let index = (last * per_mille.min(1000) + 500) / 1000;
    sorted.get(index).copied().unwrap_or_default()
}

fn whole(figure: f64) -> f64 {
    figure.round()
}

fn round3(figure: f64) -> f64 {
    (figure * 1000.0).round() / 1000.0
}

/// `187204.6` as `187,205/s`.
fn per_second(figure: f64) -> String {
    let digits = format!("{figure:.0}");
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3 + 2);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 && digit.is_ascii_digit() {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped.push_str("/s");
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_line_gives_the_port() {
        assert_eq!(
            serving_port("Clientele is serving on https://127.0.0.1:40123/"),
            Some(40123)
        );
        assert_eq!(
            serving_port("Clientele is serving on https://[::1]:8443/\n"),
            Some(8443)
        );
        assert_eq!(serving_port("Created a Clientele store."), None);
    }

    #[test]
    fn status_line_is_read() {
        assert_eq!(
            http_status(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"),
            Some(200)
        );
        assert_eq!(
            http_status(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"),
            Some(503)
        );
        assert_eq!(http_status(b"garbage"), None);
    }

    #[test]
    fn rss_is_read_from_proc_status() {
        let status = "Name:\tclientele\nVmPeak:\t  100 kB\nVmRSS:\t   23456 kB\nThreads:\t5\n";
        assert_eq!(vm_rss_kib(status), Some(23456));
    }

    #[test]
    fn medians_and_percentiles() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < f64::EPSILON);
        assert!(median(&[]).abs() < f64::EPSILON);
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 500), Duration::from_millis(51));
        assert_eq!(percentile(&sorted, 990), Duration::from_millis(99));
        assert_eq!(percentile(&[], 500), Duration::ZERO);
    }

    #[test]
    fn rates_are_grouped_by_thousands() {
        assert_eq!(per_second(187_204.6), "187,205/s");
        assert_eq!(per_second(999.0), "999/s");
        assert_eq!(per_second(1_000_000.0), "1,000,000/s");
    }

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
