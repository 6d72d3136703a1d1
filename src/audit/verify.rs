//! Offline verification of a JSON Lines export bundle (see [`super::export`] for its layout):
//! no data folder, no master key, one pass, memory independent of the file's size.
//!
//! What is checked, line by line:
//!
//! - line 1 is the header; its public key is used only when none is given (and the report
//!   says so, since a key taken from the file proves only that the file agrees with itself);
//! - every entry line is canonical and its hash recomputes ([`Entry::parse_line`]); entries
//!   and omitted runs follow each other with no gap, repeat or reordering; each entry's
//!   `prev` is the hash of the line before it (an entry, a run's last entry, or the anchor
//!   checkpoint), and entry 1's is 64 zeroes;
//! - every checkpoint names the key's fingerprint, its signature verifies, and it stands
//!   right after the entry at its size, whose hash is its head;
//! - every entry given in full is followed, before the next omitted run and at the end, by a
//!   checkpoint, so each one is bound to a signature through recomputed hashes alone;
//! - a saved checkpoint (taken earlier with `clientele audit checkpoint`) must be signed by
//!   the key and its entry must have the same hash here: a different hash means the trail
//!   was rewritten or forked (an old copy restored and written on); an export that ends
//!   before it was cut off;
//! - the closing signature covers every byte before it.
//!
//! The first failure is returned; it names the entry (sequence number) where one is known,
//! and the line otherwise. Nothing in the file can make it panic.

use std::io::{BufRead, Read};

use super::checkpoint::{Checkpoint, PublicKey, verify_signature};
use super::entry::{Entry, GENESIS};
use super::export::{BUNDLE_VERSION, BundleHeader, BundleLine, BundleSignature, Omitted};

/// Longest line read; longer ones are refused rather than held in memory.
pub const MAX_LINE: usize = 1 << 20;

/// What a successful verification found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub header: BundleHeader,
    /// The key the signatures were checked with.
    pub key: PublicKey,
    /// True when no key was given and the header's own key was used: the file is then only
    /// shown to agree with itself, not to come from this appliance.
    pub key_from_header: bool,
    /// Entries given in full, and entries given by hash only.
    pub entries: u64,
    pub omitted: u64,
    /// First and last sequence numbers of the span (0 when it holds none).
    pub first_seq: u64,
    pub last_seq: u64,
    /// Checkpoint lines checked, the anchor included.
    pub checkpoints: u64,
    pub newest_checkpoint: Option<Checkpoint>,
    /// The size of the saved checkpoint the export was compared with.
    pub saved_checked: Option<u64>,
    /// When the closing signature was made.
    pub signed_at: String,
}

