//! WebSocket over TLS: a real rustls client sends an Upgrade to a TLS
//! listener, a scripted upstream answers 101, then bytes flow both ways
//! through the tunnel, half-closes pass in each direction (close_notify on
//! the client side, FIN on the upstream side) and a silent tunnel ends after
//! the upstream's read_timeout.

use crate::common::farm::within;
use crate::common::*;
use rustls::{
    crypto::ring::default_provider, ClientConfig, ClientConnection, RootCertStore, StreamOwned,
};
use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A proxy with one TLS listener for `ws.test` (a test CA's leaf) in front
/// of `up`, its access log in its folder, and a client config that trusts
/// that CA.
fn tls_proxy(up: SocketAddr, upstream_keys: &str) -> (Proxy, Arc<ClientConfig>) {
    let dir = TestDir::new();
    let ca = TestCa::new("ws CA");
    let (leaf, key) = ca.leaf(&["ws.test"], |_| {});
    let cert = dir.write("ws.pem", &(leaf.pem() + &ca.cert.pem()));
    let keyf = dir.write("ws.key", &key.serialize_pem());
    let toml = format!(
        "[runtime]\nworkers = 1\nshutdown_timeout = \"5s\"\n\n\
         [log]\naccess = \"{}\"\nlevel = \"warn\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n\n{}{}",
        dir.path().join("access.log").display(),
        cert.display(),
        keyf.display(),
        upstream("app", up, upstream_keys),
        route("/", "app")
    );
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let client = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Proxy::start_in(dir, &toml), Arc::new(client))
}

fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    crate::common::h2kit::tls_connect_to(addr, config, "ws.test")
}

/// Reads exactly `n` bytes (panics on EOF or a timeout).
fn read_exact(s: &mut Tls, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    s.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("reading {n} bytes through the tunnel: {e}"));
    got
}

/// Reads up to the end of a response head; returns the head.
fn read_head(s: &mut Tls) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).expect("response head");
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Upgrades `s` on `target`; checks the 101 and the upstream's first bytes.
fn upgrade(s: &mut Tls, target: &str) {
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let head = read_head(s);
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains(&format!("Sec-WebSocket-Accept: {WS_ACCEPT}\r\n")));
    assert_eq!(read_exact(s, 10), b"srv-hello\n");
}

/// Sends close_notify and shuts the socket's write half: the client's
/// half-close over TLS.
fn half_close(s: &mut Tls) {
    s.conn.send_close_notify();
    s.flush().unwrap();
    s.sock.shutdown(Shutdown::Write).unwrap();
}

/// The upstream: a 101 with `srv-hello\n` to an Upgrade, then per target:
/// `/ws/echo…` echoes until the proxy's FIN, answers `bye\n` and closes;
/// `/ws/upclose…` shuts its write half at once and reads until the FIN;
/// `/ws/quiet…` says nothing more. Either way it reports every byte it got
/// after the 101 on `got`. Other requests get the echo response.
fn ws_upstream(got: mpsc::Sender<(String, Vec<u8>)>) -> Upstream {
    let got = Mutex::new(got);
    Upstream::start(move |c| {
        while let Some(req) = c.read_request() {
            if !req.has_token("upgrade", "websocket") {
                if !c.write(&echo_response(&req)) {
                    return;
                }
                continue;
            }
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {WS_ACCEPT}\r\n\r\nsrv-hello\n"
            );
            if !c.write(resp.as_bytes()) {
                return;
            }
            let echo = req.target.starts_with("/ws/echo");
            let close_first = req.target.starts_with("/ws/upclose");
            let Some(all) = c.tunnel_peer(echo, close_first) else {
                return;
            };
            // The test may have finished already.
            let _ = got.lock().unwrap().send((req.target.clone(), all));
            return;
        }
    })
}

