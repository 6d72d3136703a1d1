//! The customer search index: in memory only, built from decrypted profiles at start and kept
//! current on every write, so plaintext never reaches the disk.
//!
//! Names are folded into words ([`search_tokens`]). A query word matches a name word exactly,
//! as a prefix, or within a small edit distance (one edit for words up to five letters, two
//! beyond; Damerau: a swap of two neighbours is one edit). Every query word must match a word
//! of the name. Emails, phones and loyalty ids are not here: they are found exactly through the
//! store's blind indexes.
//!
//! Results are ranked by how well they match, then by name. Each word's posting list is kept
//! in that name order, so a search walks the lists of the matching words in step (a k-way
//! merge), one match quality at a time, and stops as soon as it holds the requested number of
//! hits: a two-letter prefix shared by tens of thousands of people costs the same as a rare
//! name. Writes insert into the sorted lists by binary search; a bulk load ([`Bulk`]) appends
//! and sorts each touched list once at the end.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use crate::domain::Id;
use crate::domain::customer::{Customer, search_tokens};

/// Most hits returned.
pub const MAX_HITS: usize = 50;

/// Bytes of the name kept in each posting, so most comparisons need not look the name up.
const KEY_LEN: usize = 12;

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
}

/// One entry of a posting list: the start of the name (zero-padded, so comparing keys agrees
/// with comparing names whenever the keys differ) and the document number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Posting {
    key: [u8; KEY_LEN],
    doc: u32,
}

/// One distinct name word.
#[derive(Debug)]
struct Word {
    chars: Box<[char]>,
    /// Characters present, hashed into 64 bits, to skip hopeless edit-distance checks.
    mask: u64,
    /// Documents holding the word, in (name, document number) order except while a [`Bulk`]
    /// load is open.
    docs: Vec<Posting>,
    /// Appended to out of order by a bulk load; sorted when the load ends.
    unsorted: bool,
}

/// Index of customer names.
#[derive(Debug, Default)]
pub struct SearchIndex {
    docs: Vec<Doc>,
    by_id: HashMap<Id, u32>,
    /// Word → its number.
    words: BTreeMap<Box<str>, u32>,
    /// Word number → the word and the docs holding it.
    postings: Vec<Word>,
    /// Word numbers by length in characters, for fuzzy matching.
    by_len: Vec<Vec<u32>>,
    live: usize,
}

/// A bulk load into a [`SearchIndex`]: customers are appended unsorted and every touched
/// posting list is sorted once when the load is dropped. Searching waits for the drop (the
/// load holds the index mutably).
#[derive(Debug)]
pub struct Bulk<'a> {
    index: &'a mut SearchIndex,
}

impl Bulk<'_> {
    /// [`SearchIndex::upsert`] without keeping the lists sorted until the load ends.
    pub fn upsert(&mut self, customer: &Customer) {
        self.index.insert(customer, false);
    }
}

impl Drop for Bulk<'_> {
    fn drop(&mut self) {
        let SearchIndex { docs, postings, .. } = &mut *self.index;
        for word in postings.iter_mut().filter(|w| w.unsorted) {
            word.docs.sort_unstable_by(|a, b| order(docs, a, b));
            word.unsorted = false;
        }
    }
}

/// The ranking order of two postings: name, then document number.
fn order(docs: &[Doc], a: &Posting, b: &Posting) -> Ordering {
    a.key.cmp(&b.key).then_with(|| {
        if a.doc == b.doc {
            return Ordering::Equal;
        }
        docs[a.doc as usize]
            .name
            .cmp(&docs[b.doc as usize].name)
            .then(a.doc.cmp(&b.doc))
    })
}

fn name_key(name: &str) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    let bytes = name.as_bytes();
    let n = bytes.len().min(KEY_LEN);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

fn char_mask(chars: &[char]) -> u64 {
    chars
        .iter()
        .fold(0u64, |mask, c| mask | 1u64 << (u32::from(*c) % 64))
}

/// The head of one posting list during a merge; the heap's top is the smallest name.
struct Head<'a> {
    at: Posting,
    list: usize,
    pos: usize,
    docs: &'a [Doc],
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head<'_> {}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: `BinaryHeap` is a max-heap.
        order(self.docs, &other.at, &self.at).then(other.list.cmp(&self.list))
    }
}

