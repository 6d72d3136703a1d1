//! Backups, verification, restore and master-key rewrap, used as an operator would: the real
//! binary against a running appliance or a stopped store.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clientele::app::{self, Deps};
use clientele::audit::{Audit, Entry};
use clientele::clock::{ManualClock, SystemClock, SystemRandom};
use clientele::config::AuditConfig;
use clientele::control::{self, Request, Response};
use clientele::domain::Id;
use clientele::store::{ChangeSet, Expect, MasterKeySource, Sealing, Store, StoreError, Table};

use crate::support::{
    clientele, config, init_store, key_source, open_store, open_store_with, options, raw_sled,
};
use crate::web::TestApp;

const WRITES: Table = Table::new("backup_test_writes");
const PEOPLE: Table = Table::new("backup_test_people");

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let (ok, stdout, stderr) = (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !stderr.contains("panicked"),
        "the command panicked: {stderr}"
    );
    (ok, stdout, stderr)
}

fn restore_cmd(source_dir: &Path, target: &Path, file: &Path) -> Command {
    let mut cmd = clientele(target);
    cmd.arg("restore")
        .arg(file)
        .arg("--master-key")
        .arg(source_dir.join("keys/master.key"))
        .arg("--erasure-ledger")
        .arg(source_dir.join("keys/erasures.ledger"));
    cmd
}

fn open_audit(store: &Store) -> Audit {
    Audit::open(
        store,
        Arc::new(SystemClock),
        &SystemRandom::new(),
        &AuditConfig::default(),
    )
    .unwrap()
}

/// Every audit entry, checked for its hash and its link to the entry before.
fn chain(store: &Store) -> Vec<Entry> {
    let audit = open_audit(store);
    let head = audit.head().unwrap();
    let entries: Vec<Entry> = audit
        .entries(1, head.seq, false)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(entries.len() as u64, head.seq);
    for pair in entries.windows(2) {
        assert_eq!(
            pair[1].prev, pair[0].hash,
            "chain broken at {}",
            pair[1].seq
        );
    }
    entries
}

/// Raw (still sealed) records by table name and key.
fn raw_records(dir: &Path) -> BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>> {
    let db = raw_sled(dir);
    let data = db.open_tree("data").unwrap();
    let mut out: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
    for entry in &data {
        let (key, value) = entry.unwrap();
        let len = usize::from(key[0]);
        let table = String::from_utf8(key[1..=len].to_vec()).unwrap();
        out.entry(table)
            .or_default()
            .insert(key[1 + len..].to_vec(), value.to_vec());
    }
    out
}

