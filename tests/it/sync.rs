//! The sync supervisor as an operator meets it: connectors from the configuration file run
//! on their schedule, the Sync page shows their health, and an admin runs, pauses, resumes,
//! reads, replays and discards, each step in the audit trail. A connector that fails says why
//! and recovers on its own; a server killed in the middle of a file counts it once.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use clientele::audit::Actor;
use clientele::clock::{SystemClock, SystemRandom};
use clientele::config::{ConnectorConfig, ConnectorKind};
use clientele::domain::account::Role;
use clientele::sync::held::Held;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::ingest::{Api, item, json_sale, poslog, retail, store, token};
use crate::support::{clientele, init_store, open_store};
use crate::web::{TestApp, csrf_of, plain_client};

fn connector(name: &str, folder: &Path, interval: Duration) -> ConnectorConfig {
    ConnectorConfig {
        name: name.to_owned(),
        kind: ConnectorKind::PoslogFolder,
        folder: Some(folder.to_owned()),
        interval,
        peak: Vec::new(),
        time_zone: None,
        settle: Duration::ZERO,
        currency: None,
    }
}

/// The appliance with the given connectors, retrying quickly.
async fn start_with(connectors: impl FnOnce(&Path) -> Vec<ConnectorConfig>) -> TestApp {
    TestApp::start_configured(|config, dir| {
        config.sync.connectors = connectors(dir);
        config.sync.retry_initial = Duration::from_millis(50);
        config.sync.retry_max = Duration::from_millis(200);
    })
    .await
}

fn drop_file(folder: &Path, name: &str, contents: &str) {
    std::fs::create_dir_all(folder).unwrap();
    let part = folder.join(format!("{name}.part"));
    std::fs::write(&part, contents).unwrap();
    std::fs::rename(&part, folder.join(name)).unwrap();
}

/// Waits (up to 20 s) until `name` has left `folder`.
async fn gone(folder: &Path, name: &str) {
    for _ in 0..400 {
        if !folder.join(name).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} stayed in {}", folder.display());
}

async fn page(client: &reqwest::Client, app: &TestApp, path: &str) -> (StatusCode, String) {
    let res = client.get(app.url(path)).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

async fn post(client: &reqwest::Client, app: &TestApp, path: &str) -> reqwest::Response {
    let csrf = csrf_of(&page(client, app, "/account").await.1);
    client
        .post(app.url(path))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap()
}

fn sale(seq: u64, sku: &str) -> String {
    retail("S001", seq, &[item(1, "Sale", sku, "1", 4990)], 4990, "")
}

/// Codes of the audit entries recorded so far, with their outcome.
fn audited(app: &TestApp) -> Vec<(String, String)> {
    app.audit()
        .entries(0, u64::MAX, false)
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.action, entry.outcome.as_str().to_owned())
        })
        .collect()
}

fn held(app: &TestApp) -> Held {
    Held::new(
        store(app),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
    )
}

