//! The one write path: change sets, and the committer that applies them.
//!
//! Every write in Clientele is a [`ChangeSet`] given to [`super::Store::commit`]. One committer
//! thread takes the sets waiting in its queue as a group, checks each set's expectations
//! against the store and the sets before it, seals the values (the log entries the group
//! appends go into one record per log, see [`super::log`]), appends any new subject keys
//! to the keystore (synced), applies the whole group as one atomic sled batch, flushes once,
//! and only then acknowledges every set of the group (group commit). A set whose expectation
//! fails is refused whole and the others go on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use tokio::sync::oneshot;
use tracing::{error, info, warn};
use zeroize::Zeroizing;

use crate::domain::Id;

use super::keyring::{self, KEYRING};
use super::log::{StagedEntry, log_value};
use super::seal::{self, KeyRef};
use super::{Shared, StoreError, Table};

/// Most sets taken into one group.
const MAX_GROUP: usize = 1024;

/// A set of changes that land together or not at all.
#[derive(Debug, Default)]
pub struct ChangeSet {
    pub(super) changes: Vec<Change>,
}

/// One change of a [`ChangeSet`].
#[derive(Debug)]
pub(super) enum Change {
    Put {
        table: Table,
        key: Vec<u8>,
        value: Zeroizing<Vec<u8>>,
        sealing: Sealing,
        expect: Expect,
    },
    Delete {
        table: Table,
        key: Vec<u8>,
        expect: Expect,
    },
    /// Re-seals a record under the current term when it still holds `raw` (key rotation).
    Reseal { store_key: Vec<u8>, raw: Vec<u8> },
    /// Moves the rewrite cursor, when `term` is still current (a rotation since resets it).
    RewriteCursor { term: u32, position: Vec<u8> },
    /// Ends the rewrite, when `term` is still current.
    FinishRewrite { term: u32 },
    /// Appends an entry to a hash-chained log table, at the next sequence number.
    Append { log: Table, entry: Box<dyn Chained> },
}

/// An entry of a hash-chained log (the audit trail), finished by the committer once its place
/// in the chain is known, so concurrent writers can never fork or reorder the chain.
pub trait Chained: Send + std::fmt::Debug {
    /// Encodes the entry at `link`; returns its bytes and its own hash (the next link's
    /// `prev`). An error refuses the whole change set: the log fails closed.
    fn finish(&self, link: &Link) -> Result<(Vec<u8>, [u8; 32]), String>;
}

/// Where an appended entry sits in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// 1 for the first entry of the log.
    pub seq: u64,
    /// Hash of the entry before (all zeroes for the first).
    pub prev: [u8; 32],
    /// Commit time, never earlier than the entry before.
    pub time: jiff::Timestamp,
}

/// The newest entry of a log: what the next entry links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHead {
    /// Sequence number of the newest entry; 0 for an empty log.
    pub seq: u64,
    pub hash: [u8; 32],
    pub time: jiff::Timestamp,
}

impl LogHead {
    pub(super) const EMPTY: Self = Self {
        seq: 0,
        hash: [0; 32],
        time: jiff::Timestamp::UNIX_EPOCH,
    };
}

impl Change {
    /// Whether checking this change needs to know which keys earlier sets staged.
    fn needs_presence(&self) -> bool {
        match self {
            Self::Put { expect, .. } | Self::Delete { expect, .. } => *expect != Expect::Anything,
            Self::Reseal { .. } => true,
            Self::RewriteCursor { .. } | Self::FinishRewrite { .. } | Self::Append { .. } => false,
        }
    }
}

/// Which key seals a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    /// The current data-key term.
    DataKey,
    /// The subject's own key, created on first use; destroying it erases the record.
    Subject(Id),
}

/// What the record must be before the change, for the set to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Anything,
    /// The key must not exist (create once, even under concurrent writers).
    Absent,
    /// The key must exist.
    Present,
}

impl ChangeSet {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `value` at `key`, sealed under the current data key.
    pub fn put(
        &mut self,
        table: Table,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.push_put(
            table,
            key.into(),
            value.into(),
            Sealing::DataKey,
            Expect::Anything,
        )
    }

    /// Writes `value` at `key` only when nothing is there yet.
    pub fn insert_new(
        &mut self,
        table: Table,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.push_put(
            table,
            key.into(),
            value.into(),
            Sealing::DataKey,
            Expect::Absent,
        )
    }

