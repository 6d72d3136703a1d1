//! Privacy requests: the subject access export, erasure, legal holds and retention.
//!
//! Erasure destroys the customer's key (`Store::erase_subject`): the profile, its timeline
//! and the merge before-images sealed under it can never be opened again, in this store or
//! in any copy of the data folder restored later (the store re-applies its erasure ledger at
//! open). Erasing a profile erases the profiles merged into it, whose keys hold the same
//! person's data. Their identity keys (blind indexes), duplicate candidates, merge records and
//! search entries are removed in the same change set as the audit entry, before the keys are
//! destroyed; what is left is anonymous (ids, times and counts, no personal value).
//!
//! A customer under legal hold is neither erased by retention nor by a request: the hold
//! has to be lifted first, which is itself audited.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::audit::{Action, Actor, Event};
use crate::domain::Id;
use crate::domain::customer::Customer;
use crate::store::{ChangeSet, Expect, StoreError};

use super::merge::{MERGE_IMAGES, MERGES, MergeRecord};
use super::{CUSTOMER_KEYS, CrmError, Customers, DUPLICATES, DuplicateCandidate, TimelineItem};

/// Most customers one bulk retention erasure takes.
pub const MAX_BULK: usize = 1000;

/// Everything held about one customer, as the subject access export gives it.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectExport {
    pub format: &'static str,
    pub exported_at: Timestamp,
    pub customer: Customer,
    pub timeline: Vec<TimelineItem>,
    /// Profiles merged into this one, with their own timelines.
    pub merged_profiles: Vec<MergedProfile>,
    pub merges: Vec<MergeRecord>,
    pub duplicate_candidates: Vec<DuplicateCandidate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MergedProfile {
    pub customer: Customer,
    pub timeline: Vec<TimelineItem>,
}

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Erasure {
    pub customer: Id,
    /// Every profile whose key was destroyed: the customer and those merged into it.
    pub profiles: Vec<Id>,
    pub identities: usize,
}

/// A customer inactive past the retention period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRow {
    pub id: Id,
    pub name: String,
    pub last_activity_at: Timestamp,
    pub legal_hold: bool,
}

/// What a bulk retention erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub erased: Vec<Id>,
    /// Refused: under legal hold.
    pub held: Vec<Id>,
    /// Left alone: active again, already erased, merged away or unknown.
    pub skipped: Vec<Id>,
}

/// Services of running servers, by store, for the control socket.
static OFFERED: Mutex<Vec<([u8; 16], Customers)>> = Mutex::new(Vec::new());

/// Identifies the open store: a blind index depends on the store's keyring.
fn store_mark(customers: &Customers) -> [u8; 16] {
    customers
        .store()
        .blind_index("clientele-instance", "control")
}

/// While held, privacy requests that arrive on the control socket for this service's store
/// use this service (and so its search index).
#[derive(Debug)]
pub struct Offered([u8; 16]);

impl Drop for Offered {
    fn drop(&mut self) {
        let mut offered = OFFERED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = offered.iter().position(|(mark, _)| *mark == self.0) {
            offered.remove(at);
        }
    }
}

/// Offers the running server's customer service to the control socket.
#[must_use]
pub fn offer_to_control(customers: &Customers) -> Offered {
    let mark = store_mark(customers);
    let mut offered = OFFERED.lock().unwrap_or_else(PoisonError::into_inner);
    offered.retain(|(m, _)| *m != mark);
    offered.push((mark, customers.clone()));
    Offered(mark)
}

/// The customer service of the server that holds `store`, or a new one on it (the command
/// line with the server stopped).
#[must_use]
pub fn service_for(store: &crate::store::Store, default_country: &str) -> Customers {
    let fresh = Customers::new(
        store.clone(),
        std::sync::Arc::new(crate::clock::SystemClock),
        std::sync::Arc::new(crate::clock::SystemRandom::new()),
        default_country,
    );
    let mark = store_mark(&fresh);
    OFFERED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(m, _)| *m == mark)
        .map_or(fresh, |(_, c)| c.clone())
}

