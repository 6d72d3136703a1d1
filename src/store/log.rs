//! How the entries of a hash-chained log (the audit trail) are kept in the store.
//!
//! Each entry is stored as its hash, its time and its bytes ([`log_value`]). The committer
//! writes the entries a group of change sets appended to one log as few sealed records of at
//! most [`MAX_RECORD_BYTES`] each, so a group of 64 audited writes costs about 69 sled inserts,
//! not 128:
//!
//! ```text
//! key suffix  8 bytes: the sequence number            one entry (also every older store)
//!             12 bytes: first sequence number, count  several entries, in sequence order
//! value       one entry: the log value itself
//!             several: repeated u32 big-endian length, then that log value
//! ```
//!
//! Keys sort by first sequence number, so a range of entries is a range of records plus,
//! possibly, the record just before it. Each record is sealed under its own store key, so a
//! record moved, cut or reordered fails to open like any other. The reading side
//! ([`Store::log_entries`] and its neighbours) lives here too.

use zeroize::Zeroizing;

use super::{LogEntries, Shared, Store, StoreError, Table};

/// Bytes stored before an entry: its hash and its time (nanoseconds, big-endian), so the head
/// can be found again at open without knowing the entry's encoding.
pub(super) const LOG_PREFIX_LEN: usize = 32 + 16;

/// Most entries sealed into one record; a bigger group writes several.
const MAX_PER_RECORD: usize = 256;

/// Most bytes of entries sealed into one record (a single bigger entry gets a record of its
/// own). sled keeps up to 17 records in a leaf and writes a leaf bigger than a quarter of a
/// segment (128 KiB of its 512 KiB) to a file of its own, created anew at every rewrite of the
/// leaf; 17 records of 7 KiB (119 KiB) keep the log's leaves in the shared log segments.
/// Measured with `clientele bench audit`: 4 KiB and 7 KiB both stop the blob files, and 7 KiB
/// writes fewer records per group.
const MAX_RECORD_BYTES: usize = 7 * 1024;

pub(super) fn log_value(hash: &[u8; 32], time: jiff::Timestamp, bytes: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(LOG_PREFIX_LEN + bytes.len());
    value.extend_from_slice(hash);
    value.extend_from_slice(&time.as_nanosecond().to_be_bytes());
    value.extend_from_slice(bytes);
    value
}

/// The head a stored log value describes, when it is one.
pub(super) fn log_head_of(seq: u64, value: &[u8]) -> Option<super::LogHead> {
    let hash: [u8; 32] = value.get(..32)?.try_into().ok()?;
    let nanos = i128::from_be_bytes(value.get(32..48)?.try_into().ok()?);
    let time = jiff::Timestamp::from_nanosecond(nanos).ok()?;
    Some(super::LogHead { seq, hash, time })
}

/// The entries of one record: sequence number and full log value of each.
pub(super) type Entries = Vec<(u64, Zeroizing<Vec<u8>>)>;

/// An entry linked and encoded by a set, written once the group it belongs to is known.
#[derive(Debug)]
pub(super) struct StagedEntry {
    pub log: Table,
    pub seq: u64,
    pub value: Zeroizing<Vec<u8>>,
}

/// Seals the entries of a group, consecutive per log, into as few records as allowed.
pub(super) fn pack(
    shared: &Shared,
    entries: Vec<StagedEntry>,
) -> Result<super::commit::Staged, StoreError> {
    let mut ops = Vec::new();
    let mut run: Vec<StagedEntry> = Vec::new();
    let mut run_bytes = 0;
    for entry in entries {
        let continues = run.last().is_some_and(|last| {
            last.log == entry.log
                && last.seq + 1 == entry.seq
                && run.len() < MAX_PER_RECORD
                && run_bytes + 4 + entry.value.len() <= MAX_RECORD_BYTES
        });
        if !continues && !run.is_empty() {
            ops.push(seal_run(shared, &run)?);
            run.clear();
            run_bytes = 0;
        }
        run_bytes += 4 + entry.value.len();
        run.push(entry);
    }
    if !run.is_empty() {
        ops.push(seal_run(shared, &run)?);
    }
    Ok(ops)
}

