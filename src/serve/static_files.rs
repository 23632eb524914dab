//! Stage 4, answer: a `static` route (nginx `alias`): the rest of the path after
//! the route's prefix, percent-decoded once, names a file under the folder.
//!
//! Every file operation goes through monoio's io_uring ops (`openat`,
//! `statx`, `read`, `close`), so a slow disk never blocks the worker; a body
//! streams through one 64 KiB relay buffer whatever the file's size.
//!
//! No path ever serves a file outside the folder:
//! - the decoded path may not hold NUL, a backslash, or a `..` segment
//!   (`%2e%2e` decodes to one; `%252e` decodes once, to the literal `%2e`);
//! - after the open, the kernel's name for the opened file (the
//!   `/proc/self/fd` link, answered from the dentry cache without touching
//!   the disk, ~1 µs) must lie under the folder's own real path, so a
//!   symlink that leads out is a 404 while one that stays inside works.
//!
//! Choices where the contract is silent: methods other than GET and HEAD
//! get 405 with `Allow: GET, HEAD`; a `Range` is honoured for GET only (RFC
//! 9110 section 14.2), and not when `If-Range` names another version; a file
//! that is not regular (a FIFO, a device) is a 404; a gzipped answer has a
//! weak ETag (its bytes differ from the file's).

use std::{
    cell::RefCell,
    collections::HashMap,
    io,
    os::{
        fd::AsRawFd,
        unix::{ffi::OsStrExt, fs::OpenOptionsExt},
    },
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use monoio::{buf::IoBufMut, fs::File};

use super::{
    body::BodyOut, content_length, end_own_head, gzip, own_answer_keep, pages, send_own, Own,
};
use crate::{
    config::{Action, Route},
    error::Error,
    http::{
        headers::{HeadOut, OutFraming},
        parse::{self, trim, Scan, MAX_HEADERS},
    },
    relay,
    request::{Client, Done, Plan},
    shard::{Generation, Shard},
};

thread_local! {
    /// Each static folder's real path, found once per worker (the folder is
    /// opened and its `/proc/self/fd` link read; no blocking call).
    static ROOTS: RefCell<HashMap<PathBuf, PathBuf>> = RefCell::new(HashMap::new());
}

/// The request fields a static answer depends on, copied out of the head.
#[derive(Default)]
struct Ask {
    if_none_match: Option<Vec<u8>>,
    if_modified_since: Option<Vec<u8>>,
    range: Option<Vec<u8>>,
    if_range: Option<Vec<u8>>,
    gzip: bool,
}

impl Ask {
    fn read(head: &[u8], max: usize) -> Ask {
        let mut headers = [parse::NO_FIELD; MAX_HEADERS];
        let Ok(Some(req)) = parse::request(head, &mut headers, &mut Scan::default(), max) else {
            return Ask::default();
        };
        let get = |n: &str| req.header(n).map(<[u8]>::to_vec);
        Ask {
            if_none_match: get("if-none-match"),
            if_modified_since: get("if-modified-since"),
            range: get("range"),
            if_range: get("if-range"),
            gzip: gzip::accepts(
                req.headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("accept-encoding"))
                    .map(|h| h.value),
            ),
        }
    }
}

/// Why no file is served.
enum Refuse {
    Status(u16),
    /// A folder asked for without its trailing slash.
    Slash,
}

impl From<io::Error> for Refuse {
    fn from(e: io::Error) -> Self {
        Refuse::Status(match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG) => 404,
            Some(libc::EACCES | libc::EPERM) => 403,
            _ => 500,
        })
    }
}

