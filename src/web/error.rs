//! Web errors, mapped once: each kind has an HTTP status and a stable `snake_case` code. JSON
//! clients (paths under `/api/` or `Accept: application/json`) get `{"error": {...}}`, browsers
//! an HTML page. A 500 shows the request id and never the source error's text; the log has the
//! detail under that id.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use serde::Serialize;

use crate::domain::customer::FieldError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("there is nothing at this address")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    /// A field failed validation (422); forms show it next to the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Several fields failed validation (422); JSON clients get each one in `fields`.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidFields(Vec<FieldError>),
    /// The request clashes with what is stored (409), said in words a client can act on (an
    /// identity held by another customer, an idempotency key reused with another body).
    #[error("{0}")]
    Conflict(String),
    /// A body over the route's limit (413).
    #[error("the upload is larger than the {} MB accepted; split the file", .0 / (1024 * 1024))]
    TooLarge(usize),
    #[error("sign in first")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("too many attempts; try again in {retry_after} seconds")]
    TooManyRequests { retry_after: i64 },
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
            Self::Invalid { .. } | Self::InvalidFields(_) => "invalid",
            Self::TooLarge(_) => "payload_too_large",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::Conflict(_) | Self::Store(StoreError::Conflict { .. }) => "conflict",
            Self::Store(_) | Self::Internal(_) => "internal",
        }
    }

    /// The refused fields, each with why, for the JSON body of a 422.
    #[must_use]
    pub fn fields(&self) -> Vec<FieldError> {
        match self {
            Self::InvalidFields(list) => list.clone(),
            Self::Invalid { field, message } => vec![FieldError {
                field: field.clone(),
                message: message.clone(),
            }],
            _ => Vec::new(),
        }
    }
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Invalid { .. } | Self::InvalidFields(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Conflict(_) | Self::Store(StoreError::Conflict { .. }) => StatusCode::CONFLICT,
            Self::Store(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // The body is written by `render` in the middleware, which knows the request id and
        // whether the client wants JSON; this plain answer is only a fallback.
        let mut res = HttpResponse::build(self.status_code());
        if let Self::TooManyRequests { retry_after } = self {
            res.insert_header(("Retry-After", retry_after.to_string()));
        }
        res.finish()
    }
}

impl From<crate::auth::AuthError> for WebError {
    fn from(err: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError;
        match err {
            AuthError::Invalid { field, message } => Self::Invalid {
                field: field.into(),
                message,
            },
            AuthError::Password(rejected) => Self::Invalid {
                field: "password".into(),
                message: rejected.to_string(),
            },
            AuthError::Busy => Self::TooManyRequests { retry_after: 1 },
            AuthError::Store(err) => Self::Store(err),
            AuthError::Hashing(err) => Self::Internal(err.to_string()),
        }
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
    /// Each refused field and why (validation errors only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fields: Vec<JsonField<'a>>,
}

#[derive(Serialize)]
struct JsonField<'a> {
    field: &'a str,
    message: &'a str,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    shell: super::shell::Shell,
    reason: &'a str,
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
    fields: &[FieldError],
) -> HttpResponse {
    if json {
        return HttpResponse::build(status).json(JsonError {
            error: JsonErrorBody {
                code,
                message,
                request_id,
                fields: fields
                    .iter()
                    .map(|f| JsonField {
                        field: &f.field,
                        message: &f.message,
                    })
                    .collect(),
            },
        });
    }
    let reason = status.canonical_reason().unwrap_or("Error");
    let page = ErrorPage {
        shell: super::shell::Shell::anonymous(reason),
        reason,
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
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}
