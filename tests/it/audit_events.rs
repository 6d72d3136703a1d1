//! Every kind of event the existing features record, produced as a user, an attacker or an
//! operator would (HTTPS requests to the running appliance, the `clientele` command), leaves
//! exactly one entry of its action with every required field; and nothing anyone typed as a
//! secret, nor a login that does not exist, ever appears in the trail.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;

use clientele::app::Deps;
use clientele::audit::{Action, ActorKind, Entry, Outcome};
use clientele::auth::totp;
use clientele::clock::{Clock, ManualClock, SystemClock, SystemRandom};
use clientele::domain::account::Role;
use jiff::SignedDuration;
use reqwest::StatusCode;

use crate::support::clientele;
use crate::web::{TestApp, csrf_of, hidden, login_with, plain_client, post_form};

/// The password `TestApp::signed_in` gives its users.
const SIGNED_IN_PASSWORD: &str = "correct horse battery staple";
/// What the clerk chooses at the forced password change.
const CLERK_PASSWORD: &str = "amber lantern drifts over quiet harbour";
/// A login that does not exist, typed at the sign-in form.
const UNKNOWN_LOGIN: &str = "nobody.typed-this";
/// A password typed with that login.
const UNKNOWN_LOGIN_PASSWORD: &str = "plum orchard whispers seventeen";
/// A wrong password typed for an existing login.
const WRONG_PASSWORD: &str = "wrong guess about the clerk";
/// A bearer secret that is no token of the appliance.
const FORGED_TOKEN: &str = "clt_forgedtokenforgedtokenforgedtokenforged";

/// One thing a user or operator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    CliAddsUser,
    SignInUnknownLogin,
    SignInWrongPassword,
    SignIn,
    ForcedPasswordChange,
    EnrolSecondFactor,
    PasswordChangeWrongCurrent,
    SignOut,
    SecondFactorWrongCode,
    SecondFactor,
    RecoveryCode,
    Throttled,
    AdminCreatesUser,
    AdminRenamesUser,
    AdminChangesRole,
    AdminDemotesSelf,
    AdminDisablesUser,
    AdminEnablesUser,
    AdminResetsPassword,
    AdminRevokesSession,
    AdminCreatesLocation,
    AdminUpdatesLocation,
    AdminCreatesToken,
    TokenLacksScope,
    UnknownToken,
    AdminRevokesToken,
    RevokedToken,
    RoleRefused,
    CsrfRefused,
    CrossSiteRefused,
    StoreScopeRefused,
    ReplayedCookie,
    LoginFormForged,
    CliRotatesKeys,
    IdleTimeout,
    AbsoluteTimeout,
}

/// What the step's one entry must say.
#[derive(Debug, Clone, Copy)]
struct Expect {
    action: Action,
    outcome: Outcome,
    actor: ActorKind,
    /// The actor's role, for user actors.
    role: Option<&'static str>,
    /// The event came over the network, so the client address is recorded.
    network: bool,
    /// The target type, when the event has one.
    target: Option<&'static str>,
    /// A field name the entry must list.
    field: Option<&'static str>,
}

const fn expect(action: Action, outcome: Outcome, actor: ActorKind) -> Expect {
    Expect {
        action,
        outcome,
        actor,
        role: None,
        network: true,
        target: None,
        field: None,
    }
}

impl Expect {
    const fn role(mut self, role: &'static str) -> Self {
        self.role = Some(role);
        self
    }
    const fn target(mut self, target: &'static str) -> Self {
        self.target = Some(target);
        self
    }
    const fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }
    const fn local(mut self) -> Self {
        self.network = false;
        self
    }
}

