//! Duplicate candidates: from identities two profiles share (raised by identity resolution as
//! events arrive) and from similar names at the same postcode or address (raised by a scan).
//!
//! The fuzzy scan reads every live profile, groups them by normalised postcode and by
//! normalised first address line, and compares the folded names inside each group (edit
//! distance up to two, Damerau: a swap of neighbours is one edit). Comparing on every create
//! and update would put a group look-up and its decryption on the path of every write, so the
//! scan runs as a background job instead: once at start (the search index is built by then)
//! and every [`SCAN_EVERY`], plus the "re-scan now" button of the review page. Pairs already
//! dismissed or merged are not raised again.
//!
//! The scan reads and compares on a blocking thread that cannot be cancelled from outside, so
//! it checks a stop flag as it goes: when the scan's future is dropped (the server stopping
//! aborts the background job; a closed request drops its handler), the thread gives up within
//! a few thousand profiles or one group, and a graceful stop does not wait for a full scan.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::audit::Actor;
use crate::domain::Id;
use crate::domain::customer::{Customer, search_tokens};
use crate::store::{ChangeSet, StoreError};

use super::{CUSTOMERS, CrmError, Customers, DUPLICATES, DuplicateCandidate, DuplicateStatus};

/// How often the background scan runs.
pub const SCAN_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Groups larger than this (a postcode shared by a whole tower block) are compared only
/// within their first this-many members.
// Limitation: members of an oversized group beyond this count are not compared with each
// other; their exact shared identities are still caught by identity resolution.
pub const MAX_GROUP: usize = 2000;

/// What one scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub customers: usize,
    pub pairs: usize,
    pub raised: usize,
    pub elapsed_ms: u64,
}

/// Profiles read (or group members compared) between two looks at the stop flag.
const STOP_CHECK_EVERY: usize = 4096;

/// Raises its flag when dropped: the blocking half of a scan watches it.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The scan was given up because its caller went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stopped;

/// One live profile as the scan sees it.
struct Entry {
    id: Id,
    name: String,
    line1: String,
}

/// A pair found by the scan, lower id first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Similar {
    pub a: Id,
    pub b: Id,
    pub reasons: Vec<String>,
    pub score: u32,
}

/// Folds a name or address line for comparison: lower case, no accents, words joined by one
/// space.
#[must_use]
pub fn fold(text: &str) -> String {
    search_tokens(text).join(" ")
}

fn fold_postcode(postcode: &str) -> String {
    postcode
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_uppercase)
        .collect()
}

/// Optimal-string-alignment distance, giving up (returning `limit + 1`) beyond `limit`.
#[must_use]
pub fn distance(a: &str, b: &str, limit: usize) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > limit {
        return limit + 1;
    }
    let width = b.len() + 1;
    let mut rows = vec![vec![0usize; width]; a.len() + 1];
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        rows[i][0] = i;
        let mut best = rows[i][0];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
            best = best.min(d);
        }
        if best > limit {
            return limit + 1;
        }
    }
    rows[a.len()][b.len()]
}

/// The score of two names in one group, if they are close enough.
fn name_score(a: &str, b: &str) -> Option<u32> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let allowed = if a.chars().count().min(b.chars().count()) <= 5 {
        1
    } else {
        2
    };
    match distance(a, b, allowed) {
        0 => Some(80),
        1 => Some(70),
        d if d <= allowed => Some(60),
        _ => None,
    }
}

/// Compares every pair inside each group.
fn compare_groups(
    groups: HashMap<String, Vec<usize>>,
    entries: &[Entry],
    reason: &str,
    found: &mut HashMap<(Id, Id), Similar>,
    stop: &AtomicBool,
) -> Result<(), Stopped> {
    let mut compared = 0usize;
    for members in groups.into_values() {
        let members = &members[..members.len().min(MAX_GROUP)];
        for (n, &x) in members.iter().enumerate() {
            compared += members.len() - n;
            if compared >= STOP_CHECK_EVERY {
                compared = 0;
                if stop.load(Ordering::Relaxed) {
                    return Err(Stopped);
                }
            }
            for &y in &members[n + 1..] {
                let (ex, ey) = (&entries[x], &entries[y]);
                let Some(mut score) = name_score(&ex.name, &ey.name) else {
                    continue;
                };
                let mut reasons = vec![reason.to_owned()];
                let same_line = !ex.line1.is_empty() && distance(&ex.line1, &ey.line1, 2) <= 2;
                if same_line && reason != "similar name and address" {
                    score += 10;
                    reasons.push("similar address".into());
                }
                let (a, b) = if ex.id < ey.id {
                    (ex.id, ey.id)
                } else {
                    (ey.id, ex.id)
                };
                let better = found.get(&(a, b)).is_none_or(|s| s.score < score);
                if better {
                    found.insert(
                        (a, b),
                        Similar {
                            a,
                            b,
                            reasons,
                            score,
                        },
                    );
                }
            }
        }
    }
    Ok(())
}