impl Customers {
    /// Everything held about a customer, as JSON-ready data; the export is recorded first
    /// (fail closed).
    pub async fn export_subject(&self, id: Id, actor: Actor) -> Result<SubjectExport, CrmError> {
        let customer = self.get(id)?.ok_or(CrmError::NotFound(id))?;
        let timeline = self.timeline(id)?;
        let mut merged_profiles = Vec::new();
        for other in self.merged_into_chain(&customer)? {
            if other.id == id {
                continue;
            }
            let timeline = self.timeline(other.id)?;
            merged_profiles.push(MergedProfile {
                customer: other,
                timeline,
            });
        }
        let mut merges = Vec::new();
        for profile in std::iter::once(id).chain(merged_profiles.iter().map(|p| p.customer.id)) {
            for record in self.merges_of(profile)? {
                if !merges.iter().any(|m: &MergeRecord| m.id == record.id) {
                    merges.push(record);
                }
            }
        }
        let duplicate_candidates = self
            .store()
            .scan_json::<DuplicateCandidate>(DUPLICATES)?
            .into_iter()
            .map(|(_, c)| c)
            .filter(|c| c.a == id || c.b == id)
            .collect();
        self.record(
            Event::new(Action::PrivacyAccessExported)
                .by(actor)
                .target("customer", id)
                .fields(["profile", "consents", "timeline", "merges"])
                .reason(format!(
                    "{} merged profiles included",
                    merged_profiles.len()
                )),
        )
        .await?;
        Ok(SubjectExport {
            format: "clientele-subject-access-1",
            exported_at: self.now(),
            customer,
            timeline,
            merged_profiles,
            merges,
            duplicate_candidates,
        })
    }

    /// Erases a customer on request ([`Action::PrivacyErased`]).
    pub async fn erase(&self, id: Id, actor: Actor) -> Result<Erasure, CrmError> {
        self.erase_as(id, actor, Action::PrivacyErased, "erasure request")
            .await
    }

    /// Sets or lifts a customer's legal hold.
    pub async fn set_legal_hold(
        &self,
        id: Id,
        hold: bool,
        actor: Actor,
    ) -> Result<Customer, CrmError> {
        let mut customer = self.live(id)?;
        if customer.legal_hold == hold {
            return Ok(customer);
        }
        customer.legal_hold = hold;
        customer.updated_at = self.now();
        let mut set = ChangeSet::new();
        self.stage_profile(&mut set, &customer, Expect::Present)?;
        let summary = if hold {
            "Legal hold set: protected from erasure"
        } else {
            "Legal hold lifted"
        };
        self.stage_timeline(
            &mut set,
            id,
            "legal_hold",
            summary,
            &actor,
            &["legal_hold".to_owned()],
        )?;
        Event::new(Action::LegalHoldChanged)
            .by(actor)
            .target("customer", id)
            .fields(["legal_hold"])
            .reason(if hold { "hold set" } else { "hold lifted" })
            .add_to(&mut set);
        self.store().commit(set).await?;
        Ok(customer)
    }

    /// Live customers whose last activity is older than `retention`, oldest first.
    pub fn retention_due(&self, retention: Duration) -> Result<Vec<RetentionRow>, CrmError> {
        let cutoff = self.retention_cutoff(retention)?;
        let mut rows: Vec<RetentionRow> = self
            .live_profiles()?
            .into_iter()
            .filter(|c| c.last_activity_at < cutoff)
            .map(|c| RetentionRow {
                id: c.id,
                name: c.display_name(),
                last_activity_at: c.last_activity_at,
                legal_hold: c.legal_hold,
            })
            .collect();
        rows.sort_by_key(|r| r.last_activity_at);
        Ok(rows)
    }

    /// Erases the given customers for retention ([`Action::RetentionErased`], one entry each),
    /// after checking again that each is still inactive and not under legal hold.
    pub async fn erase_for_retention(
        &self,
        ids: &[Id],
        retention: Duration,
        actor: Actor,
    ) -> Result<RetentionOutcome, CrmError> {
        if ids.len() > MAX_BULK {
            return Err(CrmError::invalid(
                "customers",
                &format!("at most {MAX_BULK} customers at once"),
            ));
        }
        let cutoff = self.retention_cutoff(retention)?;
        let mut outcome = RetentionOutcome::default();
        let mut seen = HashSet::new();
        for &id in ids {
            if !seen.insert(id) {
                continue;
            }
            let customer = match self.live(id) {
                Ok(c) => c,
                Err(CrmError::NotFound(_) | CrmError::Erased(_) | CrmError::Merged(..)) => {
                    outcome.skipped.push(id);
                    continue;
                }
                Err(err) => return Err(err),
            };
            if customer.legal_hold {
                outcome.held.push(id);
                continue;
            }
            if customer.last_activity_at >= cutoff {
                outcome.skipped.push(id);
                continue;
            }
            self.erase_as(id, actor.clone(), Action::RetentionErased, "retention")
                .await?;
            outcome.erased.push(id);
        }
        Ok(outcome)
    }

