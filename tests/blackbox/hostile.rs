//! Hostile and careless input on the request path (issue 13): a client must
//! not corrupt the head ringside sends upstream, bypass a route by spelling
//! its path otherwise, panic a worker with an absolute-form target, or turn
//! an upstream outage into a new connection per request; and what happens
//! is logged as nginx logs it (499, parse errors, error-page bytes).

use crate::common::farm::within;
use crate::common::*;
use std::time::Duration;

/// The access-log lines written so far (the log is flushed within a second).
fn access_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_access(path: &std::path::Path, needle: &str) -> String {
    let mut found = None;
    within(Duration::from_secs(5), || {
        found = access_lines(path).into_iter().find(|l| l.contains(needle));
        found.is_some()
    });
    found.unwrap_or_else(|| {
        panic!(
            "no access-log line with {needle:?}: {:?}",
            access_lines(path)
        )
    })
}

fn logged_config(dir: &TestDir, limits: &str, rest: &str) -> String {
    config(limits, rest).replace(
        "access = \"off\"",
        &format!("access = \"{}\"", dir.path().join("access.log").display()),
    )
}

// ------------------------------------------------- X-Forwarded-For position

#[test]
fn x_forwarded_for_in_any_position_is_one_valid_field() {
    let app = Upstream::echo();
    let proxy = Proxy::start(&single_upstream(app.addr()));
    let heads = [
        "X-Forwarded-For: 1.2.3.4\r\nHost: h\r\nA: b\r\n",
        "Host: h\r\nX-Forwarded-For: 1.2.3.4\r\nA: b\r\n",
        "Host: h\r\nA: b\r\nX-Forwarded-For: 1.2.3.4\r\n",
        "Host: h\r\nX-Forwarded-For: 1.2.3.4\r\nX-Pad: ,6.6.6.6\r\nA: b\r\n",
        "X-Forwarded-For: 1.2.3.4\r\nHost: h\r\nX-Forwarded-For: 5.6.7.8\r\nA: b\r\n",
    ];
    for (i, fields) in heads.iter().enumerate() {
        let t = format!("xff-{i}-{}", token());
        let mut c = Client::connect(proxy.addr());
        c.send(format!("GET /{t} HTTP/1.1\r\n{fields}\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 200, "{fields:?}");
        let req = app.only(&t);
        let xff = req.header_all("x-forwarded-for");
        let want = if i == 4 {
            "1.2.3.4, 5.6.7.8, 127.0.0.1"
        } else {
            "1.2.3.4, 127.0.0.1"
        };
        assert_eq!(xff, vec![want], "{fields:?}: {}", show(&req.raw_head));
        assert_eq!(req.header("a"), Some("b"), "{}", show(&req.raw_head));
        if i == 3 {
            assert_eq!(req.header("x-pad"), Some(",6.6.6.6"));
        }
    }
    // The echo upstream records any line that is not a valid field.
    assert!(app.seen().problems.is_empty(), "{:?}", app.seen().problems);
}

// ------------------------------------------------- normalised route matching

#[test]
fn a_route_is_chosen_by_the_normalised_path() {
    let app = Upstream::echo();
    let rest = format!(
        "{}[[route]]\npath = \"/admin/\"\nrespond = {{ status = 403, body = \"guarded\" }}\n\n{}",
        upstream("app", app.addr(), ""),
        route("/", "app")
    );
    let proxy = Proxy::start(&config("", &rest));
    let mut c = Client::connect(proxy.addr());
    for target in [
        "/admin/x",
        "/x/../admin/x",
        "/%61dmin/x",
        "//admin/x",
        "/./admin/x",
        "/%2e%2e/admin/x",
        "/x/%2E%2E/admin/x",
    ] {
        c.send(format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (403, "guarded"),
            "{target}"
        );
    }
    // The target still goes upstream as sent.
    let t = token();
    c.send(format!("GET /public/./{t}/%7E HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    assert_eq!(c.read_response().status, 200);
    assert_eq!(app.only(&t).target, format!("/public/./{t}/%7E"));
}

// ------------------------------------------------- absolute-form targets

#[test]
fn an_absolute_form_target_without_a_path_is_answered_on_every_route_kind() {
    let app = Upstream::echo();
    let dir = TestDir::new();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "home").unwrap();
    let rest = format!(
        "[[listen]]\naddress = \"127.0.0.2:0\"\nredirect_https = true\n\n\
         {}[[route]]\nhost = \"s\"\npath = \"/\"\nstatic = \"{}\"\n\n\
         [[route]]\nhost = \"r\"\npath = \"/\"\nredirect = {{ to = \"https://x$request_uri\" }}\n\n{}",
        upstream("app", app.addr(), ""),
        www.display(),
        route("/", "app"),
    );
    let proxy = Proxy::start_in(dir, &config("", &rest));
    let plain = proxy.addrs()[0];
    let to_https = proxy.addrs()[1];
    let ask = |addr, raw: &str| {
        let mut c = Client::connect(addr);
        c.send(raw.as_bytes());
        let r = c.read_response();
        (
            r.status,
            r.header("location").map(str::to_string),
            r.body_str(),
        )
    };
    let (status, location, _) = ask(to_https, "GET http://a HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((status, location.as_deref()), (301, Some("https://a/")));
    let (status, location, _) = ask(to_https, "GET http://a?q=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((status, location.as_deref()), (301, Some("https://a/?q=1")));
    let (status, _, body) = ask(plain, "GET http://s HTTP/1.1\r\nHost: s\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, "home"));
    let (status, location, _) = ask(plain, "GET http://r HTTP/1.1\r\nHost: r\r\n\r\n");
    assert_eq!((status, location.as_deref()), (301, Some("https://x/")));
    let t = token();
    let (status, _, _) = ask(
        plain,
        &format!("GET http://h?{t} HTTP/1.1\r\nHost: h\r\n\r\n"),
    );
    assert_eq!(status, 200);
    assert_eq!(app.only(&t).target, format!("/?{t}"));
    assert!(
        !proxy.stderr_lines().iter().any(|l| l.contains("panicked")),
        "{:?}",
        proxy.stderr_lines()
    );
    get_ok(&mut Client::connect(plain), &format!("/after-{}", token()));
}

// ------------------------------------------------- errors keep the connection

#[test]
fn errors_answered_before_a_response_keep_the_connection() {
    let app = Upstream::echo();
    let rest = format!(
        "{}{}{}",
        upstream("down", refused_port(), "connect_timeout = \"1s\""),
        route("/down/", "down"),
        upstream("app", app.addr(), "") + &route("/app/", "app"),
    );
    let proxy = Proxy::start(&config("", &rest));
    let mut c = Client::connect(proxy.addr());
    for _ in 0..3 {
        c.send(b"GET /down/x HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 502);
        assert!(!r.has_token("connection", "close"), "{}", r.status_line);
    }
    // A 404 and a 405 (TRACE) too, then a proxied request on the same connection.
    c.send(b"GET /nowhere HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.read_response().status, 404);
    c.send(b"TRACE /app/x HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 405);
    assert!(app.seen().heads.is_empty(), "TRACE went upstream");
    get_ok(&mut c, &format!("/app/after-{}", token()));
    // A body left unread on the socket closes it (one over
    // client_body_buffer, which streams instead of being read first).
    c.send(b"POST /down/x HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\nabc");
    let r = c.read_response();
    assert_eq!(r.status, 502);
    assert!(
        c.wait_closed(Duration::from_secs(3)),
        "stayed open after a half-read body"
    );
}

#[test]
fn head_errors_have_no_body() {
    let proxy = Proxy::start(&config(
        "",
        &(upstream("down", refused_port(), "") + &route("/", "down")),
    ));
    for raw in [
        &b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"HEAD /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let mut c = Client::connect(proxy.addr());
        c.send(raw);
        let r = c.read_head_response();
        assert!(r.status == 502 || r.status == 400, "{}", r.status_line);
        // Nothing follows the head: the next bytes are a second answer or the close.
        c.send(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        let rest = c.read_to_close(Duration::from_secs(3));
        assert!(
            rest.is_empty() || rest.starts_with(b"HTTP/1.1 "),
            "bytes after a HEAD error's head: {}",
            show(&rest)
        );
    }
}

// ------------------------------------------------- retries reach the backup

#[test]
fn two_dead_primaries_and_a_live_backup_answer_the_first_request() {
    let backup = Upstream::echo();
    let rest = format!(
        "[[upstream]]\nname = \"app\"\nconnect_timeout = \"1s\"\nservers = [ {{ address = \"{}\" }}, {{ address = \"{}\" }}, {{ address = \"{}\", backup = true }} ]\n\n{}",
        refused_port(),
        refused_port(),
        backup.addr(),
        route("/", "app")
    );
    let proxy = Proxy::start(&config("", &rest));
    get_ok(&mut Client::connect(proxy.addr()), &format!("/{}", token()));
}

// ------------------------------------------------- upstream answers

#[test]
fn upstream_status_out_of_range_is_502_and_date_is_added() {
    let weird = Upstream::start(|c| {
        while let Some(r) = c.read_request() {
            let answer: &[u8] = if r.target.contains("600") {
                b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n"
            } else if r.target.contains("999") {
                b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            };
            c.write(answer);
        }
    });
    let proxy = Proxy::start(&single_upstream(weird.addr()));
    for t in ["/600", "/999"] {
        let mut c = Client::connect(proxy.addr());
        c.send(format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(c.read_response().status, 502, "{t}");
    }
    let mut c = Client::connect(proxy.addr());
    c.send(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("date").len(), 1, "{}", show(&r.raw_head));
}

// ------------------------------------------------- the access log

#[test]
fn a_client_that_leaves_before_its_answer_is_logged_499_and_cancelled() {
    let slow = Upstream::start(|c| {
        if c.read_request().is_some() {
            // Never answers; returns when the proxy closes the connection.
            c.hold_until_closed();
        }
    });
    let dir = TestDir::new();
    let toml = logged_config(
        &dir,
        "",
        &(upstream("app", slow.addr(), "read_timeout = \"30s\"") + &route("/", "app")),
    );
    let log = dir.path().join("access.log");
    let proxy = Proxy::start_in(dir, &toml);
    let t = token();
    let mut c = Client::connect(proxy.addr());
    c.send(format!("GET /{t} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    assert!(slow.wait_until(Duration::from_secs(5), |s| s.heads.len() == 1));
    drop(c);
    // The upstream request is cancelled: its connection closes.
    assert!(
        slow.wait_until(Duration::from_secs(5), |s| !s.finished.is_empty()),
        "the upstream connection stayed open after the client left"
    );
    let line = wait_access(&log, &t);
    assert!(line.contains("\" 499 "), "{line}");
}

/// A client that resets its connection while its answer's body is on the
/// way is logged 499 too (the contract: "went away before the response
/// was complete"), though a 200 head went out; an upstream that stops
/// mid-body leaves the 200 it sent.
#[test]
fn a_client_that_leaves_mid_body_is_logged_499() {
    use std::io::{Read, Write};
    let big = Upstream::start(|c| {
        let Some(req) = c.read_request() else { return };
        if req.target.contains("/short/") {
            c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this");
            return;
        }
        // 64 MiB, far more than the sockets between can hold: the proxy
        // is still writing when the client resets.
        if !c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n") {
            return;
        }
        let piece = vec![b'x'; 64 * 1024];
        while c.write(&piece) {}
    });
    let dir = TestDir::new();
    let rest = upstream("app", big.addr(), "") + &route("/", "app");
    let toml = logged_config(&dir, "", &rest);
    let log = dir.path().join("access.log");
    let proxy = Proxy::start_in(dir, &toml);

    let t = token();
    let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
    s.write_all(format!("GET /big/{t} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
        .unwrap();
    let mut first = [0u8; 4096];
    let n = s.read(&mut first).unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200 "),
        "{}",
        show(&first[..n])
    );
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s); // a reset
    let line = wait_access(&log, &t);
    assert!(line.contains("\" 499 "), "{line}");

    let t = token();
    let mut c = Client::connect(proxy.addr());
    c.send(format!("GET /short/{t} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    let got = c.read_to_close(Duration::from_secs(5));
    assert!(got.starts_with(b"HTTP/1.1 200 "), "{}", show(&got));
    let line = wait_access(&log, &t);
    // The head and the 9 body bytes that came went out.
    assert!(line.contains("\" 200 9 \""), "{line}");
}

/// A WebSocket session is logged 101 with the bytes that reached the
/// client after the head (the upstream's, both through the tunnel and
/// behind its 101 head), as nginx's `$body_bytes_sent`.
#[test]
fn a_websocket_session_logs_the_bytes_it_sent_the_client() {
    use std::io::{Read, Write};
    let ws = Upstream::start(|c| {
        if c.read_request().is_none() {
            return;
        }
        let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\n\r\nsrv-hello\n";
        if !c.write(head.as_bytes()) {
            return;
        }
        while let Some(data) = c.read_some(Duration::from_secs(10)) {
            if !c.write(&data) {
                return;
            }
        }
    });
    let dir = TestDir::new();
    let toml = logged_config(
        &dir,
        "",
        &(upstream("app", ws.addr(), "") + &route("/", "app")),
    );
    let log = dir.path().join("access.log");
    let proxy = Proxy::start_in(dir, &toml);
    let t = token();
    let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
    let req = format!(
        "GET /ws/{t} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let bulk = vec![b'w'; 300_000];
    s.write_all(&bulk).unwrap();
    // The head, srv-hello and the echo, then the client closes.
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let whole = |got: &[u8]| {
        let head = got.windows(4).position(|w| w == b"\r\n\r\n");
        head.is_some_and(|h| got.len() - (h + 4) >= 10 + bulk.len())
    };
    while !whole(&got) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let line = wait_access(&log, &t);
    assert_eq!(logged_bytes(&line, "101"), 10 + bulk.len() as u64, "{line}");
}

/// The body bytes of a logged `"... STATUS BYTES "` access line.
fn logged_bytes(line: &str, status: &str) -> u64 {
    let at = line.find(&format!("\" {status} ")).expect(line) + status.len() + 3;
    line[at..].split(' ').next().unwrap().parse().expect(line)
}

/// An answer the client resets mid-body is logged 499 with the body bytes
/// that went out before (nginx's `$body_bytes_sent`), not 0: by every way a
/// body goes out (spliced, re-chunked, gzipped as it flows, a static file),
/// and a hit's count is whole once the client reads it all.
#[test]
fn an_answer_cut_short_logs_the_body_bytes_that_went_out() {
    use std::io::{Read, Write};
    // 64 KiB that deflate cannot shrink (its window is 32 KiB).
    let mut x = 1u32;
    let noise: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 23) as u8
        })
        .collect();
    let big = Upstream::start(move |c| {
        let Some(req) = c.read_request() else { return };
        let chunked = req.target.contains("/chunked/");
        let head: &[u8] = if chunked {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 67108864\r\n\r\n"
        };
        if !c.write(head) {
            return;
        }
        let mut piece = noise.clone();
        if chunked {
            piece = [&b"10000\r\n"[..], &noise, b"\r\n"].concat();
        }
        while c.write(&piece) {}
    });
    let dir = TestDir::new();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/big.bin"), vec![b'y'; 32 << 20]).unwrap();
    let rest = upstream("app", big.addr(), "")
        + "[[route]]\npath = \"/gzip/\"\nupstream = \"app\"\n\
           gzip = { types = [\"text/plain\"] }\n\n\
           [[route]]\npath = \"/files/\"\nstatic = \"www/\"\n\n"
        + &route("/", "app");
    let toml = logged_config(&dir, "", &rest);
    let log = dir.path().join("access.log");
    let proxy = Proxy::start_in(dir, &toml);

    for path in ["/len/", "/chunked/", "/gzip/", "/files/big.bin?"] {
        let t = token();
        let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
        let req = format!("GET {path}{t} HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut first = vec![0u8; 256 * 1024];
        let mut got = 0;
        while got < first.len() {
            let n = s.read(&mut first[got..]).unwrap();
            assert!(n > 0, "{path}: closed after {got} bytes");
            got += n;
        }
        assert!(
            first.starts_with(b"HTTP/1.1 200 "),
            "{path}: {}",
            show(&first[..200])
        );
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s); // a reset
        let line = wait_access(&log, &t);
        // At least what this client read, less the head; never the whole.
        let bytes = logged_bytes(&line, "499");
        assert!(bytes >= 200 * 1024, "{path}: {line}");
        assert!(bytes < 32 << 20, "{path}: {line}");
    }
    // Whole, the static file counts every byte.
    let t = token();
    let mut c = Client::connect(proxy.addr());
    c.send(format!("GET /files/big.bin?{t} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    assert_eq!(c.read_response().body.len(), 32 << 20);
    let line = wait_access(&log, &t);
    assert_eq!(logged_bytes(&line, "200"), 32 << 20, "{line}");
}

#[test]
fn refused_heads_and_error_pages_are_logged_with_their_bytes() {
    let dir = TestDir::new();
    let toml = logged_config(
        &dir,
        "client_header_timeout = \"500ms\"\nmax_request_head = \"1k\"",
        "",
    );
    let log = dir.path().join("access.log");
    let proxy = Proxy::start_in(dir, &toml);
    let t = token();
    let cases = [
        (
            format!("GET /{t}-400 HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n"),
            400,
        ),
        (
            format!("GET /{t}-414{} HTTP/1.1\r\n", "a".repeat(2000)),
            414,
        ),
        (
            format!(
                "GET /{t}-431 HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
                "a".repeat(2000)
            ),
            431,
        ),
        (format!("GET /{t}-408 HTTP/1.1\r\nHost: h\r\n"), 408),
        (format!("GET /{t}-404 HTTP/1.1\r\nHost: h\r\n\r\n"), 404),
    ];
    for (raw, status) in cases {
        let mut c = Client::connect(proxy.addr());
        c.send(raw.as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, status);
        // A head that timed out is logged without its request line.
        let needle = match status {
            408 => "\" 408 ".to_string(),
            _ => format!("{t}-{status}"),
        };
        let line = wait_access(&log, &needle);
        let want = format!("\" {status} {} ", r.body.len());
        assert!(
            !r.body.is_empty() && line.contains(&want),
            "{line} (want {want:?})"
        );
        // $request is the request line as it came, as nginx logs it.
        let request = match status {
            408 => "\"-\" 408 ".to_string(),
            400 => format!("\"GET /{t}-400 HTTP/1.1\" 400 "),
            _ => format!("\"GET /{t}-{status}"),
        };
        assert!(line.contains(&request), "{line} (want {request:?})");
    }
    // A line that is not a request line at all is logged as it came.
    let mut c = Client::connect(proxy.addr());
    c.send(format!("GARBAGE-{t}\r\n\r\n").as_bytes());
    assert_eq!(c.read_response().status, 400);
    let line = wait_access(&log, &format!("GARBAGE-{t}"));
    assert!(line.contains(&format!("\"GARBAGE-{t}\" 400 ")), "{line}");
}
