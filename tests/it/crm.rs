//! The customer service as ingest paths use it: identity resolution, atomic creation,
//! conflicts raised for review, and the search index kept current.

use std::fmt::Write as _;
use std::sync::Arc;

use clientele::audit::Actor;
use clientele::clock::{SystemClock, SystemRandom};
use clientele::crm::{CrmError, CustomerInput, Customers, DuplicateStatus};
use clientele::domain::customer::{ExternalId, Identity};

use crate::support::{init_store, open_store};

fn service(store: &clientele::store::Store) -> Customers {
    Customers::new(
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
        "GB",
    )
}

fn email(value: &str) -> Identity {
    Identity::Email(value.into())
}

#[tokio::test]
async fn concurrent_events_with_the_same_new_email_make_one_customer() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let customers = service(&store);
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let customers = customers.clone();
            tokio::spawn(async move {
                let identities = vec![
                    email("ada@example.com"),
                    Identity::External(ExternalId {
                        source: "pos".into(),
                        id: format!("R{n}"),
                    }),
                ];
                customers
                    .resolve(&identities, None, Actor::system("test"), "pos")
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().customer);
    }
    ids.dedup();
    // Every event found the one customer, or one that points at it as a duplicate: never two
    // customers sharing the email.
    let owner = customers.find(&email("ada@example.com")).unwrap().unwrap();
    assert!(ids.iter().all(|id| *id == owner), "{ids:?} vs {owner}");
    assert_eq!(store.count(clientele::crm::CUSTOMERS), 1);
}

#[tokio::test]
async fn resending_an_external_record_updates_and_conflicts_are_raised_not_merged() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let customers = service(&store);
    let pos = Identity::External(ExternalId {
        source: "pos".into(),
        id: "C-1".into(),
    });
    let first = customers
        .resolve(
            std::slice::from_ref(&pos),
            None,
            Actor::system("test"),
            "pos",
        )
        .await
        .unwrap();
    assert!(first.created);
    let again = customers
        .resolve(
            &[pos.clone(), email("bob@example.com")],
            None,
            Actor::system("test"),
            "pos",
        )
        .await
        .unwrap();
    assert_eq!((again.customer, again.created), (first.customer, false));
    assert_eq!(
        customers.find(&email("bob@example.com")).unwrap(),
        Some(first.customer)
    );

    // Another customer owns a phone; an event carrying the POS id and that phone is linked to
    // the stronger match (the POS id) and raises a duplicate candidate.
    let input = CustomerInput {
        given_name: "Carol".into(),
        family_name: "Smith".into(),
        phones: vec!["020 7946 0018".into()],
        ..CustomerInput::default()
    };
    let carol = customers
        .create(
            customers.clean(&input).unwrap(),
            Actor::system("test"),
            "test",
        )
        .await
        .unwrap();
    let phone = Identity::Phone("+442079460018".into());
    let linked = customers
        .resolve(&[phone, pos], None, Actor::system("test"), "pos")
        .await
        .unwrap();
    assert_eq!(linked.customer, first.customer);
    assert_eq!(linked.conflicts, vec![carol.id]);
    let open = customers.duplicates(DuplicateStatus::Open).unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(store.count(clientele::crm::CUSTOMERS), 2);
}

#[tokio::test]
async fn bad_fields_are_all_reported_and_identities_stay_unique() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let customers = service(&store);
    let bad = CustomerInput {
        given_name: "<b>Eve</b>".into(),
        emails: vec!["ok@example.com".into(), "not-an-email".into()],
        phones: vec!["12".into()],
        birthday: Some("2999-01-01".into()),
        ..CustomerInput::default()
    };
    let Err(CrmError::Invalid(errors)) = customers.clean(&bad) else {
        panic!("invalid input accepted");
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["given_name", "emails[1]", "phones[0]", "birthday"]);

    let input = CustomerInput {
        given_name: "Dan".into(),
        family_name: "Brown".into(),
        emails: vec!["dan@example.com".into()],
        ..CustomerInput::default()
    };
    let dan = customers
        .create(
            customers.clean(&input).unwrap(),
            Actor::system("test"),
            "test",
        )
        .await
        .unwrap();
    let copy = customers
        .create(
            customers.clean(&input).unwrap(),
            Actor::system("test"),
            "test",
        )
        .await;
    assert!(
        matches!(copy, Err(CrmError::IdentityTaken { ref field, other }) if field == "email" && other == dan.id),
        "{copy:?}"
    );

    // The index follows writes: a rename is found under the new name only.
    let mut renamed = clientele::crm::profile_of(&dan);
    renamed.family_name = "Braun".into();
    customers
        .update(dan.id, renamed, Actor::system("test"))
        .await
        .unwrap();
    assert_eq!(customers.search("braun", 5).unwrap()[0].id, dan.id);
    assert!(
        customers.search("brown", 5).unwrap().is_empty(),
        "the old name is still indexed"
    );
    // And it is rebuilt the same from the store.
    let rebuilt = service(&store);
    rebuilt.build_index().unwrap();
    assert_eq!(rebuilt.search("braun", 5).unwrap()[0].id, dan.id);
    assert_eq!(
        customers.search("dan@example.com", 5).unwrap()[0].id,
        dan.id
    );
}

/// A letters-only name for row `n` (names refuse digits).
fn letters(mut n: usize) -> String {
    let mut name = String::from("Q");
    for _ in 0..3 {
        name.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
    }
    name
}

#[test]
fn a_csv_import_over_several_chunks_publishes_whole_and_a_second_run_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    // More rows than one staged change set holds, so the import stages several and publishes
    // them with one write.
    let rows = clientele::crm::import::CHUNK * 2 + 17;
    let mut csv = String::from("given_name,family_name,email\n");
    for n in 0..rows {
        writeln!(csv, "{},{},row{n}@example.com", letters(n), letters(n + 7)).unwrap();
    }
    let file = tmp.path().join("customers.csv");
    std::fs::write(&file, csv).unwrap();
    let run = || {
        let out = crate::support::clientele(tmp.path())
            .args(["import", "customers"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let first = run();
    assert!(
        first.contains(&format!(
            "{rows} rows, {rows} customers created, 0 updated, 0 unchanged"
        )),
        "{first}"
    );
    {
        let store = open_store(tmp.path());
        assert_eq!(store.count(clientele::crm::CUSTOMERS), rows);
        assert_eq!(
            store.count(clientele::crm::import::IMPORT_STAGED),
            0,
            "the staged chunks' manifests are gone once the import is published"
        );
        let customers = service(&store);
        assert_eq!(customers.build_index().unwrap(), rows);
        let last = email(&format!("row{}@example.com", rows - 1));
        assert!(
            customers.find(&last).unwrap().is_some(),
            "the last chunk's customer is found"
        );
    }

    let again = run();
    assert!(
        again.contains(&format!(
            "{rows} rows, 0 customers created, 0 updated, {rows} unchanged"
        )),
        "{again}"
    );
    let store = open_store(tmp.path());
    assert_eq!(store.count(clientele::crm::CUSTOMERS), rows);
}
