//! TLS termination: real rustls clients in the test process against the real
//! binary. Certificates are made at test time with rcgen: one test CA signs
//! a leaf per name, and each cert file holds the full chain (leaf, then CA).

use crate::common::*;
use rcgen::CertificateParams;
use rustls::{
    crypto::ring::default_provider,
    pki_types::{ServerName, UnixTime},
    time_provider::{DefaultTimeProvider, TimeProvider},
    ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned,
    SupportedProtocolVersion,
};
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

/// A test CA and the leaf certificates it signed, written into `dir`.
struct Pki {
    ca: TestCa,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            ca: TestCa::new("ringside test CA"),
        }
    }

    /// Writes `NAME.pem` (leaf + CA) and `NAME.key`; returns their paths.
    fn leaf(&self, dir: &TestDir, name: &str) -> (PathBuf, PathBuf) {
        self.leaf_with(dir, name, |_| {})
    }

    /// A leaf valid only from `not_before` to `not_after` (year, month, day).
    fn leaf_dated(
        &self,
        dir: &TestDir,
        name: &str,
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> (PathBuf, PathBuf) {
        self.leaf_with(dir, name, |p| {
            p.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
            p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        })
    }

    fn leaf_with(
        &self,
        dir: &TestDir,
        name: &str,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> (PathBuf, PathBuf) {
        let (cert, key) = self.ca.leaf(&[name], edit);
        let chain = cert.pem() + &self.ca.cert.pem();
        (
            dir.write(&format!("{name}.pem"), &chain),
            dir.write(&format!("{name}.key"), &key.serialize_pem()),
        )
    }

    fn client(&self, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
        self.client_at(versions, Arc::new(DefaultTimeProvider))
    }

    /// A client whose clock says `time` (to accept a certificate that has
    /// expired by now).
    fn client_at(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        time: Arc<dyn TimeProvider>,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.cert.der().clone()).unwrap();
        Arc::new(
            ClientConfig::builder_with_details(Arc::new(default_provider()), time)
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the handshake for server name `sni`.
fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, sni: &str) -> std::io::Result<Tls> {
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let conn = ClientConnection::new(config.clone(), name).unwrap();
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// Sends a GET and reads one Content-Length response: (status, head, body).
fn get(s: &mut Tls, host: &str, path: &str) -> (u16, String, Vec<u8>) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.flush().unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut byte).expect("read response head");
        assert!(n > 0, "closed inside the head: {}", show(&buf));
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut byte).expect("read response body");
        assert!(n > 0, "closed inside the body");
        buf.extend_from_slice(&byte[..n]);
    }
    (status, head, buf[head_end..head_end + len].to_vec())
}

/// A proxy with one TLS listener (`tls` is the listener's `[listen.tls]`
/// body) in front of `up`.
fn tls_proxy(dir: TestDir, workers: usize, limits: &str, tls: &str, up: SocketAddr) -> Proxy {
    let toml = format!(
        "[runtime]\nworkers = {workers}\nshutdown_timeout = \"5s\"\n\n\
         [log]\naccess = \"off\"\nlevel = \"warn\"\n\n\
         [limits]\n{limits}\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n[listen.tls]\n{tls}\n\n{}{}",
        upstream("app", up, ""),
        route("/", "app")
    );
    Proxy::start_in(dir, &toml)
}

fn certs_line(pairs: &[&(PathBuf, PathBuf)]) -> String {
    let list: Vec<String> = pairs
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                c.display(),
                k.display()
            )
        })
        .collect();
    format!("certs = [ {} ]", list.join(", "))
}

