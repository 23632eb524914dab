//! Pools of equally sized byte buffers, one set per worker (`shard::Shard`
//! holds them): a buffer is taken for one operation and given back, so
//! steady traffic allocates nothing.

use std::cell::{Cell, RefCell};

/// Most free buffers kept per pool per worker; more are freed. Set above
/// the requests one worker has in flight at once (HTTP/2 multiplies them:
/// 64 connections of 10 streams are 640), so that steady load allocates
/// nothing; what a burst leaves is freed by the housekeeping `trim`.
const MAX_FREE_BUFFERS: usize = 4096;

/// Bytes a worker's pools must free in one trim before the allocator is
/// asked to give its free pages back: a burst's worth (64 head buffers),
/// not the few buffers steady traffic frees and takes again.
pub(crate) const RETURN_AFTER: usize = 1 << 20;

/// A pool of equally sized byte buffers.
pub struct Buffers {
    size: usize,
    free: RefCell<Vec<Vec<u8>>>,
    /// Full-size buffers out on loan, and the most that may be.
    lent: Cell<usize>,
    max_lent: usize,
    /// Size of the unpooled buffer handed out past `max_lent`.
    small: usize,
    /// The fewest free buffers since the last `trim`: that many at the
    /// bottom of `free` (taken last in first out) went unused since then.
    low: Cell<usize>,
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
            low: Cell::new(0),
        }
    }

    pub fn take(&self) -> Vec<u8> {
        if self.lent.get() >= self.max_lent {
            return Vec::with_capacity(self.small);
        }
        self.lent.set(self.lent.get() + 1);
        let mut free = self.free.borrow_mut();
        let buf = free.pop();
        self.low.set(self.low.get().min(free.len()));
        buf.unwrap_or_else(|| Vec::with_capacity(self.size))
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

    /// Frees the buffers that went unused since the last call (the pool's
    /// low-water mark), so that what a burst needed goes back to the
    /// allocator once the burst is over; returns the bytes freed.
    pub(crate) fn trim(&self) -> usize {
        let mut free = self.free.borrow_mut();
        let unused = self.low.get().min(free.len());
        free.drain(..unused);
        self.low.set(free.len());
        unused * self.size
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

/// Hands the allocator's free pages back to the system. glibc keeps freed
/// memory resident (the pages of its free chunks inside the heap) until
/// `malloc_trim` releases them; mimalloc returns pages on its own. It walks
/// every arena, the other workers' too under their locks, for a fraction of
/// a millisecond: callers do it once after a burst, never per tick.
pub(crate) fn return_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    // SAFETY: malloc_trim only walks glibc's own free lists, under its arena
    // locks; it touches no memory that is allocated.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_frees_only_the_buffers_unused_since_the_last() {
        let pool = Buffers::new(64);
        let lent: Vec<_> = (0..4).map(|_| pool.take()).collect();
        for b in lent {
            pool.give(b);
        }
        // All four were in use during this period: none is freed.
        assert_eq!(pool.trim(), 0);
        // One is taken and given back; three stayed free the whole period.
        let b = pool.take();
        pool.give(b);
        assert_eq!(pool.trim(), 3 * 64);
        assert_eq!(pool.free.borrow().len(), 1);
        // The last one went unused a whole period too.
        assert_eq!(pool.trim(), 64);
        assert_eq!(pool.trim(), 0);
    }
}
