//! Stage 4, answer (proxied): pick a server, reach it (a pooled
//! connection or a new one), send the request and its body, and read the
//! response head, trying other servers by the retry rules when one fails.

use std::{mem::take, time::Duration};

use monoio::net::TcpStream;

use super::connect::connect;
use crate::{
    balance::{Active, Balancer},
    config::{Config, Route, Upstream},
    error::{Error, Fault},
    http::{
        headers::{client_response, interim, OutFraming, Persist},
        parse::{self, Framing},
        respond::{with_date, CONTINUE},
    },
    http2::head::Native,
    relay::{self, Fail, Limits},
    request::{Client, ClientHead, Plan},
    serve::response,
    shard::{Generation, Shard},
    splice::{self, Way},
};

/// What every step of a proxied request reads: the worker, the config
/// generation the request started under, and the route and upstream it
/// goes to.
pub struct Cx<'a> {
    pub shard: &'a Shard,
    pub gen: &'a Generation,
    pub cfg: &'a Config,
    pub plan: &'a Plan,
    pub upstream: usize,
    pub up: &'a Upstream,
    pub route: &'a Route,
    /// A WebSocket upgrade may be answered with `101`.
    pub upgrade: bool,
}

/// A server that answered: its connection, and the response head.
pub struct Reached<'a> {
    pub s: TcpStream,
    pub server: usize,
    pub resp: Response,
    /// Counts the request against the server (least_conn) until dropped.
    pub active: Active<'a>,
}

/// No server answered; nothing was sent to the client.
pub struct Failed {
    pub error: Error,
    /// The server tried last.
    pub server: Option<usize>,
    /// The client's request was read whole (its body is not left on the
    /// socket), so the connection can go on after the error answer.
    pub whole: bool,
}

/// Sends the request (`first`: its head and the body bytes that came with
/// it; `remaining`: body bytes still on the client socket) to a server,
/// and reads its response head. A failure goes to the retry rules
/// (`Tries`); a pooled connection the server had closed is not a failure:
/// the request goes out again on another connection.
pub async fn reach<'a>(
    cx: &Cx<'a>,
    c: &mut Client,
    first: &mut Vec<u8>,
    remaining: u64,
) -> Result<Reached<'a>, Failed> {
    let (shard, up, plan) = (cx.shard, cx.up, cx.plan);
    let bal = &cx.gen.balancers[cx.upstream];
    let mut tries = Tries {
        left: up.retries,
        failed: Vec::new(),
        last: None,
        whole: remaining == 0 && plan.framing != Framing::Chunked,
    };
    let mut last = None;
    loop {
        let usable = |i: usize| cx.gen.health.is_up(cx.upstream, i) && !tries.failed.contains(&i);
        let everyone = tries.failed.is_empty() && cx.gen.health.all_up(cx.upstream);
        let Some(server) = bal.pick(&plan.key, everyone, usable) else {
            // 503 when every server is out; else the last failure.
            let e = tries.last.unwrap_or_else(Error::no_server);
            return Err(tries.give_up(e, last));
        };
        last = Some(server);
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
                    Err(e) => return Err(tries.give_up(e, last)),
                },
            },
        };
        match attempt(cx, c, &mut s, first, remaining, reused, &mut tries.whole).await {
            Ok(resp) => {
                return Ok(Reached {
                    s,
                    server,
                    resp,
                    active,
                })
            }
            Err(Attempt::Stale) => continue,
            // The server may have acted on what it got: only an idempotent
            // request that can go out again as it was goes to another.
            Err(Attempt::Fail { error, replay }) => {
                let again = replay && plan.idempotent;
                if let Err(e) = tries.failed(shard, up, bal, server, error, again) {
                    return Err(tries.give_up(e, last));
                }
            }
        }
    }
}

/// The retry rules of one request: `retries` more tries after the first,
/// never twice on the same server.
struct Tries {
    left: u32,
    /// Servers that failed this request.
    failed: Vec<usize>,
    last: Option<Error>,
    /// Nothing of the client's request is left unread.
    whole: bool,
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

