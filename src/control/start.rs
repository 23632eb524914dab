//! Process start and stop.
#![forbid(unsafe_code)]

use std::{
    net::{SocketAddr, TcpListener},
    os::unix::net::UnixStream,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1},
    iterator::Signals,
};

use super::{admin, listeners, privdrop, reload::Running, systemd};
use crate::{
    config::{self, Config},
    control::{
        handoff::{self, Passed},
        mailbox::Control,
    },
    log::{self, Sink},
    rlimit, worker,
};

/// `--check`: prints `FILE: ok` and returns 0, or every problem and 1.
/// Warnings (an expired certificate) go to stderr and leave it a success.
pub fn check(path: &Path) -> i32 {
    match load(path) {
        Ok((_, warnings)) => {
            if !warnings.list.is_empty() {
                eprintln!("{warnings}");
            }
            println!("{}: ok", path.display());
            0
        }
        Err(problems) => {
            eprintln!("{problems}");
            1
        }
    }
}

/// Runs the proxy until SIGTERM/SIGINT; returns the exit code.
pub fn run(path: &Path, upgrade: Option<&Path>) -> i32 {
    let (config, warnings) = match load(path) {
        Ok((c, w)) => (Arc::new(c), w),
        Err(problems) => {
            eprintln!("{problems}");
            return 1;
        }
    };
    // Nothing is bound or started for a `user` that cannot be switched to.
    if let Err(e) = privdrop::precheck(config.runtime.account.as_ref()) {
        eprintln!("ringside: {e}");
        return 1;
    }
    match start(path, upgrade, config, &warnings) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringside: {e}");
            1
        }
    }
}

/// Logs each warning of a config that is about to run, one line each.
pub(super) fn log_warnings(warnings: &config::Warnings) {
    for w in &warnings.list {
        let (file, line, key, message) = (warnings.file.display(), w.line, &w.key, &w.message);
        crate::warn!("{file}:{line}: warning: {key}: {message}");
    }
}

/// The contract's file, with every TLS listener's certificates and keys
/// read (at start and on each reload), and its warnings.
pub(crate) fn load(path: &Path) -> Result<(Config, config::Warnings), config::Problems> {
    let (mut config, warnings) = config::load(path)?;
    crate::tls::attach(&mut config).map_err(|list| config::Problems {
        file: path.to_path_buf(),
        list: list
            .into_iter()
            .map(|(key, message)| config::Problem {
                line: 0,
                key,
                message,
            })
            .collect(),
    })?;
    Ok((config, warnings))
}

/// The steps of a start, in order; each may fail the start with a line for
/// stderr. Returns once the workers have drained after SIGTERM/SIGINT.
fn start(
    path: &Path,
    upgrade: Option<&Path>,
    config: Arc<Config>,
    warnings: &config::Warnings,
) -> Result<i32, String> {
    log::init_error_log(&config.log.error, config.log.level)
        .map_err(|e| format!("cannot open the error log: {e}"))?;
    log_warnings(warnings);
    // Every connection is a descriptor, and many kernels charge io_uring
    // rings to locked memory: take what the hard limits allow.
    for line in rlimit::raise_at_start() {
        crate::info!("{line}");
    }
    // Registered before any worker exists, so no signal finds the default
    // disposition (which would kill the process on SIGHUP).
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (cores, workers) = worker_cores(&config);
    let (inherited, link) = take_over(upgrade)?;
    let bound = bind(&config, workers, inherited, link.is_some())?;
    let access = Sink::open(&config.log.access)
        .map_err(|e| format!("cannot open the access log: {e}"))?
        .map(|s| Arc::new(Mutex::new(s)));
    // Everything that needs root is done: switch before any thread starts.
    if let Some(account) = &config.runtime.account {
        crate::info!("{}", privdrop::switch(account, &config)?);
    }
    // Active health checks run once per process until `checks` drops.
    let checks = super::health::Checks::start(&config)
        .map_err(|e| format!("cannot start the health checks: {e}"))?;
    // Automatic certificates: ordered and renewed on their own thread.
    let acme = crate::acme::Manager::start(&config)?;
    // Closed on SIGTERM/SIGINT; every worker drains when it closes.
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let spawn = Spawn {
        config: &config,
        cores: &cores,
        workers,
        access: &access,
        health: &checks.table(),
        stop: &stop_rx,
    };
    let Workers { threads, senders } = spawn_workers(spawn, bound.per_worker)?;
    let mut running = Running {
        path: path.to_path_buf(),
        config: Arc::new(Mutex::new(config.clone())),
        workers: senders,
        access,
        kept: bound.kept.clone(),
        health: Arc::new(Mutex::new(checks.table())),
        checks,
        acme,
    };
    let draining = Arc::new(AtomicBool::new(false));
    if let Some(l) = bound.admin {
        spawn_admin(l, &running, &draining)?;
    }
    let list: Vec<String> = bound.addresses.iter().map(ToString::to_string).collect();
    // The contract's readiness line: always stderr, whatever [log] says.
    eprintln!("ringside ready: listening on {}", list.join(", "));
    systemd::ready(link.is_some());
    if let Some(p) = upgrade {
        serve_upgrade(p, link, &bound.kept)?;
    }
    wait_for_stop(&mut signals, &mut running);
    systemd::stopping();
    draining.store(true, Ordering::Relaxed);
    drain(&running, &bound.kept, &stop_tx, &threads);
    Ok(0)
}

