//! Stage 1, accept: the listeners. Every worker has its own SO_REUSEPORT socket per
//! `[[listen]]`, so the kernel spreads new connections across workers and no
//! accept is ever shared between cores.

use std::{io, net::SocketAddr, os::fd::AsRawFd, rc::Rc, time::Duration};

use monoio::{io::Canceller, net::TcpListener};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    conn,
    shard::{Listen, Shard},
};

/// Listen backlog. The kernel caps it at `net.core.somaxconn` (4096 by
/// default since Linux 5.4); see tuning.md for raising both.
const BACKLOG: i32 = 65535;

/// Binds one SO_REUSEPORT listener. Port 0 is resolved by the first bind;
/// the caller passes the bound address for the sockets of other workers.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    // Accepted sockets inherit TCP_NODELAY: responses go out as soon as
    // they are written.
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    // Nor does the kernel acknowledge a new connection's first request on
    // its own: the ACK goes out with the response, one packet less per
    // connection for both ends (HAProxy's `tcp-smart-accept`); an answer
    // that takes longer than the delayed-ACK timeout gets it then. After
    // `listen`, which resets the socket's ACK state.
    socket.set_quickack(false)?;
    Ok(socket.into())
}

/// A listener's `defer_accept`: on, the kernel completes a new connection's
/// accept only once its first bytes are in (`TCP_DEFER_ACCEPT`, nginx's
/// `deferred`), so the connection's first receive finds its request there
/// instead of waiting for it through the ring. A client that stays silent
/// is accepted after one SYN-ACK retransmission (about a second), and its
/// `client_header_timeout` runs from then. Set on a bound socket, at
/// start and on every reload (reload can turn it either way).
pub fn defer(listener: &std::net::TcpListener, on: bool) -> io::Result<()> {
    // The kernel rounds seconds up to SYN-ACK retransmissions: 1 is one.
    let secs: libc::c_int = on.into();
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a pointer
    // to a local int that outlives the call; the fd is the listener's own,
    // open while it is borrowed.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Accepts until the stop channel closes, then drops the listener so new
/// connections are refused.
pub async fn run(
    listener: TcpListener,
    listen: Listen,
    shard: Rc<Shard>,
    stop: async_channel::Receiver<()>,
) {
    let listen = Rc::new(listen);
    let canceller = Canceller::new();
    let mut room = crate::idle::Room::default();
    let mut burst = Burst::default();
    // One stop future for the listener's life: once registered it stays
    // registered, instead of a new wait on the channel for every accept.
    let mut stopped = std::pin::pin!(stop.recv());
    loop {
        // At `max_connections`, close the longest-idle keep-alive
        // connection to admit the next one (as nginx); with none idle, new
        // connections wait in the backlog.
        let max = shard.gen().config.limits.max_connections;
        while max > 0 && shard.connections.get() >= max {
            room.make(shard.connections.get(), listener.as_raw_fd());
            monoio::select! {
                _ = monoio::time::sleep(Duration::from_millis(5)) => {}
                _ = &mut stopped => return,
            }
        }
        let mut accept = std::pin::pin!(listener.cancelable_accept(canceller.handle()));
        let accepted = monoio::select! {
            r = &mut accept => r,
            _ = &mut stopped => {
                // Cancel, then take what the op returns: a connection the
                // kernel handed over meanwhile is served, not reset.
                let _ = canceller.cancel();
                if let Ok((stream, peer)) = accept.await {
                    monoio::spawn(conn::serve(stream, peer, listen, shard));
                }
                return;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                monoio::spawn(conn::serve(stream, peer, listen.clone(), shard.clone()));
                if burst.due() {
                    burst.took(take_waiting(&listener, &listen, &shard, max));
                }
            }
            Err(e) => {
                // The connection stays in the backlog; waiting keeps the
                // loop from spinning on an error that repeats at once.
                let wait =
                    ACCEPT_FAILURES.with(|f| f.failed(shard.id, &e, std::time::Instant::now()));
                monoio::select! {
                    _ = monoio::time::sleep(wait) => {}
                    _ = &mut stopped => return,
                }
                continue;
            }
        }
        ACCEPT_FAILURES.with(Failures::accepted);
    }
}

/// Most connections taken from the backlog per wake-up, after the one the
/// ring's accept returned: a burst is served in one turn of the loop
/// without starving the worker's other tasks.
const TAKE_MAX: usize = 64;

/// When to look for more connections after the ring's accept. Taking them
/// pays while a burst waits in the backlog (the worker was busy or
/// throttled); when connections come one at a time it costs a system call
/// that finds nothing, and takes connections before their first bytes have
/// arrived. So after a look that finds nothing, the next looks come only
/// after 1, 2, 4, ... up to `QUIET_MAX` accepts; one that finds some makes
/// every accept look again.
#[derive(Default)]
struct Burst {
    /// Accepts left before the next look.
    skip: u32,
    /// The gap after the last look that found nothing.
    gap: u32,
}

const QUIET_MAX: u32 = 64;

impl Burst {
    fn due(&mut self) -> bool {
        match self.skip {
            0 => true,
            _ => {
                self.skip -= 1;
                false
            }
        }
    }

    fn took(&mut self, n: usize) {
        self.gap = match n {
            0 => (self.gap * 2).clamp(1, QUIET_MAX),
            _ => 0,
        };
        self.skip = self.gap;
    }
}

/// Takes the connections already waiting in the backlog (as nginx's
/// `multi_accept`): one non-blocking `accept4` each, until the backlog is
/// empty, `TAKE_MAX` is reached or `max` (`max_connections`) is. The ring's accept
/// costs a round trip through the event loop per connection; these cost
/// one system call each, plus one that finds the backlog empty. A failure
/// ends the turn: the ring's next accept meets it and backs off.
fn take_waiting(
    listener: &TcpListener,
    listen: &Rc<Listen>,
    shard: &Rc<Shard>,
    max: usize,
) -> usize {
    // SAFETY: the listener's fd stays open for this borrow, which ends
    // with this function; the listener is only read through it.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(listener.as_raw_fd()) };
    let socket = socket2::SockRef::from(&fd);
    for taken in 0..TAKE_MAX {
        if max > 0 && shard.connections.get() >= max {
            return taken;
        }
        // accept4 with SOCK_CLOEXEC; the listener is non-blocking, so an
        // empty backlog answers EAGAIN at once.
        let Ok((socket, peer)) = socket.accept() else {
            return taken;
        };
        let Some(peer) = peer.as_socket() else {
            continue;
        };
        // io_uring's reads and writes need a blocking socket (a
        // non-blocking one answers EAGAIN instead of waiting); epoll's
        // need a non-blocking one. Accepted sockets start blocking.
        if shard.epoll && socket.set_nonblocking(true).is_err() {
            continue;
        }
        let Ok(stream) = monoio::net::TcpStream::from_std(socket.into()) else {
            continue;
        };
        monoio::spawn(conn::serve(stream, peer, listen.clone(), shard.clone()));
    }
    TAKE_MAX
}

/// Shortest and longest wait after a failed accept. A lack of descriptors
/// (EMFILE, ENFILE) or memory lasts until connections close, so the wait
/// doubles up to `ACCEPT_BACKOFF_MAX`: a new connection waits at most that
/// long once a descriptor is free again.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// At most one accept-failure line per worker per this interval; the next
/// line says how many were left out.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    /// This worker's accept failures (one worker per thread), across its
    /// listeners.
    static ACCEPT_FAILURES: Failures = const { Failures::new() };
}

