//! Sales from registers into the store: the sale, its stock movements, the customer's sale
//! summary and timeline, and the audit entry, in one change set per batch (a file or a
//! request), so a batch lands whole or not at all.
//!
//! Idempotent on the natural key: each sale is written with `Expect::Absent` on its
//! [`TransactionKey`], so a key seen before (or sent by two callers at the same moment) never
//! counts twice; a batch that loses such a race is refused whole by the store, read again and
//! retried without the sales that are now there. Card numbers are masked before anything is
//! written. Item ids missing from the catalog are kept, and flagged on the sale, the movement
//! and the stock level.
//!
//! The customer is found (or created) through [`Customers::resolve`] from the loyalty id,
//! email and POS customer id; resolution commits on its own, before the batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::audit::{Action, Actor, Event};
use crate::clock::Clock;
use crate::crm::{CrmError, Customers};
use crate::domain::Id;
use crate::domain::card::mask_card_numbers;
use crate::domain::customer::{self, ExternalId, FieldError, Identity};
use crate::domain::sale::{SaleTransaction, TransactionKey, TransactionKind};
use crate::domain::stock::MovementKind;
use crate::store::{ChangeSet, Expect, Sealing, Store, StoreError, Table};

use super::InventoryError;
use super::catalog::Catalog;
use super::ledger::{self, Ledger, Pending, RACE_RETRIES};

pub const SALES: Table = Table::new("sales");
pub const CUSTOMER_SALES: Table = Table::new("customer_sales");
pub const SALE_SUMMARY: Table = Table::new("customer_sale_summary");
pub const IDEMPOTENCY: Table = Table::new("idempotency");

/// Most transactions in one batch.
pub const MAX_BATCH: usize = 10_000;
/// Most lines in one transaction.
pub const MAX_LINES: usize = 1_000;
/// Attempts at resolving one customer when a concurrent change of the profile refuses it.
const RESOLVE_TRIES: usize = 3;
/// Customers resolved at once before a batch is written.
const PARALLEL_RESOLVES: usize = 32;
/// Longest item id or register id (characters).
const MAX_ID: usize = 64;

/// A sale as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SaleRecord {
    pub transaction: SaleTransaction,
    pub customer: Option<Id>,
    pub received_at: Timestamp,
    /// `poslog:FILE NAME`, `api`, ...
    pub source: String,
    /// Item ids of lines the catalog did not know when the sale arrived.
    pub unknown_items: Vec<String>,
    /// SHA-256 of the transaction as stored, to tell a re-send from a different transaction
    /// reusing the key.
    pub fingerprint: String,
}

/// Spend figures of one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    /// Lifetime spend in minor units, returns deducted.
    pub amount: i64,
    pub purchases: u64,
}

/// A customer's sale figures, updated with every linked sale.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleSummary {
    /// By ISO 4217 currency.
    pub spend: BTreeMap<String, Spend>,
    pub purchases: u64,
    pub returns: u64,
    /// Business day of the newest purchase.
    pub last_purchase: Option<Date>,
    /// Transactions linked (the number of the newest `customer_sales` entry).
    pub linked: u64,
}

impl SaleSummary {
    /// Average basket of each currency, in minor units.
    #[must_use]
    pub fn average_basket(&self) -> Vec<(String, i64)> {
        self.spend
            .iter()
            .filter(|(_, s)| s.purchases > 0)
            .map(|(c, s)| (c.clone(), s.amount / s.purchases.cast_signed()))
            .collect()
    }

    fn add(&mut self, t: &SaleTransaction) {
        let spend = self.spend.entry(t.currency.clone()).or_default();
        spend.amount += t.net_amount();
        match t.kind {
            TransactionKind::Sale => {
                spend.purchases += 1;
                self.purchases += 1;
                if self.last_purchase.is_none_or(|d| d < t.key.business_day) {
                    self.last_purchase = Some(t.key.business_day);
                }
            }
            TransactionKind::Return => self.returns += 1,
            TransactionKind::Void | TransactionKind::Control => {}
        }
    }
}

