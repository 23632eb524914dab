//! A black-box fuzzer: mutated requests to the real binary over every route
//! kind (upstream, split, static, redirect, respond) and every listener kind
//! (plain, TLS, `redirect_https`). Each input is one connection: the
//! requests (methods, every target form, Content-Length and
//! Transfer-Encoding shapes, chunk extensions, byte damage, pipelining) are
//! written, the write side is closed, and the answer is read to the close.
//!
//! It fails on a panic in the proxy's log, a proxy that exited, a worker
//! that stopped serving, or a bystander connection that stopped being
//! served. Inputs come from a fixed seed and a PRNG of its own, so a
//! failure replays: the report names each distinct crash once (its
//! location, message, backtrace and the first input that caused it) and
//! the run goes on, so every distinct crash is listed.
//!
//! `FUZZ_WIRE_SEED` and `FUZZ_WIRE_INPUTS` change the seed and the count.

use crate::common::*;
use rustls::{
    crypto::ring::default_provider,
    pki_types::{CertificateDer, ServerName},
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
};
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

/// The fixed seed: the same inputs in the same order on every run.
const SEED: u64 = 0x7269_6e67_7369_6465;
/// Inputs per run (the issue asks for 3,000 or more).
const INPUTS: usize = 6_000;
/// How often the bystanders and fresh connections are checked.
const CHECK_EVERY: usize = 100;
/// Longest wait for the proxy to close one input's connection.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

// ------------------------------------------------------------------ PRNG

/// splitmix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True `num` times in `den`.
    fn odds(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ------------------------------------------------------------- the inputs

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Plain,
    Tls,
    ToHttps,
}

struct Input {
    via: Via,
    /// Written in this many pieces (a head split across reads).
    writes: Vec<Vec<u8>>,
}

impl Input {
    fn bytes(&self) -> Vec<u8> {
        self.writes.concat()
    }
}

const METHODS: &[&str] = &[
    "GET", "GET", "GET", "HEAD", "POST", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
];

const ODD_METHODS: &[&str] = &["CONNECT", "get", "PRI", "M-SEARCH", "G@T", ""];

/// A path per route kind, and some that route nowhere in particular.
#[rustfmt::skip]
const PATHS: &[&str] = &[
    "/", "/app/x", "/api/users?id=1", "/api", "/split/y", "/static/", "/static/index.html",
    "/static/a.txt", "/static/../ringside.toml", "/static/%2e%2e/ringside.toml", "/static/sub/",
    "/old/page?x=1&y=2", "/old", "/hello", "/hello?x", "/down/z", "/c/cached", "//hello",
    "/./hello", "/%00", "/a%zz", "/%ff%fe",
];

const SUFFIXES: &[&str] = &[
    "", "", "", "x", "?q=1", "#frag", "%", "..", "/../..", "a/b/../c", "?", ";p", "%2F",
];

/// Hosts that pick the host routes, and some that pick none.
#[rustfmt::skip]
const HOSTS: &[&str] = &[
    "h", "h", "a", "x.example.com", "example.org", "h:8080", "[::1]:80", "127.0.0.1",
];

const BAD_HOSTS: &[&str] = &["", "b@d", "h h", "h\x01"];

/// What comes after the target (`None`: an HTTP/0.9-style line).
#[rustfmt::skip]
const ODD_VERSIONS: &[Option<&str>] = &[
    Some("HTTP/2.0"), Some("HTTP/1.2"), Some("http/1.1"), Some("HTTP/1.1 "), None,
];

