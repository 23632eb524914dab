//! HTTP/2 to clients with a real HTTP/2 client (the h2 crate over
//! tokio-rustls): multiplexing, bodies both ways, flow control, HTTP/1.1
//! still offered, errors, graceful stop. Upstreams are the scripted
//! HTTP/1.1 origins of tests/blackbox/common.

use crate::common::h2kit::{real, *};
use crate::common::*;
use bytes::Bytes;
use std::time::Duration;

/// Echoes a request body back: `Content-Length` when `chunked` is false.
fn body_echo(chunked: bool) -> impl Fn(&mut UpConn) + Send + Sync + 'static {
    move |c: &mut UpConn| {
        while let Some(req) = c.read_request() {
            let mut out = Vec::new();
            if chunked {
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                for piece in req.body.chunks(7000) {
                    out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            } else {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    req.body.len()
                );
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(&req.body);
            }
            if !c.write(&out) {
                return;
            }
        }
    }
}

#[test]
fn streams_are_multiplexed_on_one_connection() {
    let up = Upstream::echo();
    let p = H2Proxy::start(up.addr(), 1, "", "");
    let rt = real::runtime();
    rt.block_on(async {
        let send = real::connect(p.addr(), &p.client, 65_535).await;
        let mut pending = Vec::new();
        for i in 0..50 {
            let mut s = send.clone().ready().await.unwrap();
            let (resp, _) = s
                .send_request(real::request("GET", &format!("/m/{i}?q=1")), true)
                .unwrap();
            pending.push((i, resp));
        }
        for (i, resp) in pending {
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200);
            let h = resp.headers();
            assert_eq!(h["x-echo-target"], format!("/m/{i}?q=1").as_str());
            assert!(h.get("connection").is_none() && h.get("keep-alive").is_none());
            let body = real::body(resp.into_body()).await.unwrap();
            assert_eq!(body, format!("target=/m/{i}?q=1\nbodylen=0\n").as_bytes());
        }
        // Later streams reuse the upstream connections the first opened.
        for i in 0..10 {
            let mut s = send.clone().ready().await.unwrap();
            let (resp, _) = s
                .send_request(real::request("GET", &format!("/again/{i}")), true)
                .unwrap();
            assert_eq!(resp.await.unwrap().status(), 200);
        }
    });
    let seen = up.seen();
    assert_eq!(seen.requests.len(), 60);
    let r = &seen.requests[0];
    let header = |n: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    // :authority becomes Host; the forwarding headers say https.
    assert_eq!(header("host").as_deref(), Some("localhost"));
    assert_eq!(header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(r.version, "HTTP/1.1");
    // Upstream, streams share the worker's keep-alive pool: at most one
    // connection per concurrent stream, none new for the later ones.
    assert!(seen.opened <= 50, "{} upstream connections", seen.opened);
}

#[test]
fn http1_stays_available_on_an_h2_listener() {
    let up = Upstream::echo();
    let p = H2Proxy::start(up.addr(), 1, "", "");
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let mut s = tls_connect(p.addr(), &p.client_with(alpn));
        assert_ne!(s.conn.alpn_protocol(), Some(&b"h2"[..]));
        use std::io::{Read, Write};
        s.write_all(b"GET /one HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("target=/one"), "{text}");
    }
}

#[test]
fn bodies_stream_both_ways_byte_exact() {
    for chunked_up in [false, true] {
        let up = Upstream::start(body_echo(chunked_up));
        let p = H2Proxy::start(up.addr(), 1, "", "");
        let payload = pattern(1 << 20, 7);
        real::runtime().block_on(async {
            let send = real::connect(p.addr(), &p.client, 65_535).await;
            // With a length (passed on as is) and without (re-framed as chunks).
            for with_length in [true, false] {
                let mut req = real::request("POST", "/upload");
                if with_length {
                    req.headers_mut()
                        .insert("content-length", payload.len().into());
                }
                let mut s = send.clone().ready().await.unwrap();
                let (resp, mut body) = s.send_request(req, false).unwrap();
                real::send_all(&mut body, &payload).await;
                let resp = resp.await.unwrap();
                assert_eq!(resp.status(), 200);
                let got = real::body(resp.into_body()).await.unwrap();
                assert!(
                    got == payload,
                    "chunked_up={chunked_up} with_length={with_length}: {} bytes",
                    got.len()
                );
            }
        });
        let seen = up.seen();
        assert_eq!(seen.requests.len(), 2);
        assert_eq!(seen.requests[0].framing, Framing::Length);
        assert_eq!(seen.requests[0].body.len(), 1 << 20);
        assert_eq!(seen.requests[1].framing, Framing::Chunked);
    }
}