    /// Writes `value` at `key` with explicit sealing and expectation.
    pub fn put_with(
        &mut self,
        table: Table,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        sealing: Sealing,
        expect: Expect,
    ) -> &mut Self {
        self.push_put(table, key.into(), value.into(), sealing, expect)
    }

    /// Removes `key`.
    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) -> &mut Self {
        self.changes.push(Change::Delete {
            table,
            key: key.into(),
            expect: Expect::Anything,
        });
        self
    }

    /// Appends `entry` to the hash-chained `log`; it lands with the rest of the set or not at
    /// all.
    pub fn append(&mut self, log: Table, entry: Box<dyn Chained>) -> &mut Self {
        self.changes.push(Change::Append { log, entry });
        self
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub(super) fn push(&mut self, change: Change) {
        self.changes.push(change);
    }

    fn push_put(
        &mut self,
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
        sealing: Sealing,
        expect: Expect,
    ) -> &mut Self {
        self.changes.push(Change::Put {
            table,
            key,
            value: Zeroizing::new(value),
            sealing,
            expect,
        });
        self
    }
}

/// Work for the committer.
#[derive(Debug)]
pub(super) enum Job {
    Commit {
        set: ChangeSet,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Adds a data-key term and makes it current.
    Rotate {
        reply: oneshot::Sender<Result<u32, StoreError>>,
    },
}

/// Runs until every sender is gone.
pub(super) fn run(shared: &Arc<Shared>, queue: &Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        if !shared.group_window.is_zero() {
            std::thread::sleep(shared.group_window);
        }
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }

        let mut commits = Vec::with_capacity(group.len());
        for job in group {
            match job {
                Job::Commit { set, reply } => commits.push((set, reply)),
                Job::Rotate { reply } => {
                    apply_group(shared, std::mem::take(&mut commits));
                    let _ = reply.send(rotate(shared));
                }
            }
        }
        apply_group(shared, commits);

        // Limitation: the rewrite after a rotation also counts against the limit, so a store
        // holding more records than the limit (2^30 by default) would rotate without end.
        if shared.keyring.used() >= shared.max_encryptions_per_term {
            match rotate(shared) {
                Ok(term) => info!(
                    term,
                    "data-key term rotated automatically (encryption limit reached)"
                ),
                Err(err) => error!(error = %err, "automatic key rotation failed"),
            }
        }
    }
}

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// Stages, applies and flushes one group, then answers each set.
fn apply_group(shared: &Shared, commits: Vec<(ChangeSet, Reply)>) {
    if commits.is_empty() {
        return;
    }
    let mut batch: Staged = Vec::new();
    let mut entries: Vec<StagedEntry> = Vec::new();
    let mut overlay: HashMap<Vec<u8>, bool> = HashMap::new();
    let mut new_subjects: Vec<(Id, Zeroizing<[u8; 32]>)> = Vec::new();
    let mut outcomes: Vec<(Result<(), StoreError>, Reply)> = Vec::with_capacity(commits.len());
    let mut heads = Heads::new();
    // Presence of staged keys only matters when some set of the group has an expectation or
    // a re-seal to check; bulk writes without either skip the bookkeeping.
    let track = commits
        .iter()
        .any(|(set, _)| set.changes.iter().any(Change::needs_presence));

    for (set, reply) in commits {
        let outcome = stage(
            shared,
            set,
            &mut overlay,
            &mut new_subjects,
            &mut heads,
            track,
        )
        .map(|(ops, appended)| {
            batch.extend(ops);
            entries.extend(appended);
        });
        outcomes.push((outcome, reply));
    }

    let written = if batch.is_empty() && entries.is_empty() {
        Ok(())
    } else {
        // The group's log entries, sealed together: one record per log instead of one each.
        super::log::pack(shared, entries).and_then(|records| {
            batch.extend(records);
            write_batch(shared, batch, new_subjects)
        })
    };
    if written.is_ok() && !heads.is_empty() {
        shared.log_heads().extend(heads);
    }
    if let Err(err) = &written {
        // The reservation staged with this group may not have landed: write a new one next time.
        shared.keyring.forget_reservation();
        warn!(error = %err, sets = outcomes.len(), "group commit failed; no set of the group was acknowledged");
    }
    for (outcome, reply) in outcomes {
        let result = match (&written, outcome) {
            (Ok(()), outcome) => outcome,
            (Err(err), Ok(())) => Err(err.clone_for_reply()),
            (Err(_), Err(err)) => Err(err),
        };
        let _ = reply.send(result);
    }
}

