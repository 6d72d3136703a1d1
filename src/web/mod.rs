//! The HTTPS server: routes, pages, middleware and TLS. Handlers hold no business rule; they
//! call services and render.

pub mod account;
pub mod admin;
pub mod api;
pub mod api_customers;
pub mod audit;
pub mod customer_files;
pub mod customers;
pub mod duplicates;
pub mod error;
pub mod guard;
pub mod inventory;
pub mod middleware;
pub mod pages;
pub mod privacy;
pub mod routes;
pub mod shell;
pub mod signin;
pub mod sync;
pub mod tls;
pub mod upload;
pub mod webhooks;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use jiff::Timestamp;

use crate::auth::accounts::Accounts;
use crate::auth::sessions::Sessions;
use crate::auth::throttle::Throttle;
use crate::auth::tokens::Tokens;
use crate::clock::{Clock, Random};
use crate::config::Config;
use crate::store::Store;

/// Largest accepted bodies: forms, JSON, anything else.
const FORM_LIMIT: usize = 16 * 1024;
const JSON_LIMIT: usize = 256 * 1024;
const PAYLOAD_LIMIT: usize = 1024 * 1024;

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    pub store: Store,
    pub audit: crate::audit::Audit,
    /// The trail's search index, for the compliance page.
    pub audit_index: crate::audit::index::AuditIndex,
    pub customers: crate::crm::Customers,
    /// Catalog, stock ledger and sales ingest.
    pub ingest: crate::inventory::ingest::Ingest,
    /// The sync supervisor: connectors, their state and dead letters.
    pub sync: crate::sync::Supervisor,
    pub accounts: Accounts,
    pub sessions: Sessions,
    pub throttle: Throttle,
    pub tokens: Tokens,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
    pub config: Arc<Config>,
    pub started_at: Timestamp,
}

impl AppState {
    /// A new request id: 16 hex digits from the random source.
    #[must_use]
    pub fn new_request_id(&self) -> String {
        let mut bytes = [0u8; 8];
        if self.random.fill(&mut bytes).is_err() {
            return "unavailable".into();
        }
        data_encoding::HEXLOWER.encode(&bytes)
    }
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(pages::home))
            .route(web::head().to(pages::home)),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(pages::health))
            .route(web::head().to(pages::health)),
    )
    .service(web::resource("/static/{file}").route(web::get().to(pages::asset)));
}

/// Builds and starts the HTTPS server on an already-bound listener.
pub fn https_server(
    state: web::Data<AppState>,
    listener: TcpListener,
    tls: rustls::ServerConfig,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::FormConfig::default().limit(FORM_LIMIT))
            .app_data(web::JsonConfig::default().limit(JSON_LIMIT))
            .app_data(web::PayloadConfig::default().limit(PAYLOAD_LIMIT))
            .configure(routes::register)
            .default_service(web::to(pages::not_found))
            .wrap(from_fn(middleware::error_pages))
            .wrap(middleware::security_headers())
            .wrap(from_fn(middleware::request_span))
    })
    .disable_signals()
    .shutdown_timeout(10);
    if workers > 0 {
        server = server.workers(workers);
    }
    Ok(server.listen_rustls_0_23(listener, tls)?.run())
}

/// A plain-HTTP server that only redirects to the HTTPS port.
pub fn redirect_server(
    listener: TcpListener,
    https_port: u16,
) -> std::io::Result<actix_web::dev::Server> {
    let server = HttpServer::new(move || {
        App::new().default_service(web::to(move |req: HttpRequest| async move {
            redirect(&req, https_port)
        }))
    })
    .disable_signals()
    .workers(1)
    .listen(listener)?
    .run();
    Ok(server)
}

fn redirect(req: &HttpRequest, https_port: u16) -> HttpResponse {
    let info = req.connection_info();
    let host = info
        .host()
        .rsplit_once(':')
        .map_or(info.host(), |(host, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                host
            } else {
                info.host()
            }
        });
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
    if !valid {
        return HttpResponse::BadRequest().body("invalid Host header");
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", actix_web::http::uri::PathAndQuery::as_str);
    let location = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    HttpResponse::PermanentRedirect()
        .insert_header(("Location", location))
        .finish()
}

/// Binds a listener, saying which config key to change when the port is taken.
pub fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).map_err(|source| BindError {
        addr,
        key: key.to_owned(),
        source,
    })
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} (config key `{key}`): {source}; choose another address with --listen or stop what uses it"
)]
pub struct BindError {
    pub addr: SocketAddr,
    pub key: String,
    pub source: std::io::Error,
}

/// The id in a path segment; anything that is not an id is a 404, as for a missing record.
pub(crate) fn parse_id(text: &str) -> Result<crate::domain::Id, error::WebError> {
    text.trim().parse().map_err(|_| error::WebError::NotFound)
}
