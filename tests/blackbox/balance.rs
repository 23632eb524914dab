//! Upstream selection with several real servers on 127.0.0.1: each balance
//! method's spread over hundreds of requests, backups, split routes,
//! match_header / match_cookie routes and sticky cookies.

use crate::common::farm::*;
use crate::common::*;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One upstream `app` of `servers` with `balance = method`, under `/`.
fn proxy_for(method: &str, servers: &[String], extra: &str) -> Proxy {
    let keys = format!("balance = \"{method}\"\n{extra}");
    Proxy::start(&config(
        "",
        &(pool("app", servers, &keys) + &route("/", "app")),
    ))
}

fn targets(prefix: &str, n: usize) -> impl Iterator<Item = String> + '_ {
    (0..n).map(move |i| format!("/{prefix}/{i}"))
}

fn assert_share(
    t: &std::collections::BTreeMap<String, usize>,
    name: &str,
    range: std::ops::RangeInclusive<usize>,
) {
    let got = t.get(name).copied().unwrap_or(0);
    assert!(
        range.contains(&got),
        "{name} got {got}, want {range:?}: {t:?}"
    );
}

#[test]
fn round_robin_follows_weights_in_nginx_order() {
    let b = Backend::many(3);
    let servers = [
        server(b[0].addr(), 3),
        server(b[1].addr(), 2),
        server(b[2].addr(), 1),
    ];
    let proxy = proxy_for("round_robin", &servers, "");
    let got = answers(&proxy, targets("rr", 600));
    assert_eq!(
        got[..6],
        ["s0", "s1", "s0", "s2", "s1", "s0"],
        "{:?}",
        &got[..12]
    );
    let t = tally(&got);
    assert_share(&t, "s0", 300..=300);
    assert_share(&t, "s1", 200..=200);
    assert_share(&t, "s2", 100..=100);
}

/// Sends `/hold/TOK` on its own connection and returns it with the index of
/// the backend holding it.
fn hold(proxy: &Proxy, b: &[Backend]) -> (Client, usize, String) {
    let t = format!("/hold/{}", token());
    let mut c = Client::connect(proxy.addr());
    c.send(format!("GET {t} HTTP/1.1\r\nHost: test.local\r\n\r\n").as_bytes());
    let mut at = None;
    within(Duration::from_secs(5), || {
        at = b.iter().position(|s| s.heads_with(&t) == 1);
        at.is_some()
    })
    .unwrap_or_else(|| panic!("{t} reached no backend"));
    (c, at.unwrap(), t)
}

#[test]
fn least_conn_sends_new_requests_away_from_busy_servers() {
    let b = Backend::many(2);
    let proxy = proxy_for("least_conn", &servers_of(&b), "");
    let (mut held, busy, _) = hold(&proxy, &b);
    let idle = &b[1 - busy].name;
    let got = answers(&proxy, targets("lc", 100));
    assert!(got.iter().all(|n| n == idle), "{:?}", tally(&got));
    b[busy].release();
    assert_eq!(held.read_response().status, 200);
    // Nothing in flight: ties go round robin, an even spread.
    let t = tally(&answers(&proxy, targets("lc-idle", 200)));
    assert_share(&t, "s0", 100..=100);
    assert_share(&t, "s1", 100..=100);
}

#[test]
fn least_conn_spreads_held_requests_one_per_server() {
    let b = Backend::many(3);
    let proxy = proxy_for("least_conn", &servers_of(&b), "");
    let held: Vec<_> = (0..6).map(|_| hold(&proxy, &b)).collect();
    let mut per = [0; 3];
    for (_, at, _) in &held {
        per[*at] += 1;
    }
    assert_eq!(per, [2, 2, 2]);
    for s in &b {
        s.release();
    }
    for (mut c, _, _) in held {
        assert_eq!(c.read_response().status, 200);
    }
}

#[test]
fn ip_hash_pins_each_client_address_and_spreads_addresses() {
    let b = Backend::many(4);
    let proxy = proxy_for("ip_hash", &servers_of(&b), "");
    let mut owners = Vec::new();
    for k in 1..=64u8 {
        let ip = IpAddr::from([127, 0, 1, k]);
        let mut seen = Vec::new();
        // Two connections from the same address, several requests each.
        for _ in 0..2 {
            let mut c = connect_from(ip, proxy.addr());
            for i in 0..3 {
                let r = c.get(&format!("/ip/{k}/{i}"));
                assert_eq!(r.status, 200);
                seen.push(who(&r));
            }
        }
        assert!(seen.iter().all(|s| *s == seen[0]), "{ip} went to {seen:?}");
        owners.push(seen[0].clone());
    }
    let t = tally(&owners);
    for s in &b {
        // 16 expected each.
        assert_share(&t, &s.name, 6..=28);
    }
}

