//! Builds and starts the whole application from a configuration. `main` and the integration
//! tests both come through here.
//!
//! As a service ([`serve`]) it also speaks systemd's notify protocol (`READY=1` once the store
//! is open and the listeners are bound, `STOPPING=1` on the way out) and reloads on SIGHUP: the
//! TLS certificate, the webhook secrets and the log settings, without closing a connection.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::audit::{self, Action, Actor, Audit, Event};
use crate::auth::accounts::Accounts;
use crate::auth::password::{HashCost, HashLimiter, PasswordHasher};
use crate::auth::sessions::Sessions;
use crate::auth::throttle::Throttle;
use crate::auth::tokens::Tokens;
use crate::clock::{Clock, Random, SystemClock, SystemRandom};
use crate::config::Config;
use crate::control;
use crate::crm::Customers;
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
    /// Where the webhook listener answers, when configured.
    pub webhook_addr: Option<SocketAddr>,
    pub store: Store,
    pub audit: Audit,
    sync: crate::sync::Supervisor,
    handles: Vec<ServerHandle>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    control: Option<control::ControlServer>,
    certificate: Arc<web::tls::ReloadableCertificate>,
    /// The webhook secrets, re-read on reload.
    webhook_keys: Option<Arc<web::webhooks::WebhookKeys>>,
}

