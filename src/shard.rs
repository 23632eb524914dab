//! One worker's state, beneath every stage that uses it: the `Shard` (pools,
//! buffers, counters, the cache share), the config `Generation` a request
//! runs under, and the `Listen` snapshot of the listener that accepted a
//! connection.
//!
//! Nothing in a `Shard` is shared with another worker: pools, balancer
//! positions, buffers and the access-log buffer are `Cell`/`RefCell`, so the
//! request path takes no lock and touches no other core's cache lines.

use std::{
    cell::{Cell, RefCell},
    net::SocketAddr,
    rc::Rc,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    balance::{Balancer, RoundRobin},
    buffering::{self, Budget},
    buffers::{self, Buffers},
    cache::{Cache, Flights},
    config::{Action, Config},
    control::health,
    log::{AccessLog, Sink},
    splice::Pipes,
    stats::{LabelIds, Stats},
    upstream::pool::Pool,
};

/// Size of a relay buffer: large, for fewer ring operations per body. On
/// io_uring every pending read owns its buffer, so how many a worker lends
/// at once is capped (`RELAY_LENT`).
pub const RELAY_BUF: usize = 256 * 1024;

/// Most relay buffers a worker lends at once (32 MiB of 256 KiB buffers);
/// beyond that, relays get `RELAY_SMALL` buffers, which are not pooled.
const RELAY_LENT: usize = 128;

/// The fallback relay buffer once `RELAY_LENT` are out.
const RELAY_SMALL: usize = 64 * 1024;

/// Size of the pooled buffers for heads ringside writes (`Shard::small`).
const SMALL_BUF: usize = 1024;

/// Size of the pooled buffers a client's request head is first read into
/// (`Shard::requests`), as nginx's `client_header_buffer_size`: most heads
/// fit; a larger one grows its buffer up to `max_request_head`.
pub const REQUEST_BUF: usize = 2048;

/// What a connection needs to know about the listener that accepted it.
#[derive(Clone, Copy)]
pub struct Listen {
    /// The address as configured: finds this listener's settings (TLS,
    /// HSTS) in the current config snapshot.
    pub configured: SocketAddr,
    pub port: u16,
    /// "http" or "https", for X-Forwarded-Proto.
    pub proto: &'static str,
    /// The listener's label id in the worker's `Stats` (its address as
    /// written).
    pub stat: u32,
}

/// One config version as a worker sees it. A request holds the generation
/// it started with, so a reload never changes a request in flight.
pub struct Generation {
    pub config: Arc<Config>,
    /// Metric label ids of this config's routes and servers.
    pub ids: LabelIds,
    /// Active health verdicts of this config's servers, shared with the
    /// control plane's probe thread (read without a lock).
    pub health: Arc<health::Table>,
    /// Per upstream: this worker's balancer, in-flight and passive-health
    /// state (starts afresh with each config).
    pub balancers: Vec<Balancer>,
    /// Per route: the smooth WRR over a `split` route's upstreams.
    splits: Vec<Option<RoundRobin>>,
    /// This worker's copy of the config's `[[rule]]`s: a clone shares the
    /// compiled regexes but has its own search caches, so workers never
    /// meet on the pool of one shared set.
    pub rules: crate::shield::rules::Rules,
}

impl Generation {
    /// `health` must be the table of this `config` (the control plane's
    /// `health::Checks::table`).
    pub fn new(config: Arc<Config>, health: Arc<health::Table>) -> Self {
        // Varies random_two's draws between workers and runs.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Generation {
            ids: LabelIds::default(),
            health,
            balancers: (config.upstreams.iter().enumerate())
                .map(|(i, u)| Balancer::new(u, seed ^ i as u64))
                .collect(),
            splits: (config.routes.iter())
                .map(|r| match &r.action {
                    Action::Split(parts) => Some(RoundRobin::new(parts.iter().map(|p| p.1))),
                    _ => None,
                })
                .collect(),
            rules: config.rules.clone(),
            config,
        }
    }

    /// The upstream of an `upstream` or `split` route: a split picks one
    /// per request, by weight.
    pub fn upstream_for(&self, route: usize) -> Option<usize> {
        match &self.config.routes[route].action {
            Action::Upstream(u) => Some(*u),
            Action::Split(parts) => {
                let rr = self.splits[route].as_ref()?;
                rr.pick(|_| true).map(|i| parts[i].0)
            }
            _ => None,
        }
    }

    /// The keep-alive ttl for idle connections to `addr`; `None` once no
    /// upstream of this config has that server (its pool drains).
    fn idle_ttl(&self, addr: SocketAddr) -> Option<Duration> {
        self.config
            .upstreams
            .iter()
            .filter(|u| u.servers.iter().any(|s| s.address == addr))
            .map(|u| u.keepalive_timeout)
            .max()
    }
}

