//! Customer pages: the list with one search box, the counter look-up, the customer page
//! (identity, consents, key figures, timeline), the create and edit forms, and the consent and
//! note forms.
//!
//! Profiles are chain-wide: every staff role may look customers up; associates, managers and
//! admins may change them; compliance reads only. Opening a profile is an audited read
//! ([`crate::crm::Customers::view`]): if the entry cannot be written the page fails. Every
//! submitted search records one `customer.searched` entry, without the query.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::audit::{Action, Actor, Event};
use crate::crm::search::{Hit, MAX_HITS, Match};
use crate::crm::{CrmError, CustomerInput, TimelineItem};
use crate::domain::Id;
use crate::domain::account::Role;
use crate::domain::customer::{self, Address, Channel, Consent, Customer, ExternalId, FieldError};
use crate::store::StoreError;

use super::AppState;
use super::error::WebError;
use super::guard::{SignedIn, redirect};
use super::parse_id;
use super::shell::Shell;
use super::signin::render;

/// Roles that may import and export customer files.
pub const FILE_MANAGERS: &[Role] = &[Role::Manager, Role::Admin];

/// Roles that may create and change customers, consents and notes.
pub const EDITORS: &[Role] = &[Role::Associate, Role::Manager, Role::Admin];

/// Rows of one repeated form field beyond which the form is refused (a profile holds at most
/// [`customer::MAX_LIST`]).
const MAX_FORM_ROWS: usize = customer::MAX_LIST + 1;

/// Longest consent source or wording version (characters).
const MAX_CONSENT_TEXT: usize = 40;

/// Field errors of a form, by field name (`emails[1]`, `addresses[0].postcode`).
#[derive(Debug, Default)]
pub struct Errors(Vec<(String, String)>);

impl Errors {
    #[must_use]
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
    }

    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push((field.into(), message.into()));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The web error for a failed customer operation that is not a form's field error.
#[must_use]
pub fn web_error(err: CrmError) -> WebError {
    match err {
        CrmError::NotFound(_) => WebError::NotFound,
        CrmError::Store(err) => WebError::Store(err),
        CrmError::Erased(_) => WebError::BadRequest("this customer was erased".into()),
        CrmError::Merged(_, survivor) => {
            WebError::BadRequest(format!("this customer was merged into {survivor}"))
        }
        CrmError::IdentityTaken { field, other } => WebError::Invalid {
            field,
            message: format!("already belongs to another customer ({other})"),
        },
        CrmError::Invalid(errors) => match errors.into_iter().next() {
            Some(e) => WebError::Invalid {
                field: e.field,
                message: e.message,
            },
            None => WebError::BadRequest("the customer is not valid".into()),
        },
    }
}

fn can_edit(who: &SignedIn) -> bool {
    EDITORS.contains(&who.user.role)
}

fn when(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

// --- search and look-up ---

/// The search box's parameter.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: Option<String>,
}

/// One result line.
#[derive(Debug)]
struct HitRow {
    href: String,
    name: String,
    postcode: String,
    how: &'static str,
}

impl HitRow {
    fn of(hit: Hit) -> Self {
        Self {
            href: format!("/customers/{}", hit.id),
            name: hit.name,
            postcode: hit.postcode,
            how: match hit.matched {
                Match::Exact => "exact",
                Match::Prefix => "name",
                Match::Fuzzy => "similar name",
            },
        }
    }
}

#[derive(Debug, Template)]
#[template(path = "customers/search.html")]
#[allow(clippy::struct_excessive_bools)] // a view model: each flag is one switch of the template
struct SearchPage {
    shell: Shell,
    /// The counter look-up view: the box is focused on load, results take the arrow keys.
    counter: bool,
    action: &'static str,
    query: String,
    searched: bool,
    hits: Vec<HitRow>,
    can_edit: bool,
    /// Managers and admins: links to the import page and the CSV export.
    can_manage_files: bool,
}

