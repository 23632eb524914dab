//! Operating ringside: reload (SIGHUP), log reopening (SIGUSR1), the admin
//! listener (/metrics, /health), and the binary upgrade, against the real
//! binary with client loops running throughout.

use crate::common::*;
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

/// A config at info level (the tests wait for "reloaded" lines) with an
/// admin listener, answering `/` itself with `body`, and `/up/` from `up`.
fn ops_config(body: &str, up: SocketAddr, extra: &str) -> String {
    format!(
        "[runtime]\nworkers = 2\nshutdown_timeout = \"5s\"\n\n\
         [log]\naccess = \"off\"\nlevel = \"info\"\n{extra}\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\n\
         [[upstream]]\nname = \"app\"\nservers = [ {{ address = \"{up}\" }} ]\n\n\
         [[route]]\npath = \"/up/\"\nupstream = \"app\"\n\n\
         [[route]]\npath = \"/\"\nrespond = {{ status = 200, body = \"{body}\" }}\n"
    )
}

/// One request on a new connection; the body, or why it failed.
fn fetch(addr: SocketAddr, target: &str) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let req = format!("GET {target} HTTP/1.1\r\nHost: ops.test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Requests on new connections until stopped: counts answers, keeps failures.
struct Loop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    bodies: Arc<Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Loop {
    fn start(addr: SocketAddr, target: &'static str, clients: usize) -> Loop {
        let l = Loop {
            stop: Arc::default(),
            ok: Arc::default(),
            failures: Arc::default(),
            bodies: Arc::default(),
            threads: Vec::new(),
        };
        let mut threads = Vec::new();
        for _ in 0..clients {
            let (stop, ok, failures, bodies) = (
                l.stop.clone(),
                l.ok.clone(),
                l.failures.clone(),
                l.bodies.clone(),
            );
            threads.push(thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match fetch(addr, target) {
                        Ok((200, body)) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            let mut b = bodies.lock().unwrap();
                            if b.last() != Some(&body) {
                                b.push(body);
                            }
                        }
                        Ok((status, body)) => {
                            failures.lock().unwrap().push(format!("{status}: {body}"))
                        }
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            }));
        }
        Loop { threads, ..l }
    }

    /// Waits until `n` more requests were answered (the loop is running).
    fn wait_more(&self, n: usize) {
        let target = self.ok.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ok.load(Ordering::SeqCst) < target {
            assert!(
                Instant::now() < deadline,
                "client loop stalled: {:?}",
                self.failures.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the loop; returns (answered, failures, distinct bodies in order).
    fn finish(self) -> (usize, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let f = self.failures.lock().unwrap().clone();
        let b = self.bodies.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), f, b)
    }
}

