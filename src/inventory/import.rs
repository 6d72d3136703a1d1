//! Catalog import from CSV, with the care of the customer import: the header is checked by
//! name first, every row is validated before anything is written, and one bad row refuses the
//! whole file (every refused row is listed with its line, column and reason).
//!
//! # The file
//!
//! A header row names the columns (any order; case, spaces and dashes do not matter); `,`,
//! `;` or tab separates them, whichever the header uses most; UTF-8, with or without a
//! byte-order mark. See [`COLUMNS`].
//!
//! - Required: `sku`, `name`, `currency` (ISO 4217) and the price, either `price` (a decimal
//!   in the currency's major unit, `49.90`) or `price_minor` (integer minor units, `4990`).
//! - Optional: `gtin`, `brand`, `category`, `cost` or `cost_minor` (as the price),
//!   `margin_floor` (percent of the price, `30` or `30.5`) or `margin_floor_bp` (basis points),
//!   `protected` (yes/no), `complementary` (SKUs separated by `;`), and one `attr:NAME` column
//!   per attribute (`attr:size`, `attr:colour`).
//!
//! A row is the whole truth about its product for the columns the file has: an empty cell
//! clears the value (no GTIN, no brand, cost 0, not protected, no attribute of that name). A
//! column the file does not have leaves the stored value of an existing product alone, and so
//! do attributes the file has no `attr:` column for.
//!
//! # Checks
//!
//! Each row passes the same checks as `PUT /api/v1/products/{sku}` (SKU and GTIN format and
//! check digit, the margin floor of protected products...), and: one row per SKU, a GTIN on
//! one row only, and a GTIN that belongs to a product not in the file is refused.
//!
//! # Writing
//!
//! New and changed products, their GTIN claims and one `product.imported` audit entry with
//! the counts go in one change set, so the import lands whole or not at all. Rows that would
//! change nothing write nothing; a file of only such rows writes nothing at all, not even an
//! audit entry, so importing the same file again changes nothing.
//!
//! Limitation: the change set is held in memory (about 1 KB a product), so a file is limited
//! to [`MAX_ROWS`] rows; a larger catalog is imported in several files.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::audit::{Action, Actor, Event};
use crate::crm::import::Rejection;
use crate::domain::customer::FieldError;
use crate::domain::product::{self, Product, ProductInput};
use crate::domain::sale::{minor_digits, parse_decimal};
use crate::store::{ChangeSet, Expect, Sealing, Store, StoreError};

use super::InventoryError;
use super::catalog::{Catalog, PRODUCT_GTINS, PRODUCTS};

/// Most rows in one file.
pub const MAX_ROWS: usize = 100_000;

/// Separator of the SKUs in the `complementary` cell.
pub const SKU_SEPARATOR: char = ';';

/// Prefix of an attribute column (`attr:size`).
pub const ATTRIBUTE_PREFIX: &str = "attr:";

/// Every column name the importer knows, for messages and the upload page.
pub const COLUMNS: &[&str] = &[
    "sku",
    "name",
    "currency",
    "price (or price_minor)",
    "gtin",
    "brand",
    "category",
    "cost (or cost_minor)",
    "margin_floor (percent, or margin_floor_bp)",
    "protected",
    "complementary",
    "attr:NAME",
];

/// What a column holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Column {
    Sku,
    Gtin,
    Name,
    Brand,
    Category,
    Price,
    PriceMinor,
    Cost,
    CostMinor,
    Currency,
    MarginFloor,
    MarginFloorBp,
    Protected,
    Complementary,
    Attribute(String),
    /// Written by the export for people (the margin), read back as nothing.
    Ignored,
}