pub async fn serve(
    c: &mut Client,
    shard: &Shard,
    gen: &Generation,
    plan: &Plan,
    route_index: usize,
) -> Done {
    let cfg = &*gen.config;
    let route = &cfg.routes[route_index];
    let Action::Static(folder) = &route.action else {
        unreachable!("a static plan is made for static routes only");
    };
    let (keep, consumed) = own_answer_keep(c, shard, plan);
    let method = plan.spans.method.of(&c.buf);
    if method != b"GET" && method != b"HEAD" {
        let mut out = Own::start(c, shard, 405);
        out.field(b"Allow", b"GET, HEAD");
        content_length(&mut out, 0);
        end_own_head(&mut out, Some(route), OutFraming::AsIs, keep, plan.minor);
        return send_own(c, shard, plan, out, 405, 0, (keep, consumed)).await;
    }
    let ask = Ask::read(&c.buf[..plan.len], cfg.limits.max_request_head);
    // The normalised path (decoded once, dot segments resolved) the route
    // was chosen by; the query as sent.
    let path = plan.path(&c.buf).to_vec();
    let query = plan.query(&c.buf).to_vec();
    let rest = path.get(route.path.len()..).unwrap_or(b"");
    let opened = match relative(rest) {
        Some(rel) => open(folder, &rel, path.ends_with(b"/")).await,
        None => Err(Refuse::Status(404)),
    };
    let (file, meta_len, mtime, name) = match opened {
        Ok(f) => f,
        Err(Refuse::Slash) => {
            let mut location = path.to_vec();
            location.push(b'/');
            location.extend_from_slice(&query);
            let mut out = Own::start(c, shard, 301);
            out.field(b"Location", &location);
            content_length(&mut out, 0);
            end_own_head(&mut out, Some(route), OutFraming::AsIs, keep, plan.minor);
            return send_own(c, shard, plan, out, 301, 0, (keep, consumed)).await;
        }
        Err(Refuse::Status(status)) => {
            return pages::answer(c, shard, plan, Some(route), status, (keep, consumed)).await;
        }
    };
    respond(
        c,
        shard,
        plan,
        route,
        &ask,
        Found {
            file,
            len: meta_len,
            mtime,
            name,
        },
        (keep, consumed),
    )
    .await
}

/// An opened regular file under the folder.
struct Found {
    file: File,
    len: u64,
    mtime: SystemTime,
    name: PathBuf,
}

/// The checked path below the folder (`rest` is already decoded and
/// normalised): `None` when it would leave the folder or is not a valid
/// path.
fn relative(rest: &[u8]) -> Option<PathBuf> {
    if rest.iter().any(|&b| b == 0 || b == b'\\') {
        return None;
    }
    let mut rel = PathBuf::new();
    for segment in rest.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return None,
            s => rel.push(std::ffi::OsStr::from_bytes(s)),
        }
    }
    Some(rel)
}

/// Opens `folder/rel` (or its index.html), checking that it stays inside.
async fn open(
    folder: &Path,
    rel: &Path,
    slash: bool,
) -> Result<(File, u64, SystemTime, PathBuf), Refuse> {
    let root = root_of(folder).await?;
    let mut name = folder.join(rel);
    let mut file = open_inside(&name, &root).await?;
    let mut meta = file.metadata().await?;
    if meta.is_dir() {
        if !slash {
            return Err(Refuse::Slash);
        }
        name.push("index.html");
        file = open_inside(&name, &root).await?;
        meta = file.metadata().await?;
    }
    if !meta.is_file() {
        return Err(Refuse::Status(404));
    }
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    Ok((file, meta.len(), mtime, name))
}

/// Opens `name` and checks where the kernel says it really is.
async fn open_inside(name: &Path, root: &Path) -> Result<File, Refuse> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    let file = monoio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(name)
        .await?;
    let real = real_path(&file)?;
    if !real.starts_with(root) {
        crate::debug!("static: {} leads out of {}", name.display(), root.display());
        return Err(Refuse::Status(404));
    }
    Ok(file)
}

fn real_path(file: &File) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

async fn root_of(folder: &Path) -> Result<PathBuf, Refuse> {
    if let Some(root) = ROOTS.with(|r| r.borrow().get(folder).cloned()) {
        return Ok(root);
    }
    let dir = monoio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(folder)
        .await?;
    let root = real_path(&dir)?;
    ROOTS.with(|r| r.borrow_mut().insert(folder.to_path_buf(), root.clone()));
    Ok(root)
}

