//! One HTTP/2 stream as the byte stream `exchange::exchange` reads a request
//! from and writes a response to.
//!
//! Reading gives the request body as the synthesized head framed it (DATA
//! as is after a `Content-Length`, else re-framed as chunks). An answer's
//! head comes built for HTTP/2 (`respond`: proxied answers and ringside's
//! own); a head written as HTTP/1.1 (an interim 1xx: `100 Continue`) is parsed
//! into its frame. The body
//! (de-chunked when chunked) becomes DATA frames sent only
//! as the client's flow-control window allows, so a response never waits in
//! memory beyond that window. Capacity released to the client's request
//! body is only what was handed on, so a request body is bounded the same
//! way.

use std::{
    cell::RefCell,
    future::poll_fn,
    io,
    rc::Rc,
    task::{Context, Poll},
};

use bytes::Bytes;
use h2::{server::SendResponse, Reason, RecvStream, SendStream};
use monoio::{
    buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut},
    io::{AsyncReadRent, AsyncWriteRent},
    BufResult,
};

use super::head::{self, Body, Framing, Native};
use crate::http::body::{Chunked, LAST_CHUNK};

/// Longest response head accepted from `exchange` (its own heads and
/// upstream heads are far smaller; this only bounds a broken one).
const MAX_HEAD: usize = 64 * 1024;

pub struct H2Stream {
    body: Option<RecvStream>,
    chunked: bool,
    /// Request bytes ready for the next read.
    ready: Bytes,
    /// Shared with the stream's task, which watches it for a client reset.
    tx: Rc<RefCell<Tx>>,
    head_only: bool,
    out: Out,
}

/// Ready once the client reset its stream (`H2Stream::reset_signal`).
pub struct ResetSignal(Rc<RefCell<Tx>>);

impl std::future::Future for ResetSignal {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.borrow_mut().poll_reset(cx)
    }
}

/// The sending half of a stream: before the response head, then after.
pub struct Tx {
    respond: Option<SendResponse<Bytes>>,
    send: Option<SendStream<Bytes>>,
}

impl Tx {
    /// Ready once the client reset the stream (or the connection failed).
    pub fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let r = match (&mut self.send, &mut self.respond) {
            (Some(s), _) => s.poll_reset(cx),
            (None, Some(r)) => r.poll_reset(cx),
            (None, None) => return Poll::Pending,
        };
        r.map(|_| ())
    }

    fn reset(&mut self, reason: Reason) {
        match (&mut self.send, &mut self.respond) {
            (Some(s), _) => s.send_reset(reason),
            (None, Some(r)) => r.send_reset(reason),
            (None, None) => {}
        }
    }
}

enum Out {
    /// Collecting the response head.
    Head(Vec<u8>),
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

impl H2Stream {
    pub fn new(
        body: RecvStream,
        framing: Body,
        respond: SendResponse<Bytes>,
        head_only: bool,
    ) -> Self {
        H2Stream {
            body: (framing != Body::None).then_some(body),
            chunked: framing == Body::Chunked,
            ready: Bytes::new(),
            tx: Rc::new(RefCell::new(Tx {
                respond: Some(respond),
                send: None,
            })),
            head_only,
            out: Out::Head(Vec::new()),
        }
    }

    /// The sending half, for the task to watch for a reset.
    pub fn tx(&self) -> Rc<RefCell<Tx>> {
        self.tx.clone()
    }

    /// A future that is ready once the client resets the stream.
    pub fn reset_signal(&self) -> ResetSignal {
        ResetSignal(self.tx.clone())
    }

    /// Ends the stream once `exchange` is done with it: a close-delimited
    /// body ends here; a response cut short (or never begun) resets the
    /// stream instead of passing for complete.
    pub fn finish(&mut self) {
        match self.out {
            Out::Done => {}
            Out::Close => {
                if let Some(s) = &mut self.tx.borrow_mut().send {
                    let _ = s.send_data(Bytes::new(), true);
                }
                self.out = Out::Done;
            }
            _ => {
                self.tx.borrow_mut().reset(Reason::INTERNAL_ERROR);
                self.out = Out::Done;
            }
        }
    }

