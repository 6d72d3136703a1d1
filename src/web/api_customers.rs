//! The customers API under `/api/v1/customers`: create, read, change, list and search, look-up
//! by one identity, upsert by an external system's id, consents and merge.
//!
//! Handlers call the same service methods as the customer pages, so the audit trail reads the
//! same whoever calls: opening a profile is `customer.viewed` ([`Customers::view`]), a search
//! or a list page is one `customer.searched` entry (never the query), writes carry their own
//! entry in the same change set. Bodies are read with the field path of a type error, so a
//! client gets a 422 naming each refused field, as for values the service refuses.
//!
//! [`Customers::view`]: crate::crm::Customers::view

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::audit::{Action, Actor, Event};
use crate::crm::search::Match;
use crate::crm::{CrmError, CustomerInput, profile_of};
use crate::domain::Id;
use crate::domain::customer::{self, Address, Customer, ExternalId, FieldError, Identity};

use super::AppState;
use super::api::json_body;
use super::customers::{consent_of, search_recorded};
use super::error::WebError;
use super::guard::Principal;
use super::parse_id;

/// Page size when `limit` is absent, and the largest accepted.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

/// Attempts at an upsert that lost a race with another upsert of the same external id.
const UPSERT_ATTEMPTS: usize = 3;

/// The API's error for a failed customer operation.
fn api_error(err: CrmError) -> WebError {
    match err {
        CrmError::Invalid(list) => WebError::InvalidFields(list),
        CrmError::IdentityTaken { field, other } => {
            WebError::Conflict(format!("{field} already belongs to customer {other}"))
        }
        CrmError::NotFound(_) => WebError::NotFound,
        CrmError::Erased(id) => WebError::Conflict(format!("customer {id} was erased")),
        CrmError::Merged(id, survivor) => WebError::Conflict(format!(
            "customer {id} was merged into {survivor}; use {survivor}"
        )),
        CrmError::Store(err) => WebError::Store(err),
    }
}

fn invalid(field: &str, message: impl Into<String>) -> WebError {
    WebError::InvalidFields(vec![FieldError {
        field: field.to_owned(),
        message: message.into(),
    }])
}

fn limit_of(limit: Option<usize>) -> Result<usize, WebError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ))
    }
}

/// What a profile's fields are, as a client would send them back.
fn input_of(c: &Customer) -> CustomerInput {
    CustomerInput {
        given_name: c.given_name.clone(),
        family_name: c.family_name.clone(),
        emails: c.emails.clone(),
        phones: c.phones.clone(),
        addresses: c.addresses.clone(),
        birthday: c.birthday.map(|d| d.to_string()),
        loyalty_ids: c.loyalty_ids.clone(),
        external_ids: c.external_ids.clone(),
        tags: c.tags.clone(),
        preferred_channel: c.preferred_channel.map(|ch| ch.as_str().to_owned()),
        preferred_store: c.preferred_store,
    }
}

/// A preferred store must be one of the chain's locations.
fn check_store(state: &AppState, input: &CustomerInput) -> Result<(), WebError> {
    match input.preferred_store {
        Some(store) if state.accounts.location(store)?.is_none() => {
            Err(invalid("preferred_store", "is not a known store"))
        }
        _ => Ok(()),
    }
}

// --- create, read, change ---

/// `POST /api/v1/customers`: creates a customer; every identity must be new (409 otherwise).
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let input: CustomerInput = json_body(&body)?;
    check_store(&state, &input)?;
    let profile = state.customers.clean(&input).map_err(api_error)?;
    let created = state
        .customers
        .create(profile, principal.actor(&req), "api")
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/api/v1/customers/{}", created.id),
        ))
        .json(created))
}

/// `GET /api/v1/customers/{id}`: one profile (an audited read). A merged profile answers 409
/// naming the survivor, without reading anything of it.
pub async fn read(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    state.customers.live(id).map_err(api_error)?;
    let customer = state
        .customers
        .view(id, principal.actor(&req))
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Ok().json(customer))
}

