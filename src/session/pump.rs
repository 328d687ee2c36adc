//! Non-blocking I/O for the relay: both sockets are read and written in one
//! poll, so the proxy keeps reading server replies while it is still writing a
//! client's long pipeline (a blocking write there would deadlock: the server
//! stops reading when nobody drains its replies). Reads stop while the data
//! already waiting for the other side is above [`HIGH_WATER`]: a slow reader
//! slows its peer instead of growing the proxy's memory.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use prometheus_client::metrics::counter::Counter;

use crate::protocol::Framer;

/// Bytes read per syscall at most.
pub const READ_CHUNK: usize = 32 * 1024;
/// Above this many bytes waiting to be written to one side, the other side is not read.
pub const HIGH_WATER: usize = 128 * 1024;

/// Reads once and appends what arrived to `framer`; `Ok(0)` is end of stream.
///
/// The read lands in an uninitialised stack buffer first, and the framer's buffer is only
/// touched once bytes arrived: a connection with nothing to read holds no read buffer at all
/// (thousands of idle clients cost little memory), and nothing is zeroed before a read.
pub fn poll_read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    framer: &mut Framer,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut read = ReadBuf::uninit(&mut scratch);
    ready!(Pin::new(stream).poll_read(cx, &mut read))?;
    if !read.filled().is_empty() {
        framer.buffer().extend_from_slice(read.filled());
    }
    Poll::Ready(Ok(read.filled().len()))
}

/// Writes all of `buf` and flushes, counting the bytes in `written`; `Pending` while the peer
/// is not reading.
pub fn poll_drain<S: AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    written: &Counter,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !buf.is_empty() {
        let n = ready!(Pin::new(&mut *stream).poll_write(cx, buf))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        written.inc_by(n as u64);
        buf.advance(n);
    }
    Pin::new(stream).poll_flush(cx)
}
