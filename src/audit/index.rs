//! An in-memory index of the trail, so the compliance page can filter a million entries in a
//! few milliseconds.
//!
//! - One compact [`Row`] per entry (40 bytes): sequence number, time in microseconds, and
//!   small interned numbers for the actor, action, target type, store and outcome. The target
//!   id is kept as a keyed 64-bit hash instead of an interned string, because targets are as
//!   many as the customers and records they name; a hash match is confirmed on the entry
//!   itself before it is shown.
//! - The store is the only source of truth. The index is built in the background at start
//!   ([`keep_up`]), then caught up on every query by reading the entries from the last indexed
//!   sequence number + 1 to the head: entries are appended from anywhere through change sets,
//!   so no hook could see them all.
//! - A history that was replaced (a restore, a rewrite) is noticed when the first new entry
//!   does not link to the last indexed one, or the head is behind or differs; the index then
//!   starts again. Entries dropped by retention are dropped from the index too.
//! - Until the index has caught up once, queries are answered by reading entries newest first,
//!   at most [`SCAN_BUDGET`] per query, and the answer says so.
//!
//! Entries carry no personal values (ids and logins only), so neither does the index.

use crate::lock;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::{info, warn};

use super::entry::Entry;
use super::event::{Action, ActorKind, Outcome};
use super::{AUDIT, Audit};
use crate::store::StoreError;

/// Entries read from the store per step of the background build.
pub const BUILD_CHUNK: usize = 20_000;
/// Most entries one query reads directly while the index is still being built.
pub const SCAN_BUDGET: usize = 20_000;
/// Matches counted for display; beyond this the count says "more than".
pub const COUNT_CAP: u64 = 10_000;
/// How often the background task looks for new entries once the index is built.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// One indexed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    seq: u64,
    /// Microseconds since the Unix epoch.
    time: i64,
    /// Keyed hash of the target id; 0 for none.
    target_id: u64,
    actor: u32,
    /// Interned store id; 0 for none.
    store: u32,
    action: u16,
    /// Interned target type; 0 for none.
    target_type: u16,
    outcome: u8,
}

/// Strings numbered in order of first appearance; number 0 is reserved for "none".
#[derive(Debug, Default)]
struct Interner {
    numbers: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    fn number(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.numbers.get(name) {
            return n;
        }
        self.names.push(name.to_owned());
        let n = self.names.len() as u32;
        self.numbers.insert(name.to_owned(), n);
        n
    }

    fn find(&self, name: &str) -> Option<u32> {
        self.numbers.get(name).copied()
    }

    /// Interned names, sorted.
    fn sorted(&self) -> Vec<String> {
        let mut names = self.names.clone();
        names.sort_unstable();
        names
    }
}

/// Who acted, as interned: one per distinct (kind, id, login).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ActorKey {
    kind: ActorKind,
    id: String,
    name: String,
}

#[derive(Debug, Default)]
struct Table {
    rows: Vec<Row>,
    actors: Vec<ActorKey>,
    /// Actor numbers by actor id (several when one id was seen with several logins or kinds),
    /// so a known actor is found without building a key.
    actor_numbers: HashMap<String, Vec<u32>>,
    actions: Interner,
    target_types: Interner,
    stores: Interner,
    /// Sequence number and hash of the newest indexed entry (0 and "" when empty).
    last_seq: u64,
    last_hash: String,
    /// Whether times never go back from one row to the next, so time bounds can be found by
    /// binary search.
    ordered_times: bool,
}

impl Table {
    fn empty() -> Self {
        Self {
            ordered_times: true,
            ..Self::default()
        }
    }

