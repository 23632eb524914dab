//! Both heads of a stream in HTTP/1.1 terms: the request an h2 client sent,
//! written as the HTTP/1.1 head `exchange::exchange` parses, and the HTTP/1.1
//! response head `exchange` writes, read back into an h2 response.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use crate::http::parse;

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
/// other; the caller skips them.
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
    let status = StatusCode::from_u16(code).map_err(|_| "bad status")?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.headers_mut() = HeaderMap::with_capacity(r.headers.len());
    // One copy of the head; every value is a slice of it (no allocation
    // per field).
    let shared = Bytes::copy_from_slice(&buf[..len]);
    let at = |v: &[u8]| {
        let from = v.as_ptr() as usize - buf.as_ptr() as usize;
        shared.slice(from..from + v.len())
    };
    let mut framing = Framing::Close;
    let out = response.headers_mut();
    for h in r.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            continue;
        };
        if name == header::TRANSFER_ENCODING {
            framing = Framing::Chunked;
            continue;
        }
        if name == header::CONTENT_LENGTH && framing == Framing::Close {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            framing = Framing::Length(n.ok_or("bad content-length")?);
        }
        if hop_by_hop(&name) {
            continue;
        }
        if let Ok(value) = HeaderValue::from_maybe_shared(at(h.value)) {
            out.append(name, value);
        }
    }
    if head_only || code == 204 || code == 304 || code < 200 {
        framing = Framing::None;
    }
    Ok(Some(Parsed {
        response,
        framing,
        len,
    }))
}

/// Fields that are about one HTTP/1.1 connection and have no place in
/// HTTP/2 (RFC 9113 8.2.2).
fn hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::UPGRADE
        || *name == header::TE
        || *name == header::TRAILER
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
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
