//! `clientele bench`: measurements an operator can run when sizing hardware.
//!
//! - `bench store` ([`store`]) puts the encrypted store next to raw sled on the same machine,
//!   then measures start-up and idle memory of `clientele serve` ([`startup`]).
//! - `bench backup` ([`backup`]) times a backup, its verification and a restore in MB/s.
//! - `bench upgrade` ([`upgrade`]) times a schema upgrade at start: its backup and a step
//!   rewriting every record.
//! - `bench customers` ([`customers`]) imports the demo population and measures the search
//!   index, searches, the customer page and the server's memory at that size.
//! - `bench web` ([`web`]) loads a started server over HTTPS: a static file against a signed-in
//!   page, then page latency while sign-ins flood the Argon2 pool.
//!
//! - `bench ingest` ([`ingest`]) ingests `POSLog` files and JSON batches of register sales and
//!   times availability reads meanwhile.
//!
//! Each prints a table for people, then one JSON line with every figure for the records.
//! Progress goes to standard error so standard output holds only the table and the JSON.
//!
//! This module holds what the benchmarks share: the work folder (removed at the end, whatever
//! happens), the `clientele serve` child started exactly as an operator would start it, a
//! minimal HTTP/1.1 client over rustls that trusts only that child's certificate, and the
//! arithmetic and printing of figures. Figures move with whatever else the machine is doing:
//! run them on an otherwise idle appliance.

mod audit;
mod availability;
mod backup;
mod customers;
mod ingest;
mod startup;
mod store;
mod sync;
mod upgrade;
mod web;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use clap::Subcommand;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::CliError;
use crate::clock::Random;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Encrypted store against raw sled: inserts, reads, durable group commit, start-up, memory
    Store(store::StoreBenchArgs),
    /// HTTPS throughput of a signed-in page against a static file, and page latency during a
    /// sign-in flood
    Web(web::WebBenchArgs),
    /// Audit trail: write cost of an entry, compliance-page queries over the index, export and
    /// offline verification
    Audit(audit::AuditBenchArgs),
    /// Sales ingest: `POSLog` files and JSON batches (transactions per second), and availability
    /// latency while sales go in
    Ingest(ingest::IngestBenchArgs),
    /// Backup, verification and restore throughput (MB/s) on N records
    Backup(backup::BackupBenchArgs),
    /// Schema upgrade at start on N records: the automatic backup, then a step rewriting every
    /// record (the cost of a full rewrite migration)
    Upgrade(upgrade::UpgradeBenchArgs),
    /// Customers at size: CSV import rate against raw sled, search index build, search and
    /// customer-page latency, resident memory of the server
    Customers(customers::CustomersBenchArgs),
    /// Availability look-ups (p50, p99) at catalog size: SKUs x locations
    Availability(availability::AvailabilityBenchArgs),
    /// The `POSLog` folder connector: one-transaction files per second and transactions per
    /// second from large files, durable, as the supervisor runs it
    Sync(sync::SyncBenchArgs),
}

pub fn run(command: &BenchCommand) -> Result<ExitCode, CliError> {
    match command {
        BenchCommand::Store(args) => store::bench_store(args),
        BenchCommand::Web(args) => web::bench_web(args),
        BenchCommand::Audit(args) => audit::bench_audit(args),
        BenchCommand::Ingest(args) => ingest::bench_ingest(args),
        BenchCommand::Backup(args) => backup::bench_backup(args),
        BenchCommand::Upgrade(args) => upgrade::bench_upgrade(args),
        BenchCommand::Customers(args) => customers::bench_customers(args),
        BenchCommand::Sync(args) => sync::bench_sync(args),
        BenchCommand::Availability(args) => availability::bench_availability(args),
    }
}

/// Longest wait for a started server to answer before the run is abandoned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a stopped server to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The line `clientele serve` prints once it listens.
const SERVING_PREFIX: &str = "Clientele is serving on https://";
/// Longest wait for one HTTPS answer from the started server.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The async runtime of a benchmark: two workers, as these machines have two cores.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))
}

