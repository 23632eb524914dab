//! Stages 3b-6 of a proxied request: balance, connect (or reuse), send the
//! request, read the response head, relay the body, pool the connection.

use std::mem::take;

use httparse::EMPTY_HEADER;
use monoio::net::TcpStream;

use crate::{
    balance::Balancer,
    config::{Config, Route, Upstream},
    conn::{Client, Done, Plan},
    error::{Error, Fault},
    http::{
        headers::{add_field, client_response, interim, OutFraming, Persist},
        parse::{self, Framing},
        respond::CONTINUE,
    },
    relay::{self, CopyFail, Fail, Limits},
    serve::{body::BodyOut, cached, pages, response},
    splice::{self, Way},
    upstream::connect::connect,
    worker::{Buffers, Generation, Shard},
};

/// Most header fields in an upstream response head.
const MAX_RESPONSE_HEADERS: usize = 128;

pub async fn forward(
    c: &mut Client,
    shard: &Shard,
    gen: &Generation,
    plan: &Plan,
    upstream: usize,
    head: &[u8],
    upgrade: bool,
) -> Done {
    let cfg = &*gen.config;
    let up = &cfg.upstreams[upstream];
    let route = &cfg.routes[plan.route.unwrap_or(0)];
    let in_buf = c.buf.len() - plan.len;
    let (body_now, remaining) = match plan.framing {
        Framing::Length(n) => {
            let now = n.min(in_buf as u64);
            (now as usize, n - now)
        }
        _ => (0, 0),
    };
    let mut done = Done {
        status: 0,
        body_bytes: 0,
        server: None,
        keep: false,
        consumed: plan.len + body_now,
        error: None,
    };
    // A chunked body that arrived with its head is checked before anything
    // is forwarded: a bad chunk never reaches the upstream (later chunks are
    // checked as they stream, and a bad one aborts the upstream connection).
    if plan.framing == Framing::Chunked {
        if let Err(e) = precheck_chunked(&c.buf[plan.len..], cfg.limits.max_request_body) {
            return fail(c, shard, cfg, plan, done, e).await;
        }
    }
    // The head and the body bytes that came with it go out in one write,
    // from a pooled buffer (given back below).
    let mut first = shard.small.take();
    first.extend_from_slice(head);
    first.extend_from_slice(&c.buf[plan.len..plan.len + body_now]);

    // 3b-4. Pick a server, reach it (a pooled connection or a new one),
    // send, read the response head. A failure goes to the retry rules
    // (`Tries`); a pooled connection the server had closed is not a
    // failure: the request goes out again on another connection.
    let bal = &gen.balancers[upstream];
    let mut tries = Tries {
        left: up.retries,
        failed: Vec::new(),
        last: None,
    };
    let (mut s, server, mut resp, _active) = loop {
        let usable = |i: usize| gen.health.is_up(upstream, i) && !tries.failed.contains(&i);
        let everyone = tries.failed.is_empty() && gen.health.all_up(upstream);
        let Some(server) = bal.pick(&plan.key, everyone, usable) else {
            // 503 when every server is out; else the last failure.
            let e = tries.last.unwrap_or_else(Error::no_server);
            return fail(c, shard, cfg, plan, done, e).await;
        };
        done.server = Some((upstream, server));
        let active = bal.begin(server);
        let gid = up.servers[server].address;
        let (mut s, reused) = match shard.pool.take(gid, up.keepalive_timeout) {
            Some(s) => (s, true),
            // Boxed, like every step off the steady path: its state would
            // otherwise sit in every request's future.
            None => match Box::pin(connect(gid, up.connect_timeout)).await {
                Ok(s) => (s, false),
                // Nothing was sent: any method may go to the next server.
                Err(e) => match tries.failed(shard, up, bal, server, e, true) {
                    Ok(()) => continue,
                    Err(e) => return fail(c, shard, cfg, plan, done, e).await,
                },
            },
        };
        match attempt(
            c, shard, cfg, plan, up, route, &mut s, &mut first, remaining, reused, upgrade,
        )
        .await
        {
            Ok(resp) => break (s, server, resp, active),
            Err(Attempt::Stale) => continue,
            // The server may have acted on what it got: only an idempotent
            // request that can go out again as it was goes to another.
            Err(Attempt::Fail { error, replay }) => {
                let again = replay && plan.idempotent;
                if let Err(e) = tries.failed(shard, up, bal, server, error, again) {
                    return fail(c, shard, cfg, plan, done, e).await;
                }
            }
        }
    };
    shard.small.give(first);
    let gid = up.servers[server].address;
    // Sticky: the cookie names the server that answered.
    if let Some(cookie) = bal.set_cookie(server, &plan.key) {
        add_field(&mut resp.client_head, b"Set-Cookie", cookie.as_bytes());
    }
    if plan.framing == Framing::Chunked {
        // copy_chunked left the client buffer as head + next request.
        done.consumed = plan.len;
    }

    // 6. The response head, then its body.
    done.status = resp.status;
    let resp_status = resp.status;
    let down = Limits {
        read: up.read_timeout,
        write: cfg.limits.client_send_timeout,
    };
    let Response {
        buf: upbuf,
        len,
        framing,
        keep_alive,
        mut client_head,
        out,
        client_keep,
        tunnel,
        mut changes,
        ..
    } = resp;
    let pending = &upbuf[len..];
    let mut clean = keep_alive;
    let result: Result<u64, CopyFail> = match framing {
        _ if tunnel => {
            client_head.extend_from_slice(pending);
            done.consumed = c.buf.len();
            let early = c.buf[plan.len..].to_vec();
            let tunnel = tunnel_after_101(c, shard, &mut s, client_head, early, up.read_timeout);
            Box::pin(tunnel).await;
            shard.heads.give(upbuf);
            done.keep = false;
            return done;
        }
        // The route's error page replaces the answer (status kept); the
        // upstream connection is reused only when no body was due.
        _ if changes.page => {
            clean &= framing == Framing::Empty && pending.is_empty();
            let mut page = shard.heads.take();
            let write = async {
                let n = pages::write_error(&mut page, Some(route), resp_status, client_keep, plan)
                    .await;
                write_head(c, &shard.heads, page, down)
                    .await
                    .map(|()| n as u64)
            };
            Box::pin(write).await
        }
        // gzip and/or a copy for the cache, as the body flows.
        _ if changes.gzip || changes.store.is_some() => {
            Box::pin(async {
                match write_head(c, &shard.small, client_head, down).await {
                    Ok(()) => {
                        let cap = shard.cache.borrow().entry_cap();
                        let fits = !matches!(framing, Framing::Length(n) if n > cap as u64);
                        let tee = changes.store.as_ref().filter(|_| fits).map(|_| cap);
                        let mut body = BodyOut::new(changes.gzip, out, tee);
                        let bufs = &shard.relay;
                        let r = crate::serve::body::relay(
                            &mut s,
                            &mut c.stream,
                            framing,
                            pending,
                            &mut body,
                            bufs,
                            down,
                        )
                        .await;
                        r.map(|tidy| {
                            clean &= tidy;
                            if let (Some(store), Some(copy)) =
                                (changes.store.take(), body.take_copy())
                            {
                                cached::store(shard, plan, &c.buf, store, copy);
                            }
                            body.sent
                        })
                    }
                    Err(e) => Err(e),
                }
            })
            .await
        }
        Framing::Empty => {
            clean &= pending.is_empty();
            write_head(c, &shard.small, client_head, down)
                .await
                .map(|()| 0)
        }
        Framing::Length(n) => {
            let now = (n as usize).min(pending.len());
            clean &= pending.len() <= n as usize;
            client_head.extend_from_slice(&pending[..now]);
            match write_head(c, &shard.small, client_head, down).await {
                Ok(()) if now as u64 == n => Ok(n),
                Ok(()) => {
                    let rest = n - now as u64;
                    let copy =
                        splice::copy_body(shard, &mut c.stream, &mut s, Way::Down, rest, down);
                    Box::pin(copy).await.map(|()| n)
                }
                Err(e) => Err(e),
            }
        }
        // Bodies ringside has to look at: through two relay buffers.
        Framing::Chunked | Framing::UntilClose => {
            match write_head(c, &shard.small, client_head, down).await {
                Ok(()) => {
                    let copy = async {
                        let rechunk = out == OutFraming::Chunked;
                        let (inbuf, outbuf) = (shard.relay.take(), shard.relay.take());
                        let (from, to) = (&mut s, &mut c.stream);
                        let (r, inbuf, outbuf) = if framing == Framing::Chunked {
                            let (r, i, o) = relay::copy_chunked(
                                from, to, pending, inbuf, outbuf, rechunk, 0, down,
                            )
                            .await;
                            let r = r.map(|(total, leftover)| {
                                clean &= leftover.is_empty();
                                total
                            });
                            (r, i, o)
                        } else {
                            clean = false;
                            relay::copy_until_close(from, to, pending, inbuf, outbuf, rechunk, down)
                                .await
                        };
                        shard.relay.give(inbuf);
                        shard.relay.give(outbuf);
                        r
                    };
                    Box::pin(copy).await
                }
                Err(e) => Err(e),
            }
        }
    };
    shard.heads.give(upbuf);
    match result {
        Ok(bytes) => {
            done.body_bytes = bytes;
            done.keep = client_keep && out != OutFraming::Close;
            if clean {
                shard.pool.put(gid, s, up.keepalive);
            }
        }
        Err(e) => {
            // The head went out: the client can only see the connection close.
            done.keep = false;
            done.error = Some(
                match e {
                    CopyFail::Read(Fail::Timeout) => Error::read_timeout(),
                    CopyFail::Read(Fail::Framing(why)) => Error::bad_response(why),
                    CopyFail::Read(_) => Error::upstream_closed(),
                    CopyFail::Write(Fail::Timeout) => Error::client_send_timeout(),
                    CopyFail::Write(Fail::Io(e)) => Error::client_gone(e),
                    CopyFail::Write(_) => Error::client_send_timeout(),
                }
                .after_head(),
            );
        }
    }
    done
}

