//! Exports of the trail: the verifiable JSON Lines bundle, and CSV, CEF and RFC 5424 syslog
//! renderings of the same entries for the auditor's tools.
//!
//! # The bundle (`jsonl`)
//!
//! The bundle is the verifiable artefact ([`super::verify`] checks it offline). One JSON
//! object per line, `\n` line ends, in this order:
//!
//! 1. the header, `{"clientele_audit_export":{"version":1,"public_key":…,"selection":…,
//!    "first":…,"last":…,"created":…}}`;
//! 2. when the bundle does not start at entry 1, the *anchor*: the signed checkpoint at
//!    `first - 1`, so the first entry's `prev` is a signed hash;
//! 3. every sequence number from `first` to `last`, in order: an entry that matches the
//!    selection as its canonical line, byte for byte as stored (see [`super::entry`]); a run
//!    of entries that do not as one line `{"omitted":{"from":A,"to":B,"hash":H}}`, where `H`
//!    is the hash of entry `B` (the next entry's `prev`). A checkpoint line
//!    `{"checkpoint":{…}}` stands right after the entry (or run) whose sequence number is its
//!    size: every stored checkpoint of the span (runs are split there, so each can be
//!    checked), plus one signed at export time after every matching entry that is followed
//!    by an omitted run, because an omitted entry's hash cannot be recomputed and so cannot
//!    carry the chain's proof back to the entries before it. The last line of the span is
//!    always followed by a checkpoint ([`export`] signs the head first);
//! 4. the closing signature, `{"signature":{"lines":N,"sha256":D,"time":T,"key":F,
//!    "value":S}}`: `D` is the SHA-256 (hex) of every byte before this line, `N` the number
//!    of lines before it, `S` the Ed25519 signature (base64) of
//!    `clientele-audit-export-v1\n{N}\n{D}\n{T}\n`. It proves the file is whole, header
//!    and choice of omitted entries included.
//!
//! # The renderings
//!
//! CSV (RFC 4180: every cell quoted, CR LF line ends, a header row), CEF (`CEF:0|…`) and
//! RFC 5424 syslog give the matching entries only, one line each whatever the values hold:
//! control characters never appear raw (they become `\n`-style escapes where the format
//! defines them, otherwise the Unicode control pictures `␊ ␍ ␉ ␀`…), and each format's own
//! special characters are escaped as its specification says. CSV cells that a spreadsheet
//! would run as a formula (starting with `=` `+` `-` `@`, tab or CR) start with `'`.

use std::fmt;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::entry::{self, Entry, GENESIS};
use super::event::{Action, Actor, Event, Outcome};
use super::{AUDIT, Audit};
use crate::store::StoreError;

/// The bundle's header names itself with this member.
pub const BUNDLE_TAG: &str = "clientele_audit_export";
/// Version of the bundle layout.
pub const BUNDLE_VERSION: u32 = 1;
/// First line of the message the closing signature covers.
pub const BUNDLE_SIGNATURE_CONTEXT: &str = "clientele-audit-export-v1";

/// Entries between two progress reports.
const PROGRESS_EVERY: u64 = 1024;

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The verifiable bundle: canonical entries, checkpoints, the public key, a signature.
    Jsonl,
    /// RFC 4180 comma-separated values, for spreadsheets.
    Csv,
    /// `ArcSight` Common Event Format, for SIEMs.
    Cef,
    /// RFC 5424 syslog lines with structured data, for log collectors.
    Syslog,
}

impl Format {
    pub const ALL: [Self; 4] = [Self::Jsonl, Self::Csv, Self::Cef, Self::Syslog];

    /// The name used on the command line and in URLs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
            Self::Cef => "cef",
            Self::Syslog => "syslog",
        }
    }

    /// File name extension, without the dot.
    #[must_use]
    pub const fn extension(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
            Self::Cef => "cef",
            Self::Syslog => "log",
        }
    }

    /// HTTP content type of a download.
    #[must_use]
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Jsonl => "application/x-ndjson; charset=utf-8",
            Self::Csv => "text/csv; charset=utf-8; header=present",
            Self::Cef | Self::Syslog => "text/plain; charset=utf-8",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is not one of `jsonl`, `csv`, `cef`, `syslog`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown export format {0:?}: use jsonl, csv, cef or syslog")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownFormat(s.chars().take(40).collect()))
    }
}

/// Which entries an export gives in full: sequence numbers `from_seq..=to_seq` that pass
/// `filter` (all of them without one).
pub struct Selection {
    pub from_seq: u64,
    pub to_seq: u64,
    pub filter: Option<Filter>,
}

/// A predicate on entries (the audit page's filters).
pub type Filter = Box<dyn Fn(&Entry) -> bool + Send + Sync>;

impl Selection {
    /// Every entry.
    #[must_use]
    pub fn all() -> Self {
        Self::range(1, u64::MAX)
    }