#[test]
fn a_small_client_window_gets_the_whole_body() {
    let big = pattern(600_000, 3);
    let body = big.clone();
    let up = Upstream::start(move |c: &mut UpConn| {
        while c.read_request().is_some() {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            if !c.write(head.as_bytes()) || !c.write(&body) {
                return;
            }
        }
    });
    let p = H2Proxy::start(up.addr(), 1, "", "");
    real::runtime().block_on(async {
        // 1 KiB stream windows: the proxy may only send as the client reads.
        let send = real::connect(p.addr(), &p.client, 1024).await;
        let mut s = send.ready().await.unwrap();
        let (resp, _) = s.send_request(real::request("GET", "/big"), true).unwrap();
        let resp = resp.await.unwrap();
        let mut b = resp.into_body();
        let mut got = Vec::new();
        while let Some(d) = b.data().await {
            let d = d.unwrap();
            assert!(d.len() <= 1024, "DATA beyond the window: {}", d.len());
            got.extend_from_slice(&d);
            b.flow_control().release_capacity(d.len()).unwrap();
        }
        assert!(got == big, "{} bytes", got.len());
    });
}

#[test]
fn a_zero_window_stream_is_reset_after_client_send_timeout_and_others_go_on() {
    let up = Upstream::start(|c: &mut UpConn| {
        while c.read_request().is_some() {
            let body = vec![b'z'; 100_000];
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            if !c.write(head.as_bytes()) || !c.write(&body) {
                return;
            }
        }
    });
    let p = H2Proxy::start(up.addr(), 1, "client_send_timeout = \"1s\"", "");
    real::runtime().block_on(async {
        let stalled = real::connect(p.addr(), &p.client, 0).await;
        let mut s = stalled.clone().ready().await.unwrap();
        let (resp, _) = s
            .send_request(real::request("GET", "/stall"), true)
            .unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        // Meanwhile another connection is served in full.
        let other = real::connect(p.addr(), &p.client, 65_535).await;
        let mut o = other.ready().await.unwrap();
        let (r2, _) = o
            .send_request(real::request("GET", "/other"), true)
            .unwrap();
        let r2 = r2.await.unwrap();
        assert_eq!(real::body(r2.into_body()).await.unwrap().len(), 100_000);
        // The stalled stream is reset once client_send_timeout passes.
        let mut b = resp.into_body();
        let started = std::time::Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(10), b.data()).await;
        match got {
            Ok(Some(Err(e))) => assert!(e.is_reset(), "{e}"),
            other => panic!("expected a reset, got {other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(500));
    });
}

#[test]
fn truncated_upstream_body_resets_only_its_stream() {
    let up = Upstream::start(|c: &mut UpConn| {
        if let Some(req) = c.read_request() {
            if req.target == "/cut" {
                c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this");
                return;
            }
            c.write(&echo_response(&req));
            echo(c);
        }
    });
    let p = H2Proxy::start(up.addr(), 1, "", "");
    real::runtime().block_on(async {
        let send = real::connect(p.addr(), &p.client, 65_535).await;
        let mut s = send.clone().ready().await.unwrap();
        let (resp, _) = s.send_request(real::request("GET", "/cut"), true).unwrap();
        let resp = resp.await.unwrap();
        let err = real::body(resp.into_body()).await.unwrap_err();
        assert!(err.is_reset(), "{err}");
        // The connection goes on.
        let mut s = send.ready().await.unwrap();
        let (resp, _) = s
            .send_request(real::request("GET", "/after"), true)
            .unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = real::body(resp.into_body()).await.unwrap();
        assert_eq!(body, b"target=/after\nbodylen=0\n");
    });
}

#[test]
fn errors_head_and_own_answers_over_h2() {
    let routes = format!(
        "[[route]]\npath = \"/fixed\"\nrespond = {{ status = 201, body = \"made\\n\" }}\n\n\
         {}{}",
        upstream("dead", refused_port(), ""),
        route("/dead/", "dead")
    );
    let up = Upstream::echo();
    let p = H2Proxy::start(up.addr(), 1, "", &routes);
    real::runtime().block_on(async {
        let send = real::connect(p.addr(), &p.client, 65_535).await;
        let ask = |method: &'static str, path: &'static str| {
            let send = send.clone();
            async move {
                let mut s = send.ready().await.unwrap();
                let (resp, _) = s.send_request(real::request(method, path), true).unwrap();
                let resp = resp.await.unwrap();
                let status = resp.status().as_u16();
                let end = resp.body().is_end_stream();
                let body = real::body(resp.into_body()).await.unwrap();
                (status, end, body)
            }
        };
        assert_eq!(ask("GET", "/fixed").await, (201, false, b"made\n".to_vec()));
        let (status, end, body) = ask("HEAD", "/fixed").await;
        assert_eq!((status, end, body.len()), (201, true, 0));
        let (status, _, _) = ask("GET", "/dead/x").await;
        assert_eq!(status, 502);
        let (status, end, body) = ask("HEAD", "/echo").await;
        assert_eq!((status, end, body.len()), (200, true, 0));
    });
}

#[test]
fn graceful_stop_sends_goaway_and_finishes_the_stream_under_way() {
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let up = Upstream::start(move |c: &mut UpConn| {
        if let Some(req) = c.read_request() {
            let _ = go_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
            c.write(&echo_response(&req));
        }
    });
    let mut p = H2Proxy::start(up.addr(), 1, "", "");
    let mut raw = Raw::open(p.addr(), &p.client);
    raw.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&get_fields("/slow")),
    ));
    assert!(up.wait_until(IO_TIMEOUT, |s| !s.heads.is_empty()));
    p.proxy.signal(libc::SIGTERM);
    let g = raw.until(|f| f.ty == GOAWAY).expect("GOAWAY on stop");
    assert_eq!(g.code(), NO_ERROR);
    go_tx.send(()).unwrap();
    // The stream under way still gets its whole answer.
    let data = raw
        .until(|f| f.ty == DATA && f.stream == 1 && f.flags & END_STREAM != 0)
        .expect("the stream under way is finished");
    assert!(String::from_utf8_lossy(&data.payload).contains("target=/slow"));
    // The client answers no PING: GRACE later the final GOAWAY names the
    // stream served, while the drain still runs, and the connection closes.
    let last = raw.until(|f| f.ty == GOAWAY).expect("the final GOAWAY");
    assert_eq!((last.code(), last.last_stream()), (NO_ERROR, 1));
    assert!(raw.closed());
    let status = p.proxy.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success());
}