/// Every row: a step, and the entry it must leave.
fn table() -> Vec<(Step, Expect)> {
    use ActorKind::{Anonymous, System, Token, User};
    use Outcome::{Denied, Failure, Success};
    let by_user = |action, outcome, role| expect(action, outcome, User).role(role);
    vec![
        (
            Step::CliAddsUser,
            expect(Action::UserCreated, Success, System)
                .local()
                .target("user")
                .field("role"),
        ),
        (
            Step::SignInUnknownLogin,
            expect(Action::SignIn, Failure, Anonymous),
        ),
        (
            Step::SignInWrongPassword,
            by_user(Action::SignIn, Failure, "associate").target("user"),
        ),
        (
            Step::SignIn,
            by_user(Action::SignIn, Success, "associate").target("user"),
        ),
        (
            Step::ForcedPasswordChange,
            by_user(Action::PasswordChanged, Success, "associate")
                .target("user")
                .field("password"),
        ),
        (
            Step::EnrolSecondFactor,
            by_user(Action::SecondFactorEnrolled, Success, "associate")
                .target("user")
                .field("totp_secret"),
        ),
        (
            Step::PasswordChangeWrongCurrent,
            by_user(Action::PasswordChanged, Failure, "associate").target("user"),
        ),
        (
            Step::SignOut,
            by_user(Action::SignOut, Success, "associate").target("session"),
        ),
        (
            Step::SecondFactorWrongCode,
            by_user(Action::SecondFactor, Failure, "associate").target("user"),
        ),
        (
            Step::SecondFactor,
            by_user(Action::SecondFactor, Success, "associate").target("user"),
        ),
        (
            Step::RecoveryCode,
            by_user(Action::RecoveryCodeUsed, Success, "associate")
                .target("user")
                .field("recovery_codes"),
        ),
        (
            Step::Throttled,
            by_user(Action::SignInThrottled, Denied, "associate"),
        ),
        (
            Step::AdminCreatesUser,
            by_user(Action::UserCreated, Success, "admin")
                .target("user")
                .field("login"),
        ),
        (
            Step::AdminRenamesUser,
            by_user(Action::UserUpdated, Success, "admin")
                .target("user")
                .field("display_name"),
        ),
        (
            Step::AdminChangesRole,
            by_user(Action::UserRoleChanged, Success, "admin")
                .target("user")
                .field("role"),
        ),
        (
            Step::AdminDemotesSelf,
            by_user(Action::UserRoleChanged, Denied, "admin")
                .target("user")
                .field("role"),
        ),
        (
            Step::AdminDisablesUser,
            by_user(Action::UserDisabled, Success, "admin").target("user"),
        ),
        (
            Step::AdminEnablesUser,
            by_user(Action::UserEnabled, Success, "admin").target("user"),
        ),
        (
            Step::AdminResetsPassword,
            by_user(Action::PasswordReset, Success, "admin")
                .target("user")
                .field("password"),
        ),
        (
            Step::AdminRevokesSession,
            by_user(Action::SessionRevoked, Success, "admin").target("session"),
        ),
        (
            Step::AdminCreatesLocation,
            by_user(Action::LocationCreated, Success, "admin")
                .target("location")
                .field("code"),
        ),
        (
            Step::AdminUpdatesLocation,
            by_user(Action::LocationUpdated, Success, "admin")
                .target("location")
                .field("name"),
        ),
        (
            Step::AdminCreatesToken,
            by_user(Action::TokenCreated, Success, "admin")
                .target("token")
                .field("scopes"),
        ),
        (
            Step::TokenLacksScope,
            expect(Action::AccessDenied, Denied, Token).target("route"),
        ),
        (
            Step::UnknownToken,
            expect(Action::TokenDenied, Denied, Anonymous),
        ),
        (
            Step::AdminRevokesToken,
            by_user(Action::TokenRevoked, Success, "admin").target("token"),
        ),
        (
            Step::RevokedToken,
            expect(Action::TokenDenied, Denied, Token).target("token"),
        ),
        (
            Step::RoleRefused,
            by_user(Action::AccessDenied, Denied, "manager").target("route"),
        ),
        (
            Step::CsrfRefused,
            by_user(Action::AccessDenied, Denied, "manager").target("route"),
        ),
        (
            Step::CrossSiteRefused,
            by_user(Action::AccessDenied, Denied, "manager").target("route"),
        ),
        (
            Step::StoreScopeRefused,
            by_user(Action::AccessDenied, Denied, "manager").target("location"),
        ),
        (
            Step::ReplayedCookie,
            expect(Action::AccessDenied, Denied, Anonymous).target("route"),
        ),
        (
            Step::LoginFormForged,
            expect(Action::AccessDenied, Denied, Anonymous).target("route"),
        ),
        (
            Step::CliRotatesKeys,
            expect(Action::KeysRotated, Success, System)
                .local()
                .target("key_term"),
        ),
        (
            Step::IdleTimeout,
            by_user(Action::SessionExpired, Success, "manager").target("session"),
        ),
        (
            Step::AbsoluteTimeout,
            by_user(Action::SessionExpired, Success, "associate").target("session"),
        ),
    ]
}