/// The byte range a `Range` field asks for, by RFC 9110 section 14.1.2.
#[derive(Debug, PartialEq, Eq)]
enum Want {
    /// No range, an unreadable one, or several: the whole file.
    Full,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

fn range(v: &[u8], len: u64) -> Want {
    let Some(spec) = v.strip_prefix(b"bytes=") else {
        return Want::Full;
    };
    if spec.contains(&b',') {
        return Want::Full;
    }
    let spec = trim(spec);
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return Want::Full;
    };
    let num = |s: &[u8]| -> Option<u64> {
        let s = trim(s);
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    let (a, b) = (&spec[..dash], &spec[dash + 1..]);
    if trim(a).is_empty() {
        // A suffix: the last n bytes.
        return match num(b) {
            Some(0) => Want::Unsatisfiable,
            Some(_) if len == 0 => Want::Unsatisfiable,
            Some(n) => Want::Part(len.saturating_sub(n), len - 1),
            None => Want::Full,
        };
    }
    let Some(first) = num(a) else {
        return Want::Full;
    };
    let last = if trim(b).is_empty() {
        u64::MAX
    } else {
        match num(b) {
            Some(l) if l >= first => l,
            _ => return Want::Full,
        }
    };
    if first >= len {
        return Want::Unsatisfiable;
    }
    Want::Part(first, last.min(len - 1))
}

/// `"<mtime hex>-<size hex>"`, as nginx writes it.
fn etag(mtime: SystemTime, len: u64) -> String {
    let secs = mtime.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("\"{secs:x}-{len:x}\"")
}

/// What a file request is answered with: the status, the byte range
/// (offset and length), and whether the body is gzipped.
#[derive(Clone, Copy)]
struct Choice {
    status: u16,
    from: u64,
    n: u64,
    zip: bool,
}

/// Chooses the answer by the request's conditions (`If-None-Match`,
/// `If-Modified-Since`, `Range`, `If-Range`) and the route's gzip.
fn choose(plan: &Plan, route: &Route, ask: &Ask, f: &Found, tags: (&str, &str)) -> Choice {
    let (tag, modified) = tags;
    let ct = super::content_type(&f.name);
    let fresh = match &ask.if_none_match {
        Some(v) => none_match(v, tag),
        None => ask
            .if_modified_since
            .as_deref()
            .is_some_and(|v| not_modified_since(v, f.mtime)),
    };
    let mut want = match (&ask.range, plan.head_only) {
        (Some(r), false) => range(r, f.len),
        _ => Want::Full,
    };
    if let Some(v) = &ask.if_range {
        if v.as_slice() != tag.as_bytes() && v.as_slice() != modified.as_bytes() {
            want = Want::Full;
        }
    }
    let zip = want == Want::Full
        && !fresh
        && ask.gzip
        && route.gzip.as_ref().is_some_and(|g| {
            let ct = Some(ct.as_bytes());
            gzip::applies(g, 200, plan.head_only, ct, false, Some(f.len))
        });
    let (status, from, n) = match want {
        _ if fresh => (304, 0, 0),
        Want::Unsatisfiable => (416, 0, 0),
        Want::Full => (200, 0, f.len),
        Want::Part(a, b) => (206, a, b - a + 1),
    };
    Choice {
        status,
        from,
        n,
        zip,
    }
}

/// If-None-Match lists this tag (weak comparison) or is `*`.
fn none_match(v: &[u8], tag: &str) -> bool {
    let bare = |t: &[u8]| t.strip_prefix(b"W/").unwrap_or(t).to_vec();
    let tag = bare(tag.as_bytes());
    parse::list(v).any(|t| t == b"*" || bare(t) == tag)
}

fn not_modified_since(v: &[u8], mtime: SystemTime) -> bool {
    let Some(since) = std::str::from_utf8(v)
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
    else {
        return false;
    };
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs(mtime) <= secs(since)
}

/// The file's fields (type, validators, range, length) of a chosen answer.
fn file_head(
    out: &mut impl HeadOut,
    route: &Route,
    choice: &Choice,
    ct: &str,
    tags: (&str, &str),
    len: u64,
) {
    let (tag, modified) = tags;
    let Choice {
        status,
        from,
        n,
        zip,
    } = *choice;
    if status != 416 {
        out.field(b"Content-Type", ct.as_bytes());
        out.field(b"Last-Modified", modified.as_bytes());
        if zip {
            out.field(b"ETag", format!("W/{tag}").as_bytes());
            out.field(b"Content-Encoding", b"gzip");
            out.field(b"Vary", b"Accept-Encoding");
        } else {
            out.field(b"ETag", tag.as_bytes());
        }
        if let Some(e) = route.expires {
            expires(out, e);
        }
    }
    match status {
        206 => {
            let cr = format!("bytes {from}-{}/{}", from + n - 1, len);
            out.field(b"Content-Range", cr.as_bytes());
        }
        416 => out.field(b"Content-Range", format!("bytes */{}", len).as_bytes()),
        _ => {}
    }
    if status != 304 {
        out.field(b"Accept-Ranges", b"bytes");
        if !zip {
            content_length(out, n);
        }
    }
}

/// Answers a found file: head, then the body (read in behind the head when
/// small, else streamed, gzipped when chosen).
async fn respond(
    c: &mut Client,
    shard: &Shard,
    plan: &Plan,
    route: &Route,
    ask: &Ask,
    f: Found,
    (keep, consumed): (bool, usize),
) -> Done {
    let tag = etag(f.mtime, f.len);
    let modified = httpdate::fmt_http_date(f.mtime);
    let ct = super::content_type(&f.name);
    let choice = choose(plan, route, ask, &f, (&tag, &modified));
    let Choice {
        status,
        from,
        n,
        zip,
    } = choice;
    let framing = gzip::framing(zip, plan.minor);
    let keep = keep && framing != OutFraming::Close;

    let mut out = Own::start(c, shard, status);
    file_head(&mut out, route, &choice, ct, (&tag, &modified), f.len);
    end_own_head(&mut out, Some(route), framing, keep, plan.minor);
    if plan.head_only || n == 0 {
        return send_own(c, shard, plan, out, status, 0, (keep, consumed)).await;
    }
    let body = std::mem::take(out.body());
    let at = body.len();
    if !zip && n <= (body.capacity() - at) as u64 {
        // A small file is read in behind its head (or, for a built head,
        // into its own buffer): one write, one segment.
        let end = at + n as usize;
        let (r, slice) = f.file.read_exact_at(body.slice_mut(at..end), from).await;
        *out.body() = slice.into_inner();
        if let Err(e) = r {
            // The file shrank or failed under us; nothing was sent yet.
            crate::warn!("static: {}: {e}", f.name.display());
            out.body().clear();
            out.discard(shard);
            return pages::answer(c, shard, plan, Some(route), 500, (false, consumed)).await;
        }
        return send_own(c, shard, plan, out, status, n as usize, (keep, consumed)).await;
    }
    *out.body() = body;

    let w = out.send(c, shard).await;
    let limit = shard.gen().config.limits.client_send_timeout;
    let mut done = Done {
        status,
        body_bytes: 0,
        server: None,
        keep: false,
        consumed,
        error: None,
    };
    if let Err(e) = w {
        done.error = Some(client_error(e));
        return done;
    }
    let mut body = BodyOut::new(zip, framing, None);
    match stream(c, shard, &f.file, from, n, zip.then_some(&mut body), limit).await {
        Ok(sent) => {
            done.body_bytes = if zip { body.sent } else { sent };
            done.keep = keep;
        }
        Err(e) => done.error = Some(e),
    }
    done
}

fn expires(out: &mut impl HeadOut, e: Duration) {
    out.field(
        b"Cache-Control",
        format!("max-age={}", e.as_secs()).as_bytes(),
    );
    let at = httpdate::fmt_http_date(SystemTime::now() + e);
    out.field(b"Expires", at.as_bytes());
}

fn client_error(e: relay::Fail) -> Error {
    e.client().after_head()
}

/// Sends `n` bytes of `file` from `from`, through `zip` when it is given,
/// counting the bytes written in `c.sent` as they go. A file that shrinks
/// under us ends the connection (the length was sent).
async fn stream(
    c: &mut Client,
    shard: &Shard,
    file: &File,
    mut pos: u64,
    n: u64,
    mut zip: Option<&mut BodyOut>,
    limit: Duration,
) -> Result<u64, Error> {
    let end = pos + n;
    let mut buf = shard.relay.take();
    let mut out = if zip.is_some() {
        shard.relay.take()
    } else {
        Vec::new()
    };
    let result = loop {
        if pos == end {
            if let Some(z) = zip.as_deref_mut() {
                out.clear();
                z.finish(&mut out);
                let (w, b) = relay::write_all(&mut c.stream, out, limit).await;
                out = b;
                if let Err(e) = w {
                    break Err(client_error(e));
                }
                c.sent = z.sent;
            }
            break Ok(n);
        }
        let want = (end - pos).min(buf.capacity() as u64) as usize;
        buf.clear();
        let (r, slice) = file.read_at(buf.slice_mut(0..want), pos).await;
        buf = slice.into_inner();
        match r {
            Ok(0) => break Err(Error::internal(io::ErrorKind::UnexpectedEof.into()).after_head()),
            Ok(got) => pos += got as u64,
            Err(e) => break Err(Error::internal(e).after_head()),
        }
        let (w, b) = match zip.as_deref_mut() {
            Some(z) => {
                out.clear();
                z.push(&buf, &mut out);
                let (w, o) = relay::write_all(&mut c.stream, out, limit).await;
                out = o;
                (w, buf)
            }
            None => relay::write_all(&mut c.stream, buf, limit).await,
        };
        buf = b;
        if let Err(e) = w {
            break Err(client_error(e));
        }
        c.sent = zip.as_deref().map_or(c.sent + buf.len() as u64, |z| z.sent);
    };
    shard.relay.give(buf);
    shard.relay.give(out);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_are_refused() {
        // `rest` comes decoded and normalised (http::path); what is left to
        // refuse is what a path on disk must not hold.
        for bad in [&b"../etc/passwd"[..], b"a/../../x", b"a\0b", b"a\\..\\b"] {
            assert_eq!(relative(bad), None, "{}", bad.escape_ascii());
        }
        assert_eq!(relative(b"%2e%2e/x"), Some(PathBuf::from("%2e%2e/x")));
        assert_eq!(relative(b"/a//./b/"), Some(PathBuf::from("a/b")));
        assert_eq!(relative(b""), Some(PathBuf::new()));
        assert_eq!(relative(b"/etc/passwd"), Some(PathBuf::from("etc/passwd")));
    }

    #[test]
    fn ranges() {
        assert_eq!(range(b"bytes=0-9", 100), Want::Part(0, 9));
        assert_eq!(range(b"bytes=90-", 100), Want::Part(90, 99));
        assert_eq!(range(b"bytes=90-500", 100), Want::Part(90, 99));
        assert_eq!(range(b"bytes=-10", 100), Want::Part(90, 99));
        assert_eq!(range(b"bytes=-500", 100), Want::Part(0, 99));
        assert_eq!(range(b"bytes=100-", 100), Want::Unsatisfiable);
        assert_eq!(range(b"bytes=-0", 100), Want::Unsatisfiable);
        assert_eq!(range(b"bytes=0-1,5-6", 100), Want::Full);
        assert_eq!(range(b"bytes=5-1", 100), Want::Full);
        assert_eq!(range(b"items=0-1", 100), Want::Full);
        assert_eq!(range(b"bytes=x-1", 100), Want::Full);
    }

    #[test]
    fn conditions() {
        let tag = "\"5f-10\"";
        assert!(none_match(b"\"5f-10\"", tag));
        assert!(none_match(b"\"a\", W/\"5f-10\"", tag));
        assert!(none_match(b"*", tag));
        assert!(!none_match(b"\"5f-11\"", tag));
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert!(not_modified_since(b"Sun, 09 Sep 2001 01:46:40 GMT", t));
        assert!(!not_modified_since(b"Sun, 09 Sep 2001 01:46:39 GMT", t));
        assert!(!not_modified_since(b"yesterday", t));
    }
}