/// Searches and records the search (never the query). Fails closed: no entry, no results.
pub async fn search_recorded(
    state: &AppState,
    actor: Actor,
    query: &str,
    limit: usize,
) -> Result<Vec<Hit>, WebError> {
    let mut countries: Vec<String> = state
        .accounts
        .locations()?
        .into_iter()
        .map(|l| l.country)
        .collect();
    countries.sort();
    countries.dedup();
    let hits = state
        .customers
        .search_in(query, limit, &countries)
        .map_err(web_error)?;
    let event = Event::new(Action::CustomerSearched)
        .by(actor)
        .reason(format!("{} results", hits.len()));
    state.customers.record(event).await.map_err(web_error)?;
    Ok(hits)
}

async fn search_page(
    state: &AppState,
    who: &SignedIn,
    query: Option<String>,
    counter: bool,
) -> Result<HttpResponse, WebError> {
    let query = query.unwrap_or_default();
    let searched = !query.trim().is_empty();
    let hits = if searched {
        search_recorded(state, who.actor(), &query, MAX_HITS).await?
    } else {
        Vec::new()
    };
    let (title, path, action) = if counter {
        ("Counter look-up", "/customers/lookup", "/customers/lookup")
    } else {
        ("Customers", "/customers", "/customers")
    };
    render(
        &SearchPage {
            shell: Shell::signed_in(who, title, path),
            counter,
            action,
            query,
            searched,
            hits: hits.into_iter().map(HitRow::of).collect(),
            can_edit: can_edit(who),
            can_manage_files: FILE_MANAGERS.contains(&who.user.role),
        },
        StatusCode::OK,
    )
}

