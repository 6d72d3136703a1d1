//! `clientele doctor`: checks what an operator can get wrong and says how to fix it, in words.
//! Exits non-zero when any check fails; warnings alone do not fail.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::clock::{Clock, SystemClock, SystemRandom};
use crate::config::Config;
use crate::control::{self, ControlError, Request, Response};
use crate::store::{MasterKeySource, Store, StoreError, StoreOptions, VerifyReport, files};
use crate::web::tls;

use super::CliError;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also open every record in the store (takes time on large stores)
    #[arg(long)]
    deep: bool,
}

/// Free space under which the disk check fails, and warns.
const DISK_FAIL_BYTES: u64 = 256 * 1024 * 1024;
const DISK_WARN_BYTES: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Default)]
struct Report {
    failed: bool,
}

impl Report {
    fn line(&mut self, level: Level, what: &str, message: impl AsRef<str>) {
        let tag = match level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => {
                self.failed = true;
                "FAIL"
            }
        };
        println!("{tag}  {what:<12} {}", message.as_ref());
    }
}

pub fn run(
    config: &Config,
    cli_source: Option<Result<MasterKeySource, CliError>>,
    args: &DoctorArgs,
) -> ExitCode {
    let mut report = Report::default();
    report.line(Level::Ok, "config", "read and valid");

    check_data_dir(&mut report, &config.data_dir);
    let source = match cli_source {
        Some(Ok(source)) => Some(source),
        Some(Err(err)) => {
            report.line(Level::Fail, "master key", err.to_string());
            None
        }
        None => match MasterKeySource::from_config(config) {
            Ok(source) => Some(source),
            Err(err) => {
                report.line(Level::Fail, "master key", err.to_string());
                None
            }
        },
    };
    if let Some(MasterKeySource::File(path)) = &source {
        check_key_file(&mut report, path);
    }
    check_disk(&mut report, &config.data_dir);
    check_certificate(&mut report, config);
    check_log_dir(&mut report, &config.log_dir());
    check_connector_folders(&mut report, config);
    if let Some(source) = source {
        check_store(&mut report, config, &source, args.deep);
    }

    if report.failed {
        println!(
            "\nSome checks failed; fix the lines marked FAIL and run `clientele doctor` again."
        );
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn check_data_dir(report: &mut Report, dir: &Path) {
    match files::mode_of(dir) {
        Err(_) => report.line(
            Level::Fail,
            "data dir",
            format!("{} does not exist; run `clientele init`", dir.display()),
        ),
        Ok(mode) if mode & 0o077 != 0 => report.line(
            Level::Fail,
            "data dir",
            format!(
                "{} is open to group or others (mode {mode:04o}); run chmod 0700 {}",
                dir.display(),
                dir.display()
            ),
        ),
        Ok(_) => report.line(
            Level::Ok,
            "data dir",
            format!("{} (mode 0700)", dir.display()),
        ),
    }
}

fn check_key_file(report: &mut Report, path: &Path) {
    match files::mode_of(path) {
        Err(err) => report.line(
            Level::Fail,
            "master key",
            format!("{} cannot be read: {err}", path.display()),
        ),
        Ok(mode) if mode & 0o077 != 0 => report.line(
            Level::Fail,
            "master key",
            format!(
                "{} is readable by group or others (mode {mode:04o}); run chmod 0400 {}",
                path.display(),
                path.display()
            ),
        ),
        Ok(mode) => report.line(
            Level::Ok,
            "master key",
            format!("{} (mode {mode:04o})", path.display()),
        ),
    }
}

fn check_disk(report: &mut Report, dir: &Path) {
    let probe = if dir.exists() { dir } else { Path::new("/") };
    match rustix::fs::statvfs(probe) {
        Ok(stat) => {
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            let text = format!(
                "{} free on the data folder's file system",
                human_bytes(free)
            );
            let level = if free < DISK_FAIL_BYTES {
                Level::Fail
            } else if free < DISK_WARN_BYTES {
                Level::Warn
            } else {
                Level::Ok
            };
            let hint = if level == Level::Ok {
                ""
            } else {
                "; free space or move data_dir to a larger disk"
            };
            report.line(level, "disk", format!("{text}{hint}"));
        }
        Err(err) => report.line(
            Level::Warn,
            "disk",
            format!("cannot measure free space: {err}"),
        ),
    }
}

fn check_certificate(report: &mut Report, config: &Config) {
    let files = tls::certificate_files(config);
    if files.self_signed && !files.cert.exists() {
        report.line(
            Level::Ok,
            "certificate",
            "none yet; a self-signed one is made at the next start",
        );
        return;
    }
    let now = SystemClock.now();
    match tls::expiry(&files.cert) {
        Err(err) => report.line(Level::Fail, "certificate", err.to_string()),
        Ok(not_after) if not_after <= now => report.line(
            Level::Fail,
            "certificate",
            format!(
                "{} expired on {}; install a new one{}",
                files.cert.display(),
                not_after.strftime("%Y-%m-%d"),
                renew_hint(&files)
            ),
        ),
        Ok(not_after) => {
            let days = (not_after.as_second() - now.as_second()) / 86_400;
            let level = if days < tls::RENEW_BEFORE_DAYS {
                Level::Warn
            } else {
                Level::Ok
            };
            report.line(
                level,
                "certificate",
                format!(
                    "{} valid until {} ({days} days){}",
                    files.cert.display(),
                    not_after.strftime("%Y-%m-%d"),
                    if files.self_signed {
                        ", self-signed"
                    } else {
                        ""
                    }
                ),
            );
        }
    }
    if let Err(err) = tls::server_config(&files) {
        report.line(Level::Fail, "certificate", err.to_string());
    }
}

fn renew_hint(files: &tls::CertificateFiles) -> &'static str {
    if files.self_signed {
        " (the self-signed one is remade at the next start)"
    } else {
        ""
    }
}

fn check_log_dir(report: &mut Report, dir: &Path) {
    if !dir.exists() {
        report.line(
            Level::Ok,
            "logs",
            format!("{} is made at the first start", dir.display()),
        );
        return;
    }
    let probe = dir.join(".doctor-probe");
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            report.line(Level::Ok, "logs", format!("{} is writable", dir.display()));
        }
        Err(err) => report.line(
            Level::Fail,
            "logs",
            format!("{} is not writable: {err}", dir.display()),
        ),
    }
}

