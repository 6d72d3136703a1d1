//! The master key: where it comes from and how it is checked.
//!
//! A master key is 32 bytes. It comes from a key file (64 hex digits, created 0400 by
//! `clientele init`), from a passphrase stretched with Argon2id (the salt and cost live in the
//! store's meta tree), or from a systemd credential. It never seals data directly: it wraps the
//! keyring of data-key terms, the blind-index key and the per-subject keys.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::clock::Random;

use super::StoreError;
use super::files;

/// Argon2id cost for passphrase-derived master keys (OWASP's recommended 46 MiB, t=1 is the
/// floor; these give about 0.3 s on the project's machines).
pub const KDF_MEMORY_KIB: u32 = 64 * 1024;
pub const KDF_ITERATIONS: u32 = 3;
pub const KDF_PARALLELISM: u32 = 1;

/// 32 bytes of key material, wiped from memory on drop.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(redacted)")
    }
}

impl MasterKey {
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    #[must_use]
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A new random key.
    pub fn generate(random: &dyn Random) -> Result<Self, StoreError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        random
            .fill(bytes.as_mut())
            .map_err(|_| StoreError::Crypto("random source failed"))?;
        Ok(Self(bytes))
    }

    /// Derives a key from a passphrase with Argon2id.
    pub fn from_passphrase(
        passphrase: &[u8],
        salt: &[u8],
        kdf: KdfParams,
    ) -> Result<Self, StoreError> {
        let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
            .map_err(|_| StoreError::Crypto("invalid Argon2 parameters"))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase, salt, out.as_mut())
            .map_err(|_| StoreError::Crypto("Argon2 derivation failed"))?;
        Ok(Self(out))
    }

    /// A short, non-secret fingerprint for messages: the first 8 bytes of SHA-256, in hex.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.0.as_ref());
        data_encoding::HEXLOWER.encode(&digest.as_ref()[..8])
    }

    /// Writes the key as a new 0400 file; refuses to overwrite one.
    pub fn write_new_file(&self, path: &Path) -> Result<(), StoreError> {
        if path.exists() {
            return Err(StoreError::KeyFile {
                path: path.to_owned(),
                problem: "already exists; refusing to overwrite a master key".into(),
            });
        }
        let mut text = Zeroizing::new(data_encoding::HEXLOWER.encode(self.0.as_ref()));
        text.push('\n');
        files::write_atomic(path, text.as_bytes(), 0o400).map_err(|err| StoreError::KeyFile {
            path: path.to_owned(),
            problem: format!("cannot write: {err}"),
        })
    }

    /// Reads a key file, refusing one that group or others may read.
    pub fn read_file(path: &Path, check_mode: bool) -> Result<Self, StoreError> {
        let key_error = |problem: String| StoreError::KeyFile {
            path: path.to_owned(),
            problem,
        };
        let mode = files::mode_of(path).map_err(|err| {
            if err.kind() == std::io::ErrorKind::NotFound {
                key_error(
                    "does not exist; run `clientele init` to create a store and its key".into(),
                )
            } else {
                key_error(format!("cannot be read: {err}"))
            }
        })?;
        if check_mode && mode & 0o077 != 0 {
            return Err(key_error(format!(
                "is readable by group or others (mode {mode:04o}); run chmod 0400 {}",
                path.display()
            )));
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|err| key_error(format!("cannot be read: {err}")))?,
        );
        let mut bytes = Zeroizing::new([0u8; 32]);
        let decoded = data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.trim().as_bytes())
            .map_err(|_| {
                key_error("is not a Clientele master key (expected 64 hex digits)".into())
            })?;
        let decoded = Zeroizing::new(decoded);
        if decoded.len() != 32 {
            return Err(key_error(
                "is not a Clientele master key (expected 64 hex digits)".into(),
            ));
        }
        bytes.copy_from_slice(&decoded);
        Ok(Self(bytes))
    }
}

/// Argon2id parameters, stored beside the salt so a later change of defaults keeps old stores
/// openable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self {
            memory_kib: KDF_MEMORY_KIB,
            iterations: KDF_ITERATIONS,
            parallelism: KDF_PARALLELISM,
        }
    }
}

/// Where `serve` and the other commands take the master key from.
#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// A key file, mode 0400.
    File(PathBuf),
    /// A systemd credential (`LoadCredential=` / `LoadCredentialEncrypted=`); systemd owns its
    /// permissions.
    Credential(PathBuf),
    /// A passphrase read from a file (or standard input, read up front by the command line).
    Passphrase(Zeroizing<Vec<u8>>),
}

impl MasterKeySource {
    /// Picks the source from the configuration: a passphrase file when configured, else a
    /// systemd credential named `clientele-master-key` when systemd passed one, else the key
    /// file.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, StoreError> {
        if let Some(path) = &config.keys.passphrase_file {
            let bytes = std::fs::read(path).map_err(|err| StoreError::KeyFile {
                path: path.clone(),
                problem: format!("passphrase file cannot be read: {err}"),
            })?;
            return Ok(Self::Passphrase(Zeroizing::new(trim_newline(bytes))));
        }
        if config.keys.master_key_file.is_none()
            && let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY")
        {
            let path = PathBuf::from(dir).join("clientele-master-key");
            if path.exists() {
                return Ok(Self::Credential(path));
            }
        }
        Ok(Self::File(config.master_key_file()))
    }
}

/// Drops one trailing newline (and carriage return) that editors and `echo` add.
#[must_use]
pub fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    bytes
}
