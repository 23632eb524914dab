//! HTTP/2 test kit: a TLS listener with `http2 = true` and a self-signed
//! certificate made at test time, a real HTTP/2 client (the `h2` crate over
//! tokio-rustls), and a raw frame client for the abuse cases, which writes
//! exact frames over a synchronous rustls stream.

use super::*;
use rustls::{
    crypto::ring::default_provider,
    pki_types::{CertificateDer, ServerName},
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
};
use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    sync::Arc,
    time::Instant,
};

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const PRIORITY: u8 = 2;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PUSH_PROMISE: u8 = 5;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 1;
pub const ACK: u8 = 1;
pub const END_HEADERS: u8 = 4;

pub const NO_ERROR: u32 = 0;
pub const PROTOCOL_ERROR: u32 = 1;
pub const FLOW_CONTROL_ERROR: u32 = 3;
pub const STREAM_CLOSED: u32 = 5;
pub const FRAME_SIZE_ERROR: u32 = 6;
pub const REFUSED_STREAM: u32 = 7;
pub const COMPRESSION_ERROR: u32 = 9;
pub const ENHANCE_YOUR_CALM: u32 = 11;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A proxy with one TLS listener offering h2 in front of `up` (route "/"),
/// and a client config that trusts its certificate.
pub struct H2Proxy {
    pub proxy: Proxy,
    pub client: Arc<ClientConfig>,
}

impl H2Proxy {
    pub fn start(up: SocketAddr, workers: usize, limits: &str, routes: &str) -> H2Proxy {
        Self::start_logged(up, workers, limits, routes, "access = \"off\"")
    }

    /// As `start`, with `log` as the `[log]` access settings.
    pub fn start_logged(
        up: SocketAddr,
        workers: usize,
        limits: &str,
        routes: &str,
        log: &str,
    ) -> H2Proxy {
        let dir = TestDir::new();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_path = dir.write("cert.pem", &cert.pem());
        let key_path = dir.write("key.pem", &key.serialize_pem());
        let toml = format!(
            "[runtime]\nworkers = {workers}\nshutdown_timeout = \"5s\"\n\n\
             [log]\n{log}\nlevel = \"warn\"\n\n\
             [limits]\n{limits}\n\n\
             [[listen]]\naddress = \"127.0.0.1:0\"\nhttp2 = true\n\
             tls = {{ cert = \"{}\", key = \"{}\" }}\n\n{routes}{}{}",
            cert_path.display(),
            key_path.display(),
            upstream("app", up, ""),
            route("/", "app")
        );
        let proxy = Proxy::start_in(dir, &toml);
        let client = client_config(cert.der().clone(), &[b"h2", b"http/1.1"]);
        H2Proxy { proxy, client }
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    /// The same trust, offering only `alpn`.
    pub fn client_with(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut c = (*self.client).clone();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }
}

fn client_config(ca: CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut c = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

pub type TlsSync = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to "localhost", handshake done.
pub fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> TlsSync {
    tls_connect_to(addr, config, "localhost")
}

/// A TLS connection for server name `sni`, handshake done.
pub fn tls_connect_to(addr: SocketAddr, config: &Arc<ClientConfig>, sni: &str) -> TlsSync {
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let conn = ClientConnection::new(config.clone(), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    s
}

/// One frame as read off the wire.
#[derive(Debug, Clone)]
pub struct Frame {
    pub ty: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM.
    pub fn code(&self) -> u32 {
        let at = if self.ty == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }

    /// The last stream a GOAWAY says was processed.
    pub fn last_stream(&self) -> u32 {
        u32::from_be_bytes(self.payload[..4].try_into().unwrap()) & 0x7fff_ffff
    }
}

pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK block of literal fields without indexing or Huffman coding.
pub fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        out.push(0);
        int7(&mut out, n.len());
        out.extend_from_slice(n.as_bytes());
        int7(&mut out, v.len());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn int7(out: &mut Vec<u8>, mut n: usize) {
    if n < 127 {
        out.push(n as u8);
        return;
    }
    out.push(127);
    n -= 127;
    while n >= 128 {
        out.push((n % 128 + 128) as u8);
        n /= 128;
    }
    out.push(n as u8);
}

/// The fields of a GET for `path`.
pub fn get_fields(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":scheme", "https".into()),
        (":authority", "localhost".into()),
        (":path", path.into()),
    ]
}

pub fn block(fields: &[(&str, String)]) -> Vec<u8> {
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    hpack(&pairs)
}

/// How a raw connection's reading ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    /// The server closed it (end of stream, with or without close_notify,
    /// or a reset).
    Closed,
    /// Nothing came within the read timeout: the connection is still open.
    TimedOut,
}

/// A raw HTTP/2 client connection.
pub struct Raw {
    pub s: TlsSync,
    buf: Vec<u8>,
    /// Why the last `next` returned `None`.
    pub end: Option<End>,
}