#[test]
fn tls12_and_tls13_proxy_with_forwarded_proto() {
    let (pki, dir, up) = (Pki::new(), TestDir::new(), Upstream::echo());
    let a = pki.leaf(&dir, "a.test");
    let proxy = tls_proxy(dir, 1, "", &certs_line(&[&a]), up.addr());
    for (versions, want) in [
        (TLS12, rustls::ProtocolVersion::TLSv1_2),
        (TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut s = connect(proxy.addr(), &pki.client(versions), "a.test").unwrap();
        assert_eq!(s.conn.protocol_version(), Some(want));
        let t = token();
        let (status, _, _) = get(&mut s, "a.test", &format!("/{t}"));
        assert_eq!(status, 200);
        let req = up.only(&t);
        assert_eq!(req.header("x-forwarded-proto"), Some("https"));
        // Keep-alive over TLS: a second request on the same connection.
        let (status, _, _) = get(&mut s, "a.test", &format!("/{t}/again"));
        assert_eq!(status, 200);
        // HTTP/1.0: the proxy closes after the answer, with close_notify.
        s.write_all(b"GET /10 HTTP/1.0\r\nHost: a.test\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("a clean TLS close");
        assert!(got.starts_with(b"HTTP/1.1 200"), "{}", show(&got));
    }
}

#[test]
fn sni_picks_the_certificate_and_unknown_names_get_the_first() {
    let (pki, dir, up) = (Pki::new(), TestDir::new(), Upstream::echo());
    let (a, b) = (pki.leaf(&dir, "a.test"), pki.leaf(&dir, "b.test"));
    let proxy = tls_proxy(dir, 1, "", &certs_line(&[&a, &b]), up.addr());
    let client = pki.client(BOTH);
    let leaf_names = |s: &Tls| -> String {
        let der = &s.conn.peer_certificates().unwrap()[0];
        String::from_utf8_lossy(der.as_ref()).to_string()
    };
    let sa = connect(proxy.addr(), &client, "a.test").unwrap();
    assert!(leaf_names(&sa).contains("a.test"));
    let sb = connect(proxy.addr(), &client, "b.test").unwrap();
    assert!(leaf_names(&sb).contains("b.test"));
    // An unknown name gets the first certificate, which the client then
    // (rightly) refuses for that name.
    let e = connect(proxy.addr(), &client, "c.test").err();
    assert!(
        e.is_some_and(|e| e.to_string().contains("NotValidForName")
            || e.to_string().contains("not valid for name")),
        "an unknown name must get the default certificate (for a.test)"
    );
}

#[test]
fn tls13_only_refuses_a_tls12_client() {
    let (pki, dir, up) = (Pki::new(), TestDir::new(), Upstream::echo());
    let a = pki.leaf(&dir, "a.test");
    let tls = format!("{}\nprotocols = [\"TLSv1.3\"]", certs_line(&[&a]));
    let proxy = tls_proxy(dir, 1, "", &tls, up.addr());
    assert!(connect(proxy.addr(), &pki.client(TLS12), "a.test").is_err());
    let mut s = connect(proxy.addr(), &pki.client(BOTH), "a.test").unwrap();
    assert_eq!(
        s.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(get(&mut s, "a.test", "/x").0, 200);
}

#[test]
fn tickets_resume_on_any_worker() {
    let (pki, dir, up) = (Pki::new(), TestDir::new(), Upstream::echo());
    let a = pki.leaf(&dir, "a.test");
    let proxy = tls_proxy(dir, 2, "", &certs_line(&[&a]), up.addr());
    for versions in [TLS13, TLS12] {
        // One client config: its session store carries the tickets.
        let client = pki.client(versions);
        let mut s = connect(proxy.addr(), &client, "a.test").unwrap();
        assert_eq!(s.conn.handshake_kind(), Some(HandshakeKind::Full));
        // The response read also takes in the tickets sent after the handshake.
        assert_eq!(get(&mut s, "a.test", "/first").0, 200);
        // Every later connection resumes, whichever worker the kernel
        // hands it to (eight connections: all on one of two workers by
        // chance is 1 in 128).
        for i in 0..8 {
            let mut s = connect(proxy.addr(), &client, "a.test").unwrap();
            assert_eq!(get(&mut s, "a.test", &format!("/again{i}")).0, 200);
            assert_eq!(
                s.conn.handshake_kind(),
                Some(HandshakeKind::Resumed),
                "connection {i} ({versions:?}) was not resumed"
            );
        }
    }
}

#[test]
fn plain_http_and_truncated_handshakes_leave_other_connections_alone() {
    let (pki, dir, up) = (Pki::new(), TestDir::new(), Upstream::echo());
    let a = pki.leaf(&dir, "a.test");
    let proxy = tls_proxy(dir, 1, "", &certs_line(&[&a]), up.addr());
    let client = pki.client(BOTH);
    let mut by = connect(proxy.addr(), &client, "a.test").unwrap();
    assert_eq!(get(&mut by, "a.test", "/before").0, 200);

    // Plain HTTP on the TLS port: answered with an alert (or nothing), closed.
    let mut plain = Client::connect(proxy.addr());
    plain.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert!(plain.wait_closed(Duration::from_secs(3)));

    // A ClientHello cut in half, then the client goes away.
    let mut raw = TcpStream::connect(proxy.addr()).unwrap();
    raw.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ])
    .unwrap();
    drop(raw);

    assert_eq!(get(&mut by, "a.test", "/after").0, 200);
    let mut fresh = connect(proxy.addr(), &client, "a.test").unwrap();
    assert_eq!(get(&mut fresh, "a.test", "/fresh").0, 200);
}

#[test]
fn a_stalled_handshake_is_closed_after_client_header_timeout() {
    let (pki, dir, up) = (Pki::new(), TestDir::new(), Upstream::echo());
    let a = pki.leaf(&dir, "a.test");
    let limits = "client_header_timeout = \"500ms\"";
    let proxy = tls_proxy(dir, 1, limits, &certs_line(&[&a]), up.addr());
    let mut raw = TcpStream::connect(proxy.addr()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Half a ClientHello, then silence.
    raw.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let started = Instant::now();
    let mut b = [0u8; 64];
    let closed = matches!(raw.read(&mut b), Ok(0) | Err(_));
    let took = started.elapsed();
    assert!(closed, "the stalled handshake got an answer");
    assert!(
        took >= Duration::from_millis(350) && took <= Duration::from_millis(2500),
        "closed after {took:?}, client_header_timeout is 500ms"
    );
    // The listener still serves.
    let mut s = connect(proxy.addr(), &pki.client(BOTH), "a.test").unwrap();
    assert_eq!(get(&mut s, "a.test", "/x").0, 200);
}

#[test]
fn check_reports_a_key_that_does_not_match_and_an_unreadable_file() {
    let (pki, dir) = (Pki::new(), TestDir::new());
    let (a, b) = (pki.leaf(&dir, "a.test"), pki.leaf(&dir, "b.test"));
    let missing = dir.path().join("missing.pem");
    let toml = format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n\
         [[listen]]\naddress = \"127.0.0.2:0\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        a.0.display(),
        b.1.display(),
        missing.display(),
        a.1.display(),
    );
    let path = dir.write("ringside.toml", &toml);
    let out = run_bounded(
        &["-c".as_ref(), path.as_os_str(), "--check".as_ref()],
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let at = |line: usize| format!("{}:{line}: listen.tls.cert: ", path.display());
    assert!(
        err.lines()
            .any(|l| l.starts_with(&at(3)) && l.contains("does not match")),
        "no mismatch reported on line 3:\n{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with(&at(6)) && l.contains("cannot read")),
        "no unreadable file reported on line 6:\n{err}"
    );
}

#[test]
fn hsts_goes_on_every_response_errors_included() {
    let (pki, dir, up) = (Pki::new(), TestDir::new(), Upstream::echo());
    let a = pki.leaf(&dir, "a.test");
    let toml = format!(
        "[runtime]\nworkers = 1\n\n[log]\naccess = \"off\"\nlevel = \"warn\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\nhsts = \"max-age=63072000\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n\n{}{}{}{}",
        a.0.display(),
        a.1.display(),
        upstream("app", up.addr(), ""),
        upstream("dead", refused_port(), ""),
        route("/app/", "app"),
        route("/down/", "dead"),
    );
    let proxy = Proxy::start_in(dir, &toml);
    let client = pki.client(BOTH);
    for (path, want) in [("/app/x", 200), ("/nowhere", 404), ("/down/x", 502)] {
        let mut s = connect(proxy.addr(), &client, "a.test").unwrap();
        let (status, head, _) = get(&mut s, "a.test", path);
        assert_eq!(status, want, "{path}: {head}");
        assert!(
            head.contains("\r\nStrict-Transport-Security: max-age=63072000\r\n"),
            "{path} ({status}) without HSTS:\n{head}"
        );
        assert_eq!(head.matches("Strict-Transport-Security").count(), 1);
    }
    // A request the parser refuses (400) still gets it.
    let mut s = connect(proxy.addr(), &client, "a.test").unwrap();
    s.write_all(b"GET /app/x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    // The proxy closes after a 400, with close_notify (else this is an error).
    s.read_to_end(&mut got).expect("a clean TLS close");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("\r\nStrict-Transport-Security: max-age=63072000\r\n"));
}

#[test]
fn redirect_https_answers_301_to_the_same_target() {
    let toml = "[runtime]\nworkers = 1\n\n[log]\naccess = \"off\"\nlevel = \"warn\"\n\n\
                [[listen]]\naddress = \"127.0.0.1:0\"\nredirect_https = true\n";
    let proxy = Proxy::start(toml);
    let mut c = Client::connect(proxy.addr());
    c.send(b"GET /a/b?x=1&y HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 301, "{}", r.status_line);
    assert_eq!(r.header("location"), Some("https://example.com/a/b?x=1&y"));
    // The connection stays usable; a HEAD gets the same Location.
    c.send(b"HEAD / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://[::1]/"));
}

#[test]
fn reload_reads_certificates_again_and_a_bad_one_changes_nothing() {
    let (pki, dir, up) = (Pki::new(), TestDir::new(), Upstream::echo());
    let a = pki.leaf(&dir, "a.test");
    let toml = format!(
        "[runtime]\nworkers = 2\n\n[log]\naccess = \"off\"\nlevel = \"info\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n\n{}{}",
        a.0.display(),
        a.1.display(),
        upstream("app", up.addr(), ""),
        route("/", "app"),
    );
    let mut proxy = Proxy::start_in(dir, &toml);
    // A fresh client config each time: a resumed session would show the
    // certificate of the session it resumed, not the one now served.
    let client = || pki.client(BOTH);
    let leaf = |s: &Tls| s.conn.peer_certificates().unwrap()[0].clone();
    let mut old = connect(proxy.addr(), &client(), "a.test").unwrap();
    let first = leaf(&old);

    // A new certificate and key in the same files: read on SIGHUP.
    let scratch = TestDir::new();
    let (c2, k2) = pki.leaf(&scratch, "a.test");
    std::fs::copy(&c2, &a.0).unwrap();
    std::fs::copy(&k2, &a.1).unwrap();
    proxy.signal(libc::SIGHUP);
    assert!(proxy
        .wait_for_line(|l| l.contains("reloaded"), Duration::from_secs(5))
        .is_some());
    // The workers apply the reload just after the control plane logs it.
    let deadline = Instant::now() + Duration::from_secs(3);
    let second = loop {
        let s = connect(proxy.addr(), &client(), "a.test").unwrap();
        let l = leaf(&s);
        if l != first || Instant::now() > deadline {
            break l;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(first, second, "the reload did not read the new certificate");
    // Every worker serves the new one.
    for _ in 0..6 {
        let s = connect(proxy.addr(), &client(), "a.test").unwrap();
        assert_eq!(leaf(&s), second);
    }
    // The connection made before the reload is still served.
    assert_eq!(get(&mut old, "a.test", "/old").0, 200);

    // A key that is not one: the reload fails and the running certificate stays.
    std::fs::write(
        &a.1,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    proxy.signal(libc::SIGHUP);
    assert!(proxy
        .wait_for_line(|l| l.contains("reload failed"), Duration::from_secs(5))
        .is_some());
    let mut s = connect(proxy.addr(), &client(), "a.test").unwrap();
    assert_eq!(leaf(&s), second);
    assert_eq!(get(&mut s, "a.test", "/still").0, 200);
}

/// A clock stopped at one instant, for a client that must accept a
/// certificate outside its validity today.
#[derive(Debug)]
struct FixedTime(u64);

impl TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(self.0)))
    }
}

/// `--check` on `toml`: (exit code, stdout, stderr).
fn check(dir: &TestDir, toml: &str) -> (Option<i32>, String, String, PathBuf) {
    let path = dir.write("ringside.toml", toml);
    let out = run_bounded(
        &["-c".as_ref(), path.as_os_str(), "--check".as_ref()],
        Duration::from_secs(10),
    );
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr),
        path,
    )
}

