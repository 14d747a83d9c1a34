//! Request bodies to validated events, with simd-json.
//!
//! A body is one event object, a JSON array of them, or NDJSON (one object per line; blank
//! lines and CRLF tolerated). [`EventParser`] keeps simd-json's buffers and a scratch copy of
//! the body between calls (simd-json rewrites its input while unescaping strings), so a warm
//! parser allocates only the events it returns. Keep one per thread.
//!
//! The payload must come out byte-for-byte as sent, minus insignificant whitespace, which the
//! parsed tape cannot give back (numbers are converted, escapes resolved). simd-json also
//! exposes its structural index — the byte offset of every `{ } [ ] : ,`, string start and
//! scalar start — and every tape node begins at exactly one of those that is not a closer
//! (`} ] : ,`). Walking the two in step finds where the payload starts in the untouched
//! original; counting brackets over the structurals (never over string contents) finds its
//! end. Nesting is bounded inside simd-json's own iterative parser, so a body of a million
//! `[` is refused without recursion.

use simd_json::{Buffers, Node, StaticNode, Tape};

use crate::error::{FieldError, MAX_DETAILS, ParseError};
use crate::event::{Level, Limits, NewEvent, is_valid_type, source_problem};
use crate::time::UnixMillis;

/// How the body is framed, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`: one object, or an array of objects.
    Json,
    /// `application/x-ndjson` / `application/ndjson`: one object per line.
    NdJson,
}

/// The events of one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedBody {
    pub events: Vec<NewEvent>,
    /// True for an array or NDJSON body, which is answered with `{"ids":[…],"count":n}`
    /// whatever its length; false for a single object, answered with `{"id":N}`.
    pub bulk: bool,
}

/// Levels of nesting around a payload: a bulk array and the event object.
const ENVELOPE_DEPTH: usize = 2;

/// Reusable parser state. See the module docs.
pub struct EventParser {
    limits: Limits,
    buffers: Buffers,
    /// The body plus simd-json's padding; simd-json unescapes strings into it.
    scratch: Vec<u8>,
    /// The tape's allocation, kept between bodies.
    tape: Tape<'static>,
    /// Payload checks' scratch space, kept between bodies.
    tree_scratch: TreeScratch,
}

