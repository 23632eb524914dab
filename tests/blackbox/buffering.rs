//! Request buffering (`limits.client_body_buffer`): a body that fits is read
//! whole before any upstream is picked or connected, so slow clients hold no
//! upstream connection; larger bodies (and `client_body_buffer = "0"`)
//! stream as they arrive.

use crate::common::*;
use std::time::Duration;

fn proxy(limits: &str, up: &Upstream) -> Proxy {
    let rest = upstream("app", up.addr(), "") + &route("/", "app");
    Proxy::start(&config(limits, &rest))
}

/// A GET answered on a fresh connection: the worker has handled every
/// event that came before it, and the upstream has accepted every
/// connection the proxy opened before this one (one accept queue, in order).
fn answered_get(p: &Proxy) {
    let mut c = Client::connect(p.addr());
    get_ok(&mut c, &format!("/probe-{}", token()));
}

#[test]
fn slow_posts_open_no_upstream_connection_until_their_bodies_are_complete() {
    let up = Upstream::echo();
    let p = proxy("client_body_timeout = \"30s\"", &up);
    let mut slow: Vec<Client> = (0..20)
        .map(|i| {
            let mut c = Client::connect(p.addr());
            let head =
                format!("POST /slow-{i} HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
            c.send(head.as_bytes());
            c
        })
        .collect();
    // One chunked POST too, its last chunk not sent yet.
    let mut chunked = Client::connect(p.addr());
    chunked.send(
        b"POST /slow-chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    );
    answered_get(&p);
    let seen = up.seen();
    assert_eq!(
        seen.opened,
        1,
        "only the probe may reach the upstream while 21 bodies are incomplete; heads seen: {}",
        seen.heads.len()
    );
    assert_eq!(
        up.heads_with("/slow-"),
        0,
        "a head went upstream before its body was complete"
    );
    // The bodies complete: each request goes up whole and is answered.
    for (i, c) in slow.iter_mut().enumerate() {
        c.send(b"defghij");
        let r = c.read_response();
        assert_eq!(r.status, 200, "slow POST {i}");
        assert_eq!(r.body_str(), format!("target=/slow-{i}\nbodylen=10\n"));
        // The connection goes on.
        get_ok(c, &format!("/after-{i}"));
    }
    chunked.send(b"2\r\nde\r\n0\r\n\r\n");
    let r = chunked.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "target=/slow-chunked\nbodylen=5\n");
}

#[test]
fn a_body_over_client_body_buffer_streams_at_once() {
    let up = Upstream::echo();
    let p = proxy("client_body_buffer = \"1k\"", &up);
    let mut c = Client::connect(p.addr());
    c.send(b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 4096\r\n\r\nabc");
    // The head goes upstream while most of the body is still to come.
    assert!(
        up.wait_until(Duration::from_secs(5), |s| s.heads.len() == 1),
        "a body over client_body_buffer was held back"
    );
    c.send(&vec![b'x'; 4093]);
    let r = c.read_response();
    assert_eq!(r.body_str(), "target=/big\nbodylen=4096\n");
}

#[test]
fn client_body_buffer_zero_streams_every_body() {
    let up = Upstream::echo();
    let p = proxy("client_body_buffer = \"0\"", &up);
    let mut c = Client::connect(p.addr());
    c.send(b"POST /small HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    assert!(
        up.wait_until(Duration::from_secs(5), |s| s.heads.len() == 1),
        "client_body_buffer = 0 still buffered"
    );
    c.send(b"defghij");
    assert_eq!(c.read_response().body_str(), "target=/small\nbodylen=10\n");
}

#[test]
fn a_body_that_stops_arriving_is_408_with_no_upstream_connection() {
    let up = Upstream::echo();
    let p = proxy("client_body_timeout = \"300ms\"", &up);
    let raw = b"POST /stalled HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc";
    let mut c = Client::connect(p.addr());
    c.send(raw);
    let r = c.read_response();
    assert_proxy_status(&r, 408, raw);
    assert!(
        c.wait_closed(Duration::from_secs(2)),
        "408 kept the connection"
    );
    answered_get(&p);
    assert_eq!(up.seen().opened, 1, "the stalled POST reached the upstream");
}

#[test]
fn expect_100_continue_is_answered_by_ringside_before_the_body_is_read() {
    let up = Upstream::echo();
    let p = proxy("", &up);
    let mut c = Client::connect(p.addr());
    c.send(b"POST /cont HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.read_exact_bytes(25, Duration::from_secs(5));
    assert_eq!(show(&interim), "HTTP/1.1 100 Continue\\r\\n\\r\\n");
    answered_get(&p);
    assert_eq!(
        up.heads_with("/cont"),
        0,
        "the head went upstream before the body"
    );
    assert_eq!(
        up.seen().opened,
        1,
        "the upstream was reached before the body"
    );
    c.send(b"hello");
    let r = c.read_response();
    assert_eq!(r.body_str(), "target=/cont\nbodylen=5\n");
}

#[test]
fn a_client_that_leaves_mid_body_costs_nothing_upstream_and_others_are_served() {
    let up = Upstream::echo();
    let p = proxy("", &up);
    for i in 0..5 {
        let mut c = Client::connect(p.addr());
        c.send(
            format!("POST /gone-{i} HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc")
                .as_bytes(),
        );
        drop(c);
    }
    answered_get(&p);
    assert_eq!(up.heads_with("/gone-"), 0);
    assert_eq!(up.seen().opened, 1);
}
