//! One pick of each balance method, at 4 and 64 servers, as the request path
//! makes it: the active-health table read for every candidate, passive
//! health consulted, keys varying between picks.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use ringside::{
    balance::{hash, Balancer, Key},
    config::parse_str,
    control::health::Table,
};

const METHODS: [&str; 5] = [
    "round_robin",
    "least_conn",
    "ip_hash",
    "uri_hash",
    "random_two",
];

fn config(method: &str, servers: usize) -> ringside::config::Config {
    let list: Vec<String> = (0..servers)
        .map(|i| {
            format!(
                "{{ address = \"10.0.{}.{}:8080\", weight = {} }}",
                i / 200,
                i % 200 + 1,
                1 + i % 3
            )
        })
        .collect();
    let text = format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n[[upstream]]\nname = \"app\"\n\
         balance = \"{method}\"\nservers = [ {} ]\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
        list.join(", ")
    );
    parse_str(&text).expect("bench config")
}

fn pick(c: &mut Criterion) {
    let keys: Vec<Key> = (0..1024u64)
        .map(|i| Key {
            hash: hash(format!("/api/v1/items/{i}?page=2").as_bytes()),
            sticky: None,
        })
        .collect();
    let mut group = c.benchmark_group("balance_pick");
    for method in METHODS {
        for servers in [4, 64] {
            let config = config(method, servers);
            let health = Table::new(&config);
            let bal = Balancer::new(&config.upstreams[0], 1);
            // Some requests in flight, unevenly, for least_conn and random_two.
            let _in_flight: Vec<_> = (0..servers)
                .flat_map(|s| (0..s % 4).map(move |_| s))
                .map(|s| bal.begin(s))
                .collect();
            let mut i = 0usize;
            group.bench_with_input(BenchmarkId::new(method, servers), &servers, |b, _| {
                b.iter(|| {
                    i = (i + 1) & 1023;
                    let all = health.all_up(0);
                    black_box(bal.pick(black_box(&keys[i]), all, |s| health.is_up(0, s)))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
