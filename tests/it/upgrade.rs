//! Upgrades from released schema versions: a small store written by each released schema
//! (`tests/fixtures/schema-N.tar.gz`: data folder with its test-only master key, an admin, a
//! manager, three imported customers and their audit entries) opens with this build, every
//! record still opens, and the data is found as before.
//!
//! A new schema version adds its fixture here (made with `clientele init`, `user add` and
//! `import customers` of that release) and a line to `FIXTURES`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use clientele::clock::{SystemClock, SystemRandom};
use clientele::crm::Customers;

use crate::support::{clientele, open_store};

/// Schema versions released so far, with their fixture.
const FIXTURES: &[(u32, &str)] = &[(1, "schema-1.tar.gz"), (2, "schema-2.tar.gz")];

fn unpack(fixture: &str, into: &Path) -> std::path::PathBuf {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(status.success(), "could not unpack {}", archive.display());
    into.join("data")
}

#[test]
fn stores_of_every_released_schema_open_and_keep_their_data() {
    assert_eq!(
        FIXTURES.last().map(|(v, _)| *v),
        Some(clientele::store::SCHEMA_VERSION),
        "the current schema version needs a fixture in tests/fixtures and a line in FIXTURES"
    );
    for (version, fixture) in FIXTURES {
        let tmp = tempfile::tempdir().unwrap();
        let data = unpack(fixture, tmp.path());

        // The command line's deep check opens every record.
        let out = clientele(&data)
            .args(["doctor", "--deep"])
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schema {version}: doctor --deep failed:\n{report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            report.contains("all 28 records open"),
            "schema {version}: {report}"
        );
        // A store of an older schema was backed up before it was migrated.
        let backups: Vec<String> = std::fs::read_dir(data.join("backups"))
            .map(|dir| {
                dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let expected = format!("pre-migration-schema{version}-");
        assert_eq!(
            backups.iter().any(|name| name.starts_with(&expected)),
            *version < clientele::store::SCHEMA_VERSION,
            "schema {version}: backups {backups:?}"
        );

        let store = open_store(&data);
        let note = store.migration_note().unwrap();
        if *version < clientele::store::SCHEMA_VERSION {
            assert_eq!(
                note,
                Some((*version, clientele::store::SCHEMA_VERSION)),
                "the next start records the migration"
            );
        } else {
            assert_eq!(note, None, "schema {version}");
        }
        let verified = store.verify_all();
        assert!(
            verified.failures.is_empty(),
            "schema {version}: {:?}",
            verified.failures
        );
        let customers = Customers::new(
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(SystemRandom::new()),
            "GB",
        );
        assert_eq!(customers.build_index().unwrap(), 3, "schema {version}");
        for (query, name) in [
            ("lovelace", "Ada Lovelace"),
            ("grace@example.com", "Grace Hopper"),
            ("020 7946 0003", "Alan Turing"),
            ("LOY-1001", "Ada Lovelace"),
        ] {
            let hits = customers.search(query, 5).unwrap();
            assert_eq!(
                hits.first().map(|h| h.name.as_str()),
                Some(name),
                "schema {version}: search {query:?}"
            );
        }
    }
}

#[test]
fn the_first_start_after_a_migration_records_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (oldest, fixture) = FIXTURES[0];
    let data = unpack(fixture, tmp.path());
    let migrated = |round: u32| {
        let server = crate::support::spawn_server({
            let mut cmd = clientele(&data);
            cmd.args(["serve", "--listen", "127.0.0.1:0"]);
            cmd
        });
        drop(server);
        let out = tmp.path().join(format!("trail-{round}.jsonl"));
        let status = clientele(&data)
            .args(["audit", "export", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .filter(|line| line.contains("\"store.migrated\""))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let first = migrated(1);
    assert_eq!(first.len(), 1, "{first:?}");
    let expected = format!("schema {oldest} to {}", clientele::store::SCHEMA_VERSION);
    assert!(first[0].contains(&expected), "{}", first[0]);
    assert_eq!(migrated(2), first, "a later start records nothing new");
}
