//! Merging two profiles of one person, and undoing a merge.
//!
//! The survivor keeps every identity (the blind-index keys of the merged profile are rewired
//! to it in the same change set), every consent decision and every timeline item. Timeline
//! items of the merged profile are copied under the survivor's key (the customer page reads
//! one timeline, in time order, and erasing the survivor erases the copies with it); the
//! originals stay under the merged profile's key. The merged profile keeps its record with
//! `merged_into` set, so links to it redirect.
//!
//! Store layout:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `customer_merges` | merge id | [`MergeRecord`]: ids and times only, data key |
//! | `customer_merge_images` | merge id + `s` | survivor before the merge, survivor's key |
//! | `customer_merge_images` | merge id + `m` | merged profile before, merged profile's key |
//!
//! Each before-image is sealed under its own customer's key, so erasing either person makes
//! their image unreadable. An undo restores both images exactly and rewires the identities
//! back; it is refused when the survivor changed after the merge, since restoring its image
//! would throw those changes away.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::audit::{Action, Actor, Event};
use crate::domain::Id;
use crate::domain::customer::Customer;
use crate::store::{ChangeSet, Expect, Sealing, Store, StoreError, Table};

use super::{
    CUSTOMER_KEYS, CrmError, Customers, DUPLICATES, DuplicateCandidate, DuplicateStatus, TIMELINE,
    pair_key,
};

pub const MERGES: Table = Table::new("customer_merges");
pub const MERGE_IMAGES: Table = Table::new("customer_merge_images");

/// What a merge did, kept to undo it. Holds ids and times, never personal values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeRecord {
    pub id: Id,
    pub survivor: Id,
    pub merged: Id,
    pub at: Timestamp,
    /// Login, token or job that merged.
    pub by: String,
    /// Timeline items of the merged profile copied under the survivor.
    pub copied_items: Vec<Id>,
    /// The survivor's `updated_at` right after the merge: an undo needs it unchanged.
    pub survivor_version: Timestamp,
    pub undone_at: Option<Timestamp>,
    pub undone_by: Option<String>,
}

fn image_key(merge: Id, side: u8) -> Vec<u8> {
    let mut key = merge.to_bytes().to_vec();
    key.push(side);
    key
}

fn actor_name(actor: &Actor) -> String {
    if actor.name.is_empty() {
        actor.kind.as_str().to_owned()
    } else {
        actor.name.clone()
    }
}

