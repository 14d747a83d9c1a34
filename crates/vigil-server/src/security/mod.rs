//! Access control: who may post and read (tokens), which browser pages may call the API or
//! open a WebSocket (origins), and how fast one producer may post (rate limits).
//!
//! - [`tokens`]: `VIGIL_INGEST_TOKENS` for `POST /api/events`, `VIGIL_READ_TOKENS` for
//!   `GET /api/events…` and `/ws`; an unset list leaves its routes open;
//! - [`origins`]: CORS (`VIGIL_CORS_ORIGINS`) and the `/ws` Origin allow-list
//!   (`VIGIL_WS_ORIGINS`);
//! - [`rate`]: per-token and per-address ingest buckets, open WebSockets per address;
//! - [`client_addr`]: which address a request is from (`VIGIL_TRUSTED_PROXIES`).
//!
//! A request presents its token, in this order of preference, as `Authorization: Bearer
//! <token>`, as the WebSocket subprotocol `vigil.bearer.<token>` (browsers cannot set headers
//! on a WebSocket), or as `?token=` (a last resort: URLs end up in proxy logs and browser
//! history; Vigil itself never logs a URI). No token → 401 `unauthorized` with
//! `WWW-Authenticate: Bearer`; a token not in the list → 403 `forbidden`. Tokens are never
//! written to logs, metrics or error bodies.
//!
//! A refusal is a [`Denial`], which says why and nothing about HTTP: the HTTP layer
//! (`http/error.rs`) turns each into its status, code and headers.

pub mod client_addr;
pub mod origins;
pub mod rate;
pub mod tokens;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::{AUTHORIZATION, ORIGIN, SEC_WEBSOCKET_PROTOCOL};

pub use client_addr::TrustedProxies;
pub use origins::{Cors, Origins};
pub use rate::{ConnectionSlot, ConnectionsPerAddr, RateLimiter};
pub use tokens::Tokens;

/// The subprotocol a browser offers to carry its token: `vigil.bearer.<token>`.
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "vigil.bearer.";
/// The subprotocol Vigil answers with (the token's subprotocol is never echoed).
pub const SUBPROTOCOL: &str = "vigil.v1";

/// What a request may do, once authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No tokens are configured for this route.
    Open,
    /// The request presented the token at this position of the route's list.
    Token(usize),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The route needs a token and the request presented none.
    NoToken,
    /// The token presented is not on the route's list.
    TokenNotAllowed,
    /// A browser page from an origin not on `VIGIL_WS_ORIGINS` asked to open `/ws`.
    WsOriginNotAllowed,
    /// Over an ingest rate; the bucket holds a request again after `retry_after`.
    RateLimited { retry_after: Duration },
    /// The client's address has `VIGIL_WS_MAX_CLIENTS_PER_ADDR` WebSockets open already.
    TooManyWebSockets,
}

/// Which token list guards a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ingest,
    Read,
}

/// The rules as configured (`None`: the setting is unset), for [`Security::new`].
#[derive(Debug, Clone)]
pub struct Rules {
    /// `VIGIL_INGEST_TOKENS`.
    pub ingest_tokens: Option<Tokens>,
    /// `VIGIL_READ_TOKENS`.
    pub read_tokens: Option<Tokens>,
    /// `VIGIL_CORS_ORIGINS`.
    pub cors_origins: Option<Origins>,
    /// `VIGIL_WS_ORIGINS`.
    pub ws_origins: Option<Origins>,
    /// `VIGIL_TRUSTED_PROXIES`.
    pub trusted_proxies: Option<TrustedProxies>,
    /// `VIGIL_INGEST_RATE_PER_TOKEN`, requests per second.
    pub ingest_rate_per_token: Option<f64>,
    /// `VIGIL_INGEST_RATE_PER_ADDR`, requests per second.
    pub ingest_rate_per_addr: Option<f64>,
    /// `VIGIL_INGEST_RATE_BURST`.
    pub ingest_rate_burst: Option<u32>,
    /// `VIGIL_WS_MAX_CLIENTS_PER_ADDR`.
    pub ws_max_clients_per_addr: u32,
}

/// Everything the request path needs to apply the rules, built once from the configuration.
pub struct Security {
    /// Tokens that may post events; empty: posting is open.
    ingest_tokens: Tokens,
    /// Tokens that may read events and open `/ws`; empty: reading is open.
    read_tokens: Tokens,
    /// CORS for the API.
    pub cors: Cors,
    /// Origins allowed to open `/ws`; `None`: any.
    ws_origins: Option<Origins>,
    /// Proxies whose `X-Forwarded-For` is believed.
    trusted_proxies: TrustedProxies,
    /// Ingest requests per second per token, when limited.
    ingest_per_token: Option<RateLimiter<usize>>,
    /// Ingest requests per second per client address, when limited.
    ingest_per_addr: Option<RateLimiter<IpAddr>>,
    /// Open WebSocket clients per client address.
    pub ws_per_addr: Arc<ConnectionsPerAddr>,
}

