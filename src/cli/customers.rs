//! `clientele import customers FILE` and `clientele demo`: filling the customer base from
//! the command line.
//!
//! With the server running the request goes through the control socket and the server does
//! the work with its own customer service (so its search index has the new customers at once);
//! with the server stopped the store is opened here and a progress bar shows on a terminal.
//! Either way the import is all or nothing: rows are staged under an import id and published
//! by one final write, and a file with any bad row imports nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::audit::Actor;
use crate::auth::accounts::Accounts;
use crate::clock::{SystemClock, SystemRandom};
use crate::config::Config;
use crate::control::{self, CLI_ACTOR, ControlError, Request, Response};
use crate::crm::Customers;
use crate::crm::demo::DemoError;
use crate::crm::import::{ImportError, Stage};
use crate::store::{MasterKeySource, Store, StoreOptions};

use super::CliError;

/// Longest wait for the running server to finish an import or a demo fill.
const SERVER_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import customers from a CSV file (header row; comma, semicolon or tab; UTF-8)
    ///
    /// Columns: `given_name`, `family_name` and at least one of `email`, `phone`,
    /// `loyalty_id`, `external_id` (with `external_source`); optional `birthday`, address
    /// columns, `tags`, `preferred_channel`, consent columns. Several values in one cell are
    /// separated by `|`.
    /// Every bad row is reported with its line and column, and then nothing is imported.
    /// Importing the same file again changes nothing.
    Customers(ImportArgs),
    /// Import ARTS/NRF `POSLog` XML files (2.x and 6.x) from registers
    ///
    /// Each file is all or nothing: a file with any bad transaction (malformed XML, tenders
    /// that do not add up, a negative quantity on a sale line...) imports nothing and is
    /// reported with the line and element. Transactions received before (same store, register,
    /// business day and sequence) change nothing, so importing a file again is safe.
    Poslog(super::poslog::PoslogArgs),
    /// Import the product catalog from a CSV file (header row; comma, semicolon or tab; UTF-8)
    ///
    /// Columns: `sku`, `name`, `currency`, `price` (decimal, 49.90) or `price_minor` (4990);
    /// optional `gtin`, `brand`, `category`, `cost` or `cost_minor`, `margin_floor` (percent)
    /// or `margin_floor_bp`, `protected` (yes/no), `complementary` (SKUs separated by `;`),
    /// and `attr:NAME` per attribute. Every bad row is reported with its line and column, and
    /// then nothing is imported. Importing the same file again changes nothing.
    Products(super::products::ProductsArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file (with the server running, it must be readable by the service user)
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many customers to make (1,000 to 1,000,000)
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub customers: u64,
    /// The same seed makes the same customers; running again with it changes nothing
    #[arg(long, value_name = "SEED", default_value_t = 1)]
    pub seed: u64,
}

