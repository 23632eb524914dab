//! The `h2` target: HTTP/2 frames through the real connection code
//! (`conn::serve`, TLS with ALPN h2, `http2::serve`, `exchange::exchange`)
//! on a worker `Shard`.

use std::{
    cell::RefCell,
    io::{Read, Write},
    net::SocketAddr,
    path::PathBuf,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::{
    control::health,
    shard::{Listen, Shard},
};

/// The client's connection preface (RFC 9113 section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The payload of the PING that ends each input: its ACK says the server
/// has read every frame before it.
const MARK: &[u8; 8] = b"fuzz-end";
/// How long the client waits after the PING's ACK for the streams it
/// opened to finish before it closes.
const SETTLE: Duration = Duration::from_millis(20);
/// How long the client waits for the PING's ACK once it has written
/// everything.
const ACK_WAIT: Duration = Duration::from_millis(50);
/// Longest one input may take, from connect to close.
const INPUT_LIMIT: Duration = Duration::from_secs(2);

type Runtime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// One worker's `Shard` and a TLS listener with `http2 = true`, served by
/// `conn::serve` on a monoio runtime of this thread; a client thread per
/// input does the TLS handshake (ALPN h2) and writes the frames. Routes of
/// every kind: an upstream on a thread of its own (`/`, `/c/` cached and
/// gzipped, `/split/`), one where nothing listens (`/down/`), `/static/`,
/// `/old/` (redirect) and `/hello` (respond).
pub struct H2 {
    rt: RefCell<Runtime>,
    shard: Rc<Shard>,
    listen: Rc<Listen>,
    listener: RefCell<Option<std::net::TcpListener>>,
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    dir: PathBuf,
}

impl H2 {
    /// `cert_pem` and `key_pem`: a certificate for "localhost" and its key
    /// (the fuzz target makes them with rcgen); the client trusts it as is.
    pub fn new(cert_pem: &str, key_pem: &str) -> H2 {
        let dir = std::env::temp_dir().join(format!("ringside-fuzz-h2-{}", std::process::id()));
        let www = dir.join("www");
        std::fs::create_dir_all(&www).expect("create the fuzz folder");
        std::fs::write(www.join("index.html"), "<p>index</p>\n").expect("write index.html");
        std::fs::write(www.join("a.txt"), "a".repeat(3000)).expect("write a.txt");
        std::fs::write(dir.join("cert.pem"), cert_pem).expect("write cert.pem");
        std::fs::write(dir.join("key.pem"), key_pem).expect("write key.pem");
        let up = upstream();
        let down = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let down_addr = down.local_addr().expect("local address");
        drop(down);
        let file = dir.join("ringside.toml");
        std::fs::write(&file, h2_config(up, down_addr)).expect("write ringside.toml");
        let config = match crate::control::start::load(&file) {
            Ok((c, _)) => Arc::new(c),
            Err(p) => panic!("the fuzz config is invalid: {p}"),
        };
        let to_dev_null = crate::config::LogTarget::File("/dev/null".into());
        crate::log::init_error_log(&to_dev_null, crate::config::Level::Error)
            .expect("open /dev/null");
        let configured = config.listeners[0].address;
        let health = Arc::new(health::Table::new(&config));
        let shard = Rc::new(Shard::new(0, config, health, None, false));
        *shard.cache.borrow_mut() = crate::cache::Cache::new(1 << 20);
        // As the workers' listeners are bound (TCP_NODELAY included).
        let listener =
            crate::accept::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind the listener");
        let addr = listener.local_addr().expect("local address");
        let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("a monoio runtime");
        H2 {
            rt: RefCell::new(rt),
            shard,
            listen: Rc::new(Listen {
                configured,
                port: addr.port(),
                proto: "http",
                stat: 0,
            }),
            listener: RefCell::new(Some(listener)),
            addr,
            client: client_config(cert_pem),
            dir,
        }
    }

    /// One connection: the preface, an empty SETTINGS, the frames `input`
    /// describes (see [`frames`]), and a PING; the client reads until the
    /// PING's ACK and until no request of it is in flight, then closes.
    pub fn run(&self, input: &[u8]) {
        let wire = frames(input);
        let acked = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let client = {
            let (config, addr) = (self.client.clone(), self.addr);
            let (acked, done) = (acked.clone(), done.clone());
            std::thread::spawn(move || client_side(addr, config, &wire, &acked, &done))
        };
        self.rt.borrow_mut().block_on(self.serve_one(&acked, &done));
        // The client thread does not panic: it gives up on any error.
        client.join().expect("the client thread");
    }

    async fn serve_one(&self, acked: &AtomicBool, done: &AtomicBool) {
        let listener = {
            let mut slot = self.listener.borrow_mut();
            match slot.as_ref().map(|l| l.try_clone()) {
                Some(Ok(l)) => l,
                _ => {
                    slot.take();
                    return;
                }
            }
        };
        let Ok(listener) = monoio::net::TcpListener::from_std(listener) else {
            return;
        };
        let shard = &self.shard;
        let serve = async {
            if let Ok(Ok((stream, peer))) =
                monoio::time::timeout(INPUT_LIMIT, listener.accept()).await
            {
                crate::conn::serve(stream, peer, self.listen.clone(), shard.clone()).await;
            }
        };
        // The worker's housekeeping: deadlines fire; and the client learns
        // when nothing it asked for is in flight any more, or that it has
        // waited long enough (a stream still waiting for its body then ends
        // with the connection, rather than with client_body_timeout).
        let watch = async {
            let (mut calm, mut since) = (0, None);
            loop {
                monoio::time::sleep(Duration::from_millis(1)).await;
                let now = monoio::time::Instant::now();
                crate::timer::fire(now);
                if !acked.load(Ordering::Acquire) {
                    continue;
                }
                let since = *since.get_or_insert(now);
                // Two looks a sleep apart: streams h2 had queued are
                // running by the second.
                calm = if shard.in_flight.get() == 0 {
                    calm + 1
                } else {
                    0
                };
                if calm >= 2 || now - since >= SETTLE {
                    done.store(true, Ordering::Release);
                }
            }
        };
        monoio::select! {
            _ = serve => {}
            _ = watch => {}
        }
        // Streams still running finish (or time out) before the next input.
        let until = std::time::Instant::now() + INPUT_LIMIT;
        while shard.in_flight.get() + shard.sessions.get() + shard.connections.get() > 0
            && std::time::Instant::now() < until
        {
            monoio::time::sleep(Duration::from_millis(1)).await;
            crate::timer::fire(monoio::time::Instant::now());
        }
    }
}

impl Drop for H2 {
    fn drop(&mut self) {
        // Best effort: a leftover temp folder is harmless.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn h2_config(up: SocketAddr, down: SocketAddr) -> String {
    format!(
        r#"
[runtime]
workers = 1

[log]
access = "off"
level = "error"

[limits]
client_header_timeout = "1s"
client_body_timeout = "200ms"
client_send_timeout = "200ms"
keepalive_timeout = "1s"
max_request_head = "8k"
max_request_body = "64k"

[[listen]]
address = "127.0.0.1:0"
http2 = true
hsts = "max-age=60"
tls = {{ cert = "cert.pem", key = "key.pem" }}

[[upstream]]
name = "app"
connect_timeout = "500ms"
read_timeout = "500ms"
send_timeout = "500ms"
servers = [ {{ address = "{up}" }} ]

[[upstream]]
name = "down"
connect_timeout = "200ms"
servers = [ {{ address = "{down}" }} ]

[[route]]
path = "/"
upstream = "app"

[[route]]
path = "/c/"
upstream = "app"
cache = {{ "200" = "1m" }}
gzip = {{ types = ["text/plain"], min_length = 10 }}

[[route]]
path = "/split/"
split = [ {{ upstream = "app", weight = 1 }}, {{ upstream = "down", weight = 1 }} ]
strip_prefix = true

[[route]]
path = "/down/"
upstream = "down"

[[route]]
path = "/static/"
static = "www/"

[[route]]
path = "/old/"
redirect = {{ to = "https://example.com$request_uri", status = 301 }}

[[route]]
path = "/hello"
respond = {{ status = 200, body = "hi" }}
"#
    )
}

/// The bytes the client writes for `input`. `input[0]` odd: the rest is
/// written as it is. Else it is a list of frames, each as `type, flags,
/// stream, length (2 bytes, big-endian)` and that many payload bytes (or
/// what is left), written with a proper 9-byte frame header.
pub fn frames(input: &[u8]) -> Vec<u8> {
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(4, 0, 0, &[]));
    match input.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => wire.extend_from_slice(rest),
        Some((_, mut rest)) => {
            while let [ty, flags, stream, hi, lo, tail @ ..] = rest {
                let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
                // Stream ids past 127 are spread apart to reach high ids.
                let id = match *stream {
                    s @ 0..=127 => u32::from(s),
                    s => u32::from(s) << 23,
                };
                wire.extend(frame(*ty, *flags, id, &tail[..n]));
                rest = &tail[n..];
            }
        }
        None => {}
    }
    wire.extend(frame(6, 0, 0, MARK));
    wire
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], ty, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn client_config(cert_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("a PEM certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("a usable certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(c)
}

/// The client thread: handshake, `wire`, then reads until the PING's ACK
/// and `done`, the server's close, or `INPUT_LIMIT`. Gives up quietly on any
/// error: what the server does is what is being tested.
fn client_side(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    wire: &[u8],
    acked: &AtomicBool,
    done: &AtomicBool,
) {
    let until = std::time::Instant::now() + INPUT_LIMIT;
    let Ok(tcp) = std::net::TcpStream::connect(addr) else {
        return;
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from("localhost") else {
        return;
    };
    let (Ok(()), Ok(()), Ok(conn)) = (
        tcp.set_read_timeout(Some(Duration::from_millis(1))),
        tcp.set_nodelay(true),
        rustls::ClientConnection::new(config, name),
    ) else {
        return;
    };
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let pending = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) && std::time::Instant::now() < until
    };
    while s.conn.is_handshaking() {
        match s.conn.complete_io(&mut s.sock) {
            Ok(_) => {}
            Err(e) if pending(&e) => {}
            Err(_) => return,
        }
    }
    if s.write_all(wire).and_then(|()| s.flush()).is_err() {
        return;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    // A frame the input left unfinished swallows the PING: no ACK comes.
    let ack_by = std::time::Instant::now() + ACK_WAIT;
    while !(acked.load(Ordering::Acquire) && done.load(Ordering::Acquire)) {
        if !acked.load(Ordering::Acquire) && std::time::Instant::now() > ack_by {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if ping_acked(&mut got) {
                    acked.store(true, Ordering::Release);
                }
            }
            Err(e) if pending(&e) => {}
            Err(_) => break,
        }
    }
    s.conn.send_close_notify();
    // The connection closes next whatever these say.
    let _ = s.flush();
    let _ = s.sock.shutdown(std::net::Shutdown::Both);
}

