//! The TLS stream seen through tokio's poll-based I/O traits, which the `h2`
//! crate drives. monoio's I/O is completion-based and owns its buffers, so
//! each direction keeps one boxed operation in flight that owns its half of
//! the stream and its buffer; a poll only looks at that operation. No
//! `unsafe`: the bytes are copied once each way (the price of the `h2`
//! crate's traits, see `http2/mod.rs`).
//!
//! The stream is split into halves (`tls::TlsStream::into_split`), so a
//! read can wait while h2 writes.

use std::{
    cell::RefCell,
    future::Future,
    io,
    pin::Pin,
    rc::Rc,
    task::{ready, Context, Poll},
    time::Duration,
};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use tokio::io::ReadBuf;

use super::partial::Partial;
use crate::tls::{TlsReadHalf as Reader, TlsStream, TlsWriteHalf as Writer};
type Op<H, R> = Pin<Box<dyn Future<Output = (H, Vec<u8>, io::Result<R>)>>>;

/// Bytes read from the socket per operation: one TLS record's worth.
const READ_SIZE: usize = 16 * 1024;

/// Bytes h2 may hand over while a write is still in flight; past this a
/// write waits (h2 then stops producing frames: back-pressure).
const WRITE_AHEAD: usize = 64 * 1024;

enum ReadSide {
    Idle(Reader),
    Busy(Op<Reader, usize>),
    Gone,
}

enum WriteSide {
    Idle(Writer),
    Busy(Op<Writer, ()>),
    Shutting(Op<Writer, ()>),
    Gone,
}

pub struct PollIo {
    /// Where the read side goes when h2 drops us (`Linger`).
    linger: Rc<RefCell<Option<Linger>>>,
    /// Follows the framing of what is read, for the stalled-frame bound.
    partial: Rc<Partial>,
    read: ReadSide,
    /// Read bytes not yet handed to h2, from `at`.
    got: Vec<u8>,
    at: usize,
    write: WriteSide,
    /// Bytes h2 wrote that no operation has taken yet.
    queued: Vec<u8>,
    /// The buffer of the last finished write, reused for the next.
    spare: Vec<u8>,
}

impl PollIo {
    /// The adapter, and the slot its read side is left in once h2 is done.
    pub fn new(tls: TlsStream, partial: Rc<Partial>) -> (Self, Rc<RefCell<Option<Linger>>>) {
        let (r, w) = tls.into_split();
        let linger = Rc::new(RefCell::new(None));
        let io = PollIo {
            linger: linger.clone(),
            partial,
            read: ReadSide::Idle(r),
            got: Vec::new(),
            at: 0,
            write: WriteSide::Idle(w),
            queued: Vec::new(),
            spare: Vec::new(),
        };
        (io, linger)
    }

    /// Starts writing `queued` if nothing is in flight.
    fn start_write(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        if let WriteSide::Idle(_) = self.write {
            let WriteSide::Idle(mut w) = std::mem::replace(&mut self.write, WriteSide::Gone) else {
                unreachable!()
            };
            let next = std::mem::take(&mut self.spare);
            let buf = std::mem::replace(&mut self.queued, next);
            self.write = WriteSide::Busy(Box::pin(async move {
                let (r, mut buf) = w.write_all(buf).await;
                buf.clear();
                (w, buf, r.map(|_| ()))
            }));
        }
    }

    /// Keeps a write in flight while bytes are queued. Returns with a waker
    /// registered for the write in flight, if any.
    fn pump(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            match self.poll_written(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(r) => r?,
            }
            if self.queued.is_empty() {
                return Ok(());
            }
            self.start_write();
        }
    }

    /// Drives the write in flight; Ready once none is.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let WriteSide::Busy(op) = &mut self.write else {
            return Poll::Ready(Ok(()));
        };
        let (w, buf, r) = ready!(op.as_mut().poll(cx));
        self.write = WriteSide::Idle(w);
        self.spare = buf;
        Poll::Ready(r)
    }
}

impl Drop for PollIo {
    fn drop(&mut self) {
        let side = std::mem::replace(&mut self.read, ReadSide::Gone);
        if !matches!(side, ReadSide::Gone) {
            *self.linger.borrow_mut() = Some(Linger(side));
        }
    }
}

