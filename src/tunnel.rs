//! Stage 5, relay, after a `101`: a two-way byte tunnel (WebSocket) between the
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
    buffers::Buffers,
    relay::{recv_now, send_all, write_all, Fail},
    splice::{drain, splice, NonBlocking, Pipes, PIPE_CAP},
    tls::{TlsReadHalf, TlsStream, TlsWriteHalf},
};

/// Plain client ↔ upstream, both `TcpStream`s, with splice (splice.rs):
/// one loop waits for either side to be readable, then moves what it has
/// through a pipe taken for that burst only, so an idle tunnel holds none.
/// The bytes that reach `a` (the client) are added to `sent`.
///
/// Measured against the same loop through relay buffers (a scripted echo
/// upstream, 16 tunnels, one worker, ringside's CPU time per echoed
/// message, two runs each): 1 KiB messages 34-43k vs 26-27k per
/// CPU-second, 64 KiB messages 19.0-19.5k vs 13.0-14.4k.
pub async fn plain(
    a: &TcpStream,
    b: &TcpStream,
    pipes: &Pipes,
    idle: Duration,
    sent: &mut u64,
) -> io::Result<()> {
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
        if !from_a {
            *sent += (moved - pipe.held) as u64;
        }
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
/// a stuck write, an error), and the connection closes next. The bytes
/// written to the client are added to `sent`.
pub async fn tls(
    client: TlsStream,
    up: &TcpStream,
    (bufs, heads): (&Buffers, &Buffers),
    idle: Duration,
    sent: &mut u64,
) -> io::Result<()> {
    let last = Cell::new(Instant::now());
    let (mut client_r, mut client_w) = client.into_split();
    // Both directions use the upstream socket through a shared reference
    // (readiness waits and non-blocking send/recv), so reading and writing
    // it at once needs no second `&mut`.
    let up: &TcpStream = up;
    let mut upward = pin!(tls_to_up(&mut client_r, up, heads, idle, &last));
    let mut downward = pin!(up_to_tls(up, &mut client_w, bufs, (idle, &last), sent));
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
    to: &TcpStream,
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
        if let Err(f) = send_all(to, &buf, idle).await {
            heads.give(buf);
            return Err(io_error(f));
        }
    }
    heads.give(buf);
    // The client is done sending: pass the half-close on. Its result is
    // not looked at: an upstream already gone is fine.
    // SAFETY: shutdown(2) of the write half of a socket `to` owns.
    unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
    Ok(())
}

/// Upstream → client (TLS) until the upstream stops sending, then the
/// client gets close_notify and the write half of its socket is shut down.
/// Adds the bytes written to `sent`.
async fn up_to_tls(
    from: &TcpStream,
    to: &mut TlsWriteHalf,
    bufs: &Buffers,
    (idle, last): (Duration, &Cell<Instant>),
    sent: &mut u64,
) -> io::Result<()> {
    loop {
        // Not bounded: the watchdog ends a silent tunnel.
        from.readable(false).await?;
        let mut buf = bufs.take();
        buf.clear();
        let n = match recv_now(from, &mut buf) {
            Ok(n) => n,
            // A spurious wakeup: wait again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                bufs.give(buf);
                continue;
            }
            Err(e) => {
                bufs.give(buf);
                return Err(e);
            }
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
        *sent += n as u64;
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
        Fail::Eof | Fail::Framing(_) | Fail::TooLarge => io::ErrorKind::WriteZero.into(),
    }
}

/// After a `101`: the client gets the head (and whatever the upstream sent
/// after it, the last `after` bytes of `head`), the upstream gets whatever
/// the client sent early, then bytes flow both ways until both sides are
/// done. What reaches the client after the head is counted in `c.sent`.
pub async fn after_101(
    c: &mut crate::request::Client,
    shard: &crate::shard::Shard,
    s: &mut TcpStream,
    (mut head, after): (Vec<u8>, usize),
    early: Vec<u8>,
    idle: std::time::Duration,
) {
    c.stamp(&mut head);
    let (w, _) = write_all(&mut c.stream, head, idle).await;
    if w.is_err() {
        return;
    }
    c.sent += after as u64;
    if !early.is_empty() {
        let (w, _) = write_all(s, early, idle).await;
        if w.is_err() {
            return;
        }
    }
    // A new kind of client stream gets no tunnel until it is added here.
    let r = if let crate::stream::ClientStream::Plain(client) = &mut c.stream {
        plain(client, s, &shard.pipes, idle, &mut c.sent).await
    } else if c.stream.is_tls() {
        // The tunnel takes the TLS stream apart; the connection ends with it.
        match std::mem::replace(&mut c.stream, crate::stream::ClientStream::Closed) {
            crate::stream::ClientStream::Tls(client) => {
                let bufs = (&shard.relay, &shard.heads);
                tls(*client, s, bufs, idle, &mut c.sent).await
            }
            other => {
                c.stream = other;
                Ok(())
            }
        }
    } else {
        Ok(())
    };
    if let Err(e) = r {
        crate::debug!("worker {}: tunnel from {} ended: {e}", shard.id, c.peer);
    }
}
