//! The client side of a connection as every stage after the accept sees
//! it: a plain socket, a TLS stream (`tls`) or one stream of an HTTP/2
//! connection (`http2::stream`), behind one enum. The plain variant forwards
//! straight to the socket (one `match` per I/O call, no allocation).

use std::{io, time::Duration};

use monoio::{
    buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut},
    io::{AsyncReadRent, AsyncWriteRent},
    net::TcpStream,
    BufResult,
};

use crate::{
    http2::head::Native,
    http2::stream::{H2Stream, ResetSignal},
    relay::{Fail, Step},
    tls::TlsStream,
};

/// The client side of a connection, plain or TLS.
pub enum ClientStream {
    Plain(TcpStream),
    /// Boxed: rustls's connection state is about a KiB inline, and most
    /// connections are plain.
    Tls(Box<TlsStream>),
    /// One stream of an HTTP/2 connection (http2/), in HTTP/1.1 terms.
    H2(Box<H2Stream>),
    /// Taken apart by a WebSocket tunnel (tunnel.rs); the connection is
    /// over and every operation fails.
    Closed,
}

impl ClientStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_) | ClientStream::H2(_))
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, ClientStream::H2(_))
    }

    /// The TCP socket under a plain or TLS stream (none under an HTTP/2
    /// stream, which shares its connection).
    pub fn socket(&self) -> Option<&TcpStream> {
        match self {
            ClientStream::Plain(s) => Some(s),
            ClientStream::Tls(s) => Some(s.socket()),
            _ => None,
        }
    }

    /// Sends a head built for an HTTP/2 stream, and the first body bytes,
    /// within `limit` (as `relay::write_all` for a text head).
    pub async fn respond(&mut self, head: Native, body: &[u8], limit: Duration) -> Step<()> {
        let ClientStream::H2(s) = self else {
            return Err(Fail::Io(io::ErrorKind::Unsupported.into()));
        };
        match crate::timer::timeout(limit, s.respond(head, body)).await {
            Some(r) => r.map_err(Fail::Io),
            None => Err(Fail::Timeout),
        }
    }

    /// For an HTTP/2 stream, a future ready once the client resets it.
    pub fn reset_signal(&self) -> Option<ResetSignal> {
        match self {
            ClientStream::H2(s) => Some(s.reset_signal()),
            _ => None,
        }
    }

    /// The connection's local address.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            ClientStream::Plain(s) => s.local_addr(),
            ClientStream::Tls(s) => s.local_addr(),
            _ => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

fn closed() -> io::Error {
    io::ErrorKind::NotConnected.into()
}

impl AsyncReadRent for ClientStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.read(buf).await,
            ClientStream::Tls(s) => s.read(buf).await,
            ClientStream::H2(s) => s.read(buf).await,
            ClientStream::Closed => (Err(closed()), buf),
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.readv(buf).await,
            ClientStream::Tls(s) => s.readv(buf).await,
            ClientStream::H2(s) => s.readv(buf).await,
            ClientStream::Closed => (Err(closed()), buf),
        }
    }
}

impl AsyncWriteRent for ClientStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.write(buf).await,
            ClientStream::Tls(s) => s.write(buf).await,
            ClientStream::H2(s) => s.write(buf).await,
            ClientStream::Closed => (Err(closed()), buf),
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.writev(buf).await,
            ClientStream::Tls(s) => s.writev(buf).await,
            ClientStream::H2(s) => s.writev(buf).await,
            ClientStream::Closed => (Err(closed()), buf),
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush().await,
            ClientStream::Tls(s) => s.flush().await,
            ClientStream::H2(s) => s.flush().await,
            ClientStream::Closed => Err(closed()),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.shutdown().await,
            ClientStream::Tls(s) => s.shutdown().await,
            ClientStream::H2(s) => s.shutdown().await,
            ClientStream::Closed => Err(closed()),
        }
    }
}