/// `GET /customers?q=`: the customer list with one search box.
pub async fn list(
    state: web::Data<AppState>,
    who: SignedIn,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, WebError> {
    search_page(&state, &who, query.into_inner().q, false).await
}

/// `GET /customers/lookup?q=`: the keyboard-first counter look-up.
pub async fn lookup(
    state: web::Data<AppState>,
    who: SignedIn,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, WebError> {
    search_page(&state, &who, query.into_inner().q, true).await
}

// --- the customer page ---

#[derive(Debug)]
struct ConsentRow {
    channel: &'static str,
    /// `granted`, `withdrawn` or `none`.
    state: &'static str,
    latest: String,
    history: Vec<String>,
}

#[derive(Debug)]
struct TimelineRow {
    at: String,
    kind: String,
    summary: String,
    actor: String,
}

impl TimelineRow {
    fn of(item: TimelineItem) -> Self {
        Self {
            at: when(item.at),
            kind: item.kind,
            summary: item.summary,
            actor: item.actor,
        }
    }
}

/// The identity block of a profile, as text.
#[derive(Debug)]
struct IdentityView {
    given_name: String,
    family_name: String,
    emails: Vec<String>,
    phones: Vec<String>,
    addresses: Vec<String>,
    birthday: String,
    loyalty_ids: Vec<String>,
    external_ids: Vec<String>,
    tags: Vec<String>,
    preferred_channel: String,
    preferred_store: String,
    created: String,
    updated: String,
    legal_hold: bool,
    merged_from: usize,
}

fn address_line(a: &Address) -> String {
    [
        a.line1.as_str(),
        a.line2.as_str(),
        a.postcode.as_str(),
        a.city.as_str(),
        a.region.as_str(),
        a.country.as_str(),
    ]
    .into_iter()
    .filter(|p| !p.is_empty())
    .collect::<Vec<_>>()
    .join(", ")
}

fn consent_line(c: &Consent) -> String {
    format!(
        "{} {} · {} · wording {}",
        if c.granted { "Granted" } else { "Withdrawn" },
        when(c.at),
        c.source,
        c.wording_version
    )
}

fn consent_rows(c: &Customer) -> Vec<ConsentRow> {
    Channel::ALL
        .into_iter()
        .map(|channel| {
            let mut history: Vec<&Consent> =
                c.consents.iter().filter(|x| x.channel == channel).collect();
            history.sort_by_key(|x| std::cmp::Reverse(x.at));
            let latest = c.consent(channel);
            ConsentRow {
                channel: channel.label(),
                state: match latest {
                    Some(x) if x.granted => "granted",
                    Some(_) => "withdrawn",
                    None => "none",
                },
                latest: latest.map_or_else(|| "No decision recorded".to_owned(), consent_line),
                history: history.into_iter().map(consent_line).collect(),
            }
        })
        .collect()
}

#[derive(Debug, Template)]
#[template(path = "customers/show.html")]
struct ProfilePage {
    shell: Shell,
    id: Id,
    name: String,
    identity: IdentityView,
    consents: Vec<ConsentRow>,
    figures: SaleFigures,
    timeline: Vec<TimelineRow>,
    can_edit: bool,
    channels: [Channel; 4],
    errors: Errors,
    consent: ConsentForm,
    note: String,
}

/// The customer's sale figures, for people.
#[derive(Debug, Default)]
struct SaleFigures {
    /// Lifetime spend per currency (`1234.50 EUR`).
    spend: Vec<String>,
    purchases: u64,
    returns: u64,
    last_purchase: String,
    average_basket: Vec<String>,
}

impl SaleFigures {
    fn of(summary: &crate::inventory::ingest::SaleSummary) -> Self {
        use crate::inventory::ingest::money;
        Self {
            spend: summary
                .spend
                .iter()
                .map(|(c, s)| format!("{} {c}", money(s.amount, c)))
                .collect(),
            purchases: summary.purchases,
            returns: summary.returns,
            last_purchase: summary
                .last_purchase
                .map(|d| d.to_string())
                .unwrap_or_default(),
            average_basket: summary
                .average_basket()
                .iter()
                .map(|(c, a)| format!("{} {c}", money(*a, c)))
                .collect(),
        }
    }
}

#[derive(Debug, Template)]
#[template(path = "customers/erased.html")]
struct ErasedPage {
    shell: Shell,
}

/// The answer for a profile that cannot be shown: merged (redirect to the survivor) or erased.
fn unavailable(who: &SignedIn, err: CrmError) -> Result<HttpResponse, WebError> {
    match err {
        CrmError::Merged(_, survivor) => Ok(redirect(&format!("/customers/{survivor}"))),
        CrmError::Erased(_) => render(
            &ErasedPage {
                shell: Shell::signed_in(who, "Customer erased", "/customers"),
            },
            StatusCode::GONE,
        ),
        other => Err(web_error(other)),
    }
}

/// Renders the customer page after an audited read; `errors` and the form values are those of
/// a refused consent or note.
async fn profile_page(
    state: &AppState,
    who: &SignedIn,
    id: Id,
    errors: Errors,
    consent: ConsentForm,
    note: String,
) -> Result<HttpResponse, WebError> {
    // A merged profile only redirects: nothing of it is shown, so nothing is read for a
    // person.
    match state.customers.get(id) {
        Ok(Some(c)) if c.merged_into.is_some() => {
            let survivor = c.merged_into.unwrap_or(id);
            return unavailable(who, CrmError::Merged(id, survivor));
        }
        Ok(Some(_)) => {}
        Ok(None) => return Err(WebError::NotFound),
        Err(err) => return unavailable(who, err),
    }
    let c = match state.customers.view(id, who.actor()).await {
        Ok(c) => c,
        Err(err) => return unavailable(who, err),
    };
    let timeline = match state.customers.timeline(id) {
        Ok(items) => items.into_iter().map(TimelineRow::of).collect(),
        Err(err) => return unavailable(who, err),
    };
    let preferred_store = match c.preferred_store {
        Some(store) => state.accounts.location(store)?.map_or_else(
            || "(a removed store)".to_owned(),
            |l| format!("{} · {}", l.code, l.name),
        ),
        None => String::new(),
    };
    let identity = IdentityView {
        given_name: c.given_name.clone(),
        family_name: c.family_name.clone(),
        emails: c.emails.clone(),
        phones: c.phones.clone(),
        addresses: c.addresses.iter().map(address_line).collect(),
        birthday: c.birthday.map(|d| d.to_string()).unwrap_or_default(),
        loyalty_ids: c.loyalty_ids.clone(),
        external_ids: c
            .external_ids
            .iter()
            .map(|e| format!("{}: {}", e.source, e.id))
            .collect(),
        tags: c.tags.clone(),
        preferred_channel: c
            .preferred_channel
            .map(|ch| ch.label().to_owned())
            .unwrap_or_default(),
        preferred_store,
        created: when(c.created_at),
        updated: when(c.updated_at),
        legal_hold: c.legal_hold,
        merged_from: c.merged_from.len(),
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render(
        &ProfilePage {
            shell: Shell::signed_in(who, c.display_name(), "/customers"),
            id,
            name: c.display_name(),
            identity,
            consents: consent_rows(&c),
            // Limitation: the figures are the customer's chain-wide totals, shown to every
            // role that may open the profile; they are not broken down by store, so a
            // store-scoped associate also sees spend made in other stores.
            figures: match state.ingest.summary(id) {
                Ok(summary) => SaleFigures::of(&summary),
                Err(crate::inventory::InventoryError::Store(StoreError::Erased)) => {
                    SaleFigures::default()
                }
                Err(err) => return Err(super::inventory::web_error(err)),
            },
            timeline,
            can_edit: can_edit(who),
            channels: Channel::ALL,
            errors,
            consent,
            note,
        },
        status,
    )
}

/// `GET /customers/{id}`: the customer page (an audited read).
pub async fn show(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    profile_page(
        &state,
        &who,
        id,
        Errors::default(),
        ConsentForm::default(),
        String::new(),
    )
    .await
}

// --- consents and notes ---

/// The consent form.
#[derive(Debug, Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    channel: String,
    /// `granted` or `withdrawn`.
    #[serde(default)]
    decision: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    wording_version: String,
}

impl Default for ConsentForm {
    fn default() -> Self {
        Self {
            channel: String::new(),
            decision: "granted".into(),
            source: "counter".into(),
            wording_version: String::new(),
        }
    }
}

/// A consent decision from its parts as people and integrations type them; every problem is
/// reported with its field.
pub fn consent_of(
    channel: &str,
    granted: Option<bool>,
    source: &str,
    wording_version: &str,
    at: jiff::Timestamp,
) -> Result<Consent, Vec<FieldError>> {
    let mut errors = Vec::new();
    let channel = channel
        .parse::<Channel>()
        .map_err(|message| {
            errors.push(FieldError {
                field: "channel".into(),
                message,
            });
        })
        .ok();
    if granted.is_none() {
        errors.push(FieldError {
            field: "granted".into(),
            message: "say whether consent was granted or withdrawn".into(),
        });
    }
    let mut text = |field: &str, value: &str| {
        match customer::clean_text(field, value, MAX_CONSENT_TEXT) {
            Ok(v) if v.is_empty() => errors.push(FieldError {
                field: field.into(),
                message: "is required".into(),
            }),
            Ok(v) => return v,
            Err(e) => errors.push(e),
        }
        String::new()
    };
    let source = text("source", source);
    let wording_version = text("wording_version", wording_version);
    match (channel, granted) {
        (Some(channel), Some(granted)) if errors.is_empty() => Ok(Consent {
            channel,
            granted,
            at,
            source,
            wording_version,
        }),
        _ => Err(errors),
    }
}

/// `POST /customers/{id}/consents`: records a consent decision.
pub async fn add_consent(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
    form: web::Form<ConsentForm>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let form = form.into_inner();
    let granted = match form.decision.as_str() {
        "granted" => Some(true),
        "withdrawn" => Some(false),
        _ => None,
    };
    let consent = consent_of(
        &form.channel,
        granted,
        &form.source,
        &form.wording_version,
        state.customers.now(),
    );
    let result = match consent {
        Ok(consent) => state.customers.set_consent(id, consent, who.actor()).await,
        Err(errors) => Err(CrmError::Invalid(errors)),
    };
    match result {
        Ok(_) => Ok(redirect(&format!("/customers/{id}#consents"))),
        Err(CrmError::Invalid(list)) => {
            let mut errors = Errors::default();
            for e in list {
                let field = if e.field == "granted" {
                    "decision".to_owned()
                } else {
                    e.field
                };
                errors.push(format!("consent.{field}"), e.message);
            }
            profile_page(&state, &who, id, errors, form, String::new()).await
        }
        Err(err) => unavailable(&who, err),
    }
}

/// The note form.
#[derive(Debug, Deserialize)]
pub struct NoteForm {
    #[serde(default)]
    note: String,
}

/// `POST /customers/{id}/notes`: adds a note to the timeline.
pub async fn add_note(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
    form: web::Form<NoteForm>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let note = form.into_inner().note;
    match state.customers.add_note(id, &note, who.actor()).await {
        Ok(_) => Ok(redirect(&format!("/customers/{id}#timeline"))),
        Err(CrmError::Invalid(list)) => {
            let mut errors = Errors::default();
            for e in list {
                errors.push(e.field, e.message);
            }
            profile_page(&state, &who, id, errors, ConsentForm::default(), note).await
        }
        Err(err) => unavailable(&who, err),
    }
}

// --- create and edit ---

/// What the profile form sent, exactly as typed, row by row (blank rows included, so that the
/// indexes in field errors point at the rows on the page).
#[derive(Debug, Default)]
pub struct CustomerForm {
    given_name: String,
    family_name: String,
    birthday: String,
    emails: Vec<String>,
    phones: Vec<String>,
    loyalty_ids: Vec<String>,
    /// Comma-separated.
    tags: String,
    addresses: Vec<Address>,
    external_ids: Vec<ExternalId>,
    preferred_channel: String,
    preferred_store: String,
    /// Rows sent beyond [`MAX_FORM_ROWS`], by list.
    overflow: Vec<&'static str>,
}

/// Splits `emails[2]` into `("emails", 2, "")` and `addresses[0].city` into
/// `("addresses", 0, "city")`.
fn indexed(key: &str) -> Option<(&str, usize, &str)> {
    let (list, rest) = key.split_once('[')?;
    let (index, part) = rest.split_once(']')?;
    let index = index.parse().ok()?;
    let part = match part {
        "" => "",
        p => p.strip_prefix('.')?,
    };
    Some((list, index, part))
}

/// The row `index` of `rows`, growing it with blank rows as needed.
fn row<T: Default>(rows: &mut Vec<T>, index: usize) -> &mut T {
    if rows.len() <= index {
        rows.resize_with(index + 1, T::default);
    }
    &mut rows[index]
}

impl CustomerForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut form = Self::default();
        for (key, value) in pairs {
            match key.as_str() {
                "given_name" => form.given_name = value,
                "family_name" => form.family_name = value,
                "birthday" => form.birthday = value,
                "tags" => form.tags = value,
                "preferred_channel" => form.preferred_channel = value,
                "preferred_store" => form.preferred_store = value,
                _ => form.set_row(&key, value),
            }
        }
        form
    }

    fn set_row(&mut self, key: &str, value: String) {
        let Some((list, index, part)) = indexed(key) else {
            return;
        };
        let list: &'static str = match list {
            "emails" => "emails",
            "phones" => "phones",
            "loyalty_ids" => "loyalty_ids",
            "addresses" => "addresses",
            "external_ids" => "external_ids",
            _ => return,
        };
        if index >= MAX_FORM_ROWS {
            if !self.overflow.contains(&list) {
                self.overflow.push(list);
            }
            return;
        }
        match (list, part) {
            ("emails", "") => *row(&mut self.emails, index) = value,
            ("phones", "") => *row(&mut self.phones, index) = value,
            ("loyalty_ids", "") => *row(&mut self.loyalty_ids, index) = value,
            ("addresses", part) => {
                let a = row(&mut self.addresses, index);
                match part {
                    "line1" => a.line1 = value,
                    "line2" => a.line2 = value,
                    "postcode" => a.postcode = value,
                    "city" => a.city = value,
                    "region" => a.region = value,
                    "country" => a.country = value,
                    _ => {}
                }
            }
            ("external_ids", "source") => row(&mut self.external_ids, index).source = value,
            ("external_ids", "id") => row(&mut self.external_ids, index).id = value,
            _ => {}
        }
    }

    fn of(c: &Customer) -> Self {
        Self {
            given_name: c.given_name.clone(),
            family_name: c.family_name.clone(),
            birthday: c.birthday.map(|d| d.to_string()).unwrap_or_default(),
            emails: c.emails.clone(),
            phones: c.phones.clone(),
            loyalty_ids: c.loyalty_ids.clone(),
            tags: c.tags.join(", "),
            addresses: c.addresses.clone(),
            external_ids: c.external_ids.clone(),
            preferred_channel: c
                .preferred_channel
                .map(|ch| ch.as_str().to_owned())
                .unwrap_or_default(),
            preferred_store: c.preferred_store.map(|s| s.to_string()).unwrap_or_default(),
            overflow: Vec::new(),
        }
    }

    /// The service's input, and the problems found before cleaning (an unknown store, too
    /// many rows). Blank external-id rows are left out; `ext_rows` maps the input's external
    /// ids back to the form's rows.
    fn input(
        &self,
        state: &AppState,
    ) -> Result<(CustomerInput, Vec<usize>, Vec<FieldError>), WebError> {
        let mut errors: Vec<FieldError> = self
            .overflow
            .iter()
            .map(|list| FieldError {
                field: (*list).to_owned(),
                message: format!("at most {} values", customer::MAX_LIST),
            })
            .collect();
        let preferred_store = match self.preferred_store.trim() {
            "" => None,
            text => match text.parse::<Id>() {
                Ok(store) if state.accounts.location(store)?.is_some() => Some(store),
                _ => {
                    errors.push(FieldError {
                        field: "preferred_store".into(),
                        message: "is not a known store".into(),
                    });
                    None
                }
            },
        };
        let mut ext_rows = Vec::new();
        let mut external_ids = Vec::new();
        for (i, e) in self.external_ids.iter().enumerate() {
            if e.source.trim().is_empty() && e.id.trim().is_empty() {
                continue;
            }
            ext_rows.push(i);
            external_ids.push(e.clone());
        }
        let input = CustomerInput {
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            emails: self.emails.clone(),
            phones: self.phones.clone(),
            addresses: self.addresses.clone(),
            birthday: Some(self.birthday.clone()),
            loyalty_ids: self.loyalty_ids.clone(),
            external_ids,
            tags: self
                .tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            preferred_channel: Some(self.preferred_channel.clone()),
            preferred_store,
        };
        Ok((input, ext_rows, errors))
    }
}

