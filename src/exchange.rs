//! Stages 2-6 for one request: the whole request path in one function.
//!
//! ```text
//! read_request (head, parsed once → plan: normalised path, route, upstream
//! head) → proxy::forward (balance, connect, send, response head, relay) or
//! an answer of ringside's own (serve/) → count and log
//! ```
//!
//! Every error before a response went out is answered in one place,
//! `serve::pages::fail`.

use std::{net::IpAddr, time::Duration};

use monoio::time::Instant;

use crate::{
    buffers::Buffers,
    config::{Action, Config, Level, Route, Upstream},
    error::{Error, Fault},
    http::{
        headers::{upstream_request, Forwarding, HeadOut},
        parse::{self, Framing, RequestHead, Scan, MAX_HEADERS},
        path, respond,
    },
    log::Record,
    proxy, relay,
    request::{Act, After, Client, Done, Plan},
    route, serve,
    shard::Listen,
    shard::{Generation, Shard},
    stream::ClientStream,
};

/// One request and its response. Returns what the connection does next.
pub async fn exchange(c: &mut Client, listen: &Listen, shard: &Shard, deadline: Instant) -> After {
    let start = Instant::now();
    // From the first byte on, a graceful stop waits for this request.
    let _busy = shard.busy();
    let gen = shard.gen();
    let config: &Config = &gen.config;

    // 2-3. The head within client_header_timeout, parsed once, routed.
    let plan = match read_request(c, shard, &gen, listen, deadline).await {
        Ok(Some(plan)) => plan,
        Ok(None) => return After::Close,
        Err(e) => {
            let done = Box::pin(serve::pages::fail(c, shard, None, e, None)).await;
            finish_refused(c, shard, &gen, &done, start.elapsed());
            return After::Linger;
        }
    };

    // 4-6. Answer; an HTTP/2 stream the client resets ends it at once
    // (its upstream request cancelled) and is logged 499.
    let reset = c.stream.reset_signal();
    c.sent = 0;
    let mut done = monoio::select! {
        done = answer(c, shard, &gen, &plan) => done,
        () = async {
            match reset {
                Some(r) => r.await,
                None => std::future::pending().await,
            }
        } => Done {
            status: 499,
            body_bytes: 0,
            server: None,
            keep: false,
            consumed: 0,
            error: Some(Error::client_left()),
        },
    };

    // 7. Count and log, then drop the head (and the body bytes read with it).
    // An answer cut short counts the body bytes that went out.
    if done.error.is_some() {
        done.body_bytes = done.body_bytes.max(c.sent);
    }
    if done.error.as_ref().is_some_and(Error::client_left_early) {
        done.status = 499;
    }
    let took = start.elapsed();
    let route_id = plan.route.map_or(gen.ids.no_route, |r| gen.ids.routes[r]);
    shard
        .stats
        .request(route_id, done.status, took, done.body_bytes);
    if let Some(cache) = &plan.cache {
        shard.stats.cache(cache.status.get().index());
    }
    if let Some((u, s)) = done.server {
        let (name, servers) = &gen.ids.upstreams[u];
        shard.stats.upstream(*name, servers[s], done.status);
    }
    log_access(c, shard, config, &plan, &done, took.as_secs_f64());
    let after = match (done.keep, &done.error) {
        (true, _) => After::Next,
        (false, Some(_)) => After::Linger,
        (false, None) => After::Close,
    };
    if let Some(e) = done.error {
        log_error(shard, config, (c.peer, &c.buf), Some(&plan), &e, &done);
    }
    let consumed = done.consumed.min(c.buf.len());
    c.buf.drain(..consumed);
    if let Act::Proxy { head, .. } = plan.act {
        shard.small.give(head);
    }
    after
}

/// The answer the plan calls for. Only the plain proxied request runs
/// inline: the other answers are boxed, so their state does not make every
/// request's future larger (it is boxed and moved once per request).
async fn answer(c: &mut Client, shard: &Shard, gen: &Generation, plan: &Plan) -> Done {
    let config = &*gen.config;
    // An ACME http-01 challenge on a plain listener, before any route.
    if let Some(done) = crate::acme::http01(c, shard, plan).await {
        return done;
    }
    match plan.act {
        Act::Proxy {
            upstream,
            ref head,
            upgrade,
        } if plan.cache.is_some() => {
            let cached = serve::cached::serve(c, shard, gen, plan, upstream, head, upgrade);
            Box::pin(cached).await
        }
        Act::Proxy {
            upstream,
            ref head,
            upgrade,
        } => proxy::forward(c, shard, gen, plan, upstream, head, upgrade).await,
        Act::Static { route } => {
            Box::pin(serve::static_files::serve(c, shard, gen, plan, route)).await
        }
        Act::Redirect { route } => {
            Box::pin(serve::redirect::answer(c, shard, gen, plan, route)).await
        }
        Act::ToHttps { port } => Box::pin(serve::redirect::to_https(c, shard, plan, port)).await,
        Act::Respond { route } => Box::pin(respond_route(c, shard, config, plan, route)).await,
        Act::Refuse(e) => {
            let whole = plan.whole_in(c.buf.len());
            Box::pin(serve::pages::fail(c, shard, Some(plan), e, whole)).await
        }
    }
}

