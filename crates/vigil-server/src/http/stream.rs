//! `GET /api/events/stream`: live events as Server-Sent Events, for clients that cannot speak
//! WebSocket (`curl -N`, a browser's `EventSource`, log shippers, proxies that only pass plain
//! HTTP). The stream itself is the realtime crate's [`SseStream`]; this module is its HTTP
//! edge, with the same rules as `/ws`:
//! - the same filters (`type`, `level`, `source`) → 400 `invalid_query` when malformed;
//! - resume after `Last-Event-ID` (what `EventSource` sends when it reconnects) or `?since=`
//!   (the header wins: it is newer) → 400 `validation_failed` for a malformed header;
//! - read tokens as a bearer header, or `?token=` (`EventSource` cannot set headers);
//! - `VIGIL_WS_MAX_CLIENTS` and `VIGIL_WS_MAX_CLIENTS_PER_ADDR` count both kinds of client;
//! - CORS as on every route (the service wrapper adds the headers for allowed origins).

use std::net::IpAddr;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, HeaderName, Request, Response};
use hyper::body::Incoming;
use vigil_realtime::Wire;
use vigil_realtime::sse::SseStream;

use crate::http::Body;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::ws::join_hub;
use crate::security::Scope;
use crate::state::AppState;

/// The header a reconnecting `EventSource` names the last event it got with.
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// Tells a buffering reverse proxy (nginx) to pass the stream on as it comes.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// `GET /api/events/stream`: checks access and the query, joins the hub and answers 200 with
/// the stream as the body.
pub fn open(
    state: &AppState,
    request: &Request<Incoming>,
    client: IpAddr,
) -> Result<Response<Body>, ApiError> {
    let headers = request.headers();
    state
        .security
        .authorize(Scope::Read, headers, request.uri().query())?;
    let (filter, since) = vigil_core::parse_subscribe_query(request.uri().query())
        .map_err(|error| ApiError::new(ErrorCode::InvalidQuery, error.to_string()))?;
    let since = last_event_id(headers)?.or(since);
    // Held by the stream: the address's count drops when the stream ends.
    let slot = state.security.ws_slot(client)?;
    let (registration, resume) = join_hub(state, Wire::Sse, filter, since)?;
    let stream = SseStream::new(&state.hub, registration, resume, slot);
    let mut response = Response::new(Body::Events(Box::new(stream)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    Ok(response)
}

/// The id in `Last-Event-ID`, if the request has one (an empty value is none, as the SSE
/// specification sends it).
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(LAST_EVENT_ID) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("\u{fffd}").trim();
    if text.is_empty() {
        return Ok(None);
    }
    vigil_core::parse_event_id(text).map(Some).ok_or_else(|| {
        ApiError::invalid_header(
            "Last-Event-ID",
            "must be an event id (an integer from 0 to 2^53 - 1)",
        )
    })
}