    /// Entries `from_seq..=to_seq`, unfiltered.
    #[must_use]
    pub fn range(from_seq: u64, to_seq: u64) -> Self {
        Self {
            from_seq,
            to_seq,
            filter: None,
        }
    }

    /// Whether `entry` is selected.
    #[must_use]
    pub fn matches(&self, entry: &Entry) -> bool {
        (self.from_seq..=self.to_seq).contains(&entry.seq)
            && self.filter.as_ref().is_none_or(|keep| keep(entry))
    }
}

impl fmt::Debug for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selection")
            .field("from_seq", &self.from_seq)
            .field("to_seq", &self.to_seq)
            .field("filtered", &self.filter.is_some())
            .finish()
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSummary {
    /// Entries written in full (those the selection matches).
    pub entries: u64,
    /// Bundle only: entries given by their hash alone.
    pub omitted: u64,
    /// Sequence numbers of the first and last entries written in full.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Bundle only: checkpoint lines written (the anchor included).
    pub checkpoints: u64,
    pub bytes: u64,
}

impl ExportSummary {
    /// The reason of the [`Action::AuditExported`] entry for this export.
    #[must_use]
    pub fn describe(&self, format: Format) -> String {
        match (self.first_seq, self.last_seq) {
            (Some(first), Some(last)) => format!(
                "{format} export: {} entries between {first} and {last}",
                self.entries
            ),
            _ => format!("{format} export: no entries"),
        }
    }
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    /// The stored trail fails a check; nothing is signed over it.
    #[error("audit entry {seq} failed its check, so the export was stopped: {reason}")]
    Broken { seq: u64, reason: String },
}

/// The header line of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleHeader {
    pub version: u32,
    /// The signing key, text form (`clientele-audit-ed25519 …`).
    pub public_key: String,
    pub selection: HeaderSelection,
    /// Sequence numbers of the first and last lines of the span.
    pub first: u64,
    pub last: u64,
    pub created: String,
}

/// The selection as the header states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSelection {
    pub from_seq: u64,
    pub to_seq: u64,
    /// Whether a filter beyond the range chose the entries given in full.
    pub filtered: bool,
}

/// A run of entries given by the hash of its last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Omitted {
    pub from: u64,
    pub to: u64,
    pub hash: String,
}

/// The closing signature of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSignature {
    /// Lines before this one.
    pub lines: u64,
    /// SHA-256 (hex) of every byte before this line.
    pub sha256: String,
    pub time: String,
    /// Fingerprint of the signing key.
    pub key: String,
    /// Ed25519 signature (base64) of [`BundleSignature::message`].
    pub value: String,
}

impl BundleSignature {
    /// The bytes the signature covers.
    #[must_use]
    pub fn message(lines: u64, sha256: &str, time: &str) -> String {
        format!("{BUNDLE_SIGNATURE_CONTEXT}\n{lines}\n{sha256}\n{time}\n")
    }
}

/// One line of a bundle other than an entry: `{"<kind>":{…}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BundleLine {
    ClienteleAuditExport(BundleHeader),
    Checkpoint(Checkpoint),
    Omitted(Omitted),
    Signature(BundleSignature),
}

impl BundleLine {
    fn to_line(&self) -> Result<String, ExportError> {
        serde_json::to_string(self).map_err(|err| ExportError::Io(std::io::Error::other(err)))
    }
}

/// Sequence numbers of the entries with times in `from..to` (`from` included, `to` not;
/// either end open when `None`), found by binary search since times never go back. An empty
/// range has `from_seq > to_seq`.
pub fn seq_range_for_times(
    audit: &Audit,
    from: Option<jiff::Timestamp>,
    to: Option<jiff::Timestamp>,
) -> Result<(u64, u64), StoreError> {
    let head = audit.head()?.seq;
    let Some(first) = first_seq(audit)? else {
        return Ok((1, 0));
    };
    let end = head + 1;
    let lo = match from {
        Some(from) => first_at_or_after(audit, first, end, from)?,
        None => first,
    };
    let hi_excl = match to {
        Some(to) => first_at_or_after(audit, lo, end, to)?,
        None => end,
    };
    if hi_excl <= lo {
        Ok((lo, lo - 1))
    } else {
        Ok((lo, hi_excl - 1))
    }
}

