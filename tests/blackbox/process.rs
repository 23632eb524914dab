//! The process: `--check`, the readiness line, graceful stop on SIGTERM and
//! SIGINT, and the access log line.

use crate::common::*;
use std::net::TcpStream;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

fn check(path: &std::path::Path) -> std::process::Output {
    run_bounded(
        &["-c".as_ref(), path.as_os_str(), "--check".as_ref()],
        Duration::from_secs(10),
    )
}

#[test]
fn check_accepts_a_valid_config() {
    let dir = TestDir::new();
    let up = closed_port();
    let path = dir.write("ok.toml", &single_upstream(up));
    let out = check(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, format!("{}: ok\n", path.display()));
}

/// Line numbers matter: each broken value sits on a known line. The last
/// two are problems outside the text (a folder, a log file), listed with
/// the others.
const BROKEN: &str = r#"[runtime]
workers = 1
bogus_key = 3

[limits]
client_header_timeout = "10 parsecs"

[[listen]]
address = "127.0.0.1:0"

[[upstream]]
name = "app"
servers = [ { address = "127.0.0.1:9", weight = "heavy" } ]

[[route]]
path = "/"
upstream = "nope"

[[route]]
path = "/s/"
static = "/nonexistent-ringside/www/"

[log]
access = "/nonexistent-ringside/dir/access.log"
"#;

#[test]
fn check_reports_every_problem_with_file_line_and_key() {
    let dir = TestDir::new();
    let path = dir.write("broken.toml", BROKEN);
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("ok"),
        "broken config reported ok"
    );
    let file = path.display().to_string();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    for line in &lines {
        // FILE:LINE: key: what is wrong
        let rest = line
            .strip_prefix(&format!("{file}:"))
            .unwrap_or_else(|| panic!("not FILE:LINE: {line:?}"));
        let (num, rest) = rest
            .split_once(": ")
            .unwrap_or_else(|| panic!("no line number: {line:?}"));
        assert!(
            num.parse::<u32>().is_ok(),
            "line number {num:?} in {line:?}"
        );
        let (key, what) = rest
            .split_once(": ")
            .unwrap_or_else(|| panic!("no key: {line:?}"));
        assert!(
            !key.is_empty()
                && key
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c == b'_' || c == b'.'),
            "key {key:?} is not a dotted path in {line:?}"
        );
        assert!(!what.trim().is_empty(), "no explanation in {line:?}");
    }
    for want in [
        "3: runtime.bogus_key: ",
        "6: limits.client_header_timeout: ",
        "13: upstream.servers.weight: ",
        "17: route.upstream: ",
        "21: route.static: ",
        "24: log.access: ",
    ] {
        let want = format!("{file}:{want}");
        assert!(
            lines.iter().any(|l| l.starts_with(&want)),
            "no line starting {want:?} in:\n{stderr}"
        );
    }
}

#[test]
fn check_reports_a_syntax_error_with_its_line() {
    let dir = TestDir::new();
    let path = dir.write(
        "syntax.toml",
        "[runtime]\nworkers = 1\nshutdown_timeout = = \"1s\"\n",
    );
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.starts_with(&format!("{}:3: ", path.display())),
        "stderr: {stderr}"
    );
}

#[test]
fn readiness_line_names_every_listener() {
    let fixed = closed_port();
    let rest = format!(
        "[[listen]]\naddress = \"{fixed}\"\n\n[[route]]\npath = \"/\"\nrespond = {{ status = 200, body = \"up\" }}\n"
    );
    let proxy = Proxy::start(&config("", &rest));
    let ready: Vec<String> = proxy
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("ringside ready"))
        .collect();
    assert_eq!(ready.len(), 1, "one readiness line, got {ready:?}");
    let addrs = proxy.addrs();
    assert_eq!(addrs.len(), 2, "{ready:?}");
    assert!(addrs.contains(&fixed), "{ready:?} does not name {fixed}");
    for &a in addrs {
        assert_eq!(a.ip().to_string(), "127.0.0.1");
        let mut c = Client::connect(a);
        assert_eq!(c.get("/").body, b"up", "listener {a}");
    }
}

/// An upstream that answers `/slow/…` only when the test says so.
fn gated() -> (Upstream, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let up = Upstream::start(move |c| {
        while let Some(req) = c.read_request() {
            if req.target.starts_with("/slow/") {
                // A timeout here fails the test on the client side, with a clearer message.
                let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
                c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nslow-done");
            } else if !c.write(&echo_response(&req)) {
                return;
            }
        }
    });
    (up, tx)
}

