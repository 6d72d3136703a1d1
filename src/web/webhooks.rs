//! Signed POS webhooks (Square, Shopify), served on a listener of their own (`[webhooks]
//! listen`) that answers nothing else, so it can face the outside without exposing the UI.
//!
//! Every request is checked against its HMAC-SHA256 signature in constant time
//! (`ring::hmac::verify`) before its body is read as JSON; a missing or wrong signature is 401
//! and a `webhook.rejected` audit entry. An event id seen before (Square `event_id`, Shopify
//! `X-Shopify-Webhook-Id`) is answered 200 and changes nothing; the id is stored after the sale
//! is ingested (`Expect::Absent`), and the ingest is itself idempotent on the transaction key,
//! so a retry after a failure is never lost and never counted twice.
//!
//! The mapping to a [`SaleTransaction`] is deliberately small:
//! - key: store = `[webhooks] store_code`, register `web` (Shopify) or `square`, business day =
//!   the date of `created_at` as the provider wrote it, sequence = the order id when it is a
//!   number, else the first 53 bits of its SHA-256 (stable across retries);
//! - Shopify `orders/create`: one line per line item (SKU, or `shopify-variant-{id}` when the
//!   item has none; quantity, price, line discount), one `Online` tender of `total_price`, the
//!   order's email as the customer; other topics are acknowledged and ignored;
//! - Square `payment.created`/`payment.updated` with status `COMPLETED`: keyed by the payment's
//!   `order_id`, no lines (the payment carries none), one tender of `amount_money`, the buyer's
//!   email; `order.*` events carry only ids and are acknowledged without a sale.
//!
//! Card details in the payloads are never read; bodies, secrets and emails are never logged.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use jiff::civil::{Date, DateTime};
use ring::hmac;
use serde_json::Value;

use crate::audit::{Action, Actor, Event};
use crate::config::WebhooksConfig;
use crate::domain::sale::{
    CustomerRefs, SaleLine, SaleTransaction, Tender, TransactionKey, TransactionKind, minor_digits,
    parse_decimal,
};
use crate::store::{ChangeSet, StoreError, Table};

use super::AppState;
use super::error::WebError;

/// Event ids already handled, `provider:id` → when.
pub const WEBHOOK_EVENTS: Table = Table::new("webhook_events");

/// Largest webhook body.
const MAX_BODY: usize = 1024 * 1024;

/// The providers' shared secrets and the store the sales are booked to, as read from the
/// configuration at start or at the last reload.
struct Secrets {
    square: Option<hmac::Key>,
    square_url: Option<String>,
    shopify: Option<hmac::Key>,
    store_code: String,
}

/// The webhook keys: secrets re-read on reload (SIGHUP), and the bad-signature throttle.
pub struct WebhookKeys {
    secrets: std::sync::RwLock<Arc<Secrets>>,
    /// Bad signatures per provider and client address: after three in a row an address waits
    /// (1 s, doubling up to 15 min) and is answered 429 without a signature check or an audit
    /// entry, so nobody can guess secrets or flood the audit trail. Other addresses, the
    /// provider's included, are not held up.
    throttle: crate::auth::throttle::Throttle,
}

impl std::fmt::Debug for WebhookKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secrets = self.secrets();
        f.debug_struct("WebhookKeys")
            .field("square", &secrets.square.is_some())
            .field("shopify", &secrets.shopify.is_some())
            .field("store_code", &secrets.store_code)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Reads the secret files named by the configuration (trailing white space is dropped).
    fn load(config: &WebhooksConfig) -> std::io::Result<Self> {
        let read = |path: &std::path::Path| -> std::io::Result<hmac::Key> {
            let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|err| {
                std::io::Error::other(format!(
                    "cannot read the webhook secret {}: {err}",
                    path.display()
                ))
            })?);
            let secret = bytes.trim_ascii();
            if secret.is_empty() {
                return Err(std::io::Error::other(format!(
                    "the webhook secret {} is empty",
                    path.display()
                )));
            }
            Ok(hmac::Key::new(hmac::HMAC_SHA256, secret))
        };
        Ok(Self {
            square: config
                .square_signature_key_file
                .as_deref()
                .map(read)
                .transpose()?,
            square_url: config.square_notification_url.clone(),
            shopify: config
                .shopify_secret_file
                .as_deref()
                .map(read)
                .transpose()?,
            store_code: config.store_code.clone(),
        })
    }
}