/// What the story has gathered so far.
struct Story {
    app: TestApp,
    clock: Arc<ManualClock>,
    admin: reqwest::Client,
    manager: reqwest::Client,
    clerk: reqwest::Client,
    clerk_otp: String,
    clerk_totp: String,
    recovery_codes: Vec<String>,
    token_secret: String,
    /// Target id of the entry each step left.
    targets: HashMap<Step, String>,
    /// Everything typed or shown as a secret, and the unknown login: none may be in the trail.
    secrets: Vec<String>,
}

impl Story {
    fn target(&self, step: Step) -> String {
        self.targets[&step].clone()
    }

    /// A TOTP code of the clerk's app, for a time step the appliance has not accepted yet.
    fn fresh_code(&self) -> String {
        self.clock.advance(SignedDuration::from_secs(30));
        let secret = totp::TotpSecret::from_base32(&self.clerk_totp).unwrap();
        format!(
            "{:06}",
            totp::code_at(&secret, self.clock.now().as_second())
        )
    }

    fn keep_secret(&mut self, secret: impl Into<String>) {
        self.secrets.push(secret.into());
    }
}

/// Runs `clientele` against the running appliance's folder (through its control socket).
async fn run_cli(story: &Story, args: &[&str]) -> String {
    let dir = story.app.dir.path().to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = clientele(&dir)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "clientele {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    })
    .await
    .unwrap()
}

async fn text(res: reqwest::Response) -> String {
    res.text().await.unwrap()
}

/// The text of the element with this id (`<code class="secret" id="...">`).
fn element_text(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in {html}"))
        + marker.len();
    html[start..].split('<').next().unwrap().trim().to_owned()
}

/// Posts the second-factor form.
async fn second_factor(story: &Story, client: &reqwest::Client, code: &str) -> StatusCode {
    post_form(
        client,
        &story.app,
        "/login/second-factor",
        "/login/second-factor",
        &[("code", code)],
    )
    .await
    .status()
}

/// Signs the clerk in with password and a fresh second-factor code, on a new client.
async fn clerk_signs_in(story: &Story) -> reqwest::Client {
    let client = story.app.client();
    let res = login_with(&client, &story.app, "clerk", CLERK_PASSWORD).await;
    assert_eq!(res.headers()["location"], "/login/second-factor");
    let code = story.fresh_code();
    assert_eq!(
        second_factor(story, &client, &code).await,
        StatusCode::SEE_OTHER
    );
    client
}