#[test]
fn requests_through_h2_reach_the_pool_as_http11_with_bodies_counted() {
    let up = Upstream::start(body_echo(false));
    let p = H2Proxy::start(up.addr(), 2, "max_request_body = \"1k\"", "");
    real::runtime().block_on(async {
        let send = real::connect(p.addr(), &p.client, 65_535).await;
        let mut s = send.clone().ready().await.unwrap();
        let mut req = real::request("POST", "/too-big");
        req.headers_mut().insert("content-length", 5000.into());
        let (resp, mut body) = s.send_request(req, false).unwrap();
        let _ = body.send_data(Bytes::from(vec![b'a'; 5000]), true);
        assert_eq!(resp.await.unwrap().status(), 413);
        // The connection still serves.
        let mut s = send.ready().await.unwrap();
        let (resp, mut body) = s.send_request(real::request("POST", "/ok"), false).unwrap();
        real::send_all(&mut body, b"hello").await;
        let resp = resp.await.unwrap();
        assert_eq!(real::body(resp.into_body()).await.unwrap(), b"hello");
    });
}

#[test]
fn the_access_log_says_http2() {
    let up = Upstream::echo();
    let dir = TestDir::new();
    let log = dir.path().join("access.log");
    let p = H2Proxy::start_logged(
        up.addr(),
        1,
        "",
        "",
        &format!("access = \"{}\"\naccess_format = \"json\"", log.display()),
    );
    real::runtime().block_on(async {
        let send = real::connect(p.addr(), &p.client, 65_535).await;
        let mut s = send.ready().await.unwrap();
        let (resp, _) = s
            .send_request(real::request("GET", "/logged"), true)
            .unwrap();
        assert_eq!(resp.await.unwrap().status(), 200);
    });
    let line = within_file(&log, "/logged");
    assert!(line.contains("\"protocol\":\"HTTP/2.0\""), "{line}");
    assert!(line.contains("\"status\":200"), "{line}");
}

