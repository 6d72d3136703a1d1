//! Tampering with an exported audit bundle: the offline verifier (`clientele audit verify`)
//! refuses every kind of change an attacker with the file could make, and names where.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use clientele::audit::export::{BundleLine, BundleSignature};
use clientele::audit::{Action, Actor, Audit, Checkpoint, Entry, Event, SigningKey};
use clientele::clock::{SystemClock, SystemRandom};
use clientele::config::AuditConfig;
use zeroize::Zeroizing;

use crate::support::{clientele, init_store, open_store};

fn open_audit(store: &clientele::store::Store) -> Audit {
    Audit::open(
        store,
        Arc::new(SystemClock),
        &SystemRandom::new(),
        &AuditConfig::default(),
    )
    .unwrap()
}

/// Records `count` entries whose reasons are `"{tag} {n}"`, on the stopped store in `dir`;
/// with `checkpoint_after`, a checkpoint is signed once that many are recorded.
fn record(dir: &Path, tag: &str, count: u32, checkpoint_after: Option<u32>) {
    let store = open_store(dir);
    let audit = open_audit(&store);
    for n in 1..=count {
        audit
            .record_blocking(
                Event::new(Action::LocationUpdated)
                    .by(Actor::system("tamper-test").from_address("10.0.0.7"))
                    .target("location", n)
                    .fields(["name"])
                    .reason(format!("{tag} {n}")),
            )
            .unwrap();
        if checkpoint_after == Some(n) {
            audit.checkpoint_now().unwrap().unwrap();
        }
    }
}

/// A fresh store in `dir` with its public key file written.
fn new_store(dir: &Path) {
    init_store(dir);
    let store = open_store(dir);
    open_audit(&store).write_public_key(dir).unwrap();
}

/// Runs the binary: exit code and standard output and error together.
fn run(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// `clientele audit export` of the whole trail of the stopped store in `dir`.
fn export(dir: &Path, out: &Path) -> String {
    let (code, text) = run(clientele(dir).args(["audit", "export", "--out"]).arg(out));
    assert_eq!(code, Some(0), "export failed: {text}");
    std::fs::read_to_string(out).unwrap()
}

/// `clientele audit verify` of `bundle` (written to a file in `files`), with `extra` options.
fn verify(files: &Path, bundle: &str, extra: &[&str]) -> (Option<i32>, String) {
    let path = files.join("bundle.jsonl");
    std::fs::write(&path, bundle).unwrap();
    run(clientele(files)
        .args(["audit", "verify"])
        .arg(&path)
        .args(extra))
}

fn join(lines: &[String]) -> String {
    let mut out = String::new();
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn checkpoint_line(cp: &Checkpoint) -> String {
    serde_json::to_string(&BundleLine::Checkpoint(cp.clone())).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), &target).unwrap();
        }
    }
}

/// The bundle re-signed throughout by `key`: header key, every checkpoint, closing signature.
/// It agrees with itself, so only the appliance's own public key can tell.
fn resign_all(lines: &[String], key: &SigningKey) -> String {
    let mut out = Vec::new();
    for line in &lines[..lines.len() - 1] {
        if Entry::parse_line(line).is_ok() {
            out.push(line.clone());
            continue;
        }
        match serde_json::from_str::<BundleLine>(line).unwrap() {
            BundleLine::ClienteleAuditExport(mut header) => {
                header.public_key = key.public().to_text();
                out.push(serde_json::to_string(&BundleLine::ClienteleAuditExport(header)).unwrap());
            }
            BundleLine::Checkpoint(cp) => {
                out.push(checkpoint_line(
                    &key.checkpoint(cp.size, &cp.head, &cp.time),
                ));
            }
            BundleLine::Omitted(_) => out.push(line.clone()),
            BundleLine::Signature(_) => panic!("a signature before the last line"),
        }
    }
    let body = join(&out);
    let lines_before = out.len() as u64;
    let sha256 = data_encoding::HEXLOWER
        .encode(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()).as_ref());
    let time = "2026-12-04T00:00:00.000000Z".to_owned();
    let value = key.sign(BundleSignature::message(lines_before, &sha256, &time).as_bytes());
    let signature = BundleLine::Signature(BundleSignature {
        lines: lines_before,
        sha256,
        time,
        key: key.public().fingerprint(),
        value,
    });
    body + &serde_json::to_string(&signature).unwrap() + "\n"
}