    fn push(&mut self, entry: &Entry, hasher: &RandomState) {
        let actor = self.actor_number(entry);
        let time = entry
            .timestamp()
            .map_or(i64::MIN, Timestamp::as_microsecond);
        if self.rows.last().is_some_and(|last| last.time > time) {
            self.ordered_times = false;
        }
        self.rows.push(Row {
            seq: entry.seq,
            time,
            target_id: entry
                .target_id
                .as_deref()
                .map_or(0, |id| target_hash(hasher, id)),
            actor,
            store: entry.store.as_deref().map_or(0, |s| self.stores.number(s)),
            action: self.actions.number(&entry.action) as u16,
            target_type: entry
                .target_type
                .as_deref()
                .map_or(0, |t| self.target_types.number(t) as u16),
            outcome: outcome_number(entry.outcome),
        });
        self.last_seq = entry.seq;
        self.last_hash.clone_from(&entry.hash);
    }
}

impl Table {
    fn actor_number(&mut self, entry: &Entry) -> u32 {
        let same = |a: &ActorKey| a.kind == entry.actor_kind && a.name == entry.actor_name;
        if let Some(numbers) = self.actor_numbers.get(entry.actor_id.as_str())
            && let Some(&n) = numbers
                .iter()
                .find(|&&n| self.actors.get(n as usize).is_some_and(same))
        {
            return n;
        }
        let n = self.actors.len() as u32;
        self.actors.push(ActorKey {
            kind: entry.actor_kind,
            id: entry.actor_id.clone(),
            name: entry.actor_name.clone(),
        });
        self.actor_numbers
            .entry(entry.actor_id.clone())
            .or_default()
            .push(n);
        n
    }
}

fn outcome_number(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Success => 0,
        Outcome::Failure => 1,
        Outcome::Denied => 2,
    }
}

/// Never 0, which means "no target".
fn target_hash(hasher: &RandomState, id: &str) -> u64 {
    hasher.hash_one(id).max(1)
}

/// What to look for; every part that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Entries at or after this time.
    pub from: Option<Timestamp>,
    /// Entries strictly before this time.
    pub until: Option<Timestamp>,
    /// A login (any case) or an actor id (exact).
    pub actor: Option<String>,
    pub action: Option<Action>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// A store id.
    pub store: Option<String>,
    pub outcome: Option<Outcome>,
}

impl Filter {
    /// Whether `entry` passes the filter; the index's answers are confirmed with this.
    #[must_use]
    pub fn matches(&self, entry: &Entry) -> bool {
        let time = entry.timestamp();
        self.from.is_none_or(|from| time.is_some_and(|t| t >= from))
            && self
                .until
                .is_none_or(|until| time.is_some_and(|t| t < until))
            && self.actor.as_deref().is_none_or(|actor| {
                entry.actor_id == actor || entry.actor_name.eq_ignore_ascii_case(actor)
            })
            && self
                .action
                .is_none_or(|action| entry.action == action.code())
            && same(self.target_type.as_deref(), entry.target_type.as_deref())
            && same(self.target_id.as_deref(), entry.target_id.as_deref())
            && same(self.store.as_deref(), entry.store.as_deref())
            && self.outcome.is_none_or(|outcome| entry.outcome == outcome)
    }

    /// Names of the parts that are set, for the audit entry of a search (never the values).
    #[must_use]
    pub fn field_names(&self) -> Vec<&'static str> {
        [
            ("from", self.from.is_some()),
            ("to", self.until.is_some()),
            ("actor", self.actor.is_some()),
            ("action", self.action.is_some()),
            ("target_type", self.target_type.is_some()),
            ("target_id", self.target_id.is_some()),
            ("store", self.store.is_some()),
            ("outcome", self.outcome.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// Whether nothing is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.field_names().is_empty()
    }
}

fn same(wanted: Option<&str>, actual: Option<&str>) -> bool {
    wanted.is_none_or(|wanted| actual == Some(wanted))
}

/// Which page of the matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The newest matches.
    Newest,
    /// Matches older than this sequence number.
    Before(u64),
    /// Matches newer than this sequence number (the page before, when paging back).
    After(u64),
}

/// How many entries matched, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub value: u64,
    /// True when counting stopped at [`COUNT_CAP`].
    pub capped: bool,
}