/// Why an export does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the export at line {line}: {source}")]
    Read { line: u64, source: std::io::Error },
    #[error("the file is empty: it is not an audit export")]
    Empty,
    #[error("line 1 is not the header of a Clientele audit export: {reason}")]
    NotABundle { reason: String },
    #[error("line {line}{}: {reason}", after_note(*.after))]
    Malformed {
        line: u64,
        after: Option<u64>,
        reason: String,
    },
    #[error(
        "line {line}{} is cut short (the file ends in the middle of it): the export was truncated",
        after_note(*.after)
    )]
    CutShort { line: u64, after: Option<u64> },
    #[error("entry {seq} (line {line}): {reason}")]
    BadEntry { seq: u64, line: u64, reason: String },
    #[error("entry {seq} is missing: line {line} holds entry {found} where entry {seq} was due")]
    Missing { seq: u64, found: u64, line: u64 },
    #[error("entry {seq} (line {line}) is repeated or out of order: entry {expected} was due")]
    OutOfOrder { seq: u64, expected: u64, line: u64 },
    #[error(
        "entry {seq}: its hash is not the one entry {next} (line {line}) links to; entry {seq} \
         was changed, or the link in entry {next} was"
    )]
    BrokenLink { seq: u64, next: u64, line: u64 },
    #[error(
        "entry {seq} (line {line}): the export starts here, but an export starts at entry 1 or \
         right after a signed checkpoint; entries before it were removed"
    )]
    Unanchored { seq: u64, line: u64 },
    #[error(
        "entry {seq} (line {line}): it does not link to the signed checkpoint just before it \
         (entry {seq} was changed, or the entries before it were replaced)"
    )]
    AnchorMismatch { seq: u64, line: u64 },
    #[error("checkpoint of entry {seq} (line {line}): {reason}")]
    Checkpoint { seq: u64, line: u64, reason: String },
    #[error("entry {seq}: no checkpoint follows it, {reason}")]
    Uncovered { seq: u64, reason: &'static str },
    #[error(
        "entry {seq}: its hash differs from the saved checkpoint of entry {seq}; the trail was \
         rewritten or forked at or before entry {seq} (for example an old copy was restored and \
         written on)"
    )]
    Fork { seq: u64 },
    #[error(
        "entry {} is missing: the saved checkpoint covers {saved} entries but the export ends at \
         entry {last}; entries were cut off the end",
        .last + 1
    )]
    CutOff { saved: u64, last: u64 },
    #[error("the saved checkpoint (entry {saved}) cannot be used: {reason}")]
    SavedUnusable { saved: u64, reason: String },
    #[error(
        "the export was cut short after entry {after} (line {line}): its closing signature line \
         is missing{}",
        last_note(*.expected_last)
    )]
    Truncated {
        line: u64,
        after: u64,
        expected_last: u64,
    },
    #[error("the closing signature (line {line}) {reason}")]
    BadSignature { line: u64, reason: String },
}

fn after_note(seq: Option<u64>) -> String {
    seq.map_or_else(String::new, |seq| format!(" (after entry {seq})"))
}

fn last_note(last: u64) -> String {
    format!(" (the header says the export runs to entry {last})")
}

impl VerifyError {
    /// The first entry found bad, when the failure is tied to one.
    #[must_use]
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::BadEntry { seq, .. }
            | Self::Missing { seq, .. }
            | Self::OutOfOrder { seq, .. }
            | Self::BrokenLink { seq, .. }
            | Self::Unanchored { seq, .. }
            | Self::AnchorMismatch { seq, .. }
            | Self::Checkpoint { seq, .. }
            | Self::Uncovered { seq, .. }
            | Self::Fork { seq } => Some(*seq),
            Self::CutOff { last, .. } => Some(last + 1),
            Self::Truncated { after, .. } => Some(after + 1),
            Self::Read { .. }
            | Self::Empty
            | Self::NotABundle { .. }
            | Self::Malformed { .. }
            | Self::CutShort { .. }
            | Self::SavedUnusable { .. }
            | Self::BadSignature { .. } => None,
        }
    }

    /// The line of the file the failure was found on, when there is one.
    #[must_use]
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Read { line, .. }
            | Self::Malformed { line, .. }
            | Self::CutShort { line, .. }
            | Self::BadEntry { line, .. }
            | Self::Missing { line, .. }
            | Self::OutOfOrder { line, .. }
            | Self::BrokenLink { line, .. }
            | Self::Unanchored { line, .. }
            | Self::AnchorMismatch { line, .. }
            | Self::Checkpoint { line, .. }
            | Self::Truncated { line, .. }
            | Self::BadSignature { line, .. } => Some(*line),
            Self::NotABundle { .. } => Some(1),
            _ => None,
        }
    }
}

/// The newest entry (or omitted run) read so far.
struct Last {
    seq: u64,
    hash: String,
    /// Given in full (not omitted).
    full: bool,
    /// A checkpoint line followed it.
    covered: bool,
}

