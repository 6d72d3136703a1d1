//! Online backups in Clientele's own streaming format, their verification, and restore.
//!
//! A backup copies every value as stored (still sealed; nothing is opened), so it needs no key
//! to write and reveals nothing without the master key. The file is a sequence of frames:
//!
//! ```text
//! "CLIENTELE BACKUP\n"                         magic
//! frame: kind (1 byte) | length (u32, big-endian) | payload
//!   'H' header     JSON: format, schema version, start time, the key-check file
//!   'm' meta       record of the `meta` tree: key length (u32), key, value
//!   'd' data       record of the `data` tree, sealed as stored
//!   'p' redo put   a write committed while the backup streamed (store key, sealed value)
//!   'x' redo del   a removal committed while the backup streamed (store key)
//!   'f' file       name length (u8), name, bytes (subject keystore, erasure ledger)
//!   'M' manifest   JSON: per section a count, a byte size and a SHA-256; the SHA-256 of
//!                  every byte before the manifest; times; schema version
//!   'S' signature  JSON: the audit Ed25519 public key and its signature of the manifest
//! ```
//!
//! Consistency: before the copy starts, the committer begins copying every batch it applies
//! into a redo list (under a lock held across each batch and its flush). The data section is
//! then read while writes go on, and the redo list, taken when the copy ends, replays every
//! batch applied since the start, in order. Restoring data then redo gives the store as it
//! was when the redo list was taken: one point in time, with no batch cut in half. The
//! subject keystore and the erasure ledger are read after that point (under the keystore
//! lock), so every key a copied record needs is there.
//!
//! Reading checks the order of frames, every section digest, the stream digest and the
//! signature; a short or altered file is an error that names the section and byte offset.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, Random};

use super::subjects::{self, SubjectKeys};
use super::{KeyCheck, MasterKey, MasterKeySource, SCHEMA_VERSION, Store, StoreError, files};

/// The first bytes of every backup file.
pub const MAGIC: &[u8] = b"CLIENTELE BACKUP\n";
/// The format this binary writes and reads.
pub const FORMAT: u32 = 1;
/// The largest frame accepted; a larger length is damage, not data.
// Limitation: a file frame carries a whole file, so a subject keystore above 512 MiB (about six
// million customers at 83 bytes each) cannot be backed up until files are split into frames.
const MAX_FRAME: u32 = 512 << 20;
const SIGNED_PREFIX: &[u8] = b"clientele-backup-manifest-v1\n";

const HEADER: u8 = b'H';
const META: u8 = b'm';
const DATA: u8 = b'd';
const REDO_PUT: u8 = b'p';
const REDO_DELETE: u8 = b'x';
const FILE: u8 = b'f';
const MANIFEST: u8 = b'M';
const SIGNATURE: u8 = b'S';

/// File names inside a backup.
pub const KEYSTORE_FILE: &str = "subjects.keystore";
pub const LEDGER_FILE: &str = "erasures.ledger";

/// A write seen by a running backup: store key, and the sealed value or `None` for a removal.
// Limitation: the redo list is held in memory until the copy of the data section ends, so a
// backup of a busy store holds every write made during it (their sealed size, plus keys).
pub(crate) type RedoOp = super::commit::StagedOp;

/// Signs backup manifests; the audit signing key implements it.
pub trait ManifestSigner {
    /// The Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// An Ed25519 signature of `message`.
    fn sign_bytes(&self, message: &[u8]) -> Vec<u8>;
}

/// Why a backup, a verification or a restore failed. Messages name the section or byte
/// offset and what to do; none carries a record's content.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a Clientele backup (it does not start with the backup signature)")]
    NotABackup,
    #[error(
        "the file ends early at byte {offset}, inside {what}; the backup is incomplete \
         (copy it again, or use another backup)"
    )]
    Truncated { offset: u64, what: String },
    #[error("{what} at byte {offset}; the backup is damaged or altered")]
    Malformed { offset: u64, what: String },
    #[error(
        "section {section} does not match the manifest ({detail}); the backup was altered or \
         damaged, use another one"
    )]
    Digest { section: String, detail: String },
    #[error("the manifest signature {0}; the backup was altered or not made by this appliance")]
    Signature(String),
    #[error("backup format {found} is not supported by this binary (it reads format {FORMAT})")]
    Format { found: u32 },
    #[error("a backup is already running; wait for it to finish")]
    Busy,
    #[error("{0}")]
    Refused(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the backup: {0}")]
    Write(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for BackupError {
    fn from(err: sled::Error) -> Self {
        Self::Store(StoreError::Sled(err))
    }
}

/// The first frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    pub format: u32,
    pub schema_version: u32,
    pub started_at: String,
    pub clientele_version: String,
    /// The store's key-check file (KDF salt and a value sealed under the master key), so a
    /// restore refuses a wrong key before writing anything.
    pub keycheck: String,
}

/// Size and digest of one section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionDigest {
    /// Frames in the section.
    pub count: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// SHA-256 of those frames, in hex.
    pub sha256: String,
}

/// What a backup holds, signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub schema_version: u32,
    pub started_at: String,
    pub finished_at: String,
    /// `header`, `meta`, `data`, `redo`, `file:subjects.keystore`, `file:erasures.ledger`.
    pub sections: BTreeMap<String, SectionDigest>,
    /// SHA-256 of every byte before the manifest frame.
    pub stream_sha256: String,
    /// SHA-256 of the key-check file carried in the header.
    pub keycheck_sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFrame {
    public_key: String,
    signature: String,
}

/// A backup that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    /// The signing key that signed the manifest.
    pub public_key: [u8; 32],
    /// Size of the whole file.
    pub bytes: u64,
}

impl Manifest {
    /// Records in the data section plus the redo section.
    #[must_use]
    pub fn records(&self) -> u64 {
        ["data", "redo"]
            .iter()
            .filter_map(|name| self.sections.get(*name))
            .map(|section| section.count)
            .sum()
    }
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

fn section_of(kind: u8) -> Option<&'static str> {
    match kind {
        HEADER => Some("header"),
        META => Some("meta"),
        DATA => Some("data"),
        REDO_PUT | REDO_DELETE => Some("redo"),
        _ => None,
    }
}

