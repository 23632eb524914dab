//! Every row of the contract's error table except 503: the exact bytes that
//! provoke it, the exact status line, the close the contract demands, nothing
//! forwarded for a rejected request, and a bystander connection on the same
//! (single) worker that is still served afterwards.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Small limits so every case is cheap; timeouts long enough not to fire by accident.
const LIMITS: &str = "client_header_timeout = \"5s\"\nclient_body_timeout = \"5s\"\n\
                      max_request_head = \"4k\"\nmax_request_body = 1000";
/// For the 408 cases.
const SHORT_TIMEOUTS: &str = "client_header_timeout = \"500ms\"\nclient_body_timeout = \"500ms\"\n\
                              max_request_head = \"4k\"\nmax_request_body = 1000";

const GARBAGE: &[u8] = b"this is not http at all\r\n\r\n";
const NO_COLON: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nThis line has no colon\r\n\r\nok";

struct Fx {
    proxy: Proxy,
    app: Upstream,
    _others: Vec<Upstream>,
}

/// `/app/` → echo, `/down/` → nothing listening, `/garbage/` → not HTTP,
/// `/nocolon/` → a header line without a colon, `/silent/` → never answers.
fn fixture(limits: &str) -> Fx {
    let app = Upstream::echo();
    let garbage = Upstream::start(|c| {
        if c.read_request().is_some() {
            c.write(GARBAGE);
        }
    });
    let nocolon = Upstream::start(|c| {
        if c.read_request().is_some() {
            c.write(NO_COLON);
            c.hold_until_closed();
        }
    });
    let silent = Upstream::start(|c| {
        if c.read_request().is_some() {
            c.hold_until_closed();
        }
    });
    let rest = [
        upstream("app", app.addr(), ""),
        upstream("down", closed_port(), "connect_timeout = \"1s\""),
        upstream("garbage", garbage.addr(), ""),
        upstream("nocolon", nocolon.addr(), ""),
        upstream("silent", silent.addr(), "read_timeout = \"500ms\""),
        route("/app/", "app"),
        route("/down/", "down"),
        route("/garbage/", "garbage"),
        route("/nocolon/", "nocolon"),
        route("/silent/", "silent"),
    ]
    .concat();
    let proxy = Proxy::start(&config(limits, &rest));
    Fx {
        proxy,
        app,
        _others: vec![garbage, nocolon, silent],
    }
}

/// A connection served once, now idle on the same worker as the bad one.
fn bystander(fx: &Fx) -> Client {
    let mut c = Client::connect(fx.proxy.addr());
    get_ok(&mut c, &format!("/app/before-{}", token()));
    c
}

/// The bystander and a fresh connection are both served correctly.
fn still_served(fx: &Fx, mut by: Client) {
    get_ok(&mut by, &format!("/app/after-{}", token()));
    get_ok(
        &mut Client::connect(fx.proxy.addr()),
        &format!("/app/fresh-{}", token()),
    );
}

/// What the upstream may have seen of a rejected request.
#[derive(PartialEq)]
enum Reached {
    /// Not even the head (the proxy could tell from the head alone).
    Nothing,
    /// Perhaps the head (a streaming proxy finds body errors late), never all of it.
    NoCompleteRequest,
}

/// Sends `raw` on a new connection; wants `code`, then a close, and checks
/// that nothing (smuggled or not) got through and the bystander is fine.
fn reject(fx: &Fx, raw: &[u8], code: u16, tok: &str, reached: Reached) {
    let by = bystander(fx);
    let mut c = Client::connect(fx.proxy.addr());
    // The proxy may answer and close before reading everything; its answer is what counts.
    let _ = c.try_send(raw);
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("sent {}\nno response: {e}", show(raw)));
    assert_proxy_status(&r, code, raw);
    assert!(
        c.wait_closed(Duration::from_secs(2)),
        "sent {}\ngot {} but the connection stayed open",
        show(raw),
        r.status
    );
    let heads = fx.app.heads_with(tok);
    if reached == Reached::Nothing {
        assert_eq!(
            heads,
            0,
            "sent {}\nrejected, yet the upstream saw its head",
            show(raw)
        );
    }
    assert!(
        fx.app.requests_with(tok).is_empty(),
        "sent {}\nrejected, yet the upstream got the whole request",
        show(raw)
    );
    assert_eq!(
        fx.app.heads_with("smuggled"),
        0,
        "DESYNC: sent {}",
        show(raw)
    );
    still_served(fx, by);
}

