//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1
//! and 2) that an L4 balancer writes before the client's first byte, naming
//! the client it accepted.
//!
//! `parse` looks at the bytes received so far and says how long the header
//! is and which source address it names, that it needs more bytes, or why
//! the bytes are not a header. It never allocates and never reads past the
//! header, so what follows it (a TLS ClientHello, a request) stays unread.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A version 1 header is one line of at most 107 bytes, CRLF included
/// (the spec's own bound: "PROXY TCP6" with two full IPv6 addresses).
pub const MAX_V1: usize = 107;

/// The largest version 2 header accepted, its 16 fixed bytes included:
/// room for both addresses and the TLVs balancers send (AWS, Azure and GCP
/// endpoint ids, SSL details), while a claimed 64 KiB length is refused
/// before anyone buffers it.
pub const MAX_V2: usize = 4096;

/// The twelve bytes every version 2 header starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes the header takes at the start of the stream.
    pub len: usize,
    /// The client's address and port, or `None` when the connection's own
    /// peer stays the client: a v2 `LOCAL` command (the balancer's own
    /// health check), v1 `UNKNOWN`, or a v2 family without an IP address
    /// (`AF_UNSPEC`, `AF_UNIX`).
    pub source: Option<SocketAddr>,
}

/// Why the bytes are not a PROXY header; the text goes in the error log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad(pub &'static str);

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The header at the start of `buf`: `Ok(None)` while every byte seen so
/// far can still begin a valid header (so all of them belong to it).
pub fn parse(buf: &[u8]) -> Result<Option<Header>, Bad> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => v1(buf),
        Some(b'\r') => v2(buf),
        Some(_) => Err(Bad("not a PROXY protocol header")),
    }
}

