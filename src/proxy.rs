//! Stages 3b-6 of a proxied request: balance, connect (or reuse), send the
//! request, read the response head, relay the body, pool the connection.

use std::mem::take;

use httparse::EMPTY_HEADER;
use monoio::net::TcpStream;

use crate::{
    config::{Config, Route, Upstream},
    conn::{Client, Done, Plan},
    error::Error,
    http::{
        headers::{client_response, interim, OutFraming, Persist},
        parse::{self, Framing},
        respond::CONTINUE,
    },
    relay::{self, CopyFail, Fail, Limits},
    upstream::connect::connect,
    worker::{Generation, Shard},
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
    // The head and the body bytes that came with it go out in one write.
    let mut first = Vec::with_capacity(head.len() + body_now);
    first.extend_from_slice(head);
    first.extend_from_slice(&c.buf[plan.len..plan.len + body_now]);

    // 3b-4. Pick a server, reach it, send; on a failed connect try the next
    // (`retries`), on a pooled connection the server had closed try again.
    let mut excluded = 0u128;
    let mut tries = up.retries;
    let mut last_error = None;
    let (mut s, gid, resp) = loop {
        let usable = |i: usize| i >= 128 || excluded & (1 << i) == 0;
        let Some(server) = gen.balancers[upstream].pick(&up.servers, usable) else {
            let e = last_error.unwrap_or_else(Error::no_server);
            return fail(c, shard, cfg, plan, done, e).await;
        };
        done.server = Some((upstream, server));
        let gid = up.servers[server].address;
        let (mut s, reused) = match shard.pool.take(gid, up.keepalive_timeout) {
            Some(s) => (s, true),
            None => match connect(up.servers[server].address, up.connect_timeout).await {
                Ok(s) => (s, false),
                Err(e) if tries > 0 && up.servers.len() > 1 => {
                    tries -= 1;
                    if server < 128 {
                        excluded |= 1 << server;
                    }
                    last_error = Some(e);
                    continue;
                }
                Err(e) => return fail(c, shard, cfg, plan, done, e).await,
            },
        };
        match attempt(
            c, shard, cfg, plan, up, route, &mut s, &mut first, remaining, reused, upgrade,
        )
        .await
        {
            Ok(resp) => break (s, gid, resp),
            // The server closed an idle pooled connection: try again.
            Err(Attempt::Stale) => continue,
            Err(Attempt::Fail(e)) => return fail(c, shard, cfg, plan, done, e).await,
        }
    };
    if plan.framing == Framing::Chunked {
        // copy_chunked left the client buffer as head + next request.
        done.consumed = plan.len;
    }

    // 6. The response head, then its body.
    done.status = resp.status;
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
        ..
    } = resp;
    let pending = &upbuf[len..];
    let mut clean = keep_alive;
    let result: Result<u64, CopyFail> = match framing {
        _ if tunnel => {
            client_head.extend_from_slice(pending);
            done.consumed = c.buf.len();
            let early = c.buf[plan.len..].to_vec();
            tunnel_after_101(c, shard, &mut s, client_head, early, up.read_timeout).await;
            shard.heads.give(upbuf);
            done.keep = false;
            return done;
        }
        Framing::Empty => {
            clean &= pending.is_empty();
            write_head(c, client_head, down).await.map(|()| 0)
        }
        Framing::Length(n) => {
            let now = (n as usize).min(pending.len());
            clean &= pending.len() <= n as usize;
            client_head.extend_from_slice(&pending[..now]);
            match write_head(c, client_head, down).await {
                Ok(()) => {
                    let buf = shard.relay.take();
                    let (r, buf) =
                        relay::copy_length(&mut s, &mut c.stream, n - now as u64, buf, down).await;
                    shard.relay.give(buf);
                    r.map(|()| n)
                }
                Err(e) => Err(e),
            }
        }
        Framing::Chunked => match write_head(c, client_head, down).await {
            Ok(()) => {
                let rechunk = out == OutFraming::Chunked;
                let (inbuf, outbuf) = (shard.relay.take(), shard.relay.take());
                let (r, inbuf, outbuf) = relay::copy_chunked(
                    &mut s,
                    &mut c.stream,
                    pending,
                    inbuf,
                    outbuf,
                    rechunk,
                    0,
                    down,
                )
                .await;
                shard.relay.give(inbuf);
                shard.relay.give(outbuf);
                r.map(|(total, leftover)| {
                    clean &= leftover.is_empty();
                    total
                })
            }
            Err(e) => Err(e),
        },
        Framing::UntilClose => match write_head(c, client_head, down).await {
            Ok(()) => {
                clean = false;
                let rechunk = out == OutFraming::Chunked;
                let (inbuf, outbuf) = (shard.relay.take(), shard.relay.take());
                let (r, inbuf, outbuf) = relay::copy_until_close(
                    &mut s,
                    &mut c.stream,
                    pending,
                    inbuf,
                    outbuf,
                    rechunk,
                    down,
                )
                .await;
                shard.relay.give(inbuf);
                shard.relay.give(outbuf);
                r
            }
            Err(e) => Err(e),
        },
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

async fn write_head(c: &mut Client, head: Vec<u8>, down: Limits) -> Result<(), CopyFail> {
    let (w, _) = relay::write_all(&mut c.stream, head, down.write).await;
    w.map_err(CopyFail::Write)
}

/// Answers an error that happened before the response head went out.
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
        let mut out = shard.heads.take();
        crate::http::respond::error(&mut out, e.status, true, plan.head_only);
        let (_, out) = relay::write_all(&mut c.stream, out, cfg.limits.client_send_timeout).await;
        shard.heads.give(out);
        done.body_bytes = 0;
    }
    done
}

