//! Crash tests: a child process (this test binary, re-run on one ignored test) writes durably
//! or rotates keys and is killed with SIGKILL at varying moments; after each kill the store
//! must open, hold every acknowledged write, and open every record.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clientele::store::{ChangeSet, Table};

use crate::support::{init_store, open_store};

const LOG: Table = Table::new("crashlog");
const CHILD_DIR: &str = "CLIENTELE_TEST_CHILD_DIR";

/// Starts this test binary on one ignored child test, with the data folder in the environment.
fn spawn_child(test: &str, dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A small deterministic generator for kill delays.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn killed_writer_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut acknowledged: Vec<(u8, u64)> = Vec::new();

    for round in 0..10 {
        let mut child = spawn_child("crash::child_durable_writer", tmp.path());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print "test NAME ... " before the child's first line.
                if let Some(rest) = line.split("acked ").nth(1) {
                    let mut parts = rest.split(' ');
                    let writer: u8 = parts.next().unwrap().parse().unwrap();
                    let seq: u64 = parts.next().unwrap().parse().unwrap();
                    let _ = tx.send((writer, seq));
                }
            }
        });
        // Wait for the first acknowledgement, then kill at a varying moment.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child acknowledged nothing");
        acknowledged.push(first);
        std::thread::sleep(Duration::from_millis(20 + next(&mut seed) % 300));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        acknowledged.extend(rx.try_iter());

        let store = open_store(tmp.path());
        for (writer, seq) in &acknowledged {
            let value = store
                .get(LOG, &key(*writer, *seq))
                .unwrap_or_else(|err| panic!("round {round}: record {writer}/{seq}: {err}"))
                .unwrap_or_else(|| {
                    panic!("round {round}: acknowledged write {writer}/{seq} is missing")
                });
            assert_eq!(value.as_slice(), payload(*writer, *seq).as_slice());
        }
        let report = store.verify_all();
        assert!(
            report.failures.is_empty(),
            "round {round}: {:?}",
            report.failures
        );
    }
    assert!(
        acknowledged.len() > 50,
        "too few writes to mean anything: {}",
        acknowledged.len()
    );
}

fn key(writer: u8, seq: u64) -> Vec<u8> {
    let mut key = vec![writer];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn payload(writer: u8, seq: u64) -> Vec<u8> {
    format!("writer {writer} sequence {seq} {}", "x".repeat(200)).into_bytes()
}

/// Child of `killed_writer_loses_no_acknowledged_write`: four writers commit durably forever
/// and print each acknowledgement.
#[test]
#[ignore = "child process of the crash tests"]
fn child_durable_writer() {
    let dir = std::env::var_os(CHILD_DIR).expect("run by the crash tests");
    let store = open_store(Path::new(&dir));
    let start = store.count(LOG) as u64;
    let stdout = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|scope| {
        for writer in 0..4u8 {
            let store = store.clone();
            let stdout = &stdout;
            scope.spawn(move || {
                for seq in start.. {
                    let mut set = ChangeSet::new();
                    set.put(LOG, key(writer, seq), payload(writer, seq));
                    set.put(
                        Table::new("crashaux"),
                        key(writer, seq),
                        b"same set".to_vec(),
                    );
                    store.commit_blocking(set).unwrap();
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "acked {writer} {seq}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

#[test]
fn kill_during_rotation_leaves_every_record_readable() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    {
        let store = open_store(tmp.path());
        for batch in 0..20u32 {
            let mut set = ChangeSet::new();
            for n in 0..1000u32 {
                set.put(LOG, (batch * 1000 + n).to_be_bytes().to_vec(), vec![7; 300]);
            }
            store.commit_blocking(set).unwrap();
        }
    }

    let mut child = spawn_child("crash::child_rotator", tmp.path());
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines.next().expect("child ended early").unwrap();
        if line.ends_with("rotated") {
            break;
        }
        assert!(Instant::now() < deadline, "child never rotated");
    }
    std::thread::sleep(Duration::from_millis(5));
    child.kill().unwrap();
    child.wait().unwrap();

    let store = open_store(tmp.path());
    let status = store.key_status();
    assert_eq!(status.current_term, 2);
    let report = store.verify_all();
    let old = report
        .terms
        .iter()
        .find(|(term, _)| *term == 1)
        .map_or(0, |(_, n)| *n);
    assert!(
        old > 0 && status.rewrite_pending,
        "the kill must land mid-rewrite to mean anything ({old} records still on term 1)"
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.tables.get("crashlog"), Some(&20_000));
    // The rewrite resumes where it stopped and finishes.
    assert!(store.wait_for_rewrite(Duration::from_secs(120)));
    let report = store.verify_all();
    assert_eq!(
        report
            .terms
            .iter()
            .map(|(term, _)| *term)
            .collect::<Vec<_>>(),
        vec![2]
    );
    assert!(report.failures.is_empty());
}

/// Child of `kill_during_rotation_leaves_every_record_readable`: rotates, says so, and lets
/// the background rewrite run until killed.
#[test]
#[ignore = "child process of the crash tests"]
fn child_rotator() {
    let dir = std::env::var_os(CHILD_DIR).expect("run by the crash tests");
    let store = open_store(Path::new(&dir));
    store.rotate_blocking().unwrap();
    println!("rotated");
    let _ = store.wait_for_rewrite(Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(120));
}
