//! The encrypted store as later features use it: writes, reads, conflicts, subject erasure,
//! rotation, and what lands on disk.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clientele::domain::Id;
use clientele::store::{ChangeSet, Expect, Sealing, StoreError, Table};

use crate::support::{self, init_store, open_store, walk};

const CUSTOMERS: Table = Table::new("customers");
const NOTES: Table = Table::new("notes");

fn id(n: u8) -> Id {
    Id::from_bytes([n; 16])
}

#[test]
fn values_round_trip_and_sets_land_together() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());

    let mut set = ChangeSet::new();
    set.put(CUSTOMERS, b"c1".to_vec(), b"{\"name\":\"Ada\"}".to_vec());
    set.put(NOTES, b"n1".to_vec(), b"first note".to_vec());
    store.commit_blocking(set).unwrap();
    assert_eq!(
        store.get(CUSTOMERS, b"c1").unwrap().unwrap().as_slice(),
        b"{\"name\":\"Ada\"}"
    );
    assert_eq!(
        store.get(NOTES, b"n1").unwrap().unwrap().as_slice(),
        b"first note"
    );

    // A set whose second change fails its expectation leaves nothing of the first.
    let mut set = ChangeSet::new();
    set.put(NOTES, b"n2".to_vec(), b"should not land".to_vec());
    set.insert_new(CUSTOMERS, b"c1".to_vec(), b"duplicate".to_vec());
    let err = store.commit_blocking(set).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(store.get(NOTES, b"n2").unwrap().is_none());

    let mut set = ChangeSet::new();
    set.delete(NOTES, b"n1".to_vec());
    store.commit_blocking(set).unwrap();
    assert!(store.get(NOTES, b"n1").unwrap().is_none());
    drop(store);

    let store = open_store(tmp.path());
    assert_eq!(
        store.get(CUSTOMERS, b"c1").unwrap().unwrap().as_slice(),
        b"{\"name\":\"Ada\"}"
    );
    let keys: Vec<_> = store.scan(CUSTOMERS, b"").map(|r| r.unwrap().0).collect();
    assert_eq!(keys, vec![b"c1".to_vec()]);
}

#[test]
fn concurrent_creators_of_one_key_make_one_record() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let winners: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|n| {
                let store = store.clone();
                scope.spawn(move || {
                    let mut set = ChangeSet::new();
                    set.insert_new(
                        CUSTOMERS,
                        b"email-index".to_vec(),
                        format!("writer {n}").into_bytes(),
                    );
                    usize::from(store.commit_blocking(set).is_ok())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(winners, 1);
}

#[test]
fn canary_never_reaches_the_disk_in_clear() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let canary = "CANARY-7f3a9-personal-data-zzq";
    let store = open_store(tmp.path());
    let mut set = ChangeSet::new();
    for n in 0..200u32 {
        set.put(
            CUSTOMERS,
            n.to_be_bytes().to_vec(),
            format!("{{\"note\":\"{canary} {n}\"}}").into_bytes(),
        );
    }
    set.put_with(
        NOTES,
        b"subject".to_vec(),
        canary.as_bytes().to_vec(),
        Sealing::Subject(id(9)),
        Expect::Anything,
    );
    store.commit_blocking(set).unwrap();
    store.rotate_blocking().unwrap();
    assert!(store.wait_for_rewrite(Duration::from_secs(30)));
    drop(store);

    let files = walk(tmp.path());
    assert!(
        files.len() > 4,
        "expected database, keys and keystore files: {files:?}"
    );
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "canary found in clear in {}",
            file.display()
        );
    }
}

#[test]
fn erased_subject_stays_erased_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let (ada, bob) = (id(1), id(2));
    let mut set = ChangeSet::new();
    set.put_with(
        CUSTOMERS,
        ada.to_bytes().to_vec(),
        b"Ada's profile".to_vec(),
        Sealing::Subject(ada),
        Expect::Absent,
    );
    set.put_with(
        CUSTOMERS,
        bob.to_bytes().to_vec(),
        b"Bob's profile".to_vec(),
        Sealing::Subject(bob),
        Expect::Absent,
    );
    store.commit_blocking(set).unwrap();

    store.erase_subject(ada).unwrap();
    assert!(matches!(
        store.get(CUSTOMERS, &ada.to_bytes()),
        Err(StoreError::Erased)
    ));
    assert_eq!(
        store
            .get(CUSTOMERS, &bob.to_bytes())
            .unwrap()
            .unwrap()
            .as_slice(),
        b"Bob's profile"
    );

    // No new record can be sealed for an erased subject.
    let mut set = ChangeSet::new();
    set.put_with(
        NOTES,
        b"late".to_vec(),
        b"late write".to_vec(),
        Sealing::Subject(ada),
        Expect::Anything,
    );
    assert!(matches!(
        store.commit_blocking(set),
        Err(StoreError::Erased)
    ));
    drop(store);

    let store = open_store(tmp.path());
    assert!(matches!(
        store.get(CUSTOMERS, &ada.to_bytes()),
        Err(StoreError::Erased)
    ));
    let report = store.verify_all();
    assert_eq!(report.erased, 1);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
}