/// Verifies a bundle read from `reader`, with `public_key` (or, without one, the key the
/// header states) and against `saved`, a checkpoint saved earlier, when given.
pub fn verify(
    mut reader: impl BufRead,
    public_key: Option<&PublicKey>,
    saved: Option<&Checkpoint>,
) -> Result<VerifyReport, VerifyError> {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = Vec::with_capacity(1024);
    let mut line_no = 0u64;

    if !read_line(&mut reader, &mut buf, &mut line_no, None)? {
        return Err(VerifyError::Empty);
    }
    let header = read_header(&buf)?;
    let (key, key_from_header) = match public_key {
        Some(key) => (key.clone(), false),
        None => (
            PublicKey::from_text(&header.public_key)
                .map_err(|reason| VerifyError::NotABundle { reason })?,
            true,
        ),
    };
    let fingerprint = key.fingerprint();
    if let Some(saved) = saved
        && (saved.key != fingerprint || !saved.verify(&key))
    {
        return Err(VerifyError::SavedUnusable {
            saved: saved.size,
            reason: "it is not signed by this key".into(),
        });
    }
    digest.update(&buf);

    let mut state = State {
        key: &key,
        fingerprint: &fingerprint,
        saved,
        anchor: None,
        last: None,
        next: None,
        entries: 0,
        omitted: 0,
        checkpoints: 0,
        newest: None,
        saved_checked: None,
    };
    let signature = loop {
        let after = state.last.as_ref().map(|l| l.seq);
        if !read_line(&mut reader, &mut buf, &mut line_no, after)? {
            state.finish()?;
            return Err(VerifyError::Truncated {
                line: line_no,
                after: after.unwrap_or(0),
                expected_last: header.last,
            });
        }
        let text = text_of(&buf, line_no, after)?;
        if text.starts_with("{\"seq\":") {
            state.entry(text, line_no)?;
        } else {
            let parsed =
                serde_json::from_str::<BundleLine>(text).map_err(|err| VerifyError::Malformed {
                    line: line_no,
                    after,
                    reason: format!("not a line of an audit export: {err}"),
                })?;
            match parsed {
                BundleLine::Checkpoint(cp) => state.checkpoint(cp, line_no)?,
                BundleLine::Omitted(run) => state.omitted(&run, line_no)?,
                BundleLine::ClienteleAuditExport(_) => {
                    return Err(VerifyError::Malformed {
                        line: line_no,
                        after,
                        reason: "a second header: two exports were joined".into(),
                    });
                }
                BundleLine::Signature(signature) => break signature,
            }
        }
        digest.update(&buf);
    };

    state.finish()?;
    let signature_line = line_no;
    check_signature(
        &signature,
        signature_line,
        &key,
        &fingerprint,
        &digest.finish(),
    )?;
    let after = state.last.as_ref().map(|l| l.seq);
    if read_line(&mut reader, &mut buf, &mut line_no, after)? {
        return Err(VerifyError::Malformed {
            line: line_no,
            after,
            reason: format!("lines follow the closing signature (line {signature_line})"),
        });
    }
    state.matches_header(&header)?;
    Ok(state.report(header, key.clone(), key_from_header, signature.time))
}

/// The header, line 1.
fn read_header(buf: &[u8]) -> Result<BundleHeader, VerifyError> {
    let not_a_bundle = |reason: String| VerifyError::NotABundle { reason };
    let text = text_of(buf, 1, None).map_err(|err| not_a_bundle(err.to_string()))?;
    let BundleLine::ClienteleAuditExport(header) =
        serde_json::from_str::<BundleLine>(text).map_err(|err| not_a_bundle(err.to_string()))?
    else {
        return Err(not_a_bundle("it is another kind of line".into()));
    };
    if header.version != BUNDLE_VERSION {
        return Err(not_a_bundle(format!(
            "layout version {} is not supported (this verifier reads version {BUNDLE_VERSION})",
            header.version
        )));
    }
    Ok(header)
}

