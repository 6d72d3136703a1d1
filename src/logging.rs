//! Logging: rolling files in the log folder (daily, with a retention count) and standard error,
//! as text or JSON. Events carry fields, never personal data, secrets, cookies or query strings.

use std::path::PathBuf;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config::{Config, LogFormat};

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
    let filter =
        || EnvFilter::try_new(&config.log.level).map_err(|e| LogError::Filter(e.to_string()));
    let json = config.log.format == LogFormat::Json;

    let stderr_layer = config.log.stderr.then(|| {
        let layer = fmt::layer().with_writer(std::io::stderr).with_target(false);
        if json {
            layer.json().boxed()
        } else {
            layer.boxed()
        }
    });

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

    tracing_subscriber::registry()
        .with(
            stderr_layer
                .map(|l| l.with_filter(filter().ok().unwrap_or_else(|| EnvFilter::new("info")))),
        )
        .with(
            file_layer
                .map(|l| l.with_filter(filter().ok().unwrap_or_else(|| EnvFilter::new("info")))),
        )
        .try_init()
        .ok();
    filter()?;
    Ok(LogGuard { _file: guard })
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