/// The first line of `path` holding `needle`, waiting for the buffered
/// access log to be written (it is flushed at least once a second).
fn within_file(path: &std::path::Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line with {needle}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn x_forwarded_for_before_other_fields_reaches_the_upstream_as_one_field() {
    let up = Upstream::echo();
    let p = H2Proxy::start(up.addr(), 1, "", "");
    let t = token();
    real::runtime().block_on(async {
        let send = real::connect(p.addr(), &p.client, 65_535).await;
        let mut s = send.ready().await.unwrap();
        let mut req = real::request("GET", &format!("/{t}"));
        let h = req.headers_mut();
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        h.insert("x-pad", ",6.6.6.6".parse().unwrap());
        h.insert("a", "b".parse().unwrap());
        let (resp, _) = s.send_request(req, true).unwrap();
        assert_eq!(resp.await.unwrap().status(), 200);
    });
    let req = up.only(&t);
    assert_eq!(
        req.header_all("x-forwarded-for"),
        vec!["1.2.3.4, 127.0.0.1"],
        "{}",
        show(&req.raw_head)
    );
    assert_eq!(req.header("a"), Some("b"));
    assert!(up.seen().problems.is_empty(), "{:?}", up.seen().problems);
}

#[test]
fn a_stream_reset_before_its_answer_is_logged_499_and_its_upstream_request_cancelled() {
    let silent = Upstream::start(|c| {
        if c.read_request().is_some() {
            c.hold_until_closed();
        }
    });
    let dir = TestDir::new();
    let log = dir.path().join("access.log");
    let p = H2Proxy::start_logged(
        silent.addr(),
        1,
        "",
        "",
        &format!("access = \"{}\"", log.display()),
    );
    let t = token();
    real::runtime().block_on(async {
        let send = real::connect(p.addr(), &p.client, 65_535).await;
        let mut s = send.ready().await.unwrap();
        // No body: the exchange waits on the upstream, not on the client.
        let (_resp, mut body) = s
            .send_request(real::request("GET", &format!("/{t}")), true)
            .unwrap();
        // Polled, not waited on: the client's connection runs on this thread.
        let seen = until(|| silent.seen().heads.len() == 1).await;
        assert!(seen, "the request never reached the upstream");
        body.send_reset(h2::Reason::CANCEL);
        let cancelled = until(|| !silent.seen().finished.is_empty()).await;
        assert!(cancelled, "the upstream request went on after the reset");
    });
    let line = within_file(&log, &t);
    assert!(line.contains("\" 499 "), "{line}");
}

/// Polls `cond` every 10 ms for up to 5 s, yielding to the runtime between.
async fn until(cond: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// A stream answered before its request body came (a `respond` route
/// reads none) is not reset: the body is read and dropped as it comes, so
/// a client such as curl, still uploading, sees its answer and a clean
/// end. (RST_STREAM NO_ERROR is allowed there by RFC 9113 section 8.1, but
/// curl then fails the request: "Stream error in the HTTP/2 framing
/// layer".) The connection serves the next stream.
#[test]
fn a_stream_answered_before_its_body_is_not_reset() {
    let routes = "[[route]]\npath = \"/fixed\"\nrespond = { status = 201, body = \"made\\n\" }\n";
    let up = Upstream::echo();
    let p = H2Proxy::start(up.addr(), 1, "", routes);
    let mut raw = Raw::open(p.addr(), &p.client);
    let post: Vec<(&str, String)> = vec![
        (":method", "POST".into()),
        (":scheme", "https".into()),
        (":authority", "localhost".into()),
        (":path", "/fixed".into()),
        ("content-length", "5".into()),
    ];
    raw.send(&frame(HEADERS, END_HEADERS, 1, &block(&post)));
    let (answer, before) =
        raw.until_seen(|f| f.ty == DATA && f.stream == 1 && f.flags & END_STREAM != 0);
    assert_eq!(answer.expect("the answer").payload, b"made\n");
    assert!(before.iter().all(|f| f.ty != RST_STREAM), "{before:?}");
    raw.send(&frame(DATA, END_STREAM, 1, b"hello"));
    let before = raw.get(3, "/next").expect("the next stream is answered");
    let resets: Vec<_> = before.iter().filter(|f| f.ty == RST_STREAM).collect();
    assert!(resets.is_empty(), "stream 1 was reset: {resets:?}");
}

/// A proxied answer's head is built for the stream, not written as text
/// and parsed back: every field a client gets over HTTP/1.1 is there
/// (ringside's Server and Date, the listener's HSTS, the route's added
/// field, repeated fields), the connection's own are not, and the framing
/// (length, chunks, no body, gzip) comes out right.
#[test]
fn a_proxied_answer_keeps_its_fields_over_h2() {
    let up = Upstream::start(|c: &mut UpConn| {
        while let Some(req) = c.read_request() {
            let out: Vec<u8> = match req.target.as_str() {
                "/fields" => b"HTTP/1.1 200 OK\r\nConnection: x-hop, keep-alive\r\n\
                    Keep-Alive: timeout=5\r\nX-Hop: 1\r\nServer: apache\r\nX-A: 1\r\n\
                    Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 5\r\n\r\nhello"
                    .to_vec(),
                "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
                    .to_vec(),
                "/none" => b"HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n".to_vec(),
                _ => {
                    let mut v = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
                        ETag: \"v1\"\r\nContent-Length: 2000\r\n\r\n"
                        .to_vec();
                    v.extend_from_slice(&[b'z'; 2000]);
                    v
                }
            };
            if !c.write(&out) {
                return;
            }
        }
    });
    // The first lines end the [[listen]] table the kit writes.
    let routes = "hsts = \"max-age=60\"\n\n\
        [[route]]\npath = \"/gz\"\nupstream = \"app\"\n\
        gzip = { types = [\"text/plain\"] }\n\n\
        [[route]]\npath = \"/fields\"\nupstream = \"app\"\n\
        add_response_headers = { X-Added = \"yes\" }\n\n";
    let p = H2Proxy::start(up.addr(), 1, "", routes);
    real::runtime().block_on(async {
        let send = real::connect(p.addr(), &p.client, 65_535).await;
        let ask = |req: http::Request<()>| {
            let send = send.clone();
            async move {
                let mut s = send.ready().await.unwrap();
                let (resp, _) = s.send_request(req, true).unwrap();
                let resp = resp.await.unwrap();
                let end = resp.body().is_end_stream();
                let (parts, body) = resp.into_parts();
                (parts, end, real::body(body).await.unwrap())
            }
        };
        let (head, end, body) = ask(real::request("GET", "/fields")).await;
        assert_eq!(
            (head.status.as_u16(), end, &body[..]),
            (200, false, &b"hello"[..])
        );
        let h = &head.headers;
        assert_eq!(h["server"], "ringside");
        assert!(h.contains_key("date"));
        assert_eq!(h["strict-transport-security"], "max-age=60");
        assert_eq!(h["x-added"], "yes");
        assert_eq!(h["x-a"], "1");
        assert_eq!(h["content-length"], "5");
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        for gone in ["connection", "keep-alive", "x-hop"] {
            assert!(!h.contains_key(gone), "{gone} passed: {h:?}");
        }
        assert_eq!(h.get_all("server").iter().count(), 1);

        let (head, end, body) = ask(real::request("HEAD", "/fields")).await;
        assert_eq!((head.status.as_u16(), end, body.len()), (200, true, 0));
        assert_eq!(head.headers["content-length"], "5");

        let (head, _, body) = ask(real::request("GET", "/chunked")).await;
        assert_eq!(&body[..], b"abcdefg");
        assert!(!head.headers.contains_key("transfer-encoding"));

        let (head, end, body) = ask(real::request("GET", "/none")).await;
        assert_eq!((head.status.as_u16(), end, body.len()), (204, true, 0));
        assert_eq!(head.headers["x-b"], "2");

        let mut req = real::request("GET", "/gz");
        req.headers_mut()
            .insert("accept-encoding", "gzip".parse().unwrap());
        let (head, _, body) = ask(req).await;
        let h = &head.headers;
        assert_eq!(h["content-encoding"], "gzip");
        assert_eq!(h["vary"], "Accept-Encoding");
        assert_eq!(h["etag"], "W/\"v1\"");
        assert!(!h.contains_key("content-length"));
        let mut plain = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, vec![b'z'; 2000]);
    });
}

/// An answer's status, fields (lowercase names, sorted; `date` and `age`
/// left out, which change by the second) and body.
type Seen = (u16, Vec<(String, String)>, Vec<u8>);

/// `req` over HTTP/1.1 on the same TLS listener, `Connection: close`; the
/// fields an HTTP/2 answer cannot carry are left out.
fn over_http1(p: &H2Proxy, req: &str) -> Seen {
    use std::io::{Read, Write};
    let mut s = tls_connect(p.addr(), &p.client_with(&[b"http/1.1"]));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let mut fields: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect();
    let chunked = fields.contains(&("transfer-encoding".into(), "chunked".into()));
    fields.retain(|(n, _)| {
        ![
            "connection",
            "keep-alive",
            "transfer-encoding",
            "date",
            "age",
        ]
        .contains(&n.as_str())
    });
    fields.sort();
    let mut body = raw[end..].to_vec();
    if chunked {
        body = unchunk(&body);
    }
    (status, fields, body)
}

/// The data of a chunked body (no extensions, no trailers).
fn unchunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk line");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
}