/// Performs one step as a user, an attacker or an operator would.
async fn perform(story: &mut Story, step: Step) {
    let app = &story.app;
    match step {
        Step::CliAddsUser => {
            let out = run_cli(
                story,
                &["user", "add", "--login", "clerk", "--role", "associate"],
            )
            .await;
            let otp = out
                .lines()
                .nth(1)
                .unwrap_or_else(|| panic!("no one-time password in {out}"))
                .trim()
                .to_owned();
            story.clerk_otp.clone_from(&otp);
            story.keep_secret(otp);
        }
        Step::SignInUnknownLogin => {
            let res = login_with(&app.client(), app, UNKNOWN_LOGIN, UNKNOWN_LOGIN_PASSWORD).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        }
        Step::SignInWrongPassword => {
            let res = login_with(&app.client(), app, "clerk", WRONG_PASSWORD).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        }
        Step::SignIn => {
            let res = login_with(&story.clerk, app, "clerk", &story.clerk_otp).await;
            assert_eq!(res.headers()["location"], "/account/password");
        }
        Step::ForcedPasswordChange => {
            let res = post_form(
                &story.clerk,
                app,
                "/account/password",
                "/account/password",
                &[
                    ("current_password", story.clerk_otp.as_str()),
                    ("new_password", CLERK_PASSWORD),
                    ("confirm_password", CLERK_PASSWORD),
                ],
            )
            .await;
            assert_eq!(res.status(), StatusCode::SEE_OTHER);
        }
        Step::EnrolSecondFactor => {
            let page = text(
                story
                    .clerk
                    .get(app.url("/account/second-factor"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            let secret = hidden(&page, "secret").unwrap();
            let code = {
                let secret = totp::TotpSecret::from_base32(&secret).unwrap();
                format!(
                    "{:06}",
                    totp::code_at(&secret, story.clock.now().as_second())
                )
            };
            let res = story
                .clerk
                .post(app.url("/account/second-factor"))
                .form(&[
                    ("csrf", csrf_of(&page).as_str()),
                    ("secret", secret.as_str()),
                    ("code", code.as_str()),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let page = text(res).await;
            let list = &page[page.find("id=\"recovery-codes\"").unwrap()..];
            let codes: Vec<String> = list
                .split("<code class=\"secret\">")
                .skip(1)
                .map(|rest| rest.split('<').next().unwrap().to_owned())
                .collect();
            assert_eq!(codes.len(), 10);
            story.recovery_codes.clone_from(&codes);
            story.secrets.extend(codes);
            story.clerk_totp.clone_from(&secret);
            story.keep_secret(secret);
        }
        Step::PasswordChangeWrongCurrent => {
            let res = post_form(
                &story.clerk,
                app,
                "/account/password",
                "/account/password",
                &[
                    ("current_password", WRONG_PASSWORD),
                    ("new_password", "granite kettle sings at noon"),
                    ("confirm_password", "granite kettle sings at noon"),
                ],
            )
            .await;
            assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
            story.keep_secret("granite kettle sings at noon");
        }
        Step::SignOut => {
            let res = post_form(&story.clerk, app, "/account", "/logout", &[]).await;
            assert_eq!(res.headers()["location"], "/login");
        }
        Step::SecondFactorWrongCode => {
            let res = login_with(&story.clerk, app, "clerk", CLERK_PASSWORD).await;
            assert_eq!(res.headers()["location"], "/login/second-factor");
            let secret = totp::TotpSecret::from_base32(&story.clerk_totp).unwrap();
            let later = story.clock.now().as_second() + 3600;
            let wrong = format!("{:06}", totp::code_at(&secret, later));
            assert_eq!(
                second_factor(story, &story.clerk, &wrong).await,
                StatusCode::UNAUTHORIZED
            );
        }
        Step::SecondFactor => {
            let code = story.fresh_code();
            assert_eq!(
                second_factor(story, &story.clerk, &code).await,
                StatusCode::SEE_OTHER
            );
        }
        Step::RecoveryCode => {
            post_form(&story.clerk, app, "/account", "/logout", &[]).await;
            let res = login_with(&story.clerk, app, "clerk", CLERK_PASSWORD).await;
            assert_eq!(res.headers()["location"], "/login/second-factor");
            let code = story.recovery_codes[0].clone();
            assert_eq!(
                second_factor(story, &story.clerk, &code).await,
                StatusCode::SEE_OTHER
            );
        }
        Step::Throttled => {
            // The fourth failure from this address starts the delays; the next try waits.
            let res = login_with(&app.client(), app, "clerk", WRONG_PASSWORD).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
            let res = login_with(&app.client(), app, "clerk", WRONG_PASSWORD).await;
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
            story.clock.advance(SignedDuration::from_mins(1));
        }
        Step::AdminCreatesUser => {
            let res = post_form(
                &story.admin,
                app,
                "/admin/users/new",
                "/admin/users",
                &[
                    ("login", "temp.staff"),
                    ("display_name", "Temp Staff"),
                    ("role", "associate"),
                ],
            )
            .await;
            assert_eq!(res.status(), StatusCode::OK);
            let otp = element_text(&text(res).await, "one-time-password");
            story.keep_secret(otp);
        }
        Step::AdminRenamesUser | Step::AdminChangesRole => {
            let id = story.target(Step::AdminCreatesUser);
            let role = if step == Step::AdminRenamesUser {
                "associate"
            } else {
                "manager"
            };
            let path = format!("/admin/users/{id}");
            let res = post_form(
                &story.admin,
                app,
                &path,
                &path,
                &[("display_name", "Temporary Staff"), ("role", role)],
            )
            .await;
            assert_eq!(res.status(), StatusCode::SEE_OTHER);
        }
        Step::AdminDemotesSelf => {
            let me = text(story.admin.get(app.url("/api/v1/me")).send().await.unwrap()).await;
            let me: serde_json::Value = serde_json::from_str(&me).unwrap();
            let path = format!("/admin/users/{}", me["id"].as_str().unwrap());
            let res = post_form(
                &story.admin,
                app,
                &path,
                &path,
                &[("display_name", "Chief"), ("role", "manager")],
            )
            .await;
            assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        }
        Step::AdminDisablesUser | Step::AdminEnablesUser | Step::AdminResetsPassword => {
            let id = story.target(Step::AdminCreatesUser);
            let verb = match step {
                Step::AdminDisablesUser => "disable",
                Step::AdminEnablesUser => "enable",
                _ => "reset-password",
            };
            let res = post_form(
                &story.admin,
                app,
                &format!("/admin/users/{id}"),
                &format!("/admin/users/{id}/{verb}"),
                &[],
            )
            .await;
            if step == Step::AdminResetsPassword {
                assert_eq!(res.status(), StatusCode::OK);
                let otp = element_text(&text(res).await, "one-time-password");
                story.keep_secret(otp);
            } else {
                assert_eq!(res.status(), StatusCode::SEE_OTHER);
            }
        }
        Step::AdminRevokesSession => {
            let clerk = story.target(Step::SignInWrongPassword);
            let page = format!("/admin/users/{clerk}");
            let html = text(story.admin.get(app.url(&page)).send().await.unwrap()).await;
            let marker = "/sessions/";
            let at = html.find(marker).expect("the clerk has a session") + marker.len();
            let handle = &html[at..at + 64];
            let res = post_form(
                &story.admin,
                app,
                &page,
                &format!("/admin/users/{clerk}/sessions/{handle}/revoke"),
                &[],
            )
            .await;
            assert_eq!(res.status(), StatusCode::SEE_OTHER);
        }
        Step::AdminCreatesLocation | Step::AdminUpdatesLocation => {
            let (path, name) = if step == Step::AdminCreatesLocation {
                ("/admin/locations".to_owned(), "Main street")
            } else {
                let id = story.target(Step::AdminCreatesLocation);
                (format!("/admin/locations/{id}"), "Main street (north)")
            };
            let res = post_form(
                &story.admin,
                app,
                "/admin/locations/new",
                &path,
                &[
                    ("code", "S001"),
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
        Step::AdminCreatesToken => {
            let res = post_form(
                &story.admin,
                app,
                "/admin/tokens",
                "/admin/tokens",
                &[("name", "till feed"), ("scopes", "ingest:pos")],
            )
            .await;
            assert_eq!(res.status(), StatusCode::OK);
            let secret = element_text(&text(res).await, "token-secret");
            story.token_secret.clone_from(&secret);
            story.keep_secret(secret);
        }
        Step::TokenLacksScope | Step::RevokedToken | Step::UnknownToken => {
            let secret = if step == Step::UnknownToken {
                FORGED_TOKEN
            } else {
                story.token_secret.as_str()
            };
            let res = plain_client(app.dir.path())
                .get(app.url("/api/v1/locations"))
                .bearer_auth(secret)
                .send()
                .await
                .unwrap();
            let expected = if step == Step::TokenLacksScope {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            assert_eq!(res.status(), expected);
        }
        Step::AdminRevokesToken => {
            let id = story.target(Step::AdminCreatesToken);
            let res = post_form(
                &story.admin,
                app,
                "/admin/tokens",
                &format!("/admin/tokens/{id}/revoke"),
                &[],
            )
            .await;
            assert_eq!(res.status(), StatusCode::SEE_OTHER);
        }
        Step::RoleRefused => {
            let res = story
                .manager
                .get(app.url("/admin/users"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::FORBIDDEN);
        }
        Step::CsrfRefused => {
            let res = story
                .manager
                .post(app.url("/logout"))
                .form(&[("csrf", "not-the-session-token")])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::FORBIDDEN);
        }
        Step::CrossSiteRefused => {
            let res = story
                .manager
                .post(app.url("/logout"))
                .header("Sec-Fetch-Site", "cross-site")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::FORBIDDEN);
        }
        Step::StoreScopeRefused => {
            let id = story.target(Step::AdminCreatesLocation);
            let res = story
                .manager
                .get(app.url(&format!("/api/v1/locations/{id}")))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::NOT_FOUND);
        }
        Step::ReplayedCookie => {
            let res = plain_client(app.dir.path())
                .post(app.url("/logout"))
                .header("Cookie", "__Host-clientele=a-cookie-of-no-session")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        }
        Step::LoginFormForged => {
            let res = plain_client(app.dir.path())
                .post(app.url("/login"))
                .form(&[
                    ("csrf", "forged"),
                    ("login", UNKNOWN_LOGIN),
                    ("password", UNKNOWN_LOGIN_PASSWORD),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::FORBIDDEN);
        }
        Step::CliRotatesKeys => {
            let out = run_cli(story, &["keys", "rotate"]).await;
            assert!(out.contains("term 2"), "{out}");
        }
        Step::IdleTimeout => {
            story.clock.advance(SignedDuration::from_mins(31));
            let res = story.manager.get(app.url("/")).send().await.unwrap();
            assert_eq!(res.headers()["location"], "/login");
        }
        Step::AbsoluteTimeout => {
            let client = clerk_signs_in(story).await;
            let mut ended = false;
            for _ in 0..40 {
                story.clock.advance(SignedDuration::from_mins(20));
                let res = client.get(story.app.url("/")).send().await.unwrap();
                if res.status() == StatusCode::SEE_OTHER {
                    ended = true;
                    break;
                }
            }
            assert!(ended, "12 h after sign-in the session is over");
        }
    }
}

/// Entries after `seq`, oldest first.
fn entries_after(app: &TestApp, seq: u64) -> Vec<Entry> {
    app.audit()
        .entries(seq + 1, u64::MAX, false)
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Checks the one entry of `action` among `new` against `want`; returns it.
fn check_entry(step: Step, new: &[Entry], want: &Expect) -> Entry {
    let code = want.action.code();
    let mine: Vec<&Entry> = new.iter().filter(|e| e.action == code).collect();
    assert_eq!(
        mine.len(),
        1,
        "{step:?}: expected exactly one {code} entry, got {mine:#?}"
    );
    let entry = mine[0].clone();
    let at = format!("{step:?} ({code}): {entry:#?}");

    assert!(entry.seq > 0, "{at}");
    assert!(entry.timestamp().is_some(), "time: {at}");
    assert_eq!(entry.outcome, want.outcome, "outcome: {at}");
    assert_eq!(entry.actor_kind, want.actor, "actor kind: {at}");
    match want.actor {
        ActorKind::Anonymous => {
            assert!(
                entry.actor_id.is_empty() && entry.actor_name.is_empty(),
                "{at}"
            );
        }
        ActorKind::System => {
            assert_eq!(
                (entry.actor_id.as_str(), entry.actor_name.as_str()),
                ("cli", "cli")
            );
        }
        ActorKind::User | ActorKind::Token => {
            assert!(!entry.actor_id.is_empty(), "actor id: {at}");
            assert!(!entry.actor_name.is_empty(), "actor name: {at}");
        }
    }
    assert_eq!(entry.actor_role.as_deref(), want.role, "actor role: {at}");
    if want.network {
        assert_eq!(entry.address.as_deref(), Some("127.0.0.1"), "address: {at}");
    } else {
        assert_eq!(entry.address, None, "address: {at}");
    }
    assert_eq!(
        entry.target_type.as_deref(),
        want.target,
        "target type: {at}"
    );
    assert_eq!(
        entry.target_id.as_ref().is_some_and(|id| !id.is_empty()),
        want.target.is_some(),
        "target id: {at}"
    );
    if want.outcome != Outcome::Success {
        assert!(!entry.reason.is_empty(), "a refusal says why: {at}");
    }
    if let Some(field) = want.field {
        assert!(entry.fields.iter().any(|f| f == field), "fields: {at}");
    }
    entry
}

#[tokio::test]
async fn each_recorded_event_type_leaves_exactly_one_complete_entry() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let deps = Deps {
        clock: clock.clone(),
        random: Arc::new(SystemRandom::new()),
    };
    let app = TestApp::start_with(deps).await;
    let admin = app.signed_in("chief", Role::Admin).await;
    let manager = app.signed_in("floor.manager", Role::Manager).await;
    let clerk = app.client();
    let mut story = Story {
        app,
        clock,
        admin,
        manager,
        clerk,
        clerk_otp: String::new(),
        clerk_totp: String::new(),
        recovery_codes: Vec::new(),
        token_secret: String::new(),
        targets: HashMap::new(),
        secrets: vec![
            SIGNED_IN_PASSWORD.to_owned(),
            CLERK_PASSWORD.to_owned(),
            UNKNOWN_LOGIN.to_owned(),
            UNKNOWN_LOGIN_PASSWORD.to_owned(),
            WRONG_PASSWORD.to_owned(),
            FORGED_TOKEN.to_owned(),
            "a-cookie-of-no-session".to_owned(),
        ],
    };

    let table = table();
    for (step, want) in &table {
        let before = story.app.audit().head().unwrap().seq;
        perform(&mut story, *step).await;
        let new = entries_after(&story.app, before);
        let entry = check_entry(*step, &new, want);
        if let Some(id) = entry.target_id {
            story.targets.insert(*step, id);
        }
    }

    // Every action this table claims to cover was covered; the rest are other features'.
    let covered: std::collections::HashSet<Action> = table.iter().map(|(_, e)| e.action).collect();
    for action in [
        Action::SignIn,
        Action::SecondFactor,
        Action::SignInThrottled,
        Action::SignOut,
        Action::SessionExpired,
        Action::SessionRevoked,
        Action::AccessDenied,
        Action::PasswordChanged,
        Action::PasswordReset,
        Action::SecondFactorEnrolled,
        Action::RecoveryCodeUsed,
        Action::UserCreated,
        Action::UserUpdated,
        Action::UserRoleChanged,
        Action::UserDisabled,
        Action::UserEnabled,
        Action::TokenCreated,
        Action::TokenRevoked,
        Action::TokenDenied,
        Action::LocationCreated,
        Action::LocationUpdated,
        Action::KeysRotated,
    ] {
        assert!(covered.contains(&action), "{action} has no row");
    }

    // Nothing typed as a secret, no secret shown once, no unknown login: not in any entry,
    // whatever the member (hashes and times, made of hex digits, are left out so a six-digit
    // code cannot match them by chance).
    let all = entries_after(&story.app, 0);
    assert!(all.len() > table.len());
    let mut codes = story.recovery_codes.clone();
    codes.push(story.clerk_otp.clone());
    for entry in &all {
        let visible = [
            entry.action.as_str(),
            &entry.actor_id,
            &entry.actor_name,
            entry.actor_role.as_deref().unwrap_or(""),
            entry.address.as_deref().unwrap_or(""),
            entry.target_type.as_deref().unwrap_or(""),
            entry.target_id.as_deref().unwrap_or(""),
            entry.store.as_deref().unwrap_or(""),
            &entry.reason,
            &entry.fields.join(" "),
        ]
        .join("\n")
        .to_lowercase();
        for secret in story.secrets.iter().chain(&codes) {
            assert!(
                !visible.contains(&secret.to_lowercase()),
                "entry {} holds a secret or a typed login: {entry:#?}",
                entry.seq
            );
        }
    }
    story.app.stop().await;
}

#[test]
fn the_readme_gives_each_action_its_pci_sub_requirement() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("## Audit trail: what is recorded (PCI DSS 10.2)")
        .expect("the README has the section");
    let section = &readme[start..];
    let end = section[3..]
        .find("\n## ")
        .map_or(section.len(), |at| at + 3);
    let mut listed = Vec::new();
    for line in section[..end].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let code = cells[1].trim_matches('`');
        let action = Action::from_code(code).unwrap_or_else(|| panic!("no action {code}"));
        assert_eq!(cells[2], action.pci(), "README row of {code}");
        listed.push(action);
    }
    for (_, want) in table() {
        assert!(
            listed.contains(&want.action),
            "{} is not in the README",
            want.action
        );
    }
}
