//! Stage 5 and 6 between two plain TCP sockets: Content-Length bodies and
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
    relay::{self, CopyFail, Fail, Limits},
    tls::ClientStream,
    worker::Shard,
};

/// Which way a body goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// A request body, client → upstream.
    Up,
    /// A response body, upstream → client.
    Down,
}

/// Copies a Content-Length body of `n` bytes between a client and an
/// upstream socket, both ways the same: spliced when the client is plain
/// TCP, through a relay buffer otherwise (TLS, or no pipe to be had).
///
/// Measured (`perf/run.sh --quick --workloads 1m,64k`, one worker, same run
/// as the peers): 1 MiB responses at 5,773 requests per CPU-second against
/// 1,470 through 256 KiB buffers (nginx 825 / 847, HAProxy 1,097 / 1,148 in
/// the two runs), peak RSS 15.5 MiB against 55.9.
pub async fn copy_body(
    shard: &Shard,
    client: &mut ClientStream,
    up: &mut TcpStream,
    way: Way,
    n: u64,
    lim: Limits,
) -> Result<(), CopyFail> {
    if let ClientStream::Plain(plain) = client {
        if let Some(mut pipe) = shard.pipes.take() {
            let r = match way {
                Way::Up => copy_length(plain, up, n, &mut pipe, lim).await,
                Way::Down => copy_length(up, plain, n, &mut pipe, lim).await,
            };
            shard.pipes.give(pipe);
            return r;
        }
    }
    let buf = shard.relay.take();
    let (r, buf) = match way {
        Way::Up => relay::copy_length(client, up, n, buf, lim).await,
        Way::Down => relay::copy_length(up, client, n, buf, lim).await,
    };
    shard.relay.give(buf);
    r
}

/// Bytes a pipe holds: the kernel default (16 pages). Not raised with
/// F_SETPIPE_SZ: a larger pipe pins more memory per copy in flight.
const PIPE_CAP: usize = 64 * 1024;

/// Most idle pipes a worker keeps (two fds each, no buffer memory while
/// empty); more are closed. Pipes in use are not capped: when the process
/// runs out of fds, `Pipes::take` fails and the copy takes the buffer path.
const MAX_FREE_PIPES: usize = 32;

/// A pipe, empty whenever it is in the pool.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes spliced in and not yet out.
    held: usize,
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
struct NonBlocking {
    fd: RawFd,
    /// The flags to put back, when this guard changed them.
    restore: Option<libc::c_int>,
}

impl NonBlocking {
    fn set(s: &TcpStream) -> io::Result<NonBlocking> {
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
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<Option<usize>> {
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
async fn drain(pipe: &mut Pipe, to: &TcpStream, limit: Duration) -> Result<(), Fail> {
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
/// destination.
pub async fn copy_length(
    from: &TcpStream,
    to: &TcpStream,
    mut n: u64,
    pipe: &mut Pipe,
    lim: Limits,
) -> Result<(), CopyFail> {
    let _src = NonBlocking::set(from).map_err(|e| CopyFail::Read(Fail::Io(e)))?;
    let _dst = NonBlocking::set(to).map_err(|e| CopyFail::Write(Fail::Io(e)))?;
    while n > 0 {
        let want = usize::try_from(n).unwrap_or(usize::MAX);
        match fill(from, pipe, want, lim.read).await {
            Ok(0) => return Err(CopyFail::Read(Fail::Eof)),
            Ok(got) => n -= got as u64,
            Err(e) => return Err(CopyFail::Read(e)),
        }
        drain(pipe, to, lim.write).await.map_err(CopyFail::Write)?;
    }
    Ok(())
}

/// A two-way splice tunnel between two plain sockets (see tunnel.rs for the
/// rules): waits for either side to be readable, then moves what it has
/// through a pipe taken for that burst only, so an idle tunnel holds none.
pub async fn tunnel(a: &TcpStream, b: &TcpStream, pipes: &Pipes, idle: Duration) -> io::Result<()> {
    let _a = NonBlocking::set(a)?;
    let _b = NonBlocking::set(b)?;
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        let ready = timeout(idle, async {
            monoio::select! {
                r = a.readable(false), if a_open => (true, r),
                r = b.readable(false), if b_open => (false, r),
            }
        })
        .await;
        let (from_a, r) = match ready {
            Ok(x) => x,
            Err(_) => return Ok(()),
        };
        r?;
        let (src, dst) = if from_a { (a, b) } else { (b, a) };
        let Some(mut pipe) = pipes.take() else {
            return Err(io::Error::other("no pipe for the tunnel"));
        };
        let moved = match splice(src.as_raw_fd(), pipe.write.as_raw_fd(), PIPE_CAP) {
            // A spurious wakeup: wait again.
            Ok(None) => {
                pipes.give(pipe);
                continue;
            }
            Ok(Some(n)) => n,
            Err(e) => return Err(e),
        };
        if moved == 0 {
            pipes.give(pipe);
            // This side is done sending: pass the half-close on. Its
            // result is not looked at: a peer already gone is fine.
            // SAFETY: shutdown(2) of the write half of a socket `dst` owns.
            unsafe { libc::shutdown(dst.as_raw_fd(), libc::SHUT_WR) };
            if from_a {
                a_open = false;
            } else {
                b_open = false;
            }
            continue;
        }
        pipe.held = moved;
        let w = drain(&mut pipe, dst, idle).await;
        pipes.give(pipe);
        if w.is_err() {
            return Ok(());
        }
    }
    Ok(())
}
