//! What the proxy forwards: the contract's forwarding headers, hop-by-hop
//! removal both ways, the request target byte for byte, the `respond`
//! action and route selection.

use crate::common::*;

fn echo_proxy() -> (Proxy, Upstream) {
    let up = Upstream::echo();
    (Proxy::start(&single_upstream(up.addr())), up)
}

fn send_ok(proxy: &Proxy, raw: &str) -> Response {
    let mut c = Client::connect(proxy.addr());
    c.send(raw.as_bytes());
    let r = c.read_response();
    assert_eq!(
        r.status,
        200,
        "sent {}\ngot {}",
        show(raw.as_bytes()),
        r.status_line
    );
    r
}

#[test]
fn forwarding_headers_are_set() {
    let (proxy, up) = echo_proxy();
    let t = token();
    send_ok(
        &proxy,
        &format!(
            "GET /fwd/{t} HTTP/1.1\r\nHost: App.Example:8080\r\n\
             X-Forwarded-For: 203.0.113.7, 198.51.100.2\r\nX-Real-IP: 6.6.6.6\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 1\r\n\r\n"
        ),
    );
    let r = up.only(&t);
    let raw = show(&r.raw_head);
    assert_eq!(
        r.header_all("host"),
        ["App.Example:8080"],
        "Host must be unchanged: {raw}"
    );
    assert_eq!(r.header_all("x-real-ip"), ["127.0.0.1"], "{raw}");
    assert_eq!(
        r.header_all("x-forwarded-for").join(", "),
        "203.0.113.7, 198.51.100.2, 127.0.0.1",
        "{raw}"
    );
    assert_eq!(r.header_all("x-forwarded-proto"), ["http"], "{raw}");
    assert_eq!(
        r.header_all("x-forwarded-host"),
        ["App.Example:8080"],
        "{raw}"
    );
    assert_eq!(
        r.header_all("x-forwarded-port"),
        [proxy.port().to_string()],
        "{raw}"
    );
}

