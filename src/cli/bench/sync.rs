//! `clientele bench sync`: the `POSLog` folder connector as the supervisor runs it, on one
//! fresh store: files are written into a drop folder (`NAME.xml.part`, then renamed), looked
//! at once (as the previous scheduled run would have), then one timed run reads, masks,
//! parses, imports, keeps (sealed) and removes them, each batch acknowledged only once it is
//! durable. Two shapes, each over `--rounds` rounds on new transactions, median reported:
//!
//! 1. many files of one transaction each: files per second;
//! 2. files of `--tx-per-file` transactions: transactions per second.
//!
//! Every transaction has `--lines` item lines from a catalog of 200 products, and every tenth
//! carries a loyalty id, so customers are resolved and their figures updated as in real
//! traffic.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::{
    CliError, WorkDir, fill_catalog, fresh_store, ingest_on, median, per_second, print_row,
    progress, rate, round3, runtime, verdict,
};
use crate::clock::{Random, SystemClock, SystemRandom};
use crate::inventory::ingest::Ingest;
use crate::sync::held::Held;
use crate::sync::inbox::{Folder, Looks};

/// Sizes of the sync benchmark.
#[derive(Debug, Args)]
pub struct SyncBenchArgs {
    /// One-transaction files per round
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    small_files: u64,

    /// Large files per round
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    large_files: u64,

    /// Transactions per large file
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    tx_per_file: u64,

    /// Item lines per transaction
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    lines: u64,

    /// Rounds of each shape (the median is reported)
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: u64,

    /// Parent folder of the benchmark's working folder (default: the system's temporary
    /// folder); it is removed at the end
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
}

/// Products in the catalog.
const SKUS: u64 = 200;

/// Targets of the issue: one-transaction files per second, transactions per second.
const FILES_TARGET: f64 = 1000.0;
const TX_TARGET: f64 = 3000.0;

pub(super) fn bench_sync(args: &SyncBenchArgs) -> Result<ExitCode, CliError> {
    let random = Arc::new(SystemRandom::new());
    let work = WorkDir::create(args.dir.as_deref(), random.as_ref())?;
    progress(&format!("working in {}", work.path.display()));
    let report = runtime()?.block_on(run(args, &work.path))?;
    print_table(args, &report);
    println!("{}", report_json(args, &report));
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Default)]
struct Report {
    /// Per round: seconds for the small files, and for the large files.
    small: Vec<Duration>,
    large: Vec<Duration>,
    small_bytes: u64,
    large_bytes: u64,
}

struct Services {
    ingest: Ingest,
    held: Held,
}

fn open(data_dir: &Path) -> Result<Services, CliError> {
    let store = fresh_store(data_dir)?;
    Ok(Services {
        ingest: ingest_on(&store),
        held: Held::new(
            store,
            Arc::new(SystemClock),
            Arc::new(SystemRandom::new()) as Arc<dyn Random>,
        ),
    })
}

async fn run(args: &SyncBenchArgs, dir: &Path) -> Result<Report, CliError> {
    let services = open(&dir.join("store"))?;
    progress(&format!("filling a catalog of {SKUS} products"));
    fill_catalog(&services.ingest, SKUS, |n| format!("SKU-{n:05}")).await?;
    let folder = dir.join("drop");
    std::fs::create_dir_all(&folder).map_err(|e| io_error(&e))?;
    let mut report = Report::default();
    let mut sequence = 0u64;
    for round in 0..args.rounds {
        progress(&format!(
            "round {}: {} one-transaction files",
            round + 1,
            args.small_files
        ));
        let (elapsed, bytes) = timed_run(
            &services,
            &folder,
            args.small_files,
            1,
            args.lines,
            &mut sequence,
        )
        .await?;
        report.small.push(elapsed);
        report.small_bytes = bytes;
        progress(&format!(
            "round {}: {} files of {} transactions",
            round + 1,
            args.large_files,
            args.tx_per_file
        ));
        let (elapsed, bytes) = timed_run(
            &services,
            &folder,
            args.large_files,
            args.tx_per_file,
            args.lines,
            &mut sequence,
        )
        .await?;
        report.large.push(elapsed);
        report.large_bytes = bytes;
    }
    Ok(report)
}

/// Drops `files` files of `per_file` transactions, lets the connector look once, then times
/// the run that takes them all. Returns the time and the bytes written.
async fn timed_run(
    services: &Services,
    folder: &Path,
    files: u64,
    per_file: u64,
    lines: u64,
    sequence: &mut u64,
) -> Result<(Duration, u64), CliError> {
    let mut bytes = 0u64;
    for file in 0..files {
        let mut text = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<POSLog \
             xmlns=\"http://www.nrf-arts.org/IXRetail/namespace/\" xmlns:acme=\"urn:acme:pos\">\n",
        );
        for _ in 0..per_file {
            *sequence += 1;
            transaction(&mut text, *sequence, lines);
        }
        text.push_str("</POSLog>\n");
        let name = format!("bench-{:09}.xml", *sequence);
        let part = folder.join(format!("{name}.part"));
        std::fs::write(&part, &text).map_err(|e| io_error(&e))?;
        std::fs::rename(&part, folder.join(&name)).map_err(|e| io_error(&e))?;
        bytes += text.len() as u64;
        if file % 500 == 499 {
            progress(&format!("{} files written", file + 1));
        }
    }
    let connector = Folder {
        connector: "bench",
        folder,
        settle: Duration::ZERO,
        currency: "EUR",
        ingest: &services.ingest,
        held: &services.held,
        clock: &SystemClock,
    };
    let mut looks = Looks::default();
    connector.look(&mut looks).map_err(|e| io_error(&e))?;
    let start = Instant::now();
    let run = connector
        .run(&mut looks, &|| false)
        .await
        .map_err(CliError::Other)?;
    let elapsed = start.elapsed();
    if run.files != files || run.set_aside != 0 || run.accepted != files * per_file {
        return Err(CliError::Other(format!(
            "the run took {} files ({} set aside, {} transactions) instead of {files} files of \
             {per_file}",
            run.files, run.set_aside, run.accepted
        )));
    }
    Ok((elapsed, bytes))
}

