//! Failing servers: passive health (max_fails / fail_timeout), the retry
//! rules, active health checks (once per process) and 503 when every server
//! is out. Several real servers on 127.0.0.1, timings measured.

use crate::common::farm::*;
use crate::common::*;
use std::time::{Duration, Instant};

/// One upstream `app` of `servers` (round robin) under `/`; `extra` holds its other keys.
fn proxy_with(servers: &[String], extra: &str) -> Proxy {
    Proxy::start(&config(
        "",
        &(pool("app", servers, extra) + &route("/", "app")),
    ))
}

/// A request on a fresh connection (an error answer closes the connection).
fn once(proxy: &Proxy, raw: &str) -> Response {
    let mut c = Client::connect(proxy.addr());
    c.send(raw.as_bytes());
    c.read_response()
}

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n")
}

fn post(target: &str) -> String {
    format!("POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
}

// ------------------------------------------------------------------ passive

#[test]
fn max_fails_within_fail_timeout_takes_a_server_out_for_fail_timeout() {
    let b = Backend::many(3);
    b[1].set_hang_up(true);
    let proxy = proxy_with(&servers_of(&b), "max_fails = 2\nfail_timeout = \"2s\"");
    let mut c = Client::connect(proxy.addr());
    let mut out_at = None;
    for i in 0..30 {
        // Every client gets a clean answer: GETs that met the failing server went on.
        let r = c.get(&format!("/p/{i}"));
        assert_eq!(r.status, 200);
        if out_at.is_none() && b[1].heads() == 2 {
            out_at = Some(Instant::now());
        }
    }
    let out_at = out_at.expect("the failing server was not tried twice");
    assert_eq!(b[1].heads(), 2, "tried again after max_fails failures");
    b[1].set_hang_up(false);
    // It is skipped until fail_timeout has passed, then serves again.
    let mut back = None;
    while out_at.elapsed() < Duration::from_secs(6) {
        let r = c.get("/p/again");
        assert_eq!(r.status, 200);
        if who(&r) == "s1" {
            back = Some(out_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let back = back.expect("the server never came back");
    assert!(
        back >= Duration::from_millis(1800) && back < Duration::from_millis(3500),
        "back after {back:?}; fail_timeout is 2s"
    );
}

#[test]
fn a_single_server_is_never_skipped() {
    let b = Backend::start("only");
    b.set_hang_up(true);
    let proxy = proxy_with(
        &[server(b.addr(), 1)],
        "max_fails = 1\nfail_timeout = \"30s\"",
    );
    for i in 0..5 {
        assert_eq!(once(&proxy, &get(&format!("/one/{i}"))).status, 502);
    }
    assert_eq!(b.heads(), 5, "a failing single server was skipped");
    b.set_hang_up(false);
    assert_eq!(once(&proxy, &get("/one/ok")).status, 200);
}

#[test]
fn every_server_skipped_answers_503() {
    let mut b = Backend::many(2);
    let proxy = proxy_with(&servers_of(&b), "fail_timeout = \"30s\"");
    b[0].stop();
    b[1].stop();
    // Both refused: the retry met the second too; the last failure answers.
    let r = once(&proxy, &get("/gone/1"));
    assert_proxy_status(&r, 502, b"GET /gone/1");
    // Both are now skipped: nothing is tried.
    let r = once(&proxy, &get("/gone/2"));
    assert_proxy_status(&r, 503, b"GET /gone/2");
}

// ------------------------------------------------------------------ retries

#[test]
fn connect_failures_go_to_the_next_server_for_any_method() {
    let live = Backend::start("live");
    let dead = refused_port();
    // max_fails = 0 keeps the dead server in rotation: every other request meets it.
    let proxy = proxy_with(&[server(dead, 1), server(live.addr(), 1)], "max_fails = 0");
    for i in 0..20 {
        let r = once(&proxy, &post(&format!("/post/{i}")));
        assert_eq!(r.status, 200, "POST {i}");
        assert_eq!(who(&r), "live");
    }
    assert_eq!(live.heads(), 20);
}

#[test]
fn after_the_request_was_sent_only_idempotent_methods_are_retried() {
    let hang = Backend::start("hang");
    hang.set_hang_up(true);
    let live = Backend::start("live");
    let servers = [server(hang.addr(), 1), server(live.addr(), 1)];
    let proxy = proxy_with(&servers, "max_fails = 0");

    // POST: the failing server had it, so it is not sent again: 502.
    let mut failed = 0;
    for i in 0..20 {
        let t = format!("/post-{}", token());
        let r = once(&proxy, &post(&t));
        let (at_hang, at_live) = (hang.heads_with(&t), live.heads_with(&t));
        assert_eq!(
            at_hang + at_live,
            1,
            "POST {i} reached {at_hang} + {at_live} servers"
        );
        if at_hang == 1 {
            assert_proxy_status(&r, 502, post(&t).as_bytes());
            failed += 1;
        } else {
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(
        failed, 10,
        "round robin sends every other POST to the failing server"
    );

    // GET (and other idempotent methods): sent again to the next server;
    // the client sees one clean answer on a connection that stays usable.
    let mut c = Client::connect(proxy.addr());
    let mut retried = 0;
    for i in 0..20 {
        let t = format!("/get-{}", token());
        let method = ["GET", "OPTIONS", "PUT", "DELETE"][i % 4];
        let body = if method == "PUT" {
            "Content-Length: 2\r\n\r\nhi"
        } else {
            "\r\n"
        };
        c.send(format!("{method} {t} HTTP/1.1\r\nHost: t\r\n{body}").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 200, "{method} {i}");
        assert_eq!(live.heads_with(&t), 1);
        retried += hang.heads_with(&t);
    }
    assert_eq!(retried, 10);
}

#[test]
fn retries_zero_turns_retrying_off() {
    let live = Backend::start("live");
    let servers = [server(refused_port(), 1), server(live.addr(), 1)];
    let proxy = proxy_with(&servers, "max_fails = 0\nretries = 0");
    let statuses: Vec<u16> = (0..20)
        .map(|i| once(&proxy, &get(&format!("/r0/{i}"))).status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 502).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        10,
        "{statuses:?}"
    );
}

#[test]
fn retries_bound_the_number_of_servers_tried() {
    let b = Backend::many(4);
    for s in &b {
        s.set_hang_up(true);
    }
    let proxy = proxy_with(&servers_of(&b), "max_fails = 0\nretries = 2");
    let t = format!("/bounded-{}", token());
    assert_proxy_status(&once(&proxy, &get(&t)), 502, get(&t).as_bytes());
    let tried: usize = b.iter().map(|s| s.heads_with(&t)).sum();
    assert_eq!(tried, 3, "retries = 2: three servers, each once");
}

// ------------------------------------------------------------------- active

const CHECKS: &str = "health = { path = \"/health\", interval = \"100ms\", timeout = \"500ms\", \
                      fails = 2, passes = 2 }";

/// GETs until `cond` holds for the answering server (the time it took), or 5 s pass.
fn until_answer(proxy: &Proxy, cond: impl Fn(&str) -> bool) -> Option<Duration> {
    let mut c = Client::connect(proxy.addr());
    let mut i = 0;
    within(Duration::from_secs(5), || {
        i += 1;
        let r = c.get(&format!("/until/{i}"));
        r.status == 200 && cond(&who(&r))
    })
}

#[test]
fn active_checks_take_a_failing_server_out_and_bring_it_back() {
    let b = Backend::many(3);
    let proxy = proxy_with(&servers_of(&b), CHECKS);
    within(Duration::from_secs(3), || {
        b.iter().all(|s| !s.health_checks().is_empty())
    })
    .expect("not every server was checked");
    for s in &b {
        let (_, host) = &s.health_checks()[0];
        assert_eq!(host, &s.addr().to_string(), "Host of the check");
    }
    // Fails twice at 100 ms: out within a few hundred ms.
    b[1].set_healthy(false);
    let mut c = Client::connect(proxy.addr());
    let out = within(Duration::from_secs(3), || {
        (0..6).all(|i| who(&c.get(&format!("/out/{i}"))) != "s1")
    })
    .expect("a failing server stayed in rotation");
    assert!(out < Duration::from_millis(1500), "out after {out:?}");
    let got = answers(&proxy, (0..100).map(|i| format!("/without/{i}")));
    let t = tally(&got);
    assert_eq!(t.get("s1"), None, "{t:?}");
    assert_eq!((t["s0"], t["s2"]), (50, 50), "{t:?}");
    // Passes twice: back.
    b[1].set_healthy(true);
    let back = until_answer(&proxy, |n| n == "s1").expect("never came back");
    assert!(back < Duration::from_millis(1500), "back after {back:?}");
}

#[test]
fn checks_run_once_per_process_not_once_per_worker() {
    let b = Backend::start("s0");
    let toml = config(
        "",
        &(pool(
            "app",
            &[server(b.addr(), 1)],
            "health = { path = \"/health\", interval = \"200ms\" }",
        ) + &route("/", "app")),
    )
    .replace("workers = 1", "workers = 4");
    let _proxy = Proxy::start(&toml);
    within(Duration::from_secs(3), || !b.health_checks().is_empty()).expect("no check");
    let start = Instant::now();
    let before = b.health_checks().len();
    std::thread::sleep(Duration::from_secs(2));
    let n = b.health_checks().len() - before;
    let per_interval = n as f64 / (start.elapsed().as_secs_f64() / 0.2);
    // Four workers each checking would make this about 4.
    assert!(
        (0.6..=1.4).contains(&per_interval),
        "{n} checks in 2 s at 200 ms"
    );
}

#[test]
fn every_server_failing_its_checks_answers_503_until_one_passes() {
    let b = Backend::many(2);
    let checks = "health = { path = \"/health\", interval = \"100ms\", fails = 1, passes = 1 }";
    let proxy = proxy_with(&servers_of(&b), checks);
    assert_eq!(once(&proxy, &get("/up")).status, 200);
    b[0].set_healthy(false);
    b[1].set_healthy(false);
    within(Duration::from_secs(3), || {
        once(&proxy, &get("/down")).status == 503
    })
    .expect("no 503 with every server failing its checks");
    let r = once(&proxy, &get("/down"));
    assert_proxy_status(&r, 503, get("/down").as_bytes());
    b[1].set_healthy(true);
    within(Duration::from_secs(3), || {
        once(&proxy, &get("/back")).status == 200
    })
    .expect("still 503 after a server passed");
    assert_eq!(who(&once(&proxy, &get("/back"))), "s1");
}

#[test]
fn backups_serve_while_every_primary_fails_its_checks() {
    let p = Backend::many(2);
    let spare = Backend::start("spare");
    let servers = [
        server(p[0].addr(), 1),
        server(p[1].addr(), 1),
        backup(spare.addr()),
    ];
    let proxy = proxy_with(&servers, CHECKS);
    let got = answers(&proxy, (0..20).map(|i| format!("/a/{i}")));
    assert!(!got.iter().any(|n| n == "spare"), "{got:?}");
    p[0].set_healthy(false);
    p[1].set_healthy(false);
    until_answer(&proxy, |n| n == "spare").expect("the backup never served");
    let got = answers(&proxy, (0..20).map(|i| format!("/b/{i}")));
    assert!(got.iter().all(|n| n == "spare"), "{got:?}");
    p[1].set_healthy(true);
    until_answer(&proxy, |n| n == "s1").expect("the primary never came back");
    let got = answers(&proxy, (0..20).map(|i| format!("/c/{i}")));
    assert!(got.iter().all(|n| n == "s1"), "{got:?}");
}
