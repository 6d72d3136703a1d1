//! The signed-in user's own account: password, second factor, sessions. Each change lands
//! with its audit entry; a refused attempt (wrong current password, wrong code) is recorded
//! on its own.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use tracing::info;

use crate::audit::{Action, Event};
use crate::auth::sessions::{SessionKey, Stage};
use crate::auth::totp;

use super::AppState;
use super::error::WebError;
use super::guard::{SignedIn, pending_step, redirect};
use super::shell::Shell;
use super::signin::{render, stage_after_password_change};

/// A session as listed on account and admin pages.
#[derive(Debug)]
pub struct SessionRow {
    pub handle: String,
    pub created: String,
    pub last_seen: String,
    pub client: String,
    pub current: bool,
}

pub fn session_rows(
    state: &AppState,
    user: crate::domain::Id,
    current: Option<SessionKey>,
) -> Result<Vec<SessionRow>, WebError> {
    Ok(state
        .sessions
        .of_user(user)?
        .into_iter()
        .map(|(key, session)| SessionRow {
            handle: key.handle(),
            created: session
                .created_at
                .strftime("%Y-%m-%d %H:%M UTC")
                .to_string(),
            last_seen: session
                .last_seen_at
                .strftime("%Y-%m-%d %H:%M UTC")
                .to_string(),
            client: session.client,
            current: Some(key) == current,
        })
        .collect())
}

#[derive(Debug, Template)]
#[template(path = "account/show.html")]
struct AccountPage {
    shell: Shell,
    login: String,
    role: &'static str,
    second_factor: bool,
    recovery_left: usize,
    sessions: Vec<SessionRow>,
}

/// `GET /account`.
pub async fn show(state: web::Data<AppState>, who: SignedIn) -> Result<HttpResponse, WebError> {
    let page = AccountPage {
        shell: Shell::signed_in(&who, "Your account", "/account"),
        login: who.user.login.clone(),
        role: who.user.role.label(),
        second_factor: who.user.totp_secret.is_some(),
        recovery_left: who.user.recovery_codes.len(),
        sessions: session_rows(&state, who.user.id, Some(who.key))?,
    };
    render(&page, StatusCode::OK)
}

/// `POST /account/sessions/{handle}/revoke`: ends one of one's own sessions.
pub async fn revoke_session(
    state: web::Data<AppState>,
    who: SignedIn,
    handle: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let key = SessionKey::from_handle(&handle).ok_or(WebError::NotFound)?;
    let own = state
        .sessions
        .of_user(who.user.id)?
        .into_iter()
        .any(|(k, _)| k == key);
    if !own {
        return Err(WebError::NotFound);
    }
    let event = Event::new(Action::SignOut)
        .by(who.actor())
        .target("session", key.handle())
        .reason("ended from the account page");
    state.sessions.end(key, event).await?;
    Ok(redirect(if key == who.key { "/login" } else { "/account" }))
}

#[derive(Debug, Template)]
#[template(path = "account/password.html")]
struct PasswordPage {
    shell: Shell,
    forced: bool,
    errors: Vec<(String, String)>,
}

impl PasswordPage {
    fn error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
    }
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    current_password: String,
    new_password: String,
    confirm_password: String,
}

/// `GET /account/password`.
pub async fn password_page(who: SignedIn) -> Result<HttpResponse, WebError> {
    if who.session.stage == Stage::SecondFactor {
        return Ok(redirect("/login/second-factor"));
    }
    let page = PasswordPage {
        shell: Shell::signed_in(&who, "Change password", "/account"),
        forced: who.user.must_change_password,
        errors: Vec::new(),
    };
    render(&page, StatusCode::OK)
}

/// `POST /account/password`: checks the current password, applies the policy, and ends the
/// user's other sessions.
pub async fn change_password(
    state: web::Data<AppState>,
    who: SignedIn,
    form: web::Form<PasswordForm>,
) -> Result<HttpResponse, WebError> {
    if who.session.stage == Stage::SecondFactor {
        return Ok(redirect("/login/second-factor"));
    }
    let mut errors = Vec::new();
    let attempt = Event::new(Action::PasswordChanged)
        .by(who.actor())
        .target("user", who.user.id);
    if !state
        .accounts
        .check_password(&who.user, &form.current_password)
        .await?
    {
        state
            .audit
            .record(attempt.failed("current password wrong"))
            .await?;
        errors.push((
            "current_password".into(),
            "this is not your current password".into(),
        ));
    } else if form.new_password != form.confirm_password {
        errors.push((
            "confirm_password".into(),
            "the two new passwords differ".into(),
        ));
    } else {
        let mut user = who.user.clone();
        match state
            .accounts
            .change_password(&mut user, &form.new_password, who.actor())
            .await
        {
            Ok(()) => {
                state
                    .sessions
                    .end_all(user.id, Some(who.key), &who.actor(), "password changed")
                    .await?;
                let mut session = who.session.clone();
                let stage = stage_after_password_change(&user);
                state
                    .sessions
                    .set_stage(who.key, &mut session, stage)
                    .await?;
                info!(user = %user.id, "password changed");
                return Ok(redirect(pending_step(stage).unwrap_or("/account")));
            }
            Err(err) => match WebError::from(err) {
                WebError::Invalid { field, message } => {
                    state
                        .audit
                        .record(attempt.failed("new password refused by the policy"))
                        .await?;
                    let field = if field == "password" {
                        "new_password".to_owned()
                    } else {
                        field
                    };
                    errors.push((field, message));
                }
                other => return Err(other),
            },
        }
    }
    let page = PasswordPage {
        shell: Shell::signed_in(&who, "Change password", "/account"),
        forced: who.user.must_change_password,
        errors,
    };
    render(&page, StatusCode::UNPROCESSABLE_ENTITY)
}

