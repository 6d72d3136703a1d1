//! The compliance page: the audit trail filtered, paged newest first, one entry in full, and the
//! filtered range downloaded in the formats auditors' tools read.
//!
//! Every view is itself audited (`audit.viewed`, with the names of the filter fields used, never
//! their values), and so is every export (`audit.exported`). Both are recorded before anything
//! is shown or sent: if the trail cannot record the view, the page fails (fail closed).
//!
//! Filters arrive as GET parameters, so a filtered view is a link an officer can keep. Bad input
//! is answered with 400 and the page again, with the message next to the field.

use std::io::Write;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::audit::entry::{Entry, is_field_name};
use crate::audit::export::{self, Format, Selection};
use crate::audit::index::{Count, Cursor, Filter, Page, Source};
use crate::audit::{Action, Actor, ActorKind, Event, Outcome};
use crate::domain::Id;
use crate::domain::account::Location;

use super::AppState;
use super::error::WebError;
use super::guard::SignedIn;
use super::shell::Shell;
use super::signin::{client_address, render};

/// Entries per page.
pub const PAGE_SIZE: usize = 50;
/// Longest actor or target id accepted in a filter.
const MAX_TEXT: usize = 200;

// ---------------------------------------------------------------------------------------------
// The filter form

/// The filter as typed, echoed back into the form.
#[derive(Debug, Clone, Default)]
pub struct FilterForm {
    pub from: String,
    pub to: String,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub store: String,
    pub outcome: String,
    pub before: String,
    pub after: String,
}

/// Messages for fields that did not parse, in form order.
#[derive(Debug, Clone, Default)]
pub struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    /// The message for `field`, if it has one.
    #[must_use]
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }
}

/// A parsed filter and the page asked for.
#[derive(Debug, Clone)]
struct Search {
    filter: Filter,
    cursor: Cursor,
}

