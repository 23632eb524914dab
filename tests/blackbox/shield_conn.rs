//! The edge shield, connection side (issue 12, items 1 and 2): the client
//! address from a PROXY v1/v2 header or a trusted X-Forwarded-For, in the
//! headers sent upstream and in the access log; `max_connections_per_ip`
//! across workers; a listener's `allow`/`deny`; what a refused connection
//! costs (a close, a counter, a rate-limited info line). Clients bind
//! distinct 127.x.y.z source addresses.

use crate::common::farm::{connect_from, within};
use crate::common::*;
use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

/// Workers, `[limits]` lines and one `[[listen]]` per entry of `listens`
/// (its extra keys; the first on 127.0.0.1, the others on 127.0.1.N), in front of `up`; an admin listener (last in the
/// readiness line), the access log in the test dir, info level.
fn shield_config(
    dir: &TestDir,
    workers: usize,
    limits: &str,
    listens: &[&str],
    up: SocketAddr,
) -> String {
    // Listeners are told apart by their configured address: one each.
    let listens: String = (0..listens.len())
        .map(|i| {
            let address = format!("127.0.{}.{}:0", (i > 0) as u8, i.max(1));
            format!("[[listen]]\naddress = \"{address}\"\n{}\n\n", listens[i])
        })
        .collect();
    format!(
        "[runtime]\nworkers = {workers}\nshutdown_timeout = \"5s\"\n\n\
         [log]\naccess = \"{}\"\nlevel = \"info\"\n\n\
         [limits]\n{limits}\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n{listens}{}{}",
        dir.path().join("access.log").display(),
        upstream("app", up, ""),
        route("/", "app")
    )
}

fn start(workers: usize, limits: &str, listens: &[&str], up: &Upstream) -> Proxy {
    let dir = TestDir::new();
    let toml = shield_config(&dir, workers, limits, listens, up.addr());
    Proxy::start_in(dir, &toml)
}

fn admin(p: &Proxy) -> SocketAddr {
    *p.addrs().last().unwrap()
}

/// `ringside_limited_total{route="",reason=REASON}` on /metrics.
fn limited(p: &Proxy, reason: &str) -> u64 {
    let mut c = Client::connect(admin(p));
    let r = c.get("/metrics");
    assert_eq!(r.status, 200);
    let line = format!("ringside_limited_total{{route=\"\",reason=\"{reason}\"}} ");
    r.body_str()
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |v| v.parse().unwrap())
}

