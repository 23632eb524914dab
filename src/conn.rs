//! Stages 1-7 for one client connection.
//!
//! `serve` is the connection's long-lived task: it waits for readability
//! holding no buffer (an idle keep-alive connection costs a few hundred
//! bytes), then runs `exchange` — boxed, so the idle task stays small — for
//! each request. `exchange` is the whole request path in order:
//!
//! ```text
//! read_head → plan (parse, route) → proxy::forward (balance, connect, send,
//! response head, relay) or an answer of our own → access log
//! ```

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    ops::Range,
    panic::AssertUnwindSafe,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll},
};

use httparse::EMPTY_HEADER;
use monoio::{io::AsyncWriteRent, net::TcpStream, time::Instant};

use crate::{
    accept::Listen,
    config::{Action, Config, Level},
    error::{Error, Fault},
    http::{
        headers::{upstream_request, Forwarding},
        parse::{self, Framing, Scan, MAX_HEADERS},
        respond,
    },
    log::Record,
    proxy, relay, route, serve,
    tls::ClientStream,
    worker::{Buffers, Generation, Shard},
};

/// The client side of a connection.
pub struct Client {
    pub stream: ClientStream,
    pub peer: IpAddr,
    /// The read buffer: empty, without capacity, while the connection idles.
    /// During an exchange it starts with the request head, which stays in
    /// place until the request is logged.
    pub buf: Vec<u8>,
    /// The listener's `Strict-Transport-Security` value, put on every
    /// response head (`stamp`). Taken at the accept, like the TLS config.
    pub hsts: Option<Arc<str>>,
    /// A `redirect_https` listener: every request gets a 301 to https.
    pub to_https: bool,
}

impl Client {
    /// Adds the connection's per-listener fields (HSTS) to the response
    /// head at the start of `out`, right after its status line, so it works
    /// whatever follows the head in the buffer. Nothing to do on most
    /// listeners.
    pub fn stamp(&self, out: &mut Vec<u8>) {
        let Some(v) = &self.hsts else { return };
        let Some(eol) = out.windows(2).position(|w| w == b"\r\n") else {
            return;
        };
        let mut f = Vec::with_capacity(v.len() + 31);
        crate::http::headers::field(&mut f, b"Strict-Transport-Security", v.as_bytes());
        out.splice(eol + 2..eol + 2, f);
    }
}

/// The connection's task. What can be known before it starts is settled
/// here, and the task is an `async move` block that uses what it captured
/// in place: an `async fn` keeps its arguments beside the locals its body
/// moves them into, and every idle connection paid for both (the task's
/// future went from 648 to 392 B, rustc -Zprint-type-sizes and
/// size_of_val).
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listen: Rc<Listen>,
    shard: Rc<Shard>,
) -> impl Future<Output = ()> {
    shard.connections.set(shard.connections.get() + 1);
    // The handshake and the first head must both be done within
    // client_header_timeout of the accept.
    let (acceptor, hsts, to_https, header_timeout) = {
        let gen = shard.gen();
        let timeout = gen.config.limits.client_header_timeout;
        match gen
            .config
            .listeners
            .iter()
            .find(|l| l.address == listen.configured)
        {
            Some(l) => (
                l.acceptor.clone(),
                l.hsts.as_deref().map(Arc::from),
                l.redirect_https,
                timeout,
            ),
            None => (None, None, false, timeout),
        }
    };
    let deadline = Instant::now() + header_timeout;
    let client = Client {
        stream: ClientStream::Plain(stream),
        peer: peer.ip().to_canonical(),
        buf: Vec::new(),
        hsts,
        to_https,
    };
    run(client, acceptor, listen, shard, deadline)
}