impl WebhookKeys {
    /// Reads the secret files named by the configuration.
    pub fn load(config: &WebhooksConfig) -> std::io::Result<Self> {
        Ok(Self::of(Secrets::load(config)?))
    }

    fn of(secrets: Secrets) -> Self {
        Self {
            secrets: std::sync::RwLock::new(Arc::new(secrets)),
            throttle: crate::auth::throttle::Throttle::default(),
        }
    }

    /// Reads the secret files again (a rotated secret takes effect without a restart); when
    /// one cannot be read, the secrets in use stay.
    pub fn reload(&self, config: &WebhooksConfig) -> std::io::Result<()> {
        let fresh = Arc::new(Secrets::load(config)?);
        *self
            .secrets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    fn secrets(&self) -> Arc<Secrets> {
        Arc::clone(
            &self
                .secrets
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Keys given directly (unit tests).
    #[must_use]
    pub fn with_secrets(square: Option<(&[u8], &str)>, shopify: Option<&[u8]>) -> Self {
        Self::of(Secrets {
            square: square.map(|(k, _)| hmac::Key::new(hmac::HMAC_SHA256, k)),
            square_url: square.map(|(_, url)| url.to_owned()),
            shopify: shopify.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k)),
            store_code: "WEB".into(),
        })
    }

    /// Whether `signature` (base64) is the Square signature of `body`.
    #[must_use]
    pub fn square_signed(&self, signature: Option<&str>, body: &[u8]) -> bool {
        let secrets = self.secrets();
        let (Some(key), Some(url)) = (&secrets.square, &secrets.square_url) else {
            return false;
        };
        let mut message = Vec::with_capacity(url.len() + body.len());
        message.extend_from_slice(url.as_bytes());
        message.extend_from_slice(body);
        verify(key, signature, &message)
    }

    /// Whether `signature` (base64) is the Shopify signature of `body`.
    #[must_use]
    pub fn shopify_signed(&self, signature: Option<&str>, body: &[u8]) -> bool {
        self.secrets()
            .shopify
            .as_ref()
            .is_some_and(|key| verify(key, signature, body))
    }
}

/// Constant-time check of a base64 HMAC-SHA256 tag.
fn verify(key: &hmac::Key, signature: Option<&str>, message: &[u8]) -> bool {
    let Some(tag) = signature.and_then(|s| data_encoding::BASE64.decode(s.trim().as_bytes()).ok())
    else {
        return false;
    };
    hmac::verify(key, message, &tag).is_ok()
}

/// The webhook server: only `POST /webhooks/square` and `POST /webhooks/shopify`; anything else
/// is a bare 404.
pub fn webhook_server(
    state: web::Data<AppState>,
    keys: Arc<WebhookKeys>,
    listener: std::net::TcpListener,
    tls: rustls::ServerConfig,
) -> std::io::Result<actix_web::dev::Server> {
    let keys = web::Data::from(keys);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(keys.clone())
            .app_data(web::PayloadConfig::default().limit(MAX_BODY))
            .service(web::resource("/webhooks/square").route(web::post().to(square)))
            .service(web::resource("/webhooks/shopify").route(web::post().to(shopify)))
            .default_service(web::to(|| async { HttpResponse::NotFound().finish() }))
            .wrap(super::middleware::security_headers())
    })
    .disable_signals()
    .shutdown_timeout(10)
    .workers(1)
    .listen_rustls_0_23(listener, tls)?
    .run();
    Ok(server)
}