#[test]
fn uri_hash_keeps_targets_on_their_server_and_moves_about_1_in_n_when_one_goes() {
    let b = Backend::many(4);
    let all: Vec<String> = targets("item", 400).map(|t| t + "?v=1").collect();
    let proxy = proxy_for("uri_hash", &servers_of(&b), "");
    let first = answers(&proxy, all.clone());
    assert_eq!(
        first,
        answers(&proxy, all.clone()),
        "a target changed server"
    );
    // From another client address too: the target decides, not the client.
    let mut other = connect_from([127, 0, 2, 9].into(), proxy.addr());
    for (t, owner) in all.iter().zip(&first).take(50) {
        assert_eq!(&who(&other.get(t)), owner, "{t}");
    }
    let t = tally(&first);
    for s in &b {
        assert_share(&t, &s.name, 50..=150);
    }

    // The same targets through a proxy without s3: only s3's targets move.
    let three = proxy_for("uri_hash", &servers_of(&b[..3]), "");
    let after = answers(&three, all.clone());
    let mut moved = 0;
    for ((t, before), now) in all.iter().zip(&first).zip(&after) {
        if before == "s3" {
            moved += 1;
        } else {
            assert_eq!(before, now, "{t} moved though its server stayed");
        }
    }
    assert!(
        (50..=150).contains(&moved),
        "{moved} of 400 moved: about 1/4 expected"
    );
}

#[test]
fn random_two_spreads_idle_load_and_avoids_a_busy_server() {
    let b = Backend::many(4);
    let proxy = proxy_for("random_two", &servers_of(&b), "");
    let t = tally(&answers(&proxy, targets("r2", 800)));
    for s in &b {
        // 200 expected each.
        assert_share(&t, &s.name, 130..=270);
    }

    let two = Backend::many(2);
    let proxy = proxy_for("random_two", &servers_of(&two), "");
    let (mut held, busy, _) = hold(&proxy, &two);
    let got = answers(&proxy, targets("r2-busy", 100));
    assert!(
        got.iter().all(|n| *n == two[1 - busy].name),
        "{:?}",
        tally(&got)
    );
    two[busy].release();
    assert_eq!(held.read_response().status, 200);
}

