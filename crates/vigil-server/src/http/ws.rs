//! `GET /ws`: the upgrade handler. Realtime delivery itself (hub, sockets, resume, backfill,
//! the Redis bridge) is the `vigil-realtime` crate; this module is the HTTP edge of it.
//!
//! Upgrade requests are checked here, before anything is spawned, and refused with the API's
//! JSON errors: not a WebSocket upgrade, or a `Sec-WebSocket-Version` other than 13 → 426
//! `upgrade_required` (with `Upgrade: websocket` and `Sec-WebSocket-Version: 13`, as RFC 6455
//! asks); a missing or malformed `Sec-WebSocket-Key` → 400 `invalid_upgrade`; bad filter values
//! or a bad `since` → 400 `invalid_query`; `VIGIL_WS_MAX_CLIENTS` reached or shutting down → 503 `overloaded`.
//! Then access ([`crate::security`]): an `Origin` not on `VIGIL_WS_ORIGINS` → 403 `forbidden`;
//! no read token → 401, a wrong one → 403; `VIGIL_WS_MAX_CLIENTS_PER_ADDR` reached → 429
//! `rate_limited`. A client offering the subprotocol `vigil.v1` (browsers pass their token as
//! a second one, `vigil.bearer.<token>`) is answered `Sec-WebSocket-Protocol: vigil.v1`.

use std::net::IpAddr;

use http::header::{HeaderValue, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION};
use http::{Request, Response};
use hyper::body::Incoming;
use vigil_core::EventFilter;
use vigil_realtime::resume::Resume;
use vigil_realtime::{RegisterError, Registration, Wire};

use crate::http::Body;
use crate::http::error::{ApiError, ErrorCode};
use crate::security::{self, Scope};
use crate::state::AppState;

/// The only WebSocket version there is (RFC 6455).
const WEBSOCKET_VERSION: &[u8] = b"13";

/// `GET /ws`: validates the upgrade and the filters, registers the client with the hub and
/// answers 101; the socket is served by a task the hub tracks.
pub async fn upgrade(
    state: &AppState,
    mut request: Request<Incoming>,
    client: IpAddr,
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
            ErrorCode::InvalidUpgrade,
            "Sec-WebSocket-Key must be 16 random bytes in base64",
        ));
    }
    state.security.check_ws_origin(headers)?;
    state
        .security
        .authorize(Scope::Read, headers, request.uri().query())?;
    let answer_subprotocol = security::offers_subprotocol(headers);
    let (filter, since) = parse_query(request.uri().query())
        .map_err(|message| ApiError::new(ErrorCode::InvalidQuery, message))?;
    // Held by the socket's task: the address's count drops when the socket closes.
    let slot = state.security.ws_slot(client)?;

    let (registration, resume) = join_hub(state, Wire::WebSocket, filter, since)?;
    let (response, upgraded) = fastwebsockets::upgrade::upgrade(&mut request).map_err(|error| {
        // The headers were checked above; this is not expected.
        tracing::warn!(%error, "websocket upgrade refused");
        ApiError::new(
            ErrorCode::InvalidUpgrade,
            "the websocket upgrade request is invalid",
        )
    })?;
    vigil_realtime::client::spawn(&state.hub, upgraded, registration, resume, slot);
    let (mut parts, _) = response.into_parts();
    if answer_subprotocol {
        parts.headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(security::SUBPROTOCOL),
        );
    }
    Ok(Response::from_parts(parts, Body::empty()))
}

/// Adds a client on `wire` to the hub, with what it must be replayed first when it resumes
/// after the event `since`. Refused when the hub is full or shutting down.
pub(super) fn join_hub(
    state: &AppState,
    wire: Wire,
    filter: EventFilter,
    since: Option<u64>,
) -> Result<(Registration, Option<Resume>), ApiError> {
    let (registration, point) = state
        .hub
        .join(wire, filter.clone(), since)
        .map_err(|error| match error {
            RegisterError::Full => ApiError::new(
                ErrorCode::Overloaded,
                "too many live clients are connected; retry later",
            )
            .retry_after(5),
            RegisterError::ShuttingDown => {
                ApiError::new(ErrorCode::Overloaded, "the server is shutting down")
            }
        })?;
    let resume = since.map(|since| Resume {
        store: state.store.clone(),
        since,
        filter,
        point,
        max_events: state.config.ws.ws_resume_max as usize,
    });
    Ok((registration, resume))
}

/// The `type`, `level` and `source` filters of a `/ws` query (same syntax as the list API)
/// and `since`, the last event id a resuming client saw.
fn parse_query(raw_query: Option<&str>) -> Result<(EventFilter, Option<u64>), String> {
    vigil_core::parse_subscribe_query(raw_query).map_err(|error| error.to_string())
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
        let (filter, since) =
            parse_query(Some("type=GAS,SMOKE&level=WARN&source=sensor%2D1&x=1")).unwrap();
        assert_eq!(filter.types, ["GAS", "SMOKE"]);
        assert_eq!(filter.sources, ["sensor-1"]);
        assert_eq!(since, None);
        assert!(parse_query(Some("level=LOUD")).is_err());
        assert!(parse_query(None).unwrap().0.is_empty());
    }

    #[test]
    fn since_is_an_event_id() {
        assert_eq!(parse_query(Some("since=0")).unwrap().1, Some(0));
        assert_eq!(
            parse_query(Some("since=9007199254740991&type=GAS"))
                .unwrap()
                .1,
            Some(9_007_199_254_740_991)
        );
        for bad in [
            "since=",
            "since=-1",
            "since=1.5",
            "since=abc",
            "since=%2B5",
            "since=9007199254740992",
            "since=99999999999999999999",
            "since=1&since=2",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
