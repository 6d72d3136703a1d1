//! Duplicate review for managers and admins: the ranked candidates, a side-by-side preview of
//! two profiles with their differences marked, "merge, keeping this one", "not the same
//! person", the re-scan button, and each merge's page with its undo.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::audit::Actor;
use crate::crm::merge::MergeRecord;
use crate::crm::{CrmError, DuplicateCandidate, DuplicateStatus};
use crate::domain::Id;
use crate::domain::customer::Customer;

use super::AppState;
use super::error::WebError;
use super::guard::{SignedIn, redirect};
use super::parse_id;
use super::shell::Shell;
use super::signin::{client_address, render};

/// A customer-service failure as a web error: bad input names its field, a profile that is
/// gone is a 404 or says where it went.
pub fn crm_error(err: CrmError) -> WebError {
    match err {
        CrmError::Invalid(errors) => {
            let first = errors.into_iter().next();
            WebError::Invalid {
                field: first.as_ref().map_or_else(String::new, |e| e.field.clone()),
                message: first.map_or_else(String::new, |e| e.message),
            }
        }
        CrmError::IdentityTaken { field, other } => WebError::Invalid {
            field,
            message: format!("already belongs to customer {other}"),
        },
        CrmError::NotFound(_) => WebError::NotFound,
        CrmError::Erased(id) => WebError::BadRequest(format!("customer {id} was erased")),
        CrmError::Merged(id, survivor) => {
            WebError::BadRequest(format!("customer {id} was merged into customer {survivor}"))
        }
        CrmError::Store(err) => WebError::Store(err),
    }
}

fn actor(who: &SignedIn, req: &HttpRequest) -> Actor {
    Actor::user(&who.user).from_address(client_address(req))
}

/// One candidate on the review list.
#[derive(Debug)]
struct CandidateRow {
    a: Id,
    b: Id,
    a_name: String,
    b_name: String,
    reasons: String,
    score: u32,
}

#[derive(Debug, Template)]
#[template(path = "duplicates/list.html")]
struct ListPage {
    shell: Shell,
    rows: Vec<CandidateRow>,
    merges: Vec<MergeRow>,
}

#[derive(Debug)]
struct MergeRow {
    id: Id,
    survivor: Id,
    merged: Id,
    at: String,
    by: String,
    undone: bool,
}

fn merge_row(r: &MergeRecord) -> MergeRow {
    MergeRow {
        id: r.id,
        survivor: r.survivor,
        merged: r.merged,
        at: r.at.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        by: r.by.clone(),
        undone: r.undone_at.is_some(),
    }
}

/// The display name of a live profile, or `None` when it is gone (erased, merged away).
fn live_name(state: &AppState, id: Id) -> Option<String> {
    state.customers.live(id).ok().map(|c| c.display_name())
}

/// Most candidates listed at once.
const LIST_LIMIT: usize = 200;

/// `GET /customers/duplicates`.
pub async fn list(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
) -> Result<HttpResponse, WebError> {
    list_page(&state, &who, &req, None)
}