fn header<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// How a delivery ended, before it becomes the answer.
enum Delivery {
    /// 200 with `{"status": ...}`: `accepted`, `duplicate` or `ignored`.
    Answered(&'static str),
    /// Refused before reading the body: the answer and why.
    Refused(HttpResponse, &'static str),
}

/// The answer to a delivery, counted on the Sync page under `source`.
fn noted(
    state: &AppState,
    source: &'static str,
    delivery: Result<Delivery, WebError>,
) -> Result<HttpResponse, WebError> {
    let now = state.clock.now();
    let push = state.sync.push();
    match delivery {
        Ok(Delivery::Answered(status)) => {
            push.accepted(source, u64::from(status == "accepted"), now);
            Ok(answer(status))
        }
        Ok(Delivery::Refused(response, reason)) => {
            push.refused(source, reason, now);
            Ok(response)
        }
        Err(err) => {
            let reason = match &err {
                WebError::BadRequest(message) => message.clone(),
                _ => "failed on our side; the provider will send it again".to_owned(),
            };
            push.refused(source, &reason, now);
            Err(err)
        }
    }
}

/// 429 when the client address sent too many bad signatures for `provider` lately.
fn throttled(
    state: &AppState,
    keys: &WebhookKeys,
    req: &HttpRequest,
    provider: &'static str,
) -> Option<Delivery> {
    let address = super::signin::client_address(req);
    let wait = keys.throttle.retry_after(
        &format!("{provider}@{address}"),
        &address,
        state.clock.now(),
    )?;
    Some(Delivery::Refused(
        HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", wait.to_string()))
            .finish(),
        "too many bad signatures from one address; it waits",
    ))
}

/// 401 and a `webhook.rejected` entry; the failure counts toward the address's throttle.
async fn rejected(
    state: &AppState,
    keys: &WebhookKeys,
    req: &HttpRequest,
    provider: &'static str,
    signature_given: bool,
) -> Result<Delivery, WebError> {
    let reason = if signature_given {
        "signature does not match"
    } else {
        "signature missing"
    };
    tracing::warn!(provider, reason, "webhook refused");
    let address = super::signin::client_address(req);
    keys.throttle.failed(
        &format!("{provider}@{address}"),
        &address,
        state.clock.now(),
    );
    let event = Event::new(Action::WebhookRejected)
        .by(Actor::anonymous().from_address(address))
        .target("webhook", provider)
        .denied(reason);
    state.audit.record(event).await?;
    Ok(Delivery::Refused(
        HttpResponse::Unauthorized().finish(),
        reason,
    ))
}

/// The throttle, then the signature in header `name`: the refusal when the delivery stops
/// here, `None` when it is signed.
async fn refusal(
    state: &AppState,
    keys: &WebhookKeys,
    req: &HttpRequest,
    provider: &'static str,
    name: &str,
    signed: impl FnOnce(Option<&str>) -> bool,
) -> Result<Option<Delivery>, WebError> {
    if let Some(wait) = throttled(state, keys, req, provider) {
        return Ok(Some(wait));
    }
    let signature = header(req, name);
    if signed(signature) {
        return Ok(None);
    }
    rejected(state, keys, req, provider, signature.is_some())
        .await
        .map(Some)
}

fn answer(status: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::OK).json(serde_json::json!({ "status": status }))
}

/// `POST /webhooks/shopify`.
pub async fn shopify(
    state: web::Data<AppState>,
    keys: web::Data<WebhookKeys>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let delivery = shopify_delivery(&state, &keys, &req, &body).await;
    noted(&state, crate::sync::push::SHOPIFY_WEBHOOK, delivery)
}

async fn shopify_delivery(
    state: &AppState,
    keys: &WebhookKeys,
    req: &HttpRequest,
    body: &[u8],
) -> Result<Delivery, WebError> {
    if let Some(refusal) = refusal(
        state,
        keys,
        req,
        "shopify",
        "x-shopify-hmac-sha256",
        |signature| keys.shopify_signed(signature, body),
    )
    .await?
    {
        return Ok(refusal);
    }
    let Some(id) = header(req, "x-shopify-webhook-id").filter(|id| valid_id(id)) else {
        return Err(WebError::BadRequest(
            "X-Shopify-Webhook-Id is missing or invalid".into(),
        ));
    };
    let seen = format!("shopify:{id}");
    if already_seen(state, &seen)? {
        return Ok(Delivery::Answered("duplicate"));
    }
    if header(req, "x-shopify-topic") != Some("orders/create") {
        mark_seen(state, &seen).await?;
        return Ok(Delivery::Answered("ignored"));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| WebError::BadRequest("the body is not JSON".into()))?;
    let transaction =
        shopify_order(&value, &keys.secrets().store_code).map_err(WebError::BadRequest)?;
    ingest(state, req, transaction, "webhook:shopify").await?;
    mark_seen(state, &seen).await?;
    Ok(Delivery::Answered("accepted"))
}

/// `POST /webhooks/square`.
pub async fn square(
    state: web::Data<AppState>,
    keys: web::Data<WebhookKeys>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let delivery = square_delivery(&state, &keys, &req, &body).await;
    noted(&state, crate::sync::push::SQUARE_WEBHOOK, delivery)
}

async fn square_delivery(
    state: &AppState,
    keys: &WebhookKeys,
    req: &HttpRequest,
    body: &[u8],
) -> Result<Delivery, WebError> {
    if let Some(refusal) = refusal(
        state,
        keys,
        req,
        "square",
        "x-square-hmacsha256-signature",
        |signature| keys.square_signed(signature, body),
    )
    .await?
    {
        return Ok(refusal);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| WebError::BadRequest("the body is not JSON".into()))?;
    let Some(id) = value["event_id"].as_str().filter(|id| valid_id(id)) else {
        return Err(WebError::BadRequest(
            "event_id is missing or invalid".into(),
        ));
    };
    let seen = format!("square:{id}");
    if already_seen(state, &seen)? {
        return Ok(Delivery::Answered("duplicate"));
    }
    let kind = value["type"].as_str().unwrap_or_default();
    let payment = &value["data"]["object"]["payment"];
    let completed = kind.starts_with("payment.") && payment["status"].as_str() == Some("COMPLETED");
    if !completed {
        mark_seen(state, &seen).await?;
        return Ok(Delivery::Answered("ignored"));
    }
    let transaction =
        square_payment(payment, &keys.secrets().store_code).map_err(WebError::BadRequest)?;
    ingest(state, req, transaction, "webhook:square").await?;
    mark_seen(state, &seen).await?;
    Ok(Delivery::Answered("accepted"))
}

/// Event ids: 1 to 200 visible ASCII characters.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 200 && id.bytes().all(|b| b.is_ascii_graphic())
}