/// The first sequence number in `lo..hi` whose entry's time is at or after `time` (`hi` when
/// none is).
fn first_at_or_after(
    audit: &Audit,
    mut lo: u64,
    mut hi: u64,
    time: jiff::Timestamp,
) -> Result<u64, StoreError> {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if entry_time(audit, mid, hi)? < time {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The time of entry `seq` (or of the next one present below `limit`).
fn entry_time(audit: &Audit, seq: u64, limit: u64) -> Result<jiff::Timestamp, StoreError> {
    let entry = audit
        .entries(seq, limit.saturating_sub(1).max(seq), false)
        .next()
        .transpose()?
        .ok_or_else(|| StoreError::Decode(format!("audit entry {seq} is missing")))?;
    entry
        .timestamp()
        .ok_or_else(|| StoreError::Decode(format!("audit entry {}: unreadable time", entry.seq)))
}

/// The oldest entry still kept (retention drops the oldest).
pub(crate) fn first_seq(audit: &Audit) -> Result<Option<u64>, StoreError> {
    audit.store().log_first_seq(AUDIT)
}

/// Writes the selected entries in `format` to `out`, calling `progress(done, total)` now and
/// then. For [`Format::Jsonl`] it first signs a checkpoint of the head, then writes the
/// bundle from just after the newest checkpoint below the selection up to that checkpoint.
///
/// Blocking: call it from a blocking thread. Recording the export in the trail is the
/// caller's part (with its own actor); [`export_to_file`] does it for the command line.
pub fn export(
    audit: &Audit,
    selection: &Selection,
    format: Format,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExportSummary, ExportError> {
    match format {
        Format::Jsonl => {
            let end = audit.checkpoint_now()?.map_or(0, |cp| cp.size);
            let start = span_start(audit, selection.from_seq, end)?;
            write_bundle(audit, selection, start, end, out, progress)
        }
        Format::Csv | Format::Cef | Format::Syslog => {
            render(audit, selection, format, out, progress)
        }
    }
}

/// Where a bundle ending at `end` and selecting from `from_seq` starts: right after the newest
/// checkpoint below the selection, or at entry 1.
fn span_start(audit: &Audit, from_seq: u64, end: u64) -> Result<u64, ExportError> {
    let Some(first) = first_seq(audit)? else {
        return Ok(1);
    };
    let want = from_seq.max(first).min(end + 1).max(1);
    if want == 1 {
        return Ok(1);
    }
    match audit.checkpoint_at_or_below(want - 1)? {
        Some(cp) if cp.size + 1 >= first => Ok(cp.size + 1),
        _ if first == 1 => Ok(1),
        _ => Err(ExportError::Broken {
            seq: first,
            reason: "no signed checkpoint anchors the oldest kept entry".into(),
        }),
    }
}

/// Counts and hashes what goes through it.
struct Counting<'a> {
    out: BufWriter<&'a mut dyn Write>,
    digest: ring::digest::Context,
    bytes: u64,
    lines: u64,
}

impl<'a> Counting<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        Self {
            out: BufWriter::with_capacity(256 * 1024, out),
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
            lines: 0,
        }
    }

    fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.out.write_all(line)?;
        self.out.write_all(b"\n")?;
        self.digest.update(line);
        self.digest.update(b"\n");
        self.bytes += line.len() as u64 + 1;
        self.lines += 1;
        Ok(())
    }
}

/// The bundle of entries `start..=end`; `end` must be a checkpoint's size (or 0), `start` 1
/// or right after one.
pub(crate) fn write_bundle(
    audit: &Audit,
    selection: &Selection,
    start: u64,
    end: u64,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExportSummary, ExportError> {
    let public = audit.public_key();
    let mut bundle = Bundle {
        out: Counting::new(out),
        summary: ExportSummary::default(),
        key: audit.signing_key(),
        created: entry::format_time(audit.now()),
        run: None,
        uncovered: None,
    };
    let header = BundleLine::ClienteleAuditExport(BundleHeader {
        version: BUNDLE_VERSION,
        public_key: public.to_text(),
        selection: HeaderSelection {
            from_seq: selection.from_seq.clamp(1, end.max(1)),
            to_seq: selection.to_seq.min(end),
            filtered: selection.filter.is_some(),
        },
        first: start,
        last: end,
        created: bundle.created.clone(),
    });
    bundle.out.line(header.to_line()?.as_bytes())?;

    let total = (end + 1).saturating_sub(start);
    let mut stored = audit
        .checkpoints(start.saturating_sub(1), end)?
        .into_iter()
        .peekable();
    let mut prev = GENESIS.to_owned();
    if start > 1 {
        let anchor = stored
            .next_if(|cp| cp.size == start - 1)
            .ok_or_else(|| broken(start, "no signed checkpoint just before it"))?;
        if !anchor.verify(&public) {
            return Err(broken(
                start - 1,
                "its stored checkpoint has a bad signature",
            ));
        }
        prev.clone_from(&anchor.head);
        bundle.checkpoint(anchor)?;
    }

    let mut expected = start;
    audit.read_checked(start, end, |checked| {
        let seq = checked.seq;
        if seq != expected {
            return Err(broken(expected, "missing from the store"));
        }
        let entry = checked.entry.map_err(|reason| broken(seq, &reason))?;
        let line = std::str::from_utf8(&checked.line).map_err(|_| broken(seq, "not UTF-8"))?;
        if entry.seq != seq {
            return Err(broken(seq, "stored under another sequence number"));
        }
        if entry.prev != prev {
            return Err(broken(seq, "does not link to the entry before it"));
        }
        if selection.matches(&entry) {
            bundle.full(line, &entry)?;
        } else {
            bundle.omit(&entry)?;
        }
        if let Some(cp) = stored.next_if(|cp| cp.size == seq) {
            if cp.head != entry.hash {
                return Err(broken(seq, "its stored checkpoint names another hash"));
            }
            if !cp.verify(&public) {
                return Err(broken(seq, "its stored checkpoint has a bad signature"));
            }
            bundle.checkpoint(cp)?;
        }
        prev = entry.hash;
        expected += 1;
        if (expected - start).is_multiple_of(PROGRESS_EVERY) {
            progress(expected - start, total);
        }
        Ok(())
    })?;
    if expected != end + 1 {
        return Err(broken(expected, "missing from the store"));
    }
    progress(total, total);
    bundle.close(&public)
}

fn broken(seq: u64, reason: &str) -> ExportError {
    ExportError::Broken {
        seq,
        reason: reason.to_owned(),
    }
}

/// A bundle being written.
struct Bundle<'a> {
    out: Counting<'a>,
    summary: ExportSummary,
    key: &'a super::SigningKey,
    created: String,
    /// The run of omitted entries being gathered.
    run: Option<Omitted>,
    /// The newest entry written in full that no checkpoint line follows yet.
    uncovered: Option<(u64, String)>,
}

