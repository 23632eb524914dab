//! Stage 5, relay: moving bytes. Every read and write here is bounded by a
//! timeout and works on owned buffers (io_uring owns a buffer while an op is
//! in flight), taken from and given back to the worker's buffer pools.

use std::{io, ops::Range, time::Duration};

use monoio::{
    buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf},
    io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt},
    net::TcpStream,
};

use crate::{
    error::Error,
    http::body::{chunk_head, Chunked, LAST_CHUNK},
    timer::timeout,
};

/// The initialised bytes of an owned buffer, borrowed from it.
pub fn io_slice<T: IoBuf>(buf: &T) -> &[u8] {
    // SAFETY: IoBuf's contract: `read_ptr` is valid for `bytes_init`
    // initialised bytes while the buffer is held, which the borrow ensures.
    unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) }
}

/// The bytes an owned iovec buffer names, in order, borrowed from it.
pub fn iovec_slices<T: IoVecBuf>(buf: &T) -> Vec<&[u8]> {
    // SAFETY: IoVecBuf's contract: `read_iovec_ptr` points to
    // `read_iovec_len` valid iovecs, each valid for `iov_len` bytes, while
    // the buffer is held, which the borrow ensures.
    unsafe {
        std::slice::from_raw_parts(buf.read_iovec_ptr(), buf.read_iovec_len())
            .iter()
            .map(|v| std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len))
            .collect()
    }
}

/// `readv` for a stream that reads into one buffer at a time: it reads
/// into the first iovec.
pub async fn readv_first<S: AsyncReadRent, T: IoVecBufMut>(
    s: &mut S,
    mut buf: T,
) -> monoio::BufResult<usize, T> {
    // SAFETY: the RawBuf points into `buf`'s first iovec, which we hold
    // (unmoved) until the read below has finished with it.
    let n = match unsafe { RawBuf::new_from_iovec_mut(&mut buf) } {
        Some(raw) => s.read(raw).await.0,
        None => Ok(0),
    };
    if let Ok(n) = n {
        // SAFETY: the read initialised `n` bytes of the first iovec.
        unsafe { buf.set_init(n) };
    }
    (n, buf)
}

/// Why an I/O step failed.
#[derive(Debug)]
pub enum Fail {
    Timeout,
    Io(io::Error),
    /// The peer closed before the bytes we needed arrived.
    Eof,
    /// A chunked body broke its framing.
    Framing(&'static str),
    /// A request body passed `max_request_body`.
    TooLarge,
}

impl Fail {
    /// A failed read or write on the client side, once nothing more can be
    /// sent to it.
    pub fn client(self) -> Error {
        match self {
            Fail::Io(e) => Error::client_gone(e),
            _ => Error::client_send_timeout(),
        }
    }

    /// A failed read from the upstream, as answered when nothing went to
    /// the client yet.
    pub fn upstream(self) -> Error {
        match self {
            Fail::Timeout => Error::read_timeout(),
            Fail::Framing(why) => Error::bad_response(why),
            _ => Error::upstream_closed(),
        }
    }
}

pub type Step<T> = Result<T, Fail>;

/// Appends what one read brings to `buf` (up to its capacity). A timeout
/// loses the buffer (the cancelled op still owns it): the caller gets an
/// empty `Vec` back and must not rely on its capacity.
pub async fn read_more<S: AsyncReadRent>(
    s: &mut S,
    buf: Vec<u8>,
    limit: Duration,
) -> (Step<usize>, Vec<u8>) {
    let len = buf.len();
    match timeout(limit, s.read(buf.slice_mut(len..))).await {
        Some((Ok(n), slice)) => (Ok(n), slice.into_inner()),
        Some((Err(e), slice)) => (Err(Fail::Io(e)), slice.into_inner()),
        None => (Err(Fail::Timeout), Vec::new()),
    }
}

/// Reads at most `max` bytes into the start of `buf` (its contents are
/// replaced). Returns 0 at end of stream.
pub async fn read_fresh<S: AsyncReadRent>(
    s: &mut S,
    mut buf: Vec<u8>,
    max: usize,
    limit: Duration,
) -> (Step<usize>, Vec<u8>) {
    buf.clear();
    let max = max.min(buf.capacity());
    match timeout(limit, s.read(buf.slice_mut(0..max))).await {
        Some((Ok(n), slice)) => (Ok(n), slice.into_inner()),
        Some((Err(e), slice)) => (Err(Fail::Io(e)), slice.into_inner()),
        None => (Err(Fail::Timeout), Vec::new()),
    }
}

/// Writes `buf[from..]` completely.
pub async fn write_from<S: AsyncWriteRent>(
    s: &mut S,
    buf: Vec<u8>,
    from: usize,
    limit: Duration,
) -> (Step<()>, Vec<u8>) {
    if from >= buf.len() {
        return (Ok(()), buf);
    }
    let end = buf.len();
    match timeout(limit, s.write_all(buf.slice(from..end))).await {
        Some((Ok(_), slice)) => (Ok(()), slice.into_inner()),
        Some((Err(e), slice)) => (Err(Fail::Io(e)), slice.into_inner()),
        None => (Err(Fail::Timeout), Vec::new()),
    }
}

pub async fn write_all<S: AsyncWriteRent>(
    s: &mut S,
    buf: Vec<u8>,
    limit: Duration,
) -> (Step<()>, Vec<u8>) {
    write_from(s, buf, 0, limit).await
}

/// Bytes whose storage stays where it is when their owner moves (a `Vec`'s
/// heap buffer, a `Bytes`' shared or static storage), so an iovec into them
/// stays valid while the runtime holds the owner.
///
/// # Safety
///
/// `bytes` must return the same address and length for as long as the
/// value is not mutated, however the value itself is moved.
pub unsafe trait Stable: Default + Unpin + 'static {
    fn bytes(&self) -> &[u8];
}

