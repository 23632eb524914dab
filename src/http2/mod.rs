//! HTTP/2 to clients: a TLS connection that chose `h2` by ALPN.
//!
//! The `h2` crate runs the protocol (HPACK, streams, flow control, and the
//! limits below); each stream then runs the same request path as HTTP/1.1:
//! its request is written as an HTTP/1.1 head (`head::request`) and handed
//! to `exchange::exchange` with the stream as its byte stream
//! (`stream::H2Stream`), so routing, balancing, the keep-alive pool, cache,
//! gzip, static files, error pages, logs and counters are the very ones
//! HTTP/1.1 requests use. Upstream, every stream is an HTTP/1.1 request
//! over the worker's pool.
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

mod head;
mod io;
mod stream;

use std::{cell::Cell, net::IpAddr, rc::Rc, sync::Arc};

use bytes::Bytes;
use h2::{server::SendResponse, RecvStream};
use monoio::time::Instant;

pub use stream::H2Stream;

use crate::{
    accept::Listen,
    conn::CatchUnwind,
    exchange,
    request::Client,
    tls::{ClientStream, TlsStream},
    worker::Shard,
};

const MAX_STREAMS: u32 = 128;
/// Per-stream receive window: what a client may send of a request body
/// before ringside has handed it on.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// What a client connection brings to each of its streams.
struct Origin {
    peer: IpAddr,
    hsts: Option<Arc<str>>,
    to_https: bool,
    listen: Rc<Listen>,
    shard: Rc<Shard>,
    /// Streams running, and when the last one ended.
    open: Cell<usize>,
    /// Streams accepted, and those the client reset while we worked on them.
    streams: Cell<usize>,
    resets: Cell<usize>,
    quiet_since: Cell<Instant>,
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
/// keepalive_timeout passes, or a graceful stop (GOAWAY) has let its
/// streams finish. `deadline` bounds the connection preface.
pub async fn serve(
    tls: Box<TlsStream>,
    client: (IpAddr, Option<Arc<str>>, bool),
    listen: Rc<Listen>,
    shard: Rc<Shard>,
    deadline: Instant,
) {
    let (max_head, keepalive) = {
        let gen = shard.gen();
        let l = &gen.config.limits;
        (l.max_request_head, l.keepalive_timeout)
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
    let (io, linger) = io::PollIo::new(*tls);
    let handshake = builder.handshake::<_, Bytes>(io);
    let conn = match monoio::time::timeout(left, handshake).await {
        Ok(Ok(c)) => Some(c),
        // No preface in time, or not HTTP/2: h2 sent GOAWAY if it could.
        _ => None,
    };
    if let Some(conn) = conn {
        connection(conn, client, listen, &shard, keepalive).await;
    }
    let rest = linger.borrow_mut().take();
    if let Some(rest) = rest {
        rest.drain(LINGER).await;
    }
}

/// How long a closed connection's late bytes are read and dropped.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

async fn connection(
    mut conn: h2::server::Connection<io::PollIo, Bytes>,
    client: (IpAddr, Option<Arc<str>>, bool),
    listen: Rc<Listen>,
    shard: &Rc<Shard>,
    keepalive: std::time::Duration,
) {
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
    });
    shard.sessions.set(shard.sessions.get() + 1);
    let mut notice = Some(shard.stop_notice());
    let mut closing = false;
    loop {
        // Lives for one turn of the loop, on the stack: its size is moot.
        #[allow(clippy::large_enum_variant)]
        enum Next {
            Stream(Option<Result<Accepted, h2::Error>>),
            Stop,
            Tick,
        }
        let next = {
            let idle_at = origin.quiet_since.get() + keepalive;
            let stop = async {
                match &notice {
                    Some(n) => {
                        let _ = n.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            monoio::select! {
                s = conn.accept() => Next::Stream(s),
                _ = stop => Next::Stop,
                _ = crate::timer::until(idle_at) => Next::Tick,
            }
        };
        match next {
            Next::Stream(Some(Ok((req, respond)))) => {
                if origin.abusive() {
                    // Closes at once; the loop ends when h2 has sent it.
                    conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                    continue;
                }
                origin.streams.set(origin.streams.get() + 1);
                origin.open.set(origin.open.get() + 1);
                monoio::spawn(run_stream(origin.clone(), req, respond));
            }
            // A connection error: h2 sent GOAWAY with its code.
            Next::Stream(Some(Err(_))) | Next::Stream(None) => break,
            Next::Stop => {
                notice = None;
                if !closing {
                    closing = true;
                    conn.graceful_shutdown();
                }
            }
            Next::Tick => {
                let quiet = origin.open.get() == 0;
                if quiet && !closing && origin.quiet_since.get() + keepalive <= Instant::now() {
                    closing = true;
                    conn.graceful_shutdown();
                } else if !quiet {
                    origin.quiet_since.set(Instant::now());
                }
            }
        }
    }
    shard.sessions.set(shard.sessions.get() - 1);
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
    let mut buf = shard.heads.take();
    buf.clear();
    let framing = head::request(&parts, end, &mut buf);
    let head_only = parts.method == http::Method::HEAD;
    let stream = H2Stream::new(body, framing, respond, head_only);
    let tx = stream.tx();
    let mut c = Client {
        stream: ClientStream::H2(Box::new(stream)),
        peer: origin.peer,
        buf,
        hsts: origin.hsts.clone(),
        to_https: origin.to_https,
    };
    let timeout = shard.gen().config.limits.client_header_timeout;
    // A stream the client resets stops its work at once (its upstream
    // request included): h2 no longer counts it against the concurrency
    // cap, so running on would let a rapid reset pile up work
    // (CVE-2023-44487).
    let was_reset = {
        // Pinned in place: this task is already on the heap.
        let exchange = std::pin::pin!(exchange::exchange(
            &mut c,
            &origin.listen,
            shard,
            Instant::now() + timeout,
        ));
        let reset = std::future::poll_fn(|cx| tx.borrow_mut().poll_reset(cx));
        monoio::select! {
            _ = CatchUnwind(exchange) => false,
            _ = reset => true,
        }
    };
    if was_reset {
        origin.resets.set(origin.resets.get() + 1);
    }
    if let ClientStream::H2(s) = &mut c.stream {
        s.finish();
    }
    shard.heads.give(std::mem::take(&mut c.buf));
    origin.open.set(origin.open.get() - 1);
    origin.quiet_since.set(Instant::now());
}
