//! Named upstream servers for the balancing tests. Each answers with
//! `X-Server: NAME`, answers `/health…` as the test sets it (recording every
//! check), holds `/hold/…` until the test releases it, can hang up on
//! requests instead of answering, and can be stopped (its port then refuses
//! connections) and brought back on the same address.

use super::*;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    unhealthy: AtomicBool,
    hang_up: AtomicBool,
    /// `/hold/` requests wait while this is false.
    released: Mutex<bool>,
    cv: Condvar,
    /// Every health check: when, and its Host field.
    checks: Mutex<Vec<(Instant, String)>>,
    /// The connections open to this server, to close when it stops.
    open: Mutex<Vec<std::net::TcpStream>>,
}

/// Serves one connection until the proxy closes it or the server hangs up.
fn answer(c: &mut UpConn, state: &State, name: &str) {
    while let Some(req) = c.read_request() {
        if req.target.starts_with("/health") {
            let host = req.header("host").unwrap_or("").to_string();
            state.checks.lock().unwrap().push((Instant::now(), host));
            let answer: &[u8] = if state.unhealthy.load(Ordering::SeqCst) {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nsick"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            };
            if !c.write(answer) {
                return;
            }
            continue;
        }
        if state.hang_up.load(Ordering::SeqCst) {
            return;
        }
        if req.target.starts_with("/hold/") {
            let open = state.released.lock().unwrap();
            // Bounded: a test that forgets to release fails on its client side.
            let _ = state
                .cv
                .wait_timeout_while(open, Duration::from_secs(10), |r| !*r)
                .unwrap();
        }
        let body = format!("{name}\n");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nX-Server: {name}\r\nX-Echo-Target: {}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            req.target,
            body.len()
        );
        if !c.write(answer.as_bytes()) || req.has_token("connection", "close") {
            return;
        }
    }
}

/// One named upstream server.
pub struct Backend {
    pub name: String,
    addr: SocketAddr,
    up: Option<Upstream>,
    state: Arc<State>,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let mut b = Backend {
            name: name.into(),
            addr,
            up: None,
            state: Arc::default(),
        };
        b.up = Some(b.serve(listener));
        b
    }

    /// `n` backends named `s0`, `s1`, …
    pub fn many(n: usize) -> Vec<Backend> {
        (0..n).map(|i| Backend::start(&format!("s{i}"))).collect()
    }

    fn serve(&self, listener: TcpListener) -> Upstream {
        let (state, name) = (self.state.clone(), self.name.clone());
        Upstream::start_on(listener, move |c| {
            if let Ok(s) = c.wire.stream.try_clone() {
                state.open.lock().unwrap().push(s);
            }
            answer(c, &state, &name);
            // The clone kept in `open` would hold the socket open otherwise.
            let _ = c.wire.stream.shutdown(std::net::Shutdown::Both);
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Health checks answer 503 (false) or 200 (true).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.unhealthy.store(!healthy, Ordering::SeqCst);
    }

    /// Requests other than health checks are read, then the connection is
    /// closed without an answer (true), or answered (false).
    pub fn set_hang_up(&self, on: bool) {
        self.state.hang_up.store(on, Ordering::SeqCst);
    }

    /// Lets every `/hold/` request (waiting or to come) be answered.
    pub fn release(&self) {
        *self.state.released.lock().unwrap() = true;
        self.state.cv.notify_all();
    }

    pub fn health_checks(&self) -> Vec<(Instant, String)> {
        self.state.checks.lock().unwrap().clone()
    }

    /// Heads other than health checks that reached this server (answered
    /// or not), since it last started.
    pub fn heads(&self) -> usize {
        self.up.as_ref().map_or(0, |u| {
            u.seen()
                .heads
                .iter()
                .filter(|(_, h)| !h.starts_with(b"GET /health"))
                .count()
        })
    }

    /// Heads carrying `needle` that reached this server.
    pub fn heads_with(&self, needle: &str) -> usize {
        self.up.as_ref().map_or(0, |u| u.heads_with(needle))
    }

    /// Stops the server: the listening socket closes (connections to it are
    /// refused) and so do the connections it had open.
    pub fn stop(&mut self) {
        self.up = None;
        for s in self.state.open.lock().unwrap().drain(..) {
            // Already closed by the peer is fine.
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Listens on the same address again.
    pub fn restart(&mut self) {
        assert!(self.up.is_none(), "{} is running", self.name);
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                // The old socket may linger a moment.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        };
        self.up = Some(self.serve(listener));
    }
}

/// A server entry for `servers = [ … ]`.
pub fn server(addr: SocketAddr, weight: u32) -> String {
    format!("{{ address = \"{addr}\", weight = {weight} }}")
}

/// A backup server entry.
pub fn backup(addr: SocketAddr) -> String {
    format!("{{ address = \"{addr}\", backup = true }}")
}

/// An `[[upstream]]` with these server entries; `extra` holds more keys (one a line).
pub fn pool(name: &str, servers: &[String], extra: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\n{extra}\nservers = [ {} ]\n\n",
        servers.join(", ")
    )
}

/// Equal-weight entries for `backends`.
pub fn servers_of(backends: &[Backend]) -> Vec<String> {
    backends.iter().map(|b| server(b.addr(), 1)).collect()
}

/// Which backend answered.
pub fn who(r: &Response) -> String {
    r.header("x-server").unwrap_or("-").to_string()
}

/// GETs each target in turn on one connection; the answering backend of each.
pub fn answers(proxy: &Proxy, targets: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut c = Client::connect(proxy.addr());
    targets
        .into_iter()
        .map(|t| {
            let r = c.get(&t);
            assert_eq!(r.status, 200, "GET {t}: {}", r.status_line);
            who(&r)
        })
        .collect()
}

/// How many of `names` each name is.
pub fn tally(names: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n.clone()).or_default() += 1;
    }
    m
}

/// A client connection from a chosen local address (any of 127.0.0.0/8 on Linux).
pub fn connect_from(local: IpAddr, to: SocketAddr) -> Client {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::new(local, 0).into())
        .unwrap_or_else(|e| panic!("bind {local}: {e}"));
    sock.connect_timeout(&to.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {to} from {local}: {e}"));
    Client {
        wire: Wire::new(sock.into()),
        timeout: IO_TIMEOUT,
    }
}

/// Polls `cond` every 10 ms until it holds (the time it took) or `limit` passes (None).
pub fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