fn write_batch(
    shared: &Shared,
    batch: Staged,
    new_subjects: Vec<(Id, Zeroizing<[u8; 32]>)>,
) -> Result<(), StoreError> {
    if !new_subjects.is_empty() {
        let mut subjects = shared.subjects_mut();
        subjects.append(
            new_subjects,
            shared.keyring.master(),
            shared.random.as_ref(),
        )?;
    }
    apply_tapped(shared, batch)
}

/// Applies a batch and flushes it, copying its operations into the redo section of a running
/// backup. The redo lock is held across both, so a backup ends either before or after a
/// durable batch.
fn apply_tapped(shared: &Shared, ops: Staged) -> Result<(), StoreError> {
    let mut redo = super::lock(&shared.redo);
    let copy = redo.is_some().then(|| ops.clone());
    let mut batch = sled::Batch::default();
    for (key, value) in ops {
        match value {
            Some(v) => batch.insert(key, v),
            None => batch.remove(key),
        }
    }
    shared.data.apply_batch(batch)?;
    shared.db.flush()?;
    if let (Some(redo), Some(copy)) = (redo.as_mut(), copy) {
        redo.extend(copy);
    }
    Ok(())
}

/// One staged write: store key and sealed value, or `None` for a removal.
pub(super) type StagedOp = (Vec<u8>, Option<Vec<u8>>);
pub(super) type Staged = Vec<StagedOp>;

/// Pending presence of keys staged earlier in the group (true: written, false: deleted).
type Overlay = HashMap<Vec<u8>, bool>;

/// Log heads moved by the group so far, by log table name.
type Heads = HashMap<&'static str, LogHead>;

/// Checks a set's expectations and seals its values, without touching the store; returns the
/// sealed writes and the log entries it appends (sealed with the group's).
fn stage(
    shared: &Shared,
    set: ChangeSet,
    overlay: &mut Overlay,
    new_subjects: &mut Vec<(Id, Zeroizing<[u8; 32]>)>,
    heads: &mut Heads,
    track: bool,
) -> Result<(Staged, Vec<StagedEntry>), StoreError> {
    let mut ops: Staged = Vec::with_capacity(set.changes.len() + 1);
    let mut appended = Vec::new();
    let mut local = Overlay::new();
    // Heads this set moved; they join the group's only if the whole set stages.
    let mut local_heads = Heads::new();
    let seals = set
        .changes
        .iter()
        .filter(|c| {
            matches!(
                c,
                Change::Put {
                    sealing: Sealing::DataKey,
                    ..
                } | Change::Reseal { .. }
                    | Change::Append { .. }
            )
        })
        .count() as u64;
    if let Some(record) = shared.keyring.reserve(seals, shared.random.as_ref())? {
        ops.push((KEYRING.store_key(&record.key), Some(record.sealed)));
    }

    for change in set.changes {
        let staged = match change {
            Change::Put {
                table,
                key,
                value,
                sealing,
                expect,
            } => {
                let store_key = table.store_key(&key);
                check(shared, table, expect, &store_key, &local, overlay)?;
                let sealed = match sealing {
                    Sealing::DataKey => {
                        shared
                            .keyring
                            .seal_current(&store_key, &value, &shared.nonces)?
                    }
                    Sealing::Subject(id) => {
                        let key = subject_key(shared, id, new_subjects)?;
                        seal::seal(
                            &key,
                            KeyRef::Subject(id),
                            &store_key,
                            &value,
                            &shared.nonces,
                        )?
                    }
                };
                Some((store_key, Some(sealed)))
            }
            Change::Delete { table, key, expect } => {
                let store_key = table.store_key(&key);
                check(shared, table, expect, &store_key, &local, overlay)?;
                Some((store_key, None))
            }
            Change::Reseal { store_key, raw } => reseal(shared, store_key, &raw, overlay)?,
            Change::RewriteCursor { term, position } if shared.keyring.current_term() == term => {
                let mut value = term.to_be_bytes().to_vec();
                value.extend_from_slice(&position);
                let record = shared.keyring.seal_master(
                    keyring::REWRITE_KEY,
                    &value,
                    shared.random.as_ref(),
                )?;
                Some((KEYRING.store_key(&record.key), Some(record.sealed)))
            }
            Change::FinishRewrite { term } if shared.keyring.current_term() == term => {
                Some((KEYRING.store_key(keyring::REWRITE_KEY), None))
            }
            // A rotation since the rewriter read its cursor: the rotation's reset stands.
            Change::RewriteCursor { .. } | Change::FinishRewrite { .. } => None,
            Change::Append { log, entry } => {
                appended.push(stage_append(
                    shared,
                    log,
                    entry.as_ref(),
                    heads,
                    &mut local_heads,
                )?);
                None
            }
        };
        if let Some((store_key, value)) = staged {
            if track {
                local.insert(store_key.clone(), value.is_some());
            }
            ops.push((store_key, value));
        }
    }
    overlay.extend(local);
    heads.extend(local_heads);
    Ok((ops, appended))
}

