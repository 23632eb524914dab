//! Tests of config reading, good input: the contract's sample, every
//! default, every option and relative paths. Bad input is in
//! `tests_problems.rs`.

use std::{net::SocketAddr, path::Path, time::Duration};

use super::*;

/// The sample block of `shared/spec/config.md`, verbatim.
const CONTRACT_SAMPLE: &str = r##"
[runtime]
workers = 0                 # event loops; 0 = one per CPU in the affinity mask the process
                            #   was started with (taskset, cgroup cpuset), each pinned to one
                            #   of those CPUs — never to a CPU outside the mask
shutdown_timeout = "30s"

[log]
access = "stdout"           # "stdout" | "off" | a file path; one line per request
access_format = "combined"  # "combined" | "json" (see Operations)
error = "stderr"            # "stderr" | a file path
level = "info"              # error | warn | info | debug

[limits]                    # per client connection
client_header_timeout = "10s"   # whole request head must arrive in this time, else 408 and close
client_body_timeout = "60s"     # gap between two body reads, else 408 and close
client_send_timeout = "60s"     # gap between two writes the client accepts (a client that stops
                                #   reading, or an HTTP/2 stream window left at 0): then close
keepalive_timeout = "75s"       # idle client connection is closed after this
max_request_head = "16k"        # request line + headers; larger → 431 (414 for a long URI);
                                #   over HTTP/2: the decoded header list (name + value + 32 per
                                #   field, as SETTINGS_MAX_HEADER_LIST_SIZE counts it)
max_request_body = 0            # 0 = unlimited; larger → 413
max_connections = 0             # per worker; 0 = unlimited; beyond it new connections wait in the backlog

[admin]                     # optional; a plain-HTTP listener for operators, never proxied
# address = "127.0.0.1:9901"    # GET /metrics (Prometheus text), GET /health (200 once ready,
                                #   503 from the stop signal until exit; admin closes last)

[cache]                     # response cache; each worker owns an equal share
size = "256m"               # total bytes across workers

[[listen]]
address = "0.0.0.0:8080"    # one SO_REUSEPORT socket per worker
# http2 = true                                    # offer ALPN h2 on a TLS listener
# hsts = "max-age=63072000"                       # Strict-Transport-Security on every response
# redirect_https = true                           # answer every request with 301 to
#                                                 #   "https://" + Host without its port + target
# tls = { cert = "cert.pem", key = "key.pem" }   # optional; then the listener speaks TLS
# or, with several certificates chosen by SNI (the first is the default), as a sub-table
# (after the listener's other keys, as TOML requires):
# [listen.tls]
# certs = [ { cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" } ]
# protocols = ["TLSv1.2", "TLSv1.3"]              # the default; session resumption (tickets) is on

[[upstream]]
name = "app"
balance = "round_robin"     # round_robin: smooth weighted, as nginx (3:2:1 → a b a c b a)
#                           # least_conn: fewest active requests (this worker's count)
#                           # ip_hash: hash of the full client address
#                           # uri_hash: consistent hashing of the request target
#                           #   (removing 1 of N servers moves about 1/N of targets)
#                           # random_two: the less loaded of two random servers
keepalive = 256             # most idle connections kept per server, per worker; keep it above
                            #   the worker's concurrency (a lower cap closes and reopens
                            #   connections under load)
# keepalive_timeout = "60s" # an idle upstream connection is closed after this
connect_timeout = "60s"     # → 502 when it passes (nothing was sent)
send_timeout = "60s"
read_timeout = "60s"        # gap between two reads from the upstream → 504
servers = [
  { address = "127.0.0.1:3000", weight = 3 },
  { address = "127.0.0.1:3001", weight = 2 },
  { address = "127.0.0.1:3003", backup = true },
]
# health = { path = "/health", interval = "2s", timeout = "1s", fails = 3, passes = 2 }
# max_fails = 1             # passive (default 1; 0 = off): after this many failed attempts
# fail_timeout = "10s"      #   (connect error, 502/504 cause) a server is skipped for fail_timeout
#                           #   (an upstream with a single server never skips it, as nginx)
# retries = 1               # default: every other server once; 0 = off. On a connect failure try the next server
#                           #   (any method, backups once no primary is left); after a
#                           #   request was sent, only idempotent methods are retried
# sticky = { cookie = "ringside_route" }          # pin a client to the server that first
#                                                 #   answered it (like Apache route=)

