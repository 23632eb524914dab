//! Content-Length bodies and WebSocket tunnels between two plain TCP sockets
//! go through splice(2) (src/splice.rs). What that path must keep: megabyte
//! bodies both ways byte-exact on one keep-alive connection (and the pooled
//! upstream connection clean behind them), the 408 of a client that stops
//! mid-body, the close of one that leaves, the close of an upstream that
//! stops mid-body, and a tunnel that passes half-closes both ways.

use crate::common::*;
use std::{
    net::Shutdown,
    sync::{mpsc, Mutex},
    time::{Duration, Instant},
};

/// Odd sizes: not a multiple of a pipe, a page or a relay buffer.
const UP_BODY: usize = 1_500_007;
const DOWN_BODY: usize = (3 << 20) + 5;
/// `/cut` promises this much and sends half of it.
const CUT_BODY: usize = 2 << 20;

/// The origin, scripted by the first path segment; anything else is echoed.
/// Every byte a tunnel got is reported on `got` when its client half-closes.
fn app(got: mpsc::Sender<Vec<u8>>) -> impl Fn(&mut UpConn) + Send + Sync + 'static {
    let got = Mutex::new(got);
    move |c: &mut UpConn| {
        while let Some(req) = c.read_request() {
            let kind = req.target.split('/').nth(1).unwrap_or("");
            let (len, body) = match kind {
                // The request body comes back as the response body.
                "mirror" => (req.body.len(), req.body.clone()),
                "big" => (DOWN_BODY, pattern(DOWN_BODY, 5)),
                "cut" => (CUT_BODY, pattern(CUT_BODY / 2, 6)),
                "ws" => {
                    let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                        Connection: Upgrade\r\n\r\nsrv-hello\n";
                    if !c.write(resp) {
                        return;
                    }
                    let echo = !req.target.contains("upclose");
                    let Some(all) = c.tunnel_peer(echo, !echo) else {
                        return;
                    };
                    // The test may have finished already.
                    let _ = got.lock().unwrap().send(all);
                    return;
                }
                _ => {
                    if !c.write(&echo_response(&req)) {
                        return;
                    }
                    continue;
                }
            };
            let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
            out.extend_from_slice(&body);
            if !c.write(&out) || kind == "cut" {
                return;
            }
        }
    }
}

fn start(limits: &str) -> (Proxy, Upstream, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let up = Upstream::start(app(tx));
    let toml = config(
        limits,
        &(upstream("app", up.addr(), "") + &route("/", "app")),
    );
    (Proxy::start(&toml), up, rx)
}

/// The upstream connection that got the head carrying `t` closes within
/// `within`, and no complete request with `t` reached the upstream.
fn assert_half_request_dropped(up: &Upstream, t: &str, within: Duration, open: &str) {
    let conn = up
        .seen()
        .heads
        .iter()
        .find(|(_, h)| contains(h, t.as_bytes()))
        .unwrap()
        .0;
    assert!(
        up.wait_until(within, |s| s.finished.contains(&conn)),
        "{open}"
    );
    assert!(
        up.requests_with(t).is_empty(),
        "a complete request reached the upstream"
    );
}

fn post(target: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST {target} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

#[test]
fn megabyte_bodies_go_both_ways_byte_exact_on_one_connection() {
    let (proxy, up, _) = start("");
    let mut c = Client::connect(proxy.addr());
    let sent = pattern(UP_BODY, 9);
    let t = token();
    c.send(&post(&format!("/mirror/{t}"), &sent));
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert!(r.body == sent, "the mirrored body came back damaged");
    let seen = up.only(&t);
    assert!(seen.body == sent, "the upstream got a damaged body");

    let r = c.get(&format!("/big/{}", token()));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), DOWN_BODY);
    assert!(
        r.body == pattern(DOWN_BODY, 5),
        "the response body is damaged"
    );

    // Nothing was read past either body: the client connection goes on, and
    // so does the pooled upstream connection.
    let last = token();
    get_ok(&mut c, &format!("/echo/{last}"));
    assert_eq!(
        up.only(&last).conn,
        seen.conn,
        "the upstream connection was not reused"
    );
}