/// The access-log line carrying `needle` (the log is flushed within a second).
fn access_line(p: &Proxy, needle: &str) -> String {
    let path = p.dir().join("access.log");
    let mut found = None;
    within(Duration::from_secs(5), || {
        found = read_lines(&path).into_iter().find(|l| l.contains(needle));
        found.is_some()
    });
    found.unwrap_or_else(|| {
        panic!(
            "no access-log line with {needle:?}: {:?}",
            read_lines(&path)
        )
    })
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Sends `before` then a GET carrying a token (with `fields`) in one
/// write, so the request follows the header in the same segment; returns
/// the token after checking the answer.
fn proxied(c: &mut Client, before: &[u8], fields: &str) -> String {
    let t = token();
    let mut out = before.to_vec();
    out.extend(format!("GET /{t} HTTP/1.1\r\nHost: h\r\n{fields}\r\n").as_bytes());
    c.send(&out);
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", show(&r.raw_head));
    t
}

/// What the upstream was told and the log wrote for the request with `t`:
/// (X-Real-IP, X-Forwarded-For, the log line's first field).
fn seen(p: &Proxy, up: &Upstream, t: &str) -> (String, String, String) {
    let req = up.only(t);
    let real = req.header("x-real-ip").unwrap_or("-").to_string();
    let xff = req.header("x-forwarded-for").unwrap_or("-").to_string();
    let line = access_line(p, t);
    let remote = line.split(' ').next().unwrap().to_string();
    (real, xff, remote)
}

/// True when the proxy closed `c` without sending a byte.
fn closed_silently(c: &mut Client) -> bool {
    c.wait_closed(Duration::from_secs(3)) && c.wire.buf.is_empty()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// ------------------------------------------------------------ PROXY protocol

fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x20 | cmd, fam]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn v2_inet(src: [u8; 4], tlvs: &[u8]) -> Vec<u8> {
    let mut body = src.to_vec();
    body.extend_from_slice(&[10, 0, 0, 9, 0xdb, 0x8a, 0, 80]);
    body.extend_from_slice(tlvs);
    v2(1, 0x11, &body)
}

fn v2_inet6(src: &str) -> Vec<u8> {
    let src: std::net::Ipv6Addr = src.parse().unwrap();
    let mut body = src.octets().to_vec();
    body.extend_from_slice(&[0; 15]);
    body.extend_from_slice(&[1, 0x30, 0x39, 1, 0xbb]);
    v2(1, 0x21, &body)
}

#[test]
fn proxy_headers_name_the_client_upstream_and_in_the_log() {
    let up = Upstream::echo();
    let p = start(1, "", &["proxy_protocol = true"], &up);
    // PP2_TYPE_AUTHORITY "a.example" and PP2_TYPE_NOOP with 3 bytes.
    let tlvs = [&[0x02, 0, 9][..], b"a.example", &[0x04, 0, 3, 0, 0, 0]].concat();
    let cases: [(&str, Vec<u8>, &str); 8] = [
        (
            "v1 TCP4",
            b"PROXY TCP4 192.0.2.10 10.0.0.9 56324 80\r\n".to_vec(),
            "192.0.2.10",
        ),
        (
            "v1 TCP6",
            b"PROXY TCP6 2001:db8::10 2001:db8::9 56324 80\r\n".to_vec(),
            "2001:db8::10",
        ),
        (
            "v1 TCP6 mapped",
            b"PROXY TCP6 ::ffff:192.0.2.12 ::1 1 80\r\n".to_vec(),
            "192.0.2.12",
        ),
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1"),
        ("v2 PROXY INET", v2_inet([192, 0, 2, 20], &[]), "192.0.2.20"),
        ("v2 PROXY INET6", v2_inet6("2001:db8::20"), "2001:db8::20"),
        (
            "v2 with TLVs",
            v2_inet([192, 0, 2, 21], &tlvs),
            "192.0.2.21",
        ),
        (
            "v2 LOCAL",
            v2(0, 0x11, &[192, 0, 2, 22, 10, 0, 0, 9, 0, 1, 0, 80]),
            "127.0.0.1",
        ),
    ];
    for (name, header, client) in cases {
        let mut c = Client::connect(p.addr());
        let t = proxied(&mut c, &header, "");
        let (real, xff, remote) = seen(&p, &up, &t);
        assert_eq!(
            (name, real.as_str(), xff.as_str(), remote.as_str()),
            (name, client, client, client)
        );
        // The next request on the connection keeps the header's client.
        let t = proxied(&mut c, b"", "X-Forwarded-For: 6.6.6.6\r\n");
        let (real, xff, _) = seen(&p, &up, &t);
        assert_eq!(
            (name, real, xff),
            (name, client.to_string(), format!("6.6.6.6, {client}"))
        );
    }
    assert_eq!(limited(&p, "proxy_protocol"), 0);
}

#[test]
fn a_proxy_header_that_arrives_byte_by_byte_is_read_whole() {
    let up = Upstream::echo();
    let p = start(1, "", &["proxy_protocol = true"], &up);
    let headers = [
        (
            b"PROXY TCP4 192.0.2.30 10.0.0.9 1 80\r\n".to_vec(),
            "192.0.2.30",
        ),
        (v2_inet([192, 0, 2, 31], &[0x04, 0, 1, 0]), "192.0.2.31"),
    ];
    for (header, client) in headers {
        let mut c = Client::connect(p.addr());
        for b in &header {
            c.send(&[*b]);
            std::thread::sleep(Duration::from_millis(3));
        }
        let t = proxied(&mut c, b"", "");
        assert_eq!(seen(&p, &up, &t).0, client);
    }
}

#[test]
fn bad_proxy_headers_are_closed_without_an_answer() {
    let up = Upstream::echo();
    let p = start(2, "", &["proxy_protocol = true"], &up);
    let mut huge = v2_inet([192, 0, 2, 1], &[]);
    huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    let mut unknown_version = v2_inet([192, 0, 2, 1], &[]);
    unknown_version[12] = 0x31;
    let mut short_inet6 = v2_inet([192, 0, 2, 1], &[]);
    short_inet6[13] = 0x21;
    let long_v1 = [&b"PROXY UNKNOWN "[..], &[b'x'; 120], b"\r\n"].concat();
    let cases: [(&str, Vec<u8>); 9] = [
        ("plain HTTP", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
        ("v1 TCP4 with IPv6", b"PROXY TCP4 ::1 ::2 1 80\r\n".to_vec()),
        (
            "v1 TCP6 with IPv4",
            b"PROXY TCP6 192.0.2.1 192.0.2.2 1 80\r\n".to_vec(),
        ),
        ("v1 over 107 bytes", long_v1),
        (
            "v1 LF only",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 80\nGET".to_vec(),
        ),
        ("v2 oversized", huge),
        ("v2 version 3", unknown_version),
        ("v2 INET6 in 12 bytes", short_inet6),
        ("v2 garbage family", v2(1, 0x51, &[0; 12])),
    ];
    let mut bystander = Client::connect(p.addr());
    proxied(
        &mut bystander,
        b"PROXY TCP4 192.0.2.40 10.0.0.9 1 80\r\n",
        "",
    );
    for (name, bad) in &cases {
        let mut c = Client::connect(p.addr());
        // The proxy may close before reading all of it.
        let _ = c.try_send(bad);
        let _ = c.try_send(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(closed_silently(&mut c), "{name}: got {}", show(&c.wire.buf));
        proxied(&mut bystander, b"", "");
    }
    // Truncated: half a header, then the client's half-close.
    let mut c = Client::connect(p.addr());
    c.send(b"PROXY TCP4 192.0.2.1 ");
    c.wire.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_silently(&mut c), "truncated: {}", show(&c.wire.buf));
    let mut fresh = Client::connect(p.addr());
    let t = proxied(&mut fresh, b"PROXY TCP4 192.0.2.41 10.0.0.9 1 80\r\n", "");
    assert_eq!(seen(&p, &up, &t).0, "192.0.2.41");
    assert_eq!(up.heads_with("/after"), 0);
    assert_eq!(limited(&p, "proxy_protocol"), cases.len() as u64 + 1);
}

#[test]
fn no_proxy_header_within_the_header_timeout_is_closed() {
    let up = Upstream::echo();
    let p = start(
        1,
        "client_header_timeout = \"400ms\"",
        &["proxy_protocol = true"],
        &up,
    );
    let mut silent = Client::connect(p.addr());
    let mut partial = Client::connect(p.addr());
    partial.send(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00");
    let started = std::time::Instant::now();
    assert!(closed_silently(&mut silent));
    assert!(closed_silently(&mut partial));
    assert!(started.elapsed() < Duration::from_secs(2));
    // A peer that closes before its first byte (a TCP health check) is
    // not a refusal.
    drop(Client::connect(p.addr()));
    let mut c = Client::connect(p.addr());
    proxied(&mut c, b"PROXY UNKNOWN\r\n", "");
    assert_eq!(limited(&p, "proxy_protocol"), 2);
}

#[test]
fn a_proxy_header_before_tls_names_the_client() {
    let up = Upstream::echo();
    let dir = TestDir::new();
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = dir.write("cert.pem", &pair.cert.pem());
    let key = dir.write("key.pem", &pair.key_pair.serialize_pem());
    let listen = format!(
        "proxy_protocol = true\ntls = {{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    );
    let toml = shield_config(&dir, 1, "", &[&listen], up.addr());
    let p = Proxy::start_in(dir, &toml);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pair.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(p.addr()).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.write_all(&v2_inet([192, 0, 2, 50], &[])).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let t = token();
    let req = format!("GET /{t} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).unwrap();
    let mut answer = Vec::new();
    // A close without close_notify would be an error here; ringside sends it.
    tls.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", show(&answer));
    assert_eq!(seen(&p, &up, &t).0, "192.0.2.50");
}

// --------------------------------------------------------------- real_ip_from

#[test]
fn real_ip_from_trusts_only_its_peers_and_walks_x_forwarded_for() {
    let up = Upstream::echo();
    let trusted = "real_ip_from = [\"127.0.0.2\", \"10.0.0.0/8\", \"2001:db8:ffff::/48\"]";
    let p = start(1, trusted, &[""], &up);
    let chain_300 = vec!["10.1.2.3"; 300].join(", ");
    let with_client = format!("198.51.100.7, {chain_300}");
    let cases: [(&str, &str, &str, String); 10] = [
        (
            "untrusted peer",
            "127.0.0.3",
            "203.0.113.5",
            "127.0.0.3".into(),
        ),
        (
            "trusted peer",
            "127.0.0.2",
            "203.0.113.5",
            "203.0.113.5".into(),
        ),
        (
            "right-most untrusted",
            "127.0.0.2",
            "6.6.6.6, 203.0.113.6, 10.9.9.9",
            "203.0.113.6".into(),
        ),
        ("garbage", "127.0.0.2", "<script>", "127.0.0.2".into()),
        (
            "garbage in the chain",
            "127.0.0.2",
            "6.6.6.6, not-an-ip, 10.4.4.4",
            "10.4.4.4".into(),
        ),
        (
            "IPv6 with port",
            "127.0.0.2",
            "[2001:db8::7]:443",
            "2001:db8::7".into(),
        ),
        (
            "IPv6 trusted hop",
            "127.0.0.2",
            "2001:db8::8, 2001:db8:ffff::1",
            "2001:db8::8".into(),
        ),
        (
            "all trusted",
            "127.0.0.2",
            "10.7.7.7, 10.8.8.8",
            "10.7.7.7".into(),
        ),
        (
            "300 trusted entries",
            "127.0.0.2",
            &chain_300,
            "10.1.2.3".into(),
        ),
        (
            "300 after the client",
            "127.0.0.2",
            &with_client,
            "198.51.100.7".into(),
        ),
    ];
    for (name, from, xff, client) in cases {
        let mut c = connect_from(ip(from), p.addr());
        let t = proxied(&mut c, b"", &format!("X-Forwarded-For: {xff}\r\n"));
        let (real, sent_xff, remote) = seen(&p, &up, &t);
        assert_eq!((name, &real, &remote), (name, &client, &client));
        // Upstream: the client's header with the connection's address appended.
        assert_eq!((name, sent_xff), (name, format!("{xff}, {from}")));
        // The next request on the connection names its own client.
        let t = proxied(&mut c, b"", "");
        assert_eq!((name, seen(&p, &up, &t).0), (name, from.to_string()));
    }
}

// ---------------------------------------------------- connections at accept

/// A connection from `from` that was served once and stays open.
fn served_from(p: &Proxy, from: &str) -> Client {
    let mut c = connect_from(ip(from), p.addr());
    proxied(&mut c, b"", "");
    c
}

/// A connection from `from` that is refused at accept: closed unanswered.
fn refused_from(p: &Proxy, from: &str) -> bool {
    let mut c = connect_from(ip(from), p.addr());
    // A refused connection may be closed before the request is written.
    let _ = c.try_send(b"GET /refused HTTP/1.1\r\nHost: h\r\n\r\n");
    closed_silently(&mut c)
}

/// Workers whose refusal lines name `what` so far.
fn refusing_workers(p: &Proxy, what: &str) -> Vec<String> {
    let mut w: Vec<String> = p
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("refused") && l.contains(what))
        .filter_map(|l| {
            l.split("worker ")
                .nth(1)?
                .split(':')
                .next()
                .map(str::to_string)
        })
        .collect();
    w.sort();
    w.dedup();
    w
}

#[test]
fn max_connections_per_ip_is_exact_across_workers() {
    let up = Upstream::echo();
    let p = start(2, "max_connections_per_ip = 3", &[""], &up);
    let mut three: Vec<Client> = (0..3).map(|_| served_from(&p, "127.0.0.2")).collect();
    // The 4th from one address is refused whichever worker accepts it:
    // connect until both workers have refused one (each log line names its
    // worker; the first refusal of each is always logged).
    let mut refused = 0;
    while refusing_workers(&p, "max_connections_per_ip").len() < 2 {
        assert!(
            refused < 200,
            "one worker never refused: {:?}",
            p.stderr_lines()
        );
        assert!(refused_from(&p, "127.0.0.2"), "a 4th connection was served");
        refused += 1;
    }
    assert_eq!(limited(&p, "conn_per_ip"), refused);
    // Another address is served meanwhile; the three still are.
    let _other = served_from(&p, "127.0.0.3");
    for c in &mut three {
        proxied(c, b"", "");
    }
    // Closing one lets one more in (once the proxy has seen the close).
    drop(three.pop());
    let mut again = None;
    within(Duration::from_secs(5), || {
        let mut c = connect_from(ip("127.0.0.2"), p.addr());
        let t = token();
        // Refused (closed at once) until the proxy has seen the close.
        let _ = c.try_send(format!("GET /{t} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let served = c.try_read_response(false).is_ok_and(|r| r.status == 200);
        if served {
            again = Some(c);
        }
        served
    });
    assert!(again.is_some(), "no place freed by the close");
    assert!(refused_from(&p, "127.0.0.2"));
}

#[test]
fn listener_allow_and_deny_are_checked_at_accept() {
    let up = Upstream::echo();
    let open = "allow = [\"127.0.0.0/24\"]\ndeny = [\"127.0.0.3\"]";
    let behind = "proxy_protocol = true\ndeny = [\"192.0.2.66\"]";
    let p = start(1, "", &[open, behind], &up);
    let listens = [p.addrs()[0], p.addrs()[1]];
    let served = |from: &str| {
        let mut c = connect_from(ip(from), listens[0]);
        let t = proxied(&mut c, b"", "");
        seen(&p, &up, &t).0
    };
    assert_eq!(served("127.0.0.2"), "127.0.0.2");
    assert!(refused_from(&p, "127.0.0.3"), "deny wins over allow");
    assert!(refused_from(&p, "127.0.1.2"), "outside allow");
    assert_eq!(served("127.0.0.4"), "127.0.0.4");
    // Behind a balancer, the PROXY header's address is what the lists see.
    let mut c = Client::connect(listens[1]);
    // Refused at once: the write may meet the close.
    let _ = c.try_send(b"PROXY TCP4 192.0.2.66 10.0.0.9 1 80\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(closed_silently(&mut c));
    let mut c = Client::connect(listens[1]);
    let t = proxied(&mut c, b"PROXY TCP4 192.0.2.67 10.0.0.9 1 80\r\n", "");
    assert_eq!(seen(&p, &up, &t).0, "192.0.2.67");
    assert_eq!(limited(&p, "listener_deny"), 3);
    let lines = p.stderr_lines();
    assert!(
        lines.iter().any(|l| l.contains("info")
            && l.contains("connection from 127.0.0.3 to ")
            && l.contains("refused: listener allow/deny")),
        "{lines:?}"
    );
}

#[test]
fn refusal_lines_are_rate_limited_and_count_what_they_left_out() {
    let up = Upstream::echo();
    let p = start(1, "", &["deny = [\"127.0.0.3\"]"], &up);
    let flood = 40;
    for _ in 0..flood {
        let c = connect_from(ip("127.0.0.3"), p.addr());
        drop(c);
    }
    assert!(
        within(Duration::from_secs(5), || limited(&p, "listener_deny")
            == flood)
        .is_some()
    );
    let refusals = |p: &Proxy| -> Vec<String> {
        let all = p.stderr_lines();
        all.into_iter()
            .filter(|l| l.contains("refused: listener"))
            .collect()
    };
    let during = refusals(&p).len();
    assert!(
        (1..=3).contains(&during),
        "a flood of {flood} wrote {during} lines"
    );
    // A second later, the next refusal is logged with the count left out.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(refused_from(&p, "127.0.0.3"));
    let last = p
        .wait_for_line(
            |l| l.contains("more refused connections not logged"),
            Duration::from_secs(5),
        )
        .expect("a line that counts what it left out");
    let total: u64 = refusals(&p)
        .iter()
        .map(|l| {
            let left_out = l
                .rsplit_once(" (")
                .and_then(|(_, n)| n.split(' ').next()?.parse().ok());
            1 + left_out.unwrap_or(0)
        })
        .sum();
    assert_eq!(total, flood + 1, "{last}");
}

// -------------------------------------------------------------------- --check

#[test]
fn check_names_a_bad_network_with_its_line_and_key() {
    let dir = TestDir::new();
    let toml = "[limits]\nreal_ip_from = [\"10.0.0.0/8\",\n  \"10.0.0.0/33\"]\n\
                max_connections_per_ip = -1\n\
                [[listen]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = \"yes\"\n\
                allow = [\"192.0.2.0/24\", \"bogus\"]\ndeny = \"192.0.2.7\"\n";
    let path = dir.write("ringside.toml", toml);
    let out = run_bounded(
        &["-c".as_ref(), path.as_os_str(), "--check".as_ref()],
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    assert_eq!(out.status.code(), Some(1), "{text}");
    for want in [
        "FILE:3: limits.real_ip_from: \"10.0.0.0/33\": the prefix length must be 0..=32",
        "FILE:4: limits.max_connections_per_ip: must be at least 0",
        "FILE:7: listen.proxy_protocol: expected true or false",
        "FILE:8: listen.allow: \"bogus\" is not an IP address or CIDR network",
        "FILE:9: listen.deny: expected an array of addresses or CIDR networks",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(want)),
            "{want:?} not in:\n{text}"
        );
    }
}

#[test]
fn ip_hash_hashes_the_address_real_ip_from_names() {
    let backends = crate::common::farm::Backend::many(2);
    let toml = config(
        "real_ip_from = [\"127.0.0.0/8\"]",
        &(crate::common::farm::pool(
            "app",
            &crate::common::farm::servers_of(&backends),
            "balance = \"ip_hash\"",
        ) + &route("/", "app")),
    );
    let p = Proxy::start(&toml);
    let mut picked = Vec::new();
    for i in 0..12 {
        let client = format!("198.51.100.{i}");
        // The same client through two different trusted peers: one server.
        let via: Vec<String> = ["127.0.0.2", "127.0.0.4"]
            .iter()
            .map(|from| {
                let mut c = connect_from(ip(from), p.addr());
                c.send(
                    format!("GET /x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: {client}\r\n\r\n")
                        .as_bytes(),
                );
                crate::common::farm::who(&c.read_response())
            })
            .collect();
        assert_eq!(via[0], via[1], "{client}");
        picked.push(via[0].clone());
    }
    picked.dedup();
    assert!(
        picked.len() > 1,
        "every client on one server: the peer was hashed"
    );
}

#[test]
fn behind_a_balancer_the_per_ip_limit_counts_the_proxy_source() {
    let up = Upstream::echo();
    let p = start(
        2,
        "max_connections_per_ip = 1",
        &["proxy_protocol = true"],
        &up,
    );
    let header = |last: u8| format!("PROXY TCP4 192.0.2.{last} 10.0.0.9 1 80\r\n").into_bytes();
    let mut first = Client::connect(p.addr());
    proxied(&mut first, &header(80), "");
    let mut second = Client::connect(p.addr());
    // Refused at once: the write may meet the close.
    let _ = second.try_send(&header(80));
    assert!(
        closed_silently(&mut second),
        "a 2nd connection from 192.0.2.80"
    );
    // All come from 127.0.0.1; only the header's address counts.
    let mut other = Client::connect(p.addr());
    let t = proxied(&mut other, &header(81), "");
    assert_eq!(seen(&p, &up, &t).0, "192.0.2.81");
    proxied(&mut first, b"", "");
    assert_eq!(limited(&p, "conn_per_ip"), 1);
}
