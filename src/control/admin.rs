//! The admin listener: `GET /metrics` (Prometheus text) and `GET /health`.
//!
//! A plain blocking thread: operators' requests are few, and nothing here
//! may slow a worker. Metrics are summed from snapshots each worker sends
//! when asked; `/health` answers 503 from the stop signal until exit, and
//! the admin listener is the last thing to close.
#![forbid(unsafe_code)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::Duration,
};

use crate::{config::Config, control::mailbox::Control, stats::Snapshot};

/// How long a scrape waits for each worker's snapshot.
const SCRAPE_WAIT: Duration = Duration::from_secs(2);
/// Longest admin request head.
const MAX_HEAD: usize = 8192;

pub struct Shared {
    pub workers: Vec<async_channel::Sender<Control>>,
    pub config: Arc<Mutex<Arc<Config>>>,
    /// Active-health verdicts of the config in force.
    pub health: Arc<Mutex<Arc<super::health::Table>>>,
    /// Set at the stop signal: `/health` says 503.
    pub draining: Arc<AtomicBool>,
}

pub fn spawn(listener: TcpListener, shared: Shared) -> std::io::Result<()> {
    thread::Builder::new()
        .name("ringside-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => serve(s, &shared),
                    Err(e) => {
                        crate::error!("admin: accept failed: {e}");
                        thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
        .map(|_| ())
}

fn serve(mut s: TcpStream, shared: &Shared) {
    // A client that stalls may only hold the admin thread this long.
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let (method, path) = loop {
        let n = match s.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let path = req.path.unwrap_or("/");
                let path = path.split('?').next().unwrap_or("/").to_string();
                break (req.method.unwrap_or("").to_string(), path);
            }
            Ok(httparse::Status::Partial) if len < MAX_HEAD => continue,
            _ => {
                reply(&mut s, 400, "text/plain", b"bad request\n", false);
                return;
            }
        }
    };
    let head = method == "HEAD";
    if method != "GET" && !head {
        reply(&mut s, 405, "text/plain", b"method not allowed\n", head);
        return;
    }
    match path.as_str() {
        "/metrics" => {
            let body = metrics(shared);
            reply(
                &mut s,
                200,
                "text/plain; version=0.0.4",
                body.as_bytes(),
                head,
            );
        }
        "/health" => {
            if shared.draining.load(Ordering::Relaxed) {
                reply(&mut s, 503, "text/plain", b"draining\n", head);
            } else {
                reply(&mut s, 200, "text/plain", b"ok\n", head);
            }
        }
        _ => reply(&mut s, 404, "text/plain", b"not found\n", head),
    }
}

fn metrics(shared: &Shared) -> String {
    let (tx, rx) = mpsc::channel();
    let mut asked = 0;
    for w in &shared.workers {
        if w.try_send(Control::Scrape(tx.clone())).is_ok() {
            asked += 1;
        }
    }
    drop(tx);
    let mut total = Snapshot::default();
    for _ in 0..asked {
        match rx.recv_timeout(SCRAPE_WAIT) {
            Ok(s) => total.add(&s),
            Err(_) => break,
        }
    }
    let config = match shared.config.lock() {
        Ok(c) => c.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let health = match shared.health.lock() {
        Ok(h) => h.clone(),
        Err(p) => p.into_inner().clone(),
    };
    for (ui, u) in config.upstreams.iter().enumerate() {
        for (si, s) in u.servers.iter().enumerate() {
            let up = health.get(ui, si);
            total.up.push((u.name.clone(), s.label.clone(), up));
        }
    }
    let mut text = total.render();
    crate::acme::metrics(&mut text);
    text
}

fn reply(s: &mut TcpStream, status: u16, ctype: &str, body: &[u8], head: bool) {
    let reason = crate::http::respond::reason(status);
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nServer: ringside\r\nContent-Type: {ctype}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body);
    }
    // The connection closes next either way.
    let _ = s.write_all(&out);
}