fn seal_run(shared: &Shared, run: &[StagedEntry]) -> Result<super::commit::StagedOp, StoreError> {
    let (log, first) = match run.first() {
        Some(entry) => (entry.log, entry.seq),
        None => return Err(StoreError::WriteFailed("an empty log record".into())),
    };
    let (suffix, value) = if let [only] = run {
        (
            first.to_be_bytes().to_vec(),
            Zeroizing::new(only.value.to_vec()),
        )
    } else {
        let mut suffix = first.to_be_bytes().to_vec();
        let count = u32::try_from(run.len()).unwrap_or(u32::MAX);
        suffix.extend_from_slice(&count.to_be_bytes());
        let mut value = Zeroizing::new(Vec::with_capacity(
            run.iter().map(|e| 4 + e.value.len()).sum(),
        ));
        for entry in run {
            let len = u32::try_from(entry.value.len())
                .map_err(|_| StoreError::WriteFailed("a log entry over 4 GiB".into()))?;
            value.extend_from_slice(&len.to_be_bytes());
            value.extend_from_slice(&entry.value);
        }
        (suffix, value)
    };
    let store_key = log.store_key(&suffix);
    let sealed = shared
        .keyring
        .seal_current(&store_key, &value, &shared.nonces)?;
    Ok((store_key, Some(sealed)))
}

/// The first and last sequence numbers a record holds, from its key suffix.
pub(super) fn span(suffix: &[u8]) -> Option<(u64, u64)> {
    let first = u64::from_be_bytes(suffix.get(..8)?.try_into().ok()?);
    match suffix.len() {
        8 => Some((first, first)),
        12 => {
            let count = u32::from_be_bytes(suffix.get(8..12)?.try_into().ok()?);
            if count < 2 {
                return None;
            }
            Some((first, first.checked_add(u64::from(count) - 1)?))
        }
        _ => None,
    }
}

/// The entries of an opened record, each as its sequence number and full log value.
pub(super) fn unpack(suffix: &[u8], plain: &[u8]) -> Result<Entries, &'static str> {
    let (first, last) = span(suffix).ok_or("bad sequence key")?;
    if first == last {
        if plain.len() < LOG_PREFIX_LEN {
            return Err("bad log entry");
        }
        return Ok(vec![(first, Zeroizing::new(plain.to_vec()))]);
    }
    let mut out = Vec::new();
    let mut rest = plain;
    for seq in first..=last {
        let len = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or("a log record cut short")?;
        let end = 4 + len as usize;
        let value = rest.get(4..end).ok_or("a log record cut short")?;
        if value.len() < LOG_PREFIX_LEN {
            return Err("bad log entry");
        }
        out.push((seq, Zeroizing::new(value.to_vec())));
        rest = rest.get(end..).unwrap_or_default();
    }
    if rest.is_empty() {
        Ok(out)
    } else {
        Err("bytes after the last entry of a log record")
    }
}

impl Shared {
    /// Opens one record of a log: its entries as sequence number and full log value.
    pub(super) fn open_log_record(
        &self,
        log: Table,
        store_key: &[u8],
        raw: &[u8],
    ) -> Result<Entries, StoreError> {
        let suffix = store_key.get(log.prefix().len()..).unwrap_or_default();
        let plain = Zeroizing::new(self.open_raw(store_key, raw)?);
        unpack(suffix, &plain)
            .map_err(|reason| StoreError::Decode(format!("{}: {reason}", log.name())))
    }
}