fn count_lines(p: &Proxy, needle: &str) -> usize {
    p.stderr_lines()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits until stderr holds `n` lines containing `needle`.
fn wait_lines(p: &Proxy, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count_lines(p, needle) < n {
        assert!(
            Instant::now() < deadline,
            "no {n} lines with {needle:?}; stderr:\n{}",
            p.stderr_lines().join("\n")
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn rewrite(p: &Proxy, toml: &str) {
    std::fs::write(p.config_path(), toml).expect("rewrite config");
}

fn admin(p: &Proxy) -> SocketAddr {
    *p.addrs()
        .last()
        .expect("admin address in the readiness line")
}

#[test]
fn reload_serves_new_requests_with_the_new_config() {
    let up = Upstream::echo();
    let mut p = Proxy::start(&ops_config("v1", up.addr(), ""));
    assert_eq!(fetch(p.addr(), "/").unwrap(), (200, "v1".into()));
    // An idle keep-alive connection opened before the reload stays open
    // and is answered under the new config afterwards.
    let mut kept = Client::connect(p.addr());
    assert_eq!(kept.get("/").body_str(), "v1");
    rewrite(&p, &ops_config("v2", up.addr(), ""));
    p.signal(libc::SIGHUP);
    wait_lines(&p, "reloaded", 1);
    assert_eq!(fetch(p.addr(), "/").unwrap(), (200, "v2".into()));
    assert_eq!(kept.get("/").body_str(), "v2");
}

/// One GET whose head carries `pad` bytes in a field; the status.
fn padded_status(addr: SocketAddr, pad: usize) -> u16 {
    let mut c = Client::connect(addr);
    let head = format!(
        "GET / HTTP/1.1\r\nHost: ops.test\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(pad)
    );
    c.send(head.as_bytes());
    c.read_response().status
}

#[test]
fn a_reload_that_raises_max_request_head_admits_the_larger_heads() {
    let up = Upstream::echo();
    let limits = |size: &str| format!("\n[limits]\nmax_request_head = \"{size}\"\n");
    let mut p = Proxy::start(&ops_config("v1", up.addr(), &limits("4k")));
    // Larger than the first read buffer, within the limit: read in pieces.
    assert_eq!(padded_status(p.addr(), 3000), 200);
    assert_eq!(padded_status(p.addr(), 10_000), 431);
    rewrite(&p, &ops_config("v2", up.addr(), &limits("32k")));
    p.signal(libc::SIGHUP);
    wait_lines(&p, "reloaded", 1);
    // The workers' buffers were sized under the first config.
    assert_eq!(padded_status(p.addr(), 10_000), 200);
    assert_eq!(padded_status(p.addr(), 30_000), 200);
    assert_eq!(padded_status(p.addr(), 40_000), 431);
    assert_eq!(fetch(p.addr(), "/").unwrap(), (200, "v2".into()));
}

#[test]
fn reload_under_load_fails_no_request_and_finishes_requests_in_flight() {
    // The upstream answers /up/slow after 600 ms: a request in flight across reloads.
    let up = Upstream::start(|c| {
        while let Some(req) = c.read_request() {
            if req.target.contains("slow") {
                thread::sleep(Duration::from_millis(600));
            }
            if !c.write(&echo_response(&req)) {
                return;
            }
        }
    });
    let mut p = Proxy::start(&ops_config("v1", up.addr(), ""));
    let addr = p.addr();
    let slow = thread::spawn(move || fetch(addr, "/up/slow"));
    let lp = Loop::start(p.addr(), "/up/fast", 3);
    lp.wait_more(20);
    for i in 0..5 {
        let body = if i % 2 == 0 { "v2" } else { "v1" };
        rewrite(&p, &ops_config(body, up.addr(), ""));
        p.signal(libc::SIGHUP);
        wait_lines(&p, "reloaded", i + 1);
        lp.wait_more(20);
    }
    let (ok, failures, _) = lp.finish();
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    let (status, body) = slow.join().unwrap().expect("slow request across reloads");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn broken_reload_keeps_the_running_config_and_says_why() {
    let up = Upstream::echo();
    let mut p = Proxy::start(&ops_config("v1", up.addr(), ""));
    rewrite(
        &p,
        "[runtime]\nworkers = \"many\"\n\n[[listen]]\naddress = \"127.0.0.1:0\"\n",
    );
    p.signal(libc::SIGHUP);
    wait_lines(&p, "reload failed", 1);
    let lines = p.stderr_lines();
    let cfg = p.config_path().display().to_string();
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            "[error] reload failed, the running config stays: {cfg}:2: runtime.workers:"
        ))),
        "the problem is not reported as one stamped FILE:LINE: key: line: {lines:#?}"
    );
    assert_eq!(fetch(p.addr(), "/").unwrap(), (200, "v1".into()));
}

#[test]
fn reload_storm_of_20_sighups_keeps_serving() {
    let up = Upstream::echo();
    let mut p = Proxy::start(&ops_config("v1", up.addr(), ""));
    let lp = Loop::start(p.addr(), "/", 2);
    lp.wait_more(10);
    rewrite(&p, &ops_config("storm", up.addr(), ""));
    for _ in 0..20 {
        p.signal(libc::SIGHUP);
        thread::sleep(Duration::from_millis(40)); // 20 signals within a second
    }
    wait_lines(&p, "reloaded", 1);
    lp.wait_more(20);
    let (ok, failures, _) = lp.finish();
    assert!(
        failures.is_empty(),
        "{} of {} failed: {:?}",
        failures.len(),
        ok,
        &failures[..failures.len().min(5)]
    );
    assert_eq!(fetch(p.addr(), "/").unwrap(), (200, "storm".into()));
}

#[test]
fn scrapes_during_reloads_always_answer() {
    let up = Upstream::echo();
    let mut p = Proxy::start(&ops_config("v1", up.addr(), ""));
    let adm = admin(&p);
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = fetch(adm, "/metrics").expect("scrape");
                assert_eq!(status, 200);
                assert!(
                    body.contains("ringside_requests_total")
                        || body.contains("# TYPE ringside_requests_total")
                );
                n += 1;
            }
            n
        })
    };
    for i in 0..5 {
        rewrite(&p, &ops_config(&format!("v{i}"), up.addr(), ""));
        p.signal(libc::SIGHUP);
        wait_lines(&p, "reloaded", i + 1);
    }
    stop.store(true, Ordering::SeqCst);
    assert!(scraper.join().unwrap() > 0);
}

