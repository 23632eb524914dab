//! Stage 4, answer: a GET or HEAD on a cached route: a hit is answered from the
//! worker's cache shard; a miss goes upstream through `proxy::fetch`, which
//! hands back a copy of the answer when the caching rules allow
//! (`serve::response` decides, `serve::body` keeps the copy), and this
//! module stores it: the cache's read and store are around the proxy call.
//!
//! Request coalescing: while one request fetches a key, later misses for it
//! on the same worker wait for that fetch instead of going upstream too;
//! then they answer from the entry it stored or, if the answer was not
//! storable (or the fetch failed), go upstream themselves.

use std::{rc::Rc, time::Instant};

use bytes::Bytes;

use super::{body::BodyOut, content_length, gzip, own_answer_keep, persist, response::Store, Own};
use crate::{
    cache::{Entry, Join, Lookup, Status},
    error::Error,
    http::{
        headers::{HeadOut, OutFraming},
        parse::{self, Scan, MAX_HEADERS},
    },
    proxy, relay,
    request::{Client, Done, Plan},
    shard::{Generation, Shard},
};

pub async fn serve(
    c: &mut Client,
    shard: &Shard,
    gen: &Generation,
    plan: &Plan,
    upstream: usize,
    head: &[u8],
    upgrade: bool,
) -> Done {
    let Some(creq) = plan.cache.as_ref() else {
        return proxy::forward(c, shard, gen, plan, upstream, head, upgrade).await;
    };
    if creq.bypass {
        creq.status.set(Status::Bypass);
        return proxy::forward(c, shard, gen, plan, upstream, head, upgrade).await;
    }
    let mut waited = false;
    loop {
        match lookup(shard, c, plan, &creq.key) {
            Lookup::Hit(entry) => {
                creq.status.set(Status::Hit);
                return answer_hit(c, shard, gen, plan, &entry).await;
            }
            Lookup::Expired => creq.status.set(Status::Expired),
            Lookup::Miss => {}
        }
        if waited {
            let (done, fetched) = proxy::fetch(c, shard, gen, plan, upstream, head, upgrade).await;
            if let Some((answer, body)) = fetched {
                store(shard, plan, &c.buf, answer, body);
            }
            return done;
        }
        match shard.flights.join(&creq.key) {
            Join::Lead(flight) => {
                let (done, fetched) =
                    proxy::fetch(c, shard, gen, plan, upstream, head, upgrade).await;
                if let Some((answer, body)) = fetched {
                    store(shard, plan, &c.buf, answer, body);
                }
                // Waiters wake once the entry is in.
                drop(flight);
                return done;
            }
            Join::Wait(done) => {
                // Closed (never sent on) when the leading fetch ends.
                let _ = done.recv().await;
                waited = true;
            }
        }
    }
}

/// A lookup that also checks the entry's `Vary` fields against this
/// request (re-reading its head only when the entry has some).
fn lookup(shard: &Shard, c: &Client, plan: &Plan, key: &[u8]) -> Lookup {
    let found = shard.cache.borrow_mut().lookup(key, Instant::now());
    match found {
        Lookup::Hit(e) if !e.vary.is_empty() => {
            let mut headers = [parse::NO_FIELD; MAX_HEADERS];
            let max = plan.len + 1;
            match parse::request(&c.buf[..plan.len], &mut headers, &mut Scan::default(), max) {
                Ok(Some(req)) if !e.varies_with(req.headers) => Lookup::Hit(e),
                _ => Lookup::Miss,
            }
        }
        other => other,
    }
}

/// Keeps an answer whose body was read whole.
fn store(shard: &Shard, plan: &Plan, client: &[u8], store: Store, body: Vec<u8>) {
    let Some(creq) = plan.cache.as_ref() else {
        return;
    };
    let mut headers = [parse::NO_FIELD; MAX_HEADERS];
    let max = plan.len + 1;
    let req = parse::request(&client[..plan.len], &mut headers, &mut Scan::default(), max);
    let Ok(Some(req)) = req else {
        return;
    };
    let vary = store
        .vary
        .into_iter()
        .map(|name| {
            let value = req.header(&name).map(Box::<[u8]>::from);
            (name, value)
        })
        .collect();
    let entry = Entry {
        status: store.status,
        head: store.head.into(),
        body: Bytes::from(body),
        expires: Instant::now() + store.validity,
        vary,
        etag: store.etag,
        media: store.media,
        as_is: store.as_is,
    };
    shard.cache.borrow_mut().insert(&creq.key, entry);
}

