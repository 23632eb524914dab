//! Bytes on a socket: buffered reads with deadlines and strict HTTP/1.1 head and body framing.

use super::*;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::Instant;

/// Why a read stopped.
#[derive(Debug)]
pub enum Stop {
    /// The peer closed (or reset) the connection.
    Eof,
    Timeout,
    /// The bytes break HTTP/1.1 framing.
    Bad(String),
}

/// A socket plus the bytes read from it but not consumed yet.
pub struct Wire {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub eof: bool,
    /// The close was a reset (RST), not a FIN.
    pub reset: bool,
}

impl Wire {
    pub(crate) fn new(stream: TcpStream) -> Wire {
        // Small writes must not wait for Nagle: byte-by-byte tests depend on it.
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Wire {
            stream,
            buf: Vec::new(),
            eof: false,
            reset: false,
        }
    }

    /// Reads once more into `buf`.
    pub fn fill(&mut self, deadline: Instant) -> Result<(), Stop> {
        if self.eof {
            return Err(Stop::Eof);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Stop::Timeout);
        }
        self.stream
            .set_read_timeout(Some(deadline - now))
            .expect("set_read_timeout");
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(0) => {
                self.eof = true;
                Err(Stop::Eof)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(Stop::Timeout)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(_) => {
                self.eof = true;
                self.reset = true;
                Err(Stop::Eof)
            }
        }
    }

    /// Everything up to and including the empty line that ends a head
    /// (found even when lines end in a bare LF, so the parser can reject it).
    pub fn take_head(&mut self, deadline: Instant) -> Result<Vec<u8>, Stop> {
        loop {
            let mut start = 0;
            for (i, &c) in self.buf.iter().enumerate() {
                if c == b'\n' {
                    let line = &self.buf[start..i];
                    if start > 0 && (line.is_empty() || line == b"\r") {
                        return Ok(self.buf.drain(..=i).collect());
                    }
                    start = i + 1;
                }
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Stop::Bad("head longer than 1 MiB".into()));
            }
            self.fill(deadline)?;
        }
    }

    pub fn take_exact(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, Stop> {
        while self.buf.len() < n {
            self.fill(deadline)?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// One line, which must end in CRLF and hold no other CR or LF; returned without the CRLF.
    pub fn take_line(&mut self, deadline: Instant) -> Result<Vec<u8>, Stop> {
        loop {
            if let Some(i) = self.buf.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return match line.strip_suffix(b"\r\n") {
                    Some(l) if !l.contains(&b'\r') => Ok(l.to_vec()),
                    _ => Err(Stop::Bad(format!(
                        "line not ended by CRLF: {}",
                        show(&line)
                    ))),
                };
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Stop::Bad("line longer than 1 MiB".into()));
            }
            self.fill(deadline)?;
        }
    }

    /// A chunked body (RFC 9112 §7.1), strictly: hex size, optional extensions, CRLFs, trailers.
    pub fn take_chunked(&mut self, deadline: Instant) -> Result<Vec<u8>, Stop> {
        let mut body = Vec::new();
        loop {
            let line = self.take_line(deadline)?;
            let size = match line.iter().position(|&c| c == b';') {
                // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
                Some(p) => line[..p].trim_ascii_end(),
                None => &line[..],
            };
            let ok = !size.is_empty() && size.len() <= 10 && size.iter().all(u8::is_ascii_hexdigit);
            if !ok {
                return Err(Stop::Bad(format!("bad chunk size line {}", show(&line))));
            }
            let n = usize::from_str_radix(std::str::from_utf8(size).unwrap(), 16).unwrap();
            if n == 0 {
                loop {
                    let trailer = self.take_line(deadline)?;
                    if trailer.is_empty() {
                        return Ok(body);
                    }
                    if !trailer.contains(&b':') {
                        return Err(Stop::Bad(format!("bad trailer {}", show(&trailer))));
                    }
                }
            }
            body.extend(self.take_exact(n, deadline)?);
            if self.take_exact(2, deadline)? != b"\r\n" {
                return Err(Stop::Bad("chunk data not followed by CRLF".into()));
            }
        }
    }

    pub fn take_to_eof(&mut self, deadline: Instant) -> Result<Vec<u8>, Stop> {
        loop {
            match self.fill(deadline) {
                Ok(()) => {}
                Err(Stop::Eof) => return Ok(std::mem::take(&mut self.buf)),
                Err(e) => return Err(e),
            }
        }
    }
}

/// A parsed head: first line and header fields as sent (name case kept, in order).
pub struct Head {
    pub first: String,
    pub headers: Vec<(String, String)>,
}

pub(crate) fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// RFC 9112 §2-5, strictly: CRLF line ends, no obs-fold, token names directly
/// followed by ':', values without control characters other than HTAB.
pub fn parse_head(raw: &[u8]) -> Result<Head, String> {
    let body = raw
        .strip_suffix(b"\r\n\r\n")
        .ok_or_else(|| format!("head not ended by CRLF CRLF: {}", show(raw)))?;
    let mut parsed: Vec<&[u8]> = Vec::new();
    let mut rest = body;
    loop {
        let (line, next) = match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        if line.contains(&b'\r') || line.contains(&b'\n') {
            return Err(format!("bare CR or LF in head: {}", show(raw)));
        }
        parsed.push(line);
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    let mut it = parsed.into_iter();
    let first = it
        .next()
        .filter(|l| !l.is_empty())
        .ok_or("empty first line")?;
    let first =
        String::from_utf8(first.to_vec()).map_err(|_| "first line not UTF-8".to_string())?;
    let mut headers = Vec::new();
    for line in it {
        if line.first().is_some_and(|&c| c == b' ' || c == b'\t') {
            return Err(format!("obs-fold: {}", show(line)));
        }
        let colon = line
            .iter()
            .position(|&c| c == b':')
            .ok_or_else(|| format!("no colon: {}", show(line)))?;
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&c| is_tchar(c)) {
            return Err(format!("bad field name: {}", show(line)));
        }
        if value.iter().any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f) {
            return Err(format!("control character in value: {}", show(line)));
        }
        headers.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Ok(Head { first, headers })
}

/// Strips optional whitespace (SP and HTAB only, RFC 9110 §5.6.3) from both ends.
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Header look-ups shared by requests and responses (names case-insensitive).
pub trait Headers {
    fn header_list(&self) -> &[(String, String)];

    /// The first value of `name`.
    fn header(&self, name: &str) -> Option<&str> {
        self.header_list()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    fn header_all(&self, name: &str) -> Vec<&str> {
        self.header_list()
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether a comma-separated header (any of its lines) lists `token`.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length,
    Chunked,
    /// Response body delimited by the connection closing.
    Close,
}

/// Body framing from the header fields (RFC 9112 §6.3), strictly.
pub(crate) fn framing_of(h: &[(String, String)]) -> Result<Option<Framing>, String> {
    let all = |n: &str| {
        h.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let (te, cl) = (all("transfer-encoding"), all("content-length"));
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err("both Transfer-Encoding and Content-Length".into());
        }
        if te.len() != 1 || !te[0].eq_ignore_ascii_case("chunked") {
            return Err(format!("Transfer-Encoding {te:?}"));
        }
        return Ok(Some(Framing::Chunked));
    }
    if cl.is_empty() {
        return Ok(None);
    }
    if cl.len() != 1 || cl[0].is_empty() || !cl[0].bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("Content-Length {cl:?}"));
    }
    Ok(Some(Framing::Length))
}
