//! The worker's keep-alive pool: idle upstream connections per server.
//!
//! Owned by one worker, so no lock. Connections are taken from the back
//! (the most recently used, least likely to have been closed by the server)
//! and expire from the front by `keepalive_timeout`. A cap below the worker's
//! concurrency closes and reopens connections under load, which costs far
//! more than idle sockets: the default cap is high and expiry is by time
//! (figures in perf/results/design-figures.md).

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    time::Duration,
};

use monoio::{net::TcpStream, time::Instant};

use crate::timer::coarse_now;

/// An idle connection and when it went idle.
struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// Per server address: idle connections, oldest first.
#[derive(Default)]
pub struct Pool {
    servers: RefCell<HashMap<SocketAddr, VecDeque<Idle>>>,
}

impl Pool {
    /// The freshest idle connection to `server` that has not outlived `ttl`.
    pub fn take(&self, server: SocketAddr, ttl: Duration) -> Option<TcpStream> {
        let mut servers = self.servers.borrow_mut();
        let idle = servers.get_mut(&server)?;
        // Ages are a tick off at most: far below any keepalive_timeout.
        let now = coarse_now();
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
    pub fn put(&self, server: SocketAddr, stream: TcpStream, cap: usize) {
        let mut servers = self.servers.borrow_mut();
        let idle = servers.entry(server).or_default();
        if idle.len() < cap {
            idle.push_back(Idle {
                stream,
                since: coarse_now(),
            });
        }
    }

    /// Closes the connections idle longer than their server's ttl; `None`
    /// (a server no longer configured) closes them all.
    pub fn expire(&self, ttl_of: impl Fn(SocketAddr) -> Option<Duration>) {
        let now = coarse_now();
        let mut servers = self.servers.borrow_mut();
        servers.retain(|&server, idle| {
            let Some(ttl) = ttl_of(server) else {
                return false;
            };
            while idle
                .front()
                .is_some_and(|c| now.saturating_duration_since(c.since) >= ttl)
            {
                idle.pop_front();
            }
            !idle.is_empty()
        });
    }

    pub fn idle(&self) -> usize {
        self.servers.borrow().values().map(VecDeque::len).sum()
    }
}
