//! Configuration, stage 0: the resolved, typed `Config` every other stage reads.
//!
//! Reading happens in two steps (as sozu does): `file.rs` walks the TOML
//! document with its spans and collects *every* problem with its line and
//! dotted key; only a document without problems becomes a `Config`, with
//! durations and sizes typed and upstream names resolved to indexes.
//! `check.rs` adds the checks that look outside the file (files that must
//! exist, log files that must open, port clashes).
#![forbid(unsafe_code)]

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

mod acme;
mod check;
mod file;
pub mod files;
mod named;
mod route;
mod shield_conn;
mod shield_req;
pub use named::known_keys;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_headers;
#[cfg(test)]
mod tests_problems;
pub mod units;
mod upstream;
mod walk;

pub use acme::{split_url, writable, Acme, Challenge};
pub use shield_conn::Gate;

/// One problem found in a config file, printed as `FILE:LINE: key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line; 0 when the problem has no place in the file.
    pub line: usize,
    /// Dotted TOML path, array indexes left out: `upstream.servers.weight`.
    pub key: String,
    pub message: String,
}

/// Every problem of one file (never empty).
#[derive(Debug, Clone)]
pub struct Problems {
    pub file: PathBuf,
    pub list: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, &self.file, &self.list, "")
    }
}

/// What is questionable but does not stop FILE from running (an expired
/// certificate), printed as `FILE:LINE: warning: key: message`. May be empty.
#[derive(Debug, Clone)]
pub struct Warnings {
    pub file: PathBuf,
    pub list: Vec<Problem>,
}

impl fmt::Display for Warnings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, &self.file, &self.list, "warning: ")
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, file: &Path, list: &[Problem], tag: &str) -> fmt::Result {
    for (i, p) in list.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        let (line, key, message) = (p.line, one_line(&p.key), one_line(&p.message));
        write!(f, "{}:{line}: {tag}{key}: {message}", file.display())?;
    }
    Ok(())
}

/// `s` with its control characters escaped (`\r`, `\u{1}`), so that a
/// value quoted from a hostile file keeps each problem on one line.
fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(|c: char| c.is_control()) {
        return s.into();
    }
    s.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect::<String>()
        .into()
}

impl std::error::Error for Problems {}

/// Reads, validates and resolves FILE: everything `--check` checks. The
/// warnings are looked for only in a file without problems.
pub fn load(path: &Path) -> Result<(Config, Warnings), Problems> {
    let fail = |list| Problems {
        file: path.to_path_buf(),
        list,
    };
    let unreadable = |message| {
        fail(vec![Problem {
            line: 0,
            key: String::new(),
            message,
        }])
    };
    let bytes = files::read_regular(path, files::MAX_CONFIG).map_err(unreadable)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| unreadable(format!("{} is not UTF-8 text: {e}", path.display())))?;
    let (read, mut problems) = file::read(&text, path);
    let Some((config, places)) = read else {
        return Err(fail(problems));
    };
    // Also when the text has problems, so that one `--check` lists them
    // all. A key that already has one keeps only that one, and a value
    // that was not read (left at its default, with no place) says nothing.
    let in_text = problems.len();
    for p in check::outside(&config, &places) {
        let unread = in_text > 0 && p.line == 0;
        let known = problems[..in_text]
            .iter()
            .any(|q| q.line == p.line && q.key == p.key);
        if !unread && !known {
            problems.push(p);
        }
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.line);
        return Err(fail(problems));
    }
    let warnings = Warnings {
        file: path.to_path_buf(),
        list: check::warnings(&config, &places),
    };
    Ok((config, warnings))
}

/// Parses and resolves TOML text without looking at the file system.
pub fn parse_str(text: &str) -> Result<Config, Vec<Problem>> {
    file::parse(text, std::path::Path::new("ringside.toml"))
}

#[derive(Debug, Clone)]
pub struct Config {
    pub runtime: Runtime,
    pub log: Log,
    pub limits: Limits,
    pub admin: Option<Admin>,
    pub cache: Cache,
    pub acme: Option<Acme>,
    pub listeners: Vec<Listener>,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    /// `[[limit]]`s, in file order (routes name them by index). Their
    /// bucket tables are shared by every worker of this generation.
    pub rate_limits: Vec<crate::shield::limit::Limit>,
    /// `[[rule]]`s, compiled.
    pub rules: crate::shield::rules::Rules,
}

#[derive(Debug, Clone)]
pub struct Runtime {
    /// 0 = one per CPU in the process's affinity mask.
    pub workers: usize,
    pub shutdown_timeout: Duration,
    /// `user` / `group`: who the process runs as once the listeners are
    /// bound (`control::privdrop`); `None`: it stays who it was started as.
    pub account: Option<Account>,
}

