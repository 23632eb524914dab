//! Stage 4, answer: the heads ringside writes — the request it forwards
//! upstream and the response head it sends back — with hop-by-hop fields
//! removed both ways (RFC 9110 section 7.6.1) and the forwarding fields of
//! the contract set.

use std::net::IpAddr;

use httparse::Header;

use super::parse::{list, Framing, RequestHead, ResponseHead};

/// Field names of the `Connection` fields kept in place; a longer list is
/// gathered into a sorted `Vec` (`Listed::many`).
const MAX_CONNECTION_TOKENS: usize = 16;

/// Fields never forwarded as the client sent them: hop-by-hop ones, the
/// framing (re-derived), and the ones ringside sets itself.
fn dropped_upstream(name: &str) -> bool {
    const NAMES: [&str; 14] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
        "expect",
        "x-real-ip",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Hop-by-hop response fields, and `Server` (ringside writes its own, so
/// the upstream's software is not shown, as nginx does). `Content-Length`
/// passes (it was validated, and a HEAD or 304 answer keeps the one it
/// came with).
fn dropped_downstream(name: &str) -> bool {
    const NAMES: [&str; 8] = [
        "server",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// The field names listed by every `Connection` field (RFC 9110 section 7.6.1).
struct Listed<'b> {
    names: [&'b [u8]; MAX_CONNECTION_TOKENS],
    len: usize,
    /// A longer list, whole, sorted without regard to case (searched in
    /// log time: a head of thousands of names costs no more than parsing).
    many: Vec<&'b [u8]>,
}

impl<'b> Listed<'b> {
    fn new(headers: &[Header<'b>]) -> Self {
        let mut l = Listed {
            names: [&[][..]; MAX_CONNECTION_TOKENS],
            len: 0,
            many: Vec::new(),
        };
        for token in connection_tokens(headers) {
            if l.len == MAX_CONNECTION_TOKENS {
                l.many = connection_tokens(headers).collect();
                l.many.sort_unstable_by(|a, b| caseless(a, b));
                break;
            }
            l.names[l.len] = token;
            l.len += 1;
        }
        l
    }

    fn contains(&self, name: &str) -> bool {
        let name = name.as_bytes();
        if !self.many.is_empty() {
            return self.many.binary_search_by(|n| caseless(n, name)).is_ok();
        }
        self.names[..self.len]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Orders names as their lowercase forms would be.
fn caseless(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.iter()
        .map(u8::to_ascii_lowercase)
        .cmp(b.iter().map(u8::to_ascii_lowercase))
}

/// Every name the `Connection` fields list.
fn connection_tokens<'h, 'b>(headers: &'h [Header<'b>]) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| list(h.value))
}

/// What the listener and the connection add to a forwarded request.
pub struct Forwarding<'a> {
    /// The client's address (X-Real-IP).
    pub client_ip: IpAddr,
    /// The connection's own address, appended to X-Forwarded-For: the
    /// client's, unless a trusted proxy named the client (`real_ip_from`).
    pub hop: IpAddr,
    /// "http" or "https".
    pub proto: &'static str,
    pub port: u16,
    /// Sent as Host when an HTTP/1.0 client sent none: the server address.
    pub fallback_host: &'a str,
    /// `set_request_headers` of the route.
    pub set: &'a [(String, String)],
    /// Tunnel the `Upgrade` (WebSocket) instead of dropping it.
    pub upgrade: Option<&'a [u8]>,
}

/// Writes the request head sent upstream. `target` may differ from the
/// client's (strip_prefix); `body` is the framing of what follows.
pub fn upstream_request(
    out: &mut Vec<u8>,
    req: &RequestHead<'_, '_>,
    target: &[u8],
    fwd: &Forwarding<'_>,
    body: Framing,
) {
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // A field `set_request_headers` names is written once, with its value.
    let own = |out: &mut Vec<u8>, name: &str, value: &[u8]| {
        if !overridden(fwd.set, name) {
            field(out, name.as_bytes(), value);
        }
    };
    own(
        out,
        "Host",
        req.host.unwrap_or(fwd.fallback_host.as_bytes()),
    );

    let listed = Listed::new(req.headers);
    let mut xff = false;
    for h in req.headers {
        if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            xff = true;
            continue;
        }
        if dropped_upstream(h.name) || listed.contains(h.name) || overridden(fwd.set, h.name) {
            continue;
        }
        field(out, h.name.as_bytes(), h.value);
    }
    // Every X-Forwarded-For field the client sent is one list (RFC 9110
    // section 5.3), written as one field with the connection's address last.
    out.extend_from_slice(b"X-Forwarded-For: ");
    if xff {
        for h in req.headers {
            if h.name.eq_ignore_ascii_case("x-forwarded-for") && !h.value.is_empty() {
                out.extend_from_slice(h.value);
                out.extend_from_slice(b", ");
            }
        }
    }
    let (mut ip, mut real) = ([0u8; 64], [0u8; 64]);
    let hop = fmt_ip(fwd.hop, &mut ip);
    out.extend_from_slice(hop);
    out.extend_from_slice(b"\r\n");
    let real = match fwd.client_ip == fwd.hop {
        true => hop,
        false => fmt_ip(fwd.client_ip, &mut real),
    };
    own(out, "X-Real-IP", real);
    own(out, "X-Forwarded-Proto", fwd.proto.as_bytes());
    own(out, "X-Forwarded-Host", req.host.unwrap_or(b""));
    let mut port = itoa::Buffer::new();
    own(out, "X-Forwarded-Port", port.format(fwd.port).as_bytes());
    for (k, v) in fwd.set {
        field(out, k.as_bytes(), v.as_bytes());
    }
    match body {
        Framing::Length(n) => {
            let mut b = itoa::Buffer::new();
            field(out, b"Content-Length", b.format(n).as_bytes());
        }
        Framing::Chunked => field(out, b"Transfer-Encoding", b"chunked"),
        Framing::Empty | Framing::UntilClose => {}
    }
    if let Some(proto) = fwd.upgrade {
        field(out, b"Upgrade", proto);
        field(out, b"Connection", b"upgrade");
    }
    out.extend_from_slice(b"\r\n");
}

/// The `Server` value of every answer.
pub const SERVER: &[u8] = b"ringside";

/// Whether `name` is in a route's `hide_response_headers` (lowercase).
pub fn hidden(hide: &[String], name: &str) -> bool {
    hide.iter().any(|h| h.eq_ignore_ascii_case(name))
}

fn overridden(set: &[(String, String)], name: &str) -> bool {
    set.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
}

/// How the body of the response ringside writes is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFraming {
    /// Whatever the upstream's own fields say (Content-Length, or no body).
    AsIs,
    /// Re-chunked by ringside.
    Chunked,
    /// Ends when ringside closes the connection.
    Close,
}

/// What the `Connection` field of the client response says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1 default: nothing to say.
    Default,
    /// An HTTP/1.0 client that asked for keep-alive.
    KeepAlive,
    Close,
    /// A 101 that opens a tunnel.
    Upgrade,
}

