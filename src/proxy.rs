//! Stages 4-5 of a proxied request, in order: the request goes to a server
//! (`upstream::attempt::reach`: balance, connect or reuse, send, response
//! head, retries), then the response head and body go to the client by the
//! way its framing and the route's changes call for (`respond`), and the
//! upstream connection goes back to the pool when it is clean.

use monoio::net::TcpStream;

use crate::{
    buffering::{self, Buffering},
    buffers::Buffers,
    error::Error,
    http::{headers::OutFraming, parse::Framing},
    relay::{self, CopyFail, Limits},
    request::{Client, ClientHead, Done, Plan},
    serve::{body::BodyOut, pages, response::Store},
    shard::{Generation, Shard},
    splice::{self, Way},
    upstream::attempt::{reach, Cx, Reached, Response},
};

pub async fn forward(
    c: &mut Client,
    shard: &Shard,
    gen: &Generation,
    plan: &Plan,
    upstream: usize,
    head: &[u8],
    upgrade: bool,
) -> Done {
    fetch(c, shard, gen, plan, upstream, head, upgrade).await.0
}

/// An answer the caching rules let the cache keep, with its whole body:
/// what `forward` fetched for `serve::cached`, which stores it.
pub type Fetched = (Store, Vec<u8>);

/// `forward`, also returning the copy of a storable answer.
pub async fn fetch(
    c: &mut Client,
    shard: &Shard,
    gen: &Generation,
    plan: &Plan,
    upstream: usize,
    head: &[u8],
    upgrade: bool,
) -> (Done, Option<Fetched>) {
    let cfg = &*gen.config;
    let cx = Cx {
        shard,
        gen,
        cfg,
        plan,
        upstream,
        up: &cfg.upstreams[upstream],
        route: &cfg.routes[plan.route.unwrap_or(0)],
        upgrade,
    };
    // Most requests have no body still to read: they skip the boxed step.
    let first = if body_pending(plan, c.buf.len() - plan.len) {
        Box::pin(body_first(&cx, c)).await
    } else {
        Ok(None)
    };
    let _held = match first {
        Ok(held) => held,
        Err(e) => {
            return (
                Box::pin(pages::fail(c, shard, Some(plan), e, None)).await,
                None,
            )
        }
    };
    let (body_now, remaining) = body_split(plan, c.buf.len() - plan.len);
    // The head and the body bytes that came with it go out in one write,
    // from a pooled buffer (given back below).
    let mut first = shard.small.take();
    first.extend_from_slice(head);
    first.extend_from_slice(&c.buf[plan.len..plan.len + body_now]);
    let asked = monoio::time::Instant::now();
    let reached = reach(&cx, c, &mut first, remaining).await;
    shard.small.give(first);
    if reached.is_ok() {
        let name = gen.ids.upstreams[upstream].0;
        shard.stats.upstream_time(name, asked.elapsed());
    }
    let consumed = consumed(plan, body_now);
    let mut r = match reached {
        Ok(r) => r,
        Err(f) => {
            // Nothing went to the client yet: the error is answered, and
            // the connection goes on when the request was read whole.
            let whole = f.whole.then_some(consumed);
            let mut done = Box::pin(pages::fail(c, shard, Some(plan), f.error, whole)).await;
            done.server = f.server.map(|s| (upstream, s));
            return (done, None);
        }
    };
    // Sticky: the cookie names the server that answered.
    let bal = &gen.balancers[upstream];
    if let Some(cookie) = bal.set_cookie(r.server, &plan.key) {
        r.resp.client_head.add(b"Set-Cookie", cookie.as_bytes());
    }
    let mut done = Done {
        status: r.resp.status,
        body_bytes: 0,
        server: Some((upstream, r.server)),
        keep: false,
        consumed,
        error: None,
    };
    let gid = cx.up.servers[r.server].address;
    if r.resp.tunnel {
        done.consumed = c.buf.len();
        Box::pin(tunnel(&cx, c, &mut r)).await;
        done.body_bytes = c.sent;
        return (done, None);
    }
    let (result, clean, fetched) = respond(&cx, c, &mut r.s, &mut r.resp).await;
    shard.heads.give(std::mem::take(&mut r.resp.buf));
    done.body_bytes = c.sent;
    match result {
        Ok(()) => {
            done.keep = r.resp.client_keep && r.resp.out != OutFraming::Close;
            if clean {
                shard.pool.put(gid, r.s, cx.up.keepalive);
            }
        }
        // A client that went away is logged 499 (`exchange`).
        Err(e) => {
            done.keep = false;
            done.error = Some(e);
        }
    }
    (done, fetched)
}

