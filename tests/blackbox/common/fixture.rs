//! The error tests' proxy: small limits, an echo upstream and upstreams that
//! fail in every way the contract names; plus the check that a rejected
//! request changed nothing for anyone else.

use super::*;
use std::time::Duration;

/// Small limits so every case is cheap; timeouts long enough not to fire by accident.
pub const LIMITS: &str = "client_header_timeout = \"5s\"\nclient_body_timeout = \"5s\"\n\
                      max_request_head = \"4k\"\nmax_request_body = 1000";
/// For the 408 cases.
pub const SHORT_TIMEOUTS: &str =
    "client_header_timeout = \"500ms\"\nclient_body_timeout = \"500ms\"\n\
                              max_request_head = \"4k\"\nmax_request_body = 1000";

pub const GARBAGE: &[u8] = b"this is not http at all\r\n\r\n";
/// A head whose body never comes.
pub const HEAD_ONLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
pub const NO_COLON: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nThis line has no colon\r\n\r\nok";

pub struct Fx {
    pub proxy: Proxy,
    pub app: Upstream,
    _others: Vec<Upstream>,
}

/// `/app/` → echo, `/down/` → nothing listening, `/garbage/` → not HTTP,
/// `/nocolon/` → a header line without a colon, `/hangup/` → closes without
/// a word, `/silent/` → never answers, `/headonly/` → a head promising a
/// body, then closes, `/headstall/` → a head promising a body, then nothing.
pub fn fixture(limits: &str) -> Fx {
    let app = Upstream::echo();
    let garbage = Upstream::start(|c| {
        if c.read_request().is_some() {
            c.write(GARBAGE);
        }
    });
    let nocolon = Upstream::start(|c| {
        if c.read_request().is_some() {
            c.write(NO_COLON);
            c.hold_until_closed();
        }
    });
    let hangup = Upstream::start(|c| {
        c.read_request();
    });
    let silent = Upstream::start(|c| {
        if c.read_request().is_some() {
            c.hold_until_closed();
        }
    });
    let headonly = Upstream::start(|c| {
        if c.read_request().is_some() {
            c.write(HEAD_ONLY);
        }
    });
    let headstall = Upstream::start(|c| {
        if c.read_request().is_some() {
            c.write(HEAD_ONLY);
            c.hold_until_closed();
        }
    });
    let rest = [
        upstream("app", app.addr(), ""),
        upstream("down", closed_port(), "connect_timeout = \"1s\""),
        upstream("garbage", garbage.addr(), ""),
        upstream("nocolon", nocolon.addr(), ""),
        upstream("hangup", hangup.addr(), ""),
        upstream("silent", silent.addr(), "read_timeout = \"500ms\""),
        route("/app/", "app"),
        route("/down/", "down"),
        route("/garbage/", "garbage"),
        route("/nocolon/", "nocolon"),
        route("/hangup/", "hangup"),
        route("/silent/", "silent"),
        upstream("headonly", headonly.addr(), ""),
        upstream("headstall", headstall.addr(), "read_timeout = \"500ms\""),
        route("/headonly/", "headonly"),
        route("/headstall/", "headstall"),
    ]
    .concat();
    let proxy = Proxy::start(&config(limits, &rest));
    Fx {
        proxy,
        app,
        _others: vec![garbage, nocolon, hangup, silent, headonly, headstall],
    }
}

/// A connection served once, now idle on the same worker as the bad one.
pub fn bystander(fx: &Fx) -> Client {
    let mut c = Client::connect(fx.proxy.addr());
    get_ok(&mut c, &format!("/app/before-{}", token()));
    c
}

/// The bystander and a fresh connection are both served correctly.
pub fn still_served(fx: &Fx, mut by: Client) {
    get_ok(&mut by, &format!("/app/after-{}", token()));
    get_ok(
        &mut Client::connect(fx.proxy.addr()),
        &format!("/app/fresh-{}", token()),
    );
}

/// What the upstream may have seen of a rejected request.
#[derive(PartialEq)]
pub enum Reached {
    /// Not even the head (the proxy could tell from the head alone).
    Nothing,
    /// Perhaps the head (a streaming proxy finds body errors late), never all of it.
    NoCompleteRequest,
}

/// Sends `raw`, with a valid request pipelined behind it, on a new connection;
/// wants `code` with `Connection: close`, then a close; checks that nothing
/// (the bad request or the one behind it) got through and the bystander is fine.
pub fn reject(fx: &Fx, raw: &[u8], code: u16, tok: &str, reached: Reached) {
    let by = bystander(fx);
    let mut c = Client::connect(fx.proxy.addr());
    let mut sent = raw.to_vec();
    sent.extend(smuggled(tok));
    let sent = show(&sent);
    // The proxy may answer and close before reading everything; its answer is what counts.
    let _ = c.try_send(raw).and_then(|()| c.try_send(&smuggled(tok)));
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("sent {sent}\nno response: {e}"));
    assert_proxy_status(&r, code, raw);
    assert!(
        r.has_token("connection", "close"),
        "sent {sent}\n{} without Connection: close: {}",
        r.status,
        show(&r.raw_head)
    );
    assert!(
        c.wait_closed(Duration::from_secs(2)),
        "sent {sent}\ngot {} but the connection stayed open",
        r.status
    );
    if reached == Reached::Nothing {
        let heads = fx.app.heads_with(tok);
        assert_eq!(
            heads, 0,
            "sent {sent}\nrejected, yet the upstream saw its head"
        );
    }
    let got = fx.app.requests_with(tok);
    assert!(
        got.is_empty(),
        "sent {sent}\nrejected, yet the upstream got a whole request"
    );
    assert_eq!(fx.app.heads_with("smuggled"), 0, "DESYNC: sent {sent}");
    still_served(fx, by);
}

pub fn post(tok: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!("POST /app/{tok} HTTP/1.1\r\nHost: h\r\n{headers}\r\n").into_bytes();
    v.extend_from_slice(body);
    v
}

/// A second request hidden in the first one's body: must never reach the upstream.
pub fn smuggled(tok: &str) -> Vec<u8> {
    format!("GET /app/smuggled-{tok} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes()
}

/// `raw` with every `TOK` replaced by `tok`.
pub fn with_token(raw: &[u8], tok: &str) -> Vec<u8> {
    let s = String::from_utf8(raw.to_vec()).unwrap();
    s.replace("TOK", tok).into_bytes()
}