#[rustfmt::skip]
const EXTRA_FIELDS: &[&str] = &[
    "User-Agent: fuzz", "Accept-Encoding: gzip", "Accept-Encoding: gzip;q=0, br",
    "Cookie: beta=1; srv=0", "X-Canary: 1", "Connection: close", "Connection: keep-alive",
    "Connection: upgrade\r\nUpgrade: websocket", "Expect: 100-continue",
    "Authorization: Basic eDp5", "Cache-Control: no-cache", "Referer: http://r/",
    "X-Forwarded-For: 192.0.2.1", "Range: bytes=0-1", "Range: bytes=5-1", "Range: bytes=-0",
    "Range: bytes=0-0,2-3", "If-None-Match: *", "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT",
    "Keep-Alive: timeout=5", "X-Empty:",
    "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

/// A target in one of the forms RFC 9112 section 3.2 names, or none of them.
fn target(rng: &mut Rng) -> String {
    let path = format!("{}{}", rng.pick(PATHS), rng.pick(SUFFIXES));
    let host = rng.pick(HOSTS);
    if rng.odds(2, 3) {
        return path;
    }
    match rng.below(9) {
        0 => format!("http://{host}{path}"),
        1 => format!("https://{host}{path}"),
        // Absolute-form without a path (the origin-form is then "/").
        2 => format!("http://{host}"),
        3 => format!("HTTP://{host}?q"),
        // Authority-form and asterisk-form.
        4 => format!("{host}:443"),
        5 => "*".to_string(),
        6 => String::new(),
        _ => format!("{path}{}", "z".repeat(rng.below(3) * 3000)),
    }
}

#[rustfmt::skip]
const ODD_LENGTHS: &[&str] = &[
    "Content-Length: +5", "Content-Length:  5 ", "Content-Length: 0x5",
    "Content-Length: 99999999999999999999", "Content-Length: 5, 6", "Content-Length: 5, 5",
    "Content-Length: 1000000", "Content-Length:",
];

#[rustfmt::skip]
const ODD_CODINGS: &[&str] = &[
    "Transfer-Encoding: gzip, chunked", "Transfer-Encoding: chunked, chunked",
    "Transfer-Encoding:  chunked", "Transfer-Encoding : chunked",
    "Transfer-Encoding: chunked\r\n Transfer-Encoding: x", "Transfer-Encoding: identity",
    "Transfer-Encoding: CHUNKED", "Transfer-Encoding:",
];

/// Content-Length and Transfer-Encoding fields, and a body of that shape
/// (or not quite).
fn framing(rng: &mut Rng) -> (Vec<String>, Vec<u8>) {
    let n = rng.below(40);
    let body = vec![b'b'; n];
    let cl = |v: &str| vec![format!("Content-Length: {v}")];
    match rng.below(20) {
        0..=6 => (Vec::new(), Vec::new()),
        7..=9 => (cl(&n.to_string()), body),
        10 => match rng.below(3) {
            0 => (cl(&(n + 5).to_string()), body),
            1 => (cl(&n.to_string()), [body, b"extra".to_vec()].concat()),
            _ => (
                vec![
                    format!("Content-Length: {n}"),
                    format!("Content-Length: {n}"),
                ],
                body,
            ),
        },
        11 => (
            vec![(*rng.pick(ODD_LENGTHS)).to_string()],
            b"hello".to_vec(),
        ),
        12..=16 => (vec!["Transfer-Encoding: chunked".into()], chunks(rng)),
        17 => (
            vec![
                "Transfer-Encoding: chunked".into(),
                format!("Content-Length: {n}"),
            ],
            chunks(rng),
        ),
        _ => (vec![(*rng.pick(ODD_CODINGS)).to_string()], chunks(rng)),
    }
}

/// What follows a chunk's data.
const CHUNK_ENDS: &[&str] = &["\r\n", "\r\n", "\r\n", "\r\n", "\r\n", "\n", "", "xx\r\n"];

/// The end of a chunked body.
#[rustfmt::skip]
const LAST_CHUNKS: &[&str] = &[
    "0\r\n\r\n", "0\r\n\r\n", "0\r\n\r\n", "0\r\n\r\n", "0\r\nTrailer: t\r\n\r\n", "0;e=1\r\n\r\n",
    "0\r\n", "", "0\n\n",
];

/// A chunked body: sizes, extensions and trailers, well-formed or not.
fn chunks(rng: &mut Rng) -> Vec<u8> {
    let mut b = Vec::new();
    for _ in 0..rng.below(4) {
        let len = rng.below(20);
        let size = match rng.below(16) {
            0 => format!("{len:X}"),
            1 => format!("0{len:x}"),
            2 => rng
                .pick(&["fffffffffffffffff", "-1", " 5", "5 ", "0x5", "", "g"])
                .to_string(),
            _ => format!("{len:x}"),
        };
        let ext = match rng.below(8) {
            0 => *rng.pick(&[";a=b", ";a=\"q;\\\"\"", " ;x", "\t; y = z"]),
            1 => *rng.pick(&[";\r", "; =", ";a\nb", ";\x00"]),
            _ => "",
        };
        b.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
        b.extend(std::iter::repeat_n(b'c', len));
        b.extend_from_slice(rng.pick(CHUNK_ENDS).as_bytes());
    }
    b.extend_from_slice(rng.pick(LAST_CHUNKS).as_bytes());
    b
}

/// One request, well-formed more often than not.
fn request(rng: &mut Rng) -> Vec<u8> {
    let methods = if rng.odds(1, 8) { ODD_METHODS } else { METHODS };
    let method = *rng.pick(methods);
    let target = target(rng);
    let version = match rng.below(16) {
        0 => *rng.pick(ODD_VERSIONS),
        1 | 2 => Some("HTTP/1.0"),
        _ => Some("HTTP/1.1"),
    };
    let mut out = match version {
        Some(v) => format!("{method} {target} {v}\r\n"),
        None => format!("{method} {target}\r\n"),
    };
    match rng.below(20) {
        0 => {}
        1 => out.push_str(&format!(
            "Host: {}\r\nHost: {}\r\n",
            rng.pick(HOSTS),
            rng.pick(HOSTS)
        )),
        2 => out.push_str(&format!("Host: {}\r\n", rng.pick(BAD_HOSTS))),
        _ => out.push_str(&format!("Host: {}\r\n", rng.pick(HOSTS))),
    }
    for _ in 0..rng.below(4) {
        let field = rng.pick::<&str>(EXTRA_FIELDS);
        out.push_str(field);
        out.push_str("\r\n");
    }
    let (fields, body) = framing(rng);
    for f in fields {
        out.push_str(&f);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// Byte damage: flips, inserted control bytes, deletions, cuts, repeats.
fn damage(rng: &mut Rng, b: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        if b.is_empty() {
            return;
        }
        let at = rng.below(b.len());
        match rng.below(5) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b.insert(at, *rng.pick(&b"\r\n\0 \t:\x7f\xff;,\""[..])),
            2 => {
                b.remove(at);
            }
            3 => b.truncate(at),
            _ => {
                let end = (at + 1 + rng.below(16)).min(b.len());
                let piece = b[at..end].to_vec();
                b.splice(at..at, piece);
            }
        }
    }
}

/// Input `i` of the run: one to three pipelined requests, perhaps damaged,
/// written in one to three pieces, to one of the listeners.
fn input(seed: u64, i: usize) -> Input {
    let mut rng = Rng(seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let via = *rng.pick(&[
        Via::Plain,
        Via::Plain,
        Via::Plain,
        Via::Tls,
        Via::Tls,
        Via::ToHttps,
    ]);
    let mut all = Vec::new();
    for n in 0..1 + rng.below(3) {
        let mut r = request(&mut rng);
        if rng.odds(1, if n == 0 { 3 } else { 6 }) {
            damage(&mut rng, &mut r);
        }
        all.extend(r);
    }
    let mut writes = Vec::new();
    let mut rest = &all[..];
    while !rest.is_empty() && writes.len() < 2 && rng.odds(1, 3) {
        let (a, b) = rest.split_at(rng.below(rest.len()));
        writes.push(a.to_vec());
        rest = b;
    }
    writes.push(rest.to_vec());
    Input { via, writes }
}

// ------------------------------------------------------------- the proxy

/// The proxy under test, its upstreams and a client config for its TLS
/// listener.
struct Bench {
    proxy: Proxy,
    app: Upstream,
    canary: Upstream,
    plain: SocketAddr,
    tls: SocketAddr,
    to_https: SocketAddr,
    client: Arc<ClientConfig>,
}

fn start() -> Bench {
    let dir = TestDir::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    dir.write("cert.pem", &cert.pem());
    dir.write("key.pem", &key.serialize_pem());
    std::fs::create_dir_all(dir.path().join("www/sub")).unwrap();
    dir.write("www/index.html", "<p>index</p>\n");
    dir.write("www/sub/index.html", "<p>sub</p>\n");
    dir.write("www/a.txt", &"a".repeat(3000));
    let (app, canary) = (Upstream::echo(), Upstream::echo());
    let routes = format!(
        "{}{}{}\
         [[route]]\npath = \"/api/\"\nupstream = \"app\"\nstrip_prefix = true\n\n\
         [[route]]\npath = \"/split/\"\n\
         split = [ {{ upstream = \"app\", weight = 1 }}, {{ upstream = \"canary\", weight = 1 }} ]\n\n\
         [[route]]\nhost = \"*.example.com\"\npath = \"/\"\nupstream = \"canary\"\n\n\
         [[route]]\npath = \"/c/\"\nupstream = \"app\"\ncache = {{ \"200\" = \"1m\" }}\n\
         gzip = {{ types = [\"text/plain\"], min_length = 10 }}\n\n\
         [[route]]\npath = \"/down/\"\nupstream = \"down\"\n\n\
         [[route]]\npath = \"/static/\"\nstatic = \"www/\"\n\n\
         [[route]]\nhost = \"a\"\npath = \"/\"\nstatic = \"www/\"\n\n\
         [[route]]\npath = \"/old/\"\n\
         redirect = {{ to = \"https://example.com$request_uri\", status = 301 }}\n\n\
         [[route]]\nhost = \"example.org\"\npath = \"/\"\n\
         redirect = {{ to = \"https://example.com$uri?$args\", status = 308 }}\n\n\
         [[route]]\npath = \"/hello\"\nrespond = {{ status = 200, body = \"hi\" }}\n\n",
        upstream("app", app.addr(), ""),
        upstream("canary", canary.addr(), ""),
        upstream("down", refused_port(), "connect_timeout = \"1s\""),
    ) + &route("/", "app");
    let toml = format!(
        "[runtime]\nworkers = 2\nshutdown_timeout = \"2s\"\n\n\
         [log]\naccess = \"off\"\nlevel = \"warn\"\n\n\
         [limits]\nclient_header_timeout = \"2s\"\nclient_body_timeout = \"1s\"\n\
         keepalive_timeout = \"300s\"\nmax_request_head = \"8k\"\nmax_request_body = \"100k\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\n\
         [[listen]]\naddress = \"127.0.0.2:0\"\nhttp2 = true\n\
         tls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\n\n\
         [[listen]]\naddress = \"127.0.0.3:0\"\nredirect_https = true\n\n{routes}"
    );
    // Each listener has an address of its own: a worker finds a listener's
    // settings by its configured address, and three "127.0.0.1:0" would
    // all get the first one's.
    let proxy = Proxy::start_in(dir, &toml);
    let [plain, tls, to_https] = proxy.addrs() else {
        panic!("three listeners expected: {:?}", proxy.addrs());
    };
    let (plain, tls, to_https) = (*plain, *tls, *to_https);
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.der().to_vec()))
        .unwrap();
    let mut client = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // HTTP/1.1 over TLS on the listener that also offers h2.
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Bench {
        proxy,
        app,
        canary,
        plain,
        tls,
        to_https,
        client: Arc::new(client),
    }
}

