//! `max_connections` (per worker) reached by idle keep-alive connections:
//! the longest-idle one is closed to admit a new client (as nginx), for
//! HTTP/1.1 (plain and TLS) and for HTTP/2 connections with no open
//! stream; with every connection busy, a new client waits in the backlog.
//! One worker, so that every connection counts against the same limit.

use crate::common::h2kit::*;
use crate::common::*;
use std::io::{Read, Write};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// Well under the 30 s keep-alive timeout the proxies here run with: an
/// answer this fast did not wait for an idle connection to time out.
const PROMPT: Duration = Duration::from_secs(2);

fn limits(max: usize) -> String {
    format!("max_connections = {max}\nkeepalive_timeout = \"30s\"")
}

#[test]
fn the_longest_idle_keepalive_connection_makes_room_for_a_new_client() {
    let up = Upstream::echo();
    let routes = upstream("app", up.addr(), "") + &route("/", "app");
    let p = Proxy::start(&config(&limits(3), &routes));
    // Three keep-alive connections, idle in this order.
    let mut held: Vec<Client> = (0..3)
        .map(|i| {
            let mut c = Client::connect(p.addr());
            get_ok(&mut c, &format!("/held/{i}"));
            c
        })
        .collect();
    // A fourth client is served at once: the oldest idle one made room.
    let started = Instant::now();
    let mut new = Client::connect(p.addr());
    get_ok(&mut new, "/new");
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
    assert!(
        held[0].wait_closed(IO_TIMEOUT),
        "the longest-idle one closes"
    );
    // The others were not touched.
    get_ok(&mut held[1], "/held/1/again");
    get_ok(&mut held[2], "/held/2/again");
    // Now /new is the longest idle: the next newcomer evicts it.
    let mut newer = Client::connect(p.addr());
    get_ok(&mut newer, "/newer");
    assert!(
        new.wait_closed(IO_TIMEOUT),
        "the next longest-idle one closes"
    );
    get_ok(&mut held[2], "/held/2/third");
}

/// An echo upstream that answers a request whose target starts with
/// `prefix` only once the test sends a go (or after two I/O timeouts).
fn held(prefix: &'static str) -> (Upstream, mpsc::Sender<()>) {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let up = Upstream::start(move |c: &mut UpConn| {
        while let Some(req) = c.read_request() {
            if req.target.starts_with(prefix) {
                let _ = go_rx.lock().unwrap().recv_timeout(IO_TIMEOUT * 2);
            }
            if !c.write(&echo_response(&req)) {
                return;
            }
        }
    });
    (up, go_tx)
}

#[test]
fn with_every_connection_busy_a_new_client_waits_in_the_backlog() {
    let (up, go_tx) = held("/slow");
    let routes = upstream("app", up.addr(), "") + &route("/", "app");
    let p = Proxy::start(&config(&limits(2), &routes));
    let mut busy: Vec<Client> = (0..2)
        .map(|i| {
            let mut c = Client::connect(p.addr());
            c.send(format!("GET /slow/{i} HTTP/1.1\r\nHost: test.local\r\n\r\n").as_bytes());
            c
        })
        .collect();
    assert!(up.wait_until(IO_TIMEOUT, |s| s.heads.len() == 2));
    // Neither request in progress is cut short for the newcomer.
    let mut new = Client::connect(p.addr());
    new.send(b"GET /new HTTP/1.1\r\nHost: test.local\r\n\r\n");
    new.timeout = Duration::from_secs(1);
    assert!(new.try_read_response(false).is_err(), "served while full");
    assert_eq!(up.heads_with("/new"), 0);
    // Once the slow answers are out, both connections idle and the
    // newcomer's connection is accepted and served.
    go_tx.send(()).unwrap();
    go_tx.send(()).unwrap();
    for (i, c) in busy.iter_mut().enumerate() {
        let r = c.read_response();
        assert_eq!(r.header("x-echo-target"), Some(&*format!("/slow/{i}")));
    }
    new.timeout = IO_TIMEOUT;
    let r = new.read_response();
    assert_eq!(r.header("x-echo-target"), Some("/new"));
}

