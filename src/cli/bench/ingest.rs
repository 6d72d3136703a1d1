//! `clientele bench ingest`: how fast register sales go in, and how fast availability answers
//! while they do, on one fresh store:
//!
//! 1. `POSLog` files of `--tx-per-file` transactions with `--lines` lines each, read, parsed and
//!    ingested one after the other as the drop folder does (each file one change set);
//! 2. JSON batches of `--batch` transactions parsed and ingested by `--writers` concurrent
//!    callers, as the ingest API does after its guard (in-process: no TLS or HTTP);
//! 3. `--single-files` `POSLog` files of one transaction each, one after the other (files/s);
//! 4. `--pushes` single sales handed to the ingest one at a time, each timed until the
//!    availability read shows it (sale to availability: p50 and p99);
//! 5. availability reads (the running total of one SKU at one store, as the availability API
//!    reads it) timed during the JSON phase and again on an idle store: p50 and p99.
//!
//! A share of the transactions carries a loyalty id, so customers are resolved, created and
//! their figures updated as in real traffic. The services are the appliance's own.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;

use super::SplitMix;
use super::{
    CliError, WorkDir, fill_catalog, fresh_store, ingest_on, millis, per_second, percentile,
    print_row, progress, rate, round3, runtime,
};
use crate::audit::Actor;
use crate::clock::{Random, SystemRandom};
use crate::domain::sale::{
    CustomerRefs, SaleLine, SaleTransaction, Tender, TransactionKey, TransactionKind,
};
use crate::inventory::ingest::Ingest;

/// Sizes of the ingest benchmark.
#[derive(Debug, Args)]
pub struct IngestBenchArgs {
    /// `POSLog` files to ingest
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    files: u64,

    /// Transactions per `POSLog` file
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    tx_per_file: u64,

    /// Item lines per transaction
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    lines: u64,

    /// JSON batches per writer
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batches: u64,

    /// Transactions per JSON batch
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch: u64,

    /// Concurrent JSON writers
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    writers: u64,

    /// `POSLog` files of one transaction each, ingested one after the other (files per second)
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    single_files: u64,

    /// Single sales pushed one at a time, each timed until availability reflects it
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pushes: u64,

    /// Folder to work in (a fresh sub-folder is made there and removed at the end)
    /// [default: the system temporary folder]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Catalog and population of the generated traffic.
const SKUS: u64 = 500;
const STORES: u64 = 10;
const REGISTERS: u64 = 5;
const LOYALTY_IDS: u64 = 2000;
/// Percent of transactions with a loyalty id.
const LOYALTY_PERCENT: u64 = 30;
/// Availability reads on the idle store.
const IDLE_READS: usize = 5000;

pub(super) fn bench_ingest(args: &IngestBenchArgs) -> Result<ExitCode, CliError> {
    let random = Arc::new(SystemRandom::new());
    let work = WorkDir::create(args.dir.as_deref(), random.as_ref())?;
    progress(&format!("working in {}", work.path.display()));
    let seed = {
        let mut bytes = [0u8; 8];
        random
            .fill(&mut bytes)
            .map_err(|e| CliError::Other(format!("no randomness: {e}")))?;
        u64::from_le_bytes(bytes) | 1
    };
    let report = runtime()?.block_on(run(args, &work.path, seed))?;
    print_table(args, &report);
    println!("{}", report_json(args, &report));
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug)]
struct Report {
    catalog: Duration,
    poslog_tx: u64,
    poslog: Duration,
    poslog_bytes: u64,
    json_tx: u64,
    json: Duration,
    busy_reads: Vec<Duration>,
    idle_reads: Vec<Duration>,
    single_files: u64,
    single: Duration,
    /// From handing a sale to the ingest until the availability read shows it, sorted.
    sale_to_availability: Vec<Duration>,
}