/// The fields of a `PATCH`: those present replace the profile's, lists as a whole; `null`
/// clears a single value (birthday, preferred channel, preferred store).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
// Absent keeps, `null` clears, a value sets: three states a plain `Option` cannot tell apart.
#[allow(clippy::option_option)]
pub struct CustomerPatch {
    given_name: Option<String>,
    family_name: Option<String>,
    emails: Option<Vec<String>>,
    phones: Option<Vec<String>>,
    addresses: Option<Vec<Address>>,
    #[serde(default, deserialize_with = "present")]
    birthday: Option<Option<String>>,
    loyalty_ids: Option<Vec<String>>,
    external_ids: Option<Vec<ExternalId>>,
    tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    preferred_channel: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    preferred_store: Option<Option<Id>>,
}

/// A field that is present, `null` included (`Some(None)`); absent fields stay `None` through
/// `#[serde(default)]`.
#[allow(clippy::option_option)] // see `CustomerPatch`
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl CustomerPatch {
    fn apply(self, mut input: CustomerInput) -> CustomerInput {
        macro_rules! set {
            ($($field:ident),*) => {
                $(if let Some(value) = self.$field {
                    input.$field = value;
                })*
            };
        }
        set!(
            given_name,
            family_name,
            emails,
            phones,
            addresses,
            birthday,
            loyalty_ids,
            external_ids,
            tags,
            preferred_channel,
            preferred_store
        );
        input
    }
}

/// `PATCH /api/v1/customers/{id}`: changes the fields sent; the answer is the profile after.
pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let patch: CustomerPatch = json_body(&body)?;
    let current = state.customers.live(id).map_err(api_error)?;
    let input = patch.apply(input_of(&current));
    check_store(&state, &input)?;
    let profile = state.customers.clean(&input).map_err(api_error)?;
    let updated = state
        .customers
        .update(id, profile, principal.actor(&req))
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Ok().json(updated))
}

// --- list and search ---

/// `?q=&limit=&cursor=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    q: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// One line of a list or a search: enough to choose, nothing more.
#[derive(Debug, Serialize)]
struct Summary {
    id: Id,
    name: String,
    postcode: String,
    /// How a search matched: `exact`, `prefix` or `similar`; absent in a plain list.
    #[serde(skip_serializing_if = "Option::is_none")]
    matched: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct Listed {
    items: Vec<Summary>,
    next_cursor: Option<String>,
}

/// `GET /api/v1/customers`: with `q`, a search ranked as on the customers page (exact
/// identities, then name prefixes, then similar names; the cursor is the position in that
/// ranking); without, every live customer in id order (the cursor is the last id). Each page
/// is one `customer.searched` entry.
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, WebError> {
    let ListQuery { q, limit, cursor } = query.into_inner();
    let limit = limit_of(limit)?;
    let actor = principal.actor(&req);
    let page = match q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) => search_page(&state, actor, q, limit, cursor.as_deref()).await?,
        None => list_page(&state, actor, limit, cursor.as_deref()).await?,
    };
    Ok(HttpResponse::Ok().json(page))
}

async fn search_page(
    state: &AppState,
    actor: Actor,
    q: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Listed, WebError> {
    let offset = match cursor {
        None => 0,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| invalid("cursor", "is not a cursor this search returned"))?,
    };
    // Limitation: a search ranks at most `offset + limit + 1` hits each time, so deep pages
    // of a broad search cost more than the first; the search index caps what it returns.
    let hits = search_recorded(state, actor, q, offset + limit + 1).await?;
    let more = hits.len() > offset + limit;
    let items: Vec<Summary> = hits
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|hit| Summary {
            id: hit.id,
            name: hit.name,
            postcode: hit.postcode,
            matched: Some(match hit.matched {
                Match::Exact => "exact",
                Match::Prefix => "prefix",
                Match::Fuzzy => "similar",
            }),
        })
        .collect();
    let next_cursor = more.then(|| (offset + items.len()).to_string());
    Ok(Listed { items, next_cursor })
}