fn listener_lines(pairs: &[&(PathBuf, PathBuf)]) -> String {
    // Each on its own address: a listener is known by it.
    (pairs.iter().enumerate())
        .map(|(i, (c, k))| {
            format!(
                "[[listen]]\naddress = \"127.0.0.{}:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
                i + 2,
                c.display(),
                k.display()
            )
        })
        .collect()
}

#[test]
fn check_warns_about_expired_and_future_certificates_and_passes() {
    let (pki, dir) = (Pki::new(), TestDir::new());
    let expired = pki.leaf_dated(&dir, "old.test", (2019, 1, 1), (2020, 1, 2));
    let future = pki.leaf_dated(&dir, "new.test", (2090, 5, 6), (2091, 1, 1));
    let good = pki.leaf(&dir, "a.test");

    // Listeners on lines 1-3, 4-6 and 7-9; the `tls` keys on lines 3, 6, 9.
    let (code, out, err, path) = check(&dir, &listener_lines(&[&expired, &future, &good]));
    assert_eq!(code, Some(0), "warnings must not fail --check:\n{err}");
    assert_eq!(out, format!("{}: ok\n", path.display()));
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "one warning per bad certificate:\n{err}");
    let at = |line: usize| format!("{}:{line}: warning: listen.tls.cert: ", path.display());
    assert!(lines[0].starts_with(&at(3)), "{err}");
    assert!(
        lines[0].ends_with("old.test.pem expired on 2020-01-02 00:00:00 UTC (notAfter)"),
        "{err}"
    );
    assert!(lines[1].starts_with(&at(6)), "{err}");
    assert!(
        lines[1].ends_with("new.test.pem is not valid before 2090-05-06 00:00:00 UTC (notBefore)"),
        "{err}"
    );

    // A valid certificate alone: no word on stderr.
    let (code, out, err, path) = check(&dir, &listener_lines(&[&good]));
    assert_eq!((code, err.as_str()), (Some(0), ""));
    assert_eq!(out, format!("{}: ok\n", path.display()));
}

