//! Stage 0: one worker per core — a pinned thread running its own monoio
//! runtime on io_uring, owning a `Shard` of the proxy's state.
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

use monoio::{time::Instant, IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::{
    accept,
    balance::{Balancer, RoundRobin},
    cache::{Cache, Flights},
    config::{Action, Config},
    control::health,
    log::{AccessLog, Sink},
    mailbox::{Control, Reload},
    rlimit::MIN_RING_ENTRIES,
    stats::{LabelIds, Stats},
    timer::TICK,
    upstream::pool::Pool,
};

/// io_uring submission queue size per worker. Each connection has at most a
/// few ops in flight; 4096 entries leave room for thousands of connections
/// without `EBUSY` back-pressure from the ring. Smaller when the locked-memory
/// limit cannot hold it (`rlimit::ring_entries`).
pub const RING_ENTRIES: u32 = 4096;

/// Size of a relay buffer. 256 KiB moved 1 MiB responses at 1,743 requests
/// per CPU-second against 1,381 with 64 KiB (+26%, `perf/run.sh --quick
/// --only ringside --workloads 1m`, 256 connections): fewer ring operations
/// per body. On io_uring every pending read owns its buffer, so how many a
/// worker lends at once is capped (`RELAY_LENT`).
pub const RELAY_BUF: usize = 256 * 1024;

/// Most relay buffers a worker lends at once (32 MiB of 256 KiB buffers);
/// beyond that, relays get `RELAY_SMALL` buffers, which are not pooled.
const RELAY_LENT: usize = 128;

/// The fallback relay buffer once `RELAY_LENT` are out.
const RELAY_SMALL: usize = 64 * 1024;

/// Size of the pooled buffers for heads ringside writes (`Shard::small`).
const SMALL_BUF: usize = 1024;

/// Most free buffers kept per pool per worker; more are freed.
const MAX_FREE_BUFFERS: usize = 256;

/// How long a graceful stop waits for connections accepted just before it
/// to send their first request (their bytes are usually already in flight;
/// without this wait they were reset when the worker exited).
const FRESH_GRACE: Duration = Duration::from_secs(1);

/// A pool of equally sized byte buffers.
pub struct Buffers {
    size: usize,
    free: RefCell<Vec<Vec<u8>>>,
    /// Full-size buffers out on loan, and the most that may be.
    lent: Cell<usize>,
    max_lent: usize,
    /// Size of the unpooled buffer handed out past `max_lent`.
    small: usize,
}

impl Buffers {
    pub fn new(size: usize) -> Self {
        Self::capped(size, usize::MAX, size)
    }

    /// A pool that lends at most `max_lent` buffers of `size`, then
    /// buffers of `small` bytes.
    pub fn capped(size: usize, max_lent: usize, small: usize) -> Self {
        Buffers {
            size,
            free: RefCell::new(Vec::new()),
            lent: Cell::new(0),
            max_lent,
            small,
        }
    }

    pub fn take(&self) -> Vec<u8> {
        if self.lent.get() >= self.max_lent {
            return Vec::with_capacity(self.small);
        }
        self.lent.set(self.lent.get() + 1);
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Takes a buffer back; one that grew, shrank or was lost is dropped.
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() != self.size {
            return;
        }
        self.lent.set(self.lent.get().saturating_sub(1));
        let mut free = self.free.borrow_mut();
        // Keep at most a quarter of what may be lent: after a burst of
        // large bodies the rest goes back to the allocator.
        let keep = MAX_FREE_BUFFERS.min(self.max_lent / 4).max(1);
        if free.len() < keep {
            buf.clear();
            free.push(buf);
        }
    }

    /// Forgets loans that never came back (a buffer lost with a timed-out
    /// op); called when nothing is in flight.
    fn settle(&self) {
        self.lent.set(0);
    }

    pub fn size(&self) -> usize {
        self.size
    }
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

/// One worker's state.
pub struct Shard {
    pub id: usize,
    generation: RefCell<Rc<Generation>>,
    /// Idle upstream connections by server address, so that they carry over
    /// a reload that keeps the server.
    pub pool: Pool,
    /// Head buffers (request heads, upstream response heads).
    pub heads: Buffers,
    /// Small buffers: upstream request heads and client response heads,
    /// taken and given back once per proxied request. Most heads fit in
    /// `SMALL_BUF`; a larger one grows its buffer, which then leaves the
    /// pool. (A 16 KiB head buffer each made the peak RSS of 128 requests
    /// in flight several MiB larger.)
    pub small: Buffers,
    /// Body relay buffers.
    pub relay: Buffers,
    /// Idle pipes for splice (plain-TCP bodies and tunnels).
    pub pipes: crate::splice::Pipes,
    pub access: AccessLog,
    /// Requests between their first byte and their last.
    pub in_flight: Cell<usize>,
    /// Connections that have not had a request answered yet.
    fresh: Cell<usize>,
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
}

impl Shard {
    pub(crate) fn new(
        id: usize,
        config: Arc<Config>,
        health: Arc<health::Table>,
        access: Option<Arc<Mutex<Sink>>>,
    ) -> Self {
        // Head buffers are sized by the first config's max_request_head; a
        // reload that raises it grows buffers on demand (they then leave
        // the pool).
        let head_size = config.limits.max_request_head.max(4096);
        let (stop_tx, stop_rx) = async_channel::bounded(1);
        let shard = Shard {
            stop_tx: RefCell::new(Some(stop_tx)),
            stop_rx,
            sessions: Cell::new(0),
            id,
            pool: Pool::default(),
            heads: Buffers::new(head_size),
            small: Buffers::new(SMALL_BUF),
            relay: Buffers::capped(RELAY_BUF, RELAY_LENT, RELAY_SMALL),
            pipes: crate::splice::Pipes::default(),
            access: AccessLog::new(config.log.access_format, access),
            in_flight: Cell::new(0),
            fresh: Cell::new(0),
            connections: Cell::new(0),
            draining: Cell::new(false),
            stats: Stats::default(),
            cache: RefCell::new(Cache::new(0)),
            flights: Flights::default(),
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

    /// Counts a request in flight until the guard drops.
    pub fn busy(&self) -> Busy<'_> {
        self.in_flight.set(self.in_flight.get() + 1);
        Busy(self)
    }

    /// Closes idle upstream connections past their keepalive_timeout, and
    /// those to servers the current config no longer has.
    fn expire_idle(&self) {
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

/// What a worker needs to start.
pub struct Start {
    pub id: usize,
    pub core: Option<core_affinity::CoreId>,
    pub config: Arc<Config>,
    /// This worker's listening sockets: (configured address, socket).
    pub listeners: Vec<(SocketAddr, std::net::TcpListener)>,
    pub access: Option<Arc<Mutex<Sink>>>,
    /// Active health verdicts of `config`.
    pub health: Arc<health::Table>,
    /// How many workers run: each holds `cache.size / workers` bytes.
    pub workers: usize,
    /// Closed by the control plane on SIGTERM/SIGINT.
    pub stop: async_channel::Receiver<()>,
    /// Reloads and scrapes.
    pub control: async_channel::Receiver<Control>,
    /// io_uring submission entries: `RING_ENTRIES`, or what fits the
    /// locked-memory limit.
    pub ring_entries: u32,
}

/// The event loop a worker runs on, for the start-up log.
pub struct Driver {
    /// The worker's id.
    pub worker: usize,
    /// `io_uring (COOP_TASKRUN)`, or what it fell back to.
    pub name: String,
    /// Why io_uring could not be set up, when the worker runs on epoll.
    pub uring_error: Option<std::io::Error>,
}

/// What a worker sends the control plane once its listeners accept.
pub type Ready = std::sync::mpsc::Sender<Result<Driver, String>>;

/// Runs a worker on the current thread until it has drained after a stop.
/// `ready` receives the driver once listeners are accepting.
pub fn run(start: Start, ready: Ready) {
    if let Some(core) = start.core {
        if !core_affinity::set_for_current(core) {
            crate::warn!("worker {}: could not pin to CPU {}", start.id, core.id);
        }
    }
    // A ring the kernel cannot allocate (ENOMEM: locked memory or the memory
    // cgroup) is tried again at a quarter of the size before epoll.
    let mut entries = start.ring_entries;
    let error = loop {
        match uring(entries) {
            Ok((mut rt, name)) => {
                let driver = Driver {
                    worker: start.id,
                    name,
                    uring_error: None,
                };
                rt.block_on(serve(start, ready, driver));
                return;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && entries > MIN_RING_ENTRIES => {
                entries = (entries / 4).max(MIN_RING_ENTRIES);
            }
            Err(e) => break e,
        }
    };
    let driver = Driver {
        worker: start.id,
        name: format!("legacy epoll: io_uring could not be set up ({error})"),
        uring_error: Some(error),
    };
    match RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
        Ok(mut rt) => rt.block_on(serve(start, ready, driver)),
        Err(e) => {
            // A closed receiver only means the control plane is already stopping.
            let _ = ready.send(Err(format!("no event loop could be built: {e}")));
        }
    }
}

type UringRuntime = monoio::Runtime<monoio::time::TimeDriver<IoUringDriver>>;

/// An io_uring runtime with `entries` submission entries, and its name for
/// the log: with COOP_TASKRUN, else without it (kernels before 5.19).
fn uring(entries: u32) -> std::io::Result<(UringRuntime, String)> {
    let size = match entries {
        RING_ENTRIES => String::new(),
        n => format!(", {n} entries"),
    };
    // COOP_TASKRUN: completions are run when the thread next enters the
    // kernel instead of interrupting it: +55-60% requests per CPU-second on
    // small requests in the prototype (see DEVELOPERS.md).
    //
    // DEFER_TASKRUN (+ SINGLE_ISSUER) measured 62.4-65.1k req/CPU-s against
    // 60.0-63.6k for COOP_TASKRUN alone (small64, alternated 3 times,
    // 2026-11-27), but it runs completions only when the ring is entered
    // with GETEVENTS, and monoio 0.2.4 submits without it while tasks are
    // still queued: one task that keeps waking itself would stall every
    // socket of the worker. Not used for ~4%.
    let coop = io_uring::IoUring::builder().setup_coop_taskrun().clone();
    let with_coop = RuntimeBuilder::<IoUringDriver>::new()
        .enable_timer()
        .with_entries(entries)
        .uring_builder(coop)
        .build();
    let e = match with_coop {
        Ok(rt) => return Ok((rt, format!("io_uring (COOP_TASKRUN{size})"))),
        Err(e) => e,
    };
    let plain = RuntimeBuilder::<IoUringDriver>::new()
        .enable_timer()
        .with_entries(entries)
        .build()?;
    Ok((plain, format!("io_uring without COOP_TASKRUN ({e}{size})")))
}

async fn serve(start: Start, ready: Ready, driver: Driver) {
    let shard = Rc::new(Shard::new(
        start.id,
        start.config.clone(),
        start.health.clone(),
        start.access,
    ));
    let share = start.config.cache.size / start.workers.max(1) as u64;
    *shard.cache.borrow_mut() = Cache::new(usize::try_from(share).unwrap_or(usize::MAX));
    let mut listeners = Vec::new();
    for (addr, socket) in start.listeners {
        match Accepting::start(&shard, addr, socket) {
            Ok(a) => listeners.push(a),
            Err(e) => {
                let _ = ready.send(Err(format!("listener {addr}: {e}")));
                return;
            }
        }
    }
    // The readiness line waits for this; a closed receiver only means the
    // control plane is already stopping.
    let _ = ready.send(Ok(driver));

    let housekeeping = {
        let shard = shard.clone();
        let stop = start.stop.clone();
        monoio::spawn(async move {
            let mut ticks = 0u32;
            loop {
                monoio::select! {
                    _ = monoio::time::sleep(TICK) => {}
                    _ = stop.recv() => break,
                }
                crate::timer::fire(Instant::now());
                ticks += 1;
                if ticks % 10 == 0 {
                    shard.access.flush();
                    shard.expire_idle();
                    if shard.in_flight.get() == 0 {
                        shard.relay.settle();
                    }
                }
            }
        })
    };

    // Messages until the stop channel closes.
    loop {
        monoio::select! {
            msg = start.control.recv() => match msg {
                Ok(Control::Reload(r)) => apply(&shard, &mut listeners, r),
                Ok(Control::Scrape(reply)) => {
                    // The admin thread may have given up waiting.
                    let _ = reply.send(shard.stats.snapshot(shard.connections.get()));
                }
                Err(_) => break,
            },
            _ = start.stop.recv() => break,
        }
    }

    shard.draining.set(true);
    shard.stop_tx.borrow_mut().take();
    for l in listeners {
        l.stop().await;
    }
    housekeeping.await;
    // In-flight requests finish (scrapes are still answered meanwhile), and
    // connections accepted just before the stop get FRESH_GRACE to send
    // their first request.
    let started = Instant::now();
    let deadline = started + shard.gen().config.runtime.shutdown_timeout;
    let waiting = |now: Instant| {
        shard.in_flight.get() > 0
            || shard.sessions.get() > 0
            || (shard.fresh.get() > 0 && now < started + FRESH_GRACE)
    };
    while waiting(Instant::now()) && Instant::now() < deadline {
        monoio::select! {
            _ = monoio::time::sleep(Duration::from_millis(10)) => {}
            msg = start.control.recv() => {
                if let Ok(Control::Scrape(reply)) = msg {
                    let _ = reply.send(shard.stats.snapshot(shard.connections.get()));
                }
            }
        }
    }
    shard.access.flush();
}

/// A listener and its accept task.
struct Accepting {
    configured: SocketAddr,
    stop: async_channel::Sender<()>,
    task: monoio::task::JoinHandle<()>,
}

impl Accepting {
    fn start(
        shard: &Rc<Shard>,
        configured: SocketAddr,
        socket: std::net::TcpListener,
    ) -> std::io::Result<Self> {
        // The bound port, which differs from the configured one for port 0.
        let port = socket.local_addr().map_or(configured.port(), |a| a.port());
        let listener = monoio::net::TcpListener::from_std(socket)?;
        let (stop, stopped) = async_channel::bounded(1);
        let listen = accept::Listen {
            configured,
            port,
            proto: "http",
        };
        let task = monoio::spawn(accept::run(listener, listen, shard.clone(), stopped));
        Ok(Accepting {
            configured,
            stop,
            task,
        })
    }

    /// Closes the listener: new connections to it are refused from now on.
    async fn stop(self) {
        self.stop.close();
        self.task.await;
    }
}

/// Applies a reload: new config for requests that start from now on,
/// listeners opened and closed, the access log retargeted. Connections and
/// requests under way are left alone.
fn apply(shard: &Rc<Shard>, listeners: &mut Vec<Accepting>, r: Reload) {
    shard.access.flush();
    shard.access.retarget(r.config.log.access_format, r.access);
    shard.install(r.config, r.health);
    let mut kept = Vec::with_capacity(listeners.len());
    for l in listeners.drain(..) {
        if r.close.contains(&l.configured) {
            monoio::spawn(l.stop());
        } else {
            kept.push(l);
        }
    }
    *listeners = kept;
    for (addr, socket) in r.open {
        match Accepting::start(shard, addr, socket) {
            Ok(a) => listeners.push(a),
            Err(e) => crate::error!("worker {}: cannot listen on {addr}: {e}", shard.id),
        }
    }
}

/// The address each listener of a worker is bound to.
pub fn listen_addrs(l: &[std::net::TcpListener]) -> Vec<SocketAddr> {
    l.iter().filter_map(|l| l.local_addr().ok()).collect()
}