/// Puts field errors where the form shows them: external-id rows back at their place on the
/// page, tag errors on the one tags field, identity conflicts on their list.
fn form_errors(list: Vec<FieldError>, ext_rows: &[usize]) -> Errors {
    let mut errors = Errors::default();
    for e in list {
        let field = match indexed(&e.field) {
            Some(("external_ids", k, part)) => {
                let row = ext_rows.get(k).copied().unwrap_or(k);
                format!("external_ids[{row}].{part}")
            }
            Some(("tags", _, _)) => "tags".to_owned(),
            _ => e.field,
        };
        if errors.get(&field).is_none() {
            errors.push(field, e.message);
        }
    }
    errors
}

/// The list an identity kind is edited in.
fn identity_list(kind: &str) -> &'static str {
    match kind {
        "email" => "emails",
        "phone" => "phones",
        "loyalty_id" => "loyalty_ids",
        _ => "external_ids",
    }
}

/// One text input of the form.
#[derive(Debug)]
struct Input {
    name: String,
    value: String,
    error: Option<String>,
}

impl Input {
    fn new(name: impl Into<String>, value: &str, errors: &Errors) -> Self {
        let name = name.into();
        Self {
            error: errors.get(&name).map(str::to_owned),
            value: value.to_owned(),
            name,
        }
    }
}