impl FilterForm {
    /// Reads the known fields of a query string or form; others are ignored.
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut form = Self::default();
        for (key, value) in pairs {
            let slot = match key.as_str() {
                "from" => &mut form.from,
                "to" => &mut form.to,
                "actor" => &mut form.actor,
                "action" => &mut form.action,
                "target_type" => &mut form.target_type,
                "target_id" => &mut form.target_id,
                "store" => &mut form.store,
                "outcome" => &mut form.outcome,
                "before" => &mut form.before,
                "after" => &mut form.after,
                _ => continue,
            };
            value.trim().clone_into(slot);
        }
        form
    }

    /// Checks every field; all the problems at once.
    fn parse(&self, locations: &[Location]) -> Result<Search, FieldErrors> {
        let mut errors = FieldErrors::default();
        let mut filter = Filter::default();

        self.parse_range(&mut filter, &mut errors);

        if let Some(actor) = optional(&self.actor) {
            if actor.chars().count() > MAX_TEXT {
                errors.add("actor", format!("use at most {MAX_TEXT} characters"));
            }
            filter.actor = Some(actor.to_owned());
        }
        if let Some(code) = optional(&self.action) {
            match Action::from_code(code) {
                Some(action) => filter.action = Some(action),
                None => errors.add(
                    "action",
                    format!(
                        "unknown action “{}”; choose one from the list",
                        shorten(code)
                    ),
                ),
            }
        }
        if let Some(kind) = optional(&self.target_type) {
            if is_field_name(kind) {
                filter.target_type = Some(kind.to_owned());
            } else {
                errors.add(
                    "target_type",
                    "a target type is one lower-case word, such as customer or user",
                );
            }
        }
        if let Some(id) = optional(&self.target_id) {
            if id.chars().count() > MAX_TEXT {
                errors.add("target_id", format!("use at most {MAX_TEXT} characters"));
            }
            filter.target_id = Some(id.to_owned());
        }
        if let Some(store) = optional(&self.store) {
            match store_id(store, locations) {
                Some(id) => filter.store = Some(id),
                None => errors.add(
                    "store",
                    format!(
                        "unknown store “{}”; choose one from the list",
                        shorten(store)
                    ),
                ),
            }
        }
        if let Some(outcome) = optional(&self.outcome) {
            match Outcome::ALL.into_iter().find(|o| o.as_str() == outcome) {
                Some(o) => filter.outcome = Some(o),
                None => errors.add(
                    "outcome",
                    format!(
                        "unknown outcome “{}”; use success, failure or denied",
                        shorten(outcome)
                    ),
                ),
            }
        }

        let cursor = self.parse_cursor(&mut errors);
        if errors.is_empty() {
            Ok(Search { filter, cursor })
        } else {
            Err(errors)
        }
    }

    /// `from` and `to`; the end takes in its whole day, minute or second.
    fn parse_range(&self, filter: &mut Filter, errors: &mut FieldErrors) {
        let from = optional(&self.from)
            .map(|text| parse_time(text).map_err(|m| errors.add("from", m)))
            .transpose()
            .ok()
            .flatten();
        let to = optional(&self.to)
            .map(|text| parse_time(text).map_err(|m| errors.add("to", m)))
            .transpose()
            .ok()
            .flatten();
        filter.from = from.map(|(start, _)| start);
        filter.until = to.and_then(|(start, span)| start.checked_add(span).ok());
        if let (Some(from), Some(until)) = (filter.from, filter.until)
            && until <= from
        {
            errors.add("to", "the end of the range is before its start");
        }
    }

    /// `before` or `after`: which page is asked for.
    fn parse_cursor(&self, errors: &mut FieldErrors) -> Cursor {
        match (optional(&self.before), optional(&self.after)) {
            (None, None) => Cursor::Newest,
            (Some(_), Some(_)) => {
                errors.add(
                    "before",
                    "ask for the page before or after an entry, not both",
                );
                Cursor::Newest
            }
            (Some(text), None) => match entry_number(text) {
                Some(seq) => Cursor::Before(seq),
                None => {
                    errors.add(
                        "before",
                        format!("“{}” is not an entry number", shorten(text)),
                    );
                    Cursor::Newest
                }
            },
            (None, Some(text)) => match entry_number(text) {
                Some(seq) => Cursor::After(seq),
                None => {
                    errors.add(
                        "after",
                        format!("“{}” is not an entry number", shorten(text)),
                    );
                    Cursor::Newest
                }
            },
        }
    }

    /// The filter fields (not the page) as `(name, value)` pairs, for links and the export form.
    fn filter_pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("from", &self.from),
            ("to", &self.to),
            ("actor", &self.actor),
            ("action", &self.action),
            ("target_type", &self.target_type),
            ("target_id", &self.target_id),
            ("store", &self.store),
            ("outcome", &self.outcome),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name, value.clone()))
        .collect()
    }

    /// `/audit?...` with the filter and one cursor.
    fn href(&self, cursor: Option<(&'static str, u64)>) -> String {
        let mut pairs = self.filter_pairs();
        if let Some((name, seq)) = cursor {
            pairs.push((name, seq.to_string()));
        }
        if pairs.is_empty() {
            return "/audit".into();
        }
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        format!("/audit?{query}")
    }
}

fn optional(text: &str) -> Option<&str> {
    let text = text.trim();
    (!text.is_empty()).then_some(text)
}

/// At most 40 characters of what was typed, for messages.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().filter(|c| !c.is_control()).take(40).collect();
    if text.chars().count() > 40 {
        short.push('…');
    }
    short
}

fn entry_number(text: &str) -> Option<u64> {
    text.parse().ok().filter(|&seq| seq > 0)
}

/// A store given by id or by code (any case).
fn store_id(text: &str, locations: &[Location]) -> Option<String> {
    if let Some(location) = locations
        .iter()
        .find(|l| l.id.to_string() == text || l.code.eq_ignore_ascii_case(text))
    {
        return Some(location.id.to_string());
    }
    // An id the trail may name although the location list no longer has it.
    Id::from_str(text).ok().map(|id| id.to_string())
}

