//! Request-head parsing: httparse plus ringside's framing rules.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringside::http::parse::{request, Scan, MAX_HEADERS};

const HEAD: &[u8] = b"GET /api/v1/items?id=42 HTTP/1.1\r\nHost: example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0\r\n\
Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\nCookie: a=1; b=2\r\n\r\n";

fn parse(c: &mut Criterion) {
    c.bench_function("parse_request_head", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut scan = Scan::default();
            let r = request(black_box(HEAD), &mut headers, &mut scan, 16384).unwrap();
            black_box(r.map(|h| h.len))
        })
    });
}

criterion_group!(benches, parse);
criterion_main!(benches);
