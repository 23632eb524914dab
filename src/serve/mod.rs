//! Stage 4, answer: the route actions other than plain proxying, and the
//! changes ringside makes to answers on their way out:
//!
//! - `cached`: a cached route's GET/HEAD (hit, or a coalesced miss that
//!   goes through `proxy::forward`); the store itself is `crate::cache`.
//! - `static_files`: the `static` action (nginx `alias`).
//! - `redirect`: the `redirect` action.
//! - `response`: what a route does to an upstream answer's head (gzip,
//!   `X-Cache-Status`, `proxy_redirect`, storing, `error_pages`).
//! - `body`: a body on its way out through gzip / chunking / the cache tee.
//! - `gzip`: the compression rules and the deflate stream.
//! - `pages`: `error_pages`.

pub mod body;
pub mod cached;
pub mod gzip;
pub mod pages;
pub mod redirect;
pub mod response;
pub mod static_files;

use bytes::Bytes;

use crate::{
    config::Route,
    http::{
        headers::{HeadOut, OutFraming, Persist},
        respond::{reason, with_date},
    },
    http2::head::Native,
    relay,
    request::{Client, ClientHead, Done, Plan},
    shard::Shard,
};

/// How an answer of ringside's own ends the exchange: whether the
/// connection may stay open, and how many buffered bytes were the request.
/// It stays open only when the request's body, if any, came with its head
/// (nothing of it is left unread on the socket).
pub fn own_answer_keep(c: &Client, shard: &Shard, plan: &Plan) -> (bool, usize) {
    let whole = plan.whole_in(c.buf.len());
    let keep = plan.keep_alive && whole.is_some() && !shard.draining.get();
    (keep, whole.unwrap_or(plan.len))
}

/// An answer of ringside's own: its head written for the client's
/// protocol (HTTP/1.1 text, or built for an HTTP/2 stream, never text
/// parsed back), then its body.
pub struct Own {
    head: ClientHead,
    /// The body behind a built head (a text head carries its body behind
    /// itself, in its own buffer).
    body: Vec<u8>,
}

impl Own {
    /// A head with the status line and the fields every answer of
    /// ringside's own carries; its buffers come from the head pool.
    pub fn start(c: &Client, shard: &Shard, status: u16) -> Own {
        let (head, body) = if c.stream.is_h2() {
            (ClientHead::H2(Native::new()), shard.heads.take())
        } else {
            (ClientHead::H1(shard.heads.take()), Vec::new())
        };
        let mut own = Own { head, body };
        own.status(status, reason(status).as_bytes());
        own.field(b"Server", b"ringside");
        with_date(|d| own.field(b"Date", d));
        own
    }

    /// A head that starts as `stored`, a status line and fields as text
    /// (`cache::Entry::head`): copied behind a text head, added field by
    /// field to a built one.
    pub fn resume(c: &Client, shard: &Shard, stored: &[u8]) -> Own {
        if !c.stream.is_h2() {
            let mut text = shard.heads.take();
            text.extend_from_slice(stored);
            return Own {
                head: ClientHead::H1(text),
                body: Vec::new(),
            };
        }
        let mut own = Own {
            head: ClientHead::H2(Native::new()),
            body: shard.heads.take(),
        };
        let mut lines = stored.split(|&b| b == b'\n').map(|l| l.trim_ascii_end());
        // "HTTP/1.1 200 OK": the status is bytes 9 to 12.
        let status = lines.next().and_then(|l| l.get(9..12));
        let status = status.and_then(|s| std::str::from_utf8(s).ok()?.parse().ok());
        own.status(status.unwrap_or(500), b"");
        for line in lines {
            if let Some(colon) = line.iter().position(|&b| b == b':') {
                own.field(&line[..colon], line[colon + 1..].trim_ascii_start());
            }
        }
        own
    }