/// Where a page's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The index, caught up to the head.
    Index,
    /// The index is still being built; entries `lowest..=highest` were read directly.
    Scan { lowest: u64, highest: u64 },
}

/// One page of matches, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// Cursor of the next (older) page, when there may be one.
    pub older: Option<u64>,
    /// Cursor of the previous (newer) page, when there may be one.
    pub newer: Option<u64>,
    /// Matches of the whole filter; `None` while the index is being built.
    pub count: Option<Count>,
    pub source: Source,
    /// Sequence number of the newest entry of the trail when the page was made.
    pub head: u64,
}

/// What the index knows, for the filter form.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    pub target_types: Vec<String>,
    pub stores: Vec<String>,
}

/// Progress of one catch-up step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Everything up to the head is indexed.
    CaughtUp,
    /// More entries are waiting.
    More,
}

/// The index of one trail; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditIndex {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    audit: Audit,
    table: RwLock<Table>,
    /// One reader of the store at a time, so rows are appended in order.
    catching_up: Mutex<()>,
    /// Set once the index has caught up with the head; cleared when the history is replaced.
    ready: AtomicBool,
    /// Key of the target-id hash, fresh for each process.
    hasher: RandomState,
}

impl AuditIndex {
    /// An empty index of `audit`; build it with [`keep_up`] or [`AuditIndex::build`].
    #[must_use]
    pub fn new(audit: Audit) -> Self {
        Self {
            inner: Arc::new(Inner {
                audit,
                table: RwLock::new(Table::empty()),
                catching_up: Mutex::new(()),
                ready: AtomicBool::new(false),
                hasher: RandomState::new(),
            }),
        }
    }

