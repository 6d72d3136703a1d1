//! `clientele bench audit`: what the audit trail costs and how fast it answers, in one run on
//! one fresh store:
//!
//! 1. business writes with and without an audit entry in the same change set: concurrent
//!    writers committing one record each (as request handlers do), in alternating rounds so
//!    both sides see the same machine; then bulk change sets, for the worst case where nothing
//!    but CPU is spent (target: the entry costs at most 25% of the throughput);
//! 2. the trail filled to `--entries` with a realistic mix (users, stores, customers, outcomes),
//!    with checkpoints signed as the appliance signs them;
//! 3. the compliance page's queries through the search index: several filters, each run many
//!    times, p50 and p99 (target: under 100 ms);
//! 4. export of the whole trail as the verifiable bundle, then offline verification of the
//!    file with the public key (target: both together under 20 s).
//!
//! The store is driven through its real API; the index, export and verifier are the ones the
//! appliance and `clientele audit verify` use.

use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::SplitMix;
use super::{
    CliError, WorkDir, median, millis, per_second, percentile, print_row, progress, rate, round3,
    verdict, whole,
};
use crate::audit::export::{self, Format, Selection};
use crate::audit::index::{AuditIndex, Cursor, Filter};
use crate::audit::verify;
use crate::audit::{Action, Actor, ActorKind, Audit, Event, Outcome};
use crate::clock::{SystemClock, SystemRandom};
use crate::config::{AuditConfig, Config};
use crate::domain::Id;
use crate::domain::account::Role;
use crate::store::{ChangeSet, MasterKeySource, Store, StoreError, StoreOptions, Table};

/// Sizes of the audit benchmark.
#[derive(Debug, Args)]
pub struct AuditBenchArgs {
    /// Entries in the trail for the query, export and verification measures
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1000..))]
    entries: u64,

    /// Concurrent writers in the business-write comparison
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    writers: u64,

    /// Length of each business-write round, in seconds (two rounds per side)
    #[arg(long, value_name = "S", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,

    /// Times each query is run (p50 and p99 are reported)
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    queries: u64,

    /// Folder to work in (a fresh sub-folder is made there and removed at the end)
    /// [default: the system temporary folder]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The business table of the write comparison.
const CUSTOMERS: Table = Table::new("bench_customers");
/// Size of a business record, about one customer.
const VALUE_LEN: usize = 300;
/// Rounds per side of the concurrent-writer comparison.
const ROUNDS: usize = 2;
/// Records per change set, and change sets, of the bulk comparison.
const BULK_SET: u64 = 100;
const BULK_SETS: u64 = 300;
/// Entries per change set while filling the trail.
const FILL_SET: u64 = 1000;
/// Rows per page, as on the compliance page.
const PAGE: usize = crate::web::audit::PAGE_SIZE;

/// Population of the generated trail.
const USERS: u64 = 200;
const STORES: u64 = 50;
const CUSTOMER_COUNT: u64 = 100_000;

/// Targets from the audit issue.
const TARGET_WRITE_RATIO: f64 = 0.75;
const TARGET_QUERY_MS: f64 = 100.0;
const TARGET_EXPORT_VERIFY_S: f64 = 20.0;

pub(super) fn bench_audit(args: &AuditBenchArgs) -> Result<ExitCode, CliError> {
    let random = Arc::new(SystemRandom::new());
    let work = WorkDir::create(args.dir.as_deref(), random.as_ref())?;
    progress(&format!("working in {}", work.path.display()));
    let (store, audit) = open(&work.path.join("store"), random.as_ref())?;
    let mut rng = SplitMix::seeded(random.as_ref())?;

    let writes = compare_writes(&store, args)?;
    let bulk = compare_bulk(&store)?;
    let fill = fill_trail(&audit, args.entries, &mut rng)?;
    let queries = time_queries(&audit, args, &mut rng)?;
    let export = export_and_verify(&audit, &work.path)?;

    let report = Report {
        writes,
        bulk,
        fill,
        queries,
        export,
    };
    print_table(args, &report);
    println!("{}", report_json(args, &report));
    Ok(ExitCode::SUCCESS)
}

fn open(data_dir: &std::path::Path, random: &SystemRandom) -> Result<(Store, Audit), CliError> {
    let config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    let options = StoreOptions::from_config(&config);
    let source = MasterKeySource::File(config.master_key_file());
    Store::init(&options, &source, &SystemClock, random)?;
    let store = Store::open(
        &options,
        &source,
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
    )?;
    let audit = Audit::open(
        &store,
        Arc::new(SystemClock),
        random,
        &AuditConfig::default(),
    )?;
    Ok((store, audit))
}

