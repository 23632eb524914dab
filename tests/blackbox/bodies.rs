//! Message bodies and connections: Content-Length and chunked both ways,
//! close-delimited responses, HEAD, 1xx, 204/304, `Expect: 100-continue`,
//! HTTP/1.0 clients, pipelining, keep-alive on both sides and WebSocket tunnels.

use crate::common::*;
use std::time::Duration;

const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n\
    5;ext=1\r\nhello\r\n00000000000000000008\r\n chunked\r\n6\r\n world\r\n000\r\nX-Trailer: t\r\n\r\n";
const CHUNKED_BODY: &[u8] = b"hello chunked world";
const HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
    HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// RFC 6455's answer to `WS_KEY`; the proxy passes it through unchanged.
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const BIG: usize = 1_000_000;
/// Larger than the buffer ringside writes a response head into, smaller
/// than its first read of the upstream's answer: the whole body comes with
/// the head and goes out behind it.
const MID: usize = 9_000;

fn close_delimited_body() -> Vec<u8> {
    (0..50)
        .flat_map(|i| format!("line {i:04} of a close-delimited body\n").into_bytes())
        .collect()
}

/// The origin, scripted by the first path segment; anything else is echoed.
fn app(c: &mut UpConn) {
    while let Some(req) = c.read_request() {
        let kind = req.target.split('/').nth(1).unwrap_or("");
        let resp: Vec<u8> = match kind {
            "chunked" => CHUNKED.to_vec(),
            "zeros" => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 000000000000000000000002\r\n\r\nok".to_vec()
            }
            "twice" => b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nX-A: 1\r\n\
                Content-Length: 02\r\n\r\nok"
                .to_vec(),
            "differ" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\
                Content-Length: 3\r\n\r\nok!"
                .to_vec(),
            "hints" => HINTS.to_vec(),
            "s204" => b"HTTP/1.1 204 No Content\r\nX-Kind: 204\r\n\r\n".to_vec(),
            "s304" => {
                b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 100\r\n\r\n".to_vec()
            }
            "head" if req.method == "HEAD" => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec()
            }
            "mid" => {
                let mut v =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {MID}\r\n\r\n").into_bytes();
                v.extend(pattern(MID, 5));
                v
            }
            "big" => {
                let mut v =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
                v.extend(pattern(BIG, 7));
                v
            }
            "nolength" => {
                let mut v = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
                v.extend(close_delimited_body());
                c.write(&v);
                return;
            }
            "ws" => return tunnel(c, &req),
            // A second, unasked-for response right behind the first one.
            "leftover" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
                HTTP/1.1 200 OK\r\nX-Echo-Target: stale\r\nContent-Length: 5\r\n\r\nstale"
                .to_vec(),
            _ => echo_response(&req),
        };
        if !c.write(&resp) || req.has_token("connection", "close") {
            return;
        }
    }
}

/// Answers an Upgrade with 101 and `srv-hello\n`, then echoes raw bytes until
/// the proxy closes (or closes itself right away for `/ws/srvclose…`).
fn tunnel(c: &mut UpConn, req: &Request) {
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {WS_ACCEPT}\r\n\r\nsrv-hello\n"
    );
    if !c.write(resp.as_bytes()) || req.target.contains("srvclose") {
        return;
    }
    while let Some(data) = c.read_some(Duration::from_secs(10)) {
        if !c.write(&data) {
            return;
        }
    }
}

fn start() -> (Proxy, Upstream) {
    let up = Upstream::start(app);
    (Proxy::start(&single_upstream(up.addr())), up)
}

// ------------------------------------------------------------------ request bodies

