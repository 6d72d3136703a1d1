//! `clientele import poslog FILE...`: `POSLog` files from the command line.
//!
//! With the server running the files go through the control socket and the server reads and
//! ingests them itself; with the server stopped the store is opened here. Each file is one
//! batch, all or nothing, and a transaction received before changes nothing, so a file can be
//! imported again safely (for instance after an interrupted run).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::audit::Actor;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::control::{CLI_ACTOR, Request, Response};
use crate::inventory::ingest::Ingest;
use crate::store::{MasterKeySource, Store};
use crate::sync::inbox::{FileError, FileOutcome, import_file};

use super::CliError;

#[derive(Debug, Args)]
pub struct PoslogArgs {
    /// The `POSLog` XML files (with the server running, readable by the service user)
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

pub fn run(
    config: &Config,
    source: &MasterKeySource,
    args: &PoslogArgs,
) -> Result<ExitCode, CliError> {
    let mut files = Vec::with_capacity(args.files.len());
    for file in &args.files {
        let absolute = std::path::absolute(file).map_err(|e| {
            CliError::Other(format!("{}: cannot resolve the path: {e}", file.display()))
        })?;
        if !absolute.is_file() {
            return Err(CliError::Other(format!(
                "{}: no such file; give the paths of POSLog XML files",
                absolute.display()
            )));
        }
        files.push(absolute);
    }
    let request = Request::ImportPoslog {
        files,
        default_currency: config.pos.default_currency.clone(),
    };
    match super::customers::ask(config, source, request)? {
        Response::PoslogImported { files } => {
            let mut failed = false;
            for outcome in &files {
                match (&outcome.report, &outcome.error) {
                    (Some(r), _) => println!(
                        "{}: {} transactions, {} new, {} already received",
                        outcome.file.display(),
                        r.received,
                        r.accepted,
                        r.duplicates
                    ),
                    (None, error) => {
                        failed = true;
                        eprintln!(
                            "{}: nothing imported: {}",
                            outcome.file.display(),
                            error.as_deref().unwrap_or("unknown error")
                        );
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Response::Error { message } => Err(CliError::Other(message)),
        _ => Err(CliError::Other("unexpected answer from the server".into())),
    }
}

/// Answers [`Request::ImportPoslog`] on an open store: each file on its own.
pub async fn import(store: &Store, files: &[PathBuf], default_currency: &str) -> Response {
    let customers = crate::crm::privacy::service_for(store, "US");
    let ingest = Ingest::new(store.clone(), Arc::new(SystemClock), customers);
    let mut outcomes = Vec::with_capacity(files.len());
    for file in files {
        let result = import_file(&ingest, file, default_currency, Actor::system(CLI_ACTOR)).await;
        outcomes.push(match result {
            Ok(report) => FileOutcome {
                file: file.clone(),
                report: Some(report),
                error: None,
            },
            Err(FileError::Refused(e) | FileError::Failed(e)) => FileOutcome {
                file: file.clone(),
                report: None,
                error: Some(e),
            },
        });
    }
    Response::PoslogImported { files: outcomes }
}
