//! `clientele bench customers`: the customer service at size, in one run on one fresh data
//! folder with the demo population (deterministic from `--seed`):
//!
//! 1. raw sled inserts of 300-byte values, the ceiling any import is compared with;
//! 2. the demo written as a CSV file and imported through the real importer (the one behind
//!    `clientele import customers` and the import page): customers per second, and store
//!    records written per customer (profile, identity keys, timeline);
//! 3. the search index built from the store, as `clientele serve` builds it before it reports
//!    ready, then a mix of counter searches (name prefix, misspelt surname, email, phone,
//!    loyalty card) through the service call the pages use, p50 and p99, after a short
//!    unmeasured warm-up; the audit entry each page search also writes is not in this figure;
//! 4. the real `clientele serve` started on that folder with a 256 MB sled cache: time to its
//!    first 200 (index build included), its resident memory (`VmRSS` of `/proc/PID/status`)
//!    once ready, and the customer page (`GET /customers/{id}`: audited read, timeline,
//!    template) over HTTPS with a signed-in session, one connection, p50 and p99.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::SplitMix;
use super::web::{connect, get, sign_in};
use super::{
    CliError, Launcher, Server, WorkDir, millis, per_second, percentile, print_row, progress, rate,
    resident_kib, round3, verdict, whole,
};
use crate::audit::Actor;
use crate::clock::{SystemClock, SystemRandom};
use crate::config::Config;
use crate::crm::demo::demo_row;
use crate::crm::import::{ImportRow, Stage};
use crate::crm::{CUSTOMER_KEYS, CUSTOMERS, Customers, TIMELINE};
use crate::domain::customer::{Channel, Identity};
use crate::store::{MasterKeySource, Store, StoreOptions};

/// Sizes of the customers benchmark.
#[derive(Debug, Args)]
pub struct CustomersBenchArgs {
    /// Demo customers in the store
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1000..=crate::crm::demo::MAX_CUSTOMERS))]
    customers: u64,

    /// Seed of the demo population (the same seed gives the same customers)
    #[arg(long, value_name = "N", default_value_t = 42)]
    seed: u64,

    /// Searches in the latency mix
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    searches: u64,

    /// Customer pages fetched over HTTPS
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=100_000))]
    pages: u64,

    /// Folder to work in (a fresh sub-folder is made there and removed at the end)
    /// [default: the system temporary folder]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The sled cache of the measured server, in MiB.
const CACHE_MIB: u64 = 256;
/// Raw sled inserts for the ceiling (fewer when the demo is smaller).
const RAW_INSERTS: u64 = 200_000;
const RAW_VALUE_LEN: usize = 300;
/// Results asked of each search, as on the customers page.
const SEARCH_LIMIT: usize = crate::crm::search::MAX_HITS;
/// The benchmark's sign-in (an associate: no second factor is due).
const LOGIN: &str = "bench-counter";
const PASSWORD: &str = "bench counter password 7Yq!";

/// Targets from the customers issue, at a million customers.
const TARGET_SEARCH_P99_MS: f64 = 5.0;
const TARGET_PAGE_P99_MS: f64 = 20.0;
const TARGET_INDEX_S: f64 = 15.0;
const TARGET_RSS_MB: f64 = 1500.0;
const TARGET_IMPORT_RATE: f64 = 20_000.0;

/// Searches run before the measured ones.
const WARM_UP: usize = 200;

/// The kinds of search in the mix, in turn.
const KINDS: [&str; 5] = [
    "name prefix",
    "misspelt surname",
    "email",
    "phone",
    "loyalty card",
];

