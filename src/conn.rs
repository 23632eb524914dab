//! Stage 1, accept: one client connection, from the accept to the close.
//!
//! `serve` is the connection's long-lived task: the edge shield's checks
//! at accept when the listener or `[limits]` asks for them (`admit`: the
//! PROXY header, `allow`/`deny`, `max_connections_per_ip`), the TLS
//! handshake if its listener has one (an `h2` connection then goes to `http2/`), then it
//! waits for the next request holding no buffer (a receive into one of the
//! worker's provided buffers, which the kernel picks as the bytes arrive; an
//! idle keep-alive connection costs a few hundred bytes) and runs
//! `exchange::exchange` — boxed, so the idle task stays small — for each
//! request.

use std::{
    cell::Cell,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll},
};

use monoio::{
    buf::{ProvidedBuf, ReadReady, RecvProvided},
    io::AsyncWriteRent,
    net::TcpStream,
    time::{error::Elapsed, Instant},
};

use crate::{
    exchange::exchange,
    request::{After, Client},
    shard::{Listen, Shard},
    shield::{nets::canonical, per_ip, proxy_protocol},
    stats::Limited,
    stream::ClientStream,
    unwind::CatchUnwind,
};

/// The connection's task. What can be known before it starts is settled
/// here, and the task is an `async move` block that uses what it captured
/// in place: an `async fn` keeps its arguments beside the locals its body
/// moves them into, and every idle connection would pay for both.
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listen: Rc<Listen>,
    shard: Rc<Shard>,
) -> impl Future<Output = ()> {
    shard.connections.set(shard.connections.get() + 1);
    shard.stats.accepted(listen.stat);
    // The handshake and the first head must both be done within
    // client_header_timeout of the accept.
    let (acceptor, hsts, to_https, header_timeout, shielded) = {
        let gen = shard.gen();
        let limits = &gen.config.limits;
        let timeout = limits.client_header_timeout;
        match gen
            .config
            .listeners
            .iter()
            .find(|l| l.address == listen.configured)
        {
            Some(l) => (
                l.acceptor.clone(),
                l.hsts.clone(),
                l.redirect_https,
                timeout,
                l.gate.proxy_protocol
                    || !l.gate.allow.is_empty()
                    || !l.gate.deny.is_empty()
                    || limits.max_connections_per_ip > 0,
            ),
            None => (None, None, false, timeout, false),
        }
    };
    let deadline = Instant::now() + header_timeout;
    let peer = peer.ip().to_canonical();
    let client = Client {
        stream: ClientStream::Plain(stream),
        peer,
        hop: peer,
        buf: Vec::new(),
        hsts,
        to_https,
        sent: 0,
    };
    let start = (acceptor.is_some() || shielded).then(|| {
        Box::new(Start {
            acceptor,
            shielded,
            slot: None,
        })
    });
    // The first head's deadline, in 8 bytes: it is in the task for the
    // connection's whole life.
    run(
        client,
        start,
        listen,
        shard,
        crate::idle::Stamp::of(deadline),
    )
}

/// What a connection does before its first request, on listeners that ask
/// for it: the edge shield's checks and the TLS handshake. Boxed, and only
/// there: inline, it would stay in every connection's task for its life.
/// The box stays with the connection: it holds the connection's place in
/// the per-address count.
struct Start {
    acceptor: Option<Arc<rustls::ServerConfig>>,
    shielded: bool,
    /// The place in the per-address count, held until the connection ends.
    slot: Option<per_ip::Slot>,
}