#[test]
fn content_length_request_body_is_forwarded() {
    let (proxy, up) = start();
    let t = token();
    let body = pattern(300_000, 1);
    let mut c = Client::connect(proxy.addr());
    c.send(
        format!(
            "POST /echo/{t} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert!(r.body_str().contains("bodylen=300000"), "{}", r.body_str());
    let got = up.only(&t);
    assert!(
        got.body == body,
        "body damaged ({} bytes arrived)",
        got.body.len()
    );
    if got.framing == Framing::Length {
        assert_eq!(got.header("content-length"), Some("300000"));
    }
}

/// `Content-Length = 1*DIGIT`: leading zeros, however many, are the same
/// number, both ways.
#[test]
fn a_content_length_with_leading_zeros_is_its_number() {
    let (proxy, up) = start();
    let t = token();
    let mut c = Client::connect(proxy.addr());
    c.send(
        format!(
            "POST /echo/{t} HTTP/1.1\r\nHost: h\r\nContent-Length: 0000000000000000000005\r\n\r\n\
             hello"
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(up.only(&t).body, b"hello");
    let r = c.get("/zeros/1");
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    get_ok(&mut c, &format!("/echo/after-{t}"));
}

/// An upstream's `Content-Length` said as a list of equal values and said
/// again reaches the client as one field with one value (RFC 9110 section
/// 8.6; HTTP/2 clients refuse anything else), and the connection goes on;
/// differing values are a 502.
#[test]
fn an_upstream_length_said_twice_reaches_the_client_once() {
    let (proxy, _up) = start();
    let mut c = Client::connect(proxy.addr());
    let r = c.get("/twice/1");
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    let lengths: Vec<&str> = (r.headers.iter())
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(lengths, ["2"], "{:?}", r.headers);
    get_ok(&mut c, "/echo/after-twice");
    // Differing values say no length at all: the answer is refused.
    assert_eq!(c.get("/differ/1").status, 502);
    get_ok(&mut c, "/echo/after-differ");
}

#[test]
fn chunked_request_body_is_forwarded() {
    let (proxy, up) = start();
    let t = token();
    let big = pattern(40_000, 2);
    let mut raw =
        format!("POST /echo/{t} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    // Leading zeros are valid in a chunk size (`1*HEXDIG`), however many.
    raw.extend_from_slice(b"1;a=b\r\na\r\n0000000000000000000B\r\nhello world\r\n");
    raw.extend_from_slice(format!("{:x}\r\n", big.len()).as_bytes());
    raw.extend_from_slice(&big);
    raw.extend_from_slice(b"\r\n00\r\nX-Trailer: 1\r\n\r\n");
    let mut c = Client::connect(proxy.addr());
    c.send(&raw);
    assert_eq!(c.read_response().status, 200);
    let got = up.only(&t);
    let mut want = b"ahello world".to_vec();
    want.extend_from_slice(&big);
    assert!(
        got.body == want,
        "body damaged ({} of {} bytes)",
        got.body.len(),
        want.len()
    );
    if got.framing == Framing::Length {
        assert_eq!(
            got.header("content-length"),
            Some(want.len().to_string().as_str())
        );
    }
    get_ok(&mut c, &format!("/echo/after-{t}"));
}

// ------------------------------------------------------------------ response bodies

#[test]
fn content_length_response_body_is_relayed() {
    let (proxy, _up) = start();
    let mut c = Client::connect(proxy.addr());
    let r = c.get("/big/1");
    assert_eq!(r.header("content-length"), Some("1000000"));
    assert!(r.body == pattern(BIG, 7), "1 MB body damaged");
    get_ok(&mut c, "/echo/after-big");
}

#[test]
fn a_body_that_came_with_its_head_is_relayed_behind_it() {
    let (proxy, _up) = start();
    let mut c = Client::connect(proxy.addr());
    for i in 0..3 {
        let r = c.get(&format!("/mid/{i}"));
        assert_eq!(r.header("content-length"), Some("9000"));
        assert!(r.body == pattern(MID, 5), "9,000-byte body damaged");
    }
    get_ok(&mut c, "/echo/after-mid");
}

/// A small body that the upstream sends after its head, in a later packet,
/// leaves with the head: the client gets nothing until the body starts,
/// then the whole answer (one write, not a head alone and then a body).
#[test]
fn a_small_body_sent_after_its_head_goes_out_with_it() {
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let up = Upstream::start(move |c: &mut UpConn| {
        while let Some(req) = c.read_request() {
            if req.target.starts_with("/later") {
                c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
                let _ = go_rx.lock().unwrap().recv_timeout(IO_TIMEOUT);
                c.write(b"later");
            } else if !c.write(&echo_response(&req)) {
                return;
            }
        }
    });
    let proxy = Proxy::start(&single_upstream(up.addr()));
    let mut c = Client::connect(proxy.addr());
    c.send(b"GET /later HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(up.wait_until(IO_TIMEOUT, |s| s.heads.len() == 1));
    c.timeout = Duration::from_millis(300);
    let early = c.try_read_response(true);
    assert!(early.is_err(), "the head went out before its body");
    go_tx.send(()).unwrap();
    c.timeout = IO_TIMEOUT;
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"later");
    get_ok(&mut c, "/echo/after-later");
}

#[test]
fn chunked_response_body_is_relayed() {
    let (proxy, _up) = start();
    let mut c = Client::connect(proxy.addr());
    let r = c.get("/chunked/1");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, CHUNKED_BODY);
    get_ok(&mut c, "/echo/after-chunked");
}

#[test]
fn close_delimited_response_is_relayed_whole() {
    let (proxy, _up) = start();
    let mut c = Client::connect(proxy.addr());
    let r = c.get("/nolength/1");
    assert_eq!(r.status, 200);
    assert!(
        r.body == close_delimited_body(),
        "{} of {} bytes",
        r.body.len(),
        close_delimited_body().len()
    );
    if r.framing == Framing::Close {
        assert!(c.wait_closed(Duration::from_secs(2)));
    } else {
        get_ok(&mut c, "/echo/after-nolength");
    }
}

#[test]
fn head_response_has_no_body() {
    let (proxy, _up) = start();
    let mut c = Client::connect(proxy.addr());
    c.send(b"HEAD /head/1 HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.header("content-length"), Some("1000"));
    // Any stray body byte would corrupt this next response.
    get_ok(&mut c, "/echo/after-head");
}

#[test]
fn early_hints_103_come_before_the_200() {
    let (proxy, _up) = start();
    let mut c = Client::connect(proxy.addr());
    let r = c.get("/hints/1");
    assert_eq!(r.status_line, "HTTP/1.1 103 Early Hints");
    assert_eq!(r.header("link"), Some("</style.css>; rel=preload"));
    let r = c.read_response();
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.body, b"ok");
    get_ok(&mut c, "/echo/after-hints");
}

#[test]
fn status_204_and_304_have_no_body() {
    let (proxy, _up) = start();
    let mut c = Client::connect(proxy.addr());
    let r = c.get("/s204/1");
    assert_eq!(r.status_line, "HTTP/1.1 204 No Content");
    c.send(b"GET /s304/1 HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"v1\"\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status_line, "HTTP/1.1 304 Not Modified");
    assert_eq!(r.header("etag"), Some("\"v1\""));
    get_ok(&mut c, "/echo/after-304");
}

#[test]
fn expect_100_continue_is_answered_by_the_proxy() {
    let (proxy, up) = start();
    let t = token();
    let mut c = Client::connect(proxy.addr());
    c.send(format!("POST /echo/{t} HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n").as_bytes());
    c.timeout = Duration::from_secs(2);
    let r = c.read_response();
    assert_eq!(show(&r.raw_head), show(b"HTTP/1.1 100 Continue\r\n\r\n"));
    c.send(b"hello world");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(up.only(&t).body, b"hello world");
}

// ------------------------------------------------------------------ HTTP/1.0

/// After `r`, the connection is either closed or still in sync, as `r` said.
fn closes_unless_keep_alive(c: &mut Client, r: &Response) {
    if r.has_token("connection", "keep-alive") {
        c.send(b"GET /echo/next HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(
            c.read_response().header("x-echo-target"),
            Some("/echo/next")
        );
    } else {
        assert!(
            c.wait_closed(Duration::from_secs(2)),
            "HTTP/1.0 without keep-alive, still open"
        );
    }
}

#[test]
fn http10_client_never_gets_chunked() {
    let (proxy, _up) = start();
    for ask in ["", "Connection: keep-alive\r\n"] {
        let mut c = Client::connect(proxy.addr());
        c.send(format!("GET /chunked/1 HTTP/1.0\r\nHost: h\r\n{ask}\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert!(
            r.header("transfer-encoding").is_none(),
            "chunked to HTTP/1.0: {}",
            show(&r.raw_head)
        );
        assert_eq!(r.body, CHUNKED_BODY);
        if ask.is_empty() {
            assert!(
                c.wait_closed(Duration::from_secs(2)),
                "HTTP/1.0 without keep-alive, still open"
            );
        } else {
            closes_unless_keep_alive(&mut c, &r);
        }
    }
}

#[test]
fn http10_keep_alive_only_when_asked() {
    let (proxy, _up) = start();
    let mut c = Client::connect(proxy.addr());
    for i in 0..2 {
        c.send(
            format!("GET /echo/ka-{i} HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n")
                .as_bytes(),
        );
        let r = c.read_response();
        assert_eq!(
            r.header("x-echo-target"),
            Some(format!("/echo/ka-{i}").as_str())
        );
        assert!(
            r.has_token("connection", "keep-alive"),
            "HTTP/1.0 asked for keep-alive: {}",
            show(&r.raw_head)
        );
    }
    c.send(b"GET /echo/last HTTP/1.0\r\nHost: h\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.header("x-echo-target"), Some("/echo/last"));
    assert!(!r.has_token("connection", "keep-alive"));
    assert!(
        c.wait_closed(Duration::from_secs(2)),
        "HTTP/1.0 without keep-alive, still open"
    );
}

#[test]
fn http10_client_gets_no_1xx() {
    let (proxy, _up) = start();
    let mut c = Client::connect(proxy.addr());
    c.send(b"GET /hints/1 HTTP/1.0\r\nHost: h\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200, "an HTTP/1.0 client got {}", r.status_line);
    assert_eq!(r.body, b"ok");
}

// ------------------------------------------------------------------ connections

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (proxy, _up) = start();
    let t = token();
    let mut raw = format!("GET /echo/p0-{t} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes();
    raw.extend(
        format!("POST /echo/p1-{t} HTTP/1.1\r\nHost: h\r\nContent-Length: 600\r\n\r\n")
            .into_bytes(),
    );
    raw.extend(b"abcdef".repeat(100));
    raw.extend(format!("GET /chunked/p2-{t} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes());
    raw.extend(format!("GET /echo/p3-{t} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes());
    let mut c = Client::connect(proxy.addr());
    c.send(&raw);
    let r = c.read_response();
    assert_eq!(
        r.header("x-echo-target"),
        Some(format!("/echo/p0-{t}").as_str())
    );
    let r = c.read_response();
    assert_eq!(
        r.header("x-echo-target"),
        Some(format!("/echo/p1-{t}").as_str())
    );
    assert!(r.body_str().contains("bodylen=600"), "{}", r.body_str());
    assert_eq!(c.read_response().body, CHUNKED_BODY);
    let r = c.read_response();
    assert_eq!(
        r.header("x-echo-target"),
        Some(format!("/echo/p3-{t}").as_str())
    );
}

#[test]
fn client_connection_is_kept_alive() {
    let (proxy, _up) = start();
    let mut c = Client::connect(proxy.addr());
    for i in 0..3 {
        let target = format!("/echo/ka-{i}");
        let r = c.get(&target);
        assert_eq!(r.header("x-echo-target"), Some(target.as_str()));
        assert!(
            !r.has_token("connection", "close"),
            "proxy closes a keep-alive connection"
        );
    }
    assert!(
        !c.wait_closed(Duration::from_millis(300)),
        "closed after 3 requests"
    );
}

#[test]
fn upstream_connections_are_reused_on_one_client_connection() {
    let (proxy, up) = start();
    let t = token();
    let mut c = Client::connect(proxy.addr());
    for i in 0..10 {
        get_ok(&mut c, &format!("/echo/{t}-{i}"));
    }
    let mut conns: Vec<usize> = up.requests_with(&t).iter().map(|r| r.conn).collect();
    conns.sort();
    conns.dedup();
    assert!(conns.len() < 10, "10 requests used 10 upstream connections");
}

#[test]
fn upstream_connections_are_reused_across_client_connections() {
    let (proxy, up) = start();
    let t = token();
    for i in 0..10 {
        get_ok(
            &mut Client::connect(proxy.addr()),
            &format!("/echo/{t}-{i}"),
        );
    }
    let mut conns: Vec<usize> = up.requests_with(&t).iter().map(|r| r.conn).collect();
    conns.sort();
    conns.dedup();
    assert!(
        conns.len() < 10,
        "10 client connections used 10 upstream connections"
    );
}

#[test]
fn upstream_connection_with_leftover_bytes_is_not_reused() {
    let (proxy, _up) = start();
    let mut c = Client::connect(proxy.addr());
    let r = c.get("/leftover/1");
    assert_eq!(r.body, b"ok");
    // Reusing that connection would hand this request the stale second response.
    for i in 0..3 {
        get_ok(&mut c, &format!("/echo/after-leftover-{i}"));
    }
}

#[test]
fn idle_client_connection_closes_after_keepalive_timeout() {
    let up = Upstream::start(app);
    let toml = config(
        "keepalive_timeout = \"500ms\"",
        &(upstream("app", up.addr(), "") + &route("/", "app")),
    );
    let proxy = Proxy::start(&toml);
    let mut c = Client::connect(proxy.addr());
    get_ok(&mut c, "/echo/then-idle");
    let idle = std::time::Instant::now();
    assert!(
        c.wait_closed(Duration::from_secs(3)),
        "idle connection still open after 3 s"
    );
    let took = idle.elapsed();
    assert!(
        took >= Duration::from_millis(350),
        "closed after {took:?}, before keepalive_timeout (500ms)"
    );
    assert!(
        c.wire.buf.is_empty(),
        "sent on an idle connection: {}",
        show(&c.wire.buf)
    );
}

// ------------------------------------------------------------------ WebSocket

fn handshake(proxy: &Proxy, target: &str) -> Client {
    let mut c = Client::connect(proxy.addr());
    c.send(
        format!(
            "GET {target} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status_line, "HTTP/1.1 101 Switching Protocols");
    assert_eq!(r.header("sec-websocket-accept"), Some(WS_ACCEPT));
    assert!(r.has_token("upgrade", "websocket"), "{}", show(&r.raw_head));
    assert!(
        r.has_token("connection", "upgrade"),
        "{}",
        show(&r.raw_head)
    );
    assert_eq!(
        c.read_exact_bytes(10, Duration::from_secs(3)),
        b"srv-hello\n"
    );
    c
}

#[test]
fn websocket_tunnel_carries_bytes_both_ways_and_client_close() {
    let (proxy, up) = start();
    let t = token();
    let mut c = handshake(&proxy, &format!("/ws/{t}"));
    let req = up.only(&t);
    assert!(
        req.has_token("upgrade", "websocket"),
        "{}",
        show(&req.raw_head)
    );
    assert!(
        req.has_token("connection", "upgrade"),
        "{}",
        show(&req.raw_head)
    );
    assert_eq!(req.header("sec-websocket-key"), Some(WS_KEY));
    let frame = b"\x81\x85\x01\x02\x03\x04abcde";
    c.send(frame);
    assert_eq!(
        c.read_exact_bytes(frame.len(), Duration::from_secs(3)),
        frame
    );
    let bulk = pattern(70_000, 3);
    c.send(&bulk);
    assert!(
        c.read_exact_bytes(bulk.len(), Duration::from_secs(3)) == bulk,
        "70 KB through the tunnel damaged"
    );
    drop(c);
    let closed = up.wait_until(Duration::from_millis(2500), |s| {
        s.finished.contains(&req.conn)
    });
    assert!(
        closed,
        "client close did not reach the upstream within 2.5 s"
    );
}

#[test]
fn refused_upgrade_leaves_plain_http() {
    let (proxy, up) = start();
    let t = token();
    let mut c = Client::connect(proxy.addr());
    c.send(
        format!(
            "GET /echo/{t} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 200, "the upstream said 200 to the Upgrade");
    // No 101, no tunnel: the connection goes on as HTTP on both sides.
    get_ok(&mut c, &format!("/echo/after-{t}"));
    assert!(up.requests_with(&format!("after-{t}")).len() == 1);
}

#[test]
fn websocket_upstream_close_closes_the_client() {
    let (proxy, _up) = start();
    let mut c = handshake(&proxy, &format!("/ws/srvclose-{}", token()));
    assert!(
        c.wait_closed(Duration::from_millis(2500)),
        "upstream closed the tunnel, client still open"
    );
}
