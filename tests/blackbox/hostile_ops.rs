//! Hostile input to the process: an address another process holds, small
//! resource limits (locked memory, open files), config paths that name
//! devices, FIFOs or huge files, and config values that would inject
//! headers. Each is answered with one clear line, and what already runs
//! keeps serving.

use crate::common::*;
use std::{
    ffi::OsStr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

/// A config answering `/` with `body` itself, at info level (the tests read
/// the start-up and reload lines); `listen` replaces the listener address.
fn respond_config(body: &str, listen: &str, workers: usize, rest: &str) -> String {
    format!(
        "[runtime]\nworkers = {workers}\nshutdown_timeout = \"2s\"\n\n\
         [log]\naccess = \"off\"\nlevel = \"info\"\n\n\
         [[listen]]\naddress = \"{listen}\"\n\n{rest}\
         [[route]]\npath = \"/\"\nrespond = {{ status = 200, body = \"{body}\" }}\n"
    )
}

/// `ringside ARGS…`, which must finish within 5 s.
fn ringside(args: &[&OsStr]) -> Output {
    run_bounded(args, Duration::from_secs(5))
}

fn check(path: &Path) -> Output {
    ringside(&["-c".as_ref(), path.as_os_str(), "--check".as_ref()])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The body of `GET /` on a new connection.
fn body_of(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut c = Client::connect(addr);
    let r = c.get("/");
    assert_eq!(r.status, 200, "{}", show(&r.body));
    r.body
}

/// 32 connections opened before any sends a byte, so that they wait in the
/// backlog together and are taken in one turn (`accept4` beside the event
/// loop's own accept); each is then served, the last opened first.
fn burst_is_served(addr: std::net::SocketAddr) {
    let mut clients: Vec<Client> = (0..32).map(|_| Client::connect(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate().rev() {
        let r = c.get(&format!("/burst/{i}"));
        assert_eq!(r.status, 200, "{}", show(&r.body));
    }
}

/// The 1-based line of `toml` that holds `needle`.
fn line_of(toml: &str, needle: &str) -> usize {
    toml.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in\n{toml}"))
        + 1
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that lives across the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

fn sighup_and_wait(p: &mut Proxy, needle: &str) -> String {
    p.signal(libc::SIGHUP);
    p.wait_for_line(|l| l.contains(needle), Duration::from_secs(5))
        .unwrap_or_else(|| {
            panic!(
                "no line with {needle:?} after SIGHUP:\n{}",
                p.stderr_lines().join("\n")
            )
        })
}

// ------------------------------------------------- 1. an address in use

#[test]
fn a_second_ringside_on_a_held_address_exits_naming_it() {
    let addr = closed_port();
    let first = Proxy::start(&respond_config("first", &addr.to_string(), 2, ""));
    let dir = TestDir::new();
    let second = dir.write(
        "second.toml",
        &respond_config("second", &addr.to_string(), 2, ""),
    );
    let out = ringside(&["-c".as_ref(), second.as_os_str()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot listen on {addr}: another process already listens there"
        )),
        "{err}"
    );
    // Every new connection still reaches the first one.
    for _ in 0..20 {
        assert_eq!(body_of(first.addr()), b"first");
    }
}

#[test]
fn a_second_ringside_on_a_held_admin_address_exits_naming_it() {
    let admin = closed_port();
    let rest = format!("[admin]\naddress = \"{admin}\"\n\n");
    let first = Proxy::start(&respond_config("first", "127.0.0.1:0", 1, &rest));
    let dir = TestDir::new();
    let second = dir.write(
        "second.toml",
        &respond_config("second", "127.0.0.1:0", 1, &rest),
    );
    let out = ringside(&["-c".as_ref(), second.as_os_str()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot listen on {admin}: another process already listens there"
        )) && err.contains("(admin)"),
        "{err}"
    );
    let mut c = Client::connect(admin);
    assert_eq!(c.get("/health").status, 200);
    assert_eq!(body_of(first.addr()), b"first");
}

#[test]
fn a_reload_adding_a_held_address_fails_and_the_old_config_serves() {
    let held = closed_port();
    let _other = Proxy::start(&respond_config("other", &held.to_string(), 1, ""));
    let mut p = Proxy::start(&respond_config("v1", "127.0.0.1:0", 1, ""));
    let extra = format!("[[listen]]\naddress = \"{held}\"\n\n");
    std::fs::write(
        p.config_path(),
        respond_config("v2", "127.0.0.1:0", 1, &extra),
    )
    .unwrap();
    let line = sighup_and_wait(&mut p, "reload failed");
    assert!(
        line.contains(&format!(
            "cannot listen on {held}: another process already listens there"
        )),
        "{line}"
    );
    assert_eq!(body_of(p.addr()), b"v1");
    for _ in 0..10 {
        assert_eq!(body_of(held), b"other");
    }
}

// ------------------------------------------- 2. locked memory, open files

/// How the child that runs ringside is set up before exec, in this order:
/// resource limits (while still root, so a hard limit may be raised), the
/// user (`nobody` when the tests run as root, so that the limits bind it as
/// they bind a service user), then a seccomp filter.
#[derive(Default, Clone)]
struct Child {
    limits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    unprivileged: bool,
    /// Make `io_uring_setup` fail with this errno.
    refuse_io_uring: Option<u32>,
}

impl Child {
    fn limit(mut self, resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> Self {
        self.limits.push((resource, soft, hard));
        self
    }

    fn unprivileged(mut self) -> Self {
        // SAFETY: geteuid has no preconditions.
        self.unprivileged = unsafe { libc::geteuid() } == 0;
        self
    }

    fn refuse_io_uring(mut self, errno: i32) -> Self {
        self.refuse_io_uring = Some(errno as u32);
        self
    }

    fn start(self, toml: &str) -> Proxy {
        Proxy::start_with(TestDir::new(), toml, &[], |c| self.apply(c))
    }

    fn apply(self, command: &mut Command) {
        let filter = self.refuse_io_uring.map(seccomp_filter);
        // SAFETY: the closure runs in the forked child before exec and makes
        // only async-signal-safe calls (setrlimit, setgroups, setgid,
        // setuid, prctl) on data it owns; `prog` points into `filter`, which
        // lives in the closure, and the kernel copies it during the call.
        unsafe {
            command.pre_exec(move || {
                let fail = || Err(std::io::Error::last_os_error());
                for &(resource, soft, hard) in &self.limits {
                    let lim = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(resource, &lim) != 0 {
                        return fail();
                    }
                }
                if self.unprivileged
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(65534) != 0
                        || libc::setuid(65534) != 0)
                {
                    return fail();
                }
                if let Some(filter) = &filter {
                    let prog = libc::sock_fprog {
                        len: filter.len() as u16,
                        filter: filter.as_ptr() as *mut libc::sock_filter,
                    };
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                        || libc::prctl(
                            libc::PR_SET_SECCOMP,
                            libc::SECCOMP_MODE_FILTER,
                            &prog as *const libc::sock_fprog,
                        ) != 0
                    {
                        return fail();
                    }
                }
                Ok(())
            });
        }
    }
}

/// A seccomp program that makes `io_uring_setup` fail with `errno`, as a
/// kernel short of memory for the rings (or one that forbids io_uring)
/// would, and allows every other call.
fn seccomp_filter(errno: u32) -> Vec<libc::sock_filter> {
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    vec![
        // seccomp_data.nr is at offset 0.
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            libc::SYS_io_uring_setup as u32,
        ),
        op(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | errno,
        ),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// (soft, hard) of the `/proc/PID/limits` row starting with `name`.
fn proc_limit(pid: u32, name: &str) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name:?} in\n{text}"));
    let mut cols = row[name.len()..].split_whitespace();
    (cols.next().unwrap().into(), cols.next().unwrap().into())
}

/// The start-up lines about event loops, without their time and level.
fn event_loop_lines(p: &Proxy) -> Vec<String> {
    p.stderr_lines()
        .into_iter()
        .filter(|l| l.contains("event loop on"))
        .map(|l| {
            l.split_once("] ")
                .map_or(l.clone(), |(_, rest)| rest.to_string())
        })
        .collect()
}

/// `RINGSIDE_TASKRUN=coop` sets the rings up with COOP_TASKRUN instead of
/// the default DEFER_TASKRUN; the workers serve on them as on the default
/// rings.
#[test]
fn the_taskrun_switch_sets_the_rings_up_with_coop_taskrun() {
    let toml = respond_config("up", "127.0.0.1:0", 2, "");
    let p = Proxy::start_with(TestDir::new(), &toml, &[], |c| {
        c.env("RINGSIDE_TASKRUN", "coop");
    });
    assert_eq!(
        event_loop_lines(&p),
        ["2 workers: event loop on io_uring (COOP_TASKRUN)"]
    );
    for _ in 0..4 {
        assert_eq!(body_of(p.addr()), b"up");
    }
    burst_is_served(p.addr());
}

#[test]
fn soft_memlock_and_nofile_limits_are_raised_to_the_hard_ones() {
    let p = Child::default()
        // Hard limits below the usual ones: lowering needs no privilege.
        .limit(libc::RLIMIT_MEMLOCK, 64 << 10, 4 << 20)
        .limit(libc::RLIMIT_NOFILE, 256, 4096)
        .unprivileged()
        .start(&respond_config("up", "127.0.0.1:0", 2, ""));
    let mib4 = (4u64 << 20).to_string();
    assert_eq!(
        proc_limit(p.pid(), "Max locked memory"),
        (mib4.clone(), mib4)
    );
    assert_eq!(
        proc_limit(p.pid(), "Max open files"),
        ("4096".into(), "4096".into())
    );
    let lines = p.stderr_lines().join("\n");
    assert!(
        lines.contains("raised the soft RLIMIT_MEMLOCK from 64 KiB to 4 MiB")
            && lines.contains("raised the soft RLIMIT_NOFILE from 256 to 4096"),
        "{lines}"
    );
    assert_eq!(
        event_loop_lines(&p),
        ["2 workers: event loop on io_uring (DEFER_TASKRUN)"],
        "{lines}"
    );
    assert_eq!(body_of(p.addr()), b"up");
}

/// A hard RLIMIT_MEMLOCK of 64 KiB that cannot be raised. Where the kernel
/// charges io_uring rings to it (Linux 6.18 does), the rings shrink to fit
/// (256 entries for two workers) and, with no room left for their rings of
/// provided buffers, every worker goes without; elsewhere they keep their
/// full size.
#[test]
fn a_small_hard_memlock_limit_shrinks_the_rings_with_one_line() {
    let p = Child::default()
        .limit(libc::RLIMIT_MEMLOCK, 64 << 10, 64 << 10)
        .unprivileged()
        .start(&respond_config("up", "127.0.0.1:0", 2, ""));
    let lines = event_loop_lines(&p);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(
        line == "2 workers: event loop on io_uring (DEFER_TASKRUN, 256 entries); no provided \
                 buffers: RLIMIT_MEMLOCK holds only the rings"
            || line == "2 workers: event loop on io_uring (DEFER_TASKRUN)",
        "{line}"
    );
    for _ in 0..4 {
        assert_eq!(body_of(p.addr()), b"up");
    }
    burst_is_served(p.addr());
}

/// A hard RLIMIT_MEMLOCK of 0: where rings are charged to it, no ring fits,
/// and one line says so and what to set; ringside serves on epoll.
#[test]
fn no_locked_memory_falls_back_to_epoll_with_one_line_naming_memlock() {
    let p = Child::default()
        .limit(libc::RLIMIT_MEMLOCK, 0, 0)
        .unprivileged()
        .start(&respond_config("up", "127.0.0.1:0", 2, ""));
    let lines = event_loop_lines(&p);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    if !line.contains("event loop on io_uring (") {
        for part in [
            "2 workers: event loop on legacy epoll: io_uring could not be set up",
            "Cannot allocate memory",
            "RLIMIT_MEMLOCK (soft 0 bytes, hard 0 bytes)",
            "LimitMEMLOCK=infinity",
        ] {
            assert!(line.contains(part), "{part:?} not in {line}");
        }
    }
    for _ in 0..4 {
        assert_eq!(body_of(p.addr()), b"up");
    }
    burst_is_served(p.addr());
}

#[test]
fn io_uring_forbidden_falls_back_to_epoll_with_one_line_naming_the_cause() {
    let p = Child::default()
        .refuse_io_uring(libc::EPERM)
        .start(&respond_config("up", "127.0.0.1:0", 2, ""));
    let lines = event_loop_lines(&p);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("kernel.io_uring_disabled") && lines[0].contains("seccomp"),
        "{lines:?}"
    );
    assert_eq!(body_of(p.addr()), b"up");
    burst_is_served(p.addr());
}

/// User + system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `after` starts at 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn emfile_on_accept_logs_a_line_a_second_at_most_and_recovers() {
    // 64 descriptors that cannot be raised: about 20 go to the process
    // itself, so 100 idle connections run it out.
    let p = Child::default()
        .limit(libc::RLIMIT_NOFILE, 64, 64)
        .start(&respond_config("up", "127.0.0.1:0", 1, ""));
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(std::net::TcpStream::connect(p.addr()).unwrap());
    }
    let first = p
        .wait_for_line(|l| l.contains("accept failed"), Duration::from_secs(5))
        .expect("no accept failure logged");
    assert!(
        first.contains("Too many open files")
            && first.contains("RLIMIT_NOFILE (64)")
            && first.contains("LimitNOFILE=")
            && first.contains("ulimit -n"),
        "{first}"
    );
    let cpu = cpu_seconds(p.pid());
    let window = Instant::now();
    thread::sleep(Duration::from_millis(2500));
    let failures: Vec<String> = p
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("accept failed"))
        .collect();
    // One at once, then at most one a second.
    assert!(
        failures.len() <= 4,
        "{} lines: {failures:#?}",
        failures.len()
    );
    assert!(
        failures
            .iter()
            .any(|l| l.contains("more failures not logged")),
        "{failures:#?}"
    );
    let spent = cpu_seconds(p.pid()) - cpu;
    assert!(
        spent < 0.25 * window.elapsed().as_secs_f64(),
        "{spent:.2} CPU seconds in {:?} while out of descriptors",
        window.elapsed()
    );
    drop(held);
    // Descriptors come back as the proxy sees the clients go, and the next
    // connection is served (within the client's 5 s read timeout).
    assert_eq!(body_of(p.addr()), b"up");
    assert_eq!(body_of(p.addr()), b"up");
}

