//! What the accept loop wraps around each HTTP connection's socket: a write
//! stall timeout ([`StallIo`]) and a lingering close ([`linger`]).
//!
//! A lingering close is what mature HTTP servers do after answering early
//! (a 413 or 401 before the body was read): stop sending, then read and
//! drop what the client still sends for a bounded time and number of bytes
//! before closing. Closing a socket with unread bytes makes the kernel send
//! a reset, and a reset can destroy the answer in the client's receive
//! buffer before the client reads it. The accept loop keeps a duplicate of
//! the socket while hyper serves it, so hyper's close does not reset it;
//! [`linger`] then drains and closes the duplicate.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Longest lingering close (bytes of a refused body read and dropped).
pub const LINGER_BYTES: u64 = 16 << 20;
/// Longest lingering close (time).
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// A socket whose writes fail with `TimedOut` once one has made no progress
/// for `timeout` (a client that stops reading a response, e.g. a blob
/// download, frees its connection instead of holding it forever). Once
/// `off` is set (the connection became a WebSocket, which has its own
/// write timeout) it only passes calls through.
pub struct StallIo<I> {
    /// Set when the timeout no longer applies.
    off: Arc<AtomicBool>,
    /// The socket.
    inner: I,
    /// How long a write may stay pending.
    timeout: Duration,
    /// Armed while a write is pending: when it fires, the write fails.
    stall: Pin<Box<Sleep>>,
    /// Whether `stall` is armed.
    armed: bool,
}

impl<I> StallIo<I> {
    /// Wraps `inner`.
    pub fn new(inner: I, timeout: Duration, off: Arc<AtomicBool>) -> Self {
        Self {
            off,
            inner,
            timeout,
            stall: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }

    /// Turns a pending write into `TimedOut` once the stall outlasts the
    /// timeout; progress disarms it.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending if self.off.load(Ordering::Relaxed) => Poll::Pending,
            Poll::Pending => {
                if !self.armed {
                    self.armed = true;
                    self.stall.as_mut().reset(Instant::now() + self.timeout);
                }
                match self.stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for StallIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for StallIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, b);
        this.watch(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, r)
    }
}

/// Splits an accepted socket into the stream to serve and a duplicate of it
/// kept for [`linger`]. Without a duplicate (the OS refused one) the
/// connection is served without a lingering close.
pub fn duplicate(
    stream: tokio::net::TcpStream,
) -> io::Result<(tokio::net::TcpStream, Option<std::net::TcpStream>)> {
    let std = stream.into_std()?;
    let dup = std.try_clone().ok();
    Ok((tokio::net::TcpStream::from_std(std)?, dup))
}

/// The lingering close of a served connection: half-closes the socket (the
/// answer already sent is followed by FIN), reads and drops what the client
/// still sends until it closes, [`LINGER_BYTES`] or [`LINGER_TIME`], then
/// closes.
pub async fn linger(dup: std::net::TcpStream) {
    let _ = dup.shutdown(std::net::Shutdown::Write);
    let Ok(mut s) = tokio::net::TcpStream::from_std(dup) else {
        return;
    };
    let mut left = LINGER_BYTES;
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while left > 0 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
    })
    .await;
}
