//! The canonical encoding of an entry and its hash: the part an auditor re-implements.
//!
//! An entry is one line of JSON: the members below, in this order, no spaces, strings escaped
//! the minimal JSON way (`"` `\` and control characters; `\n`, `\r`, `\t`, `\b`, `\f` short,
//! others `\u00XX` lower-case), and in addition DEL, the C1 controls (U+007F to U+009F) and the
//! line and paragraph separators (U+2028, U+2029) as `\u007f` … `\u2029`, so no tool that splits
//! lines on them cuts an entry in two; absent values as `null`:
//!
//! ```text
//! seq time action outcome actor_kind actor_id actor_name actor_role address
//! target_type target_id store reason fields prev hash
//! ```
//!
//! `hash` is the SHA-256, in lower-case hex, of the line without its final `,"hash":"…"`
//! member (that is, the same bytes ending in `}` right after `prev`). `prev` is the `hash` of
//! the entry before, or 64 zeroes for entry 1. `time` is UTC with microseconds
//! (`2026-12-03T19:44:17.123456Z`) and never goes back from one entry to the next.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::event::{ActorKind, Outcome};

/// Hash of the entry "before" entry 1.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One decoded audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    pub time: String,
    pub action: String,
    pub outcome: Outcome,
    pub actor_kind: ActorKind,
    pub actor_id: String,
    pub actor_name: String,
    pub actor_role: Option<String>,
    pub address: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub store: Option<String>,
    pub reason: String,
    pub fields: Vec<String>,
    pub prev: String,
    pub hash: String,
}

/// Why a line is not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not a JSON audit entry: {0}")]
    Malformed(String),
    #[error("not in canonical form (re-encoding it gives different bytes)")]
    NotCanonical,
    #[error("its hash does not match its content")]
    BadHash,
}

impl Entry {
    /// The bytes the hash covers: the canonical line without `hash`.
    fn body(&self) -> Result<String, String> {
        let line = self.to_line()?;
        Ok(strip_hash(&line).to_owned() + "}")
    }

    /// Computes and sets `hash`; returns it.
    pub fn seal(&mut self) -> Result<[u8; 32], String> {
        self.hash.clear();
        let body = self.body()?;
        let digest = sha256(body.as_bytes());
        self.hash = data_encoding::HEXLOWER.encode(&digest);
        Ok(digest)
    }

    /// The canonical line (no trailing newline).
    pub fn to_line(&self) -> Result<String, String> {
        let json = serde_json::to_string(self).map_err(|err| err.to_string())?;
        Ok(escape_line_breakers(json))
    }

    /// Parses one line and checks that it is canonical and that its hash matches; the chain
    /// link (`prev`) is the caller's to check.
    pub fn parse_line(line: &str) -> Result<Self, LineError> {
        let entry: Self =
            serde_json::from_str(line).map_err(|err| LineError::Malformed(err.to_string()))?;
        if !entry.is_encoded_as(line)? {
            return Err(LineError::NotCanonical);
        }
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(strip_hash(line).as_bytes());
        digest.update(b"}");
        let mut hex = [0u8; 64];
        data_encoding::HEXLOWER.encode_mut(digest.finish().as_ref(), &mut hex);
        if hex.as_slice() != entry.hash.as_bytes() {
            return Err(LineError::BadHash);
        }
        Ok(entry)
    }

    /// Whether `line` is this entry's canonical line. Most lines hold no character that needs
    /// the extra escapes, and are compared with the encoder's output as it is written, without
    /// building a second line.
    fn is_encoded_as(&self, line: &str) -> Result<bool, LineError> {
        let plain = line.bytes().all(|b| b < 0x7f);
        if plain {
            let mut same = SameBytes {
                expected: line.as_bytes(),
                at: 0,
                differs: false,
            };
            serde_json::to_writer(&mut same, self)
                .map_err(|err| LineError::Malformed(err.to_string()))?;
            if !same.differs && same.at == line.len() {
                return Ok(true);
            }
        }
        // An escaped DEL, C1 control or line separator, or a difference: the full comparison.
        let again = self.to_line().map_err(LineError::Malformed)?;
        Ok(again == line)
    }

    /// The time as a timestamp.
    #[must_use]
    pub fn timestamp(&self) -> Option<jiff::Timestamp> {
        self.time.parse().ok()
    }
}

/// The members of an entry that do not depend on its place in the chain, from `action` to
/// `fields`, already in canonical form. Writers encode them in their own task before the entry
/// is queued, so the committer only adds `seq`, `time` and `prev` and hashes the line: the part
/// of an audited write that runs one entry at a time stays small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlinked {
    /// `"action":…,"fields":[…]`, without the surrounding braces.
    members: String,
}

/// The borrowed members of [`Unlinked`], in the order of [`Entry`].
#[derive(Serialize)]
pub(crate) struct Members<'a> {
    pub action: &'a str,
    pub outcome: Outcome,
    pub actor_kind: ActorKind,
    pub actor_id: &'a str,
    pub actor_name: &'a str,
    pub actor_role: Option<&'a str>,
    pub address: Option<&'a str>,
    pub target_type: Option<&'a str>,
    pub target_id: Option<&'a str>,
    pub store: Option<&'a str>,
    pub reason: &'a str,
    pub fields: &'a [&'a str],
}

