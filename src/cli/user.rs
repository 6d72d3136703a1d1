//! `clientele user add`: creates a staff account. With the server running the request goes
//! through the control socket; otherwise the store is opened here.
//!
//! Without `--password-stdin`, a one-time password is made; it is printed, or with
//! `--otp-file FILE` written to a new file readable only by its owner (for install scripts,
//! so the password never lands in a terminal log). The account is recorded in the audit trail
//! as created by the system actor `cli` (see `control::answer`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use crate::auth::accounts::NewUser;
use crate::clock::{SystemClock, SystemRandom};
use crate::config::Config;
use crate::control::{self, ControlError, Request, Response};
use crate::domain::account::Role;
use crate::store::{MasterKeySource, Store, StoreOptions};

use super::CliError;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a staff account
    Add(AddArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Sign-in name (letters, digits, dots, dashes, underscores, @)
    #[arg(long)]
    pub login: String,
    /// Name shown in the UI [default: the login]
    #[arg(long)]
    pub display_name: Option<String>,
    /// admin, manager, associate or compliance
    #[arg(long)]
    pub role: Role,
    /// Read the password from standard input instead of making a one-time password
    #[arg(long)]
    pub password_stdin: bool,
    /// Write the one-time password to this new file (mode 0600) instead of printing it
    #[arg(long, value_name = "FILE")]
    pub otp_file: Option<PathBuf>,
}

pub fn run(
    config: &Config,
    source: &MasterKeySource,
    command: &UserCommand,
) -> Result<ExitCode, CliError> {
    let UserCommand::Add(args) = command;
    let password = if args.password_stdin {
        let mut text = Zeroizing::new(String::new());
        std::io::stdin().read_to_string(&mut text).map_err(|e| {
            CliError::Other(format!("cannot read the password from standard input: {e}"))
        })?;
        Some(text.trim_end_matches(['\n', '\r']).to_owned())
    } else {
        None
    };
    let request = Request::AddUser {
        login: args.login.clone(),
        display_name: args
            .display_name
            .clone()
            .unwrap_or_else(|| args.login.clone()),
        role: args.role,
        password,
    };
    let response =
        match control::request(&config.control_socket(), &request, Duration::from_secs(60)) {
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
                runtime.block_on(control::answer(request, store))
            }
            Err(err) => return Err(err.into()),
        };
    match response {
        Response::UserAdded {
            login,
            one_time_password,
        } => {
            report_created(
                &login,
                one_time_password.as_deref(),
                args.otp_file.as_deref(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message } => Err(CliError::Other(message)),
        other => Err(CliError::Other(format!(
            "unexpected answer from the server: {other:?}"
        ))),
    }
}

/// Tells where the one-time password is, or prints it.
pub fn report_created(
    login: &str,
    one_time_password: Option<&str>,
    otp_file: Option<&Path>,
) -> Result<(), CliError> {
    match (one_time_password, otp_file) {
        (None, _) => println!("Created user {login} with the password given."),
        (Some(password), Some(path)) => {
            crate::store::files::write_new_private(path, format!("{password}\n").as_bytes())
                .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))?;
            println!(
                "Created user {login}; the one-time password is in {} (mode 0600). It must be changed at the first sign-in.",
                path.display()
            );
        }
        (Some(password), None) => {
            println!("Created user {login} with the one-time password:");
            println!("  {password}");
            println!("It must be changed at the first sign-in.");
        }
    }
    Ok(())
}

impl Request {
    /// The new-user request of `user add` and `init`.
    #[must_use]
    pub fn new_user(&self) -> Option<NewUser> {
        match self {
            Request::AddUser {
                login,
                display_name,
                role,
                password,
            } => Some(NewUser {
                login: login.clone(),
                display_name: display_name.clone(),
                role: *role,
                stores: Vec::new(),
                password: password.clone(),
            }),
            _ => None,
        }
    }
}