/// A stopped store with records sealed under the data key and under two subjects' own keys.
fn stopped_store_with_people(dir: &Path) -> (Id, Id) {
    init_store(dir);
    let store = open_store(dir);
    open_audit(&store).write_public_key(dir).unwrap();
    let (kept, erased) = (Id::from_bytes([1; 16]), Id::from_bytes([2; 16]));
    for (n, person) in [kept, erased].into_iter().enumerate() {
        let mut set = ChangeSet::new();
        set.put_with(
            PEOPLE,
            person.to_bytes().to_vec(),
            format!("{{\"name\":\"person {n}\"}}").into_bytes(),
            Sealing::Subject(person),
            Expect::Anything,
        );
        store.commit_blocking(set).unwrap();
    }
    for n in 0u32..300 {
        let mut set = ChangeSet::new();
        set.put(WRITES, n.to_be_bytes().to_vec(), vec![b'x'; 300]);
        store.commit_blocking(set).unwrap();
    }
    drop(store);
    (kept, erased)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writes_continue_restores_to_one_point_in_time() {
    let app = TestApp::start().await;
    let store = app.app.as_ref().unwrap().store.clone();
    let admin = app
        .signed_in("boss", clientele::domain::account::Role::Admin)
        .await;
    match control::answer(
        Request::Demo {
            customers: 1000,
            seed: 3,
        },
        store.clone(),
    )
    .await
    {
        Response::DemoFilled { .. } => {}
        other => panic!("demo not filled: {other:?}"),
    }

    // A writer that keeps committing numbered records, each acknowledged before the next.
    let stop = Arc::new(AtomicBool::new(false));
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Acquire) {
                let mut set = ChangeSet::new();
                set.put(WRITES, n.to_be_bytes().to_vec(), vec![b'w'; 200]);
                store.commit(set).await.unwrap();
                let _ = acked_tx.send(n);
                n += 1;
            }
            n
        })
    };
    let mut acked_before = 0;
    while acked_before < 50 {
        acked_before = acked_rx.recv().await.unwrap();
    }

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("running.clbk");
    let dir = app.dir.path().to_owned();
    let (ok, out, err) = {
        let (dir, file) = (dir.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            run(clientele(&dir).arg("backup").arg("--out").arg(&file))
        })
        .await
        .unwrap()
    };
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("streaming"),
        "the running server did not stream it: {out}"
    );
    assert!(out.contains("verified"), "{out}");
    // Writes went on while the backup streamed.
    while acked_rx.try_recv().is_ok() {}
    let during = acked_rx.recv().await.unwrap();
    stop.store(true, Ordering::Release);
    let written = writer.await.unwrap();
    assert!(written > during);

    // The admin page shows it.
    let page = admin
        .get(app.url("/admin/users"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Last backup"), "{page}");
    assert!(page.contains("running.clbk"), "{page}");

    let (ok, out, err) = run(clientele(&dir).args(["backup", "verify"]).arg(&file));
    assert!(ok, "{out}{err}");
    assert!(out.contains("verified"), "{out}");
    // Writes committed while it streamed went into the redo section.
    let redo: u64 = out
        .lines()
        .find_map(|line| line.trim_start().strip_prefix("redo"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or(0);
    assert!(redo > 0, "no redo section: {out}");

    let target = work.path().join("restored");
    let (ok, out, err) = run(&mut restore_cmd(&dir, &target, &file));
    assert!(ok, "{out}{err}");
    assert!(out.contains("Restored"), "{out}");
    // Stopped, with its folder kept for the comparison.
    drop(store);
    let mut app = app;
    app.app.take().unwrap().stop().await;

    // One point in time: the numbered writes are a prefix with no gap, and include every
    // write acknowledged before the backup began.
    let restored = open_store(&target);
    let numbers: Vec<u32> = restored
        .scan(WRITES, b"")
        .map(|entry| u32::from_be_bytes(entry.unwrap().0.try_into().unwrap()))
        .collect();
    assert!(
        numbers.len() as u32 > acked_before,
        "{} <= {acked_before}",
        numbers.len()
    );
    assert!(numbers.iter().enumerate().all(|(i, n)| *n == i as u32));
    let report = restored.verify_all();
    assert!(report.failures.is_empty(), "{:?}", report.failures);

    // The restored trail is the source's trail up to the backup, then the restore.
    let source = open_store(&dir);
    let source_chain = chain(&source);
    let restored_chain = chain(&restored);
    let last = restored_chain.last().unwrap();
    assert_eq!(last.action, "backup.restored");
    let before = &restored_chain[..restored_chain.len() - 1];
    assert_eq!(
        before.iter().map(|e| &e.hash).collect::<Vec<_>>(),
        source_chain[..before.len()]
            .iter()
            .map(|e| &e.hash)
            .collect::<Vec<_>>()
    );
    assert!(source_chain.iter().any(|e| e.action == "backup.created"
        && e.target_id.as_deref() == Some("running.clbk")));
    assert!(source_chain.iter().any(|e| e.action == "backup.verified"));
    drop((source, restored));

    // The restored folder starts as an appliance.
    let restarted = app::start(config(&target), Deps::system(), key_source(&target))
        .await
        .unwrap();
    let count = restarted.store.count(clientele::crm::CUSTOMERS);
    assert!(count >= 1000, "{count} customers");
    restarted.stop().await;
}

#[test]
fn a_restore_brings_back_every_record_and_the_audit_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    stopped_store_with_people(&dir);
    let file = tmp.path().join("stopped.clbk");
    let (ok, out, err) = run(clientele(&dir).arg("backup").arg("--out").arg(&file));
    assert!(ok, "{out}{err}");
    assert!(!out.contains("streaming"), "no server runs: {out}");

    let target = tmp.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    let (ok, out, err) = run(&mut restore_cmd(&dir, &target, &file));
    assert!(ok, "{out}{err}");

    // Every record is back as it was sealed; only the trail's newest entries (the backup in
    // the source, the restore in the copy) and the key-use counter differ.
    let source = raw_records(&dir);
    let copy = raw_records(&target);
    let source_seq = chain(&open_store(&dir)).len();
    let copy_chain = chain(&open_store(&target));
    assert_eq!(copy_chain.last().unwrap().action, "backup.restored");
    for (table, records) in &source {
        let restored = &copy[table];
        match table.as_str() {
            "audit" => {
                let common = copy_chain.len() - 1;
                assert_eq!(source_seq, common + 1, "one backup entry after the copy");
                let shared: Vec<_> = records.iter().take(common).collect();
                let back: Vec<_> = restored.iter().take(common).collect();
                assert_eq!(shared, back);
            }
            "keyring" => {
                let without = |m: &BTreeMap<Vec<u8>, Vec<u8>>| {
                    m.iter()
                        .filter(|(k, _)| k.as_slice() != b"current")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<Vec<_>>()
                };
                assert_eq!(without(records), without(restored));
            }
            _ => assert_eq!(records, restored, "table {table}"),
        }
    }
    assert_eq!(
        source.keys().collect::<Vec<_>>(),
        copy.keys().collect::<Vec<_>>()
    );
    let store = open_store(&target);
    let person: serde_json::Value = store
        .get_json(PEOPLE, &Id::from_bytes([1; 16]).to_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(person["name"], "person 0");
    assert_eq!(store.count(WRITES), 300);
    drop(store);

    // `audit verify` accepts an export of the restored trail under the source's public key.
    let export = tmp.path().join("trail.jsonl");
    let (ok, out, err) = run(clientele(&target)
        .args(["audit", "export", "--out"])
        .arg(&export));
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(clientele(&target)
        .args(["audit", "verify"])
        .arg(&export)
        .arg("--public-key")
        .arg(dir.join("audit-signing.pub")));
    assert!(ok, "{out}{err}");
}

#[test]
fn damaged_files_wrong_keys_and_occupied_folders_are_refused_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    stopped_store_with_people(&dir);
    let file = tmp.path().join("good.clbk");
    let (ok, out, err) = run(clientele(&dir).arg("backup").arg("--out").arg(&file));
    assert!(ok, "{out}{err}");
    let good = std::fs::read(&file).unwrap();
    let (ok, _, err) = run(clientele(&dir).arg("backup").arg("--out").arg(&file));
    assert!(!ok && err.contains("already exists"), "{err}");

    // One byte changed in the middle of the data.
    let tampered = tmp.path().join("tampered.clbk");
    let mut bytes = good.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&tampered, &bytes).unwrap();
    let (ok, _, err) = run(clientele(&dir).args(["backup", "verify"]).arg(&tampered));
    assert!(!ok);
    assert!(err.contains("tampered.clbk"), "{err}");
    assert!(
        err.contains("does not match the manifest") || err.contains("damaged or altered"),
        "{err}"
    );

    // Cut short, at two places.
    for keep in [good.len() - 40, good.len() / 3] {
        let truncated = tmp.path().join(format!("cut-{keep}.clbk"));
        std::fs::write(&truncated, &good[..keep]).unwrap();
        let (ok, _, err) = run(clientele(&dir).args(["backup", "verify"]).arg(&truncated));
        assert!(!ok);
        assert!(err.contains("ends early at byte"), "{err}");
    }

    // Not a backup at all; and bytes added at the end.
    let other = tmp.path().join("other.clbk");
    std::fs::write(&other, b"hello").unwrap();
    let (ok, _, err) = run(clientele(&dir).args(["backup", "verify"]).arg(&other));
    assert!(!ok && err.contains("not a Clientele backup"), "{err}");
    let longer = tmp.path().join("longer.clbk");
    let mut bytes = good.clone();
    bytes.extend_from_slice(b"extra");
    std::fs::write(&longer, &bytes).unwrap();
    let (ok, _, err) = run(clientele(&dir).args(["backup", "verify"]).arg(&longer));
    assert!(!ok && err.contains("bytes after the signature"), "{err}");

    // Signed by another appliance's key.
    let stranger = tmp.path().join("stranger");
    stopped_store_with_people(&stranger);
    let (ok, _, err) = run(clientele(&dir)
        .args(["backup", "verify"])
        .arg(&file)
        .arg("--public-key")
        .arg(stranger.join("audit-signing.pub")));
    assert!(!ok && err.contains("another audit signing key"), "{err}");

    // A restore refuses each of them and leaves nothing behind.
    let target = tmp.path().join("target");
    let (ok, _, err) = run(&mut restore_cmd(&dir, &target, &tampered));
    assert!(!ok, "{err}");
    assert!(!target.exists());
    assert!(!tmp.path().join("target.restoring").exists());

    let mut wrong_key = clientele(&target);
    wrong_key
        .arg("restore")
        .arg(&file)
        .arg("--master-key")
        .arg(stranger.join("keys/master.key"))
        .arg("--erasure-ledger")
        .arg(dir.join("keys/erasures.ledger"));
    let (ok, _, err) = run(&mut wrong_key);
    assert!(!ok && err.contains("does not open this backup"), "{err}");
    assert!(!target.exists());

    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("something"), b"x").unwrap();
    let (ok, _, err) = run(&mut restore_cmd(&dir, &target, &file));
    assert!(!ok && err.contains("is not empty"), "{err}");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1);

    // Without the current erasure ledger, the restore asks for it.
    let fresh = tmp.path().join("fresh");
    let (ok, _, err) = run(clientele(&fresh)
        .arg("restore")
        .arg(&file)
        .arg("--master-key")
        .arg(dir.join("keys/master.key")));
    assert!(!ok && err.contains("--erasure-ledger"), "{err}");
    assert!(!fresh.exists());
}

