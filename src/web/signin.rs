//! Signing in and out: password, second factor, sign-out.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use tracing::{info, warn};

use crate::auth::accounts::SignIn;
use crate::auth::sessions::{Stage, random_token};
use crate::auth::totp;
use crate::domain::account::User;

use super::AppState;
use super::error::WebError;
use super::guard::{LOGIN_COOKIE, SESSION_COOKIE, SignedIn, pending_step, redirect};
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
    if let Some(cookie) = req.cookie(SESSION_COOKIE)
        && state.sessions.find(cookie.value()).await?.is_some()
    {
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
        return Err(WebError::TooManyRequests { retry_after });
    }
    let user = match state.accounts.sign_in(&form.login, &form.password).await? {
        SignIn::Ok(user) => *user,
        SignIn::Refused | SignIn::Disabled => {
            state.throttle.failed(&form.login, &address, now);
            warn!(security_event = "login failed", "sign-in refused");
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
    let (cookie, _) = state.sessions.start(user.id, stage, &address).await?;
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
        return Err(WebError::TooManyRequests { retry_after });
    }
    let mut user = who.user.clone();
    let accepted = match user
        .totp_secret
        .as_deref()
        .map(totp::TotpSecret::from_base32)
    {
        Some(Ok(secret)) => {
            match totp::verify(&secret, &form.code, now.as_second(), user.totp_last_step) {
                Some(step) => {
                    user.totp_last_step = Some(step);
                    true
                }
                None => totp::use_recovery_code(&mut user.recovery_codes, &form.code),
            }
        }
        _ => false,
    };
    if !accepted {
        state.throttle.failed(&user.login, &address, now);
        warn!(security_event = "second factor failed", "sign-in refused");
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
    state.accounts.save(&mut user).await?;
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
    state.sessions.end(who.key).await?;
    info!(user = %who.user.id, "signed out");
    let mut res = redirect("/login");
    res.add_removal_cookie(&host_cookie(SESSION_COOKIE, String::new(), None))
        .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(res)
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