/// Counts and logs a request refused before it had a plan (a head that is
/// not HTTP, too large or too slow): its access-log line shows the request
/// line as far as it came.
fn finish_refused(c: &Client, shard: &Shard, gen: &Generation, done: &Done, took: Duration) {
    if done.status != 499 {
        shard
            .stats
            .request(gen.ids.no_route, done.status, took, done.body_bytes);
    }
    if let Some(e) = done.error {
        log_error(shard, &gen.config, (c.peer, &c.buf), None, &e, done);
    }
    // A timed-out read takes the buffer with it: the line then has no
    // request line ("-").
    if !shard.access.is_on() || done.status == 499 {
        return;
    }
    let line = c.buf.split(|&b| b == b'\r' || b == b'\n').next();
    let line = line.filter(|l| !l.is_empty()).unwrap_or(b"-");
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().filter(|m| !m.is_empty()).unwrap_or(b"-");
    let target = parts.next().unwrap_or(b"-");
    shard.access.write(&Record {
        remote: c.peer,
        method,
        target,
        protocol: if parts.next() == Some(b"HTTP/1.0") {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        },
        line: Some(line),
        status: done.status,
        body_bytes: done.body_bytes,
        referer: None,
        user_agent: None,
        upstream: None,
        seconds: took.as_secs_f64(),
    });
}

