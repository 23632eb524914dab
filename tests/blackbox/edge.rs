//! The small edge features: `redirect` with its variables, `respond`,
//! `error_pages` (ringside's own errors and upstream error statuses, the
//! original status kept), `set_request_headers`, `add_response_headers`,
//! `strip_prefix`, `proxy_redirect`; and `--check` on bad input for them.

use crate::common::*;
use std::time::Duration;

fn req(p: &Proxy, raw: &str) -> Response {
    let mut c = Client::connect(p.addr());
    c.send(raw.as_bytes());
    c.read_response()
}

fn get(p: &Proxy, target: &str, host: &str) -> Response {
    req(p, &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n"))
}

#[test]
fn redirect_expands_its_variables() {
    let rest = r#"
[[route]]
path = "/old/"
redirect = { to = "https://$host$request_uri", status = 301 }

[[route]]
path = "/moved"
redirect = { to = "$scheme://new.example$uri?was=$args", status = 308 }

[[route]]
path = "/temp"
redirect = { to = "/elsewhere", status = 302 }
"#;
    let p = Proxy::start(&config("", rest));
    let r = get(&p, "/old/a/b?x=1&y=%20", "Example.COM:8080");
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://example.com/old/a/b?x=1&y=%20")
    );
    assert!(!r.body.is_empty());
    let r = get(&p, "/moved/p?q=2", "h");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("http://new.example/moved/p?was=q=2")
    );
    let r = get(&p, "/temp", "h");
    assert_eq!((r.status, r.header("location")), (302, Some("/elsewhere")));
    // HEAD: the head only; the connection stays open.
    let mut c = Client::connect(p.addr());
    c.send(b"HEAD /temp HTTP/1.1\r\nHost: h\r\n\r\n");
    let h = c.read_head_response();
    assert_eq!(h.status, 302);
    assert_eq!(c.get("/temp").status, 302);
}

#[test]
fn respond_answers_with_its_status_body_and_added_headers() {
    let rest = r#"
[[route]]
path = "/ok"
respond = { status = 200, body = "ok" }
add_response_headers = { "X-Frame-Options" = "DENY" }

[[route]]
path = "/teapot"
respond = { status = 418, body = "<b>short and stout</b>" }
"#;
    let p = Proxy::start(&config("", rest));
    let r = get(&p, "/ok", "h");
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    let r = get(&p, "/teapot", "h");
    assert_eq!(r.status, 418);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.body_str(), "<b>short and stout</b>");
}

#[test]
fn error_pages_keep_the_original_status() {
    let dir = TestDir::new();
    dir.write("50x.html", "<p>we are on it</p>");
    dir.write("404.txt", "nothing here");
    let failing = Upstream::start(|c| {
        while let Some(req) = c.read_request() {
            let (status, body) = if req.target.contains("missing") {
                ("404 Not Found", "upstream 404 text")
            } else if req.target.contains("teapot") {
                ("418 I'm a teapot", "upstream 418 text")
            } else {
                ("503 Service Unavailable", "upstream 503 text")
            };
            let out = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if !c.write(out.as_bytes()) {
                return;
            }
        }
    });
    let rest = format!(
        "{}{}[[route]]\npath = \"/app/\"\nupstream = \"app\"\n\
         error_pages = {{ \"502\" = \"50x.html\", \"503\" = \"50x.html\", \"404\" = \"404.txt\" }}\n\n\
         [[route]]\npath = \"/down/\"\nupstream = \"down\"\n\
         error_pages = {{ \"502\" = \"50x.html\" }}\n",
        upstream("app", failing.addr(), ""),
        upstream("down", refused_port(), "connect_timeout = \"1s\"")
    );
    let p = Proxy::start_in(dir, &config("", &rest));
    let mut c = Client::connect(p.addr());
    // An upstream 503: our page, status 503, and the connection carries on.
    let r = c.get("/app/busy");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (503, "<p>we are on it</p>")
    );
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = c.get("/app/missing");
    assert_eq!((r.status, r.body_str().as_str()), (404, "nothing here"));
    // A status without a page passes through as the upstream sent it.
    let r = c.get("/app/teapot");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (418, "upstream 418 text")
    );
    // ringside's own 502 (nothing listens) gets the page too.
    let r = get(&p, "/down/x", "h");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (502, "<p>we are on it</p>")
    );
    // A route without pages keeps the built-in error page.
    let r = get(&p, "/nowhere", "h");
    assert_eq!(r.status, 404);
    assert!(r.body_str().contains("404 Not Found"));
}