fn precheck_chunked(buffered: &[u8], max: u64) -> Result<(), Error> {
    let mut dec = crate::http::body::Chunked::new();
    let mut total = 0u64;
    dec.decode(buffered, |d| total += d.len() as u64)
        .map_err(Error::bad_request)?;
    if max > 0 && total > max {
        return Err(Error::body_too_large());
    }
    Ok(())
}

async fn write_head(
    c: &mut Client,
    heads: &Buffers,
    mut head: Vec<u8>,
    down: Limits,
) -> Result<(), CopyFail> {
    c.stamp(&mut head);
    let (w, head) = relay::write_all(&mut c.stream, head, down.write).await;
    heads.give(head);
    w.map_err(CopyFail::Write)
}

/// Answers an error that happened before the response head went out. The
/// page write is boxed here, once, so its state does not sit in every
/// request's future at each of `forward`'s four failure exits.
async fn fail(
    c: &mut Client,
    shard: &Shard,
    cfg: &Config,
    plan: &Plan,
    mut done: Done,
    e: Error,
) -> Done {
    done.status = if e.status == 0 { 499 } else { e.status };
    done.keep = false;
    done.error = Some(e);
    if e.status != 0 {
        let write = Box::pin(async {
            let mut out = shard.heads.take();
            let route = plan.route.map(|r| &cfg.routes[r]);
            pages::write_error(&mut out, route, e.status, false, plan).await;
            c.stamp(&mut out);
            let limit = cfg.limits.client_send_timeout;
            let (_, out) = relay::write_all(&mut c.stream, out, limit).await;
            shard.heads.give(out);
        });
        write.await;
        done.body_bytes = 0;
    }
    done
}

