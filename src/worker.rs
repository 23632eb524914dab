//! The worker: one per core — a pinned thread running its own monoio
//! runtime on io_uring, owning a `Shard` of the proxy's state.
//!
//! Nothing in a `Shard` is shared with another worker: pools, balancer
//! positions, buffers and the access-log buffer are `Cell`/`RefCell`, so the
//! request path takes no lock and touches no other core's cache lines.

use std::{
    net::SocketAddr,
    rc::Rc,
    sync::{Arc, Mutex},
    time::Duration,
};

use monoio::{time::Instant, IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::{
    accept,
    cache::Cache,
    config::Config,
    control::{
        health,
        mailbox::{Control, Reload},
    },
    log::Sink,
    rlimit::MIN_RING_ENTRIES,
    shard::Shard,
    timer::TICK,
};

/// io_uring submission queue size per worker. Each connection has at most a
/// few ops in flight; 4096 entries leave room for thousands of connections
/// without `EBUSY` back-pressure from the ring. Smaller when the locked-memory
/// limit cannot hold it (`rlimit::ring_plan`).
pub const RING_ENTRIES: u32 = 4096;

/// The ring of provided buffers each io_uring worker registers: a plain
/// connection's wait for its next request receives into one of them
/// (`conn::idle`), so an idle connection holds no buffer and its request
/// needs no `recv(2)` after the wait. As nginx's `client_header_buffer_size`:
/// 1 KiB holds most heads whole; the rest of a longer one is read into the
/// request's own buffer. Every request that one wake-up reaps holds a buffer
/// until its task runs: 512 cover a thousand busy connections (128 left half
/// of their receives without one, perf/results/design-figures.md), and the
/// ring holds only as many as bursts have needed (`PROVIDED_FIRST`). When
/// they are all taken, the bytes are taken with a `recv`
/// (`conn::recv_unprovided`).
/// Their count, `rlimit::PROVIDED_BUFFERS`, is planned with the ring's size
/// (`rlimit::ring_plan`): the buffer ring's entries are locked memory too.
const PROVIDED_SIZE: u32 = 1024;

/// Provided buffers in the ring at start; each receive that finds them all
/// taken doubles them, up to the count registered. A worker whose
/// connections never have more receives complete at once than this keeps
/// these buffers' pages only (64 KiB, not 512).
const PROVIDED_FIRST: u16 = 64;

/// How long a graceful stop waits for connections accepted just before it
/// to send their first request (their bytes are usually already in flight;
/// without this wait they were reset when the worker exited).
const FRESH_GRACE: Duration = Duration::from_secs(1);

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
    /// Provided buffers to register with the ring (`rlimit::ring_plan`): 0
    /// where the locked-memory limit holds only the rings.
    pub provided_buffers: u16,
}

