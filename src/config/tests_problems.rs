//! Tests of config reading, bad input: each kind of problem with its exact
//! line and dotted key, every problem collected in line order, and the
//! `FILE:LINE: key: what is wrong` rendering.

use std::path::PathBuf;

use super::tests::{expect, expect_after_base, problems, BASE};
use super::*;

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
