//! Files a connector received, kept sealed in the store instead of on disk, so plaintext
//! copies of the personal data they carry do not pile up in a folder:
//! - processed files, for `[sync] keep_processed`, so an operator can see what a register
//!   sent; then they are dropped;
//! - dead letters: files refused with a reason, until an operator replays or discards them
//!   on the Sync page.
//!
//! Contents are cut into chunks of [`CHUNK`] bytes, each sealed under the data key like any
//! record. A record and its contents land in one change set.

use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::audit::{Action, Actor, Event};
use crate::clock::{Clock, Random};
use crate::domain::Id;
use crate::store::{ChangeSet, Expect, Sealing, Store, StoreError, Table};

/// Dead letters by id.
pub const DEAD_LETTERS: Table = Table::new("sync_dead_letters");
/// Processed files by connector, newest first (see [`archive_key`]).
pub const ARCHIVE: Table = Table::new("sync_archive");
/// The archive key of each kept contents' SHA-256, so a file read twice is kept once.
pub const ARCHIVE_DIGESTS: Table = Table::new("sync_archive_digests");
/// Contents of both, by owner and chunk number.
pub const CONTENTS: Table = Table::new("sync_contents");

/// Size of one sealed chunk of contents.
pub const CHUNK: usize = 1024 * 1024;

/// A file refused with a reason, held for an operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: Id,
    pub connector: String,
    /// The file's name as it arrived.
    pub name: String,
    pub size: u64,
    /// SHA-256 of the contents, lowercase hex.
    pub digest: String,
    pub received_at: Timestamp,
    /// Why it was refused, naming the element and line where the format allows.
    pub reason: String,
    /// Imports tried: 1 when first refused, one more per replay.
    pub attempts: u32,
    pub last_attempt_at: Timestamp,
}

/// A processed file, kept for a while.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Archived {
    pub connector: String,
    pub name: String,
    pub size: u64,
    pub digest: String,
    pub received_at: Timestamp,
    /// Transactions it added, and those already known.
    pub accepted: u64,
    pub duplicates: u64,
}

/// A processed file to keep, with the transactions it added and those already known.
#[derive(Debug)]
pub struct Kept<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
    pub accepted: u64,
    pub duplicates: u64,
}

/// The sealed file store.
#[derive(Debug, Clone)]
pub struct Held {
    store: Store,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    operators: Arc<tokio::sync::Mutex<()>>,
}

