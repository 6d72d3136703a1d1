//! Sales ingest against the real appliance: `POSLog` files dropped in the watched folder, the
//! JSON ingest API with idempotency, availability from the ledger, scopes, and the command
//! line. The `POSLog` fixtures are written here from the ARTS format.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clientele::audit::Actor;
use clientele::auth::tokens::Tokens;
use clientele::clock::{SystemClock, SystemRandom};
use clientele::crm::Customers;
use clientele::domain::Id;
use clientele::domain::account::Role;
use clientele::domain::customer::Identity;
use clientele::domain::sale::TransactionKey;
use clientele::inventory::ingest::Ingest;
use clientele::sync::held::{DeadLetter, Held};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{clientele, init_store};
use crate::web::{TestApp, plain_client};

// --- POSLog fixtures ---

/// A `POSLog` document around `transactions`, with a vendor namespace.
pub(crate) fn poslog(transactions: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<POSLog \
         xmlns=\"http://www.nrf-arts.org/IXRetail/namespace/\" \
         xmlns:acme=\"urn:acme:pos\">\n{}\n</POSLog>\n",
        transactions.join("\n")
    )
}

fn cents(value: i64) -> String {
    format!(
        "{}{}.{:02}",
        if value < 0 { "-" } else { "" },
        value.abs() / 100,
        value.abs() % 100
    )
}

/// An item line: `<Sale>` or `<Return>` of `item`, `quantity` as the register prints it.
pub(crate) fn item(seq: u32, tag: &str, id: &str, quantity: &str, amount: i64) -> String {
    format!(
        "<LineItem><SequenceNumber>{seq}</SequenceNumber><{tag} ItemType=\"Stock\">\
         <ItemID>{id}</ItemID><Description>Item {id}</Description>\
         <RegularSalesUnitPrice>{price}</RegularSalesUnitPrice>\
         <ExtendedAmount>{amount}</ExtendedAmount><Quantity>{quantity}</Quantity>\
         </{tag}></LineItem>",
        price = cents(amount),
        amount = cents(amount)
    )
}

/// A retail transaction paid (or refunded) by card, with `extra` inside the transaction
/// (customer, vendor elements) and `total` as the register's grand total.
pub(crate) fn retail(store: &str, seq: u64, lines: &[String], total: i64, extra: &str) -> String {
    let refund = total < 0;
    format!(
        "<Transaction><RetailStoreID>{store}</RetailStoreID><WorkstationID>3</WorkstationID>\
         <SequenceNumber>{seq}</SequenceNumber><BusinessDayDate>2026-11-27</BusinessDayDate>\
         <CurrencyCode>EUR</CurrencyCode><RetailTransaction Version=\"2.1\">{lines}\
         <LineItem><SequenceNumber>99</SequenceNumber>\
         <Tender TenderType=\"CreditDebit\" TypeCode=\"{code}\"><Amount>{paid}</Amount>\
         <CreditDebit><PrimaryAccountNumber>4111 1111 1111 1111</PrimaryAccountNumber>\
         </CreditDebit></Tender></LineItem>\
         <Total TotalType=\"TransactionGrandAmount\">{total}</Total></RetailTransaction>\
         {extra}</Transaction>",
        lines = lines.concat(),
        code = if refund { "Refund" } else { "Sale" },
        paid = cents(total.abs()),
        total = cents(total.abs()),
    )
}