pub(super) fn bench_customers(args: &CustomersBenchArgs) -> Result<ExitCode, CliError> {
    let random = SystemRandom::new();
    let work = WorkDir::create(args.dir.as_deref(), &random)?;
    progress(&format!("working in {}", work.path.display()));
    let launcher = Launcher::new(&work.path)?;
    let data_dir = work.path.join("data");
    launcher.init(&data_dir)?;

    let raw = raw_sled(&work.path.join("raw-sled"), args.customers.min(RAW_INSERTS))?;
    let (import, search, page_ids) = in_process(&data_dir, args)?;
    let served = serve(&launcher, &data_dir, &page_ids)?;

    let report = Report {
        raw,
        import,
        search,
        served,
    };
    print_table(args, &report);
    println!("{}", report_json(args, &report));
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// 1. Raw sled

#[derive(Debug)]
struct RawFigures {
    inserts: u64,
    elapsed: Duration,
}

fn raw_sled(path: &std::path::Path, inserts: u64) -> Result<RawFigures, CliError> {
    progress(&format!(
        "raw sled: {inserts} inserts of {RAW_VALUE_LEN} bytes"
    ));
    let db = crate::store::open_sled(path, CACHE_MIB)?;
    let value = vec![b'x'; RAW_VALUE_LEN];
    let start = Instant::now();
    for n in 0..inserts {
        db.insert(n.to_be_bytes(), value.as_slice())
            .map_err(|e| CliError::Other(format!("raw sled insert: {e}")))?;
    }
    db.flush()
        .map_err(|e| CliError::Other(format!("raw sled flush: {e}")))?;
    Ok(RawFigures {
        inserts,
        elapsed: start.elapsed(),
    })
}

// ---------------------------------------------------------------------------------------------
// 2 and 3. Import, index, searches (in this process)

#[derive(Debug)]
struct ImportFigures {
    customers: u64,
    csv_bytes: usize,
    elapsed: Duration,
    /// Store records written by the import (profiles, identity keys, timeline items).
    records: u64,
    /// Validating (CSV read and every row cleaned), matching (identities looked up), writing
    /// (staged chunks and the publishing write).
    phases: [Duration; 3],
}

#[derive(Debug)]
struct SearchFigures {
    indexed: usize,
    build: Duration,
    /// Latencies by kind, each sorted.
    by_kind: Vec<Vec<Duration>>,
    all: Vec<Duration>,
    /// Exact searches (email, phone, card) that did not find their customer first, by kind.
    misses: Vec<u64>,
}

fn open_store(data_dir: &std::path::Path) -> Result<Store, CliError> {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    config.store.cache_mib = CACHE_MIB;
    let source = MasterKeySource::File(config.master_key_file());
    Ok(Store::open(
        &StoreOptions::from_config(&config),
        &source,
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
    )?)
}

fn service(store: &Store) -> Customers {
    Customers::new(
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
        &Config::default().customers.default_country,
    )
}

fn in_process(
    data_dir: &std::path::Path,
    args: &CustomersBenchArgs,
) -> Result<(ImportFigures, SearchFigures, Vec<String>), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
    let store = open_store(data_dir)?;

    progress(&format!(
        "writing the demo of {} customers as CSV",
        args.customers
    ));
    let csv = demo_csv(args.customers, args.seed)?;
    let csv_bytes = csv.len();
    let before = records(&store);
    progress("importing the CSV file");
    let importer = service(&store);
    // When each stage was first reported, to split the import's time.
    let stages: std::sync::Mutex<Vec<(Stage, Instant)>> = std::sync::Mutex::new(Vec::new());
    let note = |stage: Stage, _, _| {
        let mut seen = stages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !seen.iter().any(|(s, _)| *s == stage) {
            seen.push((stage, Instant::now()));
        }
    };
    let start = Instant::now();
    runtime
        .block_on(importer.import_csv(csv, Actor::system("bench"), &note))
        .map_err(|e| CliError::Other(format!("the demo import failed: {e}")))?;
    let elapsed = start.elapsed();
    let stages = stages
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let phase = |from: Stage, to: Option<Stage>| {
        let at = |stage| stages.iter().find(|(s, _)| *s == stage).map(|(_, t)| *t);
        let end = to.and_then(at).unwrap_or(start + elapsed);
        at(from).map_or(Duration::ZERO, |begin| end.saturating_duration_since(begin))
    };
    let phases = [
        phase(Stage::Validating, Some(Stage::Matching)),
        phase(Stage::Matching, Some(Stage::Writing)),
        phase(Stage::Writing, None),
    ];
    drop(importer);
    let import = ImportFigures {
        customers: args.customers,
        csv_bytes,
        elapsed,
        records: records(&store).saturating_sub(before),
        phases,
    };

    progress("building the search index from the store");
    let customers = service(&store);
    let start = Instant::now();
    let indexed = customers.build_index()?;
    let build = start.elapsed();

    progress(&format!(
        "{} searches, {} kinds in turn",
        args.searches,
        KINDS.len()
    ));
    let search = time_searches(&customers, args, indexed, build)?;
    let page_ids = sample_ids(&customers, args)?;
    drop(customers);
    drop(store);
    drop(runtime);
    Ok((import, search, page_ids))
}

