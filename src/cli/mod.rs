//! The command line: `init`, `serve`, `doctor`, `keys`, `user`, `bench`, `audit`, `privacy`,
//! `import` (customers, products, poslog), `demo`, `backup`, `restore`.
//!
//! Every command works without a terminal (for install scripts and cron): secrets come from
//! files or standard input, never from arguments, and the exit code says whether it worked.

pub(crate) mod audit;
mod backup;
mod bench;
pub(crate) mod customers;
mod doctor;
mod generate;
mod keys;
pub(crate) mod poslog;
pub(crate) mod privacy;
pub(crate) mod products;
mod user;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

use crate::app::{self, Deps};
use crate::config::Config;
use crate::store::{MasterKeySource, Store, StoreError, StoreOptions, master};

/// Clientele: the on-premise retail CRM appliance.
#[derive(Debug, Parser)]
#[command(name = "clientele", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Configuration file [default: /etc/clientele/clientele.toml when it exists]
    #[arg(long, global = true, env = "CLIENTELE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Data folder (database, keys, certificate); overrides `data_dir` in the config
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Read the master-key passphrase from this file (stores created with a passphrase)
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        conflicts_with = "passphrase_stdin"
    )]
    passphrase_file: Option<PathBuf>,

    /// Read the master-key passphrase from standard input
    #[arg(long, global = true)]
    passphrase_stdin: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the data folder, master key, keyring, TLS certificate and first admin, and say
    /// where each went
    Init(InitArgs),
    /// Run the appliance: HTTPS web UI and API, and the control socket for local tools
    Serve(ServeArgs),
    /// Check configuration, permissions, disk, certificate and keys; say what to fix
    Doctor(doctor::DoctorArgs),
    /// Manage data keys
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Manage staff accounts
    #[command(subcommand)]
    User(user::UserCommand),
    /// Measure this machine: prints a table, then one JSON line with the figures
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Tamper-evident audit trail: signed checkpoints, exports, offline verification
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Privacy requests: subject access export and erasure of a customer
    #[command(subcommand)]
    Privacy(privacy::PrivacyCommand),
    /// Import data from files
    #[command(subcommand)]
    Import(customers::ImportCommand),
    /// Fill demo stores and realistic customers (with planted duplicates), from a seed
    Demo(customers::DemoArgs),
    /// Write a signed, still-encrypted backup while the server runs (or not), or verify one
    Backup(backup::BackupArgs),
    /// Restore a backup into a new or empty data folder (--data-dir), refusing a damaged file
    /// or a wrong key, and applying the current erasure ledger
    Restore(backup::RestoreArgs),
    /// Write the man pages or a shell's completions (used to build the packages)
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

#[derive(Debug, Args, Default)]
struct InitArgs {
    /// Login of the first administrator
    #[arg(long, default_value = "admin")]
    admin_login: String,
    /// Write the administrator's one-time password to this new file (mode 0600) instead of
    /// printing it; for install scripts, so it never lands in a terminal log
    #[arg(long, value_name = "FILE", conflicts_with = "admin_password_stdin")]
    otp_file: Option<PathBuf>,
    /// Read the administrator's password from standard input instead of making a one-time
    /// password (it must pass the password policy)
    #[arg(long)]
    admin_password_stdin: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address and port for HTTPS, overriding `server.listen`
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,

    /// Development mode: data in ./clientele-data, HTTPS on 127.0.0.1:8443, store created on
    /// first start
    #[arg(long)]
    dev: bool,

    /// Fill demo stores and N customers once the server is up (as `clientele demo`; running
    /// again with the same N changes nothing)
    #[arg(long, value_name = "N")]
    demo: Option<u64>,
}