#[test]
fn restored_keystore_is_cut_by_the_erasure_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let ada = id(1);
    let mut set = ChangeSet::new();
    set.put_with(
        CUSTOMERS,
        ada.to_bytes().to_vec(),
        b"Ada".to_vec(),
        Sealing::Subject(ada),
        Expect::Anything,
    );
    store.commit_blocking(set).unwrap();
    drop(store);

    // An old copy of the keystore, taken before the erasure, as a restore would bring back.
    let keystore = tmp.path().join("subjects.keystore");
    let old_copy = std::fs::read(&keystore).unwrap();
    let store = open_store(tmp.path());
    store.erase_subject(ada).unwrap();
    drop(store);
    std::fs::write(&keystore, &old_copy).unwrap();

    let store = open_store(tmp.path());
    assert!(matches!(
        store.get(CUSTOMERS, &ada.to_bytes()),
        Err(StoreError::Erased)
    ));
    drop(store);
    assert_ne!(
        std::fs::read(&keystore).unwrap(),
        old_copy,
        "the keystore is rewritten without the key"
    );
}

#[test]
fn tampered_or_moved_records_are_integrity_errors() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let mut set = ChangeSet::new();
    set.put(CUSTOMERS, b"victim".to_vec(), vec![0x41; 300]);
    store.commit_blocking(set).unwrap();
    drop(store);

    // Tamper below the store, as someone with the files (but not the key) could.
    {
        let db = support::raw_sled(tmp.path());
        let data = db.open_tree("data").unwrap();
        let raw = data
            .get(CUSTOMERS.store_key(b"victim"))
            .unwrap()
            .unwrap()
            .to_vec();
        let mut flipped = raw.clone();
        let last = flipped.len() - 1;
        flipped[last - 20] ^= 0x01;
        data.insert(CUSTOMERS.store_key(b"flipped"), flipped)
            .unwrap();
        data.insert(CUSTOMERS.store_key(b"copied"), raw.clone())
            .unwrap();
        data.insert(NOTES.store_key(b"victim"), raw.clone())
            .unwrap();
        data.insert(
            CUSTOMERS.store_key(b"truncated"),
            raw[..raw.len() - 5].to_vec(),
        )
        .unwrap();
        db.flush().unwrap();
    }

    let store = open_store(tmp.path());
    assert_eq!(store.get(CUSTOMERS, b"victim").unwrap().unwrap().len(), 300);
    for (table, key) in [
        (CUSTOMERS, &b"flipped"[..]),
        (CUSTOMERS, b"copied"),
        (NOTES, b"victim"),
        (CUSTOMERS, b"truncated"),
    ] {
        match store.get(table, key) {
            Err(StoreError::Integrity { table: named, .. }) => assert_eq!(named, table.name()),
            other => panic!(
                "{}/{}: expected an integrity error, got {other:?}",
                table.name(),
                String::from_utf8_lossy(key)
            ),
        }
    }
    let report = store.verify_all();
    assert_eq!(report.failures.len(), 4, "{:?}", report.failures);
}