    /// Whether the index has caught up with the trail at least once (and answers queries).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Number of indexed entries.
    #[must_use]
    pub fn len(&self) -> usize {
        read(&self.inner.table).rows.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Builds the index to the head now (blocking).
    pub fn build(&self) -> Result<(), StoreError> {
        while self.catch_up_step(BUILD_CHUNK)? == Step::More {}
        Ok(())
    }

    /// Indexes at most `max` new entries (blocking).
    pub fn catch_up_step(&self, max: usize) -> Result<Step, StoreError> {
        let _one_reader = lock(&self.inner.catching_up);
        let audit = &self.inner.audit;
        let head = audit.head()?;
        let (last_seq, last_hash, first_seq) = {
            let table = read(&self.inner.table);
            (
                table.last_seq,
                table.last_hash.clone(),
                table.rows.first().map(|r| r.seq),
            )
        };
        let head_hash = data_encoding::HEXLOWER.encode(&head.hash);
        if head.seq < last_seq || (head.seq == last_seq && last_seq > 0 && head_hash != last_hash) {
            self.start_again("the trail's head is not the one indexed");
            return Ok(Step::More);
        }
        if let Some(first) = first_seq {
            self.drop_pruned(first)?;
        }
        if head.seq == last_seq {
            self.inner.ready.store(true, Ordering::Release);
            return Ok(Step::CaughtUp);
        }

        let to = head.seq.min(last_seq.saturating_add(max as u64));
        let entries = read_entries(audit, last_seq + 1, to)?;
        if let Some(first) = entries.first()
            && last_seq > 0
            && (first.seq != last_seq + 1 || first.prev != last_hash)
        {
            self.start_again("the entry after the last indexed one does not link to it");
            return Ok(Step::More);
        }

        let mut table = write(&self.inner.table);
        for entry in &entries {
            table.push(entry, &self.inner.hasher);
        }
        let caught_up = table.last_seq >= head.seq;
        drop(table);
        if caught_up {
            self.inner.ready.store(true, Ordering::Release);
            Ok(Step::CaughtUp)
        } else {
            Ok(Step::More)
        }
    }

    /// Forgets everything; the background task indexes the trail again from its start.
    fn start_again(&self, why: &str) {
        warn!(reason = why, "audit index rebuilt");
        self.inner.ready.store(false, Ordering::Release);
        *write(&self.inner.table) = Table::empty();
    }

    /// Drops rows of entries retention has removed from the store.
    fn drop_pruned(&self, first_indexed: u64) -> Result<(), StoreError> {
        let first_stored = super::export::first_seq(&self.inner.audit)?.unwrap_or(u64::MAX);
        if first_stored <= first_indexed {
            return Ok(());
        }
        let mut table = write(&self.inner.table);
        let keep_from = table.rows.partition_point(|r| r.seq < first_stored);
        table.rows.drain(..keep_from);
        Ok(())
    }

    /// Catches up with every entry appended since the last query (blocking).
    fn catch_up(&self) -> Result<(), StoreError> {
        while self.is_ready() && self.catch_up_step(usize::MAX)? == Step::More {}
        Ok(())
    }

    /// Target types and stores seen in the trail, for the filter form's suggestions.
    #[must_use]
    pub fn vocabulary(&self) -> Vocabulary {
        let table = read(&self.inner.table);
        Vocabulary {
            target_types: table.target_types.sorted(),
            stores: table.stores.sorted(),
        }
    }

    /// One page of at most `limit` entries matching `filter`, newest first (blocking).
    pub fn search(
        &self,
        filter: &Filter,
        cursor: Cursor,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = limit.max(1);
        self.catch_up()?;
        if !self.is_ready() {
            return self.scan(filter, cursor, limit);
        }
        let (seqs, older, newer, count, head) = {
            let table = read(&self.inner.table);
            let Some(compiled) = Compiled::new(filter, &table, &self.inner.hasher) else {
                return Ok(Page {
                    entries: Vec::new(),
                    older: None,
                    newer: None,
                    count: Some(Count {
                        value: 0,
                        capped: false,
                    }),
                    source: Source::Index,
                    head: table.last_seq,
                });
            };
            let (low, high) = compiled.bounds(&table);
            let rows = table.rows.get(low..high).unwrap_or_default();
            let count = compiled.count(rows);
            let mut page = compiled.page(rows, cursor, limit);
            if page.seqs.is_empty() && matches!(cursor, Cursor::After(_)) {
                // Nothing newer any more (paging back past the newest): show the newest.
                page = compiled.page(rows, Cursor::Newest, limit);
            }
            (page.seqs, page.older, page.newer, count, table.last_seq)
        };

        // Read outside the lock. A hash collision on the target id, or an entry dropped by
        // retention since, is left out here.
        let mut entries = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(entry) = self.inner.audit.entry(seq)?
                && filter.matches(&entry)
            {
                entries.push(entry);
            }
        }
        Ok(Page {
            entries,
            older,
            newer,
            count: Some(count),
            source: Source::Index,
            head,
        })
    }