enum Attempt {
    /// A pooled connection turned out closed before any response byte, and
    /// nothing was consumed from the client: safe to send again elsewhere.
    Stale,
    Fail(Error),
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
        Err(Fail::Timeout) => return Err(Attempt::Fail(Error::send_timeout())),
        Err(_) if reused => return Err(Attempt::Stale),
        Err(Fail::Io(e)) => return Err(Attempt::Fail(Error::upstream_io(e))),
        Err(_) => return Err(Attempt::Fail(Error::upstream_closed())),
    }

    // 5. The rest of the request body, streamed.
    if plan.expect_continue && c.buf.len() == plan.len {
        let (w, _) =
            relay::write_all(&mut c.stream, CONTINUE.to_vec(), limits.client_send_timeout).await;
        if let Err(e) = w {
            return Err(Attempt::Fail(client_fail(e)));
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
            let buf = shard.relay.take();
            let (r, buf) = relay::copy_length(&mut c.stream, s, remaining, buf, upward).await;
            shard.relay.give(buf);
            r.map_err(|e| Attempt::Fail(upward_error(e)))?;
        }
        Framing::Chunked => {
            streamed = true;
            let (inbuf, outbuf) = (shard.relay.take(), shard.relay.take());
            let max = limits.max_request_body;
            let pending = &c.buf[plan.len..];
            let (r, inbuf, outbuf) =
                relay::copy_chunked(&mut c.stream, s, pending, inbuf, outbuf, true, max, upward)
                    .await;
            shard.relay.give(inbuf);
            shard.relay.give(outbuf);
            let (_, leftover) = r.map_err(|e| Attempt::Fail(upward_error(e)))?;
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
    loop {
        if !buf.is_empty() {
            let draining = shard.draining.get();
            match interpret(&buf, plan, route, draining, upgrade) {
                Err(e) => {
                    shard.heads.give(buf);
                    return Err(Attempt::Fail(e));
                }
                Ok(Parsed::Partial) if buf.len() == buf.capacity() => {
                    shard.heads.give(buf);
                    let e = Error::bad_response("upstream response head too large");
                    return Err(Attempt::Fail(e));
                }
                Ok(Parsed::Partial) => {}
                Ok(Parsed::Interim { len, forward }) => {
                    buf.drain(..len);
                    if let Some(bytes) = forward {
                        let lim = cfg.limits.client_send_timeout;
                        let (w, _) = relay::write_all(&mut c.stream, bytes, lim).await;
                        if let Err(e) = w {
                            shard.heads.give(buf);
                            return Err(Attempt::Fail(client_fail(e)));
                        }
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
            Ok(0) if buf.is_empty() => Attempt::Fail(Error::upstream_closed()),
            Ok(0) => Attempt::Fail(Error::bad_response(
                "upstream closed inside the response head",
            )),
            Ok(_) => {
                got_any = true;
                continue;
            }
            Err(Fail::Timeout) => Attempt::Fail(Error::read_timeout()),
            Err(_) if !got_any && stale_ok => Attempt::Stale,
            Err(Fail::Io(e)) => Attempt::Fail(Error::upstream_io(e)),
            Err(_) => Attempt::Fail(Error::upstream_closed()),
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
    plan: &Plan,
    route: &Route,
    draining: bool,
    upgrade: bool,
) -> Result<Parsed, Error> {
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
    let out = match (res.framing, plan.minor) {
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
    let mut client_head = Vec::with_capacity(res.len + 64);
    client_response(
        &mut client_head,
        &res,
        out,
        persist,
        &route.add_response_headers,
    );
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
    }))
}

/// After a `101`: the client gets the head (and whatever the upstream sent
/// after it), the upstream gets whatever the client sent early, then bytes
/// flow both ways until both sides are done.
async fn tunnel_after_101(
    c: &mut Client,
    shard: &Shard,
    s: &mut TcpStream,
    head: Vec<u8>,
    early: Vec<u8>,
    idle: std::time::Duration,
) {
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
    if let Err(e) = relay::tunnel(&mut c.stream, s, &shard.relay, idle).await {
        crate::debug!("worker {}: tunnel from {} ended: {e}", shard.id, c.peer);
    }
}
