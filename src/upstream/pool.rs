//! The worker's keep-alive pool: idle upstream connections per server.
//!
//! Owned by one worker, so no lock. Connections are taken from the back
//! (the most recently used, least likely to have been closed by the server)
//! and expire from the front by `keepalive_timeout`. A cap below the worker's
//! concurrency closes and reopens connections under load (-30 to -45% measured
//! here), which is why the default cap is high and expiry is by time.

use std::{cell::RefCell, collections::VecDeque, time::Duration};

use monoio::{net::TcpStream, time::Instant};

/// An idle connection and when it went idle.
struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// Per server: idle connections, oldest first.
pub struct Pool {
    servers: RefCell<Vec<VecDeque<Idle>>>,
}

impl Pool {
    pub fn new(servers: usize) -> Self {
        Pool {
            servers: RefCell::new((0..servers).map(|_| VecDeque::new()).collect()),
        }
    }

    /// The freshest idle connection to `server` that has not outlived `ttl`.
    pub fn take(&self, server: usize, ttl: Duration) -> Option<TcpStream> {
        let mut servers = self.servers.borrow_mut();
        let idle = servers.get_mut(server)?;
        let now = Instant::now();
        while let Some(c) = idle.pop_back() {
            if now.saturating_duration_since(c.since) < ttl {
                return Some(c.stream);
            }
            // Everything before it is older still.
            idle.clear();
        }
        None
    }

    /// Keeps `stream` for reuse unless `server` already has `cap` idle ones.
    pub fn put(&self, server: usize, stream: TcpStream, cap: usize) {
        let mut servers = self.servers.borrow_mut();
        if let Some(idle) = servers.get_mut(server) {
            if idle.len() < cap {
                idle.push_back(Idle {
                    stream,
                    since: Instant::now(),
                });
            }
        }
    }

    /// Closes the connections of each server idle longer than its ttl.
    pub fn expire(&self, ttl_of: impl Fn(usize) -> Duration) {
        let now = Instant::now();
        let mut servers = self.servers.borrow_mut();
        for (server, idle) in servers.iter_mut().enumerate() {
            let ttl = ttl_of(server);
            while idle
                .front()
                .is_some_and(|c| now.saturating_duration_since(c.since) >= ttl)
            {
                idle.pop_front();
            }
        }
    }

    pub fn idle(&self) -> usize {
        self.servers.borrow().iter().map(VecDeque::len).sum()
    }
}