#[test]
fn rotation_under_concurrent_writes_keeps_every_record_readable() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let mut seed = ChangeSet::new();
    for n in 0..3000u32 {
        seed.put(
            NOTES,
            n.to_be_bytes().to_vec(),
            format!("seed {n}").into_bytes(),
        );
    }
    store.commit_blocking(seed).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u8)
        .map(|w| {
            let store = store.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut last = HashMap::new();
                let mut round = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let key = vec![w, (round % 50) as u8];
                    let value = format!("writer {w} round {round}").into_bytes();
                    let mut set = ChangeSet::new();
                    set.put(CUSTOMERS, key.clone(), value.clone());
                    store.commit_blocking(set).unwrap();
                    last.insert(key, value);
                    round += 1;
                }
                last
            })
        })
        .collect();

    for _ in 0..3 {
        store.rotate_blocking().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(store.wait_for_rewrite(Duration::from_secs(60)));
    stop.store(true, Ordering::Relaxed);
    let expected: Vec<HashMap<Vec<u8>, Vec<u8>>> =
        writers.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(store.wait_for_rewrite(Duration::from_secs(60)));

    for last in &expected {
        for (key, value) in last {
            assert_eq!(
                store.get(CUSTOMERS, key).unwrap().unwrap().as_slice(),
                value.as_slice()
            );
        }
    }
    let status = store.key_status();
    assert_eq!(status.current_term, 4);
    let report = store.verify_all();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(
        report
            .terms
            .iter()
            .map(|(term, _)| *term)
            .collect::<Vec<_>>(),
        vec![4],
        "every record rewritten under term 4"
    );
}

#[test]
fn encryption_limit_rotates_automatically() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let mut options = support::options(tmp.path());
    options.max_encryptions_per_term = 200;
    let store = support::open_store_with(&options, tmp.path());
    // 600 encryptions over 20 records: the limit is passed, while the rewrite of the few
    // records stays well under it.
    for round in 0..30u32 {
        let mut set = ChangeSet::new();
        for m in 0..20u32 {
            set.put(
                NOTES,
                m.to_be_bytes().to_vec(),
                round.to_be_bytes().to_vec(),
            );
        }
        store.commit_blocking(set).unwrap();
    }
    assert!(
        store.key_status().current_term >= 2,
        "{:?}",
        store.key_status()
    );
    assert!(store.wait_for_rewrite(Duration::from_secs(30)));
    assert!(store.verify_all().failures.is_empty());
}

#[test]
fn blind_indexes_are_stable_and_purpose_bound() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let a = store.blind_index("email", "ada@example.com");
    assert_eq!(a, store.blind_index("email", "ada@example.com"));
    assert_ne!(a, store.blind_index("phone", "ada@example.com"));
    assert_ne!(a, store.blind_index("email", "bob@example.com"));
    drop(store);
    assert_eq!(
        open_store(tmp.path()).blind_index("email", "ada@example.com"),
        a
    );

    let other = tempfile::tempdir().unwrap();
    init_store(other.path());
    assert_ne!(
        open_store(other.path()).blind_index("email", "ada@example.com"),
        a,
        "keys differ per store"
    );
}

const LOG: Table = Table::new("testlog");

/// A log entry that encodes its link, or refuses to be written.
#[derive(Debug)]
struct Note {
    text: &'static str,
    refuse: bool,
}

impl clientele::store::Chained for Note {
    fn finish(&self, link: &clientele::store::Link) -> Result<(Vec<u8>, [u8; 32]), String> {
        if self.refuse {
            return Err("refused on purpose".into());
        }
        let bytes = format!("{}|{}|{}", link.seq, hex(&link.prev), self.text).into_bytes();
        let hash: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &bytes)
            .as_ref()
            .try_into()
            .unwrap();
        Ok((bytes, hash))
    }
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

#[test]
fn concurrent_appends_form_one_chain_that_survives_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let mut set = ChangeSet::new();
                    set.append(
                        LOG,
                        Box::new(Note {
                            text: "x",
                            refuse: false,
                        }),
                    );
                    store.commit_blocking(set).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let check = |store: &clientele::store::Store| {
        let mut prev = [0u8; 32];
        let mut seqs = Vec::new();
        for entry in store.log_entries(LOG, 1, u64::MAX, false) {
            let (seq, bytes) = entry.unwrap();
            let text = String::from_utf8(bytes.to_vec()).unwrap();
            assert!(
                text.starts_with(&format!("{seq}|{}|", hex(&prev))),
                "entry {seq} does not link to the one before"
            );
            prev = ring::digest::digest(&ring::digest::SHA256, &bytes)
                .as_ref()
                .try_into()
                .unwrap();
            seqs.push(seq);
        }
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        let head = store.log_head(LOG).unwrap();
        assert_eq!((head.seq, head.hash), (200, prev));
    };
    check(&store);
    drop(store);

    // After reopening, the next entry links to the stored head.
    let store = open_store(tmp.path());
    let mut set = ChangeSet::new();
    set.append(
        LOG,
        Box::new(Note {
            text: "after",
            refuse: false,
        }),
    );
    store.commit_blocking(set).unwrap();
    assert_eq!(store.log_head(LOG).unwrap().seq, 201);
    let newest: Vec<u64> = store
        .log_entries(LOG, 1, u64::MAX, true)
        .take(2)
        .map(|e| e.unwrap().0)
        .collect();
    assert_eq!(newest, vec![201, 200]);
}