// SAFETY: a Vec's elements live on the heap, not in the Vec value; moving
// it moves only the pointer, length and capacity.
unsafe impl Stable for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

// SAFETY: a Bytes points at heap or static storage it never holds inline,
// and it is immutable.
unsafe impl Stable for bytes::Bytes {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// A head, then part of `tail`, as one vectored write: the tail's bytes are
/// written from where they are, never copied behind the head.
struct HeadThen<T> {
    head: Vec<u8>,
    tail: T,
    iov: [libc::iovec; 2],
}

impl<T: Stable> HeadThen<T> {
    fn new(head: Vec<u8>, tail: T, part: Range<usize>) -> Self {
        let part = tail.bytes().get(part).unwrap_or_default();
        let iov = [
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            },
        ];
        HeadThen { head, tail, iov }
    }
}

// SAFETY: the iovecs point into the storage of `head` and `tail`, which
// `Stable`'s contract keeps in place however the struct moves, and which
// nothing changes while the runtime owns the struct (the fields are private
// and only read back after the write); both lengths are exact. The kernel
// only reads through them.
unsafe impl<T: Stable> IoVecBuf for HeadThen<T> {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iov.len()
    }
}

/// Writes `head` and then `tail[part]` completely, in one vectored write
/// (more only when the socket takes part of it). Gives both back, empty
/// after a timeout (the runtime still held them).
pub async fn write_head_then<S: AsyncWriteRent, T: Stable>(
    s: &mut S,
    head: Vec<u8>,
    tail: T,
    part: Range<usize>,
    limit: Duration,
) -> (Step<()>, Vec<u8>, T) {
    let both = HeadThen::new(head, tail, part);
    match timeout(limit, s.write_vectored_all(both)).await {
        Some((r, both)) => (r.map(|_| ()).map_err(Fail::Io), both.head, both.tail),
        None => (Err(Fail::Timeout), Vec::new(), T::default()),
    }
}

/// The two timeouts of a one-way copy.
#[derive(Clone, Copy)]
pub struct Limits {
    /// Longest gap between two reads from the source.
    pub read: Duration,
    /// Longest wait for the destination to accept a write.
    pub write: Duration,
}

/// Where a copy failed: the side decides who is blamed and what is closed.
#[derive(Debug)]
pub enum CopyFail {
    Read(Fail),
    Write(Fail),
}

impl CopyFail {
    /// A failed copy of the request body, client → upstream.
    pub fn upward(self) -> Error {
        match self {
            CopyFail::Read(Fail::Timeout) => Error::body_timeout(),
            CopyFail::Read(Fail::TooLarge) => Error::body_too_large(),
            CopyFail::Read(Fail::Framing(why)) => Error::bad_request(why),
            CopyFail::Read(Fail::Io(e)) => Error::client_gone(e),
            CopyFail::Read(Fail::Eof) => Error::client_gone(io::ErrorKind::UnexpectedEof.into()),
            CopyFail::Write(Fail::Timeout) => Error::send_timeout(),
            CopyFail::Write(Fail::Io(e)) => Error::upstream_io(e),
            CopyFail::Write(_) => Error::upstream_closed(),
        }
    }