/// An account from `[runtime] user` / `group`, resolved when the file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub uid: u32,
    /// The `group`'s id, or the user's primary group.
    pub gid: u32,
    /// `group` as written, when given.
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
    Off,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    Combined,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Debug, Clone)]
pub struct Log {
    /// Stdout, Off or File.
    pub access: LogTarget,
    pub access_format: AccessFormat,
    /// Stderr or File.
    pub error: LogTarget,
    pub level: Level,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub client_header_timeout: Duration,
    pub client_body_timeout: Duration,
    pub client_send_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// Bytes of request line + headers.
    pub max_request_head: usize,
    /// Bytes; 0 = unlimited.
    pub max_request_body: u64,
    /// Bodies up to this size are read whole before an upstream is picked
    /// (`buffering`); 0 streams every body.
    pub client_body_buffer: usize,
    /// Per worker; 0 = unlimited.
    pub max_connections: usize,
    /// Open connections of one client address, all workers together;
    /// 0 = unlimited.
    pub max_connections_per_ip: u32,
    /// Peers trusted to name the client in X-Forwarded-For.
    pub real_ip_from: crate::shield::nets::Nets,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub address: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Cache {
    /// Total bytes across workers.
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    pub http2: bool,
    /// Shared by every connection accepted on the listener: a thin
    /// pointer in each one's state, no copy.
    pub hsts: Option<std::sync::Arc<String>>,
    pub redirect_https: bool,
    /// `defer_accept`: a connection is accepted once its first bytes are
    /// in (TCP_DEFER_ACCEPT), not at the handshake.
    pub defer_accept: bool,
    /// `proxy_protocol`, `allow` and `deny`: checked at accept.
    pub gate: Gate,
    /// `name`: routes name the listeners they serve with it.
    pub name: Option<String>,
    /// The port `redirect_https` sends to (left out of the URL when 443).
    pub https_port: u16,
    pub tls: Option<Tls>,
    /// The TLS listener's rustls config, built by the control plane
    /// (`tls::attach`) at start and on every reload; `None` before that.
    pub acceptor: Option<std::sync::Arc<rustls::ServerConfig>>,
}

#[derive(Debug, Clone)]
pub struct Tls {
    /// The first is the default certificate; empty with `acme`.
    pub certs: Vec<CertPair>,
    pub protocols: Vec<TlsVersion>,
    /// `tls = { acme = [NAMES] }`: one certificate for these names (lowercase)
    /// from the `[acme]` directory instead of `certs`.
    pub acme: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    IpHash,
    UriHash,
    RandomTwo,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub balance: Balance,
    /// Most idle connections kept per server, per worker.
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    pub read_timeout: Duration,
    pub servers: Vec<Server>,
    pub health: Option<Health>,
    /// 0 = passive health off.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    /// 0 = off.
    pub retries: u32,
    pub sticky: Option<Sticky>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub address: SocketAddr,
    /// The address as written in the file (metrics label).
    pub label: String,
    pub weight: u32,
    pub backup: bool,
}

#[derive(Debug, Clone)]
pub struct Health {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub fails: u32,
    pub passes: u32,
}

#[derive(Debug, Clone)]
pub struct Sticky {
    pub cookie: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lowercase exact name.
    Exact(String),
    /// `*.example.com` stored as the lowercase suffix `.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Index into `Config::upstreams`.
    Upstream(usize),
    /// (upstream index, weight)
    Split(Vec<(usize, u32)>),
    Static(PathBuf),
    Redirect {
        to: String,
        status: u16,
    },
    Respond {
        status: u16,
        body: String,
    },
}

#[derive(Debug, Clone)]
pub struct Gzip {
    /// Lowercase media types.
    pub types: Vec<String>,
    pub min_length: u64,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// `host` and `path` as written (metrics label).
    pub label: String,
    pub host: Option<HostMatch>,
    pub path: String,
    /// (lowercase header name, value)
    pub match_header: Vec<(String, String)>,
    pub match_cookie: Vec<(String, String)>,
    pub action: Action,
    pub expires: Option<Duration>,
    pub strip_prefix: bool,
    pub websocket: bool,
    /// (status, validity)
    pub cache: Vec<(u16, Duration)>,
    pub gzip: Option<Gzip>,
    pub proxy_redirect: bool,
    pub set_request_headers: Vec<(String, String)>,
    pub add_response_headers: Vec<(String, String)>,
    pub error_pages: Vec<(u16, PathBuf)>,
    /// `allow`, `deny`, `methods` and `limit` (edge shield).
    pub access: crate::shield::access::Access,
    /// Lowercase names removed from upstream answers (`Server` is always
    /// replaced).
    pub hide_response_headers: Vec<String>,
    /// `listeners`: indexes into `Config::listeners` this route serves;
    /// empty: every listener.
    pub listeners: Vec<usize>,
}
