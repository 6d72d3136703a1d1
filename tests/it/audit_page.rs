//! The compliance page: an officer filters the trail, pages through it, opens an entry and
//! downloads an export that verifies offline with the real binary; other roles are refused;
//! bad filters are answered with the message next to the field; every view is audited. Also
//! the search index on its own, against a plain scan of the trail.

use std::sync::Arc;

use clientele::audit::index::{AuditIndex, Cursor, Filter, Source};
use clientele::audit::{Action, Actor, Audit, Entry, Event, Outcome};
use clientele::clock::{SystemClock, SystemRandom};
use clientele::config::AuditConfig;
use clientele::domain::account::Role;
use clientele::store::ChangeSet;
use reqwest::StatusCode;

use crate::support::{clientele, init_store, open_store};
use crate::web::{TestApp, csrf_of};

/// Location changes by an importer job: 130 of them, every third one denied (44).
async fn record_location_changes(audit: &Audit) {
    let mut set = ChangeSet::new();
    for n in 0..130u32 {
        let mut event = Event::new(Action::LocationUpdated)
            .by(Actor::system("importer"))
            .target("location", format!("L{n:03}"))
            .fields(["name"]);
        if n % 3 == 0 {
            event = event.denied("outside the importer's stores");
        }
        event.add_to(&mut set);
    }
    audit.store().commit(set).await.unwrap();
}

async fn get(client: &reqwest::Client, app: &TestApp, path: &str) -> (StatusCode, String) {
    let res = client.get(app.url(path)).send().await.unwrap();
    let status = res.status();
    (status, res.text().await.unwrap())
}

