//! `POST /api/events`: validate, queue, answer after COMMIT.
//!
//! One object → `201 {"id":N,"requestId":"…"}`; an array or NDJSON →
//! `201 {"ids":[…],"count":n,"requestId":"…"}`. The body is parsed on the worker thread with
//! that thread's reusable [`EventParser`]: parsing is a few microseconds per event, cheaper
//! than handing the body to another thread.

use std::cell::RefCell;
use std::net::IpAddr;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use vigil_core::{EventParser, ParsedBody, write_json_string};
use vigil_ingest::IngestError;

use super::body::{body_format, read_limited};
use super::error::ApiError;
use super::{Body, json};
use crate::security::Scope;
use crate::state::AppState;

thread_local! {
    /// simd-json buffers reused by every request parsed on this worker thread.
    static PARSER: RefCell<Option<EventParser>> = const { RefCell::new(None) };
}

/// Seconds a producer is told to wait after a 503.
const RETRY_AFTER_S: u32 = 1;

pub async fn ingest(
    state: &AppState,
    request: Request<Incoming>,
    request_id: &str,
    client: IpAddr,
) -> Result<Response<Body>, ApiError> {
    let answer = match admit(state, &request, client) {
        Ok(()) => validate_and_store(state, request, request_id).await,
        Err(refused) => Err(refused),
    };
    if let Err(error) = &answer {
        state.metrics.record_ingest_rejected(error.code);
    }
    answer
}

/// Tokens first, then rate limits: an unauthorized caller never spends a producer's budget.
fn admit(state: &AppState, request: &Request<Incoming>, client: IpAddr) -> Result<(), ApiError> {
    let access =
        state
            .security
            .authorize(Scope::Ingest, request.headers(), request.uri().query())?;
    state.security.limit_ingest(access, client)
}

async fn validate_and_store(
    state: &AppState,
    request: Request<Incoming>,
    request_id: &str,
) -> Result<Response<Body>, ApiError> {
    let format = body_format(request.headers())?;
    let (parts, body) = request.into_parts();
    let bytes = read_limited(
        &parts.headers,
        body,
        state.config.max_body_bytes,
        state.config.body_read_timeout(),
    )
    .await?;

    let ParsedBody { events, bulk } = PARSER.with_borrow_mut(|parser| {
        parser
            .get_or_insert_with(|| EventParser::new(state.limits))
            .parse(&bytes, format)
    })?;
    drop(bytes);

    let ack = state
        .ingest
        .submit(events, request_id.to_owned())
        .map_err(ingest_error)?;
    let ids = ack.wait().await.map_err(ingest_error)?;
    Ok(json(
        StatusCode::CREATED,
        created_body(&ids, bulk, request_id),
    ))
}

fn created_body(ids: &[u64], bulk: bool, request_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + ids.len() * 12);
    let mut number = itoa::Buffer::new();
    if bulk {
        out.extend_from_slice(b"{\"ids\":[");
        for (position, id) in ids.iter().enumerate() {
            if position > 0 {
                out.push(b',');
            }
            out.extend_from_slice(number.format(*id).as_bytes());
        }
        out.extend_from_slice(b"],\"count\":");
        out.extend_from_slice(number.format(ids.len()).as_bytes());
    } else {
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(number.format(ids[0]).as_bytes());
    }
    out.extend_from_slice(b",\"requestId\":");
    write_json_string(&mut out, request_id);
    out.push(b'}');
    out
}

/// The one place ingest failures become HTTP answers.
fn ingest_error(error: IngestError) -> ApiError {
    match error {
        IngestError::Overloaded => ApiError::overloaded(
            "the ingest queue is full; retry after the indicated delay",
            RETRY_AFTER_S,
        ),
        IngestError::ShuttingDown => ApiError::overloaded(
            "the server is shutting down; retry on another instance",
            RETRY_AFTER_S,
        ),
        IngestError::StoreUnavailable => ApiError::store_unavailable(
            "the database is unavailable; nothing was stored",
            RETRY_AFTER_S,
        ),
        IngestError::Rejected => ApiError::internal(),
        IngestError::OutcomeUnknown => ApiError {
            message: "the database did not confirm whether the events were stored".into(),
            ..ApiError::internal()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_bodies_have_the_documented_shapes() {
        assert_eq!(
            created_body(&[7], false, "r1"),
            br#"{"id":7,"requestId":"r1"}"#
        );
        assert_eq!(
            created_body(&[7], true, "r1"),
            br#"{"ids":[7],"count":1,"requestId":"r1"}"#
        );
        assert_eq!(
            created_body(&[1, 2, 30], true, "r"),
            br#"{"ids":[1,2,30],"count":3,"requestId":"r"}"#
        );
    }
}
