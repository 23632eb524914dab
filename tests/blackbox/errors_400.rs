//! Every 400 shape of the contract's error table (request smuggling and
//! syntax): the exact bytes, the exact status line, a close, nothing forwarded,
//! and a bystander connection on the same worker served afterwards.

use crate::common::fixture::*;
use crate::common::*;

// ------------------------------------------------------------------ 400: framing

#[test]
fn content_length_with_transfer_encoding_is_400() {
    let (fx, t) = (fixture(LIMITS), token());
    let s = smuggled(&t);
    let mut body = b"0\r\n\r\n".to_vec();
    body.extend_from_slice(&s);
    let cl = format!(
        "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
        body.len()
    );
    reject(&fx, &post(&t, &cl, &body), 400, &t, Reached::Nothing);
    let te_first = format!(
        "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
        body.len()
    );
    reject(&fx, &post(&t, &te_first, &body), 400, &t, Reached::Nothing);
}

#[test]
fn differing_content_lengths_are_400() {
    let (fx, t) = (fixture(LIMITS), token());
    let s = smuggled(&t);
    let h = format!("Content-Length: 0\r\nContent-Length: {}\r\n", s.len());
    reject(&fx, &post(&t, &h, &s), 400, &t, Reached::Nothing);
    let h = format!("Content-Length: {}\r\nContent-Length: 0\r\n", s.len());
    reject(&fx, &post(&t, &h, &s), 400, &t, Reached::Nothing);
}

#[test]
fn invalid_content_length_is_400() {
    let fx = fixture(LIMITS);
    // An empty value (or a list of nothing) is invalid, not absent: read
    // as no body, the bytes after the head would be the next request.
    let values = [
        "-1",
        "5x",
        "0x5",
        "+5",
        "5 5",
        "18446744073709551616",
        "",
        ",",
        " , ",
    ];
    for value in values {
        let t = token();
        let raw = post(&t, &format!("Content-Length: {value}\r\n"), b"hello");
        reject(&fx, &raw, 400, &t, Reached::Nothing);
    }
}

#[test]
fn transfer_encoding_gzip_chunked_is_400() {
    let (fx, t) = (fixture(LIMITS), token());
    let raw = post(
        &t,
        "Transfer-Encoding: gzip, chunked\r\n",
        b"5\r\nhello\r\n0\r\n\r\n",
    );
    reject(&fx, &raw, 400, &t, Reached::Nothing);
}

#[test]
fn transfer_encoding_chunked_gzip_is_400() {
    let (fx, t) = (fixture(LIMITS), token());
    let raw = post(
        &t,
        "Transfer-Encoding: chunked, gzip\r\n",
        b"5\r\nhello\r\n0\r\n\r\n",
    );
    reject(&fx, &raw, 400, &t, Reached::Nothing);
    // The same split over two lines.
    let t = token();
    let raw = post(
        &t,
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
        b"5\r\nhello\r\n0\r\n\r\n",
    );
    reject(&fx, &raw, 400, &t, Reached::Nothing);
}

#[test]
fn transfer_encoding_xchunked_is_400() {
    let (fx, t) = (fixture(LIMITS), token());
    let s = smuggled(&t);
    let mut body = b"0\r\n\r\n".to_vec();
    body.extend_from_slice(&s);
    let h = format!(
        "Transfer-Encoding: xchunked\r\nContent-Length: {}\r\n",
        body.len()
    );
    reject(&fx, &post(&t, &h, &body), 400, &t, Reached::Nothing);
    let t = token();
    reject(
        &fx,
        &post(&t, "Transfer-Encoding: xchunked\r\n", &s),
        400,
        &t,
        Reached::Nothing,
    );
}

fn bad_chunk_size(size: &str) {
    let (fx, t) = (fixture(LIMITS), token());
    let mut body = format!("{size}\r\nhello\r\n0\r\n\r\n").into_bytes();
    body.extend_from_slice(&smuggled(&t));
    let raw = post(&t, "Transfer-Encoding: chunked\r\n", &body);
    reject(&fx, &raw, 400, &t, Reached::NoCompleteRequest);
}

#[test]
fn chunk_size_not_hex_is_400() {
    bad_chunk_size("zz");
}

#[test]
fn chunk_size_negative_is_400() {
    bad_chunk_size("-5");
}

#[test]
fn chunk_size_overflow_is_400() {
    bad_chunk_size("fffffffffffffffff");
}

