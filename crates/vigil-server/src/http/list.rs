//! `GET /api/events` and `GET /api/events/{id}`: reading events back.
//!
//! The cache rule (docs/architecture.md): page 1, size ≤ 50, no filter, no cursor → the recent list
//! (Redis's `events:recent`, or the embedded mode's in-process list; see `cache.rs`)
//! (`X-Cache: HIT`), else the database (`X-Cache: MISS`). The list answers
//! only when it can do so truthfully (it holds more than `size` entries and no gap is
//! marked); otherwise the database answers and the list is refilled in the background.
//! Every item is the stored-event JSON, byte-identical whichever side answers.

use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use vigil_core::{EventQuery, MAX_ID_EXCLUSIVE, QueryError};
use vigil_store::StoreError;

use super::error::{ApiError, ErrorCode};
use super::{Body, json};
use crate::page::page_body;
use crate::state::AppState;

pub async fn list(
    state: &AppState,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let query = EventQuery::parse(request.uri().query()).map_err(invalid_query)?;
    if query.is_cacheable()
        && let Some(cache) = &state.cache
    {
        if let Some(body) = cache.page(&query).await {
            return Ok(with_cache_header(json(StatusCode::OK, body), "HIT"));
        }
        let page = state
            .store
            .list(&query)
            .await
            .map_err(|error| store_error(state, error))?;
        cache.refill_soon(&state.store);
        return Ok(with_cache_header(
            json(StatusCode::OK, page_body(&query, &page)),
            "MISS",
        ));
    }
    let page = state
        .store
        .list(&query)
        .await
        .map_err(|error| store_error(state, error))?;
    Ok(with_cache_header(
        json(StatusCode::OK, page_body(&query, &page)),
        "MISS",
    ))
}

pub async fn get(state: &AppState, id_text: &str) -> Result<Response<Body>, ApiError> {
    let id = id_text
        .parse::<u64>()
        .ok()
        .filter(|id| (1..MAX_ID_EXCLUSIVE).contains(id) && !id_text.starts_with('+'))
        .ok_or_else(no_such_event)?;
    match state
        .store
        .get(id)
        .await
        .map_err(|error| store_error(state, error))?
    {
        Some(event) => Ok(json(StatusCode::OK, event.as_ref().encode())),
        None => Err(no_such_event()),
    }
}

fn no_such_event() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no event with this id")
}

fn with_cache_header(mut response: Response<Body>, outcome: &'static str) -> Response<Body> {
    response
        .headers_mut()
        .insert("x-cache", HeaderValue::from_static(outcome));
    response
}

fn invalid_query(error: QueryError) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, error.to_string())
}

/// The one place read-side store failures become HTTP answers.
fn store_error(state: &AppState, error: StoreError) -> ApiError {
    state.metrics.record_db_read_error();
    if error.is_retriable() {
        tracing::warn!(%error, "event read failed");
        ApiError::new(
            ErrorCode::StoreUnavailable,
            "the database is unavailable; retry shortly",
        )
    } else {
        tracing::error!(%error, "event read failed");
        ApiError::internal()
    }
}