fn post(tok: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!("POST /app/{tok} HTTP/1.1\r\nHost: h\r\n{headers}\r\n").into_bytes();
    v.extend_from_slice(body);
    v
}

/// A second request hidden in the first one's body: must never reach the upstream.
fn smuggled(tok: &str) -> Vec<u8> {
    format!("GET /app/smuggled-{tok} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes()
}

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
    for value in ["-1", "5x", "0x5", "+5", "5 5", "18446744073709551616"] {
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

fn with_token(raw: &[u8], tok: &str) -> Vec<u8> {
    let s = String::from_utf8(raw.to_vec()).unwrap();
    s.replace("TOK", tok).into_bytes()
}

// ------------------------------------------------------------------ 404

#[test]
fn no_route_is_404() {
    let fx = fixture(LIMITS);
    let by = bystander(&fx);
    let raw = b"GET /nowhere/x HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut c = Client::connect(fx.proxy.addr());
    c.send(raw);
    let r = c.read_response();
    assert_proxy_status(&r, 404, raw);
    // Without `Connection: close` the connection must still be in sync.
    if r.has_token("connection", "close") {
        assert!(
            c.wait_closed(Duration::from_secs(2)),
            "said close, stayed open"
        );
    } else {
        get_ok(&mut c, &format!("/app/after-404-{}", token()));
    }
    still_served(&fx, by);
}

// ------------------------------------------------------------------ 408

#[test]
fn head_timeout_is_408() {
    let (fx, t) = (fixture(SHORT_TIMEOUTS), token());
    let by = bystander(&fx);
    let raw = format!("GET /app/{t} HTTP/1.1\r\nHost: h\r\nX-Slow: never ends");
    let mut c = Client::connect(fx.proxy.addr());
    let started = Instant::now();
    c.send(raw.as_bytes());
    let r = c.read_response();
    let took = started.elapsed();
    assert_proxy_status(&r, 408, raw.as_bytes());
    assert!(
        took >= Duration::from_millis(350),
        "408 after {took:?}, before client_header_timeout (500ms)"
    );
    assert!(
        took <= Duration::from_millis(2500),
        "408 only after {took:?} (client_header_timeout 500ms)"
    );
    assert!(
        c.wait_closed(Duration::from_secs(2)),
        "408 but the connection stayed open"
    );
    assert_eq!(
        fx.app.heads_with(&t),
        0,
        "incomplete head reached the upstream"
    );
    still_served(&fx, by);
}

#[test]
fn body_timeout_is_408() {
    let (fx, t) = (fixture(SHORT_TIMEOUTS), token());
    let by = bystander(&fx);
    let raw = post(&t, "Content-Length: 10\r\n", b"abc");
    let mut c = Client::connect(fx.proxy.addr());
    let started = Instant::now();
    c.send(&raw);
    let r = c.read_response();
    let took = started.elapsed();
    assert_proxy_status(&r, 408, &raw);
    assert!(
        took >= Duration::from_millis(350),
        "408 after {took:?}, before client_body_timeout (500ms)"
    );
    assert!(
        took <= Duration::from_millis(2500),
        "408 only after {took:?} (client_body_timeout 500ms)"
    );
    assert!(
        c.wait_closed(Duration::from_secs(2)),
        "408 but the connection stayed open"
    );
    assert!(
        fx.app.requests_with(&t).is_empty(),
        "the upstream got a complete request"
    );
    still_served(&fx, by);
}

// ------------------------------------------------------------------ 413 / 414 / 431

#[test]
fn body_over_limit_by_content_length_is_413() {
    let (fx, t) = (fixture(LIMITS), token());
    let raw = post(&t, "Content-Length: 1001\r\n", &[b'x'; 1001]);
    reject(&fx, &raw, 413, &t, Reached::Nothing);
}

#[test]
fn body_over_limit_by_chunked_total_is_413() {
    let (fx, t) = (fixture(LIMITS), token());
    // Every chunk is small; only their sum (1200) passes max_request_body (1000).
    let chunk = format!("190\r\n{}\r\n", "y".repeat(400));
    let body = format!("{chunk}{chunk}{chunk}0\r\n\r\n");
    let raw = post(&t, "Transfer-Encoding: chunked\r\n", body.as_bytes());
    reject(&fx, &raw, 413, &t, Reached::NoCompleteRequest);
}

#[test]
fn body_at_limit_passes() {
    let (fx, t) = (fixture(LIMITS), token());
    let mut c = Client::connect(fx.proxy.addr());
    c.send(&post(&t, "Content-Length: 1000\r\n", &[b'x'; 1000]));
    assert_eq!(
        c.read_response().status,
        200,
        "a body of exactly max_request_body"
    );
    let chunk = format!("1f4\r\n{}\r\n", "y".repeat(500));
    c.send(&post(
        &t,
        "Transfer-Encoding: chunked\r\n",
        format!("{chunk}{chunk}0\r\n\r\n").as_bytes(),
    ));
    assert_eq!(
        c.read_response().status,
        200,
        "a chunked body of exactly max_request_body"
    );
    let got: Vec<usize> = fx
        .app
        .requests_with(&t)
        .iter()
        .map(|r| r.body.len())
        .collect();
    assert_eq!(got, [1000, 1000]);
}

#[test]
fn long_uri_is_414() {
    let (fx, t) = (fixture(LIMITS), token());
    let raw = format!(
        "GET /app/{t}/{} HTTP/1.1\r\nHost: h\r\n\r\n",
        "u".repeat(5000)
    );
    reject(&fx, raw.as_bytes(), 414, &t, Reached::Nothing);
}

#[test]
fn big_header_is_431() {
    let (fx, t) = (fixture(LIMITS), token());
    let raw = format!(
        "GET /app/{t} HTTP/1.1\r\nHost: h\r\nX-Huge: {}\r\n\r\n",
        "h".repeat(5000)
    );
    reject(&fx, raw.as_bytes(), 431, &t, Reached::Nothing);
}

#[test]
fn big_head_total_is_431() {
    let (fx, t) = (fixture(LIMITS), token());
    // Ten headers of 500 bytes: none is big, together they pass 4k.
    let headers: String = (0..10)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(500)))
        .collect();
    let raw = format!("GET /app/{t} HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
    reject(&fx, raw.as_bytes(), 431, &t, Reached::Nothing);
}

#[test]
fn head_under_limit_passes() {
    let (fx, t) = (fixture(LIMITS), token());
    let headers: String = (0..5)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(500)))
        .collect();
    let raw = format!("GET /app/{t} HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
    let mut c = Client::connect(fx.proxy.addr());
    c.send(raw.as_bytes());
    assert_eq!(
        c.read_response().status,
        200,
        "a 2.6 KiB head under a 4 KiB limit"
    );
    let r = fx.app.only(&t);
    assert_eq!(r.header("x-h4").map(str::len), Some(500));
}

