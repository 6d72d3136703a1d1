//! `clientele audit checkpoint | export | verify`.
//!
//! `checkpoint` and `export` need the store: with the server running they go through the
//! control socket (the server writes the export file itself, at the path given, as the
//! service user); otherwise the store is opened here. `verify` needs neither the data folder
//! nor the master key: it reads the export and, when given, the public key and a saved
//! checkpoint.
//!
//! Exit codes of `verify`: 0 verified, 1 the export does not verify (the message names the
//! first bad entry), 2 it could not be checked (unreadable file, malformed key or checkpoint).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::audit::export::{self, ExportSummary, Format, Selection};
use crate::audit::verify::{self, VerifyReport};
use crate::audit::{Actor, Audit, Checkpoint, PUBLIC_KEY_FILE, PublicKey};
use crate::clock::{SystemClock, SystemRandom};
use crate::config::{AuditConfig, Config};
use crate::control::{self, ControlError, Request, Response};
use crate::store::{MasterKeySource, Store, StoreOptions};

use super::CliError;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the newest signed checkpoint as JSON, signing one first if entries are not
    /// covered yet; keep a copy to check later exports against (`verify --checkpoint`)
    Checkpoint,
    /// Export the entries of a time range as a verifiable bundle (jsonl) or for other tools
    Export(ExportArgs),
    /// Verify an exported bundle offline: needs no data folder and no master key
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Oldest entry time, included: RFC 3339 (2026-01-31T09:00:00Z) or a UTC date
    /// (2026-01-31) [default: the oldest entry]
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<jiff::Timestamp>,
    /// Entry time the export stops before (excluded), in the same forms [default: now]
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<jiff::Timestamp>,
    /// jsonl (the verifiable bundle), csv, cef or syslog
    #[arg(long, default_value = "jsonl")]
    pub format: Format,
    /// File to write (a new file, mode 0600). With the server running, the server writes it
    /// as the service user, so give a path that user can write
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The exported bundle (jsonl); - reads standard input
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// A checkpoint saved earlier (the output of `clientele audit checkpoint`): the export
    /// must contain its entry with the same hash
    #[arg(long, value_name = "SAVED")]
    pub checkpoint: Option<PathBuf>,
    /// The audit public key recorded at install time: the text
    /// `clientele-audit-ed25519 ...` or a file holding it (`audit-signing.pub`)
    #[arg(long, value_name = "KEY")]
    pub public_key: Option<String>,
}

/// `checkpoint` and `export`, which need the store.
pub fn run(
    config: &Config,
    source: &MasterKeySource,
    command: &AuditCommand,
) -> Result<ExitCode, CliError> {
    let request = match command {
        AuditCommand::Verify(args) => return Ok(run_verify(args)),
        AuditCommand::Checkpoint => Request::AuditCheckpoint,
        AuditCommand::Export(args) => Request::AuditExport {
            from: args.from,
            to: args.to,
            format: args.format,
            out: std::path::absolute(&args.out)
                .map_err(|err| CliError::Other(format!("{}: {err}", args.out.display())))?,
        },
    };

    let spinner = matches!(request, Request::AuditExport { .. }).then(waiting_spinner);
    let answer = control::request(
        &config.control_socket(),
        &request,
        Duration::from_secs(24 * 3600),
    );
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    let response = match answer {
        Ok(response) => response,
        Err(ControlError::NotRunning { .. }) => {
            let store = Store::open(
                &StoreOptions::from_config(config),
                source,
                Arc::new(SystemClock),
                Arc::new(SystemRandom::new()),
            )?;
            let audit = Audit::open(
                &store,
                Arc::new(SystemClock),
                &SystemRandom::new(),
                &config.audit,
            )?;
            let bar = progress_bar();
            let mut progress = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
            };
            let response = respond(&audit, request, &mut progress);
            bar.finish_and_clear();
            response
        }
        Err(err) => return Err(err.into()),
    };
    print(&response, config)
}

