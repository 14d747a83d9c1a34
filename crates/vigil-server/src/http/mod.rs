//! The HTTP service: one routing table, and the wrapper every request goes through.
//!
//! The wrapper gives each request its id, catches a panicking handler (answering 500 instead
//! of dropping the connection and everything in flight on it), renders errors, and stamps
//! `X-Request-Id` on every response, answers CORS preflights from allowed origins and adds
//! the CORS headers to their actual requests, and records the request in the metrics (route
//! pattern, method, status, latency; never the query, which may hold `?token=`). The routing
//! table checks tokens per route ([`crate::security`]). Handlers live in their own modules and
//! return `Result<Response, ApiError>`.

pub mod body;
pub mod error;
mod events;
pub mod list;
mod ready;
pub mod request_id;
mod response_body;
mod stream;
pub mod ws;

pub use response_body::Body;

pub use crate::api::{ROUTES, Route};

use std::convert::Infallible;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{ACCESS_CONTROL_REQUEST_METHOD, CONTENT_TYPE, ORIGIN};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::metrics::Exporter;
use crate::security::Scope;
use crate::state::AppState;
use error::{ApiError, ErrorCode};

/// The OpenAPI 3.1 description of this API (`crates/vigil-server/openapi.json`), served at
/// `GET /api/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// Serves one request from the TCP peer `peer`: request id, CORS, routing, errors, panics.
pub async fn serve(
    state: Arc<AppState>,
    peer: IpAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let request_id = request_id::from_headers(request.headers());
    let method = request.method().clone();
    let matched = Route::of(request.uri().path());
    let origin = request.headers().get(ORIGIN).cloned();
    let preflight = (method == Method::OPTIONS
        && request
            .headers()
            .contains_key(ACCESS_CONTROL_REQUEST_METHOD))
    .then(|| state.security.cors.preflight(origin.as_ref()))
    .flatten();
    let client = state.security.client_addr(peer, request.headers());
    let routed = match preflight {
        Some(headers) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            *response.headers_mut() = headers;
            Ok(Ok(response))
        }
        None => {
            AssertUnwindSafe(route(&state, matched, request, &request_id, client))
                .catch_unwind()
                .await
        }
    };
    let mut response = match routed {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            if error.status().is_server_error() {
                tracing::warn!(request_id, %method, status = error.status().as_u16(), code = error.code.as_str(), "request failed");
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
    if response.status() != StatusCode::NO_CONTENT || method != Method::OPTIONS {
        state
            .security
            .cors
            .decorate(origin.as_ref(), response.headers_mut());
    }
    state.metrics.record_request(
        matched,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    Ok(response)
}

/// The dispatcher: the route's handler for the method, and who may call it, in one place.
async fn route(
    state: &AppState,
    matched: Route,
    request: Request<Incoming>,
    request_id: &str,
    client: IpAddr,
) -> Result<Response<Body>, ApiError> {
    let method = request.method().clone();
    let readable = method == Method::GET || method == Method::HEAD;
    let wrong_method = || Err(ApiError::method_not_allowed(matched.allow()));
    match matched {
        Route::Console if readable => Ok(crate::console::page(request.headers())),
        Route::ConsoleFile if readable => {
            let name = request.uri().path().trim_start_matches("/console/");
            crate::console::file(name, request.headers())
        }
        Route::Health if readable => Ok(json(StatusCode::OK, Bytes::from_static(b"{\"ok\":true}"))),
        Route::Ready if readable => Ok(ready::ready(state).await),
        Route::OpenApi if readable => Ok(json(StatusCode::OK, OPENAPI_JSON)),
        // With VIGIL_METRICS_ADDR set, metrics are served on that listener only.
        Route::Metrics if state.config.telemetry.metrics_addr.is_some() => {
            Err(ApiError::not_found())
        }
        Route::Metrics if readable => Ok(metrics_response(&state.exporter)),
        Route::Ws if method == Method::GET => ws::upgrade(state, request, client).await,
        Route::Events if method == Method::POST => {
            events::ingest(state, request, request_id, client).await
        }
        Route::Events if readable => {
            authorize_read(state, &request)?;
            within_request_timeout(state, list::list(state, &request)).await
        }
        Route::EventStream if method == Method::GET => stream::open(state, &request, client),
        Route::Event if readable => {
            authorize_read(state, &request)?;
            let id = request
                .uri()
                .path()
                .strip_prefix("/api/events/")
                .unwrap_or_default();
            within_request_timeout(state, list::get(state, id)).await
        }
        Route::Unmatched => Err(ApiError::not_found()),
        _ => wrong_method(),
    }
}

/// Answers a database read within `VIGIL_REQUEST_TIMEOUT_S`, whatever the database does: the
/// store bounds each statement, and this bounds them all together (a pool wait, a count and a
/// page).
async fn within_request_timeout(
    state: &AppState,
    read: impl Future<Output = Result<Response<Body>, ApiError>>,
) -> Result<Response<Body>, ApiError> {
    tokio::time::timeout(state.config.http.request_timeout(), read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::StoreUnavailable,
                "the database did not answer in time",
            ))
        })
}

/// Refuses a read without a valid read token (when read tokens are configured).
fn authorize_read(state: &AppState, request: &Request<Incoming>) -> Result<(), ApiError> {
    state
        .security
        .authorize(Scope::Read, request.headers(), request.uri().query())?;
    Ok(())
}

/// A scrape answer.
/// The metrics listener's one route (`VIGIL_METRICS_ADDR`): `/metrics`, answered with the
/// main listener's request ids and errors (404 elsewhere, 405 for another method).
pub fn serve_metrics_only(exporter: &Exporter, request: &Request<Incoming>) -> Response<Body> {
    let request_id = request_id::from_headers(request.headers());
    let route = crate::api::Route::Metrics;
    let mut response = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, path) if path == route.pattern() => {
            metrics_response(exporter)
        }
        (_, path) if path == route.pattern() => {
            ApiError::method_not_allowed(route.allow()).into_response(&request_id)
        }
        _ => ApiError::not_found().into_response(&request_id),
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(request_id::HEADER, value);
    }
    response
}

pub fn metrics_response(exporter: &Exporter) -> Response<Body> {
    let mut response = Response::new(Body::full(exporter.render()));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

/// A JSON response.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
