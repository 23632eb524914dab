//! The request's own types, shared by every stage that answers it: the
//! client side of the connection (`Client`), what the head decided
//! (`Plan`, `Act`) and how the exchange ended (`Done`). They sit beneath
//! the stages (`exchange` makes them, `proxy` and `serve` use them), so no
//! stage imports the one that called it.

use std::{borrow::Cow, sync::Arc};

use crate::{
    http::{
        headers::{add_field, HeadOut},
        parse::{Framing, Spans},
    },
    http2::head::Native,
    stream::ClientStream,
};

/// The client side of a connection.
pub struct Client {
    pub stream: ClientStream,
    /// The client's address: what logs, X-Real-IP, ip_hash and the
    /// shield's lists and limits use. `hop`, or for a request from a
    /// `limits.real_ip_from` peer the address its X-Forwarded-For names
    /// (set for each request by `exchange::read_request`).
    pub peer: std::net::IpAddr,
    /// The connection's own address: the TCP peer, or the source a PROXY
    /// header named. X-Forwarded-For upstream appends it.
    pub hop: std::net::IpAddr,
    /// The read buffer: empty, without capacity, while the connection idles.
    /// During an exchange it starts with the request head, which stays in
    /// place until the request is logged.
    pub buf: Vec<u8>,
    /// The listener's `Strict-Transport-Security` value, put on every
    /// response head (`stamp`). Taken at the accept, like the TLS config.
    pub hsts: Option<Arc<String>>,
    /// A `redirect_https` listener: every request gets a 301 to https.
    pub to_https: bool,
    /// Body bytes of the current answer written so far by the copies that
    /// stream a body (zeroed per request): an answer cut short is logged
    /// with what went out, as nginx's `$body_bytes_sent`.
    pub sent: u64,
}

impl Client {
    /// Adds the connection's per-listener fields (HSTS) to the response
    /// head at the start of `out`, right after its status line, so it works
    /// whatever follows the head in the buffer. Nothing to do on most
    /// listeners.
    pub fn stamp(&self, out: &mut Vec<u8>) {
        let Some(v) = &self.hsts else { return };
        let Some(eol) = out.windows(2).position(|w| w == b"\r\n") else {
            return;
        };
        let mut f = Vec::with_capacity(v.len() + 31);
        crate::http::headers::field(&mut f, b"Strict-Transport-Security", v.as_bytes());
        out.splice(eol + 2..eol + 2, f);
    }

    /// `stamp` for either kind of head.
    pub fn stamp_head(&self, head: &mut ClientHead) {
        match head {
            ClientHead::H1(v) => self.stamp(v),
            ClientHead::H2(n) => {
                if let Some(v) = &self.hsts {
                    n.field(b"Strict-Transport-Security", v.as_bytes());
                }
            }
        }
    }
}

/// An answer's head for the client, proxied or ringside's own
/// (`serve::Own`): HTTP/1.1 text, or built for an HTTP/2 stream
/// (`ClientStream::respond`).
pub enum ClientHead {
    H1(Vec<u8>),
    H2(Native),
}

impl ClientHead {
    /// The writer the head's fields go to.
    pub fn out(&mut self) -> &mut dyn HeadOut {
        match self {
            ClientHead::H1(v) => v,
            ClientHead::H2(n) => n,
        }
    }

    /// Adds a field once the head is finished (`Date`, a sticky cookie).
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        match self {
            ClientHead::H1(v) => add_field(v, name, value),
            ClientHead::H2(n) => n.field(name, value),
        }
    }

    /// The text buffer, to go back to its pool (a built head has none).
    pub fn into_text(self) -> Option<Vec<u8>> {
        match self {
            ClientHead::H1(v) => Some(v),
            ClientHead::H2(_) => None,
        }
    }
}

impl Default for ClientHead {
    fn default() -> Self {
        ClientHead::H1(Vec::new())
    }
}

/// What `exchange` learned from the head: everything later stages need,
/// as values and as positions in the client buffer (never borrows, so no
/// borrow of the head lives across an await).
pub struct Plan {
    pub len: usize,
    pub minor: u8,
    pub keep_alive: bool,
    pub head_only: bool,
    pub idempotent: bool,
    pub framing: Framing,
    pub expect_continue: bool,
    pub route: Option<usize>,
    /// What the balancer hashes and the sticky cookie (proxied requests only).
    pub key: crate::balance::Key,
    /// Where the method, target, Host and logged fields sit in the buffer.
    pub spans: Spans,
    /// The normalised path (`http::path`) when it differs from the path as
    /// sent; routes matched on it.
    pub normal: Option<Vec<u8>>,
    /// "http" or "https", as the client connected.
    pub scheme: &'static str,
    /// The client's Accept-Encoding allows gzip (only looked at on routes
    /// with `gzip`).
    pub accepts_gzip: bool,
    /// A GET or HEAD on a cached route.
    pub cache: Option<crate::cache::CacheReq>,
    pub act: Act,
}

impl Plan {
    /// The Host value (or the absolute-form authority) in the buffer.
    pub fn host<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        self.spans.host.map(|s| s.of(buf))
    }

    /// The target in origin-form (path and query, as sent).
    pub fn origin<'b>(&self, buf: &'b [u8]) -> Cow<'b, [u8]> {
        self.spans.origin(buf)
    }

    /// The normalised path the route was chosen by (without the query).
    pub fn path<'b>(&'b self, buf: &'b [u8]) -> &'b [u8] {
        if let Some(n) = &self.normal {
            return n;
        }
        if self.spans.rooted {
            return b"/";
        }
        let o = self.spans.origin.of(buf);
        o.split(|&b| b == b'?').next().unwrap_or(o)
    }

    /// The query as sent, with its `?` (empty when there is none).
    pub fn query<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        let o = self.spans.origin.of(buf);
        match o.iter().position(|&b| b == b'?') {
            Some(q) => &o[q..],
            None => b"",
        }
    }

    /// The bytes at the start of the client buffer that are this request,
    /// when its body (if any) came whole with the head: nothing of it is
    /// left on the socket, so the connection can go on after an answer of
    /// ringside's own.
    pub fn whole_in(&self, buffered: usize) -> Option<usize> {
        let in_buf = (buffered - self.len) as u64;
        match self.framing {
            Framing::Empty => Some(self.len),
            Framing::Length(n) if n <= in_buf => Some(self.len + n as usize),
            _ => None,
        }
    }
}

pub enum Act {
    /// Proxy to this upstream; `head` is the request head to send.
    Proxy {
        upstream: usize,
        head: Vec<u8>,
        upgrade: bool,
    },
    /// A `static` route.
    Static { route: usize },
    /// A `redirect` route.
    Redirect { route: usize },
    /// A `respond` route.
    Respond { route: usize },
    /// A `redirect_https` listener: 301 to the same target over https, on
    /// the listener's `https_port`.
    ToHttps { port: u16 },
    /// Answered with this error (404: no route; 405: TRACE).
    Refuse(crate::error::Error),
}

/// What a client connection does after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Waits for the next request.
    Next,
    /// Closes.
    Close,
    /// Closes after a refusal or a failure: the client may still be
    /// sending, so the close lingers (`conn::linger`).
    Linger,
}

/// How an exchange ended.
pub struct Done {
    /// Status sent to the client (499: the client went away first).
    pub status: u16,
    pub body_bytes: u64,
    /// (upstream, server) that answered or was tried last.
    pub server: Option<(usize, usize)>,
    pub keep: bool,
    /// Bytes at the start of the client buffer that belonged to this request.
    pub consumed: usize,
    pub error: Option<crate::error::Error>,
}