/// What of the body is read before any upstream is picked: all of it when
/// it fits `client_body_buffer` (a slow client then holds no upstream
/// connection; the reservation is held until the request ends), and a
/// chunked body's buffered part is checked (a bad chunk never reaches the
/// upstream; later chunks are checked as they stream, and a bad one aborts
/// the upstream connection).
async fn body_first<'s>(
    cx: &Cx<'s>,
    c: &mut Client,
) -> Result<Option<buffering::Reserved<'s>>, Error> {
    let (limits, plan) = (&cx.cfg.limits, cx.plan);
    let buffering = Buffering {
        max: limits.client_body_buffer,
        body_timeout: limits.client_body_timeout,
        send_timeout: limits.client_send_timeout,
        budget: &cx.shard.bodies,
        spare: &cx.shard.heads,
    };
    let held = buffering::read_whole(c, plan, &buffering).await?;
    if plan.framing == Framing::Chunked {
        precheck_chunked(&c.buf[plan.len..], limits.max_request_body)?;
    }
    Ok(held)
}

/// Whether some of the request's body is still to come from the client,
/// `in_buf` bytes of it being in the buffer after the head.
fn body_pending(plan: &Plan, in_buf: usize) -> bool {
    plan.framing == Framing::Chunked || body_split(plan, in_buf).1 > 0
}

/// Of a body with a length, the bytes that came with the head (sent with
/// it) and the bytes still to read.
fn body_split(plan: &Plan, in_buf: usize) -> (usize, u64) {
    match plan.framing {
        Framing::Length(n) => {
            let now = n.min(in_buf as u64);
            (now as usize, n - now)
        }
        _ => (0, 0),
    }
}

/// The request's bytes in the client buffer once it was read whole: after
/// a chunked body, copy_chunked left the buffer as head + next request.
fn consumed(plan: &Plan, body_now: usize) -> usize {
    if plan.framing == Framing::Chunked {
        plan.len
    } else {
        plan.len + body_now
    }
}

