//! Active health checks: run once per process, on one thread of the control
//! plane, and read by every worker without a lock.
//!
//! Each server of an upstream with `health = { … }` is probed every
//! `interval` with a plain HTTP/1.1 `GET path` (`Host` = the server's
//! address as written, `Connection: close`); a 2xx or 3xx status line within
//! `timeout` is a pass, anything else (refused, reset, silence, garbage, any
//! other status) a failure. `fails` failures in a row take the server out,
//! `passes` passes in a row bring it back; servers count as up until then
//! (so a fresh start serves at once, as the contract says).
//!
//! The verdicts live in a `Table` of one `AtomicBool` per server, shared by
//! `Arc` with every worker's `Generation`: a worker's pick does one relaxed
//! load per candidate, and the probe thread writes only when a verdict
//! changes. `ringside_upstream_up` reads the same table.
#![forbid(unsafe_code)]

use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::TcpStream,
    time::Instant,
    LegacyDriver, RuntimeBuilder,
};

use crate::config::{Config, Health};

/// Longest status line prefix a probe reads: `HTTP/1.1 200` is all it needs.
const PROBE_BUF: usize = 512;

/// Per upstream, per server: whether active health checks say it is up.
/// Upstreams without `health` stay up.
pub struct Table {
    up: Box<[Box<[AtomicBool]>]>,
    /// Per upstream: how many of its servers are down.
    down: Box<[AtomicUsize]>,
}

impl Table {
    /// Every server of `config` up.
    pub fn new(config: &Config) -> Table {
        Table {
            up: config
                .upstreams
                .iter()
                .map(|u| u.servers.iter().map(|_| AtomicBool::new(true)).collect())
                .collect(),
            down: config
                .upstreams
                .iter()
                .map(|_| AtomicUsize::new(0))
                .collect(),
        }
    }

    /// No server of `upstream` is down: a pick need not ask per server.
    pub fn all_up(&self, upstream: usize) -> bool {
        self.down[upstream].load(Ordering::Relaxed) == 0
    }

    /// The verdict for a server this table may not know (a reload swaps
    /// config and table one after the other): unknown servers count as up.
    pub fn get(&self, upstream: usize, server: usize) -> bool {
        self.up
            .get(upstream)
            .and_then(|u| u.get(server))
            .is_none_or(|v| v.load(Ordering::Relaxed))
    }

    pub fn is_up(&self, upstream: usize, server: usize) -> bool {
        // Relaxed: a verdict is a hint that may arrive a request late.
        self.up[upstream][server].load(Ordering::Relaxed)
    }

