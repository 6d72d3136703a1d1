//! Customer import from CSV: every row validated before anything is written, matched on its
//! identities, staged under an import id and published by one final write.
//!
//! # Steps
//!
//! 1. **Read** ([`parse_csv`]): a UTF-8 byte-order mark is dropped, the delimiter is found on
//!    the header line (`,`, `;` or tab, whichever occurs most outside quotes), Windows line
//!    endings are read as line ends. The header must name known columns (see [`COLUMNS`]);
//!    unknown, repeated and missing columns are refused by name before any row is read.
//! 2. **Validate**: every row is cleaned exactly as a form would be ([`CustomerInput::clean`]),
//!    on every core; a field that is not UTF-8 (a Latin-1 export), an invalid email or phone,
//!    an impossible birthday, an over-long field, a control character or markup in a name
//!    rejects the row with its line number, column and reason. Two rows carrying the same
//!    identity are refused too (one customer per row).
//! 3. **Match** ([`Customers::import_csv`]): each row's identities are looked up through the
//!    blind indexes ([`Customers::find`]). No owner: a new customer. One owner (followed to
//!    the survivor of a merge): the row is merged into that profile (names and single values
//!    replaced when given, lists united, a consent added only when it differs from the latest);
//!    a profile that comes out equal is left alone, so re-importing a file changes nothing.
//!    Identities of two different customers reject the row (review the duplicate first).
//!    A single rejected row refuses the whole file: nothing is written.
//! 4. **Stage**: new customers are written in change sets of [`CHUNK`] customers (profile,
//!    identity claims, a `created` timeline item), each with a manifest record in
//!    `customer_import_staged` under the import id listing the keys it wrote. The committer
//!    group-commits them, so the store sees large batches, never one per customer.
//! 5. **Publish**: one final change set holds the import's commit record in
//!    `customer_imports`, the updates of existing profiles, and the `customer.imported` audit
//!    entry. Only then are the new and changed customers put in the search index.
//!
//! # Why a commit record instead of one batch
//!
//! The committer applies a change set as one sled batch held in memory; a million customers
//! with their identities is about five million records, several gigabytes in one batch. The
//! staged chunks are bounded, and what makes the import count is the commit record: an import
//! whose record is missing is rolled back, by the importer itself when a chunk fails (an
//! identity claimed meanwhile, a full disk) and by the next import's sweep after a crash
//! ([`Customers::sweep_unpublished_imports`]), which deletes every key the manifests list.
//! Until the record is written the new customers are in no search result and no duplicate
//! candidate, and their ids are known to nobody.
//!
//! Limitation: staged identity claims are visible to [`Customers::find`] during the staging
//! window, so an event resolved at that moment for the same email would be linked to a
//! customer that a rollback then removes. The command line imports only while the server is
//! stopped, where this cannot happen; from the upload page the window is the few hundred
//! milliseconds an upload of its size limit takes. A crash mid-import leaves staged customers
//! that a server started before the next import indexes until that import's sweep.
//!
//! # Costs
//!
//! One new customer costs one profile record, one record per identity (typically three: email,
//! phone, loyalty id), one timeline item and one subject key appended to the keystore (synced
//! once per group), plus a share of a manifest: about five store writes.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::audit::{Action, Actor, Event};
use crate::domain::Id;
use crate::domain::customer::{
    self, Address, Channel, Consent, Customer, ExternalId, FieldError, Identity,
};
use crate::store::{ChangeSet, Expect, Store, StoreError, Table};

use super::{CUSTOMER_KEYS, CUSTOMERS, CrmError, CustomerInput, Customers, Profile, TIMELINE};

/// Published imports: import id → [`ImportRecord`]. Its presence is what publishes an import.
pub const IMPORTS: Table = Table::new("customer_imports");
/// Staged chunks: import id + chunk number → [`Manifest`] of the keys the chunk wrote.
pub const IMPORT_STAGED: Table = Table::new("customer_import_staged");

/// New customers per staged change set (about 1,300 store records). sled's atomic batches slow
/// down as they grow: 250 customers a set imported 16% faster than 2,000 (`clientele bench
/// customers --customers 200000`: 10.3k against 8.9k customers/s), and a tree written in
/// batches of 10,000 records reads back at half the speed of one written in batches of 1,000.
pub const CHUNK: usize = 250;

/// Separator of several values in one cell (`a@example.com|b@example.com`).
pub const LIST_SEPARATOR: char = '|';

/// Wording version recorded with consents from a file that names none.
const DEFAULT_WORDING: &str = "import";

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Column {
    GivenName,
    FamilyName,
    Emails,
    Phones,
    Line1,
    Line2,
    Postcode,
    City,
    Region,
    Country,
    Birthday,
    LoyaltyIds,
    ExternalSource,
    ExternalId,
    ExternalIds,
    Tags,
    PreferredChannel,
    Consent(Channel),
    ConsentWording,
    /// Written by the export, read back as nothing.
    Ignored,
}

/// Every column name the importer knows (lower case; spaces and dashes read as `_`), with the
/// aliases spreadsheets commonly use.
pub const COLUMNS: &[&str] = &[
    "given_name",
    "family_name",
    "email",
    "phone",
    "address_line1",
    "address_line2",
    "postcode",
    "city",
    "region",
    "country",
    "birthday",
    "loyalty_id",
    "external_source",
    "external_id",
    "external_ids",
    "tags",
    "preferred_channel",
    "consent_email",
    "consent_sms",
    "consent_push",
    "consent_post",
    "consent_wording",
    "id",
    "created_at",
    "updated_at",
];

