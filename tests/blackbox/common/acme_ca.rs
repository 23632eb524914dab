//! A scripted ACME CA for the failure tests: a real HTTPS server (rustls,
//! a leaf for 127.0.0.1 signed by a fresh test root) on 127.0.0.1, served
//! by one thread, one request per connection as ringside's client sends
//! them. The test's script writes the raw answer to every request; the
//! answers a well-behaved CA gives (directory, nonce, account) are here
//! for it to fall back on. Every request is recorded, with its time and,
//! for a JWS POST, its protected header.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rustls::{
    crypto::ring::default_provider,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    ServerConfig, ServerConnection, StreamOwned,
};
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

/// One request the CA was sent.
#[derive(Clone, Debug)]
pub struct CaSeen {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    pub at: Instant,
    /// Which request this is, from 0, over the CA's life.
    pub index: usize,
}

impl CaSeen {
    /// The JWS protected header of a POST (RFC 8555 §6.2), decoded.
    pub fn protected(&self) -> serde_json::Value {
        let jws: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: a body that is not JSON: {e}",
                self.method, self.path
            )
        });
        let b64 = jws["protected"].as_str().expect("a protected header");
        let raw = URL_SAFE_NO_PAD.decode(b64).expect("base64url");
        serde_json::from_slice(&raw).expect("a JSON protected header")
    }

    /// The nonce a POST carried.
    pub fn nonce(&self) -> String {
        self.protected()["nonce"]
            .as_str()
            .expect("a nonce")
            .to_string()
    }

    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

/// The script: the raw bytes answering one request (`ca` gives the
/// standard answers and the CA's URLs).
type Script = dyn Fn(&Ca, &CaSeen) -> Vec<u8> + Send + Sync;

/// What the script sees of the CA: its URLs and standard answers.
pub struct Ca {
    port: u16,
}

struct Inner {
    ca: Ca,
    seen: Mutex<Vec<CaSeen>>,
    cv: Condvar,
    stop: AtomicBool,
}

/// The CA; its thread stops when it is dropped.
pub struct ScriptedCa {
    inner: Arc<Inner>,
    /// The root that signed the CA's HTTPS certificate (PEM): `[acme] ca`.
    pub root_pem: String,
}

/// The paths of the directory this CA serves.
pub const DIRECTORY: &str = "/directory";
pub const NEW_NONCE: &str = "/nonce";
pub const NEW_ACCOUNT: &str = "/new-account";
pub const NEW_ORDER: &str = "/new-order";

impl ScriptedCa {
    pub fn start(script: impl Fn(&Ca, &CaSeen) -> Vec<u8> + Send + Sync + 'static) -> Self {
        let root = super::pki::TestCa::new("scripted ACME CA");
        let (leaf, key) = root.leaf(&["127.0.0.1"], |_| {});
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(leaf.der().to_vec())], der)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let inner = Arc::new(Inner {
            ca: Ca {
                port: listener.local_addr().unwrap().port(),
            },
            seen: Mutex::default(),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let config = Arc::new(config);
        let script: Box<Script> = Box::new(script);
        let shared = inner.clone();
        thread::spawn(move || serve(&shared, &listener, &config, &*script));
        ScriptedCa {
            inner,
            root_pem: root.cert.pem(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.inner.ca.url(path)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<CaSeen> {
        self.inner.seen.lock().unwrap().clone()
    }

    /// Waits until `n` requests match `pred`; all those seen so far.
    pub fn wait_for(
        &self,
        n: usize,
        pred: impl Fn(&CaSeen) -> bool,
        wait: Duration,
    ) -> Vec<CaSeen> {
        let deadline = Instant::now() + wait;
        let mut seen = self.inner.seen.lock().unwrap();
        loop {
            if seen.iter().filter(|s| pred(s)).count() >= n {
                return seen.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "the CA did not see {n} such requests: {seen:#?}"
            );
            seen = self.inner.cv.wait_timeout(seen, deadline - now).unwrap().0;
        }
    }
}

impl Ca {
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// A well-behaved CA's answer: the directory, a nonce, an account;
    /// 404 for the rest.
    pub fn standard(&self, req: &CaSeen) -> Vec<u8> {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", DIRECTORY) => {
                let dir = serde_json::json!({
                    "newNonce": self.url(NEW_NONCE),
                    "newAccount": self.url(NEW_ACCOUNT),
                    "newOrder": self.url(NEW_ORDER),
                });
                answer(200, "", &dir.to_string())
            }
            ("HEAD" | "GET", NEW_NONCE) => answer(200, &nonce_field(req), ""),
            ("POST", NEW_ACCOUNT) => {
                let fields = format!("{}Location: {}\r\n", nonce_field(req), self.url("/acct/1"));
                answer(201, &fields, r#"{"status":"valid"}"#)
            }
            _ => answer(404, &nonce_field(req), ""),
        }
    }
}

impl Drop for ScriptedCa {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        // Wakes the accept; a CA whose thread already ended refuses it, which is fine.
        let _ = TcpStream::connect(("127.0.0.1", self.inner.ca.port));
    }
}

/// A fresh `Replay-Nonce` field, unique per request.
pub fn nonce_field(req: &CaSeen) -> String {
    format!("Replay-Nonce: nonce-{}\r\n", req.index)
}

/// A whole answer: status, `fields` (each ending in CRLF), a body.
pub fn answer(status: u16, fields: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} Scripted\r\n{fields}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A problem document (RFC 8555 §6.7) answer: `kind` is the error's short
/// name (`rateLimited`), `fields` more header fields.
pub fn problem(status: u16, kind: &str, detail: &str, fields: &str) -> Vec<u8> {
    let doc = serde_json::json!({
        "type": format!("urn:ietf:params:acme:error:{kind}"),
        "detail": detail,
        "status": status,
    });
    let fields = format!("Content-Type: application/problem+json\r\n{fields}");
    answer(status, &fields, &doc.to_string())
}

fn serve(inner: &Inner, listener: &TcpListener, config: &Arc<ServerConfig>, script: &Script) {
    for tcp in listener.incoming() {
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(tcp) = tcp else { continue };
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let conn = ServerConnection::new(config.clone()).unwrap();
        let mut tls = StreamOwned::new(conn, tcp);
        let Some((method, path, body)) = read_request(&mut tls) else {
            continue;
        };
        let req = {
            let mut seen = inner.seen.lock().unwrap();
            let req = CaSeen {
                method,
                path,
                body,
                at: Instant::now(),
                index: seen.len(),
            };
            seen.push(req.clone());
            inner.cv.notify_all();
            req
        };
        let out = script(&inner.ca, &req);
        // A client that hung up early only loses its own answer.
        let _ = tls.write_all(&out).and_then(|()| tls.flush());
        tls.conn.send_close_notify();
        let _ = tls.flush(); // as above
    }
}

/// Method, path and body (by Content-Length) of one request.
fn read_request(
    tls: &mut StreamOwned<ServerConnection, TcpStream>,
) -> Option<(String, String, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = tls.read(&mut buf).ok().filter(|&n| n > 0)?;
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut words = head.split(' ');
    let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while raw.len() < end + length {
        let n = tls.read(&mut buf).ok().filter(|&n| n > 0)?;
        raw.extend_from_slice(&buf[..n]);
    }
    Some((method, path, raw[end..end + length].to_vec()))
}
