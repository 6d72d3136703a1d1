//! Customers: profiles, identities and identity resolution, consents, notes, the timeline, and
//! the search index.
//!
//! Store layout (every value sealed; personal values under the customer's own key):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `customers` | customer id | [`Customer`], sealed under the customer's key |
//! | `customer_keys` | blind index of an identity | owning customer id |
//! | `customer_timeline` | customer id + item id | [`TimelineItem`], under the customer's key |
//! | `customer_duplicates` | lower id + higher id | [`DuplicateCandidate`] |
//!
//! An identity (external id, loyalty id, email, phone) belongs to at most one customer: its
//! key is written with `Expect::Absent`, so two events carrying the same new email at the same
//! moment make one customer, never two.

pub mod demo;
pub mod duplicates;
pub mod export;
pub mod import;
pub mod merge;
pub mod privacy;
pub mod search;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::audit::{Action, Actor, Event};
use crate::clock::{Clock, Random};
use crate::domain::Id;
use crate::domain::customer::{
    self, Address, Channel, Consent, Customer, ExternalId, FieldError, Identity,
};
use crate::store::{ChangeSet, Expect, Sealing, Store, StoreError, Table};

use search::{Hit, SearchIndex};

pub const CUSTOMERS: Table = Table::new("customers");
pub const CUSTOMER_KEYS: Table = Table::new("customer_keys");
pub const TIMELINE: Table = Table::new("customer_timeline");
pub const DUPLICATES: Table = Table::new("customer_duplicates");

/// Attempts at a write that lost a race on an identity before giving up.
const RACE_RETRIES: usize = 5;

/// Why a customer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("{field}: already belongs to another customer ({other})")]
    IdentityTaken { field: String, other: Id },
    #[error("no customer {0}")]
    NotFound(Id),
    #[error("customer {0} was erased")]
    Erased(Id),
    #[error("customer {0} was merged into {1}")]
    Merged(Id, Id),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CrmError {
    fn invalid(field: &str, message: &str) -> Self {
        Self::Invalid(vec![FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        }])
    }
}

/// What a form, the API or an import gives for a profile, before cleaning.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CustomerInput {
    pub given_name: String,
    pub family_name: String,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub addresses: Vec<Address>,
    /// `YYYY-MM-DD`, or empty.
    pub birthday: Option<String>,
    pub loyalty_ids: Vec<String>,
    pub external_ids: Vec<ExternalId>,
    pub tags: Vec<String>,
    pub preferred_channel: Option<String>,
    pub preferred_store: Option<Id>,
}

/// A cleaned profile: every value normalised and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub given_name: String,
    pub family_name: String,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub addresses: Vec<Address>,
    pub birthday: Option<jiff::civil::Date>,
    pub loyalty_ids: Vec<String>,
    pub external_ids: Vec<ExternalId>,
    pub tags: Vec<String>,
    pub preferred_channel: Option<Channel>,
    pub preferred_store: Option<Id>,
}

impl CustomerInput {
    /// Cleans every field; all problems are reported at once, each with its field
    /// (`emails[1]`, `addresses[0].postcode`).
    pub fn clean(
        &self,
        default_country: &str,
        today: jiff::civil::Date,
    ) -> Result<Profile, CrmError> {
        let mut errors = Vec::new();
        let mut keep = |r: Result<String, FieldError>| match r {
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let given_name = keep(customer::clean_name("given_name", &self.given_name));
        let family_name = keep(customer::clean_name("family_name", &self.family_name));
        let emails = clean_list(
            "emails",
            &self.emails,
            &customer::normalise_email,
            &mut errors,
        );
        let addresses = clean_addresses(&self.addresses, &mut errors);
        // A national number is read as one of the first address's country, else of the
        // appliance's default country.
        let phone_country = addresses
            .first()
            .map(|a| a.country.as_str())
            .filter(|c| c.len() == 2)
            .unwrap_or(default_country);
        let phones = clean_list(
            "phones",
            &self.phones,
            &|field, v| customer::normalise_phone(field, v, phone_country),
            &mut errors,
        );
        let loyalty_ids = clean_list(
            "loyalty_ids",
            &self.loyalty_ids,
            &customer::normalise_code,
            &mut errors,
        );
        let tags = clean_list(
            "tags",
            &self.tags,
            &|field, v| customer::clean_text(field, v, 40).map(|t| t.to_lowercase()),
            &mut errors,
        );
        let external_ids = clean_external_ids(&self.external_ids, &mut errors);
        let birthday = match self
            .birthday
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
        {
            None => None,
            Some(text) => match text.parse::<jiff::civil::Date>() {
                Ok(date) => customer::check_birthday("birthday", date, today)
                    .map_err(|e| errors.push(e))
                    .ok(),
                Err(_) => {
                    errors.push(FieldError {
                        field: "birthday".into(),
                        message: "is not a date (expected YYYY-MM-DD)".into(),
                    });
                    None
                }
            },
        };
        let preferred_channel = match self
            .preferred_channel
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            None => None,
            Some(c) => c
                .parse::<Channel>()
                .map_err(|message| {
                    errors.push(FieldError {
                        field: "preferred_channel".into(),
                        message,
                    });
                })
                .ok(),
        };
        if errors.is_empty() {
            Ok(Profile {
                given_name: given_name.unwrap_or_default(),
                family_name: family_name.unwrap_or_default(),
                emails,
                phones,
                addresses,
                birthday,
                loyalty_ids,
                external_ids,
                tags,
                preferred_channel,
                preferred_store: self.preferred_store,
            })
        } else {
            Err(CrmError::Invalid(errors))
        }
    }
}