/// Digests of the sections being written or read.
struct Digests {
    stream: Context,
    sections: BTreeMap<String, (Context, u64, u64)>,
}

impl Digests {
    fn new() -> Self {
        let mut stream = Context::new(&SHA256);
        stream.update(MAGIC);
        Self {
            stream,
            sections: BTreeMap::new(),
        }
    }

    fn add(&mut self, section: &str, parts: &[&[u8]]) {
        let entry = self
            .sections
            .entry(section.to_owned())
            .or_insert_with(|| (Context::new(&SHA256), 0, 0));
        entry.1 += 1;
        for part in parts {
            self.stream.update(part);
            entry.0.update(part);
            entry.2 += part.len() as u64;
        }
    }

    fn finish(self) -> (String, BTreeMap<String, SectionDigest>) {
        let sections = self
            .sections
            .into_iter()
            .map(|(name, (context, count, bytes))| {
                let sha256 = hex(context.finish().as_ref());
                (
                    name,
                    SectionDigest {
                        count,
                        bytes,
                        sha256,
                    },
                )
            })
            .collect();
        (hex(self.stream.finish().as_ref()), sections)
    }
}

/// Writes frames and keeps their digests.
struct FrameWriter<'a> {
    out: &'a mut dyn Write,
    digests: Digests,
    written: u64,
}

impl<'a> FrameWriter<'a> {
    fn new(out: &'a mut dyn Write) -> Result<Self, BackupError> {
        out.write_all(MAGIC).map_err(BackupError::Write)?;
        Ok(Self {
            out,
            digests: Digests::new(),
            written: MAGIC.len() as u64,
        })
    }

    fn frame(&mut self, kind: u8, section: &str, parts: &[&[u8]]) -> Result<(), BackupError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len)
            .ok()
            .filter(|len| *len <= MAX_FRAME)
            .ok_or_else(|| {
                BackupError::Write(std::io::Error::other(format!(
                    "a {section} frame of {len} bytes is larger than the format allows"
                )))
            })?;
        let mut head = [0u8; 5];
        head[0] = kind;
        head[1..].copy_from_slice(&len.to_be_bytes());
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(&head);
        all.extend_from_slice(parts);
        self.digests.add(section, &all);
        for part in all {
            self.out.write_all(part).map_err(BackupError::Write)?;
        }
        self.written += 5 + u64::from(len);
        Ok(())
    }

    fn record(&mut self, kind: u8, key: &[u8], value: &[u8]) -> Result<(), BackupError> {
        let section = section_of(kind).unwrap_or("data");
        let key_len = (key.len() as u32).to_be_bytes();
        self.frame(kind, section, &[&key_len, key, value])
    }

    fn file(&mut self, name: &str, bytes: &[u8]) -> Result<(), BackupError> {
        let name_len = [name.len() as u8];
        self.frame(
            FILE,
            &format!("file:{name}"),
            &[&name_len, name.as_bytes(), bytes],
        )
    }
}

/// Clears the redo list when a backup ends, whichever way it ends.
struct RedoGuard<'a>(&'a super::Shared);

impl Drop for RedoGuard<'_> {
    fn drop(&mut self) {
        super::lock(&self.0.redo).take();
    }
}

impl Store {
    /// Streams a consistent backup of the open store to `out` while it keeps serving, signed
    /// with `signer`. Values are copied sealed, as stored.
    pub fn backup(
        &self,
        out: &mut dyn Write,
        signer: &dyn ManifestSigner,
    ) -> Result<Manifest, BackupError> {
        let shared = self.shared();
        {
            let mut redo = super::lock(&shared.redo);
            if redo.is_some() {
                return Err(BackupError::Busy);
            }
            *redo = Some(Vec::new());
        }
        let guard = RedoGuard(shared);
        let started_at = shared.clock.now().to_string();

        let keycheck_path = super::keycheck_path(&shared.paths.db_dir);
        let keycheck =
            std::fs::read_to_string(&keycheck_path).map_err(|source| BackupError::Io {
                path: keycheck_path.clone(),
                source,
            })?;
        let meta = shared.db.open_tree("meta")?;
        let schema_version = super::schema_version(&meta, &shared.paths.db_dir)?;
        let header = BackupHeader {
            format: FORMAT,
            schema_version,
            started_at: started_at.clone(),
            clientele_version: env!("CARGO_PKG_VERSION").into(),
            keycheck,
        };
        let header_bytes = serde_json::to_vec(&header)
            .map_err(|err| StoreError::Decode(format!("backup header: {err}")))?;

        let mut writer = FrameWriter::new(out)?;
        writer.frame(HEADER, "header", &[&header_bytes])?;
        for entry in &meta {
            let (key, value) = entry?;
            writer.record(META, &key, &value)?;
        }
        for entry in &shared.data {
            let (key, value) = entry?;
            writer.record(DATA, &key, &value)?;
        }

        // The point in time of the backup: every batch applied until now is in the redo list.
        let redo = super::lock(&shared.redo).take().unwrap_or_default();
        drop(guard);
        for (key, value) in &redo {
            match value {
                Some(value) => writer.record(REDO_PUT, key, value)?,
                None => writer.record(REDO_DELETE, key, &[])?,
            }
        }
        drop(redo);

        // Read under the keystore lock, so no append or erasure is half written.
        let (keystore, ledger) = {
            let _subjects = shared.subjects();
            let read = |path: &Path| {
                std::fs::read(path).or_else(|err| {
                    if err.kind() == std::io::ErrorKind::NotFound && path.ends_with(LEDGER_FILE) {
                        Ok(Vec::new())
                    } else {
                        Err(BackupError::Io {
                            path: path.to_owned(),
                            source: err,
                        })
                    }
                })
            };
            (
                read(&shared.paths.keystore)?,
                read(&shared.paths.erasure_ledger)?,
            )
        };
        writer.file(KEYSTORE_FILE, &keystore)?;
        writer.file(LEDGER_FILE, &ledger)?;

        let FrameWriter { out, digests, .. } = writer;
        let (stream_sha256, sections) = digests.finish();
        let manifest = Manifest {
            format: FORMAT,
            schema_version,
            started_at,
            finished_at: shared.clock.now().to_string(),
            sections,
            stream_sha256,
            keycheck_sha256: hex(ring::digest::digest(&SHA256, header.keycheck.as_bytes()).as_ref()),
        };
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|err| StoreError::Decode(format!("backup manifest: {err}")))?;
        let mut signed = SIGNED_PREFIX.to_vec();
        signed.extend_from_slice(&manifest_bytes);
        let signature = SignatureFrame {
            public_key: data_encoding::BASE64.encode(&signer.public_key()),
            signature: data_encoding::BASE64.encode(&signer.sign_bytes(&signed)),
        };
        let signature_bytes = serde_json::to_vec(&signature)
            .map_err(|err| StoreError::Decode(format!("backup signature: {err}")))?;
        let mut tail = FrameWriter {
            out,
            digests: Digests::new(),
            written: 0,
        };
        tail.frame(MANIFEST, "manifest", &[&manifest_bytes])?;
        tail.frame(SIGNATURE, "signature", &[&signature_bytes])?;
        tail.out.flush().map_err(BackupError::Write)?;
        Ok(manifest)
    }
}