/// Connects until the proxy refuses (true) or `timeout` passes (false).
fn refused_within(addr: std::net::SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let (up, gate) = gated();
    let mut proxy = Proxy::start(&single_upstream(up.addr()));
    let t = token();
    let mut c = Client::connect(proxy.addr());
    c.send(format!("GET /slow/{t} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    assert!(up.wait_until(Duration::from_secs(5), |s| s
        .heads
        .iter()
        .any(|(_, h)| contains(h, t.as_bytes()))));
    proxy.signal(libc::SIGTERM);
    assert!(
        refused_within(proxy.addr(), Duration::from_secs(3)),
        "new connections still accepted after SIGTERM"
    );
    gate.send(()).unwrap();
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"slow-done");
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .expect("still running 5 s after the last request");
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn sigint_stops_an_idle_proxy_with_exit_0() {
    let up = Upstream::echo();
    let mut proxy = Proxy::start(&single_upstream(up.addr()));
    get_ok(&mut Client::connect(proxy.addr()), "/before-sigint");
    proxy.signal(libc::SIGINT);
    let status = proxy
        .wait_exit(Duration::from_secs(3))
        .expect("still running 3 s after SIGINT");
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn sigterm_does_not_wait_for_idle_keep_alive_connections() {
    let up = Upstream::echo();
    let mut proxy = Proxy::start(&single_upstream(up.addr()));
    let mut idle = Client::connect(proxy.addr());
    get_ok(&mut idle, "/then-idle");
    let started = Instant::now();
    proxy.signal(libc::SIGTERM);
    // shutdown_timeout is 5 s: an idle connection has nothing in flight to wait for.
    let status = proxy
        .wait_exit(Duration::from_secs(3))
        .expect("waited for an idle connection");
    assert_eq!(
        status.code(),
        Some(0),
        "{status} after {:?}",
        started.elapsed()
    );
    assert!(
        idle.wait_closed(Duration::from_secs(1)),
        "idle connection left open by an exited proxy?"
    );
}

#[test]
fn shutdown_timeout_bounds_the_wait_for_a_stuck_request() {
    let (up, _gate) = gated();
    let toml = config(
        "",
        &(upstream("app", up.addr(), "read_timeout = \"30s\"") + &route("/", "app")),
    )
    .replace("shutdown_timeout = \"5s\"", "shutdown_timeout = \"1s\"");
    let mut proxy = Proxy::start(&toml);
    let t = token();
    let mut c = Client::connect(proxy.addr());
    c.send(format!("GET /slow/{t} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    assert!(up.wait_until(Duration::from_secs(5), |s| s
        .heads
        .iter()
        .any(|(_, h)| contains(h, t.as_bytes()))));
    let started = Instant::now();
    proxy.signal(libc::SIGTERM);
    let status = proxy
        .wait_exit(Duration::from_secs(4))
        .expect("still running 4 s after SIGTERM (shutdown_timeout 1s)");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "exited after {took:?}, before shutdown_timeout"
    );
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn access_log_line_is_combined_format() {
    let up = Upstream::echo();
    let dir = TestDir::new();
    let log = dir.path().join("access.log");
    let toml = config("", &(upstream("app", up.addr(), "") + &route("/", "app"))).replace(
        "access = \"off\"",
        &format!(
            "access = \"{}\"\naccess_format = \"combined\"",
            log.display()
        ),
    );
    let mut proxy = Proxy::start_in(dir, &toml);
    let mut c = Client::connect(proxy.addr());
    c.send(b"GET /log/me?q=1 HTTP/1.1\r\nHost: h\r\nReferer: http://ref.example/\r\nUser-Agent: tester/1.0\r\n\r\n");
    let r = c.read_response();
    drop(c);
    proxy.signal(libc::SIGTERM);
    proxy
        .wait_exit(Duration::from_secs(5))
        .expect("exit after SIGTERM");
    let text = std::fs::read_to_string(&log).expect("access log written");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line per request: {text:?}");
    let line = lines[0];
    // $remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer"
    //   "$http_user_agent" $upstream_addr $request_time
    let (start, rest) = line.split_once(" [").unwrap_or_else(|| panic!("{line:?}"));
    assert_eq!(start, "127.0.0.1 - -");
    let (time, rest) = rest.split_once("] ").unwrap_or_else(|| panic!("{line:?}"));
    assert!(is_time_local(time), "$time_local {time:?} in {line:?}");
    let want = format!(
        "\"GET /log/me?q=1 HTTP/1.1\" 200 {} \"http://ref.example/\" \"tester/1.0\" {} ",
        r.body.len(),
        up.addr()
    );
    let secs = rest
        .strip_prefix(&want)
        .unwrap_or_else(|| panic!("want {want:?}… in {line:?}"));
    let ok = secs.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.len() == 3
            && b.bytes().all(|c| c.is_ascii_digit())
    });
    assert!(
        ok,
        "$request_time {secs:?} (seconds, millisecond resolution) in {line:?}"
    );
}

/// `26/Nov/2025:20:43:00 +0000`
fn is_time_local(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    b.len() == 26
        && digits(0..2)
        && b[2] == b'/'
        && months.contains(&&s[3..6])
        && b[6] == b'/'
        && digits(7..11)
        && b[11] == b':'
        && digits(12..14)
        && b[14] == b':'
        && digits(15..17)
        && b[17] == b':'
        && digits(18..20)
        && b[20] == b' '
        && (b[21] == b'+' || b[21] == b'-')
        && digits(22..26)
}