/// The value of a metric line that starts with `prefix` (0 when absent).
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn metrics_match_the_requests_sent_exactly() {
    let up = Upstream::echo();
    let p = Proxy::start(&ops_config("v1", up.addr(), ""));
    for _ in 0..7 {
        assert_eq!(fetch(p.addr(), "/").unwrap().0, 200);
    }
    for _ in 0..5 {
        assert_eq!(fetch(p.addr(), "/up/x").unwrap().0, 200);
    }
    let (_, before) = fetch(admin(&p), "/metrics").unwrap();
    let (status, text) = fetch(admin(&p), "/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        metric(&text, "ringside_requests_total{route=\"/\",status=\"200\"}"),
        7,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "ringside_requests_total{route=\"/up/\",status=\"200\"}"
        ),
        5,
        "{text}"
    );
    let server = format!(
        "ringside_upstream_requests_total{{upstream=\"app\",server=\"{}\",status=\"200\"}}",
        up.addr()
    );
    assert_eq!(metric(&text, &server), 5, "{text}");
    assert_eq!(
        metric(&text, "ringside_request_duration_seconds_count"),
        12,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                "ringside_upstream_up{{upstream=\"app\",server=\"{}\"}}",
                up.addr()
            )
        ),
        1
    );
    assert!(text.contains("ringside_connections_active "), "{text}");
    assert!(
        text.contains("ringside_cache_requests_total{status=\"HIT\"}"),
        "{text}"
    );
    // Scrapes themselves are not counted.
    assert_eq!(
        before
            .lines()
            .filter(|l| l.starts_with("ringside_requests_total"))
            .count(),
        2
    );
}