#[test]
fn an_expired_certificate_is_served_and_logged_at_start_and_reload() {
    let (pki, dir, up) = (Pki::new(), TestDir::new(), Upstream::echo());
    let expired = pki.leaf_dated(&dir, "a.test", (2019, 1, 1), (2020, 1, 2));
    let mut proxy = tls_proxy(dir, 1, "", &certs_line(&[&expired]), up.addr());
    let warned = |l: &str| {
        l.contains("warning: listen.tls.certs.cert: ") && l.contains("expired on 2020-01-02")
    };
    let count = |p: &Proxy| p.stderr_lines().iter().filter(|l| warned(l)).count();
    assert!(
        proxy
            .wait_for_line(warned, Duration::from_secs(5))
            .is_some(),
        "no warning at start: {:?}",
        proxy.stderr_lines()
    );
    // Today a client refuses it...
    let e = connect(proxy.addr(), &pki.client(BOTH), "a.test").err();
    assert!(
        e.as_ref().is_some_and(|e| e.to_string().contains("xpired")),
        "the served certificate is not the expired one: {e:?}"
    );
    // ...but it is served: a client whose clock is in 2019 completes the
    // handshake and gets an answer.
    let in_2019 = Arc::new(FixedTime(1_560_000_000));
    let mut s = connect(proxy.addr(), &pki.client_at(BOTH, in_2019), "a.test").unwrap();
    assert_eq!(get(&mut s, "a.test", "/x").0, 200);

    // A reload reads the file again and warns again.
    proxy.signal(libc::SIGHUP);
    let again = crate::common::farm::within(Duration::from_secs(5), || count(&proxy) == 2);
    assert!(again.is_some(), "{:?}", proxy.stderr_lines());
    assert_eq!(get(&mut s, "a.test", "/after").0, 200);
}

