//! The local control socket: how command-line tools reach a running server.
//!
//! sled lets one process open a database, so `clientele keys rotate` and `clientele doctor`
//! ask the running server through a Unix socket in the data folder (mode 0600: only the
//! service user and root can use it). One JSON request per line, one JSON answer per line.
//!
//! What these requests change is recorded in the audit trail with the system actor `cli`:
//! whoever can use the socket or the command line is the operator of the appliance, not a
//! signed-in user.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::audit::{Action, Actor, Event};
use crate::store::{ChangeSet, KeyStatus, Store, StoreError, VerifyReport};

/// The actor name of changes made through the control socket or the command line.
pub const CLI_ACTOR: &str = "cli";

/// A request to the running server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    Rotate,
    Verify,
    /// Creates a staff account (`clientele user add`); without a password a one-time
    /// password is made and returned.
    AddUser {
        login: String,
        display_name: String,
        role: crate::domain::account::Role,
        password: Option<String>,
    },
    /// The newest signed checkpoint (`clientele audit checkpoint`); one is signed first when
    /// entries are not covered yet.
    AuditCheckpoint,
    /// Exports the entries with times in `from..to` (`clientele audit export`). The server
    /// writes the file itself, at `out` (an absolute path it can write), and records the
    /// export in the trail.
    AuditExport {
        from: Option<jiff::Timestamp>,
        to: Option<jiff::Timestamp>,
        format: crate::audit::export::Format,
        out: PathBuf,
    },
    /// Everything held about a customer (`clientele privacy export`), recorded in the trail.
    PrivacyExport {
        customer: crate::domain::Id,
    },
    /// Erases a customer and the profiles merged into it (`clientele privacy erase`).
    PrivacyErase {
        customer: crate::domain::Id,
    },
    /// Imports a customer CSV file (`clientele import customers`). The server reads the file
    /// itself, at `file` (an absolute path it can read).
    ImportCustomers {
        file: PathBuf,
    },
    /// Imports a catalog CSV file (`clientele import products`). The server reads the file
    /// itself, at `file` (an absolute path it can read).
    ImportProducts {
        file: PathBuf,
    },
    /// Imports `POSLog` files (`clientele import poslog`), each all or nothing. The server reads
    /// the files itself (absolute paths it can read).
    ImportPoslog {
        files: Vec<PathBuf>,
        default_currency: String,
    },
    /// Fills the demo stores and customers (`clientele demo`, `serve --demo`).
    Demo {
        customers: u64,
        seed: u64,
    },
    /// Streams a backup (`clientele backup --out FILE`): the answer line is
    /// [`Response::BackupStream`], then the backup's bytes until the server closes the
    /// connection. `file` is the name the operator saves it under, for the audit entry.
    Backup {
        file: String,
    },
    /// Records a verification of a backup file in the trail (`clientele backup verify`).
    BackupVerified {
        file: String,
        records: u64,
        failure: Option<String>,
    },
}

/// The server's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status {
        version: String,
        keys: KeyStatus,
    },
    Rotated {
        term: u32,
    },
    Verified {
        report: VerifyReport,
    },
    UserAdded {
        login: String,
        one_time_password: Option<String>,
    },
    AuditCheckpoint {
        checkpoint: Option<crate::audit::Checkpoint>,
    },
    AuditExported {
        summary: crate::audit::export::ExportSummary,
        out: PathBuf,
    },
    PrivacyExported {
        export: serde_json::Value,
    },
    PrivacyErased {
        erasure: crate::crm::privacy::Erasure,
    },
    CustomersImported {
        record: crate::crm::import::ImportRecord,
    },
    /// The file was refused as a whole; `rejections` names every bad row.
    ImportRejected {
        message: String,
        rejections: Vec<crate::crm::import::Rejection>,
    },
    DemoFilled {
        report: crate::crm::demo::DemoReport,
    },
    ProductsImported {
        report: crate::inventory::import::ProductImport,
    },
    PoslogImported {
        files: Vec<crate::sync::inbox::FileOutcome>,
    },
    /// The backup's bytes follow this line.
    BackupStream,
    /// The event was recorded in the audit trail.
    Recorded,
    Error {
        message: String,
    },
}

