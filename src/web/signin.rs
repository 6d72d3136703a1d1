//! Signing in and out: password, second factor, sign-out. Every attempt is recorded in the
//! audit trail: a success lands with the session write, a refusal is recorded on its own. What
//! was typed is never recorded; an unknown login is an anonymous actor.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use tracing::{info, warn};

use crate::audit::{Action, Actor, Event};
use crate::auth::AuthError;
use crate::auth::accounts::SignIn;
use crate::auth::sessions::{Stage, random_token};
use crate::auth::totp;
use crate::domain::account::User;

use super::AppState;
use super::error::WebError;
use super::guard::{
    LOGIN_COOKIE, SESSION_COOKIE, SessionFound, SignedIn, find_session, pending_step, redirect,
};
use super::shell::Shell;

#[derive(Debug, Template)]
#[template(path = "signin/login.html")]
struct LoginPage {
    shell: Shell,
    csrf: String,
    login: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    login: String,
    password: String,
}

/// `GET /login`.
pub async fn login_page(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, WebError> {
    if let SessionFound::Live(_) = find_session(&state, &req).await? {
        return Ok(redirect("/"));
    }
    login_form(&state, String::new(), None, StatusCode::OK)
}

fn login_form(
    state: &AppState,
    login: String,
    error: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let csrf = random_token(state.random.as_ref(), 24)?;
    let page = LoginPage {
        shell: Shell::anonymous("Sign in"),
        csrf: csrf.clone(),
        login,
        error,
    };
    Ok(HttpResponse::build(status)
        .cookie(host_cookie(LOGIN_COOKIE, csrf, None))
        .content_type("text/html; charset=utf-8")
        .body(
            page.render()
                .map_err(|e| WebError::Internal(e.to_string()))?,
        ))
}

/// `POST /login`: throttled per account and address; the same answer for a wrong password
/// and an unknown login.
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, WebError> {
    let address = client_address(&req);
    let now = state.clock.now();
    if let Some(retry_after) = state.throttle.retry_after(&form.login, &address, now) {
        warn!(security_event = "login throttled", "sign-in refused");
        let event = Event::new(Action::SignInThrottled)
            .by(login_actor(&state, &form.login)?.from_address(address))
            .denied(format!(
                "too many failed attempts; retry after {retry_after} s"
            ));
        state.audit.record(event).await?;
        return Err(WebError::TooManyRequests { retry_after });
    }
    let attempt = match state.accounts.sign_in(&form.login, &form.password).await {
        Err(AuthError::Busy) => {
            let event = Event::new(Action::SignInThrottled)
                .by(login_actor(&state, &form.login)?.from_address(address))
                .denied("too many sign-ins being checked at once");
            state.audit.record(event).await?;
            return Err(WebError::TooManyRequests { retry_after: 1 });
        }
        other => other?,
    };
    let attempt_by = |actor: Actor| Event::new(Action::SignIn).by(actor.from_address(&address));
    let refusal = match attempt {
        SignIn::Ok(user) => Ok(*user),
        SignIn::UnknownLogin => Err(attempt_by(Actor::anonymous()).failed("unknown login")),
        SignIn::WrongPassword(user) => Err(attempt_by(Actor::user(&user))
            .target("user", user.id)
            .failed("wrong password")),
        SignIn::Disabled(user) => Err(attempt_by(Actor::user(&user))
            .target("user", user.id)
            .denied("account disabled")),
    };
    let user = match refusal {
        Ok(user) => user,
        Err(event) => {
            state.throttle.failed(&form.login, &address, now);
            warn!(security_event = "login failed", "sign-in refused");
            state.audit.record(event).await?;
            return login_form(
                &state,
                form.login.clone(),
                Some("Wrong login or password.".into()),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    state.throttle.succeeded(&form.login);
    let stage = if user.totp_secret.is_some() {
        Stage::SecondFactor
    } else {
        stage_after_second_factor(&user)
    };
    let signed_in = Event::new(Action::SignIn)
        .by(Actor::user(&user).from_address(&address))
        .target("user", user.id)
        .reason(match stage {
            Stage::SecondFactor => "password accepted; second factor due",
            Stage::ChangePassword => "password accepted; new password due",
            Stage::Enrol => "password accepted; second-factor enrolment due",
            Stage::Full => "",
        });
    let (cookie, _) = state
        .sessions
        .start(user.id, stage, &address, signed_in)
        .await?;
    info!(user = %user.id, "signed in");
    let next = pending_step(stage).unwrap_or("/");
    let mut res = redirect(next);
    res.add_cookie(&host_cookie(SESSION_COOKIE, cookie, None))
        .map_err(|e| WebError::Internal(e.to_string()))?;
    res.add_removal_cookie(&host_cookie(LOGIN_COOKIE, String::new(), None))
        .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(res)
}

/// The stage after the password and second factor are done.
fn stage_after_second_factor(user: &User) -> Stage {
    if user.must_change_password {
        Stage::ChangePassword
    } else if user.role.requires_second_factor() && user.totp_secret.is_none() {
        Stage::Enrol
    } else {
        Stage::Full
    }
}

/// The stage after a password change.
#[must_use]
pub fn stage_after_password_change(user: &User) -> Stage {
    if user.role.requires_second_factor() && user.totp_secret.is_none() {
        Stage::Enrol
    } else {
        Stage::Full
    }
}

#[derive(Debug, Template)]
#[template(path = "signin/second_factor.html")]
struct SecondFactorPage {
    shell: Shell,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CodeForm {
    code: String,
}

/// `GET /login/second-factor`.
pub async fn second_factor_page(who: SignedIn) -> Result<HttpResponse, WebError> {
    if who.session.stage != Stage::SecondFactor {
        return Ok(redirect(pending_step(who.session.stage).unwrap_or("/")));
    }
    render(
        &SecondFactorPage {
            shell: Shell::signed_in(&who, "Second factor", "/login"),
            error: None,
        },
        StatusCode::OK,
    )
}

/// `POST /login/second-factor`: a TOTP code or a single-use recovery code.
pub async fn second_factor(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: SignedIn,
    form: web::Form<CodeForm>,
) -> Result<HttpResponse, WebError> {
    if who.session.stage != Stage::SecondFactor {
        return Ok(redirect(pending_step(who.session.stage).unwrap_or("/")));
    }
    let address = client_address(&req);
    let now = state.clock.now();
    if let Some(retry_after) = state.throttle.retry_after(&who.user.login, &address, now) {
        let event = Event::new(Action::SignInThrottled)
            .by(who.actor())
            .target("user", who.user.id)
            .denied(format!(
                "too many failed attempts; retry after {retry_after} s"
            ));
        state.audit.record(event).await?;
        return Err(WebError::TooManyRequests { retry_after });
    }
    let mut user = who.user.clone();
    let check = || {
        Event::new(Action::SecondFactor)
            .by(who.actor())
            .target("user", user.id)
    };
    let events = match user
        .totp_secret
        .as_deref()
        .map(totp::TotpSecret::from_base32)
    {
        Some(Ok(secret)) => {
            match totp::verify(&secret, &form.code, now.as_second(), user.totp_last_step) {
                Some(step) => {
                    user.totp_last_step = Some(step);
                    vec![check().fields(["totp_last_step"])]
                }
                None if totp::use_recovery_code(&mut user.recovery_codes, &form.code) => vec![
                    check().reason("recovery code"),
                    Event::new(Action::RecoveryCodeUsed)
                        .by(who.actor())
                        .target("user", user.id)
                        .fields(["recovery_codes"])
                        .reason(format!("{} recovery codes left", user.recovery_codes.len())),
                ],
                None => Vec::new(),
            }
        }
        _ => Vec::new(),
    };
    if events.is_empty() {
        state.throttle.failed(&user.login, &address, now);
        warn!(security_event = "second factor failed", "sign-in refused");
        state.audit.record(check().failed("code not valid")).await?;
        let page = SecondFactorPage {
            shell: Shell::signed_in(&who, "Second factor", "/login"),
            error: Some(
                "That code is not valid. Try the current code from your app, or a recovery code."
                    .into(),
            ),
        };
        return render(&page, StatusCode::UNAUTHORIZED);
    }
    state.throttle.succeeded(&user.login);
    state.accounts.save(&mut user, events).await?;
    let mut session = who.session.clone();
    let stage = stage_after_second_factor(&user);
    state
        .sessions
        .set_stage(who.key, &mut session, stage)
        .await?;
    Ok(redirect(pending_step(stage).unwrap_or("/")))
}

/// `POST /logout`: ends the session; the old cookie no longer works.
pub async fn logout(state: web::Data<AppState>, who: SignedIn) -> Result<HttpResponse, WebError> {
    let event = Event::new(Action::SignOut)
        .by(who.actor())
        .target("session", who.key.handle());
    state.sessions.end(who.key, event).await?;
    info!(user = %who.user.id, "signed out");
    let mut res = redirect("/login");
    res.add_removal_cookie(&host_cookie(SESSION_COOKIE, String::new(), None))
        .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(res)
}

/// The account a typed login names, as an actor; anonymous when there is none (what was
/// typed is never recorded: it may be a password typed in the wrong field).
fn login_actor(state: &AppState, login: &str) -> Result<Actor, WebError> {
    Ok(state
        .accounts
        .find_by_login(login)?
        .map_or_else(Actor::anonymous, |user| Actor::user(&user)))
}

/// A `__Host-` cookie: `Secure`, `HttpOnly`, `SameSite=Strict`, Path=/, no Domain.
fn host_cookie(
    name: &'static str,
    value: String,
    max_age: Option<actix_web::cookie::time::Duration>,
) -> Cookie<'static> {
    let mut cookie = Cookie::build(name, value)
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    if let Some(age) = max_age {
        cookie.set_max_age(age);
    }
    cookie
}

/// The client's address (the TCP peer; Clientele is not meant to sit behind a proxy).
#[must_use]
pub fn client_address(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string())
}

/// Renders a template with a status.
pub fn render(page: &impl Template, status: StatusCode) -> Result<HttpResponse, WebError> {
    let html = page
        .render()
        .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(html))
}