/// Connections closed since the last return of free pages that make
/// another worth it: their tasks' memory is most of what they held.
const RETURN_AFTER_CLOSED: usize = 4096;

/// Whether a trim that freed `freed` pooled bytes, with `closed` fewer
/// connections than at the last return, should return free pages: only
/// after a burst, since it walks the allocator's whole heap.
fn worth_returning(freed: usize, closed: usize) -> bool {
    freed >= buffers::RETURN_AFTER || closed >= RETURN_AFTER_CLOSED
}

/// One worker's state.
pub struct Shard {
    pub id: usize,
    generation: RefCell<Rc<Generation>>,
    /// Idle upstream connections by server address, so that they carry over
    /// a reload that keeps the server.
    pub pool: Pool,
    /// Client request heads: every connection in the middle of a request
    /// holds one, so they start small (`REQUEST_BUF`).
    pub requests: Buffers,
    /// Head buffers (upstream response heads, tunnels).
    pub heads: Buffers,
    /// Small buffers: upstream request heads and client response heads,
    /// taken and given back once per proxied request. Most heads fit in
    /// `SMALL_BUF`; a larger one grows its buffer, which then leaves the
    /// pool; a head-sized buffer each would make the peak RSS of many
    /// requests in flight several MiB larger.
    pub small: Buffers,
    /// Body relay buffers.
    pub relay: Buffers,
    /// Bytes of request bodies read whole before going upstream.
    pub bodies: Budget,
    /// Idle pipes for splice (plain-TCP bodies and tunnels).
    pub pipes: Pipes,
    pub access: AccessLog,
    /// Requests between their first byte and their last.
    pub in_flight: Cell<usize>,
    /// Connections that have not had a request answered yet.
    fresh: Cell<usize>,
    /// The most connections seen by `trim_pools` since it last returned
    /// free pages.
    peak_connections: Cell<usize>,
    pub connections: Cell<usize>,
    /// Set by the stop signal: finish what runs, then close.
    pub draining: Cell<bool>,
    /// Closed by the stop signal, so that long-lived connections waiting on
    /// it (HTTP/2: GOAWAY) learn of the stop at once.
    stop_tx: RefCell<Option<async_channel::Sender<()>>>,
    stop_rx: async_channel::Receiver<()>,
    /// Open HTTP/2 connections: a graceful stop waits for each to send
    /// GOAWAY and finish its streams.
    pub sessions: Cell<usize>,
    pub stats: Stats,
    /// This worker's share of the response cache (`cache.size / workers`,
    /// set when the worker starts), and its fetches in flight.
    pub cache: RefCell<Cache>,
    pub flights: Flights,
    /// The worker runs on the epoll fallback driver: sockets it opens or
    /// accepts itself must be non-blocking (io_uring's must block).
    pub epoll: bool,
    /// The worker registered its ring of provided buffers: a plain
    /// connection's wait receives into one (`conn::idle`), else it polls for
    /// readiness. Set by the worker as it starts.
    pub provided: bool,
}