/// Walks several sorted posting lists as one, in name order, each document once.
struct Merge<'a> {
    lists: Vec<&'a [Posting]>,
    heap: BinaryHeap<Head<'a>>,
    docs: &'a [Doc],
    last: Option<u32>,
}

impl<'a> Merge<'a> {
    fn new(lists: Vec<&'a [Posting]>, docs: &'a [Doc]) -> Self {
        let heap = lists
            .iter()
            .enumerate()
            .filter_map(|(list, postings)| {
                postings.first().map(|&at| Head {
                    at,
                    list,
                    pos: 0,
                    docs,
                })
            })
            .collect();
        Self {
            lists,
            heap,
            docs,
            last: None,
        }
    }
}

impl Iterator for Merge<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        loop {
            let head = self.heap.pop()?;
            let doc = head.at.doc;
            if let Some(&at) = self.lists[head.list].get(head.pos + 1) {
                self.heap.push(Head {
                    at,
                    list: head.list,
                    pos: head.pos + 1,
                    docs: self.docs,
                });
            }
            // A document holding two matching words comes out of two lists, one after the
            // other (the order is total).
            if self.last != Some(doc) {
                self.last = Some(doc);
                return Some(doc);
            }
        }
    }
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

    /// Starts a bulk load (index build, import): much cheaper than one upsert after another.
    pub fn bulk(&mut self) -> Bulk<'_> {
        Bulk { index: self }
    }

    /// Adds or replaces a customer; merged-away profiles are not searchable.
    pub fn upsert(&mut self, customer: &Customer) {
        self.insert(customer, true);
    }

    fn insert(&mut self, customer: &Customer, sorted: bool) {
        self.remove(customer.id);
        if customer.merged_into.is_some() {
            return;
        }
        let doc_no = u32::try_from(self.docs.len()).unwrap_or(u32::MAX);
        let name = customer.display_name();
        let mut tokens: Vec<u32> = search_tokens(&name)
            .into_iter()
            .map(|word| self.word(&word))
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        let posting = Posting {
            key: name_key(&name),
            doc: doc_no,
        };
        self.docs.push(Doc {
            id: customer.id,
            name: name.into(),
            postcode: customer.postcode().unwrap_or_default().into(),
            tokens: tokens.clone().into(),
        });
        for &t in &tokens {
            let Self { docs, postings, .. } = &mut *self;
            let word = &mut postings[t as usize];
            if sorted && !word.unsorted {
                let at = word
                    .docs
                    .partition_point(|p| order(docs, p, &posting) == Ordering::Less);
                word.docs.insert(at, posting);
            } else {
                word.unsorted |= word
                    .docs
                    .last()
                    .is_some_and(|last| order(docs, last, &posting) == Ordering::Greater);
                word.docs.push(posting);
            }
        }
        self.by_id.insert(customer.id, doc_no);
        self.live += 1;
    }

    /// Removes a customer (erased, merged).
    pub fn remove(&mut self, id: Id) {
        let Some(doc_no) = self.by_id.remove(&id) else {
            return;
        };
        let Self { docs, postings, .. } = &mut *self;
        let doc = &docs[doc_no as usize];
        let posting = Posting {
            key: name_key(&doc.name),
            doc: doc_no,
        };
        for &t in &doc.tokens {
            let word = &mut postings[t as usize];
            if word.unsorted {
                word.docs.retain(|p| p.doc != doc_no);
            } else if let Ok(at) = word.docs.binary_search_by(|p| order(docs, p, &posting)) {
                word.docs.remove(at);
            }
        }
        let doc = &mut docs[doc_no as usize];
        doc.tokens = Box::new([]);
        doc.name = "".into();
        doc.postcode = "".into();
        self.live -= 1;
    }

    /// Customers whose name matches every word of `query`, best first: by match quality (the
    /// worst of the query words), then by name.
    #[must_use]
    pub fn search(&self, query: &str, limit: usize) -> Vec<Hit> {
        let keep = limit.min(MAX_HITS);
        let words = search_tokens(query);
        if keep == 0 || words.is_empty() {
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
        // Walk the lists of the query word with the fewest documents.
        let docs_of = |m: &HashMap<u32, Match>| -> usize {
            m.keys()
                .map(|t| self.postings[*t as usize].docs.len())
                .sum()
        };
        let first = (0..per_word.len())
            .min_by_key(|&i| docs_of(&per_word[i]))
            .unwrap_or(0);

        let mut hits: Vec<(Match, u32)> = Vec::with_capacity(keep);
        for level in [Match::Exact, Match::Prefix, Match::Fuzzy] {
            // A document's quality is never better than its match on the walked word, so this
            // level's hits are among the lists matching at least this well.
            // With one query word, the quality is that word's match: only its own lists.
            let alone = per_word.len() == 1;
            let lists: Vec<&[Posting]> = per_word[first]
                .iter()
                .filter(|&(_, how)| *how == level || (!alone && *how < level))
                .map(|(t, _)| self.postings[*t as usize].docs.as_slice())
                .collect();
            if lists.is_empty() {
                continue;
            }
            for d in Merge::new(lists, &self.docs) {
                if self.quality(d, &per_word) == Some(level) {
                    hits.push((level, d));
                    if hits.len() == keep {
                        return self.hits(hits);
                    }
                }
            }
        }
        self.hits(hits)
    }

    /// How well a document matches: the worst of its query words' best matches, or `None` when
    /// a query word matches none of its words.
    fn quality(&self, d: u32, per_word: &[HashMap<u32, Match>]) -> Option<Match> {
        let tokens = &self.docs[d as usize].tokens;
        let mut worst = Match::Exact;
        for matches in per_word {
            let best = tokens.iter().filter_map(|t| matches.get(t)).min()?;
            worst = worst.max(*best);
        }
        Some(worst)
    }

    fn hits(&self, ranked: Vec<(Match, u32)>) -> Vec<Hit> {
        ranked
            .into_iter()
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
            if !self.postings[t as usize].docs.is_empty() {
                let how = if **w == *word {
                    Match::Exact
                } else {
                    Match::Prefix
                };
                out.insert(t, how);
            }
        }
        let query: Vec<char> = word.chars().collect();
        let max = if query.len() <= 5 { 1 } else { 2 };
        if query.len() < 3 {
            return out;
        }
        let query_mask = char_mask(&query);
        let mut scratch = Scratch::default();
        let lo = query.len().saturating_sub(max);
        let hi = query.len() + max;
        for len in lo..=hi {
            for &t in self.by_len.get(len).map_or(&[][..], Vec::as_slice) {
                let candidate = &self.postings[t as usize];
                // Each edit loses at most one distinct character of either word.
                if (query_mask & !candidate.mask).count_ones() as usize > max
                    || (candidate.mask & !query_mask).count_ones() as usize > max
                    || candidate.docs.is_empty()
                    || out.contains_key(&t)
                {
                    continue;
                }
                if within(&query, &candidate.chars, max, &mut scratch) {
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
        let chars: Box<[char]> = word.chars().collect();
        let len = chars.len();
        self.postings.push(Word {
            mask: char_mask(&chars),
            chars,
            docs: Vec::new(),
            unsorted: false,
        });
        if self.by_len.len() <= len {
            self.by_len.resize_with(len + 1, Vec::new);
        }
        self.by_len[len].push(t);
        t
    }
}

/// Rows reused by [`within`] across the candidates of one query.
#[derive(Debug, Default)]
struct Scratch {
    prev2: Vec<usize>,
    prev: Vec<usize>,
    row: Vec<usize>,
}

/// Whether the optimal-string-alignment distance between `a` and `b` is at most `max`.
fn within(a: &[char], b: &[char], max: usize, scratch: &mut Scratch) -> bool {
    if a.len().abs_diff(b.len()) > max {
        return false;
    }
    let width = b.len() + 1;
    let Scratch { prev2, prev, row } = scratch;
    prev2.clear();
    prev2.resize(width, 0);
    prev.clear();
    prev.extend(0..width);
    row.clear();
    row.resize(width, 0);
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
        std::mem::swap(prev2, prev);
        std::mem::swap(prev, row);
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

    /// The ranking written out plainly: every live customer's quality, sorted by quality and
    /// name, cut at the limit.
    fn reference(people: &[(u32, String)], query: &str, limit: usize) -> Vec<(String, Match)> {
        let mut scratch = Scratch::default();
        let how = |q: &str, w: &str, scratch: &mut Scratch| {
            let (qc, wc): (Vec<char>, Vec<char>) = (q.chars().collect(), w.chars().collect());
            let max = if qc.len() <= 5 { 1 } else { 2 };
            if w == q {
                Some(Match::Exact)
            } else if w.starts_with(q) {
                Some(Match::Prefix)
            } else if qc.len() >= 3 && within(&qc, &wc, max, scratch) {
                Some(Match::Fuzzy)
            } else {
                None
            }
        };
        let mut ranked: Vec<(Match, String)> = people
            .iter()
            .filter_map(|(_, name)| {
                let words = search_tokens(name);
                let mut worst = Match::Exact;
                for q in search_tokens(query) {
                    let best = words
                        .iter()
                        .filter_map(|w| how(&q, w, &mut scratch))
                        .min()?;
                    worst = worst.max(best);
                }
                Some((worst, name.clone()))
            })
            .collect();
        ranked.sort();
        ranked.truncate(limit.min(MAX_HITS));
        ranked.into_iter().map(|(m, n)| (n, m)).collect()
    }

    fn numbered(n: u32, name: &str) -> Customer {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        let (given, family) = name.split_once(' ').unwrap_or((name, ""));
        let mut c = customer(0, given, family);
        c.id = Id::from_bytes(bytes);
        c
    }

    #[test]
    fn results_follow_quality_then_name_up_to_the_limit_however_built() {
        let given = [
            "Mark", "Maria", "Marta", "Mary", "Max", "Ann", "Anna", "Mrak", "Zoë",
        ];
        let family = [
            "Thomas", "Thompson", "Thomsen", "Smith", "Smyth", "Smit", "Marsh",
        ];
        let mut state = 7u64;
        let mut draw = |n: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as usize % n
        };
        let mut people: Vec<(u32, String)> = (0..400)
            .map(|n| (n, format!("{} {}", given[draw(9)], family[draw(7)])))
            .collect();
        let mut one_by_one = SearchIndex::new();
        let mut bulk_built = SearchIndex::new();
        {
            let mut bulk = bulk_built.bulk();
            for (n, name) in &people {
                one_by_one.upsert(&numbered(*n, name));
                bulk.upsert(&numbered(*n, name));
            }
        }
        // Renames and removals after the load keep the lists in order.
        for n in (0..400).step_by(7) {
            let name = format!("{} {}", given[draw(9)], family[draw(7)]);
            for index in [&mut one_by_one, &mut bulk_built] {
                index.upsert(&numbered(n, &name));
            }
            people[n as usize].1 = name;
        }
        for n in (3..400).step_by(11) {
            one_by_one.remove(numbered(n, "").id);
            bulk_built.remove(numbered(n, "").id);
        }
        people.retain(|(n, _)| n % 11 != 3);

        for query in [
            "ma",
            "mar",
            "mark",
            "thom",
            "smith",
            "smiht",
            "mark thomas",
            "an sm",
            "zo",
        ] {
            for limit in [1, 10, 50, 500] {
                let expected = reference(&people, query, limit);
                for index in [&one_by_one, &bulk_built] {
                    let got: Vec<(String, Match)> = index
                        .search(query, limit)
                        .into_iter()
                        .map(|h| (h.name, h.matched))
                        .collect();
                    assert_eq!(got, expected, "query {query:?}, limit {limit}");
                }
            }
        }
        assert_eq!(one_by_one.len(), people.len());
        assert_eq!(bulk_built.len(), people.len());
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        let c = |s: &str| s.chars().collect::<Vec<_>>();
        let mut scratch = Scratch::default();
        assert!(within(&c("thompson"), &c("thmopson"), 1, &mut scratch));
        assert!(!within(&c("thompson"), &c("tohmpsn"), 1, &mut scratch));
        assert!(within(&c("thompson"), &c("tohmpsn"), 2, &mut scratch));
        assert!(!within(&c("abc"), &c("xyz"), 2, &mut scratch));
    }
}