/// A record of `VALUE_LEN` bytes for customer `n`.
fn record(n: u64) -> Vec<u8> {
    let mut value = format!("{{\"customer\":{n},\"notes\":\"").into_bytes();
    value.resize(VALUE_LEN - 2, b'x');
    value.extend_from_slice(b"\"}");
    value
}

/// A made-up id, distinct for each `(kind, n)`.
fn made_up_id(kind: u8, n: u64) -> Id {
    let mut bytes = [0u8; 10];
    bytes[0] = kind;
    bytes[2..].copy_from_slice(&n.to_be_bytes());
    Id::from_parts(jiff::Timestamp::UNIX_EPOCH, bytes)
}

fn customer_id(n: u64) -> String {
    made_up_id(1, n).to_string()
}

fn store_id(n: u64) -> Id {
    made_up_id(2, n)
}

fn user_actor(n: u64) -> Actor {
    Actor {
        kind: ActorKind::User,
        id: made_up_id(3, n).to_string(),
        name: format!("clerk{n:03}"),
        role: Some(if n.is_multiple_of(10) {
            Role::Manager
        } else {
            Role::Associate
        }),
        address: Some(format!("10.1.{}.{}", n / 250, n % 250 + 1)),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Business writes with and without their entry

#[derive(Debug)]
struct WriteFigures {
    without: Vec<f64>,
    with: Vec<f64>,
}

impl WriteFigures {
    fn without_rate(&self) -> f64 {
        median(&self.without)
    }

    fn with_rate(&self) -> f64 {
        median(&self.with)
    }

    fn ratio(&self) -> f64 {
        self.with_rate() / self.without_rate().max(f64::MIN_POSITIVE)
    }
}

fn compare_writes(store: &Store, args: &AuditBenchArgs) -> Result<WriteFigures, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
    let length = Duration::from_secs(args.seconds);
    let mut figures = WriteFigures {
        without: Vec::new(),
        with: Vec::new(),
    };
    let mut next_key = 0u64;
    for round in 1..=ROUNDS {
        for audited in [false, true] {
            progress(&format!(
                "business writes, round {round} of {ROUNDS}, {} audit entry: {} writers, {}s",
                if audited { "with an" } else { "without an" },
                args.writers,
                args.seconds
            ));
            let (done, elapsed) = runtime.block_on(concurrent_writes(
                store,
                args.writers,
                length,
                next_key,
                audited,
            ))?;
            next_key += 1 << 32;
            let side = if audited {
                &mut figures.with
            } else {
                &mut figures.without
            };
            side.push(rate(done, elapsed));
        }
    }
    Ok(figures)
}

/// `writers` tasks committing one record per change set (and its entry when `audited`) until
/// `length` has passed; returns the acknowledged writes and the time taken.
async fn concurrent_writes(
    store: &Store,
    writers: u64,
    length: Duration,
    first_key: u64,
    audited: bool,
) -> Result<(u64, Duration), CliError> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let store = store.clone();
        tasks.spawn(async move {
            let mut done = 0u64;
            let mut n = first_key + (writer << 24);
            while start.elapsed() < length {
                store.commit(business_write(n, audited)).await?;
                done += 1;
                n += 1;
            }
            Ok::<_, StoreError>(done)
        });
    }
    let mut total = 0;
    while let Some(joined) = tasks.join_next().await {
        total += joined.map_err(|e| {
            CliError::Other(format!("a benchmark writer task stopped unexpectedly: {e}"))
        })??;
    }
    Ok((total, start.elapsed()))
}

/// One customer update, with its audit entry when `audited`.
fn business_write(n: u64, audited: bool) -> ChangeSet {
    let mut set = ChangeSet::new();
    set.put(CUSTOMERS, n.to_be_bytes(), record(n));
    if audited {
        Event::new(Action::CustomerUpdated)
            .by(user_actor(n % USERS))
            .target("customer", customer_id(n % CUSTOMER_COUNT))
            .store(store_id(n % STORES))
            .fields(["email", "phone"])
            .add_to(&mut set);
    }
    set
}

#[derive(Debug)]
struct BulkFigures {
    without: Duration,
    with: Duration,
    writes: u64,
}

impl BulkFigures {
    fn ratio(&self) -> f64 {
        rate(self.writes, self.with) / rate(self.writes, self.without).max(f64::MIN_POSITIVE)
    }
}

