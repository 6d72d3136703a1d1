//! Privacy requests for the compliance role: find the customer, download the subject access
//! export, erase, set or lift a legal hold, and review and erase customers past the retention
//! period. Every action is audited by the customer service in the same write.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::audit::{Action, Actor, Event};
use crate::crm::CrmError;
use crate::crm::privacy::RetentionRow;
use crate::crm::search::Hit;
use crate::domain::Id;
use crate::domain::customer::Customer;

use super::AppState;
use super::duplicates::crm_error;
use super::error::WebError;
use super::guard::{SignedIn, redirect};
use super::parse_id;
use super::shell::Shell;
use super::signin::{client_address, render};

fn actor(who: &SignedIn, req: &HttpRequest) -> Actor {
    Actor::user(&who.user).from_address(client_address(req))
}

/// Most retention rows shown (and so erased) at once.
const RETENTION_PAGE: usize = crate::crm::privacy::MAX_BULK;

#[derive(Debug)]
struct DueRow {
    id: Id,
    name: String,
    last_activity: String,
    legal_hold: bool,
}

fn due_row(r: RetentionRow) -> DueRow {
    DueRow {
        id: r.id,
        name: r.name,
        last_activity: r.last_activity_at.strftime("%Y-%m-%d").to_string(),
        legal_hold: r.legal_hold,
    }
}

#[derive(Debug, Template)]
#[template(path = "privacy/index.html")]
struct IndexPage {
    shell: Shell,
    query: String,
    hits: Vec<Hit>,
    searched: bool,
    retention: String,
    due: Vec<DueRow>,
    due_total: usize,
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `GET /privacy`: find a customer; customers past the retention period.
pub async fn index(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, WebError> {
    index_page(&state, &who, &req, &query.q, None).await
}

async fn index_page(
    state: &AppState,
    who: &SignedIn,
    req: &HttpRequest,
    query: &str,
    flash: Option<(&'static str, String)>,
) -> Result<HttpResponse, WebError> {
    let query = query.trim();
    let mut hits = Vec::new();
    if !query.is_empty() {
        if let Ok(id) = query.parse::<Id>()
            && let Ok(Some(c)) = state.customers.get(id)
        {
            hits.push(Hit {
                id,
                name: c.display_name(),
                postcode: c.postcode().unwrap_or_default().to_owned(),
                matched: crate::crm::search::Match::Exact,
            });
        }
        hits.extend(state.customers.search(query, 20).map_err(crm_error)?);
        state
            .customers
            .record(
                Event::new(Action::CustomerSearched)
                    .by(actor(who, req))
                    .reason(format!("privacy page; {} results", hits.len())),
            )
            .await
            .map_err(crm_error)?;
    }
    let retention = state.config.customers.retention;
    let customers = state.customers.clone();
    let rows = tokio::task::spawn_blocking(move || customers.retention_due(retention))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
        .map_err(crm_error)?;
    let due_total = rows.len();
    let mut shell = Shell::signed_in(who, "Privacy requests", "/privacy");
    if let Some((kind, text)) = flash {
        shell = shell.with_flash(kind, text);
    }
    render(
        &IndexPage {
            shell,
            query: query.to_owned(),
            searched: !query.is_empty(),
            hits,
            retention: humantime::format_duration(retention).to_string(),
            due: rows.into_iter().take(RETENTION_PAGE).map(due_row).collect(),
            due_total,
        },
        StatusCode::OK,
    )
}

#[derive(Debug, Template)]
#[template(path = "privacy/customer.html")]
struct CustomerPage {
    shell: Shell,
    id: Id,
    customer: Option<Customer>,
    merged_into: Option<Id>,
    merged_profiles: usize,
    timeline_items: usize,
    error: String,
}

/// `GET /privacy/customers/{id}`: what is held, and the actions (an audited read).
pub async fn customer(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&path)?;
    customer_page(&state, &who, &req, id, String::new(), StatusCode::OK).await
}

async fn customer_page(
    state: &AppState,
    who: &SignedIn,
    req: &HttpRequest,
    id: Id,
    error: String,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let shell = |title: &str| Shell::signed_in(who, title, "/privacy");
    match state.customers.view(id, actor(who, req)).await {
        Ok(c) => {
            let timeline_items = state.customers.timeline(id).map_err(crm_error)?.len();
            let page = CustomerPage {
                shell: shell(&c.display_name()),
                id,
                merged_into: c.merged_into,
                merged_profiles: c.merged_from.len(),
                timeline_items,
                customer: Some(c),
                error,
            };
            render(&page, status)
        }
        Err(CrmError::Erased(_)) => render(
            &CustomerPage {
                shell: shell("Erased customer"),
                id,
                customer: None,
                merged_into: None,
                merged_profiles: 0,
                timeline_items: 0,
                error,
            },
            status,
        ),
        Err(err) => Err(crm_error(err)),
    }
}

/// `POST /privacy/customers/{id}/export`: the subject access export as a JSON download.
pub async fn export(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&path)?;
    let export = state
        .customers
        .export_subject(id, actor(&who, &req))
        .await
        .map_err(crm_error)?;
    let body = serde_json::to_vec_pretty(&export).map_err(|e| WebError::Internal(e.to_string()))?;
    tracing::info!(customer = %id, by = %who.user.id, "subject access export");
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"customer-{id}.json\""),
        ))
        .body(body))
}

