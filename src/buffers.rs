//! Pools of equally sized byte buffers, one set per worker (`shard::Shard`
//! holds them): a buffer is taken for one operation and given back, so
//! steady traffic allocates nothing.

use std::cell::{Cell, RefCell};

/// Most free buffers kept per pool per worker; more are freed.
const MAX_FREE_BUFFERS: usize = 256;

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
    pub(crate) fn settle(&self) {
        self.lent.set(0);
    }

    pub fn size(&self) -> usize {
        self.size
    }
}
