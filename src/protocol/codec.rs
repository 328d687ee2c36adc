//! Splits a byte stream into messages (`tag`, `int32 length`, body) without
//! copying them, so that relayed messages leave as the bytes they arrived in.

use bytes::{Buf, Bytes, BytesMut};

/// Messages larger than this may be relayed in pieces when the caller allows it,
/// so one huge DataRow or CopyData never has to sit whole in memory.
pub const STREAM_THRESHOLD: usize = 64 * 1024;

/// A framing violation; the connection cannot continue.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The length field is below 4.
    #[error("invalid message length {0}")]
    BadLength(i32),
    /// A message the proxy must read whole exceeds the configured limit.
    #[error("message '{tag}' of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Message type byte, as a char.
        tag: char,
        /// Declared length.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A message body is not what its type requires.
    #[error("malformed '{0}' message")]
    Malformed(char),
}

/// One unit handed to the relay.
#[derive(Debug)]
pub enum Frame {
    /// A whole message, header included.
    Message(Bytes),
    /// Raw bytes of a message that is being streamed (header included in the first piece).
    Piece(Bytes),
}

impl Frame {
    /// The message's type byte; `None` for a streamed piece.
    pub fn tag(&self) -> Option<u8> {
        match self {
            Frame::Message(m) => m.first().copied(),
            Frame::Piece(_) => None,
        }
    }
}

/// Read-side buffer plus the state of a message being streamed.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    /// Bytes of a streamed message not yet handed out; while non-zero, every byte read belongs to it.
    streaming: usize,
}

impl Default for Framer {
    fn default() -> Self {
        // Empty until bytes arrive: an idle connection holds no buffer.
        Self { buf: BytesMut::new(), streaming: 0 }
    }
}

/// The most a message's declared length makes the buffer grow by before its bytes arrive.
const RESERVE_STEP: usize = 1 << 20;

impl Framer {
    /// The buffer to read into.
    pub fn buffer(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        &mut self.buf
    }

    /// Gives the buffer's memory back once everything in it has been handed out, so that a
    /// connection that goes idle after a burst does not keep the burst's buffer.
    pub fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// A message is being handed out in pieces: part of it has been, the rest has not arrived.
    pub fn is_streaming(&self) -> bool {
        self.streaming > 0
    }

    /// The length of the whole message being buffered, once its header has arrived (not
    /// for one relayed in pieces).
    pub fn pending_len(&self) -> Option<usize> {
        if self.streaming > 0 || self.buf.len() < 5 {
            return None;
        }
        usize::try_from((&self.buf[1..5]).get_i32()).ok().map(|declared| declared + 1)
    }

    /// True when no partial message is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.streaming == 0
    }

    /// Next frame, or `None` when more bytes are needed.
    ///
    /// `streamable(tag)` says whether a large message of that type may be relayed in
    /// pieces; other messages are buffered whole up to `limit` bytes.
    pub fn next(&mut self, streamable: impl Fn(u8) -> bool, limit: usize) -> Result<Option<Frame>, ProtocolError> {
        if self.streaming > 0 {
            if self.buf.is_empty() {
                return Ok(None);
            }
            let n = self.streaming.min(self.buf.len());
            self.streaming -= n;
            return Ok(Some(Frame::Piece(self.buf.split_to(n).freeze())));
        }
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.buf[0];
        let declared = (&self.buf[1..5]).get_i32();
        if declared < 4 {
            return Err(ProtocolError::BadLength(declared));
        }
        let total = declared as usize + 1;
        let stream = total > STREAM_THRESHOLD && streamable(tag);
        if total > limit && !stream {
            return Err(ProtocolError::TooLarge { tag: tag as char, len: total, limit });
        }
        if self.buf.len() >= total {
            return Ok(Some(Frame::Message(self.buf.split_to(total).freeze())));
        }
        if stream {
            let n = self.buf.len();
            self.streaming = total - n;
            return Ok(Some(Frame::Piece(self.buf.split_to(n).freeze())));
        }
        // Room for what is declared, but at most a step at a time: memory follows the bytes
        // that arrive, not a length a peer announces and never sends.
        self.buf.reserve((total - self.buf.len()).min(RESERVE_STEP));
        Ok(None)
    }
}

/// The body of a whole message (after tag and length).
pub fn body(msg: &[u8]) -> &[u8] {
    msg.get(5..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.put_i32(body.len() as i32 + 4);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn splits_whole_messages_and_waits_for_more() {
        let mut f = Framer::default();
        let mut input = msg(b'Q', b"select 1\0");
        input.extend(msg(b'S', b""));
        f.buffer().extend_from_slice(&input[..7]);
        assert!(f.next(|_| false, 1024).ok().flatten().is_none());
        f.buffer().extend_from_slice(&input[7..]);
        let a = f.next(|_| false, 1024).ok().flatten();
        assert!(matches!(&a, Some(Frame::Message(m)) if m[..] == msg(b'Q', b"select 1\0")[..]));
        let b = f.next(|_| false, 1024).ok().flatten();
        assert!(matches!(&b, Some(Frame::Message(m)) if m[..] == msg(b'S', b"")[..]));
        assert!(f.next(|_| false, 1024).ok().flatten().is_none());
        assert!(f.is_empty());
    }

    #[test]
    fn refuses_bad_and_oversized_lengths() {
        let mut f = Framer::default();
        f.buffer().extend_from_slice(&[b'Q', 0, 0, 0, 3]);
        assert!(matches!(f.next(|_| false, 1024), Err(ProtocolError::BadLength(3))));
        let mut f = Framer::default();
        f.buffer().extend_from_slice(&[b'Q', 0, 0, 8, 0, b'x']);
        assert!(matches!(f.next(|_| false, 1024), Err(ProtocolError::TooLarge { .. })));
        // Refused even when the whole message is already buffered.
        let mut f = Framer::default();
        f.buffer().extend_from_slice(&[b'Q', 0, 0, 0, 9, b'x', b'x', b'x', b'x', 0]);
        assert!(matches!(f.next(|_| false, 8), Err(ProtocolError::TooLarge { len: 10, .. })));
    }

    #[test]
    fn streams_large_streamable_messages_in_pieces() {
        let big = vec![7u8; STREAM_THRESHOLD + 10];
        let whole = msg(b'd', &big);
        let mut f = Framer::default();
        f.buffer().extend_from_slice(&whole[..1000]);
        let mut got = Vec::new();
        while let Some(Frame::Piece(p)) = f.next(|t| t == b'd', 1024).ok().flatten() {
            got.extend_from_slice(&p);
        }
        f.buffer().extend_from_slice(&whole[1000..]);
        while let Some(Frame::Piece(p)) = f.next(|t| t == b'd', 1024).ok().flatten() {
            got.extend_from_slice(&p);
        }
        assert_eq!(got, whole);
        assert!(f.is_empty());
    }

    #[test]
    fn an_announced_length_reserves_memory_only_a_step_ahead_of_the_bytes() {
        let mut f = Framer::default();
        // A 64 MiB Query announced, 5 bytes of it sent.
        f.buffer().extend_from_slice(&[b'Q', 4, 0, 0, 0, b'x']);
        assert!(f.next(|_| false, 64 << 20).ok().flatten().is_none());
        assert!(f.buffer().capacity() <= RESERVE_STEP + 32 * 1024, "{}", f.buffer().capacity());
    }
}
