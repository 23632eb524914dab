//! Named listeners: a route's `listeners` restricts it to connections
//! accepted there (nginx's `server` blocks), `https_port` is where
//! `redirect_https` points, and the config errors with their lines.

use crate::common::*;

/// Two listeners on distinct free ports (a listener is known by its
/// configured address, so two `127.0.0.1:0` would be one to the routes).
fn two_listeners(rest: &str) -> String {
    let (a, b) = (closed_port(), closed_port());
    format!(
        "[runtime]\nworkers = 1\n\n[log]\naccess = \"off\"\nlevel = \"warn\"\n\n\
         [[listen]]\nname = \"public\"\naddress = \"{a}\"\n\n\
         [[listen]]\nname = \"internal\"\naddress = \"{b}\"\n\n{rest}"
    )
}

#[test]
fn a_route_serves_only_the_listeners_it_names() {
    let public = Upstream::echo();
    let internal = Upstream::echo();
    let rest = format!(
        "{}{}\
         [[route]]\npath = \"/\"\nupstream = \"pub\"\nlisteners = [\"public\"]\n\n\
         [[route]]\npath = \"/\"\nupstream = \"int\"\nlisteners = [\"internal\"]\n\n\
         [[route]]\npath = \"/admin/\"\nrespond = {{ status = 200, body = \"admin\" }}\nlisteners = [\"internal\"]\n\n\
         [[route]]\npath = \"/both/\"\nrespond = {{ status = 200, body = \"both\" }}\n",
        upstream("pub", public.addr(), ""),
        upstream("int", internal.addr(), ""),
    );
    let proxy = Proxy::start(&two_listeners(&rest));
    let (a, b) = (proxy.addrs()[0], proxy.addrs()[1]);

    let tok = token();
    get_ok(&mut Client::connect(a), &format!("/x-{tok}"));
    assert_eq!(public.requests_with(&tok).len(), 1);
    assert!(internal.requests_with(&tok).is_empty());
    let tok = token();
    get_ok(&mut Client::connect(b), &format!("/x-{tok}"));
    assert_eq!(internal.requests_with(&tok).len(), 1);
    assert!(public.requests_with(&tok).is_empty());

    // /admin/ exists on "internal" only: on "public" the longest route that
    // serves it is "/", proxied to its upstream.
    let r = Client::connect(b).get("/admin/x");
    assert_eq!((r.status, r.body_str().as_str()), (200, "admin"));
    let tok = token();
    let mut c = Client::connect(a);
    get_ok(&mut c, &format!("/admin/{tok}"));
    assert_eq!(public.requests_with(&tok).len(), 1);
    // A route without listeners serves both.
    assert_eq!(Client::connect(a).get("/both/").body_str(), "both");
    assert_eq!(Client::connect(b).get("/both/").body_str(), "both");
}

#[test]
fn a_listener_without_a_route_answers_404_and_the_other_keeps_serving() {
    let rest = "[[route]]\npath = \"/\"\nrespond = { status = 200, body = \"in\" }\nlisteners = [\"internal\"]\n";
    let proxy = Proxy::start(&two_listeners(rest));
    let mut c = Client::connect(proxy.addrs()[0]);
    assert_eq!(c.get("/").status, 404);
    // The connection stays open after the 404, and the other listener serves.
    assert_eq!(c.get("/").status, 404);
    assert_eq!(Client::connect(proxy.addrs()[1]).get("/").body_str(), "in");
}

