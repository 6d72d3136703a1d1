//! The central access guard. Every route is registered from the route table with a
//! [`Policy`]; this guard enforces it before the handler runs:
//!
//! 1. state-changing requests from another site are refused (`Sec-Fetch-Site`, `Origin`);
//! 2. the caller is identified: a session cookie, or a bearer token on `/api/v1`;
//! 3. the policy is checked: role, sign-in stage, token scope;
//! 4. state-changing requests must carry the session's CSRF token (form field `csrf` or header
//!    `X-CSRF-Token`), compared in constant time;
//! 5. authenticated answers get `Cache-Control: no-store`.
//!
//! Refusals are logged as security events and recorded in the audit trail
//! (`auth.access_denied`, `token.denied`) with the reason and the route pattern, never with the
//! secret, the path or the query string. A session found past its timeout is ended and
//! recorded here (`auth.session_expired`).

use std::borrow::Cow;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use tracing::warn;

use crate::audit::{Action, Actor, Event};
use crate::auth::sessions::{Lookup, Session, SessionKey, Stage};
use crate::auth::tokens::TokenCheck;
use crate::domain::account::{ApiToken, Role, User};

use super::AppState;
use super::error::WebError;
use super::signin::client_address;

/// Name of the session cookie (`__Host-`: Secure, Path=/, no Domain).
pub const SESSION_COOKIE: &str = "__Host-clientele";
/// Double-submit cookie that protects the sign-in form, before any session exists.
pub const LOGIN_COOKIE: &str = "__Host-clientele-login";

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Anyone: the sign-in page, health checks, static files.
    Public,
    /// A signed-in user at any sign-in stage (second factor, forced password change,
    /// enrolment, sign-out).
    SignInStep,
    /// A fully signed-in user with one of these roles.
    Staff(&'static [Role]),
    /// `/api/v1`: a signed-in user with one of these roles, or a token with this scope.
    Api {
        roles: &'static [Role],
        scope: &'static str,
    },
}

/// Every role.
pub const ANY_ROLE: &[Role] = &Role::ALL;

/// Any valid token may call an endpoint with this scope.
pub const ANY_SCOPE: &str = "*";

/// The caller of a request, put in the request's extensions by the guard.
#[derive(Debug, Clone)]
pub enum Principal {
    User(Box<SignedIn>),
    Token(ApiToken),
}

/// A signed-in user and their session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    pub key: SessionKey,
    pub session: Session,
    /// Client address of this request.
    pub address: String,
}

impl SignedIn {
    /// The user as the actor of an audit event, from this request's address.
    #[must_use]
    pub fn actor(&self) -> Actor {
        Actor::user(&self.user).from_address(self.address.clone())
    }
}

impl FromRequest for SignedIn {
    type Error = WebError;
    type Future = std::future::Ready<Result<Self, WebError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(match req.extensions().get::<Principal>() {
            Some(Principal::User(signed_in)) => Ok(SignedIn::clone(signed_in)),
            _ => Err(WebError::Unauthorized),
        })
    }
}

impl FromRequest for Principal {
    type Error = WebError;
    type Future = std::future::Ready<Result<Self, WebError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .ok_or(WebError::Unauthorized),
        )
    }
}

impl Principal {
    /// The caller as the actor of an audit event, from the request's address.
    #[must_use]
    pub fn actor(&self, req: &HttpRequest) -> Actor {
        match self {
            Self::User(signed_in) => signed_in.actor(),
            Self::Token(token) => Actor::token(token).from_address(client_address(req)),
        }
    }

    /// Whether the caller may see the figures of `store`.
    #[must_use]
    pub fn can_see_store(&self, store: crate::domain::Id) -> bool {
        match self {
            Self::User(signed_in) => signed_in.user.can_see_store(store),
            Self::Token(token) => token.stores.is_empty() || token.stores.contains(&store),
        }
    }
}

