//! Stage 5, relay, between two plain TCP sockets: Content-Length bodies and
//! WebSocket tunnels moved with splice(2) through a pipe, so the bytes never
//! cross into user memory (no copy in, no copy out, no relay buffer held).
//!
//! The splices are plain syscalls with `SPLICE_F_NONBLOCK`, made while both
//! sockets are `O_NONBLOCK` (`NonBlocking`): nothing here ever blocks the
//! worker thread. io_uring's own splice op was not used: the kernel always
//! runs it on an io-wq worker thread (a thread hop per splice, and a blocked
//! kernel thread while the source is empty). When a splice finds nothing to
//! move (`EAGAIN`), the loop waits for readiness through the ring
//! (`readable`/`writable`), bounded by the copy's timeouts.
//!
//! Chunked and close-delimited bodies, TLS clients and bodies ringside must
//! look at (cache fill, gzip) keep relay.rs's buffered copies.

use std::{
    cell::RefCell,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    time::Duration,
};

use monoio::{net::TcpStream, time::timeout};

use crate::{
    buffers::Buffers,
    relay::{CopyFail, Fail, Limits},
    stream::ClientStream,
};

/// Which way a body goes.
pub enum Way<'a> {
    /// A request body, client → upstream.
    Up,
    /// A response body, upstream → client; the bytes written to the client
    /// are added to the count as they go.
    Down(&'a mut u64),
}

/// Copies a Content-Length body of `n` bytes between a client and an
/// upstream socket, both ways the same: spliced when the client is plain
/// TCP, through a relay buffer otherwise (TLS, or no pipe to be had).
///
/// Splicing keeps large bodies out of user memory (no copy, no relay buffer
/// lent), which is where ringside's lead on big bodies comes from; below
/// `SPLICE_MIN` a body keeps the buffer path, because the splice path costs
/// six fcntl and two splice syscalls whatever the size. The measurements
/// behind both are in perf/results/design-figures.md.
pub async fn copy_body(
    (pipes, relay): (&Pipes, &Buffers),
    client: &mut ClientStream,
    up: &mut TcpStream,
    way: Way<'_>,
    n: u64,
    lim: Limits,
) -> Result<(), CopyFail> {
    if n == 0 {
        return Ok(());
    }
    let mut uncounted = 0;
    if let (true, ClientStream::Plain(plain)) = (n >= SPLICE_MIN, &mut *client) {
        if let Some(mut pipe) = pipes.take() {
            let r = match way {
                Way::Up => copy_length(plain, up, n, &mut pipe, (lim, &mut uncounted)).await,
                Way::Down(sent) => copy_length(up, plain, n, &mut pipe, (lim, sent)).await,
            };
            pipes.give(pipe);
            return r;
        }
    }
    let buf = relay.take();
    let (r, buf) = match way {
        Way::Up => crate::relay::copy_length(client, up, n, buf, (lim, &mut uncounted)).await,
        Way::Down(sent) => crate::relay::copy_length(up, client, n, buf, (lim, sent)).await,
    };
    relay.give(buf);
    r
}

/// Smallest body copied with splice (the rest of a body after the bytes
/// that came with its head); smaller ones go through a relay buffer.
/// Measured at `copy_body`.
const SPLICE_MIN: u64 = 16 * 1024;

/// Bytes a pipe holds: the kernel default (16 pages). Not raised with
/// F_SETPIPE_SZ: a larger pipe pins more memory per copy in flight.
pub(crate) const PIPE_CAP: usize = 64 * 1024;

/// Most idle pipes a worker keeps (two fds each, no buffer memory while
/// empty); more are closed. Pipes in use are not capped: when the process
/// runs out of fds, `Pipes::take` fails and a body copy takes the buffer
/// path (a tunnel ends).
const MAX_FREE_PIPES: usize = 32;

/// A pipe, empty whenever it is in the pool.
pub struct Pipe {
    read: OwnedFd,
    pub(crate) write: OwnedFd,
    /// Bytes spliced in and not yet out.
    pub(crate) held: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two fds into the array it is given, which
        // has room for exactly two.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both fds are open and owned by no one else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe {
            read,
            write,
            held: 0,
        })
    }
}

/// A worker's idle pipes.
#[derive(Default)]
pub struct Pipes {
    free: RefCell<Vec<Pipe>>,
}

impl Pipes {
    /// An empty pipe: a pooled one, else a new one; `None` when none can be
    /// made (out of fds), and the caller copies through a buffer.
    pub fn take(&self) -> Option<Pipe> {
        if let Some(p) = self.free.borrow_mut().pop() {
            return Some(p);
        }
        Pipe::new().ok()
    }

    /// Takes a pipe back; one that still holds bytes (a copy that failed
    /// midway) is closed, as is one past `MAX_FREE_PIPES`.
    pub fn give(&self, p: Pipe) {
        let mut free = self.free.borrow_mut();
        if p.held == 0 && free.len() < MAX_FREE_PIPES {
            free.push(p);
        }
    }
}