/// The CPUs of the affinity mask the process started with (taskset,
/// cpuset), and how many workers run: `runtime.workers`, or one per CPU.
fn worker_cores(config: &Config) -> (Vec<core_affinity::CoreId>, usize) {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let workers = match config.runtime.workers {
        0 => cores.len().max(1),
        n => n,
    };
    (cores, workers)
}

/// A binary upgrade: the running process's sockets, taken before anything
/// binds, and the link to that process (none when it was not running).
fn take_over(upgrade: Option<&Path>) -> Result<(Vec<Passed>, Option<UnixStream>), String> {
    match upgrade {
        Some(p) => match handoff::take_over(p) {
            Ok(Some((sockets, link))) => Ok((sockets, Some(link))),
            Ok(None) => Ok((Vec::new(), None)),
            Err(e) => Err(format!("binary upgrade from {}: {e}", p.display())),
        },
        None => Ok((Vec::new(), None)),
    }
}

/// Every listening socket of the process, bound before any thread runs.
struct Bound {
    /// Each worker's `[[listen]]` sockets.
    per_worker: listeners::PerWorker,
    /// The addresses for the readiness line: listeners, then admin.
    addresses: Vec<SocketAddr>,
    /// Copies of every socket, for the next hand-off.
    kept: listeners::Kept,
    admin: Option<TcpListener>,
}

/// Binds every worker's listeners here, so a clash fails the start with a
/// clear line before any thread runs. Port 0 is resolved by the first bind
/// and reused for the other workers' sockets. Inherited sockets the config
/// has no listener for close here.
fn bind(
    config: &Config,
    workers: usize,
    mut inherited: Vec<Passed>,
    upgrading: bool,
) -> Result<Bound, String> {
    let kept: listeners::Kept = Arc::default();
    let mut addresses: Vec<SocketAddr> = Vec::new();
    let mut per_worker: listeners::PerWorker = (0..workers).map(|_| Vec::new()).collect();
    for l in &config.listeners {
        addresses.push(listeners::bind_one(
            l.address,
            &mut per_worker,
            &mut inherited,
            &kept,
        )?);
    }
    drop(inherited);
    listeners::defer(&kept, &config.listeners)?;
    let admin = match &config.admin {
        Some(a) => {
            let l = listeners::bind_admin(a.address, upgrading)?;
            addresses.push(l.local_addr().map_err(|e| e.to_string())?);
            Some(l)
        }
        None => None,
    };
    Ok(Bound {
        per_worker,
        addresses,
        kept,
        admin,
    })
}

/// What every worker thread shares at start.
struct Spawn<'a> {
    config: &'a Arc<Config>,
    cores: &'a [core_affinity::CoreId],
    workers: usize,
    access: &'a Option<Arc<Mutex<Sink>>>,
    health: &'a Arc<super::health::Table>,
    stop: &'a async_channel::Receiver<()>,
}

/// The worker threads, once every one accepts.
struct Workers {
    threads: Vec<JoinHandle<()>>,
    /// Each worker's control channel (reloads, scrapes).
    senders: Vec<async_channel::Sender<Control>>,
}

/// Starts one thread per worker, each pinned to a CPU of the mask in turn,
/// and waits until every one accepts (or one fails).
fn spawn_workers(spawn: Spawn<'_>, per_worker: listeners::PerWorker) -> Result<Workers, String> {
    let workers = spawn.workers;
    let charged = rlimit::rings_use_memlock();
    let memlock = rlimit::get(rlimit::Resource::Memlock).ok();
    let (ring_entries, provided_buffers) = rlimit::ring_plan(
        worker::RING_ENTRIES,
        workers,
        memlock.map_or(u64::MAX, |l| l.soft),
        charged,
    );
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(workers);
    let mut senders = Vec::with_capacity(workers);
    let cores = spawn.cores;
    for (id, listeners) in per_worker.into_iter().enumerate() {
        let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        let (control_tx, control_rx) = async_channel::unbounded();
        senders.push(control_tx);
        let start = worker::Start {
            id,
            core,
            config: spawn.config.clone(),
            listeners,
            access: spawn.access.clone(),
            health: spawn.health.clone(),
            workers,
            stop: spawn.stop.clone(),
            control: control_rx,
            ring_entries,
            provided_buffers,
        };
        let ready = ready_tx.clone();
        let t = thread::Builder::new()
            .name(format!("ringside-w{id}"))
            .spawn(move || worker::run(start, ready))
            .map_err(|e| format!("cannot start worker {id}: {e}"))?;
        threads.push(t);
    }
    drop(ready_tx);
    let mut drivers = Vec::with_capacity(workers);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(driver)) => drivers.push(driver),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a worker stopped during start".into()),
        }
    }
    log_drivers(&drivers, charged, memlock);
    Ok(Workers { threads, senders })
}

