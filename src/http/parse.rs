//! Stage 2, read: the request head, parsed in place out of the connection's buffer.
//!
//! httparse finds the fields without copying or allocating; this module adds
//! the RFC 9112 framing rules that decide where the message ends, strictly,
//! because a proxy and its upstream that disagree on that are a smuggling
//! hole. Anything ambiguous is a 400 and a closed connection.

use std::{borrow::Cow, mem::MaybeUninit, ops::Range};

use httparse::{Header, Status};

use crate::error::{Error, Result};

/// Most header fields in one request head; more is a 431. The byte limit,
/// `max_request_head`, is the one that counts (as nginx, which counts no
/// fields): 512 fields fill the default 16 KiB at 32 bytes each. HAProxy
/// and Apache stop at 100.
pub const MAX_HEADERS: usize = 512;

/// Most header fields in an upstream's response head; more is a 502.
pub const MAX_RESPONSE_HEADERS: usize = 512;

/// Room for one field that httparse fills in. The rooms are left
/// uninitialised (`[NO_FIELD; MAX_HEADERS]` costs no memset): httparse only
/// hands back the fields it wrote.
pub type Slot<'b> = MaybeUninit<Header<'b>>;
pub const NO_FIELD: Slot<'static> = MaybeUninit::uninit();

/// How the body of a message is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Responses only: the body runs until the server closes.
    UntilClose,
}

/// A byte range of the connection's buffer, as the parser found it.
///
/// Every position the later stages keep is one of these, made here where
/// httparse's slices are made: a slice that does not live in the buffer
/// can never become a position in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The bytes of the span in `buf` (empty if `buf` is not the buffer the
    /// span was made for).
    pub fn of(self, buf: &[u8]) -> &[u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }

    fn range(r: Range<usize>) -> Span {
        // A head is at most `max_request_head` bytes, far below 4 GiB.
        Span {
            start: r.start as u32,
            end: r.end as u32,
        }
    }
}

/// Where the parts of the request the later stages keep sit in the buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spans {
    pub method: Span,
    /// The request target as sent (the access log's `$request`).
    pub target: Span,
    /// The target in origin-form: path and query. For an absolute-form
    /// target, what follows its authority; see `rooted`.
    pub origin: Span,
    /// An absolute-form target without a path (`http://a` or `http://a?q`):
    /// its origin-form is `/` followed by `origin`.
    pub rooted: bool,
    /// The Host value (or the authority of an absolute-form target).
    pub host: Option<Span>,
    pub referer: Option<Span>,
    pub user_agent: Option<Span>,
}

impl Spans {
    /// The origin-form target (path and query) in `buf`.
    pub fn origin<'b>(&self, buf: &'b [u8]) -> Cow<'b, [u8]> {
        let o = self.origin.of(buf);
        if self.rooted {
            let mut t = Vec::with_capacity(o.len() + 1);
            t.push(b'/');
            t.extend_from_slice(o);
            t.into()
        } else {
            o.into()
        }
    }
}

/// A parsed request head, borrowing the connection's buffer.
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    pub method: &'b str,
    /// The target's path and query (origin-form), as sent: the whole target,
    /// or what follows the authority of an absolute-form target (then empty
    /// when it has no path: see `Spans::rooted`).
    pub origin: &'b str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: &'h [Header<'b>],
    /// Bytes of the head, including the blank line.
    pub len: usize,
    /// The Host field (or the authority of an absolute-form target).
    pub host: Option<&'b [u8]>,
    pub framing: Framing,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// `Upgrade` value when `Connection` lists `upgrade`.
    pub upgrade: Option<&'b [u8]>,
    /// Positions in the buffer of what outlives this borrow.
    pub spans: Spans,
}