async fn run(args: &IngestBenchArgs, dir: &Path, seed: u64) -> Result<Report, CliError> {
    let ingest = open(&dir.join("store"))?;
    let mut rng = SplitMix::new(seed);

    progress(&format!("filling the catalog with {SKUS} products"));
    let started = Instant::now();
    fill_catalog(&ingest, SKUS, sku).await?;
    let catalog = started.elapsed();

    progress(&format!(
        "writing {} POSLog files of {} transactions",
        args.files, args.tx_per_file
    ));
    let mut sequence = 0u64;
    let mut files = Vec::new();
    let mut poslog_bytes = 0;
    for n in 0..args.files {
        let txs: Vec<SaleTransaction> = (0..args.tx_per_file)
            .map(|_| {
                sequence += 1;
                transaction(&mut rng, sequence, args.lines)
            })
            .collect();
        let path = dir.join(format!("day-{n}.xml"));
        let text = poslog(&txs);
        poslog_bytes += text.len() as u64;
        std::fs::write(&path, text)
            .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))?;
        files.push(path);
    }
    progress("ingesting the POSLog files");
    let started = Instant::now();
    let mut poslog_tx = 0;
    for path in &files {
        let report = crate::sync::inbox::import_file(&ingest, path, "EUR", Actor::system("bench"))
            .await
            .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
        poslog_tx += report.accepted as u64;
    }
    let poslog = started.elapsed();

    progress(&format!(
        "{} writers sending {} JSON batches of {} transactions",
        args.writers, args.batches, args.batch
    ));
    let mut bodies: Vec<Vec<Vec<u8>>> = Vec::new();
    for _ in 0..args.writers {
        let mut mine = Vec::new();
        for _ in 0..args.batches {
            let txs: Vec<SaleTransaction> = (0..args.batch)
                .map(|_| {
                    sequence += 1;
                    transaction(&mut rng, sequence, args.lines)
                })
                .collect();
            mine.push(
                serde_json::to_vec(&txs)
                    .map_err(|e| CliError::Other(format!("cannot encode a batch: {e}")))?,
            );
        }
        bodies.push(mine);
    }
    let (json_tx, json, busy_reads) = json_phase(&ingest, bodies, seed).await?;

    let single = single_files_phase(&ingest, dir, &mut rng, &mut sequence, args).await?;

    progress(&format!(
        "{} single sales, each until availability shows it",
        args.pushes
    ));
    let sale_to_availability = sale_to_availability(&ingest, &mut rng, &mut sequence, args).await?;

    progress("availability on the idle store");
    let idle_reads = read_availability(
        ingest.clone(),
        SplitMix::new(seed.rotate_left(29) | 1),
        Arc::new(AtomicBool::new(false)),
        IDLE_READS,
    )
    .await?;
    Ok(Report {
        catalog,
        poslog_tx,
        poslog,
        poslog_bytes,
        json_tx,
        json,
        busy_reads,
        idle_reads,
        single_files: args.single_files,
        single,
        sale_to_availability,
    })
}

/// Ingests `--single-files` `POSLog` files of one transaction each, one after the other.
async fn single_files_phase(
    ingest: &Ingest,
    dir: &Path,
    rng: &mut SplitMix,
    sequence: &mut u64,
    args: &IngestBenchArgs,
) -> Result<Duration, CliError> {
    progress(&format!(
        "ingesting {} POSLog files of one transaction",
        args.single_files
    ));
    let mut single_paths = Vec::new();
    for n in 0..args.single_files {
        *sequence += 1;
        let path = dir.join(format!("one-{n}.xml"));
        std::fs::write(
            &path,
            self::poslog(&[transaction(rng, *sequence, args.lines)]),
        )
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))?;
        single_paths.push(path);
    }
    let started = Instant::now();
    for path in &single_paths {
        crate::sync::inbox::import_file(ingest, path, "EUR", Actor::system("bench"))
            .await
            .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
    }
    Ok(started.elapsed())
}