/// Starts the admin listener's thread, sharing the running config, the
/// workers' channels and the health verdicts.
fn spawn_admin(
    listener: TcpListener,
    running: &Running,
    draining: &Arc<AtomicBool>,
) -> Result<(), String> {
    let shared = admin::Shared {
        workers: running.workers.clone(),
        config: running.config.clone(),
        health: running.health.clone(),
        draining: draining.clone(),
    };
    admin::spawn(listener, shared).map_err(|e| format!("cannot start the admin listener: {e}"))
}

/// With `--upgrade-socket`: tells the process this one took over from (if
/// any) that it serves, then listens on the socket for the next upgrade;
/// once a next process has taken the listeners, this one drains as on
/// SIGTERM. A socket that cannot be made is logged and the start goes on.
fn serve_upgrade(
    path: &Path,
    link: Option<UnixStream>,
    kept: &listeners::Kept,
) -> Result<(), String> {
    let listener = match link {
        Some(link) => handoff::finish(link, path),
        None => handoff::bind(path),
    };
    match listener {
        Ok(l) => {
            let (p, kept) = (path.to_path_buf(), kept.clone());
            thread::Builder::new()
                .name("ringside-upgrade".into())
                .spawn(move || {
                    handoff::serve(l, p, || listeners::copies(&kept));
                    // The new process serves: drain and exit as on SIGTERM.
                    if let Err(e) = signal_hook::low_level::raise(SIGTERM) {
                        crate::error!("binary upgrade: cannot start draining: {e}");
                    }
                })
                .map_err(|e| format!("cannot start the upgrade listener: {e}"))?;
        }
        Err(e) => crate::error!("binary upgrade socket {}: {e}", path.display()),
    }
    Ok(())
}

/// The signal loop: SIGHUP reloads, SIGUSR1 reopens the logs; returns on
/// SIGTERM or SIGINT.
fn wait_for_stop(signals: &mut Signals, running: &mut Running) {
    for sig in signals.forever() {
        match sig {
            SIGTERM | SIGINT => break,
            SIGHUP => {
                systemd::reloading();
                running.reload();
                systemd::ready(false);
            }
            SIGUSR1 => running.reopen_logs(),
            _ => {}
        }
    }
}

/// Stops accepting and waits for the workers to drain, up to
/// `shutdown_timeout` and a second more.
fn drain(
    running: &Running,
    kept: &listeners::Kept,
    stop: &async_channel::Sender<()>,
    threads: &[JoinHandle<()>],
) {
    let timeout = running.current().runtime.shutdown_timeout;
    crate::info!("stop signal: draining (up to {timeout:?})");
    // Close the copies kept for a hand-off too: once the workers' sockets
    // close, new connections must be refused.
    if let Ok(mut k) = kept.lock() {
        k.clear();
    }
    stop.close();
    let deadline = Instant::now() + timeout + Duration::from_secs(1);
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
}

/// Logs the workers' event loops: one line when they all run on the same
/// one (the usual case, and the usual failure: every worker's io_uring fails
/// for the same reason), which then says why io_uring could not be set up
/// and what to change.
fn log_drivers(drivers: &[worker::Driver], charged: bool, memlock: Option<rlimit::Limit>) {
    let Some(first) = drivers.first() else { return };
    let line = |who: &str, d: &worker::Driver| match &d.uring_error {
        None if d.name.starts_with("io_uring (") => {
            crate::info!("{who}: event loop on {}", d.name);
        }
        None => crate::warn!("{who}: event loop on {}", d.name),
        Some(e) => {
            let why = rlimit::explain_uring_error(e, charged, memlock);
            crate::warn!("{who}: event loop on {}; {why}", d.name);
        }
    };
    if drivers.iter().all(|d| d.name == first.name) {
        let who = match drivers.len() {
            1 => "1 worker".to_string(),
            n => format!("{n} workers"),
        };
        line(&who, first);
    } else {
        for d in drivers {
            line(&format!("worker {}", d.worker), d);
        }
    }
}
