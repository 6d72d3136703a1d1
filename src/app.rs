//! Builds and starts the whole application from a configuration. `main` and the integration
//! tests both come through here.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;

use tokio::task::JoinHandle;
use tracing::info;

use crate::clock::{Clock, Random, SystemClock, SystemRandom};
use crate::config::Config;
use crate::control;
use crate::store::{MasterKeySource, Store, StoreError, StoreOptions};
use crate::web::{self, AppState};

/// The clock and random source the application runs on.
#[derive(Debug, Clone)]
pub struct Deps {
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
}

impl Deps {
    /// The real clock and the operating system's random source.
    #[must_use]
    pub fn system() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            random: Arc::new(SystemRandom::new()),
        }
    }
}

/// Why the application did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] web::tls::TlsError),
    #[error(transparent)]
    Bind(#[from] web::BindError),
    #[error("cannot start the server: {0}")]
    Io(#[from] std::io::Error),
}

/// A running application.
#[derive(Debug)]
pub struct RunningApp {
    /// Where HTTPS answers (with the real port when 0 was asked for).
    pub https_addr: SocketAddr,
    /// Where the plain-HTTP redirect answers, when configured.
    pub redirect_addr: Option<SocketAddr>,
    pub store: Store,
    handles: Vec<ServerHandle>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    control: Option<control::ControlServer>,
}

impl RunningApp {
    /// Stops accepting, finishes requests in flight, and closes the store.
    pub async fn stop(self) {
        for handle in &self.handles {
            handle.stop(true).await;
        }
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(control) = self.control {
            control.stop().await;
        }
        let store = self.store;
        let _ = tokio::task::spawn_blocking(move || drop(store)).await;
        info!("stopped");
    }
}

/// Opens the store with the master key from `key`, prepares TLS, binds the listeners and
/// starts serving.
pub async fn start(
    config: Config,
    deps: Deps,
    key: MasterKeySource,
) -> Result<RunningApp, StartError> {
    let config = Arc::new(config);
    let options = StoreOptions::from_config(&config);
    let source = key;
    let (clock, random) = (Arc::clone(&deps.clock), Arc::clone(&deps.random));
    let store = tokio::task::spawn_blocking(move || Store::open(&options, &source, clock, random))
        .await
        .map_err(|e| StartError::Io(std::io::Error::other(e)))??;

    if let Some(files) = web::tls::ensure_self_signed(&config, deps.clock.now())? {
        info!(cert = %files.cert.display(), "self-signed certificate created");
    }
    let tls = web::tls::server_config(&web::tls::certificate_files(&config))?;

    let https = web::bind(config.server.listen, "server.listen")?;
    let https_addr = https.local_addr()?;
    let state = actix_web::web::Data::new(AppState {
        store: store.clone(),
        clock: Arc::clone(&deps.clock),
        random: Arc::clone(&deps.random),
        config: Arc::clone(&config),
        started_at: deps.clock.now(),
    });

    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    let server = web::https_server(state, https, tls, config.server.workers)?;
    handles.push(server.handle());
    tasks.push(tokio::spawn(server));

    let mut redirect_addr = None;
    if let Some(addr) = config.server.redirect_listen {
        let listener = web::bind(addr, "server.redirect_listen")?;
        redirect_addr = Some(listener.local_addr()?);
        let server = web::redirect_server(listener, https_addr.port())?;
        handles.push(server.handle());
        tasks.push(tokio::spawn(server));
    }

    let control = control::ControlServer::start(&config.control_socket(), store.clone())?;
    info!(address = %https_addr, "listening (HTTPS)");
    Ok(RunningApp {
        https_addr,
        redirect_addr,
        store,
        handles,
        tasks,
        control: Some(control),
    })
}