/// A time typed in the filter, in UTC: its start and how long it lasts, so that "to
/// 2026-12-03" takes in the whole day. Accepts `2026-12-03`, `2026-12-03T14:30`,
/// `2026-12-03 14:30:15` and full RFC 3339 times such as `2026-12-03T14:30:15.123456Z`.
fn parse_time(text: &str) -> Result<(Timestamp, SignedDuration), String> {
    let bad = || {
        format!(
            "“{}” is not a date or time; write 2026-12-03, or 2026-12-03T14:30 (UTC)",
            shorten(text)
        )
    };
    if let Ok(time) = text.parse::<Timestamp>() {
        return Ok((time, SignedDuration::from_micros(1)));
    }
    let utc = |civil: jiff::civil::DateTime| {
        civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|_| bad())
    };
    if text.len() == 10 {
        let date: jiff::civil::Date = text.parse().map_err(|_| bad())?;
        return Ok((
            utc(date.to_datetime(jiff::civil::Time::midnight()))?,
            SignedDuration::from_hours(24),
        ));
    }
    let civil: jiff::civil::DateTime = text.replacen(' ', "T", 1).parse().map_err(|_| bad())?;
    let clock = text.get(11..).unwrap_or_default();
    let span = match clock.matches(':').count() {
        1 => SignedDuration::from_mins(1),
        _ if clock.contains('.') => SignedDuration::from_micros(1),
        _ => SignedDuration::from_secs(1),
    };
    Ok((utc(civil)?, span))
}

// ---------------------------------------------------------------------------------------------
// View models

/// The signing key, shown so an officer can record it at install time.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub fingerprint: String,
    pub text: String,
}

impl KeyView {
    fn of(state: &AppState) -> Self {
        let key = state.audit.public_key();
        Self {
            fingerprint: key.fingerprint(),
            text: key.to_text(),
        }
    }
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct RowView {
    pub seq: u64,
    pub time: String,
    pub actor: String,
    /// `user · admin`, `token`, `system`.
    pub actor_detail: String,
    pub action: String,
    pub action_description: &'static str,
    pub target: String,
    pub store: String,
    pub outcome: &'static str,
    pub outcome_class: &'static str,
}

fn row_view(entry: &Entry, locations: &[Location]) -> RowView {
    RowView {
        seq: entry.seq,
        time: short_time(&entry.time),
        actor: actor_label(entry),
        actor_detail: actor_detail(entry),
        action: entry.action.clone(),
        action_description: Action::from_code(&entry.action).map_or("", Action::describe),
        target: match (&entry.target_type, &entry.target_id) {
            (Some(kind), Some(id)) => format!("{kind} {id}"),
            (Some(kind), None) => kind.clone(),
            (None, Some(id)) => id.clone(),
            (None, None) => String::new(),
        },
        store: entry
            .store
            .as_deref()
            .map(|id| store_label(id, locations))
            .unwrap_or_default(),
        outcome: entry.outcome.as_str(),
        outcome_class: outcome_class(entry.outcome),
    }
}

/// `2026-12-03 19:44:17` from the entry's time (which is UTC with microseconds).
fn short_time(time: &str) -> String {
    time.get(..19)
        .map_or_else(|| time.to_owned(), |t| t.replacen('T', " ", 1))
}

fn actor_label(entry: &Entry) -> String {
    if entry.actor_kind == ActorKind::Anonymous || entry.actor_name.is_empty() {
        "(not identified)".into()
    } else {
        entry.actor_name.clone()
    }
}

fn actor_detail(entry: &Entry) -> String {
    match &entry.actor_role {
        Some(role) => format!("{} · {role}", entry.actor_kind.as_str()),
        None => entry.actor_kind.as_str().to_owned(),
    }
}

fn outcome_class(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "ok",
        Outcome::Failure => "warn",
        Outcome::Denied => "danger",
    }
}

/// `S012 · Lyon centre` for a known store, else its id.
fn store_label(id: &str, locations: &[Location]) -> String {
    locations
        .iter()
        .find(|l| l.id.to_string() == id)
        .map_or_else(|| id.to_owned(), |l| format!("{} · {}", l.code, l.name))
}