/// The listening side, run by `serve`.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlServer {
    pub fn start(path: &Path, store: Store) -> std::io::Result<Self> {
        if path.exists() {
            // A socket left by a server that died; the store lock proves no other server runs.
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let data_dir = path.parent().map(Path::to_owned);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let store = store.clone();
                let data_dir = data_dir.clone();
                tokio::spawn(async move {
                    if let Err(err) = serve_one(stream, store, data_dir).await {
                        warn!(error = %err, "control socket request failed");
                    }
                });
            }
        });
        Ok(Self {
            path: path.to_owned(),
            task,
        })
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve_one(
    stream: tokio::net::UnixStream,
    store: Store,
    data_dir: Option<PathBuf>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(4096));
    reader.read_line(&mut line).await?;
    let request = serde_json::from_str::<Request>(&line);
    if let Ok(Request::Backup { file }) = &request {
        let read = reader.into_inner().into_inner();
        let stream = read.reunite(write).map_err(std::io::Error::other)?;
        return stream_backup(stream, store, file.clone(), data_dir).await;
    }
    let response = match request {
        Ok(request) => answer(request, store).await,
        Err(err) => Response::Error {
            message: format!("unreadable request: {err}"),
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await
}

/// Streams a backup to the connection from a blocking thread, then records it in the trail.
async fn stream_backup(
    stream: tokio::net::UnixStream,
    store: Store,
    file: String,
    data_dir: Option<PathBuf>,
) -> std::io::Result<()> {
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    tokio::task::spawn_blocking(move || backup_to(&stream, &store, &file, data_dir.as_deref()))
        .await
        .map_err(std::io::Error::other)?
}

fn backup_to(
    stream: &std::os::unix::net::UnixStream,
    store: &Store,
    file: &str,
    data_dir: Option<&Path>,
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stream);
    let key = match crate::audit::load_signing_key(store, &crate::clock::SystemRandom::new()) {
        Ok(key) => key,
        Err(err) => {
            let mut line = serde_json::to_vec(&Response::Error {
                message: format!("cannot sign the backup: {err}"),
            })
            .map_err(std::io::Error::other)?;
            line.push(b'\n');
            return out.write_all(&line);
        }
    };
    let mut line = serde_json::to_vec(&Response::BackupStream).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    let written = store.backup(&mut out, &key).and_then(|manifest| {
        out.flush()
            .map_err(crate::store::backup::BackupError::Write)?;
        Ok(manifest)
    });
    let message = written.as_ref().err().map(ToString::to_string);
    let event = crate::backups::event(
        Action::BackupCreated,
        CLI_ACTOR,
        file,
        match (&written, &message) {
            (Ok(manifest), _) => Ok(manifest.records()),
            (Err(_), Some(message)) => Err(message.as_str()),
            (Err(_), None) => Err("failed"),
        },
    );
    if let Err(err) = crate::backups::record_blocking(store, event) {
        warn!(error = %err, "backup not recorded in the audit trail");
    }
    if let Some(data_dir) = data_dir {
        let clock = crate::clock::SystemClock;
        let (bytes, records, result) = match &written {
            Ok(manifest) => (
                manifest.sections.values().map(|s| s.bytes).sum(),
                manifest.records(),
                "ok".to_owned(),
            ),
            Err(err) => (0, 0, err.to_string()),
        };
        crate::backups::write_status(
            data_dir,
            &crate::backups::LastBackup {
                at: crate::clock::Clock::now(&clock).to_string(),
                file: file.to_owned(),
                bytes,
                records,
                result,
                trigger: "command line".into(),
            },
        );
    }
    match written {
        Ok(manifest) => {
            tracing::info!(
                records = manifest.records(),
                "backup streamed to the control socket"
            );
            Ok(())
        }
        Err(err) => {
            warn!(error = %err, "backup through the control socket failed");
            Ok(())
        }
    }
}