async fn list_page(
    state: &AppState,
    actor: Actor,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Listed, WebError> {
    let after = match cursor {
        None => None,
        Some(text) => Some(
            text.parse::<Id>()
                .map_err(|_| invalid("cursor", "is not a cursor this list returned"))?,
        ),
    };
    let (customers, more) = state
        .customers
        .list_after(after, limit)
        .map_err(api_error)?;
    let event = Event::new(Action::CustomerSearched)
        .by(actor)
        .reason(format!("list page, {} results", customers.len()));
    state.customers.record(event).await.map_err(api_error)?;
    let next_cursor = more
        .then(|| customers.last().map(|c| c.id.to_string()))
        .flatten();
    let items = customers
        .iter()
        .map(|c| Summary {
            id: c.id,
            name: c.display_name(),
            postcode: c.postcode().unwrap_or_default().to_owned(),
            matched: None,
        })
        .collect();
    Ok(Listed { items, next_cursor })
}

// --- look-up by identity ---

/// Exactly one identity: `email`, `phone`, `loyalty_id`, or `external_source` with
/// `external_id`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupQuery {
    email: Option<String>,
    phone: Option<String>,
    loyalty_id: Option<String>,
    external_source: Option<String>,
    external_id: Option<String>,
}

/// The identities a look-up names (a national phone number read as one of each country).
fn lookup_identities(state: &AppState, q: &LookupQuery) -> Result<Vec<Identity>, WebError> {
    let given = [
        q.email.is_some(),
        q.phone.is_some(),
        q.loyalty_id.is_some(),
        q.external_source.is_some() || q.external_id.is_some(),
    ]
    .into_iter()
    .filter(|g| *g)
    .count();
    if given != 1 {
        return Err(invalid(
            "query",
            "give exactly one of email, phone, loyalty_id, or external_source with external_id",
        ));
    }
    let refused = |e: FieldError| WebError::InvalidFields(vec![e]);
    if let Some(email) = &q.email {
        return Ok(vec![Identity::Email(
            customer::normalise_email("email", email).map_err(refused)?,
        )]);
    }
    if let Some(loyalty) = &q.loyalty_id {
        return Ok(vec![Identity::Loyalty(
            customer::normalise_code("loyalty_id", loyalty).map_err(refused)?,
        )]);
    }
    if let Some(phone) = &q.phone {
        let mut countries = vec![state.customers.default_country().to_owned()];
        for location in state.accounts.locations()? {
            if !countries.contains(&location.country) {
                countries.push(location.country);
            }
        }
        let mut identities = Vec::new();
        let mut first_error = None;
        for country in &countries {
            match customer::normalise_phone("phone", phone, country) {
                Ok(e164) => {
                    let identity = Identity::Phone(e164);
                    if !identities.contains(&identity) {
                        identities.push(identity);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        return match (identities.is_empty(), first_error) {
            (true, Some(e)) => Err(refused(e)),
            _ => Ok(identities),
        };
    }
    let (source, id) = match (&q.external_source, &q.external_id) {
        (Some(source), Some(id)) => (source, id),
        (None, _) => return Err(invalid("external_source", "is required with external_id")),
        (_, None) => return Err(invalid("external_id", "is required with external_source")),
    };
    Ok(vec![external_identity(source, id)?])
}

/// An external system's id, normalised as profiles store it.
fn external_identity(source: &str, id: &str) -> Result<Identity, WebError> {
    let source = customer::normalise_code("external_source", source).map(|s| s.to_lowercase());
    let id = customer::normalise_code("external_id", id);
    match (source, id) {
        (Ok(source), Ok(id)) => Ok(Identity::External(ExternalId { source, id })),
        (s, i) => Err(WebError::InvalidFields(
            s.err().into_iter().chain(i.err()).collect(),
        )),
    }
}

/// `GET /api/v1/customers/lookup?email=|phone=|loyalty_id=|external_source=&external_id=`:
/// the customer holding that identity (an audited read); 404 when nobody does. A phone is
/// read in any common form: spaces, a leading 0 for the appliance's or a store's country.
pub async fn lookup(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    query: web::Query<LookupQuery>,
) -> Result<HttpResponse, WebError> {
    let identities = lookup_identities(&state, &query)?;
    let mut owner = None;
    for identity in &identities {
        if let Some(id) = state.customers.find(identity).map_err(api_error)? {
            owner = Some(id);
            break;
        }
    }
    let Some(id) = owner else {
        // A miss reads nothing, but a probe for who is a customer is still recorded.
        let event = Event::new(Action::CustomerSearched)
            .by(principal.actor(&req))
            .reason("identity look-up, 0 results");
        state.customers.record(event).await.map_err(api_error)?;
        return Err(WebError::NotFound);
    };
    let customer = state
        .customers
        .view(id, principal.actor(&req))
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Ok().json(customer))
}

// --- upsert by external id ---

/// What an upsert did.
#[derive(Debug, Serialize)]
struct Upserted {
    id: Id,
    /// `created`, `updated` or `unchanged`.
    outcome: &'static str,
}

/// `PUT /api/v1/customers/external/{source}/{id}`: the profile as the external system knows
/// it. The body replaces the profile's fields; the path's external id is always kept, and so
/// are the external ids other systems gave. Sending the same body again changes nothing: no
/// write, no timeline item, no audit entry. The answer names the customer and the outcome,
/// not the profile, so a retried upsert reads no personal data.
pub async fn upsert_external(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let (source, external) = path.into_inner();
    let identity = external_identity(&source, &external)?;
    let Identity::External(path_id) = identity.clone() else {
        return Err(WebError::Internal(
            "an external identity was expected".into(),
        ));
    };
    let input: CustomerInput = json_body(&body)?;
    check_store(&state, &input)?;
    let actor = principal.actor(&req);

    for _ in 0..UPSERT_ATTEMPTS {
        let Some(id) = state.customers.find(&identity).map_err(api_error)? else {
            let mut input = input.clone();
            if !input.external_ids.contains(&path_id) {
                input.external_ids.insert(0, path_id.clone());
            }
            let profile = state.customers.clean(&input).map_err(api_error)?;
            match state
                .customers
                .create(profile, actor.clone(), &format!("api:{}", path_id.source))
                .await
            {
                Ok(created) => return Ok(upserted(created.id, "created", true)),
                // Another upsert of the same id won the race: it is an update now.
                Err(CrmError::IdentityTaken { field, .. }) if field == "external_id" => continue,
                Err(err) => return Err(api_error(err)),
            }
        };
        let current = state.customers.live(id).map_err(api_error)?;
        let mut input = input.clone();
        for kept in current.external_ids.iter().chain(std::iter::once(&path_id)) {
            if !input.external_ids.contains(kept) {
                input.external_ids.push(kept.clone());
            }
        }
        let profile = state.customers.clean(&input).map_err(api_error)?;
        if profile == profile_of(&current) {
            return Ok(upserted(id, "unchanged", false));
        }
        state
            .customers
            .update(id, profile, actor.clone())
            .await
            .map_err(api_error)?;
        return Ok(upserted(id, "updated", false));
    }
    Err(WebError::Conflict(
        "other writes of this external id kept interleaving; try again".into(),
    ))
}

fn upserted(id: Id, outcome: &'static str, created: bool) -> HttpResponse {
    let mut res = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::LOCATION, format!("/api/v1/customers/{id}")))
        .json(Upserted { id, outcome })
}

// --- consents and merge ---

/// A consent decision as an integration sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    #[serde(default)]
    channel: String,
    granted: Option<bool>,
    #[serde(default)]
    source: String,
    #[serde(default)]
    wording_version: String,
}

