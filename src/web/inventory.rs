//! Catalog, stock and sales over HTTP: the product API, availability from the ledger, the POS
//! ingest API, stock movements from the ERP, and the product pages.
//!
//! Store scope: stock figures of a location are shown only to callers who may see that store
//! (`Principal::can_see_store`); a location code that is not a configured location is seen by
//! chain-wide callers only. The catalog itself is chain-wide.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::{Deserialize, Serialize};

use crate::crm::import::Rejection;
use crate::domain::account::Location;
use crate::domain::product::{Product, ProductInput};
use crate::domain::sale::SaleTransaction;
use crate::domain::stock::{StockLevel, StockMovement, format_milli};
use crate::inventory::InventoryError;
use crate::inventory::catalog::ProductFilter;
use crate::inventory::import::{self, ProductImport, ProductImportError};
use crate::inventory::ingest::{IdempotencyClaim, money};
use crate::inventory::ledger::MovementInput;

use super::AppState;
use super::api::Listed;
use super::api::json_body;
use super::error::WebError;
use super::guard::{Principal, SignedIn};
use super::shell::Shell;
use super::signin::render;
use super::upload;

/// Largest body of `POST /api/v1/pos/transactions` (a batch of some thousands of sales).
pub const MAX_INGEST_BODY: usize = 16 * 1024 * 1024;
/// Longest `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Most SKUs and locations in one availability question.
const MAX_SKUS: usize = 100;
const MAX_LOCATIONS: usize = 100;
/// Movements shown on a product page.
const RECENT_MOVEMENTS: usize = 20;

/// The web error of a failed inventory operation.
#[must_use]
pub fn web_error(err: InventoryError) -> WebError {
    match err {
        InventoryError::Invalid(errors) => {
            let mut iter = errors.into_iter();
            match iter.next() {
                None => WebError::BadRequest("the request is not valid".into()),
                Some(first) => {
                    let rest: Vec<String> = iter.map(|e| e.to_string()).collect();
                    WebError::Invalid {
                        field: first.field,
                        message: if rest.is_empty() {
                            first.message
                        } else {
                            format!("{}; and {}", first.message, rest.join("; "))
                        },
                    }
                }
            }
        }
        InventoryError::GtinTaken { .. } => WebError::Invalid {
            field: "gtin".into(),
            message: err.to_string(),
        },
        InventoryError::NotFound(_) => WebError::NotFound,
        InventoryError::Contended { .. } | InventoryError::IdempotencyReused => {
            WebError::Conflict(err.to_string())
        }
        InventoryError::Store(err) => WebError::Store(err),
    }
}

/// Which location codes the caller may see figures of.
struct Visibility {
    locations: Vec<Location>,
    principal: Principal,
}

impl Visibility {
    fn of(state: &AppState, principal: &Principal) -> Result<Self, WebError> {
        Ok(Self {
            locations: state.accounts.locations()?,
            principal: principal.clone(),
        })
    }

    fn chain_wide(&self) -> bool {
        match &self.principal {
            Principal::User(who) => who.user.role.chain_wide(),
            Principal::Token(token) => token.stores.is_empty(),
        }
    }

    fn can_see(&self, code: &str) -> bool {
        match self.locations.iter().find(|l| l.code == code) {
            Some(location) => self.principal.can_see_store(location.id),
            None => self.chain_wide(),
        }
    }
}

// --- products API ---

