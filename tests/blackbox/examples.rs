//! docs/examples: every example passes `--check` and is run — started on
//! scripted upstreams, with the files it names created beside it — and
//! does what its comment promises. Also keeps the reference and the man
//! pages true: every key the parser accepts is documented, every flag of
//! `--help` is in ringside(8).

use crate::common::*;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const EXAMPLES: [&str; 6] = [
    "load-balancing.toml",
    "tls-termination.toml",
    "websocket.toml",
    "caching.toml",
    "static-files.toml",
    "error-pages.toml",
];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// An example copied into a scratch folder: `127.0.0.1:300N` becomes
/// `ups[N-1]`, each `0.0.0.0:PORT` a free local port (`ports` maps the
/// written port to it).
struct Example {
    dir: TestDir,
    toml: String,
    ports: HashMap<u16, SocketAddr>,
}

fn example(name: &str, ups: &[SocketAddr]) -> Example {
    let mut toml = std::fs::read_to_string(repo("docs/examples").join(name)).unwrap();
    for (i, up) in ups.iter().enumerate() {
        toml = toml.replace(&format!("127.0.0.1:300{}", i + 1), &up.to_string());
    }
    let mut ports = HashMap::new();
    while let Some(at) = toml.find("\"0.0.0.0:") {
        let rest = &toml[at + 9..];
        let end = rest.find('"').unwrap();
        let written: u16 = rest[..end].parse().unwrap();
        let local = closed_port();
        ports.insert(written, local);
        toml = format!("{}\"{local}{}", &toml[..at], &rest[end..]);
    }
    Example {
        dir: TestDir::new(),
        toml,
        ports,
    }
}