/// The survivor after taking in `merged`: own values first, the other's added.
fn combine(survivor: &Customer, merged: &Customer, now: Timestamp) -> Customer {
    fn union<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Vec<T> {
        let mut out = a.to_vec();
        for v in b {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        out
    }
    let mut c = survivor.clone();
    if c.given_name.is_empty() {
        c.given_name.clone_from(&merged.given_name);
    }
    if c.family_name.is_empty() {
        c.family_name.clone_from(&merged.family_name);
    }
    c.emails = union(&c.emails, &merged.emails);
    c.phones = union(&c.phones, &merged.phones);
    c.addresses = union(&c.addresses, &merged.addresses);
    c.birthday = c.birthday.or(merged.birthday);
    c.loyalty_ids = union(&c.loyalty_ids, &merged.loyalty_ids);
    c.external_ids = union(&c.external_ids, &merged.external_ids);
    c.tags = union(&c.tags, &merged.tags);
    c.preferred_channel = c.preferred_channel.or(merged.preferred_channel);
    c.preferred_store = c.preferred_store.or(merged.preferred_store);
    c.consents = union(&c.consents, &merged.consents);
    c.consents.sort_by_key(|consent| consent.at);
    c.legal_hold = c.legal_hold || merged.legal_hold;
    c.merged_from.push(merged.id);
    c.created_at = c.created_at.min(merged.created_at);
    c.last_activity_at = c.last_activity_at.max(merged.last_activity_at);
    c.updated_at = now;
    c
}

impl Customers {
    /// Merges `merged` into `survivor`: one change set moves identities, consents and history
    /// to the survivor, marks the merged profile, keeps what an undo needs, and records the
    /// audit entry.
    #[allow(clippy::too_many_lines)] // the steps of one change set, read top to bottom
    pub async fn merge(
        &self,
        survivor: Id,
        merged: Id,
        actor: Actor,
    ) -> Result<MergeRecord, CrmError> {
        if survivor == merged {
            return Err(CrmError::invalid(
                "merged",
                "a profile cannot be merged into itself",
            ));
        }
        let _guards = self.lock_profiles(survivor, merged).await;
        let keep = self.live(survivor)?;
        let gone = self.live(merged)?;
        let now = self.now();
        let merge_id = self.new_id()?;
        let by = actor_name(&actor);

        let mut set = ChangeSet::new();
        let mut copied_items = Vec::new();
        for item in self.timeline(merged)? {
            let mut key = survivor.to_bytes().to_vec();
            key.extend_from_slice(&item.id.to_bytes());
            set.put_with(
                TIMELINE,
                key,
                Store::json(&item)?,
                Sealing::Subject(survivor),
                Expect::Absent,
            );
            copied_items.push(item.id);
        }
        for identity in gone.identities() {
            set.put_with(
                CUSTOMER_KEYS,
                self.identity_key(&identity),
                survivor.to_bytes().to_vec(),
                Sealing::DataKey,
                Expect::Anything,
            );
        }

        let mut after = combine(&keep, &gone, now);
        let mut marked = gone.clone();
        marked.merged_into = Some(survivor);
        marked.updated_at = now;
        self.stage_profile(&mut set, &marked, Expect::Present)?;
        self.stage_timeline(
            &mut set,
            merged,
            "merged",
            &format!("Merged into {survivor}"),
            &actor,
            &[],
        )?;
        let summary = format!(
            "Merged {merged} ({}) into this profile; {} history items moved",
            gone.display_name(),
            copied_items.len()
        );
        self.stage_timeline(&mut set, survivor, "merged", &summary, &actor, &[])?;
        after.updated_at = now;
        self.stage_profile(&mut set, &after, Expect::Present)?;

        set.put_with(
            MERGE_IMAGES,
            image_key(merge_id, b's'),
            Store::json(&keep)?,
            Sealing::Subject(survivor),
            Expect::Absent,
        );
        set.put_with(
            MERGE_IMAGES,
            image_key(merge_id, b'm'),
            Store::json(&gone)?,
            Sealing::Subject(merged),
            Expect::Absent,
        );
        let record = MergeRecord {
            id: merge_id,
            survivor,
            merged,
            at: now,
            by,
            copied_items,
            survivor_version: after.updated_at,
            undone_at: None,
            undone_by: None,
        };
        set.put_with(
            MERGES,
            merge_id.to_bytes(),
            Store::json(&record)?,
            Sealing::DataKey,
            Expect::Absent,
        );
        self.stage_duplicate_status(&mut set, survivor, merged, DuplicateStatus::Merged)?;
        Event::new(Action::CustomerMerged)
            .by(actor)
            .target("customer", survivor)
            .fields(["merged_from", "identities", "consents", "timeline"])
            .reason(format!("merged {merged} into {survivor}; merge {merge_id}"))
            .add_to(&mut set);
        self.store().commit(set).await?;

        let mut index = self.index_mut();
        index.remove(merged);
        index.upsert(&after);
        Ok(record)
    }

    /// Undoes a merge: both profiles and their identities as they were before it. Refused when
    /// the survivor changed since (its later changes would be lost) or the merge was undone.
    pub async fn undo_merge(&self, merge: Id, actor: Actor) -> Result<(), CrmError> {
        let mut record = self
            .merge_record(merge)?
            .ok_or_else(|| CrmError::invalid("merge", "no such merge"))?;
        if record.undone_at.is_some() {
            return Err(CrmError::invalid("merge", "this merge was already undone"));
        }
        let _guards = self.lock_profiles(record.survivor, record.merged).await;
        let current = self.live(record.survivor)?;
        if current.updated_at != record.survivor_version {
            return Err(CrmError::invalid(
                "merge",
                "the surviving profile changed after the merge; undoing it would lose those \
                 changes, so edit the profiles by hand instead",
            ));
        }
        let survivor_before: Customer = self
            .image(merge, b's')?
            .ok_or_else(|| CrmError::invalid("merge", "the merge's saved profiles are gone"))?;
        let merged_before: Customer = self
            .image(merge, b'm')?
            .ok_or_else(|| CrmError::invalid("merge", "the merge's saved profiles are gone"))?;
        let now = self.now();

        let mut set = ChangeSet::new();
        self.stage_profile(&mut set, &survivor_before, Expect::Present)?;
        self.stage_profile(&mut set, &merged_before, Expect::Present)?;
        for identity in merged_before.identities() {
            set.put_with(
                CUSTOMER_KEYS,
                self.identity_key(&identity),
                merged_before.id.to_bytes().to_vec(),
                Sealing::DataKey,
                Expect::Present,
            );
        }
        for item in &record.copied_items {
            let mut key = record.survivor.to_bytes().to_vec();
            key.extend_from_slice(&item.to_bytes());
            set.delete(TIMELINE, key);
        }
        set.delete(MERGE_IMAGES, image_key(merge, b's'));
        set.delete(MERGE_IMAGES, image_key(merge, b'm'));
        self.stage_timeline(
            &mut set,
            record.survivor,
            "unmerged",
            &format!("Merge with {} undone", record.merged),
            &actor,
            &[],
        )?;
        self.stage_timeline(
            &mut set,
            record.merged,
            "unmerged",
            &format!("Merge into {} undone", record.survivor),
            &actor,
            &[],
        )?;
        record.undone_at = Some(now);
        record.undone_by = Some(actor_name(&actor));
        set.put_with(
            MERGES,
            merge.to_bytes(),
            Store::json(&record)?,
            Sealing::DataKey,
            Expect::Present,
        );
        self.stage_duplicate_status(
            &mut set,
            record.survivor,
            record.merged,
            DuplicateStatus::Open,
        )?;
        Event::new(Action::CustomerUnmerged)
            .by(actor)
            .target("customer", record.survivor)
            .fields(["merged_from", "identities", "consents", "timeline"])
            .reason(format!(
                "undid merge {merge} of {} into {}",
                record.merged, record.survivor
            ))
            .add_to(&mut set);
        self.store().commit(set).await?;

        let mut index = self.index_mut();
        index.upsert(&survivor_before);
        index.upsert(&merged_before);
        Ok(())
    }

    /// One merge record.
    pub fn merge_record(&self, merge: Id) -> Result<Option<MergeRecord>, CrmError> {
        Ok(self
            .store()
            .get_json::<MergeRecord>(MERGES, &merge.to_bytes())?)
    }

    /// Merge records that involve `customer`, newest first.
    pub fn merges_of(&self, customer: Id) -> Result<Vec<MergeRecord>, CrmError> {
        let mut out: Vec<MergeRecord> = self
            .store()
            .scan_json::<MergeRecord>(MERGES)?
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r.survivor == customer || r.merged == customer)
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.at));
        Ok(out)
    }

    /// Every merge record, newest first.
    pub fn merges(&self) -> Result<Vec<MergeRecord>, CrmError> {
        let mut out: Vec<MergeRecord> = self
            .store()
            .scan_json::<MergeRecord>(MERGES)?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.at));
        Ok(out)
    }

    fn image(&self, merge: Id, side: u8) -> Result<Option<Customer>, CrmError> {
        match self
            .store()
            .get_json::<Customer>(MERGE_IMAGES, &image_key(merge, side))
        {
            Ok(found) => Ok(found),
            Err(StoreError::Erased) => Err(CrmError::invalid(
                "merge",
                "one of the merged customers was erased; the merge cannot be undone",
            )),
            Err(err) => Err(err.into()),
        }
    }

    /// Sets the status of the duplicate candidate for the pair, when one was raised.
    pub(super) fn stage_duplicate_status(
        &self,
        set: &mut ChangeSet,
        a: Id,
        b: Id,
        status: DuplicateStatus,
    ) -> Result<(), CrmError> {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let key = pair_key(lo, hi);
        if let Some(mut candidate) = self
            .store()
            .get_json::<DuplicateCandidate>(DUPLICATES, &key)?
        {
            candidate.status = status;
            set.put(DUPLICATES, key, Store::json(&candidate)?);
        }
        Ok(())
    }
}
