//! `clientele bench availability`: availability look-ups at catalog size. A fresh store gets
//! `--skus` products and a receipt at each of `--locations` locations for every one of them
//! (a stock level and its first movement each, written in change sets of 5,000 as the
//! ledger writes them), then availability is read the way `GET /api/v1/availability`
//! reads it (the product, then the running total of each location asked for), in process:
//!
//! 1. one SKU at one location, random, `--reads` times: p50 and p99;
//! 2. one SKU at every location (the API without `location`): p50 and p99.
//!
//! The fill is timed too (records per second), so the figure can be compared with the other
//! benches' write rates.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::{
    CliError, SplitMix, WorkDir, fill_catalog, fresh_store, ingest_on, millis, per_second,
    percentile, print_row, progress, rate, round3, runtime, verdict,
};
use crate::clock::{SystemClock, SystemRandom};
use crate::domain::stock::MovementKind;
use crate::inventory::ingest::Ingest;
use crate::inventory::ledger::{Ledger, Pending};
use crate::store::{ChangeSet, Store};

/// Sizes of the availability benchmark.
#[derive(Debug, Args)]
pub struct AvailabilityBenchArgs {
    /// Products in the catalog
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    skus: u64,

    /// Locations each product is stocked at
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    locations: u64,

    /// Timed look-ups of each kind
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    reads: u64,

    /// Parent folder of the benchmark's working folder (default: the system's temporary
    /// folder); it is removed at the end
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
}

/// Movements (and their levels) per change set while filling.
const FILL_BATCH: u64 = 5_000;
/// Target of the issue: one look-up's p99.
const P99_TARGET_MS: f64 = 2.0;

#[derive(Debug)]
struct Report {
    fill: Duration,
    records: u64,
    one: Vec<Duration>,
    all_locations: Vec<Duration>,
}

pub(super) fn bench_availability(args: &AvailabilityBenchArgs) -> Result<ExitCode, CliError> {
    let random = Arc::new(SystemRandom::new());
    let work = WorkDir::create(args.dir.as_deref(), random.as_ref())?;
    progress(&format!("working in {}", work.path.display()));
    let report = runtime()?.block_on(run(args, &work.path.join("store")))?;
    print_table(args, &report);
    println!("{}", report_json(args, &report));
    Ok(ExitCode::SUCCESS)
}

fn open(data_dir: &Path) -> Result<(Store, Ingest), CliError> {
    let store = fresh_store(data_dir)?;
    let ingest = ingest_on(&store);
    Ok((store, ingest))
}

fn sku(n: u64) -> String {
    format!("SKU-{n:07}")
}

fn location(n: u64) -> String {
    format!("L{n:03}")
}

async fn run(args: &AvailabilityBenchArgs, dir: &Path) -> Result<Report, CliError> {
    let (store, ingest) = open(dir)?;
    let start = Instant::now();
    progress(&format!("filling a catalog of {} products", args.skus));
    fill_catalog(&ingest, args.skus, sku).await?;
    fill_levels(&store, ingest.ledger(), args).await?;
    let fill = start.elapsed();
    let records = args.skus * (1 + 2 * args.locations);

    let mut rng = SplitMix::new(0x5eed_a7a1);
    progress(&format!(
        "{} look-ups of one SKU at one location",
        args.reads
    ));
    let mut one = Vec::with_capacity(usize::try_from(args.reads).unwrap_or(0));
    for _ in 0..args.reads {
        let (s, l) = (
            sku(rng.below(args.skus)),
            location(rng.below(args.locations)),
        );
        let started = Instant::now();
        let known = ingest.catalog().get(&s).map_err(other)?.is_some();
        let level = ingest.ledger().level(&s, &l).map_err(other)?;
        one.push(started.elapsed());
        if !known || level.on_hand_milli <= 0 {
            return Err(CliError::Other(format!("{s} at {l} was not filled")));
        }
    }
    let lookups = (args.reads / 10).max(100);
    progress(&format!("{lookups} look-ups of one SKU at every location"));
    let mut all_locations = Vec::with_capacity(usize::try_from(lookups).unwrap_or(0));
    for _ in 0..lookups {
        let s = sku(rng.below(args.skus));
        let started = Instant::now();
        let known = ingest.catalog().get(&s).map_err(other)?.is_some();
        let levels = ingest.ledger().levels_of(&s).map_err(other)?;
        all_locations.push(started.elapsed());
        if !known || levels.len() as u64 != args.locations {
            return Err(CliError::Other(format!("{s} has {} levels", levels.len())));
        }
    }
    one.sort();
    all_locations.sort();
    Ok(Report {
        fill,
        records,
        one,
        all_locations,
    })
}

