//! Stage 6, log: the access log (one line per request, buffered per worker) and
//! the error log (process-wide, unbuffered, rare).
//!
//! Access lines collect in the worker's own buffer and reach the file in one
//! write per 32 KiB or per second, whichever comes first: no syscall per
//! request. A process-wide lock is taken only for that write, so lines of two
//! workers never interleave.

use std::{
    cell::RefCell,
    fs::{File, OpenOptions},
    io::{self, Write},
    path::Path,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc, Mutex,
    },
};

use crate::config::{AccessFormat, Level, LogTarget};

/// Buffered access-log bytes that trigger a write.
const FLUSH_AT: usize = 32 * 1024;

/// Where log bytes go.
pub enum Sink {
    Stdout,
    Stderr,
    File(File),
}

impl Sink {
    pub fn open(target: &LogTarget) -> io::Result<Option<Sink>> {
        Ok(match target {
            LogTarget::Off => None,
            LogTarget::Stdout => Some(Sink::Stdout),
            LogTarget::Stderr => Some(Sink::Stderr),
            LogTarget::File(p) => Some(Sink::File(open_append(p)?)),
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout => io::stdout().lock().write_all(bytes),
            Sink::Stderr => io::stderr().lock().write_all(bytes),
            Sink::File(f) => f.write_all(bytes),
        }
    }
}

pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

// ---------------------------------------------------------------- error log

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
/// `None` until set: messages go to stderr.
static ERROR_SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Sets (or, on reload and SIGUSR1, re-opens) the error log.
pub fn init_error_log(target: &LogTarget, level: Level) -> io::Result<()> {
    let sink = Sink::open(target)?.unwrap_or(Sink::Stderr);
    LEVEL.store(level as u8, Ordering::Relaxed);
    if let Ok(mut s) = ERROR_SINK.lock() {
        *s = Some(sink);
    }
    Ok(())
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

pub fn error_line(level: Level, args: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let name = match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
    };
    let mut line = Vec::with_capacity(128);
    with_time(|t| line.extend_from_slice(t.error.as_bytes()));
    let _ = write!(line, " [{name}] {args}");
    // One problem, one stamped line: a message that spans lines (a list of
    // config problems) is joined with "; ".
    if line.contains(&b'\n') {
        line = String::from_utf8_lossy(&line)
            .split('\n')
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
            .into_bytes();
    }
    line.push(b'\n');
    // Nowhere is left to report a failing error log: its errors are dropped.
    match ERROR_SINK.lock().as_deref_mut() {
        Ok(Some(sink)) => {
            let _ = sink.write_all(&line);
        }
        _ => {
            let _ = io::stderr().write_all(&line);
        }
    }
}

#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log::error_line($crate::config::Level::Error, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::error_line($crate::config::Level::Warn, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::error_line($crate::config::Level::Info, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::log::error_line($crate::config::Level::Debug, format_args!($($t)*)) };
}

// ---------------------------------------------------------------- access log

/// One finished request, as the access log needs it.
pub struct Record<'a> {
    pub remote: std::net::IpAddr,
    pub method: &'a [u8],
    pub target: &'a [u8],
    /// "HTTP/1.0", "HTTP/1.1" or "HTTP/2.0" (as nginx logs them).
    pub protocol: &'static str,
    /// For a head refused before it was parsed, its first line as it came
    /// (or "-"): nginx's `$request` then, in the combined format.
    pub line: Option<&'a [u8]>,
    pub status: u16,
    pub body_bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub upstream: Option<&'a str>,
    pub seconds: f64,
}

/// A worker's access log.
pub struct AccessLog {
    format: std::cell::Cell<AccessFormat>,
    buf: RefCell<Vec<u8>>,
    sink: RefCell<Option<Arc<Mutex<Sink>>>>,
}

impl AccessLog {
    pub fn new(format: AccessFormat, sink: Option<Arc<Mutex<Sink>>>) -> Self {
        AccessLog {
            format: std::cell::Cell::new(format),
            buf: RefCell::new(Vec::new()),
            sink: RefCell::new(sink),
        }
    }

    /// After a reload: lines from now on go to `sink` in `format` (the
    /// caller flushed what was buffered for the old one).
    pub fn retarget(&self, format: AccessFormat, sink: Option<Arc<Mutex<Sink>>>) {
        self.format.set(format);
        *self.sink.borrow_mut() = sink;
    }

    pub fn is_on(&self) -> bool {
        self.sink.borrow().is_some()
    }