/// `POST /api/v1/customers/{id}/consents`: records one decision; the history is kept.
pub async fn add_consent(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let body: ConsentBody = json_body(&body)?;
    state.customers.live(id).map_err(api_error)?;
    let consent = consent_of(
        &body.channel,
        body.granted,
        &body.source,
        &body.wording_version,
        state.customers.now(),
    )
    .map_err(WebError::InvalidFields)?;
    state
        .customers
        .set_consent(id, consent.clone(), principal.actor(&req))
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Created().json(serde_json::json!({"customer": id, "consent": consent})))
}

/// Which profile stays and which is merged into it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    survivor: String,
    merged: String,
}

/// `POST /api/v1/customers/merge`: merges `merged` into `survivor` (undone from the merge's
/// page, `/customers/merges/{id}`).
pub async fn merge(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let body: MergeBody = json_body(&body)?;
    let mut errors = Vec::new();
    let mut id_of = |field: &str, text: &str| match text.trim().parse::<Id>() {
        Ok(id) => Some(id),
        Err(_) => {
            errors.push(FieldError {
                field: field.to_owned(),
                message: "is not a customer id".into(),
            });
            None
        }
    };
    let survivor = id_of("survivor", &body.survivor);
    let merged = id_of("merged", &body.merged);
    let (Some(survivor), Some(merged)) = (survivor, merged) else {
        return Err(WebError::InvalidFields(errors));
    };
    let record = state
        .customers
        .merge(survivor, merged, principal.actor(&req))
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Ok().json(record))
}