/// One item of a backup, handed to the reader's visitor in file order.
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    Header(&'a BackupHeader),
    Meta(&'a [u8], &'a [u8]),
    Data(&'a [u8], &'a [u8]),
    RedoPut(&'a [u8], &'a [u8]),
    RedoDelete(&'a [u8]),
    File(&'a str, &'a [u8]),
}

/// Counts bytes read, for offsets in messages.
struct Counting<R> {
    input: R,
    offset: u64,
}

impl<R: Read> Counting<R> {
    /// Fills `buf`; `Ok(false)` at a clean end of file before the first byte.
    fn fill(&mut self, buf: &mut [u8], what: &str, at_boundary: bool) -> Result<bool, BackupError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.input.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 && at_boundary => return Ok(false),
                Ok(0) => {
                    return Err(BackupError::Truncated {
                        offset: self.offset + filled as u64,
                        what: what.to_owned(),
                    });
                }
                Ok(n) => filled += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    return Err(BackupError::Io {
                        path: PathBuf::from("(backup input)"),
                        source: err,
                    });
                }
            }
        }
        self.offset += buf.len() as u64;
        Ok(true)
    }
}

/// The order sections must come in.
fn rank(kind: u8) -> u8 {
    match kind {
        HEADER => 0,
        META => 1,
        DATA => 2,
        REDO_PUT | REDO_DELETE => 3,
        FILE => 4,
        MANIFEST => 5,
        _ => 6,
    }
}

fn kind_name(kind: u8) -> String {
    match kind {
        HEADER => "header".into(),
        META => "meta record".into(),
        DATA => "data record".into(),
        REDO_PUT | REDO_DELETE => "redo record".into(),
        FILE => "file".into(),
        MANIFEST => "manifest".into(),
        SIGNATURE => "signature".into(),
        other => format!("unknown frame kind 0x{other:02x}"),
    }
}

fn split_record(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = payload.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > rest.len() {
        return None;
    }
    Some(rest.split_at(len))
}

/// The manifest once read, with what the reader computed over the bytes before it.
struct PendingManifest {
    manifest: Manifest,
    bytes: Vec<u8>,
    stream: String,
    sections: BTreeMap<String, SectionDigest>,
}

/// What the reader has seen so far.
struct ReadState {
    digests: Digests,
    last_rank: u8,
    seen_header: bool,
    files_seen: HashSet<String>,
    manifest: Option<PendingManifest>,
    keycheck: String,
}

fn malformed(offset: u64, kind: u8, what: &str) -> BackupError {
    BackupError::Malformed {
        offset,
        what: format!("{what} ({} frame)", kind_name(kind)),
    }
}

impl ReadState {
    /// Takes one frame before the signature.
    fn take(
        &mut self,
        head: [u8; 5],
        payload: &[u8],
        offset: u64,
        visit: &mut impl FnMut(Item<'_>) -> Result<(), BackupError>,
    ) -> Result<(), BackupError> {
        let kind = head[0];
        let bad = |what: &str| malformed(offset, kind, what);
        if self.manifest.is_some() {
            return Err(bad("a frame after the manifest other than the signature"));
        }
        if rank(kind) < self.last_rank || (kind == HEADER && self.seen_header) {
            return Err(bad("frame out of order"));
        }
        if !self.seen_header && kind != HEADER {
            return Err(bad("the header is missing"));
        }
        self.last_rank = rank(kind);

        if kind == MANIFEST {
            let stream = hex(self.digests.stream.clone().finish().as_ref());
            let (_, sections) = std::mem::replace(&mut self.digests, Digests::new()).finish();
            let manifest: Manifest = serde_json::from_slice(payload)
                .map_err(|err| bad(&format!("unreadable manifest: {err}")))?;
            self.manifest = Some(PendingManifest {
                manifest,
                bytes: payload.to_vec(),
                stream,
                sections,
            });
            return Ok(());
        }

        if kind == FILE {
            let (&name_len, rest) = payload
                .split_first()
                .ok_or_else(|| bad("empty file frame"))?;
            let name = rest
                .get(..usize::from(name_len))
                .and_then(|n| std::str::from_utf8(n).ok())
                .ok_or_else(|| bad("unreadable file name"))?;
            if !self.files_seen.insert(name.to_owned()) {
                return Err(bad("a file given twice"));
            }
            self.digests.add(&format!("file:{name}"), &[&head, payload]);
            return visit(Item::File(name, &rest[usize::from(name_len)..]));
        }

        self.digests
            .add(section_of(kind).unwrap_or("data"), &[&head, payload]);
        if kind == HEADER {
            let header: BackupHeader = serde_json::from_slice(payload)
                .map_err(|err| bad(&format!("unreadable header: {err}")))?;
            if header.format != FORMAT {
                return Err(BackupError::Format {
                    found: header.format,
                });
            }
            self.seen_header = true;
            self.keycheck.clone_from(&header.keycheck);
            return visit(Item::Header(&header));
        }
        let (key, value) = split_record(payload).ok_or_else(|| bad("record key length"))?;
        visit(match kind {
            META => Item::Meta(key, value),
            DATA => Item::Data(key, value),
            REDO_PUT => Item::RedoPut(key, value),
            _ => Item::RedoDelete(key),
        })
    }

    /// Checks the signature frame against the manifest; returns the signing key.
    fn signature(
        &self,
        payload: &[u8],
        offset: u64,
        expected_key: Option<&[u8; 32]>,
    ) -> Result<[u8; 32], BackupError> {
        let bad = |what: &str| malformed(offset, SIGNATURE, what);
        let Some(pending) = &self.manifest else {
            return Err(bad("signature before the manifest"));
        };
        let frame: SignatureFrame = serde_json::from_slice(payload)
            .map_err(|err| bad(&format!("unreadable signature: {err}")))?;
        let key: [u8; 32] = data_encoding::BASE64
            .decode(frame.public_key.as_bytes())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| bad("unreadable public key"))?;
        let signature = data_encoding::BASE64
            .decode(frame.signature.as_bytes())
            .map_err(|_| bad("unreadable signature"))?;
        let mut signed = SIGNED_PREFIX.to_vec();
        signed.extend_from_slice(&pending.bytes);
        if UnparsedPublicKey::new(&ED25519, &key)
            .verify(&signed, &signature)
            .is_err()
        {
            return Err(BackupError::Signature("does not verify".into()));
        }
        if expected_key.is_some_and(|expected| expected != &key) {
            return Err(BackupError::Signature(
                "was made with another audit signing key than the one expected".into(),
            ));
        }
        Ok(key)
    }
}