#[derive(Debug)]
struct AddressRow {
    line1: Input,
    line2: Input,
    postcode: Input,
    city: Input,
    region: Input,
    country: Input,
}

#[derive(Debug)]
struct ExternalRow {
    source: Input,
    id: Input,
}

/// An option of a select.
#[derive(Debug)]
struct Choice {
    value: String,
    label: String,
    selected: bool,
}

#[derive(Debug, Template)]
#[template(path = "customers/form.html")]
struct FormPage {
    shell: Shell,
    action: String,
    cancel: String,
    submit: &'static str,
    given_name: Input,
    family_name: Input,
    birthday: Input,
    tags: Input,
    emails: Vec<Input>,
    phones: Vec<Input>,
    loyalty_ids: Vec<Input>,
    addresses: Vec<AddressRow>,
    external_ids: Vec<ExternalRow>,
    channels: Vec<Choice>,
    stores: Vec<Choice>,
    errors: Errors,
    /// How many fields were refused (for the summary at the top).
    refused: usize,
}

/// Rows of a repeated text field: those sent, plus one blank row to add a value.
fn text_rows(list: &str, values: &[String], errors: &Errors) -> Vec<Input> {
    let mut rows: Vec<Input> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Input::new(format!("{list}[{i}]"), v, errors))
        .collect();
    if rows.len() < customer::MAX_LIST {
        rows.push(Input::new(format!("{list}[{}]", rows.len()), "", errors));
    }
    rows
}