    /// The answer while the index is being built: entries read directly, at most
    /// [`SCAN_BUDGET`] of them.
    fn scan(&self, filter: &Filter, cursor: Cursor, limit: usize) -> Result<Page, StoreError> {
        let audit = &self.inner.audit;
        let head = audit.head()?.seq;
        let forward = matches!(cursor, Cursor::After(_));
        let (from, to) = match cursor {
            Cursor::Newest => (1, head),
            Cursor::Before(seq) => (1, seq.saturating_sub(1).min(head)),
            Cursor::After(seq) => (seq.saturating_add(1), head),
        };
        let mut found: Vec<Entry> = Vec::new();
        let mut examined = 0usize;
        let (mut lowest, mut highest) = (0, 0);
        let mut budget_spent = false;
        if from <= to {
            for item in audit.entries(from, to, !forward) {
                if examined == SCAN_BUDGET {
                    budget_spent = true;
                    break;
                }
                let entry = item?;
                examined += 1;
                if lowest == 0 || entry.seq < lowest {
                    lowest = entry.seq;
                }
                highest = highest.max(entry.seq);
                // Times never go back, so the scan can stop at the edge of the time range.
                let time = entry.timestamp();
                let past_edge = if forward {
                    filter.until.is_some_and(|u| time.is_some_and(|t| t >= u))
                } else {
                    filter.from.is_some_and(|f| time.is_some_and(|t| t < f))
                };
                if past_edge {
                    break;
                }
                if filter.matches(&entry) {
                    found.push(entry);
                    if found.len() > limit {
                        break;
                    }
                }
            }
        }
        let full = found.len() > limit;
        found.truncate(limit);
        let (older, newer) = if forward {
            let newer = if full {
                found.last().map(|e| e.seq)
            } else {
                budget_spent.then_some(highest)
            };
            let older = Some(found.first().map_or(from, |e| e.seq));
            found.reverse();
            (older, newer)
        } else {
            let older = if full {
                found.last().map(|e| e.seq)
            } else {
                budget_spent.then_some(lowest)
            };
            let newer = (cursor != Cursor::Newest).then(|| found.first().map_or(to, |e| e.seq));
            (older, newer)
        };
        Ok(Page {
            entries: found,
            older,
            newer,
            count: None,
            source: Source::Scan { lowest, highest },
            head,
        })
    }
}

/// A filter turned into row numbers; `None` from [`Compiled::new`] when a part names
/// something the trail has never contained, so nothing can match.
#[derive(Debug)]
struct Compiled {
    from: Option<i64>,
    until: Option<i64>,
    /// Indexed by actor number: whether that actor matches.
    actors: Option<Vec<bool>>,
    action: Option<u16>,
    target_type: Option<u16>,
    target_id: Option<u64>,
    store: Option<u32>,
    outcome: Option<u8>,
    ordered_times: bool,
}

impl Compiled {
    fn new(filter: &Filter, table: &Table, hasher: &RandomState) -> Option<Self> {
        let actors = match filter.actor.as_deref() {
            None => None,
            Some(wanted) => {
                let set: Vec<bool> = table
                    .actors
                    .iter()
                    .map(|a| a.id == wanted || a.name.eq_ignore_ascii_case(wanted))
                    .collect();
                if !set.contains(&true) {
                    return None;
                }
                Some(set)
            }
        };
        let known = |interner: &Interner, wanted: Option<&str>| match wanted {
            None => Some(None),
            Some(name) => interner.find(name).map(Some),
        };
        Some(Self {
            from: filter.from.map(Timestamp::as_microsecond),
            until: filter.until.map(Timestamp::as_microsecond),
            actors,
            action: known(&table.actions, filter.action.map(Action::code))?.map(|n| n as u16),
            target_type: known(&table.target_types, filter.target_type.as_deref())?
                .map(|n| n as u16),
            target_id: filter
                .target_id
                .as_deref()
                .map(|id| target_hash(hasher, id)),
            store: known(&table.stores, filter.store.as_deref())?,
            outcome: filter.outcome.map(outcome_number),
            ordered_times: table.ordered_times,
        })
    }

    /// The slice of rows the time range can match.
    fn bounds(&self, table: &Table) -> (usize, usize) {
        let rows = &table.rows;
        if !self.ordered_times {
            return (0, rows.len());
        }
        let low = self
            .from
            .map_or(0, |f| rows.partition_point(|r| r.time < f));
        let high = self
            .until
            .map_or(rows.len(), |u| rows.partition_point(|r| r.time < u));
        (low, high.max(low))
    }

    fn matches(&self, row: &Row) -> bool {
        self.from.is_none_or(|f| row.time >= f)
            && self.until.is_none_or(|u| row.time < u)
            && self.action.is_none_or(|a| row.action == a)
            && self.outcome.is_none_or(|o| row.outcome == o)
            && self.target_type.is_none_or(|t| row.target_type == t)
            && self.target_id.is_none_or(|t| row.target_id == t)
            && self.store.is_none_or(|s| row.store == s)
            && self
                .actors
                .as_ref()
                .is_none_or(|set| set.get(row.actor as usize).copied().unwrap_or(false))
    }