/// Links a log entry to the newest head (this set's, the group's, or the stored one) and
/// encodes it.
fn stage_append(
    shared: &Shared,
    log: Table,
    entry: &dyn Chained,
    heads: &Heads,
    local_heads: &mut Heads,
) -> Result<StagedEntry, StoreError> {
    let head = match local_heads
        .get(log.name())
        .or_else(|| heads.get(log.name()))
    {
        Some(head) => *head,
        None => shared.log_head(log)?,
    };
    let link = Link {
        seq: head.seq + 1,
        prev: head.hash,
        time: shared.clock.now().max(head.time),
    };
    let (bytes, hash) = entry
        .finish(&link)
        .map_err(|reason| StoreError::LogRefused {
            log: log.name(),
            reason,
        })?;
    local_heads.insert(
        log.name(),
        LogHead {
            seq: link.seq,
            hash,
            time: link.time,
        },
    );
    Ok(StagedEntry {
        log,
        seq: link.seq,
        value: Zeroizing::new(log_value(&hash, link.time, &bytes)),
    })
}

/// Refuses a change whose expectation about the record's presence does not hold.
fn check(
    shared: &Shared,
    table: Table,
    expect: Expect,
    store_key: &[u8],
    local: &Overlay,
    overlay: &Overlay,
) -> Result<(), StoreError> {
    if expect == Expect::Anything {
        return Ok(());
    }
    let present = match local.get(store_key).or_else(|| overlay.get(store_key)) {
        Some(present) => *present,
        None => shared.data.contains_key(store_key)?,
    };
    let expectation = match (expect, present) {
        (Expect::Absent, true) => "the record already exists",
        (Expect::Present, false) => "the record does not exist",
        _ => return Ok(()),
    };
    Err(StoreError::Conflict {
        table: table.name().into(),
        expectation,
    })
}

/// Re-seals a record under the current term, unless it changed since the rewriter read it (the
/// newer value is already current).
fn reseal(
    shared: &Shared,
    store_key: Vec<u8>,
    raw: &[u8],
    overlay: &Overlay,
) -> Result<Option<StagedOp>, StoreError> {
    if overlay.contains_key(&store_key) || shared.data.get(&store_key)?.as_deref() != Some(raw) {
        return Ok(None);
    }
    let plain = Zeroizing::new(shared.open_raw(&store_key, raw)?);
    let sealed = shared
        .keyring
        .seal_current(&store_key, &plain, &shared.nonces)?;
    Ok(Some((store_key, Some(sealed))))
}

fn subject_key(
    shared: &Shared,
    id: Id,
    new_subjects: &mut Vec<(Id, Zeroizing<[u8; 32]>)>,
) -> Result<seal::SealKey, StoreError> {
    // The newest first: a customer's records are staged together, right after its key.
    if let Some((_, bytes)) = new_subjects.iter().rev().find(|(new, _)| *new == id) {
        return seal::SealKey::new(bytes);
    }
    {
        let subjects = shared.subjects();
        if subjects.is_erased(id) {
            return Err(StoreError::Erased);
        }
        if subjects.contains(id) {
            return subjects.get(id);
        }
    }
    let bytes = keyring::random_key(shared.random.as_ref())?;
    let key = seal::SealKey::new(&bytes)?;
    new_subjects.push((id, bytes));
    Ok(key)
}

/// Adds a data-key term, durably, then makes it current and wakes the rewriter.
fn rotate(shared: &Shared) -> Result<u32, StoreError> {
    let (term, bytes, records) = shared.keyring.prepare_term(shared.random.as_ref())?;
    let ops: Staged = records
        .into_iter()
        .map(|record| (KEYRING.store_key(&record.key), Some(record.sealed)))
        .collect();
    apply_tapped(shared, ops)?;
    shared.keyring.install_term(term, &bytes)?;
    shared.wake_rewriter();
    info!(
        term,
        "data-key term added; older records are being rewritten in the background"
    );
    Ok(term)
}