    /// Called on a change of verdict only.
    fn set(&self, upstream: usize, server: usize, up: bool) {
        self.up[upstream][server].store(up, Ordering::Relaxed);
        if up {
            self.down[upstream].fetch_sub(1, Ordering::Relaxed);
        } else {
            self.down[upstream].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The running checks of one config. Dropping it stops them (a probe under
/// way finishes within its timeout, then the thread ends).
pub struct Checks {
    table: Arc<Table>,
    stop: async_channel::Sender<()>,
}

impl Checks {
    /// Starts probing the servers of every upstream of `config` that has
    /// `health`; without any, no thread is started.
    pub fn start(config: &Config) -> io::Result<Checks> {
        let table = Arc::new(Table::new(config));
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let targets: Vec<Target> = config
            .upstreams
            .iter()
            .enumerate()
            .filter_map(|(u, up)| Some((u, up, up.health.as_ref()?)))
            .flat_map(|(u, up, health)| {
                up.servers
                    .iter()
                    .enumerate()
                    .map(move |(s, server)| Target {
                        upstream: u,
                        server: s,
                        name: format!("upstream {} server {}", up.name, server.label),
                        addr: server.address,
                        host: server.label.clone(),
                        health: health.clone(),
                    })
            })
            .collect();
        if !targets.is_empty() {
            let t = table.clone();
            thread::Builder::new()
                .name("ringside-health".into())
                .spawn(move || run(targets, t, stopped))?;
        }
        Ok(Checks { table, stop })
    }

    /// The verdicts, for the workers' `Generation`s of this config.
    pub fn table(&self) -> Arc<Table> {
        self.table.clone()
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        self.stop.close();
    }
}

/// One server to probe.
struct Target {
    upstream: usize,
    server: usize,
    /// For the error log.
    name: String,
    addr: SocketAddr,
    host: String,
    health: Health,
}

/// The probe thread: a small monoio runtime of its own (epoll: a few
/// sockets a second need no io_uring), one task per server.
fn run(targets: Vec<Target>, table: Arc<Table>, stop: async_channel::Receiver<()>) {
    let rt = RuntimeBuilder::<LegacyDriver>::new().enable_timer().build();
    let mut rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            crate::error!("health checks cannot run: {e}; every server counts as up");
            return;
        }
    };
    rt.block_on(async move {
        let tasks: Vec<_> = targets
            .into_iter()
            .map(|t| monoio::spawn(watch(t, table.clone(), stop.clone())))
            .collect();
        for t in tasks {
            t.await;
        }
    });
}

/// Probes one server every `interval` until stopped, and moves its verdict
/// after `fails` failures or `passes` passes in a row.
async fn watch(t: Target, table: Arc<Table>, stop: async_channel::Receiver<()>) {
    let h = &t.health;
    let (mut up, mut fails, mut passes) = (true, 0u32, 0u32);
    loop {
        let next = Instant::now() + h.interval;
        match probe(t.addr, &t.host, &h.path, h.timeout).await {
            Ok(()) => {
                fails = 0;
                passes += 1;
                if !up && passes >= h.passes {
                    up = true;
                    table.set(t.upstream, t.server, true);
                    crate::info!("health: {} is up again", t.name);
                }
            }
            Err(why) => {
                passes = 0;
                fails += 1;
                if up && fails >= h.fails {
                    up = false;
                    table.set(t.upstream, t.server, false);
                    crate::warn!("health: {} is down: {why}", t.name);
                }
            }
        }
        monoio::select! {
            _ = monoio::time::sleep_until(next) => {}
            _ = stop.recv() => return,
        }
    }
}

/// One check: `Ok` for a 2xx or 3xx status line within `limit`.
async fn probe(addr: SocketAddr, host: &str, path: &str, limit: Duration) -> Result<(), String> {
    match monoio::time::timeout(limit, ask(addr, host, path)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

async fn ask(addr: SocketAddr, host: &str, path: &str) -> Result<(), String> {
    let mut s = TcpStream::connect_addr(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringside-health-check\r\n\
         Connection: close\r\n\r\n"
    );
    let (w, _) = s.write_all(req.into_bytes()).await;
    w.map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::with_capacity(PROBE_BUF);
    loop {
        if let Some(status) = status_of(&buf)? {
            return match status {
                200..=399 => Ok(()),
                _ => Err(format!("status {status}")),
            };
        }
        if buf.len() == buf.capacity() {
            return Err("no status line".into());
        }
        let len = buf.len();
        let (r, slice) = s.read(buf.slice_mut(len..)).await;
        buf = slice.into_inner();
        match r {
            Ok(0) => return Err("closed before a status line".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// The status of `HTTP/1.x NNN…` once 12 bytes are in; `Err` for anything else.
fn status_of(buf: &[u8]) -> Result<Option<u16>, String> {
    const PREFIX: &[u8] = b"HTTP/1.";
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Err("not an HTTP response".into());
    }
    let Some(line) = buf.get(..12) else {
        return Ok(None);
    };
    let digits = &line[9..12];
    if !line[7].is_ascii_digit() || line[8] != b' ' || !digits.iter().all(u8::is_ascii_digit) {
        return Err("not an HTTP status line".into());
    }
    Ok(Some(
        digits
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0')),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_counts_servers_down_per_upstream() {
        let text = r#"
            [[listen]]
            address = "127.0.0.1:0"
            [[upstream]]
            name = "a"
            servers = [ { address = "127.0.0.1:1" }, { address = "127.0.0.1:2" } ]
            [[upstream]]
            name = "b"
            servers = [ { address = "127.0.0.1:3" } ]
            [[route]]
            path = "/"
            upstream = "a"
        "#;
        let t = Table::new(&crate::config::parse_str(text).unwrap());
        assert!(t.all_up(0) && t.all_up(1) && t.is_up(0, 1));
        t.set(0, 1, false);
        assert!(!t.all_up(0) && !t.is_up(0, 1) && t.is_up(0, 0) && t.all_up(1));
        t.set(0, 1, true);
        assert!(t.all_up(0) && t.is_up(0, 1));
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b""), Ok(None));
        assert_eq!(status_of(b"HTTP/1.1 20"), Ok(None));
        assert_eq!(status_of(b"HTTP/1.1 204 No Content\r\n"), Ok(Some(204)));
        assert_eq!(status_of(b"HTTP/1.0 302 Found\r\n"), Ok(Some(302)));
        assert!(status_of(b"SSH-2.0").is_err());
        assert!(status_of(b"HTTP/1.1 2x0 OK").is_err());
    }
}