impl EventParser {
    pub fn new(limits: Limits) -> Self {
        // simd-json refuses anything nested deeper than a valid event could be, plus a
        // margin so that moderately over-deep payloads get a precise per-field error.
        let max_depth = ENVELOPE_DEPTH + limits.max_payload_depth * 2;
        EventParser {
            limits,
            buffers: Buffers::with_max_depth(4096, max_depth),
            scratch: Vec::new(),
            tape: Tape::null(),
            tree_scratch: TreeScratch::default(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Parses and validates a whole body. All or nothing: any bad event refuses the body.
    pub fn parse(&mut self, body: &[u8], format: BodyFormat) -> Result<ParsedBody, ParseError> {
        match format {
            BodyFormat::Json => {
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Err(ParseError::Empty);
                }
                let mut events = Vec::new();
                let mut errors = Vec::new();
                let bulk = self.parse_document(body, None, &mut events, &mut errors)?;
                finish(ParsedBody { events, bulk }, errors)
            }
            BodyFormat::NdJson => self.parse_ndjson(body),
        }
    }

    fn parse_ndjson(&mut self, body: &[u8]) -> Result<ParsedBody, ParseError> {
        let mut events = Vec::new();
        let mut errors = Vec::new();
        let mut line_start = 0;
        let mut line_number = 0usize;
        let mut items = 0usize;
        while line_start < body.len() {
            let line_end = memchr::memchr(b'\n', &body[line_start..])
                .map_or(body.len(), |offset| line_start + offset);
            let line = &body[line_start..line_end];
            line_start = line_end + 1;
            line_number += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if items == self.limits.max_bulk_events {
                return Err(ParseError::TooManyEvents {
                    max: self.limits.max_bulk_events,
                });
            }
            let index = items;
            items += 1;
            let item = self.parse_document(line, Some(index), &mut events, &mut errors);
            if let Err(ParseError::InvalidJson { message }) = item {
                return Err(ParseError::InvalidJson {
                    message: format!("line {line_number}: {message}"),
                });
            }
            item?;
            if errors.len() >= MAX_DETAILS {
                break;
            }
        }
        if events.is_empty() && errors.is_empty() {
            return Err(ParseError::Empty);
        }
        finish(ParsedBody { events, bulk: true }, errors)
    }

    /// Parses one JSON document: an object (an event), or — when `ndjson_index` is `None` —
    /// an array of objects. Valid events go to `events`, problems to `errors`. Returns
    /// whether the document was a bulk array.
    fn parse_document(
        &mut self,
        document: &[u8],
        ndjson_index: Option<usize>,
        events: &mut Vec<NewEvent>,
        errors: &mut Vec<FieldError>,
    ) -> Result<bool, ParseError> {
        self.scratch.clear();
        self.scratch.extend_from_slice(document);
        self.scratch
            .resize(document.len() + simd_json::INPUT_PADDING, b' ');

        let mut tape: Tape<'_> = std::mem::replace(&mut self.tape, Tape::null()).reset();
        let parsed = simd_json::fill_tape_padded(
            &mut self.scratch,
            document.len(),
            &mut self.buffers,
            &mut tape,
        );
        let outcome = match parsed {
            Err(error) => Err(json_error(&error, document)),
            Ok(()) => {
                let walker = Walker {
                    limits: &self.limits,
                    tree_scratch: &mut self.tree_scratch,
                    nodes: &tape.0,
                    structurals: StructuralCursor::new(self.buffers.structural_indexes(), document),
                };
                walker.walk_document(ndjson_index, events, errors)
            }
        };
        self.tape = tape.reset();
        outcome
    }
}

fn finish(body: ParsedBody, errors: Vec<FieldError>) -> Result<ParsedBody, ParseError> {
    if !errors.is_empty() {
        return Err(ParseError::Validation(errors));
    }
    if body.events.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(body)
}

fn json_error(error: &simd_json::Error, document: &[u8]) -> ParseError {
    use simd_json::ErrorType;
    let message = match error.error() {
        ErrorType::DepthLimitExceeded => {
            "the body nests deeper than any valid event can".to_owned()
        }
        // simd-json reports these at the start of the document, not at the escape.
        ErrorType::InvalidEscape
        | ErrorType::InvalidUnicodeEscape
        | ErrorType::InvalidUnicodeCodepoint => match first_bad_escape(document) {
            Some(at) => format!("malformed JSON: an invalid escape at byte {at}"),
            None => format!("malformed JSON near byte {}", error.index()),
        },
        _ => format!("malformed JSON near byte {}", error.index()),
    };
    ParseError::InvalidJson { message }
}

/// The offset of the first string escape JSON does not allow: an unknown escape letter, a
/// `\u` without four hex digits, or a UTF-16 surrogate without its pair. Only strings hold
/// backslashes in JSON, so the bytes are read as they come.
fn first_bad_escape(document: &[u8]) -> Option<usize> {
    let hex4 = |at: usize| -> Option<u16> {
        let digits = document.get(at..at + 4)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let mut at = 0;
    while let Some(offset) = memchr::memchr(b'\\', &document[at..]) {
        let escape = at + offset;
        match document.get(escape + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => at = escape + 2,
            Some(b'u') => {
                let Some(unit) = hex4(escape + 2) else {
                    return Some(escape);
                };
                at = escape + 6;
                match unit {
                    0xD800..=0xDBFF => {
                        let low = (document.get(at..at + 2) == Some(b"\\u"))
                            .then(|| hex4(at + 2))
                            .flatten();
                        if !matches!(low, Some(0xDC00..=0xDFFF)) {
                            return Some(escape);
                        }
                        at += 6;
                    }
                    0xDC00..=0xDFFF => return Some(escape),
                    _ => {}
                }
            }
            _ => return Some(escape),
        }
    }
    None
}

/// Maps tape nodes to byte offsets in the original document. Tape nodes and opening
/// structurals correspond one to one, in order; lookups must ask for increasing nodes.
struct StructuralCursor<'a> {
    structurals: &'a [u32],
    original: &'a [u8],
    /// Position in `structurals` of the next unconsumed structural.
    next_structural: usize,
    /// The tape node that the next opening structural belongs to.
    next_node: usize,
}

impl<'a> StructuralCursor<'a> {
    fn new(structurals: &'a [u32], original: &'a [u8]) -> Self {
        StructuralCursor {
            structurals,
            original,
            next_structural: 0,
            next_node: 0,
        }
    }

    /// The position in `structurals` where tape node `node` begins.
    fn structural_of(&mut self, node: usize) -> Option<usize> {
        debug_assert!(
            node >= self.next_node,
            "structural lookups must move forward"
        );
        while self.next_structural < self.structurals.len() {
            let position = self.next_structural;
            self.next_structural += 1;
            let byte = *self.original.get(self.structurals[position] as usize)?;
            if matches!(byte, b'}' | b']' | b':' | b',') {
                continue;
            }
            let this_node = self.next_node;
            self.next_node += 1;
            if this_node == node {
                return Some(position);
            }
        }
        None
    }

    /// The original bytes of the object or array whose opening bracket is structural `start`.
    fn container_span(&self, start: usize) -> Option<&'a [u8]> {
        let begin = self.structurals[start] as usize;
        let mut depth = 0usize;
        for &offset in &self.structurals[start..] {
            match self.original.get(offset as usize)? {
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        return self.original.get(begin..offset as usize + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// One pass over a parsed document's tape.
struct Walker<'t, 'a> {
    limits: &'t Limits,
    tree_scratch: &'t mut TreeScratch,
    nodes: &'t [Node<'t>],
    structurals: StructuralCursor<'a>,
}

/// The number of tape nodes a value occupies, itself included.
fn node_span(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

impl Walker<'_, '_> {
    fn walk_document(
        mut self,
        ndjson_index: Option<usize>,
        events: &mut Vec<NewEvent>,
        errors: &mut Vec<FieldError>,
    ) -> Result<bool, ParseError> {
        match self.nodes.first() {
            Some(Node::Object { .. }) => {
                self.walk_event(0, ndjson_index, events, errors);
                Ok(false)
            }
            Some(Node::Array { len, .. }) if ndjson_index.is_none() => {
                if *len == 0 {
                    return Err(ParseError::Empty);
                }
                if *len > self.limits.max_bulk_events {
                    return Err(ParseError::TooManyEvents {
                        max: self.limits.max_bulk_events,
                    });
                }
                let mut node = 1;
                for index in 0..*len {
                    if errors.len() >= MAX_DETAILS {
                        break;
                    }
                    if matches!(self.nodes[node], Node::Object { .. }) {
                        self.walk_event(node, Some(index), events, errors);
                    } else {
                        errors.push(FieldError::new(Some(index), "$", "must be a JSON object"));
                    }
                    node += node_span(&self.nodes[node]);
                }
                Ok(true)
            }
            _ => {
                let message = if ndjson_index.is_some() {
                    "each NDJSON line must be a JSON object"
                } else {
                    "the body must be a JSON object or an array of objects"
                };
                errors.push(FieldError::new(ndjson_index, "$", message));
                Ok(false)
            }
        }
    }

    /// Validates the event object at tape node `at`; pushes the event or its problems.
    fn walk_event(
        &mut self,
        at: usize,
        index: Option<usize>,
        events: &mut Vec<NewEvent>,
        errors: &mut Vec<FieldError>,
    ) {
        let Node::Object { len, .. } = self.nodes[at] else {
            unreachable!("walk_event is only called on objects")
        };
        let errors_before = errors.len();
        let mut source = None;
        let mut event_type = None;
        let mut level = None;
        let mut payload = None;
        let mut occurred_at = None;
        let mut seen = [false; 5];

        let mut node = at + 1;
        for _ in 0..len {
            let Node::String(key) = self.nodes[node] else {
                unreachable!("object keys are strings")
            };
            let value_at = node + 1;
            let value = self.nodes[value_at];
            node = value_at + node_span(&value);

            let slot = match key {
                "source" => 0,
                "type" => 1,
                "level" => 2,
                "payload" => 3,
                "occurredAt" => 4,
                _ => {
                    errors.push(FieldError::new(index, key, "is not a known field"));
                    continue;
                }
            };
            if std::mem::replace(&mut seen[slot], true) {
                errors.push(FieldError::new(index, key, "appears more than once"));
                continue;
            }
            let checked = match slot {
                0 => self.check_source(value).map(|s| source = Some(s)),
                1 => self.check_type(value).map(|t| event_type = Some(t)),
                2 => check_level(value).map(|l| level = Some(l)),
                3 => self.check_payload(value_at).map(|p| payload = p),
                _ => check_occurred_at(value).map(|t| occurred_at = t),
            };
            if let Err(message) = checked {
                errors.push(FieldError::new(index, key, message));
            }
        }

        for (slot, name) in ["source", "type", "level"].iter().enumerate() {
            if !seen[slot] {
                errors.push(FieldError::new(index, name, "is required"));
            }
        }
        if errors.len() > errors_before {
            return;
        }
        if let (Some(source), Some(event_type), Some(level)) = (source, event_type, level) {
            events.push(NewEvent {
                source,
                event_type,
                level,
                payload,
                occurred_at,
            });
        }
    }

    fn check_source(&self, value: Node<'_>) -> Result<String, String> {
        let Node::String(text) = value else {
            return Err("must be a string".into());
        };
        match source_problem(text, self.limits.max_source_chars) {
            None => Ok(text.to_owned()),
            Some("is too long") => Err(format!(
                "must be at most {} characters",
                self.limits.max_source_chars
            )),
            Some(problem) => Err(problem.into()),
        }
    }

    fn check_type(&self, value: Node<'_>) -> Result<String, String> {
        match value {
            Node::String(text) if is_valid_type(text, self.limits.max_type_len) => {
                Ok(text.to_owned())
            }
            Node::String(_) => Err(format!(
                "must be 1-{} ASCII letters, digits or _ - . :",
                self.limits.max_type_len
            )),
            _ => Err("must be a string".into()),
        }
    }

    /// The payload at tape node `at`: `null` (absent) or an object within the size, depth
    /// and duplicate-key rules, returned as its original text minus whitespace.
    fn check_payload(&mut self, at: usize) -> Result<Option<String>, String> {
        let count = match self.nodes[at] {
            Node::Static(StaticNode::Null) => return Ok(None),
            Node::Object { count, .. } => count,
            _ => return Err("must be a JSON object".into()),
        };
        check_payload_tree(
            &self.nodes[at..=at + count],
            self.limits.max_payload_depth,
            self.tree_scratch,
        )?;

        let span = self
            .structurals
            .structural_of(at)
            .and_then(|start| self.structurals.container_span(start))
            .ok_or_else(|| "could not be located in the body".to_owned())?;
        debug_assert_eq!(span.first(), Some(&b'{'));
        let minified = minify(span);
        if minified.len() > self.limits.max_payload_bytes {
            return Err(format!(
                "must be at most {} bytes",
                self.limits.max_payload_bytes
            ));
        }
        String::from_utf8(minified)
            .map(Some)
            .map_err(|_| "is not valid UTF-8".to_owned())
    }
}

fn check_level(value: Node<'_>) -> Result<Level, String> {
    match value {
        Node::String(text) => text.parse(),
        _ => Err(()),
    }
    .map_err(|()| "must be one of INFO, WARN, ERROR, CRITICAL".to_owned())
}

fn check_occurred_at(value: Node<'_>) -> Result<Option<UnixMillis>, String> {
    match value {
        Node::Static(StaticNode::Null) => Ok(None),
        Node::String(text) => UnixMillis::parse_rfc3339(text)
            .map(Some)
            .map_err(|e| e.to_string()),
        _ => Err("must be an RFC 3339 date-time string".into()),
    }
}

/// Checks nesting depth and duplicate keys over a payload's tape nodes (`nodes[0]` is the
/// payload object). Iterative: a stack of where each open container ends.
fn check_payload_tree(
    nodes: &[Node<'_>],
    max_depth: usize,
    scratch: &mut TreeScratch,
) -> Result<(), String> {
    let TreeScratch { open_ends, keys } = scratch;
    open_ends.clear();
    for (position, node) in nodes.iter().enumerate() {
        while open_ends.last().is_some_and(|&end| position > end) {
            open_ends.pop();
        }
        let (len, count, is_object) = match *node {
            Node::Object { len, count } => (len, count, true),
            Node::Array { len, count } => (len, count, false),
            _ => continue,
        };
        open_ends.push(position + count);
        if open_ends.len() > max_depth {
            return Err(format!("must not nest deeper than {max_depth} levels"));
        }
        if is_object && len > 1 {
            keys.clear();
            let mut child = position + 1;
            for _ in 0..len {
                keys.push(child);
                child += 1 + node_span(&nodes[child + 1]);
            }
            if let Some(duplicate) = duplicate_key(nodes, keys) {
                return Err(format!("has the key {duplicate:?} more than once"));
            }
        }
    }
    Ok(())
}

/// Scratch space for [`check_payload_tree`], kept by the parser so a warm parser does not
/// allocate for it.
#[derive(Default)]
struct TreeScratch {
    /// Tape position where each open container ends (a stack, innermost last).
    open_ends: Vec<usize>,
    /// Tape positions of one object's keys.
    keys: Vec<usize>,
}

/// A key that occurs twice among the object keys at tape positions `keys`, if any.
fn duplicate_key<'a>(nodes: &[Node<'a>], keys: &mut [usize]) -> Option<&'a str> {
    let key = |position: usize| match nodes[position] {
        Node::String(key) => key,
        _ => "",
    };
    // Small objects, the common case: pairwise is cheaper than sorting.
    if keys.len() <= 8 {
        for (index, &first) in keys.iter().enumerate() {
            if keys[index + 1..]
                .iter()
                .any(|&second| key(second) == key(first))
            {
                return Some(key(first));
            }
        }
        return None;
    }
    keys.sort_unstable_by(|&a, &b| key(a).cmp(key(b)));
    keys.windows(2)
        .find(|pair| key(pair[0]) == key(pair[1]))
        .map(|pair| key(pair[0]))
}

/// Removes insignificant whitespace from well-formed JSON text.
pub fn minify(json: &[u8]) -> Vec<u8> {
    let has_whitespace = memchr::memchr3(b' ', b'\n', b'\r', json).is_some()
        || memchr::memchr(b'\t', json).is_some();
    if !has_whitespace {
        return json.to_vec();
    }
    let mut out = Vec::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            out.push(byte);
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(byte);
            in_string = byte == b'"';
        }
    }
    out
}

#[cfg(test)]
mod tests;
