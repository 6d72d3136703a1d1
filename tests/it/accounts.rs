//! Accounts, sessions, CSRF, throttling, roles and tokens, over real HTTPS.

use clientele::domain::account::Role;
use clientele::web::guard::Policy;
use clientele::web::routes;
use reqwest::StatusCode;

use crate::web::{TestApp, csrf_of, enrol, login_with, post_form};

#[tokio::test]
async fn first_sign_in_forces_a_new_password_and_a_second_factor() {
    let app = TestApp::start().await;
    let one_time = app
        .add_user("root", Role::Admin, None)
        .await
        .expect("a one-time password");
    let client = app.client();

    let res = login_with(&client, &app, "root", &one_time).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/account/password");
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-clientele="))
        .unwrap();
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing from {cookie}"
        );
    }
    assert!(!cookie.to_lowercase().contains("domain="), "{cookie}");

    // Nothing else opens until the password is changed.
    let home = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(home.headers()["location"], "/account/password");

    let weak = post_form(
        &client,
        &app,
        "/account/password",
        "/account/password",
        &[
            ("current_password", &one_time),
            ("new_password", "password1234"),
            ("confirm_password", "password1234"),
        ],
    )
    .await;
    assert_eq!(weak.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(weak.text().await.unwrap().contains("field-error"));

    let strong = "violet tractor hums at dawn";
    let ok = post_form(
        &client,
        &app,
        "/account/password",
        "/account/password",
        &[
            ("current_password", &one_time),
            ("new_password", strong),
            ("confirm_password", strong),
        ],
    )
    .await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        ok.headers()["location"],
        "/account/second-factor",
        "admins must enrol a second factor"
    );
    let (secret, enrolment_code) = enrol(&client, &app).await;
    let home = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    assert_eq!(home.headers()["cache-control"], "no-store");

    // Sign out, then the old cookie is worthless.
    let page = client
        .get(app.url("/account"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let logout = client
        .post(app.url("/logout"))
        .form(&[("csrf", csrf_of(&page))])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.headers()["location"], "/login");
    let raw = cookie.split(';').next().unwrap().to_owned();
    let replay = crate::web::plain_client(app.dir.path())
        .get(app.url("/"))
        .header("cookie", &raw)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::SEE_OTHER);
    assert_eq!(replay.headers()["location"], "/login");

    // The next sign-in asks for the second factor; a wrong code is refused.
    let client = app.client();
    let res = login_with(&client, &app, "root", strong).await;
    assert_eq!(res.headers()["location"], "/login/second-factor");
    let bad = post_form(
        &client,
        &app,
        "/login/second-factor",
        "/login/second-factor",
        &[("code", "000000")],
    )
    .await;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    // The code that confirmed enrolment cannot be replayed.
    let replay = post_form(
        &client,
        &app,
        "/login/second-factor",
        "/login/second-factor",
        &[("code", &enrolment_code)],
    )
    .await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    // The next step's code is fresh whatever the clock did since enrolment, and within the
    // one-step drift the server allows.
    let fresh = post_form(
        &client,
        &app,
        "/login/second-factor",
        "/login/second-factor",
        &[("code", &crate::web::code_in(&secret, 30))],
    )
    .await;
    assert_eq!(
        fresh.status(),
        StatusCode::SEE_OTHER,
        "a fresh TOTP code must be accepted"
    );
    assert_eq!(
        client.get(app.url("/")).send().await.unwrap().status(),
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn forms_without_the_session_token_or_from_another_site_are_refused() {
    let app = TestApp::start().await;
    let admin = app.signed_in("boss", Role::Admin).await;
    let fields = [
        ("code", "S001"),
        ("name", "Main street"),
        ("kind", "store"),
        ("time_zone", "Europe/Paris"),
        ("country", "FR"),
        ("currency", "EUR"),
    ];

    let missing = admin
        .post(app.url("/admin/locations"))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    let mut forged = fields.to_vec();
    forged.push(("csrf", "forged-token"));
    assert_eq!(
        admin
            .post(app.url("/admin/locations"))
            .form(&forged)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );

    let page = admin
        .get(app.url("/admin/locations/new"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut good = fields.to_vec();
    let csrf = csrf_of(&page);
    good.push(("csrf", &csrf));
    let cross = admin
        .post(app.url("/admin/locations"))
        .header("Origin", "https://evil.example")
        .form(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let cross = admin
        .post(app.url("/admin/locations"))
        .header("Sec-Fetch-Site", "cross-site")
        .form(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);

    // A browser that hides the origin (Origin: null under no-referrer) but says same-origin.
    let ok = admin
        .post(app.url("/admin/locations"))
        .header("Origin", "null")
        .header("Sec-Fetch-Site", "same-origin")
        .form(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let list = admin
        .get(app.url("/admin/locations"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("Main street"));

    // A GET never changes state: the revoke address only accepts POST.
    let get = admin
        .get(app.url("/admin/tokens/01ARZ3NDEKTSV4RRFFQ69G5FAV/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    app.stop().await;
}

#[tokio::test]
async fn sign_in_is_throttled_and_does_not_tell_unknown_users_apart() {
    let app = TestApp::start().await;
    app.add_user(
        "clerk",
        Role::Associate,
        Some("correct horse battery staple"),
    )
    .await;
    let client = app.client();
    let wrong = login_with(&client, &app, "clerk", "not the password at all").await;
    let unknown = login_with(&client, &app, "nobody-here", "not the password at all").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let (wrong, unknown) = (wrong.text().await.unwrap(), unknown.text().await.unwrap());
    assert!(
        wrong.contains("Wrong login or password.") && unknown.contains("Wrong login or password.")
    );

    for _ in 0..3 {
        login_with(&client, &app, "clerk", "still not the password").await;
    }
    let throttled = login_with(&client, &app, "clerk", "correct horse battery staple").await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    app.stop().await;
}

#[tokio::test]
async fn every_route_enforces_its_policy() {
    let app = TestApp::start().await;
    let anonymous = app.client();
    let mut staff = Vec::new();
    for (login, role) in [
        ("counter", Role::Associate),
        ("floor", Role::Manager),
        ("chief", Role::Admin),
        ("officer", Role::Compliance),
    ] {
        staff.push((role, app.signed_in(login, role).await));
    }

    for endpoint in routes::table() {
        let method = reqwest::Method::from_bytes(endpoint.method.as_str().as_bytes()).unwrap();
        let path = endpoint
            .path
            .replace("{id}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .replace("{a}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .replace("{b}", "01ARZ3NDEKTSV4RRFFQ69G5FAW")
            .replace("{sku}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .replace("{location}", "S001")
            .replace("{handle}", "00")
            .replace("{name}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .replace("{file}", "app.css");
        let request = |client: &reqwest::Client| client.request(method.clone(), app.url(&path));
        let status = request(&anonymous).send().await.unwrap().status();
        match endpoint.policy {
            Policy::Public => assert_ne!(
                status,
                StatusCode::UNAUTHORIZED,
                "{} {path}",
                endpoint.method
            ),
            Policy::Api { .. } => assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{} {path}",
                endpoint.method
            ),
            Policy::Staff(_) | Policy::SignInStep => {
                let expected = if method == reqwest::Method::GET {
                    StatusCode::SEE_OTHER
                } else {
                    StatusCode::UNAUTHORIZED
                };
                assert_eq!(status, expected, "anonymous {} {path}", endpoint.method);
            }
        }
        if let Policy::Staff(roles) = endpoint.policy
            && method == reqwest::Method::GET
            && !path.contains("01ARZ")
        {
            for (role, client) in &staff {
                let status = request(client).send().await.unwrap().status();
                let expected = if roles.contains(role) {
                    StatusCode::OK
                } else {
                    StatusCode::FORBIDDEN
                };
                assert_eq!(status, expected, "{role:?} GET {path}");
            }
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn store_scope_holds_in_the_api_even_when_guessing_ids() {
    let app = TestApp::start().await;
    let admin = app.signed_in("chief", Role::Admin).await;
    for (code, name) in [("A001", "Store A"), ("B001", "Store B")] {
        let res = post_form(
            &admin,
            &app,
            "/admin/locations/new",
            "/admin/locations",
            &[
                ("code", code),
                ("name", name),
                ("kind", "store"),
                ("time_zone", "Europe/Paris"),
                ("country", "FR"),
                ("currency", "EUR"),
            ],
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
    }
    let all: serde_json::Value = admin
        .get(app.url("/api/v1/locations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);

    let manager = app.signed_in("manager-a", Role::Manager).await;
    // Give the manager store A only, through the admin form.
    let users = admin
        .get(app.url("/admin/users"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let user_link = users
        .split("/admin/users/")
        .find(|s| s.contains("manager-a"))
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let res = post_form(
        &admin,
        &app,
        &format!("/admin/users/{user_link}"),
        &format!("/admin/users/{user_link}"),
        &[
            ("display_name", "Manager A"),
            ("role", "manager"),
            ("stores", &ids[0]),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    let mine: serde_json::Value = manager
        .get(app.url("/api/v1/locations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert_eq!(mine["items"][0]["code"], "A001");
    assert_eq!(
        manager
            .get(app.url(&format!("/api/v1/locations/{}", ids[0])))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let other = manager
        .get(app.url(&format!("/api/v1/locations/{}", ids[1])))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        StatusCode::NOT_FOUND,
        "store B must look like it does not exist"
    );
    let body: serde_json::Value = other.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["request_id"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn tokens_carry_scopes_and_stop_working_when_revoked() {
    let app = TestApp::start().await;
    let admin = app.signed_in("chief", Role::Admin).await;
    let create = |name: &'static str, scope: &'static str| {
        let admin = admin.clone();
        let app = &app;
        async move {
            let page = post_form(
                &admin,
                app,
                "/admin/tokens",
                "/admin/tokens",
                &[("name", name), ("scopes", scope)],
            )
            .await
            .text()
            .await
            .unwrap();
            let start = page.find("id=\"token-secret\">").unwrap() + "id=\"token-secret\">".len();
            page[start..].split('<').next().unwrap().to_owned()
        }
    };
    let reader = create("reader", "read:locations").await;
    let ingest = create("pos", "ingest:pos").await;
    let plain = crate::web::plain_client(app.dir.path());

    let ok = plain
        .get(app.url("/api/v1/locations"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let me: serde_json::Value = plain
        .get(app.url("/api/v1/me"))
        .bearer_auth(&ingest)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["kind"], "token");
    let denied = plain
        .get(app.url("/api/v1/locations"))
        .bearer_auth(&ingest)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let unknown = plain
        .get(app.url("/api/v1/locations"))
        .bearer_auth("clt_notarealtoken")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    let page = admin
        .get(app.url("/admin/tokens"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains(&reader), "the secret is shown only once");
    // Revoke the reader token: its row names it, and its revoke form carries its id.
    let row = page
        .split("<tr>")
        .find(|row| row.contains("<td>reader</td>"))
        .expect("a row for the reader token");
    let id = row
        .split("/admin/tokens/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let res = post_form(
        &admin,
        &app,
        "/admin/tokens",
        &format!("/admin/tokens/{id}/revoke"),
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let revoked = plain
        .get(app.url("/api/v1/locations"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(
        revoked.status(),
        StatusCode::UNAUTHORIZED,
        "the revoked token stops working"
    );
    let other = plain
        .get(app.url("/api/v1/me"))
        .bearer_auth(&ingest)
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "the other token keeps working"
    );
    app.stop().await;
}

#[tokio::test]
async fn names_are_escaped_and_the_api_is_documented() {
    let app = TestApp::start().await;
    let admin = app.signed_in("chief", Role::Admin).await;
    let res = post_form(
        &admin,
        &app,
        "/admin/users/new",
        "/admin/users",
        &[
            ("login", "mallory"),
            ("display_name", "<script>alert(1)</script>"),
            ("role", "associate"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let list = admin
        .get(app.url("/admin/users"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        list.contains("&lt;script&gt;alert(1)&lt;/script&gt;") || list.contains("&#60;script&#62;"),
        "{list}"
    );
    assert!(!list.contains("<script>alert(1)"));

    let doc: serde_json::Value = admin
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for endpoint in routes::table()
        .into_iter()
        .filter(|e| e.path.starts_with("/api/v1/"))
    {
        let method = endpoint.method.as_str().to_lowercase();
        assert!(
            doc["paths"][endpoint.path][&method].is_object(),
            "{method} {} missing from OpenAPI",
            endpoint.path
        );
    }

    let big = "x".repeat(64 * 1024);
    let page = admin
        .get(app.url("/admin/locations/new"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let res = admin
        .post(app.url("/admin/locations"))
        .form(&[("csrf", csrf_of(&page).as_str()), ("name", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    app.stop().await;
}

#[tokio::test]
async fn idle_and_absolute_timeouts_end_sessions() {
    use clientele::clock::{ManualClock, SystemClock, SystemRandom};
    use jiff::SignedDuration;
    use std::sync::Arc;

    let clock = Arc::new(ManualClock::new(clientele::clock::Clock::now(&SystemClock)));
    let deps = clientele::app::Deps {
        clock: clock.clone(),
        random: Arc::new(SystemRandom::new()),
    };
    let app = TestApp::start_with(deps).await;
    let client = app.signed_in("clerk", Role::Associate).await;
    assert_eq!(
        client.get(app.url("/")).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Active every 20 minutes: the idle timeout (30 min) never fires...
    for _ in 0..5 {
        clock.advance(SignedDuration::from_mins(20));
        assert_eq!(
            client.get(app.url("/")).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    // ...but 31 idle minutes end the session.
    clock.advance(SignedDuration::from_mins(31));
    let res = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/login");

    // The absolute timeout (12 h) ends even an active session.
    let client = app.client();
    crate::web::login_with(&client, &app, "clerk", "correct horse battery staple").await;
    for _ in 0..37 {
        clock.advance(SignedDuration::from_mins(20));
        client.get(app.url("/")).send().await.unwrap();
    }
    let res = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(
        res.headers()["location"],
        "/login",
        "12 h after sign-in the session is over"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_damaged_record_is_a_500_with_a_request_id_and_no_internals() {
    let app = TestApp::start().await;
    let admin = app.signed_in("chief", Role::Admin).await;
    let res = post_form(
        &admin,
        &app,
        "/admin/locations/new",
        "/admin/locations",
        &[
            ("code", "S001"),
            ("name", "Main street"),
            ("kind", "store"),
            ("time_zone", "Europe/Paris"),
            ("country", "FR"),
            ("currency", "EUR"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // Damage the location record on disk while the appliance is stopped.
    let dir = app.dir.path().to_owned();
    let mut app = app;
    if let Some(running) = app.app.take() {
        running.stop().await;
    }
    {
        let db = crate::support::raw_sled(&dir);
        let data = db.open_tree("data").unwrap();
        let prefix = clientele::store::Table::new("locations").store_key(b"");
        let (key, value) = data.scan_prefix(&prefix).next().unwrap().unwrap();
        let mut damaged = value.to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x40;
        data.insert(key, damaged).unwrap();
        db.flush().unwrap();
    }
    let app = app.restart().await;

    let res = admin
        .get(app.url("/admin/locations"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    for header in [
        "content-security-policy",
        "strict-transport-security",
        "x-content-type-options",
        "referrer-policy",
        "x-request-id",
    ] {
        assert!(
            res.headers().contains_key(header),
            "{header} missing on a 500"
        );
    }
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let html = res.text().await.unwrap();
    assert!(html.contains(&request_id), "the page shows the request id");
    assert!(
        !html.contains("integrity") && !html.contains("locations/"),
        "no internal error text: {html}"
    );

    let api = admin
        .get(app.url("/api/v1/locations"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal");
    app.stop().await;
}
