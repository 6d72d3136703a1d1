//! Builds and starts the whole application from a configuration. `main` and the integration
//! tests both come through here.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;

use tokio::task::JoinHandle;
use tracing::info;

use crate::auth::accounts::Accounts;
use crate::auth::password::{HashCost, HashLimiter, PasswordHasher};
use crate::auth::sessions::Sessions;
use crate::auth::throttle::Throttle;
use crate::auth::tokens::Tokens;
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
            task.abort();
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
    let hasher = Arc::new(
        PasswordHasher::new(HashCost::default())
            .map_err(|e| StartError::Io(std::io::Error::other(e)))?,
    );
    let limiter = Arc::new(HashLimiter::new(config.session.max_concurrent_hashes));
    let accounts = Accounts::new(
        store.clone(),
        Arc::clone(&deps.clock),
        Arc::clone(&deps.random),
        hasher,
        limiter,
    );
    let sessions = Sessions::new(
        store.clone(),
        Arc::clone(&deps.clock),
        Arc::clone(&deps.random),
        config.session.idle_timeout,
        config.session.absolute_timeout,
    );
    let tokens = Tokens::new(
        store.clone(),
        Arc::clone(&deps.clock),
        Arc::clone(&deps.random),
    );
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(write_last_seen(sessions.clone())));
    let state = actix_web::web::Data::new(AppState {
        store: store.clone(),
        accounts,
        sessions,
        throttle: Throttle::default(),
        tokens,
        clock: Arc::clone(&deps.clock),
        random: Arc::clone(&deps.random),
        config: Arc::clone(&config),
        started_at: deps.clock.now(),
    });

    let mut handles = Vec::new();
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

/// Writes the sessions' last-seen times every minute, so a page view is not a durable write.
async fn write_last_seen(sessions: Sessions) -> std::io::Result<()> {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        every.tick().await;
        if let Err(err) = sessions.write_last_seen().await {
            tracing::warn!(error = %err, "could not write session last-seen times");
        }
    }
}