/// Finds similar live profiles among `customers`, best first.
#[must_use]
pub fn similar_pairs(customers: &[Customer]) -> Vec<Similar> {
    similar_pairs_until(customers, &AtomicBool::new(false)).unwrap_or_default()
}

/// [`similar_pairs`], giving up when `stop` is raised.
fn similar_pairs_until(customers: &[Customer], stop: &AtomicBool) -> Result<Vec<Similar>, Stopped> {
    let mut entries = Vec::new();
    let mut by_postcode: HashMap<String, Vec<usize>> = HashMap::new();
    let mut by_line: HashMap<String, Vec<usize>> = HashMap::new();
    for c in customers.iter().filter(|c| c.merged_into.is_none()) {
        let n = entries.len();
        if n % STOP_CHECK_EVERY == STOP_CHECK_EVERY - 1 && stop.load(Ordering::Relaxed) {
            return Err(Stopped);
        }
        let first = c.addresses.first();
        let line1 = first.map(|a| fold(&a.line1)).unwrap_or_default();
        for a in &c.addresses {
            let postcode = fold_postcode(&a.postcode);
            if !postcode.is_empty() {
                let group = by_postcode.entry(postcode).or_default();
                if !group.contains(&n) {
                    group.push(n);
                }
            }
            let line = fold(&a.line1);
            if !line.is_empty() {
                let key = format!("{line}|{}", fold(&a.city));
                let group = by_line.entry(key).or_default();
                if !group.contains(&n) {
                    group.push(n);
                }
            }
        }
        entries.push(Entry {
            id: c.id,
            name: fold(&c.display_name()).replace("no name", ""),
            line1,
        });
    }
    let mut found = HashMap::new();
    compare_groups(
        by_postcode,
        &entries,
        "similar name and same postcode",
        &mut found,
        stop,
    )?;
    compare_groups(
        by_line,
        &entries,
        "similar name and address",
        &mut found,
        stop,
    )?;
    let mut out: Vec<Similar> = found.into_values().collect();
    out.sort_by(|x, y| y.score.cmp(&x.score).then(x.a.cmp(&y.a)));
    Ok(out)
}

impl Customers {
    /// Every live (readable, not merged-away) profile; erased ones are skipped.
    pub fn live_profiles(&self) -> Result<Vec<Customer>, CrmError> {
        self.live_profiles_until(&AtomicBool::new(false))
            .map(Option::unwrap_or_default)
    }

    /// [`Self::live_profiles`], or `None` when `stop` was raised before the end.
    fn live_profiles_until(&self, stop: &AtomicBool) -> Result<Option<Vec<Customer>>, CrmError> {
        let mut out = Vec::new();
        for (n, item) in self.store().scan(CUSTOMERS, b"").enumerate() {
            if n % STOP_CHECK_EVERY == STOP_CHECK_EVERY - 1 && stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let bytes = match item {
                Ok((_, bytes)) => bytes,
                Err(StoreError::Erased) => continue,
                Err(err) => return Err(err.into()),
            };
            let customer: Customer = serde_json::from_slice(&bytes)
                .map_err(|err| StoreError::Decode(format!("customers: {err}")))?;
            if customer.merged_into.is_none() {
                out.push(customer);
            }
        }
        Ok(Some(out))
    }

