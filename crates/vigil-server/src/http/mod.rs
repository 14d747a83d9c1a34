//! The HTTP service: one routing table, and the wrapper every request goes through.
//!
//! The wrapper gives each request its id, catches a panicking handler (answering 500 instead
//! of dropping the connection and everything in flight on it), renders errors, and stamps
//! `X-Request-Id` on every response. Handlers live in their own modules and return
//! `Result<Response, ApiError>`.

pub mod body;
pub mod error;
mod events;
pub mod list;
pub mod request_id;

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::state::AppState;
use error::ApiError;

/// Every response body is a complete buffer.
pub type Body = Full<Bytes>;

/// Serves one request: request id, routing, errors, panics.
pub async fn serve(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let request_id = request_id::from_headers(request.headers());
    let method = request.method().clone();
    let routed = AssertUnwindSafe(route(&state, request, &request_id))
        .catch_unwind()
        .await;
    let mut response = match routed {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            if error.status.is_server_error() {
                tracing::warn!(request_id, %method, status = error.status.as_u16(), code = error.code, "request failed");
            }
            error.into_response(&request_id)
        }
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(request_id, %method, reason, "handler panicked");
            ApiError::internal().into_response(&request_id)
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(request_id::HEADER, value);
    }
    Ok(response)
}

/// The routing table: method and path to handler, in one place.
async fn route(
    state: &AppState,
    request: Request<Incoming>,
    request_id: &str,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path();
    match path {
        "/api/health" => match *request.method() {
            Method::GET | Method::HEAD => {
                Ok(json(StatusCode::OK, Bytes::from_static(b"{\"ok\":true}")))
            }
            _ => Err(ApiError::method_not_allowed("GET, HEAD")),
        },
        "/ws" => match *request.method() {
            Method::GET => crate::ws::upgrade(state, request).await,
            _ => Err(ApiError::method_not_allowed("GET")),
        },
        "/api/events" => match *request.method() {
            Method::POST => events::ingest(state, request, request_id).await,
            Method::GET | Method::HEAD => list::list(state, &request).await,
            _ => Err(ApiError::method_not_allowed("GET, HEAD, POST")),
        },
        _ => match path.strip_prefix("/api/events/") {
            Some(id) if !id.contains('/') => match *request.method() {
                Method::GET | Method::HEAD => list::get(state, id).await,
                _ => Err(ApiError::method_not_allowed("GET, HEAD")),
            },
            _ => Err(ApiError::not_found()),
        },
    }
}

/// A JSON response.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
