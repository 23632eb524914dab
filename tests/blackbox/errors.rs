//! The rest of the contract's error table (404, 408, 413, 414, 431, 502,
//! 504; 503 belongs to health checks): the exact bytes that provoke each,
//! the exact status line, the close the contract demands, nothing forwarded
//! for a rejected request, and a bystander connection on the same (single)
//! worker that is still served afterwards. The 400s are in `errors_400.rs`.

use crate::common::fixture::*;
use crate::common::*;
use std::time::{Duration, Instant};

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

/// A refused body the client goes on sending: the 413 ends with a FIN and
/// what the client still sends is read and dropped (nginx's lingering
/// close), not answered with a reset. A reset would drop the 413's bytes
/// not yet acknowledged and fail the client's writes before it reads.
#[test]
fn a_refused_body_still_coming_gets_a_lingering_close_not_a_reset() {
    use std::io::{Read, Write};
    let (fx, t) = (fixture(LIMITS), token());
    let by = bystander(&fx);
    let mut s = std::net::TcpStream::connect(fx.proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Far more than one read of the head takes: most of it is still on
    // the socket when the 413 is written.
    s.write_all(&post(&t, "Content-Length: 200000\r\n", &[b'x'; 100_000]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // The client goes on writing after the answer; this must not fail.
    s.write_all(&[b'x'; 50_000]).unwrap();
    let mut got = Vec::new();
    let end = s.read_to_end(&mut got);
    assert!(got.starts_with(b"HTTP/1.1 413 "), "{}", show(&got));
    assert!(end.is_ok(), "the connection ended with {end:?}, not a FIN");
    assert_eq!(fx.app.heads_with(&t), 0, "the upstream saw the head");
    still_served(&fx, by);
}

#[test]
fn body_over_limit_with_expect_100_is_413_without_100() {
    let (fx, t) = (fixture(LIMITS), token());
    let by = bystander(&fx);
    let raw = post(&t, "Content-Length: 5000\r\nExpect: 100-continue\r\n", b"");
    let mut c = Client::connect(fx.proxy.addr());
    c.send(&raw);
    // The proxy knows the answer from the head: no 100 invites a body it will refuse.
    assert_proxy_status(&c.read_response(), 413, &raw);
    assert!(
        c.wait_closed(Duration::from_secs(2)),
        "413 but the connection stayed open"
    );
    assert_eq!(fx.app.heads_with(&t), 0, "the upstream saw the head");
    still_served(&fx, by);
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

/// The byte limit decides, not a count of fields: 200 small fields (2.6
/// KiB under a 4 KiB limit) are forwarded, all of them. Past 512 fields a
/// head is refused even under the byte limit.
#[test]
fn many_small_fields_pass_and_past_512_are_431() {
    let (fx, t) = (fixture(LIMITS), token());
    let headers: String = (0..200).map(|i| format!("X-N{i}: v{i}\r\n")).collect();
    let raw = format!("GET /app/{t} HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
    let mut c = Client::connect(fx.proxy.addr());
    c.send(raw.as_bytes());
    assert_eq!(c.read_response().status, 200, "200 fields, 2.6 KiB");
    let r = fx.app.only(&t);
    assert_eq!(r.header("x-n199"), Some("v199"));
    assert_eq!(r.header("x-n0"), Some("v0"));
    let t = token();
    let raw = format!(
        "GET /app/{t} HTTP/1.1\r\nHost: h\r\n{}\r\n",
        "a:\r\n".repeat(512)
    );
    reject(&fx, raw.as_bytes(), 431, &t, Reached::Nothing);
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
fn upstream_closing_without_answer_is_502() {
    upstream_fails("/hangup/", 502);
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

/// The head came, its small body did not: ringside holds a small head back
/// until its body starts, so the client gets the error, not half an answer.
#[test]
fn upstream_closing_after_its_head_is_502() {
    upstream_fails("/headonly/", 502);
}

#[test]
fn upstream_silent_after_its_head_is_504() {
    let took = upstream_fails("/headstall/", 504);
    assert!(
        took >= Duration::from_millis(400),
        "504 after {took:?}, before read_timeout (500ms)"
    );
}