#[derive(Debug, Template)]
#[template(path = "account/second_factor.html")]
struct EnrolPage {
    shell: Shell,
    required: bool,
    secret: String,
    /// The QR code as base-64 SVG, shown through a `data:` image (no raw HTML in pages).
    qr_svg: String,
    error: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "account/recovery_codes.html")]
struct RecoveryCodesPage {
    shell: Shell,
    codes: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct EnrolForm {
    secret: String,
    code: String,
}

/// `GET /account/second-factor`: a new secret, as a QR code drawn on the server.
pub async fn enrol_page(
    state: web::Data<AppState>,
    who: SignedIn,
) -> Result<HttpResponse, WebError> {
    if who.session.stage == Stage::SecondFactor {
        return Ok(redirect("/login/second-factor"));
    }
    let secret = totp::TotpSecret::generate(state.random.as_ref())
        .map_err(|e| WebError::Internal(e.to_string()))?;
    enrol_form(&who, &secret.to_base32(), None, StatusCode::OK)
}

fn enrol_form(
    who: &SignedIn,
    secret: &str,
    error: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let uri = totp::provisioning_uri(
        &totp::TotpSecret::from_base32(secret)
            .map_err(|_| WebError::BadRequest("malformed secret".into()))?,
        "Clientele",
        &who.user.login,
    );
    let page = EnrolPage {
        shell: Shell::signed_in(who, "Second factor", "/account"),
        required: who.user.role.requires_second_factor(),
        secret: secret.to_owned(),
        qr_svg: data_encoding::BASE64.encode(
            totp::qr_svg(&uri)
                .map_err(|e| WebError::Internal(e.to_string()))?
                .as_bytes(),
        ),
        error,
    };
    render(&page, status)
}

/// `POST /account/second-factor`: confirms the app works with one code, then shows the
/// recovery codes once.
pub async fn enrol(
    state: web::Data<AppState>,
    who: SignedIn,
    form: web::Form<EnrolForm>,
) -> Result<HttpResponse, WebError> {
    if who.session.stage == Stage::SecondFactor {
        return Ok(redirect("/login/second-factor"));
    }
    let secret = totp::TotpSecret::from_base32(form.secret.trim())
        .map_err(|_| WebError::BadRequest("malformed secret".into()))?;
    let now = state.clock.now().as_second();
    let enrolment = Event::new(Action::SecondFactorEnrolled)
        .by(who.actor())
        .target("user", who.user.id);
    let Some(step) = totp::verify(&secret, &form.code, now, None) else {
        state
            .audit
            .record(enrolment.failed("confirmation code did not match"))
            .await?;
        return enrol_form(
            &who,
            form.secret.trim(),
            Some(
                "That code does not match; check the time on your phone and try the next code."
                    .into(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    };
    let codes = totp::generate_recovery_codes(state.random.as_ref(), 10)
        .map_err(|e| WebError::Internal(e.to_string()))?;
    let mut user = who.user.clone();
    user.totp_secret = Some(secret.to_base32());
    user.totp_last_step = Some(step);
    user.recovery_codes = codes.iter().map(|c| totp::hash_recovery_code(c)).collect();
    let enrolled = enrolment.fields(["totp_secret", "totp_last_step", "recovery_codes"]);
    state.accounts.save(&mut user, vec![enrolled]).await?;
    if who.session.stage == Stage::Enrol {
        let mut session = who.session.clone();
        state
            .sessions
            .set_stage(who.key, &mut session, Stage::Full)
            .await?;
    }
    info!(user = %user.id, "second factor enrolled");
    let page = RecoveryCodesPage {
        shell: Shell::signed_in(&who, "Recovery codes", "/account"),
        codes,
    };
    render(&page, StatusCode::OK)
}