/// Entry point of the binary.
#[must_use]
pub fn main() -> ExitCode {
    // Everything Clientele creates is private to the service user unless it says otherwise.
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Any failure of a command, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Start(#[from] app::StartError),
    #[error(transparent)]
    Log(#[from] crate::logging::LogError),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error(transparent)]
    Tls(#[from] crate::web::tls::TlsError),
    #[error("{0}")]
    Other(String),
}

fn run(cli: &Cli) -> Result<ExitCode, CliError> {
    // Needs no configuration: it runs on build machines.
    if let Command::Generate(ref args) = cli.command {
        return generate::run(args);
    }
    // Needs no data folder and no master key: an auditor runs it on their own machine.
    if let Command::Audit(audit::AuditCommand::Verify(ref args)) = cli.command {
        return Ok(audit::run_verify(args));
    }
    let dev = matches!(&cli.command, Command::Serve(ServeArgs { dev: true, .. }));
    let config = load_config(cli, dev)?;
    match cli.command {
        Command::Init(ref args) => init(
            &config,
            &key_source(cli, &config)?,
            args,
            cli.passphrase_stdin,
        )
        .map(|()| {
            println!("Start it with: clientele serve");
            ExitCode::SUCCESS
        }),
        Command::Serve(ref args) => serve(cli, config, args),
        Command::Doctor(ref args) => Ok(doctor::run(&config, cli_key_source(cli), args)),
        Command::Keys(ref command) => keys::run(&config, &key_source(cli, &config)?, command),
        Command::User(ref command) => user::run(&config, &key_source(cli, &config)?, command),
        Command::Bench(ref command) => bench::run(command),
        Command::Audit(ref command) => audit::run(&config, &key_source(cli, &config)?, command),
        Command::Privacy(ref command) => privacy::run(&config, &key_source(cli, &config)?, command),
        Command::Import(ref command) => {
            customers::run_import(&config, &key_source(cli, &config)?, command)
        }
        Command::Demo(ref args) => customers::run_demo(&config, &key_source(cli, &config)?, args),
        Command::Backup(ref args) => backup::run(&config, || key_source(cli, &config), args),
        Command::Restore(ref args) => backup::restore(&config, cli_key_source(cli), args),
        Command::Generate(ref args) => generate::run(args),
    }
}

fn load_config(cli: &Cli, dev: bool) -> Result<Config, CliError> {
    let env = std::env::vars();
    let mut config = match &cli.config {
        None if dev => Config::load_dev(env)?,
        file => Config::load(file.as_deref(), env)?,
    };
    if let Some(dir) = &cli.data_dir {
        config.data_dir.clone_from(dir);
    }
    if let Command::Serve(ServeArgs {
        listen: Some(addr), ..
    }) = &cli.command
    {
        config.server.listen = *addr;
    }
    config.validate()?;
    Ok(config)
}

/// The passphrase given on the command line, if any.
fn cli_key_source(cli: &Cli) -> Option<Result<MasterKeySource, CliError>> {
    if cli.passphrase_stdin {
        let mut bytes = Zeroizing::new(Vec::new());
        return Some(
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| {
                    CliError::Other(format!(
                        "cannot read the passphrase from standard input: {e}"
                    ))
                })
                .map(|_| {
                    MasterKeySource::Passphrase(Zeroizing::new(master::trim_newline(
                        bytes.to_vec(),
                    )))
                }),
        );
    }
    cli.passphrase_file.as_ref().map(|path| {
        std::fs::read(path)
            .map_err(|e| {
                CliError::Other(format!(
                    "cannot read passphrase file {}: {e}",
                    path.display()
                ))
            })
            .map(|bytes| MasterKeySource::Passphrase(Zeroizing::new(master::trim_newline(bytes))))
    })
}

fn key_source(cli: &Cli, config: &Config) -> Result<MasterKeySource, CliError> {
    match cli_key_source(cli) {
        Some(source) => source,
        None => Ok(MasterKeySource::from_config(config)?),
    }
}

/// The first admin's password from standard input, when asked for.
fn admin_password(stdin_taken: bool, args: &InitArgs) -> Result<Option<String>, CliError> {
    if !args.admin_password_stdin {
        return Ok(None);
    }
    if stdin_taken {
        return Err(CliError::Other(
            "standard input already carries the passphrase; give it with --passphrase-file instead"
                .into(),
        ));
    }
    let mut text = Zeroizing::new(String::new());
    std::io::stdin().read_to_string(&mut text).map_err(|e| {
        CliError::Other(format!(
            "cannot read the admin password from standard input: {e}"
        ))
    })?;
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
}

fn init(
    config: &Config,
    source: &MasterKeySource,
    args: &InitArgs,
    cli_reads_stdin: bool,
) -> Result<(), CliError> {
    // The admin password is checked before anything is created, so a refused one leaves
    // nothing half made.
    let admin_password = admin_password(cli_reads_stdin, args)?;
    if let Some(password) = &admin_password {
        crate::auth::password::check_policy(password, &[&args.admin_login])
            .map_err(|err| CliError::Other(format!("admin password: {err}")))?;
    }
    let deps = Deps::system();
    crate::store::files::create_private_dir(&config.data_dir, 0o700).map_err(|source| {
        StoreError::Io {
            path: config.data_dir.clone(),
            source,
        }
    })?;
    let report = Store::init(
        &StoreOptions::from_config(config),
        source,
        deps.clock.as_ref(),
        deps.random.as_ref(),
    )?;
    println!("Created a Clientele store.");
    println!("  database:          {}", report.db_dir.display());
    println!("  subject keystore:  {}", report.keystore.display());
    match (&report.master_key_file, report.reused_key_file) {
        (Some(path), false) => println!(
            "  master key:        {} (mode 0400; keep a copy offline: without it the data cannot be read)",
            path.display()
        ),
        (Some(path), true) => println!(
            "  master key:        {} (existing key file used)",
            path.display()
        ),
        (None, _) => println!(
            "  master key:        derived from the passphrase (Argon2id; salt kept in the store)"
        ),
    }
    if let Some(files) = crate::web::tls::ensure_self_signed(config, deps.clock.now())? {
        println!(
            "  TLS certificate:   {} (self-signed)",
            files.cert.display()
        );
    }
    let store = Store::open(
        &StoreOptions::from_config(config),
        source,
        Arc::clone(&deps.clock),
        Arc::clone(&deps.random),
    )?;
    let audit = crate::audit::Audit::open(
        &store,
        Arc::clone(&deps.clock),
        deps.random.as_ref(),
        &config.audit,
    )?;
    let public = audit.write_public_key(&config.data_dir)?;
    println!(
        "  audit signing key: {} (public key in {}; record the fingerprint)",
        audit.public_key().fingerprint(),
        public.display()
    );
    drop(audit);
    let request = crate::control::Request::AddUser {
        login: args.admin_login.clone(),
        display_name: "Administrator".into(),
        role: crate::domain::account::Role::Admin,
        password: admin_password,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
    match runtime.block_on(crate::control::answer(request, store)) {
        crate::control::Response::UserAdded {
            login,
            one_time_password,
        } => {
            user::report_created(
                &login,
                one_time_password.as_deref(),
                args.otp_file.as_deref(),
            )?;
        }
        crate::control::Response::Error { message } => return Err(CliError::Other(message)),
        other => return Err(CliError::Other(format!("unexpected answer: {other:?}"))),
    }
    Ok(())
}

fn serve(cli: &Cli, config: Config, args: &ServeArgs) -> Result<ExitCode, CliError> {
    let _log = crate::logging::init(&config, true)?;
    let source = key_source(cli, &config)?;
    if args.dev && !config.db_dir().exists() {
        init(
            &config,
            &source,
            &InitArgs {
                admin_login: "admin".into(),
                otp_file: None,
                admin_password_stdin: false,
            },
            false,
        )?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
    let demo = args.demo;
    runtime.block_on(async move {
        let app = app::serve(config, Deps::system(), source, Box::new(reread_config)).await?;
        let addr = app.https_addr;
        let host = if addr.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            addr.ip().to_string()
        };
        let host = if addr.is_ipv6() && !addr.ip().is_unspecified() {
            format!("[{host}]")
        } else {
            host
        };
        println!("Clientele is serving on https://{host}:{}/", addr.port());
        if let Some(count) = demo {
            println!("Filling demo data ({count} customers)...");
            match crate::control::answer(
                crate::control::Request::Demo {
                    customers: count,
                    seed: 1,
                },
                app.store.clone(),
            )
            .await
            {
                crate::control::Response::DemoFilled { report } => customers::print_demo(&report),
                crate::control::Response::Error { message } => {
                    eprintln!("error: demo data not filled: {message}");
                }
                _ => eprintln!("error: demo data not filled"),
            }
        }
        wait_for_shutdown().await;
        app.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The configuration as this command read it at start, read again (for a reload on SIGHUP).
fn reread_config() -> Result<Config, String> {
    let cli = Cli::try_parse().map_err(|e| e.to_string())?;
    let dev = matches!(&cli.command, Command::Serve(ServeArgs { dev: true, .. }));
    load_config(&cli, dev).map_err(|e| e.to_string())
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