fn digest_of(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn dead_owner(id: Id) -> Vec<u8> {
    let mut owner = b"d".to_vec();
    owner.extend_from_slice(&id.to_bytes());
    owner
}

fn archive_owner(digest: &str) -> Vec<u8> {
    let mut owner = b"a".to_vec();
    owner.extend_from_slice(digest.as_bytes());
    owner
}

/// `connector 0x00 (u64::MAX - received micros) digest`: a connector's files in one range,
/// newest first, so a page of recent files opens only the records it shows.
fn archive_key(file: &Archived) -> Vec<u8> {
    let micros = u64::try_from(file.received_at.as_microsecond()).unwrap_or(0);
    let mut key = archive_prefix(&file.connector);
    key.extend_from_slice(&(u64::MAX - micros).to_be_bytes());
    key.extend_from_slice(file.digest.as_bytes());
    key
}

fn archive_prefix(connector: &str) -> Vec<u8> {
    let mut key = connector.as_bytes().to_vec();
    key.push(0);
    key
}

fn chunk_key(owner: &[u8], chunk: u32) -> Vec<u8> {
    let mut key = owner.to_vec();
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

fn chunks(size: u64) -> u32 {
    u32::try_from(size.div_ceil(CHUNK as u64)).unwrap_or(u32::MAX)
}

fn put_contents(set: &mut ChangeSet, owner: &[u8], bytes: &[u8]) {
    for (n, piece) in (0u32..).zip(bytes.chunks(CHUNK)) {
        set.put(CONTENTS, chunk_key(owner, n), piece.to_vec());
    }
}

fn delete_contents(set: &mut ChangeSet, owner: &[u8], size: u64) {
    for n in 0..chunks(size) {
        set.delete(CONTENTS, chunk_key(owner, n));
    }
}

impl Held {
    #[must_use]
    pub fn new(store: Store, clock: Arc<dyn Clock>, random: Arc<dyn Random>) -> Self {
        Self {
            store,
            clock,
            random,
            operators: Arc::default(),
        }
    }

    /// Held while an operator replays or discards a dead letter: read the letter again
    /// under it, so a letter is ended once.
    pub async fn operator_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.operators.lock().await
    }

    fn new_id(&self) -> Result<Id, StoreError> {
        let mut bytes = [0u8; 10];
        self.random
            .fill(&mut bytes)
            .map_err(|_| StoreError::Crypto("the random source failed"))?;
        Ok(Id::from_parts(self.clock.now(), bytes))
    }

    /// Holds a refused file as a dead letter (`sync.dead_letter_created`). The same contents
    /// refused again for the same connector (a file re-read after a crash) are held once: the
    /// existing letter is returned.
    pub async fn set_aside(
        &self,
        connector: &str,
        name: &str,
        bytes: &[u8],
        reason: &str,
        actor: Actor,
    ) -> Result<DeadLetter, StoreError> {
        let digest = digest_of(bytes);
        if let Some(existing) = self
            .dead_letters()?
            .into_iter()
            .find(|letter| letter.connector == connector && letter.digest == digest)
        {
            return Ok(existing);
        }
        let now = self.clock.now();
        let letter = DeadLetter {
            id: self.new_id()?,
            connector: connector.to_owned(),
            name: name.to_owned(),
            size: bytes.len() as u64,
            digest,
            received_at: now,
            reason: reason.to_owned(),
            attempts: 1,
            last_attempt_at: now,
        };
        let mut set = ChangeSet::new();
        set.put_with(
            DEAD_LETTERS,
            letter.id.to_bytes().to_vec(),
            Store::json(&letter)?,
            Sealing::DataKey,
            Expect::Absent,
        );
        put_contents(&mut set, &dead_owner(letter.id), bytes);
        Event::new(Action::DeadLetterCreated)
            .by(actor)
            .target("dead_letter", letter.id)
            .failed("file refused; the reason is kept on the dead letter")
            .add_to(&mut set);
        self.store.commit(set).await?;
        Ok(letter)
    }

    /// Every dead letter, newest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut letters: Vec<DeadLetter> = self
            .store
            .scan_json(DEAD_LETTERS)?
            .into_iter()
            .map(|(_, letter)| letter)
            .collect();
        letters.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(b.id.cmp(&a.id)));
        Ok(letters)
    }

    pub fn dead_letter(&self, id: Id) -> Result<Option<DeadLetter>, StoreError> {
        self.store.get_json(DEAD_LETTERS, &id.to_bytes())
    }

    /// The contents of a dead letter.
    pub fn contents(&self, letter: &DeadLetter) -> Result<Vec<u8>, StoreError> {
        self.read(&dead_owner(letter.id), letter.size)
    }

    /// The contents of an archived file.
    pub fn archived_contents(&self, file: &Archived) -> Result<Vec<u8>, StoreError> {
        self.read(&archive_owner(&file.digest), file.size)
    }

    fn read(&self, owner: &[u8], size: u64) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        for n in 0..chunks(size) {
            let piece = self
                .store
                .get(CONTENTS, &chunk_key(owner, n))?
                .ok_or_else(|| {
                    StoreError::Decode(format!(
                        "{}: chunk {n} of a held file is missing",
                        CONTENTS.name()
                    ))
                })?;
            bytes.extend_from_slice(&piece);
        }
        Ok(bytes)
    }

    /// Records a replay that was refused again: the new reason, one more attempt, and a
    /// `sync.dead_letter_replayed` entry with the outcome failure.
    pub async fn refused_again(
        &self,
        letter: &DeadLetter,
        reason: &str,
        actor: Actor,
    ) -> Result<DeadLetter, StoreError> {
        let mut updated = letter.clone();
        updated.reason = reason.to_owned();
        updated.attempts = updated.attempts.saturating_add(1);
        updated.last_attempt_at = self.clock.now();
        let mut set = ChangeSet::new();
        set.put_with(
            DEAD_LETTERS,
            letter.id.to_bytes().to_vec(),
            Store::json(&updated)?,
            Sealing::DataKey,
            Expect::Present,
        );
        Event::new(Action::DeadLetterReplayed)
            .by(actor)
            .target("dead_letter", letter.id)
            .failed("refused again; the reason is kept on the dead letter")
            .add_to(&mut set);
        self.store.commit(set).await?;
        Ok(updated)
    }

    /// Ends a dead letter: replayed successfully (its contents move to the archive, with
    /// `sync.dead_letter_replayed`) or discarded (`sync.dead_letter_discarded`).
    /// Callers hold [`Held::operator_lock`] from reading the letter to closing it, so two
    /// operators cannot both replay one letter.
    pub async fn close(
        &self,
        letter: &DeadLetter,
        replayed: Option<(&[u8], u64, u64)>,
        actor: Actor,
    ) -> Result<(), StoreError> {
        let mut set = ChangeSet::new();
        set.delete(DEAD_LETTERS, letter.id.to_bytes().to_vec());
        delete_contents(&mut set, &dead_owner(letter.id), letter.size);
        let action = if let Some((bytes, accepted, duplicates)) = replayed {
            self.add_archive(
                &mut set,
                &Archived {
                    connector: letter.connector.clone(),
                    name: letter.name.clone(),
                    size: letter.size,
                    digest: letter.digest.clone(),
                    received_at: self.clock.now(),
                    accepted,
                    duplicates,
                },
                bytes,
            )?;
            Action::DeadLetterReplayed
        } else {
            Action::DeadLetterDiscarded
        };
        Event::new(action)
            .by(actor)
            .target("dead_letter", letter.id)
            .add_to(&mut set);
        self.store.commit(set).await
    }

    fn add_archive(
        &self,
        set: &mut ChangeSet,
        file: &Archived,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        if self
            .store
            .contains(ARCHIVE_DIGESTS, file.digest.as_bytes())?
        {
            return Ok(());
        }
        let key = archive_key(file);
        set.put(ARCHIVE, key.clone(), Store::json(file)?);
        set.put(ARCHIVE_DIGESTS, file.digest.as_bytes().to_vec(), key);
        put_contents(set, &archive_owner(&file.digest), bytes);
        Ok(())
    }

    /// Keeps processed files (each once per contents) in one change set.
    pub async fn archive_all(&self, connector: &str, files: &[Kept<'_>]) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut set = ChangeSet::new();
        let mut digests = std::collections::HashSet::new();
        for kept in files {
            let file = Archived {
                connector: connector.to_owned(),
                name: kept.name.to_owned(),
                size: kept.bytes.len() as u64,
                digest: digest_of(kept.bytes),
                received_at: now,
                accepted: kept.accepted,
                duplicates: kept.duplicates,
            };
            if digests.insert(file.digest.clone()) {
                self.add_archive(&mut set, &file, kept.bytes)?;
            }
        }
        if set.is_empty() {
            return Ok(());
        }
        self.store.commit(set).await
    }

    /// Keeps a processed file (once per contents), with the transactions it added and those
    /// already known.
    pub async fn archive(
        &self,
        connector: &str,
        name: &str,
        bytes: &[u8],
        accepted: u64,
        duplicates: u64,
    ) -> Result<(), StoreError> {
        let file = Archived {
            connector: connector.to_owned(),
            name: name.to_owned(),
            size: bytes.len() as u64,
            digest: digest_of(bytes),
            received_at: self.clock.now(),
            accepted,
            duplicates,
        };
        let mut set = ChangeSet::new();
        self.add_archive(&mut set, &file, bytes)?;
        if set.is_empty() {
            return Ok(());
        }
        self.store.commit(set).await
    }

    /// Processed files of a connector, newest first, at most `limit`.
    pub fn archived(&self, connector: &str, limit: usize) -> Result<Vec<Archived>, StoreError> {
        self.store
            .scan(ARCHIVE, &archive_prefix(connector))
            .take(limit)
            .map(|entry| {
                let (_, bytes) = entry?;
                serde_json::from_slice(&bytes)
                    .map_err(|err| StoreError::Decode(format!("{}: {err}", ARCHIVE.name())))
            })
            .collect()
    }

    /// Drops processed files received more than `keep` ago; returns how many.
    pub async fn prune(&self, keep: std::time::Duration) -> Result<usize, StoreError> {
        let cutoff = self.clock.now()
            - jiff::SignedDuration::try_from(keep).unwrap_or(jiff::SignedDuration::MAX);
        let mut set = ChangeSet::new();
        let mut dropped = 0;
        for (key, file) in self.store.scan_json::<Archived>(ARCHIVE)? {
            if file.received_at < cutoff {
                set.delete(ARCHIVE, key);
                set.delete(ARCHIVE_DIGESTS, file.digest.as_bytes().to_vec());
                delete_contents(&mut set, &archive_owner(&file.digest), file.size);
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.store.commit(set).await?;
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::{ManualClock, SystemRandom};
    use crate::store::{MasterKeySource, StoreOptions};

    fn held(dir: &std::path::Path, clock: Arc<ManualClock>) -> Held {
        let config = crate::config::Config {
            data_dir: dir.to_owned(),
            ..crate::config::Config::default()
        };
        let mut options = StoreOptions::from_config(&config);
        options.cache_mib = 8;
        let source = MasterKeySource::File(config.master_key_file());
        Store::init(&options, &source, clock.as_ref(), &SystemRandom::new()).unwrap();
        let store = Store::open(
            &options,
            &source,
            clock.clone(),
            Arc::new(SystemRandom::new()),
        )
        .unwrap();
        Held::new(store, clock, Arc::new(SystemRandom::new()))
    }

    #[tokio::test]
    async fn files_are_kept_once_newest_first_in_chunks_and_dropped_when_old() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new("2026-12-01T08:00:00Z".parse().unwrap()));
        let held = held(tmp.path(), clock.clone());
        let big: Vec<u8> = (0..CHUNK * 2 + 17).map(|i| (i % 251) as u8).collect();
        held.archive("a", "big.xml", &big, 3, 0).await.unwrap();
        clock.advance(jiff::SignedDuration::from_hours(30));
        held.archive("a", "small.xml", b"<POSLog/>", 1, 0)
            .await
            .unwrap();
        // The same contents again (a file re-read after a crash) are kept once.
        held.archive("a", "again.xml", b"<POSLog/>", 0, 1)
            .await
            .unwrap();
        held.archive("b", "other.xml", b"<POSLog> </POSLog>", 1, 0)
            .await
            .unwrap();

        let files = held.archived("a", 10).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["small.xml", "big.xml"]);
        assert_eq!(held.archived("a", 1).unwrap().len(), 1);
        assert_eq!(held.archived_contents(&files[1]).unwrap(), big);

        // A day's keeping drops the first file, and its contents.
        assert_eq!(held.prune(Duration::from_secs(24 * 3600)).await.unwrap(), 1);
        assert_eq!(held.archived("a", 10).unwrap().len(), 1);
        assert!(held.archived_contents(&files[1]).is_err());
        assert_eq!(held.archived("b", 10).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_refused_file_is_held_once_and_ends_once() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new("2026-12-01T08:00:00Z".parse().unwrap()));
        let held = held(tmp.path(), clock);
        let actor = || Actor::system("test");
        let letter = held
            .set_aside("a", "bad.xml", b"<POSLog", "cut short", actor())
            .await
            .unwrap();
        let again = held
            .set_aside("a", "bad.xml", b"<POSLog", "cut short", actor())
            .await
            .unwrap();
        assert_eq!(letter.id, again.id);
        assert_eq!(held.contents(&letter).unwrap(), b"<POSLog");
        let updated = held
            .refused_again(&letter, "still cut", actor())
            .await
            .unwrap();
        assert_eq!(
            (updated.attempts, updated.reason.as_str()),
            (2, "still cut")
        );

        held.close(&updated, Some((b"<POSLog/>", 1, 0)), actor())
            .await
            .unwrap();
        assert!(held.dead_letter(letter.id).unwrap().is_none());
        assert!(held.contents(&letter).is_err());
        assert_eq!(held.archived("a", 10).unwrap()[0].name, "bad.xml");
    }
}