    /// A failed copy of the response body, upstream → client (the head
    /// went out: the client can only see the connection close).
    pub fn downward(self) -> Error {
        match self {
            CopyFail::Read(f) => f.upstream(),
            CopyFail::Write(f) => f.client(),
        }
        .after_head()
    }
}

/// Copies exactly `n` bytes from `from` to `to` through `buf`, never reading
/// past them (the source connection stays clean for reuse). Adds the bytes
/// written to `sent` as they go.
pub async fn copy_length<R: AsyncReadRent, W: AsyncWriteRent>(
    from: &mut R,
    to: &mut W,
    mut n: u64,
    mut buf: Vec<u8>,
    (lim, sent): (Limits, &mut u64),
) -> (Result<(), CopyFail>, Vec<u8>) {
    while n > 0 {
        let want = usize::try_from(n).unwrap_or(usize::MAX);
        let (r, b) = read_fresh(from, buf, want, lim.read).await;
        buf = b;
        let got = match r {
            Ok(0) => return (Err(CopyFail::Read(Fail::Eof)), buf),
            Ok(got) => got as u64,
            Err(e) => return (Err(CopyFail::Read(e)), buf),
        };
        n -= got;
        let (w, b) = write_all(to, buf, lim.write).await;
        buf = b;
        if let Err(e) = w {
            return (Err(CopyFail::Write(e)), buf);
        }
        *sent += got;
    }
    (Ok(()), buf)
}

/// Decodes a chunked body arriving on `from` (starting with `pending`, bytes
/// already read) and writes it to `to`, re-chunked (`rechunk`) or raw.
/// Returns the bytes read past the end of the body, which belong to the next
/// message. `max` bounds the decoded size (0 = no bound) → `Framing`. Adds
/// the decoded bytes written to `sent` as they go.
#[allow(clippy::too_many_arguments)]
pub async fn copy_chunked<R: AsyncReadRent, W: AsyncWriteRent>(
    from: &mut R,
    to: &mut W,
    pending: &[u8],
    mut inbuf: Vec<u8>,
    mut out: Vec<u8>,
    rechunk: bool,
    max: u64,
    (lim, sent): (Limits, &mut u64),
) -> (Result<Vec<u8>, CopyFail>, Vec<u8>, Vec<u8>) {
    let mut dec = Chunked::new();
    let mut total = 0u64;
    let base = *sent;
    let mut leftover = Vec::new();
    // First the bytes that came with the head, then fresh reads.
    let mut first = Some(pending);
    loop {
        out.clear();
        let input: &[u8] = match first.take() {
            Some(p) => p,
            None => {
                let (r, b) = read_fresh(from, inbuf, usize::MAX, lim.read).await;
                inbuf = b;
                match r {
                    Ok(0) => return (Err(CopyFail::Read(Fail::Eof)), inbuf, out),
                    Ok(_) => &inbuf,
                    Err(e) => return (Err(CopyFail::Read(e)), inbuf, out),
                }
            }
        };
        let used = match dec.decode(input, |data| {
            total += data.len() as u64;
            if rechunk {
                chunk_head(&mut out, data.len());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(data);
            }
        }) {
            Ok(n) => n,
            Err(why) => return (Err(CopyFail::Read(Fail::Framing(why))), inbuf, out),
        };
        if max > 0 && total > max {
            return (Err(CopyFail::Read(Fail::TooLarge)), inbuf, out);
        }
        if dec.is_done() {
            leftover.extend_from_slice(&input[used..]);
            if rechunk {
                out.extend_from_slice(LAST_CHUNK);
            }
        }
        let (w, b) = write_all(to, out, lim.write).await;
        out = b;
        if let Err(e) = w {
            return (Err(CopyFail::Write(e)), inbuf, out);
        }
        *sent = base + total;
        if dec.is_done() {
            return (Ok(leftover), inbuf, out);
        }
    }
}