impl RequestHead<'_, '_> {
    /// The path as sent (`/` for an absolute-form target without one).
    pub fn path(&self) -> &[u8] {
        let o = self.origin.as_bytes();
        let p = match memchr(b'?', o) {
            Some(i) => &o[..i],
            None => o,
        };
        if self.spans.rooted {
            b"/"
        } else {
            p
        }
    }

    /// The query as sent, without its `?`.
    pub fn query(&self) -> Option<&[u8]> {
        let o = self.origin.as_bytes();
        memchr(b'?', o).map(|i| &o[i + 1..])
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// GET, HEAD, PUT, DELETE, OPTIONS and TRACE (RFC 9110 section 9.2.2).
    pub fn idempotent(&self) -> bool {
        matches!(
            self.method,
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
        )
    }
}

/// Where the scan for bare CR/LF stopped, so each read rescans only new bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scan {
    checked: usize,
}

/// Parses the head at the start of `buf`.
///
/// `Ok(None)` means the head is not complete yet ("need more bytes" is a
/// value); the caller reads more unless the buffer already holds `max_head`
/// bytes, in which case it calls [`too_large`].
pub fn request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [Slot<'b>],
    scan: &mut Scan,
    max_head: usize,
) -> Result<Option<RequestHead<'h, 'b>>> {
    let Some(len) = head_end(buf, scan)? else {
        return Ok(None);
    };
    if len > max_head {
        return Err(too_large(&buf[..max_head]));
    }
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(&buf[..len], headers) {
        Ok(Status::Complete(n)) if n == len => {}
        Ok(_) => return Err(Error::bad_request("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::head_too_large()),
        Err(e) => return Err(Error::bad_request(parse_error(e))),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Error::bad_request("incomplete request line"));
    };
    let headers: &'h [Header<'b>] = req.headers;
    head(&buf[..len], method, target, minor, headers)
}

/// RFC 9110 section 2.5: a request of a later HTTP/1 minor version (1.2 to
/// 1.9) is handled as HTTP/1.1, the highest one ringside speaks (as nginx
/// does). Rewrites the version of a complete request line in place, so every
/// later parse of the head agrees; returns whether it did.
pub fn as_http11(buf: &mut [u8]) -> bool {
    let start = empty_lines(buf);
    let Some(eol) = memchr(b'\r', &buf[start..]) else {
        return false;
    };
    match &mut buf[start..start + eol] {
        [.., b' ', b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor @ b'2'..=b'9'] => {
            *minor = b'1';
            true
        }
        _ => false,
    }
}

/// Bytes of the empty lines (CRLFs) before a request line.
fn empty_lines(buf: &[u8]) -> usize {
    buf.chunks_exact(2)
        .take_while(|pair| *pair == b"\r\n")
        .count()
        * 2
}

/// The position of `part`, a slice httparse made of `buf`, in `buf`. The
/// one place where a slice becomes a position; a slice from anywhere else
/// gives an empty span at 0 instead of a wrong one.
fn span_in(buf: &[u8], part: &[u8]) -> Span {
    let base = buf.as_ptr() as usize;
    let at = (part.as_ptr() as usize).wrapping_sub(base);
    match at.checked_add(part.len()) {
        Some(end) if end <= buf.len() => Span::range(at..end),
        _ => Span::default(),
    }
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => {
            "invalid header name (or whitespace before a colon, or obs-fold)"
        }
        httparse::Error::HeaderValue => "invalid byte in a header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Token => "invalid request line",
        httparse::Error::Version => "invalid HTTP version",
        _ => "malformed request head",
    }
}

/// The status for a head that did not end within `max_head` bytes: 414 when
/// even the request line did not end, else 431.
pub fn too_large(buf: &[u8]) -> Error {
    if memchr(b'\n', buf).is_none() {
        Error::uri_too_long()
    } else {
        Error::head_too_large()
    }
}