[[route]]                   # first match by host, then longest path prefix; among routes
                            #   with the same host and path, the first in file order whose
                            #   match_* conditions hold
# host = "example.com"      # optional; exact name or "*.example.com"
path = "/"
# match_header = { "X-Canary" = "1" }            # optional; route only requests with these
# match_cookie = { "beta" = "1" }                #   header / cookie values (A/B, canary)
upstream = "app"            # one of: upstream | split | static | redirect | respond
# split = [ { upstream = "stable", weight = 95 }, { upstream = "canary", weight = 5 } ]
#                           # canary: each request goes to one upstream by weight
# static = "/var/www/static/"                     # like nginx alias
# expires = "30d"
# redirect = { to = "https://example.com$request_uri", status = 301 }
# respond = { status = 200, body = "ok" }
# strip_prefix = false
# websocket = true          # default true: Upgrade requests are tunnelled
# cache = { "200" = "60m", "404" = "1m" }         # cache GET/HEAD answers with these statuses
# gzip = { types = ["text/plain", "application/json"], min_length = 1000 }
# proxy_redirect = false    # true: an upstream Location that points at the upstream's
#                           #   address becomes "$scheme://$Host/…" (Apache ProxyPassReverse)
# set_request_headers = { "X-Env" = "prod" }
# add_response_headers = { "Cache-Control" = "public, immutable" }
# error_pages = { "502" = "/var/www/50x.html", "503" = "/var/www/50x.html" }
"##;

/// A valid head for snippets: 5 lines, so a snippet starts on line 6.
pub(super) const BASE: &str = r#"[[listen]]
address = "127.0.0.1:8080"
[[upstream]]
name = "app"
servers = [{ address = "127.0.0.1:3000" }]
"#;

fn ok(text: &str) -> Config {
    parse_str(text).unwrap_or_else(|p| panic!("refused: {p:#?}\n{text}"))
}

pub(super) fn problems(text: &str) -> Vec<Problem> {
    match parse_str(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(list) => list,
    }
}

/// Asserts exactly these problems, in order, each written as the start of
/// `LINE: key: message`.
pub(super) fn expect(text: &str, wanted: &[&str]) {
    let got: Vec<_> = problems(text)
        .iter()
        .map(|p| format!("{}: {}: {}", p.line, p.key, p.message))
        .collect();
    let matches =
        got.len() == wanted.len() && got.iter().zip(wanted).all(|(g, w)| g.starts_with(w));
    assert!(matches, "wanted {wanted:#?}\ngot {got:#?}");
}

/// `BASE` followed by `snippet`, which therefore starts on line 6.
pub(super) fn expect_after_base(snippet: &str, wanted: &[&str]) {
    expect(&format!("{BASE}{snippet}"), wanted);
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn contract_sample_is_accepted() {
    let c = ok(CONTRACT_SAMPLE);
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].address, addr("0.0.0.0:8080"));
    assert!(c.listeners[0].tls.is_none());
    assert!(c.admin.is_none(), "an [admin] without address is no admin");
    let app = &c.upstreams[0];
    assert_eq!(app.name, "app");
    let servers: Vec<_> = app
        .servers
        .iter()
        .map(|s| (s.label.as_str(), s.weight, s.backup))
        .collect();
    assert_eq!(
        servers,
        [
            ("127.0.0.1:3000", 3, false),
            ("127.0.0.1:3001", 2, false),
            ("127.0.0.1:3003", 1, true)
        ]
    );
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].label, "/");
    assert!(matches!(c.routes[0].action, Action::Upstream(0)));
}