fn form_page(
    state: &AppState,
    who: &SignedIn,
    editing: Option<(Id, String)>,
    form: &CustomerForm,
    errors: Errors,
) -> Result<HttpResponse, WebError> {
    let mut addresses = form.addresses.clone();
    if addresses.len() < customer::MAX_LIST {
        addresses.push(Address::default());
    }
    let addresses = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let part = |name: &str, value: &str| {
                Input::new(format!("addresses[{i}].{name}"), value, &errors)
            };
            AddressRow {
                line1: part("line1", &a.line1),
                line2: part("line2", &a.line2),
                postcode: part("postcode", &a.postcode),
                city: part("city", &a.city),
                region: part("region", &a.region),
                country: part("country", &a.country),
            }
        })
        .collect();
    let mut external = form.external_ids.clone();
    if external.len() < customer::MAX_LIST {
        external.push(ExternalId {
            source: String::new(),
            id: String::new(),
        });
    }
    let external_ids = external
        .iter()
        .enumerate()
        .map(|(i, e)| ExternalRow {
            source: Input::new(format!("external_ids[{i}].source"), &e.source, &errors),
            id: Input::new(format!("external_ids[{i}].id"), &e.id, &errors),
        })
        .collect();
    let channel = form.preferred_channel.trim().to_lowercase();
    let channels = std::iter::once(Choice {
        value: String::new(),
        label: "None".into(),
        selected: channel.is_empty(),
    })
    .chain(Channel::ALL.into_iter().map(|ch| Choice {
        value: ch.as_str().into(),
        label: ch.label().into(),
        selected: channel == ch.as_str(),
    }))
    .collect();
    let store = form.preferred_store.trim();
    let stores = std::iter::once(Choice {
        value: String::new(),
        label: "None".into(),
        selected: store.is_empty(),
    })
    .chain(state.accounts.locations()?.into_iter().map(|l| Choice {
        selected: l.id.to_string() == store,
        value: l.id.to_string(),
        label: format!("{} · {}", l.code, l.name),
    }))
    .collect();
    let (title, action, cancel, submit) = match editing {
        Some((id, name)) => (
            format!("Edit {name}"),
            format!("/customers/{id}"),
            format!("/customers/{id}"),
            "Save",
        ),
        None => (
            "New customer".to_owned(),
            "/customers".to_owned(),
            "/customers".to_owned(),
            "Create customer",
        ),
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = FormPage {
        shell: Shell::signed_in(who, title, "/customers"),
        action,
        cancel,
        submit,
        given_name: Input::new("given_name", &form.given_name, &errors),
        family_name: Input::new("family_name", &form.family_name, &errors),
        birthday: Input::new("birthday", &form.birthday, &errors),
        tags: Input::new("tags", &form.tags, &errors),
        emails: text_rows("emails", &form.emails, &errors),
        phones: text_rows("phones", &form.phones, &errors),
        loyalty_ids: text_rows("loyalty_ids", &form.loyalty_ids, &errors),
        addresses,
        external_ids,
        channels,
        stores,
        refused: errors.0.len(),
        errors,
    };
    render(&page, status)
}

