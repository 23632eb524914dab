//! A TLS stream in two halves that work at once: an HTTP/2 connection
//! waits for the client's next frame while it writes, and a WebSocket
//! tunnel moves bytes both ways.
//!
//! The socket splits as monoio splits a `TcpStream` (reads and writes on
//! one socket are independent); rustls's state is shared in a `RefCell`
//! that is only ever borrowed between awaits, never across one, so the two
//! halves cannot both hold it. Plaintext, ciphertext and buffers follow
//! the same rules as the whole stream (`stream.rs`).

use std::{cell::RefCell, io, rc::Rc};

use monoio::{
    buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut},
    io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf},
    net::TcpStream,
    BufResult,
};
use rustls::ServerConnection;

use super::stream::{
    broken, feed, give, plaintext, queue, records, take, write_records, TlsStream,
};

type Shared = ServerConnection;

/// Each half has its own `broken`: set while its socket operation is in
/// flight, it stays set if that operation is dropped half way (TLS bytes of
/// that direction may be lost), and the half then refuses to go on.
pub struct TlsReadHalf {
    io: OwnedReadHalf<TcpStream>,
    shared: Rc<RefCell<Shared>>,
    broken: bool,
    backlog: Option<(Vec<u8>, usize)>,
}

pub struct TlsWriteHalf {
    io: OwnedWriteHalf<TcpStream>,
    shared: Rc<RefCell<Shared>>,
    broken: bool,
}

impl TlsStream {
    pub fn into_split(self) -> (TlsReadHalf, TlsWriteHalf) {
        let (r, w) = monoio::io::Splitable::into_split(self.io);
        let shared = Rc::new(RefCell::new(self.conn));
        (
            TlsReadHalf {
                io: r,
                shared: shared.clone(),
                broken: self.broken,
                backlog: self.backlog,
            },
            TlsWriteHalf {
                io: w,
                shared,
                broken: self.broken,
            },
        )
    }
}

impl TlsReadHalf {
    /// Reads from the socket once and hands the bytes to rustls. Records
    /// rustls owes in return (an alert, a key update) go out with the
    /// write half's next write. Returns the bytes read (0: end of stream).
    async fn fill(&mut self) -> io::Result<usize> {
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
        let n = buf.len() - start;
        let fed = feed(&mut self.shared.borrow_mut(), &buf[start..]);
        match fed {
            Ok(used) if used < n => self.backlog = Some((buf, start + used)),
            _ => give(buf),
        }
        fed.map(|_| n)
    }
}

impl AsyncReadRent for TlsReadHalf {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        loop {
            if self.broken {
                return (Err(broken()), buf);
            }
            let got = plaintext(&mut self.shared.borrow_mut(), &mut buf);
            match got {
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

impl TlsWriteHalf {
    /// Writes every TLS byte rustls has queued (from either half).
    async fn flush_tls(&mut self) -> io::Result<()> {
        let shared = &self.shared;
        write_records(&mut self.io, &mut self.broken, || {
            records(&mut shared.borrow_mut())
        })
        .await
    }

    async fn send(&mut self, slices: &[&[u8]]) -> io::Result<usize> {
        if self.broken {
            return Err(broken());
        }
        let n = queue(&mut self.shared.borrow_mut(), slices)?;
        self.flush_tls().await?;
        Ok(n)
    }
}

impl AsyncWriteRent for TlsWriteHalf {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let n = self.send(&[crate::relay::io_slice(&buf)]).await;
        (n, buf)
    }

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
        self.shared.borrow_mut().send_close_notify();
        self.flush_tls().await?;
        self.io.shutdown().await
    }
}