/// The retry rules of one request: `retries` more tries after the first,
/// never twice on the same server.
struct Tries {
    left: u32,
    /// Servers that failed this request.
    failed: Vec<usize>,
    last: Option<Error>,
}

impl Tries {
    /// Records that `server` failed with `e` (passive health counts it when
    /// the upstream is at fault); `Ok` when the request goes to another
    /// server: `again` says the rules allow it for this failure.
    fn failed(
        &mut self,
        shard: &Shard,
        up: &Upstream,
        bal: &Balancer,
        server: usize,
        e: Error,
        again: bool,
    ) -> Result<(), Error> {
        if e.fault != Fault::Upstream {
            return Err(e);
        }
        if bal.passive.failed(server, std::time::Instant::now()) {
            crate::warn!(
                "worker {}: upstream {} server {}: {} failures in {:?} ({e}): skipped for {:?}",
                shard.id,
                up.name,
                up.servers[server].label,
                up.max_fails,
                up.fail_timeout,
                up.fail_timeout
            );
        }
        self.failed.push(server);
        if !again || self.left == 0 {
            return Err(e);
        }
        self.left -= 1;
        self.last = Some(e);
        Ok(())
    }
}

enum Attempt {
    /// A pooled connection turned out closed before any response byte, and
    /// nothing was consumed from the client: safe to send again elsewhere.
    Stale,
    /// `replay`: the request could go out again as it was (nothing was read
    /// from the client beyond what `first` holds, nothing written to it).
    Fail { error: Error, replay: bool },
}