fn column_of(name: &str) -> Option<Column> {
    Some(match name {
        "given_name" | "first_name" | "firstname" => Column::GivenName,
        "family_name" | "last_name" | "lastname" | "surname" => Column::FamilyName,
        "email" | "emails" => Column::Emails,
        "phone" | "phones" => Column::Phones,
        "address_line1" | "line1" | "address" => Column::Line1,
        "address_line2" | "line2" => Column::Line2,
        "postcode" | "postal_code" | "zip" => Column::Postcode,
        "city" => Column::City,
        "region" | "state" => Column::Region,
        "country" => Column::Country,
        "birthday" | "date_of_birth" => Column::Birthday,
        "loyalty_id" | "loyalty_ids" => Column::LoyaltyIds,
        "external_source" => Column::ExternalSource,
        "external_id" => Column::ExternalId,
        "external_ids" => Column::ExternalIds,
        "tags" => Column::Tags,
        "preferred_channel" => Column::PreferredChannel,
        "consent_email" => Column::Consent(Channel::Email),
        "consent_sms" => Column::Consent(Channel::Sms),
        "consent_push" => Column::Consent(Channel::Push),
        "consent_post" => Column::Consent(Channel::Post),
        "consent_wording" => Column::ConsentWording,
        "id" | "created_at" | "updated_at" => Column::Ignored,
        _ => return None,
    })
}

/// One refused row: where, which column, why. Never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Line of the file where the row starts (the header is line 1).
    pub line: u64,
    /// The column as the header names it, or `row` for the row as a whole.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, {}: {}", self.line, self.field, self.message)
    }
}

/// Why an import was refused. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the file cannot be read as CSV: {0}")]
    NotCsv(String),
    #[error("{}", columns_message(.unknown, .missing, .repeated))]
    Columns {
        unknown: Vec<String>,
        missing: Vec<String>,
        repeated: Vec<String>,
    },
    #[error(
        "{} of {rows} rows were rejected, so nothing was imported; fix them and import the \
         whole file again",
        rejections.len()
    )]
    Rejected {
        rows: usize,
        rejections: Vec<Rejection>,
    },
    #[error("nothing was imported: {0}; the customers staged so far were removed, try again")]
    RolledBack(String),
    #[error(transparent)]
    Crm(#[from] CrmError),
}

impl From<StoreError> for ImportError {
    fn from(err: StoreError) -> Self {
        Self::Crm(CrmError::Store(err))
    }
}

fn columns_message(unknown: &[String], missing: &[String], repeated: &[String]) -> String {
    let mut parts = Vec::new();
    if !unknown.is_empty() {
        parts.push(format!("unknown columns: {}", unknown.join(", ")));
    }
    if !repeated.is_empty() {
        parts.push(format!("columns given twice: {}", repeated.join(", ")));
    }
    if !missing.is_empty() {
        parts.push(format!("missing columns: {}", missing.join(", ")));
    }
    format!(
        "the header row does not fit ({}); known columns are {}",
        parts.join("; "),
        COLUMNS.join(", ")
    )
}

/// A row that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    pub line: u64,
    pub profile: Profile,
    /// Consent decisions the row gives, per channel.
    pub consents: Vec<(Channel, bool)>,
    pub wording: String,
}

/// The outcome of a published import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecord {
    pub id: Id,
    pub at: jiff::Timestamp,
    /// Who imported (login, token or job).
    pub actor: String,
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// The keys one staged chunk wrote, so an unpublished import can be removed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    /// Store keys by table name, hex.
    customers: Vec<String>,
    identities: Vec<String>,
    timeline: Vec<String>,
}

/// Where an import is, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Validating,
    Matching,
    Writing,
}

/// Receives progress: stage, done, total.
pub type ProgressFn<'a> = &'a (dyn Fn(Stage, u64, u64) + Sync);