impl Bundle<'_> {
    /// An entry the selection matches: its line as stored.
    fn full(&mut self, line: &str, entry: &Entry) -> Result<(), ExportError> {
        self.flush()?;
        self.out.line(line.as_bytes())?;
        self.summary.entries += 1;
        self.summary.first_seq.get_or_insert(entry.seq);
        self.summary.last_seq = Some(entry.seq);
        self.uncovered = Some((entry.seq, entry.hash.clone()));
        Ok(())
    }

    /// An entry the selection leaves out: joins the current run.
    fn omit(&mut self, entry: &Entry) -> Result<(), ExportError> {
        // The chain cannot be followed back through an omitted entry, so the full entry
        // before it gets a checkpoint of its own (a stored one would already follow it).
        self.cover()?;
        match &mut self.run {
            Some(run) => {
                run.to = entry.seq;
                run.hash.clone_from(&entry.hash);
            }
            None => {
                self.run = Some(Omitted {
                    from: entry.seq,
                    to: entry.seq,
                    hash: entry.hash.clone(),
                });
            }
        }
        self.summary.omitted += 1;
        Ok(())
    }

    /// A checkpoint line, right after the entry (or run) it covers.
    fn checkpoint(&mut self, cp: Checkpoint) -> Result<(), ExportError> {
        self.flush()?;
        self.out
            .line(BundleLine::Checkpoint(cp).to_line()?.as_bytes())?;
        self.summary.checkpoints += 1;
        self.uncovered = None;
        Ok(())
    }

    /// Signs a checkpoint of the newest full entry if none follows it yet.
    fn cover(&mut self) -> Result<(), ExportError> {
        if let Some((size, head)) = self.uncovered.take() {
            let cp = self.key.checkpoint(size, &head, &self.created);
            self.checkpoint(cp)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        if let Some(run) = self.run.take() {
            self.out
                .line(BundleLine::Omitted(run).to_line()?.as_bytes())?;
        }
        Ok(())
    }

    /// Ends the span and writes the closing signature.
    fn close(mut self, public: &super::PublicKey) -> Result<ExportSummary, ExportError> {
        self.flush()?;
        self.cover()?;
        let lines = self.out.lines;
        let digest = data_encoding::HEXLOWER.encode(self.out.digest.clone().finish().as_ref());
        let value = self
            .key
            .sign(BundleSignature::message(lines, &digest, &self.created).as_bytes());
        let signature = BundleLine::Signature(BundleSignature {
            lines,
            sha256: digest,
            time: self.created,
            key: public.fingerprint(),
            value,
        });
        self.out.line(signature.to_line()?.as_bytes())?;
        self.out.out.flush()?;
        self.summary.bytes = self.out.bytes;
        Ok(self.summary)
    }
}

