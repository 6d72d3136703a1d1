//! How the entries of a hash-chained log (the audit trail) are kept in the store.
//!
//! Each entry is stored as its hash, its time and its bytes ([`log_value`]). The committer
//! writes the entries a group of change sets appended to one log as one sealed record, so a
//! group of 64 audited writes costs 65 sled inserts, not 128:
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
//! record moved, cut or reordered fails to open like any other.

use zeroize::Zeroizing;

use super::{Shared, StoreError, Table};

/// Bytes stored before an entry: its hash and its time (nanoseconds, big-endian), so the head
/// can be found again at open without knowing the entry's encoding.
pub(super) const LOG_PREFIX_LEN: usize = 32 + 16;

/// Most entries sealed into one record; a bigger group writes several.
const MAX_PER_RECORD: usize = 256;

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
    for entry in entries {
        let continues = run.last().is_some_and(|last| {
            last.log == entry.log && last.seq + 1 == entry.seq && run.len() < MAX_PER_RECORD
        });
        if !continues && !run.is_empty() {
            ops.push(seal_run(shared, &run)?);
            run.clear();
        }
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