/// Cleans a submitted form; `Err` holds the errors to show next to the fields.
fn cleaned(
    state: &AppState,
    form: &CustomerForm,
) -> Result<Result<crate::crm::Profile, Errors>, WebError> {
    let (input, ext_rows, mut errors) = form.input(state)?;
    match state.customers.clean(&input) {
        Ok(profile) if errors.is_empty() => Ok(Ok(profile)),
        Ok(_) => Ok(Err(form_errors(errors, &ext_rows))),
        Err(CrmError::Invalid(list)) => {
            errors.extend(list);
            Ok(Err(form_errors(errors, &ext_rows)))
        }
        Err(err) => Err(web_error(err)),
    }
}

/// The errors to show for a write the service refused on a field (an identity that belongs
/// to someone else); other failures pass through.
fn refused_write(err: CrmError) -> Result<Errors, WebError> {
    match err {
        CrmError::IdentityTaken { field, other } => {
            let mut errors = Errors::default();
            errors.push(
                identity_list(&field),
                format!("one of these already belongs to another customer (/customers/{other})"),
            );
            Ok(errors)
        }
        CrmError::Invalid(list) => Ok(form_errors(list, &[])),
        other => Err(web_error(other)),
    }
}

/// `GET /customers/new`.
pub async fn new_customer(
    state: web::Data<AppState>,
    who: SignedIn,
) -> Result<HttpResponse, WebError> {
    form_page(
        &state,
        &who,
        None,
        &CustomerForm::default(),
        Errors::default(),
    )
}

