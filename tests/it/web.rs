//! An in-process appliance for web tests: a temporary store, an OS-chosen port, and a browser-like
//! client (cookie jar, the appliance's own certificate trusted, no automatic redirects).

use std::path::Path;

use clientele::app::{self, Deps, RunningApp};
use clientele::auth::totp;
use clientele::clock::SystemClock;
use clientele::control::{self, Request, Response};
use clientele::domain::account::Role;
use reqwest::StatusCode;

use crate::support::{config, init_store, key_source};

/// A running appliance on a temporary folder.
pub struct TestApp {
    pub app: Option<RunningApp>,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(Deps::system()).await
    }

    /// Starts on the given clock and random source.
    pub async fn start_with(deps: Deps) -> Self {
        let dir = tempfile::tempdir().unwrap();
        init_store(dir.path());
        Self::launch(dir, deps).await
    }

    /// Starts on a new folder, with the test configuration changed by `change` (which gets
    /// the folder, for paths inside it).
    pub async fn start_configured(
        change: impl FnOnce(&mut clientele::config::Config, &std::path::Path),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        init_store(dir.path());
        let mut config = config(dir.path());
        change(&mut config, dir.path());
        Self::launch_with(dir, config, Deps::system()).await
    }

    /// Starts the appliance on an initialised folder.
    async fn launch(dir: tempfile::TempDir, deps: Deps) -> Self {
        let config = config(dir.path());
        Self::launch_with(dir, config, deps).await
    }

    async fn launch_with(
        dir: tempfile::TempDir,
        config: clientele::config::Config,
        deps: Deps,
    ) -> Self {
        let app = app::start(config, deps, key_source(dir.path()))
            .await
            .unwrap();
        let base = format!("https://localhost:{}", app.https_addr.port());
        Self {
            app: Some(app),
            base,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The running appliance's audit trail.
    pub fn audit(&self) -> &clientele::audit::Audit {
        &self.app.as_ref().unwrap().audit
    }

    /// A fresh browser-like client.
    pub fn client(&self) -> reqwest::Client {
        client_for(self.dir.path())
    }

    /// Creates a user through the same path as `clientele user add`; returns the one-time
    /// password when none was given.
    pub async fn add_user(
        &self,
        login: &str,
        role: Role,
        password: Option<&str>,
    ) -> Option<String> {
        let store = self.app.as_ref().unwrap().store.clone();
        let request = Request::AddUser {
            login: login.into(),
            display_name: format!("{login} name"),
            role,
            password: password.map(str::to_owned),
        };
        match control::answer(request, store).await {
            Response::UserAdded {
                one_time_password, ..
            } => one_time_password,
            other => panic!("user not added: {other:?}"),
        }
    }

    /// Signs in and completes every sign-in step (second factor enrolment for roles that need
    /// it); returns the client, now fully signed in.
    pub async fn signed_in(&self, login: &str, role: Role) -> reqwest::Client {
        let password = "correct horse battery staple";
        self.add_user(login, role, Some(password)).await;
        let client = self.client();
        let res = login_with(&client, self, login, password).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        if res.headers()["location"] == "/account/second-factor" {
            enrol(&client, self).await;
        }
        client
    }

    /// Stops the appliance and starts it again on the same folder (sessions survive).
    pub async fn restart(mut self) -> Self {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        Self::launch(self.dir, Deps::system()).await
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }
}

/// A browser-like client: cookie jar, the appliance's certificate trusted, no redirects.
pub fn client_for(dir: &Path) -> reqwest::Client {
    builder_for(dir).cookie_store(true).build().unwrap()
}

/// A client without a cookie jar, as an integration or a replaying attacker would use.
pub fn plain_client(dir: &Path) -> reqwest::Client {
    builder_for(dir).build().unwrap()
}

fn builder_for(dir: &Path) -> reqwest::ClientBuilder {
    let pem = std::fs::read(dir.join("tls/cert.pem")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
}

/// The value of the first hidden `csrf` field of a page.
pub fn csrf_of(html: &str) -> String {
    hidden(html, "csrf").unwrap_or_else(|| panic!("no csrf field in {html}"))
}

/// The value of a hidden input.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    Some(html[start..].split('"').next()?.to_owned())
}

pub async fn login_with(
    client: &reqwest::Client,
    app: &TestApp,
    login: &str,
    password: &str,
) -> reqwest::Response {
    let page = client
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    client
        .post(app.url("/login"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("login", login),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

/// Enrols a second factor from the enrolment page; returns the secret.
/// Enrols a TOTP second factor; returns the secret and the code that confirmed it.
pub async fn enrol(client: &reqwest::Client, app: &TestApp) -> (String, String) {
    let page = client
        .get(app.url("/account/second-factor"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    let secret = hidden(&page, "secret").unwrap();
    let code = current_code(&secret);
    let res = client
        .post(app.url("/account/second-factor"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("secret", secret.as_str()),
            ("code", code.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("recovery-codes"));
    (secret, code)
}

pub fn current_code(secret: &str) -> String {
    code_in(secret, 0)
}

/// The code an authenticator shows `offset_secs` from now.
pub fn code_in(secret: &str, offset_secs: i64) -> String {
    let secret = totp::TotpSecret::from_base32(secret).unwrap();
    let now = clientele::clock::Clock::now(&SystemClock).as_second();
    format!("{:06}", totp::code_at(&secret, now + offset_secs))
}

/// Posts a form on `path` with the CSRF token of `page_path`.
pub async fn post_form(
    client: &reqwest::Client,
    app: &TestApp,
    page_path: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let page = client
        .get(app.url(page_path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    let mut form: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    client.post(app.url(path)).form(&form).send().await.unwrap()
}
