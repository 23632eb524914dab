//! Stage 1, accept, at the limit: the worker's idle client connections, longest-idle
//! first, so that `accept` can close one to admit a new client when
//! `max_connections` is reached (as nginx does) instead of leaving the new
//! one in the backlog until some keep-alive timeout passes.
//!
//! Listed: an HTTP/1.1 connection (plain or TLS) while it waits for its next
//! request (`conn::idle`, not before its first one: a client does not retry
//! a request on a fresh connection that closes), and an HTTP/2 connection
//! while it has no open stream (its GOAWAY tells the client what to retry).
//! A connection in the middle of a request is never listed.
//!
//! The registry is the worker thread's own (a thread-local, as `timer`'s
//! slab): a slab of nodes linked in the order they went idle, so listing,
//! unlisting and evicting are O(1) and allocate nothing once the slab has
//! grown to the worker's peak of connections.
//!
//! A connection's wait for its next request (`Until`) keeps its deadline in
//! its own node, as a tick count, rather than in a `timer` slot beside it:
//! an idle connection then costs one 32-byte node. `fire` ends the waits
//! whose time has come, on the worker's tick, as `timer::fire` does.

use std::{
    cell::RefCell,
    future::Future,
    os::fd::RawFd,
    pin::Pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use monoio::time::Instant;

use crate::timer;

/// No node: the end of the list, or an entry that holds no slot.
const NONE: u32 = u32::MAX;

/// A node's `at` when it has no deadline (an HTTP/2 connection's entry, a
/// free node): past every tick `fire` sees.
const NEVER: u32 = u32::MAX;

struct Node {
    prev: u32,
    next: u32,
    /// The tick (`timer::TICK`s since `EPOCH`) from which the wait is over.
    at: u32,
    listed: bool,
    /// Set by `evict_longest`, taken by the connection.
    evicted: bool,
    /// Set by `fire` once `at` has passed.
    fired: bool,
    waker: Option<Waker>,
}

struct Registry {
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// The longest-idle listed node, and the most recent.
    head: u32,
    tail: u32,
}

impl Registry {
    fn unlink(&mut self, key: u32) {
        let n = &mut self.nodes[key as usize];
        if !n.listed {
            return;
        }
        n.listed = false;
        let (prev, next) = (n.prev, n.next);
        match prev {
            NONE => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NONE => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push(&mut self, key: u32) {
        let tail = self.tail;
        let n = &mut self.nodes[key as usize];
        if n.listed {
            return;
        }
        n.listed = true;
        n.prev = tail;
        n.next = NONE;
        match tail {
            NONE => self.head = key,
            t => self.nodes[t as usize].next = key,
        }
        self.tail = key;
    }
}

thread_local! {
    static IDLE: RefCell<Registry> = const {
        RefCell::new(Registry { nodes: Vec::new(), free: Vec::new(), head: NONE, tail: NONE })
    };
    /// Tick 0 of the thread's deadlines.
    static EPOCH: Instant = Instant::now();
}

/// `t` in ticks since `EPOCH`, rounded up for a deadline (a wait never
/// ends early) and down for the time now; an instant beyond `u32` ticks
/// (13 years) is `NEVER - 1`.
fn ticks(t: Instant, up: bool) -> u32 {
    let since = t.saturating_duration_since(EPOCH.with(|e| *e)).as_nanos();
    let tick = timer::TICK.as_nanos();
    let n = if up {
        since.div_ceil(tick)
    } else {
        since / tick
    };
    n.min(u128::from(NEVER - 1)) as u32
}

/// An instant in 8 bytes: nanoseconds since the thread's `EPOCH` (an
/// instant before it counts as `EPOCH`, long past for any deadline). For a
/// deadline held in every connection's task, where an `Instant` is 16.
#[derive(Clone, Copy)]
pub struct Stamp(u64);

impl Stamp {
    pub fn of(t: Instant) -> Stamp {
        let since = t.saturating_duration_since(EPOCH.with(|e| *e)).as_nanos();
        Stamp(u64::try_from(since).unwrap_or(u64::MAX))
    }

    pub fn instant(self) -> Instant {
        EPOCH.with(|e| *e) + Duration::from_nanos(self.0)
    }
}

/// A connection's place in the registry: listed between `enter` and
/// `leave`, freed on drop.
pub struct Entry {
    key: u32,
}

impl Entry {
    /// A slot, not listed yet.
    pub fn new() -> Entry {
        Entry::ending(NEVER)
    }

    /// A slot whose wait ends at tick `at`, not listed yet.
    fn ending(at: u32) -> Entry {
        let node = Node {
            prev: NONE,
            next: NONE,
            at,
            listed: false,
            evicted: false,
            fired: false,
            waker: None,
        };
        let key = IDLE.with_borrow_mut(|r| match r.free.pop() {
            Some(k) => {
                r.nodes[k as usize] = node;
                k
            }
            None => {
                r.nodes.push(node);
                (r.nodes.len() - 1) as u32
            }
        });
        Entry { key }
    }

    /// Lists the connection as idle from now: the most recent of all.
    pub fn enter(&self) {
        IDLE.with_borrow_mut(|r| r.push(self.key));
    }

    /// Unlists it: it has work (or is closing) and must not be evicted.
    pub fn leave(&self) {
        IDLE.with_borrow_mut(|r| r.unlink(self.key));
    }

    /// Ready once `evict_longest` picked this connection (the notice is
    /// taken: it is ready once per eviction), or once the entry's deadline
    /// passed (an entry from `new` has none).
    pub fn poll_over(&self, cx: &mut Context<'_>) -> Poll<()> {
        IDLE.with_borrow_mut(|r| {
            let n = &mut r.nodes[self.key as usize];
            if n.fired || std::mem::take(&mut n.evicted) {
                return Poll::Ready(());
            }
            match &n.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => n.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }
}

impl Default for Entry {
    fn default() -> Self {
        Entry::new()
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // After the thread's registry is gone (thread exit) there is
        // nothing to free.
        let _ = IDLE.try_with(|r| {
            let mut r = r.borrow_mut();
            r.unlink(self.key);
            let n = &mut r.nodes[self.key as usize];
            n.waker = None;
            n.at = NEVER;
            r.free.push(self.key);
        });
    }
}

/// Closes the longest-idle listed connection: it is unlisted and told to
/// close. False when none is listed.
pub fn evict_longest() -> bool {
    let waker = IDLE.with_borrow_mut(|r| {
        let key = r.head;
        if key == NONE {
            return None;
        }
        r.unlink(key);
        let n = &mut r.nodes[key as usize];
        n.evicted = true;
        Some(n.waker.take())
    });
    // Woken outside the borrow: a waker may run code that lists or unlists.
    match waker {
        Some(w) => {
            w.into_iter().for_each(Waker::wake);
            true
        }
        None => false,
    }
}

/// `conn::idle`'s deadline: completes at `at`, or earlier when the
/// connection is evicted. Listed only for a keep-alive wait (`listed`).
pub fn until(at: Instant, listed: bool) -> Until {
    let entry = Entry::ending(ticks(at, true));
    if listed {
        entry.enter();
    }
    Until { entry }
}

pub struct Until {
    entry: Entry,
}

impl Future for Until {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.entry.poll_over(cx)
    }
}

/// Ends every wait whose time has come; the worker's housekeeping calls it
/// once per tick, beside `timer::fire`.
pub fn fire(now: Instant) {
    let tick = ticks(now, false);
    let mut wake = Vec::new();
    IDLE.with_borrow_mut(|r| {
        for n in r.nodes.iter_mut() {
            if !n.fired && n.at <= tick {
                n.fired = true;
                wake.extend(n.waker.take());
            }
        }
    });
    // Woken outside the borrow: a waker may run code that takes a node.
    wake.into_iter().for_each(Waker::wake);
}

/// How long the accept loop waits for an evicted connection to close
/// before it evicts another (a TLS one sends close_notify first).
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// The accept loop's side at `max_connections`: one eviction at a time,
/// each given `EVICT_WAIT` to close, and only for a client that is
/// waiting in the backlog.
#[derive(Default)]
pub struct Room {
    /// Connections open when the last eviction was made, and when.
    last: Option<(usize, Instant)>,
}

impl Room {
    /// Called while `open` connections are at the limit: when a client
    /// waits on `listener`, evicts the longest-idle connection unless an
    /// eviction is still closing.
    pub fn make(&mut self, open: usize, listener: RawFd) {
        let now = timer::coarse_now();
        let settled = self
            .last
            .is_none_or(|(then, at)| open < then || now >= at + EVICT_WAIT);
        if settled && waiting(listener) {
            self.last = evict_longest().then_some((open, now));
        }
    }
}

/// Whether a connection waits in the listening socket's backlog (it polls
/// readable), without accepting it.
fn waiting(listener: RawFd) -> bool {
    let mut fd = libc::pollfd {
        fd: listener,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `fd` is one valid pollfd on the stack, borrowed only for the
    // call; a timeout of 0 returns at once.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & libc::POLLIN != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(u: &mut Until) -> Poll<()> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(u).poll(&mut cx)
    }

    /// A stamp gives back its instant to the nanosecond; one from before
    /// the thread's epoch comes back as the epoch, already past.
    #[test]
    fn a_stamp_keeps_its_instant() {
        let epoch = EPOCH.with(|e| *e);
        let later = Instant::now() + Duration::from_nanos(30_000_000_123);
        assert!(Stamp::of(later).instant() == later);
        let before = epoch - Duration::from_secs(1);
        assert!(Stamp::of(before).instant() == epoch);
    }

    #[test]
    fn a_wait_ends_at_the_first_tick_after_its_instant_never_before() {
        let start = Instant::now();
        let at = start + Duration::from_millis(250);
        let mut wait = until(at, false);
        assert!(poll(&mut wait).is_pending());
        // Ticks before `at`, and the one that ends right before it.
        for t in [0, 100, 200, 249] {
            fire(start + Duration::from_millis(t));
            assert!(
                poll(&mut wait).is_pending(),
                "ended at {t} ms, before 250 ms"
            );
        }
        fire(at + timer::TICK);
        assert!(poll(&mut wait).is_ready());
    }

    #[test]
    fn an_evicted_wait_ends_at_once_and_a_freed_node_never_fires() {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut kept = until(far, true);
        let mut other = until(far, true);
        assert!(poll(&mut kept).is_pending());
        // The longest idle is evicted first.
        assert!(evict_longest());
        assert!(poll(&mut kept).is_ready());
        assert!(poll(&mut other).is_pending());
        drop(kept);
        // The freed node is reused with its own deadline, not the old one's.
        let mut reused = until(far, false);
        fire(far - Duration::from_secs(1));
        assert!(poll(&mut reused).is_pending());
        assert!(poll(&mut other).is_pending());
        fire(far + timer::TICK);
        assert!(poll(&mut reused).is_ready() && poll(&mut other).is_ready());
    }
}