impl Attempt {
    fn fail(error: Error) -> Self {
        Attempt::Fail {
            error,
            replay: true,
        }
    }

    /// This attempt consumed or sent something on the client side.
    fn not_replayable(self) -> Self {
        match self {
            Attempt::Fail { error, .. } => Attempt::Fail {
                error,
                replay: false,
            },
            stale => stale,
        }
    }
}

/// The final response head, parsed, with the client head already written.
struct Response {
    buf: Vec<u8>,
    len: usize,
    status: u16,
    framing: Framing,
    keep_alive: bool,
    client_head: Vec<u8>,
    out: OutFraming,
    client_keep: bool,
    tunnel: bool,
    /// What the route does to this answer (serve/response.rs).
    changes: response::Changes,
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    c: &mut Client,
    shard: &Shard,
    cfg: &Config,
    plan: &Plan,
    up: &Upstream,
    route: &Route,
    s: &mut TcpStream,
    first: &mut Vec<u8>,
    remaining: u64,
    reused: bool,
    upgrade: bool,
) -> Result<Response, Attempt> {
    let limits = &cfg.limits;
    let (w, b) = relay::write_all(s, take(first), up.send_timeout).await;
    *first = b;
    match w {
        Ok(()) => {}
        // The timed-out write kept `first`: it cannot go out again.
        Err(Fail::Timeout) => return Err(Attempt::fail(Error::send_timeout()).not_replayable()),
        Err(_) if reused => return Err(Attempt::Stale),
        Err(Fail::Io(e)) => return Err(Attempt::fail(Error::upstream_io(e))),
        Err(_) => return Err(Attempt::fail(Error::upstream_closed())),
    }

    // 5. The rest of the request body, streamed.
    let told_continue = plan.expect_continue && c.buf.len() == plan.len;
    if told_continue {
        let write = relay::write_all(&mut c.stream, CONTINUE.to_vec(), limits.client_send_timeout);
        let (w, _) = Box::pin(write).await;
        if let Err(e) = w {
            return Err(Attempt::fail(client_fail(e)));
        }
    }
    let upward = Limits {
        read: limits.client_body_timeout,
        write: up.send_timeout,
    };
    let mut streamed = false;
    match plan.framing {
        Framing::Length(_) if remaining > 0 => {
            streamed = true;
            Box::pin(splice::copy_body(
                shard,
                &mut c.stream,
                s,
                Way::Up,
                remaining,
                upward,
            ))
            .await
            .map_err(|e| Attempt::fail(upward_error(e)).not_replayable())?;
        }
        Framing::Chunked => {
            streamed = true;
            let (inbuf, outbuf) = (shard.relay.take(), shard.relay.take());
            let max = limits.max_request_body;
            let pending = &c.buf[plan.len..];
            let copy =
                relay::copy_chunked(&mut c.stream, s, pending, inbuf, outbuf, true, max, upward);
            let (r, inbuf, outbuf) = Box::pin(copy).await;
            shard.relay.give(inbuf);
            shard.relay.give(outbuf);
            let (_, leftover) = r.map_err(|e| Attempt::fail(upward_error(e)).not_replayable())?;
            // What followed the body is the next request.
            c.buf.truncate(plan.len);
            c.buf.extend_from_slice(&leftover);
        }
        _ => {}
    }

    read_response(
        c,
        shard,
        cfg,
        plan,
        up,
        route,
        s,
        reused && !streamed,
        upgrade,
    )
    .await
    .map_err(|a| {
        if streamed || told_continue {
            a.not_replayable()
        } else {
            a
        }
    })
}