/// Answers one request against an open store.
pub async fn answer(request: Request, store: Store) -> Response {
    if let Some(new) = request.new_user() {
        let Some(accounts) = accounts_for(store) else {
            return Response::Error {
                message: "cannot set up password hashing".into(),
            };
        };
        return match accounts.create(new, Actor::system(CLI_ACTOR)).await {
            Ok((user, one_time_password)) => Response::UserAdded {
                login: user.login,
                one_time_password,
            },
            Err(err) => Response::Error {
                message: err.to_string(),
            },
        };
    }
    match request {
        Request::AddUser { .. } => Response::Error {
            message: "malformed request".into(),
        },
        Request::Backup { .. } => Response::Error {
            message: "a backup is streamed, not answered in one line".into(),
        },
        Request::BackupVerified {
            file,
            records,
            failure,
        } => {
            let event = crate::backups::event(
                Action::BackupVerified,
                CLI_ACTOR,
                &file,
                failure.as_deref().map_or(Ok(records), Err),
            );
            match record(&store, event).await {
                Ok(()) => Response::Recorded,
                Err(err) => Response::Error {
                    message: err.to_string(),
                },
            }
        }
        Request::Status => Response::Status {
            version: env!("CARGO_PKG_VERSION").into(),
            keys: store.key_status(),
        },
        Request::Rotate => {
            let rotated = store.rotate().await;
            let recorded = record(&store, rotation_event(&rotated)).await;
            rotation_response(rotated, recorded)
        }
        Request::Verify => match tokio::task::spawn_blocking(move || store.verify_all()).await {
            Ok(report) => Response::Verified { report },
            Err(err) => Response::Error {
                message: err.to_string(),
            },
        },
        request @ (Request::AuditCheckpoint | Request::AuditExport { .. }) => {
            tokio::task::spawn_blocking(move || crate::cli::audit::answer(request, &store))
                .await
                .unwrap_or_else(|err| Response::Error {
                    message: err.to_string(),
                })
        }
        request @ (Request::PrivacyExport { .. } | Request::PrivacyErase { .. }) => {
            crate::cli::privacy::answer(request, &store).await
        }
        Request::ImportCustomers { file } => crate::cli::customers::import(&store, &file).await,
        Request::ImportProducts { file } => crate::cli::products::import(&store, &file).await,
        Request::ImportPoslog {
            files,
            default_currency,
        } => crate::cli::poslog::import(&store, &files, &default_currency).await,
        Request::Demo { customers, seed } => {
            let Some(accounts) = accounts_for(store.clone()) else {
                return Response::Error {
                    message: "cannot set up password hashing".into(),
                };
            };
            crate::cli::customers::demo(&store, &accounts, customers, seed).await
        }
    }
}

/// The `keys.rotated` entry for the outcome of a rotation asked from the command line.
#[must_use]
pub fn rotation_event(rotated: &Result<u32, StoreError>) -> Event {
    let event = Event::new(Action::KeysRotated).by(Actor::system(CLI_ACTOR));
    match rotated {
        Ok(term) => event.target("key_term", term),
        Err(err) => event.failed(err.to_string()),
    }
}

/// The answer to a rotation, given whether its audit entry was written.
// Limitation: the rotation is the committer's own job, not a change set, so its entry is
// written right after it rather than with it. If that write fails the new term stays current
// and the operator is told the entry is missing.
#[must_use]
pub fn rotation_response(
    rotated: Result<u32, StoreError>,
    recorded: Result<(), StoreError>,
) -> Response {
    let message = match (rotated, recorded) {
        (Ok(term), Ok(())) => return Response::Rotated { term },
        (Ok(term), Err(err)) => format!(
            "data-key term {term} is now current, but its audit entry could not be written: {err}"
        ),
        (Err(err), Ok(())) => err.to_string(),
        (Err(err), Err(audit)) => {
            format!("{err} (and the failure could not be recorded in the audit trail: {audit})")
        }
    };
    Response::Error { message }
}

/// Records one event on its own through the store's single write path.
async fn record(store: &Store, event: Event) -> Result<(), StoreError> {
    let mut set = ChangeSet::new();
    event.add_to(&mut set);
    store.commit(set).await
}

/// Why a control request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no server is listening on {path}")]
    NotRunning { path: PathBuf },
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unreadable answer from the server: {0}")]
    Answer(String),
}

/// Sends one request to the running server.
pub fn request(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|_| ControlError::NotRunning {
        path: path.to_owned(),
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| ControlError::Answer(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|e| ControlError::Answer(e.to_string()))
}

/// Sends one request whose answer line may be followed by a stream of bytes; returns the
/// answer and the rest of the connection.
pub fn request_stream(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<(Response, BufReader<UnixStream>), ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|_| ControlError::NotRunning {
        path: path.to_owned(),
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| ControlError::Answer(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(io)?;
    let response =
        serde_json::from_str(&answer).map_err(|e| ControlError::Answer(e.to_string()))?;
    Ok((response, reader))
}

/// The account service for a request that creates a user.
fn accounts_for(store: Store) -> Option<crate::auth::accounts::Accounts> {
    use crate::auth::password::{HashCost, HashLimiter, PasswordHasher};
    use crate::clock::{SystemClock, SystemRandom};
    use std::sync::Arc;
    let hasher = PasswordHasher::new(HashCost::default()).ok()?;
    Some(crate::auth::accounts::Accounts::new(
        store,
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
        Arc::new(hasher),
        Arc::new(HashLimiter::new(1)),
    ))
}
