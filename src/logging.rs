//! Logging: rolling files in the log folder (daily, with a retention count) and standard error,
//! as text or JSON. Events carry fields, never personal data, secrets, cookies or query strings.
//!
//! A reload (SIGHUP, see [`reload`]) applies a new `log.level` and `log.stderr` at once.
//! Limitation: `log.format`, `log.dir` and `log.retention_files` are read at start only; a
//! reload that changes them logs a warning and they apply at the next restart.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, reload as filter_reload};

use crate::config::{Config, LogConfig, LogFormat};

/// Keeps the file writer flushing; drop it last.
#[derive(Debug)]
pub struct LogGuard {
    _file: Option<WorkerGuard>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot create log folder {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open log files in {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("log.level: {0}")]
    Filter(String),
}

/// Installs the global subscriber. `to_files` is false for one-shot commands that only talk
/// to the terminal.
pub fn init(config: &Config, to_files: bool) -> Result<LogGuard, LogError> {
    let level = parse_filter(&config.log.level)?;
    let json = config.log.format == LogFormat::Json;

    // The standard-error layer is always installed, so a reload can switch it on; "off"
    // filters every event out before it is formatted.
    let stderr_layer = {
        let layer = fmt::layer().with_writer(std::io::stderr).with_target(false);
        if json {
            layer.json().boxed()
        } else {
            layer.boxed()
        }
    };
    let (stderr_filter, stderr_handle) =
        filter_reload::Layer::new(stderr_filter(&config.log, level.clone()));

    let mut guard = None;
    let file_layer = if to_files {
        let dir = config.log_dir();
        crate::store::files::create_private_dir(&dir, 0o750).map_err(|source| LogError::Dir {
            path: dir.clone(),
            source,
        })?;
        let appender = Builder::new()
            .rotation(Rotation::DAILY)
            .filename_prefix("clientele")
            .filename_suffix("log")
            .max_log_files(config.log.retention_files)
            .build(&dir)
            .map_err(|e| LogError::File {
                path: dir.clone(),
                message: e.to_string(),
            })?;
        let (writer, file_guard) = tracing_appender::non_blocking(appender);
        guard = Some(file_guard);
        let layer = fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .fmt_fields(FileFields::default());
        Some(if json {
            layer.json().boxed()
        } else {
            layer.boxed()
        })
    } else {
        None
    };
    let (file_filter, file_handle) = filter_reload::Layer::new(level);

    let installed = tracing_subscriber::registry()
        .with(stderr_layer.with_filter(stderr_filter))
        .with(file_layer.map(|layer| layer.with_filter(file_filter)))
        .try_init()
        .is_ok();
    if installed {
        let stderr_handle = move |filter| stderr_handle.reload(filter);
        let file_handle = move |filter| file_handle.reload(filter);
        let _ = RELOAD.set(Reloader {
            stderr: Box::new(stderr_handle),
            file: Box::new(file_handle),
            started_with: Mutex::new(StartSettings::of(config)),
        });
    }
    Ok(LogGuard { _file: guard })
}

/// Applies the log settings of a re-read configuration to the running subscriber: the level
/// and whether standard error is written to. Returns the settings that only apply at the next
/// restart and differ from the ones in use, for the caller to report.
pub fn reload(config: &Config) -> Result<Vec<&'static str>, LogError> {
    let level = parse_filter(&config.log.level)?;
    let Some(reloader) = RELOAD.get() else {
        return Ok(Vec::new());
    };
    (reloader.stderr)(stderr_filter(&config.log, level.clone()))
        .map_err(|e| LogError::Filter(e.to_string()))?;
    (reloader.file)(level).map_err(|e| LogError::Filter(e.to_string()))?;
    let started_with = reloader
        .started_with
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    Ok(started_with.needing_restart(&StartSettings::of(config)))
}

fn parse_filter(level: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::try_new(level).map_err(|e| LogError::Filter(e.to_string()))
}

fn stderr_filter(log: &LogConfig, level: EnvFilter) -> EnvFilter {
    if log.stderr {
        level
    } else {
        EnvFilter::new("off")
    }
}

type ReloadFilter = Box<dyn Fn(EnvFilter) -> Result<(), filter_reload::Error> + Send + Sync>;

/// Handles on the installed subscriber's filters; set once, by the [`init`] that installed it.
struct Reloader {
    stderr: ReloadFilter,
    file: ReloadFilter,
    started_with: Mutex<StartSettings>,
}

static RELOAD: OnceLock<Reloader> = OnceLock::new();

/// The log settings that a reload cannot change.
#[derive(Debug, PartialEq, Eq)]
struct StartSettings {
    format: LogFormat,
    dir: PathBuf,
    retention_files: usize,
}

impl StartSettings {
    fn of(config: &Config) -> Self {
        Self {
            format: config.log.format,
            dir: config.log_dir(),
            retention_files: config.log.retention_files,
        }
    }

    fn needing_restart(&self, new: &Self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.format != new.format {
            keys.push("log.format");
        }
        if self.dir != new.dir {
            keys.push("log.dir");
        }
        if self.retention_files != new.retention_files {
            keys.push("log.retention_files");
        }
        keys
    }
}

/// Field formatting for the file layer. A type of its own, because two layers with the same
/// formatter share the span's formatted fields and would print every field twice.
#[derive(Debug, Default)]
struct FileFields(fmt::format::DefaultFields);

impl<'writer> fmt::FormatFields<'writer> for FileFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        self.0.format_fields(writer, fields)
    }
}