impl Example {
    /// `--check` says `FILE: ok`.
    fn check(&self) {
        let config = self.dir.write("ringside.toml", &self.toml);
        let out = run_bounded(
            &["-c".as_ref(), config.as_os_str(), "--check".as_ref()],
            IO_TIMEOUT,
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{}: ok", config.display()),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(self) -> (Proxy, HashMap<u16, SocketAddr>) {
        self.check();
        let ports = self.ports.clone();
        (Proxy::start_in(self.dir, &self.toml), ports)
    }
}

#[test]
fn every_example_is_tested_and_listed() {
    let mut found: Vec<String> = std::fs::read_dir(repo("docs/examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    found.sort();
    let mut tested = EXAMPLES.map(String::from).to_vec();
    tested.sort();
    assert_eq!(found, tested, "docs/examples and the tests here differ");
    let readme = std::fs::read_to_string(repo("docs/examples/README.md")).unwrap();
    for name in EXAMPLES {
        assert!(
            readme.contains(&format!("]({name})")),
            "README.md lacks {name}"
        );
    }
}

#[test]
fn load_balancing_weights_and_backup() {
    let (a, b, backup) = (Upstream::echo(), Upstream::echo(), Upstream::echo());
    let ex = example("load-balancing.toml", &[a.addr(), b.addr(), backup.addr()]);
    let (proxy, _) = ex.start();
    let mut c = Client::connect(proxy.addr());
    for _ in 0..10 {
        get_ok(&mut c, "/lb");
    }
    let counts = [&a, &b, &backup].map(|u| u.heads_with("GET /lb"));
    assert_eq!(counts, [6, 4, 0]);
    drop(proxy);

    // Both primaries down: the backup answers, and keeps answering.
    let ex = example(
        "load-balancing.toml",
        &[refused_port(), refused_port(), backup.addr()],
    );
    let (proxy, _) = ex.start();
    let mut c = Client::connect(proxy.addr());
    get_ok(&mut c, "/down");
    get_ok(&mut c, "/down");
    assert_eq!(backup.heads_with("GET /down"), 2);
}

#[test]
fn tls_termination_redirects_and_terminates() {
    let up = Upstream::echo();
    let ex = example("tls-termination.toml", &[up.addr()]);
    let certified = rcgen::generate_simple_self_signed(vec!["example.com".to_string()]).unwrap();
    std::fs::create_dir(ex.dir.path().join("tls")).unwrap();
    ex.dir.write("tls/example.com.pem", &certified.cert.pem());
    ex.dir
        .write("tls/example.com.key", &certified.key_pair.serialize_pem());
    let (proxy, ports) = ex.start();

    let mut c = Client::connect(ports[&80]);
    c.send(b"GET /shop?item=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://example.com/shop?item=1")
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("example.com").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(ports[&443]).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /secure HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    // The proxy closes after `Connection: close`; a missing close_notify
    // would only end the read early, which the checks below catch.
    let _ = tls.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\r\nStrict-Transport-Security: max-age=63072000\r\n"),
        "{answer}"
    );
    let seen = up.only("GET /secure");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    drop(proxy);
}

#[test]
fn websocket_tunnels_both_ways() {
    let chat = Upstream::start(|c| {
        if let Some(req) = c.read_request() {
            assert!(req.has_token("upgrade", "websocket"));
            c.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            );
            c.tunnel_peer(true, false);
        }
    });
    let web = Upstream::echo();
    let (proxy, _) = example("websocket.toml", &[chat.addr(), web.addr()]).start();
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(
        b"GET /ws/room HTTP/1.1\r\nHost: chat.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !contains(&got, b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", show(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", show(&got));
    s.write_all(b"ping-through-the-tunnel").unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < 23 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        echoed.extend_from_slice(&buf[..n]);
    }
    assert_eq!(echoed, b"ping-through-the-tunnel");
    // Other paths go to the web upstream.
    get_ok(&mut Client::connect(proxy.addr()), "/page");
    assert_eq!(web.heads_with("GET /page"), 1);
}

#[test]
fn caching_answers_miss_then_hit() {
    let up = Upstream::echo();
    let (proxy, _) = example("caching.toml", &[up.addr()]).start();
    let mut c = Client::connect(proxy.addr());
    let first = c.get("/cached");
    assert_eq!(
        (first.status, first.header("x-cache-status")),
        (200, Some("MISS"))
    );
    let second = c.get("/cached");
    assert_eq!(
        (second.status, second.header("x-cache-status")),
        (200, Some("HIT"))
    );
    assert_eq!(second.body, first.body);
    assert_eq!(up.heads_with("GET /cached"), 1);
}

#[test]
fn static_files_with_expires() {
    let up = Upstream::echo();
    let ex = example("static-files.toml", &[up.addr()]);
    std::fs::create_dir(ex.dir.path().join("www")).unwrap();
    ex.dir.write("www/app.css", "body { color: black }\n");
    let (proxy, _) = ex.start();
    let mut c = Client::connect(proxy.addr());
    let r = c.get("/static/app.css");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "body { color: black }\n");
    assert_eq!(r.header("cache-control"), Some("max-age=2592000"));
    assert!(r.header("expires").is_some());
    get_ok(&mut c, "/dynamic");
    assert_eq!(up.heads_with("GET /dynamic"), 1);
}

#[test]
fn error_pages_replace_the_502() {
    let ex = example("error-pages.toml", &[refused_port()]);
    std::fs::create_dir(ex.dir.path().join("errors")).unwrap();
    let page = "<html><body>We will be right back.</body></html>\n";
    ex.dir.write("errors/50x.html", page);
    let (proxy, _) = ex.start();
    let mut c = Client::connect(proxy.addr());
    let r = c.get("/");
    assert_eq!((r.status, r.body_str().as_str()), (502, page));
    // The connection stays open and the next request is answered alike.
    assert_eq!(c.get("/again").status, 502);
}

/// Every key `config::known_keys` lists appears, as its dotted path, in
/// docs/configuration.md and in ringside.toml(5).
#[test]
fn every_key_the_parser_accepts_is_documented() {
    let keys = ringside::config::known_keys();
    assert!(keys.len() > 50, "{keys:?}");
    for doc in ["docs/configuration.md", "packaging/ringside.toml.5"] {
        let text = std::fs::read_to_string(repo(doc)).unwrap();
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| {
                let written = match doc.ends_with(".md") {
                    true => format!("`{k}`"),
                    false => format!("\\fB{k}\\fR"),
                };
                !text.contains(&written)
            })
            .collect();
        assert!(missing.is_empty(), "{doc} does not document {missing:?}");
    }
}

/// Every flag `--help` lists is in ringside(8), and the other way round.
#[test]
fn help_and_the_man_page_name_the_same_flags() {
    let out = run_bounded(&["--help".as_ref()], IO_TIMEOUT);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let flags = |text: &str| -> Vec<String> {
        let mut v: Vec<String> = text
            .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '|')
            .map(|w| {
                w.replace("\\-", "-")
                    .replace("\\fB", "")
                    .replace("\\fR", "")
            })
            .filter(|w| w.starts_with('-') && w.len() > 1 && !w.contains('=') && !w.contains('/'))
            .map(|w| w.trim_end_matches(['.', ')', ':']).to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let in_help = flags(&help);
    for f in [
        "-c",
        "--config",
        "--check",
        "--upgrade-socket",
        "-h",
        "--help",
        "-V",
        "--version",
    ] {
        assert!(in_help.contains(&f.to_string()), "--help lacks {f}: {help}");
    }
    let man = std::fs::read_to_string(repo("packaging/ringside.8")).unwrap();
    // The options are named before the signals section (which quotes `kill -HUP`).
    let options = man.split(".SH SIGNALS").next().unwrap();
    let in_man = flags(options);
    assert_eq!(in_help, in_man, "ringside(8) and --help differ");
}