/// Where a response head goes: HTTP/1.1 text (`Vec<u8>`), or the fields of
/// an HTTP/2 HEADERS frame (`http2::head::Native`), so one writer serves
/// both and an HTTP/2 stream's head is never text parsed back.
pub trait HeadOut {
    fn status(&mut self, status: u16, reason: &[u8]);
    fn field(&mut self, name: &[u8], value: &[u8]);
    /// The framing and connection fields, then the end of the head.
    fn end(&mut self, framing: OutFraming, persist: Persist);
}

impl HeadOut for Vec<u8> {
    fn status(&mut self, status: u16, reason: &[u8]) {
        status_line(self, status, reason);
    }

    fn field(&mut self, name: &[u8], value: &[u8]) {
        field(self, name, value);
    }

    fn end(&mut self, framing: OutFraming, persist: Persist) {
        end_head(self, framing, persist);
    }
}

/// Writes the response head sent to the client.
pub fn client_response(
    out: &mut (impl HeadOut + ?Sized),
    res: &ResponseHead<'_, '_>,
    framing: OutFraming,
    persist: Persist,
    add: &[(String, String)],
) {
    out.status(res.status, res.reason.as_bytes());
    out.field(b"Server", SERVER);
    let listed = Listed::new(res.headers);
    let mut length = OneLength(res.length);
    for h in res.headers {
        let upgrade = persist == Persist::Upgrade && h.name.eq_ignore_ascii_case("upgrade");
        if !upgrade && (dropped_downstream(h.name) || listed.contains(h.name)) {
            continue;
        }
        if !length.pass(out, h.name) {
            out.field(h.name.as_bytes(), h.value);
        }
    }
    for (k, v) in add {
        out.field(k.as_bytes(), v.as_bytes());
    }
    out.end(framing, persist);
}

