//! The customer search index: in memory only, built from decrypted profiles at start and kept
//! current on every write, so plaintext never reaches the disk.
//!
//! Names are folded into words ([`search_tokens`]). A query word matches a name word exactly,
//! as a prefix, or within a small edit distance (one edit for words up to five letters, two
//! beyond; Damerau: a swap of two neighbours is one edit). Every query word must match a word
//! of the name. Emails, phones and loyalty ids are not here: they are found exactly through the
//! store's blind indexes.

use std::collections::{BTreeMap, HashMap};

use crate::domain::Id;
use crate::domain::customer::{Customer, search_tokens};

/// Most hits returned.
pub const MAX_HITS: usize = 50;

/// How a hit matched; the order is the ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Match {
    Exact,
    Prefix,
    Fuzzy,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub id: Id,
    pub name: String,
    pub postcode: String,
    pub matched: Match,
}

#[derive(Debug, Clone)]
struct Doc {
    id: Id,
    name: Box<str>,
    postcode: Box<str>,
    tokens: Box<[u32]>,
    live: bool,
}

/// Index of customer names.
#[derive(Debug, Default)]
pub struct SearchIndex {
    docs: Vec<Doc>,
    by_id: HashMap<Id, u32>,
    /// Word → its number.
    words: BTreeMap<Box<str>, u32>,
    /// Word number → the word and the docs holding it.
    postings: Vec<(Box<str>, Vec<u32>)>,
    /// Word numbers by length in characters, for fuzzy matching.
    by_len: Vec<Vec<u32>>,
    live: usize,
}

impl SearchIndex {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of customers indexed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.live
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds or replaces a customer; merged-away profiles are not searchable.
    pub fn upsert(&mut self, customer: &Customer) {
        self.remove(customer.id);
        if customer.merged_into.is_some() {
            return;
        }
        let doc_no = u32::try_from(self.docs.len()).unwrap_or(u32::MAX);
        let mut tokens: Vec<u32> = search_tokens(&customer.display_name())
            .into_iter()
            .map(|word| self.word(&word))
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        for &t in &tokens {
            self.postings[t as usize].1.push(doc_no);
        }
        self.docs.push(Doc {
            id: customer.id,
            name: customer.display_name().into(),
            postcode: customer.postcode().unwrap_or_default().into(),
            tokens: tokens.into(),
            live: true,
        });
        self.by_id.insert(customer.id, doc_no);
        self.live += 1;
    }

    /// Removes a customer (erased, merged).
    pub fn remove(&mut self, id: Id) {
        let Some(doc_no) = self.by_id.remove(&id) else {
            return;
        };
        let doc = &mut self.docs[doc_no as usize];
        doc.live = false;
        for &t in &doc.tokens {
            self.postings[t as usize].1.retain(|d| *d != doc_no);
        }
        doc.tokens = Box::new([]);
        doc.name = "".into();
        doc.postcode = "".into();
        self.live -= 1;
    }

    /// Customers whose name matches every word of `query`, best first.
    #[must_use]
    pub fn search(&self, query: &str, limit: usize) -> Vec<Hit> {
        let words = search_tokens(query);
        if words.is_empty() {
            return Vec::new();
        }
        // For each query word: the matching index words and how well they match.
        let mut per_word: Vec<HashMap<u32, Match>> = Vec::with_capacity(words.len());
        for word in &words {
            let matches = self.matching_words(word);
            if matches.is_empty() {
                return Vec::new();
            }
            per_word.push(matches);
        }
        // Start from the query word with the fewest documents.
        let docs_of = |m: &HashMap<u32, Match>| -> usize {
            m.keys().map(|t| self.postings[*t as usize].1.len()).sum()
        };
        let (first, _) = per_word
            .iter()
            .enumerate()
            .min_by_key(|(_, m)| docs_of(m))
            .unwrap_or((0, &per_word[0]));
        // Every document of the first word's matches, best match first per document: a sort
        // of plain pairs is cheaper than a hash map when a short prefix matches many people.
        let mut scored: Vec<(u32, Match)> = per_word[first]
            .iter()
            .flat_map(|(&t, &how)| self.postings[t as usize].1.iter().map(move |&d| (d, how)))
            .collect();
        scored.sort_unstable();
        scored.dedup_by_key(|(d, _)| *d);
        let mut hits: Vec<(Match, u32)> = scored
            .into_iter()
            .filter_map(|(d, how)| {
                let doc = &self.docs[d as usize];
                let mut worst = how;
                for (i, matches) in per_word.iter().enumerate() {
                    if i == first {
                        continue;
                    }
                    let best = doc.tokens.iter().filter_map(|t| matches.get(t)).min()?;
                    worst = worst.max(*best);
                }
                Some((worst, d))
            })
            .collect();
        let rank = |a: &(Match, u32), b: &(Match, u32)| {
            a.0.cmp(&b.0).then_with(|| {
                self.docs[a.1 as usize]
                    .name
                    .cmp(&self.docs[b.1 as usize].name)
            })
        };
        // Only the first `limit` are shown: pick them in linear time, then sort just those.
        let keep = limit.min(MAX_HITS);
        if keep == 0 {
            return Vec::new();
        }
        if hits.len() > keep {
            hits.select_nth_unstable_by(keep - 1, rank);
            hits.truncate(keep);
        }
        hits.sort_unstable_by(rank);
        hits.into_iter()
            .take(limit.min(MAX_HITS))
            .map(|(matched, d)| {
                let doc = &self.docs[d as usize];
                Hit {
                    id: doc.id,
                    name: doc.name.to_string(),
                    postcode: doc.postcode.to_string(),
                    matched,
                }
            })
            .collect()
    }

