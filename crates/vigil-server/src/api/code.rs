//! The API's error codes: each one's name, status and `Retry-After`, defined once.
//!
//! Handlers build errors from an [`ErrorCode`] ([`crate::http::error::ApiError::new`]), the metrics
//! label refused posts with [`ErrorCode::as_str`] (the values come from [`ErrorCode::ALL`]),
//! and the OpenAPI test checks `openapi.json`'s list of codes against [`ErrorCode::ALL`]. A new
//! code is one variant here and one line in each `match` below.

use http::StatusCode;

/// Seconds a client is told to wait before retrying, where a code asks for it.
pub const RETRY_AFTER_S: u32 = 1;

/// Every `"error"` value the API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body (or an NDJSON line) is not well-formed JSON.
    InvalidJson,
    /// An event breaks a rule, the body holds no events, or a header is malformed.
    ValidationFailed,
    /// A bad list or `/ws` query parameter.
    InvalidQuery,
    /// `/ws` without a valid `Sec-WebSocket-Key`.
    InvalidUpgrade,
    /// The route needs a token and none was sent.
    Unauthorized,
    /// The token is not one of the route's, or the `Origin` is not allowed.
    Forbidden,
    /// No such route, or no such event.
    NotFound,
    /// The route does not take this method.
    MethodNotAllowed,
    /// The body did not arrive in time.
    RequestTimeout,
    /// A request with the same `Idempotency-Key` is still being handled here.
    IdempotencyInFlight,
    /// The `Idempotency-Key` was used with another body.
    IdempotencyMismatch,
    /// The body or the bulk is over its limit.
    PayloadTooLarge,
    /// Not a JSON or NDJSON body.
    UnsupportedMediaType,
    /// `/ws` without a usable WebSocket upgrade.
    UpgradeRequired,
    /// Over a rate limit.
    RateLimited,
    /// The queue budget is spent, too many WebSocket clients, or shutting down.
    Overloaded,
    /// The database is down, settling, failed, or did not answer in time: nothing was stored.
    StoreUnavailable,
    /// A post's batch was sent and not confirmed in time: stored or not, all or nothing.
    OutcomeUnknown,
    /// A bug; never says more.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order the documentation lists them.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::InvalidJson,
        ErrorCode::ValidationFailed,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidUpgrade,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RequestTimeout,
        ErrorCode::IdempotencyInFlight,
        ErrorCode::IdempotencyMismatch,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::UpgradeRequired,
        ErrorCode::RateLimited,
        ErrorCode::Overloaded,
        ErrorCode::StoreUnavailable,
        ErrorCode::OutcomeUnknown,
        ErrorCode::Internal,
    ];

    /// The `"error"` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidUpgrade => "invalid_upgrade",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::IdempotencyInFlight => "idempotency_in_flight",
            ErrorCode::IdempotencyMismatch => "idempotency_mismatch",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::OutcomeUnknown => "outcome_unknown",
            ErrorCode::Internal => "internal",
        }
    }

    /// The status every answer with this code has.
    pub const fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidJson
            | ErrorCode::ValidationFailed
            | ErrorCode::InvalidQuery
            | ErrorCode::InvalidUpgrade => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::IdempotencyInFlight => StatusCode::CONFLICT,
            ErrorCode::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Overloaded | ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::OutcomeUnknown => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `Retry-After` an answer with this code carries unless its maker knows better (a
    /// rate limit says when its bucket refills): the codes that mean "try again shortly".
    pub const fn retry_after_s(self) -> Option<u32> {
        match self {
            ErrorCode::IdempotencyInFlight
            | ErrorCode::RateLimited
            | ErrorCode::Overloaded
            | ErrorCode::StoreUnavailable
            | ErrorCode::OutcomeUnknown => Some(RETRY_AFTER_S),
            _ => None,
        }
    }

    /// Whether `POST /api/events` can answer this code: the values of the
    /// `vigil_ingest_rejected_total{reason}` label.
    pub const fn answers_ingest(self) -> bool {
        !matches!(
            self,
            ErrorCode::InvalidQuery
                | ErrorCode::InvalidUpgrade
                | ErrorCode::NotFound
                | ErrorCode::MethodNotAllowed
                | ErrorCode::UpgradeRequired
        )
    }

    /// The code's position in [`ErrorCode::ALL`], for per-code counters.
    pub fn index(self) -> usize {
        ErrorCode::ALL
            .iter()
            .position(|code| *code == self)
            .unwrap_or(ErrorCode::ALL.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once_with_a_distinct_name() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for (position, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), position);
        }
    }

    #[test]
    fn codes_that_ask_for_a_retry_are_the_transient_ones() {
        for code in ErrorCode::ALL {
            let transient = code.status() == StatusCode::SERVICE_UNAVAILABLE
                || code.status() == StatusCode::GATEWAY_TIMEOUT
                || code.status() == StatusCode::TOO_MANY_REQUESTS
                || code.status() == StatusCode::CONFLICT;
            assert_eq!(code.retry_after_s().is_some(), transient, "{code:?}");
        }
    }
}