/// The day's file: a loyalty customer buys two scarves (scanned by GTIN) and 0.42 kg of
/// apples, then returns a scarf; a voided sale; an item missing from the catalog; a sign-on.
fn day_file() -> String {
    let customer = "<acme:Till><acme:LoyaltyID>LOY-77</acme:LoyaltyID>\
                    <acme:Note>card 5555555555554444 seen</acme:Note></acme:Till>";
    let sale = retail(
        "S001",
        1001,
        &[
            item(1, "Sale", "04006381333931", "2", 9980),
            item(2, "Sale", "APPLES", "0.42", 126),
        ],
        10106,
        customer,
    );
    let ret = retail(
        "S001",
        1002,
        &[item(1, "Return", "SKU-SCARF", "1", 4990)],
        -4990,
        customer,
    );
    let void = retail(
        "S001",
        1003,
        &[item(1, "Sale", "SKU-SCARF", "3", 14970)],
        14970,
        "",
    )
    .replacen("<Transaction>", "<Transaction CancelFlag=\"true\">", 1);
    let unknown = retail(
        "S001",
        1004,
        &[item(1, "Sale", "MYSTERY-1", "1", 500)],
        500,
        "",
    );
    let control = "<Transaction><RetailStoreID>S001</RetailStoreID>\
                   <WorkstationID>3</WorkstationID><SequenceNumber>1000</SequenceNumber>\
                   <BusinessDayDate>2026-11-27</BusinessDayDate>\
                   <ControlTransaction><OperatorSignOn/></ControlTransaction></Transaction>"
        .to_owned();
    poslog(&[control, sale, ret, void, unknown])
}

// --- the appliance ---

fn inbox(app: &TestApp) -> PathBuf {
    app.dir.path().join("inbox")
}

/// The appliance with a watched `POSLog` folder looked at every 50 ms.
async fn start_with_inbox() -> TestApp {
    TestApp::start_configured(|config, dir| {
        config.pos.inbox = Some(dir.join("inbox"));
        config.pos.poll_interval = Duration::from_millis(50);
        config.pos.settle = Duration::ZERO;
    })
    .await
}

pub(crate) fn store(app: &TestApp) -> clientele::store::Store {
    app.app.as_ref().unwrap().store.clone()
}

/// An integration token with these scopes.
pub(crate) async fn token(app: &TestApp, scopes: &[&str]) -> String {
    let tokens = Tokens::new(
        store(app),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
    );
    let (_, secret) = tokens
        .create(
            &format!("test {}", scopes.join(" ")),
            scopes.iter().map(|s| (*s).to_owned()).collect(),
            Vec::new(),
            Id::from_bytes([1; 16]),
            Actor::system("test"),
        )
        .await
        .unwrap();
    secret
}

fn customers(app: &TestApp) -> Customers {
    Customers::new(
        store(app),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
        "US",
    )
}

/// Tokens for each kind of caller, and a client.
pub(crate) struct Api {
    client: reqwest::Client,
    catalog: String,
    erp: String,
    pos: String,
    reader: String,
}

impl Api {
    pub(crate) async fn new(app: &TestApp) -> Self {
        Self {
            client: plain_client(app.dir.path()),
            catalog: token(app, &["write:catalog", "read:inventory"]).await,
            erp: token(app, &["ingest:erp"]).await,
            pos: token(app, &["ingest:pos"]).await,
            reader: token(app, &["read:inventory"]).await,
        }
    }