    /// Whether a request body may still be coming (see `drain_body`).
    pub fn body_left(&self) -> bool {
        self.body.is_some()
    }

    /// After the answer, the rest of a request body the exchange did not
    /// read (an error answered before it, a route that never reads it) is
    /// read and dropped, its window released, until the client ends it,
    /// `MOST` bytes pass or `limit` does. Dropping the stream instead makes
    /// h2 send RST_STREAM NO_ERROR, which RFC 9113 section 8.1 allows after
    /// a complete answer, but clients such as curl then fail the whole
    /// request, answer and all, for their upload cut short; nginx reads
    /// the body as well. A stream that was reset ends the wait at once.
    pub async fn drain_body(&mut self, limit: std::time::Duration) {
        const MOST: usize = 1 << 20;
        let Some(body) = &mut self.body else {
            return;
        };
        let deadline = monoio::time::Instant::now() + limit;
        let mut seen = 0;
        while seen < MOST {
            let left = deadline.saturating_duration_since(monoio::time::Instant::now());
            match monoio::time::timeout(left, body.data()).await {
                Ok(Some(Ok(d))) => {
                    seen += d.len();
                    let _ = body.flow_control().release_capacity(d.len());
                }
                _ => break,
            }
        }
        self.body = None;
    }

    /// The next piece of request body, framed; empty at its end.
    async fn next_body(&mut self) -> io::Result<Bytes> {
        let Some(body) = &mut self.body else {
            return Ok(Bytes::new());
        };
        match body.data().await {
            Some(Ok(d)) => {
                // Handed on now: the client may send this much more.
                let _ = body.flow_control().release_capacity(d.len());
                Ok(if self.chunked && !d.is_empty() {
                    head::chunk(&d)
                } else {
                    d
                })
            }
            Some(Err(e)) => Err(h2_error(e)),
            None => {
                self.body = None;
                Ok(if self.chunked {
                    Bytes::from_static(LAST_CHUNK)
                } else {
                    Bytes::new()
                })
            }
        }
    }

    /// Sends a response head built for this stream (`Native`), then `body`,
    /// the first bytes of the body it frames; the rest follows by `write`.
    pub async fn respond(&mut self, head: Native, body: &[u8]) -> io::Result<()> {
        if !matches!(&self.out, Out::Head(acc) if acc.is_empty()) {
            return Err(invalid("a second response head"));
        }
        let head = head.finish(self.head_only).map_err(invalid)?;
        if head.status.is_informational() {
            return Err(invalid("an interim head as the response"));
        }
        let (status, block) = (head.status, head.block);
        self.start(head.framing, |r, end| {
            r.send_response_encoded(status, block, end)
        })?;
        if body.is_empty() {
            return Ok(());
        }
        self.take(body).await
    }

    /// Sends the final response head: the body's framing decides what the
    /// bytes written after it are.
    /// `send` sends it, told whether it ends the stream.
    fn start(
        &mut self,
        framing: Framing,
        send: impl FnOnce(&mut SendResponse<Bytes>, bool) -> Result<SendStream<Bytes>, h2::Error>,
    ) -> io::Result<()> {
        let end = matches!(framing, Framing::None | Framing::Length(0));
        {
            let mut tx = self.tx.borrow_mut();
            let respond = tx.respond.as_mut().ok_or_else(gone)?;
            let send = send(respond, end).map_err(h2_error)?;
            tx.respond = None;
            tx.send = Some(send);
        }
        self.out = match framing {
            _ if end => Out::Done,
            Framing::Length(n) => Out::Length(n),
            Framing::Chunked => Out::Chunked(Chunked::new()),
            _ => Out::Close,
        };
        Ok(())
    }