impl Store {
    /// Entries of a hash-chained log with sequence numbers in `from..=to`, oldest first (or
    /// newest first when `reverse`), as stored by [`Chained::finish`].
    #[must_use]
    pub fn log_entries(&self, log: Table, from: u64, to: u64, reverse: bool) -> LogEntries<'_> {
        let records = self.log_records(log, from, to);
        let open = move |record: Result<(sled::IVec, sled::IVec), StoreError>| {
            let opened = record
                .and_then(|(store_key, raw)| self.shared().open_log_record(log, &store_key, &raw));
            let entries: Vec<_> = match opened {
                Ok(mut entries) => {
                    entries.retain(|(seq, _)| (from..=to).contains(seq));
                    if reverse {
                        entries.reverse();
                    }
                    entries
                        .into_iter()
                        .map(|(seq, mut value)| {
                            value.drain(..LOG_PREFIX_LEN);
                            Ok((seq, value))
                        })
                        .collect()
                }
                Err(err) => vec![Err(err)],
            };
            entries
        };
        if reverse {
            Box::new(records.rev().flat_map(open))
        } else {
            Box::new(records.flat_map(open))
        }
    }

    /// The records of a log holding any entry in `from..=to`, in key order: the records that
    /// start in the range, after the one before it when that one reaches into it.
    fn log_records(
        &self,
        log: Table,
        from: u64,
        to: u64,
    ) -> impl DoubleEndedIterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> + '_ {
        let prefix = log.prefix();
        let start = log.store_key(&from.to_be_bytes());
        let mut end = log.store_key(&to.to_be_bytes());
        end.extend_from_slice(&[0xFF; 4]);
        let data = &self.shared().data;
        let before = data
            .range(prefix.clone()..start.clone())
            .next_back()
            .and_then(|record| match record {
                Ok((key, raw)) => span(&key[prefix.len()..])
                    .is_none_or(|(_, last)| last >= from)
                    .then_some(Ok((key, raw))),
                Err(err) => Some(Err(err)),
            });
        before
            .into_iter()
            .chain(data.range(start..=end))
            .map(|record| record.map_err(StoreError::from))
    }

    /// The sequence number of the oldest entry kept in a log, read from its record's key
    /// (nothing is opened); `None` for an empty log.
    pub fn log_first_seq(&self, log: Table) -> Result<Option<u64>, StoreError> {
        let prefix = log.prefix();
        match self.shared().data.scan_prefix(&prefix).next() {
            Some(record) => {
                let (key, _) = record?;
                span(&key[prefix.len()..])
                    .map(|(first, _)| Some(first))
                    .ok_or_else(|| StoreError::Decode(format!("{}: bad sequence key", log.name())))
            }
            None => Ok(None),
        }
    }

    /// The key suffixes (after the table's prefix) of the log records whose entries all lie
    /// in `from..=to`: what deleting those entries deletes. A record reaching outside the
    /// range is kept whole.
    pub fn log_record_keys(
        &self,
        log: Table,
        from: u64,
        to: u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let prefix_len = log.prefix().len();
        let mut keys = Vec::new();
        for record in self.log_records(log, from, to) {
            let (key, _) = record?;
            let suffix = &key[prefix_len..];
            if span(suffix).is_some_and(|(first, last)| first >= from && last <= to) {
                keys.push(suffix.to_vec());
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: u8) -> Vec<u8> {
        let mut v = log_value(&[n; 32], jiff::Timestamp::UNIX_EPOCH, b"entry");
        v.push(n);
        v
    }

    fn packed(first: u64, values: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
        let mut suffix = first.to_be_bytes().to_vec();
        suffix.extend_from_slice(&(values.len() as u32).to_be_bytes());
        let mut plain = Vec::new();
        for v in values {
            plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
            plain.extend_from_slice(v);
        }
        (suffix, plain)
    }

    #[test]
    fn spans_of_single_and_packed_records() {
        assert_eq!(span(&7u64.to_be_bytes()), Some((7, 7)));
        let (suffix, _) = packed(7, &[value(1), value(2), value(3)]);
        assert_eq!(span(&suffix), Some((7, 9)));
        assert_eq!(span(&[0; 5]), None);
        let mut one = 7u64.to_be_bytes().to_vec();
        one.extend_from_slice(&1u32.to_be_bytes());
        assert_eq!(span(&one), None, "a pack of one is never written");
        let mut wraps = u64::MAX.to_be_bytes().to_vec();
        wraps.extend_from_slice(&2u32.to_be_bytes());
        assert_eq!(span(&wraps), None);
    }

    #[test]
    fn a_pack_unpacks_in_order_and_refuses_damage() {
        let values = [value(1), value(2), value(3)];
        let (suffix, plain) = packed(40, &values);
        let entries = unpack(&suffix, &plain).unwrap();
        let seqs: Vec<u64> = entries.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [40, 41, 42]);
        assert_eq!(entries[2].1.as_slice(), values[2].as_slice());
        assert_eq!(log_head_of(41, &entries[1].1).unwrap().hash, [2; 32]);

        assert!(unpack(&suffix, &plain[..plain.len() - 1]).is_err());
        let mut longer = plain.clone();
        longer.push(0);
        assert!(unpack(&suffix, &longer).is_err());
        let (fewer, _) = packed(40, &values[..2]);
        assert!(unpack(&fewer, &plain).is_err());
        assert!(unpack(&7u64.to_be_bytes(), b"short").is_err());
    }
}
