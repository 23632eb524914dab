//! `error_pages`: a route's own page for an error status, sent with the
//! original status, for ringside's own errors on the route (404 of a static
//! file, 502/503/504 of a failed upstream) and for upstream answers with
//! that status alike.
//!
//! The page is read when it is needed, through io_uring (open, statx, one
//! read), so an edited page shows at once and a reload needs no cache
//! invalidation; the page cache keeps it in memory. A page that cannot be
//! read then (it was there for `--check`) falls back to ringside's built-in
//! page for the status, and so does one that is not a regular file or is
//! larger than [`MAX_PAGE`].

use std::{os::unix::fs::OpenOptionsExt, path::Path};

use monoio::{buf::IoBufMut, fs::OpenOptions};

use super::{content_length, end_own_head, send_own, Own};
use crate::{
    config::Route,
    error::Error,
    http::{
        headers::{HeadOut, OutFraming},
        respond,
    },
    request::{Client, Done, Plan},
    shard::Shard,
    stats::Limited,
};

/// Largest error page read, in bytes (as `--check` allows).
pub const MAX_PAGE: u64 = crate::config::files::MAX_ERROR_PAGE;

/// The route's page for `status`, if it has one.
pub fn page_for(route: Option<&Route>, status: u16) -> Option<&Path> {
    route?
        .error_pages
        .iter()
        .find(|(s, _)| *s == status)
        .map(|(_, p)| p.as_path())
}

/// Reads a page through io_uring: a regular file of at most [`MAX_PAGE`]
/// bytes (the file may have been replaced since `--check` saw it).
pub async fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .await?;
    let meta = file.metadata().await?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_PAGE {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_PAGE} bytes"
        )));
    }
    let len = meta.len() as usize;
    let (r, buf) = file
        .read_exact_at(Vec::with_capacity(len).slice_mut(0..len), 0)
        .await;
    r?;
    Ok(buf.into_inner())
}

/// An error answer for `status`: the route's page when it has one that
/// can be read, else the built-in one, and the body's size. On a cached
/// route the answer carries `X-Cache-Status` like every other. Without a
/// plan (the head did not parse) the answer is HTTP/1.1.
pub async fn error_answer(
    c: &Client,
    shard: &Shard,
    route: Option<&Route>,
    status: u16,
    keep: bool,
    plan: Option<&Plan>,
    head_only: bool,
) -> (Own, usize) {
    let page = Page {
        status,
        keep,
        head_only,
        extra: Extra::None,
    };
    write_page(c, shard, route, plan, page).await
}

/// An extra field an error answer carries.
#[derive(Clone, Copy)]
enum Extra {
    None,
    /// `Allow`: the route's `methods` (a 405 of the shield).
    Allow,
    /// `Retry-After`, whole seconds (a `[[limit]]` refusal).
    RetryAfter(u32),
}

/// What `write_page` answers.
struct Page {
    status: u16,
    keep: bool,
    head_only: bool,
    extra: Extra,
}

async fn write_page(
    c: &Client,
    shard: &Shard,
    route: Option<&Route>,
    plan: Option<&Plan>,
    page: Page,
) -> (Own, usize) {
    let Page {
        status,
        keep,
        head_only,
        extra,
    } = page;
    let mut found = None;
    if let Some(path) = page_for(route, status) {
        match read(path).await {
            Ok(body) => found = Some((body, super::content_type(path))),
            Err(e) => crate::warn!("error page {}: {e}; built-in page sent", path.display()),
        }
    }
    let (body, ct) = found.unwrap_or_else(|| (built_in(status), "text/html; charset=utf-8"));
    let mut out = Own::start(c, shard, status);
    out.field(b"Content-Type", ct.as_bytes());
    content_length(&mut out, body.len() as u64);
    match (extra, route) {
        (Extra::Allow, Some(r)) => out.field(b"Allow", r.access.allow_field.as_bytes()),
        (Extra::RetryAfter(secs), _) => {
            out.field(b"Retry-After", itoa::Buffer::new().format(secs).as_bytes())
        }
        _ => {}
    }
    if let Some(c) = plan.and_then(|p| p.cache.as_ref()) {
        out.field(b"X-Cache-Status", c.status.get().as_bytes());
    }
    let minor = plan.map_or(1, |p| p.minor);
    end_own_head(&mut out, None, OutFraming::AsIs, keep, minor);
    if !head_only {
        out.body().extend_from_slice(&body);
    }
    (out, body.len())
}

/// ringside's own page for a status.
fn built_in(status: u16) -> Vec<u8> {
    let title = format!("{status} {}", respond::reason(status));
    let title = title.trim_end();
    format!(
        "<html><head><title>{title}</title></head><body><h1>{title}</h1><hr><p>ringside</p></body></html>\n"
    )
    .into_bytes()
}

/// The one place an `Error` becomes an answer, before any of a response
/// went out: the route's error page or the built-in one, with the error's
/// status (no body for HEAD). `whole` is the request's length in the
/// client buffer when it was read whole; the connection then stays open
/// (as nginx) unless the error is one that closes it (`Error::closes`).
/// An error without a status (the client went away) writes nothing and
/// is logged as 499.
pub async fn fail(
    c: &mut Client,
    shard: &Shard,
    plan: Option<&Plan>,
    e: Error,
    whole: Option<usize>,
) -> Done {
    let mut done = Done {
        status: if e.status == 0 { 499 } else { e.status },
        body_bytes: 0,
        server: None,
        keep: false,
        consumed: whole.unwrap_or(0),
        error: Some(e),
    };
    if e.status == 0 {
        return done;
    }
    let gen = shard.gen();
    let route = plan.and_then(|p| p.route).map(|r| &gen.config.routes[r]);
    let mut extra = Extra::None;
    if let Some(refused) = e.refused {
        let label = plan
            .and_then(|p| p.route)
            .map_or(gen.ids.no_route, |r| gen.ids.routes[r]);
        shard.stats.limited(label, refused.why);
        extra = match refused.why {
            Limited::Method => Extra::Allow,
            Limited::Rate => Extra::RetryAfter(refused.retry_after),
            _ => Extra::None,
        };
    }
    let head_only = match plan {
        Some(p) => p.head_only,
        None => c.buf.starts_with(b"HEAD "),
    };
    let keep = whole.is_some()
        && plan.is_some_and(|p| p.keep_alive)
        && !e.closes()
        && !shard.draining.get();
    let page = Page {
        status: e.status,
        keep,
        head_only,
        extra,
    };
    let (out, n) = write_page(c, shard, route, plan, page).await;
    let w = out.send(c, shard).await;
    if !head_only {
        done.body_bytes = n as u64;
    }
    done.keep = keep && w.is_ok();
    done
}

/// Answers `status` on `route` and ends the exchange.
pub async fn answer(
    c: &mut Client,
    shard: &Shard,
    plan: &Plan,
    route: Option<&Route>,
    status: u16,
    (keep, consumed): (bool, usize),
) -> Done {
    let (out, n) = error_answer(c, shard, route, status, keep, Some(plan), plan.head_only).await;
    send_own(c, shard, plan, out, status, n, (keep, consumed)).await
}