// --------------------------------------- 4. files that are not files

/// A self-signed certificate and its key, written into `dir`.
fn cert_pair(dir: &TestDir) -> (PathBuf, PathBuf) {
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    (
        dir.write("cert.pem", &pair.cert.pem()),
        dir.write("key.pem", &pair.key_pair.serialize_pem()),
    )
}

/// A TLS listener on `cert`/`key` and an error page, on separate lines.
fn files_config(cert: &Path, key: &Path, page: &Path, body: &str) -> String {
    let rest = format!(
        "[[listen]]\naddress = \"127.0.0.2:0\"\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [[route]]\npath = \"/e/\"\nrespond = {{ status = 200, body = \"e\" }}\n\
         error_pages = {{ \"502\" = \"{}\" }}\n\n",
        cert.display(),
        key.display(),
        page.display()
    );
    respond_config(body, "127.0.0.1:0", 1, &rest)
}

/// (key, the config with that key's path replaced by `bad`) for the
/// certificate, the key and the error page.
fn each_bad_file(dir: &TestDir, bad: &Path, body: &str) -> Vec<(&'static str, String)> {
    let (cert, key) = cert_pair(dir);
    let page = dir.write("50x.html", "<p>oops</p>");
    vec![
        ("listen.tls.cert", files_config(bad, &key, &page, body)),
        ("listen.tls.key", files_config(&cert, bad, &page, body)),
        ("route.error_pages", files_config(&cert, &key, bad, body)),
    ]
}