    pub fn write(&self, r: &Record<'_>) {
        if !self.is_on() {
            return;
        }
        let full = {
            let mut buf = self.buf.borrow_mut();
            match self.format.get() {
                AccessFormat::Combined => combined(&mut buf, r),
                AccessFormat::Json => json(&mut buf, r),
            }
            buf.len() >= FLUSH_AT
        };
        if full {
            self.flush();
        }
    }

    pub fn flush(&self) {
        let sink = self.sink.borrow();
        let Some(sink) = &*sink else { return };
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        if let Ok(mut s) = sink.lock() {
            if let Err(e) = s.write_all(&buf) {
                drop(s);
                crate::error!("access log write failed: {e}");
            }
        }
        buf.clear();
    }
}

fn combined(out: &mut Vec<u8>, r: &Record<'_>) {
    with_time(|t| write!(out, "{} - - [{}] \"", r.remote, t.common)).ok();
    if let Some(line) = r.line {
        escaped(out, line);
    } else {
        escaped(out, r.method);
        out.push(b' ');
        escaped(out, r.target);
        let _ = write!(out, " {}", r.protocol);
    }
    let _ = write!(out, "\" {} {} \"", r.status, r.body_bytes);
    escaped(out, r.referer.unwrap_or(b"-"));
    out.extend_from_slice(b"\" \"");
    escaped(out, r.user_agent.unwrap_or(b"-"));
    let _ = writeln!(out, "\" {} {:.3}", r.upstream.unwrap_or("-"), r.seconds);
}

fn json(out: &mut Vec<u8>, r: &Record<'_>) {
    with_time(|t| {
        write!(
            out,
            "{{\"remote_addr\":\"{}\",\"time\":\"{}\",\"method\":\"",
            r.remote, t.iso
        )
    })
    .ok();
    json_str(out, r.method);
    out.extend_from_slice(b"\",\"path\":\"");
    json_str(out, r.target);
    let _ = write!(
        out,
        "\",\"protocol\":\"{}\",\"status\":{},\"body_bytes_sent\":{},\"referer\":\"",
        r.protocol, r.status, r.body_bytes
    );
    json_str(out, r.referer.unwrap_or(b""));
    out.extend_from_slice(b"\",\"user_agent\":\"");
    json_str(out, r.user_agent.unwrap_or(b""));
    out.extend_from_slice(b"\",\"upstream_addr\":\"");
    json_str(out, r.upstream.unwrap_or("").as_bytes());
    let _ = writeln!(out, "\",\"request_time\":{:.3}}}", r.seconds);
}

/// nginx's escaping: `"`, `\` and bytes outside printable ASCII as `\xHH`.
fn escaped(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

fn json_str(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
    }
}

/// The current time in the three forms the logs use, computed once a second.
pub struct Stamp {
    pub secs: i64,
    /// `26/Nov/2026:20:41:04 +0000` (nginx `$time_local`).
    pub common: String,
    /// `2026-11-26T20:41:04+00:00`.
    pub iso: String,
    /// `2026/11/26 20:41:04` (nginx error log).
    pub error: String,
}

thread_local! {
    static STAMP: RefCell<Option<Stamp>> = const { RefCell::new(None) };
}

/// Runs `f` with the current time stamp (no allocation but once a second).
pub fn with_time<R>(f: impl FnOnce(&Stamp) -> R) -> R {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    STAMP.with(|s| {
        let mut s = s.borrow_mut();
        if s.as_ref().is_none_or(|st| st.secs != now) {
            *s = Some(stamp(now));
        }
        f(s.as_ref().expect("set above"))
    })
}

fn stamp(secs: i64) -> Stamp {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: `tm` is plain old data that localtime_r fully writes; both
    // pointers are valid for the call and localtime_r keeps neither.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    let off = tm.tm_gmtoff / 60;
    let (sign, off) = if off < 0 { ('-', -off) } else { ('+', off) };
    let (oh, om) = (off / 60, off % 60);
    let (y, mo, d) = (tm.tm_year + 1900, tm.tm_mon as usize, tm.tm_mday);
    let (h, mi, s) = (tm.tm_hour, tm.tm_min, tm.tm_sec);
    Stamp {
        secs,
        common: format!(
            "{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} {sign}{oh:02}{om:02}",
            MONTHS[mo.min(11)]
        ),
        iso: format!(
            "{y}-{:02}-{d:02}T{h:02}:{mi:02}:{s:02}{sign}{oh:02}:{om:02}",
            mo + 1
        ),
        error: format!("{y}/{:02}/{d:02} {h:02}:{mi:02}:{s:02}", mo + 1),
    }
}