impl Security {
    /// Applies `rules`; warns about what is left open.
    pub fn new(rules: Rules) -> Security {
        let ingest_tokens = rules.ingest_tokens.unwrap_or_default();
        let read_tokens = rules.read_tokens.unwrap_or_default();
        if ingest_tokens.is_empty() {
            tracing::warn!(
                "VIGIL_INGEST_TOKENS is not set: anyone who can reach this server can post events"
            );
        }
        if read_tokens.is_empty() {
            tracing::warn!(
                "VIGIL_READ_TOKENS is not set: anyone who can reach this server can read events and open /ws"
            );
        }
        // One second's worth by default (whole requests, at least one).
        let burst = |rate: f64| {
            rules
                .ingest_rate_burst
                .unwrap_or_else(|| rate.ceil() as u32)
                .max(1)
        };
        Security {
            ingest_tokens,
            read_tokens,
            cors: Cors::new(rules.cors_origins.unwrap_or_default()),
            ws_origins: rules.ws_origins.filter(|origins| !origins.is_empty()),
            trusted_proxies: rules.trusted_proxies.unwrap_or_default(),
            ingest_per_token: rules
                .ingest_rate_per_token
                .map(|rate| RateLimiter::new(rate, burst(rate))),
            ingest_per_addr: rules
                .ingest_rate_per_addr
                .map(|rate| RateLimiter::new(rate, burst(rate))),
            ws_per_addr: ConnectionsPerAddr::new(rules.ws_max_clients_per_addr),
        }
    }

    /// The client address of a request from `peer`.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.trusted_proxies.client_addr(peer, headers)
    }

    /// Checks the token a request presents against `scope`'s list.
    pub fn authorize(
        &self,
        scope: Scope,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Access, Denial> {
        let tokens = match scope {
            Scope::Ingest => &self.ingest_tokens,
            Scope::Read => &self.read_tokens,
        };
        if tokens.is_empty() {
            return Ok(Access::Open);
        }
        let Some(presented) = presented_token(headers, query) else {
            return Err(Denial::NoToken);
        };
        tokens
            .find(presented.as_bytes())
            .map(Access::Token)
            .ok_or(Denial::TokenNotAllowed)
    }

    /// What scopes an ingest request's idempotency keys: the token it presented (so two
    /// producers never share keys), or nothing when ingest is open (one global scope).
    pub fn ingest_key_scope(&self, access: Access) -> &[u8] {
        match access {
            Access::Open => b"",
            Access::Token(index) => self.ingest_tokens.get(index).unwrap_or_default(),
        }
    }

    /// Takes one ingest request from the token's and the address's buckets.
    pub fn limit_ingest(&self, access: Access, client: IpAddr) -> Result<(), Denial> {
        let now = Instant::now();
        let rate_limited = |retry_after: Duration| Denial::RateLimited { retry_after };
        if let (Some(limiter), Access::Token(index)) = (&self.ingest_per_token, access) {
            limiter.check(&index, now).map_err(rate_limited)?;
        }
        if let Some(limiter) = &self.ingest_per_addr {
            limiter.check(&client, now).map_err(rate_limited)?;
        }
        Ok(())
    }

    /// Refuses a browser's upgrade from an Origin not on `VIGIL_WS_ORIGINS` (requests
    /// without an Origin are not from a browser page and are let through).
    pub fn check_ws_origin(&self, headers: &HeaderMap) -> Result<(), Denial> {
        let (Some(allowed), Some(origin)) = (&self.ws_origins, headers.get(ORIGIN)) else {
            return Ok(());
        };
        if allowed.allows(origin.as_bytes()) {
            Ok(())
        } else {
            Err(Denial::WsOriginNotAllowed)
        }
    }

    /// A slot for one more WebSocket client from `client`, unless it has its most open.
    pub fn ws_slot(&self, client: IpAddr) -> Result<ConnectionSlot, Denial> {
        self.ws_per_addr
            .acquire(client)
            .ok_or(Denial::TooManyWebSockets)
    }
}

/// The token a request presents: the bearer header, else the WebSocket subprotocol, else
/// `?token=`.
fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some((scheme, token)) = value.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(token.trim().to_owned());
    }
    if let Some(token) = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|offer| offer.trim().strip_prefix(BEARER_SUBPROTOCOL_PREFIX))
    {
        return Some(token.to_owned());
    }
    let query = query?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, token)| token.into_owned())
}

/// Whether the client offered Vigil's subprotocol (and so expects it answered).
pub fn offers_subprotocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|offer| offer.trim() == SUBPROTOCOL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn the_token_comes_from_the_header_then_the_subprotocol_then_the_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_token(&headers, Some("token=q")), Some("q".into()));
        assert_eq!(presented_token(&headers, Some("type=GAS")), None);
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("vigil.v1, vigil.bearer.from-subprotocol"),
        );
        assert!(offers_subprotocol(&headers));
        assert_eq!(
            presented_token(&headers, Some("token=q")),
            Some("from-subprotocol".into())
        );
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("bearer from-header"),
        );
        assert_eq!(
            presented_token(&headers, Some("token=q")),
            Some("from-header".into())
        );
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwdw=="),
        );
        assert_eq!(
            presented_token(&headers, None),
            Some("from-subprotocol".into())
        );
    }
}