/// The connection's life: the TLS handshake if its listener has one, then
/// requests until it closes or idles out. Not an `async fn`, on purpose:
/// see `serve`.
#[allow(clippy::manual_async_fn)]
fn run(
    mut c: Client,
    acceptor: Option<Arc<rustls::ServerConfig>>,
    mut listen: Rc<Listen>,
    shard: Rc<Shard>,
    mut deadline: Instant,
) -> impl Future<Output = ()> {
    async move {
        // Until its first request is answered, a connection counts as
        // fresh: a graceful stop gives it a moment to send that request.
        let mut fresh = Some(shard.fresh());
        if let Some(config) = acceptor {
            let ClientStream::Plain(stream) =
                std::mem::replace(&mut c.stream, ClientStream::Closed)
            else {
                unreachable!("a connection starts as plain TCP");
            };
            // Boxed: the handshake's state (a timer and rustls' accept)
            // would otherwise sit inline in every connection's task, TLS or
            // not, for its whole life (4,216 B per idle plain connection
            // instead of ~900, perf/run.sh --workloads idle10k).
            let handshake = Box::pin(handshake(config, stream, deadline));
            let Some(tls) = handshake.await else {
                // A stalled, truncated or refused handshake: close, as
                // nginx does (rustls already sent the alert it owed).
                shard.connections.set(shard.connections.get() - 1);
                return;
            };
            listen = Rc::new(Listen {
                proto: "https",
                ..*listen
            });
            // The client chose HTTP/2 by ALPN: http2/ serves the connection.
            if tls.alpn_protocol() == Some(b"h2") {
                drop(fresh.take());
                let client = (c.peer, c.hsts.take(), c.to_https);
                let h2 = Box::pin(crate::http2::serve(
                    tls,
                    client,
                    listen,
                    shard.clone(),
                    deadline,
                ));
                h2.await;
                shard.connections.set(shard.connections.get() - 1);
                return;
            }
            c.stream = ClientStream::Tls(tls);
        }
        let mut first = true;
        loop {
            if c.buf.is_empty() {
                shard.heads.give(std::mem::take(&mut c.buf));
                // Each wait uses the config current when it starts (reload).
                let until = if first {
                    deadline
                } else {
                    crate::timer::later(shard.gen().config.limits.keepalive_timeout)
                };
                if !idle(&mut c.stream, until).await {
                    // Idle too long, or the socket failed: close without a word.
                    break;
                }
            }
            if !first {
                deadline = crate::timer::later(shard.gen().config.limits.client_header_timeout);
            }
            first = false;
            let exchange = Box::pin(exchange(&mut c, &listen, &shard, deadline));
            let outcome = CatchUnwind(exchange).await;
            drop(fresh.take());
            match outcome {
                Ok(true) if !shard.draining.get() => {}
                Ok(_) => break,
                Err(()) => {
                    crate::error!(
                        "worker {}: request from {} panicked; connection closed",
                        shard.id,
                        c.peer
                    );
                    break;
                }
            }
        }
        shard.heads.give(std::mem::take(&mut c.buf));
        if c.stream.is_tls() {
            // close_notify, so a client can tell a close-delimited body
            // from a truncated one; bounded, as the peer may have stopped
            // reading. A peer already gone is fine: the socket closes next
            // either way. After a cancelled read or write the stream
            // refuses (tls/stream.rs) and nothing is sent; guarded like
            // every exchange all the same.
            let limit = shard.gen().config.limits.client_send_timeout;
            let close = Box::pin(monoio::time::timeout(limit, c.stream.shutdown()));
            let _ = CatchUnwind(close).await;
        }
        shard.connections.set(shard.connections.get() - 1);
    }
}