#[test]
fn every_kind_of_tampering_with_an_export_is_refused_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    new_store(&dir);
    // A stored checkpoint in the middle, and the one the export signs at the end.
    record(&dir, "trail", 36, Some(12));
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let bundle = export(&dir, &files.join("export.jsonl"));
    let public = dir.join("audit-signing.pub");
    let public = public.to_str().unwrap();

    let lines: Vec<String> = bundle.lines().map(str::to_owned).collect();
    let entries: Vec<(usize, Entry)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Entry::parse_line(l).ok().map(|e| (i, e)))
        .collect();
    assert!(entries.len() >= 36, "{bundle}");
    let checkpoints: Vec<(usize, Checkpoint)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| match serde_json::from_str::<BundleLine>(l) {
            Ok(BundleLine::Checkpoint(cp)) => Some((i, cp)),
            _ => None,
        })
        .collect();
    assert!(checkpoints.len() >= 2, "{bundle}");
    // The span ends at the final checkpoint (entries the export itself records after
    // signing it may stand there as an omitted run).
    let last = checkpoints.last().unwrap().1.size;
    let (last_entry_at, last_entry) = entries.last().cloned().unwrap();
    assert!(last_entry.seq >= 36 && last_entry.seq <= last, "{bundle}");

    // The untampered bundle verifies, under the appliance's key.
    let (code, text) = verify(&files, &bundle, &["--public-key", public]);
    assert_eq!(code, Some(0), "the untampered export failed: {text}");
    assert!(
        text.contains(&format!("OK: entries 1 to {last} verified")),
        "{text}"
    );

    // The entry tampered with: one in the middle, an entry on each side, no checkpoint next
    // to it.
    let (at, victim) = entries
        .iter()
        .find(|(i, e)| {
            e.seq >= 20 && Entry::parse_line(&lines[i - 1]).is_ok() && {
                Entry::parse_line(&lines[i + 1]).is_ok() && Entry::parse_line(&lines[i + 2]).is_ok()
            }
        })
        .cloned()
        .unwrap();
    let k = victim.seq;
    let line = at as u64 + 1;
    let next_cp = checkpoints.iter().find(|(_, cp)| cp.size > k).unwrap();

    let mut cases: Vec<(&str, String, Vec<String>)> = Vec::new();

    // (1) One field of one entry edited.
    let mut edited = lines.clone();
    edited[at] = edited[at].replace(
        &format!("\"reason\":\"{}\"", victim.reason),
        "\"reason\":\"nothing happened\"",
    );
    assert_ne!(edited[at], lines[at]);
    cases.push((
        "edit one field",
        join(&edited),
        vec![
            format!("entry {k} (line {line})"),
            "hash does not match its content".into(),
            format!("first bad entry: {k}"),
        ],
    ));

    // (1b) The same edit with the entry's own hash recomputed: the next entry's link breaks.
    let mut resealed = victim.clone();
    resealed.reason = "nothing happened".into();
    resealed.seal().unwrap();
    let mut edited = lines.clone();
    edited[at] = resealed.to_line().unwrap();
    cases.push((
        "edit one field and reseal the entry",
        join(&edited),
        vec![
            format!(
                "entry {k}: its hash is not the one entry {} (line {}) links to",
                k + 1,
                line + 1
            ),
            format!("first bad entry: {k}"),
        ],
    ));

    // (2) An entry deleted.
    let mut deleted = lines.clone();
    deleted.remove(at);
    cases.push((
        "delete an entry",
        join(&deleted),
        vec![
            format!("entry {k} is missing: line {line} holds entry {}", k + 1),
            format!("first bad entry: {k}"),
        ],
    ));

    // (3) Two entries swapped.
    let mut swapped = lines.clone();
    swapped.swap(at, at + 1);
    cases.push((
        "swap two entries",
        join(&swapped),
        vec![
            format!("entry {k} is missing: line {line} holds entry {}", k + 1),
            format!("first bad entry: {k}"),
        ],
    ));

    // (4) A copy of an entry inserted right after it.
    let mut copied = lines.clone();
    copied.insert(at + 1, lines[at].clone());
    cases.push((
        "insert a copied entry",
        join(&copied),
        vec![
            format!(
                "entry {k} (line {}) is repeated or out of order: entry {} was due",
                line + 1,
                k + 1
            ),
            format!("first bad entry: {k}"),
        ],
    ));

    // (4b) A forged entry, well formed and linked, inserted after it: the genuine entry
    // with that number then comes twice.
    let mut forged = victim.clone();
    forged.seq = k + 1;
    forged.prev = victim.hash.clone();
    forged.reason = "forged".into();
    forged.seal().unwrap();
    let mut inserted = lines.clone();
    inserted.insert(at + 1, forged.to_line().unwrap());
    cases.push((
        "insert a forged entry",
        join(&inserted),
        vec![
            format!(
                "entry {} (line {}) is repeated or out of order: entry {} was due",
                k + 1,
                line + 2,
                k + 2
            ),
            format!("first bad entry: {}", k + 1),
        ],
    ));

    // (4c) The forged entry inserted and every later entry renumbered and resealed, so the
    // chain is whole again: the next signed checkpoint no longer matches.
    let mut rechained = lines[..=at].to_vec();
    rechained.push(forged.to_line().unwrap());
    let mut prev = forged.hash.clone();
    for line in &lines[at + 1..] {
        match Entry::parse_line(line) {
            Ok(mut entry) => {
                entry.seq += 1;
                entry.prev = prev;
                entry.seal().unwrap();
                prev = entry.hash.clone();
                rechained.push(entry.to_line().unwrap());
            }
            Err(_) => rechained.push(line.clone()),
        }
    }
    cases.push((
        "insert a forged entry and rebuild the chain after it",
        join(&rechained),
        vec![
            format!("checkpoint of entry {}", next_cp.1.size),
            format!("first bad entry: {}", next_cp.1.size),
        ],
    ));

    // (5) The file cut in the middle of a line.
    let mut cut = join(&lines[..at]);
    cut.push_str(&lines[at][..lines[at].len() / 2]);
    cases.push((
        "truncate mid-line",
        cut,
        vec![format!(
            "line {line} (after entry {}) is cut short (the file ends in the middle of it): the \
             export was truncated",
            k - 1
        )],
    ));

    // (6) The last lines dropped: the closing signature; with it the final checkpoint; the
    // newest entry given in full and everything after it.
    let n = lines.len();
    cases.push((
        "drop the closing signature",
        join(&lines[..n - 1]),
        vec![
            format!("the export was cut short after entry {last}"),
            "closing signature line is missing".into(),
        ],
    ));
    cases.push((
        "drop the final checkpoint and signature",
        join(&lines[..n - 2]),
        vec![
            format!("entry {last}: no checkpoint follows it"),
            format!("first bad entry: {last}"),
        ],
    ));
    let before = last_entry.seq - 1;
    assert!(
        Entry::parse_line(&lines[last_entry_at - 1]).is_ok(),
        "{bundle}"
    );
    cases.push((
        "drop the newest entry and all after it",
        join(&lines[..last_entry_at]),
        vec![
            format!("entry {before}: no checkpoint follows it"),
            format!("first bad entry: {before}"),
        ],
    ));

    // (7) Checkpoints signed by another Ed25519 key.
    let other = SigningKey::from_seed(&Zeroizing::new([0x5a; 32])).unwrap();
    let (cp_at, cp) = checkpoints.last().unwrap().clone();
    let cp_line = cp_at as u64 + 1;
    let mut replaced = lines.clone();
    replaced[cp_at] = checkpoint_line(&other.checkpoint(cp.size, &cp.head, &cp.time));
    cases.push((
        "checkpoint replaced by one of another key",
        join(&replaced),
        vec![format!(
            "checkpoint of entry {last} (line {cp_line}): signed by another key"
        )],
    ));
    let mut posing = other.checkpoint(cp.size, &cp.head, &cp.time);
    posing.key = cp.key.clone();
    let mut replaced = lines.clone();
    replaced[cp_at] = checkpoint_line(&posing);
    cases.push((
        "checkpoint re-signed by another key under this key's name",
        join(&replaced),
        vec![format!(
            "checkpoint of entry {last} (line {cp_line}): its signature does not verify under \
             the key"
        )],
    ));
    let resigned = resign_all(&lines, &other);
    let (first_cp_at, first_cp) = checkpoints.first().unwrap().clone();
    cases.push((
        "whole export re-signed by another key",
        resigned.clone(),
        vec![format!(
            "checkpoint of entry {} (line {}): signed by another key",
            first_cp.size,
            first_cp_at + 1
        )],
    ));

    let mut failed = Vec::new();
    for (name, tampered, expected) in &cases {
        assert_ne!(tampered, &bundle, "{name}: nothing was changed");
        let (code, text) = verify(&files, tampered, &["--public-key", public]);
        let missing: Vec<&String> = expected.iter().filter(|e| !text.contains(*e)).collect();
        if code != Some(1) || !text.contains("VERIFICATION FAILED") || !missing.is_empty() {
            failed.push(format!(
                "{name}: exit {code:?}, expected {missing:?} in:\n{text}"
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));

    // The re-signed export agrees with itself: without the appliance's key it verifies, with
    // the warning that says so. That is why --public-key matters.
    let (code, text) = verify(&files, &resigned, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("WARNING: no --public-key given"), "{text}");

    // (7) The untampered export under another store's key (from `clientele init`).
    let stranger = tmp.path().join("stranger");
    let (code, text) = run(clientele(&stranger).arg("init"));
    assert_eq!(code, Some(0), "{text}");
    let stranger_key = stranger.join("audit-signing.pub");
    assert!(stranger_key.exists(), "{text}");
    let (code, text) = verify(
        &files,
        &bundle,
        &["--public-key", stranger_key.to_str().unwrap()],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "checkpoint of entry {} (line {}): signed by another key",
            first_cp.size,
            first_cp_at + 1
        )),
        "{text}"
    );
}