/// Records of the customer tables, to count what an import wrote.
fn records(store: &Store) -> u64 {
    [CUSTOMERS, CUSTOMER_KEYS, TIMELINE]
        .into_iter()
        .map(|table| store.count(table) as u64)
        .sum()
}

/// The demo population as an import file, one row per customer.
fn demo_csv(count: u64, seed: u64) -> Result<Vec<u8>, CliError> {
    let failed = |e: csv::Error| CliError::Other(format!("cannot write the demo CSV: {e}"));
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(count as usize * 200));
    writer
        .write_record([
            "given_name",
            "family_name",
            "email",
            "phone",
            "address_line1",
            "postcode",
            "city",
            "region",
            "country",
            "birthday",
            "loyalty_id",
            "external_source",
            "external_id",
            "tags",
            "preferred_channel",
            "consent_email",
            "consent_sms",
            "consent_post",
            "consent_wording",
        ])
        .map_err(failed)?;
    for n in 0..count {
        writer
            .write_record(csv_row(&demo_row(n, seed, &[])))
            .map_err(failed)?;
    }
    writer
        .into_inner()
        .map_err(|e| CliError::Other(format!("cannot write the demo CSV: {e}")))
}

fn csv_row(row: &ImportRow) -> Vec<String> {
    let p = &row.profile;
    let first = |list: &[String]| list.first().cloned().unwrap_or_default();
    let address = p.addresses.first().cloned().unwrap_or_default();
    let external = p.external_ids.first();
    let consent = |channel: Channel| {
        row.consents
            .iter()
            .find(|(c, _)| *c == channel)
            .map_or_else(String::new, |(_, granted)| {
                if *granted { "yes" } else { "no" }.to_owned()
            })
    };
    vec![
        p.given_name.clone(),
        p.family_name.clone(),
        first(&p.emails),
        first(&p.phones),
        address.line1,
        address.postcode,
        address.city,
        address.region,
        address.country,
        p.birthday.map(|d| d.to_string()).unwrap_or_default(),
        first(&p.loyalty_ids),
        external.map(|e| e.source.clone()).unwrap_or_default(),
        external.map(|e| e.id.clone()).unwrap_or_default(),
        p.tags.join(","),
        p.preferred_channel
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
        consent(Channel::Email),
        consent(Channel::Sms),
        consent(Channel::Post),
        row.wording.clone(),
    ]
}

fn crm_failed(err: &crate::crm::CrmError) -> CliError {
    CliError::Other(format!(
        "the customer service failed during the benchmark: {err}"
    ))
}

/// The query of kind `kind` for demo customer `row`, and whether it names them exactly.
fn query_of(kind: usize, row: &ImportRow) -> Option<(String, bool)> {
    let p = &row.profile;
    match kind {
        0 => Some((p.family_name.chars().take(3).collect(), false)),
        1 => {
            let mut chars: Vec<char> = p.family_name.chars().collect();
            if chars.len() < 4 {
                return None;
            }
            let at = chars.len() / 2;
            chars.swap(at - 1, at);
            Some((chars.into_iter().collect(), false))
        }
        2 => p.emails.first().map(|e| (e.to_ascii_uppercase(), true)),
        // Typed with a space after the country code, as people copy them.
        3 => p.phones.first().map(|ph| {
            let (code, rest) = ph.split_at(3.min(ph.len()));
            (format!("{code} {rest}"), true)
        }),
        _ => p.loyalty_ids.first().map(|l| (l.to_lowercase(), true)),
    }
}