#[test]
fn x_forwarded_for_set_when_absent_and_joined_over_lines() {
    let (proxy, up) = echo_proxy();
    let t = token();
    send_ok(&proxy, &format!("GET /xff/{t} HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert_eq!(
        up.only(&t).header_all("x-forwarded-for").join(", "),
        "127.0.0.1"
    );
    let t = token();
    send_ok(
        &proxy,
        &format!("GET /xff/{t} HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.2\r\n\r\n"),
    );
    assert_eq!(
        up.only(&t).header_all("x-forwarded-for").join(", "),
        "203.0.113.7, 198.51.100.2, 127.0.0.1"
    );
}

#[test]
fn end_to_end_request_headers_are_kept_in_order() {
    let (proxy, up) = echo_proxy();
    let t = token();
    send_ok(
        &proxy,
        &format!(
            "GET /e2e/{t} HTTP/1.1\r\nHost: h\r\nX-Multi: a\r\nAccept: text/html\r\nX-Multi: b, c\r\n\
             Cookie: s=1; t=2\r\nX-Odd: va lue  with\tinner ws\r\nAuthorization: Bearer abc.def\r\n\r\n"
        ),
    );
    let r = up.only(&t);
    assert_eq!(r.header_all("x-multi").join(", "), "a, b, c");
    assert_eq!(r.header_all("cookie"), ["s=1; t=2"]);
    assert_eq!(r.header_all("x-odd"), ["va lue  with\tinner ws"]);
    assert_eq!(r.header_all("authorization"), ["Bearer abc.def"]);
    assert_eq!(r.header_all("accept"), ["text/html"]);
}

#[test]
fn hop_by_hop_request_headers_are_removed() {
    let (proxy, up) = echo_proxy();
    let t = token();
    send_ok(
        &proxy,
        &format!(
            "GET /hop/{t} HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Hop-Secret\r\n\
             X-Hop-Secret: s3cr3t\r\nKeep-Alive: timeout=99\r\nProxy-Connection: keep-alive\r\n\
             TE: trailers, deflate\r\nTrailer: X-Checksum\r\nX-Kept: yes\r\n\r\n"
        ),
    );
    let r = up.only(&t);
    let raw = show(&r.raw_head);
    for name in [
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert!(r.header(name).is_none(), "{name} was forwarded: {raw}");
    }
    assert!(
        !r.has_token("connection", "x-hop-secret"),
        "Connection names the client's header: {raw}"
    );
    // A proxy may send its own `TE: trailers`, never the client's list.
    assert!(
        r.header_all("te")
            .iter()
            .all(|v| v.eq_ignore_ascii_case("trailers")),
        "client TE forwarded: {raw}"
    );
    assert_eq!(r.header_all("x-kept"), ["yes"], "{raw}");
}

/// RFC 9110 section 2.5: a later HTTP/1 minor version is served as
/// HTTP/1.1 (keep-alive included, as nginx); other versions stay a 400.
#[test]
fn a_later_http1_minor_version_is_served_as_http11() {
    let (proxy, up) = echo_proxy();
    let mut c = Client::connect(proxy.addr());
    for version in ["1.2", "1.9"] {
        let t = token();
        c.send(format!("GET /v/{t} HTTP/{version}\r\nHost: h\r\n\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 200, "HTTP/{version}");
        assert!(r.raw_head.starts_with(b"HTTP/1.1 200"));
        assert!(up
            .only(&t)
            .raw_head
            .starts_with(format!("GET /v/{t} HTTP/1.1\r\n").as_bytes()));
    }
    for version in ["2.0", "1.10", "1.x"] {
        let mut c = Client::connect(proxy.addr());
        c.send(format!("GET /v HTTP/{version}\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(c.read_response().status, 400, "HTTP/{version}");
    }
}

/// Every field a `Connection` list names is removed, however long the list
/// and over however many `Connection` fields it is spread, both ways.
#[test]
fn a_long_connection_list_removes_every_field_it_names() {
    let names: Vec<String> = (0..40).map(|i| format!("X-Hop-{i}")).collect();
    let (first, second) = names.split_at(25);
    let fields: String = names.iter().map(|n| format!("{n}: v\r\n")).collect();
    let up_fields = fields.clone();
    let up_list = names.join(", ");
    let up = Upstream::start(move |c| {
        while c.read_request().is_some() {
            let head = format!(
                "HTTP/1.1 200 OK\r\nConnection: {up_list}\r\n{up_fields}X-Kept: yes\r\n\
                 Content-Length: 2\r\n\r\nok"
            );
            c.write(head.as_bytes());
        }
    });
    let proxy = Proxy::start(&single_upstream(up.addr()));
    let t = token();
    let mut c = Client::connect(proxy.addr());
    c.send(
        format!(
            "GET /hop/{t} HTTP/1.1\r\nHost: h\r\nConnection: {}\r\n{fields}\
             Connection: {}\r\nX-Kept: yes\r\n\r\n",
            first.join(","),
            second.join(" ,\t"),
        )
        .as_bytes(),
    );
    let resp = c.read_response();
    assert_eq!(resp.status, 200);
    let r = up.only(&t);
    let raw = show(&r.raw_head);
    for name in &names {
        assert!(r.header(name).is_none(), "{name} was forwarded: {raw}");
        assert!(resp.header(name).is_none(), "{name} came back");
    }
    assert_eq!(r.header_all("x-kept"), ["yes"], "{raw}");
    assert_eq!(resp.header("x-kept"), Some("yes"));
}

#[test]
fn upgrade_is_removed_when_the_route_does_not_tunnel() {
    let up = Upstream::echo();
    let rest = upstream("app", up.addr(), "")
        + "[[route]]\npath = \"/\"\nupstream = \"app\"\nwebsocket = false\n";
    let proxy = Proxy::start(&config("", &rest));
    let t = token();
    send_ok(
        &proxy,
        &format!(
            "GET /ws/{t} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    );
    let r = up.only(&t);
    assert!(
        r.header("upgrade").is_none(),
        "Upgrade forwarded: {}",
        show(&r.raw_head)
    );
    assert!(
        !r.has_token("connection", "upgrade"),
        "Connection: Upgrade forwarded"
    );
}

/// An `h2c` upgrade is never tunnelled (RFC 9113 deprecates it, and a
/// tunnel would let the client speak HTTP/2 to the upstream past every
/// per-request rule): the request goes upstream as a plain one, without
/// Upgrade or HTTP2-Settings, on a route that does tunnel WebSockets.
#[test]
fn h2c_upgrade_goes_on_as_a_plain_request() {
    let (proxy, up) = echo_proxy();
    for offer in ["h2c", "websocket, h2c", "H2C"] {
        let t = token();
        let mut c = Client::connect(proxy.addr());
        c.send(
            format!(
                "GET /up/{t} HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                 Upgrade: {offer}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(c.read_response().status, 200, "Upgrade: {offer}");
        let r = up.only(&t);
        let head = show(&r.raw_head);
        assert!(r.header("upgrade").is_none(), "Upgrade forwarded: {head}");
        assert!(r.header("http2-settings").is_none(), "{head}");
        assert!(!r.has_token("connection", "upgrade"), "{head}");
        // Still an HTTP/1.1 connection: the next request is answered.
        let t2 = token();
        c.send(format!("GET /next/{t2} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(c.read_response().status, 200);
    }
}

/// RFC 9112 section 2.2: empty lines before a request line are ignored,
/// however many (as nginx), on a new connection and between keep-alive
/// requests (a client's stray CRLF after a body); the request goes upstream
/// without them.
#[test]
fn empty_lines_before_a_request_line_are_skipped() {
    let (proxy, up) = echo_proxy();
    let mut c = Client::connect(proxy.addr());
    for lead in ["\r\n", "\r\n\r\n", "\r\n\r\n\r\n\r\n"] {
        let t = token();
        c.send(format!("{lead}GET /lead/{t} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(c.read_response().status, 200, "{lead:?}");
        assert!(up.only(&t).raw_head.starts_with(b"GET /lead/"));
    }
    let t = token();
    c.send(
        format!(
            "POST /body/{t} HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok\r\n\r\n\
             GET /next/{t} HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response().status, 200);
    assert_eq!(c.read_response().status, 200);
    assert_eq!(up.requests_with(&t).len(), 2);
}

#[test]
fn hop_by_hop_response_headers_are_removed() {
    let up = Upstream::start(|c| {
        while c.read_request().is_some() {
            c.write(
                b"HTTP/1.1 200 OK\r\nConnection: X-Up-Secret\r\nX-Up-Secret: s\r\n\
                  Keep-Alive: timeout=77, max=7\r\nProxy-Connection: keep-alive\r\nTrailer: X-Sum\r\n\
                  Upgrade: foo\r\nX-End: kept\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; HttpOnly\r\n\
                  Content-Length: 2\r\n\r\nok",
            );
        }
    });
    let proxy = Proxy::start(&single_upstream(up.addr()));
    let mut c = Client::connect(proxy.addr());
    let r = c.get("/resp-hop");
    let raw = show(&r.raw_head);
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    for name in ["x-up-secret", "proxy-connection", "trailer", "upgrade"] {
        assert!(
            r.header(name).is_none(),
            "{name} passed to the client: {raw}"
        );
    }
    assert!(
        r.header_all("keep-alive")
            .iter()
            .all(|v| !v.contains("timeout=77")),
        "the upstream's Keep-Alive passed: {raw}"
    );
    assert!(!r.has_token("connection", "x-up-secret"), "{raw}");
    // End-to-end fields pass unchanged: name case, order, separate Set-Cookie lines.
    assert!(contains(&r.raw_head, b"\r\nX-End: kept\r\n"), "{raw}");
    assert!(
        contains(
            &r.raw_head,
            b"\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; HttpOnly\r\n"
        ),
        "{raw}"
    );
    assert_eq!(r.body, b"ok");
}

#[test]
fn request_target_is_forwarded_byte_exact() {
    let (proxy, up) = echo_proxy();
    let mut c = Client::connect(proxy.addr());
    let t = token();
    let targets = [
        format!("/fwd/{t}/0/a%2Fb/c;p=1?x=1&y=%20z&e=&u=%E2%9C%93&q=a+b"),
        format!("/fwd/{t}/1//double//slash/?"),
        format!("/fwd/{t}/2/%7Euser/%41%42?a=%2F&&b==c"),
        format!("/fwd/{t}/3/x.y~!$&'()*+,=:@/?k=v/?x"),
        format!("/fwd/{t}/4/../a/./b"),
        format!("/fwd/{t}/5/%2e%2E/UPPER/lower?Z=z"),
    ];
    for target in &targets {
        get_ok(&mut c, target);
    }
    let seen: Vec<String> = up.requests_with(&t).into_iter().map(|r| r.target).collect();
    assert_eq!(seen, targets);
}

#[test]
fn respond_action_answers_without_upstream() {
    let up = Upstream::echo();
    let rest = upstream("app", up.addr(), "")
        + "[[route]]\npath = \"/hello\"\nrespond = { status = 200, body = \"ok\" }\n\n"
        + "[[route]]\npath = \"/gone\"\nrespond = { status = 410, body = \"gone for good\" }\n\n"
        + &route("/", "app");
    let proxy = Proxy::start(&config("", &rest));
    let mut c = Client::connect(proxy.addr());
    let r = c.get("/hello");
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.body, b"ok");
    assert_eq!(r.header("content-length"), Some("2"));
    let r = c.get("/gone/deeper");
    assert_eq!((r.version.as_str(), r.status), ("HTTP/1.1", 410));
    assert_eq!(r.body, b"gone for good");
    get_ok(&mut c, "/after-respond");
    assert_eq!(up.heads_with("/hello"), 0);
    assert_eq!(up.heads_with("/gone"), 0);
}

// ------------------------------------------------------------------ routes

/// An upstream that names itself in `X-Upstream` and in the body.
fn named(name: &'static str) -> Upstream {
    Upstream::start(move |c| {
        while c.read_request().is_some() {
            let resp = format!(
                "HTTP/1.1 200 OK\r\nX-Upstream: {name}\r\nContent-Length: {}\r\n\r\n{name}",
                name.len()
            );
            if !c.write(resp.as_bytes()) {
                return;
            }
        }
    })
}

/// File order matters: the wildcard comes before the exact host, the
/// shorter prefix before the longer, and `/dup/` twice.
fn routing() -> (Proxy, Vec<Upstream>) {
    let names = [
        "default", "api", "apiv2", "wild", "exact", "first", "second",
    ];
    let ups: Vec<Upstream> = names.iter().map(|&n| named(n)).collect();
    let mut rest: String = names
        .iter()
        .zip(&ups)
        .map(|(n, u)| upstream(n, u.addr(), ""))
        .collect();
    rest += &route("/", "default");
    rest += &route("/api/", "api");
    rest += &route("/api/v2/", "apiv2");
    rest += "[[route]]\nhost = \"*.example.com\"\npath = \"/\"\nupstream = \"wild\"\n\n";
    rest += "[[route]]\nhost = \"exact.example.com\"\npath = \"/\"\nupstream = \"exact\"\n\n";
    rest += &route("/dup/", "first");
    rest += &route("/dup/", "second");
    (Proxy::start(&config("", &rest)), ups)
}

fn routes_to(proxy: &Proxy, cases: &[(&str, &str, &str)]) {
    let mut c = Client::connect(proxy.addr());
    for &(host, target, want) in cases {
        c.send(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 200, "Host {host} {target}: {}", r.status_line);
        assert_eq!(r.header("x-upstream"), Some(want), "Host {host} {target}");
    }
}

#[test]
fn route_exact_host_beats_wildcard_and_hostless() {
    let (proxy, _ups) = routing();
    routes_to(
        &proxy,
        &[
            ("exact.example.com", "/", "exact"),
            ("exact.example.com", "/api/x", "exact"),
            ("exact.example.com:8080", "/", "exact"),
            ("EXACT.Example.com", "/", "exact"),
        ],
    );
}

#[test]
fn route_wildcard_host() {
    let (proxy, _ups) = routing();
    routes_to(
        &proxy,
        &[
            ("a.example.com", "/", "wild"),
            ("www.example.com:81", "/api/x", "wild"),
            ("example.com", "/", "default"),
            ("a.example.org", "/", "default"),
        ],
    );
}

#[test]
fn route_longest_prefix() {
    let (proxy, _ups) = routing();
    routes_to(
        &proxy,
        &[
            ("other.test", "/", "default"),
            ("other.test", "/api/x", "api"),
            ("other.test", "/api/v2/x?y=1", "apiv2"),
            ("other.test", "/api/v2", "api"),
            ("other.test", "/apix", "default"),
            ("other.test", "/api", "default"),
        ],
    );
}

#[test]
fn route_file_order_breaks_ties() {
    let (proxy, _ups) = routing();
    routes_to(
        &proxy,
        &[
            ("other.test", "/dup/x", "first"),
            ("other.test", "/dup/", "first"),
        ],
    );
}