/// `Expires` is the answer's time plus the route's: two answers taken a
/// moment apart may differ by a second in it. Takes it out of the fields
/// and gives it back as seconds since the epoch, for a comparison with room.
fn without_expires(mut seen: Seen) -> (Option<u64>, Seen) {
    let at = seen.1.iter().position(|(n, _)| n == "expires");
    let at = at.map(|i| seen.1.remove(i).1).map(|v| {
        let t = httpdate::parse_http_date(&v).expect("an HTTP date");
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    });
    (at, seen)
}

/// Answers of ringside's own (a `respond` route, redirects, static files
/// small, streamed, ranged, unchanged and refused, error pages, a cache
/// hit) have their head built for the stream, not written as HTTP/1.1 and
/// parsed back: each comes over h2 with the same status, fields and body
/// as over HTTP/1.1, less the connection's own fields.
#[test]
fn own_answers_over_h2_equal_their_http1_answers() {
    let files = TestDir::new();
    std::fs::create_dir_all(files.path().join("www/sub")).unwrap();
    std::fs::write(files.path().join("www/a.txt"), "hello, files\n").unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(files.path().join("www/big.bin"), &big).unwrap();
    let up = Upstream::start(|c: &mut UpConn| {
        while let Some(req) = c.read_request() {
            let body = format!("cached {}", req.target);
            let out = format!(
                "HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nX-Up: 1\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if !c.write(out.as_bytes()) {
                return;
            }
        }
    });
    let routes = format!(
        "hsts = \"max-age=60\"\n\n[cache]\nsize = \"1m\"\n\n\
         [[route]]\npath = \"/fixed\"\nrespond = {{ status = 201, body = \"made\\n\" }}\n\
         add_response_headers = {{ X-Added = \"yes\" }}\n\n\
         [[route]]\npath = \"/go\"\nredirect = {{ to = \"/elsewhere\", status = 302 }}\n\n\
         [[route]]\npath = \"/files/\"\nstatic = \"{}/www/\"\nexpires = \"1h\"\n\
         gzip = {{ types = [\"text/plain\"], min_length = 1 }}\n\n\
         [[route]]\npath = \"/c/\"\nupstream = \"app\"\ncache = {{ \"200\" = \"1m\" }}\n\
         gzip = {{ types = [\"text/plain\"], min_length = 1 }}\n\n\
         {}{}",
        files.path().display(),
        upstream("dead", refused_port(), ""),
        route("/dead/", "dead")
    );
    let p = H2Proxy::start(up.addr(), 1, "", &routes);
    let tag = over_http1(
        &p,
        "GET /files/a.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .1
    .into_iter()
    .find(|(n, _)| n == "etag")
    .unwrap()
    .1;
    type Case = (&'static str, &'static str, Vec<(&'static str, String)>);
    let cases: Vec<Case> = vec![
        ("GET", "/fixed", vec![]),
        ("HEAD", "/fixed", vec![]),
        ("GET", "/go/x?y=1", vec![]),
        ("GET", "/files/a.txt", vec![]),
        ("GET", "/files/big.bin", vec![]),
        ("GET", "/files/a.txt", vec![("if-none-match", tag)]),
        (
            "GET",
            "/files/big.bin",
            vec![("range", "bytes=10-19".into())],
        ),
        (
            "GET",
            "/files/big.bin",
            vec![("range", "bytes=900000-".into())],
        ),
        ("HEAD", "/files/big.bin", vec![]),
        (
            "GET",
            "/files/a.txt",
            vec![("accept-encoding", "gzip".into())],
        ),
        ("POST", "/files/a.txt", vec![]),
        ("GET", "/files/sub", vec![]),
        ("GET", "/files/none", vec![]),
        ("GET", "/dead/x", vec![]),
        ("GET", "/c/x", vec![]),
        ("GET", "/c/x", vec![("accept-encoding", "gzip".into())]),
    ];
    let runtime = real::runtime();
    let send = runtime.block_on(real::connect(p.addr(), &p.client, 1 << 20));
    for (method, path, fields) in cases {
        let extra: String = fields
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        let text = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        // The cached route: a miss stores the answer, then both are hits.
        let one = over_http1(&p, &text);
        let two: Seen = runtime.block_on(async {
            let mut req = real::request(method, path);
            for (n, v) in &fields {
                req.headers_mut().insert(*n, v.parse().unwrap());
            }
            let mut s = send.clone().ready().await.unwrap();
            let (resp, _) = s.send_request(req, true).unwrap();
            let (head, body) = resp.await.unwrap().into_parts();
            let mut seen: Vec<(String, String)> = head
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .filter(|(n, _)| n != "date" && n != "age")
                .collect();
            seen.sort();
            (head.status.as_u16(), seen, real::body(body).await.unwrap())
        });
        let one = if path.starts_with("/c/") {
            over_http1(&p, &text)
        } else {
            one
        };
        let ((at_one, one), (at_two, two)) = (without_expires(one), without_expires(two));
        match (at_one, at_two) {
            (Some(a), Some(b)) => assert!(a.abs_diff(b) <= 2, "{method} {path}: {a} {b}"),
            (a, b) => assert_eq!(a, b, "{method} {path}: expires"),
        }
        assert_eq!(one, two, "{method} {path}");
        if fields.iter().any(|(n, _)| *n == "accept-encoding") {
            let gzip = ("content-encoding".to_string(), "gzip".to_string());
            assert!(two.1.contains(&gzip), "{method} {path}: {:?}", two.1);
        }
        assert!(
            two.1
                .contains(&("strict-transport-security".into(), "max-age=60".into())),
            "{method} {path}: {:?}",
            two.1
        );
    }
}
