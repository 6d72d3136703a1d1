//! `clientele backup --out FILE`, `clientele backup verify FILE` and `clientele restore FILE`.
//!
//! With the server running, a backup is streamed by the server itself through the control
//! socket (the store can only be opened by one process); with it stopped, the store is opened
//! here. Either way the file is written beside its final name, synced, read back and verified
//! before it is renamed into place, and the backup is recorded in the audit trail
//! (`backup.created`, actor `cli`). Verifications and restores are recorded too.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::audit::{Action, PublicKey};
use crate::backups;
use crate::clock::{SystemClock, SystemRandom};
use crate::config::Config;
use crate::control::{self, ControlError, Request, Response};
use crate::store::backup::{self, BackupError, RestorePlan, Verified};
use crate::store::{MasterKeySource, Store, StoreOptions};

use super::CliError;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    command: Option<BackupCommand>,
    /// Write the backup to this file (it must not exist yet)
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Check a backup file: format, every digest and the signature
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The backup file
    file: PathBuf,
    /// The audit public key the backup must be signed with [default: data_dir/audit-signing.pub
    /// when it exists]
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file
    file: PathBuf,
    /// The master key file the backup was made with (for stores that use a key file); it is
    /// copied into the restored data folder
    #[arg(long, value_name = "FILE")]
    master_key: Option<PathBuf>,
    /// The current erasure ledger (keys/erasures.ledger beside the master key of the store
    /// the backup came from); every erasure in it is applied to the restored data
    #[arg(long, value_name = "FILE", conflicts_with = "without_current_ledger")]
    erasure_ledger: Option<PathBuf>,
    /// Restore with only the ledger inside the backup (when the current ledger is lost);
    /// customers erased after the backup was made would be readable again
    #[arg(long)]
    without_current_ledger: bool,
    /// The audit public key the backup must be signed with
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
}

fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(path)
        .map_err(|err| CliError::Other(format!("cannot resolve {}: {err}", path.display())))
}

fn in_file(path: &Path, err: &BackupError) -> CliError {
    CliError::Other(format!("backup {}: {err}", path.display()))
}

fn read_public_key(path: &Path) -> Result<[u8; 32], CliError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        CliError::Other(format!("cannot read public key {}: {err}", path.display()))
    })?;
    PublicKey::from_text(&text)
        .map(|key| key.0)
        .map_err(|err| CliError::Other(format!("public key {}: {err}", path.display())))
}

/// The public key to check against: the one given, else the data folder's when present.
fn expected_key(given: Option<&Path>, config: &Config) -> Result<Option<[u8; 32]>, CliError> {
    if let Some(path) = given {
        return read_public_key(path).map(Some);
    }
    let local = config.data_dir.join(crate::audit::PUBLIC_KEY_FILE);
    if local.exists() {
        return read_public_key(&local).map(Some);
    }
    Ok(None)
}

pub fn run(
    config: &Config,
    source: impl FnOnce() -> Result<MasterKeySource, CliError>,
    args: &BackupArgs,
) -> Result<ExitCode, CliError> {
    match (&args.command, &args.out) {
        (Some(BackupCommand::Verify(verify_args)), _) => verify(config, source, verify_args),
        (None, Some(out)) => create(config, source, out),
        (None, None) => Err(CliError::Other(
            "say where to write the backup: clientele backup --out FILE \
             (or check one: clientele backup verify FILE)"
                .into(),
        )),
    }
}

fn create(
    config: &Config,
    source: impl FnOnce() -> Result<MasterKeySource, CliError>,
    out: &Path,
) -> Result<ExitCode, CliError> {
    let out = absolute(out)?;
    if out.exists() {
        return Err(CliError::Other(format!(
            "{} already exists; choose a new file name for the backup",
            out.display()
        )));
    }
    let file = backups::name_of(&out);
    let expected = expected_key(None, config)?;
    let request = Request::Backup { file: file.clone() };
    let verified = match control::request_stream(
        &config.control_socket(),
        &request,
        backups::SERVER_TIMEOUT,
    ) {
        Ok((Response::BackupStream, mut stream)) => {
            println!("The running server is streaming the backup...");
            backups::write_verified(&out, expected.as_ref(), |sink| {
                std::io::copy(&mut stream, sink).map_err(BackupError::Write)?;
                Ok(())
            })
            .map_err(|err| {
                CliError::Other(format!(
                    "backup {} not written: {err} (the server log says why it stopped)",
                    out.display()
                ))
            })?
        }
        Ok((Response::Error { message }, _)) => return Err(CliError::Other(message)),
        Ok(_) => return Err(CliError::Other("unexpected answer from the server".into())),
        Err(ControlError::NotRunning { .. }) => {
            let store = open(config, &source()?)?;
            let key = crate::audit::load_signing_key(&store, &SystemRandom::new())?;
            let created = backups::create(&store, &key, &out, control::CLI_ACTOR);
            // Limitation: written by the user running this command; when that is root, the
            // admin page cannot read it until the server writes the next status itself.
            backups::write_status(
                &config.data_dir,
                &backups::status_of(&file, &created, "command line", &SystemClock),
            );
            created.map_err(|err| in_file(&out, &err))?
        }
        Err(err) => return Err(err.into()),
    };
    print_summary(&out, &verified);
    Ok(ExitCode::SUCCESS)
}