#[test]
fn health_is_503_while_draining_and_admin_closes_last() {
    let up = Upstream::start(|c| {
        while let Some(req) = c.read_request() {
            thread::sleep(Duration::from_millis(800));
            if !c.write(&echo_response(&req)) {
                return;
            }
        }
    });
    let mut p = Proxy::start(&ops_config("v1", up.addr(), ""));
    let adm = admin(&p);
    assert_eq!(fetch(adm, "/health").unwrap(), (200, "ok\n".into()));
    let addr = p.addr();
    let slow = thread::spawn(move || fetch(addr, "/up/slow"));
    assert!(
        up.wait_until(IO_TIMEOUT, |s| s.heads.len() == 1),
        "request never reached upstream"
    );
    p.signal(libc::SIGTERM);
    wait_lines(&p, "stop signal", 1);
    assert_eq!(fetch(adm, "/health").unwrap().0, 503);
    assert_eq!(slow.join().unwrap().unwrap().0, 200);
    assert!(p
        .wait_exit(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
}

#[test]
fn reload_opens_and_closes_listeners() {
    let up = Upstream::echo();
    let mut p = Proxy::start(&ops_config("v1", up.addr(), ""));
    let old = p.addr();
    let new = closed_port();
    let toml = ops_config("v2", up.addr(), "").replace(
        "address = \"127.0.0.1:0\"\n\n[[upstream]]",
        &format!("address = \"{new}\"\n\n[[upstream]]"),
    );
    rewrite(&p, &toml);
    p.signal(libc::SIGHUP);
    wait_lines(&p, "reloaded", 1);
    assert_eq!(fetch(new, "/").unwrap(), (200, "v2".into()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect_timeout(&old, IO_TIMEOUT).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the removed listener still accepts"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn wait_file_lines(path: &Path, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, want {n}",
            path.display(),
            text.lines().count()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigusr1_reopens_the_access_log_after_rotation() {
    let up = Upstream::echo();
    let dir = TestDir::new();
    let log = dir.path().join("access.log");
    let extra = "access_format = \"json\"\n";
    let toml = ops_config("v1", up.addr(), extra).replace(
        "access = \"off\"",
        &format!("access = \"{}\"", log.display()),
    );
    let mut p = Proxy::start_in(dir, &toml);
    for _ in 0..3 {
        fetch(p.addr(), "/").unwrap();
    }
    let first = wait_file_lines(&log, 3);
    assert!(
        first.lines().all(
            |l| l.starts_with("{\"remote_addr\":\"127.0.0.1\"") && l.contains("\"status\":200")
        ),
        "{first}"
    );
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    p.signal(libc::SIGUSR1);
    wait_lines(&p, "log files reopened", 1);
    fetch(p.addr(), "/").unwrap();
    let second = wait_file_lines(&log, 1);
    assert_eq!(second.lines().count(), 1, "{second}");
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        3
    );
}

#[test]
fn unwritable_log_path_is_refused_at_check_and_at_reload() {
    let up = Upstream::echo();
    let mut p = Proxy::start(&ops_config("v1", up.addr(), ""));
    let bad = ops_config("v2", up.addr(), "")
        .replace("access = \"off\"", "access = \"/nonexistent-dir/a.log\"");
    let path = p.dir().join("bad.toml");
    std::fs::write(&path, &bad).unwrap();
    let out = run_bounded(
        &["-c".as_ref(), path.as_os_str(), "--check".as_ref()],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("log.access"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rewrite(&p, &bad);
    p.signal(libc::SIGHUP);
    wait_lines(&p, "reload failed", 1);
    assert_eq!(fetch(p.addr(), "/").unwrap(), (200, "v1".into()));
}

#[test]
fn a_full_disk_for_the_access_log_never_stops_serving() {
    let up = Upstream::echo();
    let toml =
        ops_config("v1", up.addr(), "").replace("access = \"off\"", "access = \"/dev/full\"");
    let p = Proxy::start(&toml);
    let lp = Loop::start(p.addr(), "/", 2);
    lp.wait_more(50);
    wait_lines(&p, "access log write failed", 1);
    lp.wait_more(50);
    let (_, failures, _) = lp.finish();
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn binary_upgrade_refuses_no_connection() {
    let up = Upstream::echo();
    let shared = TestDir::new();
    let sock = shared.path().join("upgrade.sock");
    let args = ["--upgrade-socket".as_ref(), sock.as_os_str()];
    let mut old = Proxy::start_args(TestDir::new(), &ops_config("old", up.addr(), ""), &args);
    let addr = old.addr();
    let lp = Loop::start(addr, "/", 3);
    lp.wait_more(300);
    // Same listener address as written ("127.0.0.1:0"): the new process
    // takes over the old one's sockets, port included.
    let new = Proxy::start_args(TestDir::new(), &ops_config("new", up.addr(), ""), &args);
    assert_eq!(new.addr(), addr, "the new process listens elsewhere");
    let status = old
        .wait_exit(Duration::from_secs(10))
        .expect("the old process did not exit");
    assert!(status.success(), "old process: {status}");
    lp.wait_more(300);
    let (ok, failures, bodies) = lp.finish();
    assert!(
        failures.is_empty(),
        "{} of {} failed: {:?}",
        failures.len(),
        ok,
        &failures[..failures.len().min(5)]
    );
    assert_eq!(bodies.last().map(String::as_str), Some("new"), "{bodies:?}");
    drop(new);
}

#[test]
fn active_health_keeps_running_after_a_reload_and_shows_in_metrics() {
    let live = Upstream::echo();
    let dead = refused_port();
    let toml = |body: &str| {
        ops_config(body, live.addr(), "").replace(
            &format!("servers = [ {{ address = \"{}\" }} ]", live.addr()),
            &format!(
                "health = {{ path = \"/health\", interval = \"100ms\", timeout = \"200ms\", fails = 1, passes = 1 }}\n\
                 servers = [ {{ address = \"{}\" }}, {{ address = \"{dead}\" }} ]",
                live.addr()
            ),
        )
    };
    let mut p = Proxy::start(&toml("v1"));
    let down = format!("ringside_upstream_up{{upstream=\"app\",server=\"{dead}\"}} 0");
    let up = format!(
        "ringside_upstream_up{{upstream=\"app\",server=\"{}\"}} 1",
        live.addr()
    );
    let wait_metrics = |p: &Proxy| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, text) = fetch(admin(p), "/metrics").unwrap();
            if text.contains(&down) && text.contains(&up) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "health never showed in metrics:\n{text}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    wait_metrics(&p);
    rewrite(&p, &toml("v2"));
    p.signal(libc::SIGHUP);
    wait_lines(&p, "reloaded", 1);
    wait_metrics(&p);
    // Every request goes to the live server: the dead one is out.
    for _ in 0..10 {
        assert_eq!(fetch(p.addr(), "/up/x").unwrap().0, 200);
    }
}

#[test]
fn metrics_have_the_build_response_bytes_and_upstream_times() {
    let up = Upstream::echo();
    let p = Proxy::start(&ops_config("hello", up.addr(), ""));
    // Three proxied answers and two of ringside's own ("hello", 5 bytes).
    let mut proxied = 0;
    for i in 0..3 {
        let (status, body) = fetch(p.addr(), &format!("/up/{i}")).unwrap();
        assert_eq!(status, 200);
        proxied += body.len();
    }
    for _ in 0..2 {
        assert_eq!(fetch(p.addr(), "/").unwrap(), (200, "hello".into()));
    }
    let (_, text) = fetch(admin(&p), "/metrics").unwrap();
    let version = env!("CARGO_PKG_VERSION");
    for want in [
        format!("ringside_build_info{{version=\"{version}\"}} 1"),
        format!("ringside_response_bytes_total{{route=\"/up/\"}} {proxied}"),
        "ringside_response_bytes_total{route=\"/\"} 10".to_string(),
        "ringside_upstream_response_seconds_count{upstream=\"app\"} 3".to_string(),
        "ringside_upstream_response_seconds_bucket{upstream=\"app\",le=\"+Inf\"} 3".to_string(),
        "ringside_connections_accepted_total{listener=\"127.0.0.1:0\"} 5".to_string(),
    ] {
        assert!(text.lines().any(|l| l == want), "no {want:?} in\n{text}");
    }
}

#[test]
fn error_lines_name_the_request_and_each_reload_problem_is_one_stamped_line() {
    let dead = refused_port();
    let mut p = Proxy::start(&ops_config("x", dead, ""));
    let (status, _) = fetch(p.addr(), "/up/broken?secret=1").unwrap();
    assert_eq!(status, 502);
    wait_lines(&p, "request \"GET ops.test /up/broken\"", 1);
    // A reload with two problems: two stamped lines, no bare ones.
    rewrite(
        &p,
        "[runtime]\nworkers = \"two\"\n[log]\nlevel = \"loud\"\n",
    );
    p.signal(libc::SIGHUP);
    wait_lines(&p, "reload failed", 2);
    for line in p.stderr_lines() {
        if line.starts_with("ringside ready") {
            continue;
        }
        let stamped = line.len() > 20 && line.as_bytes()[..4].iter().all(u8::is_ascii_digit);
        assert!(
            stamped && line.contains(" ["),
            "an unstamped line: {line:?}"
        );
    }
    // Still serving the old config.
    assert_eq!(fetch(p.addr(), "/").unwrap(), (200, "x".into()));
}
