//! Automatic certificates against a real ACME server: Debian's `pebble`
//! and `pebble-challtestsrv` (its DNS, answering 127.0.0.1 for every name,
//! with its own challenge servers off so ringside answers them), started
//! here with pebble's `httpPort`/`tlsPort` on ringside's listeners. The
//! chain ringside serves is verified against the root pebble picked at
//! its start (`/roots/0` on its management port).

use crate::common::{acme_ca::ScriptedCa, *};
use rustls::{
    crypto::ring::default_provider,
    pki_types::{pem::PemObject, CertificateDer, ServerName},
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
};
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

const NAMES: [&str; 2] = ["one.example.com", "two.example.com"];
/// An order takes a few seconds against pebble (no VA sleep); the budget
/// covers a slow, shared machine and pebble's rejected nonces.
const ISSUE_WAIT: Duration = Duration::from_secs(60);

/// A port to name in pebble's and ringside's configs before either binds
/// it. Taken below the kernel's ephemeral range (32768 and up by default),
/// where no parallel test's `bind(:0)` or outgoing connection lands in the
/// moment between this check and the real bind, and found free.
fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % 1000 * 10;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + ((start + n) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// pebble and its DNS, killed on drop.
struct Pebble {
    children: Vec<Child>,
    port: u16,
    management: u16,
    /// The test CA that signed pebble's own HTTPS certificate (PEM).
    ca: String,
    _dir: TestDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            // Already gone is fine: the point is that it does not outlive the test.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {:?} ({e}): install pebble (apt-get install -y pebble)",
                cmd
            )
        })
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Pebble {
    /// `validity`: pebble's certificate lifetime in seconds.
    fn start(http_port: u16, tls_port: u16, validity: Option<u64>) -> Pebble {
        let dir = TestDir::new();
        let ca = TestCa::new("pebble test CA");
        let (leaf, key) = ca.leaf(&["127.0.0.1", "localhost"], |_| {});
        dir.write("cert.pem", &leaf.pem());
        dir.write("key.pem", &key.serialize_pem());
        let (port, management, dns, challtest) =
            (free_port(), free_port(), free_port(), free_port());
        let mut config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(v) = validity {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        let path = dir.write("pebble.json", &config.to_string());
        let dns_addr = format!("127.0.0.1:{dns}");
        let mut children = vec![spawn(Command::new("pebble-challtestsrv").args([
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-dns01",
            &dns_addr,
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{challtest}"),
        ]))];
        wait_port(challtest);
        children.push(spawn(
            Command::new("pebble")
                .arg("-config")
                .arg(&path)
                .args(["-dnsserver", &dns_addr])
                .env("PEBBLE_VA_NOSLEEP", "1"),
        ));
        let pebble = Pebble {
            children,
            port,
            management,
            ca: ca.cert.pem(),
            _dir: dir,
        };
        wait_port(port);
        wait_port(management);
        pebble
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The root pebble signs with, from its management port.
    fn root(&self) -> CertificateDer<'static> {
        let roots = roots_of(&self.ca);
        let body = https_get(self.management, "127.0.0.1", "/roots/0", roots);
        CertificateDer::from_pem_slice(&body).expect("a PEM root from /roots/0")
    }
}

fn roots_of(pem: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(der.unwrap()).unwrap();
    }
    roots
}

fn client(roots: RootCertStore) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// GET over TLS; the body (the answer is read to its end).
fn https_get(port: u16, name: &str, path: &str, roots: RootCertStore) -> Vec<u8> {
    let (mut tls, _) = connect(port, name, roots).expect("a verified TLS handshake");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // Servers that close without close_notify still sent the whole answer.
    let _ = tls.read_to_end(&mut raw);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{}", show(&raw));
    raw[end + 4..].to_vec()
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A verified handshake with `name` by SNI; the stream and the leaf.
fn connect(
    port: u16,
    name: &str,
    roots: RootCertStore,
) -> Result<(Tls, CertificateDer<'static>), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let sni = ServerName::try_from(name.to_string()).unwrap();
    let conn = ClientConnection::new(client(roots), sni).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| e.to_string())?;
    }
    let leaf = tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    Ok((tls, leaf))
}