/// Waits, holding no buffer, until the client sends something (true) or
/// `until` passes or the socket fails (false).
async fn idle(stream: &mut ClientStream, until: Instant) -> bool {
    match stream {
        ClientStream::Plain(s) => monoio::select! {
            r = s.readable(false) => r.is_ok(),
            _ = crate::timer::until(until) => false,
        },
        // Plaintext rustls already holds counts as ready too; no buffer is
        // held while waiting (tls/stream.rs). Boxed, as the handshake is:
        // inline, this wait's state made every idle connection's task
        // larger, plain ones included (1,207 → 1,078 B per idle plain
        // connection, 10,000 held, perf/run.sh --quick --workloads idle10k).
        ClientStream::Tls(s) => {
            let wait = Box::pin(async {
                monoio::select! {
                    r = s.readable() => r.is_ok(),
                    _ = crate::timer::until(until) => false,
                }
            });
            wait.await
        }
        // An HTTP/2 stream runs one exchange and never waits here; a stream
        // a tunnel took apart is over.
        ClientStream::H2(_) | ClientStream::Closed => false,
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

/// One request and its response. Returns whether the connection stays open.
pub async fn exchange(c: &mut Client, listen: &Listen, shard: &Shard, deadline: Instant) -> bool {
    let start = Instant::now();
    // From the first byte on, a graceful stop waits for this request.
    let _busy = shard.busy();
    let gen = shard.gen();
    let config: &Config = &gen.config;

    // 1. The head, within client_header_timeout.
    let len = match read_head(c, shard, config, deadline).await {
        Ok(Some(len)) => len,
        Ok(None) => return false,
        Err(e) => {
            Box::pin(answer_error(c, shard, config, e, false)).await;
            if e.status != 0 {
                shard
                    .stats
                    .request(gen.ids.no_route, e.status, start.elapsed());
            }
            return false;
        }
    };

    // 2-3. Parse and route. Everything later stages need is copied out of
    // the borrowed head here, so no borrow lives across an await.
    let plan = match plan(&c.buf, len, &gen, c.peer, listen, c.to_https, &shard.small) {
        Ok(p) => p,
        Err(e) => {
            Box::pin(answer_error(c, shard, config, e, false)).await;
            shard
                .stats
                .request(gen.ids.no_route, e.status, start.elapsed());
            return false;
        }
    };

    // 4-6. Answer. Only the plain proxied request runs inline: the other
    // answers are boxed, so their state does not make every request's
    // future larger (it is boxed and moved once per request: 17,024 B
    // before, measured with size_of_val).
    let done = match plan.act {
        Act::Proxy {
            upstream,
            ref head,
            upgrade,
        } if plan.cache.is_some() => {
            let cached = serve::cached::serve(c, shard, &gen, &plan, upstream, head, upgrade);
            Box::pin(cached).await
        }
        Act::Proxy {
            upstream,
            ref head,
            upgrade,
        } => proxy::forward(c, shard, &gen, &plan, upstream, head, upgrade).await,
        Act::Static { route } => {
            Box::pin(serve::static_files::serve(c, shard, &gen, &plan, route)).await
        }
        Act::Redirect { route } => {
            Box::pin(serve::redirect::answer(c, shard, &gen, &plan, route)).await
        }
        Act::ToHttps => Box::pin(serve::redirect::to_https(c, shard, &plan)).await,
        Act::Respond { route } => Box::pin(answer_own(c, shard, config, &plan, Some(route))).await,
        Act::NotFound => Box::pin(answer_own(c, shard, config, &plan, None)).await,
    };

    // 7. Count and log, then drop the head (and the body bytes read with it).
    let took = start.elapsed();
    let route_id = plan.route.map_or(gen.ids.no_route, |r| gen.ids.routes[r]);
    shard.stats.request(route_id, done.status, took);
    if let Some(cache) = &plan.cache {
        shard.stats.cache(cache.status.get().index());
    }
    if let Some((u, s)) = done.server {
        let (name, servers) = &gen.ids.upstreams[u];
        shard.stats.upstream(*name, servers[s], done.status);
    }
    let seconds = took.as_secs_f64();
    log_access(c, shard, config, &plan, &done, seconds);
    if let Some(e) = done.error {
        log_error(shard, config, c.peer, &plan, &e, &done);
    }
    let consumed = done.consumed.min(c.buf.len());
    c.buf.drain(..consumed);
    if let Act::Proxy { head, .. } = plan.act {
        shard.small.give(head);
    }
    done.keep
}

/// What `exchange` learned from the head.
pub struct Plan {
    pub len: usize,
    pub minor: u8,
    pub keep_alive: bool,
    pub head_only: bool,
    pub idempotent: bool,
    pub framing: Framing,
    pub expect_continue: bool,
    pub route: Option<usize>,
    /// What the balancer hashes and the sticky cookie (proxied requests only).
    pub key: crate::balance::Key,
    spans: Spans,
    /// Where the Host value sits in the client buffer.
    host: Option<Range<usize>>,
    /// "http" or "https", as the client connected.
    pub scheme: &'static str,
    /// The client's Accept-Encoding allows gzip (only looked at on routes
    /// with `gzip`).
    pub accepts_gzip: bool,
    /// A GET or HEAD on a cached route.
    pub cache: Option<crate::cache::CacheReq>,
    pub act: Act,
}

impl Plan {
    /// The method in the client buffer.
    pub fn method_span(&self) -> Range<usize> {
        self.spans.method.clone()
    }

    /// The target (path and query, as sent) in the client buffer.
    pub fn target_span(&self) -> Range<usize> {
        self.spans.target.clone()
    }

    /// The Host value in the client buffer.
    pub fn host_span(&self) -> Option<Range<usize>> {
        self.host.clone()
    }
}

pub enum Act {
    /// Proxy to this upstream; `head` is the request head to send.
    Proxy {
        upstream: usize,
        head: Vec<u8>,
        upgrade: bool,
    },
    /// A `static` route.
    Static {
        route: usize,
    },
    /// A `redirect` route.
    Redirect {
        route: usize,
    },
    /// A `respond` route.
    Respond {
        route: usize,
    },
    /// A `redirect_https` listener: 301 to the same target over https.
    ToHttps,
    NotFound,
}

/// Where the access log's fields sit in the client buffer.
struct Spans {
    method: Range<usize>,
    target: Range<usize>,
    referer: Option<Range<usize>>,
    user_agent: Option<Range<usize>>,
}

/// How an exchange ended.
pub struct Done {
    /// Status sent to the client (499: the client went away first).
    pub status: u16,
    pub body_bytes: u64,
    /// (upstream, server) that answered or was tried last.
    pub server: Option<(usize, usize)>,
    pub keep: bool,
    /// Bytes at the start of the client buffer that belonged to this request.
    pub consumed: usize,
    pub error: Option<Error>,
}

/// Reads until the buffer holds a complete head. `Ok(None)`: the client
/// closed before sending anything.
async fn read_head(
    c: &mut Client,
    shard: &Shard,
    config: &Config,
    deadline: Instant,
) -> Result<Option<usize>, Error> {
    let max = config.limits.max_request_head;
    let mut scan = Scan::default();
    if c.buf.capacity() == 0 {
        c.buf = shard.heads.take();
    }
    if let (true, ClientStream::Plain(s)) = (c.buf.is_empty(), &c.stream) {
        // Readiness was just reported: take the bytes without a ring op.
        match relay::recv_now(s, &mut c.buf) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            // A spurious wakeup: the ring read below waits for the bytes.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Ok(None),
        }
    }
    loop {
        if !c.buf.is_empty() {
            let mut headers = [EMPTY_HEADER; MAX_HEADERS];
            if let Some(head) = parse::request(&c.buf, &mut headers, &mut scan, max)? {
                return Ok(Some(head.len));
            }
            if c.buf.len() >= max {
                return Err(parse::too_large(&c.buf[..max]));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let (r, buf) = relay::read_more(&mut c.stream, std::mem::take(&mut c.buf), left).await;
        c.buf = buf;
        match r {
            Ok(0) if c.buf.is_empty() => return Ok(None),
            Ok(0) => return Err(Error::bad_request("connection closed inside the head")),
            Ok(_) => {}
            Err(relay::Fail::Timeout) => return Err(Error::head_timeout()),
            Err(_) if c.buf.is_empty() => return Ok(None),
            Err(_) => return Err(Error::bad_request("connection failed inside the head")),
        }
    }
}

pub(crate) fn plan(
    buf: &[u8],
    len: usize,
    gen: &Generation,
    peer: IpAddr,
    listen: &Listen,
    to_https: bool,
    small: &Buffers,
) -> Result<Plan, Error> {
    let config = &*gen.config;
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut scan = Scan::default();
    let max = config.limits.max_request_head;
    let Some(req) = parse::request(&buf[..len], &mut headers, &mut scan, max)? else {
        return Err(Error::bad_request("incomplete head"));
    };
    let limit = config.limits.max_request_body;
    if let Framing::Length(n) = req.framing {
        if limit > 0 && n > limit {
            return Err(Error::body_too_large());
        }
    }
    let at = |s: &[u8]| {
        let from = s.as_ptr() as usize - buf.as_ptr() as usize;
        from..from + s.len()
    };
    let spans = Spans {
        method: at(req.method.as_bytes()),
        target: at(req.target.as_bytes()),
        referer: req.header("referer").map(at),
        user_agent: req.header("user-agent").map(at),
    };
    // A redirect_https listener routes nothing: every request is sent on.
    let route = if to_https {
        None
    } else {
        route::select(&config.routes, &req)
    };
    let mut key = crate::balance::Key::default();
    let act = match route.map(|i| (i, &config.routes[i])) {
        None if to_https => Act::ToHttps,
        None => Act::NotFound,
        Some((i, r)) => match (&r.action, gen.upstream_for(i)) {
            // A split route picks its upstream here, once per request.
            (Action::Upstream(_) | Action::Split(_), Some(u)) => {
                let up = &config.upstreams[u];
                key = crate::balance::Key::new(up, peer, req.target.as_bytes(), |name| {
                    route::cookie(&req, name)
                });
                let upgrade = req.upgrade.filter(|_| r.websocket);
                let fwd = Forwarding {
                    client_ip: peer,
                    proto: listen.proto,
                    port: listen.port,
                    fallback_host: &up.name,
                    set: &r.set_request_headers,
                    upgrade,
                };
                let target = upstream_target(req.target, r);
                // A pooled buffer (given back at the end of `exchange`): no
                // allocation per request.
                let mut head = small.take();
                upstream_request(&mut head, &req, &target, &fwd, req.framing);
                Act::Proxy {
                    upstream: u,
                    head,
                    upgrade: upgrade.is_some(),
                }
            }
            (Action::Respond { .. }, _) => Act::Respond { route: i },
            (Action::Static(_), _) => Act::Static { route: i },
            (Action::Redirect { .. }, _) => Act::Redirect { route: i },
            // The other actions arrive with their own issues; --check
            // refuses them until then, so this is not reached.
            _ => return Err(Error::not_implemented("route action not available")),
        },
    };
    Ok(Plan {
        len,
        minor: req.minor,
        keep_alive: req.keep_alive,
        head_only: req.method == "HEAD",
        idempotent: req.idempotent(),
        framing: req.framing,
        expect_continue: req.expect_continue,
        route,
        key,
        spans,
        host: req.host.map(at),
        scheme: listen.proto,
        accepts_gzip: route.is_some_and(|i| config.routes[i].gzip.is_some())
            && crate::serve::gzip::accepts(
                req.headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("accept-encoding"))
                    .map(|h| h.value),
            ),
        cache: match &act {
            Act::Proxy { .. } => route.and_then(|i| crate::cache::request(&config.routes[i], &req)),
            _ => None,
        },
        act,
    })
}

/// The target sent upstream: with `strip_prefix`, the route's path (less a
/// trailing slash) is cut off, so `/api/users` on route `/api/` becomes
/// `/users` (nginx `proxy_pass http://app/;`).
fn upstream_target<'t>(target: &'t str, r: &crate::config::Route) -> std::borrow::Cow<'t, [u8]> {
    if !r.strip_prefix {
        return target.as_bytes().into();
    }
    let prefix = r.path.trim_end_matches('/');
    let rest = target.get(prefix.len()..).unwrap_or("");
    if rest.starts_with('/') {
        rest.as_bytes().into()
    } else {
        let mut t = Vec::with_capacity(rest.len() + 1);
        t.push(b'/');
        t.extend_from_slice(rest.as_bytes());
        t.into()
    }
}

