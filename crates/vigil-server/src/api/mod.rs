//! The API's vocabulary: its routes and its error codes, each defined once.
//!
//! Below both the HTTP service, which dispatches on [`Route`] and answers with an
//! [`ErrorCode`], and the metrics, which count requests by route and refusals by code; so the
//! metrics never depend on the HTTP layer that records into them.

mod code;
mod routes;

pub use code::ErrorCode;
pub use routes::{ROUTES, Route};