/// A GET of `/` over a verified connection to `name`: ringside's answer.
fn served(port: u16, name: &str, root: &CertificateDer<'static>) -> CertificateDer<'static> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let (mut tls, leaf) = connect(port, name, roots).unwrap_or_else(|e| panic!("{name}: {e}"));
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw); // the answer is checked below
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{name}: {}", show(&raw));
    assert!(raw.ends_with(b"hi"), "{name}: {}", show(&raw));
    leaf
}

struct Setup {
    http: u16,
    tls: u16,
    admin: u16,
    storage: TestDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            http: free_port(),
            tls: free_port(),
            admin: free_port(),
            storage: TestDir::new(),
        }
    }

    /// ringside's config: a plain and an ACME TLS listener.
    fn toml(&self, directory: &str, ca: &Path, acme_extra: &str) -> String {
        let names = NAMES.map(|n| format!("\"{n}\"")).join(", ");
        format!(
            "[admin]\naddress = \"127.0.0.1:{admin}\"\n\n\
             [acme]\ndirectory = \"{directory}\"\nstorage = \"{storage}\"\nca = \"{ca}\"\n{acme_extra}\n\n\
             [[listen]]\naddress = \"127.0.0.1:{http}\"\n\n\
             [[listen]]\naddress = \"127.0.0.1:{tls}\"\ntls = {{ acme = [{names}] }}\n\n\
             [[route]]\npath = \"/\"\nrespond = {{ status = 200, body = \"hi\" }}\n",
            admin = self.admin,
            storage = self.storage.path().display(),
            ca = ca.display(),
            http = self.http,
            tls = self.tls,
        )
    }
}

fn start(setup: &Setup, pebble: &Pebble, extra: &str) -> Proxy {
    let dir = TestDir::new();
    let ca = dir.write("pebble-ca.pem", &pebble.ca);
    Proxy::start_in(dir, &setup.toml(&pebble.directory(), &ca, extra))
}