/// Version 1: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n` (or `TCP6`), or
/// `PROXY UNKNOWN` and anything up to the CRLF.
fn v1(buf: &[u8]) -> Result<Option<Header>, Bad> {
    let seen = buf.len().min(V1_PREFIX.len());
    if buf[..seen] != V1_PREFIX[..seen] {
        return Err(Bad("not a PROXY protocol header"));
    }
    let window = &buf[..buf.len().min(MAX_V1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if buf.len() >= MAX_V1 {
            return Err(Bad("v1 header longer than 107 bytes"));
        }
        if !printable(window) {
            return Err(NOT_PRINTABLE);
        }
        return Ok(None);
    };
    // Checked whole or in pieces, the line is judged alike: a byte that
    // refuses a prefix refuses the line.
    if !printable(&window[..cr]) {
        return Err(NOT_PRINTABLE);
    }
    match window.get(cr + 1) {
        None if cr + 1 < MAX_V1 => return Ok(None),
        Some(b'\n') => {}
        _ => return Err(Bad("v1 header line does not end in CRLF")),
    }
    let line = &window[V1_PREFIX.len()..cr];
    let len = cr + 2;
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        return Ok(Some(Header { len, source: None }));
    }
    let line = std::str::from_utf8(line).map_err(|_| Bad("v1 header is not ASCII"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    let (src, dst, sport) = match (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) {
        (Some(s), Some(d), Some(sp), Some(dp), None) => {
            port(dp)?;
            (s, d, port(sp)?)
        }
        _ => {
            return Err(Bad(
                "v1 header needs 4 addresses and ports after the family",
            ))
        }
    };
    let source = match family {
        "TCP4" => IpAddr::V4(v1_addr(src, dst, "TCP4 with an address that is not IPv4")?),
        "TCP6" => IpAddr::V6(v1_addr(src, dst, "TCP6 with an address that is not IPv6")?),
        _ => return Err(Bad("v1 family is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Some(Header {
        len,
        source: Some(SocketAddr::new(source, sport)),
    }))
}

const NOT_PRINTABLE: Bad = Bad("v1 header holds a byte that is not printable ASCII");

fn printable(line: &[u8]) -> bool {
    line.iter().all(|b| (b' '..=b'~').contains(b))
}

/// Both addresses of a v1 line in the family it named; returns the source.
fn v1_addr<A: std::str::FromStr>(src: &str, dst: &str, wrong: &'static str) -> Result<A, Bad> {
    dst.parse::<A>().map_err(|_| Bad(wrong))?;
    src.parse::<A>().map_err(|_| Bad(wrong))
}

/// A v1 port: decimal, 0..=65535, without a sign or leading zeros.
fn port(s: &str) -> Result<u16, Bad> {
    let bad = Bad("v1 port is not a number from 0 to 65535");
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(bad);
    }
    s.parse().map_err(|_| bad)
}

/// Version 2: the signature, a version and command byte, a family and
/// transport byte, the length of what follows (big-endian), the addresses
/// for that family, then TLVs (not looked at).
fn v2(buf: &[u8]) -> Result<Option<Header>, Bad> {
    let seen = buf.len().min(V2_SIGNATURE.len());
    if buf[..seen] != V2_SIGNATURE[..seen] {
        return Err(Bad("not a PROXY protocol header"));
    }
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(None);
    };
    if ver_cmd >> 4 != 2 {
        return Err(Bad("PROXY protocol version is not 1 or 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(Bad("v2 command is not LOCAL or PROXY")),
    };
    let Some(&fam) = buf.get(13) else {
        return Ok(None);
    };
    // Address block sizes: INET 4+4+2+2, INET6 16+16+2+2, UNIX 108+108.
    let need = match fam >> 4 {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Err(Bad("v2 address family is unknown")),
    };
    if fam & 0x0f > 2 {
        return Err(Bad("v2 transport protocol is unknown"));
    }
    let Some(len) = buf.get(14..16) else {
        return Ok(None);
    };
    let len = 16 + usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len > MAX_V2 {
        return Err(Bad("v2 header longer than 4096 bytes"));
    }
    if len - 16 < need && !local {
        return Err(Bad("v2 length is too short for its address family"));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let a = &buf[16..len];
    let source = match (local, fam >> 4) {
        (true, _) | (false, 0 | 3) => None,
        (false, 1) => {
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        (false, _) => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
        }
    };
    Ok(Some(Header { len, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[ver_cmd, fam]);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn source(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
        let got = parse(h).unwrap().unwrap();
        assert_eq!(got.len, h.len() - 5);
        assert_eq!(got.source, source("192.0.2.1:56324"));
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
        let got = parse(h).unwrap().unwrap();
        assert_eq!((got.len, got.source), (h.len(), source("[2001:db8::1]:1")));
        let h = b"PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4\r\n";
        assert_eq!(
            parse(h),
            Ok(Some(Header {
                len: h.len(),
                source: None
            }))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().source, None);
    }

    #[test]
    fn every_prefix_of_a_header_needs_more() {
        let mut v2 = v2_header(0x21, 0x11, &[10, 0, 0, 1, 10, 0, 0, 2, 0, 80, 1, 187]);
        v2.extend_from_slice(&[0x04, 0, 2, b'i', b'd']); // a TLV
        v2[15] += 5;
        let v1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".to_vec();
        for h in [v1, v2] {
            for n in 0..h.len() {
                assert_eq!(parse(&h[..n]), Ok(None), "{n} of {:?}", h.escape_ascii());
            }
            assert_eq!(parse(&h).unwrap().unwrap().len, h.len());
        }
    }

    #[test]
    fn v2_proxy_local_and_families() {
        let h = v2_header(0x21, 0x11, &[10, 0, 0, 1, 10, 0, 0, 2, 0, 80, 1, 187]);
        assert_eq!(parse(&h).unwrap().unwrap().source, source("10.0.0.1:80"));
        let mut six = [0u8; 36];
        six[15] = 1;
        six[32..34].copy_from_slice(&443u16.to_be_bytes());
        let h = v2_header(0x21, 0x21, &six);
        assert_eq!(parse(&h).unwrap().unwrap().source, source("[::1]:443"));
        // LOCAL keeps the peer, whatever follows; so do UNSPEC and UNIX.
        for (cmd, fam, body) in [(0x20, 0x00, &[][..]), (0x20, 0x11, &[1, 2][..])] {
            let h = v2_header(cmd, fam, body);
            assert_eq!(
                parse(&h),
                Ok(Some(Header {
                    len: h.len(),
                    source: None
                }))
            );
        }
        assert_eq!(
            parse(&v2_header(0x21, 0x00, &[])).unwrap().unwrap().source,
            None
        );
        let unix = v2_header(0x21, 0x31, &[0; 216]);
        assert_eq!(parse(&unix).unwrap().unwrap().source, None);
    }

    #[test]
    fn bad_headers_say_why() {
        let cases: [(&[u8], &str); 13] = [
            (b"GET / HTTP/1.1\r\n", "not a PROXY"),
            (b"PROXZ", "not a PROXY"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "printable"),
            (b"PROXY UNKNOWN \0\r\n", "printable"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CRLF"),
            (b"PROXY TCP4 ::1 ::2 1 2\r\n", "not IPv4"),
            (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "not IPv6"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "port"),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "4 addresses"),
            (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "family"),
            (b"\r\n\r\n\0\r\nQUIT\n\x11", "version"),
            (b"\r\n\r\n\0\r\nQUIT\n\x22", "command"),
        ];
        for (h, why) in cases {
            let e = parse(h).unwrap_err();
            assert!(e.0.contains(why), "{:?}: {e}", h.escape_ascii());
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert!(parse(&long).unwrap_err().0.contains("107"));
        let e = parse(&v2_header(0x21, 0x41, &[])).unwrap_err();
        assert!(e.0.contains("family"), "{e}");
        let e = parse(&v2_header(0x21, 0x13, &[0; 12])).unwrap_err();
        assert!(e.0.contains("transport"), "{e}");
        let e = parse(&v2_header(0x21, 0x21, &[0; 12])).unwrap_err();
        assert!(e.0.contains("too short"), "{e}");
        let mut big = v2_header(0x21, 0x11, &[0; 12]);
        big[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(parse(&big[..16]).unwrap_err().0.contains("4096"));
    }
}
