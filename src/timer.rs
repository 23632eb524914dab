//! Coarse per-worker deadlines for idle waits.
//!
//! An idle keep-alive connection must cost as little memory as possible
//! (nginx needs about 0.5 KiB). monoio's `Sleep` is 640 bytes, aligned to
//! 128, and sat inside every idle connection's task: 1.8 KiB per idle
//! connection measured with perf/idle.py (9,000 connections). Here a waiting
//! connection holds a 16-byte handle and one slab slot instead, and the
//! worker's housekeeping task fires expired slots every `TICK`.

use std::{
    cell::RefCell,
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use monoio::time::Instant;

/// Resolution of idle deadlines: a timeout fires up to this much late.
pub const TICK: Duration = Duration::from_millis(100);

struct Slot {
    at: Instant,
    waker: Option<Waker>,
    fired: bool,
}

#[derive(Default)]
pub struct Deadlines {
    slots: RefCell<Vec<Option<Slot>>>,
    free: RefCell<Vec<usize>>,
}

impl Deadlines {
    /// A future that completes at `at` (rounded up to the next tick).
    pub fn until(&self, at: Instant) -> Deadline<'_> {
        let slot = Slot {
            at,
            waker: None,
            fired: false,
        };
        let mut slots = self.slots.borrow_mut();
        let key = match self.free.borrow_mut().pop() {
            Some(k) => {
                slots[k] = Some(slot);
                k
            }
            None => {
                slots.push(Some(slot));
                slots.len() - 1
            }
        };
        Deadline { owner: self, key }
    }

    /// Fires every slot whose time has come; called once per tick.
    pub fn fire(&self, now: Instant) {
        let mut slots = self.slots.borrow_mut();
        for slot in slots.iter_mut().flatten() {
            if !slot.fired && slot.at <= now {
                slot.fired = true;
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
            }
        }
    }
}

pub struct Deadline<'a> {
    owner: &'a Deadlines,
    key: usize,
}

impl Future for Deadline<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut slots = self.owner.slots.borrow_mut();
        let Some(slot) = slots.get_mut(self.key).and_then(Option::as_mut) else {
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
    }
}

impl Drop for Deadline<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.owner.slots.borrow_mut().get_mut(self.key) {
            *s = None;
        }
        self.owner.free.borrow_mut().push(self.key);
    }
}