/// Finds the end of the head (`CRLF CRLF`), rejecting a bare CR or a bare LF
/// anywhere before it: RFC 9112 section 2.2 lets a recipient accept a bare
/// LF, but a proxy that does while its upstream does not can be desynchronised.
fn head_end(buf: &[u8], scan: &mut Scan) -> Result<Option<usize>> {
    // Empty lines before the request line are skipped (RFC 9112 section
    // 2.2; httparse does the same): the head ends at the first CRLF CRLF
    // after them.
    let lead = empty_lines(buf);
    let mut i = scan.checked;
    while let Some(off) = memchr2(b'\r', b'\n', &buf[i..]) {
        let at = i + off;
        if buf[at] == b'\n' {
            return Err(Error::bad_request("bare LF in the request head"));
        }
        // A CR must be followed by LF; at the end of the buffer, wait.
        match buf.get(at + 1) {
            None => {
                scan.checked = at;
                return Ok(None);
            }
            Some(b'\n') => {}
            Some(_) => return Err(Error::bad_request("bare CR in the request head")),
        }
        // CRLF at `at`: the head ends when a line of its own ended right
        // before it.
        if at >= lead + 2 && buf[at - 2] == b'\r' && buf[at - 1] == b'\n' {
            return Ok(Some(at + 2));
        }
        i = at + 2;
    }
    scan.checked = buf.len();
    Ok(None)
}