// ------------------------------------------------------------------ 502 / 504

/// A GET to an upstream that fails; wants `code` and a working bystander.
fn upstream_fails(prefix: &str, code: u16) -> Duration {
    let (fx, t) = (fixture(LIMITS), token());
    let by = bystander(&fx);
    let raw = format!("GET {prefix}{t} HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut c = Client::connect(fx.proxy.addr());
    let started = Instant::now();
    c.send(raw.as_bytes());
    let r = c.read_response();
    let took = started.elapsed();
    assert_proxy_status(&r, code, raw.as_bytes());
    still_served(&fx, by);
    took
}

#[test]
fn refused_connection_is_502() {
    let took = upstream_fails("/down/", 502);
    assert!(
        took < Duration::from_millis(2500),
        "a refused connect took {took:?}"
    );
}

#[test]
fn upstream_garbage_is_502() {
    upstream_fails("/garbage/", 502);
}

#[test]
fn upstream_header_without_colon_is_502() {
    upstream_fails("/nocolon/", 502);
}

#[test]
fn upstream_silence_is_504() {
    let took = upstream_fails("/silent/", 504);
    assert!(
        took >= Duration::from_millis(400),
        "504 after {took:?}, before read_timeout (500ms)"
    );
    assert!(
        took <= Duration::from_secs(3),
        "504 only after {took:?} (read_timeout 500ms)"
    );
}