/// Reads the next frame's head and payload; `None` at the end of the file.
fn next_frame<R: Read>(
    input: &mut Counting<R>,
    payload: &mut Vec<u8>,
    after_manifest: bool,
) -> Result<(u64, [u8; 5]), BackupError> {
    let offset = input.offset;
    let mut head = [0u8; 5];
    if !input.fill(&mut head, "a frame header", true)? {
        return Err(BackupError::Truncated {
            offset,
            what: if after_manifest {
                "the signature (missing)".into()
            } else {
                "the sections before the manifest (the manifest is missing)".into()
            },
        });
    }
    let kind = head[0];
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if rank(kind) == 6 && kind != SIGNATURE {
        return Err(BackupError::Malformed {
            offset,
            what: kind_name(kind),
        });
    }
    if len > MAX_FRAME {
        return Err(malformed(
            offset,
            kind,
            &format!("a frame length of {len} bytes"),
        ));
    }
    payload.resize(len as usize, 0);
    input.fill(payload, &format!("a {} frame", kind_name(kind)), false)?;
    Ok((offset, head))
}

/// Reads a whole backup, checking its structure, digests and signature, and hands each item
/// to `visit` as it goes. Items reach `visit` before the end is checked: a caller that writes
/// them must discard what it wrote when this returns an error. With `expected_key`, a
/// manifest signed by any other key is refused.
pub fn read(
    input: impl Read,
    expected_key: Option<&[u8; 32]>,
    mut visit: impl FnMut(Item<'_>) -> Result<(), BackupError>,
) -> Result<Verified, BackupError> {
    let mut input = Counting {
        input: std::io::BufReader::with_capacity(1 << 20, input),
        offset: 0,
    };
    let mut magic = [0u8; MAGIC.len()];
    match input.fill(&mut magic, "the file signature", true) {
        Ok(true) if magic == MAGIC => {}
        Ok(_) | Err(BackupError::Truncated { .. }) => return Err(BackupError::NotABackup),
        Err(err) => return Err(err),
    }

    let mut state = ReadState {
        digests: Digests::new(),
        last_rank: 0,
        seen_header: false,
        files_seen: HashSet::new(),
        manifest: None,
        keycheck: String::new(),
    };
    let mut payload = Vec::new();
    let public_key = loop {
        let (offset, head) = next_frame(&mut input, &mut payload, state.manifest.is_some())?;
        if head[0] == SIGNATURE {
            break state.signature(&payload, offset, expected_key)?;
        }
        state.take(head, &payload, offset, &mut visit)?;
    };

    // Nothing may follow the signature.
    let end = input.offset;
    let mut extra = [0u8; 1];
    if input.fill(&mut extra, "", true)? {
        return Err(BackupError::Malformed {
            offset: end,
            what: "bytes after the signature".into(),
        });
    }
    let Some(pending) = state.manifest else {
        return Err(BackupError::Truncated {
            offset: end,
            what: "the manifest".into(),
        });
    };
    check_manifest(
        &pending.manifest,
        &pending.stream,
        &pending.sections,
        &state.keycheck,
    )?;
    Ok(Verified {
        manifest: pending.manifest,
        public_key,
        bytes: end,
    })
}

fn check_manifest(
    manifest: &Manifest,
    stream: &str,
    sections: &BTreeMap<String, SectionDigest>,
    keycheck: &str,
) -> Result<(), BackupError> {
    for (name, found) in sections {
        match manifest.sections.get(name) {
            None => {
                return Err(BackupError::Digest {
                    section: name.clone(),
                    detail: "the manifest does not list it".into(),
                });
            }
            Some(expected) if expected.count != found.count => {
                return Err(BackupError::Digest {
                    section: name.clone(),
                    detail: format!("{} frames found, {} listed", found.count, expected.count),
                });
            }
            Some(expected) if expected != found => {
                return Err(BackupError::Digest {
                    section: name.clone(),
                    detail: "SHA-256 differs".into(),
                });
            }
            Some(_) => {}
        }
    }
    if let Some(missing) = manifest
        .sections
        .keys()
        .find(|name| !sections.contains_key(*name))
    {
        return Err(BackupError::Digest {
            section: missing.clone(),
            detail: "listed in the manifest but missing from the file".into(),
        });
    }
    if manifest.stream_sha256 != stream {
        return Err(BackupError::Digest {
            section: "stream".into(),
            detail: "SHA-256 of the bytes before the manifest differs".into(),
        });
    }
    if manifest.keycheck_sha256 != hex(ring::digest::digest(&SHA256, keycheck.as_bytes()).as_ref())
    {
        return Err(BackupError::Digest {
            section: "header".into(),
            detail: "key-check digest differs".into(),
        });
    }
    Ok(())
}

/// Where and how to restore.
#[derive(Debug)]
pub struct RestorePlan<'a> {
    /// Paths of the store once restored (from the configuration of the target).
    pub options: &'a super::StoreOptions,
    /// The master key or passphrase the backup must open with.
    pub source: &'a MasterKeySource,
    /// The newest erasure ledger, kept beside the master key; merged with the backup's.
    pub current_ledger: Option<&'a Path>,
    /// Writes the checked master key to this key file inside the restored folder.
    pub install_key_file: Option<PathBuf>,
    /// The audit signing key the manifest must be signed with, when known.
    pub expected_key: Option<&'a [u8; 32]>,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub data_dir: PathBuf,
    pub records: u64,
    pub bytes: u64,
    pub schema_version: u32,
    pub started_at: String,
    /// Subjects erased in the ledger after the backup was made, now erased in the restore.
    pub erased_since_backup: usize,
    pub public_key: [u8; 32],
}

