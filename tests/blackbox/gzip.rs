//! gzip by the contract's compression rules: the output decompressed and
//! compared byte for byte, the framing to HTTP/1.1 and HTTP/1.0 clients,
//! every rule that turns it off, and streaming (the first bytes reach the
//! client before the upstream has sent the rest).

use crate::common::*;
use std::io::Read;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("not gzip ({e}): {}", show(b)));
    out
}

/// Text that compresses (but not to nothing).
fn text(n: usize) -> Vec<u8> {
    let words = ["alpha ", "beta ", "gamma ", "delta\n", "{\"id\": 42} "];
    let mut out = Vec::with_capacity(n);
    let mut i = 0usize;
    while out.len() < n {
        out.extend_from_slice(words[i % 5].as_bytes());
        out.extend_from_slice(format!("{i} ").as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

/// `/len-N/ct-TYPE/...`: a body of N bytes with that type (`_` for `/`);
/// `/chunked/` sends it chunked, `/ce/` with Content-Encoding: br, `/204/`,
/// `/206/` and `/304/` those statuses; `/etag/`, `/nt/`, `/vary-ae/` and
/// `/vary-origin/` add `ETag: "v1"`, `Cache-Control: no-transform`, `Vary:
/// accept-encoding` and `Vary: Origin`.
fn origin() -> Upstream {
    Upstream::start(|c| {
        while let Some(req) = c.read_request() {
            let t = req.target.clone();
            let n: usize = t
                .split('/')
                .find_map(|p| p.strip_prefix("len-"))
                .map_or(5000, |n| n.parse().unwrap());
            let ct = t
                .split('/')
                .find_map(|p| p.strip_prefix("ct-"))
                .map_or("text/plain; charset=utf-8".to_string(), |c| {
                    c.replace('_', "/").replace("%20", " ")
                });
            let body = text(n);
            let status = if t.contains("/204/") {
                "204 No Content"
            } else if t.contains("/304/") {
                "304 Not Modified"
            } else if t.contains("/206/") {
                "206 Partial Content"
            } else {
                "200 OK"
            };
            let mut ce = String::new();
            for (flag, field) in [
                ("/ce/", "Content-Encoding: br\r\n".to_string()),
                ("/etag/", "ETag: \"v1\"\r\n".into()),
                ("/nt/", "Cache-Control: public, no-transform\r\n".into()),
                ("/vary-ae/", "Vary: accept-encoding\r\n".into()),
                ("/vary-origin/", "Vary: Origin\r\n".into()),
                (
                    "/206/",
                    format!("Content-Range: bytes 0-{}/99999\r\n", n - 1),
                ),
            ] {
                if t.contains(flag) {
                    ce.push_str(&field);
                }
            }
            let mut out = if t.contains("/chunked/") {
                let mut o = format!("HTTP/1.1 {status}\r\nContent-Type: {ct}\r\n{ce}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
                for piece in body.chunks(1000) {
                    o.extend(format!("{:x}\r\n", piece.len()).bytes());
                    o.extend_from_slice(piece);
                    o.extend_from_slice(b"\r\n");
                }
                o.extend_from_slice(b"0\r\n\r\n");
                o
            } else if status.starts_with("204") || status.starts_with("304") {
                format!("HTTP/1.1 {status}\r\nContent-Type: {ct}\r\n\r\n").into_bytes()
            } else {
                let mut o = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ct}\r\n{ce}Content-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                if req.method != "HEAD" {
                    o.extend_from_slice(&body);
                }
                o
            };
            if out.is_empty() {
                out = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n".to_vec();
            }
            if !c.write(&out) {
                return;
            }
        }
    })
}

fn gzip_proxy(up: &Upstream) -> Proxy {
    let rest = format!(
        "{}[[route]]\npath = \"/\"\nupstream = \"app\"\n\
         gzip = {{ types = [\"text/plain\", \"application/json\"], min_length = 1000 }}\n",
        upstream("app", up.addr(), "")
    );
    Proxy::start(&config("", &rest))
}

fn ask(p: &Proxy, method: &str, target: &str, version: &str, extra: &str) -> Response {
    let mut c = Client::connect(p.addr());
    c.send(format!("{method} {target} HTTP/{version}\r\nHost: h\r\n{extra}\r\n").as_bytes());
    if method == "HEAD" {
        c.read_head_response()
    } else {
        c.read_response()
    }
}

const GZ: &str = "Accept-Encoding: gzip, deflate\r\n";

#[test]
fn a_listed_type_is_compressed_and_decompresses_to_the_same_bytes() {
    let up = origin();
    let p = gzip_proxy(&up);
    for (target, n) in [
        ("/len-5000/", 5000),
        ("/len-1000/", 1000),
        ("/len-300000/", 300_000),
        ("/chunked/len-200/", 200),
        ("/chunked/len-150000/", 150_000),
        ("/len-4000/ct-application_json/", 4000),
        ("/len-4000/ct-Application_JSON;%20charset=utf-8/", 4000),
    ] {
        let r = ask(&p, "GET", target, "1.1", GZ);
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{target}");
        assert!(r.has_token("vary", "accept-encoding"), "{target}");
        assert_eq!(r.framing, Framing::Chunked, "{target}: length is unknown");
        assert_eq!(r.header("content-length"), None, "{target}");
        assert_eq!(gunzip(&r.body), text(n), "{target}");
        if n > 4000 {
            assert!(r.body.len() < n / 2, "{target}: {} bytes", r.body.len());
        }
    }
}

#[test]
fn an_http_1_0_client_gets_a_close_delimited_gzip_body() {
    let up = origin();
    let p = gzip_proxy(&up);
    let mut c = Client::connect(p.addr());
    c.send(format!("GET /len-8000/ HTTP/1.0\r\nHost: h\r\n{GZ}\r\n").as_bytes());
    let r = c.read_response();
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.framing, Framing::Close);
    assert!(!r
        .raw_head
        .windows(7)
        .any(|w| w.eq_ignore_ascii_case(b"chunked")));
    assert_eq!(gunzip(&r.body), text(8000));
}

#[test]
fn the_rules_that_leave_an_answer_alone() {
    let up = origin();
    let p = gzip_proxy(&up);
    for (what, method, target, extra) in [
        ("no Accept-Encoding", "GET", "/len-5000/", ""),
        (
            "gzip refused",
            "GET",
            "/len-5000/",
            "Accept-Encoding: gzip;q=0, br\r\n",
        ),
        ("under min_length", "GET", "/len-999/", GZ),
        ("type not listed", "GET", "/len-5000/ct-text_html/", GZ),
        ("already encoded", "GET", "/ce/len-5000/", GZ),
        ("no-transform", "GET", "/nt/len-5000/", GZ),
        ("206", "GET", "/206/len-5000/", GZ),
        ("HEAD", "HEAD", "/len-5000/", GZ),
        ("204", "GET", "/204/", GZ),
        ("304", "GET", "/304/", GZ),
    ] {
        let r = ask(&p, method, target, "1.1", extra);
        assert_ne!(r.header("content-encoding"), Some("gzip"), "{what}");
        let as_is = ["no", "under", "type", "206"];
        if as_is.iter().any(|w| what.starts_with(w)) {
            assert_eq!(r.framing, Framing::Length, "{what}");
            assert_eq!(r.body, text(r.body.len()), "{what}");
        }
        if what == "HEAD" {
            assert_eq!(r.header("content-length"), Some("5000"));
        }
    }
}

#[test]
fn a_body_is_compressed_as_it_flows() {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let first = text(20_000);
    let second = text(30_000)[20_000..].to_vec();
    let (f2, s2) = (first.clone(), second.clone());
    let up = Upstream::start(move |c| {
        if c.read_request().is_none() {
            return;
        }
        let mut o =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        o.extend(format!("{:x}\r\n", f2.len()).bytes());
        o.extend_from_slice(&f2);
        o.extend_from_slice(b"\r\n");
        c.write(&o);
        // The rest only once the client has decompressed the first part.
        let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(5));
        let mut o = format!("{:x}\r\n", s2.len()).into_bytes();
        o.extend_from_slice(&s2);
        o.extend_from_slice(b"\r\n0\r\n\r\n");
        c.write(&o);
    });
    let p = gzip_proxy(&up);
    let mut c = Client::connect(p.addr());
    c.send(format!("GET /stream HTTP/1.1\r\nHost: h\r\n{GZ}\r\n").as_bytes());
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let head = c
        .wire
        .take_head(deadline)
        .expect("head before the body ends");
    assert!(
        contains(&head, b"Content-Encoding: gzip"),
        "{}",
        show(&head)
    );
    // Read chunks until the first 20,000 bytes decompress.
    let mut gz = Vec::new();
    let mut got = Vec::new();
    while got.len() < first.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first part never came through alone"
        );
        let line = c.wire.take_line(deadline).unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&line).unwrap(), 16).unwrap();
        gz.extend(c.wire.take_exact(n, deadline).unwrap());
        c.wire.take_exact(2, deadline).unwrap();
        let mut d = flate2::read::GzDecoder::new(&gz[..]);
        got.clear();
        let _ = d.read_to_end(&mut got); // a partial stream ends early: fine
    }
    assert_eq!(&got[..first.len()], &first[..]);
    tx.send(()).unwrap();
    let rest = c
        .wire
        .take_chunked(std::time::Instant::now() + Duration::from_secs(5))
        .unwrap();
    gz.extend(rest);
    let mut all = first;
    all.extend(second);
    assert_eq!(gunzip(&gz), all);
}

