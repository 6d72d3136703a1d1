//! Signed POS webhooks on their own listener: a signed Shopify order becomes a sale (and its
//! customer), the same delivery again changes nothing, a forged signature is 401 and audited,
//! and the listener serves nothing but the webhooks.

use std::sync::Arc;

use clientele::app::{self, Deps, RunningApp};
use clientele::audit::{Action, Actor};
use clientele::auth::tokens::Tokens;
use clientele::clock::{SystemClock, SystemRandom};
use clientele::crm::Customers;
use clientele::domain::Id;
use clientele::domain::customer::Identity;
use reqwest::StatusCode;
use ring::hmac;

use crate::support::{config, init_store, key_source};
use crate::web::plain_client;

const SHOPIFY_SECRET: &str = "test-shopify-secret-not-real";

struct Hooks {
    app: RunningApp,
    base: String,
    dir: tempfile::TempDir,
}

async fn start() -> Hooks {
    let dir = tempfile::tempdir().unwrap();
    init_store(dir.path());
    let secret = dir.path().join("shopify.secret");
    std::fs::write(&secret, format!("{SHOPIFY_SECRET}\n")).unwrap();
    let mut config = config(dir.path());
    config.webhooks.listen = Some("127.0.0.1:0".parse().unwrap());
    config.webhooks.shopify_secret_file = Some(secret);
    config.webhooks.store_code = "S001".into();
    let app = app::start(config, Deps::system(), key_source(dir.path()))
        .await
        .unwrap();
    let base = format!("https://localhost:{}", app.webhook_addr.unwrap().port());
    Hooks { app, base, dir }
}

fn sign(body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, SHOPIFY_SECRET.as_bytes());
    data_encoding::BASE64.encode(hmac::sign(&key, body).as_ref())
}

/// A Shopify `orders/create` body, shaped like Shopify's sample order (ours, trimmed).
fn order_body() -> Vec<u8> {
    let order = serde_json::json!({
        "id": 450_789_469,
        "email": "bob.norman@hostmail.com",
        "created_at": "2008-01-10T11:00:00-05:00",
        "currency": "USD",
        "total_price": "409.94",
        "order_number": 1001,
        "gateway": "bogus",
        "line_items": [
            {"id": 466_157_049, "sku": "IPOD2008GREEN", "title": "IPod Nano - 8gb",
             "variant_id": 39_072_856, "quantity": 1, "price": "199.00", "total_discount": "0.00"},
            {"id": 518_995_019, "sku": "IPOD2008RED", "title": "IPod Nano - 8gb",
             "variant_id": 49_148_385, "quantity": 1, "price": "199.00", "total_discount": "0.00"}
        ],
        "payment_details": {"credit_card_bin": "424242", "credit_card_number": "•••• •••• •••• 4242"}
    });
    serde_json::to_vec(&order).unwrap()
}

async fn post(
    client: &reqwest::Client,
    hooks: &Hooks,
    body: &[u8],
    signature: &str,
    id: &str,
) -> reqwest::Response {
    client
        .post(format!("{}/webhooks/shopify", hooks.base))
        .header("Content-Type", "application/json")
        .header("X-Shopify-Hmac-Sha256", signature)
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Webhook-Id", id)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

fn customer_by_email(hooks: &Hooks, email: &str) -> Option<clientele::domain::Id> {
    Customers::new(
        hooks.app.store.clone(),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
        "US",
    )
    .find(&Identity::Email(email.into()))
    .unwrap()
}

fn rejections(hooks: &Hooks) -> Vec<clientele::audit::entry::Entry> {
    hooks
        .app
        .audit
        .entries(1, u64::MAX, false)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == Action::WebhookRejected.code())
        .collect()
}