/// CSV, CEF or syslog lines of the selected entries.
fn render(
    audit: &Audit,
    selection: &Selection,
    format: Format,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExportSummary, ExportError> {
    let mut out = Counting::new(out);
    let mut summary = ExportSummary::default();
    let head = audit.head()?.seq;
    let first = first_seq(audit)?.unwrap_or(1);
    let (from, to) = (selection.from_seq.max(first), selection.to_seq.min(head));
    let host = hostname();
    if format == Format::Csv {
        out.out.write_all(CSV_HEADER.as_bytes())?;
        out.bytes += CSV_HEADER.len() as u64;
    }
    if from <= to {
        let total = to - from + 1;
        let mut done = 0;
        for entry in audit.entries(from, to, false) {
            let entry = entry?;
            done += 1;
            if done % PROGRESS_EVERY == 0 {
                progress(done, total);
            }
            if !selection.matches(&entry) {
                continue;
            }
            let line = match format {
                Format::Csv => csv_line(&entry),
                Format::Cef => cef_line(&entry) + "\n",
                Format::Syslog => syslog_line(&entry, &host) + "\n",
                Format::Jsonl => entry.to_line().unwrap_or_default() + "\n",
            };
            out.out.write_all(line.as_bytes())?;
            out.bytes += line.len() as u64;
            summary.entries += 1;
            summary.first_seq.get_or_insert(entry.seq);
            summary.last_seq = Some(entry.seq);
        }
        progress(total, total);
    }
    out.out.flush()?;
    summary.bytes = out.bytes;
    Ok(summary)
}

/// Exports to a new file at `path` (written beside it, then renamed into place; mode 0600)
/// and records the export in the trail as done by `actor`: first the attempt, so nothing
/// leaves without its entry, then a failure entry if it did not finish.
pub fn export_to_file(
    audit: &Audit,
    selection: &Selection,
    format: Format,
    path: &Path,
    actor: &Actor,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExportSummary, ExportError> {
    let range = if selection.to_seq == u64::MAX {
        format!("entries from {}", selection.from_seq)
    } else {
        format!("entries {} to {}", selection.from_seq, selection.to_seq)
    };
    let target = path.display().to_string();
    audit.record_blocking(
        Event::new(Action::AuditExported)
            .by(actor.clone())
            .target("file", &target)
            .reason(format!("{format} export of {range} to {target}")),
    )?;
    let result = write_file(path, |out| export(audit, selection, format, out, progress));
    if let Err(err) = &result {
        // The failure is worth its own entry; if even that cannot be written, the error
        // already on its way says enough.
        let _ = audit.record_blocking(
            Event::new(Action::AuditExported)
                .by(actor.clone())
                .target("file", &target)
                .outcome(Outcome::Failure)
                .reason(format!("{format} export of {range} failed: {err}")),
        );
    }
    result
}

/// Writes a new private file through a temporary one beside it, synced, then renamed.
pub(crate) fn write_file<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<T, ExportError>,
) -> Result<T, ExportError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = temporary_path(path);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let value = write(&mut file)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        crate::store::files::sync_dir(path)?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

// ---- Renderings ---------------------------------------------------------------------------

/// The CSV header row.
pub const CSV_HEADER: &str = "\"seq\",\"time\",\"action\",\"outcome\",\"actor_kind\",\"actor_id\",\
\"actor_name\",\"actor_role\",\"address\",\"target_type\",\"target_id\",\"store\",\"reason\",\
\"fields\",\"prev\",\"hash\"\r\n";

/// One CSV record (with its CR LF).
#[must_use]
pub fn csv_line(entry: &Entry) -> String {
    let seq = entry.seq.to_string();
    let fields = entry.fields.join(" ");
    let cells: [&str; 16] = [
        &seq,
        &entry.time,
        &entry.action,
        entry.outcome.as_str(),
        entry.actor_kind.as_str(),
        &entry.actor_id,
        &entry.actor_name,
        entry.actor_role.as_deref().unwrap_or(""),
        entry.address.as_deref().unwrap_or(""),
        entry.target_type.as_deref().unwrap_or(""),
        entry.target_id.as_deref().unwrap_or(""),
        entry.store.as_deref().unwrap_or(""),
        &entry.reason,
        &fields,
        &entry.prev,
        &entry.hash,
    ];
    let mut line = String::with_capacity(512);
    for (n, cell) in cells.iter().enumerate() {
        if n > 0 {
            line.push(',');
        }
        csv_cell(&mut line, cell);
    }
    line.push_str("\r\n");
    line
}

fn csv_cell(out: &mut String, value: &str) {
    out.push('"');
    // A spreadsheet runs a cell starting with these as a formula: make it text.
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        out.push('\'');
    }
    for c in value.chars() {
        match c {
            '"' => out.push_str("\"\""),
            c if is_unsafe_control(c) => out.push(control_picture(c)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One CEF line (no line end).
#[must_use]
pub fn cef_line(entry: &Entry) -> String {
    let name = match Action::from_code(&entry.action) {
        Some(action) => action.describe(),
        None => entry.action.as_str(),
    };
    let severity = match entry.outcome {
        Outcome::Success => 3,
        Outcome::Failure => 6,
        Outcome::Denied => 8,
    };
    let mut line = String::with_capacity(512);
    line.push_str("CEF:0|Clientele|Clientele|");
    cef_header(&mut line, env!("CARGO_PKG_VERSION"));
    line.push('|');
    cef_header(&mut line, &entry.action);
    line.push('|');
    cef_header(&mut line, name);
    line.push('|');
    line.push_str(&severity.to_string());
    line.push('|');

    let mut ext: Vec<(&str, String)> = vec![
        ("externalId", entry.seq.to_string()),
        (
            "rt",
            entry
                .timestamp()
                .map_or_else(|| entry.time.clone(), |t| t.as_millisecond().to_string()),
        ),
        ("act", entry.action.clone()),
        ("outcome", entry.outcome.as_str().to_owned()),
        ("cs1Label", "actorKind".into()),
        ("cs1", entry.actor_kind.as_str().to_owned()),
        ("suid", entry.actor_id.clone()),
        ("suser", entry.actor_name.clone()),
    ];
    if let Some(role) = &entry.actor_role {
        ext.push(("spriv", role.clone()));
    }
    if let Some(address) = &entry.address {
        let key = if address.parse::<std::net::IpAddr>().is_ok() {
            "src"
        } else {
            "shost"
        };
        ext.push((key, address.clone()));
    }
    for (label, key, value) in [
        ("targetType", "cs2", &entry.target_type),
        ("targetId", "cs3", &entry.target_id),
        ("store", "cs4", &entry.store),
    ] {
        if let Some(value) = value {
            ext.push((
                match key {
                    "cs2" => "cs2Label",
                    "cs3" => "cs3Label",
                    _ => "cs4Label",
                },
                label.into(),
            ));
            ext.push((key, value.clone()));
        }
    }
    if !entry.reason.is_empty() {
        ext.push(("reason", entry.reason.clone()));
    }
    if !entry.fields.is_empty() {
        ext.push(("cs5Label", "fields".into()));
        ext.push(("cs5", entry.fields.join(" ")));
    }
    ext.push(("cs6Label", "entryHash".into()));
    ext.push(("cs6", entry.hash.clone()));
    for (n, (key, value)) in ext.iter().enumerate() {
        if n > 0 {
            line.push(' ');
        }
        line.push_str(key);
        line.push('=');
        cef_value(&mut line, value);
    }
    line
}

/// A CEF header field: `\` and `|` escaped; no line breaks there.
fn cef_header(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            c if is_unsafe_control(c) => out.push(control_picture(c)),
            c => out.push(c),
        }
    }
}

/// A CEF extension value: `\` and `=` escaped, line breaks as `\n` and `\r`.
fn cef_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe_control(c) => out.push(control_picture(c)),
            c => out.push(c),
        }
    }
}