/// Reads one line, with its `\n`, into `buf`; false at the end of the file.
fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    line_no: &mut u64,
    after: Option<u64>,
) -> Result<bool, VerifyError> {
    buf.clear();
    let read = reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|source| VerifyError::Read {
            line: *line_no + 1,
            source,
        })?;
    if read == 0 {
        return Ok(false);
    }
    *line_no += 1;
    if buf.last() != Some(&b'\n') {
        if buf.len() > MAX_LINE {
            return Err(VerifyError::Malformed {
                line: *line_no,
                after,
                reason: "longer than any line of an audit export (1 MiB)".into(),
            });
        }
        return Err(VerifyError::CutShort {
            line: *line_no,
            after,
        });
    }
    Ok(true)
}

/// The line as text, without its `\n`.
fn text_of(buf: &[u8], line: u64, after: Option<u64>) -> Result<&str, VerifyError> {
    let bytes = &buf[..buf.len().saturating_sub(1)];
    if bytes.ends_with(b"\r") {
        return Err(VerifyError::Malformed {
            line,
            after,
            reason: "it ends in CR LF: the file was converted (for example by a Windows editor \
                     or mail program); verify the original"
                .into(),
        });
    }
    std::str::from_utf8(bytes).map_err(|_| VerifyError::Malformed {
        line,
        after,
        reason: "not UTF-8 text".into(),
    })
}

/// Best guess at the sequence number of a line that does not parse as an entry.
fn guess_seq(text: &str) -> Option<u64> {
    let digits: String = text
        .strip_prefix("{\"seq\":")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_signature(
    signature: &BundleSignature,
    line: u64,
    key: &PublicKey,
    fingerprint: &str,
    digest: &ring::digest::Digest,
) -> Result<(), VerifyError> {
    let bad = |reason: String| VerifyError::BadSignature { line, reason };
    if signature.lines != line - 1 {
        return Err(bad(format!(
            "counts {} lines before it, the file has {}: lines were added or removed",
            signature.lines,
            line - 1
        )));
    }
    if signature.sha256 != data_encoding::HEXLOWER.encode(digest.as_ref()) {
        return Err(bad(
            "does not match the file's content: the file was changed after it was exported \
             (a line edited, or entries hidden as omitted)"
                .into(),
        ));
    }
    if signature.key != fingerprint {
        return Err(bad(format!(
            "was made by another key ({}, expected {fingerprint})",
            signature.key
        )));
    }
    let message = BundleSignature::message(signature.lines, &signature.sha256, &signature.time);
    if !verify_signature(key, message.as_bytes(), &signature.value) {
        return Err(bad("is not a valid signature of this key".into()));
    }
    Ok(())
}

/// The verification state between lines.
struct State<'a> {
    key: &'a PublicKey,
    fingerprint: &'a str,
    saved: Option<&'a Checkpoint>,
    /// The checkpoint before the first entry, when the export does not start at entry 1.
    anchor: Option<Checkpoint>,
    last: Option<Last>,
    /// The sequence number due next.
    next: Option<u64>,
    entries: u64,
    omitted: u64,
    checkpoints: u64,
    newest: Option<Checkpoint>,
    saved_checked: Option<u64>,
}