#[test]
fn defaults() {
    let c = ok(BASE);
    assert_eq!(c.runtime.workers, 0);
    assert_eq!(c.runtime.shutdown_timeout, secs(30));
    assert_eq!(c.log.access, LogTarget::Stdout);
    assert_eq!(c.log.access_format, AccessFormat::Combined);
    assert_eq!(c.log.error, LogTarget::Stderr);
    assert_eq!(c.log.level, Level::Info);
    let l = &c.limits;
    assert_eq!(l.client_header_timeout, secs(10));
    assert_eq!(l.client_body_timeout, secs(60));
    assert_eq!(l.client_send_timeout, secs(60));
    assert_eq!(l.keepalive_timeout, secs(75));
    assert_eq!(l.max_request_head, 16 * 1024);
    assert_eq!(l.max_request_body, 0);
    assert_eq!(l.max_connections, 0);
    assert!(c.admin.is_none());
    assert_eq!(c.cache.size, 256 << 20);
    let listener = &c.listeners[0];
    assert!(!listener.http2 && !listener.redirect_https);
    assert!(listener.hsts.is_none() && listener.tls.is_none());
    let u = &c.upstreams[0];
    assert_eq!(u.balance, Balance::RoundRobin);
    assert_eq!(u.keepalive, 256);
    assert_eq!(u.keepalive_timeout, secs(60));
    assert_eq!(
        (u.connect_timeout, u.send_timeout, u.read_timeout),
        (secs(60), secs(60), secs(60))
    );
    assert_eq!((u.servers[0].weight, u.servers[0].backup), (1, false));
    assert!(u.health.is_none() && u.sticky.is_none());
    // One server: no other to retry on.
    assert_eq!((u.max_fails, u.fail_timeout, u.retries), (1, secs(10), 0));
    assert!(c.routes.is_empty());
}

#[test]
fn defaults_inside_optional_tables() {
    let c = ok(&format!(
        r#"{BASE}health = {{}}
[[listen]]
address = "127.0.0.1:8443"
tls = {{ cert = "c.pem", key = "k.pem" }}
[[route]]
path = "/"
upstream = "app"
gzip = {{}}
[[route]]
path = "/r"
redirect = {{ to = "https://example.com$request_uri" }}
[[route]]
path = "/ok"
respond = {{}}
"#
    ));
    let h = c.upstreams[0].health.as_ref().unwrap();
    assert_eq!(
        (h.path.as_str(), h.interval, h.timeout, h.fails, h.passes),
        ("/", secs(2), secs(1), 3, 2)
    );
    let tls = c.listeners[1].tls.as_ref().unwrap();
    assert_eq!(tls.protocols, [TlsVersion::Tls12, TlsVersion::Tls13]);
    let r = &c.routes[0];
    assert!(r.websocket && !r.strip_prefix && !r.proxy_redirect);
    assert!(r.expires.is_none() && r.cache.is_empty() && r.error_pages.is_empty());
    let gzip = r.gzip.as_ref().unwrap();
    assert_eq!(
        (gzip.types.as_slice(), gzip.min_length),
        (&["text/html".to_string()][..], 1000)
    );
    assert!(matches!(
        &c.routes[1].action,
        Action::Redirect { status: 301, .. }
    ));
    assert!(
        matches!(&c.routes[2].action, Action::Respond { status: 200, body } if body.is_empty())
    );
}