fn head<'h, 'b>(
    buf: &'b [u8],
    method: &'b str,
    target: &'b str,
    minor: u8,
    headers: &'h [Header<'b>],
) -> Result<Option<RequestHead<'h, 'b>>> {
    if method == "CONNECT" {
        return Err(Error::not_implemented("CONNECT is not supported"));
    }
    let target_span = span_in(buf, target.as_bytes());
    let (origin_at, authority) = split_target(method, target)?;
    let origin = &target[origin_at..];
    let mut spans = Spans {
        method: span_in(buf, method.as_bytes()),
        target: target_span,
        origin: Span::range(target_span.start as usize + origin_at..target_span.end as usize),
        rooted: authority.is_some() && !origin.starts_with('/'),
        host: authority.map(|a| span_in(buf, a)),
        referer: None,
        user_agent: None,
    };
    let mut host = None;
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut conn = ConnectionTokens::default();
    let mut upgrade = None;
    let mut expect_continue = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if !valid_host(h.value) {
                return Err(Error::bad_request("invalid Host"));
            }
            host = Some(h.value);
            if authority.is_none() {
                spans.host = Some(span_in(buf, h.value));
            }
        } else if name.eq_ignore_ascii_case("referer") {
            spans.referer.get_or_insert(span_in(buf, h.value));
        } else if name.eq_ignore_ascii_case("user-agent") {
            spans.user_agent.get_or_insert(span_in(buf, h.value));
        } else if name.eq_ignore_ascii_case("content-length") {
            add_length(&mut length, h.value)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            add_coding(&mut chunked, h.value, minor)?;
        } else if name.eq_ignore_ascii_case("connection") {
            conn.add(h.value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(h.value);
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    if hosts > 1 {
        return Err(Error::bad_request("several Host fields"));
    }
    if hosts == 0 && minor == 1 && authority.is_none() {
        return Err(Error::bad_request("HTTP/1.1 request without Host"));
    }
    if chunked && length.is_some() {
        return Err(Error::bad_request(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, None) => Framing::Empty,
        // Length(0) is kept apart from Empty so that a `Content-Length: 0`
        // the client sent is forwarded (some servers answer 411 without it).
        (false, Some(n)) => Framing::Length(n),
    };
    Ok(Some(RequestHead {
        method,
        origin,
        minor,
        headers,
        len: buf.len(),
        host: authority.or(host),
        framing,
        keep_alive: if minor == 1 {
            !conn.close
        } else {
            conn.keep_alive && !conn.close
        },
        expect_continue: expect_continue
            && minor == 1
            && !matches!(framing, Framing::Empty | Framing::Length(0)),
        upgrade: if conn.upgrade && minor == 1 {
            upgrade
        } else {
            None
        },
        spans,
    }))
}

/// Adds a Content-Length field's values to `length`: every value, in this
/// field and earlier ones, must be the same.
fn add_length(length: &mut Option<u64>, value: &[u8]) -> Result<()> {
    let n = field_length(value).map_err(Error::bad_request)?;
    if length.is_some_and(|l| l != n) {
        return Err(Error::bad_request("differing Content-Length values"));
    }
    *length = Some(n);
    Ok(())
}

/// The one length a Content-Length field says: a list of equal values is
/// that value (RFC 9110 section 8.6); an empty field is as invalid as a
/// bad number, never the same as no field.
fn field_length(value: &[u8]) -> std::result::Result<u64, &'static str> {
    let mut length = None;
    for item in list(value) {
        let n = content_length(item).map_err(|_| "invalid Content-Length")?;
        if length.is_some_and(|l| l != n) {
            return Err("differing Content-Length values");
        }
        length = Some(n);
    }
    length.ok_or("empty Content-Length")
}

/// A Transfer-Encoding field. Only a single `chunked` is understood; any
/// other coding (or a second `chunked`) leaves the framing to guesswork.
fn add_coding(chunked: &mut bool, value: &[u8], minor: u8) -> Result<()> {
    if minor == 0 {
        return Err(Error::bad_request(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    for coding in list(value) {
        if *chunked || !coding.eq_ignore_ascii_case(b"chunked") {
            return Err(Error::bad_request("Transfer-Encoding other than chunked"));
        }
        *chunked = true;
    }
    if !*chunked {
        return Err(Error::bad_request("empty Transfer-Encoding"));
    }
    Ok(())
}

/// The Connection tokens a request's handling depends on.
#[derive(Default)]
struct ConnectionTokens {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

impl ConnectionTokens {
    fn add(&mut self, value: &[u8]) {
        for token in list(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            }
        }
    }
}

/// Origin-form stays as it is; an absolute-form target gives its authority
/// (which then overrides Host, RFC 9112 section 3.2.2). Returns where the
/// origin-form part (path and query) starts in `target`.
fn split_target<'b>(method: &str, target: &'b str) -> Result<(usize, Option<&'b [u8]>)> {
    if target.starts_with('/') {
        return Ok((0, None));
    }
    if target == "*" && method == "OPTIONS" {
        return Ok((0, None));
    }
    let scheme = ["http://", "https://"]
        .into_iter()
        .find(|p| strip_prefix_ci(target, p).is_some());
    let Some(scheme) = scheme else {
        return Err(Error::bad_request("request target is not origin-form"));
    };
    let rest = &target[scheme.len()..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || authority.contains('@') || !valid_host(authority.as_bytes()) {
        return Err(Error::bad_request(
            "invalid authority in the request target",
        ));
    }
    Ok((scheme.len() + end, Some(authority.as_bytes())))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Host = uri-host [ ":" port ] (RFC 9110 section 7.2): a reg-name or IPv4
/// address, or an IP literal in brackets (RFC 3986 section 3.2.2), then
/// digits after a colon.
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = match v.split_first() {
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &rest[..end];
            let ok = !literal.is_empty() && literal.iter().all(|&b| b == b':' || host_byte(b));
            if !ok {
                return false;
            }
            (&[][..], &rest[end + 1..])
        }
        _ => match v.iter().position(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &[][..]),
        },
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    port_ok && host.iter().all(|&b| host_byte(b))
}

/// A byte of a reg-name (unreserved, sub-delims, `%` of pct-encoded).
fn host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)
}

/// Content-Length = 1*DIGIT; leading zeros are fine (however many), signs
/// and spaces are not. At most 19 significant digits, so it fits a u64.
fn content_length(v: &[u8]) -> Result<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(Error::bad_request("invalid Content-Length"));
    }
    let zeros = v.iter().take_while(|&&d| d == b'0').count();
    let digits = &v[zeros..];
    if digits.len() > 19 {
        return Err(Error::bad_request("invalid Content-Length"));
    }
    Ok(digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether an `Upgrade` value may open a tunnel. Not when it offers `h2c`:
/// RFC 9113 (section 3.1) deprecates that upgrade, and through a proxy it
/// hands the client a raw HTTP/2 connection to the upstream, past every
/// per-request rule ("h2c smuggling"). Such a request goes on as a plain
/// request, its Upgrade removed.
pub fn tunnels(upgrade: &[u8]) -> bool {
    !list(upgrade).any(|p| p.eq_ignore_ascii_case(b"h2c"))
}

/// `tchar` of RFC 9110 section 5.6.2: the bytes a token (a field name, a
/// method) is made of.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The items of a comma-separated field value, trimmed of OWS; empty items
/// (allowed by RFC 9110 section 5.6.1) are skipped.
pub fn list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|s| !s.is_empty())
}

