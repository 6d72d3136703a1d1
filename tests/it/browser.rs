//! Browser tests in headless Chromium, driven through `WebDriver` (`chromedriver`).
//!
//! They need Debian's `chromium` and `chromium-driver` packages. On a machine without them the
//! test says so and passes; with `BROWSER_TESTS_REQUIRED=1` (set by `.ci/run`) a missing
//! browser is a failure instead, so CI always runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clientele::domain::account::Role;
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use rustix::process::{Pid, Signal, kill_process_group};
use serde_json::json;

use crate::web::{TestApp, current_code, post_form};

/// Debian's paths (packages `chromium` and `chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Set to 1 to turn a missing browser into a failure instead of a skip.
const REQUIRE_VAR: &str = "BROWSER_TESTS_REQUIRED";
const NOT_INSTALLED: &str =
    "chromium/chromedriver not installed; install Debian's chromium and chromium-driver";

/// How long to poll for an element, a URL or a state before failing.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

#[tokio::test]
async fn sign_in_change_password_enrol_browse_and_use_shortcuts() {
    let started = Instant::now();
    let Some(driver) = Chromedriver::start_or_skip().await else {
        return;
    };
    let app = TestApp::start().await;
    let one_time = app
        .add_user("root", Role::Admin, None)
        .await
        .expect("a one-time password");
    let b = driver.session().await;

    // First sign-in with the one-time password.
    b.goto(&app.url("/login")).await.unwrap();
    assert_eq!(text(&wait_for(&b, "h1").await).await, "Sign in");
    fill(&b, "login", "root").await;
    fill(&b, "password", &one_time).await;
    submit(&b, "/login").await;

    // The password must be changed first.
    wait_for_path(&b, "/account/password").await;
    let strong = "violet tractor hums at dawn";
    fill(&b, "current_password", &one_time).await;
    fill(&b, "new_password", strong).await;
    fill(&b, "confirm_password", strong).await;
    submit(&b, "/account/password").await;

    // Then an admin must enrol a second factor: type the key into "the app", then its code.
    wait_for_path(&b, "/account/second-factor").await;
    let secret = text(&wait_for(&b, "code#totp-secret").await).await;
    fill(&b, "code", &current_code(secret.trim())).await;
    submit(&b, "/account/second-factor").await;
    let codes = wait_for(&b, "#recovery-codes").await;
    let listed = codes.find_all(Locator::Css("li code")).await.unwrap();
    assert!(!listed.is_empty(), "no recovery codes shown");
    b.find(Locator::Css("#recovery-codes ~ p a[href='/']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(&b, "/").await;

    // Every entry of the main navigation opens a real page, not an error page.
    let mut hrefs = Vec::new();
    for link in b.find_all(Locator::Css("nav.mainnav a")).await.unwrap() {
        hrefs.push(
            link.attr("href")
                .await
                .unwrap()
                .expect("a nav link with an href"),
        );
    }
    for expected in [
        "/",
        "/admin/users",
        "/admin/locations",
        "/admin/tokens",
        "/account",
    ] {
        assert!(
            hrefs.iter().any(|h| h == expected),
            "{expected} missing from the navigation {hrefs:?}"
        );
    }
    for href in &hrefs {
        b.goto(&app.url(href)).await.unwrap();
        assert_eq!(path_of(&b).await, *href, "opening {href} redirected");
        let h1 = text(&wait_for(&b, "main h1").await).await;
        let status = h1
            .split_whitespace()
            .next()
            .and_then(|w| w.parse::<u16>().ok());
        assert!(
            !status.is_some_and(|s| (400..600).contains(&s)),
            "{href} shows an error page: {h1}"
        );
        let source = b.source().await.unwrap();
        for error in ["<h1>403", "<h1>404", "<h1>500"] {
            assert!(!source.contains(error), "{href} shows an error page");
        }
        let current = b
            .find(Locator::Css("nav.mainnav a[aria-current='page']"))
            .await
            .unwrap();
        assert_eq!(
            current.attr("href").await.unwrap().as_deref(),
            Some(&**href)
        );
    }

    // Keyboard: "?" opens the shortcut help, Escape closes it, "n" follows "New user".
    b.goto(&app.url("/admin/users")).await.unwrap();
    assert_eq!(text(&wait_for(&b, "main h1").await).await, "Users");
    let body = b.find(Locator::Css("body")).await.unwrap();
    // The shortcuts live in /static/app.js; without it no key below can work.
    // (The page has finished loading here, deferred scripts included.)
    let loaded = b
        .execute(
            "return Boolean(window.Clientele && window.Clientele.shortcuts);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        loaded,
        json!(true),
        "the keyboard-shortcut script did not run: is /static/app.js served?"
    );
    body.send_keys("?").await.unwrap();
    let dialog = wait_for(&b, "[role='dialog']").await;
    let shown = &dialog;
    wait_until(&b, "the shortcut help to open", move || async move {
        shown.is_displayed().await.unwrap()
    })
    .await;
    let help = text(&dialog).await;
    for expected in [
        "Keyboard shortcuts",
        "Show or hide this list of shortcuts",
        "New user",
    ] {
        assert!(
            help.contains(expected),
            "{expected:?} missing from help: {help}"
        );
    }
    b.active_element()
        .await
        .unwrap()
        .send_keys(&Key::Escape)
        .await
        .unwrap();
    wait_until(&b, "the shortcut help to close", move || async move {
        !shown.is_displayed().await.unwrap()
    })
    .await;
    body.send_keys("n").await.unwrap();
    wait_for_path(&b, "/admin/users/new").await;
    wait_for(&b, "main h1").await;

    // Sign out from the user menu.
    b.find(Locator::XPath("//button[normalize-space()='Sign out']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(&b, "/login").await;
    b.goto(&app.url("/account")).await.unwrap();
    assert_eq!(
        path_of(&b).await,
        "/login",
        "still signed in after signing out"
    );

    driver.close(b).await;
    app.stop().await;
    drop(driver);
    println!("browser test took {:.1?}", started.elapsed());
}

#[tokio::test]
async fn counter_look_up_by_phone_then_merge_duplicates_and_undo() {
    let started = Instant::now();
    let Some(driver) = Chromedriver::start_or_skip().await else {
        return;
    };
    let app = TestApp::start().await;
    // A London store, so that national numbers typed at the counter are read as British ones.
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
    assert_eq!(store.status(), reqwest::StatusCode::SEE_OTHER, "no store");
    let one_time = app
        .add_user("floor", Role::Manager, None)
        .await
        .expect("a one-time password");
    let b = driver.session().await;

    // Sign in as a manager: one-time password, then a new password (no second factor).
    b.goto(&app.url("/login")).await.unwrap();
    fill(&b, "login", "floor").await;
    fill(&b, "password", &one_time).await;
    submit(&b, "/login").await;
    wait_for_path(&b, "/account/password").await;
    let strong = "amber kettle sings at noon";
    fill(&b, "current_password", &one_time).await;
    fill(&b, "new_password", strong).await;
    fill(&b, "confirm_password", strong).await;
    submit(&b, "/account/password").await;
    // No step left for a manager: the account page, signed in.
    wait_for_path(&b, "/account").await;

    // Two profiles of one person, planted through the new-customer form: same name and postcode.
    let first = new_customer(
        &b,
        &app,
        &[
            ("given_name", "Ada"),
            ("family_name", "Lovelace"),
            ("emails[0]", "ada.lovelace@example.com"),
            ("phones[0]", "+44 20 7946 0018"),
            ("addresses[0].postcode", "SW1Y 4JH"),
            ("addresses[0].country", "GB"),
        ],
    )
    .await;
    let second = new_customer(
        &b,
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
    assert_ne!(first, second);

    // The counter look-up: "/" focuses the search, the phone is typed as said over the counter.
    b.goto(&app.url("/customers/lookup")).await.unwrap();
    assert_eq!(
        text(&wait_for(&b, "main h1").await).await,
        "Counter look-up"
    );
    let loaded = b
        .execute(
            "document.activeElement && document.activeElement.blur(); \
             return Boolean(window.Clientele && window.Clientele.shortcuts);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        loaded,
        json!(true),
        "the keyboard-shortcut script did not run"
    );
    b.find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys("/")
        .await
        .unwrap();
    let search = &wait_for(&b, "input#q[name='q']").await;
    let client = &b;
    wait_until(&b, "\"/\" to focus the search field", move || async move {
        client.active_element().await.unwrap().element_id() == search.element_id()
    })
    .await;
    let typed = "020 7946 0018";
    b.active_element()
        .await
        .unwrap()
        .send_keys(&format!("{typed}{}", &*Key::Enter))
        .await
        .unwrap();
    let count = text(&wait_for(&b, "#result-count").await).await;
    assert_eq!(count, "1 customer found", "searching {typed:?}");
    let profile = format!("/customers/{first}");
    let hit = wait_for(&b, "#results li a").await;
    assert_eq!(hit.attr("href").await.unwrap().as_deref(), Some(&*profile));
    assert!(text(&hit).await.contains("Ada Lovelace"));
    // From the search box, ArrowDown moves to the first result and Enter opens it.
    let search = wait_for(&b, "#q").await;
    search.click().await.unwrap();
    search.send_keys(&Key::Down).await.unwrap();
    let focused = b.active_element().await.unwrap();
    assert_eq!(
        focused.attr("href").await.unwrap().as_deref(),
        Some(&*profile),
        "ArrowDown from the search box focuses the first result"
    );
    focused.send_keys(&Key::Enter).await.unwrap();
    wait_for_path(&b, &profile).await;
    assert_eq!(text(&wait_for(&b, "main h1").await).await, "Ada Lovelace");
    let identity = text(&wait_for(&b, "#identity").await).await;
    assert!(
        identity.contains("ada.lovelace@example.com") && identity.contains("+442079460018"),
        "profile shows {identity}"
    );

    // Duplicates: scan now, then compare the planted pair side by side.
    b.goto(&app.url("/customers/duplicates")).await.unwrap();
    assert_eq!(
        text(&wait_for(&b, "main h1").await).await,
        "Duplicate customers"
    );
    let pair_link = |a: &str, z: &str| {
        format!(
            "#duplicates a[href='/customers/duplicates/{a}/{z}'], \
             #duplicates a[href='/customers/duplicates/{z}/{a}']"
        )
    };
    let compare_css = pair_link(&first, &second);
    if b.find(Locator::Css(&compare_css)).await.is_err() {
        submit(&b, "/customers/duplicates/scan").await;
        wait_for_path(&b, "/customers/duplicates/scan").await;
        let flash = text(&wait_for(&b, ".flash").await).await;
        assert!(flash.starts_with("Scanned"), "scan said {flash}");
    }
    wait_for(&b, &compare_css).await.click().await.unwrap();
    assert_eq!(text(&wait_for(&b, "main h1").await).await, "Same person?");
    let compared = path_of(&b).await;
    assert!(
        compared.contains(&first) && compared.contains(&second),
        "compare page {compared}"
    );
    let table = text(&wait_for(&b, "table#compare").await).await;
    assert!(
        table.contains("ada.lovelace@example.com") && table.contains("countess@example.org"),
        "compare table {table}"
    );

    // Merge, keeping the left profile.
    wait_for(&b, "button#keep-left")
        .await
        .click()
        .await
        .unwrap();
    wait_until(&b, "the merge page", move || async move {
        path_of(client).await.starts_with("/customers/merges/")
    })
    .await;
    let merge_page = path_of(&b).await;
    assert_eq!(text(&wait_for(&b, "main h1").await).await, "Merge");
    assert_eq!(text(&wait_for(&b, "#merge-status").await).await, "merged");
    let facts = text(&wait_for(&b, "#merge").await).await;
    assert!(
        facts.contains(&first) && facts.contains(&second),
        "merge page shows {facts}"
    );

    // Undo: both profiles are back, each with its own email.
    wait_for(&b, "button#undo").await.click().await.unwrap();
    wait_for_path(&b, &merge_page).await;
    wait_until(&b, "the merge to show as undone", move || async move {
        match client.find(Locator::Css("#merge-status")).await {
            Ok(e) => e.text().await.unwrap_or_default() == "undone",
            Err(_) => false,
        }
    })
    .await;
    assert!(
        b.find(Locator::Css("button#undo")).await.is_err(),
        "an undone merge still offers undo"
    );
    for (id, email) in [
        (&first, "ada.lovelace@example.com"),
        (&second, "countess@example.org"),
    ] {
        let path = format!("/customers/{id}");
        b.goto(&app.url(&path)).await.unwrap();
        assert_eq!(path_of(&b).await, path, "{path} redirected after the undo");
        assert_eq!(text(&wait_for(&b, "main h1").await).await, "Ada Lovelace");
        let identity = text(&wait_for(&b, "#identity").await).await;
        assert!(identity.contains(email), "{path} shows {identity}");
    }

    driver.close(b).await;
    app.stop().await;
    drop(driver);
    println!("browser test took {:.1?}", started.elapsed());
}

/// Fills the new-customer form with `fields` and saves it; returns the new customer's id.
async fn new_customer(b: &Client, app: &TestApp, fields: &[(&str, &str)]) -> String {
    b.goto(&app.url("/customers/new")).await.unwrap();
    wait_for(b, "form#customer-form").await;
    for (name, value) in fields {
        fill(b, name, value).await;
    }
    submit(b, "/customers").await;
    wait_until(b, "the new customer's page", move || async move {
        let path = path_of(b).await;
        path.starts_with("/customers/") && path != "/customers/new"
    })
    .await;
    let path = path_of(b).await;
    let id = path.trim_start_matches("/customers/").to_owned();
    assert!(!id.is_empty() && !id.contains('/'), "not a profile: {path}");
    id
}

/// Waits until an element matching `css` is on the page.
async fn wait_for(b: &Client, css: &str) -> Element {
    match b
        .wait()
        .at_most(WAIT)
        .every(POLL)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element,
        Err(e) => panic!("{css} did not appear: {e}\n{}", page_summary(b).await),
    }
}

/// Waits until the browser is on `path` (ignoring the query string).
async fn wait_for_path(b: &Client, path: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let current = path_of(b).await;
        if current == path {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected to reach {path}, still on {current}\n{}",
            page_summary(b).await
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `check` until it holds.
async fn wait_until<F, Fut>(b: &Client, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            page_summary(b).await
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn path_of(b: &Client) -> String {
    b.current_url().await.unwrap().path().to_owned()
}

async fn text(element: &Element) -> String {
    element.text().await.unwrap()
}

/// Types into the form field named `name`, replacing what is there.
async fn fill(b: &Client, name: &str, value: &str) {
    let field = wait_for(b, &format!("[name='{name}']")).await;
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

/// Clicks the submit button of the form posting to `action`.
async fn submit(b: &Client, action: &str) {
    wait_for(b, &format!("form[action='{action}'] button[type='submit']"))
        .await
        .click()
        .await
        .unwrap();
}

/// Where the browser is and the start of what it shows, for failure messages.
async fn page_summary(b: &Client) -> String {
    let url = b
        .current_url()
        .await
        .map_or_else(|e| format!("(no URL: {e})"), |u| u.to_string());
    let source = b.source().await.unwrap_or_default();
    let start: String = source.chars().take(3000).collect();
    format!("page {url}:\n{start}")
}

/// A chromedriver on a free loopback port, with a fresh Chromium profile. Dropping it ends
/// chromedriver and every browser process it started (they share its process group).
struct Chromedriver {
    child: Child,
    port: u16,
    /// Holds the Chromium profile and chromedriver's log.
    dir: tempfile::TempDir,
    /// The open browser session, ended by Drop if the test fails before closing it.
    session: Mutex<Option<String>>,
}

impl Chromedriver {
    /// Starts chromedriver, or returns `None` after saying why when Chromium is not installed
    /// (and panics instead when `BROWSER_TESTS_REQUIRED=1`).
    async fn start_or_skip() -> Option<Self> {
        if !(Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file()) {
            assert!(
                std::env::var(REQUIRE_VAR).as_deref() != Ok("1"),
                "browser test failed: {NOT_INSTALLED} ({REQUIRE_VAR}=1 requires the browser)"
            );
            // Straight to stderr, past the test harness's capture: a skip must be seen.
            let _ = writeln!(std::io::stderr(), "browser test skipped: {NOT_INSTALLED}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // A port taken between choosing and binding it makes chromedriver exit; try again.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log_path(dir.path()).display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group, so that Drop can end the browsers it starts too.
                .process_group(0)
                .spawn()
                .unwrap();
            match wait_ready(&mut child, port).await {
                Ok(()) => {
                    return Some(Self {
                        child,
                        port,
                        dir,
                        session: Mutex::new(None),
                    });
                }
                Err(e) => {
                    last_error = e;
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("chromedriver did not start: {last_error}");
    }

    /// A new headless Chromium session that accepts the appliance's self-signed certificate.
    async fn session(&self) -> Client {
        let profile = self.dir.path().join("profile");
        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("acceptInsecureCerts".into(), json!(true));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-quic",
                    "--no-proxy-server",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no Chromium session: {e}\n{}",
                    log_tail(&log_path(self.dir.path()))
                )
            });
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(WAIT),
                Some(Duration::from_secs(30)),
                Some(Duration::ZERO),
            ))
            .await
            .unwrap();
        *self.session.lock().unwrap() = client.session_id().await.unwrap();
        client
    }

    /// Ends the browser session (Chromium quits).
    async fn close(&self, client: Client) {
        client.close().await.unwrap();
        self.session.lock().unwrap().take();
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "chromedriver log (end):\n{}",
                log_tail(&log_path(self.dir.path()))
            );
        }
        // A test that failed midway left its session open: ending it lets chromedriver stop
        // Chromium and reap its processes, instead of leaving them to the signals below.
        if let Some(id) = self.session.get_mut().ok().and_then(Option::take) {
            delete_session(self.port, &id);
        }
        let group = Pid::from_child(&self.child);
        let _ = kill_process_group(group, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(POLL);
        }
        // Whatever is left of the group (a browser that ignored TERM) goes too.
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.child.wait();
    }
}

/// `DELETE /session/{id}`, blocking (Drop cannot await); waits for the answer so that
/// Chromium has quit when it returns.
fn delete_session(port: u16, id: &str) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut status_line = [0; 12];
        let _ = stream.read_exact(&mut status_line);
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("chromedriver.log")
}

/// The last lines of chromedriver's log.
fn log_tail(path: &Path) -> String {
    let Ok(file) = std::fs::File::open(path) else {
        return "(no log)".into();
    };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Polls chromedriver's `/status` until it reports ready.
async fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/status");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("chromedriver exited: {status}"));
        }
        if let Ok(res) = http.get(&url).send().await
            && let Ok(status) = res.json::<serde_json::Value>().await
            && status["value"]["ready"] == json!(true)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("no ready /status on port {port} within {WAIT:?}"));
        }
        tokio::time::sleep(POLL).await;
    }
}