/// `?q=&limit=&cursor=` of the product list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductQuery {
    #[serde(default)]
    q: String,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /api/v1/products`: the catalog, by SKU, with an optional search.
pub async fn list_products(
    state: web::Data<AppState>,
    query: web::Query<ProductQuery>,
) -> Result<HttpResponse, WebError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=crate::inventory::catalog::MAX_PAGE).contains(&limit) {
        return Err(WebError::BadRequest(
            "limit must be between 1 and 200".into(),
        ));
    }
    let page = state
        .ingest
        .catalog()
        .list(&query.q, query.cursor.as_deref(), limit)
        .map_err(web_error)?;
    Ok(HttpResponse::Ok().json(Listed {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// `GET /api/v1/products/{sku}`.
pub async fn get_product(
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let product = state
        .ingest
        .catalog()
        .get(&sku)
        .map_err(web_error)?
        .ok_or(WebError::NotFound)?;
    Ok(HttpResponse::Ok().json(product))
}

/// `PUT /api/v1/products/{sku}`: creates (201) or replaces (200) a product.
pub async fn put_product(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    sku: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let input: ProductInput = json_body(&body)?;
    let (product, created) = state
        .ingest
        .catalog()
        .put(&sku, input, principal.actor(&req))
        .await
        .map_err(web_error)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(product))
}

// --- availability and stock ---

/// `?sku=A,B&location=X,Y`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityQuery {
    sku: String,
    #[serde(default)]
    location: Option<String>,
}

/// One SKU at one location.
#[derive(Debug, Serialize)]
struct Availability {
    sku: String,
    location: String,
    /// The SKU is in the catalog.
    known: bool,
    on_hand_milli: i64,
    reserved_milli: i64,
    safety_milli: i64,
    available_milli: i64,
    /// Some movement named this SKU before it was in the catalog.
    unknown_sku_seen: bool,
    updated_at: Option<jiff::Timestamp>,
}

fn split_list(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    out.dedup();
    out
}

/// `GET /api/v1/availability`: available-to-sell from the ledger's running totals.
pub async fn availability(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<AvailabilityQuery>,
) -> Result<HttpResponse, WebError> {
    let skus = split_list(&query.sku);
    if skus.is_empty() || skus.len() > MAX_SKUS {
        return Err(WebError::Invalid {
            field: "sku".into(),
            message: format!("give 1 to {MAX_SKUS} SKUs, separated by commas"),
        });
    }
    let wanted: Option<Vec<String>> = query
        .location
        .as_deref()
        .map(|l| split_list(&l.to_uppercase()));
    if wanted
        .as_ref()
        .is_some_and(|l| l.is_empty() || l.len() > MAX_LOCATIONS)
    {
        return Err(WebError::Invalid {
            field: "location".into(),
            message: format!("give 1 to {MAX_LOCATIONS} location codes, separated by commas"),
        });
    }
    let visibility = Visibility::of(&state, &principal)?;
    if let Some(hidden) = wanted
        .iter()
        .flatten()
        .find(|code| !visibility.can_see(code))
    {
        return Err(WebError::Forbidden(format!(
            "location {hidden} is outside the stores this caller may see"
        )));
    }
    let ledger = state.ingest.ledger();
    let catalog = state.ingest.catalog();
    let mut items = Vec::new();
    for sku in &skus {
        let known = catalog.get(sku).map_err(web_error)?.is_some();
        let levels: Vec<StockLevel> = match &wanted {
            Some(codes) => codes
                .iter()
                .map(|code| ledger.level(sku, code))
                .collect::<Result<_, _>>()
                .map_err(web_error)?,
            None => ledger
                .levels_of(sku)
                .map_err(web_error)?
                .into_iter()
                .filter(|l| visibility.can_see(&l.location))
                .collect(),
        };
        for level in levels {
            items.push(Availability {
                sku: sku.clone(),
                location: level.location.clone(),
                known,
                on_hand_milli: level.on_hand_milli,
                reserved_milli: level.reserved_milli,
                safety_milli: level.safety_milli,
                available_milli: level.available_milli(),
                unknown_sku_seen: level.unknown_sku,
                updated_at: level.updated_at,
            });
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

/// `POST /api/v1/stock/movements`: a receipt, adjustment, count or transfer.
pub async fn record_movement(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let input: MovementInput = json_body(&body)?;
    let visibility = Visibility::of(&state, &principal)?;
    for code in std::iter::once(&input.location).chain(input.to_location.iter()) {
        if !visibility.can_see(&code.trim().to_uppercase()) {
            return Err(WebError::Forbidden(format!(
                "location {} is outside the stores this caller may see",
                code.trim()
            )));
        }
    }
    let moved = state
        .ingest
        .ledger()
        .record(&input, principal.actor(&req))
        .await
        .map_err(web_error)?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "movements": moved })))
}

/// Body of `PUT /api/v1/stock/{sku}/{location}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reserves {
    reserved_milli: i64,
    safety_milli: i64,
}

