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

use crate::{
    config::Route,
    http::{
        headers::{end_head, field, status_line, OutFraming, Persist},
        respond::{reason, with_date},
    },
    relay,
    request::{Client, Done, Plan},
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

/// The status line and the fields every answer of ringside's own carries.
pub fn start_head(out: &mut Vec<u8>, status: u16) {
    status_line(out, status, reason(status).as_bytes());
    field(out, b"Server", b"ringside");
    with_date(|d| field(out, b"Date", d));
}

/// The route's `add_response_headers`, the framing and connection fields,
/// then the blank line.
pub fn end_own_head(
    out: &mut Vec<u8>,
    route: Option<&Route>,
    framing: OutFraming,
    keep: bool,
    minor: u8,
) {
    if let Some(r) = route {
        for (k, v) in &r.add_response_headers {
            field(out, k.as_bytes(), v.as_bytes());
        }
    }
    end_head(out, framing, persist(keep, minor));
}

/// The `Connection` field an answer needs.
pub fn persist(keep: bool, minor: u8) -> Persist {
    match (keep, minor) {
        (false, _) => Persist::Close,
        (true, 0) => Persist::KeepAlive,
        (true, _) => Persist::Default,
    }
}

pub fn content_length(out: &mut Vec<u8>, n: u64) {
    let mut b = itoa::Buffer::new();
    field(out, b"Content-Length", b.format(n).as_bytes());
}

/// Writes a complete small answer (head and body in `out`) and makes the
/// exchange's `Done`.
pub async fn send_own(
    c: &mut Client,
    shard: &Shard,
    plan: &Plan,
    mut out: Vec<u8>,
    status: u16,
    body_bytes: usize,
    (keep, consumed): (bool, usize),
) -> Done {
    let limit = shard.gen().config.limits.client_send_timeout;
    c.stamp(&mut out);
    let (w, out) = relay::write_all(&mut c.stream, out, limit).await;
    shard.heads.give(out);
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