/// What happened to one transaction of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// New: recorded now.
    Accepted,
    /// Received before: nothing changed.
    Duplicate,
    /// Received before with different content under the same key: nothing changed.
    ConflictingDuplicate,
}

/// One transaction's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub key: String,
    pub status: Status,
    pub kind: TransactionKind,
    pub customer: Option<Id>,
    /// Item ids not in the catalog (kept and flagged).
    pub unknown_items: Vec<String>,
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReport {
    pub received: usize,
    pub accepted: usize,
    pub duplicates: usize,
    pub transactions: Vec<Outcome>,
}

/// The stored answer to an `Idempotency-Key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdempotentAnswer {
    /// SHA-256 of the request body, hex.
    pub body_sha256: String,
    pub report: IngestReport,
    pub at: Timestamp,
}

/// An `Idempotency-Key` claimed by a request: the key (hashed with the caller) and the body.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub key: [u8; 32],
    pub body_sha256: String,
}

impl IdempotencyClaim {
    /// The claim of `key` by `caller` for `body`.
    #[must_use]
    pub fn new(caller: &str, key: &str, body: &[u8]) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(caller.as_bytes());
        ctx.update(&[0]);
        ctx.update(key.as_bytes());
        let mut hashed = [0u8; 32];
        hashed.copy_from_slice(ctx.finish().as_ref());
        Self {
            key: hashed,
            body_sha256: sha256_hex(body),
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The ingest service; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingest {
    store: Store,
    clock: Arc<dyn Clock>,
    catalog: Catalog,
    ledger: Ledger,
    customers: Customers,
    /// Locks over stock levels and customers (by hash): a batch holds those it touches while
    /// it reads and writes them, so concurrent batches in this process queue instead of
    /// losing the optimistic check again and again. The check stays as the guarantee.
    stripes: Arc<Vec<Arc<tokio::sync::Mutex<()>>>>,
}

/// Lock stripes over stock levels and customers.
const STRIPES: usize = 1024;

/// The stripe of a stock level or a customer.
fn stripe(parts: &[&[u8]]) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    parts.hash(&mut hasher);
    (hasher.finish() % STRIPES as u64) as usize
}

/// Caches of one batch: customers by identities, SKUs by register item id.
#[derive(Debug, Default)]
struct Lookups {
    linked: HashMap<String, Option<Id>>,
    items: HashMap<String, Option<String>>,
}

impl Ingest {
    #[must_use]
    pub fn new(store: Store, clock: Arc<dyn Clock>, customers: Customers) -> Self {
        let catalog = Catalog::new(store.clone(), Arc::clone(&clock));
        let ledger = Ledger::new(store.clone(), Arc::clone(&clock), catalog.clone());
        Self {
            store,
            clock,
            catalog,
            ledger,
            customers,
            stripes: Arc::new(
                (0..STRIPES)
                    .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                    .collect(),
            ),
        }
    }

    #[must_use]
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    #[must_use]
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// A stored sale.
    pub fn sale(&self, key: &TransactionKey) -> Result<Option<SaleRecord>, InventoryError> {
        Ok(self.store.get_json(SALES, key.to_key_string().as_bytes())?)
    }

    /// A customer's sale figures (empty when no sale is linked).
    pub fn summary(&self, customer: Id) -> Result<SaleSummary, InventoryError> {
        Ok(self
            .store
            .get_json(SALE_SUMMARY, &customer.to_bytes())?
            .unwrap_or_default())
    }

    /// The stored answer of an idempotency claim: `Ok(None)` when the key is new, an error
    /// when it was used with another body.
    pub fn answered(
        &self,
        claim: &IdempotencyClaim,
    ) -> Result<Option<IngestReport>, InventoryError> {
        match self
            .store
            .get_json::<IdempotentAnswer>(IDEMPOTENCY, &claim.key)?
        {
            None => Ok(None),
            Some(answer) if answer.body_sha256 == claim.body_sha256 => Ok(Some(answer.report)),
            Some(_) => Err(InventoryError::IdempotencyReused),
        }
    }