/// The connection's life: the TLS handshake if its listener has one, then
/// requests until it closes or idles out. Not an `async fn`, on purpose:
/// see `serve`.
#[allow(clippy::manual_async_fn)]
fn run(
    mut c: Client,
    mut start: Option<Box<Start>>,
    mut listen: Rc<Listen>,
    shard: Rc<Shard>,
    opening: crate::idle::Stamp,
) -> impl Future<Output = ()> {
    async move {
        // Until its first request is answered, a connection counts as
        // fresh: a graceful stop gives it a moment to send that request.
        let mut fresh = Some(shard.fresh());
        if let Some(start) = start.as_deref_mut() {
            // Boxed: the checks' and the handshake's state would otherwise
            // sit inline in every connection's task for its whole life.
            let begun = Box::pin(begin(start, &mut c, &mut listen, &shard, opening.instant()));
            let h2 = match begun.await {
                Begun::Http1 => None,
                Begun::Closed => {
                    shard.connections.set(shard.connections.get() - 1);
                    return;
                }
                Begun::Http2(tls) => Some(tls),
            };
            // The client chose HTTP/2 by ALPN: http2/ serves the connection.
            if let Some(tls) = h2 {
                drop(fresh.take());
                let client = (c.peer, c.hsts.take(), c.to_https);
                let h2 = Box::pin(crate::http2::serve(
                    tls,
                    client,
                    listen,
                    shard.clone(),
                    opening.instant(),
                ));
                h2.await;
                shard.connections.set(shard.connections.get() - 1);
                return;
            }
        }
        let (mut first, mut lingers) = (true, false);
        loop {
            if c.buf.is_empty() {
                shard.requests.give(std::mem::take(&mut c.buf));
                // One wait awaited in one place, only a flag held across it:
                // a second `.await` would add its state to every idle task.
                let mut provided = shard.provided;
                let woke = loop {
                    let opening = first.then(|| opening.instant());
                    match idle(&mut c.stream, &shard, opening, provided).await {
                        Woke::NoBuffer if provided => {
                            provided = false;
                            if let Some(woke) = recv_unprovided(&mut c, &shard) {
                                break woke;
                            }
                        }
                        woke => break woke,
                    }
                };
                if !take_woke(woke, &mut c, &shard) {
                    // Idle too long, or the socket failed or closed: no word.
                    break;
                }
            }
            let deadline = head_deadline(std::mem::take(&mut first), opening, &shard);
            // Each request names its own client (`real_ip_from`).
            c.peer = c.hop;
            // Allocated first and the future made in place: `Box::pin`
            // would build it on the stack and copy all of it (kilobytes,
            // most of them unused until it runs) once per request.
            let slot = Box::new_uninit();
            let exchange = Box::into_pin(Box::write(
                slot,
                exchange(&mut c, &listen, &shard, deadline),
            ));
            let outcome = CatchUnwind(exchange).await;
            drop(fresh.take());
            match next(outcome, &shard, c.peer) {
                After::Next => {}
                after => {
                    lingers = after == After::Linger;
                    break;
                }
            }
        }
        shard.requests.give(std::mem::take(&mut c.buf));
        if c.stream.is_tls() {
            // A peer already gone is fine: the socket closes next either way.
            let _ = CatchUnwind(close_notify(&mut c.stream, &shard)).await;
        }
        if lingers {
            // Boxed: a rare wait, kept out of every connection's task.
            let _ = CatchUnwind(Box::pin(linger(&mut c.stream, &shard))).await;
        }
        shard.connections.set(shard.connections.get() - 1);
    }
}

/// When a request's head must be in: the connection's opening deadline for
/// its first request, else `client_header_timeout` from now.
fn head_deadline(first: bool, opening: crate::idle::Stamp, shard: &Shard) -> Instant {
    if first {
        opening.instant()
    } else {
        crate::timer::later(shard.gen().config.limits.client_header_timeout)
    }
}

/// How a connection's start ended.
enum Begun {
    /// Closed by the shield or a failed handshake (counted and logged).
    Closed,
    /// HTTP/1.1 requests follow, on plain TCP or TLS (now `c.stream`).
    Http1,
    /// TLS with `h2` chosen by ALPN.
    Http2(Box<crate::tls::TlsStream>),
}

