//! Vigil's core: the event model, its validation and its one JSON encoding.
//!
//! Pure and I/O-free so it can be unit-tested, benchmarked and fuzzed on its own. Data flows
//! one way: a request body goes through [`EventParser`] into [`NewEvent`]s; after the store
//! assigns ids, [`StoredEventRef::encode_into`] prints each event once, and those bytes are
//! what every reader sees.

pub mod committed;
pub mod encode;
pub mod error;
pub mod event;
pub mod histogram;
pub mod parse;
pub mod query;
pub mod time;

pub use committed::{CommitSink, CommittedBatch, FanOut, PublishedEvent, entry_id};
pub use encode::{StoredEventRef, write_json_string};
pub use error::{FieldError, MAX_DETAILS, ParseError};
pub use event::{Level, Limits, MAX_ID_EXCLUSIVE, NewEvent};
pub use histogram::{AtomicHistogram, HistogramSnapshot};
pub use parse::{BodyFormat, EventParser, ParsedBody};
pub use query::{EventFilter, EventQuery, QueryError, parse_event_id, parse_subscribe_query};
pub use time::UnixMillis;