impl Profile {
    /// Names of the fields that differ from `customer`'s.
    fn changed_fields(&self, c: &Customer) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |name, changed: bool| {
            if changed {
                out.push(name);
            }
        };
        check("given_name", self.given_name != c.given_name);
        check("family_name", self.family_name != c.family_name);
        check("emails", self.emails != c.emails);
        check("phones", self.phones != c.phones);
        check("addresses", self.addresses != c.addresses);
        check("birthday", self.birthday != c.birthday);
        check("loyalty_ids", self.loyalty_ids != c.loyalty_ids);
        check("external_ids", self.external_ids != c.external_ids);
        check("tags", self.tags != c.tags);
        check(
            "preferred_channel",
            self.preferred_channel != c.preferred_channel,
        );
        check("preferred_store", self.preferred_store != c.preferred_store);
        out
    }

    fn apply_to(self, c: &mut Customer) {
        c.given_name = self.given_name;
        c.family_name = self.family_name;
        c.emails = self.emails;
        c.phones = self.phones;
        c.addresses = self.addresses;
        c.birthday = self.birthday;
        c.loyalty_ids = self.loyalty_ids;
        c.external_ids = self.external_ids;
        c.tags = self.tags;
        c.preferred_channel = self.preferred_channel;
        c.preferred_store = self.preferred_store;
    }
}