    /// Ingests a batch: all of it or nothing. Transactions received before are reported as
    /// duplicates and change nothing.
    pub async fn ingest(
        &self,
        mut transactions: Vec<SaleTransaction>,
        actor: Actor,
        source: &str,
        claim: Option<IdempotencyClaim>,
    ) -> Result<IngestReport, InventoryError> {
        if transactions.is_empty() {
            return Err(InventoryError::invalid(
                "transactions",
                "no transaction in the batch",
            ));
        }
        if transactions.len() > MAX_BATCH {
            return Err(InventoryError::invalid(
                "transactions",
                format!(
                    "{} transactions; send at most {MAX_BATCH} per batch",
                    transactions.len()
                ),
            ));
        }
        let mut errors = Vec::new();
        let today = self.clock.now().to_zoned(jiff::tz::TimeZone::UTC).date();
        for (i, t) in transactions.iter_mut().enumerate() {
            clean(&format!("transactions[{i}]"), t, today, &mut errors);
        }
        if !errors.is_empty() {
            return Err(InventoryError::Invalid(errors));
        }
        let received = transactions.len();
        let transactions = dedupe_batch(transactions)?;
        if let Some(claim) = &claim
            && let Some(report) = self.answered(claim)?
        {
            return Ok(report);
        }

        let mut lookups = Lookups::default();
        self.prelink(&transactions, &actor, source, &mut lookups.linked)
            .await?;
        let _held = self.lock_stripes(&transactions, &mut lookups).await?;
        for _ in 0..RACE_RETRIES {
            match self
                .attempt(
                    &transactions,
                    received,
                    &actor,
                    source,
                    claim.as_ref(),
                    &mut lookups,
                )
                .await
            {
                Ok(report) => {
                    info!(
                        source = source_kind(source),
                        received = report.received,
                        accepted = report.accepted,
                        duplicates = report.duplicates,
                        "sales ingested"
                    );
                    return Ok(report);
                }
                Err(InventoryError::Store(StoreError::Conflict { table, .. })) => {
                    if table == IDEMPOTENCY.name()
                        && let Some(claim) = &claim
                        && let Some(report) = self.answered(claim)?
                    {
                        return Ok(report);
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Err(InventoryError::Contended {
            what: "the batch's stock levels or customers",
            attempts: RACE_RETRIES,
        })
    }

    /// One try at writing a batch; a conflict means someone wrote first: read again.
    async fn attempt(
        &self,
        transactions: &[SaleTransaction],
        received: usize,
        actor: &Actor,
        source: &str,
        claim: Option<&IdempotencyClaim>,
        lookups: &mut Lookups,
    ) -> Result<IngestReport, InventoryError> {
        let now = self.clock.now();
        let mut report = IngestReport {
            received,
            ..IngestReport::default()
        };
        let mut set = ChangeSet::new();
        let mut pending = Pending::default();
        let mut summaries: Vec<(Id, Vec<&SaleTransaction>)> = Vec::new();

        for t in transactions {
            let key = t.key.to_key_string();
            let fingerprint = sha256_hex(&Store::json(t)?);
            if let Some(old) = self.store.get_json::<SaleRecord>(SALES, key.as_bytes())? {
                report.duplicates += 1;
                report.transactions.push(Outcome {
                    key,
                    status: if old.fingerprint == fingerprint {
                        Status::Duplicate
                    } else {
                        Status::ConflictingDuplicate
                    },
                    kind: old.transaction.kind,
                    customer: old.customer,
                    unknown_items: old.unknown_items,
                });
                continue;
            }
            let customer = self.link(t, actor, source, &mut lookups.linked).await?;
            let unknown_items =
                self.stage_lines(&mut set, &mut pending, &mut lookups.items, t, &key, now)?;
            let record = SaleRecord {
                transaction: t.clone(),
                customer,
                received_at: now,
                source: source.to_owned(),
                unknown_items: unknown_items.clone(),
                fingerprint,
            };
            set.insert_new(SALES, key.as_bytes().to_vec(), Store::json(&record)?);
            if let Some(id) = customer {
                match summaries.iter_mut().find(|(c, _)| *c == id) {
                    Some((_, list)) => list.push(t),
                    None => summaries.push((id, vec![t])),
                }
            }
            report.accepted += 1;
            report.transactions.push(Outcome {
                key,
                status: Status::Accepted,
                kind: t.kind,
                customer,
                unknown_items,
            });
        }
        if report.accepted == 0 && claim.is_none() {
            return Ok(report);
        }
        Ledger::finish(pending, &mut set)?;
        for (customer, sales) in summaries {
            self.stage_summary(&mut set, customer, &sales, actor)?;
        }
        if let Some(claim) = claim {
            let answer = IdempotentAnswer {
                body_sha256: claim.body_sha256.clone(),
                report: report.clone(),
                at: now,
            };
            set.insert_new(IDEMPOTENCY, claim.key.to_vec(), Store::json(&answer)?);
        }
        if report.accepted > 0 {
            let first = report
                .transactions
                .iter()
                .find(|o| o.status == Status::Accepted)
                .map(|o| o.key.clone())
                .unwrap_or_default();
            Event::new(Action::SaleIngested)
                .by(actor.clone())
                .target("sale", first)
                .reason(format!(
                    "{} new and {} already received of {} from {}",
                    report.accepted,
                    report.duplicates,
                    report.received,
                    source_kind(source)
                ))
                .add_to(&mut set);
        }
        self.store.commit(set).await?;
        Ok(report)
    }

    /// The catalog SKU of a line's item id (or GTIN), cached for the batch.
    fn find_sku(
        &self,
        line: &crate::domain::sale::SaleLine,
        items: &mut HashMap<String, Option<String>>,
    ) -> Result<Option<String>, InventoryError> {
        if let Some(found) = items.get(&line.sku) {
            return Ok(found.clone());
        }
        let found = match self.catalog.find_item(&line.sku)? {
            Some(sku) => Some(sku),
            None => match &line.gtin {
                Some(gtin) => self.catalog.find_item(gtin)?,
                None => None,
            },
        };
        items.insert(line.sku.clone(), found.clone());
        Ok(found)
    }

    /// Takes the locks of every stock level and customer the batch may write, in stripe
    /// order (so two batches never wait on each other in a circle).
    async fn lock_stripes(
        &self,
        transactions: &[SaleTransaction],
        lookups: &mut Lookups,
    ) -> Result<Vec<tokio::sync::OwnedMutexGuard<()>>, InventoryError> {
        let mut wanted = std::collections::BTreeSet::new();
        for t in transactions {
            if matches!(t.kind, TransactionKind::Sale | TransactionKind::Return) {
                for line in t.lines.iter().filter(|l| !l.voided) {
                    let sku = self
                        .find_sku(line, &mut lookups.items)?
                        .unwrap_or_else(|| line.sku.clone());
                    wanted.insert(stripe(&[sku.as_bytes(), t.key.store.as_bytes()]));
                }
            }
            let key = format!("{:?}", identities(&t.customer));
            if let Some(Some(customer)) = lookups.linked.get(&key) {
                wanted.insert(stripe(&[&customer.to_bytes()]));
            }
        }
        let mut held = Vec::with_capacity(wanted.len());
        for n in wanted {
            if let Some(lock) = self.stripes.get(n) {
                held.push(Arc::clone(lock).lock_owned().await);
            }
        }
        Ok(held)
    }

    /// Stages the stock movements of a transaction's lines (none for voids and control
    /// records); returns the item ids the catalog does not know.
    fn stage_lines(
        &self,
        set: &mut ChangeSet,
        pending: &mut Pending,
        items: &mut HashMap<String, Option<String>>,
        t: &SaleTransaction,
        key: &str,
        now: Timestamp,
    ) -> Result<Vec<String>, InventoryError> {
        let mut unknown_items = Vec::new();
        let moves = matches!(t.kind, TransactionKind::Sale | TransactionKind::Return);
        for line in t.lines.iter().filter(|l| !l.voided) {
            let sku = self.find_sku(line, items)?;
            let unknown = sku.is_none();
            if unknown && !unknown_items.contains(&line.sku) {
                unknown_items.push(line.sku.clone());
            }
            if !moves || line.quantity_milli == 0 {
                continue;
            }
            let (kind, change) = if line.returned {
                (MovementKind::Return, line.quantity_milli)
            } else {
                (MovementKind::Sale, -line.quantity_milli)
            };
            self.ledger.stage(
                set,
                pending,
                sku.as_deref().unwrap_or(&line.sku),
                &t.key.store,
                kind,
                change,
                key,
                unknown,
                now,
            )?;
        }
        Ok(unknown_items)
    }

    /// The customer of a transaction, found or created from its identities; `None` without
    /// identities, or when they cannot be used (an email that is not one).
    async fn link(
        &self,
        t: &SaleTransaction,
        actor: &Actor,
        source: &str,
        linked: &mut HashMap<String, Option<Id>>,
    ) -> Result<Option<Id>, InventoryError> {
        if t.customer.is_empty() || matches!(t.kind, TransactionKind::Control) {
            return Ok(None);
        }
        let identities = identities(&t.customer);
        if identities.is_empty() {
            return Ok(None);
        }
        let cache_key = format!("{identities:?}");
        if let Some(found) = linked.get(&cache_key) {
            return Ok(*found);
        }
        let mut tries = 0;
        let found = loop {
            let result = self
                .customers
                .resolve(&identities, None, actor.clone(), source_kind(source))
                .await;
            tries += 1;
            match result {
                // A concurrent change of the same profile: read it again.
                Err(CrmError::Store(StoreError::WriteFailed(_))) if tries < RESOLVE_TRIES => {}
                other => break linked_customer(other)?,
            }
        };
        linked.insert(cache_key, found);
        Ok(found)
    }

    /// Finds or creates the customers of the batch's new transactions before it is written,
    /// several at once so their commits share flushes.
    async fn prelink(
        &self,
        transactions: &[SaleTransaction],
        actor: &Actor,
        source: &str,
        linked: &mut HashMap<String, Option<Id>>,
    ) -> Result<(), InventoryError> {
        let mut wanted: Vec<(String, Vec<Identity>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for t in transactions {
            if t.customer.is_empty() || t.kind == TransactionKind::Control {
                continue;
            }
            let identities = identities(&t.customer);
            let key = format!("{identities:?}");
            if identities.is_empty()
                || linked.contains_key(&key)
                || !seen.insert(key.clone())
                || self
                    .store
                    .contains(SALES, t.key.to_key_string().as_bytes())?
            {
                continue;
            }
            wanted.push((key, identities));
        }
        let mut queue = wanted.into_iter();
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < PARALLEL_RESOLVES {
                let Some((key, identities)) = queue.next() else {
                    break;
                };
                let (customers, actor) = (self.customers.clone(), actor.clone());
                let source = source_kind(source).to_owned();
                running.spawn(async move {
                    let result = customers.resolve(&identities, None, actor, &source).await;
                    (key, result)
                });
            }
            let Some(joined) = running.join_next().await else {
                return Ok(());
            };
            let (key, result) = joined.map_err(|err| {
                StoreError::WriteFailed(format!("customer resolution stopped: {err}"))
            })?;
            match result {
                // Two resolutions changing one profile at once can refuse each other: leave it
                // to the one-at-a-time resolution of the batch itself.
                Err(CrmError::Store(StoreError::WriteFailed(_))) => {}
                other => {
                    linked.insert(key, linked_customer(other)?);
                }
            }
        }
    }

    /// Stages a customer's new sale figures, their sale index entries and timeline items.
    // Limitation: a merge of two customers does not combine their figures (each keeps its
    // own summary and sale index), and the subject access export does not include them.
    fn stage_summary(
        &self,
        set: &mut ChangeSet,
        customer: Id,
        sales: &[&SaleTransaction],
        actor: &Actor,
    ) -> Result<(), InventoryError> {
        let mut summary = self.summary(customer)?;
        for t in sales {
            summary.add(t);
            summary.linked += 1;
            let mut key = customer.to_bytes().to_vec();
            key.extend_from_slice(&summary.linked.to_be_bytes());
            // Numbered with `Expect::Absent`: two batches for one customer cannot both write
            // figures computed from the same old summary.
            set.put_with(
                CUSTOMER_SALES,
                key,
                t.key.to_key_string().into_bytes(),
                Sealing::DataKey,
                Expect::Absent,
            );
            let (kind, what) = match t.kind {
                TransactionKind::Return => ("return", "Return"),
                TransactionKind::Void => ("void", "Voided sale"),
                _ => ("purchase", "Purchase"),
            };
            let items: i64 = t
                .lines
                .iter()
                .filter(|l| !l.voided)
                .map(|l| l.quantity_milli)
                .sum();
            let text = format!(
                "{what} of {} {} at store {} ({} items), register {} sequence {}",
                money(t.net_amount(), &t.currency),
                t.currency,
                t.key.store,
                crate::domain::stock::format_milli(items),
                t.key.register,
                t.key.sequence
            );
            self.customers
                .stage_timeline(set, customer, kind, &text, actor, &[])
                .map_err(|err| match err {
                    CrmError::Store(err) => InventoryError::Store(err),
                    other => InventoryError::invalid("customer", other.to_string()),
                })?;
        }
        set.put_with(
            SALE_SUMMARY,
            customer.to_bytes().to_vec(),
            Store::json(&summary)?,
            Sealing::Subject(customer),
            Expect::Anything,
        );
        Ok(())
    }
}

/// The customer a resolution gives; `None` when the identities cannot be used.
fn linked_customer(
    result: Result<crate::crm::Resolution, CrmError>,
) -> Result<Option<Id>, InventoryError> {
    match result {
        Ok(resolution) => Ok(Some(resolution.customer)),
        Err(CrmError::Invalid(_) | CrmError::Erased(_)) => Ok(None),
        Err(CrmError::Store(err)) => Err(err.into()),
        Err(err) => Err(InventoryError::invalid(
            "customer",
            format!("the customer could not be linked: {err}"),
        )),
    }
}

/// The source's kind for logs (`poslog`, `api`), never a file name.
fn source_kind(source: &str) -> &str {
    source.split(':').next().unwrap_or(source)
}

/// Minor units as a decimal of the currency.
#[must_use]
pub fn money(value: i64, currency: &str) -> String {
    let digits = crate::domain::sale::minor_digits(currency);
    if digits == 0 {
        return value.to_string();
    }
    let scale = 10i64.pow(digits);
    let sign = if value < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:0width$}",
        value.abs() / scale,
        value.abs() % scale,
        width = digits as usize
    )
}

/// Identities the CRM can use; values that are not valid identities are left out.
fn identities(refs: &crate::domain::sale::CustomerRefs) -> Vec<Identity> {
    let mut out = Vec::new();
    if let Some(v) = &refs.loyalty_id
        && let Ok(v) = customer::normalise_code("loyalty_id", v)
    {
        out.push(Identity::Loyalty(v));
    }
    if let Some(v) = &refs.email
        && let Ok(v) = customer::normalise_email("email", v)
    {
        out.push(Identity::Email(v));
    }
    if let Some(v) = &refs.external_id
        && let Ok(id) = customer::normalise_code("external_id", v)
    {
        out.push(Identity::External(ExternalId {
            source: "pos".into(),
            id,
        }));
    }
    out
}

/// Removes repeats of a transaction inside one batch; the same key with different content is
/// an error.
fn dedupe_batch(
    transactions: Vec<SaleTransaction>,
) -> Result<Vec<SaleTransaction>, InventoryError> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<SaleTransaction> = Vec::with_capacity(transactions.len());
    for (i, t) in transactions.into_iter().enumerate() {
        let key = t.key.to_key_string();
        match seen.get(&key) {
            Some(&at) if out.get(at) == Some(&t) => {}
            Some(_) => {
                return Err(InventoryError::invalid(
                    format!("transactions[{i}].key"),
                    format!("{key} appears twice in the batch with different content"),
                ));
            }
            None => {
                seen.insert(key, out.len());
                out.push(t);
            }
        }
    }
    Ok(out)
}

fn push(errors: &mut Vec<FieldError>, field: String, message: impl Into<String>) {
    errors.push(FieldError {
        field,
        message: message.into(),
    });
}

fn check_id(errors: &mut Vec<FieldError>, field: String, value: &str) {
    if value.trim().is_empty()
        || value.chars().count() > MAX_ID
        || value.chars().any(|c| c.is_control() || c == '/')
    {
        push(
            errors,
            field,
            format!("{value:?} is not an id (1 to {MAX_ID} characters, no '/')"),
        );
    }
}

/// Checks a transaction and masks every card number in it; problems are reported with their
/// path (`transactions[2].lines[0].quantity_milli`). `today` is the server's date (UTC): a
/// business day more than a day after it is a register's clock gone wrong (a day of margin
/// covers every time zone); days in the past are fine (back-filled history).
fn clean(at: &str, t: &mut SaleTransaction, today: Date, errors: &mut Vec<FieldError>) {
    if today
        .tomorrow()
        .is_ok_and(|tomorrow| t.key.business_day > tomorrow)
    {
        push(
            errors,
            format!("{at}.key.business_day"),
            format!(
                "{} is after this server's date ({today}); check the register's clock",
                t.key.business_day
            ),
        );
    }
    if let (Some(started), Some(ended)) = (t.started_at, t.ended_at)
        && ended < started
    {
        push(
            errors,
            format!("{at}.ended_at"),
            format!("ends ({ended}) before it starts ({started}); check the register's clock"),
        );
    }
    match ledger::check_location(&format!("{at}.key.store"), &t.key.store) {
        Ok(code) => t.key.store = code,
        Err(InventoryError::Invalid(e)) => errors.extend(e),
        Err(_) => {}
    }
    check_id(errors, format!("{at}.key.register"), &t.key.register);
    t.currency = t.currency.trim().to_ascii_uppercase();
    if t.currency.len() != 3 || !t.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        push(
            errors,
            format!("{at}.currency"),
            format!("{:?} is not an ISO 4217 code", t.currency),
        );
    }
    if t.lines.len() > MAX_LINES {
        push(
            errors,
            format!("{at}.lines"),
            format!("{} lines; at most {MAX_LINES}", t.lines.len()),
        );
    }
    mask(&mut t.operator);
    for (_, value) in &mut t.extensions {
        *value = mask_card_numbers(value).into_owned();
    }
    mask(&mut t.customer.external_id);
    for (i, line) in t.lines.iter_mut().enumerate() {
        let field = |name: &str| format!("{at}.lines[{i}].{name}");
        check_id(errors, field("sku"), &line.sku);
        line.description = mask_card_numbers(&line.description).into_owned();
        for code in &mut line.discount_codes {
            *code = mask_card_numbers(code).into_owned();
        }
        if line.quantity_milli < 0 {
            push(
                errors,
                field("quantity_milli"),
                format!(
                    "{} is negative; send a positive quantity on a return line instead",
                    line.quantity_milli
                ),
            );
        }
        for (name, value) in [
            ("unit_price", line.unit_price),
            ("extended", line.extended),
            ("discount", line.discount),
        ] {
            if value < 0 {
                push(errors, field(name), format!("{value} is negative"));
            }
        }
    }
    for tender in &mut t.tenders {
        mask(&mut tender.card_masked);
    }
    if let (Some(total), false) = (t.total, t.tenders.is_empty()) {
        let paid: i64 = t.tenders.iter().map(|x| x.amount - x.change).sum();
        if paid.abs() != total.abs() {
            push(
                errors,
                format!("{at}.total"),
                format!("the tenders ({paid}) do not add up to the total ({total})"),
            );
        }
    }
}

fn mask(value: &mut Option<String>) {
    if let Some(v) = value {
        *v = mask_card_numbers(v).into_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sale::{CustomerRefs, SaleLine, Tender};

    /// The server's date in these tests; the day after is still a register's business day.
    fn today() -> Date {
        "2026-12-04".parse().unwrap()
    }

    fn sale() -> SaleTransaction {
        SaleTransaction {
            key: TransactionKey {
                store: "s001".into(),
                register: "3".into(),
                business_day: "2026-11-27".parse().unwrap(),
                sequence: 1,
            },
            kind: TransactionKind::Sale,
            currency: "eur".into(),
            operator: None,
            started_at: None,
            ended_at: None,
            lines: vec![SaleLine {
                line_no: 1,
                sku: "SKU-1".into(),
                gtin: None,
                description: "paid with 4111 1111 1111 1111".into(),
                quantity_milli: 2000,
                unit_price: 500,
                extended: 1000,
                discount: 0,
                discount_codes: Vec::new(),
                returned: false,
                voided: false,
            }],
            tenders: vec![Tender {
                kind: "CreditDebit".into(),
                amount: 1000,
                change: 0,
                card_masked: Some("4111111111111111".into()),
            }],
            total: Some(1000),
            customer: CustomerRefs::default(),
            extensions: Vec::new(),
        }
    }

    #[test]
    fn cleaning_masks_cards_and_names_each_bad_field() {
        let mut t = sale();
        let mut errors = Vec::new();
        clean("transactions[0]", &mut t, today(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(t.key.store, "S001");
        assert_eq!(t.currency, "EUR");
        assert_eq!(t.lines[0].description, "paid with 411111******1111");
        assert_eq!(
            t.tenders[0].card_masked.as_deref(),
            Some("411111******1111")
        );

        // Tomorrow is still a business day somewhere east of here.
        let mut east = sale();
        east.key.business_day = "2026-12-05".parse().unwrap();
        let mut errors = Vec::new();
        clean("transactions[0]", &mut east, today(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");

        let mut bad = sale();
        bad.lines[0].quantity_milli = -1000;
        bad.total = Some(999);
        bad.key.register = "a/b".into();
        bad.key.business_day = "2026-12-06".parse().unwrap();
        bad.started_at = Some("2026-11-27T10:00:00".parse().unwrap());
        bad.ended_at = Some("2026-11-27T09:59:00".parse().unwrap());
        let mut errors = Vec::new();
        clean("transactions[1]", &mut bad, today(), &mut errors);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "transactions[1].key.business_day",
                "transactions[1].ended_at",
                "transactions[1].key.register",
                "transactions[1].lines[0].quantity_milli",
                "transactions[1].total"
            ]
        );
    }

    #[test]
    fn a_batch_repeating_a_key_keeps_one_or_is_refused() {
        let one = dedupe_batch(vec![sale(), sale()]).unwrap();
        assert_eq!(one.len(), 1);
        let mut other = sale();
        other.lines[0].quantity_milli = 1000;
        let err = dedupe_batch(vec![sale(), other]).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }

    #[test]
    fn the_summary_counts_purchases_and_deducts_returns() {
        let mut summary = SaleSummary::default();
        let mut t = sale();
        t.currency = "EUR".into();
        summary.add(&t);
        t.kind = TransactionKind::Return;
        t.lines[0].returned = true;
        t.lines[0].extended = 500;
        summary.add(&t);
        assert_eq!(summary.purchases, 1);
        assert_eq!(summary.returns, 1);
        assert_eq!(summary.spend["EUR"].amount, 500);
        assert_eq!(summary.average_basket(), vec![("EUR".to_owned(), 500)]);
        assert_eq!(money(-1234, "EUR"), "-12.34");
        assert_eq!(money(1234, "JPY"), "1234");
    }
}
