//! The `static` action by the contract's static-file rules: the headers,
//! conditional and range requests, index.html and the trailing-slash
//! redirect, `expires`, gzip, every traversal shape (never a byte from
//! outside the folder), files that vanish, a 50 MB file in bounded memory
//! and a client that leaves mid-file.

use crate::common::*;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-FOLDER";

/// dir/www is served under /static/; dir/secret.txt sits beside it.
fn site() -> (Proxy, std::path::PathBuf) {
    let dir = TestDir::new();
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::create_dir_all(www.join("empty")).unwrap();
    std::fs::write(www.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(www.join("a.txt"), "0123456789abcdefghij").unwrap();
    std::fs::write(www.join("style.CSS"), "body{}").unwrap();
    std::fs::write(www.join("data.json"), "{\"a\":1}").unwrap();
    std::fs::write(www.join("sub/index.html"), "<p>sub</p>").unwrap();
    std::fs::write(www.join("%2e%2e"), "literal name").unwrap();
    std::fs::write(www.join("big.txt"), "hello gzip ".repeat(500)).unwrap();
    std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
    std::os::unix::fs::symlink("../secret.txt", www.join("out.txt")).unwrap();
    std::os::unix::fs::symlink("..", www.join("up")).unwrap();
    std::os::unix::fs::symlink("a.txt", www.join("in.txt")).unwrap();
    std::fs::write(dir.path().join("404.html"), "<p>custom not found</p>").unwrap();
    let rest = "[[route]]\npath = \"/static/\"\nstatic = \"www/\"\nexpires = \"1h\"\n\
                gzip = { types = [\"text/plain\"], min_length = 1000 }\n\
                error_pages = { \"404\" = \"404.html\" }\n\n\
                [[route]]\npath = \"/plain\"\nstatic = \"www\"\n";
    let www = www.clone();
    let p = Proxy::start_in(dir, &config("", rest));
    (p, www)
}

fn req(p: &Proxy, raw: &str) -> Response {
    let mut c = Client::connect(p.addr());
    c.send(raw.as_bytes());
    if raw.starts_with("HEAD") {
        c.read_head_response()
    } else {
        c.read_response()
    }
}

fn get(p: &Proxy, target: &str, extra: &str) -> Response {
    req(
        p,
        &format!("GET {target} HTTP/1.1\r\nHost: h\r\n{extra}\r\n"),
    )
}

#[test]
fn a_file_with_its_headers() {
    let (p, _) = site();
    let r = get(&p, "/static/a.txt", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"0123456789abcdefghij");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("20"));
    assert!(r.header("last-modified").unwrap().ends_with(" GMT"));
    let etag = r.header("etag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(r.header("cache-control"), Some("max-age=3600"));
    assert!(r.header("expires").unwrap().ends_with(" GMT"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    for (path, ct) in [
        ("/static/style.CSS", "text/css; charset=utf-8"),
        ("/static/data.json", "application/json"),
        ("/static/index.html", "text/html; charset=utf-8"),
    ] {
        assert_eq!(get(&p, path, "").header("content-type"), Some(ct), "{path}");
    }
    // HEAD: the head only; other methods: 405.
    let h = req(&p, "HEAD /static/a.txt HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((h.status, h.header("content-length")), (200, Some("20")));
    let post = req(
        &p,
        "POST /static/a.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx",
    );
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD"))
    );
    // A route without expires sends no Cache-Control; its prefix has no slash.
    let r = get(&p, "/plain/a.txt", "");
    assert_eq!((r.status, r.header("cache-control")), (200, None));
}

#[test]
fn folders_serve_index_html_and_get_their_slash() {
    let (p, _) = site();
    let r = get(&p, "/static/", "");
    assert_eq!((r.status, r.body_str().as_str()), (200, "<h1>home</h1>"));
    let r = get(&p, "/static/sub/", "");
    assert_eq!((r.status, r.body_str().as_str()), (200, "<p>sub</p>"));
    let r = get(&p, "/static/sub?x=1", "");
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("/static/sub/?x=1"))
    );
    let r = get(&p, "/plain", "");
    assert_eq!((r.status, r.header("location")), (301, Some("/plain/")));
    let r = get(&p, "/static/empty/", "");
    assert_eq!(r.status, 404, "a folder without index.html");
}

#[test]
fn conditional_requests_give_304() {
    let (p, _) = site();
    let r = get(&p, "/static/a.txt", "");
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();
    for extra in [
        format!("If-None-Match: {etag}\r\n"),
        format!("If-None-Match: \"nope\", W/{etag}\r\n"),
        "If-None-Match: *\r\n".to_string(),
        format!("If-Modified-Since: {lm}\r\n"),
        "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n".to_string(),
    ] {
        let r = get(&p, "/static/a.txt", &extra);
        assert_eq!(r.status, 304, "{extra}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    for extra in [
        "If-None-Match: \"other\"\r\n".to_string(),
        "If-Modified-Since: Thu, 01 Jan 1970 00:00:01 GMT\r\n".to_string(),
        // If-None-Match decides when both are sent.
        format!("If-None-Match: \"other\"\r\nIf-Modified-Since: {lm}\r\n"),
    ] {
        assert_eq!(get(&p, "/static/a.txt", &extra).status, 200, "{extra}");
    }
}

#[test]
fn single_ranges_give_206_and_the_rest_200_or_416() {
    let (p, _) = site();
    let part = |range: &str| get(&p, "/static/a.txt", &format!("Range: {range}\r\n"));
    for (range, body, cr) in [
        ("bytes=0-4", "01234", "bytes 0-4/20"),
        ("bytes=15-", "fghij", "bytes 15-19/20"),
        ("bytes=-3", "hij", "bytes 17-19/20"),
        ("bytes=18-100", "ij", "bytes 18-19/20"),
    ] {
        let r = part(range);
        assert_eq!(r.status_line, "HTTP/1.1 206 Partial Content", "{range}");
        assert_eq!(r.body_str(), body, "{range}");
        assert_eq!(r.header("content-range"), Some(cr), "{range}");
        assert_eq!(
            r.header("content-length"),
            Some(body.len().to_string().as_str())
        );
    }
    for range in ["bytes=20-", "bytes=50-60", "bytes=-0"] {
        let r = part(range);
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */20"), "{range}");
    }
    for range in ["bytes=0-1,4-5", "bytes=5-2", "lines=1-2", "bytes=x"] {
        let r = part(range);
        assert_eq!((r.status, r.body.len()), (200, 20), "{range}");
    }
    // If-Range with another version: the whole file.
    let r = get(
        &p,
        "/static/a.txt",
        "Range: bytes=0-1\r\nIf-Range: \"old\"\r\n",
    );
    assert_eq!(r.status, 200);
    let etag = get(&p, "/static/a.txt", "")
        .header("etag")
        .unwrap()
        .to_string();
    let r = get(
        &p,
        "/static/a.txt",
        &format!("Range: bytes=0-1\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!((r.status, r.body_str().as_str()), (206, "01"));
}

#[test]
fn no_path_ever_leaves_the_folder() {
    let (p, _) = site();
    for path in [
        "/static/../secret.txt",
        "/static/..%2fsecret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E%2Fsecret.txt",
        "/static/.%2e/secret.txt",
        "/static/sub/../../secret.txt",
        "/static/sub/%2e%2e/%2e%2e/secret.txt",
        "/static/%252e%252e/secret.txt",
        "/static/%252e%252e%252fsecret.txt",
        "/static/..\\secret.txt",
        "/static/..%5csecret.txt",
        "/static/a.txt%00.html",
        "/static/%00",
        "/static/out.txt",
        "/static/up/secret.txt",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/plain/../secret.txt",
        "/plain..%2fsecret.txt",
        "/static/%zz",
    ] {
        let r = get(&p, path, "");
        assert_eq!(r.status, 404, "{path}: {}", r.status_line);
        assert!(!r.body_str().contains(SECRET), "{path} served the secret");
    }
    // Double encoding decodes once: the literal name "%2e%2e" is inside.
    let r = get(&p, "/static/%252e%252e", "");
    assert_eq!((r.status, r.body_str().as_str()), (200, "literal name"));
    // A symlink that stays inside works.
    assert_eq!(get(&p, "/static/in.txt", "").body, b"0123456789abcdefghij");
    // 404s on the route get its error page, with the status kept.
    let r = get(&p, "/static/nothing-here", "");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (404, "<p>custom not found</p>")
    );
}

#[test]
fn a_file_that_vanishes_is_404_and_the_connection_stays_usable() {
    let (p, www) = site();
    let mut c = Client::connect(p.addr());
    std::fs::write(www.join("gone.txt"), "here").unwrap();
    assert_eq!(c.get("/static/gone.txt").status, 200);
    std::fs::remove_file(www.join("gone.txt")).unwrap();
    assert_eq!(c.get("/static/gone.txt").status, 404);
    // The connection is still good.
    assert_eq!(c.get("/static/a.txt").status, 200);
}

#[test]
fn an_unreadable_file_is_403_and_the_connection_stays_usable() {
    // root reads any file whatever its mode: as root, run the proxy as
    // nobody so the file's mode applies.
    // SAFETY: geteuid has no preconditions.
    let uid = (unsafe { libc::geteuid() } == 0).then_some(65534);
    let dir = TestDir::new();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("a.txt"), "readable").unwrap();
    std::fs::write(www.join("locked.txt"), "secret").unwrap();
    let mut perm = std::fs::metadata(www.join("locked.txt"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o000);
    std::fs::set_permissions(www.join("locked.txt"), perm).unwrap();
    let rest = format!(
        "[[route]]\npath = \"/static/\"\nstatic = \"{}/\"\n",
        www.display()
    );
    let p = Proxy::start_as(dir, &config("", &rest), uid);
    let mut c = Client::connect(p.addr());
    let r = c.get("/static/locked.txt");
    assert_eq!(r.status, 403, "{}", r.status_line);
    assert!(!r.body_str().contains("secret"));
    assert_eq!(c.get("/static/a.txt").body_str(), "readable");
}

#[test]
fn gzip_applies_to_listed_types_of_at_least_min_length() {
    let (p, _) = site();
    let r = get(&p, "/static/big.txt", "Accept-Encoding: gzip\r\n");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(r.header("etag").unwrap().starts_with("W/"));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, "hello gzip ".repeat(500).as_bytes());
    let r = get(&p, "/static/a.txt", "Accept-Encoding: gzip\r\n");
    assert_eq!(r.header("content-encoding"), None, "under min_length");
    let r = get(
        &p,
        "/static/big.txt",
        "Accept-Encoding: gzip\r\nRange: bytes=0-4\r\n",
    );
    assert_eq!((r.status, r.header("content-encoding")), (206, None));
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn big_file(www: &Path) -> usize {
    let chunk = pattern(1 << 20, 3);
    let mut f = std::fs::File::create(www.join("big.bin")).unwrap();
    for _ in 0..50 {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    50 << 20
}

#[test]
fn a_50_mb_file_streams_in_bounded_memory() {
    let (p, www) = site();
    let size = big_file(&www);
    assert_eq!(get(&p, "/static/a.txt", "").status, 200);
    let before = rss_kib(p.pid());
    let mut c = Client::connect(p.addr());
    c.timeout = Duration::from_secs(30);
    c.send(b"GET /static/big.bin HTTP/1.1\r\nHost: h\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    let head = c.wire.take_head(deadline).unwrap();
    assert!(contains(
        &head,
        format!("Content-Length: {size}").as_bytes()
    ));
    let mut got = 0usize;
    let mut peak = before;
    let chunk = pattern(1 << 20, 3);
    let mut next_check = 0usize;
    while got < size {
        c.wire.fill(deadline).unwrap();
        // Compare each whole MiB as it arrives; keep the buffer small.
        while c.wire.buf.len() >= (1 << 20) {
            let mib: Vec<u8> = c.wire.buf.drain(..1 << 20).collect();
            assert!(mib == chunk, "MiB {} differs", got >> 20);
            got += 1 << 20;
        }
        if got >= next_check {
            peak = peak.max(rss_kib(p.pid()));
            next_check = got + (1 << 20);
            // A slow reader: the proxy must wait, not buffer.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let growth = peak.saturating_sub(before);
    eprintln!("RSS {before} KiB before, {peak} KiB at most while serving 50 MB");
    assert!(growth < 24 * 1024, "RSS grew by {growth} KiB serving 50 MB");
    // The connection carries on.
    assert_eq!(c.get("/static/a.txt").status, 200);
}

#[test]
fn a_client_that_leaves_mid_file_frees_everything() {
    let (p, www) = site();
    big_file(&www);
    assert_eq!(get(&p, "/static/a.txt", "").status, 200);
    let fds = open_fds(p.pid());
    for _ in 0..3 {
        let mut c = Client::connect(p.addr());
        c.send(b"GET /static/big.bin HTTP/1.1\r\nHost: h\r\n\r\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.wire.buf.len() < (1 << 20) {
            c.wire.fill(deadline).unwrap();
        }
        drop(c);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds(p.pid()) > fds && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The warm-up connection may still have been open at the first count.
    assert!(open_fds(p.pid()) <= fds, "files or sockets left open");
    assert_eq!(get(&p, "/static/a.txt", "").status, 200);
}