/// Runs the guard for `policy` around the handler.
#[allow(clippy::too_many_lines)] // the guard's steps read top to bottom, as listed above
pub async fn enforce(
    policy: Policy,
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Err(WebError::Internal("application state missing".into()).into());
    };
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if unsafe_method && let Some(reason) = cross_site(&req) {
        let actor = cookie_actor(&state, req.request())?;
        return refuse(
            &state,
            req,
            WebError::Forbidden(reason.into()),
            actor,
            reason,
        )
        .await;
    }

    let principal = match policy {
        Policy::Public => {
            if unsafe_method && !login_form_token_matches(&mut req).await? {
                let actor = Actor::anonymous().from_address(client_address(req.request()));
                return refuse(
                    &state,
                    req,
                    WebError::Forbidden("the form expired; reload the page and try again".into()),
                    actor,
                    "sign-in form token missing or wrong",
                )
                .await;
            }
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_boxed_body);
        }
        Policy::Api { roles, scope } => match bearer(&req) {
            Some(secret) => match state.tokens.authenticate(&secret).map_err(WebError::from)? {
                TokenCheck::Valid(token)
                    if scope == ANY_SCOPE || token.scopes.iter().any(|s| s == scope) =>
                {
                    Principal::Token(token)
                }
                TokenCheck::Valid(token) => {
                    let actor = Actor::token(&token).from_address(client_address(req.request()));
                    return refuse(
                        &state,
                        req,
                        WebError::Forbidden(format!("this token lacks the scope `{scope}`")),
                        actor,
                        format!("token lacks the scope {scope}"),
                    )
                    .await;
                }
                TokenCheck::Revoked(token) => {
                    let event = Event::new(Action::TokenDenied)
                        .by(Actor::token(&token).from_address(client_address(req.request())))
                        .target("token", token.id)
                        .denied("revoked token");
                    return refuse_with(&state, req, WebError::Unauthorized, event).await;
                }
                TokenCheck::Unknown => {
                    // Only that an unknown secret was sent is recorded, never the secret.
                    let event = Event::new(Action::TokenDenied)
                        .by(Actor::anonymous().from_address(client_address(req.request())))
                        .denied("unknown token");
                    return refuse_with(&state, req, WebError::Unauthorized, event).await;
                }
            },
            None => match find_session(&state, req.request()).await? {
                SessionFound::Live(signed_in)
                    if signed_in.session.stage == Stage::Full
                        && roles.contains(&signed_in.user.role) =>
                {
                    Principal::User(signed_in)
                }
                SessionFound::Live(signed_in) => {
                    let reason = if signed_in.session.stage == Stage::Full {
                        "role not allowed"
                    } else {
                        "sign-in incomplete"
                    };
                    let actor = signed_in.actor();
                    return refuse(
                        &state,
                        req,
                        WebError::Forbidden("your role cannot use this".into()),
                        actor,
                        reason,
                    )
                    .await;
                }
                found => return refuse_unidentified(&state, req, unsafe_method, &found).await,
            },
        },
        Policy::SignInStep | Policy::Staff(_) => {
            let signed_in = match find_session(&state, req.request()).await? {
                SessionFound::Live(signed_in) => signed_in,
                found if unsafe_method => {
                    return refuse_unidentified(&state, req, unsafe_method, &found).await;
                }
                _ => return Ok(req.into_response(redirect("/login"))),
            };
            if let Policy::Staff(roles) = policy {
                if let Some(step) = pending_step(signed_in.session.stage) {
                    if unsafe_method {
                        let actor = signed_in.actor();
                        return refuse(
                            &state,
                            req,
                            WebError::Forbidden("finish signing in first".into()),
                            actor,
                            "sign-in incomplete",
                        )
                        .await;
                    }
                    return Ok(req.into_response(redirect(step)));
                }
                if !roles.contains(&signed_in.user.role) {
                    let actor = signed_in.actor();
                    return refuse(
                        &state,
                        req,
                        WebError::Forbidden("your role cannot open this page".into()),
                        actor,
                        "role not allowed",
                    )
                    .await;
                }
            }
            Principal::User(signed_in)
        }
    };

    if unsafe_method && let Principal::User(signed_in) = &principal {
        let sent = csrf_token(&mut req).await?;
        let valid = sent.is_some_and(|sent| same_secret(&sent, &signed_in.session.csrf));
        if !valid {
            let actor = signed_in.actor();
            let message = "the form expired or did not come from this site; reload the page and \
                           try again";
            return refuse(
                &state,
                req,
                WebError::Forbidden(message.into()),
                actor,
                "CSRF token missing or wrong",
            )
            .await;
        }
    }

    req.extensions_mut().insert(principal);
    let mut res = next.call(req).await?.map_into_boxed_body();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

