//! Stage 1, accept: a rustls server connection over a monoio `TcpStream`.
//!
//! The connection owns no I/O buffer: ciphertext passes through a buffer
//! lent by the worker thread's small pool (`spare`) for one socket read or
//! write, then goes back. An idle TLS keep-alive connection therefore costs
//! its socket and rustls's own state only, and `readable` lets it wait for
//! the next request without holding any buffer, as a plain one does
//! (unlike monoio-rustls, which keeps a 16 KiB read and a 16 KiB write
//! buffer in every connection for its whole life).
//!
//! A future dropped half way through a socket read or write (a timeout)
//! may lose TLS bytes: the stream then answers every later call with an
//! error, and callers close it.

use std::{
    cell::RefCell,
    io::{self, BufRead, Write},
    ptr,
    sync::Arc,
};

use monoio::{
    buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut},
    io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt},
    net::TcpStream,
    BufResult,
};
use rustls::{ServerConfig, ServerConnection};

/// Bytes read from the socket at once: one full TLS record (16 KiB of
/// plaintext) plus its header and the largest TLS 1.3 expansion.
const READ_SIZE: usize = 16 * 1024 + 5 + 256;

/// rustls refuses more ciphertext once it holds more than this much
/// undelivered plaintext (its `DEFAULT_RECEIVED_PLAINTEXT_LIMIT`, which
/// it offers no way to change): `feed` stops at it and keeps the rest.
const PLAINTEXT_LIMIT: usize = 16 * 1024;

/// A lent buffer that grew past this (a large response's ciphertext) goes
/// back to the allocator instead of the pool.
const KEEP_CAPACITY: usize = 128 * 1024;

/// Most buffers a worker keeps between uses: as many as it has socket
/// operations in flight at once, which is few, since each is returned as
/// soon as its read or write completes.
const KEEP_BUFFERS: usize = 16;

thread_local! {
    /// This worker thread's spare ciphertext buffers (one thread per core,
    /// so the pool is per core and needs no lock).
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn take() -> Vec<u8> {
    SPARE
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(READ_SIZE))
}

pub(super) fn give(mut buf: Vec<u8>) {
    if buf.capacity() < READ_SIZE || buf.capacity() > KEEP_CAPACITY {
        return;
    }
    buf.clear();
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < KEEP_BUFFERS {
            s.push(buf);
        }
    });
}

/// A TLS server connection: rustls's state and the socket, nothing else.
pub struct TlsStream {
    pub(super) io: TcpStream,
    pub(super) conn: ServerConnection,
    /// A socket read or write was dropped before it completed.
    pub(super) broken: bool,
    /// Ciphertext read from the socket that rustls could not take yet (it
    /// held `PLAINTEXT_LIMIT` of plaintext): the lent buffer and where the
    /// rest starts. Fed before the socket is read again; only ever set
    /// while plaintext waits for the reader, so never on an idle connection.
    pub(super) backlog: Option<(Vec<u8>, usize)>,
}

/// Completes a TLS handshake on `io`. Application data the client sent
/// along with its last handshake flight stays in rustls for the first read.
/// The caller bounds it with a timeout.
pub async fn accept(config: Arc<ServerConfig>, io: TcpStream) -> io::Result<TlsStream> {
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut s = TlsStream {
        io,
        conn,
        broken: false,
        backlog: None,
    };
    while s.conn.is_handshaking() {
        s.flush_tls().await?;
        if s.fill().await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed during the TLS handshake",
            ));
        }
    }
    if s.conn.alpn_protocol() == Some(super::acme::ACME_TLS_ALPN) {
        // RFC 8737 §3: the validator closes once it saw the certificate.
        s.flush_tls().await?;
        return Err(io::Error::other("tls-alpn-01 challenge answered"));
    }
    Ok(s)
}

impl TlsStream {
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.io.local_addr()
    }

    /// The socket under the TLS session.
    pub fn socket(&self) -> &TcpStream {
        &self.io
    }

    /// The protocol both sides agreed on by ALPN.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Waits until a read would make progress: plaintext (or the end of
    /// the stream) is already held, or bytes wait on the socket. Holds no
    /// buffer meanwhile, and may be dropped at any point.
    pub async fn readable(&mut self) -> io::Result<()> {
        if self.broken {
            return Err(broken());
        }
        match self.conn.reader().fill_buf() {
            Ok(_) => Ok(()),
            Err(_) if self.backlog.is_some() => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.io.readable(false).await,
            Err(e) => Err(e),
        }
    }

    /// Reads from the socket once and hands the bytes to rustls; then
    /// sends what rustls owes at once (TLS 1.3 tickets after the handshake,
    /// an alert, a key update). Returns the bytes read (0: end of stream).
    async fn fill(&mut self) -> io::Result<usize> {
        if self.broken {
            return Err(broken());
        }
        let (buf, start) = match self.backlog.take() {
            Some(backlog) => backlog,
            None => {
                self.broken = true;
                let (read, buf) = self.io.read(take()).await;
                self.broken = false;
                if let Err(e) = read {
                    give(buf);
                    return Err(e);
                }
                (buf, 0)
            }
        };
        // The read set the length to the bytes it got.
        let n = buf.len() - start;
        let fed = feed(&mut self.conn, &buf[start..]);
        match fed {
            Ok(used) if used < n => self.backlog = Some((buf, start + used)),
            _ => give(buf),
        }
        match fed {
            Ok(_) => {
                self.flush_tls().await?;
                Ok(n)
            }
            Err(e) => {
                // The alert rustls queued for a bad record, if the peer
                // still listens; the error is what the caller hears.
                let _ = self.flush_tls().await;
                Err(e)
            }
        }
    }

    /// Writes every TLS byte rustls has queued.
    async fn flush_tls(&mut self) -> io::Result<()> {
        let conn = &mut self.conn;
        write_records(&mut self.io, &mut self.broken, || records(conn)).await
    }

    /// Hands plaintext to rustls (it takes as much as its 64 KiB send
    /// buffer allows) and writes the records out.
    async fn send(&mut self, slices: &[&[u8]]) -> io::Result<usize> {
        if self.broken {
            return Err(broken());
        }
        let n = queue(&mut self.conn, slices)?;
        self.flush_tls().await?;
        Ok(n)
    }
}

