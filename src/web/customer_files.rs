//! Customer files for managers: the import upload page (the same all-or-nothing import as
//! `clientele import customers`) and the CSV export of every live customer.
//!
//! An import is recorded by the importer itself (`customer.imported`); an export is recorded
//! before the file leaves (`customer.exported`, fail closed: no entry, no file).

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;

use crate::crm::import::{COLUMNS, ImportError, Rejection, parse_csv};

use super::AppState;
use super::customers::web_error;
use super::error::WebError;
use super::guard::SignedIn;
use super::shell::Shell;
use super::signin::render;
use super::upload;

/// Rejected rows shown on the page; the count says how many more there were.
const MAX_SHOWN_REJECTIONS: usize = 1000;

/// What an import did, for the page.
#[derive(Debug)]
struct ImportReport {
    imported: bool,
    message: String,
    rows: u64,
    created: u64,
    updated: u64,
    unchanged: u64,
    rejections: Vec<Rejection>,
}

#[derive(Debug, Template)]
#[template(path = "customers/import.html")]
struct ImportPage {
    shell: Shell,
    columns: String,
    limit_mb: usize,
    report: Option<ImportReport>,
}

fn import_page(who: &SignedIn, report: Option<ImportReport>) -> Result<HttpResponse, WebError> {
    let status = match &report {
        Some(r) if !r.imported => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    render(
        &ImportPage {
            shell: Shell::signed_in(who, "Import customers", "/customers"),
            columns: COLUMNS.join(", "),
            limit_mb: upload::UPLOAD_LIMIT / (1024 * 1024),
            report,
        },
        status,
    )
}

fn refused(message: String, rejections: Vec<Rejection>) -> ImportReport {
    ImportReport {
        imported: false,
        message,
        rows: 0,
        created: 0,
        updated: 0,
        unchanged: 0,
        rejections,
    }
}

/// `GET /customers/import`: the upload form.
pub async fn import_form(who: SignedIn) -> Result<HttpResponse, WebError> {
    import_page(&who, None)
}

/// `POST /customers/import`: imports the uploaded CSV and shows the report. The guard has
/// checked the form's CSRF field.
pub async fn import(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, WebError> {
    let Some(bytes) = upload::form_file(&req, payload).await? else {
        let report = refused("Choose a CSV file to import.".into(), Vec::new());
        return import_page(&who, Some(report));
    };

    let report = match run_import(&state, bytes, who.actor()).await {
        Ok(record) => ImportReport {
            imported: true,
            message: format!(
                "{} rows imported: {} new customers, {} updated, {} unchanged.",
                record.rows, record.created, record.updated, record.unchanged
            ),
            rows: record.rows,
            created: record.created,
            updated: record.updated,
            unchanged: record.unchanged,
            rejections: Vec::new(),
        },
        Err(ImportError::Crm(err)) => return Err(web_error(err)),
        Err(err @ ImportError::Rejected { .. }) => {
            let message = err.to_string();
            let ImportError::Rejected { mut rejections, .. } = err else {
                return Err(WebError::Internal("import report lost".into()));
            };
            if rejections.len() > MAX_SHOWN_REJECTIONS {
                rejections.truncate(MAX_SHOWN_REJECTIONS);
            }
            refused(message, rejections)
        }
        Err(err) => refused(err.to_string(), Vec::new()),
    };
    import_page(&who, Some(report))
}

/// The same steps as [`crate::crm::Customers::import_csv`], with the CPU-bound read and
/// validation of the file moved off the request's worker thread, so other pages keep
/// answering while a large file is checked.
async fn run_import(
    state: &AppState,
    bytes: Vec<u8>,
    actor: crate::audit::Actor,
) -> Result<crate::crm::import::ImportRecord, ImportError> {
    state.customers.sweep_unpublished_imports().await?;
    let country = state.customers.default_country().to_owned();
    let today = state
        .customers
        .now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let rows = web::block(move || parse_csv(&bytes, &country, today, &|_, _, _| {}))
        .await
        .map_err(|e| ImportError::NotCsv(format!("the check of the file stopped: {e}")))??;
    // Limitation: matching rows to stored customers still runs on this worker thread (about
    // 3 µs a row, a third of a second for a file at the upload limit).
    state
        .customers
        .import_rows(rows, actor, &|_, _, _| {})
        .await
}

/// `GET /customers/export.csv`: every live customer as CSV (formula-safe cells), recorded
/// before the file is sent.
pub async fn export(state: web::Data<AppState>, who: SignedIn) -> Result<HttpResponse, WebError> {
    // Limitation: the file is built in memory (about 250 bytes per customer, 250 MB for a
    // million) before it is sent, so that the audit entry can give the exact count and a
    // failed read sends no partial file.
    let customers = state.customers.clone();
    let written = web::block(move || {
        let mut out = Vec::new();
        customers.write_csv(&mut out).map(|count| (out, count))
    })
    .await
    .map_err(|e| WebError::Internal(format!("export task: {e}")))?
    .map_err(web_error)?;
    let (file, count) = written;
    state
        .customers
        .record_export(who.actor(), count, "a download from the customers page")
        .await
        .map_err(web_error)?;
    let day = state.customers.now().strftime("%Y-%m-%d");
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"customers-{day}.csv\""),
        ))
        .body(file))
}
