//! Both heads of a stream: the request an h2 client sent, written as the
//! HTTP/1.1 head `exchange::exchange` parses; and the response, built for
//! h2 by the same writers that write HTTP/1.1 heads (`Native`), or read
//! back from an interim head written as text (`response`).

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use crate::http::{
    headers::{HeadOut, OutFraming, Persist},
    parse,
};

/// How the synthesized request carries its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body: the HEADERS frame ended the stream.
    None,
    /// `Content-Length` came with the request; DATA goes through as is.
    Length,
    /// No length: DATA is re-framed as chunks.
    Chunked,
}

/// Writes `parts` as an HTTP/1.1 request head into `out` (RFC 9113 8.3.1:
/// `:authority` becomes `Host`, `cookie` fields are joined with "; ").
/// `end` says whether the HEADERS frame ended the stream.
pub fn request(parts: &http::request::Parts, end: bool, out: &mut Vec<u8>) -> Body {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    if parts.method == Method::CONNECT {
        if let Some(a) = parts.uri.authority() {
            out.extend_from_slice(a.as_str().as_bytes());
        }
    } else {
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        out.extend_from_slice(target.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = parts.uri.authority();
    if let Some(a) = authority {
        field(out, b"host", a.as_str().as_bytes());
    }
    let mut length = false;
    let mut cookies = 0;
    for (name, value) in &parts.headers {
        if *name == header::HOST && authority.is_some() {
            continue; // :authority wins (RFC 9113 8.3.1)
        }
        if *name == header::COOKIE {
            cookies += 1;
            continue;
        }
        // h2 refuses connection-specific fields; `te: trailers` is the one
        // allowed, and it means nothing to an HTTP/1.1 upstream of ours.
        if *name == header::TE {
            continue;
        }
        length |= *name == header::CONTENT_LENGTH;
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if cookies > 0 {
        out.extend_from_slice(b"cookie: ");
        for (i, v) in parts.headers.get_all(header::COOKIE).iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(v.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    let body = match (end, length) {
        (true, _) => Body::None,
        (false, true) => Body::Length,
        (false, false) => Body::Chunked,
    };
    match body {
        Body::Chunked => field(out, b"transfer-encoding", b"chunked"),
        // A body-carrying method without a body says so, as nginx does.
        Body::None if !length && needs_length(&parts.method) => field(out, b"content-length", b"0"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    body
}

fn needs_length(m: &Method) -> bool {
    *m == Method::POST || *m == Method::PUT || *m == Method::PATCH
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How the response body of an HTTP/1.1 head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// A parsed response head: the h2 response and how its body is framed.
pub struct Parsed {
    pub response: Response<()>,
    pub framing: Framing,
    /// Bytes of the head in the input.
    pub len: usize,
}

/// Parses an HTTP/1.1 response head from the start of `buf`. `Ok(None)`:
/// more bytes are needed. Informational (1xx) heads are returned like any
/// other; the caller skips them. Final answers' heads come built, as a
/// `Native` (proxied answers and ringside's own alike); what still comes
/// this way is an interim (1xx) head written as text.
pub fn response(buf: &[u8], head_only: bool) -> Result<Option<Parsed>, &'static str> {
    // The upstream's fields and ringside's own (`Server`, the listener's
    // and the route's).
    let mut headers = [parse::NO_FIELD; 2 * parse::MAX_RESPONSE_HEADERS];
    let mut r = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut r, buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("unparsable response head"),
    };
    let code = r.code.ok_or("no status")?;
    let mut out = Fields::new(code, r.headers.len())?;
    // One copy of the head; every value is a slice of it (no allocation
    // per field).
    let shared = Bytes::copy_from_slice(&buf[..len]);
    let at = |v: &[u8]| {
        let from = v.as_ptr() as usize - buf.as_ptr() as usize;
        shared.slice(from..from + v.len())
    };
    for h in r.headers.iter() {
        out.add(h.name.as_bytes(), at(h.value))?;
    }
    Ok(Some(Parsed {
        response: out.response,
        framing: out.framing.finish(code, head_only),
        len,
    }))
}

/// A response head for an HTTP/2 stream, built by the same writers as an
/// HTTP/1.1 one (`HeadOut`) but never as text: each field goes straight
/// into an HPACK block (`hpack`), which h2 sends as it is. The fields are
/// sorted as `Fields` sorts a parsed head: framing noted, connection
/// fields and what HTTP/2 cannot carry left out.
pub struct Native {
    status: u16,
    framing: Framing,
    chunked: bool,
    /// The first field that makes the head unsendable.
    bad: Option<&'static str>,
    block: Vec<u8>,
}

/// A finished `Native`: what `SendResponse::send_response_encoded` takes.
pub struct Encoded {
    pub status: StatusCode,
    pub block: Bytes,
    pub framing: Framing,
}

thread_local! {
    /// The worker's building buffers, back from `finish`: a head then
    /// costs one allocation, the exact-size block h2 keeps.
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most building buffers a worker keeps, and the largest kept.
const MAX_SPARE: usize = 64;
const MAX_SPARE_CAP: usize = 16 * 1024;

/// Names up to this long are lowercased on the stack, longer ones (none
/// of the names treated apart here) in a `Vec`.
const SHORT_NAME: usize = 32;

impl Native {
    pub fn new() -> Self {
        let block = SPARE.with_borrow_mut(Vec::pop);
        Native {
            status: 0,
            framing: Framing::Close,
            chunked: false,
            bad: None,
            block: block.unwrap_or_else(|| Vec::with_capacity(512)),
        }
    }

    /// The status, the header block and how the body written after it is
    /// framed.
    pub fn finish(mut self, head_only: bool) -> Result<Encoded, &'static str> {
        let status = StatusCode::from_u16(self.status).map_err(|_| "bad status")?;
        if let Some(bad) = self.bad {
            return Err(bad);
        }
        // Exactly its size: `Bytes` then keeps the `Vec`'s allocation as
        // it is, with no second one for a shared header.
        let mut block =
            Vec::with_capacity(super::hpack::status_len(self.status) + self.block.len());
        super::hpack::status(&mut block, self.status);
        block.extend_from_slice(&self.block);
        let mut spare = std::mem::take(&mut self.block);
        spare.clear();
        SPARE.with_borrow_mut(|s| {
            if s.len() < MAX_SPARE && spare.capacity() <= MAX_SPARE_CAP {
                s.push(spare);
            }
        });
        let framing = if self.chunked {
            Framing::Chunked
        } else {
            self.framing
        };
        Ok(Encoded {
            status,
            block: Bytes::from(block),
            framing: framing.finish(self.status, head_only),
        })
    }
}

impl Default for Native {
    fn default() -> Self {
        Native::new()
    }
}

impl HeadOut for Native {
    fn status(&mut self, status: u16, _reason: &[u8]) {
        self.status = status;
    }

    /// As `Fields::add`: a name HTTP/2 cannot carry leaves the field out,
    /// `sort` says where the rest go, and a value with a control character
    /// is left out.
    fn field(&mut self, name: &[u8], value: &[u8]) {
        let mut short = [0u8; SHORT_NAME];
        let long;
        let name: &[u8] = if name.len() <= SHORT_NAME {
            let lower = &mut short[..name.len()];
            if !lower_token(name, lower) {
                return;
            }
            lower
        } else {
            let mut lower = vec![0; name.len()];
            if !lower_token(name, &mut lower) {
                return;
            }
            long = lower;
            &long
        };
        match sort(name, value, &mut self.framing) {
            // As `http::HeaderValue` takes them: no control byte but HTAB.
            Ok(true)
                if value
                    .iter()
                    .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)) =>
            {
                super::hpack::field(&mut self.block, name, value)
            }
            Ok(_) => {}
            Err(bad) => self.bad = self.bad.or(Some(bad)),
        }
    }

    /// A chunked body is de-chunked into DATA frames; the connection
    /// fields have no place in HTTP/2.
    fn end(&mut self, framing: OutFraming, _persist: Persist) {
        self.chunked = framing == OutFraming::Chunked;
    }
}

/// Lowercases a field name into `out` (its length); false when it is empty
/// or holds a byte that is not a token character (RFC 9110 5.1), which
/// `http::HeaderName` refuses too.
fn lower_token(name: &[u8], out: &mut [u8]) -> bool {
    const SPECIAL: &[u8] = b"!#$%&'*+-.^_`|~";
    for (o, &b) in out.iter_mut().zip(name) {
        if !(b.is_ascii_alphanumeric() || SPECIAL.contains(&b)) {
            return false;
        }
        *o = b.to_ascii_lowercase();
    }
    !name.is_empty()
}

fn content_length(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// An h2 response being filled from HTTP/1.1 fields, and the body's
/// framing they say.
struct Fields {
    response: Response<()>,
    framing: Framing,
}

impl Fields {
    fn new(code: u16, count: usize) -> Result<Self, &'static str> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(code).map_err(|_| "bad status")?;
        *response.headers_mut() = HeaderMap::with_capacity(count);
        Ok(Fields {
            response,
            framing: Framing::Close,
        })
    }

    /// One field, sorted by `sort` (a name or value h2 refuses is left
    /// out).
    fn add(&mut self, name: &[u8], value: Bytes) -> Result<(), &'static str> {
        let Ok(name) = HeaderName::from_bytes(name) else {
            return Ok(());
        };
        if !sort(name.as_str().as_bytes(), &value, &mut self.framing)? {
            return Ok(());
        }
        if let Ok(value) = HeaderValue::from_maybe_shared(value) {
            self.response.headers_mut().append(name, value);
        }
        Ok(())
    }
}

/// Where one field of a head for h2 goes, `name` lowercase: the framing
/// fields noted in `framing` (`Transfer-Encoding`, then left out; the first
/// `Content-Length`), the connection fields left out (false), the rest
/// kept (true). Both ways of building an h2 head (`Native`, `Fields`) sort
/// fields here.
fn sort(name: &[u8], value: &[u8], framing: &mut Framing) -> Result<bool, &'static str> {
    if name == b"transfer-encoding" {
        *framing = Framing::Chunked;
        return Ok(false);
    }
    if name == b"content-length" && *framing == Framing::Close {
        *framing = Framing::Length(content_length(value).ok_or("bad content-length")?);
    }
    Ok(!hop_by_hop_name(name))
}

impl Framing {
    /// No body after a HEAD, a 204, a 304 or an interim answer.
    fn finish(self, code: u16, head_only: bool) -> Framing {
        if head_only || code == 204 || code == 304 || code < 200 {
            Framing::None
        } else {
            self
        }
    }
}

/// Fields that are about one HTTP/1.1 connection and have no place in
/// HTTP/2 (RFC 9113 8.2.2); `name` is lowercase.
fn hop_by_hop_name(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"upgrade" | b"te" | b"trailer" | b"keep-alive" | b"proxy-connection"
    )
}

/// A chunk's framing around `data`, for a request body re-framed as chunks.
pub fn chunk(data: &Bytes) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 20);
    crate::http::body::chunk_head(&mut out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    #[test]
    fn request_head_joins_cookies_and_takes_authority() {
        let req = http::Request::builder()
            .method("POST")
            .uri("https://example.com:8443/a?b=1")
            .header("host", "other")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-one", "1")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        let body = request(&parts(req), false, &mut out);
        assert_eq!(body, Body::Chunked);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b=1 HTTP/1.1\r\nhost: example.com:8443\r\nx-one: 1\r\n\
             cookie: a=1; b=2\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn request_without_body() {
        let req = http::Request::builder()
            .method("PUT")
            .uri("https://h/x")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(request(&parts(req), true, &mut out), Body::None);
        assert!(out.ends_with(b"content-length: 0\r\n\r\n"));
    }

    /// The same writer calls give the same h2 response whether the head
    /// is built (`Native`) or written as text and parsed back.
    #[test]
    fn a_built_head_equals_the_parsed_text() {
        use crate::http::headers::client_response;
        let cases: [(&[u8], bool, OutFraming); 4] = [
            (
                b"HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\nX-A: 1\r\n\
                  Set-Cookie: a\r\nSet-Cookie: b\r\nContent-Length: 5\r\n\r\n",
                false,
                OutFraming::AsIs,
            ),
            (
                b"HTTP/1.1 404 Nope\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                OutFraming::Chunked,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                true,
                OutFraming::AsIs,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
                false,
                OutFraming::AsIs,
            ),
        ];
        for (up, head_only, framing) in cases {
            let mut slots = [parse::NO_FIELD; parse::MAX_RESPONSE_HEADERS];
            let res = parse::response(up, &mut slots, head_only).unwrap().unwrap();
            let add = [("X-Added".to_string(), "yes".to_string())];
            let mut text = Vec::new();
            client_response(&mut text, &res, framing, Persist::Default, &add);
            let mut built = Native::new();
            client_response(&mut built, &res, framing, Persist::Default, &add);
            let parsed = response(&text, head_only).unwrap().unwrap();
            let built = built.finish(head_only).unwrap();
            assert_eq!(built.status, parsed.response.status());
            // The parsed head's fields, encoded in their order (fields of
            // one name are next to each other in these heads, so the
            // map's grouping keeps it).
            let mut want = Vec::new();
            super::super::hpack::status(&mut want, built.status.as_u16());
            for (n, v) in parsed.response.headers() {
                super::super::hpack::field(&mut want, n.as_str().as_bytes(), v.as_bytes());
            }
            assert_eq!(built.block[..], want[..]);
            assert_eq!(built.framing, parsed.framing);
            assert!(parsed.response.headers().get("x-hop").is_none());
            assert_eq!(parsed.response.headers()["x-added"], "yes");
        }
    }

    #[test]
    fn response_head_drops_connection_fields() {
        let head = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
                     Transfer-Encoding: chunked\r\nX-A: b\r\n\r\nrest";
        let p = response(head, false).unwrap().unwrap();
        assert_eq!(p.framing, Framing::Chunked);
        assert_eq!(&head[p.len..], b"rest");
        assert_eq!(p.response.headers().len(), 1);
        assert_eq!(p.response.headers()["x-a"], "b");
        let p = response(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            false,
        );
        assert_eq!(p.unwrap().unwrap().framing, Framing::None);
        assert!(response(b"HTTP/1.1 200 OK\r\n", false).unwrap().is_none());
    }
}
