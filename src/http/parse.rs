//! Stage 2: the request head, parsed in place out of the connection's buffer.
//!
//! httparse finds the fields without copying or allocating; this module adds
//! the RFC 9112 framing rules that decide where the message ends, strictly,
//! because a proxy and its upstream that disagree on that are a smuggling
//! hole. Anything ambiguous is a 400 and a closed connection.

use httparse::{Header, Status};

use crate::error::{Error, Result};

/// Most header fields in one request head; more is a 431. nginx has no count
/// limit but a byte limit; 100 fields is far beyond what browsers send.
pub const MAX_HEADERS: usize = 100;

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

/// A parsed request head, borrowing the connection's buffer.
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    pub method: &'b str,
    /// Request target as sent (origin-form), or the path of an absolute-form target.
    pub target: &'b str,
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
}

impl RequestHead<'_, '_> {
    pub fn path(&self) -> &str {
        match self.target.find('?') {
            Some(i) => &self.target[..i],
            None => self.target,
        }
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
    headers: &'h mut [Header<'b>],
    scan: &mut Scan,
    max_head: usize,
) -> Result<Option<RequestHead<'h, 'b>>> {
    let Some(len) = head_end(buf, scan)? else {
        return Ok(None);
    };
    if len > max_head {
        return Err(too_large(&buf[..max_head]));
    }
    let mut req = httparse::Request::new(headers);
    match req.parse(&buf[..len]) {
        Ok(Status::Complete(n)) if n == len => {}
        Ok(_) => return Err(Error::bad_request("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::head_too_large()),
        Err(e) => return Err(Error::bad_request(parse_error(e))),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Error::bad_request("incomplete request line"));
    };
    let headers: &'h [Header<'b>] = req.headers;
    head(method, target, minor, headers, len)
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
        // CRLF at `at`. The head ends at CRLF CRLF; a CRLF at the very start
        // is a leading empty line (RFC 9112 section 2.2), left to httparse.
        if at >= 2 && buf[at - 2] == b'\r' && buf[at - 1] == b'\n' {
            return Ok(Some(at + 2));
        }
        i = at + 2;
    }
    scan.checked = buf.len();
    Ok(None)
}

fn head<'h, 'b>(
    method: &'b str,
    target: &'b str,
    minor: u8,
    headers: &'h [Header<'b>],
    len: usize,
) -> Result<Option<RequestHead<'h, 'b>>> {
    if method == "CONNECT" {
        return Err(Error::not_implemented("CONNECT is not supported"));
    }
    let (target, authority) = split_target(method, target)?;
    let mut host = None;
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut conn_upgrade = false;
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
        } else if name.eq_ignore_ascii_case("content-length") {
            for item in list(h.value) {
                let n = content_length(item)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::bad_request("differing Content-Length values"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if minor == 0 {
                return Err(Error::bad_request(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            // Only a single `chunked` is understood; any other coding (or a
            // second `chunked`) leaves the framing to guesswork.
            for coding in list(h.value) {
                if chunked || !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(Error::bad_request("Transfer-Encoding other than chunked"));
                }
                chunked = true;
            }
            if !chunked {
                return Err(Error::bad_request("empty Transfer-Encoding"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in list(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    conn_upgrade = true;
                }
            }
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
        target,
        minor,
        headers,
        len,
        host: authority.or(host),
        framing,
        keep_alive: if minor == 1 {
            !close
        } else {
            keep_alive && !close
        },
        expect_continue: expect_continue
            && minor == 1
            && !matches!(framing, Framing::Empty | Framing::Length(0)),
        upgrade: if conn_upgrade && minor == 1 {
            upgrade
        } else {
            None
        },
    }))
}

/// Origin-form stays as it is; an absolute-form target gives its authority
/// (which then overrides Host, RFC 9112 section 3.2.2) and its path.
fn split_target<'b>(method: &str, target: &'b str) -> Result<(&'b str, Option<&'b [u8]>)> {
    if target.starts_with('/') {
        return Ok((target, None));
    }
    if target == "*" && method == "OPTIONS" {
        return Ok((target, None));
    }
    let rest = strip_prefix_ci(target, "http://").or_else(|| strip_prefix_ci(target, "https://"));
    let Some(rest) = rest else {
        return Err(Error::bad_request("request target is not origin-form"));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') || !valid_host(authority.as_bytes()) {
        return Err(Error::bad_request(
            "invalid authority in the request target",
        ));
    }
    // "http://h?q" has an empty path: the origin-form is "/?q", which has no
    // borrowed form here; such requests are rare enough to refuse.
    if !path.is_empty() && !path.starts_with('/') {
        return Err(Error::bad_request("absolute-form target without a path"));
    }
    Ok((
        if path.is_empty() { "/" } else { path },
        Some(authority.as_bytes()),
    ))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Host = uri-host [ ":" port ]: reg-name, IPv4 or a bracketed IPv6 literal.
fn valid_host(v: &[u8]) -> bool {
    v.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
                    | b':'
                    | b'['
                    | b']'
            )
    })
}

/// Content-Length = 1*DIGIT; leading zeros are fine, signs and spaces are not.
fn content_length(v: &[u8]) -> Result<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(Error::bad_request("invalid Content-Length"));
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
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
}

/// Parses an upstream response head. Unlike requests, a bare LF is tolerated
/// here (the head is re-serialised for the client, so it cannot desync it);
/// anything else that is not HTTP is a 502.
pub fn response<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
    head_request: bool,
) -> Result<Option<ResponseHead<'h, 'b>>> {
    let mut res = httparse::Response::new(headers);
    let len = match res.parse(buf) {
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
    if !(100..=999).contains(&status) {
        return Err(Error::bad_response("invalid upstream status"));
    }
    let headers: &'h [Header<'b>] = res.headers;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            for item in list(h.value) {
                let n = content_length(item)
                    .map_err(|_| Error::bad_response("invalid upstream Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::bad_response("differing upstream Content-Length"));
                }
                length = Some(n);
            }
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
    }))
}