/// `O_NONBLOCK` on a socket while this lives; the flags it had come back on
/// drop. monoio's sockets are blocking on io_uring (the ring waits for
/// them), but a splice syscall on a blocking socket would stop the worker
/// until the peer sends or reads; and the flag must not outlive the copy:
/// on a non-blocking file, io_uring's readv/writev (a cache hit's answer
/// uses writev) return `EAGAIN` instead of waiting.
pub(crate) struct NonBlocking {
    fd: RawFd,
    /// The flags to put back, when this guard changed them.
    restore: Option<libc::c_int>,
}

impl NonBlocking {
    pub(crate) fn set(s: &TcpStream) -> io::Result<NonBlocking> {
        let fd = s.as_raw_fd();
        // SAFETY: fcntl on an fd owned by `s`, which outlives this call.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK != 0 {
            // Already non-blocking (the epoll fallback driver): leave it.
            return Ok(NonBlocking { fd, restore: None });
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NonBlocking {
            fd,
            restore: Some(flags),
        })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        if let Some(flags) = self.restore {
            // SAFETY: the guard lives inside a copy that borrows the socket,
            // so the fd is still open. A failure would leave the socket
            // non-blocking; F_SETFL on a valid socket fd does not fail.
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, flags) };
        }
    }
}

/// One non-blocking splice of up to `len` bytes from `from` to `to`.
/// `Ok(None)`: nothing to move right now (`EAGAIN`).
pub(crate) fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<Option<usize>> {
    let flags = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;
    loop {
        // SAFETY: splice between two fds the caller keeps open for the
        // call; null offsets (neither end is seekable); no memory of ours
        // is read or written.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

/// Waits until `s` is readable (or, `write`, writable) for at most `limit`.
async fn ready(s: &TcpStream, write: bool, limit: Duration) -> Result<(), Fail> {
    let r = if write {
        timeout(limit, s.writable(false)).await
    } else {
        timeout(limit, s.readable(false)).await
    };
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Fail::Io(e)),
        Err(_) => Err(Fail::Timeout),
    }
}

/// Fills the empty `pipe` from `from` with up to `max` bytes, waiting (up
/// to `limit`) for bytes to arrive. Returns 0 at end of stream.
async fn fill(
    from: &TcpStream,
    pipe: &mut Pipe,
    max: usize,
    limit: Duration,
) -> Result<usize, Fail> {
    let max = max.min(PIPE_CAP);
    loop {
        // Tried before waiting: in a bulk transfer the next bytes are
        // usually there already, and a failed try costs one syscall where
        // a readiness wait costs a ring round trip.
        match splice(from.as_raw_fd(), pipe.write.as_raw_fd(), max) {
            Ok(Some(n)) => {
                pipe.held += n;
                return Ok(n);
            }
            Ok(None) => ready(from, false, limit).await?,
            Err(e) => return Err(Fail::Io(e)),
        }
    }
}

/// Empties `pipe` into `to`, waiting (up to `limit` each time) while the
/// socket's send buffer is full.
pub(crate) async fn drain(pipe: &mut Pipe, to: &TcpStream, limit: Duration) -> Result<(), Fail> {
    while pipe.held > 0 {
        match splice(pipe.read.as_raw_fd(), to.as_raw_fd(), pipe.held) {
            Ok(Some(0)) => return Err(Fail::Eof),
            Ok(Some(n)) => pipe.held -= n,
            Ok(None) => ready(to, true, limit).await?,
            Err(e) => return Err(Fail::Io(e)),
        }
    }
    Ok(())
}

/// Moves exactly `n` bytes from `from` to `to` through `pipe`, never reading
/// past them (the source connection stays clean for reuse). The same
/// contract, timeouts and failure sides as `relay::copy_length`: `lim.read`
/// bounds each wait for the source, `lim.write` each wait for the
/// destination. Adds the bytes spliced into `to` to `sent` as they go.
pub async fn copy_length(
    from: &TcpStream,
    to: &TcpStream,
    mut n: u64,
    pipe: &mut Pipe,
    (lim, sent): (Limits, &mut u64),
) -> Result<(), CopyFail> {
    let _src = NonBlocking::set(from).map_err(|e| CopyFail::Read(Fail::Io(e)))?;
    let _dst = NonBlocking::set(to).map_err(|e| CopyFail::Write(Fail::Io(e)))?;
    while n > 0 {
        let want = usize::try_from(n).unwrap_or(usize::MAX);
        let got = match fill(from, pipe, want, lim.read).await {
            Ok(0) => return Err(CopyFail::Read(Fail::Eof)),
            Ok(got) => got,
            Err(e) => return Err(CopyFail::Read(e)),
        };
        n -= got as u64;
        let drained = drain(pipe, to, lim.write).await;
        *sent += (got - pipe.held) as u64;
        drained.map_err(CopyFail::Write)?;
    }
    Ok(())
}