/// `PUT /api/v1/stock/{sku}/{location}`: reserved quantity and safety stock.
pub async fn set_reserves(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let reserves: Reserves = json_body(&body)?;
    let (sku, location) = path.into_inner();
    let location = location.trim().to_uppercase();
    if !Visibility::of(&state, &principal)?.can_see(&location) {
        return Err(WebError::Forbidden(format!(
            "location {location} is outside the stores this caller may see"
        )));
    }
    let level = state
        .ingest
        .ledger()
        .set_reserves(
            &sku,
            &location,
            reserves.reserved_milli,
            reserves.safety_milli,
            principal.actor(&req),
        )
        .await
        .map_err(web_error)?;
    Ok(HttpResponse::Ok().json(level))
}

// --- POS ingest ---

/// A batch body: `{"transactions": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    transactions: Vec<SaleTransaction>,
}

/// One transaction object, or `{"transactions": [...]}`.
fn parse_transactions(body: &[u8]) -> Result<Vec<SaleTransaction>, WebError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|err| {
        WebError::BadRequest(format!("the body is not JSON ({err}); see the README"))
    })?;
    let batch = value
        .as_object()
        .is_some_and(|o| o.contains_key("transactions"));
    let named = |err: serde_path_to_error::Error<serde_json::Error>| WebError::Invalid {
        field: err.path().to_string(),
        message: err.inner().to_string(),
    };
    if batch {
        let batch: Batch = serde_path_to_error::deserialize(value).map_err(named)?;
        Ok(batch.transactions)
    } else {
        let one: SaleTransaction = serde_path_to_error::deserialize(value).map_err(named)?;
        Ok(vec![one])
    }
}

/// The `Idempotency-Key` header, when given.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, WebError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default().trim();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(WebError::Invalid {
            field: "Idempotency-Key".into(),
            message: format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        });
    }
    Ok(Some(key.to_owned()))
}

