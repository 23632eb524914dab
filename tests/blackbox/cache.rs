//! The response cache by the contract's caching rules, counted at a real
//! upstream: what is stored, for how long, what bypasses, `X-Cache-Status`,
//! LRU eviction, and request coalescing (N concurrent misses → 1 request).

use crate::common::*;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

/// An upstream whose answer depends on the target: `/x-HEADER=VALUE/...`
/// adds that header, `/status-404/...` answers 404, `/slow/...` waits
/// 400 ms, `/chunked/...` sends a chunked body, `/big-N/...` an N-byte
/// body. The body names the target and a per-upstream sequence number.
fn origin() -> Upstream {
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Upstream::start(move |c| {
        while let Some(req) = c.read_request() {
            let seq = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let t = &req.target;
            let mut status = "200 OK";
            let mut extra = String::new();
            for part in t.split('/') {
                if let Some(h) = part.strip_prefix("x-") {
                    let (k, v) = h.split_once('=').unwrap();
                    extra.push_str(&format!("{k}: {}\r\n", v.replace("%20", " ")));
                }
                if part == "status-404" {
                    status = "404 Not Found";
                }
            }
            if t.contains("/slow/") {
                thread::sleep(Duration::from_millis(400));
            }
            let mut body = format!("target={t} seq={seq}\n").into_bytes();
            if let Some(n) = t.split('/').find_map(|p| p.strip_prefix("big-")) {
                body = pattern(n.parse().unwrap(), 7);
            }
            let head = if t.contains("/chunked/") {
                format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n{extra}Transfer-Encoding: chunked\r\n\r\n")
            } else {
                format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n{extra}Content-Length: {}\r\n\r\n",
                    body.len()
                )
            };
            let mut out = head.into_bytes();
            if t.contains("/chunked/") {
                for piece in body.chunks(10) {
                    out.extend(format!("{:x}\r\n", piece.len()).bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            if req.method != "HEAD" && !t.contains("/chunked/") {
                out.extend_from_slice(&body);
            }
            if !c.write(&out) {
                return;
            }
        }
    })
}

fn cached_proxy(up: &Upstream, cache: &str, size: &str) -> Proxy {
    let rest = format!(
        "[cache]\nsize = \"{size}\"\n\n{}[[route]]\npath = \"/\"\nupstream = \"app\"\ncache = {cache}\n",
        upstream("app", up.addr(), "")
    );
    Proxy::start(&config("", &rest))
}

fn get(p: &Proxy, target: &str, extra: &str) -> Response {
    let mut c = Client::connect(p.addr());
    c.send(format!("GET {target} HTTP/1.1\r\nHost: test.local\r\n{extra}\r\n").as_bytes());
    c.read_response()
}

fn status_of(r: &Response) -> &str {
    r.header("x-cache-status").unwrap_or("(none)")
}

#[test]
fn a_miss_is_stored_and_the_next_get_hits_without_reaching_the_upstream() {
    let up = origin();
    let p = cached_proxy(&up, "{ \"200\" = \"1m\" }", "16m");
    let t = format!("/a/{}", token());
    let first = get(&p, &t, "");
    assert_eq!((first.status, status_of(&first)), (200, "MISS"));
    let second = get(&p, &t, "");
    assert_eq!((second.status, status_of(&second)), (200, "HIT"));
    assert_eq!(second.body, first.body, "a hit serves the stored body");
    assert_eq!(
        second.header("content-length"),
        Some(first.body.len().to_string().as_str())
    );
    assert_eq!(second.header("content-type"), Some("text/plain"));
    assert_eq!(
        up.requests_with(&t).len(),
        1,
        "the hit reached the upstream"
    );
    // HEAD shares the entry: a hit, the head only.
    let mut c = Client::connect(p.addr());
    c.send(format!("HEAD {t} HTTP/1.1\r\nHost: test.local\r\n\r\n").as_bytes());
    let h = c.read_head_response();
    assert_eq!((h.status, status_of(&h)), (200, "HIT"));
    assert_eq!(up.requests_with(&t).len(), 1);
    // The keep-alive connection goes on after a HEAD hit.
    get_ok_any(&mut c, &format!("/a/{}", token()));
}

fn get_ok_any(c: &mut Client, target: &str) {
    let r = c.get(target);
    assert_eq!(r.status, 200, "{}", r.status_line);
}

#[test]
fn the_key_is_host_and_target() {
    let up = origin();
    let p = cached_proxy(&up, "{ \"200\" = \"1m\" }", "16m");
    let t = format!("/k/{}", token());
    let mut c = Client::connect(p.addr());
    for (host, want) in [("a.test", "MISS"), ("b.test", "MISS"), ("A.TEST", "HIT")] {
        c.send(format!("GET {t} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(status_of(&r), want, "Host {host}");
    }
    let r = get(&p, &format!("{t}?q=1"), "");
    assert_eq!(status_of(&r), "MISS", "another query is another key");
    assert_eq!(up.requests_with(&t).len(), 3);
}

#[test]
fn only_listed_statuses_are_stored() {
    let up = origin();
    let p = cached_proxy(&up, "{ \"200\" = \"1m\" }", "16m");
    let t = format!("/status-404/{}", token());
    for _ in 0..2 {
        let r = get(&p, &t, "");
        assert_eq!((r.status, status_of(&r)), (404, "MISS"));
    }
    assert_eq!(up.requests_with(&t).len(), 2);
    // Listed, it is stored.
    let p = cached_proxy(&up, "{ \"200\" = \"1m\", \"404\" = \"1m\" }", "16m");
    let t = format!("/status-404/{}", token());
    assert_eq!(status_of(&get(&p, &t, "")), "MISS");
    let r = get(&p, &t, "");
    assert_eq!((r.status, status_of(&r)), (404, "HIT"));
    assert_eq!(up.requests_with(&t).len(), 1);
}

#[test]
fn answers_that_forbid_storing_are_fetched_every_time() {
    let up = origin();
    let p = cached_proxy(&up, "{ \"200\" = \"1m\" }", "16m");
    for shape in [
        "x-Set-Cookie=a=1",
        "x-Cache-Control=no-store",
        "x-Cache-Control=private",
        "x-Cache-Control=no-cache",
        "x-Cache-Control=public,%20no-store",
        "x-Cache-Control=max-age=0",
        "x-Vary=*",
    ] {
        let t = format!("/{shape}/{}", token());
        for _ in 0..2 {
            let r = get(&p, &t, "");
            assert_eq!((r.status, status_of(&r)), (200, "MISS"), "{shape}");
        }
        assert_eq!(up.requests_with(&t).len(), 2, "{shape} was stored");
    }
}

#[test]
fn authorization_and_no_cache_bypass() {
    let up = origin();
    let p = cached_proxy(&up, "{ \"200\" = \"1m\" }", "16m");
    let t = format!("/b/{}", token());
    assert_eq!(status_of(&get(&p, &t, "")), "MISS");
    for extra in ["Authorization: Bearer x\r\n", "Cache-Control: no-cache\r\n"] {
        let r = get(&p, &t, extra);
        assert_eq!((r.status, status_of(&r)), (200, "BYPASS"), "{extra}");
    }
    assert_eq!(up.requests_with(&t).len(), 3);
    // A bypassed answer replaced nothing: the entry still hits.
    assert_eq!(status_of(&get(&p, &t, "")), "HIT");
    // An authorised request's answer is not stored for others.
    let t = format!("/b/{}", token());
    assert_eq!(
        status_of(&get(&p, &t, "Authorization: Basic eDp5\r\n")),
        "BYPASS"
    );
    assert_eq!(status_of(&get(&p, &t, "")), "MISS");
}

#[test]
fn other_methods_get_no_cache_status() {
    let up = origin();
    let p = cached_proxy(&up, "{ \"200\" = \"1m\" }", "16m");
    let t = format!("/m/{}", token());
    let mut c = Client::connect(p.addr());
    c.send(format!("POST {t} HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi").as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache-status"), None);
    assert_eq!(status_of(&get(&p, &t, "")), "MISS", "a POST stores nothing");
}

#[test]
fn entries_expire_and_upstream_max_age_overrides_the_configured_validity() {
    let up = origin();
    let p = cached_proxy(&up, "{ \"200\" = \"1s\" }", "16m");
    let t = format!("/e/{}", token());
    assert_eq!(status_of(&get(&p, &t, "")), "MISS");
    assert_eq!(status_of(&get(&p, &t, "")), "HIT");
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(status_of(&get(&p, &t, "")), "EXPIRED");
    assert_eq!(status_of(&get(&p, &t, "")), "HIT");
    assert_eq!(up.requests_with(&t).len(), 2);

    let p = cached_proxy(&up, "{ \"200\" = \"1h\" }", "16m");
    // max-age=1 shortens the configured hour; s-maxage wins over max-age.
    for shape in [
        "x-Cache-Control=max-age=1",
        "x-Cache-Control=max-age=3600,%20s-maxage=1",
    ] {
        let t = format!("/{shape}/{}", token());
        assert_eq!(status_of(&get(&p, &t, "")), "MISS");
        assert_eq!(status_of(&get(&p, &t, "")), "HIT");
        thread::sleep(Duration::from_millis(1100));
        assert_eq!(status_of(&get(&p, &t, "")), "EXPIRED", "{shape}");
    }
    // max-age longer than the configured validity lengthens it.
    let p = cached_proxy(&up, "{ \"200\" = \"1s\" }", "16m");
    let t = format!("/x-Cache-Control=max-age=60/{}", token());
    assert_eq!(status_of(&get(&p, &t, "")), "MISS");
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(status_of(&get(&p, &t, "")), "HIT");
}

#[test]
fn a_chunked_answer_is_stored_and_served_with_its_length() {
    let up = origin();
    let p = cached_proxy(&up, "{ \"200\" = \"1m\" }", "16m");
    let t = format!("/chunked/big-5000/{}", token());
    let first = get(&p, &t, "");
    assert_eq!(status_of(&first), "MISS");
    assert_eq!(first.framing, Framing::Chunked);
    assert_eq!(first.body, pattern(5000, 7));
    let hit = get(&p, &t, "");
    assert_eq!(status_of(&hit), "HIT");
    assert_eq!(hit.framing, Framing::Length);
    assert_eq!(hit.body, pattern(5000, 7));
}

#[test]
fn vary_is_honoured() {
    let up = origin();
    let p = cached_proxy(&up, "{ \"200\" = \"1m\" }", "16m");
    let t = format!("/x-Vary=Accept-Language/{}", token());
    let en = "Accept-Language: en\r\n";
    assert_eq!(status_of(&get(&p, &t, en)), "MISS");
    assert_eq!(status_of(&get(&p, &t, en)), "HIT");
    assert_eq!(status_of(&get(&p, &t, "Accept-Language: fr\r\n")), "MISS");
    assert_eq!(up.requests_with(&t).len(), 2);
}

#[test]
fn least_recently_used_entries_are_evicted_and_big_ones_not_stored() {
    let up = origin();
    // One worker, 64 KiB: entries up to 8 KiB; 3000-byte bodies, ~20 fit.
    let p = cached_proxy(&up, "{ \"200\" = \"1m\" }", "64k");
    let keys: Vec<String> = (0..30)
        .map(|i| format!("/big-3000/{i}-{}", token()))
        .collect();
    assert_eq!(status_of(&get(&p, &keys[0], "")), "MISS");
    for k in &keys[1..] {
        assert_eq!(status_of(&get(&p, k, "")), "MISS");
        // keys[0] is used all along: it stays.
        assert_eq!(status_of(&get(&p, &keys[0], "")), "HIT");
    }
    assert_eq!(status_of(&get(&p, &keys[29], "")), "HIT");
    assert_eq!(status_of(&get(&p, &keys[1], "")), "MISS", "LRU not evicted");
    let big = format!("/big-9000/{}", token());
    assert_eq!(status_of(&get(&p, &big, "")), "MISS");
    let r = get(&p, &big, "");
    assert_eq!(status_of(&r), "MISS", "over the per-entry cap");
    assert_eq!(r.body, pattern(9000, 7));
}

#[test]
fn concurrent_misses_send_one_upstream_request() {
    let up = origin();
    let p = cached_proxy(&up, "{ \"200\" = \"1m\" }", "16m");
    let t = format!("/slow/{}", token());
    const N: usize = 12;
    let barrier = Arc::new(Barrier::new(N));
    let addr = p.addr();
    let handles: Vec<_> = (0..N)
        .map(|_| {
            let (b, t) = (barrier.clone(), t.clone());
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                b.wait();
                c.send(format!("GET {t} HTTP/1.1\r\nHost: test.local\r\n\r\n").as_bytes());
                c.read_response()
            })
        })
        .collect();
    let answers: Vec<Response> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(up.requests_with(&t).len(), 1, "misses were not coalesced");
    let misses = answers.iter().filter(|r| status_of(r) == "MISS").count();
    let hits = answers.iter().filter(|r| status_of(r) == "HIT").count();
    assert_eq!((misses, hits), (1, N - 1));
    assert!(answers
        .iter()
        .all(|r| r.status == 200 && r.body == answers[0].body));
}

#[test]
fn waiters_go_upstream_themselves_when_the_answer_was_not_storable() {
    let up = origin();
    let p = cached_proxy(&up, "{ \"200\" = \"1m\" }", "16m");
    let t = format!("/slow/x-Set-Cookie=s=1/{}", token());
    const N: usize = 4;
    let barrier = Arc::new(Barrier::new(N));
    let addr = p.addr();
    let handles: Vec<_> = (0..N)
        .map(|_| {
            let (b, t) = (barrier.clone(), t.clone());
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                b.wait();
                c.send(format!("GET {t} HTTP/1.1\r\nHost: test.local\r\n\r\n").as_bytes());
                c.read_response()
            })
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!((r.status, status_of(&r)), (200, "MISS"));
        assert_eq!(r.header("set-cookie"), Some("s=1"));
    }
    assert_eq!(up.requests_with(&t).len(), N);
}

#[test]
fn cache_statuses_are_counted_in_metrics() {
    let up = origin();
    let rest = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n{}[[route]]\npath = \"/\"\nupstream = \"app\"\n\
         cache = {{ \"200\" = \"1m\" }}\n",
        upstream("app", up.addr(), "")
    );
    let p = Proxy::start(&config("", &rest));
    let t = format!("/metrics/{}", token());
    get(&p, &t, "");
    get(&p, &t, "");
    get(&p, &t, "");
    get(&p, &t, "Authorization: x\r\n");
    let admin = *p.addrs().last().unwrap();
    let mut c = Client::connect(admin);
    let r = c.get("/metrics");
    assert_eq!(r.status, 200);
    let text = r.body_str();
    for (status, n) in [("HIT", 2), ("MISS", 1), ("EXPIRED", 0), ("BYPASS", 1)] {
        let line = format!("ringside_cache_requests_total{{status=\"{status}\"}} {n}");
        assert!(text.contains(&line), "no {line:?} in\n{text}");
    }
}
