//! `clientele import products FILE`: the catalog CSV from the command line.
//!
//! With the server running the request goes through the control socket and the server reads
//! and imports the file itself; with the server stopped the store is opened here. Either way
//! the file is all or nothing (see [`crate::inventory::import`]), and importing it again
//! changes nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::audit::Actor;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::control::{CLI_ACTOR, Request, Response};
use crate::inventory::catalog::Catalog;
use crate::inventory::import::ProductImportError;
use crate::store::{MasterKeySource, Store};

use super::CliError;

#[derive(Debug, Args)]
pub struct ProductsArgs {
    /// The CSV file (with the server running, it must be readable by the service user)
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

pub fn run(
    config: &Config,
    source: &MasterKeySource,
    args: &ProductsArgs,
) -> Result<ExitCode, CliError> {
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
    let request = Request::ImportProducts { file: file.clone() };
    match super::customers::ask(config, source, request)? {
        Response::ProductsImported { report } => {
            println!(
                "Imported {}: {} rows, {} products created, {} changed, {} unchanged.",
                file.display(),
                report.rows,
                report.created,
                report.updated,
                report.unchanged
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

/// Answers [`Request::ImportProducts`] on an open store.
pub async fn import(store: &Store, file: &Path) -> Response {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(err) => {
            return Response::Error {
                message: format!("cannot read the file: {err}"),
            };
        }
    };
    let catalog = Catalog::new(store.clone(), Arc::new(SystemClock));
    match catalog.import_csv(&bytes, Actor::system(CLI_ACTOR)).await {
        Ok(report) => Response::ProductsImported { report },
        Err(err) => {
            let message = err.to_string();
            match err {
                ProductImportError::Rejected { rejections, .. } => Response::ImportRejected {
                    message,
                    rejections,
                },
                _ => Response::Error { message },
            }
        }
    }
}