/// The edge shield's checks (the PROXY header, the listener's lists, the
/// per-address count, whose place goes to `start.slot`), then the TLS
/// handshake, as the listener asks.
async fn begin(
    start: &mut Start,
    c: &mut Client,
    listen: &mut Rc<Listen>,
    shard: &Shard,
    deadline: Instant,
) -> Begun {
    if start.shielded {
        let Some((client, place)) = admit(plain(&c.stream), c.hop, listen, shard, deadline).await
        else {
            return Begun::Closed;
        };
        (c.hop, c.peer, start.slot) = (client, client, place);
    }
    let Some(config) = start.acceptor.take() else {
        return Begun::Http1;
    };
    let tls = handshake(config, take_plain(&mut c.stream), deadline).await;
    shard.stats.handshake(listen.stat, tls.is_some());
    let Some(tls) = tls else {
        // A stalled, truncated or refused handshake: close, as nginx does
        // (rustls already sent the alert it owed).
        return Begun::Closed;
    };
    *listen = Rc::new(Listen {
        proto: "https",
        ..**listen
    });
    if tls.alpn_protocol() == Some(b"h2") {
        return Begun::Http2(tls);
    }
    c.stream = ClientStream::Tls(tls);
    Begun::Http1
}

/// The plain TCP socket of a connection not yet past its TLS handshake.
fn plain(stream: &ClientStream) -> &TcpStream {
    let ClientStream::Plain(stream) = stream else {
        unreachable!("a connection starts as plain TCP");
    };
    stream
}

/// Takes the plain TCP socket out for the TLS handshake, leaving `Closed`.
fn take_plain(stream: &mut ClientStream) -> TcpStream {
    let ClientStream::Plain(stream) = std::mem::replace(stream, ClientStream::Closed) else {
        unreachable!("a connection starts as plain TCP");
    };
    stream
}

/// What the connection does after an exchange: what the exchange said,
/// but no next request while the worker drains. A panic is logged here and
/// closes the connection.
fn next(outcome: Result<After, ()>, shard: &Shard, peer: IpAddr) -> After {
    match outcome {
        Ok(After::Next) if shard.draining.get() => After::Close,
        Ok(after) => after,
        Err(()) => {
            crate::error!(
                "worker {}: request from {} panicked; connection closed",
                shard.id,
                peer
            );
            After::Close
        }
    }
}

/// How long a refused client may go on sending before its connection
/// closes (nginx's `lingering_time` and `lingering_timeout` in one).
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// nginx's lingering close, after a refusal or a failure: the client may
/// still be sending (a body over `max_request_body`, the rest of a head
/// that was refused), and closing a socket with bytes unread makes the
/// kernel answer with a reset, which drops the answer's bytes still
/// unacknowledged and fails a client that is still writing before it
/// reads the answer. So the write side is shut first (the client sees the
/// answer end with a FIN), then what the client sends is read and dropped
/// until it closes, a read fails or `LINGER` has passed.
async fn linger(stream: &mut ClientStream, shard: &Shard) {
    if let ClientStream::Plain(s) = stream {
        // (A TLS stream's shutdown came with its close_notify.)
        let _ = s.shutdown().await;
    }
    let deadline = Instant::now() + LINGER;
    let mut buf = shard.relay.take();
    loop {
        buf.clear();
        let left = deadline.saturating_duration_since(Instant::now());
        let (r, b) = crate::relay::read_more(stream, buf, left).await;
        buf = b;
        if !matches!(r, Ok(n) if n > 0) {
            break;
        }
    }
    shard.relay.give(buf);
}

/// The TLS close_notify, so a client can tell a close-delimited body from a
/// truncated one; bounded by `client_send_timeout`, as the peer may have
/// stopped reading. After a cancelled read or write the stream refuses
/// (tls/stream.rs) and nothing is sent; guarded like every exchange all the
/// same. Boxed, as the handshake is: only TLS connections pay for its state.
fn close_notify<'a>(
    stream: &'a mut ClientStream,
    shard: &Shard,
) -> Pin<Box<impl Future<Output = Result<io::Result<()>, Elapsed>> + 'a>> {
    let limit = shard.gen().config.limits.client_send_timeout;
    Box::pin(monoio::time::timeout(limit, stream.shutdown()))
}

/// What ended a wait for the client's next bytes.
enum Woke {
    /// They came, received into one of the worker's provided buffers.
    Bytes(ProvidedBuf),
    /// They are there to read (TLS, or a readiness wait).
    Ready,
    /// No provided buffer was free as they came: take them another way.
    NoBuffer,
    /// The deadline passed, the client closed, the socket failed, or the
    /// accept loop evicted the connection to admit a new client.
    Over,
}

