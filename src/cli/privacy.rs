//! `clientele privacy export|erase --customer ID`: privacy requests from the command line.
//!
//! With the server running the request goes through the control socket, and the server's own
//! customer service answers it (so its search index forgets an erased customer at once);
//! with the server stopped the store is opened here. Either way the request is recorded in
//! the audit trail with the system actor `cli`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::audit::Actor;
use crate::clock::{SystemClock, SystemRandom};
use crate::config::Config;
use crate::control::{self, CLI_ACTOR, ControlError, Request, Response};
use crate::domain::Id;
use crate::store::{MasterKeySource, Store, StoreOptions};

use super::CliError;

#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Subject access export: everything held about a customer, as JSON
    Export(ExportArgs),
    /// Erase a customer (and the profiles merged into it) by destroying their keys
    Erase(EraseArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The customer's id
    #[arg(long, value_name = "ID")]
    customer: String,
    /// Write the export to this new file (mode 0600) instead of standard output
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The customer's id
    #[arg(long, value_name = "ID")]
    customer: String,
    /// Confirm: erasure cannot be undone
    #[arg(long)]
    yes: bool,
}

fn customer_id(text: &str) -> Result<Id, CliError> {
    text.trim().parse().map_err(|_| {
        CliError::Other(format!(
            "--customer: {text:?} is not a customer id (26 characters, as shown on the customer page)"
        ))
    })
}

pub fn run(
    config: &Config,
    source: &MasterKeySource,
    command: &PrivacyCommand,
) -> Result<ExitCode, CliError> {
    let request = match command {
        PrivacyCommand::Export(args) => {
            if let Some(out) = &args.out
                && out.exists()
            {
                return Err(CliError::Other(format!(
                    "--out: {} already exists; choose a new file",
                    out.display()
                )));
            }
            Request::PrivacyExport {
                customer: customer_id(&args.customer)?,
            }
        }
        PrivacyCommand::Erase(args) => {
            let customer = customer_id(&args.customer)?;
            if !args.yes {
                return Err(CliError::Other(
                    "erasure cannot be undone; add --yes to erase this customer".into(),
                ));
            }
            Request::PrivacyErase { customer }
        }
    };
    let response =
        match control::request(&config.control_socket(), &request, Duration::from_secs(120)) {
            Ok(response) => response,
            Err(ControlError::NotRunning { .. }) => {
                let store = Store::open(
                    &StoreOptions::from_config(config),
                    source,
                    Arc::new(SystemClock),
                    Arc::new(SystemRandom::new()),
                )?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
                runtime.block_on(answer(request, &store))
            }
            Err(err) => return Err(err.into()),
        };
    match (response, command) {
        (Response::PrivacyExported { export }, PrivacyCommand::Export(args)) => {
            let mut text = serde_json::to_vec_pretty(&export)
                .map_err(|e| CliError::Other(format!("cannot write the export: {e}")))?;
            text.push(b'\n');
            match &args.out {
                Some(path) => {
                    write_new(path, &text).map_err(|e| {
                        CliError::Other(format!("cannot write {}: {e}", path.display()))
                    })?;
                    eprintln!("Subject access export written to {}.", path.display());
                }
                None => std::io::stdout()
                    .write_all(&text)
                    .map_err(|e| CliError::Other(format!("cannot write the export: {e}")))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        (Response::PrivacyErased { erasure }, _) => {
            println!(
                "Customer {} erased: {} profile key(s) destroyed, {} identity look-up(s) removed.",
                erasure.customer,
                erasure.profiles.len(),
                erasure.identities
            );
            Ok(ExitCode::SUCCESS)
        }
        (Response::Error { message }, _) => Err(CliError::Other(message)),
        _ => Err(CliError::Other("unexpected answer from the server".into())),
    }
}

fn write_new(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Answers a privacy request on an open store: with the running server's customer service
/// when this is the server, else with a new one.
pub async fn answer(request: Request, store: &Store) -> Response {
    let customers = crate::crm::privacy::service_for(store, "US");
    let actor = Actor::system(CLI_ACTOR);
    let failed = |err: crate::crm::CrmError| Response::Error {
        message: err.to_string(),
    };
    match request {
        Request::PrivacyExport { customer } => {
            match customers.export_subject(customer, actor).await {
                Ok(export) => match serde_json::to_value(&export) {
                    Ok(export) => Response::PrivacyExported { export },
                    Err(err) => Response::Error {
                        message: format!("cannot encode the export: {err}"),
                    },
                },
                Err(err) => failed(err),
            }
        }
        Request::PrivacyErase { customer } => match customers.erase(customer, actor).await {
            Ok(erasure) => Response::PrivacyErased { erasure },
            Err(err) => failed(err),
        },
        _ => Response::Error {
            message: "not a privacy request".into(),
        },
    }
}