fn other(err: impl std::fmt::Display) -> CliError {
    CliError::Other(err.to_string())
}

/// A receipt of a random quantity for every SKU at every location.
async fn fill_levels(
    store: &Store,
    ledger: &Ledger,
    args: &AvailabilityBenchArgs,
) -> Result<(), CliError> {
    let total = args.skus * args.locations;
    progress(&format!("filling {total} stock levels"));
    let mut rng = SplitMix::new(0x0f11_1e5e);
    let now = crate::clock::Clock::now(&SystemClock);
    let mut set = ChangeSet::new();
    let mut pending = Pending::default();
    let mut staged = 0u64;
    for n in 0..args.skus {
        for l in 0..args.locations {
            let quantity = i64::try_from(1 + rng.below(50)).unwrap_or(1) * 1000;
            ledger
                .stage(
                    &mut set,
                    &mut pending,
                    &sku(n),
                    &location(l),
                    MovementKind::Receipt,
                    quantity,
                    "bench",
                    false,
                    now,
                )
                .map_err(other)?;
            staged += 1;
            if staged.is_multiple_of(FILL_BATCH) {
                Ledger::finish(std::mem::take(&mut pending), &mut set).map_err(other)?;
                store.commit(std::mem::take(&mut set)).await?;
                if staged.is_multiple_of(FILL_BATCH * 100) {
                    progress(&format!("{staged} of {total} levels"));
                }
            }
        }
    }
    Ledger::finish(pending, &mut set).map_err(other)?;
    if !set.is_empty() {
        store.commit(set).await?;
    }
    Ok(())
}

fn print_table(args: &AvailabilityBenchArgs, r: &Report) {
    let one_p50 = millis(percentile(&r.one, 500));
    let one_p99 = millis(percentile(&r.one, 990));
    let all_p50 = millis(percentile(&r.all_locations, 500));
    let all_p99 = millis(percentile(&r.all_locations, 990));
    println!();
    println!(
        "Availability at {} SKUs x {} locations ({} stock levels), in process",
        args.skus,
        args.locations,
        args.skus * args.locations
    );
    print_row("measure", "p50", "p99", "", "target", "result");
    print_row(
        "one SKU, one location",
        &format!("{one_p50:.3} ms"),
        &format!("{one_p99:.3} ms"),
        "",
        "p99 < 2 ms",
        verdict(one_p99 < P99_TARGET_MS),
    );
    print_row(
        &format!("one SKU, all {} locations", args.locations),
        &format!("{all_p50:.3} ms"),
        &format!("{all_p99:.3} ms"),
        "",
        "",
        "",
    );
    println!(
        "fill: {} records in {:.1} s ({})",
        r.records,
        r.fill.as_secs_f64(),
        per_second(rate(r.records, r.fill))
    );
}

fn report_json(args: &AvailabilityBenchArgs, r: &Report) -> serde_json::Value {
    serde_json::json!({
        "bench": "availability",
        "skus": args.skus,
        "locations": args.locations,
        "reads": args.reads,
        "one_p50_ms": round3(millis(percentile(&r.one, 500))),
        "one_p99_ms": round3(millis(percentile(&r.one, 990))),
        "all_locations_p50_ms": round3(millis(percentile(&r.all_locations, 500))),
        "all_locations_p99_ms": round3(millis(percentile(&r.all_locations, 990))),
        "fill_seconds": round3(r.fill.as_secs_f64()),
        "fill_records_per_second": round3(rate(r.records, r.fill)),
    })
}