#[tokio::test]
async fn a_signed_shopify_order_is_ingested_once_and_forgeries_are_refused() {
    let hooks = start().await;
    let client = plain_client(hooks.dir.path());
    let body = order_body();

    // Forged signature, and no signature at all: 401, audited, nothing ingested.
    let forged = sign(b"another body");
    let answer = post(&client, &hooks, &body, &forged, "wh-forged").await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let answer = client
        .post(format!("{}/webhooks/shopify", hooks.base))
        .header("X-Shopify-Webhook-Id", "wh-unsigned")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let refused = rejections(&hooks);
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert_eq!(refused[0].target_id.as_deref(), Some("shopify"));
    assert_eq!(refused[0].address.as_deref(), Some("127.0.0.1"));
    assert!(customer_by_email(&hooks, "bob.norman@hostmail.com").is_none());

    // Correctly signed: accepted, and the customer exists from the order's email.
    let answer = post(&client, &hooks, &body, &sign(&body), "wh-1").await;
    assert_eq!(answer.status(), StatusCode::OK);
    let json: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(json["status"], "accepted");
    assert!(customer_by_email(&hooks, "bob.norman@hostmail.com").is_some());
    let sales_entries = |hooks: &Hooks| {
        hooks
            .app
            .audit
            .entries(1, u64::MAX, false)
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.action == Action::SaleIngested.code())
            })
            .count()
    };
    assert_eq!(sales_entries(&hooks), 1);

    // The same delivery again: 200, ignored.
    let answer = post(&client, &hooks, &body, &sign(&body), "wh-1").await;
    assert_eq!(answer.status(), StatusCode::OK);
    let json: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(json["status"], "duplicate");
    assert_eq!(sales_entries(&hooks), 1);

    // The listener serves only the webhooks.
    for path in ["/login", "/", "/healthz", "/api/v1/me"] {
        let answer = client
            .get(format!("{}{path}", hooks.base))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let answer = client
        .get(format!("{}/webhooks/shopify", hooks.base))
        .send()
        .await
        .unwrap();
    assert_ne!(answer.status(), StatusCode::OK);

    // Guessing signatures: after the third bad one in a row the address waits, answered 429
    // with Retry-After and no audit entry, even with a good signature, until the wait ends.
    for n in 0..2 {
        let answer = post(&client, &hooks, &body, &forged, &format!("wh-guess-{n}")).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    let answer = post(&client, &hooks, &body, &forged, "wh-guess-2").await;
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(answer.headers().contains_key("retry-after"));
    let answer = post(&client, &hooks, &body, &sign(&body), "wh-2").await;
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rejections(&hooks).len(), 4);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let answer = post(&client, &hooks, &body, &sign(&body), "wh-2").await;
    assert_eq!(answer.status(), StatusCode::OK);

    // The Sync page's line for the webhook, read as monitoring reads it.
    let (_, monitor) = Tokens::new(
        hooks.app.store.clone(),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
    )
    .create(
        "monitoring",
        vec!["read:sync".to_owned()],
        Vec::new(),
        Id::from_bytes([1; 16]),
        Actor::system("test"),
    )
    .await
    .unwrap();
    let health: serde_json::Value = client
        .get(format!(
            "https://localhost:{}/api/v1/sync/connectors",
            hooks.app.https_addr.port()
        ))
        .bearer_auth(&monitor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let line = health["pushed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|line| line["name"] == "webhook-shopify")
        .unwrap_or_else(|| panic!("{health}"));
    assert_eq!(line["requests"], 9, "{line}");
    assert_eq!(line["items"], 2, "{line}");
    assert_eq!(line["refused"], 6, "{line}");
    assert!(
        line["last_error"]
            .as_str()
            .unwrap()
            .contains("too many bad signatures"),
        "{line}"
    );

    hooks.app.stop().await;
}

#[tokio::test]
async fn without_a_listen_address_there_is_no_webhook_listener() {
    let dir = tempfile::tempdir().unwrap();
    init_store(dir.path());
    let app = app::start(config(dir.path()), Deps::system(), key_source(dir.path()))
        .await
        .unwrap();
    assert!(app.webhook_addr.is_none());
    app.stop().await;
}
