//! WebSocket framing for the measurer's clients, written by hand so that reading costs no
//! allocation per frame.
//!
//! A client reads its socket into one [`FrameBuffer`] and takes frames out of it as byte ranges
//! of that buffer: a frame split across two reads stays in the buffer until its last byte has
//! arrived, then the unparsed tail is moved to the front once. The buffer only grows for a frame
//! larger than itself (bounded by [`MAX_FRAME_BYTES`]), which Vigil's events never are.
//!
//! Server frames are unmasked (RFC 6455 §5.1); a masked one is a protocol error. Frames the
//! client sends (pongs, its close) are control frames, built masked into a stack array.

use std::ops::Range;

/// A continuation frame (the rest of a fragmented message).
pub const OPCODE_CONTINUATION: u8 = 0x0;
/// A text frame: one event's JSON, or a control message such as `{"resume":…}`.
pub const OPCODE_TEXT: u8 = 0x1;
/// A binary frame (Vigil sends none).
pub const OPCODE_BINARY: u8 = 0x2;
/// Close, with an optional two-byte status code and a reason.
pub const OPCODE_CLOSE: u8 = 0x8;
/// Ping: the server's keep-alive, answered with a pong carrying the same payload.
pub const OPCODE_PING: u8 = 0x9;
/// Pong.
pub const OPCODE_PONG: u8 = 0xA;

/// Largest frame payload the measurer accepts: far above any event (payloads are ≤ 16 KiB).
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Largest control-frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Room for a masked control frame: 2 header bytes, 4 mask bytes, the payload.
pub const CONTROL_FRAME_CAPACITY: usize = 6 + MAX_CONTROL_PAYLOAD;

/// What a server sent that is not a WebSocket frame the measurer can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("server frame is masked")]
    Masked,
    #[error("reserved bits set without an extension")]
    ReservedBits,
    #[error("control frame is fragmented or longer than 125 bytes")]
    BadControlFrame,
    #[error("frame of {0} bytes is over the measurer's limit")]
    TooLarge(u64),
}

/// The parsed header of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The last (usually the only) frame of its message.
    pub fin: bool,
    pub opcode: u8,
    /// Header bytes before the payload: 2, 4 or 10 (servers never mask).
    pub header_len: usize,
    pub payload_len: usize,
}

/// Parses the header at the start of `bytes`; `Ok(None)` while it is incomplete.
pub fn parse_header(bytes: &[u8]) -> Result<Option<FrameHeader>, FrameError> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    if second & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let fin = first & 0x80 != 0;
    let opcode = first & 0x0f;
    let (header_len, payload_len) = match second & 0x7f {
        126 => {
            let Some(length) = bytes.get(2..4) else {
                return Ok(None);
            };
            (4, u64::from(u16::from_be_bytes([length[0], length[1]])))
        }
        127 => {
            let Some(length) = bytes.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(length);
            (10, u64::from_be_bytes(be))
        }
        short => (2, u64::from(short)),
    };
    if opcode >= OPCODE_CLOSE && (!fin || payload_len > MAX_CONTROL_PAYLOAD as u64) {
        return Err(FrameError::BadControlFrame);
    }
    if payload_len > MAX_FRAME_BYTES as u64 {
        return Err(FrameError::TooLarge(payload_len));
    }
    Ok(Some(FrameHeader {
        fin,
        opcode,
        header_len,
        payload_len: payload_len as usize,
    }))
}

/// One complete frame in a [`FrameBuffer`]; its payload is `buffer.bytes(frame.payload)`, valid
/// until the next [`FrameBuffer::spare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Range<usize>,
}

/// A read buffer from which complete frames are taken in place.
pub struct FrameBuffer {
    buf: Vec<u8>,
    /// First byte not yet parsed.
    start: usize,
    /// End of the bytes read so far.
    end: usize,
}

impl FrameBuffer {
    /// A buffer of `capacity` bytes (at least 16: any header fits).
    pub fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0; capacity.max(16)],
            start: 0,
            end: 0,
        }
    }

    /// The free space to read into. Moves an unparsed tail to the front when the free space is
    /// under a quarter of the buffer, and doubles the buffer when a single frame fills it.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let capacity = self.buf.len();
        if capacity - self.end < capacity / 4 && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // A frame larger than the buffer (headers already bounded it by MAX_FRAME_BYTES).
            self.buf.resize(capacity * 2, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records that `read` bytes were written at the start of [`Self::spare`].
    pub fn filled(&mut self, read: usize) {
        debug_assert!(self.end + read <= self.buf.len());
        self.end += read;
    }

    /// The bytes read but not parsed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops the first `count` pending bytes (the HTTP response before the first frame).
    pub fn consume(&mut self, count: usize) {
        debug_assert!(count <= self.end - self.start);
        self.start += count;
    }

    /// The bytes of a frame's payload range.
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Takes the next complete frame, or `Ok(None)` when more bytes must be read first.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(header) = parse_header(self.pending())? else {
            return Ok(None);
        };
        let payload_start = self.start + header.header_len;
        let payload_end = payload_start + header.payload_len;
        if payload_end > self.end {
            return Ok(None);
        }
        self.start = payload_end;
        Ok(Some(Frame {
            fin: header.fin,
            opcode: header.opcode,
            payload: payload_start..payload_end,
        }))
    }
}

/// Writes a masked control frame (pong or close) into `out` and returns its length. A payload
/// over 125 bytes is cut to 125 (a ping cannot carry more).
pub fn masked_control_frame(
    opcode: u8,
    payload: &[u8],
    mask: [u8; 4],
    out: &mut [u8; CONTROL_FRAME_CAPACITY],
) -> usize {
    debug_assert!(opcode >= OPCODE_CLOSE);
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    out[0] = 0x80 | opcode;
    out[1] = 0x80 | payload.len() as u8;
    out[2..6].copy_from_slice(&mask);
    for (index, byte) in payload.iter().enumerate() {
        out[6 + index] = byte ^ mask[index % 4];
    }
    6 + payload.len()
}

