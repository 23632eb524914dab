//! A blocking HTTPS/1.1 client for the directory: one connection per
//! request (`Connection: close`) over `std::net::TcpStream` and rustls.
//!
//! Trust: the system store (`/etc/ssl/certs/ca-certificates.crt`, Debian's
//! bundle) plus `[acme] ca` when set.

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    sync::Arc,
    time::Duration,
};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, ServerName},
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
};

/// The system's roots, as Debian's ca-certificates installs them.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Connect, read and write limit of one request.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read: a directory, an order or a chain is a few KiB.
const MAX_ANSWER: u64 = 1 << 20;

pub struct Https {
    config: Arc<ClientConfig>,
}

/// One answer: status, fields (names lowercase) and the body.
pub struct Answer {
    pub status: u16,
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn field(&self, name: &str) -> Option<&str> {
        let f = self.fields.iter().find(|(n, _)| n == name);
        f.map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("the CA's answer is not JSON: {e}"))
    }

    /// `Retry-After` (RFC 9110 §10.2.3): seconds, or a date (the time
    /// left until it, nothing when it is past); none when unreadable.
    pub fn retry_after(&self) -> Option<Duration> {
        let v = self.field("retry-after")?;
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        let at = httpdate::parse_http_date(v).ok()?;
        let left = at.duration_since(std::time::SystemTime::now()).ok()?;
        // Whole seconds, rounded up: never sooner than asked.
        Some(Duration::from_secs(
            left.as_secs() + u64::from(left.subsec_nanos() > 0),
        ))
    }
}

impl Https {
    /// With the system roots and `ca` (PEM) when given.
    pub fn new(ca: Option<&std::path::Path>) -> Result<Https, String> {
        let mut roots = RootCertStore::empty();
        if let Ok(pem) = std::fs::read(SYSTEM_ROOTS) {
            for der in CertificateDer::pem_slice_iter(&pem).flatten() {
                // A root the parser rejects is left out, as every client does.
                let _ = roots.add(der);
            }
        }
        if let Some(ca) = ca {
            let pem = crate::config::files::read_regular(ca, crate::config::files::MAX_PEM)?;
            for der in CertificateDer::pem_slice_iter(&pem) {
                let der = der.map_err(|e| format!("{}: {e}", ca.display()))?;
                roots
                    .add(der)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Https {
            config: Arc::new(config),
        })
    }

    /// One request; `body` with `Content-Type: application/jose+json`.
    pub fn request(&self, method: &str, url: &str, body: Option<&[u8]>) -> Result<Answer, String> {
        let (host, port, path) = crate::config::split_url(url)
            .ok_or_else(|| format!("\"{url}\" is not an https:// URL"))?;
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("{host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host}: no address"))?;
        let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        tcp.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let conn = ClientConnection::new(self.config.clone(), name).map_err(|e| e.to_string())?;
        let mut tls = StreamOwned::new(conn, tcp);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: ringside/{}\r\n\
             Accept: */*\r\nConnection: close\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(b) = body {
            head.push_str("Content-Type: application/jose+json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.unwrap_or_default());
        tls.write_all(&out)
            .and_then(|()| tls.flush())
            .map_err(|e| format!("{host}:{port}: {e}"))?;
        let mut raw = Vec::new();
        match Read::by_ref(&mut tls)
            .take(MAX_ANSWER)
            .read_to_end(&mut raw)
        {
            Ok(_) => {}
            // A server that closes without close_notify: the framing below
            // still tells whether the answer is whole.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(format!("{host}:{port}: {e}")),
        }
        parse(&raw).ok_or_else(|| format!("{method} {url}: a truncated or malformed HTTP answer"))
    }
}

/// Status line, fields and body (Content-Length, chunked or to the end).
fn parse(raw: &[u8]) -> Option<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let fields: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let field = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let body = if field("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)?
    } else if let Some(n) = field("content-length") {
        rest.get(..n.parse::<usize>().ok()?)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(Answer {
        status,
        fields,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn answers_parse_with_each_framing() {
        let a = super::parse(
            b"HTTP/1.1 201 Created\r\nReplay-Nonce: n1\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!(
            (a.status, a.field("replay-nonce"), &a.body[..]),
            (201, Some("n1"), &b"{}"[..])
        );
        let a = super::parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(a.body, b"abcd");
        assert!(super::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_none());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let answer = |v: &str| super::Answer {
            status: 429,
            fields: vec![("retry-after".into(), v.into())],
            body: Vec::new(),
        };
        let secs = |v: &str| answer(v).retry_after().map(|d| d.as_secs());
        assert_eq!(secs("120"), Some(120));
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(600);
        let left = secs(&httpdate::fmt_http_date(later)).unwrap();
        assert!((599..=601).contains(&left), "{left}");
        assert_eq!(secs("Thu, 01 Jan 1970 00:00:00 GMT"), None, "a past date");
        assert_eq!(secs("soon"), None);
        assert_eq!(secs("-5"), None);
    }
}