fn redirect_location(port_line: &str) -> String {
    let toml = format!(
        "[log]\naccess = \"off\"\n\n[[listen]]\naddress = \"127.0.0.1:0\"\nredirect_https = true\n{port_line}\n\n\
         [[route]]\npath = \"/\"\nrespond = {{ status = 200 }}\n"
    );
    let proxy = Proxy::start(&toml);
    let mut c = Client::connect(proxy.addr());
    c.send(b"GET /a/b?c=d HTTP/1.1\r\nHost: Example.com:8080\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 301);
    r.header("location").expect("a Location").to_string()
}

#[test]
fn redirect_https_points_at_https_port() {
    assert_eq!(redirect_location(""), "https://example.com/a/b?c=d");
    assert_eq!(
        redirect_location("https_port = 443"),
        "https://example.com/a/b?c=d"
    );
    assert_eq!(
        redirect_location("https_port = 8443"),
        "https://example.com:8443/a/b?c=d"
    );
}

fn check_errors(toml: &str) -> String {
    let dir = TestDir::new();
    let config = dir.write("ringside.toml", toml);
    let out = run_bounded(
        &["-c".as_ref(), config.as_os_str(), "--check".as_ref()],
        IO_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{toml}");
    String::from_utf8_lossy(&out.stderr).replace(&config.display().to_string(), "FILE")
}

#[test]
fn unknown_and_duplicate_listener_names_are_check_errors_with_their_lines() {
    let toml = two_listeners(
        "[[route]]\npath = \"/\"\nrespond = { status = 200 }\nlisteners = [\"public\", \"nope\"]\n",
    );
    assert_eq!(
        check_errors(&toml).trim(),
        "FILE:19: route.listeners: unknown listener \"nope\" (named listeners: public, internal)"
    );
    let toml = toml
        .replace("name = \"internal\"", "name = \"public\"")
        .replace(", \"nope\"", "");
    assert_eq!(
        check_errors(&toml).trim(),
        "FILE:13: listen.name: \"public\" already names the listener of line 9"
    );
    let bad_port = two_listeners("https_port = 0\n").replace("https_port = 0\n", "");
    let bad_port = bad_port.replacen(
        "name = \"public\"",
        "name = \"public\"\nhttps_port = 70000",
        1,
    ) + "[[route]]\npath = \"/\"\nrespond = { status = 200 }\nlisteners = []\n";
    let errors = check_errors(&bad_port);
    assert!(errors.contains("FILE:10: listen.https_port: "), "{errors}");
    assert!(
        errors.contains("route.listeners: names no listener"),
        "{errors}"
    );
}

/// A listener is known by its address (routes, reloads and binary upgrades
/// find it that way), so two `[[listen]]` with one address would be one
/// listener with the first one's settings, and two sockets bound with
/// SO_REUSEPORT would split its connections between them.
#[test]
fn two_listeners_on_one_address_are_a_check_error() {
    let toml = two_listeners("[[route]]\npath = \"/\"\nrespond = { status = 200 }\n");
    let first = toml
        .lines()
        .find_map(|l| l.strip_prefix("address = "))
        .expect("an address")
        .to_string();
    let toml = toml.replacen(
        &toml
            .lines()
            .filter_map(|l| l.strip_prefix("address = "))
            .nth(1)
            .expect("a second address")
            .to_string(),
        &first,
        1,
    );
    let addr = first.trim_matches('"');
    assert_eq!(
        check_errors(&toml).trim(),
        format!(
            "FILE:14: listen.address: {addr} is already the address of the listener of line 10"
        )
    );
    // Port 0 too: both would be "127.0.0.1:0" to the routes.
    let zero = toml.replace(addr, "127.0.0.1:0");
    assert_eq!(
        check_errors(&zero).trim(),
        "FILE:14: listen.address: 127.0.0.1:0 is already the address of the listener of line 10"
    );
}

/// `defer_accept`: the kernel hands a connection over once its first bytes
/// are in. One that speaks is served at once; a silent one is accepted
/// only after one SYN-ACK retransmission (a second), so its 300 ms
/// `client_header_timeout` ends it no sooner than that. A reload turns it
/// off: a silent connection is then accepted at once and holds its
/// address's one place (`max_connections_per_ip = 1`).
#[test]
fn a_deferred_listener_accepts_a_connection_once_its_bytes_are_in() {
    use crate::common::farm::connect_from;
    use std::time::{Duration, Instant};
    let up = Upstream::echo();
    let config = |defer: bool| {
        format!(
            "[runtime]\nworkers = 1\n\n[log]\naccess = \"off\"\nlevel = \"info\"\n\n\
             [limits]\nclient_header_timeout = \"300ms\"\nmax_connections_per_ip = 1\n\n\
             [[listen]]\naddress = \"127.0.0.1:0\"\ndefer_accept = {defer}\n\n{}{}",
            upstream("app", up.addr(), ""),
            route("/", "app")
        )
    };
    let mut p = Proxy::start(&config(true));
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let opened = Instant::now();
    let mut silent = connect_from(ip("127.0.0.2"), p.addr());
    get_ok(&mut connect_from(ip("127.0.0.3"), p.addr()), "/spoke");
    assert!(silent.wait_closed(Duration::from_secs(5)), "still open");
    let took = opened.elapsed();
    assert!(took >= Duration::from_secs(1), "closed after {took:?}");

    std::fs::write(p.config_path(), config(false)).unwrap();
    p.signal(libc::SIGHUP);
    p.wait_for_line(|l| l.contains("reloaded"), Duration::from_secs(10))
        .expect("no reload line");
    let mut silent = connect_from(ip("127.0.0.4"), p.addr());
    let mut second = connect_from(ip("127.0.0.4"), p.addr());
    // Refused at once: the write may meet the close.
    let _ = second.try_send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(second.wait_closed(Duration::from_secs(3)));
    assert!(second.wire.buf.is_empty(), "{}", show(&second.wire.buf));
    assert!(silent.wait_closed(Duration::from_secs(3)));
    get_ok(&mut connect_from(ip("127.0.0.4"), p.addr()), "/after");
}