/// Rate limit and back-off for one worker's failed accepts.
struct Failures {
    /// When the last line was logged.
    logged: std::cell::Cell<Option<std::time::Instant>>,
    /// Failures since then that were not logged.
    suppressed: std::cell::Cell<u64>,
    /// The wait after the next failure; reset by a successful accept.
    backoff: std::cell::Cell<Duration>,
}

impl Failures {
    const fn new() -> Self {
        Failures {
            logged: std::cell::Cell::new(None),
            suppressed: std::cell::Cell::new(0),
            backoff: std::cell::Cell::new(ACCEPT_BACKOFF_MIN),
        }
    }

    /// Counts a failure, logs it if a line is due, and says how long to
    /// wait before the next accept.
    fn failed(&self, worker: usize, e: &io::Error, now: std::time::Instant) -> Duration {
        let due = self
            .logged
            .get()
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_LOG_EVERY);
        if due {
            let why =
                crate::rlimit::explain_accept_error(e).map_or(String::new(), |w| format!(": {w}"));
            let left_out = match self.suppressed.replace(0) {
                0 => String::new(),
                n => format!(" ({n} more failures not logged)"),
            };
            crate::error!("worker {worker}: accept failed: {e}{why}{left_out}");
            self.logged.set(Some(now));
        } else {
            self.suppressed.set(self.suppressed.get() + 1);
        }
        let wait = self.backoff.get();
        self.backoff.set((wait * 2).min(ACCEPT_BACKOFF_MAX));
        wait
    }

    fn accepted(&self) {
        self.backoff.set(ACCEPT_BACKOFF_MIN);
    }
}

#[cfg(test)]
mod tests {
    /// A listener leaves the first request's ACK to the response: its
    /// accepted sockets start out of quick-ACK mode, which `listen` would
    /// reset if it came after.
    #[test]
    fn a_listener_does_not_acknowledge_requests_on_its_own() {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let quick = socket2::SockRef::from(&listener).quickack().unwrap();
        assert!(!quick, "TCP_QUICKACK is on");
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(!socket2::SockRef::from(&accepted).quickack().unwrap());
        drop(client);
    }

    /// `defer` turns TCP_DEFER_ACCEPT on (one retransmission, read back as
    /// one second) and off again on a bound listener.
    #[test]
    fn defer_turns_the_deferred_accept_on_and_off() {
        use std::os::fd::AsRawFd;
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let read = || {
            let (mut v, mut len) = (-1 as libc::c_int, 4 as libc::socklen_t);
            // SAFETY: getsockopt writes at most `len` (4) bytes into the
            // local int it is given; the fd is the listener's, open here.
            let rc = unsafe {
                libc::getsockopt(
                    listener.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_DEFER_ACCEPT,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0);
            v
        };
        assert_eq!(read(), 0);
        super::defer(&listener, true).unwrap();
        assert_eq!(read(), 1);
        super::defer(&listener, false).unwrap();
        assert_eq!(read(), 0);
    }
}