    pub(crate) async fn product(&self, app: &TestApp, sku: &str, gtin: Option<&str>) {
        let res = self
            .client
            .put(app.url(&format!("/api/v1/products/{sku}")))
            .bearer_auth(&self.catalog)
            .json(
                &json!({"name": format!("Product {sku}"), "gtin": gtin, "price": 4990,
                "cost": 2000, "currency": "EUR", "brand": "Acme", "category": "Scarves"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{}",
            res.text().await.unwrap()
        );
    }

    pub(crate) async fn receive(&self, app: &TestApp, sku: &str, location: &str, milli: i64) {
        let res = self
            .client
            .post(app.url("/api/v1/stock/movements"))
            .bearer_auth(&self.erp)
            .json(&json!({"sku": sku, "location": location, "kind": "receipt",
                "quantity_milli": milli, "reference": "DN-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{}",
            res.text().await.unwrap()
        );
    }

    /// The availability line of `sku` at `location`.
    async fn availability(&self, app: &TestApp, sku: &str, location: &str) -> Value {
        let res = self
            .client
            .get(app.url(&format!(
                "/api/v1/availability?sku={sku}&location={location}"
            )))
            .bearer_auth(&self.reader)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        body["items"][0].clone()
    }

    pub(crate) async fn available(&self, app: &TestApp, sku: &str, location: &str) -> i64 {
        self.availability(app, sku, location).await["available_milli"]
            .as_i64()
            .unwrap()
    }

    pub(crate) async fn push(
        &self,
        app: &TestApp,
        key: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(app.url("/api/v1/pos/transactions"))
            .bearer_auth(&self.pos)
            .json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        req.send().await.unwrap()
    }
}

/// Drops a file the way registers should: written under a `.part` name, then renamed.
fn drop_file(inbox: &Path, name: &str, contents: &str) {
    std::fs::create_dir_all(inbox).unwrap();
    let part = inbox.join(format!("{name}.part"));
    std::fs::write(&part, contents).unwrap();
    std::fs::rename(&part, inbox.join(name)).unwrap();
}

/// Waits (up to 20 s) for the connector to take `name` out of the folder; returns the dead
/// letter made of it when it was refused.
async fn taken(app: &TestApp, name: &str) -> Option<DeadLetter> {
    let inbox = inbox(app);
    for _ in 0..400 {
        if !inbox.join(name).exists() {
            let held = Held::new(
                store(app),
                Arc::new(SystemClock),
                Arc::new(SystemRandom::new()),
            );
            return held
                .dead_letters()
                .unwrap()
                .into_iter()
                .find(|letter| letter.name == name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} was not taken from the folder");
}

/// Waits for `name` to be imported.
async fn processed(app: &TestApp, name: &str) {
    if let Some(letter) = taken(app, name).await {
        panic!("{name} was refused: {}", letter.reason);
    }
}

/// Waits for `name` to be refused; returns the reason.
async fn refused(app: &TestApp, name: &str) -> String {
    taken(app, name)
        .await
        .unwrap_or_else(|| panic!("{name} was imported"))
        .reason
}

fn find_customer(app: &TestApp, loyalty: &str) -> Option<Id> {
    customers(app)
        .find(&Identity::Loyalty(loyalty.into()))
        .unwrap()
}

// --- the stories ---

#[tokio::test]
async fn a_dropped_poslog_file_moves_stock_and_fills_the_customer_once() {
    let app = start_with_inbox().await;
    let api = Api::new(&app).await;
    api.product(&app, "SKU-SCARF", Some("4006381333931")).await;
    api.product(&app, "APPLES", None).await;
    api.receive(&app, "SKU-SCARF", "S001", 10_000).await;
    api.receive(&app, "APPLES", "S001", 5_000).await;
    assert_eq!(api.available(&app, "SKU-SCARF", "S001").await, 10_000);

    let inbox = inbox(&app);
    drop_file(&inbox, "day1.xml", &day_file());
    processed(&app, "day1.xml").await;

    // Two sold by GTIN, one returned; the voided sale moves nothing.
    assert_eq!(api.available(&app, "SKU-SCARF", "S001").await, 9_000);
    // The weighed item moves by thousandths.
    assert_eq!(api.available(&app, "APPLES", "S001").await, 4_580);
    // The item missing from the catalog is kept and flagged, not dropped.
    let mystery = api.availability(&app, "MYSTERY-1", "S001").await;
    assert_eq!(mystery["on_hand_milli"], -1000);
    assert_eq!(mystery["known"], false);
    assert_eq!(mystery["unknown_sku_seen"], true);

    // The loyalty customer was created from the vendor extension and carries the figures.
    let customer = find_customer(&app, "LOY-77").expect("customer linked by loyalty id");
    let manager = app.signed_in("ada-admin", Role::Admin).await;
    let page = manager
        .get(app.url(&format!("/customers/{customer}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<dd id=\"purchases\">1</dd>"), "{page}");
    assert!(page.contains("<dd id=\"returns\">1</dd>"), "{page}");
    assert!(page.contains("<div>51.16 EUR</div>"), "{page}");
    assert!(page.contains("2026-11-27"), "{page}");
    assert!(
        page.contains("Purchase of 101.06 EUR at store S001"),
        "{page}"
    );

    // No card number reached the store: the sale holds the masked forms only.
    let ingest = Ingest::new(store(&app), Arc::new(SystemClock), customers(&app));
    let key = TransactionKey {
        store: "S001".into(),
        register: "3".into(),
        business_day: "2026-11-27".parse().unwrap(),
        sequence: 1001,
    };
    let sale = ingest.sale(&key).unwrap().unwrap();
    let stored = serde_json::to_string(&sale).unwrap();
    assert!(!stored.contains("4111111111111111") && !stored.contains("4111 1111"));
    assert!(!stored.contains("5555555555554444"));
    assert!(stored.contains("411111******1111"), "{stored}");
    assert_eq!(sale.customer, Some(customer));

    // The product page shows the stock and the movements.
    let product = manager
        .get(app.url("/products/SKU-SCARF"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(product.contains("<td>S001</td><td>9</td>"), "{product}");
    assert!(product.contains("S001/3/2026-11-27/1002"), "{product}");

    // The same file again (a register re-sending, or a process killed after the commit and
    // before the removal) changes nothing.
    drop_file(&inbox, "day1-again.xml", &day_file());
    processed(&app, "day1-again.xml").await;
    assert_eq!(api.available(&app, "SKU-SCARF", "S001").await, 9_000);
    assert_eq!(api.available(&app, "APPLES", "S001").await, 4_580);
    assert_eq!(ingest.summary(customer).unwrap().purchases, 1);

    app.stop().await;
}

#[tokio::test]
async fn bad_files_are_set_aside_with_a_reason_and_change_nothing() {
    let app = start_with_inbox().await;
    let api = Api::new(&app).await;
    api.product(&app, "SKU-SCARF", None).await;
    api.receive(&app, "SKU-SCARF", "S001", 10_000).await;
    let good = retail(
        "S001",
        2001,
        &[item(1, "Sale", "SKU-SCARF", "1", 4990)],
        4990,
        "",
    );
    let inbox = inbox(&app);

    // Mismatched totals in the second transaction: the first one is not written either.
    let mismatched = retail(
        "S001",
        2002,
        &[item(1, "Sale", "SKU-SCARF", "1", 4990)],
        4990,
        "",
    )
    .replace(
        "<Total TotalType=\"TransactionGrandAmount\">49.90</Total>",
        "<Total TotalType=\"TransactionGrandAmount\">59.90</Total>",
    );
    drop_file(&inbox, "totals.xml", &poslog(&[good.clone(), mismatched]));
    let reason = refused(&app, "totals.xml").await;
    assert!(reason.contains("do not add up"), "{reason}");
    assert!(reason.contains("line "), "{reason}");

    // A negative quantity on a sale line.
    let negative = retail(
        "S001",
        2003,
        &[item(1, "Sale", "SKU-SCARF", "-2", 4990)],
        4990,
        "",
    );
    drop_file(&inbox, "negative.xml", &poslog(&[good.clone(), negative]));
    let reason = refused(&app, "negative.xml").await;
    assert!(reason.contains("negative"), "{reason}");

    // Malformed XML (cut short, as a file still being written would be).
    let whole = poslog(std::slice::from_ref(&good));
    drop_file(&inbox, "cut.xml", &whole[..whole.len() / 2]);
    let reason = refused(&app, "cut.xml").await;
    assert!(reason.contains("cut short"), "{reason}");

    // Files that are not XML, or still being written under another name, are left alone.
    drop_file(&inbox, "notes.txt", "not a poslog");
    std::fs::write(inbox.join("late.xml.part"), &whole).unwrap();

    assert_eq!(api.available(&app, "SKU-SCARF", "S001").await, 10_000);

    // The good transaction alone goes through.
    drop_file(&inbox, "good.xml", &whole);
    processed(&app, "good.xml").await;
    assert_eq!(api.available(&app, "SKU-SCARF", "S001").await, 9_000);
    assert!(inbox.join("notes.txt").exists());
    assert!(inbox.join("late.xml.part").exists());
    app.stop().await;
}

pub(crate) fn json_sale(store: &str, sequence: u64, sku: &str, quantity_milli: i64) -> Value {
    json!({
        "key": {"store": store, "register": "7", "business_day": "2026-11-28", "sequence": sequence},
        "kind": "sale",
        "currency": "EUR",
        "lines": [{"sku": sku, "description": "paid with 4111 1111 1111 1111",
                   "quantity_milli": quantity_milli, "unit_price": 1000,
                   "extended": quantity_milli, "discount": 0}],
        "tenders": [{"kind": "Cash", "amount": quantity_milli}],
        "total": quantity_milli,
        "customer": {"email": "ada@example.com"}
    })
}

#[tokio::test]
async fn json_ingest_is_idempotent_and_availability_falls_before_the_answer() {
    let app = TestApp::start().await;
    let api = Api::new(&app).await;
    api.product(&app, "SKU-A", None).await;
    api.receive(&app, "SKU-A", "S002", 5_000).await;

    let one = json_sale("S002", 1, "SKU-A", 2_000);
    let res = api.push(&app, Some("k-1"), &one).await;
    assert_eq!(res.status(), StatusCode::OK);
    let first: Value = res.json().await.unwrap();
    assert_eq!(first["accepted"], 1);
    assert_eq!(first["transactions"][0]["status"], "accepted");
    // Accepted means durable and counted: the very next read sees it.
    assert_eq!(api.available(&app, "SKU-A", "S002").await, 3_000);

    // Same key, same body: the same answer, nothing counted twice.
    let res = api.push(&app, Some("k-1"), &one).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap(), first);
    assert_eq!(api.available(&app, "SKU-A", "S002").await, 3_000);

    // Same key, another body: refused.
    let other = json_sale("S002", 2, "SKU-A", 1_000);
    let res = api.push(&app, Some("k-1"), &other).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict");

    // Another key, the same transaction: a duplicate, nothing counted.
    let res = api.push(&app, Some("k-2"), &one).await;
    let again: Value = res.json().await.unwrap();
    assert_eq!(
        (again["accepted"].as_i64(), again["duplicates"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(again["transactions"][0]["status"], "duplicate");
    assert_eq!(api.available(&app, "SKU-A", "S002").await, 3_000);

    // A batch with one bad transaction is refused whole, naming the field.
    let mut bad = json_sale("S002", 4, "SKU-A", 1_000);
    bad["lines"][0]["quantity_milli"] = json!(-1000);
    let batch = json!({"transactions": [json_sale("S002", 3, "SKU-A", 1_000), bad]});
    let res = api.push(&app, None, &batch).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("transactions[1].lines[0].quantity_milli"),
        "{message}"
    );
    assert_eq!(api.available(&app, "SKU-A", "S002").await, 3_000);

    // Malformed JSON and unknown fields are named too.
    let mut typo = json_sale("S002", 5, "SKU-A", 1_000);
    typo["lines"][0]["quantity"] = json!(1);
    let res = api.push(&app, None, &typo).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lines[0]")
    );

    // A good batch lands whole; the customer found by email carries both sales.
    let batch = json!({"transactions": [json_sale("S002", 3, "SKU-A", 1_000),
                                        json_sale("S002", 4, "SKU-A", 1_000)]});
    let res = api.push(&app, None, &batch).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["accepted"], 2);
    assert_eq!(api.available(&app, "SKU-A", "S002").await, 1_000);
    let customer = customers(&app)
        .find(&Identity::Email("ada@example.com".into()))
        .unwrap()
        .unwrap();
    let ingest = Ingest::new(store(&app), Arc::new(SystemClock), customers(&app));
    let summary = ingest.summary(customer).unwrap();
    assert_eq!(summary.purchases, 3);
    assert_eq!(summary.spend["EUR"].amount, 4_000);

    // The card number in the description was masked before it was written.
    let sale = ingest
        .sale(&TransactionKey {
            store: "S002".into(),
            register: "7".into(),
            business_day: "2026-11-28".parse().unwrap(),
            sequence: 1,
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        sale.transaction.lines[0].description,
        "paid with 411111******1111"
    );

    // Scopes: a reader cannot push, a POS token cannot read availability.
    let res = api
        .client
        .post(app.url("/api/v1/pos/transactions"))
        .bearer_auth(&api.reader)
        .json(&json_sale("S002", 9, "SKU-A", 1_000))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = api
        .client
        .get(app.url("/api/v1/availability?sku=SKU-A"))
        .bearer_auth(&api.pos)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(api.available(&app, "SKU-A", "S002").await, 1_000);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_pushes_neither_double_count_nor_lose_a_sale() {
    let app = TestApp::start().await;
    let api = Arc::new(Api::new(&app).await);
    api.product(&app, "SKU-C", None).await;
    api.receive(&app, "SKU-C", "S003", 100_000).await;
    let app = Arc::new(app);

    // The same transaction sent 12 times at once, without idempotency keys: counted once.
    let same = json_sale("S003", 1, "SKU-C", 1_000);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (api, app, body) = (Arc::clone(&api), Arc::clone(&app), same.clone());
        tasks.push(tokio::spawn(async move {
            let res = api.push(&app, None, &body).await;
            assert_eq!(res.status(), StatusCode::OK);
            res.json::<Value>().await.unwrap()["accepted"]
                .as_i64()
                .unwrap()
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.unwrap();
    }
    assert_eq!(accepted, 1);
    assert_eq!(api.available(&app, "SKU-C", "S003").await, 99_000);

    // Twelve different sales of the same SKU at once: every one counted.
    let mut tasks = Vec::new();
    for seq in 10..22 {
        let (api, app) = (Arc::clone(&api), Arc::clone(&app));
        tasks.push(tokio::spawn(async move {
            let res = api
                .push(&app, None, &json_sale("S003", seq, "SKU-C", 1_000))
                .await;
            assert_eq!(
                res.status(),
                StatusCode::OK,
                "{}",
                res.text().await.unwrap()
            );
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(api.available(&app, "SKU-C", "S003").await, 87_000);
    drop(api);
    Arc::try_unwrap(app).ok().unwrap().stop().await;
}

#[test]
fn import_poslog_from_the_command_line_is_all_or_nothing_and_safe_to_repeat() {
    let dir = tempfile::tempdir().unwrap();
    init_store(dir.path());
    let file = dir.path().join("day.xml");
    std::fs::write(&file, day_file()).unwrap();

    let run = |path: &Path| {
        clientele(dir.path())
            .args(["import", "poslog"])
            .arg(path)
            .output()
            .unwrap()
    };
    let first = run(&file);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{first:?}");
    assert!(
        stdout.contains("5 transactions, 5 new, 0 already received"),
        "{stdout}"
    );
    let again = run(&file);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again:?}");
    assert!(
        stdout.contains("5 transactions, 0 new, 5 already received"),
        "{stdout}"
    );

    let bad = dir.path().join("bad.xml");
    let text = day_file().replace("<Quantity>0.42</Quantity>", "<Quantity>-0.42</Quantity>");
    std::fs::write(&bad, text).unwrap();
    let refused = run(&bad);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("nothing imported") && stderr.contains("negative"),
        "{stderr}"
    );
}