/// Pushes single sales one at a time; each is timed from the hand-over to the ingest (what the
/// API handler does once the body is parsed) until the availability read of its first line's
/// SKU and store shows it. Returns the sorted times.
async fn sale_to_availability(
    ingest: &Ingest,
    rng: &mut SplitMix,
    sequence: &mut u64,
    args: &IngestBenchArgs,
) -> Result<Vec<Duration>, CliError> {
    let mut times = Vec::new();
    for _ in 0..args.pushes {
        *sequence += 1;
        let mut sale = transaction(rng, *sequence, args.lines);
        sale.lines.truncate(1);
        let Some(line) = sale.lines.first().cloned() else {
            continue;
        };
        sale.tenders = Vec::new();
        sale.total = None;
        let before = ingest
            .ledger()
            .level(&line.sku, &sale.key.store)
            .map_err(|e| CliError::Other(e.to_string()))?
            .on_hand_milli;
        let store = sale.key.store.clone();
        let started = Instant::now();
        ingest
            .ingest(vec![sale], Actor::system("bench"), "api", None)
            .await
            .map_err(|e| CliError::Other(e.to_string()))?;
        loop {
            let level = ingest
                .ledger()
                .level(&line.sku, &store)
                .map_err(|e| CliError::Other(e.to_string()))?;
            if level.on_hand_milli == before - line.quantity_milli {
                break;
            }
            tokio::task::yield_now().await;
        }
        times.push(started.elapsed());
    }
    times.sort_unstable();
    Ok(times)
}

/// Every writer sends its batches; availability is read meanwhile. Returns the transactions
/// accepted, the time taken and the sorted read times.
async fn json_phase(
    ingest: &Ingest,
    bodies: Vec<Vec<Vec<u8>>>,
    seed: u64,
) -> Result<(u64, Duration, Vec<Duration>), CliError> {
    let done = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_availability(
        ingest.clone(),
        SplitMix::new(seed.rotate_left(17) | 1),
        Arc::clone(&done),
        usize::MAX,
    ));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mine in bodies {
        let ingest = ingest.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            for body in mine {
                let txs: Vec<SaleTransaction> = serde_json::from_slice(&body)
                    .map_err(|e| format!("cannot decode a batch: {e}"))?;
                let report = ingest
                    .ingest(txs, Actor::system("bench"), "api", None)
                    .await
                    .map_err(|e| e.to_string())?;
                accepted += report.accepted as u64;
            }
            Ok::<u64, String>(accepted)
        }));
    }
    let mut json_tx = 0;
    for task in tasks {
        json_tx += task
            .await
            .map_err(|e| CliError::Other(format!("a writer stopped: {e}")))?
            .map_err(CliError::Other)?;
    }
    let json = started.elapsed();
    done.store(true, Ordering::Release);
    let busy_reads = reader
        .await
        .map_err(|e| CliError::Other(format!("the reader stopped: {e}")))??;
    Ok((json_tx, json, busy_reads))
}

fn open(data_dir: &Path) -> Result<Ingest, CliError> {
    Ok(ingest_on(&fresh_store(data_dir)?))
}