#[test]
fn an_export_of_a_forked_trail_fails_against_a_saved_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    new_store(&dir);
    record(&dir, "shared", 20, None);
    // A copy of the data folder as it was then, to be restored later.
    let copy = tmp.path().join("copy");
    copy_dir(&dir, &copy);

    // The trail goes on, and the auditor saves a checkpoint of it.
    record(&dir, "honest", 10, None);
    let saved = tmp.path().join("saved-checkpoint.json");
    let (code, text) = run(clientele(&dir).args(["audit", "checkpoint"]));
    assert_eq!(code, Some(0), "{text}");
    std::fs::write(&saved, &text).unwrap();
    let saved_cp: Checkpoint = serde_json::from_str(text.trim()).unwrap();
    let s = saved_cp.size;
    assert!(s >= 30, "{text}");
    let saved = saved.to_str().unwrap();
    let public = dir.join("audit-signing.pub");
    let public = public.to_str().unwrap();
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).unwrap();

    // The honest trail's export matches the saved checkpoint.
    let honest = export(&dir, &files.join("honest.jsonl"));
    let (code, text) = verify(
        &files,
        &honest,
        &["--public-key", public, "--checkpoint", saved],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("saved checkpoint: entry {s} matches")),
        "{text}"
    );

    // The old copy is restored and written on: same key, same numbers, other entries.
    record(&copy, "rewritten", 20, None);
    let forked = export(&copy, &files.join("forked.jsonl"));
    let (code, text) = verify(&files, &forked, &["--public-key", public]);
    assert_eq!(code, Some(0), "the fork agrees with itself: {text}");
    let (code, text) = verify(
        &files,
        &forked,
        &["--public-key", public, "--checkpoint", saved],
    );
    assert_eq!(code, Some(1), "a forked trail verified: {text}");
    for expected in [
        format!("entry {s}: its hash differs from the saved checkpoint of entry {s}"),
        "rewritten or forked".to_owned(),
        format!("first bad entry: {s}"),
    ] {
        assert!(text.contains(&expected), "{expected:?} missing: {text}");
    }
}
