//! `[runtime] user` / `group`: started as root, ringside binds, reads and
//! opens what needs root, then every thread runs as the account (checked in
//! `/proc/PID/task/*/status`); and the bad inputs: an account that does not
//! exist, a `user` without root, a reload that needs a port below 1024
//! after the switch. These tests need root (CI runs as root).

use crate::common::*;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

/// nobody's uid and primary gid, from /etc/passwd.
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("a nobody account in /etc/passwd");
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

fn need_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "tests/blackbox/privdrop.rs switches users: run it as root (CI does)"
    );
}

/// A free port below 1024 on 127.0.0.1 (bound as root, then released).
fn low_port() -> SocketAddr {
    (600..1000)
        .find_map(|p| TcpListener::bind(("127.0.0.1", p)).ok())
        .and_then(|l| l.local_addr().ok())
        .expect("a free port below 1024")
}

/// (task id, thread name, the status fields named) of every task of `pid`.
fn tasks(pid: u32) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue; // a task that ended between the listing and the read
        };
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let fields = status
            .lines()
            .filter(|l| {
                ["Uid:", "Gid:", "Groups:", "CapEff:", "CapPrm:", "CapAmb:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let id = dir.file_name().unwrap().to_string_lossy().to_string();
        out.push((id, name.trim().to_string(), fields));
    }
    out
}

fn log_config(dir: &Path, low: SocketAddr, up: SocketAddr, user: &str) -> String {
    format!(
        "[runtime]\nworkers = 2\nshutdown_timeout = \"5s\"\n{user}\n\n\
         [log]\naccess = \"{access}\"\nerror = \"{error}\"\nlevel = \"info\"\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\n\
         [[listen]]\naddress = \"{low}\"\n\n\
         [[upstream]]\nname = \"app\"\nhealth = {{ path = \"/health\", interval = \"1s\" }}\n\
         servers = [ {{ address = \"{up}\" }} ]\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n",
        access = dir.join("access.log").display(),
        error = dir.join("error.log").display(),
    )
}

fn wait_file_has(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_thread_runs_as_the_user_after_binding_a_low_port() {
    need_root();
    let (uid, gid) = nobody();
    let up = Upstream::echo();
    let dir = TestDir::new();
    let low = low_port();
    let toml = log_config(dir.path(), low, up.addr(), "user = \"nobody\"");
    let mut proxy = Proxy::start_in(dir, &toml);
    // Both listeners (one below 1024, bound as root) serve.
    get_ok(&mut Client::connect(proxy.addr()), "/high");
    get_ok(&mut Client::connect(low), "/low");

    let all = tasks(proxy.pid());
    let names: Vec<&str> = all.iter().map(|(_, n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"ringside-w0") && names.contains(&"ringside-w1"),
        "{names:?}"
    );
    assert!(
        all.len() >= 4,
        "workers, admin and health threads expected: {names:?}"
    );
    let want = [
        format!("Uid: {uid} {uid} {uid} {uid}"),
        format!("Gid: {gid} {gid} {gid} {gid}"),
        "CapEff: 0000000000000000".to_string(),
        "CapPrm: 0000000000000000".to_string(),
        "CapAmb: 0000000000000000".to_string(),
    ];
    for (id, name, fields) in &all {
        for w in &want {
            assert!(
                fields.contains(w),
                "task {id} ({name}): {fields:?} lacks {w:?}"
            );
        }
        let groups = fields.iter().find(|f| f.starts_with("Groups:")).unwrap();
        assert!(
            !groups.split(' ').skip(1).any(|g| g == "0"),
            "task {id} ({name}) kept root's group: {groups}"
        );
    }

    // The log files root created were handed over: SIGUSR1 reopens them.
    let error_log = proxy.dir().join("error.log");
    let access_log = proxy.dir().join("access.log");
    proxy.signal(libc::SIGUSR1);
    let text = wait_file_has(&error_log, "log files reopened");
    assert!(text.contains("log files reopened"), "{text}");
    assert!(!text.contains("cannot reopen"), "{text}");
    get_ok(&mut Client::connect(proxy.addr()), "/after-reopen");
    let text = wait_file_has(&access_log, "/after-reopen");
    assert!(text.contains("/after-reopen"), "{text}");
    let errors = std::fs::read_to_string(&error_log).unwrap();
    assert!(
        errors.contains(&format!("running as user nobody (uid {uid}), gid {gid}")),
        "{errors}"
    );
}

#[test]
fn a_reload_that_adds_a_low_port_after_the_switch_says_so_and_keeps_serving() {
    need_root();
    let up = Upstream::echo();
    let dir = TestDir::new();
    let low = low_port();
    let toml = format!(
        "[runtime]\nworkers = 1\nuser = \"nobody\"\n\n[log]\naccess = \"off\"\nlevel = \"warn\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\n{}{}",
        upstream("app", up.addr(), ""),
        route("/", "app")
    );
    let mut proxy = Proxy::start_in(dir, &toml);
    let mut kept = Client::connect(proxy.addr());
    get_ok(&mut kept, "/first");
    let wider = toml.replace(
        "address = \"127.0.0.1:0\"",
        &format!("address = \"127.0.0.1:0\"\n\n[[listen]]\naddress = \"{low}\""),
    );
    std::fs::write(proxy.config_path(), wider).unwrap();
    proxy.signal(libc::SIGHUP);
    let line = proxy
        .wait_for_line(|l| l.contains("reload failed"), IO_TIMEOUT)
        .expect("the failed reload is logged");
    assert!(line.contains(&format!("cannot listen on {low}")), "{line}");
    assert!(
        line.contains("ports below 1024 need root or CAP_NET_BIND_SERVICE"),
        "{line}"
    );
    // The old config runs on: the kept connection and a new one are served,
    // and nothing listens on the low port.
    get_ok(&mut kept, "/kept");
    get_ok(&mut Client::connect(proxy.addr()), "/new");
    assert!(
        std::net::TcpStream::connect(low).is_err(),
        "{low} was bound"
    );
}

#[test]
fn a_user_that_does_not_exist_is_refused_by_check_and_at_start() {
    let dir = TestDir::new();
    let toml = format!(
        "[runtime]\nuser = \"no-such-user-rs\"\n\n[log]\naccess = \"off\"\n\n\
         [[listen]]\naddress = \"{}\"\n\n[[route]]\npath = \"/\"\nrespond = {{ status = 200 }}\n",
        closed_port()
    );
    let config = dir.write("ringside.toml", &toml);
    let want = format!(
        "{}:2: runtime.user: no user \"no-such-user-rs\" on this machine",
        config.display()
    );
    let check = run_bounded(
        &["-c".as_ref(), config.as_os_str(), "--check".as_ref()],
        IO_TIMEOUT,
    );
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&check.stderr).trim(), want);
    let run = run_bounded(&["-c".as_ref(), config.as_os_str()], IO_TIMEOUT);
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains(&want) && !err.contains(READY_PREFIX), "{err}");
    // A group without a user, and an unknown group, are reported too.
    let toml = toml.replace("user = \"no-such-user-rs\"", "group = \"no-such-group-rs\"");
    dir.write("ringside.toml", &toml);
    let check = run_bounded(
        &["-c".as_ref(), config.as_os_str(), "--check".as_ref()],
        IO_TIMEOUT,
    );
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains(":2: runtime.group: no group \"no-such-group-rs\" on this machine"),
        "{err}"
    );
    assert!(err.contains(":2: runtime.group: needs user"), "{err}");
}