fn append_notes(store: &clientele::store::Store, count: usize) {
    let mut set = ChangeSet::new();
    for _ in 0..count {
        set.append(
            LOG,
            Box::new(Note {
                text: "n",
                refuse: false,
            }),
        );
    }
    store.commit_blocking(set).unwrap();
}

fn seqs(store: &clientele::store::Store, from: u64, to: u64, reverse: bool) -> Vec<u64> {
    store
        .log_entries(LOG, from, to, reverse)
        .map(|e| e.unwrap().0)
        .collect()
}

#[test]
fn entries_written_together_share_a_record_and_read_back_by_any_range() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    // Entries 1-2 alone, 3-12 in one set, 13 alone, 14-613 in one set: about 120 bytes each,
    // so records of at most 7 KiB of entries hold about 58 of them (11 records for the set).
    append_notes(&store, 1);
    append_notes(&store, 1);
    append_notes(&store, 10);
    append_notes(&store, 1);
    append_notes(&store, 600);
    let records = store.count(LOG);
    assert!(
        (4 + 10..=4 + 13).contains(&records),
        "{records} records for 613 entries"
    );

    assert_eq!(
        seqs(&store, 1, u64::MAX, false),
        (1..=613).collect::<Vec<_>>()
    );
    assert_eq!(seqs(&store, 5, 8, false), vec![5, 6, 7, 8]);
    assert_eq!(seqs(&store, 5, 8, true), vec![8, 7, 6, 5]);
    assert_eq!(seqs(&store, 12, 14, false), vec![12, 13, 14]);
    assert_eq!(seqs(&store, 3, 3, false), vec![3]);
    assert_eq!(seqs(&store, 300, 300, true), vec![300]);
    assert_eq!(seqs(&store, 610, 700, true), vec![613, 612, 611, 610]);
    assert!(seqs(&store, 614, 700, false).is_empty());

    assert_eq!(store.log_first_seq(LOG).unwrap(), Some(1));

    // Only records wholly inside a range are named for deletion.
    let keys = store.log_record_keys(LOG, 1, 12).unwrap();
    assert_eq!(keys.len(), 3, "entry 1, entry 2 and the record of 3-12");
    assert!(store.log_record_keys(LOG, 1, 11).unwrap().len() == 2);
    let mut set = ChangeSet::new();
    for key in keys {
        set.delete(LOG, key);
    }
    store.commit_blocking(set).unwrap();
    assert_eq!(
        seqs(&store, 1, 20, false),
        vec![13, 14, 15, 16, 17, 18, 19, 20]
    );
    assert_eq!(store.log_first_seq(LOG).unwrap(), Some(13));
    drop(store);

    // The head is the last entry of the last record, also after reopening.
    let store = open_store(tmp.path());
    assert_eq!(store.log_head(LOG).unwrap().seq, 613);
    append_notes(&store, 2);
    assert_eq!(seqs(&store, 612, u64::MAX, false), vec![612, 613, 614, 615]);
    assert!(store.verify_all().failures.is_empty());
}

#[test]
fn a_refused_log_entry_refuses_the_business_write_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let mut set = ChangeSet::new();
    set.put(CUSTOMERS, b"c1".to_vec(), b"{}".to_vec());
    set.append(
        LOG,
        Box::new(Note {
            text: "x",
            refuse: true,
        }),
    );
    let err = store.commit_blocking(set).unwrap_err();
    assert!(matches!(err, StoreError::LogRefused { .. }), "{err}");
    assert!(store.get(CUSTOMERS, b"c1").unwrap().is_none());
    assert_eq!(store.log_head(LOG).unwrap().seq, 0);

    // A set refused for its expectation does not use up a sequence number either.
    let mut set = ChangeSet::new();
    set.append(
        LOG,
        Box::new(Note {
            text: "y",
            refuse: false,
        }),
    );
    set.put_with(
        CUSTOMERS,
        b"c2".to_vec(),
        b"{}".to_vec(),
        Sealing::DataKey,
        Expect::Present,
    );
    assert!(store.commit_blocking(set).is_err());
    let mut set = ChangeSet::new();
    set.append(
        LOG,
        Box::new(Note {
            text: "z",
            refuse: false,
        }),
    );
    store.commit_blocking(set).unwrap();
    assert_eq!(store.log_head(LOG).unwrap().seq, 1);
}