fn bad_paths(dir: &TestDir) -> Vec<(PathBuf, String)> {
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let big = dir.write("big.pem", &"x".repeat((1 << 20) + 1));
    vec![
        (
            PathBuf::from("/dev/zero"),
            "/dev/zero is not a regular file".into(),
        ),
        (
            fifo.clone(),
            format!("{} is not a regular file", fifo.display()),
        ),
        (
            big.clone(),
            format!("{} is larger than 1048576 bytes", big.display()),
        ),
    ]
}

#[test]
fn check_and_start_refuse_devices_fifos_and_huge_files_at_once() {
    let dir = TestDir::new();
    for (bad, message) in bad_paths(&dir) {
        for (key, toml) in each_bad_file(&dir, &bad, "v1") {
            let path = dir.write("bad.toml", &toml);
            let line = line_of(&toml, &bad.display().to_string());
            let want = format!("{}:{line}: {key}: {message}", path.display());
            let out = check(&path);
            assert_eq!(out.status.code(), Some(1), "--check, {key} = {bad:?}");
            assert!(
                stderr(&out).lines().any(|l| l == want),
                "want {want:?} in\n{}",
                stderr(&out)
            );
            let out = ringside(&["-c".as_ref(), path.as_os_str()]);
            assert_eq!(out.status.code(), Some(1), "start, {key} = {bad:?}");
            assert!(stderr(&out).contains(&want), "{}", stderr(&out));
        }
    }
}