fn column_of(name: &str) -> Option<Column> {
    if let Some(attribute) = name.strip_prefix(ATTRIBUTE_PREFIX) {
        return Some(Column::Attribute(attribute.to_owned()));
    }
    Some(match name {
        "sku" => Column::Sku,
        "gtin" | "ean" | "upc" | "barcode" => Column::Gtin,
        "name" => Column::Name,
        "brand" => Column::Brand,
        "category" => Column::Category,
        "price" => Column::Price,
        "price_minor" => Column::PriceMinor,
        "cost" => Column::Cost,
        "cost_minor" => Column::CostMinor,
        "currency" => Column::Currency,
        "margin_floor" => Column::MarginFloor,
        "margin_floor_bp" => Column::MarginFloorBp,
        "protected" => Column::Protected,
        "complementary" | "complementary_skus" => Column::Complementary,
        "margin" | "created_at" | "updated_at" => Column::Ignored,
        _ => return None,
    })
}

/// Why an import was refused. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum ProductImportError {
    #[error("the file cannot be read as CSV: {0}")]
    NotCsv(String),
    #[error("the header row does not fit ({0}); known columns are {columns}", columns = COLUMNS.join(", "))]
    Columns(String),
    #[error(
        "{} of {rows} rows were rejected, so nothing was imported; fix them and import the \
         whole file again",
        rejected_rows(.rejections)
    )]
    Rejected {
        rows: usize,
        rejections: Vec<Rejection>,
    },
    #[error(
        "nothing was imported: a product or GTIN of the file was changed by someone else while \
         the file was being imported; import it again"
    )]
    Conflict,
    #[error(transparent)]
    Inventory(#[from] InventoryError),
}

impl From<StoreError> for ProductImportError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict { .. } => Self::Conflict,
            other => Self::Inventory(other.into()),
        }
    }
}