#[tokio::test]
async fn an_admin_runs_pauses_reads_replays_and_discards_and_each_step_is_audited() {
    let app = start_with(|dir| {
        vec![connector(
            "store-1",
            &dir.join("drop"),
            Duration::from_millis(100),
        )]
    })
    .await;
    let drop = app.dir.path().join("drop");
    let api = Api::new(&app).await;
    api.product(&app, "SKU-SCARF", None).await;
    api.receive(&app, "SKU-SCARF", "S001", 10_000).await;
    let admin = app.signed_in("ada-admin", Role::Admin).await;
    let manager = app.signed_in("max-manager", Role::Manager).await;

    // A good file is imported on the schedule.
    drop_file(&drop, "good.xml", &poslog(&[sale(1, "SKU-SCARF")]));
    gone(&drop, "good.xml").await;
    assert_eq!(api.available(&app, "SKU-SCARF", "S001").await, 9_000);

    // Managers see the health line; the import shows in it.
    let (status, list) = page(&manager, &app, "/sync").await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains("data-connector=\"store-1\""), "{list}");
    assert!(list.contains("POSLog file drop"), "{list}");
    assert!(list.contains("No dead letters."), "{list}");
    let (_, detail) = page(&manager, &app, "/sync/connectors/store-1").await;
    assert!(detail.contains("<td>good.xml</td>"), "{detail}");
    // ...but do not act.
    let res = post(&manager, &app, "/sync/connectors/store-1/pause").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // Paused, the schedule leaves new files alone; a run by hand still takes them.
    let res = post(&admin, &app, "/sync/connectors/store-1/pause").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, detail) = page(&admin, &app, "/sync/connectors/store-1?done=paused").await;
    assert!(detail.contains("Connector paused"), "{detail}");
    assert!(detail.contains(">paused</span>"), "{detail}");
    drop_file(&drop, "while-paused.xml", &poslog(&[sale(2, "SKU-SCARF")]));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(drop.join("while-paused.xml").exists());
    let res = post(&admin, &app, "/sync/connectors/store-1/run").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    gone(&drop, "while-paused.xml").await;
    assert_eq!(api.available(&app, "SKU-SCARF", "S001").await, 8_000);
    post(&admin, &app, "/sync/connectors/store-1/resume").await;

    // A file whose totals do not add up becomes a dead letter with the reason.
    let mismatched = sale(3, "SKU-SCARF").replace(
        "<Total TotalType=\"TransactionGrandAmount\">49.90</Total>",
        "<Total TotalType=\"TransactionGrandAmount\">59.90</Total>",
    );
    drop_file(&drop, "totals.xml", &poslog(&[mismatched]));
    gone(&drop, "totals.xml").await;
    let letter = held(&app).dead_letters().unwrap().remove(0);
    assert_eq!(letter.name, "totals.xml");
    let (_, list) = page(&manager, &app, "/sync").await;
    assert!(list.contains("do not add up"), "{list}");
    assert!(list.contains("1 file(s) refused"), "{list}");

    // Its contents are for admins only, escaped, and opening them is recorded.
    let path = format!("/sync/dead-letters/{}", letter.id);
    let (status, _) = page(&manager, &app, &path).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, shown) = page(&admin, &app, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(shown.contains("&#60;POSLog"), "{shown}");
    // The held copy never carried the card number the register wrote.
    assert!(shown.contains("411111******1111"), "{shown}");
    assert!(!shown.contains("4111 1111 1111 1111"), "{shown}");
    assert!(shown.contains("do not add up"), "{shown}");

    // Replayed as it is, it is refused again and stays, one attempt more.
    let res = post(&admin, &app, &format!("{path}/replay")).await;
    assert_eq!(res.headers()["location"], format!("{path}?done=refused"));
    assert_eq!(
        held(&app).dead_letter(letter.id).unwrap().unwrap().attempts,
        2
    );

    // Discarded, it is gone with its contents.
    let res = post(&admin, &app, &format!("{path}/discard")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(held(&app).dead_letters().unwrap().is_empty());
    let (status, _) = page(&admin, &app, &path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A letter whose cause was fixed (here: a good file held as one) imports on replay.
    let fixed = held(&app)
        .set_aside(
            "store-1",
            "fixed.xml",
            poslog(&[sale(4, "SKU-SCARF")]).as_bytes(),
            "the register's clock was wrong",
            Actor::system("test"),
        )
        .await
        .unwrap();
    let res = post(
        &admin,
        &app,
        &format!("/sync/dead-letters/{}/replay", fixed.id),
    )
    .await;
    assert_eq!(
        res.headers()["location"],
        "/sync/connectors/store-1?done=replayed"
    );
    assert_eq!(api.available(&app, "SKU-SCARF", "S001").await, 7_000);
    assert!(held(&app).dead_letter(fixed.id).unwrap().is_none());

    // A pushed sale and a refused push are counted on the JSON API's line.
    let res = api
        .push(&app, None, &json_sale("S001", 500, "SKU-SCARF", 1000))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = api
        .push(&app, None, &json_sale("S001", 501, "SKU-SCARF", -1000))
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Monitoring reads the same figures through the API.
    let monitor = token(&app, &["read:sync"]).await;
    let res = plain_client(app.dir.path())
        .get(app.url("/api/v1/sync/connectors"))
        .bearer_auth(&monitor)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let line = &body["connectors"][0];
    assert_eq!(line["name"], "store-1");
    assert_eq!(line["items_total"], 2);
    assert_eq!(line["paused"], false);
    assert_eq!(line["cursor"], "while-paused.xml");
    let api_line = body["pushed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|line| line["name"] == "pos-api")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(
        (
            &api_line["requests"],
            &api_line["items"],
            &api_line["refused"]
        ),
        (&json!(2), &json!(1), &json!(1)),
        "{api_line}"
    );
    let refusal = api_line["last_error"].as_str().unwrap();
    assert!(refusal.contains("quantity_milli"), "{refusal}");

    let entries = audited(&app);
    let has = |code: &str, outcome: &str| entries.iter().any(|(a, o)| a == code && o == outcome);
    for (code, outcome) in [
        ("sync.configured", "success"),
        ("sync.paused", "success"),
        ("sync.run_requested", "success"),
        ("sync.resumed", "success"),
        ("sync.dead_letter_created", "failure"),
        ("sync.dead_letter_viewed", "success"),
        ("sync.dead_letter_replayed", "failure"),
        ("sync.dead_letter_discarded", "success"),
        ("sync.dead_letter_replayed", "success"),
        ("sale.ingested", "success"),
    ] {
        assert!(has(code, outcome), "no {code} {outcome} in {entries:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_failing_connector_says_why_backs_off_and_recovers_by_itself() {
    let app = start_with(|dir| {
        // A file where the folder should be: every run fails until it is replaced.
        std::fs::write(dir.join("drop"), "not a folder").unwrap();
        vec![connector(
            "store-2",
            &dir.join("drop"),
            Duration::from_millis(100),
        )]
    })
    .await;
    let drop = app.dir.path().join("drop");
    let manager = app.signed_in("max-manager", Role::Manager).await;

    let mut list = String::new();
    for _ in 0..200 {
        list = page(&manager, &app, "/sync").await.1;
        if list.contains(">retrying</span>") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(list.contains(">retrying</span>"), "{list}");
    assert!(list.contains("cannot read the folder"), "{list}");

    std::fs::remove_file(&drop).unwrap();
    drop_file(&drop, "late.xml", &poslog(&[sale(9, "SKU-X")]));
    gone(&drop, "late.xml").await;
    for _ in 0..200 {
        list = page(&manager, &app, "/sync").await.1;
        if list.contains(">healthy</span>") || list.contains(">running</span>") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!list.contains("cannot read the folder"), "{list}");
    app.stop().await;
}

#[tokio::test]
async fn small_files_go_in_batches_and_a_bad_one_alone_is_set_aside() {
    let app = start_with(|dir| {
        vec![connector(
            "store-3",
            &dir.join("drop"),
            Duration::from_secs(3600),
        )]
    })
    .await;
    let drop = app.dir.path().join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let api = Api::new(&app).await;
    api.product(&app, "SKU-A", None).await;
    api.receive(&app, "SKU-A", "S001", 100_000).await;
    let admin = app.signed_in("ada-admin", Role::Admin).await;

    for seq in 1..=20 {
        drop_file(
            &drop,
            &format!("sale-{seq:02}.xml"),
            &poslog(&[sale(seq, "SKU-A")]),
        );
    }
    // The same sale again under another name, and a store code the ledger refuses.
    drop_file(&drop, "sale-07-again.xml", &poslog(&[sale(7, "SKU-A")]));
    let bad = sale(21, "SKU-A").replace(
        "<RetailStoreID>S001</RetailStoreID>",
        "<RetailStoreID>NOT A STORE</RetailStoreID>",
    );
    drop_file(&drop, "sale-21-bad.xml", &poslog(&[bad]));

    let res = post(&admin, &app, "/sync/connectors/store-3/run").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    for _ in 0..400 {
        if std::fs::read_dir(&drop).unwrap().next().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(std::fs::read_dir(&drop).unwrap().next().is_none());

    assert_eq!(api.available(&app, "SKU-A", "S001").await, 80_000);
    let letters = held(&app).dead_letters().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].name, "sale-21-bad.xml");
    assert!(letters[0].reason.contains("store"), "{}", letters[0].reason);
    let kept = held(&app).archived("store-3", 100).unwrap();
    assert!(kept.iter().any(|f| f.name == "sale-20.xml"));
    assert_eq!(kept.iter().map(|f| f.accepted).sum::<u64>(), 20);
    // Files went in batches: fewer `sale.ingested` entries than files (the batch holding the
    // bad file was refused and its files went one by one).
    let batches = audited(&app)
        .iter()
        .filter(|(code, _)| code == "sale.ingested")
        .count();
    assert!((2..20).contains(&batches), "{batches} batches");
    app.stop().await;
}

#[tokio::test]
async fn a_peak_window_shortens_the_interval() {
    let app = start_with(|dir| {
        let mut store = connector("store-4", &dir.join("drop"), Duration::from_secs(3600));
        // The whole year is the season here, so the peak interval is always in force.
        store.peak =
            vec![toml::from_str("from = \"01-01\"\nto = \"12-31\"\ninterval = \"100ms\"").unwrap()];
        vec![store]
    })
    .await;
    let drop = app.dir.path().join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    // After the first run at start, only the peak interval can bring the next one soon.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop_file(&drop, "peak.xml", &poslog(&[sale(1, "SKU-P")]));
    gone(&drop, "peak.xml").await;
    let manager = app.signed_in("max-manager", Role::Manager).await;
    let (_, detail) = page(&manager, &app, "/sync/connectors/store-4").await;
    assert!(detail.contains("1h (now 100ms, a peak window)"), "{detail}");
    assert!(detail.contains("01-01 to 12-31: every 100ms"), "{detail}");
    app.stop().await;
}

/// The sale count of a store offline: sales of `SKU-K` at S001 move on-hand down by one each.
fn sold(dir: &Path) -> i64 {
    let store = open_store(dir);
    let catalog = clientele::inventory::catalog::Catalog::new(store.clone(), Arc::new(SystemClock));
    let ledger = clientele::inventory::ledger::Ledger::new(store, Arc::new(SystemClock), catalog);
    -ledger.level("SKU-K", "S001").unwrap().on_hand_milli / 1000
}

fn config_file(dir: &Path, drop: &Path) -> PathBuf {
    let path = dir.join("clientele.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
             [[sync.connectors]]\nname = \"store-k\"\nkind = \"poslog_folder\"\n\
             folder = \"{}\"\ninterval = \"50ms\"\nsettle = \"0s\"\n",
            dir.display(),
            drop.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_server_killed_in_the_middle_of_a_file_counts_it_once() {
    const SALES: u64 = 1500;
    let dir = tempfile::tempdir().unwrap();
    init_store(dir.path());
    let drop = dir.path().join("drop");
    let file = config_file(dir.path(), &drop);
    let transactions: Vec<String> = (1..=SALES).map(|seq| sale(seq, "SKU-K")).collect();
    let contents = poslog(&transactions);

    // Killed at a different point of the import each time: before it starts, in the middle,
    // after the commit. Each restart finds the file (or nothing) and ends with one count.
    for delay in [0u64, 250, 700] {
        drop_file(&drop, "day.xml", &contents);
        let mut server = clientele(dir.path())
            .arg("--config")
            .arg(&file)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + delay));
        server.kill().unwrap();
        server.wait().unwrap();

        let mut server = clientele(dir.path())
            .arg("--config")
            .arg(&file)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut waited = 0;
        while drop.join("day.xml").exists() && waited < 600 {
            std::thread::sleep(Duration::from_millis(50));
            waited += 1;
        }
        assert!(!drop.join("day.xml").exists(), "the file was not imported");
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&server),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        server.wait().unwrap();
        assert_eq!(
            sold(dir.path()),
            i64::try_from(SALES).unwrap(),
            "killed after {delay} ms"
        );
    }
}