/// Change sets of [`BULK_SET`] records, one after the other, with and without their entries.
fn compare_bulk(store: &Store) -> Result<BulkFigures, CliError> {
    let writes = BULK_SET * BULK_SETS;
    let mut times = [Duration::ZERO; 2];
    for (side, audited) in [(0, false), (1, true)] {
        progress(&format!(
            "bulk writes, {} audit entries: {BULK_SETS} change sets of {BULK_SET}",
            if audited { "with" } else { "without" }
        ));
        let first = (1u64 << 40) * (side + 1);
        let start = Instant::now();
        for set_number in 0..BULK_SETS {
            let mut set = ChangeSet::new();
            for i in 0..BULK_SET {
                let n = first + set_number * BULK_SET + i;
                set.put(CUSTOMERS, n.to_be_bytes(), record(n));
                if audited {
                    Event::new(Action::CustomerUpdated)
                        .by(user_actor(n % USERS))
                        .target("customer", customer_id(n % CUSTOMER_COUNT))
                        .fields(["email"])
                        .add_to(&mut set);
                }
            }
            store.commit_blocking(set)?;
        }
        times[side as usize] = start.elapsed();
    }
    Ok(BulkFigures {
        without: times[0],
        with: times[1],
        writes,
    })
}

// ---------------------------------------------------------------------------------------------
// 2. The trail, filled

#[derive(Debug)]
struct FillFigures {
    appended: u64,
    elapsed: Duration,
}

/// Appends entries until the trail holds `entries`, signing checkpoints as the appliance does.
fn fill_trail(audit: &Audit, entries: u64, rng: &mut SplitMix) -> Result<FillFigures, CliError> {
    let start_seq = audit.head()?.seq;
    let missing = entries.saturating_sub(start_seq);
    progress(&format!(
        "filling the trail from {start_seq} to {entries} entries"
    ));
    let start = Instant::now();
    let mut appended = 0;
    while appended < missing {
        let count = FILL_SET.min(missing - appended);
        let mut set = ChangeSet::new();
        for _ in 0..count {
            generated_event(rng).add_to(&mut set);
        }
        audit.store().commit_blocking(set)?;
        audit.checkpoint_if_due()?;
        appended += count;
        if appended % 100_000 < FILL_SET {
            progress(&format!("  {} entries", start_seq + appended));
        }
    }
    Ok(FillFigures {
        appended,
        elapsed: start.elapsed(),
    })
}

