//! Signed checkpoints: the audit signing key (Ed25519, separate from the data keys) signs the
//! size of the trail and the hash of its newest entry, so an export can be checked offline
//! against the public key alone, and a copy of a checkpoint saved earlier catches a trail that
//! was cut short or forked.
//!
//! The signed message is the UTF-8 text
//!
//! ```text
//! clientele-audit-checkpoint-v1\n{size}\n{head}\n{time}\n
//! ```
//!
//! where `size` is the sequence number of the newest entry covered, `head` its hash (hex) and
//! `time` the checkpoint time in the entry time format. The signature is plain Ed25519
//! (RFC 8032) over those bytes, in base64 (standard alphabet, padded).

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::entry::sha256;

/// Prefix of the public-key text form.
pub const PUBLIC_KEY_PREFIX: &str = "clientele-audit-ed25519 ";

/// A signed statement about the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Sequence number of the newest entry covered.
    pub size: u64,
    /// Hash of that entry (hex).
    pub head: String,
    pub time: String,
    /// Fingerprint of the signing key.
    pub key: String,
    /// Ed25519 signature (base64).
    pub signature: String,
}

impl Checkpoint {
    /// The bytes the signature covers.
    #[must_use]
    pub fn message(size: u64, head: &str, time: &str) -> String {
        format!("clientele-audit-checkpoint-v1\n{size}\n{head}\n{time}\n")
    }

    /// Whether `public` signed this checkpoint.
    #[must_use]
    pub fn verify(&self, public: &PublicKey) -> bool {
        let Ok(signature) = data_encoding::BASE64.decode(self.signature.as_bytes()) else {
            return false;
        };
        let message = Self::message(self.size, &self.head, &self.time);
        UnparsedPublicKey::new(&ED25519, &public.0)
            .verify(message.as_bytes(), &signature)
            .is_ok()
    }

    /// The checkpoint as one JSON line.
    #[must_use]
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// `SHA256:` and the base64 (unpadded) of the key's SHA-256, as OpenSSH shows keys.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            data_encoding::BASE64_NOPAD.encode(&sha256(&self.0))
        )
    }

    /// `clientele-audit-ed25519 <base64>`: the form saved in files and shown in the UI.
    #[must_use]
    pub fn to_text(&self) -> String {
        format!(
            "{PUBLIC_KEY_PREFIX}{}",
            data_encoding::BASE64.encode(&self.0)
        )
    }

    /// Reads the text form (surrounding whitespace allowed) or bare base64.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let body = text.strip_prefix(PUBLIC_KEY_PREFIX).unwrap_or(text).trim();
        let bytes = data_encoding::BASE64
            .decode(body.as_bytes())
            .map_err(|err| format!("the public key is not base64: {err}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "an Ed25519 public key has 32 bytes".to_owned())?;
        Ok(Self(bytes))
    }
}

/// The private signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public().fingerprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key of a 32-byte seed.
    pub fn from_seed(seed: &Zeroizing<[u8; 32]>) -> Result<Self, String> {
        Ed25519KeyPair::from_seed_unchecked(seed.as_ref())
            .map(|pair| Self { pair })
            .map_err(|_| "the audit signing key is damaged".to_owned())
    }

    #[must_use]
    pub fn public(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(bytes)
    }

    /// Signs a checkpoint of `size` entries ending in `head` at `time`.
    #[must_use]
    pub fn checkpoint(&self, size: u64, head: &str, time: &str) -> Checkpoint {
        let signature = self
            .pair
            .sign(Checkpoint::message(size, head, time).as_bytes());
        Checkpoint {
            size,
            head: head.to_owned(),
            time: time.to_owned(),
            key: self.public().fingerprint(),
            signature: data_encoding::BASE64.encode(signature.as_ref()),
        }
    }

    /// Signs arbitrary bytes (backup manifests, archives).
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> String {
        data_encoding::BASE64.encode(self.pair.sign(message).as_ref())
    }
}

impl crate::store::backup::ManifestSigner for SigningKey {
    fn public_key(&self) -> [u8; 32] {
        self.public().0
    }

    fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Whether `public` signed `message` (base64 `signature`).
#[must_use]
pub fn verify_signature(public: &PublicKey, message: &[u8], signature: &str) -> bool {
    data_encoding::BASE64
        .decode(signature.as_bytes())
        .is_ok_and(|sig| {
            UnparsedPublicKey::new(&ED25519, &public.0)
                .verify(message, &sig)
                .is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_verify_only_under_their_own_key() {
        let key = SigningKey::from_seed(&Zeroizing::new([7; 32])).unwrap();
        let other = SigningKey::from_seed(&Zeroizing::new([8; 32])).unwrap();
        let cp = key.checkpoint(10, "ab", "2026-12-03T00:00:00.000000Z");
        assert!(cp.verify(&key.public()));
        assert!(!cp.verify(&other.public()));
        let mut moved = cp.clone();
        moved.size = 11;
        assert!(!moved.verify(&key.public()));
        let text = key.public().to_text();
        assert_eq!(PublicKey::from_text(&text).unwrap(), key.public());
        assert!(PublicKey::from_text("clientele-audit-ed25519 AAAA").is_err());
    }
}