impl Shard {
    pub(crate) fn new(
        id: usize,
        config: Arc<Config>,
        health: Arc<health::Table>,
        access: Option<Arc<Mutex<Sink>>>,
        epoll: bool,
    ) -> Self {
        // Upstream response heads are read into buffers of the first
        // config's max_request_head (a head that fills one is refused);
        // request heads grow from REQUEST_BUF up to the current limit.
        let head_size = config.limits.max_request_head.max(4096);
        let (stop_tx, stop_rx) = async_channel::bounded(1);
        let shard = Shard {
            stop_tx: RefCell::new(Some(stop_tx)),
            stop_rx,
            sessions: Cell::new(0),
            id,
            pool: Pool::default(),
            requests: Buffers::new(REQUEST_BUF),
            heads: Buffers::new(head_size),
            small: Buffers::new(SMALL_BUF),
            relay: Buffers::capped(RELAY_BUF, RELAY_LENT, RELAY_SMALL),
            bodies: Budget::new(buffering::WORKER_BUDGET),
            pipes: Pipes::default(),
            access: AccessLog::new(config.log.access_format, access),
            in_flight: Cell::new(0),
            fresh: Cell::new(0),
            peak_connections: Cell::new(0),
            connections: Cell::new(0),
            draining: Cell::new(false),
            stats: Stats::default(),
            cache: RefCell::new(Cache::new(0)),
            flights: Flights::default(),
            epoll,
            provided: false,
            generation: RefCell::new(Rc::new(Generation::new(config.clone(), health.clone()))),
        };
        shard.install(config, health);
        shard
    }

    /// The current config generation.
    pub fn gen(&self) -> Rc<Generation> {
        self.generation.borrow().clone()
    }

    /// Makes `config` current for every request that starts from now on.
    /// `health` is the active-health table of `config`.
    pub fn install(&self, config: Arc<Config>, health: Arc<health::Table>) {
        let ids = self.stats.label_ids(&config);
        *self.generation.borrow_mut() = Rc::new(Generation {
            ids,
            ..Generation::new(config, health)
        });
    }

    /// Counts a connection as fresh (no request answered yet) until the
    /// guard drops.
    pub fn fresh(&self) -> Fresh<'_> {
        self.fresh.set(self.fresh.get() + 1);
        Fresh(self)
    }

    /// Ends (with an error) when the worker starts a graceful stop.
    pub fn stop_notice(&self) -> async_channel::Receiver<()> {
        self.stop_rx.clone()
    }

    /// Closes the stop notice: every `stop_notice` receiver wakes.
    pub(crate) fn notify_stop(&self) {
        self.stop_tx.borrow_mut().take();
    }

    /// Connections that have not had a request answered yet.
    pub(crate) fn fresh_count(&self) -> usize {
        self.fresh.get()
    }

    /// Counts a request in flight until the guard drops.
    pub fn busy(&self) -> Busy<'_> {
        self.in_flight.set(self.in_flight.get() + 1);
        Busy(self)
    }

    /// Frees the pooled buffers no request needed since the last call, and
    /// when a burst's worth of buffers or connections went, the allocator's
    /// free pages with them: a burst must not stay resident once it is over.
    pub(crate) fn trim_pools(&self) {
        let freed =
            self.requests.trim() + self.heads.trim() + self.small.trim() + self.relay.trim();
        let now = self.connections.get();
        let peak = self.peak_connections.get().max(now);
        if worth_returning(freed, peak - now) {
            buffers::return_free_pages();
            self.peak_connections.set(now);
        } else {
            self.peak_connections.set(peak);
        }
    }

    /// Closes idle upstream connections past their keepalive_timeout, and
    /// those to servers the current config no longer has.
    pub(crate) fn expire_idle(&self) {
        let gen = self.gen();
        self.pool.expire(|addr| gen.idle_ttl(addr));
    }
}

/// Counts a connection as fresh until dropped.
pub struct Fresh<'a>(&'a Shard);

impl Drop for Fresh<'_> {
    fn drop(&mut self) {
        self.0.fresh.set(self.0.fresh.get() - 1);
    }
}

pub struct Busy<'a>(&'a Shard);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_pages_go_back_only_after_a_burst() {
        // Steady traffic: a few buffers freed, a few connections gone.
        assert!(!worth_returning(8 * 16 * 1024, 100));
        // A burst of requests is over: its buffers went unused a period.
        assert!(worth_returning(buffers::RETURN_AFTER, 0));
        // A burst of connections closed.
        assert!(worth_returning(0, RETURN_AFTER_CLOSED));
    }
}