/// Answers an audit request of the control socket against the server's store (blocking).
pub(crate) fn answer(request: Request, store: &Store) -> Response {
    // The server's own `Audit` is not reachable from the socket; this one shares its store
    // and signing key, and checkpoints are keyed by size, so the two never disagree.
    match Audit::open(
        store,
        Arc::new(SystemClock),
        &SystemRandom::new(),
        &AuditConfig::default(),
    ) {
        Ok(audit) => respond(&audit, request, &mut |_, _| {}),
        Err(err) => Response::Error {
            message: err.to_string(),
        },
    }
}

fn respond(audit: &Audit, request: Request, progress: &mut dyn FnMut(u64, u64)) -> Response {
    let error = |message: String| Response::Error { message };
    match request {
        Request::AuditCheckpoint => match audit.checkpoint_now() {
            Ok(checkpoint) => Response::AuditCheckpoint { checkpoint },
            Err(err) => error(err.to_string()),
        },
        Request::AuditExport {
            from,
            to,
            format,
            out,
        } => {
            let (from_seq, to_seq) = match export::seq_range_for_times(audit, from, to) {
                Ok(range) => range,
                Err(err) => return error(err.to_string()),
            };
            let selection = Selection::range(from_seq, to_seq);
            match export::export_to_file(
                audit,
                &selection,
                format,
                &out,
                &Actor::system("cli"),
                progress,
            ) {
                Ok(summary) => Response::AuditExported { summary, out },
                Err(err) => error(format!("{}: {err}", out.display())),
            }
        }
        _ => error("not an audit request".into()),
    }
}

fn print(response: &Response, config: &Config) -> Result<ExitCode, CliError> {
    match response {
        Response::AuditCheckpoint {
            checkpoint: Some(checkpoint),
        } => {
            println!("{}", checkpoint.to_line());
            Ok(ExitCode::SUCCESS)
        }
        Response::AuditCheckpoint { checkpoint: None } => Err(CliError::Other(
            "the audit trail is empty: there is nothing to sign yet".into(),
        )),
        Response::AuditExported { summary, out } => {
            print_summary(summary, out, config);
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message } => Err(CliError::Other(message.clone())),
        other => Err(CliError::Other(format!(
            "unexpected answer from the server: {other:?}"
        ))),
    }
}

fn print_summary(summary: &ExportSummary, out: &Path, config: &Config) {
    match (summary.first_seq, summary.last_seq) {
        (Some(first), Some(last)) => println!(
            "Exported {} entries ({first} to {last}) to {} ({} bytes).",
            summary.entries,
            out.display(),
            summary.bytes
        ),
        _ => println!(
            "No entry in that range; wrote {} ({} bytes).",
            out.display(),
            summary.bytes
        ),
    }
    if out
        .extension()
        .is_some_and(|e| e == Format::Jsonl.extension())
        || summary.checkpoints > 0
    {
        println!(
            "Check it anywhere with: clientele audit verify {} --public-key {}",
            out.display(),
            config.data_dir.join(PUBLIC_KEY_FILE).display()
        );
    }
}

/// `clientele audit verify`.
#[must_use]
pub fn run_verify(args: &VerifyArgs) -> ExitCode {
    let cannot = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(2)
    };
    let key = match args.public_key.as_deref().map(read_public_key).transpose() {
        Ok(key) => key,
        Err(message) => return cannot(message),
    };
    let saved = match args.checkpoint.as_deref().map(read_checkpoint).transpose() {
        Ok(saved) => saved,
        Err(message) => return cannot(message),
    };
    let result = if args.file.as_os_str() == "-" {
        verify::verify(std::io::stdin().lock(), key.as_ref(), saved.as_ref())
    } else {
        match std::fs::File::open(&args.file) {
            Ok(file) => verify::verify(
                std::io::BufReader::with_capacity(1 << 20, file),
                key.as_ref(),
                saved.as_ref(),
            ),
            Err(err) => return cannot(format!("{}: {err}", args.file.display())),
        }
    };
    match result {
        Ok(report) => {
            print_report(&report);
            ExitCode::SUCCESS
        }
        Err(verify::VerifyError::Read { line, source }) => cannot(format!(
            "{}: cannot read line {line}: {source}",
            args.file.display()
        )),
        Err(err) => {
            eprintln!("VERIFICATION FAILED: {err}");
            if let Some(seq) = err.seq() {
                eprintln!("first bad entry: {seq}");
            }
            ExitCode::FAILURE
        }
    }
}