/// One entry of a retail day: mostly staff reading and changing customers in their store.
fn generated_event(rng: &mut SplitMix) -> Event {
    let user = rng.below(USERS);
    let action = match rng.below(100) {
        0..40 => Action::CustomerViewed,
        40..55 => Action::CustomerSearched,
        55..70 => Action::CustomerUpdated,
        70..80 => Action::SignIn,
        80..90 => Action::SaleIngested,
        _ => Action::ALL[rng.below(Action::ALL.len() as u64) as usize],
    };
    let mut event = Event::new(action)
        .by(user_actor(user))
        .store(store_id(user % STORES));
    if action.code().starts_with("customer.") || action == Action::SaleIngested {
        event = event.target("customer", customer_id(rng.below(CUSTOMER_COUNT)));
    }
    match rng.below(100) {
        0..2 => event.denied("outside the user's stores"),
        2..6 => event.failed("invalid input"),
        _ => event,
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Queries through the index

#[derive(Debug)]
struct QueryFigures {
    build: Duration,
    rows: usize,
    runs: Vec<QueryRun>,
}

#[derive(Debug)]
struct QueryRun {
    name: String,
    /// Sorted.
    times: Vec<Duration>,
    /// Rows on the page, and the capped count.
    rows: usize,
    count: u64,
}

impl QueryRun {
    fn p50_ms(&self) -> f64 {
        millis(percentile(&self.times, 500))
    }

    fn p99_ms(&self) -> f64 {
        millis(percentile(&self.times, 990))
    }
}

#[allow(clippy::too_many_lines)] // one timed step after another, each with its label
fn time_queries(
    audit: &Audit,
    args: &AuditBenchArgs,
    rng: &mut SplitMix,
) -> Result<QueryFigures, CliError> {
    progress("building the search index");
    let index = AuditIndex::new(audit.clone());
    let start = Instant::now();
    index.build()?;
    let build = start.elapsed();
    let rows = index.len();

    let head = audit.head()?.seq;
    let time_of = |seq: u64| -> Result<Option<jiff::Timestamp>, CliError> {
        Ok(audit.entry(seq)?.and_then(|e| e.timestamp()))
    };
    let middle = time_of(head / 2)?;
    let later = time_of(head / 2 + head / 10)?;
    let login = format!("clerk{:03}", rng.below(USERS));
    let customer = customer_id(rng.below(CUSTOMER_COUNT));
    let cases: Vec<(String, Filter, Cursor)> = vec![
        (
            "newest page, no filter".into(),
            Filter::default(),
            Cursor::Newest,
        ),
        (
            "deep page (half-way), no filter".into(),
            Filter::default(),
            Cursor::Before(head / 2),
        ),
        (
            "action customer.viewed".into(),
            Filter {
                action: Some(Action::CustomerViewed),
                ..Filter::default()
            },
            Cursor::Newest,
        ),
        (
            "one actor by login".into(),
            Filter {
                actor: Some(login),
                ..Filter::default()
            },
            Cursor::Newest,
        ),
        (
            "outcome denied in one store".into(),
            Filter {
                outcome: Some(Outcome::Denied),
                store: Some(store_id(rng.below(STORES)).to_string()),
                ..Filter::default()
            },
            Cursor::Newest,
        ),
        (
            "one customer (target type + id)".into(),
            Filter {
                target_type: Some("customer".into()),
                target_id: Some(customer),
                ..Filter::default()
            },
            Cursor::Newest,
        ),
        (
            "sign-ins in a 10% time window".into(),
            Filter {
                from: middle,
                until: later,
                action: Some(Action::SignIn),
                ..Filter::default()
            },
            Cursor::Newest,
        ),
        (
            "an action never recorded".into(),
            Filter {
                action: Some(Action::StoreMigrated),
                target_type: Some("nothing".into()),
                ..Filter::default()
            },
            Cursor::Newest,
        ),
    ];

    let mut runs = Vec::new();
    for (name, filter, cursor) in cases {
        progress(&format!("query: {name}, {} times", args.queries));
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..args.queries {
            let start = Instant::now();
            let page = index.search(&filter, cursor, PAGE)?;
            times.push(start.elapsed());
            last = Some(page);
        }
        times.sort_unstable();
        let (rows, count) = last.map_or((0, 0), |p| {
            (p.entries.len(), p.count.map_or(0, |c| c.value))
        });
        runs.push(QueryRun {
            name,
            times,
            rows,
            count,
        });
    }
    Ok(QueryFigures { build, rows, runs })
}

// ---------------------------------------------------------------------------------------------
// 4. Export and offline verification

#[derive(Debug)]
struct ExportFigures {
    export: Duration,
    verify: Duration,
    bytes: u64,
    entries: u64,
    checkpoints: u64,
}

impl ExportFigures {
    fn total_s(&self) -> f64 {
        (self.export + self.verify).as_secs_f64()
    }
}

fn export_and_verify(audit: &Audit, work: &std::path::Path) -> Result<ExportFigures, CliError> {
    let path = work.join("audit-export.jsonl");
    let failed = |what: &str, err: &dyn std::fmt::Display| {
        CliError::Other(format!("{what} {}: {err}", path.display()))
    };
    progress("exporting the whole trail as the verifiable bundle");
    let start = Instant::now();
    let file = std::fs::File::create(&path).map_err(|e| failed("cannot create", &e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let summary = export::export(
        audit,
        &Selection::all(),
        Format::Jsonl,
        &mut out,
        &mut |_, _| {},
    )
    .map_err(|e| failed("cannot export to", &e))?;
    out.flush().map_err(|e| failed("cannot write", &e))?;
    drop(out);
    let export = start.elapsed();

    progress("verifying the bundle offline with the public key");
    let start = Instant::now();
    let file = std::fs::File::open(&path).map_err(|e| failed("cannot open", &e))?;
    let report = verify::verify(
        BufReader::with_capacity(1 << 20, file),
        Some(&audit.public_key()),
        None,
    )
    .map_err(|e| failed("the export does not verify:", &e))?;
    let verify = start.elapsed();
    if report.entries != summary.entries {
        return Err(CliError::Other(format!(
            "the verifier read {} entries where the export wrote {}; the figures would mean \
             nothing, so the benchmark stopped",
            report.entries, summary.entries
        )));
    }
    Ok(ExportFigures {
        export,
        verify,
        bytes: summary.bytes,
        entries: summary.entries,
        checkpoints: report.checkpoints,
    })
}

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Debug)]
struct Report {
    writes: WriteFigures,
    bulk: BulkFigures,
    fill: FillFigures,
    queries: QueryFigures,
    export: ExportFigures,
}

impl Report {
    fn worst_p99_ms(&self) -> f64 {
        self.queries
            .runs
            .iter()
            .map(QueryRun::p99_ms)
            .fold(0.0, f64::max)
    }
}

fn print_table(args: &AuditBenchArgs, report: &Report) {
    let Report {
        writes,
        bulk,
        fill,
        queries,
        export,
    } = report;
    println!(
        "Clientele audit benchmark: {} entries, {} writers for {ROUNDS}x{}s per side, {} runs \
         per query, pages of {PAGE}",
        args.entries, args.writers, args.seconds, args.queries
    );
    println!();
    print_row(
        "measure",
        "without entry",
        "with entry",
        "ratio",
        "target",
        "result",
    );
    print_row(
        &format!("business writes, {} writers", args.writers),
        &per_second(writes.without_rate()),
        &per_second(writes.with_rate()),
        &format!("{:.2}", writes.ratio()),
        ">= 0.75",
        verdict(writes.ratio() >= TARGET_WRITE_RATIO),
    );
    print_row(
        &format!("  bulk, sets of {BULK_SET} (CPU only)"),
        &per_second(rate(bulk.writes, bulk.without)),
        &per_second(rate(bulk.writes, bulk.with)),
        &format!("{:.2}", bulk.ratio()),
        "",
        "(worst case)",
    );
    println!();
    print_row(
        "query through the index",
        "p50",
        "p99",
        "",
        "target",
        "result",
    );
    for run in &queries.runs {
        print_row(
            &run.name,
            &format!("{:.2} ms", run.p50_ms()),
            &format!("{:.2} ms", run.p99_ms()),
            "",
            "< 100 ms",
            verdict(run.p99_ms() < TARGET_QUERY_MS),
        );
    }
    println!();
    print_row(
        "export + offline verify",
        &format!("{:.1} s", export.export.as_secs_f64()),
        &format!("{:.1} s", export.verify.as_secs_f64()),
        &format!("{:.1} s", export.total_s()),
        "< 20 s",
        verdict(export.total_s() < TARGET_EXPORT_VERIFY_S),
    );
    println!();
    println!(
        "trail filled with {} entries in {:.1} s ({}); index of {} rows built in {:.2} s",
        fill.appended,
        fill.elapsed.as_secs_f64(),
        per_second(rate(fill.appended, fill.elapsed)),
        queries.rows,
        queries.build.as_secs_f64()
    );
    println!(
        "bundle: {} entries, {} checkpoints, {:.0} MB",
        export.entries,
        export.checkpoints,
        export.bytes as f64 / 1e6
    );
}

fn report_json(args: &AuditBenchArgs, report: &Report) -> serde_json::Value {
    let Report {
        writes,
        bulk,
        fill,
        queries,
        export,
    } = report;
    let runs: Vec<serde_json::Value> = queries
        .runs
        .iter()
        .map(|run| {
            serde_json::json!({
                "filter": run.name,
                "p50_ms": round3(run.p50_ms()),
                "p99_ms": round3(run.p99_ms()),
                "page_rows": run.rows,
                "count": run.count,
            })
        })
        .collect();
    serde_json::json!({
        "bench": "audit",
        "version": env!("CARGO_PKG_VERSION"),
        "entries": args.entries,
        "writes": {
            "writers": args.writers,
            "round_seconds": args.seconds,
            "rounds": ROUNDS,
            "without_per_s": whole(writes.without_rate()),
            "with_per_s": whole(writes.with_rate()),
            "ratio": round3(writes.ratio()),
            "bulk_set": BULK_SET,
            "bulk_without_per_s": whole(rate(bulk.writes, bulk.without)),
            "bulk_with_per_s": whole(rate(bulk.writes, bulk.with)),
            "bulk_ratio": round3(bulk.ratio()),
            "target_ratio": TARGET_WRITE_RATIO,
            "met": writes.ratio() >= TARGET_WRITE_RATIO,
        },
        "fill": {
            "appended": fill.appended,
            "seconds": round3(fill.elapsed.as_secs_f64()),
        },
        "queries": {
            "index_rows": queries.rows,
            "index_build_seconds": round3(queries.build.as_secs_f64()),
            "runs_each": args.queries,
            "page": PAGE,
            "filters": runs,
            "worst_p99_ms": round3(report.worst_p99_ms()),
            "target_ms": TARGET_QUERY_MS,
            "met": report.worst_p99_ms() < TARGET_QUERY_MS,
        },
        "export_verify": {
            "entries": export.entries,
            "checkpoints": export.checkpoints,
            "bytes": export.bytes,
            "export_seconds": round3(export.export.as_secs_f64()),
            "verify_seconds": round3(export.verify.as_secs_f64()),
            "total_seconds": round3(export.total_s()),
            "target_seconds": TARGET_EXPORT_VERIFY_S,
            "met": export.total_s() < TARGET_EXPORT_VERIFY_S,
        },
    })
}
