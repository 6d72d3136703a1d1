//! Customer pages as the people at the counter, in the back office and in compliance use them:
//! create, find (phone as typed, misspelt name, loyalty card), open (an audited read), edit,
//! consent, note, merge and undo, subject access export and erasure.

use clientele::domain::account::Role;
use reqwest::StatusCode;

use crate::web::{TestApp, post_form};

/// Creates a customer through the form; returns its id.
async fn create(client: &reqwest::Client, app: &TestApp, fields: &[(&str, &str)]) -> String {
    let res = post_form(client, app, "/customers/new", "/customers", fields).await;
    if res.status() != StatusCode::SEE_OTHER {
        let status = res.status();
        let body = res.text().await.unwrap();
        let errors: Vec<&str> = body
            .split("class=\"field-error\"")
            .skip(1)
            .map(|rest| rest.split("</p>").next().unwrap_or(""))
            .collect();
        panic!("customer not created ({status}): {errors:?}");
    }
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    location.trim_start_matches("/customers/").to_owned()
}

async fn page(client: &reqwest::Client, app: &TestApp, path: &str) -> (StatusCode, String) {
    let res = client.get(app.url(path)).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

fn ada() -> Vec<(&'static str, &'static str)> {
    vec![
        ("given_name", "Ada"),
        ("family_name", "Lovelace"),
        ("emails[0]", "Ada.Lovelace@Example.com"),
        ("phones[0]", "020 7946 0018"),
        ("loyalty_ids[0]", "CL000000042"),
        ("addresses[0].line1", "12 St James's Square"),
        ("addresses[0].postcode", "SW1Y 4JH"),
        ("addresses[0].city", "London"),
        ("addresses[0].country", "GB"),
    ]
}

#[tokio::test]
async fn an_associate_finds_a_customer_by_phone_misspelt_name_and_loyalty_card() {
    let app = TestApp::start().await;
    // A London store: national numbers typed at its counter are British ones.
    let admin = app.signed_in("chief", Role::Admin).await;
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
    let associate = app.signed_in("counter", Role::Associate).await;
    let id = create(&associate, &app, &ada()).await;

    for query in [
        "020 7946 0018",
        "+44 20 7946 0018",
        "(020) 7946-0018",
        "Lovelase",
        "lov",
        "CL000000042",
        "ada.lovelace@example.com",
    ] {
        let (status, body) = page(
            &associate,
            &app,
            &format!("/customers/lookup?q={}", urlencode(query)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert!(
            body.contains(&format!("/customers/{id}")),
            "{query:?} did not find the customer"
        );
    }
    let (_, body) = page(&associate, &app, "/customers?q=Babbage").await;
    assert!(body.contains("0 customers found"), "{body}");
    assert!(!body.contains(&format!("/customers/{id}")));

    // Searches are recorded without what was typed; opening the profile is a recorded read.
    let (status, body) = page(&associate, &app, &format!("/customers/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("+442079460018") && body.contains("ada.lovelace@example.com"));
    let entries = all_entries(&app);
    let viewed: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "customer.viewed")
        .collect();
    assert_eq!(viewed.len(), 1);
    assert_eq!(viewed[0].target_id.as_deref(), Some(id.as_str()));
    assert_eq!(viewed[0].actor_name, "counter");
    assert!(entries.iter().any(|e| e.action == "customer.searched"));
    let trail = serde_json::to_string(&entries).unwrap();
    for secret in ["Lovelase", "7946", "lovelace@"] {
        assert!(!trail.contains(secret), "{secret} reached the audit trail");
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_fields_are_marked_next_to_the_field_and_names_are_escaped() {
    let app = TestApp::start().await;
    let manager = app.signed_in("floor", Role::Manager).await;
    let res = post_form(
        &manager,
        &app,
        "/customers/new",
        "/customers",
        &[
            ("given_name", "Bob"),
            ("family_name", "Tables"),
            ("emails[0]", "not an email"),
            ("phones[0]", "12"),
            ("birthday", "2031-02-30"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = res.text().await.unwrap();
    for field in ["emails[0]-error", "phones[0]-error", "birthday-error"] {
        assert!(body.contains(field), "no message for {field}");
    }
    // What was typed stays in the form.
    assert!(body.contains("value=\"not an email\""));

    // HTML in a name is refused next to the field, and what was typed comes back escaped.
    let res = post_form(
        &manager,
        &app,
        "/customers/new",
        "/customers",
        &[
            ("given_name", "<script>alert(1)</script>"),
            ("family_name", "Smith"),
            ("emails[0]", "smith@example.com"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = res.text().await.unwrap();
    assert!(body.contains("given_name-error"));
    assert!(!body.contains("<script>alert(1)</script>"));
    assert!(body.contains("&#60;script&#62;") || body.contains("&lt;script&gt;"));
    app.stop().await;
}

#[tokio::test]
async fn a_manager_edits_records_consent_and_notes_then_merges_and_undoes() {
    let app = TestApp::start().await;
    let manager = app.signed_in("floor", Role::Manager).await;
    let first = create(&manager, &app, &ada()).await;
    let second = create(
        &manager,
        &app,
        &[
            ("given_name", "Ada"),
            ("family_name", "Lovelace"),
            ("emails[0]", "countess@example.org"),
            ("addresses[0].postcode", "SW1Y 4JH"),
            ("addresses[0].country", "GB"),
        ],
    )
    .await;

    // Edit: add a second email to the first profile.
    let edit = post_form(
        &manager,
        &app,
        &format!("/customers/{first}/edit"),
        &format!("/customers/{first}"),
        &[
            ("given_name", "Ada"),
            ("family_name", "King"),
            ("emails[0]", "ada.lovelace@example.com"),
            ("phones[0]", "+44 20 7946 0018"),
            ("loyalty_ids[0]", "CL000000042"),
            ("addresses[0].postcode", "SW1Y 4JH"),
            ("addresses[0].country", "GB"),
        ],
    )
    .await;
    assert_eq!(edit.status(), StatusCode::SEE_OTHER);
    let consent = post_form(
        &manager,
        &app,
        &format!("/customers/{first}"),
        &format!("/customers/{first}/consents"),
        &[
            ("channel", "email"),
            ("decision", "granted"),
            ("source", "counter"),
            ("wording_version", "2026-03"),
        ],
    )
    .await;
    assert_eq!(consent.status(), StatusCode::SEE_OTHER);
    let note = post_form(
        &manager,
        &app,
        &format!("/customers/{first}"),
        &format!("/customers/{first}/notes"),
        &[("note", "Prefers to be called in the afternoon")],
    )
    .await;
    assert_eq!(note.status(), StatusCode::SEE_OTHER);
    let (_, body) = page(&manager, &app, &format!("/customers/{first}")).await;
    assert!(body.contains("King"));
    assert!(body.contains("consent-granted") && body.contains("2026-03"));
    assert!(body.contains("Prefers to be called in the afternoon"));

    // Merge the second into the first: the second's page leads to the survivor, which now
    // holds both emails.
    let merge = post_form(
        &manager,
        &app,
        &format!("/customers/duplicates/{first}/{second}"),
        "/customers/merge",
        &[("survivor", &first), ("merged", &second)],
    )
    .await;
    assert_eq!(merge.status(), StatusCode::SEE_OTHER);
    let merge_page = merge.headers()["location"].to_str().unwrap().to_owned();
    let gone = manager
        .get(app.url(&format!("/customers/{second}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::SEE_OTHER);
    assert_eq!(gone.headers()["location"], format!("/customers/{first}"));
    let (_, body) = page(&manager, &app, &format!("/customers/{first}")).await;
    assert!(body.contains("countess@example.org") && body.contains("ada.lovelace@example.com"));

    let undo = post_form(
        &manager,
        &app,
        &merge_page,
        &format!("{merge_page}/undo"),
        &[],
    )
    .await;
    assert_eq!(undo.status(), StatusCode::SEE_OTHER);
    let (status, body) = page(&manager, &app, &format!("/customers/{second}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("countess@example.org"));
    let (_, body) = page(&manager, &app, &format!("/customers/{first}")).await;
    assert!(!body.contains("countess@example.org"));
    let actions: Vec<String> = app
        .audit()
        .entries(1, u64::MAX, false)
        .map(Result::unwrap)
        .map(|e| e.action)
        .collect();
    for action in ["customer.created", "customer.updated", "customer.merged"] {
        assert!(actions.iter().any(|a| a == action), "{action} not recorded");
    }
    app.stop().await;
}

#[tokio::test]
async fn compliance_exports_and_erases_and_the_customer_cannot_be_found_again() {
    let app = TestApp::start().await;
    let associate = app.signed_in("counter", Role::Associate).await;
    let officer = app.signed_in("officer", Role::Compliance).await;
    let id = create(&associate, &app, &ada()).await;

    let export = post_form(
        &officer,
        &app,
        &format!("/privacy/customers/{id}"),
        &format!("/privacy/customers/{id}/export"),
        &[],
    )
    .await;
    assert_eq!(export.status(), StatusCode::OK);
    let json: serde_json::Value = export.json().await.unwrap();
    assert!(json.to_string().contains("ada.lovelace@example.com"));

    let refused = post_form(
        &officer,
        &app,
        &format!("/privacy/customers/{id}"),
        &format!("/privacy/customers/{id}/erase"),
        &[("confirm", "yes")],
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let erased = post_form(
        &officer,
        &app,
        &format!("/privacy/customers/{id}"),
        &format!("/privacy/customers/{id}/erase"),
        &[("confirm", "ERASE")],
    )
    .await;
    assert_eq!(erased.status(), StatusCode::SEE_OTHER);

    for query in [
        "020 7946 0018",
        "ada.lovelace@example.com",
        "CL000000042",
        "Lovelace",
    ] {
        let (_, body) = page(
            &associate,
            &app,
            &format!("/customers?q={}", urlencode(query)),
        )
        .await;
        assert!(
            !body.contains(&format!("/customers/{id}")),
            "{query} still finds them"
        );
    }
    let (status, body) = page(&associate, &app, &format!("/customers/{id}")).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(!body.contains("Lovelace"));
    app.stop().await;
}

fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("q", text)])
        .unwrap()
        .trim_start_matches("q=")
        .to_owned()
}

fn all_entries(app: &TestApp) -> Vec<clientele::audit::entry::Entry> {
    app.audit()
        .entries(1, u64::MAX, false)
        .map(Result::unwrap)
        .collect()
}