#[test]
fn every_option_of_the_contract() {
    let c = ok(r#"
[runtime]
workers = 4
shutdown_timeout = "5s"
[log]
access = "/var/log/ringside/access.log"
access_format = "json"
error = "logs/error.log"
level = "debug"
[limits]
client_header_timeout = "250ms"
client_body_timeout = "1m"
client_send_timeout = "2m"
keepalive_timeout = "0s"
max_request_head = 8192
max_request_body = "1g"
max_connections = 10000
[admin]
address = "127.0.0.1:9901"
[cache]
size = "8m"
[[listen]]
address = "0.0.0.0:8080"
redirect_https = true
[[listen]]
address = "[::]:8443"
http2 = true
hsts = "max-age=63072000"
tls = { cert = "cert.pem", key = "/etc/key.pem" }
[[listen]]
address = "127.0.0.1:9443"
[listen.tls]
certs = [ { cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" } ]
protocols = ["TLSv1.3"]
[[upstream]]
name = "stable"
balance = "least_conn"
keepalive = 8
keepalive_timeout = "30s"
connect_timeout = "1s"
send_timeout = "2s"
read_timeout = "3s"
servers = [ { address = "localhost:3000", weight = 3 }, { address = "127.0.0.1:3001", backup = true } ]
health = { path = "/health", interval = "5s", timeout = "2s", fails = 4, passes = 1 }
max_fails = 0
fail_timeout = "1h"
retries = 0
sticky = { cookie = "ringside_route" }
[[upstream]]
name = "canary"
balance = "random_two"
servers = [ { address = "127.0.0.1:4000" } ]
[[route]]
host = "Example.com"
path = "/api/"
match_header = { "X-Canary" = "1" }
match_cookie = { "beta" = "1" }
split = [ { upstream = "stable", weight = 95 }, { upstream = "canary", weight = 5 } ]
strip_prefix = true
websocket = false
cache = { "200" = "60m", "404" = "1m" }
gzip = { types = ["text/plain", "Application/JSON"], min_length = "1k" }
proxy_redirect = true
set_request_headers = { "X-Env" = "prod" }
add_response_headers = { "Cache-Control" = "public, immutable" }
error_pages = { "502" = "/var/www/50x.html", "503" = "50x.html" }
[[route]]
host = "*.Example.com"
path = "/static/"
static = "/var/www/static/"
expires = "30d"
[[route]]
path = "/old"
redirect = { to = "$scheme://$host$uri?$args", status = 308 }
[[route]]
path = "/ping"
respond = { status = 204, body = "" }
"#);
    assert_eq!(
        (c.runtime.workers, c.runtime.shutdown_timeout),
        (4, secs(5))
    );
    assert_eq!(
        c.log.access,
        LogTarget::File("/var/log/ringside/access.log".into())
    );
    assert_eq!(c.log.access_format, AccessFormat::Json);
    assert_eq!(c.log.error, LogTarget::File("logs/error.log".into()));
    assert_eq!(c.log.level, Level::Debug);
    let l = &c.limits;
    assert_eq!(l.client_header_timeout, Duration::from_millis(250));
    assert_eq!(
        (l.client_body_timeout, l.client_send_timeout),
        (secs(60), secs(120))
    );
    assert_eq!(l.keepalive_timeout, Duration::ZERO);
    assert_eq!(
        (l.max_request_head, l.max_request_body, l.max_connections),
        (8192, 1 << 30, 10000)
    );
    assert_eq!(c.admin.unwrap().address, addr("127.0.0.1:9901"));
    assert_eq!(c.cache.size, 8 << 20);

    let [plain, single, sni] = &c.listeners[..] else {
        panic!("{:?}", c.listeners)
    };
    assert!(plain.redirect_https && plain.tls.is_none());
    assert_eq!(single.address, addr("[::]:8443"));
    assert!(single.http2);
    assert_eq!(
        single.hsts.as_deref().map(String::as_str),
        Some("max-age=63072000")
    );
    let certs = &single.tls.as_ref().unwrap().certs;
    assert_eq!(
        (certs[0].cert.as_path(), certs[0].key.as_path()),
        (Path::new("cert.pem"), Path::new("/etc/key.pem"))
    );
    let tls = sni.tls.as_ref().unwrap();
    let names: Vec<_> = tls
        .certs
        .iter()
        .map(|p| (p.cert.to_str().unwrap(), p.key.to_str().unwrap()))
        .collect();
    assert_eq!(names, [("a.pem", "a.key"), ("b.pem", "b.key")]);
    assert_eq!(tls.protocols, [TlsVersion::Tls13]);

    let u = &c.upstreams[0];
    assert_eq!(
        (u.balance, u.keepalive, u.keepalive_timeout),
        (Balance::LeastConn, 8, secs(30))
    );
    assert_eq!(
        (u.connect_timeout, u.send_timeout, u.read_timeout),
        (secs(1), secs(2), secs(3))
    );
    assert_eq!(u.servers[0].label, "localhost:3000");
    assert_eq!(
        u.servers[0].address,
        addr("127.0.0.1:3000"),
        "IPv4 is preferred"
    );
    assert_eq!((u.servers[0].weight, u.servers[1].backup), (3, true));
    let h = u.health.as_ref().unwrap();
    assert_eq!(
        (h.path.as_str(), h.interval, h.timeout, h.fails, h.passes),
        ("/health", secs(5), secs(2), 4, 1)
    );
    assert_eq!((u.max_fails, u.fail_timeout, u.retries), (0, secs(3600), 0));
    assert_eq!(u.sticky.as_ref().unwrap().cookie, "ringside_route");
    assert_eq!(c.upstreams[1].balance, Balance::RandomTwo);

    let api = &c.routes[0];
    assert_eq!(api.label, "Example.com/api/");
    assert_eq!(api.host, Some(HostMatch::Exact("example.com".into())));
    assert_eq!(
        api.match_header,
        [("x-canary".to_string(), "1".to_string())]
    );
    assert_eq!(api.match_cookie, [("beta".to_string(), "1".to_string())]);
    assert!(matches!(&api.action, Action::Split(parts) if parts == &[(0, 95), (1, 5)]));
    assert!(api.strip_prefix && !api.websocket && api.proxy_redirect);
    assert_eq!(api.cache, [(200, secs(3600)), (404, secs(60))]);
    let gzip = api.gzip.as_ref().unwrap();
    assert_eq!(gzip.types, ["text/plain", "application/json"]);
    assert_eq!(gzip.min_length, 1024);
    assert_eq!(
        api.set_request_headers,
        [("X-Env".to_string(), "prod".to_string())]
    );
    assert_eq!(api.add_response_headers[0].1, "public, immutable");
    assert_eq!(
        api.error_pages,
        [(502, "/var/www/50x.html".into()), (503, "50x.html".into())]
    );

    let files = &c.routes[1];
    assert_eq!(files.host, Some(HostMatch::Suffix(".example.com".into())));
    assert_eq!(files.label, "*.Example.com/static/");
    assert!(matches!(&files.action, Action::Static(p) if p == Path::new("/var/www/static/")));
    assert_eq!(files.expires, Some(secs(30 * 86_400)));
    assert!(
        matches!(&c.routes[2].action, Action::Redirect { to, status: 308 } if to == "$scheme://$host$uri?$args")
    );
    assert!(matches!(
        &c.routes[3].action,
        Action::Respond { status: 204, .. }
    ));
}

#[test]
fn relative_paths_follow_the_config_folder() {
    let text = format!(
        r#"{BASE}[[listen]]
address = "127.0.0.1:8443"
tls = {{ cert = "tls/cert.pem", key = "/abs/key.pem" }}
[log]
access = "logs/access.log"
[[route]]
path = "/"
static = "www"
error_pages = {{ "500" = "50x.html" }}
"#
    );
    let c = file::parse(&text, Path::new("/etc/ringside/ringside.toml")).unwrap();
    let certs = &c.listeners[1].tls.as_ref().unwrap().certs[0];
    assert_eq!(certs.cert, Path::new("/etc/ringside/tls/cert.pem"));
    assert_eq!(certs.key, Path::new("/abs/key.pem"));
    assert_eq!(
        c.log.access,
        LogTarget::File("/etc/ringside/logs/access.log".into())
    );
    assert!(
        matches!(&c.routes[0].action, Action::Static(p) if p == Path::new("/etc/ringside/www"))
    );
    assert_eq!(
        c.routes[0].error_pages[0].1,
        Path::new("/etc/ringside/50x.html")
    );
}