/// After a `101`: the upstream's head (and anything after it) goes to the
/// client, then bytes flow both ways until either side ends.
async fn tunnel(cx: &Cx<'_>, c: &mut Client, r: &mut Reached<'_>) {
    // A 101's head is always text (`interpret`): only an HTTP/1.1
    // connection becomes a tunnel.
    let Some(mut head) = std::mem::take(&mut r.resp.client_head).into_text() else {
        return;
    };
    let after = &r.resp.buf[r.resp.len..];
    head.extend_from_slice(after);
    let head = (head, after.len());
    let early = c.buf[cx.plan.len..].to_vec();
    let idle = cx.up.read_timeout;
    crate::tunnel::after_101(c, cx.shard, &mut r.s, head, early, idle).await;
    cx.shard.heads.give(std::mem::take(&mut r.resp.buf));
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

/// Sends the response head and body to the client, by the body's framing
/// and what the route changes, counting the body bytes that went out in
/// `c.sent`. Returns the error, if any; whether the upstream connection
/// ended clean (reusable); and the copy of a storable answer.
async fn respond(
    cx: &Cx<'_>,
    c: &mut Client,
    s: &mut TcpStream,
    resp: &mut Response,
) -> (Result<(), Error>, bool, Option<Fetched>) {
    let shard = cx.shard;
    let down = Limits {
        read: cx.up.read_timeout,
        write: cx.cfg.limits.client_send_timeout,
    };
    let framing = resp.framing;
    let out = resp.out;
    // Body bytes that came with the head.
    let pending = resp.buf.len().saturating_sub(resp.len);
    let mut clean = resp.keep_alive;
    let client_head = std::mem::take(&mut resp.client_head);
    let mut fetched = None;
    let result: Result<(), CopyFail> = match framing {
        // The route's error page replaces the answer (status kept); the
        // upstream connection is reused only when no body was due.
        _ if resp.changes.page => {
            clean &= framing == Framing::Empty && pending == 0;
            if let Some(text) = client_head.into_text() {
                shard.small.give(text);
            }
            let (status, keep) = (resp.status, resp.client_keep);
            Box::pin(write_page(cx, c, status, keep)).await
        }
        // gzip and/or a copy for the cache, as the body flows.
        _ if resp.changes.gzip || resp.changes.store.is_some() => {
            let changed = relay_changed(cx, c, s, resp, client_head, down);
            Box::pin(changed).await.map(|(tidy, copy)| {
                clean &= tidy;
                fetched = copy;
            })
        }
        Framing::Empty => {
            clean &= pending == 0;
            write_head(c, &shard.small, client_head, down).await
        }
        Framing::Length(n) => {
            let now = (n as usize).min(pending);
            clean &= pending <= n as usize;
            let first = resp.len..resp.len + now;
            let head = write_head_and(c, &shard.small, client_head, (&mut resp.buf, first), down);
            match head.await {
                Ok(()) => {
                    c.sent += now as u64;
                    let rest = n - now as u64;
                    let copy = splice::copy_body(
                        (&shard.pipes, &shard.relay),
                        &mut c.stream,
                        s,
                        Way::Down(&mut c.sent),
                        rest,
                        down,
                    );
                    Box::pin(copy).await
                }
                Err(e) => Err(e),
            }
        }
        // Bodies ringside has to look at: through two relay buffers.
        Framing::Chunked | Framing::UntilClose => {
            match write_head(c, &shard.small, client_head, down).await {
                Ok(()) => {
                    let copy = relay_framed(
                        shard,
                        c,
                        s,
                        framing,
                        &resp.buf[resp.len..],
                        out == OutFraming::Chunked,
                        down,
                    );
                    let (r, tidy) = Box::pin(copy).await;
                    clean &= tidy;
                    r
                }
                Err(e) => Err(e),
            }
        }
    };
    (result.map_err(CopyFail::downward), clean, fetched)
}

/// The route's error page for `status`, in place of the upstream's answer.
async fn write_page(cx: &Cx<'_>, c: &mut Client, status: u16, keep: bool) -> Result<(), CopyFail> {
    let (route, plan) = (Some(cx.route), cx.plan);
    let page = pages::error_answer(c, cx.shard, route, status, keep, Some(plan), plan.head_only);
    let (page, n) = page.await;
    page.send(c, cx.shard).await.map_err(CopyFail::Write)?;
    if !plan.head_only {
        c.sent += n as u64;
    }
    Ok(())
}

/// The head, then a body that gzip changes or the cache copies as it flows.
/// Returns whether the upstream connection ended clean, and the copy of a
/// storable answer.
async fn relay_changed(
    cx: &Cx<'_>,
    c: &mut Client,
    s: &mut TcpStream,
    resp: &mut Response,
    client_head: ClientHead,
    down: Limits,
) -> Result<(bool, Option<Fetched>), CopyFail> {
    let shard = cx.shard;
    write_head(c, &shard.small, client_head, down).await?;
    let (framing, changes) = (resp.framing, &mut resp.changes);
    let cap = shard.cache.borrow().entry_cap();
    let fits = !matches!(framing, Framing::Length(n) if n > cap as u64);
    let tee = changes.store.as_ref().filter(|_| fits).map(|_| cap);
    let mut body = BodyOut::new(changes.gzip, resp.out, tee);
    let pending = &resp.buf[resp.len..];
    let bufs = &shard.relay;
    let (to, lim) = (&mut c.stream, (down, &mut c.sent));
    let tidy = crate::serve::body::relay(s, to, framing, pending, &mut body, bufs, lim).await?;
    let copy = changes.store.take().zip(body.take_copy());
    Ok((tidy, copy))
}

/// A chunked or close-delimited body, decoded and (for an HTTP/1.1 client)
/// re-chunked through two relay buffers. Returns whether the upstream
/// connection ended clean.
async fn relay_framed(
    shard: &Shard,
    c: &mut Client,
    s: &mut TcpStream,
    framing: Framing,
    pending: &[u8],
    rechunk: bool,
    down: Limits,
) -> (Result<(), CopyFail>, bool) {
    let (inbuf, outbuf) = (shard.relay.take(), shard.relay.take());
    let (from, to, lim) = (s, &mut c.stream, (down, &mut c.sent));
    let (r, inbuf, outbuf, clean) = if framing == Framing::Chunked {
        let (r, i, o) =
            relay::copy_chunked(from, to, pending, inbuf, outbuf, rechunk, 0, lim).await;
        let clean = matches!(&r, Ok(leftover) if leftover.is_empty());
        (r.map(drop), i, o, clean)
    } else {
        let (r, i, o) =
            relay::copy_until_close(from, to, pending, inbuf, outbuf, rechunk, lim).await;
        (r, i, o, false)
    };
    shard.relay.give(inbuf);
    shard.relay.give(outbuf);
    (r, clean)
}

/// Writes the response head to the client (with its listener's fields),
/// noting in `sent` that it went out.
async fn write_head(
    c: &mut Client,
    heads: &Buffers,
    head: ClientHead,
    down: Limits,
) -> Result<(), CopyFail> {
    write_head_and(c, heads, head, (&mut Vec::new(), 0..0), down).await
}

/// `write_head` with the first body bytes, `buf[part]`, right behind the
/// head: copied into the head's buffer when they fit there, else written
/// from where they are in the same vectored write (a copy would grow the
/// head's buffer to the size of the upstream's head read). A head built
/// for an HTTP/2 stream goes as its HEADERS frame, the bytes as DATA.
async fn write_head_and(
    c: &mut Client,
    heads: &Buffers,
    mut head: ClientHead,
    (buf, part): (&mut Vec<u8>, std::ops::Range<usize>),
    down: Limits,
) -> Result<(), CopyFail> {
    c.stamp_head(&mut head);
    let body = buf.get(part.clone()).unwrap_or_default();
    let mut head = match head {
        ClientHead::H1(text) => text,
        ClientHead::H2(built) => {
            let sent = c.stream.respond(built, body, down.write).await;
            return sent.map_err(CopyFail::Write);
        }
    };
    if body.len() <= head.capacity() - head.len() {
        head.extend_from_slice(body);
        let (w, head) = relay::write_all(&mut c.stream, head, down.write).await;
        heads.give(head);
        return w.map_err(CopyFail::Write);
    }
    let tail = std::mem::take(buf);
    let (w, head, tail) = relay::write_head_then(&mut c.stream, head, tail, part, down.write).await;
    heads.give(head);
    *buf = tail;
    w.map_err(CopyFail::Write)
}