impl Raw {
    /// Connects with ALPN h2 and sends the preface and an empty SETTINGS.
    pub fn open(addr: SocketAddr, config: &Arc<ClientConfig>) -> Raw {
        let mut r = Raw::bare(addr, config);
        r.send(PREFACE);
        r.send(&frame(SETTINGS, 0, 0, &[]));
        r
    }

    /// Connects with ALPN h2 and sends nothing.
    pub fn bare(addr: SocketAddr, config: &Arc<ClientConfig>) -> Raw {
        let s = tls_connect(addr, config);
        assert_eq!(s.conn.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
        Raw {
            s,
            buf: Vec::new(),
            end: None,
        }
    }

    /// Writes bytes; false once the server has closed.
    pub fn try_send(&mut self, b: &[u8]) -> bool {
        self.s.write_all(b).is_ok() && self.s.flush().is_ok()
    }

    pub fn send(&mut self, b: &[u8]) {
        assert!(self.try_send(b), "write failed");
    }

    /// The next frame; `None` at end of stream, on error or after
    /// `IO_TIMEOUT` (`end` says which).
    pub fn next(&mut self) -> Option<Frame> {
        let mut chunk = [0u8; 16384];
        loop {
            if self.buf.len() >= 9 {
                let len = (self.buf[0] as usize) << 16
                    | (self.buf[1] as usize) << 8
                    | self.buf[2] as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        ty: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap())
                            & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Some(f);
                }
            }
            match self.s.read(&mut chunk) {
                Ok(0) => {
                    self.end = Some(End::Closed);
                    return None;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.end = Some(End::TimedOut);
                    return None;
                }
                Err(_) => {
                    self.end = Some(End::Closed);
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until a frame matches `want` (answering nothing); `None` if
    /// the connection ended or went quiet first.
    pub fn until(&mut self, want: impl Fn(&Frame) -> bool) -> Option<Frame> {
        self.until_seen(want).0
    }

    /// As `until`, with every frame read before the match.
    pub fn until_seen(&mut self, want: impl Fn(&Frame) -> bool) -> (Option<Frame>, Vec<Frame>) {
        let deadline = Instant::now() + IO_TIMEOUT * 2;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let Some(f) = self.next() else { break };
            if want(&f) {
                return (Some(f), seen);
            }
            seen.push(f);
        }
        if self.end.is_none() {
            self.end = Some(End::TimedOut);
        }
        (None, seen)
    }

    /// GETs `path` on `stream` and reads to the end of its answer: the
    /// frames before the last DATA, or `None` if the answer never ends.
    pub fn get(&mut self, stream: u32, path: &str) -> Option<Vec<Frame>> {
        self.send(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            stream,
            &block(&get_fields(path)),
        ));
        let (last, seen) =
            self.until_seen(|f| f.ty == DATA && f.stream == stream && f.flags & END_STREAM != 0);
        last.map(|_| seen)
    }

    /// The GOAWAY's error code, if one comes before the connection ends.
    pub fn goaway(&mut self) -> Option<u32> {
        self.until(|f| f.ty == GOAWAY).map(|f| f.code())
    }

    /// The RST_STREAM code for `stream`, if one comes.
    pub fn reset_of(&mut self, stream: u32) -> Option<u32> {
        self.until(|f| f.ty == RST_STREAM && f.stream == stream)
            .map(|f| f.code())
    }

    /// True once the server has closed the connection (end of stream or a
    /// reset); false if it is still open after the read timeout.
    pub fn closed(&mut self) -> bool {
        self.end = None;
        self.until(|_| false);
        self.end == Some(End::Closed)
    }
}

/// A real HTTP/2 client: the h2 crate over tokio-rustls on a current-thread
/// tokio runtime owned by the test.
pub mod real {
    use super::*;
    use bytes::Bytes;
    use tokio::net::TcpStream;

    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Connects, with a per-stream receive window of `window` bytes.
    pub async fn connect(
        addr: SocketAddr,
        config: &Arc<ClientConfig>,
        window: u32,
    ) -> h2::client::SendRequest<Bytes> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(window)
            .handshake(tls)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        send
    }

    pub fn request(method: &str, path: &str) -> http::Request<()> {
        http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .body(())
            .unwrap()
    }

    /// Reads a whole body, releasing capacity as it goes.
    pub async fn body(mut b: h2::RecvStream) -> Result<Vec<u8>, h2::Error> {
        let mut out = Vec::new();
        while let Some(d) = b.data().await {
            let d = d?;
            let _ = b.flow_control().release_capacity(d.len());
            out.extend_from_slice(&d);
        }
        Ok(out)
    }

    /// Sends `data` on `s` as the server's window allows, then ends it.
    pub async fn send_all(s: &mut h2::SendStream<Bytes>, data: &[u8]) {
        let mut data = Bytes::copy_from_slice(data);
        while !data.is_empty() {
            s.reserve_capacity(data.len());
            let n = std::future::poll_fn(|cx| s.poll_capacity(cx))
                .await
                .unwrap()
                .unwrap();
            let piece = data.split_to(n.min(data.len()));
            s.send_data(piece, false).unwrap();
        }
        s.send_data(Bytes::new(), true).unwrap();
    }
}