/// The folder a store's files live in: the parent of its database folder.
fn data_dir_of(options: &super::StoreOptions) -> Result<PathBuf, BackupError> {
    options
        .db_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_owned)
        .ok_or_else(|| {
            BackupError::Refused(format!(
                "cannot restore: {} has no parent folder",
                options.db_dir.display()
            ))
        })
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Refuses a target folder that holds anything.
pub fn check_target(data_dir: &Path) -> Result<(), BackupError> {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::Refused(format!(
                    "the target folder {} is not empty; restore into a new or empty folder \
                     (move this one aside first, or give another --data-dir)",
                    data_dir.display()
                )));
            }
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(BackupError::Io {
            path: data_dir.to_owned(),
            source: err,
        }),
    }
}

// Limitation: for customers erased after the backup was made, only the keys are destroyed;
// their blind-index identity entries and duplicate candidates (ids and HMACs, no personal
// value) stay in the restored data, so a new profile with the same email or phone may resolve to
// the erased id and be refused as erased until those entries are removed.
/// Restores `input` into the empty or missing folder of `plan.options`: writes everything
/// into a temporary sibling folder, checks the whole file, re-applies the newest erasure
/// ledger, syncs, and only then renames the folder into place. A wrong key, a damaged file or
/// an occupied target leaves nothing behind.
pub fn restore(
    input: impl Read,
    plan: &RestorePlan<'_>,
    random: &dyn Random,
) -> Result<RestoreReport, BackupError> {
    let data_dir = data_dir_of(plan.options)?;
    check_target(&data_dir)?;
    let staging = sibling(&data_dir, ".restoring");
    if staging.exists() {
        // A restore cut short earlier: nothing in it was ever served.
        std::fs::remove_dir_all(&staging).map_err(io_at(&staging))?;
    }
    files::create_private_dir(&staging, 0o700).map_err(io_at(&staging))?;
    let result = restore_into(input, plan, &data_dir, &staging, random);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// The path of `final_path` (inside `data_dir`) within the staging folder.
fn staged(final_path: &Path, data_dir: &Path, staging: &Path) -> Option<PathBuf> {
    final_path
        .strip_prefix(data_dir)
        .ok()
        .map(|rel| staging.join(rel))
}

/// Bytes of data records per chunk handed to the inserter; three chunks at most are held at a
/// time (one being inserted, one waiting, one being filled). Unit tests use small chunks so
/// that many pass through the inserter.
const CHUNK_BYTES: usize = if cfg!(test) { 4096 } else { 16 << 20 };

/// Page cache of the database being restored, in MiB, unless the configured one is larger.
/// Measured on a backup of 1M demo customers (5.3M records, 1.57 GB): 1 GiB restored no faster
/// than 256 MiB and doubled the resident memory (2.0 GB against 1.1 GB).
const RESTORE_CACHE_MIB: u64 = 256;

/// Data records of a chunk, keys and values side by side in one buffer (one allocation per
/// chunk rather than two per record).
#[derive(Debug, Default)]
struct Chunk {
    bytes: Vec<u8>,
    /// Per record: where its key ends and where its value ends in `bytes`.
    ends: Vec<(usize, usize)>,
}

impl Chunk {
    fn push(&mut self, key: &[u8], value: &[u8]) {
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.ends.push((key_end, self.bytes.len()));
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn insert_into(&self, data: &sled::Tree) -> Result<(), sled::Error> {
        let mut start = 0;
        for &(key_end, end) in &self.ends {
            let (key, value) = (&self.bytes[start..key_end], &self.bytes[key_end..end]);
            data.insert(key, value)?;
            start = end;
        }
        Ok(())
    }
}

/// The thread inserting the chunks of data records, in order, while the reader parses and
/// checks the next. One inserter, not two: on two cores, two threads inserting alternate chunks
/// into sled were slower than one (a backup of 1M demo customers restored in 46.4 s with two,
/// 37.8 s with one).
struct Inserter {
    send: std::sync::mpsc::SyncSender<Chunk>,
    thread: std::thread::JoinHandle<Result<(), sled::Error>>,
}

impl Inserter {
    fn start(data: sled::Tree) -> Result<Self, BackupError> {
        let (send, receive) = std::sync::mpsc::sync_channel::<Chunk>(1);
        let thread = std::thread::Builder::new()
            .name("restore-insert".into())
            .spawn(move || {
                for chunk in receive {
                    chunk.insert_into(&data)?;
                }
                Ok(())
            })
            .map_err(BackupError::Write)?;
        Ok(Self { send, thread })
    }

    fn join(self) -> Result<(), BackupError> {
        drop(self.send);
        match self.thread.join() {
            Ok(result) => Ok(result?),
            Err(_) => Err(BackupError::Write(std::io::Error::other(
                "the restore's insert thread stopped unexpectedly",
            ))),
        }
    }
}

/// Writes the items of a backup into the staging folder as they are read.
struct Restorer<'a> {
    plan: &'a RestorePlan<'a>,
    db_dir: PathBuf,
    master: Option<MasterKey>,
    db: Option<(sled::Db, sled::Tree, sled::Tree)>,
    meta_batch: sled::Batch,
    /// Data records waiting to be handed to the inserter.
    chunk: Chunk,
    inserter: Option<Inserter>,
    keystore: Option<Vec<u8>>,
    ledger: Vec<u8>,
    header: Option<BackupHeader>,
    records: u64,
}

impl Restorer<'_> {
    fn item(&mut self, item: Item<'_>) -> Result<(), BackupError> {
        match item {
            Item::Header(header) => self.header(header)?,
            Item::Meta(key, value) => self.meta_batch.insert(key, value),
            // Data records are inserted on another thread while the next ones are read; the
            // staging folder is thrown away whole if anything fails.
            Item::Data(key, value) => {
                self.chunk.push(key, value);
                if self.chunk.bytes.len() >= CHUNK_BYTES {
                    self.insert_chunk()?;
                }
                self.records += 1;
            }
            // Redo records replay in order, after every data record is in.
            Item::RedoPut(key, value) => {
                self.join_inserter()?;
                self.data()?.insert(key, value)?;
                self.records += 1;
            }
            Item::RedoDelete(key) => {
                self.join_inserter()?;
                self.data()?.remove(key)?;
                self.records += 1;
            }
            Item::File(KEYSTORE_FILE, bytes) => self.keystore = Some(bytes.to_vec()),
            Item::File(LEDGER_FILE, bytes) => self.ledger = bytes.to_vec(),
            Item::File(..) => {}
        }
        Ok(())
    }

    /// Hands the pending chunk to the inserter thread.
    fn insert_chunk(&mut self) -> Result<(), BackupError> {
        let chunk = std::mem::take(&mut self.chunk);
        if self.inserter.is_none() {
            self.inserter = Some(Inserter::start(self.data()?.clone())?);
        }
        if let Some(inserter) = &self.inserter
            && inserter.send.send(chunk).is_ok()
        {
            return Ok(());
        }
        // The inserter stopped: its error comes out of the join.
        self.join_inserter()
    }

    /// Inserts what is pending and waits for the inserter to finish its chunks.
    fn join_inserter(&mut self) -> Result<(), BackupError> {
        if let Some(inserter) = self.inserter.take() {
            inserter.join()?;
        }
        if !self.chunk.is_empty() {
            std::mem::take(&mut self.chunk).insert_into(self.data()?)?;
        }
        Ok(())
    }

    fn data(&self) -> Result<&sled::Tree, BackupError> {
        self.db
            .as_ref()
            .map(|(_, _, data)| data)
            .ok_or_else(|| BackupError::Malformed {
                offset: 0,
                what: "a record before the header".into(),
            })
    }

    /// Proves the key before anything is written, then opens the new database.
    fn header(&mut self, header: &BackupHeader) -> Result<(), BackupError> {
        if header.schema_version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: PathBuf::from("(backup)"),
                found: header.schema_version,
                supported: SCHEMA_VERSION,
            }
            .into());
        }
        let check: KeyCheck =
            serde_json::from_str(&header.keycheck).map_err(|err| BackupError::Malformed {
                offset: 0,
                what: format!("unreadable key check in the header ({err})"),
            })?;
        let key = check
            .verify(self.plan.source, Path::new("(the backup)"))
            .map_err(|err| match err {
                StoreError::WrongKey { .. } => BackupError::Refused(
                    "the master key or passphrase given does not open this backup (wrong key \
                     file or passphrase); nothing was restored"
                        .into(),
                ),
                other => other.into(),
            })?;
        self.master = Some(key);
        let keycheck_path = super::keycheck_path(&self.db_dir);
        files::write_atomic(&keycheck_path, header.keycheck.as_bytes(), 0o600)
            .map_err(io_at(&keycheck_path))?;
        // The new database is written once, in key order, by this process alone, with a
        // larger cache than the served store's. (sled 0.34 reads no `Mode`, so none is set;
        // the cache size is not stored.)
        let db = sled::Config::new()
            .path(&self.db_dir)
            .cache_capacity(self.plan.options.cache_mib.max(RESTORE_CACHE_MIB) * 1024 * 1024)
            .flush_every_ms(None)
            .open()?;
        let (meta, data) = (db.open_tree("meta")?, db.open_tree("data")?);
        self.db = Some((db, meta, data));
        self.header = Some(header.clone());
        Ok(())
    }

    /// Applies what is left and closes the database.
    fn finish_db(&mut self) -> Result<(), BackupError> {
        self.join_inserter()?;
        let Some((db, meta, data)) = self.db.take() else {
            return Err(BackupError::Truncated {
                offset: 0,
                what: "the header".into(),
            });
        };
        drop(data);
        meta.apply_batch(std::mem::take(&mut self.meta_batch))?;
        db.flush()?;
        Ok(())
    }
}

