//! The binary under test, started on a config and watched through its stderr.

use super::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Lines {
    state: Mutex<(Vec<String>, bool)>, // (lines so far, stderr closed)
    cv: Condvar,
}

/// The binary under test, started on a config and ready to serve.
pub struct Proxy {
    child: Child,
    config: PathBuf,
    addrs: Vec<SocketAddr>,
    stderr: Arc<Lines>,
    signalled: bool,
    exited: Option<ExitStatus>,
    dir: TestDir, // last: removed after the process is gone
}

impl Proxy {
    /// Writes `toml` into a fresh temp dir and starts the proxy on it.
    pub fn start(toml: &str) -> Proxy {
        Proxy::start_in(TestDir::new(), toml)
    }

    /// As [`Proxy::start`], in a dir the test prepared (for log files and such).
    pub fn start_in(dir: TestDir, toml: &str) -> Proxy {
        Proxy::start_args(dir, toml, &[])
    }

    /// As [`Proxy::start_in`], with more command-line arguments.
    pub fn start_args(dir: TestDir, toml: &str, args: &[&std::ffi::OsStr]) -> Proxy {
        Proxy::start_full(dir, toml, args, None)
    }

    /// As [`Proxy::start_in`], run as user `uid` (when the tests run as root).
    pub fn start_as(dir: TestDir, toml: &str, uid: Option<u32>) -> Proxy {
        Proxy::start_full(dir, toml, &[], uid)
    }

    fn start_full(dir: TestDir, toml: &str, args: &[&std::ffi::OsStr], uid: Option<u32>) -> Proxy {
        Proxy::start_with(dir, toml, args, |command| {
            if let Some(uid) = uid {
                std::os::unix::process::CommandExt::uid(command, uid);
            }
        })
    }

    /// As [`Proxy::start_args`], with `setup` applied to the command before
    /// it runs (a user, resource limits set in `pre_exec`).
    pub fn start_with(
        dir: TestDir,
        toml: &str,
        args: &[&std::ffi::OsStr],
        setup: impl FnOnce(&mut Command),
    ) -> Proxy {
        let config = dir.write("ringside.toml", toml);
        let mut command = Command::new(bin());
        // A panic's log line then says where it came from.
        command.env("RUST_BACKTRACE", "1");
        setup(&mut command);
        let mut child = command
            .arg("-c")
            .arg(&config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin().display()));
        let stderr = Arc::new(Lines::default());
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let s = String::from_utf8_lossy(&line).trim_end().to_string();
                        sink.state.lock().unwrap().0.push(s);
                        sink.cv.notify_all();
                    }
                }
            }
            sink.state.lock().unwrap().1 = true;
            sink.cv.notify_all();
        });
        let mut proxy = Proxy {
            child,
            config,
            addrs: Vec::new(),
            stderr,
            signalled: false,
            exited: None,
            dir,
        };
        let Some(ready) = proxy.wait_for_line(|l| l.starts_with(READY_PREFIX), READY_DEADLINE)
        else {
            let status = proxy.child.try_wait().ok().flatten();
            proxy.signalled = true; // the failure is reported here, not again on drop
            panic!(
                "no readiness line within {READY_DEADLINE:?} (exit status {status:?}); stderr:\n{}\nconfig:\n{toml}",
                proxy.stderr_lines().join("\n")
            );
        };
        proxy.addrs = parse_ready_line(&ready);
        proxy
    }

    /// The first listener's real address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every address the readiness line names, in its order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// `GET /metrics` from the admin listener (the last readiness address):
    /// the whole answer, head included.
    #[allow(dead_code)] // not every test binary scrapes
    pub fn metrics(&self) -> String {
        let admin = *self.addrs().last().expect("admin address");
        let mut c = Client::connect(admin);
        c.send(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        String::from_utf8_lossy(&c.read_to_close(IO_TIMEOUT)).into_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.state.lock().unwrap().0.clone()
    }

    /// The first stderr line (from the start) matching `pred`, waiting up to `timeout`.
    pub fn wait_for_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut st = self.stderr.state.lock().unwrap();
        loop {
            if let Some(l) = st.0.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if st.1 || now >= deadline {
                return None;
            }
            st = self.stderr.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    pub fn signal(&mut self, sig: libc::c_int) {
        self.signalled = true;
        // SAFETY: kill(2) with the pid of a child we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited {
                return Some(s);
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exited = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn parse_ready_line(line: &str) -> Vec<SocketAddr> {
    let rest = &line[READY_PREFIX.len()..];
    let addrs: Vec<SocketAddr> = rest
        .split(", ")
        .map(|a| {
            a.trim()
                .parse()
                .unwrap_or_else(|e| panic!("readiness line {line:?}: {a:?} is not an address: {e}"))
        })
        .collect();
    assert!(
        addrs.iter().all(|a| a.port() != 0),
        "readiness line names port 0: {line:?}"
    );
    addrs
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let early_exit = if self.exited.is_none() {
            self.child.try_wait().ok().flatten()
        } else {
            None
        };
        if early_exit.is_none() && self.exited.is_none() {
            // Best effort: the process may have exited between try_wait and kill.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            return;
        }
        let lines = self.stderr_lines();
        if let Some(status) = early_exit.filter(|_| !self.signalled) {
            panic!(
                "the proxy exited during the test ({status}); stderr:\n{}",
                lines.join("\n")
            );
        }
        if let Some(p) = lines.iter().find(|l| l.contains("panicked")) {
            panic!("the proxy panicked: {p}\nstderr:\n{}", lines.join("\n"));
        }
    }
}

/// Runs `ringside ARGS…` to completion (for `--check`); panics if it takes over `timeout`.
pub fn run_bounded(args: &[&std::ffi::OsStr], timeout: Duration) -> std::process::Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin().display()));
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            // A read error only shortens the captured output, which the test then reports.
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for ringside") {
            break s;
        }
        if Instant::now() >= deadline {
            // Best effort: it is being killed because it overran.
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringside {args:?} still running after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}