/// The page a session at `stage` must finish before anything else.
#[must_use]
pub fn pending_step(stage: Stage) -> Option<&'static str> {
    match stage {
        Stage::SecondFactor => Some("/login/second-factor"),
        Stage::ChangePassword => Some("/account/password"),
        Stage::Enrol => Some("/account/second-factor"),
        Stage::Full => None,
    }
}

/// What a request's session cookie leads to.
#[derive(Debug)]
pub enum SessionFound {
    /// No session cookie.
    NoCookie,
    /// A cookie of no session: signed out, revoked, replayed or made up.
    Dead,
    /// A session that ended on this request (a timeout, a disabled account), recorded as it
    /// ended.
    Ended,
    Live(Box<SignedIn>),
}

/// The session of a request. A session found past its timeout, or whose account is disabled,
/// is ended here with its audit entry (`auth.session_expired`, `auth.session_revoked`).
pub async fn find_session(state: &AppState, req: &HttpRequest) -> Result<SessionFound, WebError> {
    let Some(cookie) = req.cookie(SESSION_COOKIE) else {
        return Ok(SessionFound::NoCookie);
    };
    let address = client_address(req);
    match state.sessions.find(cookie.value())? {
        Lookup::Unknown => Ok(SessionFound::Dead),
        Lookup::Expired(key, session, timeout) => {
            let event = Event::new(Action::SessionExpired)
                .by(session_owner(state, session.user_id)?.from_address(address))
                .target("session", key.handle())
                .reason(timeout.reason());
            state.sessions.end(key, event).await?;
            Ok(SessionFound::Ended)
        }
        Lookup::Live(key, session) => match state.accounts.get(session.user_id)? {
            Some(user) if !user.disabled => Ok(SessionFound::Live(Box::new(SignedIn {
                user,
                key,
                session,
                address,
            }))),
            user => {
                let (actor, reason) = match user {
                    Some(user) => (Actor::user(&user), "account disabled"),
                    None => (Actor::system(GUARD), "account no longer exists"),
                };
                let event = Event::new(Action::SessionRevoked)
                    .by(actor.from_address(address))
                    .target("session", key.handle())
                    .reason(reason);
                state.sessions.end(key, event).await?;
                Ok(SessionFound::Ended)
            }
        },
    }
}

/// The guard's name when it acts for an account that is gone.
const GUARD: &str = "access-guard";

/// The owner of a session as an actor (the guard itself if the account is gone).
fn session_owner(state: &AppState, user: crate::domain::Id) -> Result<Actor, WebError> {
    Ok(state
        .accounts
        .get(user)?
        .map_or_else(|| Actor::system(GUARD), |user| Actor::user(&user)))
}

/// The user of a request's live session, found without touching the session, or anonymous:
/// the actor of a request refused before it was identified.
fn cookie_actor(state: &AppState, req: &HttpRequest) -> Result<Actor, WebError> {
    let owner = match req.cookie(SESSION_COOKIE) {
        Some(cookie) => match state.sessions.peek(cookie.value())? {
            Some(session) => session_owner(state, session.user_id)?,
            None => Actor::anonymous(),
        },
        None => Actor::anonymous(),
    };
    Ok(owner.from_address(client_address(req)))
}

/// Refuses a request that carries no live session. A state-changing request with a dead
/// cookie (replayed or made up) is recorded; one with no cookie at all is only logged, and a
/// session that just ended was recorded as it ended.
async fn refuse_unidentified(
    state: &AppState,
    req: ServiceRequest,
    unsafe_method: bool,
    found: &SessionFound,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if unsafe_method && matches!(found, SessionFound::Dead) {
        let actor = Actor::anonymous().from_address(client_address(req.request()));
        return refuse(
            state,
            req,
            WebError::Unauthorized,
            actor,
            "cookie of no live session",
        )
        .await;
    }
    let route = req.match_pattern().unwrap_or_default();
    warn!(security_event = "no session", method = %req.method(), route = %route, "request refused");
    Ok(req.error_response(WebError::Unauthorized))
}

fn bearer(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| secret.trim().to_owned())
}