    fn count(&self, rows: &[Row]) -> Count {
        let matched = rows
            .iter()
            .rev()
            .filter(|r| self.matches(r))
            .take(COUNT_CAP as usize + 1)
            .count() as u64;
        Count {
            value: matched.min(COUNT_CAP),
            capped: matched > COUNT_CAP,
        }
    }

    /// Sequence numbers of the page (newest first) and the cursors around it.
    fn page(&self, rows: &[Row], cursor: Cursor, limit: usize) -> PageSeqs {
        let matching = |slice: &[Row]| slice.iter().rev().any(|r| self.matches(r));
        if let Cursor::After(seq) = cursor {
            let start = rows.partition_point(|r| r.seq <= seq);
            let (before, after) = rows.split_at(start);
            let mut seqs: Vec<u64> = after
                .iter()
                .filter(|r| self.matches(r))
                .take(limit + 1)
                .map(|r| r.seq)
                .collect();
            let newer = (seqs.len() > limit).then(|| {
                seqs.truncate(limit);
                seqs.last().copied().unwrap_or_default()
            });
            seqs.reverse();
            let older = seqs.last().copied().filter(|_| matching(before));
            return PageSeqs { seqs, older, newer };
        }
        let end = match cursor {
            Cursor::Before(seq) => rows.partition_point(|r| r.seq < seq),
            Cursor::Newest | Cursor::After(_) => rows.len(),
        };
        let (before, after) = rows.split_at(end);
        let mut seqs: Vec<u64> = before
            .iter()
            .rev()
            .filter(|r| self.matches(r))
            .take(limit + 1)
            .map(|r| r.seq)
            .collect();
        let older = (seqs.len() > limit).then(|| {
            seqs.truncate(limit);
            seqs.last().copied().unwrap_or_default()
        });
        let newer = seqs.first().copied().filter(|_| matching(after));
        PageSeqs { seqs, older, newer }
    }
}

/// The sequence numbers of one page and the cursors around it.
#[derive(Debug)]
struct PageSeqs {
    seqs: Vec<u64>,
    older: Option<u64>,
    newer: Option<u64>,
}

/// Entries `from..=to`, checked, in order.
fn read_entries(audit: &Audit, from: u64, to: u64) -> Result<Vec<Entry>, StoreError> {
    let mut entries = Vec::with_capacity(usize::try_from(to + 1 - from).unwrap_or(0));
    audit.read_checked(from, to, |checked| {
        let entry = checked.entry.map_err(|reason| StoreError::Integrity {
            table: AUDIT.name().into(),
            key: checked.seq.to_string(),
            reason,
        })?;
        if entry.seq != checked.seq {
            return Err(StoreError::Integrity {
                table: AUDIT.name().into(),
                key: checked.seq.to_string(),
                reason: format!("entry says sequence {}", entry.seq),
            });
        }
        entries.push(entry);
        Ok(())
    })?;
    Ok(entries)
}

/// Builds the index in the background, then keeps it close to the head (queries catch up the
/// rest). Each step runs on a blocking thread; aborting the task stops it between steps. It
/// never returns; the result type is the one of the application's other background tasks.
pub async fn keep_up(index: AuditIndex) -> std::io::Result<()> {
    let started = Instant::now();
    let mut announced = false;
    loop {
        let step_index = index.clone();
        let step = tokio::task::spawn_blocking(move || step_index.catch_up_step(BUILD_CHUNK)).await;
        match step {
            Ok(Ok(Step::More)) => continue,
            Ok(Ok(Step::CaughtUp)) => {
                if !announced {
                    info!(
                        entries = index.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "audit index built"
                    );
                    announced = true;
                }
            }
            Ok(Err(err)) => warn!(error = %err, "could not index the audit trail"),
            Err(err) => warn!(error = %err, "audit index task failed"),
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
