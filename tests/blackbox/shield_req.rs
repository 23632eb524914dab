//! The edge shield on requests, against the real binary: `[[limit]]` (exact
//! over two workers, keyed on the address or a header, 100,000 keys in
//! bounded memory), `[[rule]]` on each part and normalisation shape, route
//! `allow`/`deny` and `methods`, the counters and access-log lines, the
//! upstream's `Server` replaced and `hide_response_headers`, and `--check`
//! on bad shield settings. Clients come from distinct 127.x.y.z addresses.

use crate::common::farm::{connect_from, within};
use crate::common::*;
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A config with `workers`, an access log at `log` (or off), an admin
/// listener, the echo upstream `app`, and `rest` (limits, rules, routes).
fn shield_config(workers: usize, log: &str, up: SocketAddr, rest: &str) -> String {
    format!(
        "[runtime]\nworkers = {workers}\nshutdown_timeout = \"5s\"\n\n\
         [log]\naccess = \"{log}\"\nlevel = \"warn\"\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\n\
         [[upstream]]\nname = \"app\"\nservers = [ {{ address = \"{up}\" }} ]\n\n{rest}"
    )
}

/// One request on a fresh connection from `from` (so the kernel may hand
/// it to any worker); the response.
fn once(p: &Proxy, from: &str, raw: &str) -> Response {
    let mut c = connect_from(ip(from), p.addr());
    c.send(raw.as_bytes());
    c.read_response()
}

fn get(target: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: shield.test\r\n{extra}Connection: close\r\n\r\n")
}

#[test]
fn a_limit_is_exact_over_two_workers_and_per_address() {
    let up = Upstream::echo();
    let rest = "[[limit]]\nname = \"slow\"\nrate = \"1r/m\"\nburst = 5\n\n\
                [[route]]\npath = \"/\"\nupstream = \"app\"\nlimit = \"slow\"\n";
    let p = Proxy::start(&shield_config(2, "off", up.addr(), rest));
    // Fresh connections: SO_REUSEPORT spreads them over both workers, and
    // still the bucket of 5 holds for the address as a whole.
    for i in 0..5 {
        let r = once(&p, "127.0.2.1", &get(&format!("/ok{i}"), ""));
        assert_eq!(r.status, 200, "request {i}");
    }
    for i in 5..12 {
        let r = once(&p, "127.0.2.1", &get(&format!("/over{i}"), ""));
        assert_eq!(r.status, 429, "request {i}: {}", r.status_line);
        let secs: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=60).contains(&secs), "Retry-After {secs}");
    }
    // Another address has its own bucket.
    assert_eq!(once(&p, "127.0.2.2", &get("/other", "")).status, 200);
    // A refused request never reached the upstream.
    assert_eq!(up.requests_with("/over").len(), 0);
    assert_eq!(up.seen().requests.len(), 6);
}

#[test]
fn a_limit_keyed_on_a_header_falls_back_to_the_address() {
    let up = Upstream::echo();
    let rest = "[[limit]]\nname = \"api\"\nrate = \"1r/m\"\nburst = 2\nkey = \"header:X-Api-Key\"\nstatus = 503\n\n\
                [[route]]\npath = \"/\"\nupstream = \"app\"\nlimit = [\"api\"]\n";
    let p = Proxy::start(&shield_config(2, "off", up.addr(), rest));
    let key = |k: &str| format!("X-Api-Key: {k}\r\n");
    for _ in 0..2 {
        assert_eq!(once(&p, "127.0.3.1", &get("/", &key("alpha"))).status, 200);
    }
    // The same key from another address shares the bucket.
    let r = once(&p, "127.0.3.2", &get("/", &key("alpha")));
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    // Another key, and no key at all (then the address), are not limited.
    assert_eq!(once(&p, "127.0.3.1", &get("/", &key("beta"))).status, 200);
    assert_eq!(once(&p, "127.0.3.1", &get("/", "")).status, 200);
    assert_eq!(once(&p, "127.0.3.1", &get("/", "")).status, 200);
    assert_eq!(once(&p, "127.0.3.1", &get("/", "")).status, 503);
}

