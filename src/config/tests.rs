//! Tests of config reading: the contract's sample, every default, each kind
//! of bad input with its exact line and key, the checks outside the file and
//! the `FILE:LINE: key: what is wrong` rendering.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

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

fn problems(text: &str) -> Vec<Problem> {
    match parse_str(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(list) => list,
    }
}

/// Asserts exactly these problems, in order, each written as the start of
/// `LINE: key: message`.
fn expect(text: &str, wanted: &[&str]) {
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
    assert_eq!(single.hsts.as_deref(), Some("max-age=63072000"));
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

#[test]
fn syntax_error_is_one_problem_with_its_line() {
    expect(
        "[[listen]]\naddress = \"127.0.0.1:80\"\n[log\n",
        &["3: syntax: invalid table header"],
    );
    expect("a = 1\nb = \"open\n", &["2: syntax: invalid basic string"]);
    expect(
        "[log]\nlevel = \"info\"\nlevel = \"warn\"\n",
        &["3: syntax: duplicate key `level`"],
    );
}

#[test]
fn listen_is_required() {
    expect(
        "[runtime]\nworkers = 1\n",
        &["1: listen: at least one [[listen]]"],
    );
    expect("listen = []\n", &["1: listen: at least one [[listen]]"]);
    expect(
        "[listen]\naddress = \"127.0.0.1:80\"\n",
        &["1: listen: expected an array of tables, found a table"],
    );
}

#[test]
fn unknown_keys_are_named_by_their_dotted_path() {
    expect_after_base("colour = \"blue\"\n", &["6: upstream.colour: unknown key"]);
    expect(
        r#"[[listen]]
address = "127.0.0.1:80"
[runtime]
worker = 2
[[upstream]]
name = "a"
servers = [ { address = "127.0.0.1:1", wieght = 2 } ]
[extra]
"#,
        &[
            "4: runtime.worker: unknown key (known: workers, shutdown_timeout, user, group)",
            "7: upstream.servers.wieght: unknown key",
            "8: extra: unknown key",
        ],
    );
    expect(
        "[[listen]]\naddress = \"127.0.0.1:80\"\n[listen.tls]\ncerts = [ { cert = \"a\", key = \"b\", chain = \"c\" } ]\n",
        &["4: listen.tls.certs.chain: unknown key"],
    );
}

#[test]
fn wrong_types() {
    expect_after_base(
        r#"keepalive = "many"
retries = 1.5
[[route]]
path = "/"
upstream = "app"
websocket = "yes"
match_header = { "X-A" = 1 }
[runtime]
workers = "4"
"#,
        &[
            "6: upstream.keepalive: expected an integer, found a string",
            "7: upstream.retries: expected an integer, found a float",
            "11: route.websocket: expected true or false, found a string",
            "12: route.match_header: expected a string, found an integer",
            "14: runtime.workers: expected an integer, found a string",
        ],
    );
    expect(
        "[[listen]]\naddress = 8080\nlog = 3\n",
        &[
            "2: listen.address: expected a string",
            "3: listen.log: unknown key",
        ],
    );
    expect(
        "log = 3\n[[listen]]\naddress = \"127.0.0.1:80\"\n",
        &["1: log: expected a table, found an integer"],
    );
}

#[test]
fn bad_units() {
    expect_after_base(
        r#"connect_timeout = "10"
read_timeout = "-5s"
send_timeout = 60
fail_timeout = "1.5s"
[limits]
max_request_head = "16"
max_request_body = -1
client_header_timeout = "0s"
[cache]
size = "1t"
"#,
        &[
            "6: upstream.connect_timeout: \"10\" is not a duration",
            "7: upstream.read_timeout: \"-5s\" is not a duration",
            "8: upstream.send_timeout: expected a duration like \"10s\", found an integer",
            "9: upstream.fail_timeout: \"1.5s\" is not a duration",
            "11: limits.max_request_head: \"16\" is not a size",
            "12: limits.max_request_body: -1 is not a size: it must not be negative",
            "13: limits.client_header_timeout: must be more than 0",
            "15: cache.size: \"1t\" is not a size",
        ],
    );
}

#[test]
fn bad_values() {
    expect(
        r#"[log]
access = "stderr"
error = "off"
level = "loud"
access_format = "xml"
[[listen]]
address = "127.0.0.1:80"
http2 = true
hsts = "max-age=1\nX-Evil: 1"
"#,
        &[
            "2: log.access: \"stderr\" is not allowed here: use \"stdout\", \"off\" or a file path",
            "3: log.error: \"off\" is not allowed here: use \"stderr\" or a file path",
            "4: log.level: \"loud\" is not one of \"error\", \"warn\", \"info\", \"debug\"",
            "5: log.access_format: \"xml\" is not one of \"combined\", \"json\"",
            "8: listen.http2: needs tls",
            "9: listen.hsts: a header value must not contain control characters (found \\n)",
        ],
    );
}

#[test]
fn missing_required_keys() {
    expect(
        r#"[[listen]]
http2 = false
[[upstream]]
balance = "ip_hash"
[[route]]
upstream = "x"
[[upstream]]
name = "y"
servers = [ { weight = 2 } ]
"#,
        &[
            "1: listen.address: is required",
            "3: upstream.name: is required",
            "3: upstream.servers: is required",
            "5: route.path: is required",
            "6: route.upstream: unknown upstream \"x\"",
            "9: upstream.servers.address: is required",
        ],
    );
}

#[test]
fn upstream_rules() {
    expect_after_base(
        r#"[[upstream]]
name = "app"
balance = "fastest"
servers = [ { address = "127.0.0.1:1", backup = true }, { address = "127.0.0.1:2", backup = true } ]
health = { path = "health" }
sticky = { }
[[upstream]]
name = "empty"
servers = []
[[upstream]]
name = "weights"
servers = [ { address = "127.0.0.1:1", weight = 0 }, { address = "nohost" }, "127.0.0.1:3" ]
"#,
        &[
            "7: upstream.name: duplicate upstream name \"app\" (first at line 4)",
            "8: upstream.balance: \"fastest\" is not one of \"round_robin\", \"least_conn\", \"ip_hash\", \"uri_hash\", \"random_two\"",
            "9: upstream.servers: every server is a backup",
            "10: upstream.health.path: \"health\" must start with \"/\"",
            "11: upstream.sticky.cookie: is required",
            "14: upstream.servers: at least one server is required",
            "17: upstream.servers: expected a table, found a string",
            "17: upstream.servers.weight: must be from 1 to 1000000",
            "17: upstream.servers.address: \"nohost\" is not host:port",
        ],
    );
}

#[test]
fn route_rules() {
    expect_after_base(
        r#"[[route]]
path = "api"
[[route]]
path = "/two"
upstream = "app"
static = "/var/www"
respond = { status = 200 }
[[route]]
path = "/split"
split = [ { upstream = "app", weight = 0 }, { upstream = "ghost", weight = 0 } ]
[[route]]
path = "/empty-split"
split = []
[[route]]
path = "/r"
redirect = { to = "https://example.com$request_uri$foo$", status = 300 }
[[route]]
path = "/c"
respond = { status = 99 }
cache = { "2xx" = "1m", "200" = "1m", "1000" = "1m", "099" = "1m" }
error_pages = { "200" = "a.html", "50" = "b.html", "503" = "" }
[[route]]
host = "a.*.com"
path = "/h"
upstream = "app"
match_header = { "Bad Name" = "1" }
add_response_headers = { "X-A" = "1\r\nX-B: 2" }
[[route]]
host = "example.com:8080"
path = "/h"
upstream = "app"
"#,
        &[
            "6: route: needs one of upstream, split, static, redirect, respond",
            "7: route.path: \"api\" must start with \"/\"",
            "11: route: has both upstream and static: a route takes exactly one",
            "15: route.split.upstream: unknown upstream \"ghost\"",
            "15: route.split: the weights add up to 0",
            "18: route.split: at least one { upstream, weight } is required",
            "21: route.redirect.to: unknown variable \"$foo\" (known: $request_uri, $host, $scheme, $uri, $args)",
            "21: route.redirect.to: unknown variable \"$\"",
            "21: route.redirect.status: must be 301, 302, 303, 307 or 308",
            "24: route.respond.status: must be from 200 to 599",
            "25: route.cache: \"2xx\" is not a status code from 100 to 599",
            "25: route.cache: \"1000\" is not a status code from 100 to 599",
            "25: route.cache: \"099\" is not a status code from 100 to 599",
            "26: route.error_pages: \"200\" is not a status code from 400 to 599",
            "26: route.error_pages: \"50\" is not a status code from 400 to 599",
            "26: route.error_pages: must not be empty",
            "28: route.host: a wildcard is only allowed as a leading \"*.\"",
            "31: route.match_header: \"Bad Name\" is not a valid name",
            "32: route.add_response_headers: a header value must not contain control characters (found \\r)",
            "34: route.host: must be a bare host name, without port, path or spaces",
        ],
    );
}

#[test]
fn listen_and_tls_rules() {
    expect(
        r#"[admin]
address = "localhost:9901"
[[listen]]
address = ":8080"
[[listen]]
address = "0.0.0.0"
redirect_https = true
tls = { cert = "c.pem" }
[[listen]]
address = "127.0.0.1:8443"
[listen.tls]
cert = "c.pem"
key = "k.pem"
certs = [ { cert = "a.pem" } ]
protocols = ["TLSv1.1"]
[[listen]]
address = "127.0.0.1:8444"
tls = { certs = [], protocols = [] }
"#,
        &[
            "2: admin.address: \"localhost:9901\" is not an ip:port address",
            "4: listen.address: \":8080\" is not an ip:port address, like \"0.0.0.0:8080\"",
            "6: listen.address: \"0.0.0.0\" is not an ip:port address",
            "7: listen.redirect_https: on a TLS listener would redirect to itself",
            "8: listen.tls.key: is required",
            "12: listen.tls.cert: write cert and key, or certs, not both",
            "14: listen.tls.certs.key: is required",
            "15: listen.tls.protocols: \"TLSv1.1\" is not one of \"TLSv1.2\", \"TLSv1.3\"",
            "18: listen.tls.certs: at least one { cert, key } is required",
            "18: listen.tls.protocols: needs at least one version",
        ],
    );
}

#[test]
fn every_problem_is_collected_in_line_order() {
    let list = problems(
        r#"[[route]]
path = "x"
[runtime]
workers = -1
[[upstream]]
name = ""
"#,
    );
    let lines: Vec<_> = list.iter().map(|p| p.line).collect();
    assert_eq!(lines, [1, 1, 2, 4, 5, 6], "{list:#?}");
}

#[test]
fn problems_render_as_file_line_key_message() {
    let list = problems(&format!(
        "{BASE}weight = 1\n[limits]\nmax_connections = -3\n"
    ));
    let shown = Problems {
        file: PathBuf::from("/etc/ringside.toml"),
        list,
    }
    .to_string();
    assert_eq!(
        shown,
        "/etc/ringside.toml:6: upstream.weight: unknown key (known: name, balance, keepalive, \
         keepalive_timeout, connect_timeout, send_timeout, read_timeout, servers, health, \
         max_fails, fail_timeout, retries, sticky)\n\
         /etc/ringside.toml:8: limits.max_connections: must be at least 0"
    );
}
