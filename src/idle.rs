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

use std::{
    cell::RefCell,
    future::Future,
    os::fd::RawFd,
    pin::Pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use monoio::time::Instant;

use crate::timer::{self, Deadline};

/// No node: the end of the list, or an entry that holds no slot.
const NONE: u32 = u32::MAX;

struct Node {
    prev: u32,
    next: u32,
    listed: bool,
    /// Set by `evict_longest`, taken by the connection.
    evicted: bool,
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
}

/// A connection's place in the registry: listed between `enter` and
/// `leave`, freed on drop.
pub struct Entry {
    key: u32,
}

impl Entry {
    /// A slot, not listed yet.
    pub fn new() -> Entry {
        let node = Node {
            prev: NONE,
            next: NONE,
            listed: false,
            evicted: false,
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
    /// taken: it is ready once per eviction).
    pub fn poll_evicted(&self, cx: &mut Context<'_>) -> Poll<()> {
        IDLE.with_borrow_mut(|r| {
            let n = &mut r.nodes[self.key as usize];
            if std::mem::take(&mut n.evicted) {
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
            r.nodes[self.key as usize].waker = None;
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
    let entry = listed.then(|| {
        let e = Entry::new();
        e.enter();
        e
    });
    Until {
        entry,
        deadline: timer::until(at),
    }
}

pub struct Until {
    entry: Option<Entry>,
    deadline: Deadline,
}

impl Future for Until {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(e) = &self.entry {
            if e.poll_evicted(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Pin::new(&mut self.deadline).poll(cx)
    }
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