#[test]
fn tls_tunnel_carries_bytes_both_ways_and_passes_the_client_half_close() {
    let (tx, rx) = mpsc::channel();
    let up = ws_upstream(tx);
    let (proxy, client) = tls_proxy(up.addr(), "");
    let mut s = connect(proxy.addr(), &client);
    let t = format!("/ws/echo-{}", token());
    upgrade(&mut s, &t);
    let req = up.only(&t);
    assert_eq!(req.header("x-forwarded-proto"), Some("https"));
    assert!(req.has_token("connection", "upgrade"));

    // A small frame, then 1 MiB in 64 KiB pieces, each echoed byte-exact.
    let frame = b"\x81\x85\x01\x02\x03\x04abcde";
    s.write_all(frame).unwrap();
    assert_eq!(read_exact(&mut s, frame.len()), frame);
    let bulk = pattern(1 << 20, 11);
    for piece in bulk.chunks(64 * 1024) {
        s.write_all(piece).unwrap();
        assert!(read_exact(&mut s, piece.len()) == piece, "echo damaged");
    }

    // Another connection is served while the tunnel is open.
    let mut other = connect(proxy.addr(), &client);
    other
        .write_all(b"GET /plain HTTP/1.1\r\nHost: ws.test\r\n\r\n")
        .unwrap();
    assert!(read_head(&mut other).starts_with("HTTP/1.1 200 "));

    // The client's half-close reaches the upstream as a FIN; the upstream's
    // last word and its close come back (as close_notify).
    half_close(&mut s);
    let (target, all) = rx.recv_timeout(IO_TIMEOUT).expect("upstream saw no FIN");
    assert_eq!(target, t);
    assert_eq!(all.len(), frame.len() + bulk.len());
    assert!(all[frame.len()..] == bulk[..], "upstream got damaged bytes");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("the tunnel ends with close_notify");
    assert_eq!(rest, b"bye\n");

    // The access line counts what reached the client after the 101 head,
    // as nginx's `$body_bytes_sent`: srv-hello, the echoes and bye.
    let log = proxy.dir().join("access.log");
    let want = format!(" 101 {} ", 10 + frame.len() + bulk.len() + 4);
    let mut line = String::new();
    within(IO_TIMEOUT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        line = text
            .lines()
            .find(|l| l.contains(&t))
            .unwrap_or("")
            .to_string();
        !line.is_empty()
    });
    assert!(line.contains(&want), "{want:?} in {line:?}");
}

#[test]
fn tls_tunnel_passes_the_upstream_half_close_and_keeps_carrying_the_client() {
    let (tx, rx) = mpsc::channel();
    let up = ws_upstream(tx);
    let (proxy, client) = tls_proxy(up.addr(), "");
    let mut s = connect(proxy.addr(), &client);
    let t = format!("/ws/upclose-{}", token());
    upgrade(&mut s, &t);
    // The upstream's FIN arrives as close_notify: a clean end of stream.
    let mut b = [0u8; 16];
    assert_eq!(s.read(&mut b).expect("close_notify, not an error"), 0);
    // The client may still send; the upstream still reads.
    s.write_all(b"still talking").unwrap();
    s.flush().unwrap();
    half_close(&mut s);
    let (target, all) = rx.recv_timeout(IO_TIMEOUT).expect("upstream saw no FIN");
    assert_eq!(target, t);
    assert_eq!(all, b"still talking");
}

#[test]
fn silent_tls_tunnel_ends_after_read_timeout() {
    let (tx, _rx) = mpsc::channel();
    let up = ws_upstream(tx);
    let (proxy, client) = tls_proxy(up.addr(), "read_timeout = \"400ms\"");
    let mut s = connect(proxy.addr(), &client);
    upgrade(&mut s, &format!("/ws/quiet-{}", token()));
    // Traffic keeps it open past the timeout.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(b"ping").unwrap();
        s.flush().unwrap();
    }
    let quiet = Instant::now();
    let mut b = [0u8; 16];
    let end = s.read(&mut b);
    let took = quiet.elapsed();
    assert!(
        matches!(&end, Ok(0)) || matches!(&end, Err(e) if e.kind() != ErrorKind::WouldBlock),
        "the tunnel said {end:?}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2500),
        "closed {took:?} after the last byte; read_timeout is 400ms"
    );
}