    /// Scans every live profile for similar names at one postcode or address and raises the
    /// pairs found (pairs already reviewed stay as they are).
    pub async fn scan_duplicates(&self) -> Result<ScanReport, CrmError> {
        let started = Instant::now();
        let reader = self.clone();
        let stop = Arc::new(AtomicBool::new(false));
        // Dropped with this future (the job aborted, the request gone): the thread gives up.
        let _stop_on_drop = StopOnDrop(Arc::clone(&stop));
        let scanned = tokio::task::spawn_blocking(move || {
            let Some(all) = reader.live_profiles_until(&stop)? else {
                return Ok(None);
            };
            Ok::<_, CrmError>(
                similar_pairs_until(&all, &stop)
                    .ok()
                    .map(|pairs| (all.len(), pairs)),
            )
        })
        .await
        .map_err(|e| StoreError::WriteFailed(format!("duplicate scan stopped: {e}")))??;
        let Some((count, pairs)) = scanned else {
            return Err(StoreError::WriteFailed("duplicate scan stopped early".into()).into());
        };
        let known: HashSet<(Id, Id)> = self
            .store()
            .scan_json::<DuplicateCandidate>(DUPLICATES)?
            .into_iter()
            .filter(|(_, c)| c.status != DuplicateStatus::Open)
            .map(|(_, c)| (c.a, c.b))
            .collect();
        let mut raised = 0;
        for pair in &pairs {
            if known.contains(&(pair.a, pair.b)) {
                continue;
            }
            self.raise_duplicate(pair.a, pair.b, pair.reasons.clone(), pair.score)
                .await?;
            raised += 1;
        }
        let report = ScanReport {
            customers: count,
            pairs: pairs.len(),
            raised,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        info!(
            customers = report.customers,
            pairs = report.pairs,
            elapsed_ms = report.elapsed_ms,
            "duplicate scan done"
        );
        Ok(report)
    }

    /// Marks a candidate as "not the same person": it is not raised again.
    pub async fn dismiss_duplicate(&self, a: Id, b: Id, actor: &Actor) -> Result<(), CrmError> {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        if self
            .store()
            .get_json::<DuplicateCandidate>(DUPLICATES, &super::pair_key(lo, hi))?
            .is_none()
        {
            return Err(CrmError::invalid("pair", "no such duplicate candidate"));
        }
        let mut set = ChangeSet::new();
        self.stage_duplicate_status(&mut set, lo, hi, DuplicateStatus::Dismissed)?;
        self.store().commit(set).await?;
        info!(a = %lo, b = %hi, by = %actor.id, "duplicate candidate dismissed");
        Ok(())
    }

    /// One duplicate candidate.
    pub fn duplicate(&self, a: Id, b: Id) -> Result<Option<DuplicateCandidate>, CrmError> {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        Ok(self
            .store()
            .get_json::<DuplicateCandidate>(DUPLICATES, &super::pair_key(lo, hi))?)
    }
}

/// The customers' background job, started with the server: offers this service to the
/// control socket (privacy requests from the command line then update the same search
/// index), and runs the duplicate scan at start and every [`SCAN_EVERY`].
pub async fn run(customers: Customers) -> std::io::Result<()> {
    let _offered = super::privacy::offer_to_control(&customers);
    let mut every = tokio::time::interval(SCAN_EVERY);
    loop {
        every.tick().await;
        if let Err(err) = customers.scan_duplicates().await {
            warn!(error = %err, "duplicate scan failed; the next one runs on schedule");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits_and_swaps() {
        assert_eq!(distance("smith", "smith", 2), 0);
        assert_eq!(distance("smith", "smyth", 2), 1);
        assert_eq!(distance("smith", "simth", 2), 1);
        assert_eq!(distance("jon smith", "john smyth", 2), 2);
        assert_eq!(distance("ann", "bob", 1), 2);
    }

    #[test]
    fn similar_names_at_one_postcode_pair_up_and_others_do_not() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let mk = |n: u8, given: &str, family: &str, postcode: &str| {
            let mut c = super::super::blank(Id::from_bytes([n; 16]), now);
            c.given_name = given.into();
            c.family_name = family.into();
            c.addresses.push(crate::domain::customer::Address {
                line1: "1 High Street".into(),
                postcode: postcode.into(),
                ..Default::default()
            });
            c
        };
        let all = [
            mk(1, "Jon", "Smith", "SW1A 1AA"),
            mk(2, "John", "Smith", "sw1a1aa"),
            mk(3, "Mary", "Jones", "SW1A 1AA"),
            mk(4, "John", "Smith", "EC1A 1BB"),
        ];
        let pairs = similar_pairs(&all);
        assert!(pairs.iter().any(|p| p.a == all[0].id && p.b == all[1].id));
        assert!(!pairs.iter().any(|p| p.a == all[2].id || p.b == all[2].id));
        let best = &pairs[0];
        assert!(best.score >= 70, "{pairs:?}");
    }

    #[test]
    fn a_raised_stop_flag_ends_the_comparison_early() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        // One postcode shared by many: comparing them all is the long part of a scan.
        let all: Vec<Customer> = (0..300u32)
            .map(|n| {
                let mut bytes = [0u8; 16];
                bytes[..4].copy_from_slice(&n.to_be_bytes());
                let mut c = super::super::blank(Id::from_bytes(bytes), now);
                c.given_name = "Jon".into();
                c.family_name = if n % 2 == 0 { "Smith" } else { "Smyth" }.into();
                c.addresses.push(crate::domain::customer::Address {
                    postcode: "SW1A 1AA".into(),
                    ..Default::default()
                });
                c
            })
            .collect();
        let stop = AtomicBool::new(true);
        assert_eq!(similar_pairs_until(&all, &stop), Err(Stopped));
        stop.store(false, Ordering::Relaxed);
        let pairs = similar_pairs_until(&all, &stop).unwrap();
        assert_eq!(pairs.len(), 300 * 299 / 2);
        assert_eq!(similar_pairs(&all).len(), pairs.len());

        // Dropping the guard (the scan's future going away) raises the flag.
        let flag = Arc::new(AtomicBool::new(false));
        drop(StopOnDrop(Arc::clone(&flag)));
        assert!(flag.load(Ordering::Relaxed));
    }
}