/// Waits, holding no buffer, until the client sends something or the wait's
/// deadline passes: `opening`, the first request's, else `keepalive_timeout`
/// from now (the config current when the wait starts: reload). A plain
/// connection receives into a provided buffer when `provided` (one ring op,
/// and the bytes come with it), else waits for readiness (the request is
/// then taken with a `recv` in `exchange::read_request`).
fn idle<'a>(
    stream: &'a mut ClientStream,
    shard: &Shard,
    opening: Option<Instant>,
    provided: bool,
) -> Idle<'a> {
    let until = match opening {
        Some(deadline) => crate::idle::until(deadline, false),
        None => {
            let keepalive = shard.gen().config.limits.keepalive_timeout;
            crate::idle::until(crate::timer::later(keepalive), true)
        }
    };
    match stream {
        ClientStream::Plain(s) if provided => Idle::Recv {
            recv: s.recv_provided(),
            until,
        },
        ClientStream::Plain(s) => Idle::Poll {
            ready: s.read_ready(),
            until,
        },
        // Plaintext rustls already holds counts as ready too; no buffer is
        // held while waiting (tls/stream.rs). Boxed, as the handshake is:
        // inline, this wait's state would make every idle connection's task
        // larger, plain ones included.
        ClientStream::Tls(s) => Idle::Tls {
            wait: Box::pin(async move {
                monoio::select! {
                    r = s.readable() => r.is_ok(),
                    _ = until => false,
                }
            }),
        },
        // An HTTP/2 stream runs one exchange and never waits here; a stream
        // a tunnel took apart is over.
        ClientStream::H2(_) | ClientStream::Closed => Idle::Over,
    }
}

/// After a receive found the worker's provided buffers all taken (usually a
/// burst of requests on many connections at once, so the bytes are likely
/// there): takes them with one `recv` into a pooled buffer. `None`: nothing
/// to read yet (or not a plain socket), so wait for readiness.
fn recv_unprovided(c: &mut Client, shard: &Shard) -> Option<Woke> {
    let ClientStream::Plain(s) = &c.stream else {
        return None;
    };
    c.buf = shard.requests.take();
    match crate::relay::recv_now(s, &mut c.buf) {
        Ok(0) => Some(Woke::Over),
        Ok(_) => Some(Woke::Ready),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            shard.requests.give(std::mem::take(&mut c.buf));
            None
        }
        Err(_) => Some(Woke::Over),
    }
}

/// Takes what ended an idle wait into the connection: false if it is over.
fn take_woke(woke: Woke, c: &mut Client, shard: &Shard) -> bool {
    match woke {
        Woke::Bytes(bytes) => {
            c.buf = shard.requests.take();
            c.buf.extend_from_slice(&bytes);
            true
        }
        Woke::Ready => true,
        Woke::NoBuffer | Woke::Over => false,
    }
}

pin_project_lite::pin_project! {
    /// `idle`'s wait, a named future: it holds the receive (or readiness)
    /// and the deadline and nothing else, where a `select!` in an `async
    /// fn` keeps both twice over, and this wait's size is in every idle
    /// connection's task.
    #[project = IdleProj]
    enum Idle<'a> {
        Recv { #[pin] recv: RecvProvided, until: crate::idle::Until },
        Poll { #[pin] ready: ReadReady, until: crate::idle::Until },
        Tls { wait: Pin<Box<dyn Future<Output = bool> + 'a>> },
        Over,
    }
}

impl Future for Idle<'_> {
    type Output = Woke;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Woke> {
        // The bytes first: a request that came with the deadline wins.
        let until = match self.project() {
            IdleProj::Recv { recv, until } => match recv.poll(cx) {
                Poll::Ready(Ok(bytes)) if bytes.is_empty() => return Poll::Ready(Woke::Over),
                Poll::Ready(Ok(bytes)) => return Poll::Ready(Woke::Bytes(bytes)),
                Poll::Ready(Err(e)) => {
                    let full = e.raw_os_error() == Some(libc::ENOBUFS);
                    return Poll::Ready(if full || e.kind() == io::ErrorKind::Unsupported {
                        Woke::NoBuffer
                    } else {
                        Woke::Over
                    });
                }
                Poll::Pending => until,
            },
            IdleProj::Poll { ready, until } => match ready.poll(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Woke::Ready),
                Poll::Ready(Err(_)) => return Poll::Ready(Woke::Over),
                Poll::Pending => until,
            },
            IdleProj::Tls { wait } => {
                return wait.as_mut().poll(cx).map(|r| match r {
                    true => Woke::Ready,
                    false => Woke::Over,
                })
            }
            IdleProj::Over => return Poll::Ready(Woke::Over),
        };
        Pin::new(until).poll(cx).map(|()| Woke::Over)
    }
}