    fn give_up(&self, error: Error, server: Option<usize>) -> Failed {
        Failed {
            error,
            server,
            whole: self.whole,
        }
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
pub struct Response {
    pub buf: Vec<u8>,
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    pub keep_alive: bool,
    pub client_head: ClientHead,
    pub out: OutFraming,
    pub client_keep: bool,
    pub tunnel: bool,
    /// What the route does to this answer (serve/response.rs).
    pub changes: response::Changes,
}

/// One try on one server. `whole` is set once the request body has been
/// read from the client to its end.
async fn attempt(
    cx: &Cx<'_>,
    c: &mut Client,
    s: &mut TcpStream,
    first: &mut Vec<u8>,
    remaining: u64,
    reused: bool,
    whole: &mut bool,
) -> Result<Response, Attempt> {
    let (shard, plan, up, limits) = (cx.shard, cx.plan, cx.up, &cx.cfg.limits);
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

    // The rest of the request body, streamed.
    let told_continue = plan.expect_continue && c.buf.len() == plan.len;
    if told_continue {
        let write = relay::write_all(&mut c.stream, CONTINUE.to_vec(), limits.client_send_timeout);
        let (w, _) = Box::pin(write).await;
        if let Err(e) = w {
            return Err(Attempt::fail(e.client()));
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
            let copy = splice::copy_body(
                (&shard.pipes, &shard.relay),
                &mut c.stream,
                s,
                Way::Up,
                remaining,
                upward,
            );
            Box::pin(copy)
                .await
                .map_err(|e| Attempt::fail(e.upward()).not_replayable())?;
        }
        Framing::Chunked => {
            streamed = true;
            let (inbuf, outbuf) = (shard.relay.take(), shard.relay.take());
            let max = limits.max_request_body;
            let pending = &c.buf[plan.len..];
            let mut forwarded = 0;
            let lim = (upward, &mut forwarded);
            let copy =
                relay::copy_chunked(&mut c.stream, s, pending, inbuf, outbuf, true, max, lim);
            let (r, inbuf, outbuf) = Box::pin(copy).await;
            shard.relay.give(inbuf);
            shard.relay.give(outbuf);
            let leftover = r.map_err(|e| Attempt::fail(e.upward()).not_replayable())?;
            // What followed the body is the next request.
            c.buf.truncate(plan.len);
            c.buf.extend_from_slice(&leftover);
        }
        _ => {}
    }
    *whole = true;

    read_response(cx, c, s, reused && !streamed)
        .await
        .map_err(|a| {
            if streamed || told_continue {
                a.not_replayable()
            } else {
                a
            }
        })
}

/// Reads the response head; interim `1xx` answers are passed on (or not)
/// as they come. While it waits, a client that closes its connection ends
/// the wait: the upstream request is cancelled (its connection dropped).
async fn read_response(
    cx: &Cx<'_>,
    c: &mut Client,
    s: &mut TcpStream,
    stale_ok: bool,
) -> Result<Response, Attempt> {
    let (shard, up) = (cx.shard, cx.up);
    let mut buf = shard.heads.take();
    let mut got_any = false;
    // Cleared once an interim response went to the client.
    let mut replay = true;
    loop {
        if !buf.is_empty() {
            match interpret(&buf, cx, &c.buf, c.stream.is_h2()) {
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
                        let lim = cx.cfg.limits.client_send_timeout;
                        let (w, _) = Box::pin(relay::write_all(&mut c.stream, bytes, lim)).await;
                        if let Err(e) = w {
                            shard.heads.give(buf);
                            return Err(Attempt::Fail {
                                error: e.client(),
                                replay,
                            });
                        }
                        replay = false;
                    }
                    continue;
                }
                Ok(Parsed::Final(mut resp)) => {
                    resp.buf = buf;
                    if let Err(error) = first_body(s, &mut resp, up.read_timeout).await {
                        shard.heads.give(take(&mut resp.buf));
                        return Err(Attempt::Fail {
                            error,
                            replay: false,
                        });
                    }
                    return Ok(resp);
                }
            }
        }
        let read = relay::read_more(s, take(&mut buf), up.read_timeout);
        let (r, b) = match c.stream.socket() {
            Some(client) => monoio::select! {
                r = read => r,
                _ = relay::client_left(client) => {
                    // The read is cancelled with its buffer.
                    let error = Error::client_left();
                    return Err(Attempt::Fail { error, replay: false });
                }
            },
            None => read.await,
        };
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

/// Waits for the first bytes of a small Content-Length body that did not
/// come with its head (one read, bounded by the upstream's read timeout),
/// when the whole body fits the head's buffer: head and body then leave in
/// one write and one packet, not a packet with the head alone and one with
/// the body for the client to acknowledge (nginx holds a small head back
/// the same way, `postpone_output`). A failure here is answered, not
/// retried: the server has answered.
async fn first_body(s: &mut TcpStream, resp: &mut Response, limit: Duration) -> Result<(), Error> {
    let Framing::Length(n) = resp.framing else {
        return Ok(());
    };
    let room = resp.buf.capacity() - resp.buf.len();
    if resp.buf.len() > resp.len || n > room as u64 || resp.changes.page || resp.tunnel {
        return Ok(());
    }
    let (got, buf) = relay::read_more(s, take(&mut resp.buf), limit).await;
    resp.buf = buf;
    match got {
        Ok(0) => Err(Error::upstream_closed()),
        Ok(_) => Ok(()),
        Err(f) => Err(f.upstream()),
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

/// Parses what the upstream sent so far and, for a final answer, writes
/// the head the client gets.
fn interpret(buf: &[u8], cx: &Cx<'_>, client: &[u8], h2: bool) -> Result<Parsed, Error> {
    let (plan, route) = (cx.plan, cx.route);
    let mut headers = [parse::NO_FIELD; parse::MAX_RESPONSE_HEADERS];
    let Some(res) = parse::response(buf, &mut headers, plan.head_only)? else {
        return Ok(Parsed::Partial);
    };
    let tunnel = res.status == 101;
    if tunnel && !cx.upgrade {
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
    let rcx = response::Context {
        plan,
        route,
        upstream: cx.up,
        client,
    };
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
    let draining = cx.shard.draining.get();
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
    // Built for an HTTP/2 stream, else text (pooled: the head's writer
    // gives it back).
    let mut client_head = match h2 && !tunnel {
        true => ClientHead::H2(Native::new()),
        false => ClientHead::H1(cx.shard.small.take()),
    };
    if changed {
        response::write_head(client_head.out(), &res, &rcx, &mut changes, out, persist);
    } else {
        let add = &route.add_response_headers;
        client_response(client_head.out(), &res, out, persist, add);
    }
    // Every answer carries a Date (RFC 9110 section 6.6.1), as nginx adds.
    if !res.has_date {
        with_date(|d| client_head.add(b"Date", d));
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