/// A trailer section that is not field lines (RFC 9112 section 7.1.2):
/// the body is invalid, so what follows it is never read as a request.
#[test]
fn malformed_trailer_is_400() {
    let fx = fixture(LIMITS);
    for trailer in [
        "Bad Header",
        "X-T : 1",
        ": 1",
        "X-T: 1\r\n folded",
        "X-T: a\x01b",
    ] {
        let t = token();
        let mut body = format!("5\r\nhello\r\n0\r\n{trailer}\r\n\r\n").into_bytes();
        body.extend_from_slice(&smuggled(&t));
        let raw = post(&t, "Transfer-Encoding: chunked\r\n", &body);
        reject(&fx, &raw, 400, &t, Reached::NoCompleteRequest);
    }
}

// ------------------------------------------------------------------ 400: syntax

#[test]
fn bare_cr_is_400() {
    let fx = fixture(LIMITS);
    let cases: [&[u8]; 3] = [
        b"GET /app/TOK HTTP/1.1\r\nHost: h\r\nX-A: a\rX-B: b\r\n\r\n",
        b"GET /app/TOK HTTP/1.1\rHost: h\r\n\r\n",
        b"GET /app/TOK HTTP/1.1\r\nHost: h\r\n\r\r\n",
    ];
    for case in cases {
        let t = token();
        reject(&fx, &with_token(case, &t), 400, &t, Reached::Nothing);
    }
}

#[test]
fn bare_lf_is_400() {
    let fx = fixture(LIMITS);
    let cases: [&[u8]; 3] = [
        b"GET /app/TOK HTTP/1.1\nHost: h\n\n",
        b"GET /app/TOK HTTP/1.1\r\nHost: h\nX-A: a\r\n\r\n",
        b"POST /app/TOK HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\nhello",
    ];
    for case in cases {
        let t = token();
        reject(&fx, &with_token(case, &t), 400, &t, Reached::Nothing);
    }
}

#[test]
fn whitespace_before_colon_is_400() {
    let fx = fixture(LIMITS);
    for h in [
        "Content-Length : 5\r\n",
        "X-A\t: b\r\nContent-Length: 5\r\n",
        "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n",
    ] {
        let t = token();
        reject(&fx, &post(&t, h, b"hello"), 400, &t, Reached::Nothing);
    }
}

#[test]
fn obs_fold_is_400() {
    let fx = fixture(LIMITS);
    for h in [
        "X-Fold: a\r\n b\r\nContent-Length: 5\r\n",
        "Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n",
    ] {
        let t = token();
        reject(&fx, &post(&t, h, b"hello"), 400, &t, Reached::Nothing);
    }
}

#[test]
fn nul_in_header_value_is_400() {
    let (fx, t) = (fixture(LIMITS), token());
    reject(
        &fx,
        &post(&t, "X-N: a\0b\r\nContent-Length: 5\r\n", b"hello"),
        400,
        &t,
        Reached::Nothing,
    );
}

#[test]
fn missing_or_repeated_host_is_400() {
    let fx = fixture(LIMITS);
    let t = token();
    reject(
        &fx,
        format!("GET /app/{t} HTTP/1.1\r\n\r\n").as_bytes(),
        400,
        &t,
        Reached::Nothing,
    );
    let t = token();
    let raw = format!("GET /app/{t} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    reject(&fx, raw.as_bytes(), 400, &t, Reached::Nothing);
}

/// Host = uri-host [ ":" port ] (RFC 9112 section 3.2: an invalid Host is
/// a 400); valid spellings go through.
#[test]
fn an_invalid_host_is_400() {
    let fx = fixture(LIMITS);
    for host in [
        "h:abc", "h:8o", "[::1", "[]:80", "[::1]x", "u@h", "a/b", "h:80:81",
    ] {
        let t = token();
        let raw = format!("GET /app/{t} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        reject(&fx, raw.as_bytes(), 400, &t, Reached::Nothing);
    }
    let mut c = Client::connect(fx.proxy.addr());
    for host in [
        "h",
        "h:8080",
        "h:",
        "[::1]:80",
        "[::1]",
        "127.0.0.1:1",
        "a-b_c.d~e",
        "",
    ] {
        let t = token();
        c.send(format!("GET /app/{t} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(c.read_response().status, 200, "Host: {host}");
    }
}

#[test]
fn malformed_request_lines_are_400() {
    let fx = fixture(LIMITS);
    let cases: [&[u8]; 9] = [
        b"GET /app/TOK\r\nHost: h\r\n\r\n",
        b"GET  /app/TOK HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /app/TOK  HTTP/1.1\r\nHost: h\r\n\r\n",
        b" GET /app/TOK HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /app/TOK HTTP/1.1 extra\r\nHost: h\r\n\r\n",
        b"GET /app/TOK FTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /app/TOK HTTP/1.x\r\nHost: h\r\n\r\n",
        b"G(T /app/TOK HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET app/TOK HTTP/1.1\r\nHost: h\r\n\r\n",
    ];
    for case in cases {
        let t = token();
        reject(&fx, &with_token(case, &t), 400, &t, Reached::Nothing);
    }
}