pub fn run_import(
    config: &Config,
    source: &MasterKeySource,
    command: &ImportCommand,
) -> Result<ExitCode, CliError> {
    let args = match command {
        ImportCommand::Customers(args) => args,
        ImportCommand::Poslog(args) => return super::poslog::run(config, source, args),
        ImportCommand::Products(args) => return super::products::run(config, source, args),
    };
    let file = std::path::absolute(&args.file).map_err(|e| {
        CliError::Other(format!(
            "{}: cannot resolve the path: {e}",
            args.file.display()
        ))
    })?;
    if !file.is_file() {
        return Err(CliError::Other(format!(
            "{}: no such file; give the path of a CSV file",
            file.display()
        )));
    }
    let response = ask(
        config,
        source,
        Request::ImportCustomers { file: file.clone() },
    )?;
    match response {
        Response::CustomersImported { record } => {
            println!(
                "Imported {}: {} rows, {} customers created, {} updated, {} unchanged (import {}).",
                file.display(),
                record.rows,
                record.created,
                record.updated,
                record.unchanged,
                record.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Response::ImportRejected {
            message,
            rejections,
        } => {
            eprintln!("{}: {message}", file.display());
            for r in &rejections {
                eprintln!("  line {}, {}: {}", r.line, r.field, r.message);
            }
            Ok(ExitCode::FAILURE)
        }
        Response::Error { message } => {
            Err(CliError::Other(format!("{}: {message}", file.display())))
        }
        _ => Err(CliError::Other("unexpected answer from the server".into())),
    }
}

pub fn run_demo(
    config: &Config,
    source: &MasterKeySource,
    args: &DemoArgs,
) -> Result<ExitCode, CliError> {
    let request = Request::Demo {
        customers: args.customers,
        seed: args.seed,
    };
    match ask(config, source, request)? {
        Response::DemoFilled { report } => {
            print_demo(&report);
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message } => Err(CliError::Other(message)),
        _ => Err(CliError::Other("unexpected answer from the server".into())),
    }
}

/// Prints what a demo fill made.
pub fn print_demo(report: &crate::crm::demo::DemoReport) {
    let (created, unchanged) = report
        .import
        .as_ref()
        .map_or((0, 0), |r| (r.created, r.unchanged));
    println!(
        "Demo data: {} stores, {} customers ({created} new, {unchanged} already there), {} \
         planted duplicates waiting for review.",
        report.stores, report.customers, report.planted_duplicates
    );
}

/// Sends the request to the running server, or answers it here on the store opened with the
/// server stopped.
pub(super) fn ask(
    config: &Config,
    source: &MasterKeySource,
    request: Request,
) -> Result<Response, CliError> {
    match control::request(&config.control_socket(), &request, SERVER_TIMEOUT) {
        Ok(response) => return Ok(response),
        Err(ControlError::NotRunning { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    let store = Store::open(
        &StoreOptions::from_config(config),
        source,
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
    )?;
    let customers = Customers::new(
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
        &config.customers.default_country,
    );
    // The control answer below picks this service up, so the country is the configured one.
    let _offered = crate::crm::privacy::offer_to_control(&customers);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
    SHOW_PROGRESS.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(runtime.block_on(control::answer(request, store)))
}

/// Whether this process is the command line working on the store itself (then it draws a
/// progress bar on a terminal); the server never does.
static SHOW_PROGRESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A progress bar on standard error when it is a terminal and this is the command line.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        let shown = SHOW_PROGRESS.load(std::sync::atomic::Ordering::Relaxed)
            && std::io::stderr().is_terminal();
        Self(shown.then(|| {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg:>10} [{bar:40}] {pos}/{len} rows ({eta} left)",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        }))
    }

    fn update(&self, stage: Stage, done: u64, total: u64) {
        if let Some(bar) = &self.0 {
            bar.set_message(match stage {
                Stage::Validating => "checking",
                Stage::Matching => "matching",
                Stage::Writing => "writing",
            });
            bar.set_length(total);
            bar.set_position(done);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Answers [`Request::ImportCustomers`] on an open store.
pub async fn import(store: &Store, file: &Path) -> Response {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(err) => {
            return Response::Error {
                message: format!("cannot read the file: {err}"),
            };
        }
    };
    let customers = crate::crm::privacy::service_for(store, "US");
    let progress = Progress::new();
    let update = |stage, done, total| progress.update(stage, done, total);
    let result = customers
        .import_csv(bytes, Actor::system(CLI_ACTOR), &update)
        .await;
    progress.finish();
    match result {
        Ok(record) => Response::CustomersImported { record },
        Err(err) => import_failure(err),
    }
}

fn import_failure(err: ImportError) -> Response {
    let message = err.to_string();
    match err {
        ImportError::Rejected { rejections, .. } => Response::ImportRejected {
            message,
            rejections,
        },
        _ => Response::Error { message },
    }
}

/// Answers [`Request::Demo`] on an open store.
pub async fn demo(store: &Store, accounts: &Accounts, count: u64, seed: u64) -> Response {
    let customers = crate::crm::privacy::service_for(store, "US");
    let progress = Progress::new();
    let update = |stage, done, total| progress.update(stage, done, total);
    let result = customers.fill_demo(accounts, count, seed, &update).await;
    progress.finish();
    match result {
        Ok(report) => Response::DemoFilled { report },
        Err(DemoError::Import(err)) => import_failure(err),
        Err(err) => Response::Error {
            message: err.to_string(),
        },
    }
}