/// A new store in `data_dir` (created, then opened), on the system clock and random source.
fn fresh_store(data_dir: &Path) -> Result<crate::store::Store, CliError> {
    use crate::clock::{SystemClock, SystemRandom};
    use crate::store::{MasterKeySource, Store, StoreOptions};
    let config = crate::config::Config {
        data_dir: data_dir.to_path_buf(),
        ..crate::config::Config::default()
    };
    let options = StoreOptions::from_config(&config);
    let source = MasterKeySource::File(config.master_key_file());
    Store::init(&options, &source, &SystemClock, &SystemRandom::new())?;
    Ok(Store::open(
        &options,
        &source,
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
    )?)
}

/// The sales ingest service, with its customer service, on `store`.
fn ingest_on(store: &crate::store::Store) -> crate::inventory::ingest::Ingest {
    use crate::clock::{SystemClock, SystemRandom};
    let customers = crate::crm::Customers::new(
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
        "US",
    );
    crate::inventory::ingest::Ingest::new(store.clone(), Arc::new(SystemClock), customers)
}

/// Concurrent writers filling a benchmark's catalog (their puts share group commits).
const CATALOG_WRITERS: u64 = 16;

/// Fills the catalog with `count` products, numbered and named by `sku`, priced 10.00 to 59.00
/// EUR, in 20 categories.
async fn fill_catalog(
    ingest: &crate::inventory::ingest::Ingest,
    count: u64,
    sku: fn(u64) -> String,
) -> Result<(), CliError> {
    let mut tasks = Vec::new();
    for writer in 0..CATALOG_WRITERS {
        let ingest = ingest.clone();
        tasks.push(tokio::spawn(async move {
            for n in (writer..count).step_by(usize::try_from(CATALOG_WRITERS).unwrap_or(1)) {
                let input = crate::domain::product::ProductInput {
                    name: format!("Product {n}"),
                    brand: "Bench".into(),
                    category: format!("Category {}", n % 20),
                    price: 1000 + (n % 50).cast_signed() * 100,
                    cost: 500,
                    currency: "EUR".into(),
                    ..crate::domain::product::ProductInput::default()
                };
                ingest
                    .catalog()
                    .put(&sku(n), input, crate::audit::Actor::system("bench"))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| CliError::Other(format!("a catalog writer stopped: {e}")))?
            .map_err(CliError::Other)?;
    }
    Ok(())
}

fn progress(message: &str) {
    eprintln!("bench: {message}");
}

// ---------------------------------------------------------------------------------------------
// Work folder

/// The benchmark's own folder, removed when dropped (on success and on every error path).
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(parent: Option<&Path>, random: &dyn Random) -> Result<Self, CliError> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        std::fs::create_dir_all(&parent).map_err(|e| {
            CliError::Other(format!("cannot create folder {}: {e}", parent.display()))
        })?;
        let mut tag = [0u8; 4];
        random
            .fill(&mut tag)
            .map_err(|e| CliError::Other(format!("cannot name the benchmark folder: {e}")))?;
        let path = parent.join(format!(
            "clientele-bench-{}-{}",
            std::process::id(),
            data_encoding::HEXLOWER.encode(&tag)
        ));
        std::fs::create_dir(&path).map_err(|e| {
            CliError::Other(format!("cannot create folder {}: {e}", path.display()))
        })?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.path) {
            eprintln!(
                "warning: could not remove {}: {err}; remove it by hand",
                self.path.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The `clientele serve` child

/// Runs this very binary as `clientele` with a clean environment: an empty config file of our
/// own and a data folder per run, nothing inherited.
#[derive(Debug)]
struct Launcher {
    exe: PathBuf,
    config: PathBuf,
}

impl Launcher {
    /// Finds the binary and writes the empty config file into `root`.
    fn new(root: &Path) -> Result<Self, CliError> {
        let exe = std::env::current_exe().map_err(|e| {
            CliError::Other(format!("cannot find the clientele binary to start: {e}"))
        })?;
        // An empty file, so neither a packaged configuration nor the caller's is picked up.
        let config = root.join("empty.toml");
        std::fs::write(&config, b"")
            .map_err(|e| CliError::Other(format!("cannot write {}: {e}", config.display())))?;
        Ok(Self { exe, config })
    }

    /// `clientele --config EMPTY --data-dir DATA_DIR` with no inherited `CLIENTELE_` variable,
    /// logs off standard error and two HTTP workers (callers may override with `.env`).
    fn command(&self, data_dir: &Path) -> Command {
        let mut command = Command::new(&self.exe);
        for (name, _) in std::env::vars_os() {
            if name
                .to_string_lossy()
                .starts_with(crate::config::ENV_PREFIX)
            {
                command.env_remove(name);
            }
        }
        command
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(data_dir)
            .env("CLIENTELE_LOG__STDERR", "false")
            .env("CLIENTELE_SERVER__WORKERS", "2")
            .stdin(Stdio::null());
        command
    }

    /// `clientele init` into a new data folder.
    fn init(&self, data_dir: &Path) -> Result<(), CliError> {
        let output =
            self.command(data_dir).arg("init").output().map_err(|e| {
                CliError::Other(format!("cannot run {} init: {e}", self.exe.display()))
            })?;
        if output.status.success() {
            return Ok(());
        }
        Err(CliError::Other(format!(
            "`clientele init` for the benchmark server failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }

    /// `clientele user add` with a chosen password, before the server starts (the store is
    /// opened directly, as an installer would).
    fn add_user(
        &self,
        data_dir: &Path,
        login: &str,
        role: &str,
        password: &str,
    ) -> Result<(), CliError> {
        let failed = |e: &dyn std::fmt::Display| {
            CliError::Other(format!(
                "cannot run {} user add --login {login}: {e}",
                self.exe.display()
            ))
        };
        let mut child = self
            .command(data_dir)
            .args(["user", "add", "--login", login, "--role", role])
            .arg("--password-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(&e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(password.as_bytes())
                .map_err(|e| failed(&e))?;
        }
        let output = child.wait_with_output().map_err(|e| failed(&e))?;
        if output.status.success() {
            return Ok(());
        }
        Err(CliError::Other(format!(
            "`clientele user add --login {login}` for the benchmark failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// A started `clientele serve`, stopped (killed if need be) when dropped.
#[derive(Debug)]
struct Server {
    child: Child,
    /// The HTTPS port it said it listens on.
    port: u16,
    /// A TLS client that trusts only this server's self-signed certificate.
    tls: Arc<rustls::ClientConfig>,
    /// Spawn to the "serving on" line.
    listening: Duration,
    /// Spawn to the first 200 from `/healthz`.
    healthy: Duration,
}

impl Server {
    /// Starts `clientele serve --listen 127.0.0.1:0` on an initialised `data_dir`, with extra
    /// `CLIENTELE_` settings, and waits for a 200 from `/healthz`.
    fn start(
        launcher: &Launcher,
        data_dir: &Path,
        settings: &[(&str, String)],
    ) -> Result<Self, CliError> {
        let tls = tls_client(&data_dir.join("tls").join("cert.pem"))?;
        let stderr_path = data_dir.join("serve.stderr");
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| {
            CliError::Other(format!("cannot create {}: {e}", stderr_path.display()))
        })?;
        let failed = |what: String| {
            let said = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            CliError::Other(format!("{what}; the server said: {}", said.trim()))
        };

        let mut command = launcher.command(data_dir);
        for (name, value) in settings {
            command.env(name, value);
        }
        let start = Instant::now();
        let child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                CliError::Other(format!(
                    "cannot start {} serve: {e}",
                    launcher.exe.display()
                ))
            })?;
        let mut server = Self {
            child,
            port: 0,
            tls,
            listening: Duration::ZERO,
            healthy: Duration::ZERO,
        };
        let lines = stdout_lines(&mut server.child)?;

        server.port = wait_for_port(&lines, start).map_err(&failed)?;
        server.listening = start.elapsed();
        wait_for_health(server.port, &server.tls, start).map_err(&failed)?;
        server.healthy = start.elapsed();
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then a kill if it has not exited within [`STOP_TIMEOUT`]; returns the time to exit.
    fn stop(&mut self) -> Result<Duration, CliError> {
        let start = Instant::now();
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .map_err(|e| CliError::Other(format!("cannot stop the started server: {e}")))?;
        while start.elapsed() < STOP_TIMEOUT {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(start.elapsed()),
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => {
                    return Err(CliError::Other(format!(
                        "cannot wait for the started server: {e}"
                    )));
                }
            }
        }
        Err(CliError::Other(format!(
            "the started server did not exit within {}s of SIGTERM; it was killed",
            STOP_TIMEOUT.as_secs()
        )))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The child's standard output, line by line, read on a thread so waits can time out.
fn stdout_lines(child: &mut Child) -> Result<Receiver<String>, CliError> {
    let stdout = child.stdout.take().ok_or_else(|| {
        CliError::Other("the started server has no standard output to read".into())
    })?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("bench-serve-stdout".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| CliError::Other(format!("cannot start a reader thread: {e}")))?;
    Ok(rx)
}

fn wait_for_port(lines: &Receiver<String>, start: Instant) -> Result<u16, String> {
    loop {
        let left = START_TIMEOUT.saturating_sub(start.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(port) = serving_port(&line) {
                    return Ok(port);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "the server did not say it was serving within {}s",
                    START_TIMEOUT.as_secs()
                ));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err("the server exited before it was serving".into());
            }
        }
    }
}

/// The port in `Clientele is serving on https://HOST:PORT/`.
fn serving_port(line: &str) -> Option<u16> {
    let rest = line.trim().strip_prefix(SERVING_PREFIX)?;
    let authority = rest.trim_end_matches('/');
    let (_, port) = authority.rsplit_once(':')?;
    port.parse().ok()
}

fn wait_for_health(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    start: Instant,
) -> Result<(), String> {
    let mut last = String::new();
    while start.elapsed() < START_TIMEOUT {
        match healthz_status(port, tls) {
            Ok(200) => return Ok(()),
            Ok(status) => last = format!("/healthz answered {status}"),
            Err(err) => last = err,
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(format!(
        "no 200 from /healthz within {}s (last: {last})",
        START_TIMEOUT.as_secs()
    ))
}

/// A figure of `/proc/PID/status`, such as `VmRSS` or `VmHWM`, in KiB.
fn process_status_kib(pid: u32, field: &str) -> Result<u64, CliError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|e| CliError::Other(format!("cannot read {path}: {e}")))?;
    status_kib(&status, field).ok_or_else(|| CliError::Other(format!("{path} has no {field} line")))
}

/// `VmRSS` of a process, in KiB.
fn resident_kib(pid: u32) -> Result<u64, CliError> {
    process_status_kib(pid, "VmRSS")
}

fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|line| line.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTPS client

/// A TLS client that trusts only the started server's self-signed certificate.
fn tls_client(cert: &Path) -> Result<Arc<rustls::ClientConfig>, CliError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        CliError::Other(format!(
            "cannot use {} as a trust root: {e}",
            cert.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(cert).map_err(|e| unreadable(&e))? {
        roots
            .add(der.map_err(|e| unreadable(&e))?)
            .map_err(|e| unreadable(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unreadable(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TLS stream to `127.0.0.1:port`, checked against the name `localhost`.
fn tls_connect(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| format!("socket: {e}"))?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| format!("socket: {e}"))?;
    let name = ServerName::try_from("localhost").map_err(|e| format!("server name: {e}"))?;
    let connection =
        rustls::ClientConnection::new(Arc::clone(tls), name).map_err(|e| format!("TLS: {e}"))?;
    Ok(rustls::StreamOwned::new(connection, tcp))
}

/// One `GET /healthz` over a fresh TLS connection; the HTTP status.
fn healthz_status(port: u16, tls: &Arc<rustls::ClientConfig>) -> Result<u16, String> {
    let mut stream = tls_connect(port, tls, Duration::from_secs(5))?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("request: {e}"))?;

    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        // A close without close_notify after a full answer is still an answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(format!("response: {e}")),
    }
    http_status(&response).ok_or_else(|| "the answer was not HTTP".into())
}

/// The status code of an HTTP/1.x response.
fn http_status(response: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(response.get(..response.len().min(64))?).ok()?;
    let mut words = text.split_whitespace();
    words
        .next()
        .filter(|version| version.starts_with("HTTP/1."))?;
    words.next()?.parse().ok()
}

/// A kept-alive HTTP/1.1 connection over TLS to the started server: one request at a time,
/// each answer read to its end (`Content-Length` or chunked) so the next can follow.
#[derive(Debug)]
struct KeepAlive {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    /// Bytes read past the end of the last answer.
    pending: Vec<u8>,
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `name=value` of each `Set-Cookie`, attributes dropped.
    cookies: Vec<(String, String)>,
    body: Vec<u8>,
    /// The server will close the connection after this answer.
    closing: bool,
}

impl Answer {
    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Largest answer head accepted.
const MAX_HEAD: usize = 64 * 1024;

impl KeepAlive {
    /// Connects and completes the TLS handshake, so requests measure only themselves.
    fn open(port: u16, tls: &Arc<rustls::ClientConfig>) -> Result<Self, String> {
        let mut stream = tls_connect(port, tls, ANSWER_TIMEOUT)?;
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| format!("TLS handshake: {e}"))?;
        }
        Ok(Self {
            stream,
            pending: Vec::with_capacity(32 * 1024),
        })
    }

    /// Sends a whole request and reads its answer.
    fn exchange(&mut self, request: &[u8]) -> Result<Answer, String> {
        self.stream
            .write_all(request)
            .and_then(|()| self.stream.flush())
            .map_err(|e| format!("request: {e}"))?;
        self.read_answer()
    }

    fn read_answer(&mut self) -> Result<Answer, String> {
        let head_end = loop {
            if let Some(at) = find(&self.pending, b"\r\n\r\n") {
                break at + 4;
            }
            if self.pending.len() > MAX_HEAD {
                return Err(format!("answer head longer than {MAX_HEAD} bytes"));
            }
            self.fill()?;
        };
        let head = Head::parse(self.pending.get(..head_end).unwrap_or_default())?;
        self.pending.drain(..head_end);

        let body = match head.length {
            BodyLength::Known(length) => self.take(length)?,
            BodyLength::Chunked => self.take_chunked()?,
        };
        Ok(Answer {
            status: head.status,
            cookies: head.cookies,
            body,
            closing: head.closing,
        })
    }

    /// The next `length` bytes.
    fn take(&mut self, length: usize) -> Result<Vec<u8>, String> {
        while self.pending.len() < length {
            self.fill()?;
        }
        Ok(self.pending.drain(..length).collect())
    }

    /// A chunked body, decoded; trailers are skipped.
    fn take_chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = self.take_line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size =
                usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:?}"))?;
            if size == 0 {
                while !self.take_line()?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.take(size)?);
            self.take_line()?;
        }
    }

    fn take_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(at) = find(&self.pending, b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..at + 2).take(at).collect();
                return String::from_utf8(line).map_err(|_| "a chunk line is not text".into());
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> Result<(), String> {
        let mut buffer = [0u8; 16 * 1024];
        match self.stream.read(&mut buffer) {
            Ok(0) => Err("the server closed the connection mid-answer".into()),
            Ok(n) => {
                self.pending
                    .extend_from_slice(buffer.get(..n).unwrap_or_default());
                Ok(())
            }
            Err(e) => Err(format!("response: {e}")),
        }
    }
}

/// How long an answer's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyLength {
    Known(usize),
    Chunked,
}

/// What the client needs from an answer's head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    length: BodyLength,
    cookies: Vec<(String, String)>,
    closing: bool,
}

impl Head {
    fn parse(head: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(head).map_err(|_| "the answer head is not text")?;
        let mut lines = text.split("\r\n");
        let status = http_status(lines.next().unwrap_or_default().as_bytes())
            .ok_or("the answer was not HTTP/1.x")?;
        let mut parsed = Self {
            status,
            // No length and no chunking: only bodiless answers are expected from the server.
            length: BodyLength::Known(0),
            cookies: Vec::new(),
            closing: false,
        };
        for line in lines.filter(|line| !line.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("bad header line {line:?}"));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let length = value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?;
                parsed.length = BodyLength::Known(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                if value.eq_ignore_ascii_case("chunked") {
                    parsed.length = BodyLength::Chunked;
                }
            } else if name.eq_ignore_ascii_case("connection") {
                parsed.closing = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("set-cookie") {
                let pair = value.split(';').next().unwrap_or_default();
                if let Some((cookie, content)) = pair.split_once('=') {
                    parsed
                        .cookies
                        .push((cookie.trim().to_owned(), content.trim().to_owned()));
                }
            }
        }
        if matches!(status, 100..=199 | 204 | 304) {
            parsed.length = BodyLength::Known(0);
        }
        Ok(parsed)
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

// ---------------------------------------------------------------------------------------------
// Reports

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// One row of a readable table: a measure, two figures side by side, their ratio, the target.
fn print_row(name: &str, first: &str, second: &str, ratio: &str, target: &str, result: &str) {
    println!("{name:<36} {first:>16} {second:>18} {ratio:>8}  {target:<10} {result}");
}

// ---------------------------------------------------------------------------------------------
// Arithmetic

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// The median; 0 for no figures.
fn median(figures: &[f64]) -> f64 {
    let mut sorted = figures.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match (
        sorted.len() % 2,
        sorted.get(mid),
        mid.checked_sub(1).and_then(|m| sorted.get(m)),
    ) {
        (1, Some(&middle), _) => middle,
        (0, Some(&high), Some(&low)) => f64::midpoint(low, high),
        _ => 0.0,
    }
}

/// The `per_mille` quantile of sorted durations (nearest rank); zero for none.
fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    let Some(last) = sorted.len().checked_sub(1) else {
        return Duration::ZERO;
    };
    let index = (last * per_mille.min(1000) + 500) / 1000;
    sorted.get(index).copied().unwrap_or_default()
}

/// A duration in milliseconds.
fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn whole(figure: f64) -> f64 {
    figure.round()
}

fn round3(figure: f64) -> f64 {
    (figure * 1000.0).round() / 1000.0
}

/// `187204.6` as `187,205/s`.
fn per_second(figure: f64) -> String {
    let digits = format!("{figure:.0}");
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3 + 2);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 && digit.is_ascii_digit() {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped.push_str("/s");
    grouped
}

/// `SplitMix64`: a small, fast, deterministic generator for picking keys and shaping traffic in
/// the benchmarks (not for anything secret).
#[derive(Debug, Clone)]
struct SplitMix {
    state: u64,
}

impl SplitMix {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Seeded from `random`, so each run picks differently.
    fn seeded(random: &dyn crate::clock::Random) -> Result<Self, CliError> {
        let mut seed = [0u8; 8];
        random
            .fill(&mut seed)
            .map_err(|e| CliError::Other(format!("cannot seed the benchmark generator: {e}")))?;
        Ok(Self::new(u64::from_le_bytes(seed)))
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_line_gives_the_port() {
        assert_eq!(
            serving_port("Clientele is serving on https://127.0.0.1:40123/"),
            Some(40123)
        );
        assert_eq!(
            serving_port("Clientele is serving on https://[::1]:8443/\n"),
            Some(8443)
        );
        assert_eq!(serving_port("Created a Clientele store."), None);
    }

    #[test]
    fn status_line_is_read() {
        assert_eq!(
            http_status(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"),
            Some(200)
        );
        assert_eq!(
            http_status(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"),
            Some(503)
        );
        assert_eq!(http_status(b"garbage"), None);
    }

    #[test]
    fn rss_is_read_from_proc_status() {
        let status = "Name:\tclientele\nVmPeak:\t  100 kB\nVmRSS:\t   23456 kB\nThreads:\t5\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(23456));
        assert_eq!(status_kib(status, "VmPeak"), Some(100));
        assert_eq!(status_kib(status, "VmHWM"), None);
    }

    #[test]
    fn answer_heads_give_status_length_and_cookies() {
        let head = Head::parse(
            b"HTTP/1.1 303 See Other\r\nlocation: /\r\ncontent-length: 0\r\n\
              set-cookie: __Host-clientele=abc; Path=/; Secure; HttpOnly\r\n\
              Set-Cookie: __Host-clientele-login=; Max-Age=0\r\n\r\n",
        );
        assert_eq!(
            head,
            Ok(Head {
                status: 303,
                length: BodyLength::Known(0),
                cookies: vec![
                    ("__Host-clientele".into(), "abc".into()),
                    ("__Host-clientele-login".into(), String::new()),
                ],
                closing: false,
            })
        );
        let chunked = Head::parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(
            chunked.map(|h| (h.length, h.closing)),
            Ok((BodyLength::Chunked, true))
        );
        assert!(Head::parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(Head::parse(b"HTTP/1.1 200 OK\r\ncontent-length: lots\r\n\r\n").is_err());
    }

    #[test]
    fn medians_and_percentiles() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < f64::EPSILON);
        assert!(median(&[]).abs() < f64::EPSILON);
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 500), Duration::from_millis(51));
        assert_eq!(percentile(&sorted, 990), Duration::from_millis(99));
        assert_eq!(percentile(&[], 500), Duration::ZERO);
    }

    #[test]
    fn rates_are_grouped_by_thousands() {
        assert_eq!(per_second(187_204.6), "187,205/s");
        assert_eq!(per_second(999.0), "999/s");
        assert_eq!(per_second(1_000_000.0), "1,000,000/s");
    }
}