    fn retention_cutoff(&self, retention: Duration) -> Result<Timestamp, CrmError> {
        let span = jiff::SignedDuration::try_from(retention)
            .map_err(|_| CrmError::invalid("retention", "is too long"))?;
        self.now()
            .checked_sub(span)
            .map_err(|_| CrmError::invalid("retention", "is too long"))
    }

    /// The profile and every profile merged into it, directly or through others.
    fn merged_into_chain(&self, root: &Customer) -> Result<Vec<Customer>, CrmError> {
        let mut out = vec![root.clone()];
        let mut seen: HashSet<Id> = HashSet::from([root.id]);
        let mut next = 0;
        while next < out.len() {
            let from = out[next].merged_from.clone();
            next += 1;
            for id in from {
                if !seen.insert(id) {
                    continue;
                }
                match self.get(id) {
                    Ok(Some(c)) if c.merged_into.is_some() => out.push(c),
                    // Undone merges leave the id listed nowhere; erased ones cannot be read.
                    Ok(_) | Err(CrmError::Erased(_)) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(out)
    }

    async fn erase_as(
        &self,
        id: Id,
        actor: Actor,
        action: Action,
        why: &'static str,
    ) -> Result<Erasure, CrmError> {
        let customer = self.get(id)?.ok_or(CrmError::NotFound(id))?;
        if let Some(survivor) = customer.merged_into {
            return Err(CrmError::Merged(id, survivor));
        }
        if customer.legal_hold {
            return Err(CrmError::invalid(
                "legal_hold",
                "the customer is under legal hold; lift the hold before erasing",
            ));
        }
        let profiles = self.merged_into_chain(&customer)?;
        let ids: HashSet<Id> = profiles.iter().map(|c| c.id).collect();

        let mut set = ChangeSet::new();
        let mut identities = 0;
        for profile in &profiles {
            for identity in profile.identities() {
                if self
                    .find(&identity)?
                    .is_some_and(|owner| ids.contains(&owner))
                {
                    set.delete(CUSTOMER_KEYS, self.identity_key(&identity));
                    identities += 1;
                }
            }
        }
        for (key, candidate) in self.store().scan_json::<DuplicateCandidate>(DUPLICATES)? {
            if ids.contains(&candidate.a) || ids.contains(&candidate.b) {
                set.delete(DUPLICATES, key);
            }
        }
        for (key, record) in self.store().scan_json::<MergeRecord>(MERGES)? {
            if ids.contains(&record.survivor) || ids.contains(&record.merged) {
                set.delete(MERGES, key);
                for side in [b's', b'm'] {
                    let mut image = record.id.to_bytes().to_vec();
                    image.push(side);
                    set.delete(MERGE_IMAGES, image);
                }
            }
        }
        let others: Vec<String> = profiles
            .iter()
            .filter(|c| c.id != id)
            .map(|c| c.id.to_string())
            .collect();
        let reason = if others.is_empty() {
            why.to_owned()
        } else {
            format!(
                "{why}; merged profiles erased with it: {}",
                others.join(", ")
            )
        };
        Event::new(action)
            .by(actor)
            .target("customer", id)
            .fields(["profile", "identities", "timeline", "consents"])
            .reason(reason)
            .add_to(&mut set);
        self.store().commit(set).await?;

        {
            let mut index = self.index_mut();
            for profile in &profiles {
                index.remove(profile.id);
            }
        }
        let store = self.store().clone();
        let erased: Vec<Id> = profiles.iter().map(|c| c.id).collect();
        let keys = erased.clone();
        tokio::task::spawn_blocking(move || {
            keys.into_iter()
                .try_for_each(|subject| store.erase_subject(subject))
        })
        .await
        .map_err(|e| StoreError::WriteFailed(format!("erasure stopped: {e}")))??;
        tracing::info!(customer = %id, profiles = erased.len(), "customer erased");
        Ok(Erasure {
            customer: id,
            profiles: erased,
            identities,
        })
    }
}
