//! The `plan` target: `http::parse::request` and routing
//! (`exchange::plan`) over a config with every route kind; the spans it
//! hands on lie in the buffer, and the head it writes upstream parses back
//! with the same framing.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use crate::{
    buffers::Buffers,
    control::health,
    http::parse::{self, Framing, Scan, MAX_HEADERS},
    request::{Act, Client},
    shard::{Generation, Listen},
    stream::ClientStream,
};

/// Routes of every kind, hosts exact and wildcard, `strip_prefix`, cache,
/// gzip, a header condition and a split; the listener kind comes from the
/// input. Static folders and upstream servers need not exist: routing
/// never looks at them.
const PLAN_CONFIG: &str = r#"
[limits]
max_request_head = "4k"
max_request_body = 100000

[[listen]]
address = "127.0.0.1:8080"

[[upstream]]
name = "app"
servers = [ { address = "127.0.0.1:9" } ]

[[upstream]]
name = "hashed"
balance = "uri_hash"
sticky = { cookie = "srv" }
servers = [ { address = "127.0.0.1:10" }, { address = "127.0.0.1:11" } ]

[[route]]
path = "/"
upstream = "app"

[[route]]
path = "/api/"
upstream = "hashed"
strip_prefix = true
set_request_headers = { "X-Env" = "fuzz", "Host" = "inner" }

[[route]]
path = "/c/"
upstream = "app"
cache = { "200" = "1m" }
gzip = { types = ["text/plain"], min_length = 10 }
websocket = false

[[route]]
path = "/c/"
upstream = "hashed"
match_header = { "X-Canary" = "1" }
match_cookie = { "beta" = "1" }

[[route]]
host = "*.example.com"
path = "/"
split = [ { upstream = "app", weight = 3 }, { upstream = "hashed", weight = 1 } ]

[[route]]
host = "a"
path = "/"
static = "/nonexistent/www/"

[[route]]
path = "/static/"
static = "/nonexistent/www/"

[[route]]
path = "/old/"
redirect = { to = "https://example.com$request_uri?h=$host&s=$scheme&u=$uri&a=$args", status = 308 }

[[route]]
host = "example.org"
path = "/hello"
respond = { status = 200, body = "hi" }
"#;

/// What `plan` needs beside the input, built once per thread.
struct Planner {
    gen: Generation,
    small: Buffers,
}

thread_local! {
    static PLANNER: Planner = {
        let config = crate::config::parse_str(PLAN_CONFIG).expect("PLAN_CONFIG is valid");
        let health = Arc::new(health::Table::new(&config));
        Planner {
            gen: Generation::new(Arc::new(config), health),
            small: Buffers::new(1024),
        }
    };
}

/// Parses and routes `input` as `exchange` does. The first byte picks the
/// listener (plain, https, `redirect_https`) and the peer's address family;
/// the rest is the client buffer (head, then perhaps body bytes).
pub fn plan(input: &[u8]) {
    let Some((&pick, buf)) = input.split_first() else {
        return;
    };
    PLANNER.with(|p| plan_with(p, pick, buf));
}

fn plan_with(p: &Planner, pick: u8, buf: &[u8]) {
    let max = p.gen.config.limits.max_request_head;
    let listen = Listen {
        configured: SocketAddr::from(([127, 0, 0, 1], 8080)),
        port: 8080,
        proto: if pick & 2 != 0 { "https" } else { "http" },
        stat: 0,
    };
    let peer = if pick & 4 != 0 {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, pick))
    };
    let c = Client {
        stream: ClientStream::Closed,
        peer,
        hop: peer,
        buf: buf.to_vec(),
        hsts: None,
        to_https: pick & 1 != 0,
        sent: 0,
    };
    let mut headers = [parse::NO_FIELD; MAX_HEADERS];
    let head = match parse::request(&c.buf, &mut headers, &mut Scan::default(), max) {
        Ok(Some(head)) => head,
        // Incomplete, or answered with an error before routing.
        Ok(None) | Err(_) => return,
    };
    let len = head.len;
    assert!(len <= buf.len(), "head length {len} past the buffer");
    let plan = match crate::exchange::plan(&head, &c, &p.gen, &listen, &p.small) {
        Ok(plan) => plan,
        Err(e) => {
            assert!((400..600).contains(&e.status), "plan failed with {e}");
            return;
        }
    };
    assert_eq!(plan.len, len);
    // Later stages read the client buffer through these spans (access log,
    // redirects, static files): each must lie in the head.
    let s = &plan.spans;
    for (name, span) in [
        ("method", Some(s.method)),
        ("target", Some(s.target)),
        ("origin", Some(s.origin)),
        ("host", s.host),
    ] {
        if let Some(span) = span {
            let bytes = span.of(&c.buf[..len]);
            assert_eq!(
                bytes.len(),
                span.len(),
                "{name} span outside the head (0..{len})"
            );
        }
    }
    let origin = plan.origin(&c.buf);
    assert!(
        origin.starts_with(b"/") || &origin[..] == b"*",
        "origin-form target {:?} is not a path",
        String::from_utf8_lossy(&origin)
    );
    if let Act::Proxy { head, .. } = &plan.act {
        upstream_head_parses(head, plan.framing);
    }
    if let Act::Proxy { head, .. } = plan.act {
        p.small.give(head);
    }
}

/// The head sent upstream must be one request, framed as the client's was:
/// an upstream that read it otherwise could be desynchronised.
fn upstream_head_parses(head: &[u8], framing: Framing) {
    let mut headers = [parse::NO_FIELD; MAX_HEADERS * 2];
    let parsed = parse::request(head, &mut headers, &mut Scan::default(), usize::MAX);
    match parsed {
        Ok(Some(h)) => {
            assert_eq!(h.len, head.len(), "bytes after the upstream head");
            assert_eq!(
                h.framing, framing,
                "the upstream head frames the body otherwise"
            );
        }
        other => panic!(
            "the upstream head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(head)
        ),
    }
}
