//! HTTP/2 to clients: a TLS connection that chose `h2` by ALPN.
//!
//! The `h2` crate runs the protocol (HPACK, streams, flow control, and the
//! limits below); each stream then runs the same request path as HTTP/1.1:
//! its request is written as an HTTP/1.1 head (`head::request`) and handed
//! to `exchange::exchange` with the stream as its byte stream
//! (`stream::H2Stream`), so routing, balancing, the keep-alive pool, cache,
//! gzip, static files, error pages, logs and counters are the very ones
//! HTTP/1.1 requests use. Upstream, every stream is an HTTP/1.1 request
//! over the worker's pool. An answer's head is built by the HTTP/1.1 head
//! writers themselves (`head::Native`) straight into the HPACK block h2
//! sends (`hpack`), never written as text and parsed back, and never made
//! into an `http::HeaderMap` for h2 to encode again.
//!
//! Why the `h2` crate and not monoio-http's h2 fork (checked against
//! monoio-http 0.3.12, the current release): the fork has none of the
//! defences added to h2 since 2023 — no `max_pending_accept_reset_streams`
//! or `max_local_error_reset_streams` (rapid reset, CVE-2023-44487), no cap
//! on CONTINUATION frames, no limit on tiny DATA frames — and `cargo tree`
//! of monoio-http shows rustls 0.21.12, rustls-webpki 0.101 and
//! monoio-rustls 0.3 next to our rustls 0.23 (two rustls versions, which we
//! never ship). `h2` 0.4.20 has all of those limits; its price is tokio's
//! poll traits over our completion-based stream (`io::PollIo`: one copy
//! each way, one boxed operation per socket read or write). Measured with
//! h2load in perf/ (figures in the README).
//!
//! Limits (what an edge proxy sets; nginx's values where it has one):
//! 128 concurrent streams per connection, a header list of at most
//! `max_request_head` bytes, 20 streams reset by the client before we
//! accepted them and 1,024 streams we had to reset — past either the
//! connection ends with GOAWAY ENHANCE_YOUR_CALM. A stream whose client
//! stops reading (zero window) is bounded by `client_send_timeout`, like an
//! HTTP/1.1 client that stops reading.
//!
//! Time bounds on the connection: a frame or header block the client starts
//! and does not finish within `client_header_timeout` ends it with GOAWAY
//! PROTOCOL_ERROR (as nginx; `partial`); with no stream open for
//! `keepalive_timeout` it gets GOAWAY, and a client that does not answer
//! h2's PING within `GRACE` gets the final GOAWAY and the close. While no
//! stream is open it is listed in the worker's `idle` registry, so the
//! accept loop can evict it (GOAWAY NO_ERROR) at `max_connections`.

pub mod head;
pub(crate) mod hpack;
mod io;
mod partial;
pub mod stream;