    /// Index words matching one query word.
    fn matching_words(&self, word: &str) -> HashMap<u32, Match> {
        let mut out = HashMap::new();
        let from = (std::ops::Bound::Included(word), std::ops::Bound::Unbounded);
        for (w, &t) in self.words.range::<str, _>(from) {
            if !w.starts_with(word) {
                break;
            }
            if !self.postings[t as usize].1.is_empty() {
                out.insert(
                    t,
                    if **w == *word {
                        Match::Exact
                    } else {
                        Match::Prefix
                    },
                );
            }
        }
        let query: Vec<char> = word.chars().collect();
        let max = if query.len() <= 5 { 1 } else { 2 };
        if query.len() < 3 {
            return out;
        }
        let lo = query.len().saturating_sub(max);
        let hi = query.len() + max;
        for len in lo..=hi {
            for &t in self.by_len.get(len).map_or(&[][..], Vec::as_slice) {
                if out.contains_key(&t) || self.postings[t as usize].1.is_empty() {
                    continue;
                }
                let candidate: Vec<char> = self.postings[t as usize].0.chars().collect();
                if within(&query, &candidate, max) {
                    out.insert(t, Match::Fuzzy);
                }
            }
        }
        out
    }

    fn word(&mut self, word: &str) -> u32 {
        if let Some(&t) = self.words.get(word) {
            return t;
        }
        let t = u32::try_from(self.postings.len()).unwrap_or(u32::MAX);
        self.words.insert(word.into(), t);
        self.postings.push((word.into(), Vec::new()));
        let len = word.chars().count();
        if self.by_len.len() <= len {
            self.by_len.resize_with(len + 1, Vec::new);
        }
        self.by_len[len].push(t);
        t
    }
}

/// Whether the optimal-string-alignment distance between `a` and `b` is at most `max`.
fn within(a: &[char], b: &[char], max: usize) -> bool {
    if a.len().abs_diff(b.len()) > max {
        return false;
    }
    let width = b.len() + 1;
    let mut prev2 = vec![0usize; width];
    let mut prev: Vec<usize> = (0..width).collect();
    let mut row = vec![0usize; width];
    for i in 1..=a.len() {
        row[0] = i;
        let mut row_min = row[0];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(prev2[j - 2] + 1);
            }
            row[j] = best;
            row_min = row_min.min(best);
        }
        if row_min > max {
            return false;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()] <= max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(n: u8, given: &str, family: &str) -> Customer {
        let at = jiff::Timestamp::UNIX_EPOCH;
        Customer {
            id: Id::from_bytes([n; 16]),
            given_name: given.into(),
            family_name: family.into(),
            emails: vec![],
            phones: vec![],
            addresses: vec![],
            birthday: None,
            loyalty_ids: vec![],
            external_ids: vec![],
            tags: vec![],
            preferred_channel: None,
            preferred_store: None,
            consents: vec![],
            legal_hold: false,
            merged_into: None,
            merged_from: vec![],
            created_at: at,
            updated_at: at,
            last_activity_at: at,
        }
    }

    fn names(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn prefix_exact_and_typos_within_the_allowed_distance() {
        let mut index = SearchIndex::new();
        index.upsert(&customer(1, "Margaret", "Thompson"));
        index.upsert(&customer(2, "Mark", "Thomas"));
        index.upsert(&customer(3, "Zoë", "Núñez"));
        index.upsert(&customer(4, "Ann", "Lee"));

        assert_eq!(
            names(&index.search("thom", 10)),
            ["Margaret Thompson", "Mark Thomas"]
        );
        // Two edits in a long word (a swap and a missing letter).
        assert_eq!(names(&index.search("Tohmpsn", 10)), ["Margaret Thompson"]);
        // Accents folded; one edit in a short word.
        assert_eq!(names(&index.search("zoe nunex", 10)), ["Zoë Núñez"]);
        // Two edits in a five-letter word is too many.
        assert!(index.search("nxnex", 10).is_empty());
        // Every word must match.
        assert_eq!(names(&index.search("mark thomas", 10)), ["Mark Thomas"]);
        assert_eq!(index.search("lee", 10)[0].matched, Match::Exact);
    }

    #[test]
    fn removed_and_merged_profiles_are_not_found() {
        let mut index = SearchIndex::new();
        index.upsert(&customer(1, "Ada", "Lovelace"));
        index.upsert(&customer(2, "Ada", "Byron"));
        index.remove(Id::from_bytes([1; 16]));
        assert_eq!(names(&index.search("ada", 10)), ["Ada Byron"]);
        let mut merged = customer(2, "Ada", "Byron");
        merged.merged_into = Some(Id::from_bytes([9; 16]));
        index.upsert(&merged);
        assert!(index.search("ada", 10).is_empty());
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        let c = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(within(&c("thompson"), &c("thmopson"), 1));
        assert!(!within(&c("thompson"), &c("tohmpsn"), 1));
        assert!(within(&c("thompson"), &c("tohmpsn"), 2));
        assert!(!within(&c("abc"), &c("xyz"), 2));
    }
}