fn clean_list(
    name: &str,
    values: &[String],
    f: &dyn Fn(&str, &str) -> Result<String, FieldError>,
    errors: &mut Vec<FieldError>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if values.len() > customer::MAX_LIST {
        errors.push(FieldError {
            field: name.to_owned(),
            message: format!("at most {} values", customer::MAX_LIST),
        });
    }
    for (i, v) in values.iter().enumerate() {
        if v.trim().is_empty() {
            continue;
        }
        match f(&format!("{name}[{i}]"), v) {
            Ok(v) if !out.contains(&v) => out.push(v),
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    out
}

fn clean_external_ids(ids: &[ExternalId], errors: &mut Vec<FieldError>) -> Vec<ExternalId> {
    let mut external_ids = Vec::new();
    for (i, e) in ids.iter().enumerate() {
        let source = customer::normalise_code(&format!("external_ids[{i}].source"), &e.source)
            .map(|s| s.to_lowercase());
        let id = customer::normalise_code(&format!("external_ids[{i}].id"), &e.id);
        match (source, id) {
            (Ok(source), Ok(id)) => {
                let e = ExternalId { source, id };
                if !external_ids.contains(&e) {
                    external_ids.push(e);
                }
            }
            (s, i) => errors.extend(s.err().into_iter().chain(i.err())),
        }
    }
    external_ids
}

fn clean_addresses(input: &[Address], errors: &mut Vec<FieldError>) -> Vec<Address> {
    let mut addresses = Vec::new();
    for (i, a) in input.iter().enumerate() {
        let f = |part: &str, v: &str, errors: &mut Vec<FieldError>| {
            customer::clean_text(&format!("addresses[{i}].{part}"), v, customer::MAX_TEXT)
                .map_err(|e| errors.push(e))
                .unwrap_or_default()
        };
        let address = Address {
            line1: f("line1", &a.line1, errors),
            line2: f("line2", &a.line2, errors),
            postcode: f("postcode", &a.postcode, errors).to_uppercase(),
            city: f("city", &a.city, errors),
            region: f("region", &a.region, errors),
            country: f("country", &a.country, errors).to_uppercase(),
        };
        if !address.country.is_empty()
            && (address.country.len() != 2
                || !address.country.bytes().all(|b| b.is_ascii_uppercase()))
        {
            errors.push(FieldError {
                field: format!("addresses[{i}].country"),
                message: "must be a two-letter country code (GB, FR, US)".into(),
            });
        }
        if address != Address::default() {
            addresses.push(address);
        }
    }
    addresses
}

/// One item of a customer's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineItem {
    pub id: Id,
    pub at: Timestamp,
    /// `created`, `updated`, `consent`, `note`, `merged`, `unmerged`, `purchase`, ...
    pub kind: String,
    /// What happened, for people; may hold the customer's own data (sealed with it).
    pub summary: String,
    /// Who did it (login, token or job name).
    pub actor: String,
    pub fields: Vec<String>,
}

/// A possible duplicate raised for review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateCandidate {
    pub a: Id,
    pub b: Id,
    /// Why (`shares email`, `similar name and same postcode`), never the values.
    pub reasons: Vec<String>,
    /// Higher is more likely the same person.
    pub score: u32,
    pub raised_at: Timestamp,
    pub status: DuplicateStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateStatus {
    Open,
    Merged,
    Dismissed,
}

/// What identity resolution found for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub customer: Id,
    pub created: bool,
    /// Other customers the event's identities point at: raised as duplicate candidates.
    pub conflicts: Vec<Id>,
}

/// The customer service; cheap to clone.
#[derive(Debug, Clone)]
pub struct Customers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    default_country: String,
    index: RwLock<SearchIndex>,
    ready: AtomicBool,
    /// Striped locks serialising read-modify-write of one profile inside this process, so two
    /// concurrent changes of one customer cannot lose each other's fields (the store checks
    /// presence, not versions).
    profile_locks: Vec<tokio::sync::Mutex<()>>,
}

/// Stripes of [`Inner::profile_locks`].
const PROFILE_LOCK_STRIPES: usize = 256;