/// The read side of a finished connection. Closing a socket that still
/// has unread bytes makes the kernel send a reset, and a reset can destroy
/// the GOAWAY just written before the client reads it; so, like nginx's
/// lingering close, what the client still sends is read and dropped for a
/// moment before the socket closes.
pub struct Linger(ReadSide);

impl Linger {
    pub async fn drain(self, limit: Duration) {
        const MOST: usize = 1 << 20;
        let deadline = monoio::time::Instant::now() + limit;
        let mut r = match self.0 {
            ReadSide::Idle(r) => r,
            ReadSide::Busy(op) => match monoio::time::timeout(limit, op).await {
                Ok((r, _, Ok(n))) if n > 0 => r,
                _ => return,
            },
            ReadSide::Gone => return,
        };
        let mut buf = Vec::with_capacity(READ_SIZE);
        let mut seen = 0;
        while seen < MOST {
            let left = deadline.saturating_duration_since(monoio::time::Instant::now());
            buf.clear();
            match monoio::time::timeout(left, r.read(buf)).await {
                Ok((Ok(n), b)) if n > 0 => {
                    seen += n;
                    buf = b;
                }
                // End of stream, an error, or the time is up. (A read cut
                // short by the timeout is never used again: `r` drops.)
                _ => return,
            }
        }
    }
}

impl tokio::io::AsyncRead for PollIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.at < this.got.len() {
                let n = out.remaining().min(this.got.len() - this.at);
                out.put_slice(&this.got[this.at..this.at + n]);
                this.at += n;
                return Poll::Ready(Ok(()));
            }
            match &mut this.read {
                ReadSide::Idle(_) => {
                    let ReadSide::Idle(mut r) = std::mem::replace(&mut this.read, ReadSide::Gone)
                    else {
                        unreachable!()
                    };
                    let mut buf = std::mem::take(&mut this.got);
                    buf.clear();
                    buf.reserve(READ_SIZE);
                    this.read = ReadSide::Busy(Box::pin(async move {
                        let (res, buf) = r.read(buf).await;
                        (r, buf, res)
                    }));
                }
                ReadSide::Busy(op) => {
                    let (r, buf, res) = ready!(op.as_mut().poll(cx));
                    this.read = ReadSide::Idle(r);
                    this.got = buf;
                    this.at = 0;
                    // 0 bytes: end of stream, shown to h2 as an empty read.
                    if res? == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    this.partial.feed(&this.got, cx);
                }
                ReadSide::Gone => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl tokio::io::AsyncWrite for PollIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if matches!(this.write, WriteSide::Shutting(_) | WriteSide::Gone) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        this.pump(cx)?;
        if this.queued.len() >= WRITE_AHEAD {
            // A write is in flight and `pump` registered for its end.
            return Poll::Pending;
        }
        let n = buf.len().min(WRITE_AHEAD - this.queued.len());
        this.queued.extend_from_slice(&buf[..n]);
        this.pump(cx)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_written(cx))?;
            if this.queued.is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.start_write();
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.write {
                WriteSide::Busy(_) | WriteSide::Idle(_) if !this.queued.is_empty() => {
                    ready!(this.poll_written(cx))?;
                    this.start_write();
                }
                WriteSide::Busy(_) => ready!(this.poll_written(cx))?,
                WriteSide::Idle(_) => {
                    let WriteSide::Idle(mut w) =
                        std::mem::replace(&mut this.write, WriteSide::Gone)
                    else {
                        unreachable!()
                    };
                    // close_notify, then the TCP half-close.
                    this.write = WriteSide::Shutting(Box::pin(async move {
                        let r = w.shutdown().await;
                        (w, Vec::new(), r)
                    }));
                }
                WriteSide::Shutting(op) => {
                    let (_, _, r) = ready!(op.as_mut().poll(cx));
                    this.write = WriteSide::Gone;
                    return Poll::Ready(r);
                }
                WriteSide::Gone => return Poll::Ready(Ok(())),
            }
        }
    }
}
