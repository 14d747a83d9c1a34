//! `GET /`: the Vigil console, a live view of the events for an operator's screen, and its
//! files under `/console/`.
//!
//! The page, its script, its style sheet and its icon are compiled into the binary: no CDN, no
//! build step, nothing to install, and the same console on every instance. It is plain HTML,
//! CSS and JavaScript that talks to the public API like any client (`GET /api/events` for the
//! newest events, `/ws` with `since=` for live ones and for resuming), so it needs no route of
//! its own and costs the server nothing while nobody has it open: these responses are static
//! bytes, answered 304 when the browser already has them.
//!
//! The files carry no data, so they are served without a token; the API calls they make
//! present the read token the operator types in (a bearer header, and the `vigil.bearer.`
//! WebSocket subprotocol; never the URL). The page is sent with a Content-Security-Policy that
//! allows scripts, styles, images and connections from this origin only, and no framing.

use std::sync::LazyLock;

use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, HeaderMap, HeaderValue,
    IF_NONE_MATCH, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{Response, StatusCode};

use crate::http::Body;
use crate::http::error::{ApiError, ErrorCode};

/// The page's policy: this origin's files and connections (including its WebSocket), inline
/// nothing, framed nowhere.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// One file of the console.
struct File {
    /// Its name under `/console/` (the page itself is `/`).
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// A strong validator: a hash of the bytes, so a new build invalidates the browser's copy.
    etag: HeaderValue,
}

impl File {
    fn new(name: &'static str, content_type: &'static str, bytes: &'static [u8]) -> File {
        let etag = HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(bytes)))
            .expect("hex digits in quotes are a valid header value");
        File {
            name,
            content_type,
            bytes,
            etag,
        }
    }
}

/// The page, then the files it loads.
static FILES: LazyLock<[File; 4]> = LazyLock::new(|| {
    [
        File::new("", "text/html; charset=utf-8", include_bytes!("index.html")),
        File::new(
            "app.js",
            "text/javascript; charset=utf-8",
            include_bytes!("app.js"),
        ),
        File::new(
            "app.css",
            "text/css; charset=utf-8",
            include_bytes!("app.css"),
        ),
        File::new("icon.svg", "image/svg+xml", include_bytes!("icon.svg")),
    ]
});

/// `GET /`: the console page.
pub fn page(request_headers: &HeaderMap) -> Response<Body> {
    let mut response = serve(&FILES[0], request_headers);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /console/{name}`: one of the page's files, or 404.
pub fn file(name: &str, request_headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    FILES[1..]
        .iter()
        .find(|file| file.name == name)
        .map(|file| serve(file, request_headers))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such console file"))
}

/// The file, or 304 when the browser's copy is this one.
fn serve(file: &File, request_headers: &HeaderMap) -> Response<Body> {
    let fresh = request_headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == file.etag
        });
    let mut response = if fresh {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Body::full(file.bytes));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(file.content_type));
        response
    };
    let headers = response.headers_mut();
    headers.insert(ETAG, file.etag.clone());
    // Always revalidated (a 304 is a few bytes): an upgraded server's console is used at once.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// FNV-1a, 64 bits: a cheap, stable fingerprint of a file's bytes (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_served_with_validators() {
        let page = page(&HeaderMap::new());
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(
            page.headers()[CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY_VALUE
        );
        let etag = page.headers()[ETAG].clone();
        let mut conditional = HeaderMap::new();
        conditional.insert(IF_NONE_MATCH, etag);
        assert_eq!(super::page(&conditional).status(), StatusCode::NOT_MODIFIED);
        for name in ["app.js", "app.css", "icon.svg"] {
            assert_eq!(
                file(name, &HeaderMap::new()).unwrap().status(),
                StatusCode::OK
            );
        }
        assert!(file("../lib.rs", &HeaderMap::new()).is_err());
        assert!(file("", &HeaderMap::new()).is_err());
    }

    #[test]
    fn the_page_loads_only_what_is_served_and_nothing_inline() {
        let html = std::str::from_utf8(FILES[0].bytes).unwrap();
        for reference in ["/console/app.js", "/console/app.css", "/console/icon.svg"] {
            assert!(html.contains(reference), "{reference}");
        }
        // The policy allows no inline script or style: none may be written.
        assert!(!html.contains("<script>") && !html.contains("style="));
        assert!(!html.contains("onclick") && !html.contains("onload"));
    }
}