pub fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

pub fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

/// SIMD search (the memchr crate, already built for monoio): parsing a
/// 330-byte head took 700 ns with a byte loop here, 'parse_request_head' in
/// benches/parse.rs.
fn memchr2(a: u8, b: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr2(a, b, hay)
}

/// A parsed upstream response head, borrowing the upstream read buffer.
#[derive(Debug)]
pub struct ResponseHead<'h, 'b> {
    pub status: u16,
    pub reason: &'b str,
    pub minor: u8,
    pub headers: &'h [Header<'b>],
    pub len: usize,
    pub framing: Framing,
    /// The upstream lets the connection be reused after this response.
    pub keep_alive: bool,
    /// The response has a `Date` field.
    pub has_date: bool,
    /// The one value of its `Content-Length` fields, if it has any (a list
    /// of equal values, or the field repeated, says it once).
    pub length: Option<u64>,
}

/// Parses an upstream response head. Unlike requests, a bare LF is tolerated
/// here (the head is re-serialised for the client, so it cannot desync it);
/// anything else that is not HTTP is a 502.
pub fn response<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [Slot<'b>],
    head_request: bool,
) -> Result<Option<ResponseHead<'h, 'b>>> {
    let mut res = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut res, buf, headers) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::bad_response(
                "too many upstream response header fields",
            ))
        }
        Err(_) => return Err(Error::bad_response("upstream response is not HTTP")),
    };
    let (Some(status), Some(minor)) = (res.code, res.version) else {
        return Err(Error::bad_response("upstream response is not HTTP"));
    };
    // RFC 9110 section 15: a status is three digits from 100 to 599.
    if !(100..=599).contains(&status) {
        return Err(Error::bad_response("invalid upstream status"));
    }
    let headers: &'h [Header<'b>] = res.headers;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut has_date = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("date") {
            has_date = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = field_length(h.value)
                .map_err(|_| Error::bad_response("invalid upstream Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::bad_response("differing upstream Content-Length"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in list(h.value) {
                if chunked || !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(Error::bad_response(
                        "upstream Transfer-Encoding other than chunked",
                    ));
                }
                chunked = true;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in list(h.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    if chunked && length.is_some() {
        return Err(Error::bad_response(
            "upstream sent Content-Length and Transfer-Encoding",
        ));
    }
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = match (no_body, chunked, length) {
        (true, _, _) => Framing::Empty,
        (false, true, _) => Framing::Chunked,
        (false, false, Some(0)) => Framing::Empty,
        (false, false, Some(n)) => Framing::Length(n),
        (false, false, None) => Framing::UntilClose,
    };
    Ok(Some(ResponseHead {
        status,
        reason: res.reason.unwrap_or(""),
        minor,
        headers,
        len,
        framing,
        keep_alive: framing != Framing::UntilClose
            && if minor == 1 {
                !close
            } else {
                keep_alive && !close
            },
        has_date,
        length,
    }))
}