#[test]
fn a_user_without_root_is_refused_before_anything_is_bound() {
    need_root();
    let (uid, _) = nobody();
    let dir = TestDir::new();
    let addr = closed_port();
    let toml = format!(
        "[runtime]\nuser = \"daemon\"\n\n[log]\naccess = \"off\"\n\n\
         [[listen]]\naddress = \"{addr}\"\n\n[[route]]\npath = \"/\"\nrespond = {{ status = 200 }}\n"
    );
    let config = dir.write("ringside.toml", &toml);
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .arg("-c")
        .arg(&config)
        .uid(uid)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("runtime.user = \"daemon\" needs ringside started as root")
            && err.contains(&format!("runs as uid {uid}")),
        "{err}"
    );
    assert!(!err.contains(READY_PREFIX), "{err}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "{addr} was bound"
    );
}

use std::net::TcpStream;
use std::os::unix::process::CommandExt;

/// As a unit started without CAP_NET_BIND_SERVICE would: a non-root
/// process with a listener below 1024 stops at start with a line that
/// names the address and what would allow it, before serving anything.
#[test]
fn a_low_port_without_the_capability_fails_the_start_clearly() {
    need_root();
    let (uid, gid) = nobody();
    let dir = TestDir::new();
    let (high, low) = (closed_port(), low_port());
    let toml = format!(
        "[log]\naccess = \"off\"\n\n[[listen]]\naddress = \"{high}\"\n\n\
         [[listen]]\naddress = \"{low}\"\n\n[[route]]\npath = \"/\"\nrespond = {{ status = 200 }}\n"
    );
    let config = dir.write("ringside.toml", &toml);
    let out = std::process::Command::new(bin())
        .arg("-c")
        .arg(&config)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {low}: Permission denied"))
            && err.contains("ports below 1024 need root or CAP_NET_BIND_SERVICE")
            && err.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"),
        "{err}"
    );
    assert!(!err.contains(READY_PREFIX), "{err}");
    assert!(TcpStream::connect(high).is_err(), "{high} kept listening");
}

#[test]
fn a_reload_cannot_switch_the_user_and_the_old_config_keeps_serving() {
    need_root();
    let toml = "[runtime]\nworkers = 1\nuser = \"nobody\"\n\n[log]\naccess = \"off\"\nlevel = \"warn\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\n\
         [[route]]\npath = \"/\"\nrespond = { status = 200, body = \"old\" }\n";
    let mut proxy = Proxy::start_in(TestDir::new(), toml);
    let mut kept = Client::connect(proxy.addr());
    assert_eq!(kept.get("/").body_str(), "old");
    let changed = toml
        .replace("user = \"nobody\"", "user = \"daemon\"")
        .replace("\"old\"", "\"new\"");
    std::fs::write(proxy.config_path(), changed).unwrap();
    proxy.signal(libc::SIGHUP);
    let line = proxy
        .wait_for_line(|l| l.contains("reload failed"), IO_TIMEOUT)
        .expect("the refused reload is logged");
    assert!(
        line.contains("runtime.user / runtime.group changed"),
        "{line}"
    );
    assert_eq!(kept.get("/").body_str(), "old");
    assert_eq!(Client::connect(proxy.addr()).get("/").body_str(), "old");
}