const RULES: &str = "[[rule]]\nname = \"dotfiles\"\npath = '(?i)/\\.(git|env)(/|$)'\n\n\
     [[rule]]\nname = \"sqli\"\nquery = '(?i)union\\s+select'\n\n\
     [[rule]]\nname = \"scanners\"\nheader = { \"User-Agent\" = '(?i)sqlmap|nikto' }\n\n\
     [[rule]]\nname = \"debug-api\"\npath = '^/api/'\nheader = { \"X-Debug\" = '^1$' }\nstatus = 451\n\n";

#[test]
fn rules_match_each_part_and_every_normalisation_shape() {
    let up = Upstream::echo();
    let rest = format!("{RULES}[[route]]\npath = \"/\"\nupstream = \"app\"\n");
    let p = Proxy::start(&shield_config(1, "off", up.addr(), &rest));
    let mut c = connect_from(ip("127.0.4.1"), p.addr());
    let cases: [(&str, &str, u16); 16] = [
        ("/.git/config", "", 403),
        ("/x/../.git/config", "", 403),
        ("/%2egit/HEAD", "", 403),
        ("/%2Egit", "", 403),
        ("//.git", "", 403),
        ("/a/./.ENV", "", 403),
        ("/.gitignore", "", 200),
        ("/%252egit/", "", 200),
        ("/s?q=union%20select+1", "", 403),
        ("/s?q=UNION+SELECT", "", 403),
        ("/s?q=unionselect", "", 200),
        ("/s?q=union%2Bselect", "", 200),
        ("/u", "User-Agent: Mozilla sqlmap/1.7\r\n", 403),
        ("/u", "User-Agent: curl/8\r\n", 200),
        ("/api/v1", "X-Debug: 1\r\n", 451),
        ("/api/v1", "X-Debug: 0\r\n", 200),
    ];
    for (target, extra, want) in cases {
        // Keep-alive: a refused request read whole leaves the connection open.
        c.send(format!("GET {target} HTTP/1.1\r\nHost: shield.test\r\n{extra}\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, want, "{target} {extra:?}: {}", r.status_line);
    }
    // A rule's parts must all match: the path alone, or the header alone,
    // is not enough for "debug-api".
    assert_eq!(
        once(&p, "127.0.4.2", &get("/other", "X-Debug: 1\r\n")).status,
        200
    );
    // Nothing refused reached the upstream.
    let seen: Vec<String> = up
        .seen()
        .requests
        .iter()
        .map(|r| r.target.clone())
        .collect();
    let mut served: Vec<&str> = (cases.iter()).filter(|c| c.2 == 200).map(|c| c.0).collect();
    served.push("/other");
    assert_eq!(seen, served);
}

#[test]
fn route_allow_deny_and_methods() {
    let up = Upstream::echo();
    let rest = "[[route]]\npath = \"/private/\"\nupstream = \"app\"\n\
                allow = [\"127.0.5.0/24\"]\ndeny = [\"127.0.5.9\"]\n\n\
                [[route]]\npath = \"/ro/\"\nupstream = \"app\"\nmethods = [\"GET\", \"HEAD\"]\n\n\
                [[route]]\npath = \"/\"\nupstream = \"app\"\n";
    let p = Proxy::start(&shield_config(1, "off", up.addr(), rest));
    assert_eq!(once(&p, "127.0.5.1", &get("/private/a", "")).status, 200);
    assert_eq!(once(&p, "127.0.5.9", &get("/private/b", "")).status, 403);
    assert_eq!(once(&p, "127.0.6.1", &get("/private/c", "")).status, 403);
    assert_eq!(once(&p, "127.0.6.1", &get("/public", "")).status, 200);

    let mut c = connect_from(ip("127.0.6.2"), p.addr());
    c.send(b"POST /ro/x HTTP/1.1\r\nHost: shield.test\r\nContent-Length: 3\r\n\r\nabc");
    let r = c.read_response();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // The request was read whole: the connection goes on.
    assert_eq!(c.get("/ro/y").status, 200);
    let targets: Vec<String> = up
        .seen()
        .requests
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(targets, ["/private/a", "/public", "/ro/y"]);
}

#[test]
fn refusals_are_counted_and_logged_with_their_status() {
    let up = Upstream::echo();
    let dir = TestDir::new();
    let log = dir.path().join("access.log");
    let rest = format!(
        "{RULES}[[limit]]\nname = \"one\"\nrate = \"1r/m\"\nburst = 1\n\n\
         [[route]]\npath = \"/r/\"\nupstream = \"app\"\nlimit = \"one\"\n\
         methods = [\"GET\"]\ndeny = [\"127.0.7.9\"]\n"
    );
    let p = Proxy::start_in(
        dir,
        &shield_config(2, &log.display().to_string(), up.addr(), &rest),
    );
    assert_eq!(once(&p, "127.0.7.1", &get("/r/.git/x", "")).status, 403);
    assert_eq!(once(&p, "127.0.7.9", &get("/r/a", "")).status, 403);
    assert_eq!(
        once(&p, "127.0.7.2", "DELETE /r/a HTTP/1.1\r\nHost: s\r\n\r\n").status,
        405
    );
    assert_eq!(once(&p, "127.0.7.3", &get("/r/ok", "")).status, 200);
    // GET brings HEAD with it (as nginx's limit_except); the 405 says so.
    let r = once(&p, "127.0.7.5", "PUT /r/b HTTP/1.1\r\nHost: s\r\n\r\n");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    assert_eq!(once(&p, "127.0.7.3", &get("/r/again", "")).status, 429);
    assert_eq!(once(&p, "127.0.7.4", &get("/none/.env", "")).status, 403);

    let want = [
        "ringside_limited_total{route=\"/r/\",reason=\"rule\"} 1",
        "ringside_limited_total{route=\"/r/\",reason=\"deny\"} 1",
        "ringside_limited_total{route=\"/r/\",reason=\"method\"} 2",
        "ringside_limited_total{route=\"/r/\",reason=\"rate\"} 1",
        "ringside_limited_total{route=\"\",reason=\"rule\"} 1",
    ];
    let text = p.metrics();
    for line in want {
        assert!(text.contains(line), "no {line} in\n{text}");
    }
    let lines = [
        "127.0.7.1 - - ",
        "\"GET /r/.git/x HTTP/1.1\" 403 ",
        "\"GET /r/a HTTP/1.1\" 403 ",
        "\"DELETE /r/a HTTP/1.1\" 405 ",
        "\"GET /r/again HTTP/1.1\" 429 ",
        "\"GET /none/.env HTTP/1.1\" 403 ",
    ];
    let logged = within(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        lines.iter().all(|l| text.contains(l))
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.is_some(), "access log:\n{text}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends `n` keyed requests pipelined in batches on one connection; returns
/// how many were answered 200.
fn keyed(c: &mut Client, keys: std::ops::Range<u32>) -> usize {
    let mut ok = 0;
    let keys: Vec<u32> = keys.collect();
    for batch in keys.chunks(500) {
        let mut out = Vec::new();
        for k in batch {
            let req = format!("GET /k HTTP/1.1\r\nHost: s\r\nX-Api-Key: key-{k:08}\r\n\r\n");
            out.extend_from_slice(req.as_bytes());
        }
        c.send(&out);
        for _ in batch {
            ok += usize::from(c.read_response().status == 200);
        }
    }
    ok
}

#[test]
fn a_hundred_thousand_keys_cost_bounded_memory() {
    let up = Upstream::echo();
    let rest =
        "[[limit]]\nname = \"k\"\nrate = \"1r/m\"\nburst = 1\nkey = \"header:X-Api-Key\"\n\n\
                [[route]]\npath = \"/\"\nrespond = { status = 200, body = \"k\" }\nlimit = \"k\"\n";
    let p = Proxy::start(&shield_config(1, "off", up.addr(), rest));
    let mut c = connect_from(ip("127.0.8.1"), p.addr());
    assert_eq!(keyed(&mut c, 0..2_000), 2_000);
    let before = rss_kib(p.pid());
    assert_eq!(keyed(&mut c, 2_000..100_000), 98_000);
    let after = rss_kib(p.pid());
    // 100,000 buckets take about 3 MiB; 48 MiB is far above that and far
    // below what keeping each key's text would grow to under a flood.
    assert!(
        after < before + 48 * 1024,
        "VmRSS {before} KiB → {after} KiB"
    );
    // Every key is still remembered (its bucket is not full again yet).
    assert_eq!(keyed(&mut c, 99_990..100_000), 0);
    // Another client is served.
    assert_eq!(once(&p, "127.0.8.2", &get("/fresh", "")).status, 200);
}

#[test]
fn the_upstream_server_is_replaced_and_hidden_headers_are_gone() {
    let up = Upstream::start(|c| {
        while let Some(req) = c.read_request() {
            let body = req.target.clone();
            let res = format!(
                "HTTP/1.1 200 OK\r\nServer: Apache/2.4.1 (Unix)\r\nX-Powered-By: PHP/5\r\n\
                 X-Kept: yes\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if !c.write(res.as_bytes()) {
                return;
            }
        }
    });
    let rest = "[[route]]\npath = \"/cached/\"\nupstream = \"app\"\ncache = { \"200\" = \"1m\" }\n\
                hide_response_headers = [\"X-Powered-By\"]\n\n\
                [[route]]\npath = \"/hide/\"\nupstream = \"app\"\nhide_response_headers = [\"x-powered-by\"]\n\n\
                [[route]]\npath = \"/\"\nupstream = \"app\"\n";
    let p = Proxy::start(&shield_config(1, "off", up.addr(), rest));
    let mut c = connect_from(ip("127.0.9.1"), p.addr());
    let check = |r: &Response, hidden: bool, what: &str| {
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(r.header_all("server"), ["ringside"], "{what}");
        assert_eq!(r.header("x-powered-by").is_none(), hidden, "{what}");
        assert_eq!(r.header("x-kept"), Some("yes"), "{what}");
    };
    check(&c.get("/plain"), false, "plain route");
    check(&c.get("/hide/a"), true, "hiding route");
    let miss = c.get("/cached/a");
    check(&miss, true, "cache miss");
    assert_eq!(miss.header("x-cache-status"), Some("MISS"));
    let hit = c.get("/cached/a");
    check(&hit, true, "cache hit");
    assert_eq!(hit.header("x-cache-status"), Some("HIT"));
}

fn check_config(toml: &str) -> (Option<i32>, String) {
    let dir = TestDir::new();
    let path = dir.write("ringside.toml", toml);
    let out = run_bounded(
        &["-c".as_ref(), path.as_os_str(), "--check".as_ref()],
        Duration::from_secs(10),
    );
    let file = path.display().to_string();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).replace(&file, "FILE"),
    )
}

#[test]
fn check_names_bad_shield_settings_with_line_and_key() {
    let toml = "[[listen]]\naddress = \"127.0.0.1:0\"\n\n\
        [[upstream]]\nname = \"app\"\nservers = [ { address = \"127.0.0.1:9\" } ]\n\n\
        [[limit]]\nname = \"a\"\nrate = \"10 per second\"\nburst = 0\nkey = \"cookie:x\"\n\n\
        [[rule]]\nname = \"huge\"\npath = '\\w{1000}{1000}'\n\n\
        [[rule]]\nname = \"broken\"\nheader = { \"User-Agent\" = '(sqlmap' }\n\n\
        [[rule]]\nname = \"empty\"\nstatus = 403\n\n\
        [[route]]\npath = \"/\"\nupstream = \"app\"\nlimit = [\"a\", \"nope\"]\n\
        allow = [\"10.0.0.0/33\"]\nmethods = []\n";
    let (code, stderr) = check_config(toml);
    assert_eq!(code, Some(1), "{stderr}");
    for want in [
        "FILE:10: limit.rate: \"10 per second\" is not a rate",
        "FILE:11: limit.burst: must be",
        "FILE:12: limit.key: \"cookie:x\" is not",
        "FILE:16: rule.path: bad regular expression: the pattern compiles to more than",
        "FILE:20: rule.header: bad regular expression",
        "FILE:22: rule: needs at least one of path, query, header",
        "FILE:29: route.limit: unknown limit \"nope\"",
        "FILE:30: route.allow: ",
        "FILE:31: route.methods: needs at least one method",
    ] {
        assert!(stderr.contains(want), "no {want:?} in\n{stderr}");
    }
    // The same file without the bad parts is fine.
    let good = "[[listen]]\naddress = \"127.0.0.1:0\"\n\n\
        [[upstream]]\nname = \"app\"\nservers = [ { address = \"127.0.0.1:9\" } ]\n\n\
        [[limit]]\nname = \"a\"\nrate = \"600r/m\"\nburst = 20\nkey = \"header:X-Api-Key\"\n\n\
        [[rule]]\nname = \"dot\"\npath = '(?i)/\\.(git|env)(/|$)'\n\n\
        [[route]]\npath = \"/\"\nupstream = \"app\"\nlimit = \"a\"\nallow = [\"10.0.0.0/8\"]\n";
    let (code, stderr) = check_config(good);
    assert_eq!(code, Some(0), "{stderr}");
}
