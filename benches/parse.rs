//! The hot pure functions of the request path: request-head parsing
//! (httparse plus ringside's framing rules), the upstream head rewrite,
//! route lookup and chunked decoding.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringside::{
    config,
    http::{
        body::Chunked,
        headers::{upstream_request, Forwarding},
        parse::{request, Framing, Scan, MAX_HEADERS, NO_FIELD},
    },
    route,
};

const HEAD: &[u8] = b"GET /api/v1/items?id=42 HTTP/1.1\r\nHost: example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0\r\n\
Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\nCookie: a=1; b=2\r\n\
X-Forwarded-For: 203.0.113.7\r\n\r\n";

/// 20 routes over a few hosts, like a small edge config.
fn routes() -> Vec<config::Route> {
    let mut text = String::from(
        "[[listen]]\naddress = \"127.0.0.1:8080\"\n\n\
         [[upstream]]\nname = \"app\"\nservers = [ { address = \"127.0.0.1:3000\" } ]\n\n",
    );
    for host in ["", "example.com", "*.example.org", "api.example.net"] {
        for path in ["/", "/api/", "/api/v1/", "/static/", "/admin/"] {
            let h = if host.is_empty() {
                String::new()
            } else {
                format!("host = \"{host}\"\n")
            };
            text += &format!("[[route]]\n{h}path = \"{path}\"\nupstream = \"app\"\n\n");
        }
    }
    config::parse_str(&text).expect("bench config").routes
}

fn benches(c: &mut Criterion) {
    c.bench_function("parse_request_head", |b| {
        b.iter(|| {
            let mut headers = [NO_FIELD; MAX_HEADERS];
            let mut scan = Scan::default();
            let r = request(black_box(HEAD), &mut headers, &mut scan, 16384).unwrap();
            black_box(r.map(|h| h.len))
        })
    });

    let mut headers = [NO_FIELD; MAX_HEADERS];
    let mut scan = Scan::default();
    let req = request(HEAD, &mut headers, &mut scan, 16384)
        .unwrap()
        .unwrap();
    let fwd = Forwarding {
        client_ip: [198, 51, 100, 9].into(),
        hop: [198, 51, 100, 9].into(),
        proto: "http",
        port: 8080,
        fallback_host: "app",
        set: &[],
        upgrade: None,
    };
    let mut out = Vec::with_capacity(1024);
    c.bench_function("rewrite_upstream_head", |b| {
        b.iter(|| {
            out.clear();
            upstream_request(
                &mut out,
                black_box(&req),
                req.origin.as_bytes(),
                &fwd,
                Framing::Empty,
            );
            black_box(out.len())
        })
    });

    let table = routes();
    c.bench_function("route_lookup_20_routes", |b| {
        b.iter(|| {
            let path = ringside::http::path::normalize(req.path());
            black_box(route::select(black_box(&table), &req, &path, Some(0)))
        })
    });

    let mut body = Vec::new();
    for _ in 0..16 {
        body.extend_from_slice(b"1000;ext=1\r\n");
        body.extend_from_slice(&[b'x'; 4096]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    c.bench_function("chunked_decode_64k_in_4k_chunks", |b| {
        b.iter(|| {
            let mut d = Chunked::new();
            let mut n = 0usize;
            d.decode(black_box(&body), |data| n += data.len()).unwrap();
            black_box(n)
        })
    });
}

criterion_group!(hot, benches);
criterion_main!(hot);
