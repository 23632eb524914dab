use super::*;
use crate::config::{parse_str, Upstream};

/// An upstream `method` with one server per weight; a negative weight is a backup.
fn upstream(method: &str, weights: &[i32], extra: &str) -> Upstream {
    let servers: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            format!(
                "{{ address = \"127.0.0.1:{}\", weight = {}, backup = {} }}",
                3000 + i,
                w.unsigned_abs(),
                w < 0
            )
        })
        .collect();
    let text = format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n[[upstream]]\nname = \"app\"\n\
         balance = \"{method}\"\n{extra}\nservers = [ {} ]\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n",
        servers.join(", ")
    );
    parse_str(&text).unwrap().upstreams.remove(0)
}

const METHODS: [&str; 5] = [
    "round_robin",
    "least_conn",
    "ip_hash",
    "uri_hash",
    "random_two",
];

fn key(n: u64) -> Key {
    Key {
        hash: hash(&n.to_le_bytes()),
        sticky: None,
    }
}

#[test]
fn every_method_uses_backups_only_when_no_primary_is_usable() {
    for m in METHODS {
        let b = Balancer::new(&upstream(m, &[1, 1, -1, -1], ""), 1);
        for n in 0..50 {
            let s = b.pick(&key(n), true, |_| true).unwrap();
            assert!(s < 2, "{m}: backup {s} picked with primaries up");
            let s = b.pick(&key(n), false, |i| i != 0).unwrap();
            assert_eq!(s, 1, "{m}");
            let s = b.pick(&key(n), false, |i| i >= 2).unwrap();
            assert!(s >= 2, "{m}");
            assert_eq!(b.pick(&key(n), false, |i| i == 3), Some(3), "{m}");
            assert_eq!(b.pick(&key(n), false, |_| false), None, "{m}");
        }
    }
}

#[test]
fn every_method_reaches_every_server() {
    for m in METHODS {
        let b = Balancer::new(&upstream(m, &[1, 1, 1, 1], ""), 7);
        let mut seen = [0u32; 4];
        for n in 0..400 {
            seen[b.pick(&key(n), true, |_| true).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&c| c >= 50), "{m}: {seen:?}");
    }
}

#[test]
fn hash_methods_map_a_key_to_one_server() {
    for m in ["ip_hash", "uri_hash"] {
        let b = Balancer::new(&upstream(m, &[1, 1, 1], ""), 1);
        for n in 0..50 {
            let first = b.pick(&key(n), true, |_| true);
            assert!(
                (0..5).all(|_| b.pick(&key(n), true, |_| true) == first),
                "{m}"
            );
        }
    }
}

#[test]
fn least_conn_follows_requests_in_flight() {
    let b = Balancer::new(&upstream("least_conn", &[1, 1, 1], ""), 1);
    let _a = b.begin(0);
    let _b = b.begin(1);
    assert_eq!(b.pick(&Key::default(), true, |_| true), Some(2));
    let c = b.begin(2);
    let _d = b.begin(2);
    assert_eq!(b.active(2), 2);
    assert_ne!(b.pick(&Key::default(), true, |_| true), Some(2));
    drop(c);
    assert_eq!(b.active(2), 1);
}

#[test]
fn passive_failures_skip_a_server() {
    let b = Balancer::new(
        &upstream(
            "round_robin",
            &[1, 1],
            "max_fails = 2\nfail_timeout = \"10s\"",
        ),
        1,
    );
    let now = std::time::Instant::now();
    assert!(!b.passive.failed(0, now));
    assert!(b.passive.failed(0, now));
    assert!((0..10).all(|_| b.pick(&Key::default(), true, |_| true) == Some(1)));
}

#[test]
fn sticky_pins_and_moves() {
    let up = upstream(
        "round_robin",
        &[1, 1, 1, -1],
        "sticky = { cookie = \"srv\" }",
    );
    let b = Balancer::new(&up, 1);
    let first = b.pick(&Key::default(), true, |_| true).unwrap();
    let cookie = b.set_cookie(first, &Key::default()).unwrap();
    let (name, rest) = cookie.split_once('=').unwrap();
    assert_eq!(name, "srv");
    let value = rest.split(';').next().unwrap();
    assert!(rest.ends_with("; Path=/; HttpOnly"), "{cookie}");
    let pinned = Key::new(&up, [127, 0, 0, 1].into(), b"/", |n| {
        (n == "srv").then_some(value.as_bytes())
    });
    for _ in 0..10 {
        assert_eq!(b.pick(&pinned, true, |_| true), Some(first));
    }
    assert_eq!(b.set_cookie(first, &pinned), None);
    // Its server is out: another serves, and the cookie moves.
    let other = b.pick(&pinned, false, |i| i != first).unwrap();
    assert_ne!(other, first);
    assert!(b.set_cookie(other, &pinned).is_some());
    // A cookie naming a backup does not hold while a primary is usable.
    let backup = Key {
        sticky: parse_id(format!("{:016x}", hash::server(up.servers[3].address)).as_bytes()),
        hash: 0,
    };
    assert_ne!(b.pick(&backup, true, |_| true), Some(3));
    assert_eq!(b.pick(&backup, false, |i| i == 3), Some(3));
}

#[test]
fn keys_read_only_what_the_method_needs() {
    let peer: IpAddr = [10, 1, 2, 3].into();
    let none = |_: &str| None;
    let rr = upstream("round_robin", &[1], "");
    assert_eq!(Key::new(&rr, peer, b"/a", none), Key::default());
    let ip = upstream("ip_hash", &[1], "");
    assert_eq!(
        Key::new(&ip, peer, b"/a", none),
        Key::new(&ip, peer, b"/b", none)
    );
    assert_ne!(
        Key::new(&ip, peer, b"/a", none),
        Key::new(&ip, [10, 1, 2, 4].into(), b"/a", none)
    );
    let uri = upstream("uri_hash", &[1], "");
    assert_ne!(
        Key::new(&uri, peer, b"/a", none),
        Key::new(&uri, peer, b"/b", none)
    );
    assert_eq!(parse_id(b"00000000000000ff"), Some(255));
    assert_eq!(parse_id(b"ff"), None);
    assert_eq!(parse_id(b"zz000000000000ff"), None);
}

#[test]
fn the_all_usable_shortcut_picks_as_the_full_test_does() {
    for m in METHODS {
        let up = upstream(m, &[3, 1, 2, -1], "");
        let (fast, full) = (Balancer::new(&up, 5), Balancer::new(&up, 5));
        for n in 0..200 {
            let a = fast.pick(&key(n), true, |_| true);
            let b = full.pick(&key(n), false, |_| true);
            assert_eq!(a, b, "{m} pick {n}");
        }
    }
}