/// A store in the filter's list.
#[derive(Debug, Clone)]
pub struct StoreOption {
    pub id: String,
    pub label: String,
}

#[derive(Debug, Template)]
#[template(path = "audit/list.html")]
struct ListPage {
    shell: Shell,
    form: FilterForm,
    errors: FieldErrors,
    actions: Vec<(&'static str, &'static str)>,
    outcomes: [&'static str; 3],
    stores: Vec<StoreOption>,
    target_types: Vec<String>,
    /// `None` when the filter did not parse.
    results: Option<Results>,
    export_fields: Vec<(&'static str, String)>,
    formats: [(&'static str, &'static str); 4],
    key: KeyView,
}

/// The answer to a valid filter.
#[derive(Debug, Clone)]
struct Results {
    rows: Vec<RowView>,
    /// "1,234 entries", "more than 10,000 entries".
    count: String,
    /// Shown while the index is being built.
    notice: Option<String>,
    older_href: Option<String>,
    newer_href: Option<String>,
    /// The first page, when this is not it.
    newest_href: Option<String>,
    filtered: bool,
}

/// The download formats, for the export form.
const FORMATS: [(&str, &str); 4] = [
    (
        "jsonl",
        "JSON Lines bundle (entries, checkpoints and key: verifiable offline)",
    ),
    ("csv", "CSV (spreadsheets)"),
    ("cef", "CEF (ArcSight and other SIEMs)"),
    ("syslog", "RFC 5424 syslog"),
];

fn count_text(count: Option<Count>) -> String {
    match count {
        Some(Count {
            capped: true,
            value,
        }) => format!("more than {} entries", grouped(value)),
        Some(Count { value: 1, .. }) => "1 entry".into(),
        Some(Count { value, .. }) => format!("{} entries", grouped(value)),
        None => String::new(),
    }
}

/// `12345` as `12,345`.
fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn results(form: &FilterForm, page: &Page, filtered: bool, locations: &[Location]) -> Results {
    let notice = match page.source {
        Source::Index => None,
        Source::Scan { lowest, highest } if lowest > 0 => Some(format!(
            "The search index is still being built. This page was found by reading entries {lowest} \
             to {highest} directly; “Older” reads further back. Counting starts once the index \
             is ready."
        )),
        Source::Scan { .. } => Some(
            "The search index is still being built; entries were read directly. Counting starts \
             once the index is ready."
                .into(),
        ),
    };
    let first_page = page.newer.is_none();
    Results {
        rows: page
            .entries
            .iter()
            .map(|e| row_view(e, locations))
            .collect(),
        count: count_text(page.count),
        notice,
        older_href: page.older.map(|seq| form.href(Some(("before", seq)))),
        newer_href: page.newer.map(|seq| form.href(Some(("after", seq)))),
        newest_href: (!first_page).then(|| form.href(None)),
        filtered,
    }
}

fn list_page(
    state: &AppState,
    who: &SignedIn,
    form: FilterForm,
    errors: FieldErrors,
    results: Option<Results>,
    locations: &[Location],
) -> ListPage {
    let vocabulary = state.audit_index.vocabulary();
    let export_fields = form.filter_pairs();
    ListPage {
        shell: Shell::signed_in(who, "Audit trail", "/audit"),
        form,
        errors,
        actions: Action::ALL
            .iter()
            .map(|a| (a.code(), a.describe()))
            .collect(),
        outcomes: Outcome::ALL.map(Outcome::as_str),
        stores: locations
            .iter()
            .map(|l| StoreOption {
                id: l.id.to_string(),
                label: format!("{} · {}", l.code, l.name),
            })
            .collect(),
        target_types: vocabulary.target_types,
        results,
        export_fields,
        formats: FORMATS,
        key: KeyView::of(state),
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Records that `who` looked at the trail; an error means the view must not be shown.
async fn record_view(
    state: &AppState,
    who: &SignedIn,
    req: &HttpRequest,
    event: Event,
) -> Result<(), WebError> {
    let actor = Actor::user(&who.user).from_address(client_address(req));
    state.audit.record(event.by(actor)).await?;
    Ok(())
}

fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, WebError> {
    serde_urlencoded::from_str(req.query_string()).map_err(|_| {
        WebError::BadRequest(
            "the filter in the address is malformed; open the audit page again from the menu"
                .into(),
        )
    })
}

/// `GET /audit`: the filter form and one page of matching entries, newest first.
pub async fn list(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
) -> Result<HttpResponse, WebError> {
    let form = FilterForm::from_pairs(query_pairs(&req)?);
    let locations = state.accounts.locations()?;
    let search = match form.parse(&locations) {
        Ok(search) => search,
        Err(errors) => {
            let page = list_page(&state, &who, form, errors, None, &locations);
            return render(&page, StatusCode::BAD_REQUEST);
        }
    };

    let mut fields = search.filter.field_names();
    match search.cursor {
        Cursor::Newest => {}
        Cursor::Before(_) => fields.push("before"),
        Cursor::After(_) => fields.push("after"),
    }
    record_view(
        &state,
        &who,
        &req,
        Event::new(Action::AuditViewed).fields(fields),
    )
    .await?;

    let index = state.audit_index.clone();
    let filtered = !search.filter.is_empty();
    let page = web::block(move || index.search(&search.filter, search.cursor, PAGE_SIZE))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??;
    let results = results(&form, &page, filtered, &locations);
    let page = list_page(
        &state,
        &who,
        form,
        FieldErrors::default(),
        Some(results),
        &locations,
    );
    render(&page, StatusCode::OK)
}

#[derive(Debug, Template)]
#[template(path = "audit/entry.html")]
struct EntryPage {
    shell: Shell,
    entry: Entry,
    action_description: &'static str,
    pci: &'static str,
    actor: String,
    store: Option<String>,
    /// The entry exactly as stored and hashed.
    line: String,
    coverage: Coverage,
    newer: Option<u64>,
    older: Option<u64>,
    key: KeyView,
}

/// Whether a signed checkpoint covers the entry.
#[derive(Debug, Clone)]
struct Coverage {
    covered: bool,
    /// What to say, in words.
    text: String,
    /// The first checkpoint covering the entry, as stored.
    checkpoint: Option<String>,
}

fn coverage(state: &AppState, seq: u64) -> Result<Coverage, WebError> {
    let public = state.audit.public_key();
    let first = state.audit.checkpoints(seq, u64::MAX)?.into_iter().next();
    let Some(cp) = first else {
        let config = state.audit.config();
        return Ok(Coverage {
            covered: false,
            text: format!(
                "No signed checkpoint covers this entry yet. One is signed every {} entries and \
                 every {}, and when the appliance stops.",
                config.checkpoint_entries,
                humantime::format_duration(config.checkpoint_interval)
            ),
            checkpoint: None,
        });
    };
    let signature = if cp.verify(&public) {
        "its signature verifies under this appliance's signing key"
    } else {
        "its signature does NOT verify under this appliance's signing key"
    };
    Ok(Coverage {
        covered: true,
        text: format!(
            "Covered by the checkpoint of the first {} entries, signed {}; {signature}.",
            cp.size,
            short_time(&cp.time)
        ),
        checkpoint: Some(cp.to_line()),
    })
}

/// `GET /audit/{id}`: one entry, every field, its place in the chain and its checkpoint.
pub async fn show(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let Some(seq) = entry_number(&id) else {
        return Err(WebError::BadRequest(format!(
            "“{}” is not an audit entry number; entry numbers are whole numbers from 1",
            shorten(&id)
        )));
    };
    record_view(
        &state,
        &who,
        &req,
        Event::new(Action::AuditViewed).target("audit_entry", seq),
    )
    .await?;

    let audit = state.audit.clone();
    let (entry, head) = web::block(move || {
        let entry = audit.entry(seq)?;
        let head = audit.head()?.seq;
        Ok::<_, crate::store::StoreError>((entry, head))
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))??;
    let entry = entry.ok_or(WebError::NotFound)?;

    let locations = state.accounts.locations()?;
    let action = Action::from_code(&entry.action);
    let page = EntryPage {
        shell: Shell::signed_in(&who, format!("Audit entry {seq}"), "/audit"),
        action_description: action.map_or("", Action::describe),
        pci: action.map_or("", Action::pci),
        actor: actor_label(&entry),
        store: entry.store.as_deref().map(|id| store_label(id, &locations)),
        line: entry.to_line().map_err(WebError::Internal)?,
        coverage: coverage(&state, seq)?,
        newer: (seq < head).then_some(seq + 1),
        older: (seq > 1).then_some(seq - 1),
        key: KeyView::of(&state),
        entry,
    };
    render(&page, StatusCode::OK)
}

// ---------------------------------------------------------------------------------------------
// Export

/// Chunks of a download queued between the exporting thread and the connection.
const CHUNKS_IN_FLIGHT: usize = 8;
/// Size of one chunk of a download.
const CHUNK: usize = 64 * 1024;

/// `POST /audit/export`: the entries of the filter, as a download in the chosen format. The
/// export is recorded first (fail closed), then written on a blocking thread straight into the
/// response, so memory stays flat however long the trail is.
pub async fn export(
    state: web::Data<AppState>,
    who: SignedIn,
    req: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    let pairs = form.into_inner();
    let format_text = pairs
        .iter()
        .find(|(key, _)| key == "format")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let form = FilterForm::from_pairs(pairs);
    let locations = state.accounts.locations()?;
    let parsed = form.parse(&locations);
    let format = Format::from_str(&format_text);
    let (search, format) = match (parsed, format) {
        (Ok(search), Ok(format)) => (search, format),
        (parsed, format) => {
            let mut errors = parsed.err().unwrap_or_default();
            if let Err(err) = format {
                errors.add("format", err.to_string());
            }
            let page = list_page(&state, &who, form, errors, None, &locations);
            return render(&page, StatusCode::BAD_REQUEST);
        }
    };

    let audit = state.audit.clone();
    let (from, until) = (search.filter.from, search.filter.until);
    let (from_seq, to_seq) = web::block(move || export::seq_range_for_times(&audit, from, until))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??;
    let range = format!("entries {from_seq} to {to_seq}");
    let actor = Actor::user(&who.user).from_address(client_address(&req));
    let fields = search.filter.field_names();
    state
        .audit
        .record(
            Event::new(Action::AuditExported)
                .by(actor.clone())
                .fields(fields.clone())
                .reason(format!("{format} download of {range}")),
        )
        .await?;

    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let audit = state.audit.clone();
    let filter = search.filter;
    tokio::task::spawn_blocking(move || {
        let selection = Selection {
            from_seq,
            to_seq,
            filter: (!filter.is_empty())
                .then(|| Box::new(move |e: &Entry| filter.matches(e)) as Box<_>),
        };
        let mut out = ChannelWriter::new(sender.clone());
        let result = export::export(&audit, &selection, format, &mut out, &mut |_, _| {})
            .and_then(|summary| Ok(out.flush().map(|()| summary)?));
        match result {
            Ok(summary) => info!(
                format = %format,
                entries = summary.entries,
                bytes = summary.bytes,
                "audit export downloaded"
            ),
            Err(err) => {
                warn!(format = %format, error = %err, "audit export stopped");
                let _ = sender.blocking_send(Err(std::io::Error::other(err.to_string())));
                // Worth its own entry; if even that fails, the log line above says enough.
                let _ = audit.record_blocking(
                    Event::new(Action::AuditExported)
                        .by(actor)
                        .fields(fields)
                        .outcome(Outcome::Failure)
                        .reason(format!("{format} download of {range} stopped: {err}")),
                );
            }
        }
    });

    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"clientele-audit-{from_seq}-{to_seq}.{}\"",
                format.extension()
            ),
        ))
        .body(ChannelBody { receiver }))
}