fn already_seen(state: &AppState, key: &str) -> Result<bool, WebError> {
    Ok(state
        .store
        .get_json::<Value>(WEBHOOK_EVENTS, key.as_bytes())?
        .is_some())
}

/// Records the event id; one recorded meanwhile by a concurrent delivery is fine.
async fn mark_seen(state: &AppState, key: &str) -> Result<(), WebError> {
    let record = serde_json::json!({ "at": state.clock.now().to_string() });
    let mut set = ChangeSet::new();
    set.insert_new(
        WEBHOOK_EVENTS,
        key.as_bytes().to_vec(),
        serde_json::to_vec(&record).map_err(|e| WebError::Internal(e.to_string()))?,
    );
    match state.store.commit(set).await {
        Ok(()) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

async fn ingest(
    state: &AppState,
    req: &HttpRequest,
    transaction: SaleTransaction,
    source: &str,
) -> Result<(), WebError> {
    let actor = Actor::system(source).from_address(super::signin::client_address(req));
    state
        .ingest
        .ingest(vec![transaction], actor, source, None)
        .await
        .map_err(super::inventory::web_error)?;
    Ok(())
}

/// The sequence number of an order id: the id itself when it is a number, else 53 bits of its
/// SHA-256 (exact in JSON numbers).
#[must_use]
pub fn sequence_of(id: &str) -> u64 {
    if let Ok(n) = id.parse::<u64>() {
        return n;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first) >> 11
}

/// Business day and local time of an RFC 3339 `created_at`, as the provider wrote it.
fn when(created_at: Option<&str>) -> Result<(Date, DateTime), String> {
    let text = created_at.ok_or("created_at is missing")?;
    let civil = text
        .get(..19)
        .and_then(|t| t.parse::<DateTime>().ok())
        .ok_or("created_at is not a date and time")?;
    Ok((civil.date(), civil))
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if valid_id(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn amount(value: &Value, digits: u32, field: &str) -> Result<i64, String> {
    match value {
        Value::String(s) => parse_decimal(s, digits).map_err(|e| format!("{field}: {e}")),
        Value::Null => Ok(0),
        _ => Err(format!("{field} is not a decimal string")),
    }
}

/// A Shopify order (the body of `orders/create`, or the same wrapped in `{"order": ...}`).
pub fn shopify_order(value: &Value, store_code: &str) -> Result<SaleTransaction, String> {
    let order = value.get("order").unwrap_or(value);
    let id = id_text(&order["id"]).ok_or("the order has no id")?;
    let currency = order["currency"]
        .as_str()
        .ok_or("the order has no currency")?
        .to_uppercase();
    let digits = minor_digits(&currency);
    let (day, at) = when(order["created_at"].as_str())?;
    let mut lines = Vec::new();
    for (i, item) in order["line_items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let sku = match item["sku"].as_str().map(str::trim) {
            Some(sku) if !sku.is_empty() => sku.to_owned(),
            _ => format!(
                "shopify-variant-{}",
                id_text(&item["variant_id"]).ok_or("a line item has neither SKU nor variant")?
            ),
        };
        let quantity = item["quantity"]
            .as_i64()
            .ok_or("a line item has no quantity")?;
        let unit_price = amount(&item["price"], digits, "price")?;
        lines.push(SaleLine {
            line_no: u32::try_from(i + 1).unwrap_or(u32::MAX),
            sku,
            gtin: None,
            description: item["title"].as_str().unwrap_or_default().to_owned(),
            quantity_milli: quantity.saturating_mul(1000),
            unit_price,
            extended: unit_price.saturating_mul(quantity),
            discount: amount(&item["total_discount"], digits, "total_discount")?,
            discount_codes: Vec::new(),
            returned: false,
            voided: false,
        });
    }
    let total = amount(&order["total_price"], digits, "total_price")?;
    let email = order["email"]
        .as_str()
        .or_else(|| order["customer"]["email"].as_str())
        .filter(|e| !e.trim().is_empty())
        .map(str::to_owned);
    Ok(SaleTransaction {
        key: TransactionKey {
            store: store_code.to_owned(),
            register: "web".into(),
            business_day: day,
            sequence: sequence_of(&id),
        },
        kind: TransactionKind::Sale,
        currency,
        operator: None,
        started_at: Some(at),
        ended_at: Some(at),
        lines,
        tenders: vec![Tender {
            kind: "Online".into(),
            amount: total,
            change: 0,
            card_masked: None,
        }],
        total: Some(total),
        customer: CustomerRefs {
            email,
            ..CustomerRefs::default()
        },
        extensions: Vec::new(),
    })
}

/// A completed Square payment (`data.object.payment`), keyed by its order.
pub fn square_payment(payment: &Value, store_code: &str) -> Result<SaleTransaction, String> {
    let id = id_text(&payment["order_id"])
        .or_else(|| id_text(&payment["id"]))
        .ok_or("the payment has no order_id")?;
    let money = &payment["amount_money"];
    let currency = money["currency"]
        .as_str()
        .ok_or("amount_money has no currency")?
        .to_uppercase();
    let total = money["amount"]
        .as_i64()
        .ok_or("amount_money has no amount")?;
    let (day, at) = when(payment["created_at"].as_str())?;
    let kind = match payment["source_type"].as_str() {
        Some("CARD") => "CreditDebit",
        Some("CASH") => "Cash",
        _ => "Other",
    };
    Ok(SaleTransaction {
        key: TransactionKey {
            store: store_code.to_owned(),
            register: "square".into(),
            business_day: day,
            sequence: sequence_of(&id),
        },
        kind: TransactionKind::Sale,
        currency,
        operator: None,
        started_at: Some(at),
        ended_at: Some(at),
        lines: Vec::new(),
        tenders: vec![Tender {
            kind: kind.into(),
            amount: total,
            change: 0,
            card_masked: None,
        }],
        total: Some(total),
        customer: CustomerRefs {
            email: payment["buyer_email_address"]
                .as_str()
                .filter(|e| !e.trim().is_empty())
                .map(str::to_owned),
            ..CustomerRefs::default()
        },
        extensions: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_secret_takes_effect_at_reload_and_a_bad_file_keeps_the_old_one() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("shopify.secret");
        let config = WebhooksConfig {
            shopify_secret_file: Some(file.clone()),
            ..WebhooksConfig::default()
        };
        let sign = |secret: &[u8], body: &[u8]| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
            data_encoding::BASE64.encode(hmac::sign(&key, body).as_ref())
        };
        std::fs::write(&file, "first-secret\n").unwrap();
        let keys = WebhookKeys::load(&config).unwrap();
        let old = sign(b"first-secret", b"{}");
        let new = sign(b"second-secret", b"{}");
        assert!(keys.shopify_signed(Some(&old), b"{}"));

        std::fs::write(&file, "second-secret\n").unwrap();
        keys.reload(&config).unwrap();
        assert!(keys.shopify_signed(Some(&new), b"{}"));
        assert!(!keys.shopify_signed(Some(&old), b"{}"));

        std::fs::write(&file, "  \n").unwrap();
        let err = keys.reload(&config).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        assert!(keys.shopify_signed(Some(&new), b"{}"));
    }

    // From square/square-nodejs-sdk test/utilities/webhooksHelper.test.ts (MIT licence).
    const SQUARE_URL: &str = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9";
    const SQUARE_KEY: &[u8] = b"Ibxx_5AKakO-3qeNVR61Dw";
    const SQUARE_BODY: &str = r#"{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z","data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}"#;
    const SQUARE_SIGNATURE: &str = "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4=";

    #[test]
    fn square_signature_of_the_sdk_vector() {
        let keys = WebhookKeys::with_secrets(Some((SQUARE_KEY, SQUARE_URL)), None);
        assert!(keys.square_signed(Some(SQUARE_SIGNATURE), SQUARE_BODY.as_bytes()));
        assert!(!keys.square_signed(None, SQUARE_BODY.as_bytes()));
        assert!(!keys.square_signed(Some("not base64!"), SQUARE_BODY.as_bytes()));
        let mut tampered = SQUARE_BODY.to_owned();
        tampered.push(' ');
        assert!(!keys.square_signed(Some(SQUARE_SIGNATURE), tampered.as_bytes()));
        let other_url =
            WebhookKeys::with_secrets(Some((SQUARE_KEY, "https://example.com/x")), None);
        assert!(!other_url.square_signed(Some(SQUARE_SIGNATURE), SQUARE_BODY.as_bytes()));
        // Without a Shopify secret, nothing is accepted there.
        assert!(!keys.shopify_signed(Some(SQUARE_SIGNATURE), SQUARE_BODY.as_bytes()));
    }

    #[test]
    fn square_payment_maps_to_one_tender_keyed_by_order() {
        let payment = serde_json::json!({
            "id": "pay-1", "order_id": "ord-ABC", "status": "COMPLETED",
            "amount_money": {"amount": 1250, "currency": "usd"},
            "created_at": "2024-03-05T10:11:12.000Z", "source_type": "CARD",
            "card_details": {"card": {"last_4": "1111"}},
        });
        let t = square_payment(&payment, "S001").unwrap();
        assert_eq!(t.key.register, "square");
        assert_eq!(t.key.business_day.to_string(), "2024-03-05");
        assert_eq!(t.key.sequence, sequence_of("ord-ABC"));
        assert!(t.key.sequence < 1 << 53);
        assert_eq!(t.currency, "USD");
        assert_eq!(t.tenders[0].amount, 1250);
        assert_eq!(t.tenders[0].card_masked, None);
    }

    #[test]
    fn shopify_order_maps_lines_and_email() {
        let order = serde_json::json!({
            "id": 450_789_469, "email": "bob@example.com", "currency": "USD",
            "created_at": "2008-01-10T11:00:00-05:00", "total_price": "409.94",
            "line_items": [
                {"sku": "IPOD2008GREEN", "title": "IPod", "quantity": 2, "price": "199.00", "total_discount": "0.00"},
                {"sku": "", "variant_id": 7, "title": "Other", "quantity": 1, "price": "11.94"}
            ]
        });
        let t = shopify_order(&order, "S001").unwrap();
        assert_eq!(t.key.sequence, 450_789_469);
        assert_eq!(t.key.business_day.to_string(), "2008-01-10");
        assert_eq!(t.lines[0].extended, 39_800);
        assert_eq!(t.lines[1].sku, "shopify-variant-7");
        assert_eq!(t.total, Some(40_994));
        assert_eq!(t.customer.email.as_deref(), Some("bob@example.com"));
    }
}