/// Copies held plaintext into `buf`: `None` when rustls holds none yet.
pub(super) fn plaintext<T: IoBufMut>(
    conn: &mut ServerConnection,
    buf: &mut T,
) -> io::Result<Option<usize>> {
    let room = buf.bytes_total();
    let dst = buf.write_ptr();
    let mut reader = conn.reader();
    let mut n = 0;
    while n < room {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && n == 0 => return Ok(None),
            Err(_) if n > 0 => break,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break; // close_notify: the end of the stream
        }
        let k = chunk.len().min(room - n);
        // SAFETY: `dst` is valid for `room` bytes (IoBufMut's contract
        // while we hold `buf`) and `n + k <= room`; `chunk` is rustls's
        // own memory, so the two do not overlap.
        unsafe { ptr::copy_nonoverlapping(chunk.as_ptr(), dst.add(n), k) };
        reader.consume(k);
        n += k;
    }
    // SAFETY: the first `n` bytes were written just above.
    unsafe { buf.set_init(n) };
    Ok(Some(n))
}

/// Hands `bytes` to rustls and processes them, until they are all in
/// or rustls holds as much plaintext as it takes. Returns how many it took.
pub(super) fn feed(conn: &mut ServerConnection, bytes: &[u8]) -> io::Result<usize> {
    let mut rest = bytes;
    if rest.is_empty() {
        // Tells rustls the socket reached its end.
        conn.read_tls(&mut rest)?;
        return Ok(0);
    }
    while !rest.is_empty() {
        conn.read_tls(&mut rest)?;
        let state = conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if state.plaintext_bytes_to_read() >= PLAINTEXT_LIMIT {
            break;
        }
    }
    Ok(bytes.len() - rest.len())
}

/// The TLS records rustls has queued, in a lent buffer; `None` when it
/// has none.
pub(super) fn records(conn: &mut ServerConnection) -> io::Result<Option<Vec<u8>>> {
    if !conn.wants_write() {
        return Ok(None);
    }
    let mut buf = take();
    conn.write_tls(&mut buf)?;
    Ok(Some(buf))
}

/// Writes the buffers `next` hands out until it has none. `broken` is set
/// while a write is in flight, so it stays set if that write is dropped
/// half way (TLS bytes may be lost: every later call fails).
pub(super) async fn write_records<W: AsyncWriteRent>(
    io: &mut W,
    broken: &mut bool,
    mut next: impl FnMut() -> io::Result<Option<Vec<u8>>>,
) -> io::Result<()> {
    while let Some(buf) = next()? {
        if *broken {
            give(buf);
            return Err(self::broken());
        }
        *broken = true;
        let (wrote, buf) = io.write_all(buf).await;
        *broken = false;
        give(buf);
        wrote?;
    }
    Ok(())
}

/// Hands plaintext to rustls, as much as its send buffer takes; returns
/// how much it took.
pub(super) fn queue(conn: &mut ServerConnection, slices: &[&[u8]]) -> io::Result<usize> {
    let mut n = 0;
    for s in slices {
        let k = conn.writer().write(s)?;
        n += k;
        if k < s.len() {
            break;
        }
    }
    Ok(n)
}

pub(super) fn broken() -> io::Error {
    io::Error::other("TLS stream unusable after an interrupted read or write")
}

impl AsyncReadRent for TlsStream {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        loop {
            match plaintext(&mut self.conn, &mut buf) {
                Ok(Some(n)) => return (Ok(n), buf),
                Ok(None) => {}
                Err(e) => return (Err(e), buf),
            }
            if let Err(e) = self.fill().await {
                return (Err(e), buf);
            }
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        crate::relay::readv_first(self, buf).await
    }
}

impl AsyncWriteRent for TlsStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let n = self.send(&[crate::relay::io_slice(&buf)]).await;
        (n, buf)
    }

    /// All the iovecs go into TLS records together and out in one write.
    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let n = self.send(&crate::relay::iovec_slices(&buf)).await;
        (n, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().await?;
        self.io.flush().await
    }

    /// Sends close_notify, then shuts the socket's write side.
    async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush_tls().await?;
        self.io.shutdown().await
    }
}