fn open(config: &Config, source: &MasterKeySource) -> Result<Store, CliError> {
    Ok(Store::open(
        &StoreOptions::from_config(config),
        source,
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
    )?)
}

fn print_summary(path: &Path, verified: &Verified) {
    let manifest = &verified.manifest;
    println!("Backup {} verified.", path.display());
    println!("  started:        {}", manifest.started_at);
    println!("  finished:       {}", manifest.finished_at);
    println!("  schema version: {}", manifest.schema_version);
    for (name, section) in &manifest.sections {
        println!(
            "  {name:<24} {:>10} frames {:>14} bytes",
            section.count, section.bytes
        );
    }
    println!("  size:           {} bytes", verified.bytes);
    println!(
        "  signed by:      {}",
        PublicKey(verified.public_key).fingerprint()
    );
}

fn verify(
    config: &Config,
    source: impl FnOnce() -> Result<MasterKeySource, CliError>,
    args: &VerifyArgs,
) -> Result<ExitCode, CliError> {
    let expected = expected_key(args.public_key.as_deref(), config)?;
    let file = backups::name_of(&args.file);
    let checked = std::fs::File::open(&args.file)
        .map_err(|source| BackupError::Io {
            path: args.file.clone(),
            source,
        })
        .and_then(|input| backup::read(input, expected.as_ref(), |_| Ok(())));
    let (records, failure) = match &checked {
        Ok(verified) => (verified.manifest.records(), None),
        Err(err) => (0, Some(err.to_string())),
    };
    record_verification(config, source, &file, records, failure.as_deref());
    let verified = checked.map_err(|err| in_file(&args.file, &err))?;
    print_summary(&args.file, &verified);
    if expected.is_none() {
        println!(
            "  (no public key given or found in the data folder: the signature was checked \
             against the key inside the file; compare the fingerprint above with your records)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Records a verification in this appliance's trail when there is one: through the running
/// server, else by opening the store. A machine without a store (an auditor's) records
/// nothing and says so.
fn record_verification(
    config: &Config,
    source: impl FnOnce() -> Result<MasterKeySource, CliError>,
    file: &str,
    records: u64,
    failure: Option<&str>,
) {
    let request = Request::BackupVerified {
        file: file.to_owned(),
        records,
        failure: failure.map(str::to_owned),
    };
    match control::request(
        &config.control_socket(),
        &request,
        std::time::Duration::from_secs(30),
    ) {
        Ok(Response::Recorded) => return,
        Ok(Response::Error { message }) => {
            eprintln!("note: the verification was not recorded in the audit trail: {message}");
            return;
        }
        Ok(_) | Err(ControlError::Io { .. } | ControlError::Answer(_)) => {
            eprintln!("note: the verification was not recorded in the audit trail");
            return;
        }
        Err(ControlError::NotRunning { .. }) => {}
    }
    if !config.db_dir().exists() {
        eprintln!("note: no store here, so the verification is not recorded in an audit trail");
        return;
    }
    let recorded = source()
        .and_then(|source| open(config, &source))
        .and_then(|store| {
            let event = backups::event(
                Action::BackupVerified,
                control::CLI_ACTOR,
                file,
                failure.map_or(Ok(records), Err),
            );
            Ok(backups::record_blocking(&store, event)?)
        });
    if let Err(err) = recorded {
        eprintln!("note: the verification was not recorded in the audit trail: {err}");
    }
}

/// The master key the backup must open with, and where to install a key file in the new
/// data folder.
fn restore_key(
    config: &Config,
    passphrase: Option<Result<MasterKeySource, CliError>>,
    args: &RestoreArgs,
) -> Result<(MasterKeySource, Option<PathBuf>), CliError> {
    let configured_key = config.master_key_file();
    let source = match (passphrase, &args.master_key) {
        (Some(source), _) => source?,
        (None, Some(path)) => MasterKeySource::File(absolute(path)?),
        (None, None) if configured_key.exists() => MasterKeySource::File(configured_key.clone()),
        (None, None) => {
            return Err(CliError::Other(
                "give the master key the backup was made with: --master-key FILE \
                 (or --passphrase-file FILE for a store that uses a passphrase)"
                    .into(),
            ));
        }
    };
    let install = match &source {
        MasterKeySource::File(path)
            if *path != configured_key
                && configured_key.starts_with(&config.data_dir)
                && !configured_key.exists() =>
        {
            Some(configured_key)
        }
        _ => None,
    };
    Ok((source, install))
}

/// The current erasure ledger, which wins over the backup's own.
fn restore_ledger(
    config: &Config,
    options: &StoreOptions,
    args: &RestoreArgs,
) -> Result<Option<PathBuf>, CliError> {
    let outside_ledger = (!options.erasure_ledger.starts_with(&config.data_dir)
        && options.erasure_ledger.exists())
    .then(|| options.erasure_ledger.clone());
    match (&args.erasure_ledger, outside_ledger) {
        (Some(path), _) if !path.exists() => Err(CliError::Other(format!(
            "erasure ledger {} does not exist",
            path.display()
        ))),
        (Some(path), _) => Ok(Some(absolute(path)?)),
        (None, Some(path)) => Ok(Some(path)),
        (None, None) if args.without_current_ledger => Ok(None),
        (None, None) => Err(CliError::Other(
            "give the current erasure ledger with --erasure-ledger FILE (keys/erasures.ledger, \
             kept beside the master key); without it, customers erased after this backup was \
             made would be readable again. If it is truly lost, say so with \
             --without-current-ledger"
                .into(),
        )),
    }
}

pub fn restore(
    config: &Config,
    passphrase: Option<Result<MasterKeySource, CliError>>,
    args: &RestoreArgs,
) -> Result<ExitCode, CliError> {
    let options = StoreOptions::from_config(config);
    backup::check_target(&config.data_dir).map_err(|err| CliError::Other(err.to_string()))?;
    let (source, install_key_file) = restore_key(config, passphrase, args)?;
    let current_ledger = restore_ledger(config, &options, args)?;
    let expected = match &args.public_key {
        Some(path) => Some(read_public_key(path)?),
        None => None,
    };

    let input = std::fs::File::open(&args.file).map_err(|source| {
        in_file(
            &args.file,
            &BackupError::Io {
                path: args.file.clone(),
                source,
            },
        )
    })?;
    let plan = RestorePlan {
        options: &options,
        source: &source,
        current_ledger: current_ledger.as_deref(),
        install_key_file,
        expected_key: expected.as_ref(),
    };
    let report = backup::restore(input, &plan, &SystemRandom::new())
        .map_err(|err| in_file(&args.file, &err))?;

    // The restore is recorded in the restored store's own trail.
    let configured_key = config.master_key_file();
    let open_source = match source {
        MasterKeySource::File(_) if configured_key.exists() => {
            MasterKeySource::File(configured_key)
        }
        other => other,
    };
    let store = open(config, &open_source)?;
    let event = backups::event(
        Action::BackupRestored,
        control::CLI_ACTOR,
        &backups::name_of(&args.file),
        Ok(report.records),
    )
    .reason(format!(
        "{} records; {} erasures newer than the backup applied",
        report.records, report.erased_since_backup
    ));
    backups::record_blocking(&store, event)?;
    drop(store);
    print_restore(&args.file, &report);
    Ok(ExitCode::SUCCESS)
}

fn print_restore(file: &Path, report: &backup::RestoreReport) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "Restored {} into {}.",
        file.display(),
        report.data_dir.display()
    );
    let _ = writeln!(stdout, "  backup started:   {}", report.started_at);
    let _ = writeln!(stdout, "  records:          {}", report.records);
    let _ = writeln!(stdout, "  schema version:   {}", report.schema_version);
    let _ = writeln!(
        stdout,
        "  erasures applied: {} newer than the backup",
        report.erased_since_backup
    );
    let _ = writeln!(
        stdout,
        "  signed by:        {}",
        PublicKey(report.public_key).fingerprint()
    );
    let _ = writeln!(
        stdout,
        "Start it with: clientele serve --data-dir {}",
        report.data_dir.display()
    );
}
