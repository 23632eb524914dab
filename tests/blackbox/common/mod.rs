//! Black-box harness: the real `ringside` binary, scripted upstreams and a raw
//! client, all on 127.0.0.1. Bytes go out exactly as written and come back
//! parsed strictly; every wait is bounded by a deadline.
//!
//! - [`Proxy`] writes a config into its own temp dir, starts the binary and
//!   waits for the readiness line on stderr (never for a sleep).
//! - [`Upstream`] is a scripted origin: one thread per accepted connection runs
//!   the test's handler on an [`UpConn`], and a shared [`Seen`] record keeps
//!   every raw request head and every complete request the proxy forwarded.
//! - [`Client`] writes raw bytes and reads responses (Content-Length, chunked
//!   or close-delimited), or reads until the proxy closes.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

pub mod acme_ca;
mod client;
pub mod farm;
pub mod fixture;
pub mod h2kit;
pub mod pki;
mod proxy;
mod upstream;
mod wire;

pub use client::*;
pub use pki::TestCa;
pub use proxy::*;
pub use upstream::*;
pub use wire::*;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

/// What the proxy prints on stderr once every listener is bound (the contract).
pub const READY_PREFIX: &str = "ringside ready: listening on ";
/// Generous: a debug build on a loaded CI machine can be slow to start.
pub const READY_DEADLINE: Duration = Duration::from_secs(10);
/// Default bound on any single client read or upstream wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle upstream handler threads give up after this, so none outlives a test by much.
const UPSTREAM_IDLE: Duration = Duration::from_secs(10);
/// Largest head either side of the harness accepts before calling it garbage.
const MAX_HEAD: usize = 1 << 20;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The binary under test: `RINGSIDE_BIN` if set, else the one cargo built.
pub fn bin() -> PathBuf {
    match std::env::var_os("RINGSIDE_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_ringside")),
    }
}

/// A string unique within this test process, to find "our" request upstream.
pub fn token() -> String {
    format!("tok{}", COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// Bytes for a failure message: escaped, cut to a readable length.
pub fn show(b: &[u8]) -> String {
    let s = b.escape_ascii().to_string();
    if s.len() > 400 {
        format!("{}…({} bytes)", &s[..400], b.len())
    } else {
        s
    }
}

/// Deterministic pseudo-random bytes (xorshift), so bodies are not all one letter.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An address on 127.0.0.1 where nothing listens (bound, then released):
/// free to listen on.
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap()
}

/// An address on 127.0.0.1 that refuses every connect for the life of the
/// test process: a socket bound there and never listening, so no other
/// test's listener can take the port meanwhile (a dead upstream whose
/// errors a test reads).
pub fn refused_port() -> SocketAddr {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    s.bind(&any.into()).expect("bind 127.0.0.1:0");
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    std::mem::forget(s);
    addr
}

// ------------------------------------------------------------------ config

/// A config with the test conventions: one worker, no access log, warn level,
/// one listener on a free port; `limits` goes into `[limits]`, `rest` after.
pub fn config(limits: &str, rest: &str) -> String {
    format!(
        "[runtime]\nworkers = 1\nshutdown_timeout = \"5s\"\n\n\
         [log]\naccess = \"off\"\nlevel = \"warn\"\n\n\
         [limits]\n{limits}\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\n{rest}"
    )
}

/// One `[[upstream]]` with a single server; `extra` holds more keys (one a line).
pub fn upstream(name: &str, addr: SocketAddr, extra: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\n{extra}\nservers = [ {{ address = \"{addr}\" }} ]\n\n"
    )
}

/// One `[[route]]` from a path prefix to an upstream.
pub fn route(path: &str, upstream: &str) -> String {
    format!("[[route]]\npath = \"{path}\"\nupstream = \"{upstream}\"\n\n")
}

/// Everything under `/` goes to one upstream named `app`.
pub fn single_upstream(addr: SocketAddr) -> String {
    config("", &(upstream("app", addr, "") + &route("/", "app")))
}

/// A directory under the system temp dir, unique per test, removed on drop.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new() -> TestDir {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "ringside-test-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).expect("write test file");
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is harmless and must not hide the test's result.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