/// Reads until the buffer holds a complete head, then parses it once and
/// plans the answer. `Ok(None)`: the client closed before sending anything.
async fn read_request(
    c: &mut Client,
    shard: &Shard,
    gen: &Generation,
    listen: &Listen,
    deadline: Instant,
) -> Result<Option<Plan>, Error> {
    let max = gen.config.limits.max_request_head;
    let mut scan = Scan::default();
    if c.buf.capacity() == 0 {
        c.buf = shard.requests.take();
    }
    if let (true, ClientStream::Plain(s)) = (c.buf.is_empty(), &c.stream) {
        // Readiness was just reported (the wait falls back to it when no
        // provided buffer was free, `conn::idle`): take the bytes without
        // a ring op.
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
            let mut headers = [parse::NO_FIELD; MAX_HEADERS];
            let failed = match parse::request(&c.buf, &mut headers, &mut scan, max) {
                Ok(Some(req)) => {
                    let trusted = &gen.config.limits.real_ip_from;
                    c.peer = crate::shield::real_ip::client(c.hop, req.headers, trusted);
                    return plan(&req, c, gen, listen, &shard.small).map(Some);
                }
                Ok(None) => None,
                Err(e) => Some(e),
            };
            if let Some(e) = failed {
                // An HTTP/1.2 request line is parsed again as HTTP/1.1.
                if parse::as_http11(&mut c.buf) {
                    continue;
                }
                return Err(e);
            }
            if c.buf.len() >= max {
                return Err(parse::too_large(&c.buf[..max]));
            }
        }
        // A full buffer grows (it then leaves the pool), up to `max`: a
        // read into no room would look like the client closing.
        if c.buf.len() == c.buf.capacity() {
            c.buf.reserve(c.buf.capacity().clamp(1, max - c.buf.len()));
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

/// What to do with a parsed head: the route (chosen by the normalised
/// path), and for a proxied request the balancer key and the head to send.
pub(crate) fn plan(
    req: &RequestHead<'_, '_>,
    c: &Client,
    gen: &Generation,
    listen: &Listen,
    small: &Buffers,
) -> Result<Plan, Error> {
    let config = &*gen.config;
    body_within(req.framing, config.limits.max_request_body)?;
    let normal = match path::normalize(req.path()) {
        std::borrow::Cow::Owned(p) => Some(p),
        std::borrow::Cow::Borrowed(_) => None,
    };
    let path = normal.as_deref().unwrap_or(req.path());
    // The listener in this config snapshot (found by address, which a
    // reload keeps): it restricts routes and names the https port.
    let listener = config
        .listeners
        .iter()
        .position(|l| l.address == listen.configured);
    // A redirect_https listener routes nothing: every request is sent on.
    let route = if c.to_https {
        None
    } else {
        route::select(&config.routes, req, path, listener)
    };
    let mut key = crate::balance::Key::default();
    let access = route.map(|i| &config.routes[i].access);
    let shield = crate::shield::check(&gen.rules, &config.rate_limits, access, req, path, c.peer);
    let act = match route.map(|i| (i, &config.routes[i])) {
        _ if shield.is_some() => Act::Refuse(shield.expect("checked by the guard")),
        // TRACE is answered 405, as nginx: it would echo the head (cookies
        // included) back from the upstream.
        _ if req.method == "TRACE" => {
            Act::Refuse(Error::method_not_allowed("TRACE is not forwarded"))
        }
        None if c.to_https => Act::ToHttps {
            port: listener.map_or(443, |l| config.listeners[l].https_port),
        },
        None => Act::Refuse(Error::not_found()),
        Some((i, r)) => match (&r.action, gen.upstream_for(i)) {
            // A split route picks its upstream here, once per request.
            (Action::Upstream(_) | Action::Split(_), Some(u)) => {
                let up = &config.upstreams[u];
                let origin = req.spans.origin(&c.buf);
                key =
                    crate::balance::Key::new(up, c.peer, &origin, |name| route::cookie(req, name));
                let upgrade = req.upgrade.filter(|u| r.websocket && parse::tunnels(u));
                let fwd = forwarding(c, listen, up, r, upgrade);
                let target = upstream_target(&origin, path, r);
                // A pooled buffer (given back at the end of `exchange`): no
                // allocation per request.
                let mut head = small.take();
                upstream_request(&mut head, req, &target, &fwd, req.framing);
                Act::Proxy {
                    upstream: u,
                    head,
                    upgrade: upgrade.is_some(),
                }
            }
            (Action::Respond { .. }, _) => Act::Respond { route: i },
            (Action::Static(_), _) => Act::Static { route: i },
            (Action::Redirect { .. }, _) => Act::Redirect { route: i },
            // A route without an upstream cannot pass --check.
            _ => return Err(Error::not_implemented("route action not available")),
        },
    };
    Ok(Plan {
        len: req.len,
        minor: req.minor,
        keep_alive: req.keep_alive,
        head_only: req.method == "HEAD",
        idempotent: req.idempotent(),
        framing: req.framing,
        expect_continue: req.expect_continue,
        route,
        key,
        spans: req.spans,
        normal,
        scheme: listen.proto,
        accepts_gzip: accepts_gzip(req, route.map(|i| &config.routes[i])),
        cache: match &act {
            Act::Proxy { .. } => route.and_then(|i| crate::cache::request(&config.routes[i], req)),
            _ => None,
        },
        act,
    })
}

/// A declared body over `max_request_body` (0: no limit) is refused before
/// any of it is read; a chunked one is counted as it is relayed (`relay.rs`).
fn body_within(framing: Framing, limit: u64) -> Result<(), Error> {
    match framing {
        Framing::Length(n) if limit > 0 && n > limit => Err(Error::body_too_large()),
        _ => Ok(()),
    }
}

/// What the head sent upstream says about the client and the hop.
fn forwarding<'a>(
    c: &Client,
    listen: &Listen,
    up: &'a Upstream,
    r: &'a Route,
    upgrade: Option<&'a [u8]>,
) -> Forwarding<'a> {
    Forwarding {
        client_ip: c.peer,
        hop: c.hop,
        proto: listen.proto,
        port: listen.port,
        fallback_host: &up.name,
        set: &r.set_request_headers,
        upgrade,
    }
}

/// Whether the route compresses (`gzip`) and the client takes gzip.
fn accepts_gzip(req: &RequestHead<'_, '_>, route: Option<&Route>) -> bool {
    route.is_some_and(|r| r.gzip.is_some())
        && crate::serve::gzip::accepts(
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("accept-encoding"))
                .map(|h| h.value),
        )
}

/// The target sent upstream: the client's, as sent (origin-form). With
/// `strip_prefix`, the route's path (less a trailing slash) is cut off, so
/// `/api/users` on route `/api/` becomes `/users` (nginx
/// `proxy_pass http://app/;`); when the path as sent does not start with
/// the route's path (it matched once normalised), the normalised path is
/// cut and sent instead, with the query as sent.
fn upstream_target<'t>(
    origin: &'t [u8],
    normal: &[u8],
    r: &crate::config::Route,
) -> std::borrow::Cow<'t, [u8]> {
    if !r.strip_prefix {
        return origin.into();
    }
    let prefix = r.path.trim_end_matches('/').as_bytes();
    let rest = match origin.strip_prefix(prefix) {
        Some(rest) => rest.to_vec(),
        None => {
            let query = origin
                .iter()
                .position(|&b| b == b'?')
                .map_or(&b""[..], |q| &origin[q..]);
            let mut t = normal.get(prefix.len()..).unwrap_or_default().to_vec();
            escape_path(&mut t);
            t.extend_from_slice(query);
            t
        }
    };
    if rest.starts_with(b"/") {
        rest.into()
    } else {
        let mut t = Vec::with_capacity(rest.len() + 1);
        t.push(b'/');
        t.extend_from_slice(&rest);
        t.into()
    }
}