#[test]
fn request_and_response_headers_and_strip_prefix() {
    let up = Upstream::echo();
    let rest = format!(
        "{}[[route]]\npath = \"/api/\"\nupstream = \"app\"\nstrip_prefix = true\n\
         set_request_headers = {{ \"X-Env\" = \"prod\", \"User-Agent\" = \"ringside-test\" }}\n\
         add_response_headers = {{ \"Cache-Control\" = \"public, immutable\", \"X-Served-By\" = \"edge\" }}\n\n\
         [[route]]\npath = \"/keep\"\nupstream = \"app\"\n",
        upstream("app", up.addr(), "")
    );
    let p = Proxy::start(&config("", &rest));
    let t = token();
    let r = req(
        &p,
        &format!(
            "GET /api/users/{t}?a=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: curl\r\nX-Env: dev\r\n\r\n"
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-echo-target"),
        Some(format!("/users/{t}?a=1").as_str())
    );
    assert_eq!(r.header("cache-control"), Some("public, immutable"));
    assert_eq!(r.header("x-served-by"), Some("edge"));
    let seen = up.only(&t);
    assert_eq!(
        seen.header_all("x-env"),
        ["prod"],
        "set replaces the client's"
    );
    assert_eq!(seen.header_all("user-agent"), ["ringside-test"]);
    // strip_prefix: the prefix alone becomes "/".
    let r = get(&p, "/api/", "h");
    assert_eq!(r.header("x-echo-target"), Some("/"));
    let r = get(&p, "/keep/x", "h");
    assert_eq!(r.header("x-echo-target"), Some("/keep/x"));
    assert_eq!(r.header("x-served-by"), None);
}

#[test]
fn proxy_redirect_rewrites_locations_that_name_the_upstream() {
    let holder = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let h2 = holder.clone();
    let up = Upstream::start(move |c| {
        while let Some(req) = c.read_request() {
            let own = h2.lock().unwrap().clone();
            let location = match req.target.as_str() {
                "/own" => format!("http://{own}/login?next=/a"),
                "/bare" => format!("http://{own}"),
                "/other" => "http://example.org/x".to_string(),
                _ => "/relative".to_string(),
            };
            let out =
                format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
            if !c.write(out.as_bytes()) {
                return;
            }
        }
    });
    *holder.lock().unwrap() = up.addr().to_string();
    let rest = format!(
        "{}[[route]]\npath = \"/\"\nupstream = \"app\"\nproxy_redirect = true\n\n\
         [[route]]\npath = \"/raw/\"\nupstream = \"app\"\nstrip_prefix = true\n",
        upstream("app", up.addr(), "")
    );
    let p = Proxy::start(&config("", &rest));
    let own = up.addr().to_string();
    for (target, want) in [
        (
            "/own",
            "http://www.example.com:8080/login?next=/a".to_string(),
        ),
        ("/bare", "http://www.example.com:8080/".to_string()),
        ("/other", "http://example.org/x".to_string()),
        ("/rel", "/relative".to_string()),
        ("/raw/own", format!("http://{own}/login?next=/a")),
    ] {
        let r = get(&p, target, "www.example.com:8080");
        assert_eq!(r.status, 302);
        assert_eq!(r.header("location"), Some(want.as_str()), "{target}");
    }
}

fn check(dir: &TestDir, toml: &str) -> (i32, String) {
    let path = dir.write("check.toml", toml);
    let out = run_bounded(
        &["-c".as_ref(), path.as_os_str(), "--check".as_ref()],
        Duration::from_secs(10),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_rejects_bad_edge_settings() {
    let dir = TestDir::new();
    dir.write("page.html", "x");
    std::fs::create_dir(dir.path().join("www")).unwrap();
    let up = upstream("app", refused_port(), "");
    let good = config(
        "",
        &format!(
            "[cache]\nsize = \"1m\"\n\n{up}[[route]]\npath = \"/\"\nstatic = \"www\"\nexpires = \"1d\"\n\
             error_pages = {{ \"404\" = \"page.html\" }}\n\n\
             [[route]]\npath = \"/r\"\nredirect = {{ to = \"https://$host$request_uri\" }}\n\n\
             [[route]]\npath = \"/c\"\nupstream = \"app\"\ncache = {{ \"200\" = \"1m\" }}\n\
             gzip = {{ types = [\"text/plain\"] }}\nproxy_redirect = true\n"
        ),
    );
    let (code, err) = check(&dir, &good);
    assert_eq!(code, 0, "{err}");
    for (what, toml, key) in [
        (
            "a static folder that does not exist",
            good.replace("static = \"www\"", "static = \"no-such-folder\""),
            "route.static: ",
        ),
        (
            "an error page that cannot be read",
            good.replace("\"page.html\"", "\"missing.html\""),
            "route.error_pages: ",
        ),
        (
            "a cache status that is not a number",
            good.replace("\"200\" = \"1m\"", "\"ok\" = \"1m\""),
            "route.cache: ",
        ),
        (
            "a cache size over the machine's memory",
            good.replace("size = \"1m\"", "size = \"1000000g\""),
            "cache.size: ",
        ),
        (
            "an unknown variable in a redirect",
            good.replace("$request_uri", "$request_path"),
            "route.redirect.to: ",
        ),
    ] {
        let (code, err) = check(&dir, &toml);
        assert_eq!(code, 1, "{what} was accepted");
        assert!(err.contains(key), "{what}: no {key:?} in\n{err}");
        let line = err.lines().find(|l| l.contains(key)).unwrap();
        let num: usize = line.split(':').nth(1).unwrap().parse().unwrap();
        assert!(num > 0, "{what}: no line number in {line}");
    }
}
