//! The customers API as an integration uses it (a scoped token over HTTPS), and the customer
//! files managers use: the import upload page and the CSV export.

use clientele::domain::account::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::web::{TestApp, csrf_of, plain_client, post_form};

/// Creates an integration token with `scopes` through the admin page; returns its secret.
async fn token(app: &TestApp, admin: &reqwest::Client, name: &str, scopes: &[&str]) -> String {
    let mut fields = vec![("name", name)];
    fields.extend(scopes.iter().map(|s| ("scopes", *s)));
    let page = post_form(admin, app, "/admin/tokens", "/admin/tokens", &fields)
        .await
        .text()
        .await
        .unwrap();
    let marker = "id=\"token-secret\">";
    let start = page.find(marker).expect("the token page shows the secret") + marker.len();
    page[start..].split('<').next().unwrap().to_owned()
}

/// An admin's browser and a read-write token.
async fn integration(app: &TestApp) -> (reqwest::Client, String) {
    let admin = app.signed_in("chief", Role::Admin).await;
    let secret = token(
        app,
        &admin,
        "crm-sync",
        &["read:customers", "write:customers"],
    )
    .await;
    (admin, secret)
}

fn entries(app: &TestApp) -> Vec<clientele::audit::entry::Entry> {
    app.audit()
        .entries(1, u64::MAX, false)
        .map(Result::unwrap)
        .collect()
}

fn count(app: &TestApp, action: &str) -> usize {
    entries(app).iter().filter(|e| e.action == action).count()
}

