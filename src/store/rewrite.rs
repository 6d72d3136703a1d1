//! Background rewrite of records sealed under older data-key terms.
//!
//! After a rotation the keyring holds a `rewrite` cursor. This thread walks the data tree from
//! the cursor, re-seals every record of an older term through the committer (only when the
//! record is unchanged since it was read, so it never overwrites a newer write), and moves the
//! cursor forward in the same change set. A kill at any point resumes from the last cursor at
//! the next start; when the walk ends, the cursor is removed.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::commit::{Change, ChangeSet, Job};
use super::keyring::{self, KEYRING};
use super::seal::{self, KeyRef};
use super::{Shared, StoreError};

/// Records re-sealed per change set.
const BATCH: usize = 512;

pub(super) fn spawn(
    shared: Arc<Shared>,
    queue: Sender<Job>,
    wake: Receiver<()>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("store-rewriter".into()).spawn(move || {
        while wake.recv().is_ok() {
            while wake.try_recv().is_ok() {}
            match rewrite_all(&shared, &queue) {
                Ok(0) => {}
                Ok(count) => info!(records = count, term = shared.keyring.current_term(), "older records rewritten under the current key term"),
                Err(StoreError::Closed) => return,
                Err(err) => warn!(error = %err, "key rewrite stopped; it resumes at the next start or rotation"),
            }
        }
    })
}

fn rewrite_all(shared: &Shared, queue: &Sender<Job>) -> Result<u64, StoreError> {
    let cursor_key = KEYRING.store_key(keyring::REWRITE_KEY);
    let Some(raw_cursor) = shared.data.get(&cursor_key)? else {
        return Ok(0);
    };
    let saved = shared.open_raw(&cursor_key, &raw_cursor)?;
    let (mut term, mut cursor) = match saved.split_first_chunk::<4>() {
        Some((term, position)) => (u32::from_be_bytes(*term), position.to_vec()),
        None => (0, Vec::new()),
    };
    let keyring_prefix = KEYRING.store_key(b"");
    let mut total = 0u64;

    loop {
        if shared.closing.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        // A rotation since the cursor was written restarts the walk for the new term.
        let current = shared.keyring.current_term();
        if current != term {
            term = current;
            cursor.clear();
        }
        let mut set = ChangeSet::new();
        let mut last = None;
        let mut scanned = 0;
        for entry in shared.data.range(cursor.clone()..) {
            let (store_key, raw) = entry?;
            if !cursor.is_empty() && store_key.as_ref() == cursor.as_slice() {
                continue;
            }
            scanned += 1;
            last = Some(store_key.to_vec());
            if store_key.starts_with(&keyring_prefix) {
                continue;
            }
            if let Ok(header) = seal::header(&raw)
                && let KeyRef::Term(old) = header.key
                && old != term
            {
                set.push(Change::Reseal {
                    store_key: store_key.to_vec(),
                    raw: raw.to_vec(),
                });
            }
            if set.len() >= BATCH || scanned >= BATCH * 8 {
                break;
            }
        }

        let Some(next) = last else {
            if shared.keyring.current_term() != term {
                continue;
            }
            let mut done = ChangeSet::new();
            done.push(Change::FinishRewrite { term });
            commit(queue, done)?;
            if shared.keyring.current_term() != term {
                continue;
            }
            return Ok(total);
        };
        total += set.len() as u64;
        set.push(Change::RewriteCursor {
            term,
            position: next.clone(),
        });
        commit(queue, set)?;
        cursor = next;
    }
}

fn commit(queue: &Sender<Job>, set: ChangeSet) -> Result<(), StoreError> {
    let (reply, answer) = oneshot::channel();
    queue
        .send(Job::Commit { set, reply })
        .map_err(|_| StoreError::Closed)?;
    answer.blocking_recv().map_err(|_| StoreError::Closed)?
}