// ------------------------------------------------------ one connection

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn open(b: &Bench, via: Via) -> std::io::Result<Conn> {
        let addr = match via {
            Via::Plain => b.plain,
            Via::Tls => b.tls,
            Via::ToHttps => b.to_https,
        };
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        tcp.set_read_timeout(Some(Duration::from_millis(200)))?;
        if via != Via::Tls {
            return Ok(Conn::Plain(tcp));
        }
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(b.client.clone(), name).map_err(std::io::Error::other)?;
        let mut s = StreamOwned::new(conn, tcp);
        let until = Instant::now() + IO_TIMEOUT;
        while s.conn.is_handshaking() {
            match s.conn.complete_io(&mut s.sock) {
                Ok(_) => {}
                Err(e) if waiting(&e) && Instant::now() < until => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Conn::Tls(Box::new(s)))
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(data),
            Conn::Tls(s) => s.write_all(data).and_then(|()| s.flush()),
        }
    }

    /// Closes the write side: the proxy sees the end of the requests.
    fn finish(&mut self) {
        // The proxy may have closed first; reading tells what it did.
        let _ = match self {
            Conn::Plain(s) => s.shutdown(Shutdown::Write),
            Conn::Tls(s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
                s.sock.shutdown(Shutdown::Write)
            }
        };
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }

    /// Everything until the proxy closes (true), or until `limit` passes
    /// with the connection still open (false).
    fn read_to_close(&mut self, limit: Duration) -> (Vec<u8>, bool) {
        let until = Instant::now() + limit;
        let mut got = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if waiting(&e) => {
                    if Instant::now() >= until {
                        return (got, false);
                    }
                }
                // A reset, or a TLS close without close_notify: closed.
                Err(_) => return (got, true),
            }
        }
    }
}