/// `POST /customers`: creates a customer from the form.
pub async fn create(
    state: web::Data<AppState>,
    who: SignedIn,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    let form = CustomerForm::from_pairs(form.into_inner());
    let profile = match cleaned(&state, &form)? {
        Ok(profile) => profile,
        Err(errors) => return form_page(&state, &who, None, &form, errors),
    };
    match state.customers.create(profile, who.actor(), "web").await {
        Ok(c) => Ok(redirect(&format!("/customers/{}", c.id))),
        Err(err) => {
            let errors = refused_write(err)?;
            form_page(&state, &who, None, &form, errors)
        }
    }
}

/// `GET /customers/{id}/edit`. The form shows the profile's data, so opening it is an
/// audited read like the customer page.
pub async fn edit(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    if let Err(err) = state.customers.live(id) {
        return unavailable(&who, err);
    }
    let c = match state.customers.view(id, who.actor()).await {
        Ok(c) => c,
        Err(err) => return unavailable(&who, err),
    };
    form_page(
        &state,
        &who,
        Some((id, c.display_name())),
        &CustomerForm::of(&c),
        Errors::default(),
    )
}

/// `POST /customers/{id}`: saves the edit form.
pub async fn update(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let current = match state.customers.live(id) {
        Ok(c) => c,
        Err(err) => return unavailable(&who, err),
    };
    let editing = Some((id, current.display_name()));
    let form = CustomerForm::from_pairs(form.into_inner());
    let profile = match cleaned(&state, &form)? {
        Ok(profile) => profile,
        Err(errors) => return form_page(&state, &who, editing, &form, errors),
    };
    match state.customers.update(id, profile, who.actor()).await {
        Ok(_) => Ok(redirect(&format!("/customers/{id}"))),
        Err(err @ (CrmError::Merged(..) | CrmError::Erased(_))) => unavailable(&who, err),
        Err(err) => {
            let errors = refused_write(err)?;
            form_page(&state, &who, editing, &form, errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_field_names_split_into_list_row_and_part() {
        assert_eq!(indexed("emails[2]"), Some(("emails", 2, "")));
        assert_eq!(
            indexed("addresses[0].postcode"),
            Some(("addresses", 0, "postcode"))
        );
        assert_eq!(indexed("given_name"), None);
        assert_eq!(indexed("emails[x]"), None);
        assert_eq!(indexed("emails[1]x"), None);
    }

    #[test]
    fn form_rows_keep_their_place_and_overflow_is_refused() {
        let form = CustomerForm::from_pairs(vec![
            ("emails[1]".into(), "b@example.com".into()),
            ("emails[0]".into(), String::new()),
            ("external_ids[0].source".into(), "pos".into()),
            ("emails[9999999]".into(), "x@example.com".into()),
        ]);
        assert_eq!(form.emails, ["", "b@example.com"]);
        assert_eq!(form.external_ids[0].source, "pos");
        assert_eq!(form.overflow, ["emails"]);
    }

    #[test]
    fn errors_of_left_out_external_rows_point_back_at_the_page() {
        let errors = form_errors(
            vec![
                FieldError {
                    field: "external_ids[0].id".into(),
                    message: "bad".into(),
                },
                FieldError {
                    field: "tags[3]".into(),
                    message: "too long".into(),
                },
            ],
            &[2],
        );
        assert_eq!(errors.get("external_ids[2].id"), Some("bad"));
        assert_eq!(errors.get("tags"), Some("too long"));
    }

    #[test]
    fn consents_need_every_part() {
        let at = jiff::Timestamp::UNIX_EPOCH;
        let ok = consent_of("email", Some(true), "counter", "v3", at).unwrap();
        assert!(ok.granted);
        let errors = consent_of("fax", None, " ", "", at).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["channel", "granted", "source", "wording_version"]);
    }
}
