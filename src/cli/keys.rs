//! `clientele keys rotate`: add a data-key term. With the server running, the request goes
//! through the control socket and the server keeps serving while it rewrites older records;
//! otherwise the store is opened here and the rewrite runs to the end before the command exits.
//! Either way the rotation is recorded in the audit trail (`keys.rotated`, actor `cli`).
//!
//! `clientele keys rewrap` seals the keyring, the key check and the subject keystore under a
//! new master key file or passphrase, with the server stopped (see `store::rewrap`); no record
//! is rewritten. It is recorded as `keys.rewrapped`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use crate::audit::{Action, Actor, Event};
use crate::clock::{SystemClock, SystemRandom};
use crate::config::Config;
use crate::control::{self, ControlError, Request, Response};
use crate::store::rewrap::{self, NewMaster};
use crate::store::{ChangeSet, MasterKeySource, Store, StoreError, StoreOptions};

use super::CliError;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a data-key term; new writes use it and older records are rewritten in the background
    Rotate,
    /// Show the key terms and the encryption count of the current one
    Status,
    /// Change the master key file or passphrase without rewriting data (server stopped)
    Rewrap(RewrapArgs),
}

#[derive(Debug, Args)]
pub struct RewrapArgs {
    /// Switch to the passphrase in this file (Argon2id, new salt) instead of a new key file
    #[arg(long, value_name = "FILE", conflicts_with = "new_key_file")]
    new_passphrase_file: Option<PathBuf>,
    /// Write the new random key to this file [default: the configured master key file,
    /// replaced once the switch is durable]
    #[arg(long, value_name = "FILE")]
    new_key_file: Option<PathBuf>,
}

pub fn run(
    config: &Config,
    source: &MasterKeySource,
    command: &KeysCommand,
) -> Result<ExitCode, CliError> {
    let request = match command {
        KeysCommand::Rotate => Request::Rotate,
        KeysCommand::Status => Request::Status,
        KeysCommand::Rewrap(args) => return rewrap(config, source, args),
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
        KeysCommand::Rewrap(_) => return Err(CliError::Other("rewrap runs on its own".into())),
    };
    print(&response)
}

fn rewrap(
    config: &Config,
    source: &MasterKeySource,
    args: &RewrapArgs,
) -> Result<ExitCode, CliError> {
    // The running server holds the master key in memory and seals with it: it must be stopped.
    if control::request(
        &config.control_socket(),
        &Request::Status,
        Duration::from_secs(5),
    )
    .is_ok()
    {
        return Err(CliError::Other(
            "the server is running; stop it first (systemctl stop clientele), rewrap, then              start it with the new key"
                .into(),
        ));
    }
    let new = match &args.new_passphrase_file {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|err| {
                CliError::Other(format!(
                    "cannot read passphrase file {}: {err}",
                    path.display()
                ))
            })?;
            let bytes = Zeroizing::new(crate::store::master::trim_newline(bytes));
            if bytes.len() < 12 {
                return Err(CliError::Other(format!(
                    "the new passphrase in {} is shorter than 12 characters; choose a longer one",
                    path.display()
                )));
            }
            NewMaster::Passphrase(bytes)
        }
        None => NewMaster::KeyFile(
            args.new_key_file
                .clone()
                .unwrap_or_else(|| config.master_key_file()),
        ),
    };
    let options = StoreOptions::from_config(config);
    let report = rewrap::rewrap(&options, source, &new, &SystemRandom::new())?;

    let new_source = match &new {
        NewMaster::KeyFile(path) => MasterKeySource::File(path.clone()),
        NewMaster::Passphrase(bytes) => MasterKeySource::Passphrase(bytes.clone()),
    };
    let store = Store::open(
        &options,
        &new_source,
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
    )?;
    let mut set = ChangeSet::new();
    Event::new(Action::KeysRewrapped)
        .by(Actor::system(control::CLI_ACTOR))
        .target("master_key", &report.new_fingerprint)
        .add_to(&mut set);
    store.commit_blocking(set)?;
    drop(store);

    println!("The master key was changed; no record was rewritten.");
    println!("  keyring records re-sealed: {}", report.keyring_records);
    println!("  subject keys re-sealed:    {}", report.subject_keys);
    println!("  old key fingerprint:       {}", report.old_fingerprint);
    println!("  new key fingerprint:       {}", report.new_fingerprint);
    match (&report.key_file, &args.new_passphrase_file) {
        (Some(path), _) => println!(
            "  new key file:              {} (mode 0400; keep a copy offline)",
            path.display()
        ),
        (None, Some(path)) => println!(
            "  now opened with the passphrase in {}: set keys.passphrase_file to it",
            path.display()
        ),
        (None, None) => {}
    }
    println!(
        "Backups made before now still need the old key or passphrase: keep it as long as          you keep them, and make a new backup now."
    );
    Ok(ExitCode::SUCCESS)
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