fn time_searches(
    customers: &Customers,
    args: &CustomersBenchArgs,
    indexed: usize,
    build: Duration,
) -> Result<SearchFigures, CliError> {
    let mut picker = SplitMix::new(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // Warm-up, not measured: the phone library builds each country's patterns on first use,
    // which a running server has long done.
    for i in 0..WARM_UP {
        let row = demo_row(picker.below(args.customers), args.seed, &[]);
        if let Some((query, _)) = query_of(i % KINDS.len(), &row) {
            customers
                .search(&query, SEARCH_LIMIT)
                .map_err(|e| crm_failed(&e))?;
        }
    }
    let mut by_kind = vec![Vec::new(); KINDS.len()];
    let mut all = Vec::with_capacity(args.searches as usize);
    let mut misses = vec![0; KINDS.len()];
    let mut done = 0u64;
    while done < args.searches {
        let kind = (done % KINDS.len() as u64) as usize;
        let n = picker.below(args.customers);
        let row = demo_row(n, args.seed, &[]);
        let Some((query, exact)) = query_of(kind, &row) else {
            continue;
        };
        let start = Instant::now();
        let hits = customers
            .search(&query, SEARCH_LIMIT)
            .map_err(|e| crm_failed(&e))?;
        let took = start.elapsed();
        if exact {
            let expected = row
                .profile
                .loyalty_ids
                .first()
                .map(|l| customers.find(&Identity::Loyalty(l.clone())))
                .transpose()
                .map_err(|e| crm_failed(&e))?
                .flatten();
            if hits.first().map(|h| h.id) != expected {
                misses[kind] += 1;
            }
        }
        by_kind[kind].push(took);
        all.push(took);
        done += 1;
    }
    for kind in &mut by_kind {
        kind.sort_unstable();
    }
    all.sort_unstable();
    Ok(SearchFigures {
        indexed,
        build,
        by_kind,
        all,
        misses,
    })
}

/// Ids of demo customers spread over the population, for the page measure.
fn sample_ids(customers: &Customers, args: &CustomersBenchArgs) -> Result<Vec<String>, CliError> {
    let mut picker = SplitMix::new(args.seed.wrapping_add(7) | 1);
    let mut ids = Vec::with_capacity(args.pages as usize);
    while ids.len() < args.pages as usize {
        let row = demo_row(picker.below(args.customers), args.seed, &[]);
        if let Some(loyalty) = row.profile.loyalty_ids.first()
            && let Some(id) = customers
                .find(&Identity::Loyalty(loyalty.clone()))
                .map_err(|e| crm_failed(&e))?
        {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

// ---------------------------------------------------------------------------------------------
// 4. The real server

#[derive(Debug)]
struct ServedFigures {
    /// Spawn to the first 200 from `/healthz`, the index build included.
    ready: Duration,
    rss_kib: u64,
    pages: Vec<Duration>,
}

fn serve(
    launcher: &Launcher,
    data_dir: &std::path::Path,
    ids: &[String],
) -> Result<ServedFigures, CliError> {
    launcher.add_user(data_dir, LOGIN, "associate", PASSWORD)?;
    progress(&format!(
        "starting `clientele serve` with a {CACHE_MIB} MB sled cache"
    ));
    let mut server = Server::start(
        launcher,
        data_dir,
        &[("CLIENTELE_STORE__CACHE_MIB", CACHE_MIB.to_string())],
    )?;
    let rss_kib = resident_kib(server.pid())?;
    let session = sign_in(&server, LOGIN, PASSWORD)?;
    progress(&format!("{} customer pages over HTTPS", ids.len()));
    let mut connection = connect(&server)?;
    let mut pages = Vec::with_capacity(ids.len());
    for id in ids {
        let request = get(&format!("/customers/{id}"), Some(&session));
        let start = Instant::now();
        let answer = connection
            .exchange(&request)
            .map_err(|e| CliError::Other(format!("GET /customers/{{id}} failed: {e}")))?;
        pages.push(start.elapsed());
        if answer.status != 200 {
            return Err(CliError::Other(format!(
                "GET /customers/{{id}} answered {}, not 200; the figures would mean nothing",
                answer.status
            )));
        }
    }
    pages.sort_unstable();
    // An open keep-alive connection would hold the server's graceful stop to its timeout.
    drop(connection);
    let ready = server.healthy;
    // The figures are taken; a slow stop is reported, not a reason to lose them.
    let started = Instant::now();
    match server.stop() {
        Ok(took) => progress(&format!("server stopped in {:.1} s", took.as_secs_f64())),
        Err(err) => progress(&format!(
            "warning: {err} (after {:.1} s)",
            started.elapsed().as_secs_f64()
        )),
    }
    Ok(ServedFigures {
        ready,
        rss_kib,
        pages,
    })
}

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Debug)]
struct Report {
    raw: RawFigures,
    import: ImportFigures,
    search: SearchFigures,
    served: ServedFigures,
}

impl Report {
    fn raw_rate(&self) -> f64 {
        rate(self.raw.inserts, self.raw.elapsed)
    }

    fn import_rate(&self) -> f64 {
        rate(self.import.customers, self.import.elapsed)
    }

    fn records_per_customer(&self) -> f64 {
        self.import.records as f64 / self.import.customers.max(1) as f64
    }

    fn record_rate(&self) -> f64 {
        rate(self.import.records, self.import.elapsed)
    }

    fn rss_mb(&self) -> f64 {
        self.served.rss_kib as f64 * 1024.0 / 1_000_000.0
    }
}

#[allow(clippy::too_many_lines)] // one row of the table after another, in print order
fn print_table(args: &CustomersBenchArgs, report: &Report) {
    let Report {
        raw,
        import,
        search,
        served,
    } = report;
    println!(
        "Clientele customers benchmark: {} demo customers (seed {}), {} searches, {} pages, sled \
         cache {CACHE_MIB} MB",
        args.customers,
        args.seed,
        search.all.len(),
        served.pages.len()
    );
    println!();
    print_row(
        "measure",
        "p50 / figure",
        "p99 / other",
        "ratio",
        "target",
        "result",
    );
    print_row(
        "CSV import, customers/s",
        &per_second(report.import_rate()),
        &format!("{:.1} s", import.elapsed.as_secs_f64()),
        "",
        ">= 20,000/s",
        verdict(report.import_rate() >= TARGET_IMPORT_RATE),
    );
    print_row(
        "  validate / match / write",
        &format!(
            "{:.1} / {:.1} / {:.1} s",
            import.phases[0].as_secs_f64(),
            import.phases[1].as_secs_f64(),
            import.phases[2].as_secs_f64()
        ),
        "",
        "",
        "",
        "",
    );
    print_row(
        "  store records per customer",
        &format!("{:.2}", report.records_per_customer()),
        &per_second(report.record_rate()),
        "",
        "",
        "",
    );
    print_row(
        "  raw sled inserts (same run)",
        &per_second(report.raw_rate()),
        &format!("{} × {RAW_VALUE_LEN} B", raw.inserts),
        &format!(
            "{:.2}",
            report.record_rate() / report.raw_rate().max(f64::MIN_POSITIVE)
        ),
        "",
        "records/s over raw",
    );
    print_row(
        "index build (in process)",
        &format!("{:.2} s", search.build.as_secs_f64()),
        &format!("{} customers", search.indexed),
        "",
        "< 15 s",
        verdict(search.build.as_secs_f64() < TARGET_INDEX_S),
    );
    print_row(
        "serve: spawn to first 200",
        &format!("{:.2} s", served.ready.as_secs_f64()),
        "index included",
        "",
        "",
        "",
    );
    print_row(
        "serve: resident memory when ready",
        &format!("{:.0} MB", report.rss_mb()),
        "",
        "",
        "< 1,500 MB",
        verdict(report.rss_mb() < TARGET_RSS_MB),
    );
    let p99 = millis(percentile(&search.all, 990));
    print_row(
        "search, whole mix",
        &format!("{:.3} ms", millis(percentile(&search.all, 500))),
        &format!("{p99:.3} ms"),
        "",
        "p99 < 5 ms",
        verdict(p99 < TARGET_SEARCH_P99_MS),
    );
    for (name, latencies) in KINDS.iter().zip(&search.by_kind) {
        print_row(
            &format!("  {name}"),
            &format!("{:.3} ms", millis(percentile(latencies, 500))),
            &format!("{:.3} ms", millis(percentile(latencies, 990))),
            "",
            "",
            "",
        );
    }
    print_row(
        "  exact searches not found first",
        &search
            .misses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" / "),
        "",
        "",
        "0",
        verdict(search.misses.iter().all(|m| *m == 0)),
    );
    let page_p99 = millis(percentile(&served.pages, 990));
    print_row(
        "customer page over HTTPS",
        &format!("{:.3} ms", millis(percentile(&served.pages, 500))),
        &format!("{page_p99:.3} ms"),
        "",
        "p99 < 20 ms",
        verdict(page_p99 < TARGET_PAGE_P99_MS),
    );
    println!();
}

fn report_json(args: &CustomersBenchArgs, report: &Report) -> serde_json::Value {
    let Report {
        raw,
        import,
        search,
        served,
    } = report;
    let kinds: serde_json::Map<String, serde_json::Value> = KINDS
        .iter()
        .zip(&search.by_kind)
        .map(|(name, latencies)| {
            (
                name.replace(' ', "_"),
                serde_json::json!({
                    "p50_ms": round3(millis(percentile(latencies, 500))),
                    "p99_ms": round3(millis(percentile(latencies, 990))),
                    "count": latencies.len(),
                }),
            )
        })
        .collect();
    serde_json::json!({
        "bench": "customers",
        "customers": args.customers,
        "seed": args.seed,
        "sled_cache_mib": CACHE_MIB,
        "import": {
            "customers_per_s": whole(report.import_rate()),
            "seconds": round3(import.elapsed.as_secs_f64()),
            "csv_bytes": import.csv_bytes,
            "validate_s": round3(import.phases[0].as_secs_f64()),
            "match_s": round3(import.phases[1].as_secs_f64()),
            "write_s": round3(import.phases[2].as_secs_f64()),
            "store_records_per_customer": round3(report.records_per_customer()),
            "store_records_per_s": whole(report.record_rate()),
            "raw_sled_inserts_per_s": whole(report.raw_rate()),
            "raw_sled_inserts": raw.inserts,
            "records_rate_over_raw_sled": round3(report.record_rate() / report.raw_rate().max(f64::MIN_POSITIVE)),
            "customers_rate_over_raw_sled": round3(report.import_rate() / report.raw_rate().max(f64::MIN_POSITIVE)),
            "target_customers_per_s": TARGET_IMPORT_RATE,
        },
        "index": {
            "customers": search.indexed,
            "build_s": round3(search.build.as_secs_f64()),
            "serve_ready_s": round3(served.ready.as_secs_f64()),
            "target_build_s": TARGET_INDEX_S,
        },
        "rss_mb": round3(report.rss_mb()),
        "target_rss_mb": TARGET_RSS_MB,
        "search": {
            "p50_ms": round3(millis(percentile(&search.all, 500))),
            "p99_ms": round3(millis(percentile(&search.all, 990))),
            "count": search.all.len(),
            "exact_misses": search.misses,
            "by_kind": kinds,
            "measured": "service call (Customers::search), without the audit entry",
            "target_p99_ms": TARGET_SEARCH_P99_MS,
        },
        "customer_page": {
            "p50_ms": round3(millis(percentile(&served.pages, 500))),
            "p99_ms": round3(millis(percentile(&served.pages, 990))),
            "count": served.pages.len(),
            "measured": "GET /customers/{id} over HTTPS from clientele serve, signed in",
            "target_p99_ms": TARGET_PAGE_P99_MS,
        },
    })
}