/// Each folder connector's folder must be a folder the service can read and remove files
/// from. (Run `doctor` as the service user for the answer that counts.)
fn check_connector_folders(report: &mut Report, config: &Config) {
    for connector in config.sync.connectors(&config.pos) {
        let Some(folder) = &connector.folder else {
            continue;
        };
        let what = format!("sync {}", connector.name);
        if !folder.is_dir() {
            report.line(
                Level::Fail,
                &what,
                format!(
                    "{} is not a folder; create it for the registers to drop files into",
                    folder.display()
                ),
            );
            continue;
        }
        let probe = folder.join(".clientele-doctor-probe");
        match std::fs::write(&probe, b"").and_then(|()| std::fs::remove_file(&probe)) {
            Ok(()) => report.line(
                Level::Ok,
                &what,
                format!("{} can be read and emptied", folder.display()),
            ),
            Err(err) => report.line(
                Level::Fail,
                &what,
                format!(
                    "{} is not writable ({err}); imported files could not be removed \
                     (see README, \"Sync\": ReadWritePaths=)",
                    folder.display()
                ),
            ),
        }
    }
}

fn check_store(report: &mut Report, config: &Config, source: &MasterKeySource, deep: bool) {
    let socket = config.control_socket();
    match control::request(&socket, &Request::Status, Duration::from_secs(10)) {
        Ok(Response::Status { keys, version }) => {
            report.line(
                Level::Ok,
                "store",
                format!(
                    "open in the running server (version {version}); key term {} of {:?}",
                    keys.current_term, keys.terms
                ),
            );
            if deep {
                match control::request(&socket, &Request::Verify, Duration::from_secs(24 * 3600)) {
                    Ok(Response::Verified { report: verified }) => deep_report(report, &verified),
                    Ok(other) => report.line(
                        Level::Fail,
                        "records",
                        format!("unexpected answer: {other:?}"),
                    ),
                    Err(err) => report.line(Level::Fail, "records", err.to_string()),
                }
            }
            return;
        }
        Ok(other) => report.line(
            Level::Warn,
            "store",
            format!("unexpected answer from the server: {other:?}"),
        ),
        Err(ControlError::NotRunning { .. }) => {}
        Err(err) => report.line(Level::Warn, "store", err.to_string()),
    }

    let opened = Store::open(
        &StoreOptions::from_config(config),
        source,
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
    );
    match opened {
        Ok(store) => {
            let keys = store.key_status();
            report.line(
                Level::Ok,
                "store",
                format!(
                    "opens with the master key; key term {} of {:?}",
                    keys.current_term, keys.terms
                ),
            );
            if deep {
                deep_report(report, &store.verify_all());
            }
        }
        Err(err @ StoreError::WrongKey { .. }) => report.line(
            Level::Fail,
            "store",
            format!("{err}; check keys.master_key_file or the passphrase"),
        ),
        Err(err) => report.line(Level::Fail, "store", err.to_string()),
    }
}

fn deep_report(report: &mut Report, verified: &VerifyReport) {
    if verified.failures.is_empty() {
        report.line(
            Level::Ok,
            "records",
            format!(
                "all {} records open ({} of erased subjects)",
                verified.records, verified.erased
            ),
        );
        return;
    }
    for failure in verified.failures.iter().take(20) {
        report.line(Level::Fail, "records", failure);
    }
    report.line(
        Level::Fail,
        "records",
        format!(
            "{} of {} records do not open; restore them from a backup",
            verified.failures.len(),
            verified.records
        ),
    );
}

fn human_bytes(bytes: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    let value = bytes as f64;
    if value >= GIB {
        format!("{:.1} GiB", value / GIB)
    } else {
        format!("{:.0} MiB", value / MIB)
    }
}