#[test]
fn an_erasure_newer_than_the_backup_stays_applied_after_restoring_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (kept, erased) = stopped_store_with_people(&dir);
    let file = tmp.path().join("before-erasure.clbk");
    let (ok, out, err) = run(clientele(&dir).arg("backup").arg("--out").arg(&file));
    assert!(ok, "{out}{err}");

    // The person is erased after the backup was made.
    let store = open_store(&dir);
    store.erase_subject(erased).unwrap();
    drop(store);

    let target = tmp.path().join("restored");
    let (ok, out, err) = run(&mut restore_cmd(&dir, &target, &file));
    assert!(ok, "{out}{err}");
    assert!(out.contains("erasures applied: 1"), "{out}");
    let store = open_store(&target);
    assert!(matches!(
        store.get(PEOPLE, &erased.to_bytes()),
        Err(StoreError::Erased)
    ));
    assert!(store.get(PEOPLE, &kept.to_bytes()).unwrap().is_some());
    let ledger = std::fs::read_to_string(target.join("keys/erasures.ledger")).unwrap();
    assert!(ledger.contains(&erased.to_string()));
    drop(store);

    // Only when told the ledger is lost does the older state come back.
    let careless = tmp.path().join("careless");
    let (ok, out, err) = run(clientele(&careless)
        .arg("restore")
        .arg(&file)
        .arg("--master-key")
        .arg(dir.join("keys/master.key"))
        .arg("--without-current-ledger"));
    assert!(ok, "{out}{err}");
    let store = open_store(&careless);
    assert!(store.get(PEOPLE, &erased.to_bytes()).unwrap().is_some());
}