fn rejected_rows(rejections: &[Rejection]) -> usize {
    rejections
        .iter()
        .map(|r| r.line)
        .collect::<HashSet<_>>()
        .len()
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductImport {
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// Column kinds in file order, with the names as the header wrote them.
#[derive(Debug)]
struct Columns {
    kinds: Vec<Column>,
    names: Vec<String>,
}

impl Columns {
    /// The header's name of the first of `kinds` the file has.
    fn name_of(&self, kinds: &[Column]) -> String {
        kinds
            .iter()
            .find_map(|kind| {
                let i = self.kinds.iter().position(|k| k == kind)?;
                self.names.get(i).cloned()
            })
            .unwrap_or_else(|| "row".to_owned())
    }
}

/// One row as read: `None` for a column the file does not have.
#[derive(Debug, Clone, Default)]
struct Row {
    line: u64,
    sku: String,
    name: String,
    currency: String,
    price: i64,
    gtin: Option<String>,
    brand: Option<String>,
    category: Option<String>,
    cost: Option<i64>,
    margin_floor_bp: Option<u32>,
    protected: Option<bool>,
    complementary: Option<Vec<String>>,
    /// Attribute name → value; an empty value removes the attribute.
    attributes: Vec<(String, String)>,
}

/// A cell as text: surrounding space trimmed and the apostrophe the export puts before `=`,
/// `+`, `-` or `@` removed.
fn cell(text: &str) -> &str {
    let text = text.trim();
    match text.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@']) => rest,
        _ => text,
    }
}

/// The delimiter of the header line: `,`, `;` or tab, whichever occurs most outside quotes.
fn detect_delimiter(bytes: &[u8]) -> u8 {
    let mut counts = [(0usize, b','), (0, b';'), (0, b'\t')];
    let mut quoted = false;
    for &b in bytes {
        match b {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => break,
            _ if quoted => {}
            _ => {
                for (count, delimiter) in &mut counts {
                    if *delimiter == b {
                        *count += 1;
                    }
                }
            }
        }
    }
    // The first of the largest counts, so a tie reads as a comma.
    counts
        .iter()
        .fold((0, b','), |best, c| if c.0 > best.0 { *c } else { best })
        .1
}

fn read_header(header: &csv::StringRecord) -> Result<Columns, ProductImportError> {
    let mut kinds = Vec::new();
    let mut names = Vec::new();
    let mut unknown = Vec::new();
    let mut repeated = Vec::new();
    for field in header {
        let raw = field.trim().to_lowercase();
        let name = match raw.strip_prefix(ATTRIBUTE_PREFIX) {
            Some(attribute) => format!("{ATTRIBUTE_PREFIX}{}", attribute.trim()),
            None => raw.replace([' ', '-'], "_"),
        };
        match column_of(&name) {
            Some(Column::Attribute(a)) if a.is_empty() => unknown.push(name.clone()),
            Some(kind) if kind != Column::Ignored && kinds.contains(&kind) => {
                repeated.push(name.clone());
            }
            Some(kind) => {
                kinds.push(kind);
                names.push(name);
                continue;
            }
            None if name.is_empty() => unknown.push("(a column with no name)".into()),
            None => unknown.push(name.clone()),
        }
        kinds.push(Column::Ignored);
        names.push(name);
    }
    let mut problems = Vec::new();
    if !unknown.is_empty() {
        problems.push(format!("unknown columns: {}", unknown.join(", ")));
    }
    if !repeated.is_empty() {
        problems.push(format!("columns given twice: {}", repeated.join(", ")));
    }
    let mut missing = Vec::new();
    for (kind, name) in [
        (Column::Sku, "sku"),
        (Column::Name, "name"),
        (Column::Currency, "currency"),
    ] {
        if !kinds.contains(&kind) {
            missing.push(name);
        }
    }
    if !kinds.contains(&Column::Price) && !kinds.contains(&Column::PriceMinor) {
        missing.push("price (or price_minor)");
    }
    if !missing.is_empty() {
        problems.push(format!("missing columns: {}", missing.join(", ")));
    }
    for (a, b) in [
        (Column::Price, Column::PriceMinor),
        (Column::Cost, Column::CostMinor),
        (Column::MarginFloor, Column::MarginFloorBp),
    ] {
        if kinds.contains(&a) && kinds.contains(&b) {
            problems.push(format!(
                "{} and {} both given; keep one",
                name_in(&kinds, &names, &a),
                name_in(&kinds, &names, &b)
            ));
        }
    }
    if problems.is_empty() {
        Ok(Columns { kinds, names })
    } else {
        Err(ProductImportError::Columns(problems.join("; ")))
    }
}

fn name_in(kinds: &[Column], names: &[String], kind: &Column) -> String {
    kinds
        .iter()
        .position(|k| k == kind)
        .and_then(|i| names.get(i).cloned())
        .unwrap_or_default()
}

fn yes_no(text: &str) -> Result<bool, String> {
    match text.to_lowercase().as_str() {
        "" | "no" | "n" | "false" | "0" => Ok(false),
        "yes" | "y" | "true" | "1" => Ok(true),
        _ => Err(format!("{text:?} is not yes or no")),
    }
}

/// Minor units from a decimal of the currency's major unit, or from an integer of minor units.
fn amount(text: &str, currency: &str, minor: bool) -> Result<i64, String> {
    if minor {
        text.parse::<i64>().map_err(|_| {
            format!("{text:?} is not a whole number of minor units (cents); write 4990 for 49.90")
        })
    } else {
        let digits = minor_digits(currency);
        parse_decimal(text, digits).map_err(|e| {
            format!("{e}; write the amount in {currency} with up to {digits} decimals")
        })
    }
}

/// Reads one record into a row; every bad cell is a rejection.
fn read_row(
    record: &csv::StringRecord,
    line: u64,
    columns: &Columns,
) -> Result<Row, Vec<Rejection>> {
    let reject = |field: &str, message: String| Rejection {
        line,
        field: field.to_owned(),
        message,
    };
    if record.len() != columns.kinds.len() {
        return Err(vec![reject(
            "row",
            format!(
                "has {} fields but the header has {}; check the delimiter and the quotes",
                record.len(),
                columns.kinds.len()
            ),
        )]);
    }
    let mut row = Row {
        line,
        ..Row::default()
    };
    // The currency first: decimal amounts need its number of decimals.
    for (kind, raw) in columns.kinds.iter().zip(record) {
        if *kind == Column::Currency {
            row.currency = cell(raw).to_ascii_uppercase();
        }
    }
    let mut problems = Vec::new();
    for ((kind, name), raw) in columns.kinds.iter().zip(&columns.names).zip(record) {
        let text = cell(raw);
        let parsed: Result<(), String> = match kind {
            Column::Sku => product::check_sku(name, text)
                .map(|sku| row.sku = sku)
                .map_err(|e| e.message),
            Column::Name => {
                text.clone_into(&mut row.name);
                Ok(())
            }
            Column::Gtin => {
                row.gtin = Some(text.to_owned());
                Ok(())
            }
            Column::Brand => {
                row.brand = Some(text.to_owned());
                Ok(())
            }
            Column::Category => {
                row.category = Some(text.to_owned());
                Ok(())
            }
            Column::Price | Column::PriceMinor if text.is_empty() => Err("is required".into()),
            Column::Price | Column::PriceMinor => {
                amount(text, &row.currency, *kind == Column::PriceMinor).map(|v| row.price = v)
            }
            Column::Cost | Column::CostMinor if text.is_empty() => {
                row.cost = Some(0);
                Ok(())
            }
            Column::Cost | Column::CostMinor => {
                amount(text, &row.currency, *kind == Column::CostMinor).map(|v| row.cost = Some(v))
            }
            Column::MarginFloor | Column::MarginFloorBp => {
                margin_floor(text, kind).map(|bp| row.margin_floor_bp = Some(bp))
            }
            Column::Protected => yes_no(text).map(|p| row.protected = Some(p)),
            Column::Complementary => {
                row.complementary = Some(
                    text.split(SKU_SEPARATOR)
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
                Ok(())
            }
            Column::Attribute(attribute) => {
                row.attributes.push((attribute.clone(), text.to_owned()));
                Ok(())
            }
            Column::Currency | Column::Ignored => Ok(()),
        };
        if let Err(message) = parsed {
            problems.push(reject(name, message));
        }
    }
    if problems.is_empty() {
        Ok(row)
    } else {
        Err(problems)
    }
}

/// A margin floor in basis points, from a percent (`30`, `30.5`, `30 %`) or basis points.
fn margin_floor(text: &str, kind: &Column) -> Result<u32, String> {
    if text.is_empty() {
        return Ok(0);
    }
    let bp = if *kind == Column::MarginFloor {
        parse_decimal(text.trim_end_matches('%').trim(), 2)
            .map_err(|e| format!("{e}; write a percent of the price (30 or 30.5)"))?
    } else {
        text.parse::<i64>()
            .map_err(|_| format!("{text:?} is not a whole number of basis points (3000 = 30 %)"))?
    };
    u32::try_from(bp).map_err(|_| format!("{text:?} is negative"))
}

/// Reads a whole file: the header, then every row. Rows that could not be read are returned
/// as rejections next to those that could.
fn read_file(bytes: &[u8]) -> Result<(Columns, Vec<Row>, Vec<Rejection>), ProductImportError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Err(err) = std::str::from_utf8(bytes) {
        // Once, on a refused file; not worth a SIMD byte-count dependency.
        #[allow(clippy::naive_bytecount)]
        let line = bytes
            .get(..err.valid_up_to())
            .unwrap_or_default()
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        return Err(ProductImportError::NotCsv(format!(
            "line {line} is not UTF-8: the file is probably Latin-1; save it as UTF-8 (in a \
             spreadsheet: \"CSV UTF-8\") and import it again"
        )));
    }
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(detect_delimiter(bytes))
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records = reader.records();
    let header = match records.next() {
        Some(Ok(header)) => header,
        Some(Err(err)) => return Err(ProductImportError::NotCsv(err.to_string())),
        None => return Err(ProductImportError::NotCsv("the file is empty".into())),
    };
    let columns = read_header(&header)?;
    let mut rows = Vec::new();
    let mut rejections = Vec::new();
    let mut count = 0usize;
    for record in records {
        let record = record.map_err(|err| ProductImportError::NotCsv(err.to_string()))?;
        if record.iter().all(|field| field.trim().is_empty()) {
            continue;
        }
        count += 1;
        if count > MAX_ROWS {
            return Err(ProductImportError::NotCsv(format!(
                "the file has more than {MAX_ROWS} rows; split it and import the parts one \
                 after the other"
            )));
        }
        let line = record_line(bytes, &record);
        match read_row(&record, line, &columns) {
            Ok(row) => rows.push(row),
            Err(mut problems) => rejections.append(&mut problems),
        }
    }
    Ok((columns, rows, rejections))
}

/// The line a record starts on as a person counts it (the reader reports a CRLF file's
/// records one line early, at the `\n` it has not consumed yet).
fn record_line(bytes: &[u8], record: &csv::StringRecord) -> u64 {
    let Some(position) = record.position() else {
        return 0;
    };
    let mut start = usize::try_from(position.byte())
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    if bytes.get(start) == Some(&b'\n') {
        start += 1;
    }
    // A catalog file is small; counting from the start for each row is not worth a cursor.
    #[allow(clippy::naive_bytecount)]
    let newlines = bytes
        .get(..start)
        .unwrap_or_default()
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    newlines as u64 + 1
}

/// What the import does with one row.
#[derive(Debug)]
enum Plan {
    Create(Box<Product>),
    Update {
        before: Box<Product>,
        after: Box<Product>,
    },
    Unchanged,
}

impl Catalog {
    /// Imports a catalog CSV file (see the module documentation): all rows or none.
    pub async fn import_csv(
        &self,
        bytes: &[u8],
        actor: Actor,
    ) -> Result<ProductImport, ProductImportError> {
        let (columns, rows, mut rejections) = read_file(bytes)?;
        let total = rows.len() + rejected_rows(&rejections);
        rejections.extend(shared_values(&rows, &columns));
        let mut plans = Vec::with_capacity(rows.len());
        let in_file: HashSet<&str> = rows.iter().map(|r| r.sku.as_str()).collect();
        let now = self.now();
        for row in &rows {
            match self.plan(row, &columns, &in_file, now) {
                Ok(plan) => plans.push(plan),
                Err(mut problems) => rejections.append(&mut problems),
            }
        }
        if !rejections.is_empty() {
            rejections.sort_by_key(|r| r.line);
            return Err(ProductImportError::Rejected {
                rows: total,
                rejections,
            });
        }
        let report = self.write_plans(plans, total as u64, bytes, actor).await?;
        tracing::info!(
            rows = report.rows,
            created = report.created,
            updated = report.updated,
            unchanged = report.unchanged,
            "product import done"
        );
        Ok(report)
    }

    /// The product a row makes, validated against what is stored.
    fn plan(
        &self,
        row: &Row,
        columns: &Columns,
        in_file: &HashSet<&str>,
        now: jiff::Timestamp,
    ) -> Result<Plan, Vec<Rejection>> {
        let store_failed = |err: InventoryError| {
            vec![Rejection {
                line: row.line,
                field: "row".into(),
                message: format!("could not be checked against the catalog: {err}"),
            }]
        };
        let existing = self.get(row.sku.trim()).map_err(store_failed)?;
        let input = merged_input(existing.as_ref(), row);
        let created_at = existing.as_ref().map_or(now, |p| p.created_at);
        let product = input
            .clean(&row.sku, created_at, now)
            .map_err(|errors| rejections_of(row.line, &errors, columns))?;
        if let Some(gtin) = &product.gtin
            && existing.as_ref().and_then(|p| p.gtin.as_ref()) != Some(gtin)
            && let Some(owner) = self
                .store()
                .get(PRODUCT_GTINS, gtin.as_bytes())
                .map_err(|e| store_failed(e.into()))?
        {
            let owner = String::from_utf8_lossy(&owner).into_owned();
            if owner != product.sku && !in_file.contains(owner.as_str()) {
                return Err(vec![Rejection {
                    line: row.line,
                    field: columns.name_of(&[Column::Gtin]),
                    message: format!(
                        "{gtin} already belongs to product {owner}; give that product another \
                         GTIN first (or add its row to this file)"
                    ),
                }]);
            }
        }
        Ok(match existing {
            None => Plan::Create(Box::new(product)),
            Some(before) if product::changed_fields(&before, &product).is_empty() => {
                Plan::Unchanged
            }
            Some(before) => Plan::Update {
                before: Box::new(before),
                after: Box::new(product),
            },
        })
    }

    /// One change set: the products, their GTIN claims and the audit entry.
    async fn write_plans(
        &self,
        plans: Vec<Plan>,
        rows: u64,
        bytes: &[u8],
        actor: Actor,
    ) -> Result<ProductImport, ProductImportError> {
        let mut report = ProductImport {
            rows,
            created: 0,
            updated: 0,
            unchanged: 0,
        };
        let mut set = ChangeSet::new();
        // GTIN → its owner after the import (`None`: released), and whether it was taken.
        let mut gtins: BTreeMap<String, (Option<String>, bool)> = BTreeMap::new();
        let mut fields: BTreeSet<&'static str> = BTreeSet::new();
        for plan in plans {
            let (before, after, expect) = match plan {
                Plan::Unchanged => {
                    report.unchanged += 1;
                    continue;
                }
                Plan::Create(after) => {
                    report.created += 1;
                    (None, *after, Expect::Absent)
                }
                Plan::Update { before, after } => {
                    report.updated += 1;
                    fields.extend(product::changed_fields(&before, &after));
                    (Some(*before), *after, Expect::Present)
                }
            };
            let old_gtin = before.as_ref().and_then(|p| p.gtin.clone());
            if old_gtin != after.gtin {
                if let Some(old) = old_gtin {
                    gtins.entry(old).or_insert((None, true));
                }
                if let Some(new) = &after.gtin {
                    let taken = self.store().contains(PRODUCT_GTINS, new.as_bytes())?;
                    let entry = gtins.entry(new.clone()).or_insert((None, taken));
                    entry.0 = Some(after.sku.clone());
                }
            }
            set.put_with(
                PRODUCTS,
                after.sku.as_bytes().to_vec(),
                Store::json(&after)?,
                Sealing::DataKey,
                expect,
            );
        }
        if report.created + report.updated == 0 {
            return Ok(report);
        }
        for (gtin, (owner, taken)) in gtins {
            match (owner, taken) {
                (Some(sku), false) => {
                    set.insert_new(PRODUCT_GTINS, gtin.into_bytes(), sku.into_bytes());
                }
                (Some(sku), true) => {
                    set.put(PRODUCT_GTINS, gtin.into_bytes(), sku.into_bytes());
                }
                (None, _) => {
                    set.delete(PRODUCT_GTINS, gtin.into_bytes());
                }
            }
        }
        Event::new(Action::ProductsImported)
            .by(actor)
            .target("file_sha256", file_digest(bytes))
            .fields(fields)
            .reason(format!(
                "{} rows: {} created, {} updated, {} unchanged",
                report.rows, report.created, report.updated, report.unchanged
            ))
            .add_to(&mut set);
        self.store().commit(set).await?;
        Ok(report)
    }

    /// Writes every product as CSV in the import's format (decimal prices, one `attr:` column
    /// per attribute name in use); returns the number of products.
    pub fn write_csv(&self, out: &mut impl Write) -> Result<usize, InventoryError> {
        let products: Vec<Product> = self
            .store()
            .scan_json::<Product>(PRODUCTS)?
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let attributes: BTreeSet<&str> = products
            .iter()
            .flat_map(|p| p.attributes.keys().map(String::as_str))
            .collect();
        let mut writer = csv::Writer::from_writer(out);
        let mut header: Vec<String> = [
            "sku",
            "gtin",
            "name",
            "brand",
            "category",
            "currency",
            "price",
            "cost",
            "margin_floor_bp",
            "protected",
            "complementary",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        header.extend(attributes.iter().map(|a| format!("{ATTRIBUTE_PREFIX}{a}")));
        let failed =
            |e: csv::Error| InventoryError::Store(StoreError::WriteFailed(format!("csv: {e}")));
        writer.write_record(&header).map_err(failed)?;
        for p in &products {
            let mut record = vec![
                safe(&p.sku),
                p.gtin.clone().unwrap_or_default(),
                safe(&p.name),
                safe(&p.brand),
                safe(&p.category),
                p.currency.clone(),
                super::ingest::money(p.price, &p.currency),
                super::ingest::money(p.cost, &p.currency),
                p.margin_floor_bp.to_string(),
                if p.protected { "yes" } else { "no" }.to_owned(),
                p.complementary.join(";"),
            ];
            record.extend(
                attributes
                    .iter()
                    .map(|a| safe(p.attributes.get(*a).map_or("", String::as_str))),
            );
            writer.write_record(&record).map_err(failed)?;
        }
        writer
            .flush()
            .map_err(|e| InventoryError::Store(StoreError::WriteFailed(format!("csv: {e}"))))?;
        Ok(products.len())
    }
}

/// A text cell a spreadsheet would not run as a formula: an apostrophe before `=`, `+`, `-`
/// or `@` (the importer removes it again).
fn safe(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

fn file_digest(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    data_encoding::HEXLOWER
        .encode(digest.as_ref())
        .chars()
        .take(16)
        .collect()
}

/// The input of a row, with the stored values for the columns the file does not have.
fn merged_input(existing: Option<&Product>, row: &Row) -> ProductInput {
    let keep = |value: &Option<String>, stored: fn(&Product) -> String| {
        value
            .clone()
            .or_else(|| existing.map(stored))
            .unwrap_or_default()
    };
    let mut attributes = existing.map(|p| p.attributes.clone()).unwrap_or_default();
    for (name, value) in &row.attributes {
        if value.is_empty() {
            attributes.remove(name);
        } else {
            attributes.insert(name.clone(), value.clone());
        }
    }
    ProductInput {
        gtin: match &row.gtin {
            Some(g) if g.is_empty() => None,
            Some(g) => Some(g.clone()),
            None => existing.and_then(|p| p.gtin.clone()),
        },
        name: row.name.clone(),
        brand: keep(&row.brand, |p| p.brand.clone()),
        category: keep(&row.category, |p| p.category.clone()),
        attributes,
        price: row.price,
        cost: row.cost.or(existing.map(|p| p.cost)).unwrap_or_default(),
        currency: row.currency.clone(),
        margin_floor_bp: row
            .margin_floor_bp
            .or(existing.map(|p| p.margin_floor_bp))
            .unwrap_or_default(),
        protected: row
            .protected
            .or(existing.map(|p| p.protected))
            .unwrap_or_default(),
        complementary: row
            .complementary
            .clone()
            .or_else(|| existing.map(|p| p.complementary.clone()))
            .unwrap_or_default(),
    }
}

/// The field errors of [`ProductInput::clean`] named after the file's columns.
fn rejections_of(line: u64, errors: &[FieldError], columns: &Columns) -> Vec<Rejection> {
    errors
        .iter()
        .map(|error| {
            let (base, rest) = error
                .field
                .split_once(['[', '.'])
                .unwrap_or((error.field.as_str(), ""));
            let field = match base {
                "price" => columns.name_of(&[Column::Price, Column::PriceMinor]),
                "cost" => columns.name_of(&[Column::Cost, Column::CostMinor]),
                "margin_floor_bp" => columns.name_of(&[Column::MarginFloor, Column::MarginFloorBp]),
                "complementary" => columns.name_of(&[Column::Complementary]),
                "attributes" => format!("{ATTRIBUTE_PREFIX}{rest}"),
                other => other.to_owned(),
            };
            let message = match rest.split_once(']').map(|(i, _)| i.parse::<usize>()) {
                Some(Ok(i)) if base == "complementary" => {
                    format!("SKU {}: {}", i + 1, error.message)
                }
                _ => error.message.clone(),
            };
            Rejection {
                line,
                field,
                message,
            }
        })
        .collect()
}

/// Rows that repeat an earlier row's SKU or GTIN.
fn shared_values(rows: &[Row], columns: &Columns) -> Vec<Rejection> {
    let mut skus: HashMap<String, u64> = HashMap::with_capacity(rows.len());
    let mut gtins: HashMap<String, u64> = HashMap::new();
    let mut out = Vec::new();
    for row in rows {
        let sku = row.sku.trim().to_owned();
        if let Some(first) = skus.get(&sku) {
            out.push(Rejection {
                line: row.line,
                field: columns.name_of(&[Column::Sku]),
                message: format!("{sku} is also on line {first}; one row per product"),
            });
        } else {
            skus.insert(sku, row.line);
        }
        let Some(gtin) = row.gtin.as_deref().map(str::trim).filter(|g| !g.is_empty()) else {
            continue;
        };
        if let Some(first) = gtins.get(gtin) {
            out.push(Rejection {
                line: row.line,
                field: columns.name_of(&[Column::Gtin]),
                message: format!("{gtin} is also on line {first}; a GTIN names one product"),
            });
        } else {
            gtins.insert(gtin.to_owned(), row.line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Vec<Row>, Vec<Rejection>) {
        let (_, rows, rejections) = read_file(text.as_bytes()).unwrap();
        (rows, rejections)
    }

    #[test]
    fn decimal_and_minor_prices_read_the_same() {
        let (rows, rejections) = read(
            "\u{feff}SKU;Name;Currency;Price;attr:Size;complementary\r\n\
             A-1;Scarf;eur;49.90;M;\"B-1; C-1\"\r\n\
             J-1;Bowl;JPY;1200;;\r\n",
        );
        assert!(rejections.is_empty(), "{rejections:?}");
        assert_eq!(rows[0].price, 4990);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].currency, "EUR");
        assert_eq!(
            rows[0].complementary.as_deref(),
            Some(&["B-1".to_owned(), "C-1".to_owned()][..])
        );
        assert_eq!(rows[0].attributes, [("size".to_owned(), "M".to_owned())]);
        assert_eq!(rows[1].price, 1200);
        assert_eq!(rows[1].line, 3);
        let (rows, _) = read("sku,name,currency,price_minor\nA-1,Scarf,EUR,4990\n");
        assert_eq!(rows[0].price, 4990);
    }

    #[test]
    fn bad_cells_name_line_and_column() {
        let (rows, rejections) = read(
            "sku,name,currency,price,cost_minor,protected,margin_floor\n\
             A-1,Scarf,EUR,49.999,12.5,maybe,30\n",
        );
        assert!(rows.is_empty());
        let fields: Vec<(u64, &str)> = rejections
            .iter()
            .map(|r| (r.line, r.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            [(2, "price"), (2, "cost_minor"), (2, "protected")],
            "{rejections:?}"
        );
    }

    #[test]
    fn the_header_is_checked_by_name() {
        let err = read_file(b"sku,title,price,cost,cost_minor\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown columns: title"), "{text}");
        assert!(text.contains("missing columns: name, currency"), "{text}");
        assert!(text.contains("cost and cost_minor both given"), "{text}");
    }

    #[test]
    fn repeated_skus_and_gtins_are_refused() {
        let (rows, _) = read(
            "sku,name,currency,price,gtin\nA,x,EUR,1,4006381333931\nB,y,EUR,1,4006381333931\n\
             A,z,EUR,1,\n",
        );
        let columns = read_header(&csv::StringRecord::from(vec![
            "sku", "name", "currency", "price", "gtin",
        ]))
        .unwrap();
        let found: Vec<(u64, String)> = shared_values(&rows, &columns)
            .into_iter()
            .map(|r| (r.line, r.field))
            .collect();
        assert_eq!(found, [(3, "gtin".to_owned()), (4, "sku".to_owned())]);
    }

    #[test]
    fn latin1_is_refused_with_its_line() {
        let err = read_file(b"sku,name,currency,price\nA,Caf\xE9,EUR,1\n").unwrap_err();
        assert!(err.to_string().contains("line 2 is not UTF-8"), "{err}");
    }
}