    /// Where the body goes, once the head is ended: behind a text head,
    /// apart from a built one.
    pub fn body(&mut self) -> &mut Vec<u8> {
        match &mut self.head {
            ClientHead::H1(text) => text,
            ClientHead::H2(_) => &mut self.body,
        }
    }

    /// Gives the buffers back unsent.
    pub fn discard(self, shard: &Shard) {
        if let ClientHead::H1(text) = self.head {
            shard.heads.give(text);
        }
        shard.heads.give(self.body);
    }

    /// Sends the head and the body written so far; gives the buffers back.
    pub async fn send(self, c: &mut Client, shard: &Shard) -> relay::Step<()> {
        self.send_then(c, shard, Bytes::new()).await
    }

    /// `send`, with `tail` as the body (none written): behind a text head
    /// in one vectored write, never copied there.
    pub async fn send_then(self, c: &mut Client, shard: &Shard, tail: Bytes) -> relay::Step<()> {
        let limit = shard.gen().config.limits.client_send_timeout;
        let Own { mut head, body } = self;
        c.stamp_head(&mut head);
        match head {
            ClientHead::H1(text) if tail.is_empty() => {
                let (w, text) = relay::write_all(&mut c.stream, text, limit).await;
                shard.heads.give(text);
                w
            }
            ClientHead::H1(text) => {
                let part = 0..tail.len();
                let write = relay::write_head_then(&mut c.stream, text, tail, part, limit);
                let (w, text, _) = write.await;
                shard.heads.give(text);
                w
            }
            ClientHead::H2(built) => {
                let data = if tail.is_empty() {
                    &body[..]
                } else {
                    &tail[..]
                };
                let sent = c.stream.respond(built, data, limit).await;
                shard.heads.give(body);
                sent
            }
        }
    }
}

impl HeadOut for Own {
    fn status(&mut self, status: u16, reason: &[u8]) {
        self.head.out().status(status, reason);
    }

    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.head.out().field(name, value);
    }

    fn end(&mut self, framing: OutFraming, persist: Persist) {
        self.head.out().end(framing, persist);
    }
}

/// The route's `add_response_headers`, the framing and connection fields,
/// then the end of the head.
pub fn end_own_head(
    out: &mut impl HeadOut,
    route: Option<&Route>,
    framing: OutFraming,
    keep: bool,
    minor: u8,
) {
    if let Some(r) = route {
        for (k, v) in &r.add_response_headers {
            out.field(k.as_bytes(), v.as_bytes());
        }
    }
    out.end(framing, persist(keep, minor));
}

/// The `Connection` field an answer needs.
pub fn persist(keep: bool, minor: u8) -> Persist {
    match (keep, minor) {
        (false, _) => Persist::Close,
        (true, 0) => Persist::KeepAlive,
        (true, _) => Persist::Default,
    }
}

pub fn content_length(out: &mut impl HeadOut, n: u64) {
    let mut b = itoa::Buffer::new();
    out.field(b"Content-Length", b.format(n).as_bytes());
}

/// Sends a complete small answer (its body written in `out`) and makes the
/// exchange's `Done`.
pub async fn send_own(
    c: &mut Client,
    shard: &Shard,
    plan: &Plan,
    out: Own,
    status: u16,
    body_bytes: usize,
    (keep, consumed): (bool, usize),
) -> Done {
    let w = out.send(c, shard).await;
    Done {
        status,
        body_bytes: if plan.head_only { 0 } else { body_bytes as u64 },
        server: None,
        keep: keep && w.is_ok(),
        consumed,
        error: None,
    }
}

/// The Content-Type of a file, by its extension (nginx's mime.types for
/// the common ones); unknown: `application/octet-stream`.
pub fn content_type(path: &std::path::Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" | "shtml" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "application/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "text" | "log" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "text/xml; charset=utf-8",
        "rss" => "application/rss+xml",
        "atom" => "application/atom+xml",
        "svg" | "svgz" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "bmp" => "image/bmp",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}