fn restore_into(
    input: impl Read,
    plan: &RestorePlan<'_>,
    data_dir: &Path,
    staging: &Path,
    random: &dyn Random,
) -> Result<RestoreReport, BackupError> {
    let outside = |what: &str, path: &Path| {
        BackupError::Refused(format!(
            "cannot restore: the {what} {} is outside the data folder {}",
            path.display(),
            data_dir.display()
        ))
    };
    let db_dir = staged(&plan.options.db_dir, data_dir, staging)
        .ok_or_else(|| outside("database", &plan.options.db_dir))?;
    let keystore = staged(&plan.options.keystore, data_dir, staging)
        .ok_or_else(|| outside("subject keystore", &plan.options.keystore))?;
    // A ledger kept outside the data folder (beside a master key elsewhere) is updated in
    // place at the end; the merged copy used meanwhile sits in the staging folder.
    let ledger_inside = staged(&plan.options.erasure_ledger, data_dir, staging);
    let ledger = ledger_inside
        .clone()
        .unwrap_or_else(|| staging.join("erasures.ledger.merged"));

    let mut restorer = Restorer {
        plan,
        db_dir,
        master: None,
        db: None,
        meta_batch: sled::Batch::default(),
        chunk: Chunk::default(),
        inserter: None,
        keystore: None,
        ledger: Vec::new(),
        header: None,
        records: 0,
    };
    let verified = read(input, plan.expected_key, |item| restorer.item(item))?;
    restorer.finish_db()?;
    let (Some(master), Some(header)) = (restorer.master.take(), restorer.header.take()) else {
        return Err(BackupError::Truncated {
            offset: 0,
            what: "the header".into(),
        });
    };

    let keystore_bytes = restorer
        .keystore
        .take()
        .ok_or_else(|| BackupError::Digest {
            section: format!("file:{KEYSTORE_FILE}"),
            detail: "missing from the backup".into(),
        })?;
    files::write_atomic(&keystore, &keystore_bytes, 0o600).map_err(io_at(&keystore))?;

    // The newest ledger wins: every erasure in either ledger applies.
    let (merged, erased_since_backup) = merge_ledgers(&restorer.ledger, plan.current_ledger)?;
    if let Some(dir) = ledger.parent() {
        files::create_private_dir(dir, 0o700).map_err(io_at(dir))?;
    }
    files::write_atomic(&ledger, merged.as_bytes(), 0o600).map_err(io_at(&ledger))?;
    // Opening the keystore against the merged ledger drops every erased subject's key and
    // rewrites the file without it.
    let seal_master = super::seal::SealKey::new(master.bytes())?;
    SubjectKeys::open(&keystore, &ledger, &seal_master, random)?;

    if let Some(key_file) = &plan.install_key_file {
        let staged_key = staged(key_file, data_dir, staging)
            .ok_or_else(|| outside("master key file", key_file))?;
        if let Some(dir) = staged_key.parent() {
            files::create_private_dir(dir, 0o700).map_err(io_at(dir))?;
        }
        master.write_new_file(&staged_key)?;
    }

    sync_tree(staging)?;
    // An empty target folder is replaced by the rename; a missing one is created by it.
    if data_dir.exists() {
        std::fs::remove_dir(data_dir).map_err(io_at(data_dir))?;
    }
    std::fs::rename(staging, data_dir).map_err(io_at(data_dir))?;
    files::sync_dir(data_dir).map_err(io_at(data_dir))?;
    if ledger_inside.is_none() {
        files::write_atomic(&plan.options.erasure_ledger, merged.as_bytes(), 0o600)
            .map_err(io_at(&plan.options.erasure_ledger))?;
        let _ = std::fs::remove_file(data_dir.join("erasures.ledger.merged"));
    }

    Ok(RestoreReport {
        data_dir: data_dir.to_owned(),
        records: restorer.records,
        bytes: verified.bytes,
        schema_version: header.schema_version,
        started_at: header.started_at,
        erased_since_backup,
        public_key: verified.public_key,
    })
}