/// The structured-data ID of syslog lines (32473 is the private enterprise number RFC 5612
/// sets aside for examples; collectors match on the name).
pub const SYSLOG_SD_ID: &str = "clientele@32473";

/// One RFC 5424 line (no line end), facility "log audit" (13).
#[must_use]
pub fn syslog_line(entry: &Entry, hostname: &str) -> String {
    let severity = match entry.outcome {
        Outcome::Success => 6,
        Outcome::Failure | Outcome::Denied => 4,
    };
    let pri = 13 * 8 + severity;
    let mut line = String::with_capacity(640);
    line.push('<');
    line.push_str(&pri.to_string());
    line.push_str(">1 ");
    // The entry time is RFC 3339 with microseconds already; anything else is NILVALUE.
    if entry.timestamp().is_some() && entry.time.is_ascii() {
        line.push_str(&entry.time);
    } else {
        line.push('-');
    }
    line.push(' ');
    line.push_str(&header_token(hostname, 255));
    line.push_str(" clientele - ");
    line.push_str(&header_token(&entry.action, 32));
    line.push_str(" [");
    line.push_str(SYSLOG_SD_ID);
    let seq = entry.seq.to_string();
    let fields = entry.fields.join(" ");
    let params: [(&str, Option<&str>); 15] = [
        ("seq", Some(&seq)),
        ("action", Some(&entry.action)),
        ("outcome", Some(entry.outcome.as_str())),
        ("actorKind", Some(entry.actor_kind.as_str())),
        ("actorId", Some(&entry.actor_id)),
        ("actorName", Some(&entry.actor_name)),
        ("actorRole", entry.actor_role.as_deref()),
        ("address", entry.address.as_deref()),
        ("targetType", entry.target_type.as_deref()),
        ("targetId", entry.target_id.as_deref()),
        ("store", entry.store.as_deref()),
        ("reason", Some(&entry.reason)),
        ("fields", Some(&fields)),
        ("prev", Some(&entry.prev)),
        ("hash", Some(&entry.hash)),
    ];
    for (name, value) in params {
        let Some(value) = value else { continue };
        line.push(' ');
        line.push_str(name);
        line.push_str("=\"");
        for c in value.chars() {
            match c {
                '"' => line.push_str("\\\""),
                '\\' => line.push_str("\\\\"),
                ']' => line.push_str("\\]"),
                c if is_unsafe_control(c) => line.push(control_picture(c)),
                c => line.push(c),
            }
        }
        line.push('"');
    }
    line.push_str("] ");
    // MSG: a short human line, in the same escaped alphabet.
    let name = Action::from_code(&entry.action).map_or("", Action::describe);
    for c in format!("{name} ({})", entry.outcome.as_str()).chars() {
        line.push(if is_unsafe_control(c) {
            control_picture(c)
        } else {
            c
        });
    }
    line
}