/// A `respond` route (Some) or 404 (None). The connection stays open when
/// the request's body, if any, was already read with the head.
async fn answer_own(
    c: &mut Client,
    shard: &Shard,
    config: &Config,
    plan: &Plan,
    route: Option<usize>,
) -> Done {
    let in_buf = (c.buf.len() - plan.len) as u64;
    let body = match plan.framing {
        Framing::Empty => Some(0),
        Framing::Length(n) if n <= in_buf => Some(n as usize),
        _ => None,
    };
    let keep = plan.keep_alive && body.is_some() && !shard.draining.get();
    let mut out = shard.heads.take();
    let before = out.len();
    let (status, body_bytes) = match route.map(|i| &config.routes[i].action) {
        Some(Action::Respond { status, body }) => {
            // With the route's add_response_headers, like every answer it makes.
            let r = route.map(|i| &config.routes[i]);
            serve::start_head(&mut out, *status);
            let ct = respond::content_type_of(body);
            crate::http::headers::field(&mut out, b"Content-Type", ct);
            serve::content_length(&mut out, body.len() as u64);
            let framing = crate::http::headers::OutFraming::AsIs;
            serve::end_own_head(&mut out, r, framing, keep, plan.minor);
            if !plan.head_only {
                out.extend_from_slice(body.as_bytes());
            }
            (*status, body.len())
        }
        _ => {
            respond::error(&mut out, 404, !keep, plan.head_only);
            (404, out.len() - before)
        }
    };
    let consumed = plan.len + body.unwrap_or(0);
    crate::serve::send_own(c, shard, plan, out, status, body_bytes, (keep, consumed)).await
}

