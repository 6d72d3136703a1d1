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
//! Refusals are logged as security events with the reason, never with the secret.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use tracing::warn;

use crate::auth::sessions::{Session, SessionKey, Stage};
use crate::domain::account::{ApiToken, Role, User};

use super::AppState;
use super::error::WebError;

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
    User(SignedIn),
    Token(ApiToken),
}

/// A signed-in user and their session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    pub key: SessionKey,
    pub session: Session,
}

impl FromRequest for SignedIn {
    type Error = WebError;
    type Future = std::future::Ready<Result<Self, WebError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(match req.extensions().get::<Principal>() {
            Some(Principal::User(signed_in)) => Ok(signed_in.clone()),
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
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if unsafe_method && let Some(reason) = cross_site(&req) {
        return Ok(refuse(
            req,
            WebError::Forbidden(reason.into()),
            "cross-site request",
        ));
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Err(WebError::Internal("application state missing".into()).into());
    };

    let principal = match policy {
        Policy::Public => {
            if unsafe_method && !login_form_token_matches(&mut req).await? {
                return Ok(refuse(
                    req,
                    WebError::Forbidden("the form expired; reload the page and try again".into()),
                    "login csrf",
                ));
            }
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_boxed_body);
        }
        Policy::Api { roles, scope } => match bearer(&req) {
            Some(secret) => match state.tokens.authenticate(&secret).map_err(WebError::from)? {
                Some(token) if scope == ANY_SCOPE || token.scopes.iter().any(|s| s == scope) => {
                    Principal::Token(token)
                }
                Some(_) => {
                    return Ok(refuse(
                        req,
                        WebError::Forbidden(format!("this token lacks the scope `{scope}`")),
                        "token scope",
                    ));
                }
                None => {
                    return Ok(refuse(
                        req,
                        WebError::Unauthorized,
                        "unknown or revoked token",
                    ));
                }
            },
            None => match signed_in(&state, &req).await? {
                Some(signed_in)
                    if signed_in.session.stage == Stage::Full
                        && roles.contains(&signed_in.user.role) =>
                {
                    Principal::User(signed_in)
                }
                Some(_) => {
                    return Ok(refuse(
                        req,
                        WebError::Forbidden("your role cannot use this".into()),
                        "role",
                    ));
                }
                None => return Ok(refuse(req, WebError::Unauthorized, "no credentials")),
            },
        },
        Policy::SignInStep | Policy::Staff(_) => {
            let Some(signed_in) = signed_in(&state, &req).await? else {
                if unsafe_method {
                    return Ok(refuse(req, WebError::Unauthorized, "no session"));
                }
                return Ok(req.into_response(redirect("/login")));
            };
            if let Policy::Staff(roles) = policy {
                if let Some(step) = pending_step(signed_in.session.stage) {
                    if unsafe_method {
                        return Ok(refuse(
                            req,
                            WebError::Forbidden("finish signing in first".into()),
                            "sign-in incomplete",
                        ));
                    }
                    return Ok(req.into_response(redirect(step)));
                }
                if !roles.contains(&signed_in.user.role) {
                    return Ok(refuse(
                        req,
                        WebError::Forbidden("your role cannot open this page".into()),
                        "role",
                    ));
                }
            }
            Principal::User(signed_in)
        }
    };

    if unsafe_method && let Principal::User(signed_in) = &principal {
        let sent = csrf_token(&mut req).await?;
        let valid = sent.is_some_and(|sent| same_secret(&sent, &signed_in.session.csrf));
        if !valid {
            return Ok(refuse(req, WebError::Forbidden("the form expired or did not come from this site; reload the page and try again".into()), "csrf"));
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

async fn signed_in(state: &AppState, req: &ServiceRequest) -> Result<Option<SignedIn>, Error> {
    let Some(cookie) = req.cookie(SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some((key, session)) = state
        .sessions
        .find(cookie.value())
        .await
        .map_err(WebError::from)?
    else {
        return Ok(None);
    };
    match state
        .accounts
        .get(session.user_id)
        .map_err(WebError::from)?
    {
        Some(user) if !user.disabled => Ok(Some(SignedIn { user, key, session })),
        _ => {
            state.sessions.end(key).await.map_err(WebError::from)?;
            Ok(None)
        }
    }
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
/// URL-encoded form (the body is put back for the handler).
async fn csrf_token(req: &mut ServiceRequest) -> Result<Option<String>, Error> {
    if let Some(value) = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        return Ok(Some(value.to_owned()));
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

fn refuse(req: ServiceRequest, error: WebError, reason: &'static str) -> ServiceResponse<BoxBody> {
    let route = req.match_pattern().unwrap_or_default();
    warn!(security_event = reason, method = %req.method(), route = %route, "request refused");
    req.error_response(error)
}

/// A 303 to another page of the app.
#[must_use]
pub fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_owned()))
        .finish()
}