#[test]
fn a_burst_in_the_backlog_is_taken_no_further_than_max_connections() {
    let (up, go_tx) = held("/");
    let routes = upstream("app", up.addr(), "") + &route("/", "app");
    let p = Proxy::start(&config(&limits(4), &routes));
    // Twelve clients at once, each with its request already sent: the
    // worker finds them waiting together in the backlog.
    let mut clients: Vec<Client> = (0..12)
        .map(|i| {
            let mut c = Client::connect(p.addr());
            c.send(format!("GET /burst/{i} HTTP/1.1\r\nHost: test.local\r\n\r\n").as_bytes());
            c
        })
        .collect();
    assert!(up.wait_until(IO_TIMEOUT, |s| s.heads.len() == 4));
    // The rest wait in the backlog: no fifth request reaches the upstream.
    let mut fifth = Client::connect(p.addr());
    fifth.send(b"GET /fifth HTTP/1.1\r\nHost: test.local\r\n\r\n");
    fifth.timeout = Duration::from_secs(1);
    assert!(fifth.try_read_response(false).is_err(), "served while full");
    assert_eq!(up.heads_with("/burst"), 4);
    // Each answer frees a place: every client is served in the end.
    for _ in 0..13 {
        go_tx.send(()).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response();
        assert_eq!(r.header("x-echo-target"), Some(&*format!("/burst/{i}")));
    }
    fifth.timeout = IO_TIMEOUT;
    assert_eq!(
        fifth.read_response().header("x-echo-target"),
        Some("/fifth")
    );
}

/// One GET over TLS with ALPN http/1.1 on a kept-alive connection.
fn tls_get(s: &mut TlsSync, path: &str) -> Vec<u8> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    let want = format!("target={path}\nbodylen=0\n");
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while !contains(&out, want.as_bytes()) {
        match s.read(&mut chunk) {
            Ok(n) if n > 0 => out.extend_from_slice(&chunk[..n]),
            other => panic!("GET {path}: {other:?} after {}", show(&out)),
        }
    }
    out
}

#[test]
fn idle_tls_and_http2_connections_are_evicted_longest_idle_first() {
    let up = Upstream::echo();
    let p = H2Proxy::start(up.addr(), 1, &limits(3), "");
    // Idle in this order: TLS HTTP/1.1, HTTP/2, HTTP/2.
    let mut tls = tls_connect(p.addr(), &p.client_with(&[b"http/1.1"]));
    tls_get(&mut tls, "/tls");
    let mut h2s: Vec<Raw> = (0..2)
        .map(|i| {
            let mut raw = Raw::open(p.addr(), &p.client);
            assert!(raw.get(1, &format!("/h2/{i}")).is_some());
            raw
        })
        .collect();
    // A newcomer evicts the TLS connection (close_notify, then the close).
    let started = Instant::now();
    let mut new = Raw::open(p.addr(), &p.client);
    assert!(new.get(1, "/new").is_some(), "the newcomer is served");
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
    let mut rest = Vec::new();
    assert!(
        tls.read_to_end(&mut rest).is_ok(),
        "the TLS connection is closed (close_notify)"
    );
    // The next newcomer evicts the first HTTP/2 connection: GOAWAY NO_ERROR
    // naming the stream it served, then the close.
    let mut newer = Raw::open(p.addr(), &p.client);
    assert!(newer.get(1, "/newer").is_some(), "the next one is served");
    let g = h2s[0].until(|f| f.ty == GOAWAY).expect("GOAWAY");
    assert_eq!(g.code(), NO_ERROR);
    assert_eq!(g.last_stream(), 1);
    assert!(h2s[0].closed(), "the evicted HTTP/2 connection closes");
    // The other HTTP/2 connection still serves.
    let seen = h2s[1].get(3, "/h2/1/again").expect("still served");
    assert!(seen.iter().all(|f| f.ty != GOAWAY), "{seen:?}");
}

#[test]
fn an_http2_connection_with_a_stream_open_is_not_evicted() {
    let hold = Upstream::start(|c: &mut UpConn| {
        while let Some(req) = c.read_request() {
            if req.target == "/hold" {
                c.hold_until_closed();
                return;
            }
            if !c.write(&echo_response(&req)) {
                return;
            }
        }
    });
    let p = H2Proxy::start(hold.addr(), 1, &limits(2), "");
    // The older connection has a stream under way; the younger is idle.
    let mut busy = Raw::open(p.addr(), &p.client);
    busy.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&get_fields("/hold")),
    ));
    assert!(hold.wait_until(IO_TIMEOUT, |s| s.heads.len() == 1));
    let mut idle = Raw::open(p.addr(), &p.client);
    assert!(idle.get(1, "/idle").is_some());
    let mut new = Raw::open(p.addr(), &p.client);
    assert!(new.get(1, "/new").is_some(), "the newcomer is served");
    assert_eq!(idle.goaway(), Some(NO_ERROR), "the idle one is evicted");
    assert!(idle.closed());
    // The busy one is intact: it still opens streams.
    let seen = busy.get(3, "/after").expect("still served");
    assert!(seen.iter().all(|f| f.ty != GOAWAY), "{seen:?}");
}