/// Answers an error before any response head went out, then the caller closes.
pub async fn answer_error(
    c: &mut Client,
    shard: &Shard,
    config: &Config,
    e: Error,
    head_only: bool,
) {
    log_error_plain(shard, c.peer, &e);
    if e.status == 0 {
        return;
    }
    let mut out = shard.heads.take();
    respond::error(&mut out, e.status, true, head_only);
    c.stamp(&mut out);
    let limit = config.limits.client_send_timeout;
    // The connection closes next whatever happens to this write.
    let (_, out) = relay::write_all(&mut c.stream, out, limit).await;
    shard.heads.give(out);
}

fn log_access(c: &Client, shard: &Shard, config: &Config, plan: &Plan, done: &Done, seconds: f64) {
    if !shard.access.is_on() {
        return;
    }
    let b = &c.buf;
    let span = |r: &Option<Range<usize>>| r.as_ref().and_then(|r| b.get(r.clone()));
    let server = done
        .server
        .map(|(u, s)| config.upstreams[u].servers[s].label.as_str());
    shard.access.write(&Record {
        remote: c.peer,
        method: b.get(plan.spans.method.clone()).unwrap_or(b"-"),
        target: b.get(plan.spans.target.clone()).unwrap_or(b"-"),
        protocol: match (&c.stream, plan.minor) {
            (ClientStream::H2(_), _) => "HTTP/2.0",
            (_, 0) => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        status: done.status,
        body_bytes: done.body_bytes,
        referer: span(&plan.spans.referer),
        user_agent: span(&plan.spans.user_agent),
        upstream: server,
        seconds,
    });
}

fn level_of(e: &Error) -> Level {
    match e.fault {
        Fault::Client => Level::Info,
        Fault::Upstream | Fault::Internal => Level::Error,
    }
}

fn log_error(shard: &Shard, config: &Config, peer: IpAddr, plan: &Plan, e: &Error, done: &Done) {
    let level = level_of(e);
    if !crate::log::enabled(level) {
        return;
    }
    let server = done
        .server
        .map(|(u, s)| config.upstreams[u].servers[s].label.as_str())
        .unwrap_or("-");
    crate::log::error_line(
        level,
        format_args!(
            "worker {}: {e}, client {peer}, route {}, upstream {server}, status {}",
            shard.id,
            plan.route
                .map(|r| config.routes[r].label.as_str())
                .unwrap_or("-"),
            done.status
        ),
    );
}

fn log_error_plain(shard: &Shard, peer: IpAddr, e: &Error) {
    let level = level_of(e);
    if crate::log::enabled(level) {
        crate::log::error_line(
            level,
            format_args!(
                "worker {}: {e}, client {peer}, status {}",
                shard.id, e.status
            ),
        );
    }
}

/// Runs a future, turning a panic inside it into `Err(())` so one bad
/// request cannot take the worker down.
pub struct CatchUnwind<F>(pub F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}