fn print_report(report: &VerifyReport) {
    if report.last_seq == 0 {
        println!("OK: the export holds no entries; its signature verifies.");
    } else {
        println!(
            "OK: entries {} to {} verified: {} in full, {} omitted (hash only), {} checkpoints.",
            report.first_seq, report.last_seq, report.entries, report.omitted, report.checkpoints
        );
    }
    if let Some(cp) = &report.newest_checkpoint {
        println!("newest checkpoint: entry {} signed {}", cp.size, cp.time);
    }
    println!("exported: {}", report.signed_at);
    if let Some(saved) = report.saved_checked {
        println!("saved checkpoint: entry {saved} matches");
    }
    if report.key_from_header {
        println!(
            "WARNING: no --public-key given, so the signatures were checked with the key written \
             in the file itself ({}). That shows the file agrees with itself, not that it comes \
             from your appliance: compare the fingerprint with the one recorded at install time, \
             or pass --public-key.",
            report.key.fingerprint()
        );
    } else {
        println!("key: {}", report.key.fingerprint());
    }
}

/// A public key given as its text or as a file holding it.
fn read_public_key(arg: &str) -> Result<PublicKey, String> {
    if let Ok(key) = PublicKey::from_text(arg) {
        return Ok(key);
    }
    let text = std::fs::read_to_string(arg).map_err(|err| {
        format!("--public-key {arg}: neither a key (clientele-audit-ed25519 ...) nor a readable file: {err}")
    })?;
    PublicKey::from_text(&text).map_err(|err| format!("--public-key {arg}: {err}"))
}

/// A saved checkpoint: the JSON `clientele audit checkpoint` prints, or a bundle's
/// `{"checkpoint":{...}}` line.
fn read_checkpoint(path: &Path) -> Result<Checkpoint, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("--checkpoint {}: {err}", path.display()))?;
    let text = text.trim();
    serde_json::from_str::<Checkpoint>(text)
        .or_else(|first| {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Line {
                checkpoint: Checkpoint,
            }
            serde_json::from_str::<Line>(text)
                .map(|line| line.checkpoint)
                .map_err(|_| first)
        })
        .map_err(|err| {
            format!(
                "--checkpoint {}: not a checkpoint as `clientele audit checkpoint` prints it: {err}",
                path.display()
            )
        })
}

/// A time on the command line: RFC 3339, or a UTC date and time without offset, or a date.
fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    let text = text.trim();
    if let Ok(time) = text.parse::<jiff::Timestamp>() {
        return Ok(time);
    }
    if let Ok(civil) = text.parse::<jiff::civil::DateTime>() {
        return civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|err| err.to_string());
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>() {
        return date
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|err| err.to_string());
    }
    Err(format!(
        "{text:?} is not a time: use RFC 3339 (2026-01-31T09:00:00Z) or a UTC date (2026-01-31)"
    ))
}

/// A bar on standard error when it is a terminal; nothing otherwise.
fn progress_bar() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} entries, {elapsed} (about {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}

/// A spinner while the server writes the export, when standard error is a terminal.
fn waiting_spinner() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message("the running server is writing the export...");
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_utc_dates() {
        let t = |s: &str| parse_time(s).map(|t| t.to_string());
        assert_eq!(t("2026-01-31").unwrap(), "2026-01-31T00:00:00Z");
        assert_eq!(t("2026-01-31T09:30").unwrap(), "2026-01-31T09:30:00Z");
        assert_eq!(
            t("2026-01-31T09:30:00+01:00").unwrap(),
            "2026-01-31T08:30:00Z"
        );
        assert!(t("yesterday").is_err());
    }
}