#[derive(Debug, Deserialize)]
pub struct EraseForm {
    #[serde(default)]
    confirm: String,
}

/// `POST /privacy/customers/{id}/erase`: needs `ERASE` typed in the confirmation field.
pub async fn erase(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<EraseForm>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&path)?;
    if form.confirm.trim() != "ERASE" {
        return customer_page(
            &state,
            &who,
            &req,
            id,
            "type ERASE in capitals to confirm".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    match state.customers.erase(id, actor(&who, &req)).await {
        Ok(_) => Ok(redirect(&format!("/privacy/customers/{id}"))),
        Err(CrmError::Invalid(errors)) => {
            let message = errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            customer_page(
                &state,
                &who,
                &req,
                id,
                message,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(err) => Err(crm_error(err)),
    }
}

#[derive(Debug, Deserialize)]
pub struct HoldForm {
    hold: String,
}

/// `POST /privacy/customers/{id}/legal-hold`: `hold` is `on` or `off`.
pub async fn legal_hold(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<HoldForm>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&path)?;
    let hold = match form.hold.as_str() {
        "on" => true,
        "off" => false,
        _ => {
            return Err(WebError::Invalid {
                field: "hold".into(),
                message: "must be on or off".into(),
            });
        }
    };
    state
        .customers
        .set_legal_hold(id, hold, actor(&who, &req))
        .await
        .map_err(crm_error)?;
    Ok(redirect(&format!("/privacy/customers/{id}")))
}

/// `POST /privacy/retention/erase`: erases the ticked customers still past the period and not
/// under legal hold.
pub async fn retention_erase(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    let mut ids = Vec::new();
    for (key, value) in form.into_inner() {
        if key == "customer" {
            ids.push(value.parse::<Id>().map_err(|_| WebError::Invalid {
                field: "customer".into(),
                message: format!("{value:?} is not a customer id"),
            })?);
        }
    }
    if ids.is_empty() {
        return index_page(
            &state,
            &who,
            &req,
            "",
            Some(("warn", "Tick the customers to erase first.".into())),
        )
        .await;
    }
    let outcome = state
        .customers
        .erase_for_retention(&ids, state.config.customers.retention, actor(&who, &req))
        .await
        .map_err(crm_error)?;
    let text = format!(
        "Erased {} customers; {} under legal hold kept; {} skipped (active again or already gone).",
        outcome.erased.len(),
        outcome.held.len(),
        outcome.skipped.len()
    );
    index_page(&state, &who, &req, "", Some(("ok", text))).await
}
