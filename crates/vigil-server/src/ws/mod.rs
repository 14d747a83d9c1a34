//! Realtime delivery: `GET /ws` upgrades to a WebSocket on which every new event arrives as one
//! text frame holding its stored JSON, on whichever instance the client is connected to.
//!
//! ```text
//! batcher ── publisher ──▶ Redis channel ──▶ Bridge (one subscription per instance) ─┐
//!    └──── LocalFeed (no REDIS_URL: this instance's commits only) ───────────────────┤
//!                                                                                    ▼
//!                         Hub: frame built once, try_send to each matching client's queue
//!                                                                                    ▼
//!                         client task per socket: reader + writer (pings, idle, close)
//! ```
//!
//! - [`event`]: reading an event's id and filter fields from its JSON prefix, building its frame;
//! - [`hub`]: clients, filters, fan-out and the slow-consumer policy;
//! - [`bridge`]: the Redis subscription, reconnecting with back-off;
//! - [`client`]: one socket's task.
//!
//! Upgrade requests are checked here, before anything is spawned, and refused with DESIGN.md's
//! JSON errors: not a WebSocket upgrade, or a `Sec-WebSocket-Version` other than 13 → 426
//! `upgrade_required` (with `Upgrade: websocket` and `Sec-WebSocket-Version: 13`, as RFC 6455
//! asks); a missing or malformed `Sec-WebSocket-Key` → 400 `invalid_upgrade`; bad filter values
//! → 400 `invalid_query`; `VIGIL_WS_MAX_CLIENTS` reached or shutting down → 503 `overloaded`.

pub mod bridge;
pub mod client;
pub mod event;
pub mod hub;

use bytes::Bytes;
use http::header::{HeaderValue, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use vigil_core::{EventFilter, QueryError};

pub use bridge::{Bridge, BridgeStats};
pub use event::HubEvent;
pub use hub::{Hub, HubSettings, HubStats, LocalFeed, RegisterError};

use crate::http::Body;
use crate::http::error::ApiError;
use crate::state::AppState;

/// The only WebSocket version there is (RFC 6455).
const WEBSOCKET_VERSION: &[u8] = b"13";

/// `GET /ws`: validates the upgrade and the filters, registers the client with the hub and
/// answers 101; the socket is served by a task the hub tracks.
pub async fn upgrade(
    state: &AppState,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        return Err(ApiError::upgrade_required(
            "this route serves websocket upgrades only (Connection: Upgrade, Upgrade: websocket)",
        ));
    }
    let headers = request.headers();
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(WEBSOCKET_VERSION)
    {
        return Err(ApiError::upgrade_required(
            "Sec-WebSocket-Version must be 13",
        ));
    }
    if !headers
        .get(SEC_WEBSOCKET_KEY)
        .is_some_and(|key| is_valid_key(key.as_bytes()))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_upgrade",
            "Sec-WebSocket-Key must be 16 random bytes in base64",
        ));
    }
    let filter = parse_filter(request.uri().query()).map_err(|error| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", error.to_string())
    })?;

    let registration = state.hub.register(filter).map_err(|error| match error {
        RegisterError::Full => {
            ApiError::overloaded("too many websocket clients are connected; retry later", 5)
        }
        RegisterError::ShuttingDown => ApiError::overloaded("the server is shutting down", 1),
    })?;
    let (response, upgraded) = fastwebsockets::upgrade::upgrade(&mut request).map_err(|error| {
        // The headers were checked above; this is not expected.
        tracing::warn!(%error, "websocket upgrade refused");
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_upgrade",
            "the websocket upgrade request is invalid",
        )
    })?;
    let ping_interval = state.hub.settings().ping_interval;
    let shutdown = state.hub.shutdown_token();
    state.hub.spawn(client::serve(
        upgraded,
        registration,
        ping_interval,
        shutdown,
    ));
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, Full::new(Bytes::new())))
}

/// The `type`, `level` and `source` filters of a `/ws` query (same syntax as the list API).
fn parse_filter(raw_query: Option<&str>) -> Result<EventFilter, QueryError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw_query.unwrap_or("").as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    EventFilter::from_pairs(
        pairs
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
    )
}

/// RFC 6455: the key is a base64-encoded 16-byte value (24 characters ending in `==`).
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'+' || *byte == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_sixteen_bytes_of_base64() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for key in [
            &b""[..],
            b"short",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZQ=x",
            b"dGhlIHNhbXBsZSBub25jZ!==",
        ] {
            assert!(!is_valid_key(key), "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn filters_use_the_list_api_syntax() {
        let filter = parse_filter(Some("type=GAS,SMOKE&level=WARN&source=sensor%2D1&x=1")).unwrap();
        assert_eq!(filter.types, ["GAS", "SMOKE"]);
        assert_eq!(filter.sources, ["sensor-1"]);
        assert!(parse_filter(Some("level=LOUD")).is_err());
        assert!(parse_filter(None).unwrap().is_empty());
    }
}