impl State<'_> {
    /// Checks that an entry or run starting at `seq` comes where it should.
    fn position(&self, seq: u64, line: u64) -> Result<(), VerifyError> {
        match self.next {
            Some(due) if seq == due => Ok(()),
            Some(due) if seq > due => Err(VerifyError::Missing {
                seq: due,
                found: seq,
                line,
            }),
            Some(due) => Err(VerifyError::OutOfOrder {
                seq,
                expected: due,
                line,
            }),
            None if seq == 1 => Ok(()),
            None => Err(VerifyError::Unanchored { seq, line }),
        }
    }

    fn entry(&mut self, text: &str, line: u64) -> Result<(), VerifyError> {
        let entry = Entry::parse_line(text).map_err(|err| match guess_seq(text) {
            Some(seq) => VerifyError::BadEntry {
                seq,
                line,
                reason: err.to_string(),
            },
            None => VerifyError::Malformed {
                line,
                after: self.last.as_ref().map(|l| l.seq),
                reason: err.to_string(),
            },
        })?;
        let seq = entry.seq;
        self.position(seq, line)?;
        match (&self.last, &self.anchor) {
            (Some(last), _) if entry.prev != last.hash => {
                return Err(VerifyError::BrokenLink {
                    seq: last.seq,
                    next: seq,
                    line,
                });
            }
            (None, Some(anchor)) if entry.prev != anchor.head => {
                return Err(VerifyError::AnchorMismatch { seq, line });
            }
            (None, None) if entry.prev != GENESIS => {
                return Err(VerifyError::BadEntry {
                    seq,
                    line,
                    reason: "entry 1 must link to 64 zeroes".into(),
                });
            }
            _ => {}
        }
        if let Some(saved) = self.saved
            && saved.size == seq
        {
            if saved.head != entry.hash {
                return Err(VerifyError::Fork { seq });
            }
            self.saved_checked = Some(seq);
        }
        self.entries += 1;
        self.next = Some(seq + 1);
        self.last = Some(Last {
            seq,
            hash: entry.hash,
            full: true,
            covered: false,
        });
        Ok(())
    }

    fn omitted(&mut self, run: &Omitted, line: u64) -> Result<(), VerifyError> {
        let after = self.last.as_ref().map(|l| l.seq);
        if run.from > run.to || run.from == 0 || !is_hash(&run.hash) {
            return Err(VerifyError::Malformed {
                line,
                after,
                reason: "an omitted run needs 1 <= from <= to and a 64-digit lower-case hex hash"
                    .into(),
            });
        }
        self.position(run.from, line)?;
        if let Some(last) = &self.last
            && last.full
            && !last.covered
        {
            return Err(VerifyError::Uncovered {
                seq: last.seq,
                reason: "yet omitted entries follow, so nothing binds it to a signature",
            });
        }
        if let Some(saved) = self.saved
            && (run.from..=run.to).contains(&saved.size)
        {
            if saved.size != run.to {
                return Err(VerifyError::SavedUnusable {
                    saved: saved.size,
                    reason: format!(
                        "its entry is omitted from this export (entries {} to {}); export the \
                         range without a filter to compare",
                        run.from, run.to
                    ),
                });
            }
            if saved.head != run.hash {
                return Err(VerifyError::Fork { seq: saved.size });
            }
            self.saved_checked = Some(saved.size);
        }
        self.omitted += run.to - run.from + 1;
        self.next = Some(run.to + 1);
        self.last = Some(Last {
            seq: run.to,
            hash: run.hash.clone(),
            full: false,
            covered: false,
        });
        Ok(())
    }

    fn checkpoint(&mut self, cp: Checkpoint, line: u64) -> Result<(), VerifyError> {
        let bad = |reason: String| VerifyError::Checkpoint {
            seq: cp.size,
            line,
            reason,
        };
        if cp.key != self.fingerprint {
            return Err(bad(format!(
                "signed by another key ({}, expected {})",
                cp.key, self.fingerprint
            )));
        }
        if !cp.verify(self.key) {
            return Err(bad("its signature does not verify under the key".into()));
        }
        match &mut self.last {
            None => {
                if self.anchor.is_some() || cp.size == 0 {
                    return Err(bad(
                        "only one checkpoint may stand before the first entry".into()
                    ));
                }
                if let Some(saved) = self.saved {
                    if saved.size < cp.size {
                        return Err(VerifyError::SavedUnusable {
                            saved: saved.size,
                            reason: format!(
                                "this export starts after it (at entry {}); export a range that \
                                 starts at or before entry {} to compare",
                                cp.size + 1,
                                saved.size + 1
                            ),
                        });
                    }
                    if saved.size == cp.size {
                        if saved.head != cp.head {
                            return Err(VerifyError::Fork { seq: cp.size });
                        }
                        self.saved_checked = Some(cp.size);
                    }
                }
                self.next = Some(cp.size + 1);
                self.anchor = Some(cp.clone());
            }
            Some(last) => {
                if cp.size != last.seq {
                    return Err(bad(format!(
                        "it stands after entry {}, but a checkpoint line follows the entry it \
                         covers",
                        last.seq
                    )));
                }
                if cp.head != last.hash {
                    return Err(VerifyError::Checkpoint {
                        seq: cp.size,
                        line,
                        reason: format!(
                            "entry {}'s hash is not the signed one: entry {} was changed",
                            cp.size, cp.size
                        ),
                    });
                }
                last.covered = true;
            }
        }
        self.checkpoints += 1;
        self.newest = Some(cp);
        Ok(())
    }

    fn report(
        self,
        header: BundleHeader,
        key: PublicKey,
        key_from_header: bool,
        signed_at: String,
    ) -> VerifyReport {
        let (first_seq, last_seq) = match (&self.anchor, &self.last) {
            (_, None) => (0, 0),
            (Some(anchor), Some(last)) => (anchor.size + 1, last.seq),
            (None, Some(last)) => (1, last.seq),
        };
        VerifyReport {
            header,
            key,
            key_from_header,
            entries: self.entries,
            omitted: self.omitted,
            first_seq,
            last_seq,
            checkpoints: self.checkpoints,
            newest_checkpoint: self.newest,
            saved_checked: self.saved_checked,
            signed_at,
        }
    }

    /// The sequence number of the last line of the span (the anchor's when no entry follows).
    fn last_seq(&self) -> u64 {
        match (&self.last, &self.anchor) {
            (Some(last), _) => last.seq,
            (None, Some(anchor)) => anchor.size,
            (None, None) => 0,
        }
    }

    /// The checks due at the end of the entries.
    fn finish(&self) -> Result<(), VerifyError> {
        if let Some(last) = &self.last
            && !last.covered
        {
            return Err(VerifyError::Uncovered {
                seq: last.seq,
                reason: "yet it is the last: the export was cut short, or entries were added",
            });
        }
        let last = self.last_seq();
        if let Some(saved) = self.saved {
            if saved.size > last {
                return Err(VerifyError::CutOff {
                    saved: saved.size,
                    last,
                });
            }
            if self.saved_checked.is_none() {
                return Err(VerifyError::SavedUnusable {
                    saved: saved.size,
                    reason: "its entry is not in this export".into(),
                });
            }
        }
        Ok(())
    }

    /// The span the header states must be the one the file holds.
    fn matches_header(&self, header: &BundleHeader) -> Result<(), VerifyError> {
        let first = self.anchor.as_ref().map_or(1, |a| a.size + 1);
        let last = self.last_seq();
        if (header.first, header.last) == (first, last) {
            Ok(())
        } else {
            Err(VerifyError::Malformed {
                line: 1,
                after: None,
                reason: format!(
                    "the header says entries {} to {}, the file holds {first} to {last}",
                    header.first, header.last
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_gives_an_error_not_a_panic() {
        for input in [
            &b""[..],
            b"\n",
            b"{",
            b"{}\n",
            b"\xff\xfe\n",
            b"{\"clientele_audit_export\":{}}\n",
            b"{\"clientele_audit_export\":{\"version\":1,\"public_key\":\"x\",\"selection\":{\"from_seq\":1,\"to_seq\":1,\"filtered\":false},\"first\":1,\"last\":1,\"created\":\"t\"}}\n",
        ] {
            let result = verify(input, None, None);
            assert!(result.is_err(), "{input:?}");
        }
    }

    #[test]
    fn guesses_the_sequence_number_of_a_broken_entry() {
        assert_eq!(guess_seq("{\"seq\":17,\"time\":"), Some(17));
        assert_eq!(guess_seq("{\"time\":1}"), None);
    }
}