/// The union of the backup's ledger and the current one (lines of the backup first), and how
/// many subjects only the current one lists.
fn merge_ledgers(backup: &[u8], current: Option<&Path>) -> Result<(String, usize), BackupError> {
    let mut text = String::from_utf8_lossy(backup).into_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let Some(current) = current else {
        return Ok((text, 0));
    };
    let known: HashSet<String> = text
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    // Parsed first so a damaged ledger is refused with its line number.
    subjects::read_ledger(current)?;
    let newer = std::fs::read_to_string(current).map_err(io_at(current))?;
    let mut added = 0;
    for line in newer.lines() {
        if let Some(id) = line.split_whitespace().nth(1)
            && !known.contains(id)
        {
            text.push_str(line);
            text.push('\n');
            added += 1;
        }
    }
    Ok((text, added))
}

/// Syncs every file and folder under `dir`.
fn sync_tree(dir: &Path) -> Result<(), BackupError> {
    for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let path = entry.map_err(io_at(dir))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_at(&path))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_at(dir))
}

/// Writes a backup of `store` to `path` atomically (a temporary file beside it, synced, then
/// renamed); returns the manifest and the size.
pub fn write_file(
    store: &Store,
    path: &Path,
    signer: &dyn ManifestSigner,
) -> Result<(Manifest, u64), BackupError> {
    write_file_with(path, |out| store.backup(out, signer))
}

/// Runs `produce` into a temporary file beside `path`, syncs it and renames it into place.
pub fn write_file_with(
    path: &Path,
    produce: impl FnOnce(&mut dyn Write) -> Result<Manifest, BackupError>,
) -> Result<(Manifest, u64), BackupError> {
    let tmp = sibling(path, ".partial");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_at(&tmp))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let produced = produce(&mut out);
    let finished = produced.and_then(|manifest| {
        let file = out.into_inner().map_err(|err| BackupError::Io {
            path: tmp.clone(),
            source: err.into_error(),
        })?;
        file.sync_all().map_err(io_at(&tmp))?;
        let size = file.metadata().map_err(io_at(&tmp))?.len();
        std::fs::rename(&tmp, path).map_err(io_at(path))?;
        files::sync_dir(path).map_err(io_at(path))?;
        Ok((manifest, size))
    });
    if finished.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    finished
}

/// The name of a scheduled or automatic backup made at `now`.
#[must_use]
pub fn file_name(prefix: &str, clock: &dyn Clock) -> String {
    let now = clock.now().strftime("%Y%m%dT%H%M%SZ").to_string();
    format!("{prefix}-{now}.clbk")
}

/// Signs with an Ed25519 seed (the audit signing key read from the store).
struct SeedSigner(ring::signature::Ed25519KeyPair);