/// The TLS handshake, bounded by the first head's deadline.
async fn handshake(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    deadline: Instant,
) -> Option<Box<crate::tls::TlsStream>> {
    let left = deadline.saturating_duration_since(Instant::now());
    match monoio::time::timeout(left, crate::tls::accept(config, stream)).await {
        Ok(Ok(tls)) => Some(Box::new(tls)),
        _ => None,
    }
}

/// The edge shield's checks at accept, before TLS: the PROXY header on a
/// `proxy_protocol` listener, then the listener's `allow`/`deny`, then
/// `max_connections_per_ip`. Returns the client's address and its place in
/// the per-address count; `None`: the connection is to be closed without
/// an answer (counted and logged here, unless the peer closed first
/// without sending a byte, as a balancer's TCP health check does).
async fn admit(
    stream: &TcpStream,
    peer: IpAddr,
    listen: &Listen,
    shard: &Shard,
    deadline: Instant,
) -> Option<(IpAddr, Option<per_ip::Slot>)> {
    let gen = shard.gen();
    let at = listen.configured;
    let listener = gen.config.listeners.iter().find(|l| l.address == at);
    let gate = listener.map(|l| &l.gate);
    let refuse = |client: IpAddr, reason: Limited, why: std::fmt::Arguments<'_>| {
        shard.stats.limited(gen.ids.no_route, reason);
        REFUSALS.with(|r| r.refused(shard.id, client, at, why, std::time::Instant::now()));
        None
    };
    let mut client = peer;
    if gate.is_some_and(|g| g.proxy_protocol) {
        match proxy_header(stream, deadline).await {
            Ok(source) => client = source.map_or(peer, |s| canonical(s.ip())),
            Err(NoHeader::Closed) => return None,
            Err(NoHeader::Bad(bad)) => {
                return refuse(
                    peer,
                    Limited::ProxyProtocol,
                    format_args!("PROXY header: {bad}"),
                )
            }
            Err(NoHeader::Timeout) => {
                let why = format_args!("no PROXY header within client_header_timeout");
                return refuse(peer, Limited::ProxyProtocol, why);
            }
        }
    }
    if !gate.is_none_or(|g| g.lets_in(client)) {
        return refuse(
            client,
            Limited::ListenerDeny,
            format_args!("listener allow/deny"),
        );
    }
    let max = gen.config.limits.max_connections_per_ip;
    if max == 0 {
        return Some((client, None));
    }
    match per_ip::admit(client, max) {
        Ok(slot) => Some((client, Some(slot))),
        Err(open) => {
            let why = format_args!("{open} connections open (max_connections_per_ip = {max})");
            refuse(client, Limited::ConnPerIp, why)
        }
    }
}

/// Why no PROXY header came.
enum NoHeader {
    /// The peer closed (or the socket failed) before sending a byte.
    Closed,
    Bad(proxy_protocol::Bad),
    Timeout,
}

/// Reads the PROXY header off the socket, and not one byte more: what
/// follows (a TLS ClientHello, a request) stays for the next stage. Bytes
/// are peeked, and taken only once they are known to be the header's.
/// Returns the source address the header names (`None`: the peer's own).
async fn proxy_header(
    stream: &TcpStream,
    deadline: Instant,
) -> Result<Option<SocketAddr>, NoHeader> {
    // A header that comes in pieces: the pieces so far (rarely used).
    let mut held = Vec::new();
    loop {
        match proxy_step(stream.as_raw_fd(), &mut held)? {
            Some(header) => return Ok(header.source),
            None => {
                let left = deadline.saturating_duration_since(Instant::now());
                match monoio::time::timeout(left, stream.readable(false)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) if held.is_empty() => return Err(NoHeader::Closed),
                    Ok(Err(_)) => return Err(NoHeader::Bad(TRUNCATED)),
                    Err(_) => return Err(NoHeader::Timeout),
                }
            }
        }
    }
}

