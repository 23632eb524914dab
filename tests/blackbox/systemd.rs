//! systemd: the sd_notify messages through a real `NOTIFY_SOCKET` (a path
//! and an abstract name), and the shipped unit checked by
//! `systemd-analyze verify`.

use crate::common::*;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::process::Command;
use std::time::{Duration, Instant};

/// The next datagram, as text; panics after `IO_TIMEOUT`.
fn next(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no sd_notify message within {IO_TIMEOUT:?}: {e}"));
    String::from_utf8(buf[..n].to_vec()).expect("a text message")
}

/// No datagram is waiting.
fn nothing_more(socket: &UnixDatagram) {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let got = socket.recv(&mut buf);
    socket.set_nonblocking(false).unwrap();
    assert!(
        got.is_err(),
        "unexpected message {:?}",
        got.map(|n| String::from_utf8_lossy(&buf[..n]).to_string())
    );
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the one we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn start_notified(up: &Upstream, socket_env: &str) -> Proxy {
    let env = socket_env.to_string();
    Proxy::start_with(TestDir::new(), &single_upstream(up.addr()), &[], move |c| {
        c.env("NOTIFY_SOCKET", env);
    })
}

/// RELOADING=1 with a MONOTONIC_USEC taken during the reload.
fn assert_reloading(msg: &str, before: u64) {
    let mut lines = msg.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{msg:?}");
    let usec: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {msg:?}"));
    assert!(
        usec >= before && usec <= monotonic_usec(),
        "{usec} outside the reload ({msg:?})"
    );
}

#[test]
fn ready_reloading_and_stopping_reach_the_notify_socket() {
    let dir = TestDir::new();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let up = Upstream::echo();
    let mut proxy = start_notified(&up, path.to_str().unwrap());
    // The readiness line has been printed: READY=1 was sent with it.
    assert_eq!(next(&socket), "READY=1");
    get_ok(&mut Client::connect(proxy.addr()), "/before");

    // A reload that works.
    let before = monotonic_usec();
    proxy.signal(libc::SIGHUP);
    assert_reloading(&next(&socket), before);
    assert_eq!(next(&socket), "READY=1");

    // A reload of a broken file: RELOADING, then READY again (the old
    // config runs on), and connections are still served.
    std::fs::write(proxy.config_path(), "[[listen]]\naddress = 1\n").unwrap();
    let before = monotonic_usec();
    proxy.signal(libc::SIGHUP);
    assert_reloading(&next(&socket), before);
    assert_eq!(next(&socket), "READY=1");
    proxy
        .wait_for_line(|l| l.contains("reload failed"), IO_TIMEOUT)
        .expect("the failed reload is logged");
    get_ok(&mut Client::connect(proxy.addr()), "/after-bad-reload");

    proxy.signal(libc::SIGTERM);
    assert_eq!(next(&socket), "STOPPING=1");
    assert!(proxy
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    nothing_more(&socket);
}

#[test]
fn an_abstract_notify_socket_gets_ready() {
    let name = format!("ringside-test-notify-{}-{}", std::process::id(), token());
    let addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let up = Upstream::echo();
    let mut proxy = start_notified(&up, &format!("@{name}"));
    assert_eq!(next(&socket), "READY=1");
    proxy.signal(libc::SIGTERM);
    assert_eq!(next(&socket), "STOPPING=1");
}

#[test]
fn a_notify_socket_nobody_listens_on_is_logged_and_serving_goes_on() {
    let dir = TestDir::new();
    let gone = dir.path().join("nobody.sock");
    let up = Upstream::echo();
    let proxy = start_notified(&up, gone.to_str().unwrap());
    let line = proxy
        .wait_for_line(|l| l.contains("systemd notify READY=1"), IO_TIMEOUT)
        .expect("the failed notification is logged");
    assert!(line.contains("NOTIFY_SOCKET"), "{line}");
    get_ok(&mut Client::connect(proxy.addr()), "/served");
    get_ok(&mut Client::connect(proxy.addr()), "/still-served");
}

/// The shipped unit, with ExecStart pointing at the binary under test (so
/// that verify finds an executable), checked by this machine's systemd.
#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/ringside.service"
    ))
    .unwrap();
    for needed in [
        "Type=notify\n",
        "ExecReload=/bin/kill -HUP $MAINPID\n",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE\n",
        "LimitNOFILE=",
        "LimitMEMLOCK=infinity\n",
        "User=ringside\n",
        "io_uring_setup io_uring_enter io_uring_register",
        "notify-reload",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed:?}");
    }
    let dir = TestDir::new();
    let local = unit.replace("/usr/bin/ringside", bin().to_str().unwrap());
    let path = dir.write("ringside.service", &local);
    let started = Instant::now();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze is needed to check packaging/ringside.service: {e}")
        });
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ({:?}): {}",
        started.elapsed(),
        said
    );
}

/// verify itself reports a misspelt key (so the test above can fail).
#[test]
fn systemd_analyze_verify_reports_a_misspelt_key() {
    let dir = TestDir::new();
    let unit = format!(
        "[Service]\nType=notify\nExecStart={}\nNoNewPrivilege=yes\n",
        bin().display()
    );
    let path = dir.write("bad.service", &unit);
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NoNewPrivilege"));
}