    /// Takes response bytes from `exchange`.
    async fn take(&mut self, data: &[u8]) -> io::Result<()> {
        // Usually the whole head comes in one write and is parsed where it
        // lies; a head split across writes is collected first.
        let collected;
        let mut data = data;
        if let Out::Head(acc) = &mut self.out {
            if !acc.is_empty() {
                acc.extend_from_slice(data);
                collected = std::mem::take(acc);
                data = &collected;
            }
        }
        loop {
            match &mut self.out {
                Out::Head(acc) => {
                    let Some(p) = head::response(data, self.head_only).map_err(invalid)? else {
                        acc.extend_from_slice(data);
                        if acc.len() > MAX_HEAD {
                            return Err(invalid("response head too large"));
                        }
                        return Ok(());
                    };
                    data = &data[p.len..];
                    // 100 Continue and friends stay on this side: the next
                    // head follows.
                    if !p.response.status().is_informational() {
                        self.start(p.framing, |r, end| r.send_response(p.response, end))?;
                    }
                    if data.is_empty() {
                        return Ok(());
                    }
                }
                Out::Length(left) => {
                    let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    let end = *left == 0;
                    if end {
                        self.out = Out::Done;
                    }
                    return self.send(Bytes::copy_from_slice(&data[..n]), end).await;
                }
                Out::Chunked(dec) => {
                    let mut pieces = Vec::new();
                    let used = dec
                        .decode(data, |d| pieces.push(Bytes::copy_from_slice(d)))
                        .map_err(invalid)?;
                    let end = dec.is_done();
                    if end {
                        self.out = Out::Done;
                    }
                    let last = pieces.len();
                    for (i, p) in pieces.into_iter().enumerate() {
                        self.send(p, end && i + 1 == last).await?;
                    }
                    if end && last == 0 {
                        self.send(Bytes::new(), true).await?;
                    }
                    data = &data[used..];
                    if data.is_empty() || end {
                        return Ok(());
                    }
                }
                Out::Close => return self.send(Bytes::copy_from_slice(data), false).await,
                Out::Done => return Ok(()),
            }
        }
    }

    /// Sends DATA as the client's window opens.
    async fn send(&mut self, mut data: Bytes, end: bool) -> io::Result<()> {
        let tx = &self.tx;
        let with = |f: &mut dyn FnMut(&mut SendStream<Bytes>) -> io::Result<()>| {
            let mut tx = tx.borrow_mut();
            f(tx.send.as_mut().ok_or_else(gone)?)
        };
        if data.is_empty() {
            return if end {
                with(&mut |s| s.send_data(Bytes::new(), true).map_err(h2_error))
            } else {
                Ok(())
            };
        }
        while !data.is_empty() {
            let want = data.len();
            with(&mut |s| {
                s.reserve_capacity(want);
                Ok(())
            })?;
            // The borrow lasts one poll, never across the wait.
            let capacity = poll_fn(|cx| match tx.borrow_mut().send.as_mut() {
                Some(s) => s.poll_capacity(cx),
                None => Poll::Ready(None),
            });
            let n = match capacity.await {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(h2_error(e)),
                None => return Err(gone()),
            };
            if n == 0 {
                continue;
            }
            let piece = data.split_to(n.min(data.len()));
            let last = end && data.is_empty();
            let mut piece = Some(piece);
            with(&mut |s| {
                let p = piece.take().unwrap_or_default();
                s.send_data(p, last).map_err(h2_error)
            })?;
        }
        Ok(())
    }
}

fn h2_error(e: h2::Error) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, e)
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn gone() -> io::Error {
    io::ErrorKind::BrokenPipe.into()
}

impl AsyncReadRent for H2Stream {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        while self.ready.is_empty() {
            match self.next_body().await {
                Ok(b) if b.is_empty() && self.body.is_none() => return (Ok(0), buf),
                Ok(b) => self.ready = b,
                Err(e) => return (Err(e), buf),
            }
        }
        let n = self.ready.len().min(buf.bytes_total());
        // SAFETY: `write_ptr` is valid for `bytes_total` bytes (the IoBufMut
        // contract) and `n` is at most that; `ready` is our own, distinct
        // allocation, so the ranges cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ready.as_ptr(), buf.write_ptr(), n);
            buf.set_init(n);
        }
        let _ = self.ready.split_to(n);
        (Ok(n), buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        crate::relay::readv_first(self, buf).await
    }
}

impl AsyncWriteRent for H2Stream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let data = crate::relay::io_slice(&buf);
        let r = self.take(data).await.map(|()| data.len());
        (r, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let mut r = Ok(0);
        for part in crate::relay::iovec_slices(&buf) {
            match self.take(part).await {
                Ok(()) => r = r.map(|n| n + part.len()),
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        (r, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.finish();
        Ok(())
    }
}