fn count(p: &Proxy, needle: &str) -> usize {
    p.stderr_lines()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

fn wait(p: &Proxy, needle: &str, wait: Duration) -> String {
    p.wait_for_line(|l| l.contains(needle), wait)
        .unwrap_or_else(|| {
            panic!(
                "no line with {needle:?}; stderr:\n{}",
                p.stderr_lines().join("\n")
            )
        })
}

fn metrics(admin: u16) -> String {
    let mut c = Client::connect(([127, 0, 0, 1], admin).into());
    c.send(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    String::from_utf8_lossy(&c.read_to_close(IO_TIMEOUT)).into_owned()
}

/// Issues for both names with `challenge`, checks both are served and
/// verified against pebble's root; returns the proxy and the leaf.
fn issue(setup: &Setup, pebble: &Pebble, challenge: &str) -> (Proxy, CertificateDer<'static>) {
    let p = start(setup, pebble, &format!("challenge = \"{challenge}\""));
    wait(&p, "issued, valid until", ISSUE_WAIT);
    let root = pebble.root();
    let leaf = served(setup.tls, NAMES[0], &root);
    assert_eq!(
        served(setup.tls, NAMES[1], &root),
        leaf,
        "one certificate for both names"
    );
    (p, leaf)
}

#[test]
fn tls_alpn_01_issues_for_two_names_then_a_restart_reuses_the_stored_certificate() {
    let setup = Setup::new();
    let pebble = Pebble::start(setup.http, setup.tls, None);
    let (mut p, leaf) = issue(&setup, &pebble, "tls-alpn-01");
    let m = metrics(setup.admin);
    let label = format!("names=\"{}\"", NAMES.join(","));
    assert!(
        m.contains(&format!(
            "ringside_acme_certificates{{{label},state=\"valid\"}} 1"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!("ringside_acme_certificate_expiry_days{{{label}}}")),
        "{m}"
    );
    // The key is private to ringside's user.
    let key = setup.storage.path().join(NAMES.join("+")).join("key.pem");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    p.signal(libc::SIGTERM);
    p.wait_exit(Duration::from_secs(10)).expect("a clean stop");

    // A restart serves the stored certificate at once, without an order.
    let p = start(&setup, &pebble, "challenge = \"tls-alpn-01\"");
    wait(&p, "serving the stored certificate", Duration::from_secs(5));
    assert_eq!(served(setup.tls, NAMES[0], &pebble.root()), leaf);
    assert_eq!(
        count(&p, "ordering a certificate"),
        0,
        "{:?}",
        p.stderr_lines()
    );
}

#[test]
fn http_01_issues_for_two_names_answered_on_the_plain_listener() {
    let setup = Setup::new();
    let pebble = Pebble::start(setup.http, setup.tls, None);
    let (mut p, leaf) = issue(&setup, &pebble, "http-01");
    // A reload with the same [acme] keeps the certificate and orders nothing.
    p.signal(libc::SIGHUP);
    wait(&p, "reloaded", Duration::from_secs(10));
    assert_eq!(served(setup.tls, NAMES[1], &pebble.root()), leaf);
    assert_eq!(
        count(&p, "ordering a certificate"),
        1,
        "{:?}",
        p.stderr_lines()
    );
    // The plain listener served the challenges and still routes the rest.
    let mut c = Client::connect(([127, 0, 0, 1], setup.http).into());
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert!(c.read_to_close(IO_TIMEOUT).ends_with(b"hi"));
    let unknown =
        b"GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let mut c = Client::connect(([127, 0, 0, 1], setup.http).into());
    c.send(unknown);
    assert!(
        c.read_to_close(IO_TIMEOUT).ends_with(b"hi"),
        "an unknown token is routed as usual"
    );
    drop(p);
}

#[test]
fn renewal_starts_renew_before_the_end() {
    let setup = Setup::new();
    // 40 s certificates renewed 30 s before their end: every ~10 s.
    let pebble = Pebble::start(setup.http, setup.tls, Some(40));
    let p = start(&setup, &pebble, "renew_before = \"30s\"");
    wait(&p, "issued, valid until", ISSUE_WAIT);
    let root = pebble.root();
    let first = served(setup.tls, NAMES[0], &root);
    let deadline = Instant::now() + ISSUE_WAIT;
    while count(&p, "issued, valid until") < 2 {
        assert!(
            Instant::now() < deadline,
            "no renewal: {:?}",
            p.stderr_lines()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let second = served(setup.tls, NAMES[0], &root);
    assert_ne!(
        first, second,
        "the renewed certificate is served without a restart"
    );
}

#[test]
fn an_unreachable_directory_leaves_ringside_serving_and_retrying() {
    let setup = Setup::new();
    let dir = TestDir::new();
    let ca = dir.write("ca.pem", &Pebble::test_ca_pem());
    let closed = format!("https://127.0.0.1:{}/dir", free_port());
    let p = Proxy::start_in(dir, &setup.toml(&closed, &ca, ""));
    wait(&p, "retrying in 2s", Duration::from_secs(10));
    wait(&p, "retrying in 4s", Duration::from_secs(10));
    let line = wait(&p, "acme: certificate for", Duration::from_secs(1));
    assert!(line.contains(&NAMES.join(", ")), "{line}");
    // The plain listener serves; a TLS handshake fails cleanly, logged once.
    for _ in 0..2 {
        let mut c = Client::connect(([127, 0, 0, 1], setup.http).into());
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert!(c.read_to_close(IO_TIMEOUT).ends_with(b"hi"));
        assert!(connect(setup.tls, NAMES[0], roots_of(&Pebble::test_ca_pem())).is_err());
    }
    wait(&p, "no certificate for", Duration::from_secs(2));
    assert_eq!(count(&p, "no certificate for"), 1, "{:?}", p.stderr_lines());
    let m = metrics(setup.admin);
    assert!(m.contains("state=\"failed\"} 1"), "{m}");
}

#[test]
fn a_refused_challenge_is_logged_with_its_reason_and_retried() {
    let setup = Setup::new();
    // pebble validates http-01 on a port where nothing listens.
    let pebble = Pebble::start(free_port(), setup.tls, None);
    let p = start(&setup, &pebble, "challenge = \"http-01\"");
    let line = wait(&p, "is invalid", ISSUE_WAIT);
    assert!(line.contains("one.example.com"), "{line}");
    assert!(line.contains("retrying in"), "{line}");
    let mut c = Client::connect(([127, 0, 0, 1], setup.http).into());
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert!(c.read_to_close(IO_TIMEOUT).ends_with(b"hi"));
}

impl Pebble {
    /// Any CA will do where no pebble runs.
    fn test_ca_pem() -> String {
        TestCa::new("test CA").cert.pem()
    }
}

#[test]
fn check_reports_each_bad_acme_input_with_its_reason() {
    let dir = TestDir::new();
    dir.write("not-a-folder", "x");
    dir.write("empty.pem", "nothing here\n");
    let toml = "[acme]\n\
        directory = \"http://acme.example/dir\"\n\
        storage = \"not-a-folder\"\n\
        ca = \"empty.pem\"\n\
        challenge = \"dns-01\"\n\
        email = \"nobody\"\n\n\
        [[listen]]\naddress = \"127.0.0.1:0\"\n\
        tls = { acme = [\"*.example.com\", \"bad_name\", \"ok.example.com\", \"ok.example.com\"] }\n\n\
        [[listen]]\naddress = \"127.0.0.1:0\"\ntls = { acme = [\"x.example.com\"], cert = \"c.pem\" }\n";
    let path = dir.write("bad.toml", toml);
    let out = run_bounded(
        &["-c".as_ref(), path.as_os_str(), "--check".as_ref()],
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for expected in [
        ":2: acme.directory: \"http://acme.example/dir\" is not an https:// URL",
        ":5: acme.challenge: \"dns-01\" is not one of \"tls-alpn-01\", \"http-01\"",
        ":6: acme.email: \"nobody\" is not an email address",
        ":10: listen.tls.acme: \"*.example.com\": a wildcard needs the dns-01 challenge",
        ":10: listen.tls.acme: \"bad_name\" is not a DNS name",
        ":10: listen.tls.acme: \"ok.example.com\" is listed twice",
        ":14: listen.tls.cert: write acme, or cert and key, not both",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    // With the text right, the checks outside it: storage and ca.
    let toml = "[acme]\ndirectory = \"https://acme.example/dir\"\nstorage = \"not-a-folder\"\nca = \"empty.pem\"\n\n\
        [[listen]]\naddress = \"127.0.0.1:0\"\ntls = { acme = [\"a.example.com\"] }\n";
    let path = dir.write("outside.toml", toml);
    let out = run_bounded(
        &["-c".as_ref(), path.as_os_str(), "--check".as_ref()],
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(":3: acme.storage: cannot make folder"),
        "{err}"
    );
    assert!(
        err.contains(":4: acme.ca: ") && err.contains("empty.pem holds no PEM certificate"),
        "{err}"
    );

    // tls.acme without [acme].
    let toml = "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = { acme = [\"a.example.com\"] }\n";
    let path = dir.write("no-acme.toml", toml);
    let out = run_bounded(
        &["-c".as_ref(), path.as_os_str(), "--check".as_ref()],
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":3: listen.tls.acme: needs an [acme] section"),
        "{err}"
    );

    // A good one passes.
    let toml = "[acme]\ndirectory = \"https://acme.example/dir\"\nstorage = \"store\"\nemail = \"ops@example.com\"\n\n\
        [[listen]]\naddress = \"127.0.0.1:0\"\ntls = { acme = [\"a.example.com\", \"WWW.example.com\"] }\n";
    let path = dir.write("good.toml", toml);
    let out = run_bounded(
        &["-c".as_ref(), path.as_os_str(), "--check".as_ref()],
        Duration::from_secs(10),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------- failures, against a scripted CA

/// The name of a listener with a certificate from files, served whatever
/// the ACME order does.
const OTHER: &str = "static.example.com";

/// ringside against a scripted CA: the plain listener, the ACME listener
/// for `NAMES` and a TLS listener for `OTHER` with a certificate from files.
struct AgainstCa {
    proxy: Proxy,
    setup: Setup,
    other: u16,
    other_root: CertificateDer<'static>,
}

impl AgainstCa {
    fn start(ca: &ScriptedCa) -> AgainstCa {
        let setup = Setup::new();
        let dir = TestDir::new();
        let ca_file = dir.write("ca.pem", &ca.root_pem);
        let root = TestCa::new("other test CA");
        let (leaf, key) = root.leaf(&[OTHER], |_| {});
        let cert = dir.write("other.pem", &leaf.pem());
        let key = dir.write("other-key.pem", &key.serialize_pem());
        let other = free_port();
        let toml = format!(
            "{}\n[[listen]]\naddress = \"127.0.0.1:{other}\"\n\
             tls = {{ cert = \"{}\", key = \"{}\" }}\n",
            setup.toml(&ca.url(acme_ca::DIRECTORY), &ca_file, ""),
            cert.display(),
            key.display()
        );
        AgainstCa {
            proxy: Proxy::start_in(dir, &toml),
            setup,
            other,
            other_root: root.cert.der().clone(),
        }
    }

    /// The failure line of the order for `NAMES` that holds `reason`.
    fn failure(&self, reason: &str) -> String {
        let line = wait(&self.proxy, reason, Duration::from_secs(10));
        let names = format!("acme: certificate for {}: ", NAMES.join(", "));
        assert!(line.contains(&names), "{line}");
        line
    }

    /// The plain listener and the file certificate's name are served.
    fn still_serving(&self) {
        let mut c = Client::connect(([127, 0, 0, 1], self.setup.http).into());
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert!(c.read_to_close(IO_TIMEOUT).ends_with(b"hi"));
        served(self.other, OTHER, &self.other_root);
    }
}

#[test]
fn a_rate_limit_is_logged_with_the_names_and_retried_no_sooner_than_retry_after() {
    let detail = "too many certificates already issued for example.com";
    let ca = ScriptedCa::start(move |ca, req| match req.path.as_str() {
        acme_ca::NEW_ORDER => {
            let fields = format!("{}Retry-After: 3\r\n", acme_ca::nonce_field(req));
            acme_ca::problem(429, "rateLimited", detail, &fields)
        }
        _ => ca.standard(req),
    });
    let f = AgainstCa::start(&ca);
    let line = f.failure("rateLimited");
    assert!(
        line.contains(&format!("429 rateLimited: {detail}")),
        "{line}"
    );
    assert!(
        line.contains("retrying in 3s (the CA's Retry-After)"),
        "Retry-After: 3 wins over the first backoff (2 s): {line}"
    );
    f.still_serving();
    let new_order = |s: &acme_ca::CaSeen| s.is("POST", acme_ca::NEW_ORDER);
    let seen = ca.wait_for(2, new_order, Duration::from_secs(10));
    let tries: Vec<_> = seen.iter().filter(|s| new_order(s)).collect();
    let gap = tries[1].at - tries[0].at;
    assert!(gap >= Duration::from_secs(3), "retried after {gap:?}");
    // The doubled backoff (4 s) wins over a shorter Retry-After.
    let again = |l: &str| l.contains("rateLimited") && l.contains("retrying in 4s");
    let line = f.proxy.wait_for_line(again, Duration::from_secs(5));
    assert!(line.is_some(), "{:?}", f.proxy.stderr_lines());
    f.still_serving();
}

#[test]
fn malformed_ca_answers_are_logged_with_their_reason_and_retried() {
    type Shape = fn(&acme_ca::Ca, &acme_ca::CaSeen) -> Option<Vec<u8>>;
    // Each shape: the bad answer (None: the standard one), and the reason
    // logged, where `{CA}` stands for the CA's address.
    let shapes: [(Shape, &str); 6] = [
        (
            |_, req| {
                req.is("GET", acme_ca::DIRECTORY).then(|| {
                    acme_ca::answer(503, "Content-Type: text/html\r\n", "<html>busy</html>")
                })
            },
            "directory {CA}/directory: the CA answered 503 without a problem document",
        ),
        (
            |_, req| {
                req.is("GET", acme_ca::DIRECTORY).then(|| {
                    acme_ca::answer(
                        200,
                        "Content-Type: text/html\r\n",
                        "<html>maintenance</html>",
                    )
                })
            },
            "directory {CA}/directory: the CA's answer is not JSON",
        ),
        (
            |ca, req| {
                req.is("GET", acme_ca::DIRECTORY).then(|| {
                    let dir = serde_json::json!({ "newAccount": ca.url(acme_ca::NEW_ACCOUNT) });
                    acme_ca::answer(200, "", &dir.to_string())
                })
            },
            "directory {CA}/directory: the CA's answer has no \"newNonce\"",
        ),
        (
            |_, req| {
                (req.path == acme_ca::NEW_NONCE)
                    .then(|| b"this is not http at all\r\n\r\n".to_vec())
            },
            "HEAD {CA}/nonce: a truncated or malformed HTTP answer",
        ),
        (
            |_, req| {
                req.is("POST", acme_ca::NEW_ACCOUNT).then(|| {
                    let head =
                        "HTTP/1.1 201 Created\r\nReplay-Nonce: n\r\nContent-Length: 200\r\n\r\n";
                    format!("{head}{{\"status\":").into_bytes()
                })
            },
            "POST {CA}/new-account: a truncated or malformed HTTP answer",
        ),
        (
            |_, req| {
                req.is("POST", acme_ca::NEW_ORDER).then(|| {
                    let order = r#"{"status":"pending","authorizations":[],"finalize":"x"}"#;
                    acme_ca::answer(201, &acme_ca::nonce_field(req), order)
                })
            },
            "the CA gave no order URL",
        ),
    ];
    // All at once: each fails at its first try and retries 2 s later.
    let runs: Vec<_> = shapes
        .iter()
        .map(|&(shape, reason)| {
            let ca = ScriptedCa::start(move |ca, req| {
                shape(ca, req).unwrap_or_else(|| ca.standard(req))
            });
            let f = AgainstCa::start(&ca);
            let reason = reason.replace("{CA}", &ca.url(""));
            (ca, f, reason)
        })
        .collect();
    for (ca, f, reason) in &runs {
        let line = f.failure(reason);
        assert!(line.contains("retrying in 2s"), "{line}");
        f.still_serving();
        let directory = |s: &acme_ca::CaSeen| s.is("GET", acme_ca::DIRECTORY);
        ca.wait_for(2, directory, Duration::from_secs(10));
        let again = |l: &str| l.contains(reason.as_str()) && l.contains("retrying in 4s");
        let line = f.proxy.wait_for_line(again, Duration::from_secs(5));
        assert!(line.is_some(), "{:?}", f.proxy.stderr_lines());
        f.still_serving();
    }
}

#[test]
fn bad_nonce_is_retried_at_once_with_the_nonce_of_its_answer() {
    const FRESH: &str = "fresh-from-bad-nonce";
    let ca = ScriptedCa::start(|ca, req| {
        if !req.is("POST", acme_ca::NEW_ACCOUNT) {
            return ca.standard(req);
        }
        match req.nonce() == FRESH {
            true => acme_ca::problem(403, "unauthorized", "the scripted end", ""),
            false => {
                let fields = format!("Replay-Nonce: {FRESH}\r\n");
                acme_ca::problem(
                    400,
                    "badNonce",
                    "JWS has an invalid anti-replay nonce",
                    &fields,
                )
            }
        }
    });
    let f = AgainstCa::start(&ca);
    let line = f.failure("the scripted end");
    assert!(line.contains("403 unauthorized"), "{line}");
    let seen = ca.seen();
    let shown: Vec<_> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        shown[..4],
        [
            "GET /directory",
            "HEAD /nonce",
            "POST /new-account",
            "POST /new-account"
        ],
        "the second POST follows the badNonce answer at once"
    );
    assert_eq!(seen[2].nonce(), "nonce-1", "the nonce from newNonce");
    assert_eq!(seen[3].nonce(), FRESH, "the nonce of the badNonce answer");
    assert_eq!(
        count(&f.proxy, "badNonce"),
        0,
        "{:?}",
        f.proxy.stderr_lines()
    );
    f.still_serving();
}