const TRUNCATED: proxy_protocol::Bad = proxy_protocol::Bad("connection closed inside the header");

/// Looks at what the socket holds now: the header (taken off the socket),
/// `None` to wait for more (the bytes so far taken into `held`), or why
/// there is no header.
fn proxy_step(
    fd: std::os::fd::RawFd,
    held: &mut Vec<u8>,
) -> Result<Option<proxy_protocol::Header>, NoHeader> {
    let mut peeked = [0u8; proxy_protocol::MAX_V2];
    // `parse` refuses anything longer than MAX_V2, so `held` stays shorter.
    let room = proxy_protocol::MAX_V2 - held.len();
    // SAFETY: `peeked` is a live local array of at least `room` bytes that
    // recv may write into; no other reference to it exists during the
    // call. `fd` is the connection's socket, open for the whole call.
    let n = unsafe {
        libc::recv(
            fd,
            peeked.as_mut_ptr().cast(),
            room,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    let n = match n {
        0 if held.is_empty() => return Err(NoHeader::Closed),
        0 => return Err(NoHeader::Bad(TRUNCATED)),
        n if n > 0 => n as usize,
        _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => {
            return Ok(None)
        }
        _ if held.is_empty() => return Err(NoHeader::Closed),
        _ => return Err(NoHeader::Bad(TRUNCATED)),
    };
    let before = held.len();
    let parsed = if before == 0 {
        proxy_protocol::parse(&peeked[..n])
    } else {
        held.extend_from_slice(&peeked[..n]);
        proxy_protocol::parse(held)
    };
    match parsed.map_err(NoHeader::Bad)? {
        Some(header) => {
            take(fd, &mut peeked, header.len - before)?;
            Ok(Some(header))
        }
        None => {
            if before == 0 {
                held.extend_from_slice(&peeked[..n]);
            }
            take(fd, &mut peeked, n)?;
            Ok(None)
        }
    }
}

/// Takes `len` bytes that a peek showed are waiting off the socket.
fn take(
    fd: std::os::fd::RawFd,
    scratch: &mut [u8; proxy_protocol::MAX_V2],
    mut len: usize,
) -> Result<(), NoHeader> {
    while len > 0 {
        // SAFETY: `scratch` is an exclusively borrowed array of MAX_V2
        // bytes and `len` is at most that (a header is never longer); `fd`
        // is the connection's socket, open for the whole call.
        let n = unsafe { libc::recv(fd, scratch.as_mut_ptr().cast(), len, libc::MSG_DONTWAIT) };
        if n <= 0 {
            return Err(NoHeader::Bad(TRUNCATED));
        }
        len -= n as usize;
    }
    Ok(())
}

/// At most one line per worker per this interval about refused
/// connections; the next line says how many were left out, so a flood
/// cannot flood the log.
const REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    /// This worker's refused connections (one worker per thread).
    static REFUSALS: Refusals = const { Refusals {
        logged: Cell::new(None),
        suppressed: Cell::new(0),
    } };
}

/// The rate limit of one worker's refusal lines.
struct Refusals {
    logged: Cell<Option<std::time::Instant>>,
    /// Refusals since the last line that were not logged.
    suppressed: Cell<u64>,
}

impl Refusals {
    fn refused(
        &self,
        worker: usize,
        client: IpAddr,
        at: SocketAddr,
        why: std::fmt::Arguments<'_>,
        now: std::time::Instant,
    ) {
        let due = self
            .logged
            .get()
            .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_EVERY);
        if !due {
            self.suppressed.set(self.suppressed.get() + 1);
            return;
        }
        self.logged.set(Some(now));
        let left_out = match self.suppressed.replace(0) {
            0 => String::new(),
            n => format!(" ({n} more refused connections not logged)"),
        };
        crate::info!("worker {worker}: connection from {client} to {at} refused: {why}{left_out}");
    }
}