fn waiting(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Writes the input, closes the write side and reads the answer to the
/// close. `None` when no connection could be made.
fn send(b: &Bench, inp: &Input) -> Option<(Vec<u8>, bool)> {
    let mut c = Conn::open(b, inp.via).ok()?;
    for w in &inp.writes {
        if c.write(w).is_err() {
            // The proxy answered and closed before reading everything.
            break;
        }
    }
    c.finish();
    Some(c.read_to_close(CLOSE_WAIT))
}

/// A GET /hello answered with 200 "hi" on `c` (kept open afterwards).
fn hello(c: &mut Conn) -> Result<(), String> {
    c.write(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let until = Instant::now() + IO_TIMEOUT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !(got.starts_with(b"HTTP/1.1 200 ") && got.ends_with(b"\r\n\r\nhi")) {
        match c.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {}", show(&got))),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if waiting(&e) && Instant::now() < until => {}
            Err(e) => return Err(format!("{e} after {}", show(&got))),
        }
    }
    Ok(())
}

// ------------------------------------------------------------- findings

/// One distinct crash: the place it panicked at, and its first input.
struct Crash {
    place: String,
    message: String,
    backtrace: Vec<String>,
    first: usize,
    input: Vec<u8>,
    via: Via,
    count: usize,
}

#[derive(Default)]
struct Findings {
    crashes: BTreeMap<String, Crash>,
    /// Panics that showed up in the log too late to name their input.
    unattributed: Vec<String>,
    /// Liveness failures (a bystander, a fresh connection, the process).
    dead: Vec<String>,
    /// Heads the upstreams could not parse (the proxy forwarded invalid
    /// HTTP), with the inputs they came from.
    forwarded: Vec<String>,
    /// Upstream problems already looked at.
    problems_seen: usize,
    /// Inputs whose connection the proxy had not closed within CLOSE_WAIT.
    stalls: Vec<usize>,
    /// Proxy stderr lines already looked at.
    lines_seen: usize,
}

impl Findings {
    /// Looks at the log lines that appeared since the last call; panics
    /// are put down to `input` (`None`: to the inputs since the last
    /// check). Returns whether a panic was found.
    fn scan_log(&mut self, proxy: &Proxy, input: Option<(usize, &Input)>) -> bool {
        let lines = proxy.stderr_lines();
        let mut found = false;
        for (k, line) in lines.iter().enumerate().skip(self.lines_seen) {
            let Some(at) = line.find(" panicked at ") else {
                continue;
            };
            found = true;
            let place = line[at + 13..].trim_end_matches(':').to_string();
            let Some((i, inp)) = input else {
                self.unattributed.push(place);
                continue;
            };
            let crash = self.crashes.entry(place.clone()).or_insert_with(|| Crash {
                place,
                message: lines.get(k + 1).cloned().unwrap_or_default(),
                backtrace: backtrace(&lines[k + 1..]),
                first: i,
                input: inp.bytes(),
                via: inp.via,
                count: 0,
            });
            crash.count += 1;
        }
        self.lines_seen = lines.len();
        found
    }

    /// New problems of the upstreams, put down to inputs `from..=to`.
    fn scan_upstreams(&mut self, b: &Bench, from: usize, to: usize) {
        let problems = [b.app.seen().problems, b.canary.seen().problems].concat();
        for p in problems.iter().skip(self.problems_seen) {
            self.forwarded
                .push(format!("from one of inputs {from}..={to}: {p}"));
        }
        self.problems_seen = problems.len();
    }

    /// A panic's log line can come after the next input was sent: each
    /// new crash is put down to whichever of its input and the two before
    /// it panics at the same place when sent again alone.
    fn confirm(&mut self, b: &Bench, seed: u64, i: usize) {
        let fresh: Vec<String> = (self.crashes.values())
            .filter(|c| c.first == i)
            .map(|c| c.place.clone())
            .collect();
        for place in fresh {
            for cand in (i.saturating_sub(2)..=i).rev() {
                let inp = input(seed, cand);
                // Only the log matters here.
                let _ = send(b, &inp);
                let until = Instant::now() + Duration::from_millis(200);
                let hit = loop {
                    let lines = b.proxy.stderr_lines();
                    let hit = lines[self.lines_seen..]
                        .iter()
                        .any(|l| l.ends_with(&format!("{place}:")));
                    if hit || Instant::now() >= until {
                        self.lines_seen = lines.len();
                        break hit;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                };
                if hit {
                    let c = self.crashes.get_mut(&place).unwrap();
                    (c.first, c.input, c.via) = (cand, inp.bytes(), inp.via);
                    break;
                }
            }
        }
    }

    fn failed(&self) -> bool {
        !self.crashes.is_empty()
            || !self.unattributed.is_empty()
            || !self.dead.is_empty()
            || !self.forwarded.is_empty()
    }

    fn report(&self) -> String {
        let mut r = String::new();
        for c in self.crashes.values() {
            r += &format!(
                "\nCRASH at {} ({} inputs; first: input {} via {:?})\n  message: {}\n  input: {}\n  backtrace (ringside frames):\n",
                c.place, c.count, c.first, c.via, c.message, show_all(&c.input)
            );
            for l in &c.backtrace {
                r += &format!("    {l}\n");
            }
        }
        for p in &self.unattributed {
            r += &format!("\nCRASH at {p}, input not known (between two checks)\n");
        }
        for d in &self.dead {
            r += &format!("\nNOT SERVED: {d}\n");
        }
        for p in self.forwarded.iter().take(5) {
            r += &format!("\nFORWARDED INVALID HTTP {p}\n");
        }
        if self.forwarded.len() > 5 {
            r += &format!("\n({} more upstream problems)\n", self.forwarded.len() - 5);
        }
        r
    }
}

/// The ringside frames of the backtrace that follows a panic line.
fn backtrace(after: &[String]) -> Vec<String> {
    let mut frames = Vec::new();
    for (k, l) in after.iter().enumerate().take(120) {
        if l.starts_with("note: ") || l.contains(" panicked at ") {
            break;
        }
        if l.contains("ringside::") {
            frames.push(l.trim().to_string());
            if let Some(at) = after
                .get(k + 1)
                .filter(|n| n.trim_start().starts_with("at "))
            {
                frames.push(format!("  {}", at.trim()));
            }
        }
    }
    frames
}

/// All of `b`, escaped (a crash's input is printed whole to replay it).
fn show_all(b: &[u8]) -> String {
    format!("b\"{}\"", b.escape_ascii())
}

/// Every bystander and a fresh connection per listener (several plain
/// ones, so both workers are reached) are served; else a line each.
fn liveness(b: &Bench, bystanders: &mut [(Via, Conn)], after: usize) -> Vec<String> {
    let mut dead = Vec::new();
    if let Some(status) = b.proxy_exited() {
        dead.push(format!("the proxy exited ({status}) by input {after}"));
        return dead;
    }
    for (via, c) in bystanders.iter_mut() {
        if let Err(e) = hello(c) {
            dead.push(format!("{via:?} bystander after input {after}: {e}"));
        }
    }
    let fresh = [
        Via::Plain,
        Via::Plain,
        Via::Plain,
        Via::Plain,
        Via::Tls,
        Via::Tls,
    ];
    for via in fresh {
        let served = Conn::open(b, via)
            .map_err(|e| format!("connect: {e}"))
            .and_then(|mut c| hello(&mut c));
        if let Err(e) = served {
            dead.push(format!("fresh {via:?} connection after input {after}: {e}"));
        }
    }
    match send(
        b,
        &Input {
            via: Via::ToHttps,
            writes: vec![b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()],
        },
    ) {
        Some((answer, _)) if answer.starts_with(b"HTTP/1.1 301 ") => {}
        other => dead.push(format!("redirect_https after input {after}: {other:?}")),
    }
    dead
}

impl Bench {
    /// Whether the proxy process is gone (a zombie counts), read from
    /// /proc so that `Proxy` still reaps it and makes its own checks.
    fn proxy_exited(&self) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.proxy.pid()));
        let state = stat
            .as_deref()
            .ok()
            .and_then(|s| s.rsplit_once(") "))
            .and_then(|(_, rest)| rest.chars().next());
        match state {
            Some('Z' | 'X') | None => Some(format!("state {state:?}")),
            Some(_) => None,
        }
    }
}