fn list_page(
    state: &AppState,
    who: &SignedIn,
    _req: &HttpRequest,
    flash: Option<(&'static str, String)>,
) -> Result<HttpResponse, WebError> {
    let candidates: Vec<DuplicateCandidate> = state
        .customers
        .duplicates(DuplicateStatus::Open)
        .map_err(crm_error)?;
    let mut rows = Vec::new();
    for c in candidates {
        if rows.len() >= LIST_LIMIT {
            break;
        }
        let (Some(a_name), Some(b_name)) = (live_name(state, c.a), live_name(state, c.b)) else {
            continue;
        };
        rows.push(CandidateRow {
            a: c.a,
            b: c.b,
            a_name,
            b_name,
            reasons: c.reasons.join("; "),
            score: c.score,
        });
    }
    let merges = state
        .customers
        .merges()
        .map_err(crm_error)?
        .iter()
        .take(20)
        .map(merge_row)
        .collect();
    let mut shell = Shell::signed_in(who, "Duplicate customers", "/customers/duplicates");
    if let Some((kind, text)) = flash {
        shell = shell.with_flash(kind, text);
    }
    render(
        &ListPage {
            shell,
            rows,
            merges,
        },
        StatusCode::OK,
    )
}

/// `POST /customers/duplicates/scan`: runs the fuzzy scan now.
pub async fn scan(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
) -> Result<HttpResponse, WebError> {
    let report = state.customers.scan_duplicates().await.map_err(crm_error)?;
    let text = format!(
        "Scanned {} customers in {} ms: {} similar pairs, {} raised for review.",
        report.customers, report.elapsed_ms, report.pairs, report.raised
    );
    list_page(&state, &who, &req, Some(("ok", text)))
}

/// One line of the side-by-side preview.
#[derive(Debug)]
struct FieldRow {
    label: &'static str,
    left: String,
    right: String,
    differs: bool,
}

#[derive(Debug, Template)]
#[template(path = "duplicates/compare.html")]
struct ComparePage {
    shell: Shell,
    left: Customer,
    right: Customer,
    rows: Vec<FieldRow>,
    reasons: String,
    score: u32,
    open: bool,
}

fn join(values: &[String]) -> String {
    values.join(", ")
}

fn field_rows(a: &Customer, b: &Customer) -> Vec<FieldRow> {
    let show = |c: &Customer| -> Vec<(&'static str, String)> {
        vec![
            ("Given name", c.given_name.clone()),
            ("Family name", c.family_name.clone()),
            ("Emails", join(&c.emails)),
            ("Phones", join(&c.phones)),
            (
                "Addresses",
                c.addresses
                    .iter()
                    .map(|a| {
                        [
                            &a.line1,
                            &a.line2,
                            &a.postcode,
                            &a.city,
                            &a.region,
                            &a.country,
                        ]
                        .iter()
                        .filter(|p| !p.is_empty())
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                    })
                    .collect::<Vec<_>>()
                    .join(" / "),
            ),
            (
                "Birthday",
                c.birthday.map(|d| d.to_string()).unwrap_or_default(),
            ),
            ("Loyalty ids", join(&c.loyalty_ids)),
            (
                "External ids",
                c.external_ids
                    .iter()
                    .map(|e| format!("{}:{}", e.source, e.id))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("Tags", join(&c.tags)),
            (
                "Preferred channel",
                c.preferred_channel
                    .map(|ch| ch.label().to_owned())
                    .unwrap_or_default(),
            ),
            (
                "Preferred store",
                c.preferred_store.map(|s| s.to_string()).unwrap_or_default(),
            ),
            (
                "Consents",
                crate::domain::customer::Channel::ALL
                    .iter()
                    .filter_map(|ch| {
                        c.consent(*ch).map(|k| {
                            format!(
                                "{} {}",
                                ch.label(),
                                if k.granted { "granted" } else { "withdrawn" }
                            )
                        })
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            (
                "Legal hold",
                if c.legal_hold { "yes" } else { "no" }.to_owned(),
            ),
            (
                "Merged from",
                c.merged_from
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("Created", c.created_at.strftime("%Y-%m-%d").to_string()),
            (
                "Last activity",
                c.last_activity_at.strftime("%Y-%m-%d").to_string(),
            ),
        ]
    };
    show(a)
        .into_iter()
        .zip(show(b))
        .map(|((label, left), (_, right))| FieldRow {
            label,
            differs: left != right,
            left,
            right,
        })
        .collect()
}

/// `GET /customers/duplicates/{a}/{b}`: both profiles side by side (two audited reads).
pub async fn compare(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, WebError> {
    let (a, b) = (parse_id(&path.0)?, parse_id(&path.1)?);
    if a == b {
        return Err(WebError::NotFound);
    }
    let left = state
        .customers
        .view(a, actor(&who, &req))
        .await
        .map_err(crm_error)?;
    let right = state
        .customers
        .view(b, actor(&who, &req))
        .await
        .map_err(crm_error)?;
    let candidate = state.customers.duplicate(a, b).map_err(crm_error)?;
    let rows = field_rows(&left, &right);
    let open = left.merged_into.is_none() && right.merged_into.is_none();
    let title = format!(
        "Compare {} and {}",
        left.display_name(),
        right.display_name()
    );
    render(
        &ComparePage {
            shell: Shell::signed_in(&who, title, "/customers/duplicates"),
            rows,
            reasons: candidate
                .as_ref()
                .map(|c| c.reasons.join("; "))
                .unwrap_or_default(),
            score: candidate.as_ref().map_or(0, |c| c.score),
            open,
            left,
            right,
        },
        StatusCode::OK,
    )
}

#[derive(Debug, Deserialize)]
pub struct MergeForm {
    survivor: String,
    merged: String,
}

/// `POST /customers/merge`: merges `merged` into `survivor`.
pub async fn merge(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    form: web::Form<MergeForm>,
) -> Result<HttpResponse, WebError> {
    let survivor = parse_id(&form.survivor)?;
    let merged = parse_id(&form.merged)?;
    let record = state
        .customers
        .merge(survivor, merged, actor(&who, &req))
        .await
        .map_err(crm_error)?;
    tracing::info!(merge = %record.id, by = %who.user.id, "customers merged");
    Ok(redirect(&format!("/customers/merges/{}", record.id)))
}

/// `POST /customers/duplicates/{a}/{b}/dismiss`: not the same person.
pub async fn dismiss(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, WebError> {
    let (a, b) = (parse_id(&path.0)?, parse_id(&path.1)?);
    state
        .customers
        .dismiss_duplicate(a, b, &actor(&who, &req))
        .await
        .map_err(crm_error)?;
    list_page(
        &state,
        &who,
        &req,
        Some(("ok", "Marked as two different people.".to_owned())),
    )
}

#[derive(Debug, Template)]
#[template(path = "duplicates/merge.html")]
struct MergePage {
    shell: Shell,
    merge: MergeRow,
    survivor_name: String,
    merged_name: String,
}

/// `GET /customers/merges/{id}`: what a merge did, with its undo.
pub async fn show_merge(
    state: web::Data<AppState>,
    who: SignedIn,
    path: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&path)?;
    let record = state
        .customers
        .merge_record(id)
        .map_err(crm_error)?
        .ok_or(WebError::NotFound)?;
    let name = |id: Id| match state.customers.get(id) {
        Ok(Some(c)) => c.display_name(),
        Ok(None) => "(gone)".to_owned(),
        Err(_) => "(erased)".to_owned(),
    };
    let page = MergePage {
        shell: Shell::signed_in(&who, "Merge", "/customers/duplicates"),
        survivor_name: name(record.survivor),
        merged_name: name(record.merged),
        merge: merge_row(&record),
    };
    render(&page, StatusCode::OK)
}

/// `POST /customers/merges/{id}/undo`.
pub async fn undo(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&path)?;
    state
        .customers
        .undo_merge(id, actor(&who, &req))
        .await
        .map_err(crm_error)?;
    tracing::info!(merge = %id, by = %who.user.id, "merge undone");
    Ok(redirect(&format!("/customers/merges/{id}")))
}