#[test]
fn rewrap_changes_the_master_key_and_the_old_one_stops_opening() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (kept, _) = stopped_store_with_people(&dir);
    let old_key = tmp.path().join("old.key");
    std::fs::copy(dir.join("keys/master.key"), &old_key).unwrap();
    let data_before = raw_records(&dir).remove("backup_test_writes").unwrap();

    let (ok, out, err) = run(clientele(&dir).args(["keys", "rewrap"]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("new key fingerprint"), "{out}");
    assert_ne!(
        std::fs::read(&old_key).unwrap(),
        std::fs::read(dir.join("keys/master.key")).unwrap()
    );
    // No record was rewritten.
    assert_eq!(
        raw_records(&dir).remove("backup_test_writes").unwrap(),
        data_before
    );
    let old = Store::open(
        &options(&dir),
        &MasterKeySource::File(old_key.clone()),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
    );
    assert!(matches!(old, Err(StoreError::WrongKey { .. })), "{old:?}");
    let store = open_store_with(&options(&dir), &dir);
    assert!(store.get(PEOPLE, &kept.to_bytes()).unwrap().is_some());
    assert_eq!(store.count(WRITES), 300);
    assert_eq!(chain(&store).last().unwrap().action, "keys.rewrapped");
    drop(store);

    // Then to a passphrase: the key file no longer opens, the passphrase does.
    let passphrase = tmp.path().join("passphrase");
    std::fs::write(&passphrase, "a long and new passphrase\n").unwrap();
    let (ok, out, err) = run(clientele(&dir)
        .args(["keys", "rewrap", "--new-passphrase-file"])
        .arg(&passphrase));
    assert!(ok, "{out}{err}");
    let (ok, _, err) = run(clientele(&dir).args(["keys", "status"]));
    assert!(!ok && err.contains("passphrase"), "{err}");
    let (ok, out, err) = run(clientele(&dir)
        .arg("--passphrase-file")
        .arg(&passphrase)
        .args(["keys", "status"]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("subject keys:        2"), "{out}");
}

#[test]
fn scheduled_backups_keep_the_newest_and_report_the_last() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    stopped_store_with_people(&dir);
    let store = open_store(&dir);
    let clock = ManualClock::new("2026-12-01T02:00:00Z".parse().unwrap());
    let folder = tmp.path().join("scheduled");
    for _ in 0..3 {
        let status = clientele::backups::scheduled_once(
            &store,
            &folder,
            &dir,
            2,
            &clock,
            &SystemRandom::new(),
        )
        .unwrap();
        assert!(status.ok(), "{status:?}");
        clock.advance(jiff::SignedDuration::from_hours(24));
    }
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "clientele-20261202T020000Z.clbk",
            "clientele-20261203T020000Z.clbk"
        ]
    );
    let last = clientele::backups::read_status(&dir).unwrap();
    assert_eq!(last.file, "clientele-20261203T020000Z.clbk");
    assert_eq!(last.trigger, "scheduled");
    assert!(last.bytes > 300 * 300);
    let created = chain(&store)
        .iter()
        .filter(|e| e.action == "backup.created")
        .count();
    assert_eq!(created, 3);
}
