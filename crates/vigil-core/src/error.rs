//! Errors of parsing and validating a request body. The HTTP edge maps each variant to one
//! status and error code (the README's *Errors* table); messages are written for API clients.

use std::fmt;

/// One problem with one field of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Position of the event in a bulk body (array element or NDJSON event, from 0);
    /// `None` for a single-object body.
    pub index: Option<usize>,
    /// The field's name, as sent (`$` for the event itself).
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(index: Option<usize>, field: &str, message: impl Into<String>) -> Self {
        FieldError {
            index,
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(index) => write!(f, "event {index}: {} {}", self.field, self.message),
            None => write!(f, "{} {}", self.field, self.message),
        }
    }
}

/// Why a body was refused. A bulk is all-or-nothing: one bad event refuses the whole body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body (or one NDJSON line) is not well-formed JSON, or nests deeper than any valid
    /// event can.
    #[error("{message}")]
    InvalidJson { message: String },
    /// A body with no events: empty, blank, `[]`, or NDJSON with only blank lines.
    #[error("the body holds no events")]
    Empty,
    /// More events than `VIGIL_MAX_BULK_EVENTS`.
    #[error("a bulk request may hold at most {max} events")]
    TooManyEvents { max: usize },
    /// Well-formed JSON that breaks an event rule; at most [`MAX_DETAILS`] problems are listed.
    #[error("{} event field(s) failed validation", .0.len())]
    Validation(Vec<FieldError>),
}

/// The most field problems one error response lists.
pub const MAX_DETAILS: usize = 100;
