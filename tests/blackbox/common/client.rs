//! A raw client connection to the proxy and checks on its answers.

use super::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A response as the client read it.
#[derive(Clone, Debug)]
pub struct Response {
    pub status_line: String,
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub raw_head: Vec<u8>,
    pub body: Vec<u8>,
    pub framing: Framing,
}

impl Headers for Response {
    fn header_list(&self) -> &[(String, String)] {
        &self.headers
    }
}

impl Response {
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection to the proxy.
pub struct Client {
    pub wire: Wire,
    pub timeout: Duration,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client {
            wire: Wire::new(s),
            timeout: IO_TIMEOUT,
        }
    }

    /// Writes all of `data`; panics if the proxy is gone.
    pub fn send(&mut self, data: &[u8]) {
        self.try_send(data)
            .unwrap_or_else(|e| panic!("sending {}: {e}", show(data)));
    }

    pub fn try_send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.wire.stream.write_all(data)
    }

    /// The next response to a request that was not HEAD; panics with the bytes on failure.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(false)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The next response to a HEAD request (never a body).
    pub fn read_head_response(&mut self) -> Response {
        self.try_read_response(true)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_read_response(&mut self, to_head: bool) -> Result<Response, String> {
        let deadline = Instant::now() + self.timeout;
        let raw = self.wire.take_head(deadline).map_err(|e| {
            format!(
                "{e:?} before a complete response head; got {}",
                show(&self.wire.buf)
            )
        })?;
        let head = parse_head(&raw).map_err(|e| format!("response head: {e}"))?;
        let mut parts = head.first.splitn(3, ' ');
        let (version, code, reason) = (parts.next().unwrap(), parts.next(), parts.next());
        let status = match (code, reason) {
            (Some(c), Some(_)) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()) => {
                c.parse().unwrap()
            }
            _ => return Err(format!("bad status line {:?}", head.first)),
        };
        if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
            return Err(format!("bad status line {:?}", head.first));
        }
        let declared = framing_of(&head.headers)
            .map_err(|e| format!("response framing: {e} in {}", show(&raw)))?;
        let framing = if to_head || status < 200 || status == 204 || status == 304 {
            Framing::None
        } else {
            declared.unwrap_or(Framing::Close)
        };
        let body = match framing {
            Framing::None => Ok(Vec::new()),
            Framing::Length => {
                let n = head
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .unwrap();
                self.wire.take_exact(n.1.parse().unwrap(), deadline)
            }
            Framing::Chunked => self.wire.take_chunked(deadline),
            Framing::Close => self.wire.take_to_eof(deadline),
        }
        .map_err(|e| {
            format!(
                "{e:?} in the body of {:?}; got {}",
                head.first,
                show(&self.wire.buf)
            )
        })?;
        Ok(Response {
            version: version.into(),
            status,
            reason: reason.unwrap().into(),
            status_line: head.first,
            headers: head.headers,
            raw_head: raw,
            body,
            framing,
        })
    }

    /// Sends a plain GET (Host: test.local) and reads its response.
    pub fn get(&mut self, target: &str) -> Response {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: test.local\r\n\r\n").as_bytes());
        self.read_response()
    }

    /// True once the proxy has closed the connection (FIN or RST); false if it
    /// is still open after `timeout`. Bytes that arrive meanwhile are kept in the buffer.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.wire.fill(deadline) {
                Ok(()) => {}
                Err(Stop::Eof) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Everything until the proxy closes; panics if it is still open after `timeout`.
    pub fn read_to_close(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        match self.wire.take_to_eof(deadline) {
            Ok(b) => b,
            Err(e) => panic!("{e:?} waiting for close; got {}", show(&self.wire.buf)),
        }
    }

    /// Exactly `n` bytes (for tunnels); panics with what arrived if they do not.
    pub fn read_exact_bytes(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        match self.wire.take_exact(n, Instant::now() + timeout) {
            Ok(b) => b,
            Err(e) => panic!(
                "{e:?} after {} of {n} bytes: {}",
                self.wire.buf.len(),
                show(&self.wire.buf)
            ),
        }
    }
}

/// GET `target` on `c` through an echo upstream and check the answer is for it.
pub fn get_ok(c: &mut Client, target: &str) {
    let r = c.get(target);
    assert_eq!(r.status, 200, "GET {target}: {}", r.status_line);
    assert_eq!(
        r.header("x-echo-target"),
        Some(target),
        "GET {target} got someone else's answer"
    );
}

/// The reason phrases RFC 9110 (and its predecessors) give a status.
fn reasons(code: u16) -> &'static [&'static str] {
    match code {
        100 => &["Continue"],
        400 => &["Bad Request"],
        404 => &["Not Found"],
        408 => &["Request Timeout"],
        413 => &[
            "Content Too Large",
            "Payload Too Large",
            "Request Entity Too Large",
        ],
        414 => &[
            "URI Too Long",
            "Request-URI Too Long",
            "Request-URI Too Large",
        ],
        431 => &["Request Header Fields Too Large"],
        502 => &["Bad Gateway"],
        503 => &["Service Unavailable"],
        504 => &["Gateway Timeout"],
        _ => &[],
    }
}

/// A status the proxy itself answered: `HTTP/1.1 CODE Reason`, with a small body.
pub fn assert_proxy_status(r: &Response, code: u16, sent: &[u8]) {
    let ok =
        r.version == "HTTP/1.1" && r.status == code && reasons(code).contains(&r.reason.as_str());
    assert!(
        ok,
        "sent {}\nwant HTTP/1.1 {code} {:?}, got {:?}",
        show(sent),
        reasons(code),
        r.status_line
    );
    if code >= 400 {
        assert!(
            !r.body.is_empty() && r.body.len() < 4096,
            "error {code} must carry a small body, got {} bytes",
            r.body.len()
        );
    }
}