/// Percent-encodes what a decoded path may hold that cannot go on a
/// request line as it is (controls, space, `%`, `?`, `#`, non-ASCII).
fn escape_path(p: &mut Vec<u8>) {
    if !p.iter().any(|&b| needs_escape(b)) {
        return;
    }
    let raw = std::mem::take(p);
    for b in raw {
        if needs_escape(b) {
            p.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            p.push(b);
        }
    }
}

fn needs_escape(b: u8) -> bool {
    b <= b' ' || b >= 0x7f || matches!(b, b'%' | b'?' | b'#')
}

/// A `respond` route's answer. The connection stays open when the
/// request's body, if any, was already read with the head.
async fn respond_route(
    c: &mut Client,
    shard: &Shard,
    config: &Config,
    plan: &Plan,
    route: usize,
) -> Done {
    let (keep, consumed) = serve::own_answer_keep(c, shard, plan);
    let r = &config.routes[route];
    let Action::Respond { status, body } = &r.action else {
        unreachable!("a respond plan is made for respond routes only");
    };
    let mut out = serve::Own::start(c, shard, *status);
    out.field(b"Content-Type", respond::content_type_of(body));
    serve::content_length(&mut out, body.len() as u64);
    let framing = crate::http::headers::OutFraming::AsIs;
    serve::end_own_head(&mut out, Some(r), framing, keep, plan.minor);
    if !plan.head_only {
        out.body().extend_from_slice(body.as_bytes());
    }
    let answer = (keep, consumed);
    serve::send_own(c, shard, plan, out, *status, body.len(), answer).await
}

fn log_access(c: &Client, shard: &Shard, config: &Config, plan: &Plan, done: &Done, seconds: f64) {
    if !shard.access.is_on() {
        return;
    }
    let b = &c.buf;
    let server = done
        .server
        .map(|(u, s)| config.upstreams[u].servers[s].label.as_str());
    shard.access.write(&Record {
        remote: c.peer,
        method: plan.spans.method.of(b),
        target: plan.spans.target.of(b),
        protocol: match (&c.stream, plan.minor) {
            (ClientStream::H2(_), _) => "HTTP/2.0",
            (_, 0) => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        line: None,
        status: done.status,
        body_bytes: done.body_bytes,
        referer: plan.spans.referer.map(|s| s.of(b)),
        user_agent: plan.spans.user_agent.map(|s| s.of(b)),
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

fn log_error(
    shard: &Shard,
    config: &Config,
    (peer, buf): (IpAddr, &[u8]),
    plan: Option<&Plan>,
    e: &Error,
    done: &Done,
) {
    let level = level_of(e);
    if !crate::log::enabled(level) {
        return;
    }
    let server = done
        .server
        .map(|(u, s)| config.upstreams[u].servers[s].label.as_str())
        .unwrap_or("-");
    let route = plan
        .and_then(|p| p.route)
        .map(|r| config.routes[r].label.as_str())
        .unwrap_or("-");
    let request = Request(buf);
    crate::log::error_line(
        level,
        format_args!(
            "worker {}: {e}, client {peer}, request {request}, route {route}, upstream {server}, status {}",
            shard.id, done.status
        ),
    );
}

/// The request an error-log line belongs to, from the head at the start of
/// the client buffer: `"METHOD host /path"` (`-` for what is missing),
/// escaped, the path without its query, at most 200 bytes of it.
struct Request<'a>(&'a [u8]);

impl std::fmt::Display for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = self.0.split(|&b| b == b'\r' || b == b'\n').next();
        let mut parts = line.unwrap_or_default().splitn(3, |&b| b == b' ');
        let method = parts.next().filter(|m| !m.is_empty()).unwrap_or(b"-");
        let target = parts.next().unwrap_or(b"-");
        let path = target.split(|&b| b == b'?').next().unwrap_or(target);
        let path = &path[..path.len().min(200)];
        let host = (self.0.split(|&b| b == b'\n').skip(1))
            .take_while(|l| !l.is_empty() && *l != b"\r")
            .find_map(|l| {
                let (name, value) = l.split_at(l.iter().position(|&b| b == b':')?);
                name.eq_ignore_ascii_case(b"host")
                    .then(|| value[1..].trim_ascii())
            })
            .unwrap_or(b"-");
        let host = &host[..host.len().min(100)];
        write!(
            f,
            "\"{} {} {}\"",
            method.escape_ascii(),
            host.escape_ascii(),
            path.escape_ascii()
        )
    }
}
