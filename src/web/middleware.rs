//! Request middleware: one tracing span per request and the security headers on every answer.
//!
//! The span carries the method, the matched route pattern (never the raw path, which may hold
//! ids, nor the query string), the status, the latency and a request id that is also sent back
//! in `X-Request-Id` and shown on error pages.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{Error, HttpMessage, web};
use tracing::{Instrument, field};

use super::AppState;

/// The id of one request, in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let request_id = req
        .app_data::<web::Data<AppState>>()
        .map_or_else(|| "-".to_owned(), |state| state.new_request_id());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        route = field::Empty,
        status = field::Empty,
        latency_ms = field::Empty,
        request_id = %request_id,
    );
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let latency = started.elapsed().as_secs_f64() * 1000.0;
    match &result {
        Ok(res) => {
            let route = res
                .request()
                .match_pattern()
                .unwrap_or_else(|| "(unmatched)".into());
            span.record("route", route.as_str());
            span.record("status", res.status().as_u16());
            span.record("latency_ms", latency);
            span.in_scope(|| tracing::info!("request finished"));
        }
        Err(err) => {
            span.record("latency_ms", latency);
            span.in_scope(|| {
                tracing::warn!(
                    status = err.as_response_error().status_code().as_u16(),
                    "request failed"
                );
            });
        }
    }
    let mut res = result?;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(res)
}

/// Headers sent with every response.
#[must_use]
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ))
        .add((
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        ))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add(("Cross-Origin-Opener-Policy", "same-origin"))
        .add(("Cross-Origin-Resource-Policy", "same-origin"))
        .add((
            "Permissions-Policy",
            "camera=(), microphone=(), geolocation=(), payment=()",
        ))
}

/// Replaces the body of error answers with the rendered error (HTML or JSON) carrying the
/// request id, and logs the detail of server errors under that id.
pub async fn error_pages(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, Error> {
    let wants_json = wants_json(&req);
    let res = next.call(req).await?;
    let status = res.status();
    let Some(error) = res.response().error() else {
        return Ok(res.map_into_boxed_body());
    };
    let request_id = res
        .request()
        .extensions()
        .get::<RequestId>()
        .map_or_else(|| "-".to_owned(), |id| id.0.clone());
    if status.is_server_error() {
        tracing::error!(request_id = %request_id, error = %error, "server error");
    }
    let code = super::error::code_of(error, status);
    let message = super::error::public_message(status, error);
    let fields = error
        .as_error::<super::error::WebError>()
        .map(super::error::WebError::fields)
        .unwrap_or_default();
    let mut body = super::error::render(status, code, &message, &request_id, wants_json, &fields);
    for name in [
        header::RETRY_AFTER,
        header::WWW_AUTHENTICATE,
        header::CACHE_CONTROL,
        header::SET_COOKIE,
    ] {
        for value in res.headers().get_all(&name) {
            body.headers_mut().append(name.clone(), value.clone());
        }
    }
    let (http_req, _) = res.into_parts();
    Ok(ServiceResponse::new(http_req, body))
}

fn wants_json(req: &ServiceRequest) -> bool {
    if req.path().starts_with("/api/") || req.path() == "/healthz" {
        return true;
    }
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json") && !accept.contains("text/html"))
}
