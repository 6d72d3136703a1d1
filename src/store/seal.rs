//! The sealed record format.
//!
//! ```text
//! byte 0      format version (1)
//! byte 1      algorithm (1 = AES-256-GCM)
//! byte 2      key kind (1 = data-key term, 2 = subject key, 3 = master key)
//! bytes 3..   key reference: a 4-byte big-endian term (data, master) or a 16-byte subject id
//! then        12-byte random nonce, ciphertext, 16-byte tag
//! ```
//!
//! The associated data is the header followed by the full store key (which begins with the
//! table name), so a record copied under another key or into another table fails to open, and
//! so does one whose header was edited to point at another key.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::clock::Random;
use crate::domain::Id;

use super::StoreError;

pub const FORMAT_VERSION: u8 = 1;
pub const ALG_AES_256_GCM: u8 = 1;
const TAG_LEN: usize = 16;

/// Which key a record is sealed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRef {
    /// A data-key term of the keyring.
    Term(u32),
    /// The per-subject key of one person (crypto-shredding).
    Subject(Id),
    /// The master key itself; only keyring records use it.
    Master,
}

impl KeyRef {
    fn encode(self, out: &mut Vec<u8>) {
        match self {
            Self::Term(term) => {
                out.push(1);
                out.extend_from_slice(&term.to_be_bytes());
            }
            Self::Subject(id) => {
                out.push(2);
                out.extend_from_slice(&id.to_bytes());
            }
            Self::Master => {
                out.push(3);
                out.extend_from_slice(&0u32.to_be_bytes());
            }
        }
    }
}

/// A 256-bit AEAD key.
pub struct SealKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    pub fn new(bytes: &[u8; 32]) -> Result<Self, StoreError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| StoreError::Crypto("bad key length"))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }
}

/// The parsed header of a sealed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub key: KeyRef,
    len: usize,
}

/// Reads the header of a sealed value without opening it.
pub fn header(sealed: &[u8]) -> Result<Header, &'static str> {
    let (&version, rest) = sealed.split_first().ok_or("empty record")?;
    if version != FORMAT_VERSION {
        return Err("unknown record format version");
    }
    let (&alg, rest) = rest.split_first().ok_or("truncated header")?;
    if alg != ALG_AES_256_GCM {
        return Err("unknown algorithm");
    }
    let (&kind, rest) = rest.split_first().ok_or("truncated header")?;
    let (key, used) = match kind {
        1 | 3 => {
            let bytes: [u8; 4] = rest
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or("truncated header")?;
            let term = u32::from_be_bytes(bytes);
            if kind == 1 {
                (KeyRef::Term(term), 4)
            } else {
                (KeyRef::Master, 4)
            }
        }
        2 => {
            let bytes: [u8; 16] = rest
                .get(..16)
                .and_then(|b| b.try_into().ok())
                .ok_or("truncated header")?;
            (KeyRef::Subject(Id::from_bytes(bytes)), 16)
        }
        _ => return Err("unknown key kind"),
    };
    let len = 3 + used;
    if sealed.len() < len + NONCE_LEN + TAG_LEN {
        return Err("truncated record");
    }
    Ok(Header { key, len })
}

/// Seals `plaintext` stored at `store_key` under `key`, referenced in the header as `key_ref`.
pub fn seal(
    key: &SealKey,
    key_ref: KeyRef,
    store_key: &[u8],
    plaintext: &[u8],
    random: &dyn Random,
) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(3 + 16 + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.push(FORMAT_VERSION);
    out.push(ALG_AES_256_GCM);
    key_ref.encode(&mut out);
    let header_len = out.len();

    let mut nonce = [0u8; NONCE_LEN];
    random
        .fill(&mut nonce)
        .map_err(|_| StoreError::Crypto("random source failed"))?;
    out.extend_from_slice(&nonce);
    let body_start = out.len();
    out.extend_from_slice(plaintext);

    // Sealed in place in the output buffer: no second copy of the plaintext.
    let (head, body) = out.split_at_mut(body_start);
    let tag = with_associated_data(&head[..header_len], store_key, |aad| {
        key.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            body,
        )
    })
    .map_err(|_| StoreError::Crypto("seal failed"))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// A sealed value did not open: wrong key, or altered, moved or truncated bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

