//! The audit trail: chained entries, signed checkpoints, fail-closed writes.

use std::sync::Arc;

use clientele::audit::{Action, Actor, Audit, Entry, Event, Outcome, entry::GENESIS};
use clientele::clock::{SystemClock, SystemRandom};
use clientele::config::AuditConfig;
use clientele::store::{ChangeSet, Expect, Sealing, Table};

use crate::support::{init_store, open_store};

const THINGS: Table = Table::new("things");

fn open_audit(store: &clientele::store::Store) -> Audit {
    Audit::open(
        store,
        Arc::new(SystemClock),
        &SystemRandom::new(),
        &AuditConfig::default(),
    )
    .unwrap()
}

#[test]
fn entries_chain_and_checkpoints_verify_under_the_public_key() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let audit = open_audit(&store);
    for n in 0..5 {
        let mut set = ChangeSet::new();
        set.put(THINGS, vec![n], b"{}".to_vec());
        Event::new(Action::LocationCreated)
            .by(Actor::system("test").from_address("10.0.0.7"))
            .target("location", n)
            .fields(["code", "name"])
            .add_to(&mut set);
        store.commit_blocking(set).unwrap();
    }
    let entries: Vec<Entry> = audit
        .entries(1, u64::MAX, false)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(entries.len(), 5);
    let mut prev = GENESIS.to_owned();
    for (n, entry) in entries.iter().enumerate() {
        assert_eq!(entry.seq, n as u64 + 1);
        assert_eq!(entry.prev, prev);
        assert_eq!(entry.action, "location.created");
        assert_eq!(entry.address.as_deref(), Some("10.0.0.7"));
        assert_eq!(entry.fields, ["code", "name"]);
        prev = entry.hash.clone();
    }

    let cp = audit.checkpoint_now().unwrap().unwrap();
    assert_eq!((cp.size, cp.head.as_str()), (5, prev.as_str()));
    assert!(cp.verify(&audit.public_key()));
    // Nothing new: the same checkpoint stands.
    assert_eq!(audit.checkpoint_now().unwrap().unwrap(), cp);

    // The signing key survives reopening; the public key file says the same.
    let public = audit.public_key();
    drop(audit);
    drop(store);
    let store = open_store(tmp.path());
    let audit = open_audit(&store);
    assert_eq!(audit.public_key(), public);
    assert_eq!(audit.latest_checkpoint().unwrap().unwrap(), cp);
    let path = audit.write_public_key(tmp.path()).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        clientele::audit::PublicKey::from_text(&text).unwrap(),
        public
    );
}

#[test]
fn an_entry_that_cannot_be_written_refuses_the_business_write() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let audit = open_audit(&store);
    // A field list carrying a value instead of a name is refused by the trail, and with it
    // the write it describes.
    let mut set = ChangeSet::new();
    set.put(THINGS, b"t1".to_vec(), b"{}".to_vec());
    Event::new(Action::CustomerUpdated)
        .by(Actor::system("test"))
        .fields(["ada@example.com"])
        .add_to(&mut set);
    let err = store.commit_blocking(set).unwrap_err();
    assert!(err.to_string().contains("audit log refused"), "{err}");
    assert!(store.get(THINGS, b"t1").unwrap().is_none());
    assert_eq!(audit.head().unwrap().seq, 0);

    // A business write refused for its own reason leaves no entry behind either.
    let mut set = ChangeSet::new();
    set.put_with(
        THINGS,
        b"t2".to_vec(),
        b"{}".to_vec(),
        Sealing::DataKey,
        Expect::Present,
    );
    Event::new(Action::CustomerUpdated)
        .by(Actor::system("test"))
        .add_to(&mut set);
    assert!(store.commit_blocking(set).is_err());
    assert_eq!(audit.head().unwrap().seq, 0);

    audit
        .record_blocking(
            Event::new(Action::SignIn)
                .by(Actor::anonymous().from_address("10.0.0.9"))
                .failed("unknown login"),
        )
        .unwrap();
    let entry = audit.entry(1).unwrap().unwrap();
    assert_eq!(entry.outcome, Outcome::Failure);
    assert_eq!(entry.actor_name, "");
}