/// Copies until `from` closes, chunk-encoding each read when `rechunk`.
/// Adds the body bytes written to `sent` as they go.
pub async fn copy_until_close<R: AsyncReadRent, W: AsyncWriteRent>(
    from: &mut R,
    to: &mut W,
    pending: &[u8],
    mut inbuf: Vec<u8>,
    mut out: Vec<u8>,
    rechunk: bool,
    (lim, sent): (Limits, &mut u64),
) -> (Result<(), CopyFail>, Vec<u8>, Vec<u8>) {
    if !pending.is_empty() {
        out.clear();
        if rechunk {
            chunk_head(&mut out, pending.len());
        }
        out.extend_from_slice(pending);
        if rechunk {
            out.extend_from_slice(b"\r\n");
        }
        let (w, b) = write_all(to, out, lim.write).await;
        out = b;
        if let Err(e) = w {
            return (Err(CopyFail::Write(e)), inbuf, out);
        }
        *sent += pending.len() as u64;
    }
    loop {
        let (r, b) = read_fresh(from, inbuf, usize::MAX, lim.read).await;
        inbuf = b;
        let n = match r {
            Ok(n) => n,
            Err(e) => return (Err(CopyFail::Read(e)), inbuf, out),
        };
        out.clear();
        if n == 0 {
            if !rechunk {
                return (Ok(()), inbuf, out);
            }
            out.extend_from_slice(LAST_CHUNK);
        } else if rechunk {
            chunk_head(&mut out, n);
            out.extend_from_slice(&inbuf[..n]);
            out.extend_from_slice(b"\r\n");
        }
        let (w, b) = if rechunk {
            write_all(to, out, lim.write).await
        } else {
            // Raw: write the read buffer itself, no copy.
            let (w, b) = write_all(to, inbuf, lim.write).await;
            inbuf = b;
            (w, out)
        };
        out = b;
        if let Err(e) = w {
            return (Err(CopyFail::Write(e)), inbuf, out);
        }
        *sent += n as u64;
        if n == 0 {
            return (Ok(()), inbuf, out);
        }
    }
}

/// One non-blocking `recv` into the spare capacity of `buf`, right now.
///
/// Used for the first read after a readiness wait: the bytes are known to be
/// there, and reading them synchronously means the buffer is never held by
/// a pending op. When thousands of idle connections close at once, ring
/// reads would hold a head buffer each until their completions were reaped;
/// this way each buffer goes back to the pool at once.
pub fn recv_now(s: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let spare = buf.capacity() - buf.len();
    if spare == 0 {
        return Ok(0);
    }
    // SAFETY: the pointer and length describe the uninitialised spare
    // capacity of `buf`, which recv may write up to `spare` bytes into; the
    // fd is owned by `s` and open for the whole call.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr().add(buf.len()).cast(),
            spare,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: recv initialised exactly `n` more bytes, and n <= spare.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Writes all of `data` with non-blocking sends, waiting for writability
/// (at most `limit` each time) when the socket is full. Takes the stream
/// by shared reference, so a reader of the same socket can run at once
/// (tunnel.rs) without two `&mut` to one stream.
pub async fn send_all(s: &TcpStream, mut data: &[u8], limit: Duration) -> Step<()> {
    use std::os::fd::AsRawFd;
    while !data.is_empty() {
        // SAFETY: the pointer and length describe `data`, valid for reads
        // for the whole call; the fd is owned by `s` and open for the call.
        let n = unsafe {
            libc::send(
                s.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            data = &data[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(Fail::Io(e));
        }
        match timeout(limit, s.writable(false)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Fail::Io(e)),
            None => return Err(Fail::Timeout),
        }
    }
    Ok(())
}

/// Resolves once the client has closed its side (a FIN or a reset) while
/// its answer is being made, so the upstream request can be cancelled and
/// the request logged 499 (nginx's "client prematurely closed connection").
/// Bytes the client sends meanwhile (a pipelined request) end the watch
/// without a verdict, and are left in the socket. The watch starts a timer
/// tick late: an answer that comes within it costs no ring operation.
pub async fn client_left(s: &TcpStream) {
    crate::timer::until(crate::timer::later(std::time::Duration::ZERO)).await;
    loop {
        if s.readable(false).await.is_err() {
            return;
        }
        match peek(s) {
            Ok(0) => return,
            Ok(_) => std::future::pending::<()>().await,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Looks at whether a byte waits on the socket without taking it.
fn peek(s: &TcpStream) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: the pointer is to one byte on this stack frame, valid and
    // unaliased for the call; the fd is owned by `s` and open for the call.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
