//! Scripted origin servers and the record of what reached them.

use super::*;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A complete request as the upstream received it from the proxy.
#[derive(Clone, Debug)]
pub struct Request {
    /// Which upstream connection (numbered from 0 in accept order) carried it.
    pub conn: usize,
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub raw_head: Vec<u8>,
    pub body: Vec<u8>,
    pub framing: Framing,
}

impl Headers for Request {
    fn header_list(&self) -> &[(String, String)] {
        &self.headers
    }
}

/// What an upstream saw, kept for the test to inspect.
#[derive(Clone, Default)]
pub struct Seen {
    /// Every request head as raw bytes, recorded before its body was read.
    pub heads: Vec<(usize, Vec<u8>)>,
    /// Requests whose body arrived complete.
    pub requests: Vec<Request>,
    /// Connections accepted so far.
    pub opened: usize,
    /// Connections whose handler finished (peer closed, or the handler returned).
    pub finished: Vec<usize>,
    /// Invalid HTTP the proxy forwarded. Checked when the upstream is dropped.
    pub problems: Vec<String>,
}

#[derive(Default)]
struct Record {
    seen: Mutex<Seen>,
    cv: Condvar,
}

impl Record {
    fn update(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().unwrap());
        self.cv.notify_all();
    }
}

/// One accepted upstream connection, handed to the handler.
pub struct UpConn {
    pub id: usize,
    pub wire: Wire,
    rec: Arc<Record>,
}

impl UpConn {
    /// The next request, body included. `None` when the proxy closed the connection,
    /// went quiet for 10 s, or sent something invalid (recorded as a problem).
    pub fn read_request(&mut self) -> Option<Request> {
        let deadline = Instant::now() + UPSTREAM_IDLE;
        let raw = match self.wire.take_head(deadline) {
            Ok(raw) => raw,
            Err(Stop::Bad(e)) => return self.problem(e),
            Err(_) => return None,
        };
        let id = self.id;
        self.rec.update(|s| s.heads.push((id, raw.clone())));
        let head = match parse_head(&raw) {
            Ok(h) => h,
            Err(e) => return self.problem(e),
        };
        let parts: Vec<&str> = head.first.split(' ').collect();
        let line_ok = parts.len() == 3
            && !parts[0].is_empty()
            && parts[0].bytes().all(is_tchar)
            && !parts[1].is_empty()
            && matches!(parts[2], "HTTP/1.1" | "HTTP/1.0");
        if !line_ok {
            return self.problem(format!("bad request line {:?}", head.first));
        }
        let hosts = head
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("host"));
        if parts[2] == "HTTP/1.1" && hosts.count() != 1 {
            return self.problem(format!("not exactly one Host: {}", show(&raw)));
        }
        let framing = match framing_of(&head.headers) {
            Ok(f) => f.unwrap_or(Framing::None),
            Err(e) => return self.problem(format!("{e}: {}", show(&raw))),
        };
        let body = match framing {
            Framing::Chunked => self.wire.take_chunked(deadline),
            Framing::Length => {
                let n = head
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"));
                self.wire
                    .take_exact(n.unwrap().1.parse().unwrap(), deadline)
            }
            _ => Ok(Vec::new()),
        };
        let body = match body {
            Ok(b) => b,
            Err(Stop::Bad(e)) => return self.problem(e),
            Err(_) => return None, // the proxy gave up mid-body: incomplete, not invalid
        };
        let req = Request {
            conn: id,
            method: parts[0].into(),
            target: parts[1].into(),
            version: parts[2].into(),
            headers: head.headers,
            raw_head: raw,
            body,
            framing,
        };
        self.rec.update(|s| s.requests.push(req.clone()));
        Some(req)
    }

    fn problem(&mut self, what: String) -> Option<Request> {
        let id = self.id;
        self.rec
            .update(|s| s.problems.push(format!("upstream conn {id}: {what}")));
        None
    }

    /// Writes all of `data`; false when the proxy has gone away.
    pub fn write(&mut self, data: &[u8]) -> bool {
        self.wire.stream.write_all(data).is_ok()
    }

    /// Bytes already buffered, else the next read; `None` at EOF or after `timeout`.
    pub fn read_some(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        if self.wire.buf.is_empty() {
            self.wire.fill(Instant::now() + timeout).ok()?;
        }
        Some(std::mem::take(&mut self.wire.buf))
    }

    /// The upstream end of a tunnel after its 101: shuts its write half at
    /// once if `close_first`, echoes what arrives if `echo`, until EOF or
    /// 10 s of silence; an echoing side that saw a clean EOF ends with
    /// "bye\n". Returns every byte received, `None` if an echo failed.
    pub fn tunnel_peer(&mut self, echo: bool, close_first: bool) -> Option<Vec<u8>> {
        if close_first {
            self.wire
                .stream
                .shutdown(std::net::Shutdown::Write)
                .unwrap();
        }
        let mut all = Vec::new();
        while let Some(data) = self.read_some(Duration::from_secs(10)) {
            all.extend_from_slice(&data);
            if echo && !self.write(&data) {
                return None;
            }
        }
        if echo && self.wire.eof && !self.wire.reset {
            self.write(b"bye\n");
        }
        Some(all)
    }

    /// Holds the connection open, discarding input, until the proxy closes it (bounded).
    pub fn hold_until_closed(&mut self) {
        let deadline = Instant::now() + UPSTREAM_IDLE;
        while self.wire.fill(deadline).is_ok() {}
    }
}