/// The writing end of a download: chunks go to the connection through a bounded channel, so a
/// slow client slows the export instead of filling memory. A closed connection is an error.
#[derive(Debug)]
struct ChannelWriter {
    sender: mpsc::Sender<Result<web::Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn new(sender: mpsc::Sender<Result<web::Bytes, std::io::Error>>) -> Self {
        Self {
            sender,
            buffer: Vec::with_capacity(CHUNK),
        }
    }

    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = web::Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.sender.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the download was cancelled by the client",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer()
    }
}

/// The reading end of a download, as a response body.
#[derive(Debug)]
struct ChannelBody {
    receiver: mpsc::Receiver<Result<web::Bytes, std::io::Error>>,
}

impl MessageBody for ChannelBody {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        self.receiver.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_take_in_their_whole_unit() {
        let (start, span) = parse_time("2026-12-03").unwrap();
        assert_eq!(start.to_string(), "2026-12-03T00:00:00Z");
        assert_eq!(span, SignedDuration::from_hours(24));
        let (start, span) = parse_time("2026-12-03T14:30").unwrap();
        assert_eq!(start.to_string(), "2026-12-03T14:30:00Z");
        assert_eq!(span, SignedDuration::from_mins(1));
        let (_, span) = parse_time("2026-12-03 14:30:15").unwrap();
        assert_eq!(span, SignedDuration::from_secs(1));
        let (start, span) = parse_time("2026-12-03T14:30:15.123456Z").unwrap();
        assert_eq!(start.as_microsecond() % 1_000_000, 123_456);
        assert_eq!(span, SignedDuration::from_micros(1));
        for bad in ["2026-13-01", "yesterday", "2026-12-03T25:00", "", "１２３"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_bad_field_gets_its_own_message() {
        let form = FilterForm::from_pairs(vec![
            ("from".into(), "2026-02-30".into()),
            ("action".into(), "user.exploded".into()),
            ("outcome".into(), "maybe".into()),
            ("before".into(), "x".into()),
            ("target_type".into(), "Customer Records".into()),
        ]);
        let errors = form.parse(&[]).unwrap_err();
        assert!(errors.get("from").unwrap().contains("2026-02-30"));
        assert!(errors.get("action").unwrap().contains("unknown action"));
        assert!(errors.get("outcome").unwrap().contains("unknown outcome"));
        assert!(
            errors
                .get("before")
                .unwrap()
                .contains("not an entry number")
        );
        assert!(errors.get("target_type").is_some());
        assert!(errors.get("actor").is_none());
    }

    #[test]
    fn a_range_ending_before_it_starts_is_refused() {
        let form = FilterForm::from_pairs(vec![
            ("from".into(), "2026-12-04".into()),
            ("to".into(), "2026-12-03".into()),
        ]);
        assert!(form.parse(&[]).unwrap_err().get("to").is_some());
        let same_day = FilterForm::from_pairs(vec![
            ("from".into(), "2026-12-03".into()),
            ("to".into(), "2026-12-03".into()),
        ]);
        let search = same_day.parse(&[]).unwrap();
        assert_eq!(
            search.filter.until.unwrap().to_string(),
            "2026-12-04T00:00:00Z"
        );
    }

    #[test]
    fn links_keep_the_filter_and_escape_it() {
        let form = FilterForm::from_pairs(vec![
            ("actor".into(), "a&b=c".into()),
            ("outcome".into(), "denied".into()),
            ("before".into(), "40".into()),
        ]);
        assert_eq!(
            form.href(Some(("before", 20))),
            "/audit?actor=a%26b%3Dc&outcome=denied&before=20"
        );
        assert_eq!(FilterForm::default().href(None), "/audit");
    }

    #[test]
    fn counts_read_as_words() {
        assert_eq!(
            count_text(Some(Count {
                value: 1,
                capped: false
            })),
            "1 entry"
        );
        assert_eq!(
            count_text(Some(Count {
                value: 12_345,
                capped: false
            })),
            "12,345 entries"
        );
        assert_eq!(
            count_text(Some(Count {
                value: 10_000,
                capped: true
            })),
            "more than 10,000 entries"
        );
    }
}