/// A syslog header field: printable US-ASCII only, at most `max` characters; NILVALUE when
/// empty.
fn header_token(value: &str, max: usize) -> String {
    let token: String = value
        .chars()
        .filter(char::is_ascii_graphic)
        .take(max)
        .collect();
    if token.is_empty() { "-".into() } else { token }
}

/// This machine's name for syslog lines.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "-".into(), |name| header_token(name.trim(), 255))
}

/// Characters that must never reach a line raw: C0 and C1 controls, DEL, and the Unicode
/// line and paragraph separators.
fn is_unsafe_control(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// The visible stand-in of a control character: its Unicode control picture (`␊` for a line
/// feed), or U+FFFD for those that have none.
fn control_picture(c: char) -> char {
    match u32::from(c) {
        n @ 0..=0x1f => char::from_u32(0x2400 + n).unwrap_or('\u{fffd}'),
        0x7f => '\u{2421}',
        _ => '\u{fffd}',
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{ActorKind, Outcome};

    /// An entry whose every free-text value carries the characters that break lines and
    /// formats.
    fn nasty() -> Entry {
        let evil = "=cmd|' /C calc'!A0\n\"quoted\"\r\n|pipe| =eq= ]bracket] \\back\\slash \t\u{1}\u{7f}\u{85}\u{2028}end";
        let mut entry = Entry {
            seq: 42,
            time: "2026-12-03T19:44:17.123456Z".into(),
            action: "user.created".into(),
            outcome: Outcome::Denied,
            actor_kind: ActorKind::User,
            actor_id: "-01JX".into(),
            actor_name: evil.into(),
            actor_role: Some("admin".into()),
            address: Some("+10.0.0.1\n".into()),
            target_type: Some("user".into()),
            target_id: Some(evil.into()),
            store: None,
            reason: evil.into(),
            fields: vec!["role".into(), "email".into()],
            prev: GENESIS.into(),
            hash: String::new(),
        };
        entry.seal().unwrap();
        entry
    }

    fn one_line(line: &str) {
        let body = line.strip_suffix("\r\n").unwrap_or(line);
        assert!(
            !body.chars().any(is_unsafe_control),
            "a control character leaked: {body:?}"
        );
    }

    #[test]
    fn formats_parse_by_name_and_say_how_to_serve_them() {
        for format in Format::ALL {
            assert_eq!(format.name().parse::<Format>().unwrap(), format);
            assert_eq!(format.to_string(), format.name());
            assert!(!format.extension().is_empty());
            assert!(format.content_type().contains("charset=utf-8"));
        }
        assert_eq!(" CSV ".parse::<Format>().unwrap(), Format::Csv);
        assert!("xml".parse::<Format>().is_err());
    }

    #[test]
    fn the_bundle_stays_one_line_per_entry() {
        let entry = nasty();
        let line = entry.to_line().unwrap();
        one_line(&line);
        assert!(!line.contains('\n') && !line.contains('\r'));
        assert_eq!(Entry::parse_line(&line).unwrap(), entry);
    }

    /// Splits one RFC 4180 record into its cells; panics on anything not well formed.
    fn parse_csv_record(line: &str) -> Vec<String> {
        let body = line.strip_suffix("\r\n").expect("CR LF line end");
        let mut cells = Vec::new();
        let mut chars = body.chars().peekable();
        loop {
            assert_eq!(chars.next(), Some('"'), "every cell is quoted: {body}");
            let mut cell = String::new();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        cell.push('"');
                    }
                    Some('"') => break,
                    Some(c) => cell.push(c),
                    None => panic!("unterminated cell in {body}"),
                }
            }
            cells.push(cell);
            match chars.next() {
                Some(',') => {}
                None => return cells,
                Some(c) => panic!("{c:?} after a closing quote in {body}"),
            }
        }
    }

    #[test]
    fn csv_is_one_quoted_record_per_entry_and_never_a_formula() {
        let entry = nasty();
        let line = csv_line(&entry);
        one_line(&line);
        assert_eq!(line.matches("\r\n").count(), 1);
        let header = parse_csv_record(CSV_HEADER);
        let cells = parse_csv_record(&line);
        assert_eq!(cells.len(), header.len());
        let at = |name: &str| &cells[header.iter().position(|h| h == name).unwrap()];
        assert_eq!(at("seq"), "42");
        assert!(
            at("actor_name").starts_with("'=cmd"),
            "{}",
            at("actor_name")
        );
        assert!(at("actor_name").contains("\"quoted\""));
        assert!(at("actor_name").contains("␊") && at("actor_name").contains("␍"));
        assert!(at("actor_id").starts_with("'-"));
        assert!(at("address").starts_with("'+"));
        assert_eq!(at("fields"), "role email");
        assert_eq!(at("hash"), &entry.hash);
        for cell in &cells {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell}"
            );
        }
    }

    /// Splits a CEF line into its seven header fields and its extension pairs, unescaping.
    fn parse_cef(line: &str) -> (Vec<String>, Vec<(String, String)>) {
        let mut header = Vec::new();
        let mut field = String::new();
        let mut chars = line.chars();
        while header.len() < 7 {
            match chars.next().expect("seven header fields") {
                '\\' => match chars.next() {
                    Some(c @ ('\\' | '|')) => field.push(c),
                    other => panic!("bad header escape {other:?} in {line}"),
                },
                '|' => header.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        let rest: String = chars.collect();
        // Extension: key=value pairs; a key starts after a space and runs to an unescaped '='.
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut key = String::new();
        let mut value = String::new();
        let mut in_value = false;
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    assert!(in_value, "escape in a key: {rest}");
                    match chars.next() {
                        Some('\\') => value.push('\\'),
                        Some('=') => value.push('='),
                        Some('n') => value.push('\n'),
                        Some('r') => value.push('\r'),
                        other => panic!("bad extension escape {other:?} in {rest}"),
                    }
                }
                '=' if !in_value => in_value = true,
                '=' => {
                    // An unescaped '=' ends the previous value's last word, which was a key.
                    let cut = value.rfind(' ').expect("space before the next key");
                    let next_key = value[cut + 1..].to_owned();
                    value.truncate(cut);
                    pairs.push((std::mem::take(&mut key), std::mem::take(&mut value)));
                    key = next_key;
                }
                c if in_value => value.push(c),
                c => key.push(c),
            }
        }
        pairs.push((key, value));
        (header, pairs)
    }

    #[test]
    fn cef_escapes_header_and_extension_and_stays_one_line() {
        let mut entry = nasty();
        entry.action = "odd|act\\ion\n".into();
        let line = cef_line(&entry);
        one_line(&line);
        assert!(line.starts_with("CEF:0|Clientele|Clientele|"));
        let (header, pairs) = parse_cef(&line);
        assert_eq!(header[0], "CEF:0");
        assert_eq!(header[4], "odd|act\\ion␊");
        assert_eq!(header[6], "8");
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("externalId"), "42");
        let name = get("suser");
        assert!(name.contains("=cmd") && name.contains("=eq="), "{name}");
        assert!(
            name.contains("\n\"quoted\"\r\n"),
            "line breaks come back: {name:?}"
        );
        assert!(name.contains("\\back\\slash"));
        assert_eq!(get("reason"), name);
        assert_eq!(get("cs6"), entry.hash);
        // Not an IP address, so not `src`.
        assert!(pairs.iter().any(|(k, _)| k == "shost"));
    }

    /// The SD-PARAMs of a syslog line, unescaped; panics on anything not well formed.
    fn parse_syslog(line: &str) -> (String, Vec<(String, String)>) {
        let open = line.find('[').expect("structured data");
        let head = line[..open].to_owned();
        let mut chars = line[open + 1..].chars().peekable();
        let sd_id: String = chars.by_ref().take_while(|c| *c != ' ').collect();
        assert_eq!(sd_id, SYSLOG_SD_ID);
        let mut params = Vec::new();
        loop {
            let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_graphic()));
            assert_eq!(chars.next(), Some('"'));
            let mut value = String::new();
            loop {
                match chars.next().expect("closing quote") {
                    '\\' => match chars.next() {
                        Some(c @ ('"' | '\\' | ']')) => value.push(c),
                        other => panic!("unexpected escape {other:?}"),
                    },
                    '"' => break,
                    ']' => panic!("raw ] inside a PARAM-VALUE"),
                    c => value.push(c),
                }
            }
            params.push((name, value));
            match chars.next() {
                Some(' ') => {}
                Some(']') => break,
                other => panic!("unexpected {other:?} after a parameter"),
            }
        }
        assert_eq!(chars.next(), Some(' '), "MSG follows the structured data");
        (head, params)
    }

    #[test]
    fn syslog_is_rfc5424_with_escaped_param_values_on_one_line() {
        let entry = nasty();
        let line = syslog_line(&entry, "shop-01");
        one_line(&line);
        assert!(
            line.starts_with(
                "<108>1 2026-12-03T19:44:17.123456Z shop-01 clientele - user.created ["
            ),
            "{line}"
        );
        let (_, params) = parse_syslog(&line);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let name = get("actorName").unwrap();
        assert!(name.contains("\"quoted\"") && name.contains("]bracket]"));
        assert!(name.contains("\\back\\slash") && name.contains('␊'));
        assert_eq!(get("seq").as_deref(), Some("42"));
        assert_eq!(get("store"), None);
        assert_eq!(get("hash"), Some(entry.hash.clone()));
        assert_eq!(header_token("bad host\n", 255), "badhost");
        assert_eq!(header_token("", 32), "-");
    }
}