fn ada() -> Value {
    json!({
        "given_name": "Ada",
        "family_name": "Lovelace",
        "emails": ["Ada.Lovelace@Example.com"],
        "phones": ["+44 20 7946 0018"],
        "loyalty_ids": ["CL000000042"],
        "addresses": [{"line1": "12 St James's Square", "postcode": "SW1Y 4JH", "city": "London", "country": "GB"}]
    })
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = request.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

#[tokio::test]
async fn a_scoped_token_creates_reads_changes_lists_and_searches_customers() {
    let app = TestApp::start().await;
    let (admin, secret) = integration(&app).await;
    let api = plain_client(app.dir.path());

    let (status, created) = send(
        api.post(app.url("/api/v1/customers"))
            .bearer_auth(&secret)
            .json(&ada()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["emails"][0], "ada.lovelace@example.com");
    assert_eq!(created["phones"][0], "+442079460018");

    // Reading is an audited read by the token.
    let viewed_before = count(&app, "customer.viewed");
    let (status, read) = send(
        api.get(app.url(&format!("/api/v1/customers/{id}")))
            .bearer_auth(&secret),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["family_name"], "Lovelace");
    let viewed: Vec<_> = entries(&app)
        .into_iter()
        .filter(|e| e.action == "customer.viewed")
        .collect();
    assert_eq!(viewed.len(), viewed_before + 1);
    let last = viewed.last().unwrap();
    assert_eq!(last.target_id.as_deref(), Some(id.as_str()));
    assert_eq!(last.actor_name, "crm-sync");

    // A patch changes only what it sends.
    let (status, patched) = send(
        api.patch(app.url(&format!("/api/v1/customers/{id}")))
            .bearer_auth(&secret)
            .json(&json!({"family_name": "King", "tags": ["VIP"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["family_name"], "King");
    assert_eq!(patched["given_name"], "Ada");
    assert_eq!(patched["tags"], json!(["vip"]));
    assert_eq!(patched["emails"][0], "ada.lovelace@example.com");
    let updated = entries(&app)
        .into_iter()
        .rfind(|e| e.action == "customer.updated")
        .unwrap();
    assert_eq!(updated.fields, ["family_name", "tags"]);

    // Search by the new name and by a misspelling; the old name finds nobody.
    let searched_before = count(&app, "customer.searched");
    for q in ["King", "Kng", "ada.lovelace@example.com"] {
        let (status, found) = send(
            api.get(app.url("/api/v1/customers"))
                .query(&[("q", q)])
                .bearer_auth(&secret),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{q}: {found}");
        assert_eq!(found["items"][0]["id"], id.as_str(), "{q}: {found}");
        assert_eq!(found["items"][0]["name"], "Ada King");
    }
    let (_, none) = send(
        api.get(app.url("/api/v1/customers"))
            .query(&[("q", "Lovelace")])
            .bearer_auth(&secret),
    )
    .await;
    assert_eq!(none["items"], json!([]));
    assert_eq!(count(&app, "customer.searched"), searched_before + 4);
    let trail = serde_json::to_string(&entries(&app)).unwrap();
    assert!(!trail.contains("Kng"), "a query reached the audit trail");

    // The plain list pages through everyone in id order with a cursor.
    for n in 0..3 {
        let (status, _) = send(
            api.post(app.url("/api/v1/customers"))
                .bearer_auth(&secret)
                .json(&json!({"given_name": "Guest", "family_name": format!("Number{n}")})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "3".to_owned())];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let (status, page) = send(
            api.get(app.url("/api/v1/customers"))
                .query(&query)
                .bearer_auth(&secret),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert!(seen.contains(&id));

    // A token without the write scope reads but cannot write; one without the read scope
    // cannot read.
    let reader = token(&app, &admin, "reader", &["read:customers"]).await;
    let other = token(&app, &admin, "stock", &["read:locations"]).await;
    let (status, _) = send(
        api.get(app.url(&format!("/api/v1/customers/{id}")))
            .bearer_auth(&reader),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, refused) = send(
        api.patch(app.url(&format!("/api/v1/customers/{id}")))
            .bearer_auth(&reader)
            .json(&json!({"family_name": "Byron"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(refused["error"]["code"], "forbidden");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("write:customers")
    );
    for path in [
        format!("/api/v1/customers/{id}"),
        "/api/v1/customers?q=King".to_owned(),
        "/api/v1/customers/lookup?email=ada.lovelace@example.com".to_owned(),
    ] {
        let (status, _) = send(api.get(app.url(&path)).bearer_auth(&other)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let (_, still) = send(
        api.get(app.url(&format!("/api/v1/customers/{id}")))
            .bearer_auth(&secret),
    )
    .await;
    assert_eq!(still["family_name"], "King");
    app.stop().await;
}

#[tokio::test]
async fn an_upsert_by_external_id_is_idempotent() {
    let app = TestApp::start().await;
    let (_admin, secret) = integration(&app).await;
    let api = plain_client(app.dir.path());
    let put = |body: Value| {
        api.put(app.url("/api/v1/customers/external/Shopify/C-1001"))
            .bearer_auth(&secret)
            .json(&body)
    };
    let body = json!({
        "given_name": "Grace",
        "family_name": "Hopper",
        "emails": ["grace@example.com"],
        "loyalty_ids": ["CL777"]
    });

    let (status, first) = send(put(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["outcome"], "created");
    let id = first["id"].as_str().unwrap().to_owned();
    let head = app.audit().head().unwrap().seq;

    let (status, second) = send(put(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["outcome"], "unchanged");
    assert_eq!(second["id"], id.as_str());
    assert_eq!(
        app.audit().head().unwrap().seq,
        head,
        "the same body again must write nothing, not even an audit entry"
    );

    // The profile carries the path's external id, normalised.
    let (_, read) = send(
        api.get(app.url(&format!("/api/v1/customers/{id}")))
            .bearer_auth(&secret),
    )
    .await;
    assert_eq!(
        read["external_ids"],
        json!([{"source": "shopify", "id": "C-1001"}])
    );
    let timeline_before = count(&app, "customer.updated");

    // A changed body updates the same customer.
    let mut changed = body.clone();
    changed["family_name"] = json!("Murray Hopper");
    let (status, third) = send(put(changed.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(third["outcome"], "updated");
    assert_eq!(third["id"], id.as_str());
    assert_eq!(count(&app, "customer.updated"), timeline_before + 1);
    let (_, again) = send(put(changed)).await;
    assert_eq!(again["outcome"], "unchanged");

    // Looked up by the external id as another system types it.
    let (status, found) = send(
        api.get(app.url("/api/v1/customers/lookup"))
            .query(&[("external_source", "SHOPIFY"), ("external_id", " C-1001 ")])
            .bearer_auth(&secret),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["family_name"], "Murray Hopper");
    app.stop().await;
}

#[tokio::test]
async fn a_phone_typed_with_spaces_and_a_leading_zero_finds_the_customer() {
    let app = TestApp::start().await;
    let (admin, secret) = integration(&app).await;
    // A London store: national numbers are read as British ones.
    let store = post_form(
        &admin,
        &app,
        "/admin/locations/new",
        "/admin/locations",
        &[
            ("code", "LON1"),
            ("name", "London Mayfair"),
            ("kind", "store"),
            ("time_zone", "Europe/London"),
            ("country", "GB"),
            ("currency", "GBP"),
        ],
    )
    .await;
    assert_eq!(store.status(), StatusCode::SEE_OTHER);
    let api = plain_client(app.dir.path());
    let (status, created) = send(
        api.post(app.url("/api/v1/customers"))
            .bearer_auth(&secret)
            .json(&ada()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap();

    let viewed_before = count(&app, "customer.viewed");
    for phone in ["020 7946 0018", " 020 7946 0018 ", "+44 20 7946 0018"] {
        let (status, found) = send(
            api.get(app.url("/api/v1/customers/lookup"))
                .query(&[("phone", phone)])
                .bearer_auth(&secret),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{phone}: {found}");
        assert_eq!(found["id"], id, "{phone}");
    }
    assert_eq!(count(&app, "customer.viewed"), viewed_before + 3);

    let (status, missing) = send(
        api.get(app.url("/api/v1/customers/lookup"))
            .query(&[("phone", "020 7946 0019")])
            .bearer_auth(&secret),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "not_found");
    let (status, both) = send(
        api.get(app.url("/api/v1/customers/lookup"))
            .query(&[
                ("phone", "020 7946 0018"),
                ("email", "ada.lovelace@example.com"),
            ])
            .bearer_auth(&secret),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(both["error"]["fields"][0]["field"], "query");
    app.stop().await;
}

#[tokio::test]
async fn invalid_bodies_get_422_naming_each_field_and_nothing_is_written() {
    let app = TestApp::start().await;
    let (_admin, secret) = integration(&app).await;
    let api = plain_client(app.dir.path());
    let head = app.audit().head().unwrap().seq;

    let (status, refused) = send(
        api.post(app.url("/api/v1/customers"))
            .bearer_auth(&secret)
            .json(&json!({
                "given_name": "Ada",
                "emails": ["ada@example.com", "not an email"],
                "phones": ["call me"],
                "birthday": "1815-13-45",
                "addresses": [{"city": "London", "country": "England"}],
                "preferred_channel": "fax"
            })),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid");
    assert!(refused["error"]["request_id"].is_string());
    let fields: Vec<&str> = refused["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    for expected in [
        "emails[1]",
        "phones[0]",
        "birthday",
        "addresses[0].country",
        "preferred_channel",
    ] {
        assert!(
            fields.contains(&expected),
            "{expected} missing in {fields:?}"
        );
    }
    for f in refused["error"]["fields"].as_array().unwrap() {
        assert!(!f["message"].as_str().unwrap().is_empty());
    }

    // A value of the wrong type or an unknown field names the field too.
    let (status, typed) = send(
        api.post(app.url("/api/v1/customers"))
            .bearer_auth(&secret)
            .json(&json!({"given_name": 5})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(typed["error"]["fields"][0]["field"], "given_name");
    let (status, unknown) = send(
        api.post(app.url("/api/v1/customers"))
            .bearer_auth(&secret)
            .json(&json!({"given_name": "Ada", "shoe_size": 38})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        unknown["error"]["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("shoe_size")
    );

    // A consent without its parts.
    let (_, created) = send(
        api.post(app.url("/api/v1/customers"))
            .bearer_auth(&secret)
            .json(&ada()),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let head_after_create = app.audit().head().unwrap().seq;
    assert!(head_after_create > head);
    let (status, consent) = send(
        api.post(app.url(&format!("/api/v1/customers/{id}/consents")))
            .bearer_auth(&secret)
            .json(&json!({"channel": "fax", "source": ""})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = consent["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["channel", "granted", "source", "wording_version"]);
    assert_eq!(app.audit().head().unwrap().seq, head_after_create);

    // And a good one is recorded.
    let (status, recorded) = send(
        api.post(app.url(&format!("/api/v1/customers/{id}/consents")))
            .bearer_auth(&secret)
            .json(&json!({"channel": "email", "granted": true, "source": "web", "wording_version": "v3"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{recorded}");
    let (_, read) = send(
        api.get(app.url(&format!("/api/v1/customers/{id}")))
            .bearer_auth(&secret),
    )
    .await;
    assert_eq!(read["consents"][0]["channel"], "email");
    assert_eq!(read["consents"][0]["granted"], true);
    assert_eq!(count(&app, "customer.consent_changed"), 1);

    // The identity of someone else is a conflict that names the field.
    let (status, taken) = send(
        api.post(app.url("/api/v1/customers"))
            .bearer_auth(&secret)
            .json(&json!({"given_name": "Other", "emails": ["ADA.lovelace@example.com"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        taken["error"]["message"]
            .as_str()
            .unwrap()
            .contains("email")
    );
    app.stop().await;
}

#[tokio::test]
async fn two_customers_are_merged_through_the_api() {
    let app = TestApp::start().await;
    let (_admin, secret) = integration(&app).await;
    let api = plain_client(app.dir.path());
    let create = |body: Value| {
        api.post(app.url("/api/v1/customers"))
            .bearer_auth(&secret)
            .json(&body)
    };
    let (_, a) = send(create(ada())).await;
    let (_, b) = send(create(json!({
        "given_name": "Ada",
        "family_name": "Lovelase",
        "emails": ["countess@example.com"]
    })))
    .await;
    let (survivor, merged) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

    let (status, bad) = send(
        api.post(app.url("/api/v1/customers/merge"))
            .bearer_auth(&secret)
            .json(&json!({"survivor": survivor, "merged": "nobody"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad["error"]["fields"][0]["field"], "merged");

    let (status, record) = send(
        api.post(app.url("/api/v1/customers/merge"))
            .bearer_auth(&secret)
            .json(&json!({"survivor": survivor, "merged": merged})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["survivor"], survivor);
    assert_eq!(record["merged"], merged);
    assert_eq!(count(&app, "customer.merged"), 1);

    let (_, kept) = send(
        api.get(app.url(&format!("/api/v1/customers/{survivor}")))
            .bearer_auth(&secret),
    )
    .await;
    assert!(
        kept["emails"]
            .as_array()
            .unwrap()
            .contains(&json!("countess@example.com"))
    );
    let (status, gone) = send(
        api.get(app.url(&format!("/api/v1/customers/{merged}")))
            .bearer_auth(&secret),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        gone["error"]["message"]
            .as_str()
            .unwrap()
            .contains(survivor)
    );
    let (_, found) = send(
        api.get(app.url("/api/v1/customers/lookup"))
            .query(&[("email", "countess@example.com")])
            .bearer_auth(&secret),
    )
    .await;
    assert_eq!(found["id"], survivor);
    app.stop().await;
}

/// A multipart body as a browser sends the import form.
fn upload_body(csrf: Option<&str>, csv: &str) -> (String, Vec<u8>) {
    let boundary = "----clienteletest7MA4YWxkTrZu0gW";
    let csrf_part = csrf.map_or_else(String::new, |csrf| {
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n")
    });
    let body = csrf_part
        + &(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"customers.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n{csv}\r\n--{boundary}--\r\n"
        ));
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
    )
}

async fn upload(
    app: &TestApp,
    client: &reqwest::Client,
    csrf: Option<&str>,
    csv: &str,
) -> (StatusCode, String) {
    let (content_type, body) = upload_body(csrf, csv);
    let res = client
        .post(app.url("/customers/import"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

#[tokio::test]
async fn the_import_page_reports_a_bad_row_by_line_and_field_and_imports_nothing() {
    let app = TestApp::start().await;
    let manager = app.signed_in("boss", Role::Manager).await;
    let page = manager
        .get(app.url("/customers/import"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("enctype=\"multipart/form-data\""));
    let csrf = csrf_of(&page);

    let bad = "given_name,family_name,email,phone,country\n\
               Ada,Lovelace,ada@example.com,+44 20 7946 0018,GB\n\
               Charles,Babbage,not-an-email,,GB\n\
               Mary,Somerville,mary@example.com,,GB\n";
    let (status, body) = upload(&app, &manager, Some(&csrf), bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("Nothing was imported"), "{body}");
    let table = body
        .split("id=\"rejections\"")
        .nth(1)
        .expect("a table of rejected rows");
    assert!(
        table.contains("<td>3</td><td>email</td>"),
        "line 3, email: {table}"
    );
    assert!(!table.contains("<td>2</td>") && !table.contains("<td>4</td>"));
    assert!(!body.contains("not-an-email"), "the value is not echoed");

    // Nothing of the good rows was written.
    let admin = app.signed_in("chief", Role::Admin).await;
    let secret = token(&app, &admin, "reader", &["read:customers"]).await;
    let api = plain_client(app.dir.path());
    let (_, list) = send(api.get(app.url("/api/v1/customers")).bearer_auth(&secret)).await;
    assert_eq!(list["items"], json!([]), "{list}");
    assert_eq!(count(&app, "customer.imported"), 0);

    // Without the form's CSRF field the upload is refused before anything is read.
    let good = "given_name,family_name,email\nAda,Lovelace,ada@example.com\nMary,Somerville,mary@example.com\n";
    let (status, _) = upload(&app, &manager, None, good).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // An associate cannot import.
    let associate = app.signed_in("counter", Role::Associate).await;
    let (status, _) = upload(&app, &associate, Some(&csrf), good).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The fixed file goes in whole, and the report says so.
    let (status, body) = upload(&app, &manager, Some(&csrf), good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("id=\"count-created\">2<"), "{body}");
    let (_, list) = send(api.get(app.url("/api/v1/customers")).bearer_auth(&secret)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(count(&app, "customer.imported"), 1);
    app.stop().await;
}

#[tokio::test]
async fn the_csv_export_is_for_managers_and_audited() {
    let app = TestApp::start().await;
    let (_admin, secret) = integration(&app).await;
    let api = plain_client(app.dir.path());
    let (status, _) = send(
        api.post(app.url("/api/v1/customers"))
            .bearer_auth(&secret)
            .json(&ada()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let associate = app.signed_in("counter", Role::Associate).await;
    let refused = associate
        .get(app.url("/customers/export.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(count(&app, "customer.exported"), 0);

    let manager = app.signed_in("boss", Role::Manager).await;
    let res = manager
        .get(app.url("/customers/export.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let csv = res.text().await.unwrap();
    assert!(csv.lines().count() == 2, "{csv}");
    assert!(csv.contains("Lovelace") && csv.contains("ada.lovelace@example.com"));
    let exported: Vec<_> = entries(&app)
        .into_iter()
        .filter(|e| e.action == "customer.exported")
        .collect();
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0].actor_name, "boss");
    assert!(
        exported[0].reason.starts_with("1 customers"),
        "{}",
        exported[0].reason
    );
    app.stop().await;
}

#[tokio::test]
async fn every_customers_endpoint_is_in_the_openapi_document() {
    let app = TestApp::start().await;
    let doc: Value = app
        .client()
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method) in [
        ("/api/v1/customers", "get"),
        ("/api/v1/customers", "post"),
        ("/api/v1/customers/{id}", "get"),
        ("/api/v1/customers/{id}", "patch"),
        ("/api/v1/customers/lookup", "get"),
        ("/api/v1/customers/external/{source}/{id}", "put"),
        ("/api/v1/customers/{id}/consents", "post"),
        ("/api/v1/customers/merge", "post"),
    ] {
        let operation = &doc["paths"][path][method];
        assert!(
            !operation["summary"].as_str().unwrap_or_default().is_empty(),
            "{method} {path} has no summary"
        );
    }
    assert_eq!(
        doc["paths"]["/api/v1/customers"]["post"]["security"][0]["bearer"][0],
        "write:customers"
    );
    app.stop().await;
}
