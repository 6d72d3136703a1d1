//! Web errors, mapped once: each kind has an HTTP status and a stable `snake_case` code. JSON
//! clients (paths under `/api/` or `Accept: application/json`) get `{"error": {...}}`, browsers
//! an HTML page. A 500 shows the request id and never the source error's text; the log has the
//! detail under that id.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("there is nothing at this address")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl WebError {
    /// The stable code clients can match on.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::Store(StoreError::Conflict { .. }) => "conflict",
            Self::Store(_) | Self::Internal(_) => "internal",
        }
    }
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Store(StoreError::Conflict { .. }) => StatusCode::CONFLICT,
            Self::Store(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // The body is written by `render` in the middleware, which knows the request id and
        // whether the client wants JSON; this plain answer is only a fallback.
        HttpResponse::build(self.status_code()).finish()
    }
}

/// The message shown to the client: the error's own words for 4xx, a generic line for 5xx.
#[must_use]
pub fn public_message(status: StatusCode, error: &actix_web::Error) -> String {
    if status.is_server_error() {
        "something went wrong on the server; give the request id to your administrator".into()
    } else {
        error.to_string()
    }
}

#[derive(Serialize)]
struct JsonError<'a> {
    error: JsonErrorBody<'a>,
}

#[derive(Serialize)]
struct JsonErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    request_id: &'a str,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    status: u16,
    message: &'a str,
    request_id: &'a str,
}

/// Renders an error answer.
#[must_use]
pub fn render(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
    json: bool,
) -> HttpResponse {
    if json {
        return HttpResponse::build(status).json(JsonError {
            error: JsonErrorBody {
                code,
                message,
                request_id,
            },
        });
    }
    let page = ErrorPage {
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        message,
        request_id,
    };
    match page.render() {
        Ok(html) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(html),
        Err(_) => HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(message.to_owned()),
    }
}

/// The stable code of any actix error: ours, or a generic one by status.
#[must_use]
pub fn code_of(error: &actix_web::Error, status: StatusCode) -> &'static str {
    if let Some(web) = error.as_error::<WebError>() {
        return web.code();
    }
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}