/// Answers `/big/N` with N pattern bytes, anything else as `echo`.
fn big_or_echo(c: &mut UpConn) {
    while let Some(req) = c.read_request() {
        let answer = match req.target.strip_prefix("/big/") {
            Some(n) => {
                let body = pattern(n.parse().unwrap(), 7);
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                [head.into_bytes(), body].concat()
            }
            None => echo_response(&req),
        };
        if !c.write(&answer) {
            return;
        }
    }
}

#[test]
fn large_bodies_and_pipelined_requests_cross_tls_intact() {
    let (pki, dir, up) = (Pki::new(), TestDir::new(), Upstream::start(big_or_echo));
    let a = pki.leaf(&dir, "a.test");
    let proxy = tls_proxy(dir, 1, "", &certs_line(&[&a]), up.addr());
    for versions in [TLS13, TLS12] {
        let mut s = connect(proxy.addr(), &pki.client(versions), "a.test").unwrap();
        // A 300,000-byte answer: many records, more than one socket write.
        let (status, _, body) = get(&mut s, "a.test", "/big/300000");
        assert_eq!(status, 200);
        assert!(body == pattern(300_000, 7), "the large answer was altered");

        // A 100,000-byte upload with a second request right behind it in
        // the same TLS records: after the upload the proxy holds that
        // request already decrypted, with nothing left on the socket.
        let upload = pattern(100_000, 3);
        let mut burst = format!(
            "POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: {}\r\n\r\n",
            upload.len()
        )
        .into_bytes();
        burst.extend_from_slice(&upload);
        burst.extend_from_slice(b"GET /behind HTTP/1.1\r\nHost: a.test\r\n\r\n");
        s.write_all(&burst).unwrap();
        s.flush().unwrap();
        // Both answers, in order (they may arrive in one read).
        let last = b"target=/behind\nbodylen=0\n";
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !got.ends_with(last) {
            let n = s.read(&mut chunk).expect("read the pipelined answers");
            assert!(n > 0, "closed before both answers: {}", show(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
        assert!(
            text.contains("\r\n\r\ntarget=/up\nbodylen=100000\nHTTP/1.1 200"),
            "{text}"
        );
        let sent = up.requests_with("POST /up");
        assert!(
            sent.iter().all(|r| r.body == upload),
            "the upload was altered"
        );
    }
}

#[test]
fn an_idle_tls_connection_is_closed_with_close_notify() {
    let (pki, dir, up) = (Pki::new(), TestDir::new(), Upstream::echo());
    let a = pki.leaf(&dir, "a.test");
    let limits = "keepalive_timeout = \"300ms\"";
    let proxy = tls_proxy(dir, 1, limits, &certs_line(&[&a]), up.addr());
    for versions in [TLS13, TLS12] {
        let mut s = connect(proxy.addr(), &pki.client(versions), "a.test").unwrap();
        assert_eq!(get(&mut s, "a.test", "/x").0, 200);
        // Idle past keepalive_timeout: the proxy ends the TLS session
        // cleanly (an unclean end reads as UnexpectedEof here).
        let started = Instant::now();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)
            .expect("close_notify after the idle timeout");
        assert!(rest.is_empty(), "{}", show(&rest));
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}

#[test]
fn handshakes_by_result_and_accepts_are_counted_per_listener() {
    let (dir, pki, up) = (TestDir::new(), Pki::new(), Upstream::echo());
    let pair = pki.leaf(&dir, "localhost");
    let toml = format!(
        "[runtime]\nworkers = 2\nshutdown_timeout = \"5s\"\n\n\
         [log]\naccess = \"off\"\nlevel = \"warn\"\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n\n{}{}",
        pair.0.display(),
        pair.1.display(),
        upstream("app", up.addr(), ""),
        route("/", "app")
    );
    let p = Proxy::start_in(dir, &toml);
    let client = pki.client(BOTH);
    for _ in 0..3 {
        let mut s = connect(p.addr(), &client, "localhost").unwrap();
        assert_eq!(get(&mut s, "localhost", "/m").0, 200);
    }
    // Two plain-text "handshakes": refused.
    for _ in 0..2 {
        let mut s = TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut sink = Vec::new();
        // The connection ends after rustls's alert; the bytes are not checked.
        let _ = s.read_to_end(&mut sink);
    }
    let text = p.metrics();
    // The listener's label is its address as written.
    let l = "127.0.0.1:0";
    for want in [
        format!("ringside_tls_handshakes_total{{listener=\"{l}\",result=\"ok\"}} 3"),
        format!("ringside_tls_handshakes_total{{listener=\"{l}\",result=\"failed\"}} 2"),
        format!("ringside_connections_accepted_total{{listener=\"{l}\"}} 5"),
    ] {
        assert!(text.lines().any(|x| x == want), "no {want:?} in\n{text}");
    }
}