/// A compressed answer's strong ETag becomes weak (it named the
/// uncompressed bytes), as nginx's gzip does; an uncompressed one keeps
/// it. `Vary: Accept-Encoding` joins the upstream's Vary, once.
#[test]
fn compressed_answers_get_a_weak_etag_and_one_vary() {
    let up = origin();
    let p = gzip_proxy(&up);
    let r = ask(&p, "GET", "/etag/len-5000/", "1.1", GZ);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("etag"), Some("W/\"v1\""));
    let r = ask(&p, "GET", "/etag/len-5000/", "1.1", "");
    assert_eq!(r.header("etag"), Some("\"v1\""));
    let r = ask(&p, "GET", "/vary-ae/len-5000/", "1.1", GZ);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header_all("vary"), ["accept-encoding"]);
    let r = ask(&p, "GET", "/vary-origin/len-5000/", "1.1", GZ);
    assert_eq!(r.header_all("vary"), ["Origin", "Accept-Encoding"]);
}

#[test]
fn cache_hits_are_gzipped_per_client() {
    let up = origin();
    let rest = format!(
        "{}[[route]]\npath = \"/\"\nupstream = \"app\"\ncache = {{ \"200\" = \"1m\" }}\n\
         gzip = {{ types = [\"text/plain\"] }}\n",
        upstream("app", up.addr(), "")
    );
    let p = Proxy::start(&config("", &rest));
    let t = format!("/etag/len-6000/{}", token());
    let miss = ask(&p, "GET", &t, "1.1", GZ);
    assert_eq!(miss.header("x-cache-status"), Some("MISS"));
    assert_eq!(gunzip(&miss.body), text(6000));
    let plain = ask(&p, "GET", &t, "1.1", "");
    assert_eq!(plain.header("x-cache-status"), Some("HIT"));
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("etag"), Some("\"v1\""));
    assert_eq!(plain.body, text(6000));
    let zipped = ask(&p, "GET", &t, "1.1", GZ);
    assert_eq!(zipped.header("x-cache-status"), Some("HIT"));
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(zipped.header("etag"), Some("W/\"v1\""));
    assert_eq!(zipped.header_all("vary"), ["Accept-Encoding"]);
    assert_eq!(gunzip(&zipped.body), text(6000));
    assert_eq!(up.requests_with(&t).len(), 1);
}