/// Sequence numbers of the result rows of a list page, top to bottom.
fn listed(html: &str) -> Vec<u64> {
    html.split("<td class=\"num\"><a href=\"/audit/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
        .collect()
}

/// The link with `rel`, unescaped, if the page has one.
fn link(html: &str, rel: &str) -> Option<String> {
    let at = html.find(&format!("rel=\"{rel}\""))?;
    let before = &html[..at];
    let start = before.rfind("href=\"")? + "href=\"".len();
    let href = before[start..].split('"').next()?;
    Some(href.replace("&amp;", "&").replace("&#38;", "&"))
}

/// The newest entries of the trail, newest first.
fn newest(audit: &Audit, count: usize) -> Vec<Entry> {
    let head = audit.head().unwrap().seq;
    audit
        .entries(1, head, true)
        .take(count)
        .collect::<Result<_, _>>()
        .unwrap()
}

fn views_by(audit: &Audit, login: &str) -> Vec<Entry> {
    let head = audit.head().unwrap().seq;
    audit
        .entries(1, head, false)
        .map(Result::unwrap)
        .filter(|e| e.action == Action::AuditViewed.code() && e.actor_name == login)
        .collect()
}

#[tokio::test]
async fn an_officer_filters_pages_opens_an_entry_and_exports_what_verifies_offline() {
    let app = TestApp::start().await;
    let officer = app.signed_in("olivia", Role::Compliance).await;
    let audit = app.app.as_ref().unwrap().audit.clone();
    record_location_changes(&audit).await;

    // The menu leads there.
    let (status, home) = get(&officer, &app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        home.contains("href=\"/audit\""),
        "no Audit entry in the menu"
    );

    // Filter by action and outcome: the 44 denied changes, newest first, on one page.
    let (status, page) = get(
        &officer,
        &app,
        "/audit?action=location.updated&outcome=denied",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("44 entries"), "count missing: {page}");
    let denied = listed(&page);
    assert_eq!(denied.len(), 44);
    assert!(denied.windows(2).all(|w| w[0] > w[1]), "not newest first");
    assert!(link(&page, "next").is_none(), "one page only");
    for seq in &denied {
        let entry = audit.entry(*seq).unwrap().unwrap();
        assert_eq!(entry.outcome, Outcome::Denied);
        assert_eq!(entry.action, "location.updated");
    }

    // Filter by actor, then page: 50 + 50 + 30, no entry twice, and back again.
    let mut seen = Vec::new();
    let mut path = "/audit?actor=importer".to_owned();
    let mut pages = Vec::new();
    loop {
        let (status, page) = get(&officer, &app, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(page.contains("130 entries"), "{path}");
        let rows = listed(&page);
        pages.push(rows.len());
        seen.extend(rows);
        match link(&page, "next") {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(pages, [50, 50, 30]);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "pages overlap or reorder"
    );
    let (_, last) = get(&officer, &app, &path).await;
    let back = link(&last, "prev").expect("a link to newer entries");
    let (_, middle) = get(&officer, &app, &back).await;
    assert_eq!(listed(&middle), seen[50..100]);

    // The officer's own login finds the officer's views.
    let (_, mine) = get(&officer, &app, "/audit?actor=OLIVIA&action=audit.viewed").await;
    assert!(!listed(&mine).is_empty(), "own views not found by login");

    // Viewing is audited: field names, never values.
    let views = views_by(&audit, "olivia");
    let filtered = views
        .iter()
        .find(|e| e.fields == ["action", "outcome"])
        .expect("the filtered view was recorded");
    assert_eq!(filtered.actor_role.as_deref(), Some("compliance"));
    assert!(filtered.address.is_some());
    let line = filtered.to_line().unwrap();
    assert!(
        !line.contains("denied") && !line.contains("location.updated"),
        "{line}"
    );
    assert!(views.iter().any(|e| e.fields == ["actor", "before"]));

    // One entry in full, with its place in the chain and its checkpoint.
    let seq = denied[0];
    let entry = audit.entry(seq).unwrap().unwrap();
    let key = audit.public_key();
    let (status, shown) = get(&officer, &app, &format!("/audit/{seq}")).await;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        entry.hash.as_str(),
        entry.prev.as_str(),
        "outside the importer",
        "importer",
        "not yet covered",
        &key.fingerprint(),
        &key.to_text(),
    ] {
        assert!(shown.contains(expected), "{expected:?} missing: {shown}");
    }
    let signer = audit.clone();
    tokio::task::spawn_blocking(move || signer.checkpoint_now().unwrap())
        .await
        .unwrap();
    let (_, shown) = get(&officer, &app, &format!("/audit/{seq}")).await;
    assert!(shown.contains("signature verifies"), "{shown}");
    assert!(
        views_by(&audit, "olivia")
            .iter()
            .any(|e| e.target_type.as_deref() == Some("audit_entry")
                && e.target_id == Some(seq.to_string())),
        "opening the entry was not recorded"
    );
    assert_eq!(
        get(&officer, &app, "/audit/99999999").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, text) = get(&officer, &app, "/audit/first").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("not an audit entry number"));

    // Download the filter as a bundle and verify it offline with the real binary.
    let csrf = csrf_of(&page);
    let download = |format: &'static str| {
        let form = [
            ("csrf", csrf.clone()),
            ("action", "location.updated".to_owned()),
            ("outcome", "denied".to_owned()),
            ("format", format.to_owned()),
        ];
        officer.post(app.url("/audit/export")).form(&form).send()
    };
    let res = download("jsonl").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/x-ndjson")
    );
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"clientele-audit-")
    );
    let bundle = res.bytes().await.unwrap();
    let full: Vec<Entry> = std::str::from_utf8(&bundle)
        .unwrap()
        .lines()
        .filter_map(|line| Entry::parse_line(line).ok())
        .collect();
    assert_eq!(
        full.len(),
        44,
        "the bundle gives the matching entries in full"
    );
    assert!(full.iter().all(|e| e.outcome == Outcome::Denied));

    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("audit.jsonl");
    std::fs::write(&path, &bundle).unwrap();
    let verified = clientele(files.path())
        .args(["audit", "verify"])
        .arg(&path)
        .args(["--public-key", &key.to_text()])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "verify failed: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );

    // The same file with one entry's outcome changed does not verify.
    let text = std::str::from_utf8(&bundle).unwrap();
    let tampered = text.replacen("\"outcome\":\"denied\"", "\"outcome\":\"success\"", 1);
    assert_ne!(tampered, text);
    std::fs::write(&path, tampered).unwrap();
    let refused = clientele(files.path())
        .args(["audit", "verify"])
        .arg(&path)
        .args(["--public-key", &key.to_text()])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a tampered export verified");

    // CSV of the same filter: a header and the 44 entries.
    let res = download("csv").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csv = res.text().await.unwrap();
    assert_eq!(csv.lines().count(), 45, "{csv}");

    // Exports are audited, with the filter's field names.
    let exports: Vec<Entry> = newest(&audit, 200)
        .into_iter()
        .filter(|e| e.action == Action::AuditExported.code() && e.actor_name == "olivia")
        .collect();
    assert_eq!(exports.len(), 2);
    assert!(exports.iter().all(|e| e.fields == ["action", "outcome"]));
    assert!(
        exports
            .iter()
            .any(|e| e.reason.starts_with("jsonl download"))
    );

    // An unknown format is refused next to the field.
    let res = download("pdf").await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().contains("unknown export format"));
    app.stop().await;
}

