//! The JSON API under `/api/v1`. Errors are `{"error": {"code", "message", "request_id"}}`;
//! lists use cursor pagination (`?limit=&cursor=`, answer `next_cursor`).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::audit::{Action, Event};
use crate::domain::account::Location;

use super::AppState;
use super::error::WebError;
use super::guard::Principal;

/// `GET /api/v1/me`: who the caller is.
pub async fn me(principal: Principal) -> HttpResponse {
    let body = match principal {
        Principal::User(who) => serde_json::json!({
            "kind": "user",
            "id": who.user.id,
            "login": who.user.login,
            "display_name": who.user.display_name,
            "role": who.user.role,
            "stores": who.user.stores,
        }),
        Principal::Token(token) => serde_json::json!({
            "kind": "token",
            "id": token.id,
            "name": token.name,
            "scopes": token.scopes,
            "stores": token.stores,
        }),
    };
    HttpResponse::Ok().json(body)
}

/// Paging parameters of list endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// 1 to 200; 50 when absent.
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One page of a list.
#[derive(Debug, Serialize)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/locations`: the locations the caller may see, by code.
pub async fn locations(
    state: web::Data<AppState>,
    principal: Principal,
    page: web::Query<Page>,
) -> Result<HttpResponse, WebError> {
    let limit = page.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(WebError::BadRequest(
            "limit must be between 1 and 200".into(),
        ));
    }
    let visible: Vec<Location> = state
        .accounts
        .locations()?
        .into_iter()
        .filter(|l| principal.can_see_store(l.id))
        .filter(|l| {
            page.cursor
                .as_deref()
                .is_none_or(|after| l.code.as_str() > after)
        })
        .collect();
    let next_cursor = (visible.len() > limit).then(|| visible[limit - 1].code.clone());
    let items = visible.into_iter().take(limit).collect();
    Ok(HttpResponse::Ok().json(Listed { items, next_cursor }))
}

/// `GET /api/v1/locations/{id}`: 404 for a location the caller may not see, exactly as for
/// one that does not exist; the refusal is recorded (`auth.access_denied`, store scope).
pub async fn location(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = id.parse().map_err(|_| WebError::NotFound)?;
    let location = state.accounts.location(id)?.ok_or(WebError::NotFound)?;
    if !principal.can_see_store(location.id) {
        let refused = Event::new(Action::AccessDenied)
            .by(principal.actor(&req))
            .target("location", location.id)
            .store(location.id)
            .denied("outside the caller's stores");
        state.audit.record(refused).await?;
        return Err(WebError::NotFound);
    }
    Ok(HttpResponse::Ok().json(location))
}

/// `GET /api/v1/openapi.json`: generated from the route table, so every endpoint is in it.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::routes::openapi())
}

/// Reads a JSON request body. A body that is not JSON, a value of the wrong type or an unknown
/// field is a 422 naming the field by its path (`transactions[1].lines[0].quantity_milli`),
/// with serde's message of what was expected, never the value sent.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, WebError> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut reader).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        let inner = err.into_inner();
        let text = inner.to_string();
        // The position in the body helps nobody once the field is named.
        let text = text
            .rsplit_once(" at line ")
            .map_or(text.as_str(), |(message, _)| message)
            .to_owned();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("is not valid JSON ({text})")
        } else {
            text
        };
        WebError::Invalid { field, message }
    })
}
