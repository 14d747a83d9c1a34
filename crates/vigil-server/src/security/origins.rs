//! Browser origins: CORS for the HTTP API (`VIGIL_CORS_ORIGINS`) and the Origin allow-list of
//! `/ws` (`VIGIL_WS_ORIGINS`, against cross-site WebSocket hijacking: browsers send cookies
//! and the page's Origin with an upgrade, and WebSockets are not subject to CORS).
//!
//! Origins are compared exactly, as browsers send them (`https://app.example.com:8443`,
//! lowercase scheme and host, no path, no trailing slash); `*` allows any origin.

use std::fmt;
use std::sync::Arc;

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, HeaderMap, HeaderValue, VARY,
};

/// Methods a preflight may ask for.
const ALLOW_METHODS: &str = "GET, HEAD, POST, OPTIONS";
/// Request headers a cross-origin caller may send.
const ALLOW_HEADERS: &str =
    "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-Id";
/// Response headers a cross-origin caller may read (besides the CORS-safelisted ones).
const EXPOSE_HEADERS: &str = "X-Request-Id, Retry-After, X-Cache, Idempotent-Replayed";
/// Seconds a browser may cache a preflight answer.
const MAX_AGE_S: &str = "600";

/// An origin allow-list.
#[derive(Clone, PartialEq, Eq)]
pub enum Origins {
    /// `*`: every origin.
    Any,
    /// Exactly these origins (possibly none).
    List(Arc<[String]>),
}

impl Default for Origins {
    fn default() -> Self {
        Origins::List(Arc::from([]))
    }
}

impl Origins {
    /// Parses `*` or a comma-separated list of `scheme://host[:port]` origins.
    pub fn parse(text: &str) -> Result<Origins, String> {
        let entries: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();
        if entries.contains(&"*") {
            return if entries.len() == 1 {
                Ok(Origins::Any)
            } else {
                Err("`*` cannot be combined with other origins".into())
            };
        }
        let mut origins = Vec::with_capacity(entries.len());
        for entry in entries {
            let Some((scheme, host)) = entry.split_once("://") else {
                return Err(format!(
                    "{entry:?} is not an origin such as https://app.example.com"
                ));
            };
            if !matches!(scheme, "http" | "https")
                || host.is_empty()
                || host.contains(['/', '?', '#', ' ', '@'])
            {
                return Err(format!(
                    "{entry:?} is not an origin such as https://app.example.com (scheme and host, \
                     no path or trailing slash)"
                ));
            }
            origins.push(entry.to_ascii_lowercase());
        }
        Ok(Origins::List(origins.into()))
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Origins::List(list) if list.is_empty())
    }

    /// Whether a request from `origin` is allowed.
    pub fn allows(&self, origin: &[u8]) -> bool {
        match self {
            Origins::Any => true,
            Origins::List(list) => list
                .iter()
                .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin)),
        }
    }
}

impl fmt::Display for Origins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origins::Any => f.write_str("*"),
            Origins::List(list) if list.is_empty() => f.write_str("(none)"),
            Origins::List(list) => f.write_str(&list.join(",")),
        }
    }
}

impl fmt::Debug for Origins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origins({self})")
    }
}

/// CORS for the API.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    origins: Origins,
}

impl Cors {
    pub fn new(origins: Origins) -> Cors {
        Cors { origins }
    }

    /// The `Access-Control-Allow-Origin` value for a request with this `Origin`, if that
    /// origin is allowed.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        if !self.origins.allows(origin.as_bytes()) {
            return None;
        }
        Some(match self.origins {
            Origins::Any => HeaderValue::from_static("*"),
            Origins::List(_) => origin.clone(),
        })
    }

    /// The headers of a preflight answer (204), or `None` when the origin is not allowed
    /// (the request is then routed like any `OPTIONS`, and gets no CORS headers).
    pub fn preflight(&self, origin: Option<&HeaderValue>) -> Option<HeaderMap> {
        let allow_origin = self.allow_origin(origin)?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_S));
        headers.insert(
            VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        Some(headers)
    }

    /// Adds the CORS headers of an actual (non-preflight) response.
    pub fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        if self.origins.is_empty() {
            return;
        }
        if matches!(self.origins, Origins::List(_)) {
            // The answer depends on Origin: caches must key on it, allowed or not.
            headers.append(VARY, HeaderValue::from_static("Origin"));
        }
        if let Some(allow_origin) = self.allow_origin(origin) {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
            headers.insert(
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_parsed_and_matched_exactly() {
        let origins = Origins::parse("https://app.example.com, http://localhost:5173").unwrap();
        assert!(origins.allows(b"https://app.example.com"));
        assert!(origins.allows(b"http://localhost:5173"));
        assert!(!origins.allows(b"https://app.example.com.evil.test"));
        assert!(!origins.allows(b"http://app.example.com"));
        assert!(!origins.allows(b"null"));
        assert!(Origins::parse("*").unwrap().allows(b"https://any.test"));
        assert!(Origins::parse("").unwrap().is_empty());
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "ftp://x",
            "*,https://a.test",
        ] {
            assert!(Origins::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn disallowed_origins_get_no_cors_headers() {
        let cors = Cors::new(Origins::parse("https://app.example.com").unwrap());
        let evil = HeaderValue::from_static("https://evil.test");
        assert!(cors.preflight(Some(&evil)).is_none());
        let mut headers = HeaderMap::new();
        cors.decorate(Some(&evil), &mut headers);
        assert!(!headers.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(headers.get(VARY).unwrap(), "Origin");

        let good = HeaderValue::from_static("https://app.example.com");
        let preflight = cors.preflight(Some(&good)).unwrap();
        assert_eq!(
            preflight.get(ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
            "https://app.example.com"
        );
        let mut headers = HeaderMap::new();
        Cors::default().decorate(Some(&good), &mut headers);
        assert!(headers.is_empty());
    }
}
