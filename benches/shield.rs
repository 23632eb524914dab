//! The edge shield's cost per request: one `[[limit]]` check (key hash,
//! shard lock, GCRA update) alone and with two threads on one table, as
//! two workers share it; and the three `[[rule]]`s of the contract's
//! example on a typical request that none of them matches.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use httparse::Header;
use ringside::shield::{
    limit::{Key, Limit},
    rules::{RuleSpec, Rules},
};

fn limit() -> Limit {
    // Generous enough that every check is allowed: the common case.
    Limit::new(
        "api",
        Key::Ip,
        429,
        1_000_000,
        Duration::from_secs(1),
        1_000_000,
    )
}

fn peers() -> Vec<IpAddr> {
    (0..1024u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect()
}

fn rate(c: &mut Criterion) {
    let l = limit();
    let peers = peers();
    let mut i = 0;
    c.bench_function("limit check, one thread", |b| {
        b.iter(|| {
            i = (i + 1) % peers.len();
            black_box(l.check(peers[i], |_| None))
        })
    });
    // Two threads on one table (two workers): time per check on each.
    c.bench_function("limit check, two threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..2 {
                    let (l, peers) = (&l, &peers);
                    s.spawn(move || {
                        for n in 0..iters as usize {
                            black_box(l.check(peers[(n * 2 + t) % peers.len()], |_| None));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
}

fn rules(c: &mut Criterion) {
    let spec =
        |name: &str, path: Option<&str>, query: Option<&str>, header: Option<&str>| RuleSpec {
            name: name.into(),
            status: 403,
            path: path.map(Into::into),
            query: query.map(Into::into),
            headers: header
                .map(|p| vec![("user-agent".to_string(), p.to_string())])
                .unwrap_or_default(),
        };
    let rules = Rules::compile(&[
        spec("dotfiles", Some(r"(?i)/\.(git|env)(/|$)"), None, None),
        spec("sqli", None, Some(r"(?i)union\s+select"), None),
        spec("scanners", None, None, Some("(?i)sqlmap|nikto")),
    ])
    .expect("bench rules");
    let headers = [
        Header {
            name: "Host",
            value: b"api.example.com",
        },
        Header {
            name: "User-Agent",
            value: b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        },
        Header {
            name: "Accept",
            value: b"application/json",
        },
    ];
    c.bench_function("three rules, no match", |b| {
        b.iter(|| {
            black_box(rules.check(
                black_box(b"/api/v1/users/42/orders"),
                black_box(b"page=2&sort=date"),
                &headers,
            ))
        })
    });
}

criterion_group!(benches, rate, rules);
criterion_main!(benches);