impl RunningApp {
    /// Stops accepting, finishes requests in flight, and closes the store.
    pub async fn stop(self) {
        systemd::notify("STOPPING=1");
        for handle in &self.handles {
            handle.stop(true).await;
        }
        self.sync.stop().await;
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
        if let Some(control) = self.control {
            control.stop().await;
        }
        let audit = self.audit;
        let _ = tokio::task::spawn_blocking(move || {
            let stopped = Event::new(Action::AuditStopped).by(Actor::system("shutdown"));
            if let Err(err) = audit.record_blocking(stopped) {
                tracing::error!(error = %err, "could not record the audit trail stopping");
            }
            if let Err(err) = audit.checkpoint_now() {
                tracing::error!(error = %err, "could not sign the final audit checkpoint");
            }
        })
        .await;
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
    let audit_config = config.audit.clone();
    let (store, audit) = tokio::task::spawn_blocking(move || {
        open_store_and_trail(&options, &source, clock, &random, &audit_config)
    })
    .await
    .map_err(|e| StartError::Io(std::io::Error::other(e)))??;
    audit.write_public_key(&config.data_dir)?;
    let customers = open_customers(&store, &config, &deps).await?;

    if let Some(files) = web::tls::ensure_self_signed(&config, deps.clock.now())? {
        info!(cert = %files.cert.display(), "self-signed certificate created");
    }
    let (tls, certificate) =
        web::tls::reloadable_server_config(&web::tls::certificate_files(&config))?;

    let https = web::bind(config.server.listen, "server.listen")?;
    let https_addr = https.local_addr()?;
    let webhooks = bind_webhooks(&config)?;
    let webhook_keys = webhooks.as_ref().map(|(_, keys)| Arc::clone(keys));
    let accounts = open_accounts(&store, &config, &deps)?;
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
    let checkpoints = audit.clone();
    let mut tasks = vec![tokio::spawn(write_last_seen(sessions.clone()))];
    tasks.push(tokio::spawn(async move {
        audit::run_checkpoints(checkpoints).await;
        Ok(())
    }));
    tasks.push(tokio::spawn(audit::retention::run(
        audit.clone(),
        config.data_dir.clone(),
    )));
    let audit_index = audit::index::AuditIndex::new(audit.clone());
    tasks.push(tokio::spawn(audit::index::keep_up(audit_index.clone())));
    tasks.push(spawn_backup_schedule(&config, &store, &deps));
    let (ingest, sync) =
        start_customer_and_sales_jobs(&store, &config, &deps, &customers, &mut tasks);
    let state = actix_web::web::Data::new(AppState {
        store: store.clone(),
        audit: audit.clone(),
        audit_index,
        ingest,
        sync: sync.clone(),
        customers,
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
    let webhook_addr = start_webhooks(&state, webhooks, &tls, &mut handles, &mut tasks)?;
    let server = web::https_server(state, https, tls, config.server.workers)?;
    handles.push(server.handle());
    tasks.push(tokio::spawn(server));

    let redirect_addr = start_redirect(&config, https_addr.port(), &mut handles, &mut tasks)?;

    let control = control::ControlServer::start(&config.control_socket(), store.clone())?;
    info!(address = %https_addr, "listening (HTTPS)");
    Ok(RunningApp {
        https_addr,
        redirect_addr,
        webhook_addr,
        store,
        audit,
        sync,
        handles,
        tasks,
        control: Some(control),
        certificate,
        webhook_keys,
    })
}

/// Opens the store and the audit trail, records the start and any migration not yet
/// recorded (blocking).
fn open_store_and_trail(
    options: &StoreOptions,
    source: &MasterKeySource,
    clock: Arc<dyn crate::clock::Clock>,
    random: &Arc<dyn crate::clock::Random>,
    audit_config: &crate::config::AuditConfig,
) -> Result<(Store, Audit), StoreError> {
    let store = Store::open(options, source, Arc::clone(&clock), Arc::clone(random))?;
    let audit = Audit::open(&store, clock, random.as_ref(), audit_config)?;
    audit.record_blocking(Event::new(Action::AuditStarted).by(Actor::system("startup")))?;
    if let Some((from, to)) = store.migration_note()? {
        audit.record_blocking(
            Event::new(Action::StoreMigrated)
                .by(Actor::system("startup"))
                .target("store", "schema")
                .reason(format!(
                    "schema {from} to {to}, after a backup into the data folder's backups/"
                )),
        )?;
        store.clear_migration_note()?;
    }
    Ok((store, audit))
}

/// Staff accounts, with the password hasher and its limiter.
fn open_accounts(store: &Store, config: &Config, deps: &Deps) -> Result<Accounts, StartError> {
    let hasher = Arc::new(
        PasswordHasher::new(HashCost::default())
            .map_err(|e| StartError::Io(std::io::Error::other(e)))?,
    );
    let limiter = Arc::new(HashLimiter::new(config.session.max_concurrent_hashes));
    Ok(Accounts::new(
        store.clone(),
        Arc::clone(&deps.clock),
        Arc::clone(&deps.random),
        hasher,
        limiter,
    ))
}

/// The plain-HTTP redirect, when `server.redirect_listen` is set; returns where it answers.
fn start_redirect(
    config: &Config,
    https_port: u16,
    handles: &mut Vec<ServerHandle>,
    tasks: &mut Vec<JoinHandle<std::io::Result<()>>>,
) -> Result<Option<SocketAddr>, StartError> {
    let Some(addr) = config.server.redirect_listen else {
        return Ok(None);
    };
    let listener = web::bind(addr, "server.redirect_listen")?;
    let redirect_addr = listener.local_addr()?;
    let server = web::redirect_server(listener, https_port)?;
    handles.push(server.handle());
    tasks.push(tokio::spawn(server));
    Ok(Some(redirect_addr))
}

/// The webhook listener and the providers' secrets, when `[webhooks] listen` is set.
fn bind_webhooks(
    config: &Config,
) -> Result<Option<(std::net::TcpListener, Arc<web::webhooks::WebhookKeys>)>, StartError> {
    let Some(addr) = config.webhooks.listen else {
        return Ok(None);
    };
    let listener = web::bind(addr, "webhooks.listen")?;
    let keys = web::webhooks::WebhookKeys::load(&config.webhooks)?;
    Ok(Some((listener, Arc::new(keys))))
}

/// Starts the webhook server (same certificate as the main one); returns where it answers.
fn start_webhooks(
    state: &actix_web::web::Data<AppState>,
    bound: Option<(std::net::TcpListener, Arc<web::webhooks::WebhookKeys>)>,
    tls: &rustls::ServerConfig,
    handles: &mut Vec<ServerHandle>,
    tasks: &mut Vec<JoinHandle<std::io::Result<()>>>,
) -> Result<Option<SocketAddr>, StartError> {
    let Some((listener, keys)) = bound else {
        return Ok(None);
    };
    let addr = listener.local_addr()?;
    let server = web::webhooks::webhook_server(state.clone(), keys, listener, tls.clone())?;
    handles.push(server.handle());
    tasks.push(tokio::spawn(server));
    info!(address = %addr, "listening for POS webhooks (HTTPS)");
    Ok(Some(addr))
}

/// Scheduled backups (the task ends at once when they are off).
fn spawn_backup_schedule(
    config: &Config,
    store: &Store,
    deps: &Deps,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(crate::backups::run_schedule(
        store.clone(),
        config.backup.clone(),
        config.backup_dir(),
        config.data_dir.clone(),
        Arc::clone(&deps.clock),
        Arc::clone(&deps.random),
    ))
}

/// The duplicate scan over customers; the sales ingest service, and the sync supervisor with
/// its connectors.
fn start_customer_and_sales_jobs(
    store: &Store,
    config: &Config,
    deps: &Deps,
    customers: &Customers,
    tasks: &mut Vec<JoinHandle<std::io::Result<()>>>,
) -> (crate::inventory::ingest::Ingest, crate::sync::Supervisor) {
    tasks.push(tokio::spawn(crate::crm::duplicates::run(customers.clone())));
    let ingest = crate::inventory::ingest::Ingest::new(
        store.clone(),
        Arc::clone(&deps.clock),
        customers.clone(),
    );
    let sync = crate::sync::Supervisor::start(
        config,
        store.clone(),
        ingest.clone(),
        Arc::clone(&deps.clock),
        Arc::clone(&deps.random),
    );
    (ingest, sync)
}

/// Re-reads the configuration for a reload, from the same sources as at start (file,
/// environment, flags); the error is the message to log.
pub type ConfigSource = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// [`start`] for the service: reloads on SIGHUP with the configuration from `reread`, then
/// tells systemd (when it started us with `Type=notify`) that Clientele is ready.
pub async fn serve(
    config: Config,
    deps: Deps,
    key: MasterKeySource,
    reread: ConfigSource,
) -> Result<RunningApp, StartError> {
    let clock = Arc::clone(&deps.clock);
    let mut app = start(config, deps, key).await?;

    // Installed before READY=1, so a reload systemd sends right away is never taken for the
    // default action of SIGHUP, which is to end the process.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let reloadable = Reloadable {
        certificate: Arc::clone(&app.certificate),
        webhook_keys: app.webhook_keys.clone(),
    };
    app.tasks.push(tokio::spawn(reload_on_hangup(
        hangups, reread, reloadable, clock,
    )));

    systemd::notify(&format!(
        "READY=1\nSTATUS=Serving HTTPS on {}",
        app.https_addr
    ));
    Ok(app)
}

/// Reloads at every SIGHUP. A reload that fails keeps everything as it was and says why.
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    reread: ConfigSource,
    reloadable: Reloadable,
    clock: Arc<dyn Clock>,
) -> std::io::Result<()> {
    while hangups.recv().await.is_some() {
        systemd::notify("RELOADING=1");
        let outcome = match reread() {
            Ok(config) => reload(&config, &reloadable, clock.as_ref()),
            Err(message) => Err(format!("configuration not re-read: {message}")),
        };
        match outcome {
            Ok(()) => info!("reloaded: TLS certificate, webhook secrets and log settings"),
            Err(message) => warn!(problem = %message, "reload incomplete"),
        }
        systemd::notify("READY=1\nSTATUS=Serving HTTPS (reloaded)");
    }
    Ok(())
}

/// What a reload (SIGHUP) re-reads besides the log settings.
#[derive(Debug)]
struct Reloadable {
    certificate: Arc<web::tls::ReloadableCertificate>,
    webhook_keys: Option<Arc<web::webhooks::WebhookKeys>>,
}

/// Applies the log settings, then the certificate (the self-signed one is remade first when
/// it is about to expire). Each part that fails keeps what was in use.
fn reload(config: &Config, reloadable: &Reloadable, clock: &dyn Clock) -> Result<(), String> {
    let certificate = &reloadable.certificate;
    let mut problems = Vec::new();
    match crate::logging::reload(config) {
        Ok(keys) if keys.is_empty() => {}
        Ok(keys) => warn!(
            keys = %keys.join(", "),
            "changed log settings apply at the next restart"
        ),
        Err(err) => problems.push(err.to_string()),
    }

    let files = web::tls::certificate_files(config);
    let certificate_read =
        web::tls::ensure_self_signed(config, clock.now()).and_then(|_| certificate.reload(&files));
    match certificate_read {
        Ok(()) => info!(cert = %files.cert.display(), "TLS certificate read"),
        Err(err) => problems.push(format!("{err}; the certificate in use stays")),
    }
    if let Some(keys) = &reloadable.webhook_keys {
        match keys.reload(&config.webhooks) {
            Ok(()) => info!("webhook secrets read"),
            Err(err) => problems.push(format!("{err}; the webhook secrets in use stay")),
        }
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The customer service, with its search index built: the service reports ready only once
/// every customer can be found.
async fn open_customers(
    store: &Store,
    config: &Config,
    deps: &Deps,
) -> Result<Customers, StartError> {
    let customers = Customers::new(
        store.clone(),
        Arc::clone(&deps.clock),
        Arc::clone(&deps.random),
        &config.customers.default_country,
    );
    let building = customers.clone();
    tokio::task::spawn_blocking(move || building.build_index())
        .await
        .map_err(|e| StartError::Io(std::io::Error::other(e)))??;
    Ok(customers)
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

/// systemd's notify protocol: one datagram of `KEY=value` lines to the socket named by
/// `NOTIFY_SOCKET`, which systemd sets for `Type=notify` services. Without the variable (a
/// terminal, a container, the tests) nothing is sent.
mod systemd {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;

    /// Sends `state`; a failure is logged and otherwise ignored, since the service works the
    /// same without it (systemd then times the start out and says so in its own log).
    pub fn notify(state: &str) {
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        if let Err(err) = send(&socket, state) {
            tracing::warn!(error = %err, "could not notify systemd");
        }
    }

    /// Sends `state` to the socket at `socket`: a path, or an abstract name after `@`.
    pub fn send(socket: &OsStr, state: &str) -> std::io::Result<()> {
        let datagram = UnixDatagram::unbound()?;
        let sent = match socket.as_bytes().strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                datagram.send_to_addr(state.as_bytes(), &address)?
            }
            None => datagram.send_to(state.as_bytes(), socket)?,
        };
        if sent == state.len() {
            Ok(())
        } else {
            Err(std::io::Error::other("the notification was cut short"))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::os::linux::net::SocketAddrExt;

        #[test]
        fn sends_one_datagram_to_a_path_and_to_an_abstract_name() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("notify");
            let receiver = UnixDatagram::bind(&path).unwrap();
            send(path.as_os_str(), "READY=1\nSTATUS=ok").unwrap();
            let mut buffer = [0u8; 64];
            let n = receiver.recv(&mut buffer).unwrap();
            assert_eq!(&buffer[..n], b"READY=1\nSTATUS=ok");

            let name = format!("clientele-notify-test-{}", std::process::id());
            let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
            let receiver = UnixDatagram::bind_addr(&address).unwrap();
            send(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
            let n = receiver.recv(&mut buffer).unwrap();
            assert_eq!(&buffer[..n], b"STOPPING=1");
        }

        #[test]
        fn a_missing_socket_is_an_error_not_a_panic() {
            let dir = tempfile::tempdir().unwrap();
            assert!(send(dir.path().join("absent").as_os_str(), "READY=1").is_err());
        }
    }
}
