//! The cache shard's lookup (hit and miss) and insert (with LRU eviction
//! once full), at 10,000 entries: what a cached request costs before any
//! byte moves.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringside::cache::{Cache, Entry, Lookup};

const ENTRIES: usize = 10_000;

fn entry(body: &Bytes) -> Entry {
    Entry {
        status: 200,
        head: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"[..].into(),
        body: body.clone(),
        expires: Instant::now() + Duration::from_secs(3600),
        vary: Box::new([]),
        media: "application/json".into(),
        etag: None,
        as_is: false,
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("api.example.com /v1/items/{i}?fields=id,name").into_bytes()
}

fn full_cache(body: &Bytes) -> Cache {
    // Room for exactly ENTRIES entries of this size (no eviction yet).
    let one = key(0).len() + 52 + body.len() + 160;
    let mut c = Cache::new(one * ENTRIES + one / 2);
    for i in 0..ENTRIES {
        c.insert(&key(i), entry(body));
    }
    c
}

fn cache(c: &mut Criterion) {
    let body = Bytes::from(vec![b'x'; 1024]);
    let keys: Vec<Vec<u8>> = (0..ENTRIES).map(key).collect();
    let mut shard = full_cache(&body);
    let mut i = 0;
    c.bench_function("cache_lookup_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % ENTRIES;
            let found = shard.lookup(black_box(&keys[i]), Instant::now());
            black_box(matches!(found, Lookup::Hit(_)))
        })
    });
    let missing = key(ENTRIES * 10);
    c.bench_function("cache_lookup_miss", |b| {
        b.iter(|| {
            let found = shard.lookup(black_box(&missing), Instant::now());
            black_box(matches!(found, Lookup::Miss))
        })
    });
    // Every insert past the capacity evicts the least recently used entry.
    let mut n = ENTRIES;
    let fresh: Vec<Vec<u8>> = (ENTRIES..ENTRIES * 3).map(key).collect();
    c.bench_function("cache_insert_evicting", |b| {
        b.iter(|| {
            n += 1;
            let k = &fresh[n % fresh.len()];
            black_box(shard.insert(black_box(k), entry(&body)))
        })
    });
}

criterion_group!(benches, cache);
criterion_main!(benches);
