//! The one data-path error: it knows the status the client gets and who was
//! at fault. `conn.rs` turns it into a response in one place.

use std::{fmt, io};

/// Who caused the failure: decides the log level and the passive-health
/// bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bad bytes, a limit or a timeout on the client side.
    Client,
    /// The upstream refused, hung, or answered something that is not HTTP.
    Upstream,
    /// Our own resources (buffers, sockets) failed.
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    /// The status the client is answered with; 0 when the connection can only
    /// be closed (the client went away, or a response was already under way).
    pub status: u16,
    pub fault: Fault,
    /// A short fixed reason for the error log.
    pub reason: &'static str,
    pub io: Option<io::ErrorKind>,
    /// Set when the edge shield refused the request: why (the
    /// `ringside_limited_total` reason) and what the answer adds.
    pub refused: Option<Refused>,
}

/// A request the edge shield turned away. The answer carries `Allow` (the
/// route's `methods`) for `Method` and `Retry-After` for `Rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub why: crate::stats::Limited,
    /// Whole seconds (at least 1) for `Retry-After`; 0 when not `Rate`.
    pub retry_after: u32,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    const fn new(status: u16, fault: Fault, reason: &'static str) -> Self {
        Error {
            status,
            fault,
            reason,
            io: None,
            refused: None,
        }
    }

    /// 400: not valid HTTP/1.1; the connection closes after the answer.
    pub const fn bad_request(reason: &'static str) -> Self {
        Self::new(400, Fault::Client, reason)
    }
    pub const fn not_found() -> Self {
        Self::new(404, Fault::Client, "no route matches")
    }
    pub const fn head_timeout() -> Self {
        Self::new(408, Fault::Client, "request head timed out")
    }
    pub const fn body_timeout() -> Self {
        Self::new(408, Fault::Client, "request body timed out")
    }
    pub const fn body_too_large() -> Self {
        Self::new(413, Fault::Client, "request body over max_request_body")
    }
    pub const fn uri_too_long() -> Self {
        Self::new(414, Fault::Client, "request line over max_request_head")
    }
    pub const fn head_too_large() -> Self {
        Self::new(431, Fault::Client, "request head over max_request_head")
    }
    pub const fn not_implemented(reason: &'static str) -> Self {
        Self::new(501, Fault::Client, reason)
    }
    /// 405: a method ringside does not forward (TRACE, as nginx).
    pub const fn method_not_allowed(reason: &'static str) -> Self {
        Self::new(405, Fault::Client, reason)
    }
    /// A `[[rule]]` matched: its status, and `reason` names the rule.
    pub const fn rule(status: u16, reason: &'static str) -> Self {
        Self::shield(status, reason, crate::stats::Limited::Rule, 0)
    }
    /// 403: the client's address is not allowed on the route.
    pub const fn route_deny() -> Self {
        let reason = "client address denied on the route";
        Self::shield(403, reason, crate::stats::Limited::Deny, 0)
    }
    /// 405: a method outside the route's `methods` (answered with `Allow`).
    pub const fn method_refused() -> Self {
        let reason = "method not in the route's methods";
        Self::shield(405, reason, crate::stats::Limited::Method, 0)
    }
    /// A `[[limit]]` bucket is empty: its status (429 by default), with
    /// `Retry-After`.
    pub const fn rate_limited(status: u16, retry_after: u32) -> Self {
        let reason = "over a [[limit]] rate";
        Self::shield(status, reason, crate::stats::Limited::Rate, retry_after)
    }
    const fn shield(
        status: u16,
        reason: &'static str,
        why: crate::stats::Limited,
        retry_after: u32,
    ) -> Self {
        Error {
            refused: Some(Refused { why, retry_after }),
            ..Self::new(status, Fault::Client, reason)
        }
    }
    /// The client closed its connection while its answer was being made.
    pub const fn client_left() -> Self {
        Self::new(
            0,
            Fault::Client,
            "client closed the connection before the answer",
        )
    }
    /// The client closed or reset its side: nobody to answer.
    pub fn client_gone(e: io::Error) -> Self {
        Error {
            io: Some(e.kind()),
            ..Self::new(0, Fault::Client, "client connection lost")
        }
    }
    /// The client stopped accepting bytes for `client_send_timeout`.
    pub const fn client_send_timeout() -> Self {
        Self::new(
            0,
            Fault::Client,
            "client did not read in client_send_timeout",
        )
    }
    pub fn connect(e: io::Error) -> Self {
        Error {
            io: Some(e.kind()),
            ..Self::new(502, Fault::Upstream, "upstream connect failed")
        }
    }
    pub const fn connect_timeout() -> Self {
        Self::new(502, Fault::Upstream, "upstream connect timed out")
    }
    pub const fn bad_response(reason: &'static str) -> Self {
        Self::new(502, Fault::Upstream, reason)
    }
    pub fn upstream_io(e: io::Error) -> Self {
        Error {
            io: Some(e.kind()),
            ..Self::new(502, Fault::Upstream, "upstream connection failed")
        }
    }
    pub const fn upstream_closed() -> Self {
        Self::new(
            502,
            Fault::Upstream,
            "upstream closed before a complete response",
        )
    }
    pub const fn read_timeout() -> Self {
        Self::new(504, Fault::Upstream, "upstream read timed out")
    }
    pub const fn send_timeout() -> Self {
        Self::new(504, Fault::Upstream, "upstream send timed out")
    }
    pub const fn no_server() -> Self {
        Self::new(503, Fault::Upstream, "no upstream server available")
    }
    pub fn internal(e: io::Error) -> Self {
        Error {
            io: Some(e.kind()),
            ..Self::new(500, Fault::Internal, "internal I/O error")
        }
    }

    /// Errors after which the connection closes even when the request was
    /// read whole: its bytes cannot be trusted to frame the next one (400,
    /// 413, 414, 431, 501) or the client is too slow to keep (408).
    pub fn closes(&self) -> bool {
        matches!(self.status, 400 | 408 | 413 | 414 | 431 | 501)
    }

    /// The client went away or stopped reading: logged 499 (the contract's
    /// "went away before the response was complete"), even after a head
    /// that said otherwise went out.
    pub fn client_left_early(&self) -> bool {
        self.status == 0 && self.fault == Fault::Client
    }

    /// Once a response head went out, no status can be sent any more.
    pub fn after_head(self) -> Self {
        Error { status: 0, ..self }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)?;
        if let Some(k) = self.io {
            write!(f, " ({k})")?;
        }
        Ok(())
    }
}