#[tokio::test]
async fn only_compliance_and_admin_open_the_audit_trail() {
    let app = TestApp::start().await;
    let admin = app.signed_in("chief", Role::Admin).await;
    assert_eq!(get(&admin, &app, "/audit").await.0, StatusCode::OK);
    assert_eq!(get(&admin, &app, "/audit/1").await.0, StatusCode::OK);
    for (login, role) in [("clerk", Role::Associate), ("boss", Role::Manager)] {
        let client = app.signed_in(login, role).await;
        let (home_status, home) = get(&client, &app, "/").await;
        assert_eq!(home_status, StatusCode::OK);
        assert!(
            !home.contains("href=\"/audit\""),
            "{login} sees the menu entry"
        );
        for path in ["/audit", "/audit?action=auth.sign_in", "/audit/1"] {
            assert_eq!(
                get(&client, &app, path).await.0,
                StatusCode::FORBIDDEN,
                "{login} GET {path}"
            );
        }
        let csrf = csrf_of(&home);
        let res = client
            .post(app.url("/audit/export"))
            .form(&[("csrf", csrf.as_str()), ("format", "jsonl")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{login} export");
    }
    let audit = app.app.as_ref().unwrap().audit.clone();
    assert!(views_by(&audit, "clerk").is_empty());
    assert!(views_by(&audit, "boss").is_empty());
    app.stop().await;
}

#[tokio::test]
async fn bad_filters_are_refused_with_the_message_next_to_the_field() {
    let app = TestApp::start().await;
    let officer = app.signed_in("olivia", Role::Compliance).await;
    let audit = app.app.as_ref().unwrap().audit.clone();
    let before = views_by(&audit, "olivia").len();

    let (status, page) = get(
        &officer,
        &app,
        "/audit?from=2026-13-01&action=user.exploded&outcome=maybe&actor=olivia",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for (id, message) in [
        ("from-error", "“2026-13-01” is not a date or time"),
        ("action-error", "unknown action “user.exploded”"),
        ("outcome-error", "unknown outcome “maybe”"),
    ] {
        let at = page
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no {id}: {page}"));
        assert!(page[at..].contains(message), "{message}");
    }
    assert!(page.contains("aria-invalid=\"true\""));
    assert!(page.contains("value=\"olivia\""), "typed values are kept");
    assert!(!page.contains("actor-error"));

    for path in [
        "/audit?from=2026-12-04&to=2026-12-03",
        "/audit?before=abc",
        "/audit?before=10&after=5",
        "/audit?target_type=Customer%20Records",
        "/audit?store=nowhere",
    ] {
        let (status, page) = get(&officer, &app, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(page.contains("class=\"field-error\""), "{path}: {page}");
    }
    assert_eq!(
        views_by(&audit, "olivia").len(),
        before,
        "a refused filter shows nothing, so it is no view"
    );

    // Values with quotes, ampersands and markup come back escaped, never as markup.
    let (status, page) = get(&officer, &app, "/audit?actor=%3Cb%3E%22x%26y").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("<b>\"x"), "{page}");
    app.stop().await;
}

/// The index answers exactly what a plain scan of the trail answers, while building
/// (reading directly) and once built, for every cursor, and catches up with new entries.
#[test]
fn the_index_answers_what_a_scan_of_the_trail_answers() {
    let tmp = tempfile::tempdir().unwrap();
    init_store(tmp.path());
    let store = open_store(tmp.path());
    let audit = Audit::open(
        &store,
        Arc::new(SystemClock),
        &SystemRandom::new(),
        &AuditConfig::default(),
    )
    .unwrap();
    let actions = [
        Action::SignIn,
        Action::CustomerViewed,
        Action::CustomerUpdated,
        Action::LocationUpdated,
    ];
    let stores = ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAW"];
    let write = |range: std::ops::Range<u64>| {
        let mut set = ChangeSet::new();
        for n in range {
            let actor = match n % 5 {
                0 => Actor::anonymous(),
                1 => Actor::system("sync:pos"),
                _ => Actor::system(&format!("clerk{}", n % 3)),
            };
            let mut event = Event::new(actions[(n % 4) as usize])
                .by(actor)
                .target(if n % 2 == 0 { "customer" } else { "user" }, n % 17);
            if n % 7 == 0 {
                event = event.denied("scope");
            } else if n % 11 == 0 {
                event = event.failed("bad input");
            }
            if n % 3 != 0 {
                event = event.store(stores[(n % 2) as usize].parse().unwrap());
            }
            event.add_to(&mut set);
        }
        store.commit_blocking(set).unwrap();
    };
    write(0..700);

    let all: Vec<Entry> = audit
        .entries(1, u64::MAX, false)
        .collect::<Result<_, _>>()
        .unwrap();
    let middle_time = all[300].timestamp().unwrap();
    let late_time = all[600].timestamp().unwrap();
    let filters = [
        Filter::default(),
        Filter {
            action: Some(Action::CustomerViewed),
            ..Filter::default()
        },
        Filter {
            outcome: Some(Outcome::Denied),
            actor: Some("CLERK1".into()),
            ..Filter::default()
        },
        Filter {
            target_type: Some("customer".into()),
            target_id: Some("5".into()),
            ..Filter::default()
        },
        Filter {
            store: Some(stores[1].into()),
            outcome: Some(Outcome::Failure),
            ..Filter::default()
        },
        Filter {
            from: Some(middle_time),
            until: Some(late_time),
            action: Some(Action::SignIn),
            ..Filter::default()
        },
        Filter {
            actor: Some("nobody-at-all".into()),
            ..Filter::default()
        },
        Filter {
            action: Some(Action::BackupRestored),
            ..Filter::default()
        },
    ];

    let index = AuditIndex::new(audit.clone());
    let check = |index: &AuditIndex, filter: &Filter, built: bool| {
        let expected: Vec<u64> = all
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .map(|e| e.seq)
            .collect();
        // Walk every page down, then every page back up.
        let mut got = Vec::new();
        let mut cursor = Cursor::Newest;
        let mut pages = Vec::new();
        loop {
            let page = index.search(filter, cursor, 40).unwrap();
            assert_eq!(matches!(page.source, Source::Index), built);
            if built {
                let count = page.count.unwrap();
                assert_eq!(count.value, expected.len() as u64, "{filter:?}");
            } else {
                assert!(page.count.is_none());
            }
            got.extend(page.entries.iter().map(|e| e.seq));
            pages.push(page.entries.iter().map(|e| e.seq).collect::<Vec<_>>());
            match page.older {
                Some(seq) => cursor = Cursor::Before(seq),
                None => break,
            }
        }
        assert_eq!(got, expected, "{filter:?} (built: {built})");
        if built && pages.len() > 1 {
            let last = pages.last().unwrap();
            let page = index
                .search(filter, Cursor::After(*last.first().unwrap()), 40)
                .unwrap();
            let seqs: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, pages[pages.len() - 2], "{filter:?} paging back");
        }
    };

    // Not built yet: answered by reading the trail.
    assert!(!index.is_ready());
    for filter in &filters {
        check(&index, filter, false);
    }

    index.build().unwrap();
    assert!(index.is_ready());
    assert_eq!(index.len(), 700);
    for filter in &filters {
        check(&index, filter, true);
    }

    // Entries written after the build are found by the next query.
    write(700..760);
    let all_now: Vec<Entry> = audit
        .entries(1, u64::MAX, false)
        .collect::<Result<_, _>>()
        .unwrap();
    let newest_first: Vec<u64> = all_now.iter().rev().take(10).map(|e| e.seq).collect();
    let page = index
        .search(&Filter::default(), Cursor::Newest, 10)
        .unwrap();
    assert_eq!(
        page.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        newest_first
    );
    assert_eq!(index.len(), 760);
    assert!(
        index
            .vocabulary()
            .target_types
            .contains(&"customer".to_owned())
    );
}