#[test]
fn a_client_that_stops_mid_body_gets_408_and_the_upstream_connection_closes() {
    let (proxy, up, _) = start("client_body_timeout = \"500ms\"");
    let t = token();
    let mut raw = post(&format!("/mirror/{t}"), &pattern(1 << 20, 3));
    raw.truncate(raw.len() - 700_000);
    let mut c = Client::connect(proxy.addr());
    let started = Instant::now();
    c.send(&raw);
    let r = c.read_response();
    let took = started.elapsed();
    assert_proxy_status(&r, 408, b"a POST that stops after 300 KB of 1 MiB");
    assert!(
        took >= Duration::from_millis(350) && took <= Duration::from_millis(2500),
        "408 after {took:?}; client_body_timeout is 500ms"
    );
    assert!(c.wait_closed(Duration::from_secs(2)), "408 but still open");
    assert_half_request_dropped(
        &up,
        &t,
        Duration::from_secs(2),
        "the upstream connection with half a body stayed open",
    );
    get_ok(&mut Client::connect(proxy.addr()), "/echo/after");
}

#[test]
fn a_client_that_leaves_mid_body_closes_the_upstream_connection() {
    let (proxy, up, _) = start("");
    let t = token();
    let mut raw = post(&format!("/mirror/{t}"), &pattern(1 << 20, 4));
    raw.truncate(raw.len() - 700_000);
    let mut c = Client::connect(proxy.addr());
    c.send(&raw);
    assert!(up.wait_until(IO_TIMEOUT, |s| s
        .heads
        .iter()
        .any(|(_, h)| contains(h, t.as_bytes()))));
    drop(c);
    assert_half_request_dropped(
        &up,
        &t,
        Duration::from_secs(3),
        "the client left, the upstream connection stayed open",
    );
    get_ok(&mut Client::connect(proxy.addr()), "/echo/after");
}

#[test]
fn an_upstream_that_closes_mid_body_closes_the_client() {
    let (proxy, _up, _) = start("");
    let mut c = Client::connect(proxy.addr());
    c.send(format!("GET /cut/{} HTTP/1.1\r\nHost: h\r\n\r\n", token()).as_bytes());
    let head = c
        .wire
        .take_head(Instant::now() + IO_TIMEOUT)
        .expect("a response head");
    assert!(head.starts_with(b"HTTP/1.1 200 "), "{}", show(&head));
    assert!(contains(
        &head,
        format!("Content-Length: {CUT_BODY}").as_bytes()
    ));
    let got = c.read_to_close(IO_TIMEOUT);
    assert_eq!(
        got.len(),
        CUT_BODY / 2,
        "not exactly what the upstream sent"
    );
    assert!(
        got == pattern(CUT_BODY / 2, 6),
        "the partial body is damaged"
    );
    get_ok(&mut Client::connect(proxy.addr()), "/echo/after");
}

fn upgrade(proxy: &Proxy, target: &str) -> Client {
    let mut c = Client::connect(proxy.addr());
    c.send(
        format!(
            "GET {target} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 101);
    assert_eq!(c.read_exact_bytes(10, IO_TIMEOUT), b"srv-hello\n");
    c
}

#[test]
fn a_tunnel_carries_a_megabyte_and_passes_the_client_half_close() {
    let (proxy, _up, got) = start("");
    let mut c = upgrade(&proxy, &format!("/ws/{}", token()));
    let bulk = pattern(1 << 20, 8);
    for piece in bulk.chunks(64 * 1024) {
        c.send(piece);
        assert!(
            c.read_exact_bytes(piece.len(), IO_TIMEOUT) == piece,
            "echo damaged"
        );
    }
    c.wire.stream.shutdown(Shutdown::Write).unwrap();
    let all = got
        .recv_timeout(IO_TIMEOUT)
        .expect("the half-close did not reach the upstream");
    assert!(all == bulk, "the upstream got damaged bytes");
    assert_eq!(c.read_to_close(IO_TIMEOUT), b"bye\n");
}

#[test]
fn a_tunnel_passes_the_upstream_half_close_and_keeps_carrying_the_client() {
    let (proxy, _up, got) = start("");
    let mut c = upgrade(&proxy, &format!("/ws/upclose-{}", token()));
    // The upstream's FIN arrives, and the client may still send.
    assert!(
        c.wait_closed(IO_TIMEOUT),
        "the upstream's half-close did not arrive"
    );
    c.send(b"still talking");
    c.wire.stream.shutdown(Shutdown::Write).unwrap();
    let all = got
        .recv_timeout(IO_TIMEOUT)
        .expect("the half-close did not reach the upstream");
    assert_eq!(all, b"still talking");
}