// ------------------------------------------------------------------ run

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        let v = v.trim();
        let parsed = match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        };
        parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}"))
    })
}

/// The status code of the first response in `answer`, or what came instead.
fn first_status(answer: &[u8]) -> String {
    match answer.get(..12) {
        Some(line) if line.starts_with(b"HTTP/1.") => String::from_utf8_lossy(&line[9..12]).into(),
        _ if answer.is_empty() => "closed".into(),
        _ => "other".into(),
    }
}

#[test]
fn mutated_requests_never_crash_or_starve_a_worker() {
    let seed = env_or("FUZZ_WIRE_SEED", SEED);
    let count = env_or("FUZZ_WIRE_INPUTS", INPUTS as u64) as usize;
    let b = start();
    let mut bystanders = Vec::new();
    for via in [Via::Plain, Via::Tls] {
        let mut c = Conn::open(&b, via).expect("a bystander connects");
        hello(&mut c).expect("a bystander is served before the run");
        bystanders.push((via, c));
    }

    let started = Instant::now();
    let mut f = Findings::default();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_via: BTreeMap<String, usize> = BTreeMap::new();
    let mut ran = 0;
    for i in 0..count {
        let inp = input(seed, i);
        let Some((answer, closed)) = send(&b, &inp) else {
            f.dead.push(format!(
                "input {i}: no connection to the {:?} listener",
                inp.via
            ));
            break;
        };
        ran += 1;
        *by_via.entry(format!("{:?}", inp.via)).or_default() += 1;
        *statuses.entry(first_status(&answer)).or_default() += 1;
        if !closed {
            f.stalls.push(i);
        }
        let mut panicked = f.scan_log(&b.proxy, Some((i, &inp)));
        if answer.is_empty() {
            // A panic closes the connection without an answer; its log line
            // may still be on its way through the pipe.
            let until = Instant::now() + Duration::from_millis(20);
            while !panicked && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
                panicked = f.scan_log(&b.proxy, Some((i, &inp)));
            }
        }
        if panicked {
            f.confirm(&b, seed, i);
        }
        if (i + 1) % CHECK_EVERY == 0 || i + 1 == count {
            let dead = liveness(&b, &mut bystanders, i);
            f.scan_log(&b.proxy, None);
            f.scan_upstreams(&b, (i / CHECK_EVERY) * CHECK_EVERY, i);
            if !dead.is_empty() {
                f.dead.extend(dead);
                break;
            }
        }
    }

    println!(
        "fuzz_wire: {ran} inputs from seed {seed:#x} in {:.1?}; by listener {by_via:?}; \
         first answers by status {statuses:?}; {} left open past {CLOSE_WAIT:?} (first: {:?})",
        started.elapsed(),
        f.stalls.len(),
        &f.stalls[..f.stalls.len().min(10)],
    );
    assert!(
        !f.failed(),
        "fuzz_wire (seed {seed:#x}) found:{}\n\nproxy stderr (last 40 lines):\n{}",
        f.report(),
        b.proxy
            .stderr_lines()
            .iter()
            .rev()
            .take(40)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The inputs reached every kind of answer: a fuzzer that only ever got
    // 400s would pass for nothing.
    for status in ["200", "301", "308", "400", "404", "502"] {
        assert!(
            statuses.contains_key(status),
            "no input was answered {status}: {statuses:?}"
        );
    }
    assert!(b.app.heads_with("") > 0 && b.canary.heads_with("") > 0);
}