/// The response fields a client gets (hop-by-hop ones removed, ringside's
/// own `Server`), for heads that ringside changes (serve/response.rs):
/// `edit` sees each field and says what to write: `None` to leave it out,
/// else the value.
pub fn passed_fields<'v>(
    out: &mut (impl HeadOut + ?Sized),
    res: &ResponseHead<'_, 'v>,
    mut edit: impl FnMut(&str, &'v [u8]) -> Option<std::borrow::Cow<'v, [u8]>>,
) {
    out.field(b"Server", SERVER);
    let listed = Listed::new(res.headers);
    let mut length = OneLength(res.length);
    for h in res.headers {
        if dropped_downstream(h.name) || listed.contains(h.name) {
            continue;
        }
        if let Some(v) = edit(h.name, h.value) {
            if !length.pass(out, h.name) {
                out.field(h.name.as_bytes(), &v);
            }
        }
    }
}

/// The upstream's `Content-Length`, passed on as one field with one value
/// however the upstream wrote it: RFC 9110 section 8.6 has a recipient
/// that accepts a list of equal values (or the field repeated) replace it
/// with one valid field, and HTTP/2 clients refuse anything else.
struct OneLength(Option<u64>);

impl OneLength {
    /// True when `name` is `Content-Length`: its value is written here,
    /// the first time only.
    fn pass(&mut self, out: &mut (impl HeadOut + ?Sized), name: &str) -> bool {
        if !name.eq_ignore_ascii_case("content-length") {
            return false;
        }
        if let Some(n) = self.0.take() {
            out.field(name.as_bytes(), itoa::Buffer::new().format(n).as_bytes());
        }
        true
    }
}

/// Writes a 1xx interim response (other than 100 and 101) for an HTTP/1.1
/// client, hop-by-hop fields removed.
pub fn interim(out: &mut Vec<u8>, res: &ResponseHead<'_, '_>) {
    status_line(out, res.status, res.reason.as_bytes());
    let listed = Listed::new(res.headers);
    for h in res.headers {
        if !dropped_downstream(h.name) && !listed.contains(h.name) {
            field(out, h.name.as_bytes(), h.value);
        }
    }
    out.extend_from_slice(b"\r\n");
}

pub fn status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// The framing and connection fields, then the blank line.
pub fn end_head(out: &mut Vec<u8>, framing: OutFraming, persist: Persist) {
    if framing == OutFraming::Chunked {
        field(out, b"Transfer-Encoding", b"chunked");
    }
    match persist {
        Persist::Default => {}
        Persist::KeepAlive => field(out, b"Connection", b"keep-alive"),
        Persist::Close => field(out, b"Connection", b"close"),
        Persist::Upgrade => field(out, b"Connection", b"upgrade"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Adds a field to a head that `end_head` already finished (it goes in
/// before the blank line).
pub fn add_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    debug_assert!(out.ends_with(b"\r\n\r\n"));
    out.truncate(out.len() - 2);
    field(out, name, value);
    out.extend_from_slice(b"\r\n");
}

pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Formats an address without allocating: IPv4 (every proxied request
/// writes one or two) digit by digit, IPv6 by its `Display`.
pub fn fmt_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    use std::io::Write;
    if let IpAddr::V4(v4) = ip {
        let mut n = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            let mut b = itoa::Buffer::new();
            let digits = b.format(octet).as_bytes();
            buf[n..n + digits.len()].copy_from_slice(digits);
            n += digits.len();
        }
        return &buf[..n];
    }
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    // 64 bytes hold the longest IPv6 text form (45 bytes): this cannot fail.
    let _ = write!(cur, "{ip}");
    let n = cur.position() as usize;
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_format_as_their_display() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.20.3",
            "127.0.0.1",
            "::1",
            "2001:db8::ff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(fmt_ip(ip, &mut buf), ip.to_string().as_bytes());
        }
    }
}