use std::{
    cell::Cell,
    future::Future,
    net::IpAddr,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use h2::{server::SendResponse, RecvStream};
use monoio::time::Instant;

use partial::Partial;
pub use stream::{H2Stream, ResetSignal};

use crate::{
    exchange, idle, request::Client, shard::Listen, shard::Shard, stream::ClientStream,
    tls::TlsStream, unwind::CatchUnwind,
};

const MAX_STREAMS: u32 = 128;
/// Per-stream receive window: what a client may send of a request body
/// before ringside has handed it on.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// What a client connection brings to each of its streams.
struct Origin {
    peer: IpAddr,
    hsts: Option<Arc<String>>,
    to_https: bool,
    listen: Rc<Listen>,
    shard: Rc<Shard>,
    /// Streams running, and when the last one ended.
    open: Cell<usize>,
    /// Streams accepted, and those the client reset while we worked on them.
    streams: Cell<usize>,
    resets: Cell<usize>,
    quiet_since: Cell<Instant>,
    /// Listed in the worker's idle registry while no stream is open.
    idle: idle::Entry,
    /// GOAWAY sent: the connection is not listed again.
    closing: Cell<bool>,
}

/// A stream as h2 hands it over.
type Accepted = (http::Request<RecvStream>, SendResponse<Bytes>);

/// Client resets of streams under way past which a connection counts as a
/// rapid-reset attack, if they are also over half its streams.
const MAX_RESETS: usize = 100;

impl Origin {
    fn abusive(&self) -> bool {
        let r = self.resets.get();
        r > MAX_RESETS && r * 2 > self.streams.get()
    }
}

/// Serves one HTTP/2 connection until the client closes it, an idle
/// keepalive_timeout passes, the accept loop evicts it while it has no open
/// stream, or a graceful stop (GOAWAY) has let its streams finish.
/// `deadline` bounds the connection preface.
pub async fn serve(
    tls: Box<TlsStream>,
    client: (IpAddr, Option<Arc<String>>, bool),
    listen: Rc<Listen>,
    shard: Rc<Shard>,
    deadline: Instant,
) {
    let (max_head, times) = {
        let gen = shard.gen();
        let l = &gen.config.limits;
        (
            l.max_request_head,
            Times {
                keepalive: l.keepalive_timeout,
                header: l.client_header_timeout,
            },
        )
    };
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX))
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(Some(1024));
    let left = deadline.saturating_duration_since(Instant::now());
    let partial = Rc::new(Partial::new(times.header));
    let (io, linger) = io::PollIo::new(*tls, partial.clone());
    let handshake = builder.handshake::<_, Bytes>(io);
    let conn = match monoio::time::timeout(left, handshake).await {
        Ok(Ok(c)) => Some(c),
        // No preface in time, or not HTTP/2: h2 sent GOAWAY if it could.
        _ => None,
    };
    let mut evicted = false;
    if let Some(conn) = conn {
        evicted = connection(conn, client, listen, &shard, times, &partial).await;
    }
    let rest = linger.borrow_mut().take();
    // An evicted connection had no stream open: nothing the client sends
    // now is answered, and the new client waits for this one to close.
    if let (Some(rest), false) = (rest, evicted) {
        rest.drain(LINGER).await;
    }
}

/// How long a closed connection's late bytes are read and dropped.
const LINGER: Duration = Duration::from_secs(1);

/// How long a stream answered before its request body came waits for the
/// rest of that body (`H2Stream::drain_body`), as an HTTP/1.1 connection
/// lingers after a refusal.
const DRAIN: Duration = Duration::from_secs(5);

/// How long a client has, after the GOAWAY that closes an idle connection,
/// to answer h2's PING before the connection is closed without it (the
/// final GOAWAY then names the last stream served). nginx closes at once;
/// this leaves a well-behaved client its round trip.
const GRACE: Duration = Duration::from_secs(1);

/// The connection's timeouts, from the config current at its accept.
#[derive(Clone, Copy)]
struct Times {
    keepalive: Duration,
    /// Bounds a frame or header block the client started and did not finish.
    header: Duration,
}