/// Why a state-changing request looks cross-site, if it does. Browsers that send
/// `Sec-Fetch-Site` are judged by it; otherwise a present `Origin` must be this host. (With
/// `Referrer-Policy: no-referrer` browsers send `Origin: null` on form posts, which proves
/// nothing either way; the CSRF token still has to match.)
fn cross_site(req: &ServiceRequest) -> Option<&'static str> {
    if let Some(site) = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        return (!matches!(site, "same-origin" | "none"))
            .then_some("requests from other sites are refused");
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())?;
    if origin == "null" {
        return None;
    }
    let host = req.connection_info().host().to_owned();
    let same = origin
        .strip_prefix("https://")
        .is_some_and(|o| o.eq_ignore_ascii_case(&host));
    (!same).then_some("requests from other origins are refused")
}

/// The CSRF token sent with a request: the `X-CSRF-Token` header, or the `csrf` field of a
/// URL-encoded form or of a file-upload form (the body is put back for the handler).
async fn csrf_token(req: &mut ServiceRequest) -> Result<Option<String>, Error> {
    if let Some(value) = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        return Ok(Some(value.to_owned()));
    }
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(super::upload::boundary);
    if let Some(boundary) = boundary {
        return multipart_field(req, &boundary, "csrf").await;
    }
    form_field(req, "csrf").await
}

async fn form_field(req: &mut ServiceRequest, name: &str) -> Result<Option<String>, Error> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok(None);
    }
    let body = req.extract::<web::Bytes>().await?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    req.set_payload(actix_web::dev::Payload::from(body));
    Ok(fields
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value))
}

/// A text field of a file-upload form. The body is read whole (up to the upload limit, only
/// for signed-in callers: this runs after the session was found) and put back for the handler.
async fn multipart_field(
    req: &mut ServiceRequest,
    boundary: &str,
    name: &str,
) -> Result<Option<String>, Error> {
    let payload = req.extract::<web::Payload>().await?;
    let body = super::upload::read_limited(payload, super::upload::UPLOAD_LIMIT).await?;
    let value = super::upload::parts(&body, boundary)
        .unwrap_or_default()
        .into_iter()
        .find(|part| part.name == name && part.filename.is_none())
        .and_then(|part| String::from_utf8(part.data.to_vec()).ok());
    req.set_payload(actix_web::dev::Payload::from(body));
    Ok(value)
}

async fn login_form_token_matches(req: &mut ServiceRequest) -> Result<bool, Error> {
    let Some(cookie) = req.cookie(LOGIN_COOKIE).map(|c| c.value().to_owned()) else {
        return Ok(false);
    };
    let sent = form_field(req, "csrf").await?;
    Ok(sent.is_some_and(|sent| same_secret(&sent, &cookie)))
}

/// Compares two secrets without leaking where they differ: the SHA-256 digests are compared,
/// so timing says nothing about the secret's bytes.
fn same_secret(a: &str, b: &str) -> bool {
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    digest(a).as_ref() == digest(b).as_ref()
}

/// Refuses a request and records an `auth.access_denied` entry: `actor`, the route pattern as
/// target, and `reason`. If the entry cannot be written the answer is a 500 (fail closed).
async fn refuse(
    state: &AppState,
    req: ServiceRequest,
    error: WebError,
    actor: Actor,
    reason: impl Into<Cow<'static, str>>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let event = Event::new(Action::AccessDenied)
        .by(actor)
        .target("route", route_of(&req))
        .denied(reason);
    refuse_with(state, req, error, event).await
}

/// Refuses a request and records `event`; fails closed like [`refuse`].
async fn refuse_with(
    state: &AppState,
    req: ServiceRequest,
    error: WebError,
    event: Event,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let route = req.match_pattern().unwrap_or_default();
    warn!(security_event = %event.reason, method = %req.method(), route = %route, "request refused");
    state.audit.record(event).await.map_err(WebError::from)?;
    Ok(req.error_response(error))
}

/// The method and route pattern of a request (`POST /admin/users/{id}`): never the concrete
/// path or the query string, which can hold personal data.
fn route_of(req: &ServiceRequest) -> String {
    format!(
        "{} {}",
        req.method(),
        req.match_pattern().as_deref().unwrap_or("unmatched")
    )
}

/// A 303 to another page of the app.
#[must_use]
pub fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_owned()))
        .finish()
}
