//! Reading request bodies under the client-controlled limits.
//!
//! The body size cap (`VIGIL_MAX_BODY_BYTES`) is enforced twice: a declared
//! `Content-Length` over the cap is refused before a byte is read, and a chunked body is
//! refused as soon as it passes the cap. Either way the answer is a 413 with
//! `Connection: close`; the unread rest of the body is then drained for a moment in the
//! background, so the client reads the 413 instead of a connection reset (closing a socket
//! with unread input makes the kernel send RST, which can destroy the response in flight).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, EXPECT};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use vigil_core::BodyFormat;

use super::error::ApiError;

/// How long a refused body is drained before the connection closes.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);
/// How many bytes of a refused body are drained at most.
const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The body format named by a `Content-Type` header, if Vigil accepts it:
/// `application/json`, `application/x-ndjson` or `application/ndjson`, each with an
/// optional `charset=utf-8`.
pub fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let value = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(ApiError::unsupported_media_type)?;
    let mut parts = value.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    let format = if media_type.eq_ignore_ascii_case("application/json") {
        BodyFormat::Json
    } else if media_type.eq_ignore_ascii_case("application/x-ndjson")
        || media_type.eq_ignore_ascii_case("application/ndjson")
    {
        BodyFormat::NdJson
    } else {
        return Err(ApiError::unsupported_media_type());
    };
    for parameter in parts {
        let parameter = parameter.trim();
        if parameter.is_empty() {
            continue;
        }
        let acceptable = parameter.split_once('=').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("charset")
                && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        });
        if !acceptable {
            return Err(ApiError::unsupported_media_type());
        }
    }
    Ok(format)
}

/// Reads the whole body, refusing it past `max_bytes` or if it takes longer than `deadline`
/// (a client trickling a body must not hold a connection and its buffer for ever).
pub async fn read_limited(
    headers: &HeaderMap,
    body: Incoming,
    max_bytes: u64,
    deadline: std::time::Duration,
) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(deadline, read_within(headers, body, max_bytes)).await {
        Ok(read) => read,
        Err(_) => Err(ApiError::request_timeout(format!(
            "the request body did not arrive within {} s",
            deadline.as_secs()
        ))),
    }
}

async fn read_within(
    headers: &HeaderMap,
    mut body: Incoming,
    max_bytes: u64,
) -> Result<Bytes, ApiError> {
    let expects_continue = headers.contains_key(EXPECT);
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = declared
        && length > max_bytes
    {
        if !expects_continue {
            drain_in_background(body);
        }
        return Err(too_large(max_bytes));
    }

    let mut collected = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            tracing::debug!(%error, "request body read failed");
            body_read_failure(&error)
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if collected.len() as u64 + data.len() as u64 > max_bytes {
            drain_in_background(body);
            return Err(too_large(max_bytes));
        }
        collected.extend_from_slice(&data);
    }
    Ok(collected.freeze())
}

fn too_large(max_bytes: u64) -> ApiError {
    ApiError::payload_too_large(format!("the request body is larger than {max_bytes} bytes"))
        .closing_connection()
}

/// Reads and discards the rest of a refused body for a bounded time and size.
fn drain_in_background(mut body: Incoming) {
    tokio::spawn(async move {
        let mut drained = 0u64;
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    drained += data.len() as u64;
                    if drained > DRAIN_MAX_BYTES {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_DEADLINE, drain).await;
    });
}

/// What a failed body read tells the client: a chunked body whose framing is broken (a bad
/// chunk size or a chunk that does not end where it says) is the client's to fix, said so;
/// anything else (the connection ended mid-body) is an incomplete body.
fn body_read_failure(error: &hyper::Error) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            )
        {
            return ApiError::invalid_json(
                "the request body's chunked framing is malformed (a bad chunk size or chunk end)",
            );
        }
        cause = current.source();
    }
    ApiError::invalid_json("the request body could not be read completely")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn format_of(content_type: &str) -> Result<BodyFormat, u16> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        body_format(&headers).map_err(|e| e.status().as_u16())
    }

    #[test]
    fn accepts_the_documented_content_types() {
        assert_eq!(format_of("application/json"), Ok(BodyFormat::Json));
        assert_eq!(
            format_of("Application/JSON; charset=UTF-8"),
            Ok(BodyFormat::Json)
        );
        assert_eq!(
            format_of("application/json;charset=\"utf-8\""),
            Ok(BodyFormat::Json)
        );
        assert_eq!(format_of("application/x-ndjson"), Ok(BodyFormat::NdJson));
        assert_eq!(
            format_of("application/ndjson; charset=utf-8"),
            Ok(BodyFormat::NdJson)
        );
    }

    #[test]
    fn refuses_everything_else_with_415() {
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin1",
            "application/jsonx",
            "multipart/form-data; boundary=x",
            "",
        ] {
            assert_eq!(format_of(content_type), Err(415), "{content_type}");
        }
        assert_eq!(
            body_format(&HeaderMap::new())
                .unwrap_err()
                .status()
                .as_u16(),
            415
        );
    }
}