fn client_fail(e: Fail) -> Error {
    match e {
        Fail::Io(e) => Error::client_gone(e),
        _ => Error::client_send_timeout(),
    }
}

/// Maps a failed client → upstream body copy to the client's answer.
fn upward_error(e: CopyFail) -> Error {
    match e {
        CopyFail::Read(Fail::Timeout) => Error::body_timeout(),
        CopyFail::Read(Fail::Framing("body over the limit")) => Error::body_too_large(),
        CopyFail::Read(Fail::Framing(why)) => Error::bad_request(why),
        CopyFail::Read(Fail::Io(e)) => Error::client_gone(e),
        CopyFail::Read(Fail::Eof) => Error::client_gone(std::io::ErrorKind::UnexpectedEof.into()),
        CopyFail::Write(Fail::Timeout) => Error::send_timeout(),
        CopyFail::Write(Fail::Io(e)) => Error::upstream_io(e),
        CopyFail::Write(_) => Error::upstream_closed(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_response(
    c: &mut Client,
    shard: &Shard,
    cfg: &Config,
    plan: &Plan,
    up: &Upstream,
    route: &Route,
    s: &mut TcpStream,
    stale_ok: bool,
    upgrade: bool,
) -> Result<Response, Attempt> {
    let mut buf = shard.heads.take();
    let mut got_any = false;
    // Cleared once an interim response went to the client.
    let mut replay = true;
    loop {
        if !buf.is_empty() {
            let draining = shard.draining.get();
            let cx = response::Context {
                plan,
                route,
                upstream: up,
                client: &c.buf,
            };
            match interpret(&buf, &cx, draining, upgrade, &shard.small) {
                Err(e) => {
                    shard.heads.give(buf);
                    return Err(Attempt::Fail { error: e, replay });
                }
                Ok(Parsed::Partial) if buf.len() == buf.capacity() => {
                    shard.heads.give(buf);
                    let e = Error::bad_response("upstream response head too large");
                    return Err(Attempt::Fail { error: e, replay });
                }
                Ok(Parsed::Partial) => {}
                Ok(Parsed::Interim { len, forward }) => {
                    buf.drain(..len);
                    if let Some(bytes) = forward {
                        let lim = cfg.limits.client_send_timeout;
                        let (w, _) = Box::pin(relay::write_all(&mut c.stream, bytes, lim)).await;
                        if let Err(e) = w {
                            shard.heads.give(buf);
                            return Err(Attempt::Fail {
                                error: client_fail(e),
                                replay,
                            });
                        }
                        replay = false;
                    }
                    continue;
                }
                Ok(Parsed::Final(mut resp)) => {
                    resp.buf = buf;
                    return Ok(resp);
                }
            }
        }
        let (r, b) = relay::read_more(s, take(&mut buf), up.read_timeout).await;
        buf = b;
        let e = match r {
            Ok(0) if !got_any && stale_ok => Attempt::Stale,
            Ok(0) if buf.is_empty() => Attempt::Fail {
                error: Error::upstream_closed(),
                replay,
            },
            Ok(0) => Attempt::Fail {
                error: Error::bad_response("upstream closed inside the response head"),
                replay,
            },
            Ok(_) => {
                got_any = true;
                continue;
            }
            Err(Fail::Timeout) => Attempt::Fail {
                error: Error::read_timeout(),
                replay,
            },
            Err(_) if !got_any && stale_ok => Attempt::Stale,
            Err(Fail::Io(e)) => Attempt::Fail {
                error: Error::upstream_io(e),
                replay,
            },
            Err(_) => Attempt::Fail {
                error: Error::upstream_closed(),
                replay,
            },
        };
        shard.heads.give(buf);
        return Err(e);
    }
}

enum Parsed {
    Partial,
    /// A 1xx other than 101: `forward` holds it re-serialised for an
    /// HTTP/1.1 client (100 is never forwarded: ringside answered
    /// `Expect: 100-continue` itself).
    Interim {
        len: usize,
        forward: Option<Vec<u8>>,
    },
    Final(Response),
}

fn interpret(
    buf: &[u8],
    cx: &response::Context<'_>,
    draining: bool,
    upgrade: bool,
    small: &Buffers,
) -> Result<Parsed, Error> {
    let (plan, route) = (cx.plan, cx.route);
    let mut headers = [EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let Some(res) = parse::response(buf, &mut headers, plan.head_only)? else {
        return Ok(Parsed::Partial);
    };
    let tunnel = res.status == 101;
    if tunnel && !upgrade {
        return Err(Error::bad_response("upstream switched protocols unasked"));
    }
    if (100..200).contains(&res.status) && !tunnel {
        let forward = (res.status != 100 && plan.minor == 1).then(|| {
            let mut out = Vec::with_capacity(res.len);
            interim(&mut out, &res);
            out
        });
        return Ok(Parsed::Interim {
            len: res.len,
            forward,
        });
    }
    let changed = !tunnel && response::any(route, plan);
    let mut changes = if changed {
        response::decide(&res, plan, route)
    } else {
        response::Changes::default()
    };
    // gzip makes the length unknown.
    let body = if changes.gzip {
        Framing::UntilClose
    } else {
        res.framing
    };
    let out = match (body, plan.minor) {
        (Framing::Empty | Framing::Length(_), _) => OutFraming::AsIs,
        (_, 1) => OutFraming::Chunked,
        _ => OutFraming::Close,
    };
    let client_keep = plan.keep_alive && out != OutFraming::Close && !draining && !tunnel;
    let persist = if tunnel {
        Persist::Upgrade
    } else if !client_keep {
        Persist::Close
    } else if plan.minor == 0 {
        Persist::KeepAlive
    } else {
        Persist::Default
    };
    // Pooled: `write_head` gives it back.
    let mut client_head = small.take();
    if changed {
        response::write_head(&mut client_head, &res, cx, &mut changes, out, persist);
    } else {
        client_response(
            &mut client_head,
            &res,
            out,
            persist,
            &route.add_response_headers,
        );
    }
    Ok(Parsed::Final(Response {
        buf: Vec::new(),
        len: res.len,
        status: res.status,
        framing: res.framing,
        keep_alive: res.keep_alive && !tunnel,
        client_head,
        out,
        client_keep,
        tunnel,
        changes,
    }))
}

/// After a `101`: the client gets the head (and whatever the upstream sent
/// after it), the upstream gets whatever the client sent early, then bytes
/// flow both ways until both sides are done.
async fn tunnel_after_101(
    c: &mut Client,
    shard: &Shard,
    s: &mut TcpStream,
    mut head: Vec<u8>,
    early: Vec<u8>,
    idle: std::time::Duration,
) {
    c.stamp(&mut head);
    let (w, _) = relay::write_all(&mut c.stream, head, idle).await;
    if w.is_err() {
        return;
    }
    if !early.is_empty() {
        let (w, _) = relay::write_all(s, early, idle).await;
        if w.is_err() {
            return;
        }
    }
    // A new kind of client stream gets no tunnel until it is added here.
    let r = if let crate::tls::ClientStream::Plain(client) = &mut c.stream {
        crate::tunnel::plain(client, s, &shard.pipes, idle).await
    } else if c.stream.is_tls() {
        // The tunnel takes the TLS stream apart; the connection ends with it.
        match std::mem::replace(&mut c.stream, crate::tls::ClientStream::Closed) {
            crate::tls::ClientStream::Tls(client) => {
                crate::tunnel::tls(*client, s, &shard.relay, &shard.heads, idle).await
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
