//! Stage 6 after a `101`: a two-way byte tunnel (WebSocket) between the
//! client and the upstream, until both sides closed or neither sent anything
//! for `idle` (nginx's `proxy_read_timeout`). Half-closes are passed on: when
//! one side stops sending, the other side's write half is shut down. A write
//! that the other side does not take within `idle` ends the tunnel too.

use std::{
    cell::Cell,
    io,
    os::fd::AsRawFd,
    pin::pin,
    time::{Duration, Instant},
};

use monoio::{
    io::{AsyncReadRent, AsyncWriteRent},
    net::TcpStream,
    time::timeout,
};

use crate::{
    relay::{read_fresh, write_all, Fail},
    splice::{drain, splice, NonBlocking, Pipes, PIPE_CAP},
    tls::{TlsReadHalf, TlsStream, TlsWriteHalf},
    worker::Buffers,
};

/// Plain client ↔ upstream, both `TcpStream`s, with splice (splice.rs):
/// one loop waits for either side to be readable, then moves what it has
/// through a pipe taken for that burst only, so an idle tunnel holds none.
///
/// Measured against the same loop through relay buffers (a scripted echo
/// upstream, 16 tunnels, one worker, ringside's CPU time per echoed
/// message, two runs each): 1 KiB messages 34-43k vs 26-27k per
/// CPU-second, 64 KiB messages 19.0-19.5k vs 13.0-14.4k.
pub async fn plain(a: &TcpStream, b: &TcpStream, pipes: &Pipes, idle: Duration) -> io::Result<()> {
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

/// TLS client ↔ plain upstream. A TLS stream cannot lend out readiness
/// (rustls may hold decrypted bytes the socket no longer shows), so each
/// direction runs as its own loop over one half of the TLS stream
/// (`TlsStream::into_split`) and the TLS read stays pending: both
/// directions run at once, and a watchdog ends the tunnel after `idle`
/// without a byte either way.
///
/// The pending TLS read holds a head buffer (`heads`, a few KiB: WebSocket
/// traffic from clients is mostly small), the upstream → client direction a
/// relay buffer only while bytes are moving. A cancelled TLS read or write
/// leaves that half unusable; that only happens when the tunnel ends (idle,
/// a stuck write, an error), and the connection closes next.
pub async fn tls(
    client: TlsStream,
    up: &mut TcpStream,
    bufs: &Buffers,
    heads: &Buffers,
    idle: Duration,
) -> io::Result<()> {
    let last = Cell::new(Instant::now());
    let (mut client_r, mut client_w) = client.into_split();
    let up: *mut TcpStream = up;
    // SAFETY: `TcpStream` is `monoio::io::Split` (monoio's promise that a
    // read and a write may be in flight at once on one socket: they are
    // separate ring operations on the same fd). The socket is read through
    // exactly one of these references and written through the other; both
    // live only inside this function, which holds the `&mut` borrow it was
    // given, and both futures are dropped before it returns. This is what
    // `Splitable::into_split` does with an `Rc<UnsafeCell>`, without moving
    // the pooled stream out of its owner.
    let (up_r, up_w) = unsafe { (&mut *up, &mut *up) };
    let mut upward = pin!(tls_to_up(&mut client_r, up_w, heads, idle, &last));
    let mut downward = pin!(up_to_tls(up_r, &mut client_w, bufs, idle, &last));
    let mut watchdog = pin!(async {
        loop {
            let until = last.get() + idle;
            monoio::time::sleep_until(until.into()).await;
            if last.get() + idle <= Instant::now() {
                return;
            }
        }
    });
    let (mut up_open, mut down_open) = (true, true);
    while up_open || down_open {
        monoio::select! {
            r = &mut upward, if up_open => {
                r?;
                up_open = false;
            },
            r = &mut downward, if down_open => {
                r?;
                down_open = false;
            },
            _ = &mut watchdog => return Ok(()),
        }
    }
    Ok(())
}

/// Client (TLS) → upstream until the client stops sending, then the
/// upstream's write half is shut down.
async fn tls_to_up(
    from: &mut TlsReadHalf,
    to: &mut TcpStream,
    heads: &Buffers,
    idle: Duration,
    last: &Cell<Instant>,
) -> io::Result<()> {
    let mut buf = heads.take();
    loop {
        buf.clear();
        // Not bounded: the watchdog ends a silent tunnel (a cancelled TLS
        // read would also poison the stream).
        let (r, b) = from.read(buf).await;
        buf = b;
        match r {
            Ok(0) => break,
            Ok(_) => last.set(Instant::now()),
            // A client that closes its socket without close_notify: for a
            // tunnel that is its end of sending, as on a plain connection.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                heads.give(buf);
                return Err(e);
            }
        }
        let (w, b) = write_all(to, buf, idle).await;
        buf = b;
        if let Err(f) = w {
            heads.give(buf);
            return Err(io_error(f));
        }
    }
    heads.give(buf);
    // The client is done sending: pass the half-close on.
    let _ = to.shutdown().await; // an upstream already gone is fine
    Ok(())
}

/// Upstream → client (TLS) until the upstream stops sending, then the
/// client gets close_notify and the write half of its socket is shut down.
async fn up_to_tls(
    from: &mut TcpStream,
    to: &mut TlsWriteHalf,
    bufs: &Buffers,
    idle: Duration,
    last: &Cell<Instant>,
) -> io::Result<()> {
    loop {
        // Not bounded: the watchdog ends a silent tunnel.
        from.readable(false).await?;
        let buf = bufs.take();
        let (r, buf) = read_fresh(from, buf, usize::MAX, idle).await;
        let n = match r {
            Ok(n) => n,
            Err(Fail::Io(e)) => {
                bufs.give(buf);
                return Err(e);
            }
            Err(_) => 0,
        };
        if n == 0 {
            bufs.give(buf);
            break;
        }
        last.set(Instant::now());
        let (w, buf) = write_all(to, buf, idle).await;
        bufs.give(buf);
        if let Err(f) = w {
            return Err(io_error(f));
        }
    }
    match timeout(idle, to.shutdown()).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// A failed tunnel write as the error that ends the tunnel.
fn io_error(f: Fail) -> io::Error {
    match f {
        Fail::Io(e) => e,
        Fail::Timeout => io::ErrorKind::TimedOut.into(),
        Fail::Eof | Fail::Framing(_) => io::ErrorKind::WriteZero.into(),
    }
}