impl Customers {
    #[must_use]
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        default_country: &str,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                random,
                default_country: default_country.to_uppercase(),
                index: RwLock::new(SearchIndex::new()),
                ready: AtomicBool::new(false),
                profile_locks: (0..PROFILE_LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            }),
        }
    }

    /// Builds the search index from every readable profile (blocking). Erased profiles are
    /// skipped.
    pub fn build_index(&self) -> Result<usize, StoreError> {
        let started = std::time::Instant::now();
        let mut index = SearchIndex::new();
        let mut bulk = index.bulk();
        for item in self.inner.store.scan(CUSTOMERS, b"") {
            let bytes = match item {
                Ok((_, bytes)) => bytes,
                Err(StoreError::Erased) => continue,
                Err(err) => return Err(err),
            };
            let customer: Customer = serde_json::from_slice(&bytes)
                .map_err(|err| StoreError::Decode(format!("customers: {err}")))?;
            bulk.upsert(&customer);
        }
        drop(bulk);
        let count = index.len();
        {
            let mut live = self.index_mut();
            // Limitation: writes made while building are not carried over. The server builds
            // once, at start, before its listeners and jobs exist, so nothing writes then.
            std::mem::swap(&mut *live, &mut index);
        }
        self.inner.ready.store(true, Ordering::Release);
        info!(
            customers = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "customer search index built"
        );
        Ok(count)
    }

    /// Whether the search index has been built.
    #[must_use]
    pub fn index_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// The country whose national phone numbers are read without a `+` prefix.
    #[must_use]
    pub fn default_country(&self) -> &str {
        &self.inner.default_country
    }

    #[must_use]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Cleans a profile input with this service's country and today's date.
    pub fn clean(&self, input: &CustomerInput) -> Result<Profile, CrmError> {
        let today = self
            .inner
            .clock
            .now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        input.clean(&self.inner.default_country, today)
    }

    /// Reads a profile without recording it: for services. People's reads go through
    /// [`Customers::view`].
    pub fn get(&self, id: Id) -> Result<Option<Customer>, CrmError> {
        match self
            .inner
            .store
            .get_json::<Customer>(CUSTOMERS, &id.to_bytes())
        {
            Ok(found) => Ok(found),
            Err(StoreError::Erased) => Err(CrmError::Erased(id)),
            Err(err) => Err(err.into()),
        }
    }

    /// Opens a profile for a person: an audited read (fail closed).
    pub async fn view(&self, id: Id, actor: Actor) -> Result<Customer, CrmError> {
        let customer = self.get(id)?.ok_or(CrmError::NotFound(id))?;
        self.record(
            Event::new(Action::CustomerViewed)
                .by(actor)
                .target("customer", id),
        )
        .await?;
        Ok(customer)
    }

    /// Records an event on its own (reads, searches, exports).
    pub async fn record(&self, event: Event) -> Result<(), CrmError> {
        let mut set = ChangeSet::new();
        event.add_to(&mut set);
        self.inner.store.commit(set).await?;
        Ok(())
    }

    /// The customer an identity belongs to.
    pub fn find(&self, identity: &Identity) -> Result<Option<Id>, CrmError> {
        let key = self.identity_key(identity);
        Ok(self
            .inner
            .store
            .get(CUSTOMER_KEYS, &key)?
            .and_then(|bytes| <[u8; 16]>::try_from(bytes.as_slice()).ok())
            .map(Id::from_bytes))
    }

    /// Searches by name (prefix and typo-tolerant), or exactly by email, phone (any common
    /// form) or loyalty id when the query looks like one.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, CrmError> {
        self.search_in(query, limit, &[])
    }

    /// [`Self::search`], also reading a national phone number as one of each of `countries`
    /// (the countries of the chain's stores), after the default country.
    pub fn search_in(
        &self,
        query: &str,
        limit: usize,
        countries: &[String],
    ) -> Result<Vec<Hit>, CrmError> {
        let query = query.trim();
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let mut exact: Vec<Identity> = Vec::new();
        if query.contains('@')
            && let Ok(email) = customer::normalise_email("q", query)
        {
            exact.push(Identity::Email(email));
        }
        if query.chars().filter(char::is_ascii_digit).count() >= 6 {
            let countries = std::iter::once(self.inner.default_country.as_str())
                .chain(countries.iter().map(String::as_str));
            for country in countries {
                if let Ok(phone) = customer::normalise_phone("q", query, country) {
                    let phone = Identity::Phone(phone);
                    if !exact.contains(&phone) {
                        exact.push(phone);
                    }
                }
            }
        }
        if let Ok(code) = customer::normalise_code("q", query) {
            exact.push(Identity::Loyalty(code));
        }
        let mut hits = Vec::new();
        for identity in &exact {
            if let Some(id) = self.find(identity)?
                && let Some(c) = self.get(id).ok().flatten()
                && !hits.iter().any(|h: &Hit| h.id == id)
            {
                hits.push(Hit {
                    id,
                    name: c.display_name(),
                    postcode: c.postcode().unwrap_or_default().to_owned(),
                    matched: search::Match::Exact,
                });
            }
        }
        if !query.contains('@') {
            for hit in self.index().search(query, limit) {
                if !hits.iter().any(|h| h.id == hit.id) {
                    hits.push(hit);
                }
            }
        }
        hits.truncate(limit);
        Ok(hits)
    }

    /// Up to `limit` live customers in id order after `after`, and whether more follow: the
    /// API's walk through every customer. Erased and merged-away profiles are left out. Not
    /// audited by itself: callers record the read.
    pub fn list_after(
        &self,
        after: Option<Id>,
        limit: usize,
    ) -> Result<(Vec<Customer>, bool), CrmError> {
        let after: Vec<u8> = after.map(|id| id.to_bytes().to_vec()).unwrap_or_default();
        let mut page = Vec::with_capacity(limit.min(256));
        for item in self.inner.store.scan_after(CUSTOMERS, &after) {
            let bytes = match item {
                Ok((_, bytes)) => bytes,
                Err(StoreError::Erased) => continue,
                Err(err) => return Err(err.into()),
            };
            let customer: Customer = serde_json::from_slice(&bytes)
                .map_err(|err| StoreError::Decode(format!("customers: {err}")))?;
            if customer.merged_into.is_some() {
                continue;
            }
            if page.len() == limit {
                return Ok((page, true));
            }
            page.push(customer);
        }
        Ok((page, false))
    }

    /// Creates a customer; every identity must be new.
    pub async fn create(
        &self,
        profile: Profile,
        actor: Actor,
        source: &str,
    ) -> Result<Customer, CrmError> {
        let now = self.inner.clock.now();
        let id = self.new_id()?;
        let mut customer = blank(id, now);
        profile.apply_to(&mut customer);
        let mut set = ChangeSet::new();
        self.stage_profile(&mut set, &customer, Expect::Absent)?;
        for identity in customer.identities() {
            self.stage_identity(&mut set, &identity, id);
        }
        self.stage_timeline(
            &mut set,
            id,
            "created",
            &format!("Profile created ({source})"),
            &actor,
            &[],
        )?;
        Event::new(Action::CustomerCreated)
            .by(actor)
            .target("customer", id)
            .reason(format!("source: {source}"))
            .add_to(&mut set);
        match self.inner.store.commit(set).await {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => {
                return Err(self.taken(&customer.identities(), None)?);
            }
            Err(err) => return Err(err.into()),
        }
        self.index_mut().upsert(&customer);
        Ok(customer)
    }

    /// Replaces a profile's fields; identities added must be free, identities removed are
    /// released.
    pub async fn update(
        &self,
        id: Id,
        profile: Profile,
        actor: Actor,
    ) -> Result<Customer, CrmError> {
        let _guard = self.lock_profile(id).await;
        self.update_locked(id, profile, actor).await
    }

    /// Serialises changes of one customer's profile in this process; hold the guard from the
    /// read of the profile to the commit of its change.
    pub async fn lock_profile(&self, id: Id) -> tokio::sync::MutexGuard<'_, ()> {
        // In range: reduced modulo the number of stripes.
        self.inner.profile_locks[Self::stripe(id)].lock().await
    }

    /// Locks two profiles (a merge), always in stripe order so two merges cannot deadlock.
    pub async fn lock_profiles(
        &self,
        a: Id,
        b: Id,
    ) -> (
        tokio::sync::MutexGuard<'_, ()>,
        Option<tokio::sync::MutexGuard<'_, ()>>,
    ) {
        let (first, second) = {
            let (x, y) = (Self::stripe(a), Self::stripe(b));
            (x.min(y), x.max(y))
        };
        let one = self.inner.profile_locks[first].lock().await;
        let two = if second == first {
            None
        } else {
            Some(self.inner.profile_locks[second].lock().await)
        };
        (one, two)
    }

    fn stripe(id: Id) -> usize {
        let bytes = id.to_bytes();
        bytes.iter().rev().take(8).fold(0usize, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(usize::from(*b))
        }) % PROFILE_LOCK_STRIPES
    }

    /// [`Self::update`] with the profile's lock already held.
    async fn update_locked(
        &self,
        id: Id,
        profile: Profile,
        actor: Actor,
    ) -> Result<Customer, CrmError> {
        let mut customer = self.live(id)?;
        let fields = profile.changed_fields(&customer);
        if fields.is_empty() {
            return Ok(customer);
        }
        let before: Vec<Identity> = customer.identities();
        profile.apply_to(&mut customer);
        customer.updated_at = self.inner.clock.now();
        customer.last_activity_at = customer.updated_at;
        let after = customer.identities();
        let mut set = ChangeSet::new();
        self.stage_profile(&mut set, &customer, Expect::Present)?;
        for gone in before.iter().filter(|i| !after.contains(i)) {
            set.delete(CUSTOMER_KEYS, self.identity_key(gone));
        }
        let added: Vec<Identity> = after
            .iter()
            .filter(|i| !before.contains(i))
            .cloned()
            .collect();
        for new in &added {
            self.stage_identity(&mut set, new, id);
        }
        let names: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        self.stage_timeline(
            &mut set,
            id,
            "updated",
            &format!("Changed: {}", fields.join(", ")),
            &actor,
            &names,
        )?;
        Event::new(Action::CustomerUpdated)
            .by(actor)
            .target("customer", id)
            .fields(fields.iter().copied())
            .add_to(&mut set);
        match self.inner.store.commit(set).await {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => return Err(self.taken(&added, Some(id))?),
            Err(err) => return Err(err.into()),
        }
        self.index_mut().upsert(&customer);
        Ok(customer)
    }

    /// Records a consent decision.
    pub async fn set_consent(
        &self,
        id: Id,
        consent: Consent,
        actor: Actor,
    ) -> Result<Customer, CrmError> {
        let _guard = self.lock_profile(id).await;
        let mut customer = self.live(id)?;
        if consent.wording_version.trim().is_empty() {
            return Err(CrmError::invalid("wording_version", "is required"));
        }
        let summary = format!(
            "{} consent {} ({}, wording {})",
            consent.channel.label(),
            if consent.granted {
                "granted"
            } else {
                "withdrawn"
            },
            consent.source,
            consent.wording_version
        );
        customer.consents.push(consent);
        customer.updated_at = self.inner.clock.now();
        let mut set = ChangeSet::new();
        self.stage_profile(&mut set, &customer, Expect::Present)?;
        self.stage_timeline(
            &mut set,
            id,
            "consent",
            &summary,
            &actor,
            &["consents".to_owned()],
        )?;
        Event::new(Action::ConsentChanged)
            .by(actor)
            .target("customer", id)
            .fields(["consents"])
            .add_to(&mut set);
        self.inner.store.commit(set).await?;
        Ok(customer)
    }

    /// Adds a note to the timeline.
    pub async fn add_note(
        &self,
        id: Id,
        text: &str,
        actor: Actor,
    ) -> Result<TimelineItem, CrmError> {
        self.live(id)?;
        let text = customer::clean_text("note", text, customer::MAX_NOTE)
            .map_err(|e| CrmError::Invalid(vec![e]))?;
        if text.is_empty() {
            return Err(CrmError::invalid("note", "is empty"));
        }
        let mut set = ChangeSet::new();
        let item =
            self.stage_timeline(&mut set, id, "note", &text, &actor, &["notes".to_owned()])?;
        Event::new(Action::NoteAdded)
            .by(actor)
            .target("customer", id)
            .fields(["notes"])
            .add_to(&mut set);
        self.inner.store.commit(set).await?;
        Ok(item)
    }

    /// The customer's timeline, newest first.
    pub fn timeline(&self, id: Id) -> Result<Vec<TimelineItem>, CrmError> {
        let mut items = Vec::new();
        for item in self.inner.store.scan(TIMELINE, &id.to_bytes()) {
            match item {
                Ok((_, bytes)) => items.push(
                    serde_json::from_slice::<TimelineItem>(&bytes)
                        .map_err(|err| StoreError::Decode(format!("timeline: {err}")))?,
                ),
                Err(StoreError::Erased) => return Err(CrmError::Erased(id)),
                Err(err) => return Err(err.into()),
            }
        }
        items.reverse();
        Ok(items)
    }

    /// Finds the customer an event's identities point at, or creates one; conflicting
    /// identities raise a duplicate candidate instead of merging silently. `hint` fills a new
    /// profile's names and address.
    pub async fn resolve(
        &self,
        identities: &[Identity],
        hint: Option<Profile>,
        actor: Actor,
        source: &str,
    ) -> Result<Resolution, CrmError> {
        if identities.is_empty() {
            return Err(CrmError::invalid(
                "identities",
                "at least one identity is needed",
            ));
        }
        let mut ordered = identities.to_vec();
        ordered.sort_by_key(Identity::rank);
        ordered.dedup();
        for _ in 0..RACE_RETRIES {
            let mut owners: Vec<(Identity, Option<Id>)> = Vec::with_capacity(ordered.len());
            for identity in &ordered {
                owners.push((identity.clone(), self.find(identity)?));
            }
            let Some(strongest) = owners.iter().find_map(|(_, owner)| *owner) else {
                let mut profile = hint.clone().unwrap_or_else(empty_profile);
                for identity in &ordered {
                    add_identity(&mut profile, identity);
                }
                match self.create(profile, actor.clone(), source).await {
                    Ok(c) => {
                        return Ok(Resolution {
                            customer: c.id,
                            created: true,
                            conflicts: Vec::new(),
                        });
                    }
                    // Someone created the same identities a moment ago: resolve again.
                    Err(CrmError::IdentityTaken { .. }) => continue,
                    Err(err) => return Err(err),
                }
            };
            let mut conflicts: Vec<Id> = owners
                .iter()
                .filter_map(|(_, owner)| *owner)
                .filter(|owner| *owner != strongest)
                .collect();
            conflicts.sort_unstable();
            conflicts.dedup();
            let unknown: Vec<Identity> = owners
                .iter()
                .filter(|(_, owner)| owner.is_none())
                .map(|(i, _)| i.clone())
                .collect();
            let target_id = match self.live(strongest) {
                Ok(c) => c.id,
                Err(CrmError::Merged(_, survivor)) => survivor,
                Err(err) => return Err(err),
            };
            let guard = self.lock_profile(target_id).await;
            // Read again under the lock, so a concurrent change of the profile is kept.
            let target = self.live(target_id)?;
            if !unknown.is_empty() {
                let mut profile = profile_of(&target);
                for identity in &unknown {
                    add_identity(&mut profile, identity);
                }
                match self.update_locked(target.id, profile, actor.clone()).await {
                    Ok(_) => {}
                    Err(CrmError::IdentityTaken { .. }) => continue,
                    Err(err) => return Err(err),
                }
            }
            drop(guard);
            for other in &conflicts {
                self.raise_duplicate(
                    target.id,
                    *other,
                    vec!["an event carried identities of both".into()],
                    90,
                )
                .await?;
            }
            return Ok(Resolution {
                customer: target.id,
                created: false,
                conflicts,
            });
        }
        Err(
            StoreError::WriteFailed("identity resolution kept losing races; try again".into())
                .into(),
        )
    }

    /// Raises (or refreshes) a duplicate candidate for review.
    pub async fn raise_duplicate(
        &self,
        a: Id,
        b: Id,
        reasons: Vec<String>,
        score: u32,
    ) -> Result<(), CrmError> {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let key = pair_key(lo, hi);
        if let Some(existing) = self
            .inner
            .store
            .get_json::<DuplicateCandidate>(DUPLICATES, &key)?
            && (existing.status != DuplicateStatus::Open || existing.score >= score)
        {
            return Ok(());
        }
        let candidate = DuplicateCandidate {
            a: lo,
            b: hi,
            reasons,
            score,
            raised_at: self.inner.clock.now(),
            status: DuplicateStatus::Open,
        };
        let mut set = ChangeSet::new();
        set.put(DUPLICATES, key, Store::json(&candidate)?);
        self.inner.store.commit(set).await?;
        Ok(())
    }

    /// Duplicate candidates, best first.
    pub fn duplicates(&self, status: DuplicateStatus) -> Result<Vec<DuplicateCandidate>, CrmError> {
        let mut out: Vec<DuplicateCandidate> = self
            .inner
            .store
            .scan_json::<DuplicateCandidate>(DUPLICATES)?
            .into_iter()
            .map(|(_, c)| c)
            .filter(|c| c.status == status)
            .collect();
        out.sort_by(|x, y| y.score.cmp(&x.score).then(y.raised_at.cmp(&x.raised_at)));
        Ok(out)
    }

    /// A profile that is neither erased nor merged away.
    pub fn live(&self, id: Id) -> Result<Customer, CrmError> {
        let customer = self.get(id)?.ok_or(CrmError::NotFound(id))?;
        match customer.merged_into {
            Some(survivor) => Err(CrmError::Merged(id, survivor)),
            None => Ok(customer),
        }
    }

    /// Read access to the search index.
    pub fn index(&self) -> RwLockReadGuard<'_, SearchIndex> {
        self.inner
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Write access to the search index (after a committed write).
    pub fn index_mut(&self) -> RwLockWriteGuard<'_, SearchIndex> {
        self.inner
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store key of an identity: its blind index.
    #[must_use]
    pub fn identity_key(&self, identity: &Identity) -> [u8; 16] {
        let (purpose, value) = identity.index_input();
        self.inner.store.blind_index(&purpose, &value)
    }

    /// Stages a profile write, sealed under the customer's key.
    pub fn stage_profile(
        &self,
        set: &mut ChangeSet,
        customer: &Customer,
        expect: Expect,
    ) -> Result<(), CrmError> {
        set.put_with(
            CUSTOMERS,
            customer.id.to_bytes(),
            Store::json(customer)?,
            Sealing::Subject(customer.id),
            expect,
        );
        Ok(())
    }

    /// Stages an identity claim: refused if another customer holds it.
    pub fn stage_identity(&self, set: &mut ChangeSet, identity: &Identity, owner: Id) {
        set.put_with(
            CUSTOMER_KEYS,
            self.identity_key(identity),
            owner.to_bytes().to_vec(),
            Sealing::DataKey,
            Expect::Absent,
        );
    }

    /// Stages a timeline item, sealed under the customer's key.
    pub fn stage_timeline(
        &self,
        set: &mut ChangeSet,
        customer: Id,
        kind: &str,
        summary: &str,
        actor: &Actor,
        fields: &[String],
    ) -> Result<TimelineItem, CrmError> {
        let item = TimelineItem {
            id: self.new_id()?,
            at: self.inner.clock.now(),
            kind: kind.to_owned(),
            summary: summary.to_owned(),
            actor: if actor.name.is_empty() {
                actor.kind.as_str().to_owned()
            } else {
                actor.name.clone()
            },
            fields: fields.to_vec(),
        };
        let mut key = customer.to_bytes().to_vec();
        key.extend_from_slice(&item.id.to_bytes());
        set.put_with(
            TIMELINE,
            key,
            Store::json(&item)?,
            Sealing::Subject(customer),
            Expect::Anything,
        );
        Ok(item)
    }

    /// A new time-ordered id.
    pub fn new_id(&self) -> Result<Id, CrmError> {
        let mut bytes = [0u8; 10];
        self.inner
            .random
            .fill(&mut bytes)
            .map_err(|_| StoreError::Crypto("no randomness for an id"))?;
        Ok(Id::from_parts(self.inner.clock.now(), bytes))
    }

    #[must_use]
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Explains a conflict on identities: which field, which other customer.
    fn taken(&self, identities: &[Identity], own: Option<Id>) -> Result<CrmError, CrmError> {
        for identity in identities {
            if let Some(other) = self.find(identity)?
                && Some(other) != own
            {
                return Ok(CrmError::IdentityTaken {
                    field: identity.kind().to_owned(),
                    other,
                });
            }
        }
        Ok(StoreError::WriteFailed("the profile changed meanwhile; try again".into()).into())
    }
}