/// Reads and validates a whole file. All rejected rows are reported at once.
pub fn parse_csv(
    bytes: &[u8],
    default_country: &str,
    today: jiff::civil::Date,
    progress: ProgressFn<'_>,
) -> Result<Vec<ImportRow>, ImportError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let delimiter = detect_delimiter(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records = reader.byte_records();
    let header = match records.next() {
        Some(Ok(header)) => header,
        Some(Err(err)) => return Err(ImportError::NotCsv(err.to_string())),
        None => return Err(ImportError::NotCsv("the file is empty".into())),
    };
    let columns = read_header(&header)?;

    let mut raw = Vec::new();
    let mut lines = LineCounter::default();
    for record in records {
        let mut record = record.map_err(|err| ImportError::NotCsv(err.to_string()))?;
        lines.fix_position(bytes, &mut record);
        if record
            .iter()
            .all(|field| field.iter().all(u8::is_ascii_whitespace))
        {
            continue;
        }
        raw.push(record);
    }
    let total = raw.len() as u64;
    progress(Stage::Validating, 0, total);

    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let per_thread = raw.len().div_ceil(threads).max(1);
    let done = std::sync::atomic::AtomicU64::new(0);
    let results: Vec<Vec<Result<ImportRow, Vec<Rejection>>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = raw
            .chunks(per_thread)
            .map(|part| {
                let (columns, done) = (&columns, &done);
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, record)| {
                            if i % 1024 == 1023 {
                                let now =
                                    done.fetch_add(1024, std::sync::atomic::Ordering::Relaxed);
                                progress(Stage::Validating, now + 1024, total);
                            }
                            read_row(record, columns, default_country, today)
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    progress(Stage::Validating, total, total);

    let mut rows = Vec::with_capacity(raw.len());
    let mut rejections = Vec::new();
    for result in results.into_iter().flatten() {
        match result {
            Ok(row) => rows.push(row),
            Err(mut problems) => rejections.append(&mut problems),
        }
    }
    if rows.len() + rejections_rows(&rejections) < raw.len() {
        // A worker thread failed: never report a partial read as complete.
        return Err(ImportError::NotCsv(
            "validation stopped early; try again".into(),
        ));
    }
    rejections.extend(shared_identities(&rows, &columns));
    if rejections.is_empty() {
        Ok(rows)
    } else {
        rejections.sort_by_key(|r| r.line);
        Err(ImportError::Rejected {
            rows: raw.len(),
            rejections,
        })
    }
}

fn rejections_rows(rejections: &[Rejection]) -> usize {
    let lines: HashSet<u64> = rejections.iter().map(|r| r.line).collect();
    lines.len()
}

/// Line numbers of records as a person counts them. The csv reader reports a record of a CRLF
/// file as starting on the line before (at the `\n` it has not consumed yet), so the line is
/// counted here from the record's byte offset, once over the file.
#[derive(Default)]
struct LineCounter {
    /// Bytes counted so far, and the newlines among them.
    offset: usize,
    newlines: u64,
}

impl LineCounter {
    fn fix_position(&mut self, bytes: &[u8], record: &mut csv::ByteRecord) {
        let Some(position) = record.position() else {
            return;
        };
        let mut start = usize::try_from(position.byte())
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        if bytes.get(start) == Some(&b'\n') {
            start += 1;
        }
        let counted = bytes.get(self.offset..start).unwrap_or_default();
        // Once over the file; not worth a SIMD byte-count dependency.
        #[allow(clippy::naive_bytecount)]
        let newlines = counted.iter().filter(|b| **b == b'\n').count();
        self.newlines += newlines as u64;
        self.offset = self.offset.max(start);
        let mut fixed = position.clone();
        fixed.set_line(self.newlines + 1);
        record.set_position(Some(fixed));
    }
}

/// The delimiter of the header line: `,`, `;` or tab, whichever occurs most outside quotes.
fn detect_delimiter(bytes: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in bytes {
        match b {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => break,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let candidates = [b',', b';', b'\t'];
    let mut best = 0;
    for i in 1..3 {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    candidates[best]
}

/// Column kinds in file order, with the names as the header wrote them.
#[derive(Debug)]
struct Columns {
    kinds: Vec<Column>,
    names: Vec<String>,
}

impl Columns {
    /// The header's own name for a column kind.
    fn name_of(&self, kind: Column) -> String {
        self.kinds
            .iter()
            .position(|k| *k == kind)
            .and_then(|i| self.names.get(i).cloned())
            .unwrap_or_else(|| format!("{kind:?}").to_lowercase())
    }
}

fn read_header(header: &csv::ByteRecord) -> Result<Columns, ImportError> {
    let mut kinds = Vec::new();
    let mut names = Vec::new();
    let mut unknown = Vec::new();
    let mut repeated = Vec::new();
    for field in header {
        let Ok(text) = std::str::from_utf8(field) else {
            return Err(ImportError::NotCsv(
                "line 1 (the header row) is not UTF-8: the file is not UTF-8; save it as \
                 UTF-8 (in a spreadsheet: \"CSV UTF-8\") and import it again"
                    .into(),
            ));
        };
        let name = text.trim().to_lowercase().replace([' ', '-'], "_");
        match column_of(&name) {
            Some(kind) if kind != Column::Ignored && kinds.contains(&kind) => {
                repeated.push(name.clone());
                kinds.push(kind);
            }
            Some(kind) => kinds.push(kind),
            None => {
                unknown.push(if name.is_empty() {
                    "(a column with no name)".to_owned()
                } else {
                    name.clone()
                });
                kinds.push(Column::Ignored);
            }
        }
        names.push(name);
    }
    let mut missing = Vec::new();
    for (kind, name) in [
        (Column::GivenName, "given_name"),
        (Column::FamilyName, "family_name"),
    ] {
        if !kinds.contains(&kind) {
            missing.push(name.to_owned());
        }
    }
    let identity_columns = [
        Column::Emails,
        Column::Phones,
        Column::LoyaltyIds,
        Column::ExternalId,
        Column::ExternalIds,
    ];
    if !kinds.iter().any(|k| identity_columns.contains(k)) {
        missing.push("one of email, phone, loyalty_id, external_id".into());
    }
    if kinds.contains(&Column::ExternalId) != kinds.contains(&Column::ExternalSource) {
        missing.push(if kinds.contains(&Column::ExternalId) {
            "external_source (it goes with external_id)".into()
        } else {
            "external_id (it goes with external_source)".into()
        });
    }
    if unknown.is_empty() && missing.is_empty() && repeated.is_empty() {
        Ok(Columns { kinds, names })
    } else {
        Err(ImportError::Columns {
            unknown,
            missing,
            repeated,
        })
    }
}

/// A cell as text: a leading apostrophe that the export put before `=`, `+`, `-` or `@` is
/// removed again.
fn cell(text: &str) -> &str {
    let text = text.trim();
    match text.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => text,
    }
}

fn list(text: &str) -> Vec<String> {
    text.split(LIST_SEPARATOR)
        .map(|v| cell(v).to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

#[allow(clippy::too_many_lines)] // one column after another, each with its own rule
fn read_row(
    record: &csv::ByteRecord,
    columns: &Columns,
    default_country: &str,
    today: jiff::civil::Date,
) -> Result<ImportRow, Vec<Rejection>> {
    let line = record.position().map_or(0, csv::Position::line);
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

    let mut problems = Vec::new();
    let mut input = CustomerInput::default();
    let mut address = Address::default();
    let mut external_source = String::new();
    let mut external_id = String::new();
    let mut consents = Vec::new();
    let mut wording = DEFAULT_WORDING.to_owned();
    for ((kind, name), raw) in columns.kinds.iter().zip(&columns.names).zip(record) {
        let text = match std::str::from_utf8(raw) {
            Ok(text) => cell(text),
            Err(err) => {
                let byte = raw.get(err.valid_up_to()).copied().unwrap_or_default();
                problems.push(reject(
                    name,
                    format!(
                        "is not UTF-8 (byte 0x{byte:02X}): the file is not UTF-8, probably \
                         Latin-1; save it as UTF-8 (in a spreadsheet: \"CSV UTF-8\") and \
                         import it again"
                    ),
                ));
                continue;
            }
        };
        match kind {
            Column::GivenName => text.clone_into(&mut input.given_name),
            Column::FamilyName => text.clone_into(&mut input.family_name),
            Column::Emails => input.emails = list(text),
            Column::Phones => input.phones = list(text),
            Column::Line1 => text.clone_into(&mut address.line1),
            Column::Line2 => text.clone_into(&mut address.line2),
            Column::Postcode => text.clone_into(&mut address.postcode),
            Column::City => text.clone_into(&mut address.city),
            Column::Region => text.clone_into(&mut address.region),
            Column::Country => text.clone_into(&mut address.country),
            Column::Birthday => input.birthday = Some(text.to_owned()),
            Column::LoyaltyIds => input.loyalty_ids = list(text),
            Column::ExternalSource => text.clone_into(&mut external_source),
            Column::ExternalId => text.clone_into(&mut external_id),
            Column::ExternalIds => {
                for pair in list(text) {
                    match pair.split_once(':') {
                        Some((source, id)) => input.external_ids.push(ExternalId {
                            source: source.to_owned(),
                            id: id.to_owned(),
                        }),
                        None => problems.push(reject(
                            name,
                            "must be source:id pairs separated by | (pos:1234|web:77)".into(),
                        )),
                    }
                }
            }
            Column::Tags => input.tags = list(text),
            Column::PreferredChannel => input.preferred_channel = Some(text.to_owned()),
            Column::Consent(channel) => match consent_value(text) {
                Ok(Some(granted)) => consents.push((*channel, granted)),
                Ok(None) => {}
                Err(message) => problems.push(reject(name, message)),
            },
            Column::ConsentWording => {
                if !text.is_empty() {
                    match customer::clean_text(name, text, 40) {
                        Ok(w) => wording = w,
                        Err(e) => problems.push(reject(name, e.message)),
                    }
                }
            }
            Column::Ignored => {}
        }
    }
    match (external_source.is_empty(), external_id.is_empty()) {
        (true, true) => {}
        (false, false) => input.external_ids.insert(
            0,
            ExternalId {
                source: external_source,
                id: external_id,
            },
        ),
        (true, false) => problems.push(reject(
            &columns.name_of(Column::ExternalSource),
            "is empty but external_id is given; name the system the id comes from (pos, web, erp)"
                .into(),
        )),
        (false, true) => problems.push(reject(
            &columns.name_of(Column::ExternalId),
            "is empty but external_source is given".into(),
        )),
    }
    if address != Address::default() {
        input.addresses.push(address);
    }

    let profile = match input.clean(default_country, today) {
        Ok(profile) => Some(profile),
        Err(CrmError::Invalid(errors)) => {
            problems.extend(errors.iter().map(|e| rejection_of(line, e, columns)));
            None
        }
        Err(other) => {
            problems.push(reject("row", other.to_string()));
            None
        }
    };
    if let Some(profile) = &profile
        && profile.emails.is_empty()
        && profile.phones.is_empty()
        && profile.loyalty_ids.is_empty()
        && profile.external_ids.is_empty()
        && problems.is_empty()
    {
        problems.push(reject(
            "row",
            "has no email, phone, loyalty id or external id: a customer without one could not \
             be found again when the file is imported a second time"
                .into(),
        ));
    }
    match profile {
        Some(profile) if problems.is_empty() => Ok(ImportRow {
            line,
            profile,
            consents,
            wording,
        }),
        _ => Err(problems),
    }
}

fn consent_value(text: &str) -> Result<Option<bool>, String> {
    match text.to_lowercase().as_str() {
        "" => Ok(None),
        "yes" | "y" | "true" | "1" | "granted" | "opt-in" | "opt_in" => Ok(Some(true)),
        "no" | "n" | "false" | "0" | "withdrawn" | "opt-out" | "opt_out" => Ok(Some(false)),
        _ => Err("must be yes or no (or empty for no decision)".into()),
    }
}

/// A field error of [`CustomerInput::clean`] named after the file's column.
fn rejection_of(line: u64, error: &FieldError, columns: &Columns) -> Rejection {
    let (base, rest) = error
        .field
        .split_once(['[', '.'])
        .unwrap_or((error.field.as_str(), ""));
    let index = rest
        .split_once(']')
        .and_then(|(i, _)| i.parse::<usize>().ok());
    let kind = match base {
        "given_name" => Some(Column::GivenName),
        "family_name" => Some(Column::FamilyName),
        "emails" => Some(Column::Emails),
        "phones" => Some(Column::Phones),
        "loyalty_ids" => Some(Column::LoyaltyIds),
        "tags" => Some(Column::Tags),
        "birthday" => Some(Column::Birthday),
        "preferred_channel" => Some(Column::PreferredChannel),
        "external_ids" if columns.kinds.contains(&Column::ExternalIds) => Some(Column::ExternalIds),
        "external_ids" if rest.ends_with("source") => Some(Column::ExternalSource),
        "external_ids" => Some(Column::ExternalId),
        "addresses" => Some(match rest.rsplit('.').next().unwrap_or_default() {
            "line1" => Column::Line1,
            "line2" => Column::Line2,
            "postcode" => Column::Postcode,
            "city" => Column::City,
            "region" => Column::Region,
            _ => Column::Country,
        }),
        _ => None,
    };
    let field = kind.map_or_else(|| error.field.clone(), |k| columns.name_of(k));
    let multi = matches!(
        kind,
        Some(Column::Emails | Column::Phones | Column::LoyaltyIds | Column::Tags)
    );
    let message = match index {
        Some(i) if multi && i > 0 => format!("value {}: {}", i + 1, error.message),
        _ => error.message.clone(),
    };
    Rejection {
        line,
        field,
        message,
    }
}

/// Rows that carry an identity an earlier row already carries.
fn shared_identities(rows: &[ImportRow], columns: &Columns) -> Vec<Rejection> {
    let mut first: HashMap<Identity, u64> = HashMap::with_capacity(rows.len() * 3);
    let mut out = Vec::new();
    for row in rows {
        for identity in identities_of(&row.profile) {
            let kind = identity_column(&identity, columns);
            if let Some(line) = first.get(&identity) {
                out.push(Rejection {
                    line: row.line,
                    field: kind,
                    message: format!(
                        "the same value is on line {line}; one customer per row (merge the two \
                         rows)"
                    ),
                });
            } else {
                first.insert(identity, row.line);
            }
        }
    }
    out
}

fn identity_column(identity: &Identity, columns: &Columns) -> String {
    columns.name_of(match identity {
        Identity::External(_) if columns.kinds.contains(&Column::ExternalIds) => {
            Column::ExternalIds
        }
        Identity::External(_) => Column::ExternalId,
        Identity::Loyalty(_) => Column::LoyaltyIds,
        Identity::Email(_) => Column::Emails,
        Identity::Phone(_) => Column::Phones,
    })
}

/// The identities of a profile, strongest first.
#[must_use]
pub fn identities_of(profile: &Profile) -> Vec<Identity> {
    let mut out: Vec<Identity> = profile
        .external_ids
        .iter()
        .cloned()
        .map(Identity::External)
        .collect();
    out.extend(profile.loyalty_ids.iter().cloned().map(Identity::Loyalty));
    out.extend(profile.emails.iter().cloned().map(Identity::Email));
    out.extend(profile.phones.iter().cloned().map(Identity::Phone));
    out
}

/// What the import does with one row.
#[derive(Debug)]
enum Plan {
    Create(Box<ImportRow>),
    Update {
        before: Box<Customer>,
        after: Box<Customer>,
    },
    Unchanged,
}

/// A row merged into an existing profile: names and single values replaced when the row gives
/// them, lists united (existing values first), consents added when they differ from the latest.
fn merge_into(existing: &Customer, row: &ImportRow, now: jiff::Timestamp) -> Customer {
    let mut merged = existing.clone();
    let p = &row.profile;
    if !p.given_name.is_empty() {
        merged.given_name.clone_from(&p.given_name);
    }
    if !p.family_name.is_empty() {
        merged.family_name.clone_from(&p.family_name);
    }
    unite(&mut merged.emails, &p.emails);
    unite(&mut merged.phones, &p.phones);
    unite(&mut merged.loyalty_ids, &p.loyalty_ids);
    unite(&mut merged.external_ids, &p.external_ids);
    unite(&mut merged.tags, &p.tags);
    unite(&mut merged.addresses, &p.addresses);
    if p.birthday.is_some() {
        merged.birthday = p.birthday;
    }
    if p.preferred_channel.is_some() {
        merged.preferred_channel = p.preferred_channel;
    }
    if p.preferred_store.is_some() {
        merged.preferred_store = p.preferred_store;
    }
    for (channel, granted) in &row.consents {
        if merged.consent(*channel).map(|c| c.granted) != Some(*granted) {
            merged.consents.push(Consent {
                channel: *channel,
                granted: *granted,
                at: now,
                source: "import".into(),
                wording_version: row.wording.clone(),
            });
        }
    }
    merged
}

fn unite<T: Clone + PartialEq>(into: &mut Vec<T>, from: &[T]) {
    for value in from {
        if !into.contains(value) {
            into.push(value.clone());
        }
    }
}

/// Names of the fields that differ between two versions of a customer.
fn changed_fields(before: &Customer, after: &Customer) -> Vec<&'static str> {
    let checks = [
        ("given_name", before.given_name != after.given_name),
        ("family_name", before.family_name != after.family_name),
        ("emails", before.emails != after.emails),
        ("phones", before.phones != after.phones),
        ("addresses", before.addresses != after.addresses),
        ("birthday", before.birthday != after.birthday),
        ("loyalty_ids", before.loyalty_ids != after.loyalty_ids),
        ("external_ids", before.external_ids != after.external_ids),
        ("tags", before.tags != after.tags),
        (
            "preferred_channel",
            before.preferred_channel != after.preferred_channel,
        ),
        (
            "preferred_store",
            before.preferred_store != after.preferred_store,
        ),
        ("consents", before.consents != after.consents),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}

/// The staged part of an import, for a rollback: the keys of its manifests (the manifests
/// themselves are read back from the store, so a large import does not keep them in memory).
#[derive(Debug, Default)]
struct Staged {
    chunks: Vec<Vec<u8>>,
}

impl Customers {
    /// Imports a CSV file (see the module documentation): validated whole, matched on
    /// identities, staged under an import id and published by one final write.
    pub async fn import_csv(
        &self,
        bytes: Vec<u8>,
        actor: Actor,
        progress: ProgressFn<'_>,
    ) -> Result<ImportRecord, ImportError> {
        self.sweep_unpublished_imports().await?;
        let country = self.default_country().to_owned();
        let today = self.now().to_zoned(jiff::tz::TimeZone::UTC).date();
        let rows = parse_csv(&bytes, &country, today, progress)?;
        drop(bytes);
        self.import_rows(rows, actor, progress).await
    }

    /// Imports rows that already passed validation (the CSV reader and the demo generator).
    pub async fn import_rows(
        &self,
        rows: Vec<ImportRow>,
        actor: Actor,
        progress: ProgressFn<'_>,
    ) -> Result<ImportRecord, ImportError> {
        let total = rows.len() as u64;
        let now = self.now();
        let plans = self.plan(rows, now, progress)?;
        let import_id = self.new_id()?;

        let mut creates = Vec::new();
        let mut updates = Vec::new();
        let mut unchanged = 0u64;
        for plan in plans {
            match plan {
                Plan::Create(row) => creates.push(*row),
                Plan::Update { before, after } => updates.push((*before, *after)),
                Plan::Unchanged => unchanged += 1,
            }
        }

        progress(Stage::Writing, 0, total);
        let mut staged = Staged::default();
        let created = match self
            .stage_creates(
                import_id,
                creates,
                &actor,
                now,
                &mut staged,
                progress,
                total,
            )
            .await
        {
            Ok(created) => created,
            Err(err) => return Err(self.roll_back(staged, &err).await),
        };

        let record = ImportRecord {
            id: import_id,
            at: now,
            actor: actor_name(&actor),
            rows: total,
            created: created.len() as u64,
            updated: updates.len() as u64,
            unchanged,
        };
        let updated: Vec<Customer> = updates.iter().map(|(_, after)| after.clone()).collect();
        if let Err(err) = self.publish(&record, updates, &actor).await {
            return Err(self.roll_back(staged, &err).await);
        }
        progress(Stage::Writing, total, total);
        {
            let mut index = self.index_mut();
            let mut bulk = index.bulk();
            for customer in created.iter().chain(&updated) {
                bulk.upsert(customer);
            }
        }
        self.forget_manifests(&staged).await;
        tracing::info!(
            import = %import_id,
            rows = record.rows,
            created = record.created,
            updated = record.updated,
            unchanged = record.unchanged,
            "customer import published"
        );
        Ok(record)
    }

    /// Matches each row on its identities.
    fn plan(
        &self,
        rows: Vec<ImportRow>,
        now: jiff::Timestamp,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<Plan>, ImportError> {
        let total = rows.len() as u64;
        let mut plans = Vec::with_capacity(rows.len());
        let mut rejections = Vec::new();
        let mut touched: HashMap<Id, u64> = HashMap::new();
        for (i, row) in rows.into_iter().enumerate() {
            if i % 4096 == 0 {
                progress(Stage::Matching, i as u64, total);
            }
            let mut owners: Vec<Id> = Vec::new();
            for identity in identities_of(&row.profile) {
                if let Some(owner) = self.find(&identity)? {
                    let owner = self.survivor(owner)?;
                    if !owners.contains(&owner) {
                        owners.push(owner);
                    }
                }
            }
            match owners.as_slice() {
                [] => plans.push(Plan::Create(Box::new(row))),
                [owner] => {
                    if let Some(line) = touched.insert(*owner, row.line) {
                        rejections.push(Rejection {
                            line: row.line,
                            field: "row".into(),
                            message: format!(
                                "is the same customer as line {line} (they share an identity \
                                 with one stored profile); one customer per row"
                            ),
                        });
                        continue;
                    }
                    let before = self.live(*owner)?;
                    let mut after = merge_into(&before, &row, now);
                    if changed_fields(&before, &after).is_empty() {
                        plans.push(Plan::Unchanged);
                    } else {
                        after.updated_at = now;
                        after.last_activity_at = now;
                        plans.push(Plan::Update {
                            before: Box::new(before),
                            after: Box::new(after),
                        });
                    }
                }
                _ => rejections.push(Rejection {
                    line: row.line,
                    field: "row".into(),
                    message: format!(
                        "its identities belong to {} different customers; review them as \
                         duplicates (and merge) before importing this row",
                        owners.len()
                    ),
                }),
            }
        }
        progress(Stage::Matching, total, total);
        if rejections.is_empty() {
            Ok(plans)
        } else {
            Err(ImportError::Rejected {
                rows: total as usize,
                rejections,
            })
        }
    }

    /// The profile an id leads to: itself, or the survivor it was merged into.
    fn survivor(&self, id: Id) -> Result<Id, CrmError> {
        let mut current = id;
        for _ in 0..8 {
            match self.get(current)? {
                Some(c) => match c.merged_into {
                    Some(next) => current = next,
                    None => return Ok(current),
                },
                None => return Ok(current),
            }
        }
        Ok(current)
    }

    /// Writes new customers in chunks, each with its manifest; two chunks in flight, so the
    /// next is built while the committer writes the last.
    #[allow(clippy::too_many_arguments)]
    async fn stage_creates(
        &self,
        import_id: Id,
        rows: Vec<ImportRow>,
        actor: &Actor,
        now: jiff::Timestamp,
        staged: &mut Staged,
        progress: ProgressFn<'_>,
        total: u64,
    ) -> Result<Vec<Customer>, ImportError> {
        let mut created = Vec::with_capacity(rows.len());
        let mut in_flight: Option<tokio::task::JoinHandle<Result<(), StoreError>>> = None;
        let mut written = 0u64;
        let summary = format!("Profile created (import {import_id})");
        let mut rows = rows.into_iter().peekable();
        let mut number: u32 = 0;
        while rows.peek().is_some() {
            let mut set = ChangeSet::new();
            let mut manifest = Manifest::default();
            for row in rows.by_ref().take(CHUNK) {
                let customer = self.new_customer(&row, now)?;
                self.stage_profile(&mut set, &customer, Expect::Absent)?;
                manifest
                    .customers
                    .push(hex(&CUSTOMERS.store_key(&customer.id.to_bytes())));
                for identity in customer.identities() {
                    self.stage_identity(&mut set, &identity, customer.id);
                    manifest
                        .identities
                        .push(hex(&CUSTOMER_KEYS.store_key(&self.identity_key(&identity))));
                }
                let item =
                    self.stage_timeline(&mut set, customer.id, "created", &summary, actor, &[])?;
                let mut key = customer.id.to_bytes().to_vec();
                key.extend_from_slice(&item.id.to_bytes());
                manifest.timeline.push(hex(&TIMELINE.store_key(&key)));
                created.push(customer);
            }
            let mut manifest_key = import_id.to_bytes().to_vec();
            manifest_key.extend_from_slice(&number.to_be_bytes());
            number += 1;
            set.put(IMPORT_STAGED, manifest_key.clone(), Store::json(&manifest)?);
            staged.chunks.push(manifest_key);

            if let Some(previous) = in_flight.take() {
                await_commit(previous).await?;
                written += CHUNK as u64;
                progress(Stage::Writing, written.min(total), total);
            }
            let store = self.store().clone();
            in_flight = Some(tokio::spawn(async move { store.commit(set).await }));
        }
        if let Some(last) = in_flight.take() {
            await_commit(last).await?;
        }
        Ok(created)
    }

    fn new_customer(&self, row: &ImportRow, now: jiff::Timestamp) -> Result<Customer, CrmError> {
        let mut customer = super::blank(self.new_id()?, now);
        let p = row.profile.clone();
        customer.given_name = p.given_name;
        customer.family_name = p.family_name;
        customer.emails = p.emails;
        customer.phones = p.phones;
        customer.addresses = p.addresses;
        customer.birthday = p.birthday;
        customer.loyalty_ids = p.loyalty_ids;
        customer.external_ids = p.external_ids;
        customer.tags = p.tags;
        customer.preferred_channel = p.preferred_channel;
        customer.preferred_store = p.preferred_store;
        customer.consents = row
            .consents
            .iter()
            .map(|(channel, granted)| Consent {
                channel: *channel,
                granted: *granted,
                at: now,
                source: "import".into(),
                wording_version: row.wording.clone(),
            })
            .collect();
        Ok(customer)
    }

    /// The final write: commit record, updates of existing profiles, the audit entry.
    async fn publish(
        &self,
        record: &ImportRecord,
        updates: Vec<(Customer, Customer)>,
        actor: &Actor,
    ) -> Result<(), ImportError> {
        let mut set = ChangeSet::new();
        set.put_with(
            IMPORTS,
            record.id.to_bytes(),
            Store::json(record)?,
            crate::store::Sealing::DataKey,
            Expect::Absent,
        );
        for (before, after) in &updates {
            let fields = changed_fields(before, after);
            self.stage_profile(&mut set, after, Expect::Present)?;
            let old = before.identities();
            for identity in after.identities().iter().filter(|i| !old.contains(i)) {
                self.stage_identity(&mut set, identity, after.id);
            }
            let names: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
            self.stage_timeline(
                &mut set,
                after.id,
                "updated",
                &format!("Changed by import {}: {}", record.id, fields.join(", ")),
                actor,
                &names,
            )?;
            Event::new(Action::CustomerUpdated)
                .by(actor.clone())
                .target("customer", after.id)
                .fields(fields.iter().copied())
                .reason(format!("import {}", record.id))
                .add_to(&mut set);
        }
        Event::new(Action::CustomersImported)
            .by(actor.clone())
            .target("import", record.id)
            .reason(format!(
                "{} rows: {} created, {} updated, {} unchanged",
                record.rows, record.created, record.updated, record.unchanged
            ))
            .add_to(&mut set);
        self.store().commit(set).await.map_err(|err| match err {
            StoreError::Conflict { .. } => ImportError::RolledBack(
                "an identity in the file was given to another customer, or a profile was \
                 changed, while the file was being imported"
                    .into(),
            ),
            other => other.into(),
        })
    }

    /// Removes everything a failed import staged; returns the error to report.
    async fn roll_back(&self, staged: Staged, cause: &ImportError) -> ImportError {
        let reason = match cause {
            ImportError::Crm(CrmError::Store(StoreError::Conflict { .. })) => {
                "an identity in the file was given to another customer while the file was being \
                 imported"
                    .to_owned()
            }
            ImportError::RolledBack(reason) => reason.clone(),
            other => other.to_string(),
        };
        for key in staged.chunks {
            let manifest = match self.store().get_json::<Manifest>(IMPORT_STAGED, &key) {
                Ok(Some(manifest)) => manifest,
                // The chunk never landed: nothing to remove.
                Ok(None) => continue,
                Err(err) => {
                    return ImportError::RolledBack(format!(
                        "{reason} (the rollback did not finish: {err}; the next import removes \
                         what is left)"
                    ));
                }
            };
            if let Err(err) = self.delete_staged(&key, &manifest).await {
                tracing::error!(error = %err, "could not roll back a staged import chunk; the next import removes it");
                return ImportError::RolledBack(format!(
                    "{reason} (the rollback did not finish: {err}; the next import removes \
                     what is left)"
                ));
            }
        }
        ImportError::RolledBack(reason)
    }

    async fn delete_staged(
        &self,
        manifest_key: &[u8],
        manifest: &Manifest,
    ) -> Result<(), ImportError> {
        let mut set = ChangeSet::new();
        for (table, keys) in [
            (CUSTOMERS, &manifest.customers),
            (CUSTOMER_KEYS, &manifest.identities),
            (TIMELINE, &manifest.timeline),
        ] {
            let prefix = table.store_key(&[]);
            for key in keys {
                let bytes = unhex(key)?;
                if let Some(local) = bytes.strip_prefix(prefix.as_slice()) {
                    set.delete(table, local.to_vec());
                }
            }
        }
        set.delete(IMPORT_STAGED, manifest_key.to_vec());
        self.store().commit(set).await?;
        Ok(())
    }

    /// Drops the manifests of a published import (they matter only until the commit record
    /// exists); a failure leaves them for the next sweep.
    async fn forget_manifests(&self, staged: &Staged) {
        let mut set = ChangeSet::new();
        for key in &staged.chunks {
            set.delete(IMPORT_STAGED, key.clone());
        }
        if let Err(err) = self.store().commit(set).await {
            tracing::warn!(error = %err, "could not remove the manifests of a published import");
        }
    }

    /// Removes what imports that never published staged (a crash mid-import), and forgets the
    /// manifests of published ones. Returns the number of chunks removed.
    pub async fn sweep_unpublished_imports(&self) -> Result<usize, ImportError> {
        let mut found: Vec<(Vec<u8>, Manifest)> = Vec::new();
        for item in self.store().scan(IMPORT_STAGED, b"") {
            let (key, bytes) = item?;
            let manifest: Manifest = serde_json::from_slice(&bytes)
                .map_err(|err| StoreError::Decode(format!("{}: {err}", IMPORT_STAGED.name())))?;
            found.push((key, manifest));
        }
        let mut removed = 0;
        for (key, manifest) in found {
            let import = key.get(..16).unwrap_or_default();
            if self.store().contains(IMPORTS, import)? {
                let mut set = ChangeSet::new();
                set.delete(IMPORT_STAGED, key);
                self.store().commit(set).await?;
            } else {
                self.delete_staged(&key, &manifest).await?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::warn!(
                chunks = removed,
                "removed the staged part of an unpublished import"
            );
        }
        Ok(removed)
    }

    /// Published imports, newest first.
    pub fn imports(&self) -> Result<Vec<ImportRecord>, CrmError> {
        let mut out: Vec<ImportRecord> = self
            .store()
            .scan_json::<ImportRecord>(IMPORTS)?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.at));
        Ok(out)
    }
}

async fn await_commit(
    handle: tokio::task::JoinHandle<Result<(), StoreError>>,
) -> Result<(), ImportError> {
    match handle.await {
        Ok(result) => Ok(result?),
        Err(err) => Err(StoreError::WriteFailed(format!("import writer stopped: {err}")).into()),
    }
}

fn actor_name(actor: &Actor) -> String {
    if actor.name.is_empty() {
        actor.kind.as_str().to_owned()
    } else {
        actor.name.clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

fn unhex(text: &str) -> Result<Vec<u8>, StoreError> {
    data_encoding::HEXLOWER
        .decode(text.as_bytes())
        .map_err(|err| StoreError::Decode(format!("{}: {err}", IMPORT_STAGED.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> jiff::civil::Date {
        jiff::civil::date(2026, 6, 1)
    }

    fn parse(text: &[u8]) -> Result<Vec<ImportRow>, ImportError> {
        parse_csv(text, "GB", today(), &|_, _, _| {})
    }

    #[test]
    fn delimiters_are_found_on_the_header() {
        assert_eq!(detect_delimiter(b"a,b,c\n1;2;3"), b',');
        assert_eq!(detect_delimiter(b"a;b;c\r\n"), b';');
        assert_eq!(detect_delimiter(b"a\tb\tc"), b'\t');
        assert_eq!(detect_delimiter(b"\"x,y\";b;c"), b';');
    }

    #[test]
    fn a_bom_crlf_semicolon_file_reads() {
        let rows = parse(
            b"\xEF\xBB\xBFgiven_name;family_name;email;phone\r\nZo\xC3\xAB;N\xC3\xBA\xC3\xB1ez;ZOE@example.com;020 7946 0018\r\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].profile.family_name, "Núñez");
        assert_eq!(rows[0].profile.emails, ["zoe@example.com"]);
        assert_eq!(rows[0].profile.phones, ["+442079460018"]);
    }

    #[test]
    fn bad_rows_name_line_and_column() {
        let err = parse(
            b"given_name,family_name,email,birthday\nAda,Lovelace,ada@example.com,1815-12-10\n\
              Bob,<b>,bob@,2030-01-01\n",
        )
        .unwrap_err();
        let ImportError::Rejected { rows, rejections } = err else {
            panic!("{err}")
        };
        assert_eq!(rows, 2);
        let fields: Vec<(u64, &str)> = rejections
            .iter()
            .map(|r| (r.line, r.field.as_str()))
            .collect();
        assert!(fields.contains(&(3, "family_name")), "{rejections:?}");
        assert!(fields.contains(&(3, "email")), "{rejections:?}");
        assert!(fields.contains(&(3, "birthday")), "{rejections:?}");
    }

    #[test]
    fn latin1_is_reported_with_its_line() {
        let err = parse(b"given_name,family_name,email\nZo\xEB,Smith,z@example.com\n").unwrap_err();
        let ImportError::Rejected { rejections, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(rejections[0].line, 2);
        assert_eq!(rejections[0].field, "given_name");
        assert!(rejections[0].message.contains("not UTF-8"));
        assert!(rejections[0].message.contains("0xEB"));
    }

    #[test]
    fn wrong_columns_are_named() {
        let err = parse(b"first,family_name,mail\nA,B,c@example.com\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown columns: first, mail"), "{text}");
        assert!(text.contains("missing columns: given_name"), "{text}");
    }

    #[test]
    fn formula_escapes_are_undone() {
        assert_eq!(cell("'+442079460018"), "+442079460018");
        assert_eq!(cell("'=SUM(A1)"), "=SUM(A1)");
        assert_eq!(cell("O'Brien"), "O'Brien");
    }

    #[test]
    fn the_same_identity_on_two_rows_is_refused() {
        let err = parse(b"given_name,family_name,email\nA,B,x@example.com\nC,D,X@example.com\n")
            .unwrap_err();
        let ImportError::Rejected { rejections, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(rejections.len(), 1);
        assert_eq!(rejections[0].line, 3);
        assert!(rejections[0].message.contains("line 2"));
    }
}
