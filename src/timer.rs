//! Coarse per-worker deadlines: idle waits and every relay step's timeout.
//!
//! An idle keep-alive connection must cost as little memory as possible.
//! monoio's `Sleep` is 640 bytes, aligned to 128, and would sit inside every
//! idle connection's task. Here a waiting connection holds an 8-byte handle
//! and one slab slot instead, and the worker's housekeeping task fires
//! expired slots every `TICK`.
//!
//! The relay steps of a request (send upstream, read the answer, write it
//! to the client) use the same slots through `timeout`: no timer wheel
//! entry per step, no 640-byte `Sleep` in the request's future.
//!
//! The slab is the worker thread's own (a thread-local): only worker
//! threads run a housekeeping task, so only they may wait on it.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use monoio::time::Instant;

/// Resolution of deadlines: a timeout fires up to this much late, never
/// early.
pub const TICK: Duration = Duration::from_millis(100);

struct Slot {
    at: Instant,
    waker: Option<Waker>,
    fired: bool,
}

#[derive(Default)]
struct Deadlines {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
}

thread_local! {
    static DEADLINES: RefCell<Deadlines> = RefCell::default();
    /// The time at the worker's last tick (`fire`); `None` on other threads.
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The time at the last tick: a clock read saved for deadlines and ages
/// that can be a tick off. On a thread without ticks, the exact time.
///
/// A request reads the exact clock only for its start and its duration.
pub fn coarse_now() -> Instant {
    NOW.get().unwrap_or_else(Instant::now)
}

/// The instant `limit` from now by the coarse clock, plus a tick: a
/// deadline there fires up to two ticks late, never early.
pub fn later(limit: Duration) -> Instant {
    coarse_now() + limit + TICK
}

/// A future that completes at `at` (at the first tick after it).
pub fn until(at: Instant) -> Deadline {
    let slot = Slot {
        at,
        waker: None,
        fired: false,
    };
    let key = DEADLINES.with_borrow_mut(|d| match d.free.pop() {
        Some(k) => {
            d.slots[k] = Some(slot);
            k
        }
        None => {
            d.slots.push(Some(slot));
            d.slots.len() - 1
        }
    });
    Deadline { key }
}

/// Fires every slot whose time has come; the housekeeping task calls it
/// once per tick.
pub fn fire(now: Instant) {
    NOW.set(Some(now));
    let mut wake = Vec::new();
    DEADLINES.with_borrow_mut(|d| {
        for slot in d.slots.iter_mut().flatten() {
            if !slot.fired && slot.at <= now {
                slot.fired = true;
                wake.extend(slot.waker.take());
            }
        }
    });
    // Woken outside the borrow: a waker may run code that takes a slot.
    wake.into_iter().for_each(Waker::wake);
}

/// `fut`, or `None` once `limit` has passed.
pub fn timeout<F: Future>(limit: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        limit,
        deadline: None,
    }
}

pin_project_lite::pin_project! {
    /// A named future rather than an `async fn`: an `async fn` keeps its
    /// argument and the pinned copy of it side by side, doubling the
    /// future's size around every client write.
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        limit: Duration,
        deadline: Option<Deadline>,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Some(v));
        }
        // The slot is taken when the step first has to wait.
        let limit = *this.limit;
        let d = this.deadline.get_or_insert_with(|| until(later(limit)));
        Pin::new(d).poll(cx).map(|()| None)
    }
}

pub struct Deadline {
    key: usize,
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        DEADLINES.with_borrow_mut(|d| {
            let Some(slot) = d.slots.get_mut(self.key).and_then(Option::as_mut) else {
                return Poll::Ready(());
            };
            if slot.fired {
                return Poll::Ready(());
            }
            match &slot.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => slot.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        // After the thread's slab is gone (thread exit) there is nothing
        // to free.
        let _ = DEADLINES.try_with(|d| {
            let mut d = d.borrow_mut();
            if let Some(s) = d.slots.get_mut(self.key) {
                *s = None;
            }
            d.free.push(self.key);
        });
    }
}