/// Answers from a stored entry: its head, `Content-Length` (or gzip), then
/// the shared body, written without a copy.
async fn answer_hit(
    c: &mut Client,
    shard: &Shard,
    gen: &Generation,
    plan: &Plan,
    e: &Rc<Entry>,
) -> Done {
    let cfg = &*gen.config;
    let route = plan.route.map(|r| &cfg.routes[r]);
    let (keep, consumed) = own_answer_keep(c, shard, plan);
    let no_body = matches!(e.status, 204 | 304);
    let len = e.body.len() as u64;
    let zip = plan.accepts_gzip
        && route.and_then(|r| r.gzip.as_ref()).is_some_and(|g| {
            let media = Some(e.media.as_bytes());
            gzip::applies(g, e.status, plan.head_only, media, e.as_is, Some(len))
        });
    let framing = gzip::framing(zip, plan.minor);
    let keep = keep && framing != OutFraming::Close;
    let mut out = Own::resume(c, shard, &e.head);
    if let Some(tag) = &e.etag {
        let tag = if zip {
            gzip::weak_etag(tag)
        } else {
            tag[..].into()
        };
        out.field(b"ETag", &tag);
    }
    if zip {
        out.field(b"Content-Encoding", b"gzip");
        if !e.vary.iter().any(|(name, _)| &**name == "accept-encoding") {
            out.field(b"Vary", b"Accept-Encoding");
        }
    } else if !no_body {
        content_length(&mut out, len);
    }
    out.field(b"X-Cache-Status", Status::Hit.as_bytes());
    let route_fields = route.map_or(&[][..], |r| &r.add_response_headers[..]);
    for (k, v) in route_fields {
        out.field(k.as_bytes(), v.as_bytes());
    }
    out.end(framing, persist(keep, plan.minor));

    let limit = cfg.limits.client_send_timeout;
    let status = e.status;
    let mut done = Done {
        status,
        body_bytes: 0,
        server: None,
        keep: false,
        consumed,
        error: None,
    };
    let bodiless = plan.head_only || no_body || len == 0;
    if !zip && !bodiless {
        // Head and body in one writev: one syscall, one segment for a small
        // answer, and the body is not copied (two writes make the client
        // read twice).
        match out.send_then(c, shard, e.body.clone()).await {
            Ok(()) => {
                done.body_bytes = len;
                done.keep = keep;
            }
            Err(f) => done.error = Some(fail(f)),
        }
        return done;
    }
    if let Err(f) = out.send(c, shard).await {
        done.error = Some(fail(f));
        return done;
    }
    if bodiless {
        done.keep = keep;
        return done;
    }
    let sent = compress(c, shard, &e.body, framing, limit).await;
    match sent {
        Ok(n) => {
            done.body_bytes = n;
            done.keep = keep;
        }
        Err(f) => done.error = Some(fail(f)),
    }
    done
}

fn fail(f: relay::Fail) -> Error {
    f.client().after_head()
}

/// gzips a stored body on its way out, one relay buffer at a time,
/// counting the bytes written in `c.sent`.
async fn compress(
    c: &mut Client,
    shard: &Shard,
    body: &Bytes,
    framing: OutFraming,
    limit: std::time::Duration,
) -> relay::Step<u64> {
    let mut z = BodyOut::new(true, framing, None);
    let mut out = shard.relay.take();
    let step = shard.relay.size();
    let mut pieces = body.chunks(step).peekable();
    let result = loop {
        out.clear();
        match pieces.next() {
            Some(p) => z.push(p, &mut out),
            None => break Ok(z.sent),
        }
        if pieces.peek().is_none() {
            z.finish(&mut out);
        }
        let (w, b) = relay::write_all(&mut c.stream, out, limit).await;
        out = b;
        if let Err(e) = w {
            break Err(e);
        }
        c.sent = z.sent;
    };
    shard.relay.give(out);
    result
}