/// Runs the connection; true when the accept loop evicted it.
async fn connection(
    mut conn: h2::server::Connection<io::PollIo, Bytes>,
    client: (IpAddr, Option<Arc<String>>, bool),
    listen: Rc<Listen>,
    shard: &Rc<Shard>,
    times: Times,
    partial: &Partial,
) -> bool {
    let origin = Rc::new(Origin {
        peer: client.0,
        hsts: client.1,
        to_https: client.2,
        listen,
        shard: shard.clone(),
        open: Cell::new(0),
        streams: Cell::new(0),
        resets: Cell::new(0),
        quiet_since: Cell::new(Instant::now()),
        idle: idle::Entry::new(),
        closing: Cell::new(false),
    });
    // No stream open yet: evictable from the start (the GOAWAY names
    // stream 0, so the client knows nothing was processed).
    origin.idle.enter();
    shard.sessions.set(shard.sessions.get() + 1);
    // One wait for the stop notice across the loop's turns: a new `recv`
    // each turn would register (allocate) a new listener each time.
    let notice = shard.stop_notice();
    let mut stop = std::pin::pin!(notice.recv());
    let mut stopped = false;
    let mut ending = Ending::default();
    let mut evicted = false;
    loop {
        // Lives for one turn of the loop, on the stack: its size is moot.
        #[allow(clippy::large_enum_variant)]
        enum Next {
            Stream(Option<Result<Accepted, h2::Error>>),
            Stop,
            Evicted,
            Tick,
        }
        let next = {
            let wake = wake_at(&origin, times, partial, &ending);
            let stop = std::future::poll_fn(|cx| match stopped {
                true => Poll::Pending,
                false => stop.as_mut().poll(cx).map(drop),
            });
            monoio::select! {
                s = conn.accept() => Next::Stream(s),
                _ = stop => Next::Stop,
                _ = std::future::poll_fn(|cx| origin.idle.poll_over(cx)) => Next::Evicted,
                _ = wake => Next::Tick,
            }
        };
        let now = Instant::now();
        match next {
            Next::Stream(Some(Ok((req, respond)))) => {
                if origin.abusive() {
                    // Closes at once; the loop ends when h2 has sent it.
                    ending.close(&mut conn, &origin, Some(h2::Reason::ENHANCE_YOUR_CALM), now);
                    continue;
                }
                origin.idle.leave();
                origin.streams.set(origin.streams.get() + 1);
                origin.open.set(origin.open.get() + 1);
                // The stream's state (kilobytes: the exchange is inline) is
                // made in place in its own allocation: spawned as it is,
                // it would be built on the stack and copied into the task.
                let slot = Box::new_uninit();
                let work = Box::write(slot, run_stream(origin.clone(), req, respond));
                monoio::spawn(Box::into_pin(work));
            }
            // A connection error: h2 sent GOAWAY with its code.
            Next::Stream(Some(Err(_))) | Next::Stream(None) => break,
            Next::Stop => {
                stopped = true;
                if !origin.closing.get() {
                    ending.close(&mut conn, &origin, None, now);
                }
            }
            Next::Evicted => {
                // Listed only while no stream is open.
                if origin.open.get() == 0 && !origin.closing.get() {
                    evicted = true;
                    ending.close(&mut conn, &origin, Some(h2::Reason::NO_ERROR), now);
                }
            }
            Next::Tick => {
                if ending.tick(&mut conn, &origin, partial, times.keepalive, now) {
                    break;
                }
            }
        }
    }
    shard.sessions.set(shard.sessions.get() - 1);
    evicted
}

/// How the connection is closing.
#[derive(Default)]
struct Ending {
    /// When the first GOAWAY was sent.
    since: Option<Instant>,
    /// When it was told to close now: no more waiting for a PING answer
    /// or for streams.
    abrupt: Option<Instant>,
}

impl Ending {
    /// GOAWAY: graceful (`None`: streams under way finish, h2 closes once
    /// its PING is answered) or at once with `reason`.
    fn close(
        &mut self,
        conn: &mut h2::server::Connection<io::PollIo, Bytes>,
        origin: &Origin,
        reason: Option<h2::Reason>,
        now: Instant,
    ) {
        origin.closing.set(true);
        origin.idle.leave();
        self.since.get_or_insert(now);
        match reason {
            Some(r) => {
                self.abrupt = Some(now);
                conn.abrupt_shutdown(r);
            }
            None => conn.graceful_shutdown(),
        }
    }
}

impl Ending {
    /// The timer's turn: starts or hastens the close that is due. True:
    /// give up on the connection (its last GOAWAY could not be written).
    fn tick(
        &mut self,
        conn: &mut h2::server::Connection<io::PollIo, Bytes>,
        origin: &Origin,
        partial: &Partial,
        keepalive: Duration,
        now: Instant,
    ) -> bool {
        let quiet = origin.open.get() == 0;
        if !quiet {
            origin.quiet_since.set(now);
        }
        if self.abrupt.is_some_and(|a| a + LINGER <= now) {
            return true;
        }
        if self.abrupt.is_some() {
            return false;
        }
        if partial.deadline().is_some_and(|d| d <= now) {
            // A frame or header block started and not finished within
            // client_header_timeout (as nginx).
            self.close(conn, origin, Some(h2::Reason::PROTOCOL_ERROR), now);
        } else if quiet && !origin.closing.get() {
            if origin.quiet_since.get() + keepalive <= now {
                self.close(conn, origin, None, now);
            }
        } else if quiet {
            // Closing, and the streams are done: the client had GRACE to
            // answer the PING; now the final GOAWAY.
            let since = self.since.unwrap_or(now).max(origin.quiet_since.get());
            if since + GRACE <= now {
                self.close(conn, origin, Some(h2::Reason::NO_ERROR), now);
            }
        }
        false
    }
}