/// `POST /api/v1/pos/transactions`: one sale or a batch, all or nothing; idempotent on each
/// transaction's key and on the `Idempotency-Key` header. Answers once the batch is durable,
/// so availability already reflects it.
pub async fn pos_transactions(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    payload: web::Payload,
) -> Result<HttpResponse, WebError> {
    let outcome = pos_batch(&state, &req, &principal, payload).await;
    let (push, now) = (state.sync.push(), state.clock.now());
    match &outcome {
        Ok((report, replayed)) => {
            let items = if *replayed { 0 } else { report.accepted };
            push.accepted(crate::sync::push::POS_API, items as u64, now);
        }
        Err(err) => {
            // The fields at fault, never the values they carried.
            let reason = match err {
                WebError::Invalid { field, .. } => format!("{field}: refused"),
                WebError::InvalidFields(fields) => format!(
                    "{}: refused",
                    fields
                        .iter()
                        .map(|f| f.field.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                WebError::Store(_) | WebError::Internal(_) => "failed on our side".to_owned(),
                other => other.to_string(),
            };
            push.refused(crate::sync::push::POS_API, &reason, now);
        }
    }
    outcome.map(|(report, _)| HttpResponse::Ok().json(report))
}

/// The batch of one ingest request; `true` with a report answered before under the same
/// `Idempotency-Key`.
async fn pos_batch(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    payload: web::Payload,
) -> Result<(crate::inventory::ingest::IngestReport, bool), WebError> {
    let body = payload
        .to_bytes_limited(MAX_INGEST_BODY)
        .await
        .map_err(|_| {
            WebError::BadRequest(format!(
                "the body is larger than {} MiB; send smaller batches",
                MAX_INGEST_BODY >> 20
            ))
        })?
        .map_err(|err| WebError::BadRequest(format!("the body could not be read: {err}")))?;
    let actor = principal.actor(req);
    let claim = idempotency_key(req)?.map(|key| {
        IdempotencyClaim::new(
            &format!("{}:{}", actor.kind.as_str(), actor.id),
            &key,
            &body,
        )
    });
    if let Some(claim) = &claim
        && let Some(report) = state.ingest.answered(claim).map_err(web_error)?
    {
        return Ok((report, true));
    }
    let transactions = parse_transactions(&body)?;
    let visibility = Visibility::of(state, principal)?;
    if let Some(t) = transactions
        .iter()
        .find(|t| !visibility.can_see(&t.key.store.trim().to_uppercase()))
    {
        return Err(WebError::Forbidden(format!(
            "store {} is outside the stores this caller may push for",
            t.key.store.trim()
        )));
    }
    let report = state
        .ingest
        .ingest(transactions, actor, "api", claim)
        .await
        .map_err(web_error)?;
    Ok((report, false))
}

// --- pages ---

/// One row of the product list.
#[derive(Debug)]
struct ProductRow {
    sku: String,
    name: String,
    brand: String,
    category: String,
    price: String,
    protected: bool,
    /// Available to sell at the chosen location, when one is chosen.
    available: Option<String>,
}

impl ProductRow {
    fn of(p: &Product) -> Self {
        Self {
            sku: p.sku.clone(),
            name: p.name.clone(),
            brand: p.brand.clone(),
            category: p.category.clone(),
            price: format!("{} {}", money(p.price, &p.currency), p.currency),
            protected: p.protected,
            available: None,
        }
    }
}

#[derive(Debug, Template)]
#[template(path = "products/list.html")]
struct ProductListPage {
    shell: Shell,
    search: ProductSearch,
    brands: Vec<String>,
    categories: Vec<String>,
    /// Codes of the locations the user may see.
    locations: Vec<String>,
    /// Whether the user may import and export the catalog file.
    can_manage_files: bool,
    rows: Vec<ProductRow>,
    /// Link to the next page.
    next: Option<String>,
}

/// `?q=&brand=&category=&protected=&stock=&location=&after=` of the product list page; every
/// filter is kept in the form.
#[derive(Debug, Default, Deserialize)]
pub struct ProductSearch {
    #[serde(default)]
    q: String,
    #[serde(default)]
    brand: String,
    #[serde(default)]
    category: String,
    /// `yes`, `no` or empty (either).
    #[serde(default)]
    protected: String,
    /// `out` (nothing on hand), `low` (nothing available to sell: on hand minus reserved minus
    /// safety stock) or empty; needs `location`.
    #[serde(default)]
    stock: String,
    /// A location code, for `stock` and the availability column.
    #[serde(default)]
    location: String,
    #[serde(default)]
    after: Option<String>,
}

impl ProductSearch {
    fn filter(&self) -> Result<ProductFilter, WebError> {
        let protected = match self.protected.as_str() {
            "" => None,
            "yes" => Some(true),
            "no" => Some(false),
            other => {
                return Err(WebError::Invalid {
                    field: "protected".into(),
                    message: format!("{other:?} is not yes, no or empty"),
                });
            }
        };
        Ok(ProductFilter {
            query: self.q.clone(),
            brand: self.brand.clone(),
            category: self.category.clone(),
            protected,
        })
    }

    /// The stock check the list applies at `location`, if any.
    fn stock_rule(&self) -> Result<Option<(String, bool)>, WebError> {
        let location = self.location.trim().to_uppercase();
        let out_only = match self.stock.as_str() {
            "" => return Ok(None),
            "out" => true,
            "low" => false,
            other => {
                return Err(WebError::Invalid {
                    field: "stock".into(),
                    message: format!("{other:?} is not out, low or empty"),
                });
            }
        };
        if location.is_empty() {
            return Err(WebError::Invalid {
                field: "location".into(),
                message: "choose the location whose stock to filter by".into(),
            });
        }
        Ok(Some((location, out_only)))
    }
}

/// `GET /products`: the catalog with a search box and filters (brand, category, protected,
/// out of or low on stock at a location).
pub async fn products_page(
    state: web::Data<AppState>,
    who: SignedIn,
    principal: Principal,
    query: web::Query<ProductSearch>,
) -> Result<HttpResponse, WebError> {
    let search = query.into_inner();
    let filter = search.filter()?;
    let stock_rule = search.stock_rule()?;
    let location = search.location.trim().to_uppercase();
    let visibility = Visibility::of(&state, &principal)?;
    if !location.is_empty() && !visibility.can_see(&location) {
        return Err(WebError::Forbidden(format!(
            "location {location} is outside the stores you may see"
        )));
    }
    let catalog = state.ingest.catalog();
    let ledger = state.ingest.ledger();
    let page = catalog
        .list_matching(&filter, search.after.as_deref(), 50, |p| {
            let Some((code, out_only)) = &stock_rule else {
                return Ok(true);
            };
            let level = ledger.level(&p.sku, code)?;
            Ok(if *out_only {
                level.on_hand_milli <= 0
            } else {
                level.available_milli() <= 0
            })
        })
        .map_err(web_error)?;
    let mut rows: Vec<ProductRow> = page.items.iter().map(ProductRow::of).collect();
    if !location.is_empty() {
        for row in &mut rows {
            let level = ledger.level(&row.sku, &location).map_err(web_error)?;
            row.available = Some(format_milli(level.available_milli()));
        }
    }
    let (brands, categories) = catalog.facets().map_err(web_error)?;
    let next = page.next_cursor.map(|after| {
        let pairs: Vec<(&str, &str)> = [
            ("q", search.q.as_str()),
            ("brand", search.brand.as_str()),
            ("category", search.category.as_str()),
            ("protected", search.protected.as_str()),
            ("stock", search.stock.as_str()),
            ("location", location.as_str()),
            ("after", after.as_str()),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .collect();
        format!(
            "/products?{}",
            serde_urlencoded::to_string(pairs).unwrap_or_default()
        )
    });
    render(
        &ProductListPage {
            shell: Shell::signed_in(&who, "Products", "/products"),
            brands,
            categories,
            locations: visibility
                .locations
                .iter()
                .filter(|l| visibility.can_see(&l.code))
                .map(|l| l.code.clone())
                .collect(),
            can_manage_files: CATALOG_FILE_MANAGERS.contains(&who.user.role),
            rows,
            next,
            search: ProductSearch { location, ..search },
        },
        StatusCode::OK,
    )
}

/// Stock at one location, for people.
#[derive(Debug)]
struct LevelRow {
    location: String,
    on_hand: String,
    reserved: String,
    safety: String,
    available: String,
    low: bool,
}

/// One movement, for people.
#[derive(Debug)]
struct MovementRow {
    at: String,
    location: String,
    kind: &'static str,
    quantity: String,
    on_hand_after: String,
    reference: String,
}

#[derive(Debug, Template)]
#[template(path = "products/show.html")]
struct ProductPage {
    shell: Shell,
    product: Product,
    price: String,
    cost: String,
    margin: String,
    floor_price: String,
    attributes: Vec<(String, String)>,
    levels: Vec<LevelRow>,
    movements: Vec<MovementRow>,
}

fn percent(bp: i64) -> String {
    format!("{}.{:02} %", bp / 100, (bp % 100).abs())
}

/// `GET /products/{sku}`: the product, its stock per location and its recent movements (of
/// the stores the user may see).
pub async fn product_page(
    state: web::Data<AppState>,
    who: SignedIn,
    principal: Principal,
    sku: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let product = state
        .ingest
        .catalog()
        .get(&sku)
        .map_err(web_error)?
        .ok_or(WebError::NotFound)?;
    let visibility = Visibility::of(&state, &principal)?;
    let ledger = state.ingest.ledger();
    let levels = ledger
        .levels_of(&product.sku)
        .map_err(web_error)?
        .into_iter()
        .filter(|l| visibility.can_see(&l.location))
        .map(|l| LevelRow {
            location: l.location.clone(),
            on_hand: format_milli(l.on_hand_milli),
            reserved: format_milli(l.reserved_milli),
            safety: format_milli(l.safety_milli),
            available: format_milli(l.available_milli()),
            low: l.available_milli() <= 0,
        })
        .collect();
    let movements = ledger
        .recent_movements(&product.sku, RECENT_MOVEMENTS * 5)
        .map_err(web_error)?
        .into_iter()
        .filter(|m| visibility.can_see(&m.location))
        .take(RECENT_MOVEMENTS)
        .map(|m: StockMovement| MovementRow {
            at: m.at.strftime("%Y-%m-%d %H:%M UTC").to_string(),
            location: m.location,
            kind: m.kind.as_str(),
            quantity: format_milli(m.quantity_milli),
            on_hand_after: format_milli(m.on_hand_after),
            reference: m.reference,
        })
        .collect();
    let currency = product.currency.clone();
    render(
        &ProductPage {
            shell: Shell::signed_in(&who, format!("Product {}", product.sku), "/products"),
            price: format!("{} {currency}", money(product.price, &currency)),
            cost: format!("{} {currency}", money(product.cost, &currency)),
            margin: percent(product.margin_bp()),
            floor_price: format!("{} {currency}", money(product.floor_price(), &currency)),
            attributes: product
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            product,
            levels,
            movements,
        },
        StatusCode::OK,
    )
}

// --- catalog files ---

/// Who may import and export the catalog file (the same people as change products).
pub const CATALOG_FILE_MANAGERS: &[crate::domain::account::Role] = &[
    crate::domain::account::Role::Manager,
    crate::domain::account::Role::Admin,
];

/// Rejected rows shown on the import page; the message says how many there were.
const MAX_SHOWN_REJECTIONS: usize = 1000;

/// What a catalog import did, for the page.
#[derive(Debug)]
struct CatalogImportReport {
    imported: bool,
    message: String,
    counts: Option<ProductImport>,
    rejections: Vec<Rejection>,
}

#[derive(Debug, Template)]
#[template(path = "products/import.html")]
struct CatalogImportPage {
    shell: Shell,
    columns: String,
    limit_mb: usize,
    report: Option<CatalogImportReport>,
}

fn catalog_import_page(
    who: &SignedIn,
    report: Option<CatalogImportReport>,
) -> Result<HttpResponse, WebError> {
    let status = match &report {
        Some(r) if !r.imported => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    render(
        &CatalogImportPage {
            shell: Shell::signed_in(who, "Import products", "/products"),
            columns: import::COLUMNS.join(", "),
            limit_mb: upload::UPLOAD_LIMIT / (1024 * 1024),
            report,
        },
        status,
    )
}

fn import_refused(message: String, rejections: Vec<Rejection>) -> CatalogImportReport {
    CatalogImportReport {
        imported: false,
        message,
        counts: None,
        rejections,
    }
}

/// `GET /products/import`: the upload form.
pub async fn catalog_import_form(who: SignedIn) -> Result<HttpResponse, WebError> {
    catalog_import_page(&who, None)
}

/// `POST /products/import`: imports the uploaded catalog CSV, all or nothing, and shows the
/// report. The guard has checked the form's CSRF field.
pub async fn catalog_import(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, WebError> {
    let Some(file) = upload::form_file(&req, payload).await? else {
        let report = import_refused("Choose a CSV file to import.".into(), Vec::new());
        return catalog_import_page(&who, Some(report));
    };
    let result = state.ingest.catalog().import_csv(&file, who.actor()).await;
    let report = match result {
        Ok(counts) => CatalogImportReport {
            imported: true,
            message: format!(
                "{} rows imported: {} new products, {} changed, {} unchanged.",
                counts.rows, counts.created, counts.updated, counts.unchanged
            ),
            counts: Some(counts),
            rejections: Vec::new(),
        },
        Err(ProductImportError::Inventory(err)) => return Err(web_error(err)),
        Err(err) => {
            let message = err.to_string();
            let mut rejections = match err {
                ProductImportError::Rejected { rejections, .. } => rejections,
                _ => Vec::new(),
            };
            rejections.truncate(MAX_SHOWN_REJECTIONS);
            import_refused(message, rejections)
        }
    };
    catalog_import_page(&who, Some(report))
}

/// `GET /products/export.csv`: the whole catalog in the import's format.
pub async fn catalog_export(
    state: web::Data<AppState>,
    _who: SignedIn,
) -> Result<HttpResponse, WebError> {
    let catalog = state.ingest.catalog().clone();
    let file = web::block(move || {
        let mut out = Vec::new();
        catalog.write_csv(&mut out).map(|_| out)
    })
    .await
    .map_err(|e| WebError::Internal(format!("export task: {e}")))?
    .map_err(web_error)?;
    let day = state.ingest.catalog().now().strftime("%Y-%m-%d");
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"products-{day}.csv\""),
        ))
        .body(file))
}