/// Opens a sealed value found at `store_key`. Any change to the header, nonce, ciphertext, tag
/// or key gives `Err`.
pub fn open(
    key: &SealKey,
    header: Header,
    store_key: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, OpenError> {
    let head = sealed.get(..header.len).ok_or(OpenError)?;
    let nonce_bytes: [u8; NONCE_LEN] = sealed
        .get(header.len..header.len + NONCE_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(OpenError)?;
    let mut body = sealed
        .get(header.len + NONCE_LEN..)
        .ok_or(OpenError)?
        .to_vec();
    let len = with_associated_data(head, store_key, |aad| {
        key.key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad),
                &mut body,
            )
            .map(|plain| plain.len())
    })
    .map_err(|_| OpenError)?;
    body.truncate(len);
    Ok(body)
}

/// Calls `f` with the associated data: the header, the store key's length (u32, big-endian)
/// and the store key. Built on the stack when it fits, as it does for every key we write.
fn with_associated_data<T>(header: &[u8], store_key: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    let len = header.len() + 4 + store_key.len();
    let mut stack = [0u8; 192];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    buf[..header.len()].copy_from_slice(header);
    buf[header.len()..header.len() + 4].copy_from_slice(&(store_key.len() as u32).to_be_bytes());
    buf[header.len() + 4..].copy_from_slice(store_key);
    f(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SeededRandom;
    use proptest::prelude::*;

    fn key(byte: u8) -> SealKey {
        SealKey::new(&[byte; 32]).unwrap()
    }

    fn open_at(k: &SealKey, store_key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let head = header(sealed).map_err(|_| OpenError)?;
        open(k, head, store_key, sealed)
    }

    proptest! {
        #[test]
        fn round_trip(value in proptest::collection::vec(any::<u8>(), 0..600),
                      store_key in proptest::collection::vec(any::<u8>(), 1..40)) {
            let random = SeededRandom::new(1);
            let sealed = seal(&key(7), KeyRef::Term(3), &store_key, &value, &random).unwrap();
            prop_assert_eq!(open_at(&key(7), &store_key, &sealed).unwrap(), value);
        }

        #[test]
        fn any_flipped_bit_fails(value in proptest::collection::vec(any::<u8>(), 0..300),
                                 position in any::<prop::sample::Index>(),
                                 bit in 0u8..8) {
            let random = SeededRandom::new(2);
            let sealed = seal(&key(7), KeyRef::Term(1), b"t/k", &value, &random).unwrap();
            let mut bad = sealed.clone();
            let i = position.index(bad.len());
            bad[i] ^= 1 << bit;
            prop_assert!(open_at(&key(7), b"t/k", &bad).is_err());
        }

        #[test]
        fn truncation_fails(value in proptest::collection::vec(any::<u8>(), 0..300),
                            cut in any::<prop::sample::Index>()) {
            let random = SeededRandom::new(3);
            let sealed = seal(&key(7), KeyRef::Term(1), b"t/k", &value, &random).unwrap();
            let keep = cut.index(sealed.len());
            prop_assert!(open_at(&key(7), b"t/k", &sealed[..keep]).is_err());
        }

        #[test]
        fn moved_or_rekeyed_fails(value in proptest::collection::vec(any::<u8>(), 0..300),
                                  other in proptest::collection::vec(any::<u8>(), 1..40)) {
            prop_assume!(other.as_slice() != b"customers/k1");
            let random = SeededRandom::new(4);
            let sealed = seal(&key(7), KeyRef::Term(1), b"customers/k1", &value, &random).unwrap();
            prop_assert!(open_at(&key(7), &other, &sealed).is_err());
            prop_assert!(open_at(&key(8), b"customers/k1", &sealed).is_err());
        }
    }

    #[test]
    fn header_names_the_key() {
        let random = SeededRandom::new(5);
        let id = Id::from_bytes([4; 16]);
        let sealed = seal(&key(1), KeyRef::Subject(id), b"k", b"v", &random).unwrap();
        assert_eq!(header(&sealed).unwrap().key, KeyRef::Subject(id));
        assert!(header(b"").is_err());
        assert!(header(&[9, 1, 1]).is_err());
    }
}