#[test]
fn backup_serves_only_while_no_primary_can_and_is_left_once_one_is_back() {
    let mut primary = Backend::start("primary");
    let spare = Backend::start("spare");
    let servers = [server(primary.addr(), 1), backup(spare.addr())];
    let fail_timeout = Duration::from_secs(1);
    let proxy = proxy_for("round_robin", &servers, "fail_timeout = \"1s\"");
    let got = answers(&proxy, targets("before", 100));
    assert!(got.iter().all(|n| n == "primary"), "{:?}", tally(&got));
    assert_eq!(
        spare.heads(),
        0,
        "a backup was used while the primary was up"
    );

    // The primary goes away: its connect fails, the GET goes to the backup,
    // and passive health keeps the primary out for fail_timeout.
    primary.stop();
    let mut c = Client::connect(proxy.addr());
    let down_at = Instant::now();
    assert_eq!(who(&c.get("/during/0")), "spare");
    primary.restart();
    let mut back_after = None;
    for i in 1.. {
        let r = c.get(&format!("/during/{i}"));
        assert_eq!(r.status, 200);
        if who(&r) == "primary" {
            back_after = Some(down_at.elapsed());
            break;
        }
        assert!(
            down_at.elapsed() < Duration::from_secs(5),
            "the primary never came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let back_after = back_after.unwrap();
    assert!(
        back_after >= fail_timeout - Duration::from_millis(100)
            && back_after < fail_timeout + Duration::from_millis(1500),
        "primary back after {back_after:?}, fail_timeout {fail_timeout:?}"
    );
    // Once back, the backup is left.
    let got = answers(&proxy, targets("after", 50));
    assert!(got.iter().all(|n| n == "primary"), "{:?}", tally(&got));
}

#[test]
fn split_sends_each_request_to_one_upstream_by_weight() {
    let stable = Backend::start("stable");
    let canary = Backend::start("canary");
    let rest = pool("stable", &[server(stable.addr(), 1)], "")
        + &pool("canary", &[server(canary.addr(), 1)], "")
        + "[[route]]\npath = \"/\"\nsplit = [ { upstream = \"stable\", weight = 95 }, \
           { upstream = \"canary\", weight = 5 } ]\n";
    let proxy = Proxy::start(&config("", &rest));
    let t = tally(&answers(&proxy, targets("split", 1000)));
    assert_share(&t, "stable", 930..=970);
    assert_share(&t, "canary", 30..=70);
}

#[test]
fn match_header_and_match_cookie_select_routes_and_ties_go_to_file_order() {
    let names = ["stable", "canary", "beta", "other", "api"];
    let b: Vec<Backend> = names.iter().map(|n| Backend::start(n)).collect();
    let mut rest: String = b
        .iter()
        .map(|s| pool(&s.name, &[server(s.addr(), 1)], ""))
        .collect();
    rest += "[[route]]\npath = \"/\"\nmatch_header = { \"X-Canary\" = \"1\" }\nupstream = \"canary\"\n\n\
             [[route]]\npath = \"/\"\nmatch_cookie = { \"beta\" = \"yes\" }\nupstream = \"beta\"\n\n\
             [[route]]\npath = \"/\"\nmatch_header = { \"X-Canary\" = \"1\" }\nupstream = \"other\"\n\n\
             [[route]]\npath = \"/\"\nupstream = \"stable\"\n\n\
             [[route]]\npath = \"/api/\"\nupstream = \"api\"\n\n";
    let proxy = Proxy::start(&config("", &rest));
    let mut c = Client::connect(proxy.addr());
    let mut ask = |target: &str, headers: &str| {
        c.send(format!("GET {target} HTTP/1.1\r\nHost: test.local\r\n{headers}\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 200, "{target} {headers:?}");
        who(&r)
    };
    assert_eq!(ask("/a", ""), "stable");
    assert_eq!(ask("/a", "X-Canary: 1\r\n"), "canary");
    assert_eq!(
        ask("/a", "x-canary: 1\r\n"),
        "canary",
        "header names are case-insensitive"
    );
    assert_eq!(ask("/a", "X-Canary: 2\r\n"), "stable");
    assert_eq!(ask("/a", "Cookie: a=1; beta=yes\r\n"), "beta");
    assert_eq!(ask("/a", "Cookie: beta=no\r\n"), "stable");
    assert_eq!(ask("/a", "Cookie: notbeta=yes\r\n"), "stable");
    // Both conditions hold: the first route in file order.
    assert_eq!(ask("/a", "Cookie: beta=yes\r\nX-Canary: 1\r\n"), "canary");
    // A longer path prefix wins over conditions on a shorter one.
    assert_eq!(ask("/api/x", "X-Canary: 1\r\n"), "api");
    assert_eq!(b[3].heads(), 0, "the tied later route was used");
}

/// The value of the `name` cookie set by `r`, with its attributes checked.
fn set_cookie(r: &Response, name: &str) -> Option<String> {
    let v = r.header("set-cookie")?;
    let rest = v.strip_prefix(&format!("{name}="))?;
    let (value, attrs) = rest.split_once(';').unwrap_or((rest, ""));
    assert!(attrs.contains("Path=/"), "{v}");
    assert!(!value.is_empty() && value.len() <= 32, "{v}");
    Some(value.to_string())
}

#[test]
fn sticky_cookie_pins_a_client_and_moves_when_its_server_goes() {
    let mut b = Backend::many(3);
    let proxy = proxy_for(
        "round_robin",
        &servers_of(&b),
        "sticky = { cookie = \"srv\" }",
    );
    let mut c = Client::connect(proxy.addr());
    let r = c.get("/first");
    let pinned = who(&r);
    let cookie = set_cookie(&r, "srv").expect("no sticky cookie set");

    let ask = |c: &mut Client, target: &str, cookie: &str| {
        c.send(
            format!("GET {target} HTTP/1.1\r\nHost: t\r\nCookie: a=1; srv={cookie}\r\n\r\n")
                .as_bytes(),
        );
        c.read_response()
    };
    for i in 0..60 {
        let r = ask(&mut c, &format!("/pinned/{i}"), &cookie);
        assert_eq!(who(&r), pinned);
        assert_eq!(
            r.header("set-cookie"),
            None,
            "the cookie already names its server"
        );
    }
    // Without the cookie: round robin as usual, each answer setting a cookie.
    let mut fresh = Vec::new();
    for i in 0..30 {
        let r = c.get(&format!("/fresh/{i}"));
        assert!(set_cookie(&r, "srv").is_some());
        fresh.push(who(&r));
    }
    let t = tally(&fresh);
    assert!(b.iter().all(|s| t.get(&s.name) == Some(&10)), "{t:?}");
    // An unknown value is replaced.
    let r = ask(&mut c, "/garbage", "not-a-server-id");
    assert!(set_cookie(&r, "srv").is_some());

    // Its server goes: another serves, and the cookie moves there.
    let at = b.iter().position(|s| s.name == pinned).unwrap();
    b[at].stop();
    let r = ask(&mut c, "/moved", &cookie);
    assert_eq!(r.status, 200);
    let now = who(&r);
    assert_ne!(now, pinned);
    let moved = set_cookie(&r, "srv").expect("the cookie did not move");
    assert_ne!(moved, cookie);
    for i in 0..30 {
        let r = ask(&mut c, &format!("/moved/{i}"), &moved);
        assert_eq!(who(&r), now);
    }
}
