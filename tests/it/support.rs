//! Shared helpers: temporary stores, the binary, an HTTPS client that trusts the appliance's
//! own certificate, and file fingerprints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use clientele::clock::{SystemClock, SystemRandom};
use clientele::config::Config;
use clientele::store::{MasterKeySource, Store, StoreOptions};

/// The `clientele` binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_clientele"))
}

/// A command for the binary with a quiet log and an empty config file, so a config installed
/// on the machine (`/etc/clientele/clientele.toml`) is never read; `--config FILE` still wins.
pub fn clientele(data_dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("--data-dir").arg(data_dir);
    cmd.env("CLIENTELE_LOG__STDERR", "false");
    cmd.env("CLIENTELE_CONFIG", "/dev/null");
    cmd
}

/// [`clientele`] for `serve --dev`, which reads its own defaults instead of a config file.
pub fn clientele_dev(data_dir: &Path) -> Command {
    let mut cmd = clientele(data_dir);
    cmd.env_remove("CLIENTELE_CONFIG");
    cmd
}

/// A configuration on `dir` with an OS-chosen port.
pub fn config(dir: &Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_owned(),
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.workers = 1;
    config.store.cache_mib = 16;
    config.log.stderr = false;
    config
}

pub fn options(dir: &Path) -> StoreOptions {
    StoreOptions::from_config(&config(dir))
}

pub fn key_source(dir: &Path) -> MasterKeySource {
    MasterKeySource::File(config(dir).master_key_file())
}

/// Creates a store with a key file in `dir`.
pub fn init_store(dir: &Path) {
    Store::init(
        &options(dir),
        &key_source(dir),
        &SystemClock,
        &SystemRandom::new(),
    )
    .unwrap();
}

pub fn open_store(dir: &Path) -> Store {
    open_store_with(&options(dir), dir)
}

pub fn open_store_with(options: &StoreOptions, dir: &Path) -> Store {
    Store::open(
        options,
        &key_source(dir),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
    )
    .unwrap()
}

/// SHA-256 of every file under `dir`, by relative path.
pub fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for file in walk(dir) {
        let bytes = std::fs::read(&file).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        out.insert(
            file.strip_prefix(dir).unwrap().to_owned(),
            digest.as_ref().to_vec(),
        );
    }
    out
}

/// Every regular file under `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// An HTTPS client that trusts exactly the certificate the appliance made for itself.
pub fn https_client(data_dir: &Path) -> reqwest::Client {
    let pem = std::fs::read(data_dir.join("tls/cert.pem")).unwrap();
    let cert = reqwest::Certificate::from_pem(&pem).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(cert)
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A child `clientele serve` that is killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub stdout_lines: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` (a `serve` command) and waits for its "serving on" line.
#[allow(clippy::zombie_processes)] // the returned `Server` kills and waits for it on drop
pub fn spawn_server(mut cmd: Command) -> Server {
    use std::io::{BufRead, BufReader, Read};
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            let _ = child.wait();
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("server exited before serving: {lines:?} {err}");
        }
        lines.push(line.trim_end().to_owned());
        if let Some(rest) = line
            .trim_end()
            .strip_prefix("Clientele is serving on https://")
        {
            let port = rest
                .trim_end_matches('/')
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            // Keep draining stdout so the child never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut sink = String::new();
                while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
                    sink.clear();
                }
            });
            return Server {
                child,
                port,
                stdout_lines: lines,
            };
        }
    }
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Opens the raw sled database below a store, as someone with the files but not the key
/// would; waits for sled to release the lock of a store that was just closed.
pub fn raw_sled(dir: &Path) -> sled::Db {
    for _ in 0..100 {
        match sled::open(dir.join("db")) {
            Ok(db) => return db,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    panic!("the store's database stayed locked");
}