/// The profile fields of a customer, for an update that changes some of them.
#[must_use]
pub fn profile_of(c: &Customer) -> Profile {
    Profile {
        given_name: c.given_name.clone(),
        family_name: c.family_name.clone(),
        emails: c.emails.clone(),
        phones: c.phones.clone(),
        addresses: c.addresses.clone(),
        birthday: c.birthday,
        loyalty_ids: c.loyalty_ids.clone(),
        external_ids: c.external_ids.clone(),
        tags: c.tags.clone(),
        preferred_channel: c.preferred_channel,
        preferred_store: c.preferred_store,
    }
}

/// A profile with nothing in it.
#[must_use]
pub fn empty_profile() -> Profile {
    profile_of(&blank(Id::from_bytes([0; 16]), Timestamp::UNIX_EPOCH))
}

fn add_identity(profile: &mut Profile, identity: &Identity) {
    match identity {
        Identity::External(e) if !profile.external_ids.contains(e) => {
            profile.external_ids.push(e.clone());
        }
        Identity::Loyalty(v) if !profile.loyalty_ids.contains(v) => {
            profile.loyalty_ids.push(v.clone());
        }
        Identity::Email(v) if !profile.emails.contains(v) => profile.emails.push(v.clone()),
        Identity::Phone(v) if !profile.phones.contains(v) => profile.phones.push(v.clone()),
        _ => {}
    }
}

/// A new, empty customer record.
#[must_use]
pub fn blank(id: Id, now: Timestamp) -> Customer {
    Customer {
        id,
        given_name: String::new(),
        family_name: String::new(),
        emails: Vec::new(),
        phones: Vec::new(),
        addresses: Vec::new(),
        birthday: None,
        loyalty_ids: Vec::new(),
        external_ids: Vec::new(),
        tags: Vec::new(),
        preferred_channel: None,
        preferred_store: None,
        consents: Vec::new(),
        legal_hold: false,
        merged_into: None,
        merged_from: Vec::new(),
        created_at: now,
        updated_at: now,
        last_activity_at: now,
    }
}

/// Key of a duplicate pair.
#[must_use]
pub fn pair_key(lo: Id, hi: Id) -> Vec<u8> {
    let mut key = lo.to_bytes().to_vec();
    key.extend_from_slice(&hi.to_bytes());
    key
}