fn io_error(err: &std::io::Error) -> CliError {
    CliError::Other(format!("the drop folder: {err}"))
}

/// One retail sale of `lines` lines paid in cash; every tenth with a loyalty id.
fn transaction(out: &mut String, sequence: u64, lines: u64) {
    let store = format!("S{:03}", sequence % 20);
    let _ = write!(
        out,
        "<Transaction><RetailStoreID>{store}</RetailStoreID><WorkstationID>1</WorkstationID>\
         <SequenceNumber>{sequence}</SequenceNumber><BusinessDayDate>2026-11-27</BusinessDayDate>\
         <CurrencyCode>EUR</CurrencyCode><RetailTransaction Version=\"2.1\">"
    );
    for line in 0..lines {
        let sku = (sequence * 7 + line * 13) % SKUS;
        let _ = write!(
            out,
            "<LineItem><SequenceNumber>{}</SequenceNumber><Sale ItemType=\"Stock\">\
             <ItemID>SKU-{sku:05}</ItemID><Description>Product {sku}</Description>\
             <RegularSalesUnitPrice>10.00</RegularSalesUnitPrice>\
             <ExtendedAmount>10.00</ExtendedAmount><Quantity>1</Quantity></Sale></LineItem>",
            line + 1
        );
    }
    let total = lines * 10;
    let _ = write!(
        out,
        "<LineItem><SequenceNumber>99</SequenceNumber><Tender TenderType=\"Cash\" \
         TypeCode=\"Sale\"><Amount>{total}.00</Amount></Tender></LineItem>\
         <Total TotalType=\"TransactionGrandAmount\">{total}.00</Total></RetailTransaction>"
    );
    if sequence.is_multiple_of(10) {
        let _ = write!(
            out,
            "<acme:LoyaltyID>LOY-{}</acme:LoyaltyID>",
            sequence % 5000
        );
    }
    out.push_str("</Transaction>\n");
}

fn print_table(args: &SyncBenchArgs, r: &Report) {
    let small = median_of(&r.small);
    let large = median_of(&r.large);
    let files_per_second = rate(args.small_files, small);
    let tx_per_second = rate(args.large_files * args.tx_per_file, large);
    println!();
    println!(
        "POSLog folder connector, {} rounds, median; {} lines per transaction, durable",
        args.rounds, args.lines
    );
    print_row("measure", "figure", "", "", "target", "result");
    print_row(
        &format!("files/s, {} one-transaction files", args.small_files),
        &per_second(files_per_second),
        &format!("{:.0} ms", small.as_secs_f64() * 1000.0),
        "",
        "≥ 1,000 files/s",
        verdict(files_per_second >= FILES_TARGET),
    );
    print_row(
        &format!(
            "tx/s, {} files of {} tx",
            args.large_files, args.tx_per_file
        ),
        &per_second(tx_per_second),
        &format!("{:.0} ms", large.as_secs_f64() * 1000.0),
        "",
        "≥ 3,000 tx/s",
        verdict(tx_per_second >= TX_TARGET),
    );
    println!(
        "rounds (s): small {:?}, large {:?}",
        r.small
            .iter()
            .map(|d| round3(d.as_secs_f64()))
            .collect::<Vec<_>>(),
        r.large
            .iter()
            .map(|d| round3(d.as_secs_f64()))
            .collect::<Vec<_>>()
    );
}

fn median_of(durations: &[Duration]) -> Duration {
    let seconds: Vec<f64> = durations.iter().map(Duration::as_secs_f64).collect();
    Duration::from_secs_f64(median(&seconds))
}

fn report_json(args: &SyncBenchArgs, r: &Report) -> serde_json::Value {
    let small = median_of(&r.small);
    let large = median_of(&r.large);
    serde_json::json!({
        "bench": "sync",
        "rounds": args.rounds,
        "lines_per_transaction": args.lines,
        "small_files": args.small_files,
        "small_files_per_second": round3(rate(args.small_files, small)),
        "small_bytes": r.small_bytes,
        "large_files": args.large_files,
        "tx_per_large_file": args.tx_per_file,
        "large_tx_per_second": round3(rate(args.large_files * args.tx_per_file, large)),
        "large_bytes": r.large_bytes,
        "small_round_seconds": r.small.iter().map(|d| round3(d.as_secs_f64())).collect::<Vec<_>>(),
        "large_round_seconds": r.large.iter().map(|d| round3(d.as_secs_f64())).collect::<Vec<_>>(),
    })
}