/// Times availability reads until `done` (or `count` reads).
async fn read_availability(
    ingest: Ingest,
    mut rng: SplitMix,
    done: Arc<AtomicBool>,
    count: usize,
) -> Result<Vec<Duration>, CliError> {
    let mut times = Vec::new();
    while times.len() < count && !done.load(Ordering::Acquire) {
        let (sku, store) = (sku(rng.below(SKUS)), store(rng.below(STORES)));
        let started = Instant::now();
        let level = ingest
            .ledger()
            .level(&sku, &store)
            .map_err(|e| CliError::Other(e.to_string()))?;
        std::hint::black_box(level.available_milli());
        times.push(started.elapsed());
        if count == usize::MAX {
            // Leave the cores to the writers between reads, as a client would.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    times.sort_unstable();
    Ok(times)
}

fn sku(n: u64) -> String {
    format!("BENCH-{n:05}")
}

fn store(n: u64) -> String {
    format!("S{:03}", n + 1)
}

/// A random sale.
fn transaction(rng: &mut SplitMix, sequence: u64, lines: u64) -> SaleTransaction {
    let mut sale_lines = Vec::new();
    for n in 0..lines {
        let weighed = rng.below(10) == 0;
        let quantity_milli = if weighed {
            100 + rng.below(2000).cast_signed()
        } else {
            1000 * (1 + rng.below(3)).cast_signed()
        };
        let unit_price = 100 + rng.below(5000).cast_signed();
        sale_lines.push(SaleLine {
            line_no: n as u32 + 1,
            sku: sku(rng.below(SKUS)),
            gtin: None,
            description: format!("Item {n}"),
            quantity_milli,
            unit_price,
            extended: unit_price * quantity_milli / 1000,
            discount: 0,
            discount_codes: Vec::new(),
            returned: false,
            voided: false,
        });
    }
    let total: i64 = sale_lines.iter().map(|l| l.extended).sum();
    let loyalty =
        (rng.below(100) < LOYALTY_PERCENT).then(|| format!("BENCH-LOY-{}", rng.below(LOYALTY_IDS)));
    SaleTransaction {
        key: TransactionKey {
            store: store(rng.below(STORES)),
            register: (1 + rng.below(REGISTERS)).to_string(),
            business_day: jiff::civil::date(2026, 11, 27),
            sequence,
        },
        kind: TransactionKind::Sale,
        currency: "EUR".into(),
        operator: Some("77".into()),
        started_at: None,
        ended_at: None,
        lines: sale_lines,
        tenders: vec![Tender {
            kind: "Cash".into(),
            amount: total,
            change: 0,
            card_masked: None,
        }],
        total: Some(total),
        customer: CustomerRefs {
            loyalty_id: loyalty,
            email: None,
            external_id: None,
        },
        extensions: Vec::new(),
    }
}

fn decimal(value: i64, digits: u32) -> String {
    let scale = 10i64.pow(digits);
    format!(
        "{}.{:0width$}",
        value / scale,
        value % scale,
        width = digits as usize
    )
}

/// The transactions as a `POSLog` document, as a register would write it.
fn poslog(txs: &[SaleTransaction]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<POSLog \
         xmlns=\"http://www.nrf-arts.org/IXRetail/namespace/\" xmlns:acme=\"urn:acme:pos\">\n",
    );
    for t in txs {
        let _ = write!(
            out,
            "<Transaction><RetailStoreID>{}</RetailStoreID><WorkstationID>{}</WorkstationID>\
             <SequenceNumber>{}</SequenceNumber><BusinessDayDate>{}</BusinessDayDate>\
             <OperatorID>77</OperatorID><CurrencyCode>EUR</CurrencyCode>\
             <RetailTransaction Version=\"2.1\">",
            t.key.store, t.key.register, t.key.sequence, t.key.business_day
        );
        for l in &t.lines {
            let _ = write!(
                out,
                "<LineItem><SequenceNumber>{}</SequenceNumber><Sale ItemType=\"Stock\">\
                 <ItemID>{}</ItemID><Description>{}</Description>\
                 <RegularSalesUnitPrice>{}</RegularSalesUnitPrice>\
                 <ExtendedAmount>{}</ExtendedAmount><Quantity>{}</Quantity></Sale></LineItem>",
                l.line_no,
                l.sku,
                l.description,
                decimal(l.unit_price, 2),
                decimal(l.extended, 2),
                decimal(l.quantity_milli, 3)
            );
        }
        let total = decimal(t.total.unwrap_or_default(), 2);
        let _ = write!(
            out,
            "<LineItem><SequenceNumber>99</SequenceNumber><Tender TenderType=\"Cash\" \
             TypeCode=\"Sale\"><Amount>{total}</Amount></Tender></LineItem>\
             <Total TotalType=\"TransactionGrandAmount\">{total}</Total></RetailTransaction>"
        );
        if let Some(loyalty) = &t.customer.loyalty_id {
            let _ = write!(out, "<acme:LoyaltyID>{loyalty}</acme:LoyaltyID>");
        }
        out.push_str("</Transaction>\n");
    }
    out.push_str("</POSLog>\n");
    out
}

fn print_table(args: &IngestBenchArgs, r: &Report) {
    println!(
        "Clientele ingest benchmark: {} POSLog files of {} transactions x {} lines; {} writers x \
         {} JSON batches of {}; {SKUS} SKUs, {STORES} stores, {LOYALTY_PERCENT}% loyalty",
        args.files, args.tx_per_file, args.lines, args.writers, args.batches, args.batch
    );
    println!();
    print_row("measure", "figure", "detail", "", "", "");
    print_row(
        "POSLog files, transactions",
        &per_second(rate(r.poslog_tx, r.poslog)),
        &format!("{} tx in {:.1} s", r.poslog_tx, r.poslog.as_secs_f64()),
        "",
        "",
        "",
    );
    print_row(
        "POSLog files, MB read and parsed",
        &format!(
            "{:.1} MB/s",
            r.poslog_bytes as f64 / 1e6 / r.poslog.as_secs_f64()
        ),
        &format!("{:.1} MB", r.poslog_bytes as f64 / 1e6),
        "",
        "",
        "",
    );
    print_row(
        "JSON batches, transactions",
        &per_second(rate(r.json_tx, r.json)),
        &format!("{} tx in {:.1} s", r.json_tx, r.json.as_secs_f64()),
        "",
        "",
        "",
    );
    for (name, reads) in [
        ("availability during JSON ingest", &r.busy_reads),
        ("availability, idle", &r.idle_reads),
    ] {
        print_row(
            name,
            &format!("p99 {:.3} ms", millis(percentile(reads, 990))),
            &format!(
                "p50 {:.3} ms, {} reads",
                millis(percentile(reads, 500)),
                reads.len()
            ),
            "",
            "",
            "",
        );
    }
    print_row(
        "POSLog files of one transaction",
        &format!("{:.0} files/s", rate(r.single_files, r.single)),
        &format!(
            "{} files in {:.1} s",
            r.single_files,
            r.single.as_secs_f64()
        ),
        "",
        "",
        "",
    );
    print_row(
        "sale to availability",
        &format!(
            "p99 {:.3} ms",
            millis(percentile(&r.sale_to_availability, 990))
        ),
        &format!(
            "p50 {:.3} ms, {} sales",
            millis(percentile(&r.sale_to_availability, 500)),
            r.sale_to_availability.len()
        ),
        "",
        "",
        "",
    );
    print_row(
        "catalog fill (products)",
        &per_second(rate(SKUS, r.catalog)),
        &format!("{SKUS} in {:.1} s", r.catalog.as_secs_f64()),
        "",
        "",
        "",
    );
}

fn report_json(args: &IngestBenchArgs, r: &Report) -> serde_json::Value {
    serde_json::json!({
        "bench": "ingest",
        "files": args.files,
        "tx_per_file": args.tx_per_file,
        "lines": args.lines,
        "writers": args.writers,
        "batches": args.batches,
        "batch": args.batch,
        "poslog_tx": r.poslog_tx,
        "poslog_tx_per_s": round3(rate(r.poslog_tx, r.poslog)),
        "poslog_seconds": round3(r.poslog.as_secs_f64()),
        "json_tx": r.json_tx,
        "json_tx_per_s": round3(rate(r.json_tx, r.json)),
        "json_seconds": round3(r.json.as_secs_f64()),
        "availability_busy_p50_ms": round3(millis(percentile(&r.busy_reads, 500))),
        "availability_busy_p99_ms": round3(millis(percentile(&r.busy_reads, 990))),
        "availability_busy_reads": r.busy_reads.len(),
        "availability_idle_p50_ms": round3(millis(percentile(&r.idle_reads, 500))),
        "availability_idle_p99_ms": round3(millis(percentile(&r.idle_reads, 990))),
        "catalog_products_per_s": round3(rate(SKUS, r.catalog)),
        "single_files": r.single_files,
        "single_files_per_s": round3(rate(r.single_files, r.single)),
        "sale_to_availability_p50_ms": round3(millis(percentile(&r.sale_to_availability, 500))),
        "sale_to_availability_p99_ms": round3(millis(percentile(&r.sale_to_availability, 990))),
    })
}