/// Consumes the whole frames at the start of `got`; true if one was the
/// ACK of the PING that carries `MARK`.
fn ping_acked(got: &mut Vec<u8>) -> bool {
    let mut at = 0;
    let mut seen = false;
    while let Some(h) = got.get(at..at + 9) {
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let Some(payload) = got.get(at + 9..at + 9 + len) else {
            break;
        };
        seen |= h[3] == 6 && h[4] & 1 == 1 && payload == MARK;
        at += 9 + len;
    }
    got.drain(..at);
    seen
}

/// A scripted upstream on threads of its own: reads a head, answers by
/// what the target names (`chunked`, `close`, `big`, else a short body
/// with Content-Length), and closes.
fn upstream() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let addr = l.local_addr().expect("local address");
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || answer(conn));
        }
    });
    addr
}

fn answer(mut conn: std::net::TcpStream) {
    if conn.set_read_timeout(Some(INPUT_LIMIT)).is_err() {
        return;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let has = |w: &[u8]| line.windows(w.len()).any(|x| x == w);
    let reply: Vec<u8> = if has(b"chunked") {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n\
          5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n"
            .to_vec()
    } else if has(b"close") {
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close".to_vec()
    } else if has(b"big") {
        let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n".to_vec();
        r.resize(r.len() + 300_000, b'b');
        r
    } else {
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\
          Cache-Control: max-age=60\r\nConnection: close\r\n\r\nhello"
            .to_vec()
    };
    // The proxy may have gone: nothing to do about it here.
    let _ = conn.write_all(&reply);
}