/// The event loop a worker runs on, for the start-up log.
pub struct Driver {
    /// The worker's id.
    pub worker: usize,
    /// `io_uring (DEFER_TASKRUN)`, or what it fell back to.
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
    let defer = std::env::var_os(TASKRUN_ENV).is_none_or(|v| v != "coop");
    let error = loop {
        match uring(entries, defer) {
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

/// Set to `coop` in the environment, the workers' rings are set up with
/// COOP_TASKRUN alone, not DEFER_TASKRUN first (tuning.md, "io_uring task
/// running").
const TASKRUN_ENV: &str = "RINGSIDE_TASKRUN";

/// An io_uring runtime with `entries` submission entries, and its name for
/// the log: with DEFER_TASKRUN when `defer` (Linux 6.1+), else COOP_TASKRUN
/// (5.19+), else without either.
fn uring(entries: u32, defer: bool) -> std::io::Result<(UringRuntime, String)> {
    let size = match entries {
        RING_ENTRIES => String::new(),
        n => format!(", {n} entries"),
    };
    // COOP_TASKRUN: completions are run when the thread next enters the
    // kernel instead of interrupting it.
    let mut coop = io_uring::IoUring::builder();
    coop.setup_coop_taskrun();
    // DEFER_TASKRUN (with the SINGLE_ISSUER it requires): the kernel posts
    // completions only when this thread enters the ring to get events, as a
    // batch. The vendored monoio gets events on every enter
    // (vendor/monoio/RINGSIDE.md); 0.2.4 as released did not while tasks were
    // queued, which on such a ring stalls the worker's sockets behind one
    // busy task. The ring is built here, on the worker's thread, the only one
    // that ever submits to it (the control plane's health checks run on
    // their own epoll runtime). The default: the batch saves the kernel work
    // of posting each completion as it comes (perf/results/2026-12-06-packets.md).
    let defer = defer.then(|| {
        let mut builder = io_uring::IoUring::builder();
        builder.setup_defer_taskrun().setup_single_issuer();
        ("DEFER_TASKRUN", builder)
    });
    let mut first = None;
    for (flags, builder) in defer.into_iter().chain([("COOP_TASKRUN", coop)]) {
        let built = RuntimeBuilder::<IoUringDriver>::new()
            .enable_timer()
            .with_entries(entries)
            .uring_builder(builder)
            .build();
        match built {
            Ok(rt) => return Ok((rt, format!("io_uring ({flags}{size})"))),
            // Too little locked memory is not cured by other flags: the
            // caller shrinks the ring.
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => return Err(e),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    let plain = RuntimeBuilder::<IoUringDriver>::new()
        .enable_timer()
        .with_entries(entries)
        .build()?;
    let e = first.map(|e| e.to_string()).unwrap_or_default();
    Ok((plain, format!("io_uring without COOP_TASKRUN ({e}{size})")))
}

/// Registers the worker's provided buffers on an io_uring runtime: `count`
/// of them, fewer if the kernel is short of locked memory all the same
/// (down to 64). Without any (false), every wait polls for readiness, as on
/// epoll, and the start-up line says why.
fn provide_buffers(driver: &mut Driver, mut count: u16) -> bool {
    if driver.uring_error.is_some() {
        return false;
    }
    if count == 0 {
        driver.name = format!(
            "{}; no provided buffers: RLIMIT_MEMLOCK holds only the rings",
            driver.name
        );
        return false;
    }
    loop {
        match monoio::buf::register_provided_buffers(count, PROVIDED_SIZE, PROVIDED_FIRST) {
            Ok(()) => return true,
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && count > 64 => count /= 2,
            Err(e) => {
                driver.name = format!("{}; no provided buffers: {e}", driver.name);
                return false;
            }
        }
    }
}

async fn serve(start: Start, ready: Ready, mut driver: Driver) {
    let provided = provide_buffers(&mut driver, start.provided_buffers);
    let mut shard = Shard::new(
        start.id,
        start.config.clone(),
        start.health.clone(),
        start.access,
        driver.uring_error.is_some(),
    );
    shard.provided = provided;
    let shard = Rc::new(shard);
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

    // Ticks until the drain below ends: deadlines (timeouts, HTTP/2's
    // closing GOAWAY) keep firing for the connections that finish then.
    let (drained, ticking) = async_channel::bounded::<()>(1);
    let housekeeping = monoio::spawn(housekeeping(shard.clone(), ticking));

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
    shard.notify_stop();
    for l in listeners {
        l.stop().await;
    }
    // In-flight requests finish (scrapes are still answered meanwhile), and
    // connections accepted just before the stop get FRESH_GRACE to send
    // their first request.
    let started = Instant::now();
    let deadline = started + shard.gen().config.runtime.shutdown_timeout;
    let waiting = |now: Instant| {
        shard.in_flight.get() > 0
            || shard.sessions.get() > 0
            || (shard.fresh_count() > 0 && now < started + FRESH_GRACE)
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
    drop(drained);
    housekeeping.await;
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
        let listen = crate::shard::Listen {
            configured,
            port,
            proto: "http",
            stat: shard.stats.label(&configured.to_string()),
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

/// Every `TICK`: deadlines and idle waits that are due. Every second: the
/// access log's buffer, idle upstream connections past their time, the
/// pools' unused buffers. Ends when `stop` closes.
async fn housekeeping(shard: Rc<Shard>, stop: async_channel::Receiver<()>) {
    let mut ticks = 0u32;
    loop {
        monoio::select! {
            _ = monoio::time::sleep(TICK) => {}
            _ = stop.recv() => break,
        }
        let now = Instant::now();
        crate::timer::fire(now);
        crate::idle::fire(now);
        ticks += 1;
        if ticks.is_multiple_of(10) {
            shard.access.flush();
            shard.expire_idle();
            shard.trim_pools();
            if shard.in_flight.get() == 0 {
                shard.relay.settle();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::Write;
    use std::rc::Rc;
    use std::time::Duration;

    /// On either of the worker's rings (COOP_TASKRUN or DEFER_TASKRUN), a task
    /// that wakes itself on every poll keeps the runtime from parking; a
    /// read armed before its bytes arrive must still complete meanwhile.
    /// With monoio 0.2.4 as released it did not, for two reasons: the busy
    /// task was put back at the front of the queue, and the ring was entered
    /// without asking for completions (vendor/monoio/RINGSIDE.md).
    #[test]
    fn a_task_that_never_sleeps_does_not_stall_the_rings_completions() {
        for (defer, flags) in [(true, "DEFER_TASKRUN"), (false, "COOP_TASKRUN")] {
            self_waking_task_beside_a_read(defer, flags);
        }
    }

    fn self_waking_task_beside_a_read(defer: bool, flags: &str) {
        let (mut rt, name) = super::uring(64, defer).expect("an io_uring runtime");
        // Kernels before 6.1 (DEFER_TASKRUN) and 5.19 (COOP_TASKRUN) fall back.
        assert!(name.starts_with("io_uring ("), "{name}");
        if !name.contains(flags) {
            eprintln!("{flags} not set up here: {name}");
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let turns_left = rt.block_on(async move {
            let read = Rc::new(Cell::new(false));
            let done = read.clone();
            let busy = monoio::spawn(async move {
                let mut turns = 200_000u32;
                while !read.get() && turns > 0 {
                    turns -= 1;
                    // By now the read below has been submitted and waits.
                    if turns == 199_900 {
                        client.write_all(b"ping").unwrap();
                    }
                    yield_once().await;
                }
                turns
            });
            let mut stream = monoio::net::TcpStream::from_std(server).unwrap();
            let (n, buf) =
                monoio::io::AsyncReadRent::read(&mut stream, Vec::with_capacity(8)).await;
            assert_eq!((n.unwrap(), &buf[..]), (4, &b"ping"[..]));
            done.set(true);
            busy.await
        });
        assert!(turns_left > 0, "the read waited for the busy task ({name})");
    }

    /// The worker's ring of provided buffers (vendor/monoio,
    /// `driver/provided.rs`): bytes come in one of its buffers, an empty
    /// ring answers ENOBUFS (the connection then waits for readiness), and
    /// no buffer is ever lost: it comes back when its bytes are dropped,
    /// when a receive that completed is dropped unpolled, and when a receive
    /// dropped in flight completes after all.
    #[test]
    fn provided_buffers_run_out_and_every_one_comes_back() {
        let (mut rt, name) = super::uring(64, false).expect("an io_uring runtime");
        assert!(name.starts_with("io_uring ("), "{name}");
        let (mut clients, servers) = connected(4);
        rt.block_on(async move {
            monoio::buf::register_provided_buffers(2, 64, 2).expect("a buffer ring (Linux 5.19+)");
            let s = each_sent_a_request(servers, &mut clients);
            // Two buffers: two receives get their bytes, the third none.
            let a = s[0].recv_provided().await.unwrap();
            let b = s[1].recv_provided().await.unwrap();
            assert_eq!((&a[..], &b[..]), (&b"request 0"[..], &b"request 1"[..]));
            let none = s[2].recv_provided().await.err().expect("an empty ring");
            assert_eq!(none.raw_os_error(), Some(libc::ENOBUFS));
            drop(a);
            let c = s[2].recv_provided().await.unwrap();
            assert_eq!(&c[..], b"request 2");
            drop((b, c));

            // Completed (the sleep reaps it), then dropped unpolled: twice,
            // as many as there are buffers.
            let r = s[3].recv_provided();
            monoio::time::sleep(Duration::from_millis(10)).await;
            drop(r);
            clients[0].write_all(b"again").unwrap();
            let r = s[0].recv_provided();
            monoio::time::sleep(Duration::from_millis(10)).await;
            drop(r);
            assert_both_buffers_free(&s, &mut clients).await;

            // Armed with no bytes, the bytes come, and it is dropped with
            // their completion or its cancel on the way (either may win).
            let r = s[2].recv_provided();
            monoio::time::sleep(Duration::from_millis(10)).await;
            clients[2].write_all(b"late").unwrap();
            drop(r);
            monoio::time::sleep(Duration::from_millis(10)).await;
            assert_both_buffers_free(&s, &mut clients).await;

            // The peer's end of stream reads empty; a buffer the kernel
            // picked for it, if any, comes back.
            drop(clients.remove(3));
            let end = s[3].recv_provided().await.unwrap();
            assert!(end.is_empty());
            assert_both_buffers_free(&s, &mut clients).await;
        });
    }

    /// A ring registered with fewer buffers in it than it may hold doubles
    /// them when receives find it empty (once for all those reaped
    /// together), and stops at its count.
    #[test]
    fn an_empty_provided_ring_grows_up_to_its_count() {
        let (mut rt, _) = super::uring(64, false).expect("an io_uring runtime");
        let (mut clients, servers) = connected(5);
        rt.block_on(async move {
            monoio::buf::register_provided_buffers(4, 64, 1).expect("a buffer ring");
            let s = each_sent_a_request(servers, &mut clients);
            let enobufs = |r: std::io::Result<monoio::buf::ProvidedBuf>| {
                r.err().and_then(|e| e.raw_os_error()) == Some(libc::ENOBUFS)
            };
            // One buffer at first; then two, however many receives found
            // it empty at once; then four.
            let a = s[0].recv_provided().await.unwrap();
            let (x, y) = monoio::join!(s[1].recv_provided(), s[2].recv_provided());
            assert!(enobufs(x) && enobufs(y), "one buffer at first");
            let b = s[1].recv_provided().await.unwrap();
            assert!(enobufs(s[2].recv_provided().await), "two after one miss");
            let c = s[2].recv_provided().await.unwrap();
            let d = s[3].recv_provided().await.unwrap();
            assert_eq!(&d[..], b"request 3");
            // All four taken: the ring stays at its count.
            assert!(enobufs(s[4].recv_provided().await), "four at most");
            assert!(enobufs(s[4].recv_provided().await), "still four");
            drop(a);
            let e = s[4].recv_provided().await.unwrap();
            assert_eq!(
                (&b[..], &c[..], &e[..]),
                (&b"request 1"[..], &b"request 2"[..], &b"request 4"[..])
            );
        });
    }

    /// `n` connected pairs on 127.0.0.1: the clients' ends and the
    /// accepted ends.
    fn connected(n: usize) -> (Vec<std::net::TcpStream>, Vec<std::net::TcpStream>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let clients: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap())
            .collect();
        let servers = (0..n).map(|_| listener.accept().unwrap().0).collect();
        (clients, servers)
    }

    /// The accepted ends as monoio streams (inside the runtime), once each
    /// client has sent "request {i}".
    fn each_sent_a_request(
        servers: Vec<std::net::TcpStream>,
        clients: &mut [std::net::TcpStream],
    ) -> Vec<monoio::net::TcpStream> {
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(format!("request {i}").as_bytes()).unwrap();
        }
        servers
            .into_iter()
            .map(|s| monoio::net::TcpStream::from_std(s).unwrap())
            .collect()
    }

    /// Two receives at once each get a buffer of the ring of two.
    async fn assert_both_buffers_free(
        s: &[monoio::net::TcpStream],
        clients: &mut [std::net::TcpStream],
    ) {
        clients[0].write_all(b"x").unwrap();
        clients[1].write_all(b"y").unwrap();
        let x = s[0].recv_provided().await.expect("a first free buffer");
        let y = s[1].recv_provided().await.expect("a second free buffer");
        assert_eq!((&x[..], &y[..]), (&b"x"[..], &b"y"[..]));
    }

    /// On epoll there is no ring: the receive says so at once, and the
    /// connection waits for readiness instead.
    #[test]
    fn without_io_uring_a_provided_receive_is_unsupported() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let server = listener.accept().unwrap().0;
        rt.block_on(async move {
            let register = monoio::buf::register_provided_buffers(2, 64, 2).unwrap_err();
            assert_eq!(register.kind(), std::io::ErrorKind::Unsupported);
            let s = monoio::net::TcpStream::from_std(server).unwrap();
            let e = s.recv_provided().await.err().unwrap();
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
        });
    }

    /// Wakes its task at once and yields once: the task stays queued.
    async fn yield_once() {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if std::mem::replace(&mut yielded, true) {
                return std::task::Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        })
        .await
    }
}