impl Unlinked {
    /// Encodes the members canonically.
    pub(crate) fn encode(members: &Members<'_>) -> Result<Self, String> {
        let json =
            escape_line_breakers(serde_json::to_string(members).map_err(|err| err.to_string())?);
        let inner = json
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .ok_or_else(|| "the entry's members did not encode as one object".to_owned())?;
        Ok(Self {
            members: inner.to_owned(),
        })
    }

    /// The canonical line of the entry at `seq`, `time` after `prev`, and its hash.
    #[must_use]
    pub fn link(&self, seq: u64, time: jiff::Timestamp, prev: &[u8; 32]) -> (String, [u8; 32]) {
        let mut line = String::with_capacity(self.members.len() + 240);
        // Writing to a String cannot fail.
        let _ = write!(line, "{{\"seq\":{seq},\"time\":\"{}\",", format_time(time));
        line.push_str(&self.members);
        line.push_str(",\"prev\":\"");
        data_encoding::HEXLOWER.encode_append(prev, &mut line);
        line.push_str("\"}");
        let digest = sha256(line.as_bytes());
        line.pop();
        line.push_str(",\"hash\":\"");
        data_encoding::HEXLOWER.encode_append(&digest, &mut line);
        line.push_str("\"}");
        (line, digest)
    }
}

/// Escapes DEL, the C1 controls and U+2028/U+2029, which `serde_json` leaves as they are. They can
/// only occur inside JSON strings (the rest of the line is ASCII), where `\uXXXX` means the same
/// character, so the line still decodes to the same entry.
fn escape_line_breakers(json: String) -> String {
    let breaks_lines = |c: char| matches!(c, '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}');
    if !json.chars().any(breaks_lines) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if breaks_lines(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// A writer that only checks that what is written equals `expected`.
struct SameBytes<'a> {
    expected: &'a [u8],
    at: usize,
    differs: bool,
}

impl std::io::Write for SameBytes<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.at + buf.len();
        if self.differs || self.expected.get(self.at..end) != Some(buf) {
            self.differs = true;
        }
        self.at = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The line up to (not including) its `,"hash":` member.
fn strip_hash(line: &str) -> &str {
    line.rfind(",\"hash\":").map_or(line, |at| &line[..at])
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The entry time format: UTC, microseconds.
#[must_use]
pub fn format_time(time: jiff::Timestamp) -> String {
    format!("{time:.6}")
}

/// Whether `name` looks like a field name (`email`, `address.postcode`), not a value.
#[must_use]
pub fn is_field_name(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            seq: 7,
            time: "2026-12-03T19:44:17.123456Z".into(),
            action: "user.created".into(),
            outcome: Outcome::Success,
            actor_kind: ActorKind::User,
            actor_id: "01JX".into(),
            actor_name: "a\"dmin\n|=]\\\u{1}".into(),
            actor_role: Some("admin".into()),
            address: Some("10.0.0.1".into()),
            target_type: Some("user".into()),
            target_id: Some("01JY".into()),
            store: None,
            reason: String::new(),
            fields: vec!["role".into()],
            prev: GENESIS.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_sealed_line_parses_back_and_any_change_breaks_it() {
        let mut entry = sample();
        entry.seal().unwrap();
        let line = entry.to_line().unwrap();
        assert!(!line.contains('\n'), "one line whatever the content");
        assert_eq!(Entry::parse_line(&line).unwrap(), entry);

        let edited = line.replace("user.created", "user.updated");
        assert_eq!(Entry::parse_line(&edited), Err(LineError::BadHash));
        let spaced = line.replacen(',', ", ", 1);
        assert_eq!(Entry::parse_line(&spaced), Err(LineError::NotCanonical));
        assert!(matches!(
            Entry::parse_line(&line[..line.len() - 3]),
            Err(LineError::Malformed(_))
        ));
    }

    #[test]
    fn the_hash_covers_the_line_without_its_hash_member() {
        let mut entry = sample();
        let digest = entry.seal().unwrap();
        let line = entry.to_line().unwrap();
        let body = format!("{}}}", &line[..line.rfind(",\"hash\":").unwrap()]);
        assert!(body.ends_with(&format!("\"prev\":\"{GENESIS}\"}}")));
        assert_eq!(sha256(body.as_bytes()), digest);
    }

    #[test]
    fn line_breakers_must_be_escaped_and_escaped_ones_parse() {
        let mut entry = sample();
        entry.actor_name = "del\u{7f} nel\u{85} ls\u{2028}".into();
        entry.seal().unwrap();
        let line = entry.to_line().unwrap();
        assert!(
            line.contains("\\u007f") && line.contains("\\u2028"),
            "{line}"
        );
        assert_eq!(Entry::parse_line(&line).unwrap(), entry);

        let raw = line.replace("\\u007f", "\u{7f}");
        assert_eq!(Entry::parse_line(&raw), Err(LineError::NotCanonical));
    }

    #[test]
    fn field_names_are_identifiers() {
        assert!(is_field_name("address.postcode"));
        assert!(!is_field_name("Ada Lovelace"));
        assert!(!is_field_name("ada@example.com"));
        assert!(!is_field_name(""));
    }
}