#[test]
fn check_refuses_a_config_file_that_is_not_a_regular_file() {
    let dir = TestDir::new();
    let mut bad = bad_paths(&dir);
    // The config's own cap is 16 MiB.
    let big = dir.write("big.toml", &format!("#{}\n", "x".repeat(16 << 20)));
    bad[2] = (
        big.clone(),
        format!("{} is larger than 16777216 bytes", big.display()),
    );
    for (bad, message) in bad {
        let out = check(&bad);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {err}");
        assert!(
            err.starts_with(&format!("{}:0: ", bad.display())) && err.contains(&message),
            "{err}"
        );
    }
}

#[test]
fn a_reload_naming_devices_fifos_or_huge_files_fails_and_the_old_config_serves() {
    let dir = TestDir::new();
    let (cert, key) = cert_pair(&dir);
    let page = dir.write("50x.html", "<p>oops</p>");
    let good = files_config(&cert, &key, &page, "v1");
    let mut p = Proxy::start_in(TestDir::new(), &good);
    for (bad, message) in bad_paths(&dir) {
        for (key, toml) in each_bad_file(&dir, &bad, "v2") {
            std::fs::write(p.config_path(), &toml).unwrap();
            let before = p.stderr_lines().len();
            p.signal(libc::SIGHUP);
            let deadline = Instant::now() + Duration::from_secs(5);
            let want = format!(": {key}: {message}");
            while !p.stderr_lines()[before..]
                .iter()
                .any(|l| l.ends_with(&want))
            {
                assert!(
                    Instant::now() < deadline,
                    "no {want:?} after SIGHUP:\n{}",
                    p.stderr_lines()[before..].join("\n")
                );
                thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(body_of(p.addr()), b"v1", "after {key} = {bad:?}");
        }
    }
}

// ------------------------------------- 5. header injection from config

#[test]
fn check_and_reload_refuse_a_redirect_target_with_cr_lf() {
    let evil = "[[route]]\npath = \"/r\"\n\
                redirect = { to = \"https://example.com/\\r\\nSet-Cookie: a=1\" }\n\n";
    let toml = respond_config("v2", "127.0.0.1:0", 1, evil);
    let dir = TestDir::new();
    let path = dir.write("evil.toml", &toml);
    let out = check(&path);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let want = format!(
        "{}:{}: route.redirect.to: a header value must not contain control characters (found \\r)",
        path.display(),
        line_of(&toml, "redirect =")
    );
    assert_eq!(err.trim_end(), want);

    let mut p = Proxy::start(&respond_config("v1", "127.0.0.1:0", 1, ""));
    std::fs::write(p.config_path(), &toml).unwrap();
    sighup_and_wait(&mut p, "route.redirect.to: a header value must not contain");
    assert_eq!(body_of(p.addr()), b"v1");
}