/// The status code of a Close frame's payload; `None` when it carries none.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    match payload {
        [high, low, ..] => Some(u16::from_be_bytes([*high, *low])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked server frame, as Vigil writes it.
    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            len if len < 126 => frame.push(len as u8),
            len if len <= usize::from(u16::MAX) => {
                frame.push(126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    /// Feeds `stream` to a buffer of `capacity` bytes in reads of at most `chunk` bytes and
    /// returns every frame as (opcode, payload).
    fn read_all(stream: &[u8], capacity: usize, chunk: usize) -> Vec<(u8, Vec<u8>)> {
        let mut buffer = FrameBuffer::new(capacity);
        let mut frames = Vec::new();
        let mut offset = 0;
        while offset < stream.len() {
            let spare = buffer.spare();
            let count = spare.len().min(chunk).min(stream.len() - offset);
            spare[..count].copy_from_slice(&stream[offset..offset + count]);
            buffer.filled(count);
            offset += count;
            while let Some(frame) = buffer.next_frame().unwrap() {
                frames.push((frame.opcode, buffer.bytes(frame.payload).to_vec()));
            }
        }
        assert!(buffer.pending().is_empty(), "bytes left unparsed");
        frames
    }

    #[test]
    fn headers_use_all_three_length_forms() {
        let short = server_frame(OPCODE_TEXT, &[b'a'; 125]);
        let medium = server_frame(OPCODE_TEXT, &[b'b'; 126]);
        let long = server_frame(OPCODE_TEXT, &[b'c'; 70_000]);
        for (frame, header_len, payload_len) in
            [(&short, 2, 125), (&medium, 4, 126), (&long, 10, 70_000)]
        {
            let header = parse_header(frame).unwrap().unwrap();
            assert_eq!(header.header_len, header_len);
            assert_eq!(header.payload_len, payload_len);
            assert!(header.fin);
            assert_eq!(header.opcode, OPCODE_TEXT);
            for cut in 0..header_len {
                assert_eq!(parse_header(&frame[..cut]).unwrap(), None, "cut at {cut}");
            }
        }
    }

    #[test]
    fn frames_split_across_reads_come_out_whole() {
        let payloads: Vec<Vec<u8>> = [3, 125, 126, 300, 65_535, 65_536, 100_000]
            .iter()
            .map(|&len| (0..len).map(|i| (i % 251) as u8).collect())
            .collect();
        let stream: Vec<u8> = payloads
            .iter()
            .flat_map(|payload| server_frame(OPCODE_TEXT, payload))
            .collect();
        for (capacity, chunk) in [
            (16, 1),
            (64, 7),
            (4096, 1000),
            (65_536, 65_536),
            (1 << 20, 3),
        ] {
            let frames = read_all(&stream, capacity, chunk);
            assert_eq!(
                frames.len(),
                payloads.len(),
                "capacity {capacity} chunk {chunk}"
            );
            for ((opcode, payload), expected) in frames.iter().zip(&payloads) {
                assert_eq!(*opcode, OPCODE_TEXT);
                assert_eq!(payload, expected);
            }
        }
    }

    #[test]
    fn ping_and_close_frames_are_read_between_events() {
        let mut stream = server_frame(OPCODE_TEXT, b"{\"id\":1}");
        stream.extend(server_frame(OPCODE_PING, b""));
        stream.extend(server_frame(OPCODE_PING, b"hello"));
        stream.extend(server_frame(OPCODE_CLOSE, &[0x03, 0xf0, b'b', b'y', b'e']));
        let frames = read_all(&stream, 32, 5);
        let opcodes: Vec<u8> = frames.iter().map(|(opcode, _)| *opcode).collect();
        assert_eq!(
            opcodes,
            [OPCODE_TEXT, OPCODE_PING, OPCODE_PING, OPCODE_CLOSE]
        );
        assert_eq!(frames[2].1, b"hello");
        assert_eq!(close_code(&frames[3].1), Some(1008));
        assert_eq!(close_code(b""), None);
    }

    #[test]
    fn protocol_errors_are_reported() {
        assert_eq!(parse_header(&[0x81, 0x85]), Err(FrameError::Masked));
        assert_eq!(parse_header(&[0xc1, 0x00]), Err(FrameError::ReservedBits));
        assert_eq!(
            parse_header(&[0x09, 0x00]),
            Err(FrameError::BadControlFrame)
        );
        assert_eq!(
            parse_header(&[0x89, 126, 0, 126]),
            Err(FrameError::BadControlFrame)
        );
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(parse_header(&huge), Err(FrameError::TooLarge(1 << 40)));
    }

    #[test]
    fn pongs_are_masked_and_unmask_to_the_ping_payload() {
        let mut out = [0u8; CONTROL_FRAME_CAPACITY];
        let mask = [0x12, 0x34, 0x56, 0x78];
        let len = masked_control_frame(OPCODE_PONG, b"hello", mask, &mut out);
        assert_eq!(len, 11);
        assert_eq!(out[0], 0x8a);
        assert_eq!(out[1], 0x80 | 5);
        assert_eq!(&out[2..6], &mask);
        let unmasked: Vec<u8> = out[6..len]
            .iter()
            .enumerate()
            .map(|(index, byte)| byte ^ mask[index % 4])
            .collect();
        assert_eq!(unmasked, b"hello");
        let len = masked_control_frame(OPCODE_PONG, &[0; 200], mask, &mut out);
        assert_eq!(len, CONTROL_FRAME_CAPACITY);
    }
}
