//! HTML pages. Each page has a view-model struct and a template under `templates/`.

use actix_web::{HttpResponse, web};
use askama::Template;
use askama_web::WebTemplate;

use super::AppState;
use super::error::WebError;
use super::guard::SignedIn;
use super::shell::Shell;
use crate::domain::account::Location;

#[derive(Debug, Template, WebTemplate)]
#[template(path = "home.html")]
pub struct HomePage {
    shell: Shell,
    version: &'static str,
    started: String,
    stores: Vec<Location>,
    chain_wide: bool,
}

/// `GET /`: what exists so far, and the stores the user works with.
pub async fn home(state: web::Data<AppState>, who: SignedIn) -> Result<HomePage, WebError> {
    let stores = state
        .accounts
        .locations()?
        .into_iter()
        .filter(|l| who.user.can_see_store(l.id))
        .collect();
    Ok(HomePage {
        shell: Shell::signed_in(&who, "Home", "/"),
        version: env!("CARGO_PKG_VERSION"),
        started: state.started_at.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        stores,
        chain_wide: who.user.role.chain_wide(),
    })
}

/// `GET /healthz`: answers without login, for load balancers and `doctor`.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    let ok = web::block(move || store.contains(crate::store::Table::new("keyring"), b"check"))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "store": if ok { "open" } else { "unavailable" },
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Unknown paths (no policy is needed: nothing is served).
pub async fn not_found() -> Result<HttpResponse, WebError> {
    Err(WebError::NotFound)
}

/// Embedded static files, so the binary is the whole product.
pub async fn asset(path: web::Path<String>) -> Result<HttpResponse, WebError> {
    let (body, content_type): (&'static [u8], &str) = match path.as_str() {
        "app.css" => (
            include_bytes!("../../static/app.css"),
            "text/css; charset=utf-8",
        ),
        "app.js" => (
            include_bytes!("../../static/app.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return Err(WebError::NotFound),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .body(body))
}