impl ManifestSigner for SeedSigner {
    fn public_key(&self) -> [u8; 32] {
        use ring::signature::KeyPair;
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.0.public_key().as_ref());
        bytes
    }

    fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message).as_ref().to_vec()
    }
}

/// Backs up a store about to be migrated from schema `version`, into `backups/` beside its
/// database, signed with the store's audit signing key. Returns the file written.
pub fn before_migration(store: &Store, version: u32) -> Result<PathBuf, BackupError> {
    let seed = store
        .get(super::AUDIT_KEYS, super::AUDIT_SIGNING_SEED)?
        .ok_or_else(|| {
            BackupError::Refused("the store has no audit signing key yet to sign its backup".into())
        })?;
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|_| StoreError::Crypto("the audit signing key is damaged"))?;
    let signer = SeedSigner(pair);
    let shared = store.shared();
    let folder = shared
        .paths
        .db_dir
        .parent()
        .map_or_else(|| PathBuf::from("backups"), |dir| dir.join("backups"));
    files::create_private_dir(&folder, 0o700).map_err(io_at(&folder))?;
    let path = folder.join(file_name(
        &format!("pre-migration-schema{version}"),
        shared.clock.as_ref(),
    ));
    write_file_with(&path, |out| store.backup(out, &signer))?;
    tracing::info!(file = %path.display(), from = version, "backup written before migrating");
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::{SystemClock, SystemRandom};
    use crate::store::migrate::{Migration, copy_all};
    use crate::store::{ChangeSet, StoreOptions, Table};

    const THINGS: Table = Table::new("things");

    #[test]
    fn a_restore_over_many_chunks_brings_back_every_record() {
        let tmp = tempfile::tempdir().unwrap();
        let (source_dir, target_dir) = (tmp.path().join("source"), tmp.path().join("target"));
        let config = |dir: &Path| crate::config::Config {
            data_dir: dir.to_owned(),
            ..crate::config::Config::default()
        };
        let mut options = StoreOptions::from_config(&config(&source_dir));
        options.cache_mib = 8;
        let source = MasterKeySource::File(config(&source_dir).master_key_file());
        Store::init(&options, &source, &SystemClock, &SystemRandom::new()).unwrap();
        let store = Store::open(
            &options,
            &source,
            Arc::new(SystemClock),
            Arc::new(SystemRandom::new()),
        )
        .unwrap();
        // About 100 chunks of 4 KiB, so many pass through the inserter thread.
        let mut set = ChangeSet::new();
        for i in 0u32..1200 {
            set.put(THINGS, i.to_be_bytes().to_vec(), vec![(i % 251) as u8; 300]);
        }
        store.commit_blocking(set).unwrap();
        let signer =
            SeedSigner(ring::signature::Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap());
        let mut file = Vec::new();
        store.backup(&mut file, &signer).unwrap();
        drop(store);

        let mut target = StoreOptions::from_config(&config(&target_dir));
        target.cache_mib = 8;
        let plan = RestorePlan {
            options: &target,
            source: &source,
            current_ledger: None,
            install_key_file: None,
            expected_key: Some(&signer.public_key()),
        };
        let report = restore(file.as_slice(), &plan, &SystemRandom::new()).unwrap();
        assert!(report.records >= 1200, "{}", report.records);

        let raw = |dir: &Path| {
            let db = super::super::open_sled(dir, 8).unwrap();
            let data = db.open_tree("data").unwrap();
            data.iter()
                .map(|entry| {
                    let (key, value) = entry.unwrap();
                    (key.to_vec(), value.to_vec())
                })
                .collect::<Vec<_>>()
        };
        let (before, after) = (raw(&options.db_dir), raw(&target.db_dir));
        assert!(before.len() >= 1200);
        assert_eq!(before, after);
    }

    #[test]
    fn a_pending_migration_is_preceded_by_a_backup() {
        let tmp = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            data_dir: tmp.path().to_owned(),
            ..crate::config::Config::default()
        };
        let mut options = StoreOptions::from_config(&config);
        options.cache_mib = 8;
        let source = MasterKeySource::File(config.master_key_file());
        let open = |migrations: &[Migration]| {
            Store::open_with(
                &options,
                &source,
                Arc::new(SystemClock),
                Arc::new(SystemRandom::new()),
                migrations,
            )
        };
        Store::init(&options, &source, &SystemClock, &SystemRandom::new()).unwrap();
        let store = open(&[]).unwrap();
        let mut set = ChangeSet::new();
        set.insert_new(
            super::super::AUDIT_KEYS,
            super::super::AUDIT_SIGNING_SEED,
            vec![7; 32],
        );
        set.put(THINGS, b"k".to_vec(), b"v".to_vec());
        store.commit_blocking(set).unwrap();
        drop(store);
        // Make it look like a store from before schema 1.
        let db = super::super::open_sled(&options.db_dir, 8).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(super::super::META_SCHEMA, &0u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
        drop(db);

        // A step to schema 1, then this binary's own steps.
        let mut steps = vec![Migration {
            to: 1,
            name: "copy",
            apply: copy_all,
        }];
        steps.extend_from_slice(super::super::migrate::MIGRATIONS);
        let store = open(&steps).unwrap();
        assert_eq!(store.get(THINGS, b"k").unwrap().unwrap().as_slice(), b"v");
        let backups: Vec<PathBuf> = std::fs::read_dir(tmp.path().join("backups"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        assert_eq!(backups.len(), 1, "{backups:?}");
        assert!(
            backups[0]
                .to_string_lossy()
                .contains("pre-migration-schema0-")
        );
        let verified = read(std::fs::File::open(&backups[0]).unwrap(), None, |_| Ok(())).unwrap();
        assert_eq!(verified.manifest.schema_version, 0);
        drop(store);

        // Nothing pending: no new backup.
        let store = open(&steps).unwrap();
        drop(store);
        assert_eq!(
            std::fs::read_dir(tmp.path().join("backups"))
                .unwrap()
                .count(),
            1
        );
    }
}