impl Drop for UpConn {
    fn drop(&mut self) {
        let id = self.id;
        self.rec.update(|s| s.finished.push(id));
    }
}

/// A scripted origin server on 127.0.0.1:0.
pub struct Upstream {
    addr: SocketAddr,
    rec: Arc<Record>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    /// Runs `handler` on a thread for every accepted connection.
    pub fn start<F>(handler: F) -> Upstream
    where
        F: Fn(&mut UpConn) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        Upstream::start_on(listener, handler)
    }

    /// As [`Upstream::start`], on a listener the test bound (to bring a
    /// stopped server back on its address).
    pub fn start_on<F>(listener: TcpListener, handler: F) -> Upstream
    where
        F: Fn(&mut UpConn) + Send + Sync + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let rec = Arc::new(Record::default());
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let (rec2, stop2) = (rec.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let mut id = 0;
                rec2.update(|s| {
                    id = s.opened;
                    s.opened += 1;
                });
                let (rec, handler) = (rec2.clone(), handler.clone());
                thread::spawn(move || {
                    let mut conn = UpConn {
                        id,
                        wire: Wire::new(stream),
                        rec,
                    };
                    handler(&mut conn);
                });
            }
        });
        Upstream { addr, rec, stop }
    }

    /// An upstream that answers every request with [`echo_response`].
    pub fn echo() -> Upstream {
        Upstream::start(echo)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn seen(&self) -> Seen {
        self.rec.seen.lock().unwrap().clone()
    }

    /// Waits until `pred` holds on what was seen; false after `timeout`.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.rec.seen.lock().unwrap();
        loop {
            if pred(&s) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self.rec.cv.wait_timeout(s, deadline - now).unwrap().0;
        }
    }

    /// Complete requests whose head contains `needle`.
    pub fn requests_with(&self, needle: &str) -> Vec<Request> {
        let s = self.seen();
        s.requests
            .into_iter()
            .filter(|r| contains(&r.raw_head, needle.as_bytes()))
            .collect()
    }

    /// How many heads (complete request or not) contained `needle`.
    pub fn heads_with(&self, needle: &str) -> usize {
        self.seen()
            .heads
            .iter()
            .filter(|(_, h)| contains(h, needle.as_bytes()))
            .count()
    }

    /// The one complete request carrying `needle`; panics on none or several.
    pub fn only(&self, needle: &str) -> Request {
        let mut rs = self.requests_with(needle);
        assert_eq!(
            rs.len(),
            1,
            "upstream saw {} requests carrying {needle:?}",
            rs.len()
        );
        rs.remove(0)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop`; failure only leaves a parked thread.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if thread::panicking() {
            return;
        }
        let problems = self.seen().problems;
        assert!(
            problems.is_empty(),
            "the proxy forwarded invalid HTTP:\n{}",
            problems.join("\n")
        );
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// `200 OK` naming the target in `X-Echo-Target` and the body length in the body.
pub fn echo_response(req: &Request) -> Vec<u8> {
    let body = format!("target={}\nbodylen={}\n", req.target, req.body.len());
    format!(
        "HTTP/1.1 200 OK\r\nX-Echo-Target: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        req.target,
        body.len()
    )
    .into_bytes()
}

/// Handler: answers every request on the connection with [`echo_response`].
pub fn echo(c: &mut UpConn) {
    while let Some(req) = c.read_request() {
        if !c.write(&echo_response(&req)) || req.has_token("connection", "close") {
            return;
        }
    }
}
