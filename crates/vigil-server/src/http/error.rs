//! API errors, rendered in one place; their codes and statuses are [`ErrorCode`]'s.
//!
//! Handlers return `Err(ApiError)`; the service wrapper renders it as
//! `{"error":"<code>","message":"…","requestId":"…","details":[…]}` with the right status
//! and headers (`Allow`, `Retry-After`, `Connection: close`, `WWW-Authenticate` for 401, and
//! for 426 `Upgrade` and `Sec-WebSocket-Version`). Library errors, and security's
//! [`Denial`]s, are mapped to an `ApiError` here and nowhere else, so a status never depends
//! on which handler saw it.

use std::time::Duration;

use http::header::{
    ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, SEC_WEBSOCKET_VERSION, UPGRADE, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Response, StatusCode};
use vigil_core::{FieldError, ParseError, write_json_string};

use super::Body;
pub use crate::api::ErrorCode;
use crate::security::Denial;

/// Seconds a client with too many WebSockets open from its address is told to wait.
const WS_PER_ADDR_RETRY_AFTER_S: u32 = 5;

/// An error answer, before the request id is known to the renderer.
#[derive(Debug)]
pub struct ApiError {
    /// The machine-readable code, which decides the status.
    pub code: ErrorCode,
    /// One sentence for a human, lowercase start, no internals.
    pub message: String,
    pub details: Vec<FieldError>,
    /// `Allow` header value for 405.
    pub allow: Option<&'static str>,
    /// `Retry-After` seconds (409, 429, 503, 504): the code's default unless set otherwise.
    pub retry_after_s: Option<u32>,
    /// Close the connection after answering (413 with an unread body).
    pub close_connection: bool,
    /// Name the protocol to upgrade to (426 on `/ws`).
    pub upgrade_websocket: bool,
    /// Ask for a bearer token (`WWW-Authenticate`, 401).
    pub bearer_challenge: bool,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Vec::new(),
            allow: None,
            retry_after_s: code.retry_after_s(),
            close_connection: false,
            upgrade_websocket: false,
            bearer_challenge: false,
        }
    }

    /// 401: the route needs a token and none was presented.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            bearer_challenge: true,
            ..ApiError::new(ErrorCode::Unauthorized, message)
        }
    }

    pub fn not_found() -> Self {
        ApiError::new(ErrorCode::NotFound, "no such route")
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("this route allows {allow}"),
            )
        }
    }

    /// The body did not arrive within `VIGIL_BODY_READ_TIMEOUT_S`; the connection is closed
    /// (the rest of the body is not read).
    pub fn request_timeout(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::RequestTimeout, message).closing_connection()
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::PayloadTooLarge, message)
    }

    pub fn unsupported_media_type() -> Self {
        ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send Content-Type application/json, application/x-ndjson or application/ndjson",
        )
    }

    /// 400 `validation_failed` for a malformed request header, named in the details.
    pub fn invalid_header(header: &str, problem: impl Into<String>) -> Self {
        ApiError {
            details: vec![FieldError {
                index: None,
                field: header.to_owned(),
                message: problem.into(),
            }],
            ..ApiError::new(
                ErrorCode::ValidationFailed,
                format!("the {header} header is invalid"),
            )
        }
    }

    pub fn invalid_json(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidJson, message)
    }

    /// 426 for a request to `/ws` that is not a usable WebSocket upgrade.
    pub fn upgrade_required(message: impl Into<String>) -> Self {
        ApiError {
            upgrade_websocket: true,
            ..ApiError::new(ErrorCode::UpgradeRequired, message)
        }
    }

    /// The same error with another `Retry-After` than its code's default.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// The status the code answers with.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// A bug or an unexpected failure; the message never carries internals.
    pub fn internal() -> Self {
        ApiError::new(ErrorCode::Internal, "internal error")
    }

    pub fn closing_connection(mut self) -> Self {
        self.close_connection = true;
        self
    }

    /// Renders the error for the request `request_id`.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let mut json = Vec::with_capacity(128 + self.message.len() + self.details.len() * 64);
        json.extend_from_slice(b"{\"error\":\"");
        json.extend_from_slice(self.code.as_str().as_bytes());
        json.extend_from_slice(b"\",\"message\":");
        write_json_string(&mut json, &self.message);
        json.extend_from_slice(b",\"requestId\":");
        write_json_string(&mut json, request_id);
        if !self.details.is_empty() {
            json.extend_from_slice(b",\"details\":[");
            for (position, detail) in self.details.iter().enumerate() {
                if position > 0 {
                    json.push(b',');
                }
                json.push(b'{');
                if let Some(index) = detail.index {
                    json.extend_from_slice(b"\"index\":");
                    json.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
                    json.push(b',');
                }
                json.extend_from_slice(b"\"field\":");
                write_json_string(&mut json, &detail.field);
                json.extend_from_slice(b",\"message\":");
                write_json_string(&mut json, &detail.message);
                json.push(b'}');
            }
            json.push(b']');
        }
        json.push(b'}');

        let mut response = Response::new(Body::full(json));
        *response.status_mut() = self.code.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(allow) = self.allow {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(seconds) = self.retry_after_s {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.close_connection {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if self.bearer_challenge {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"vigil\""),
            );
        }
        if self.upgrade_websocket {
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        response
    }
}

impl From<Denial> for ApiError {
    fn from(denial: Denial) -> Self {
        match denial {
            Denial::NoToken => {
                ApiError::unauthorized("send a token: Authorization: Bearer <token>")
            }
            Denial::TokenNotAllowed => {
                ApiError::new(ErrorCode::Forbidden, "this token may not use this route")
            }
            Denial::WsOriginNotAllowed => ApiError::new(
                ErrorCode::Forbidden,
                "websocket connections from this origin are not allowed",
            ),
            Denial::RateLimited { retry_after } => ApiError::new(
                ErrorCode::RateLimited,
                "too many requests; retry after the indicated delay",
            )
            .retry_after(whole_seconds_at_least_one(retry_after)),
            Denial::TooManyWebSockets => ApiError::new(
                ErrorCode::RateLimited,
                "too many live clients (websockets and event streams) from this address; retry later",
            )
            .retry_after(WS_PER_ADDR_RETRY_AFTER_S),
        }
    }
}

/// A wait as `Retry-After` seconds: whole seconds, rounded up, at least 1.
fn whole_seconds_at_least_one(wait: Duration) -> u32 {
    let seconds = u32::try_from(wait.as_secs()).unwrap_or(u32::MAX);
    seconds
        .saturating_add(u32::from(wait.subsec_nanos() > 0))
        .max(1)
}

impl From<ParseError> for ApiError {
    fn from(error: ParseError) -> Self {
        match error {
            ParseError::InvalidJson { message } => ApiError::invalid_json(message),
            ParseError::Empty => {
                ApiError::new(ErrorCode::ValidationFailed, "the body holds no events")
            }
            ParseError::TooManyEvents { max } => {
                ApiError::payload_too_large(format!("a bulk request may hold at most {max} events"))
            }
            ParseError::Validation(details) => ApiError {
                details,
                ..ApiError::new(
                    ErrorCode::ValidationFailed,
                    "one or more events failed validation",
                )
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let seconds = |millis| {
            ApiError::from(Denial::RateLimited {
                retry_after: Duration::from_millis(millis),
            })
            .retry_after_s
            .unwrap()
        };
        assert_eq!(seconds(1), 1);
        assert_eq!(seconds(1000), 1);
        assert_eq!(seconds(1001), 2);
    }
}
