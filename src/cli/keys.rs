//! `clientele keys rotate`: add a data-key term. With the server running, the request goes
//! through the control socket and the server keeps serving while it rewrites older records;
//! otherwise the store is opened here and the rewrite runs to the end before the command exits.
//! Either way the rotation is recorded in the audit trail (`keys.rotated`, actor `cli`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;

use crate::clock::{SystemClock, SystemRandom};
use crate::config::Config;
use crate::control::{self, ControlError, Request, Response};
use crate::store::{ChangeSet, MasterKeySource, Store, StoreError, StoreOptions};

use super::CliError;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a data-key term; new writes use it and older records are rewritten in the background
    Rotate,
    /// Show the key terms and the encryption count of the current one
    Status,
}

pub fn run(
    config: &Config,
    source: &MasterKeySource,
    command: &KeysCommand,
) -> Result<ExitCode, CliError> {
    let request = match command {
        KeysCommand::Rotate => Request::Rotate,
        KeysCommand::Status => Request::Status,
    };
    match control::request(&config.control_socket(), &request, Duration::from_secs(30)) {
        Ok(response) => return print(&response),
        Err(ControlError::NotRunning { .. }) => {}
        Err(err) => return Err(err.into()),
    }

    let store = Store::open(
        &StoreOptions::from_config(config),
        source,
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
    )?;
    let response = match command {
        KeysCommand::Rotate => {
            let rotated = store.rotate_blocking();
            let mut set = ChangeSet::new();
            control::rotation_event(&rotated).add_to(&mut set);
            let recorded = store.commit_blocking(set);
            let term = match control::rotation_response(rotated, recorded) {
                Response::Rotated { term } => term,
                other => return print(&other),
            };
            if !store.wait_for_rewrite(Duration::from_secs(24 * 3600)) {
                return Err(StoreError::WriteFailed(
                    "the rewrite of older records did not finish".into(),
                )
                .into());
            }
            Response::Rotated { term }
        }
        KeysCommand::Status => Response::Status {
            version: env!("CARGO_PKG_VERSION").into(),
            keys: store.key_status(),
        },
    };
    print(&response)
}

fn print(response: &Response) -> Result<ExitCode, CliError> {
    match response {
        Response::Rotated { term } => {
            println!("Data-key term {term} is now current; older records are rewritten under it.");
            Ok(ExitCode::SUCCESS)
        }
        Response::Status { keys, .. } => {
            println!("current term:        {}", keys.current_term);
            println!("terms in keyring:    {:?}", keys.terms);
            println!(
                "encryptions (term):  {}",
                keys.encryptions_under_current_term
            );
            println!(
                "rewrite pending:     {}",
                if keys.rewrite_pending { "yes" } else { "no" }
            );
            println!("subject keys:        {}", keys.subjects);
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message } => Err(CliError::Other(message.clone())),
        _ => Err(CliError::Other("unexpected answer from the server".into())),
    }
}