/// The connection loop's next wake-up: the keep-alive deadline while no
/// stream is open; while closing, the end of GRACE, or of LINGER for the
/// last GOAWAY's write; and the deadline of a frame the client leaves
/// unfinished.
fn wake_at<'p>(origin: &Origin, times: Times, partial: &'p Partial, ending: &Ending) -> Wake<'p> {
    let quiet = origin.quiet_since.get();
    let (at, partial) = match (ending.since, ending.abrupt) {
        // The stalled frame no longer matters.
        (_, Some(a)) => (a + LINGER, None),
        (Some(c), None) => (c.max(quiet) + GRACE, Some(partial)),
        (None, None) => (quiet + times.keepalive, Some(partial)),
    };
    Wake {
        at,
        partial,
        armed: None,
    }
}

/// The loop's timer: fires at `at`, or earlier at the deadline of a frame
/// the client leaves unfinished while it waits (`Partial::feed` wakes the
/// task when one begins; each poll re-arms for the earlier time).
struct Wake<'p> {
    at: Instant,
    partial: Option<&'p Partial>,
    armed: Option<(Instant, crate::timer::Deadline)>,
}

impl Future for Wake<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let stalled = this.partial.and_then(Partial::deadline);
        let at = stalled.map_or(this.at, |d| d.min(this.at));
        let armed = match &mut this.armed {
            Some((t, d)) if *t == at => d,
            slot => {
                if let Some(p) = this.partial {
                    p.arm(at);
                }
                &mut slot.insert((at, crate::timer::until(at))).1
            }
        };
        Pin::new(armed).poll(cx)
    }
}

/// One stream: its request through `exchange::exchange`, then its end.
async fn run_stream(
    origin: Rc<Origin>,
    req: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let shard = &origin.shard;
    let (parts, body) = req.into_parts();
    let end = body.is_end_stream();
    let mut buf = shard.requests.take();
    buf.clear();
    let framing = head::request(&parts, end, &mut buf);
    let head_only = parts.method == http::Method::HEAD;
    let stream = H2Stream::new(body, framing, respond, head_only);
    let tx = stream.tx();
    let mut c = Client {
        stream: ClientStream::H2(Box::new(stream)),
        peer: origin.peer,
        hop: origin.peer,
        buf,
        hsts: origin.hsts.clone(),
        to_https: origin.to_https,
        sent: 0,
    };
    let timeout = shard.gen().config.limits.client_header_timeout;
    // A stream the client resets stops its work at once (its upstream
    // request included), inside `exchange`, which logs it 499: h2 no longer
    // counts it against the concurrency cap, so running on would let a
    // rapid reset pile up work (CVE-2023-44487).
    {
        // Pinned in place: this task is already on the heap.
        let exchange = std::pin::pin!(exchange::exchange(
            &mut c,
            &origin.listen,
            shard,
            Instant::now() + timeout,
        ));
        // A panic is contained here; the stream is reset by `finish`.
        let _ = CatchUnwind(exchange).await;
    }
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let was_reset = tx.borrow_mut().poll_reset(&mut cx).is_ready();
    if was_reset {
        origin.resets.set(origin.resets.get() + 1);
    }
    if let ClientStream::H2(s) = &mut c.stream {
        s.finish();
        // Boxed, and only made for a stream whose body may still come:
        // only one answered before its body came has to wait.
        if s.body_left() {
            Box::pin(s.drain_body(DRAIN)).await;
        }
    }
    shard.requests.give(std::mem::take(&mut c.buf));
    origin.open.set(origin.open.get() - 1);
    origin.quiet_since.set(Instant::now());
    if origin.open.get() == 0 && !origin.closing.get() {
        origin.idle.enter();
    }
}
