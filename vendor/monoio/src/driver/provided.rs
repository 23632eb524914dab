//! ringside: a ring of provided buffers (`IORING_REGISTER_PBUF_RING`) and a
//! receive that lets the kernel pick one of them when the bytes arrive
//! (`IOSQE_BUFFER_SELECT`).
//!
//! A socket waiting for its next bytes then holds no buffer, as a readiness
//! poll does, but the bytes come back with the one completion, without the
//! `recv(2)` a poll needs after it. The buffer goes back to the ring when its
//! `ProvidedBuf` is dropped. A completion that nobody takes any more (its op
//! was dropped after it completed, or while it was in flight) gives its
//! buffer back in the driver (`UringInner::give_back`), so no buffer is lost.
//!
//! There is one group per thread's ring (`GROUP`); with no ring registered
//! (the legacy driver, a kernel without buffer rings) `recv_provided` answers
//! `ErrorKind::Unsupported` at once, and an empty ring makes the receive end
//! with `ENOBUFS`: the caller then reads another way, or waits for readiness
//! (`TcpStream::read_ready`, a readiness poll as a named future: monoio's
//! `readable` is an `async fn` whose state is 104 bytes, this one's 32).

use std::{
    alloc::{self, Layout},
    cell::Cell,
    future::Future,
    io,
    pin::Pin,
    ptr::{self, NonNull},
    rc::Rc,
    sync::atomic::{AtomicU16, Ordering},
    task::{Context, Poll},
};

use io_uring::{cqueue, opcode, squeue, types};

use super::{
    op::{Op, OpAble},
    shared_fd::SharedFd,
    Inner, CURRENT,
};

/// The buffer group of every thread's ring.
pub(crate) const GROUP: u16 = 0;

/// `struct io_uring_buf`: one entry of the ring. The `resv` field of the
/// first entry is the ring's tail, which the kernel reads.
#[repr(C)]
struct Entry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// The ring's entries and the buffers they point at, both allocated here and
/// registered with the kernel until the driver is dropped.
///
/// Not every buffer is in the ring from the start: the first `published`
/// are, and each receive that finds the ring empty (`ENOBUFS`) doubles them
/// (`grow`), up to `count`. The buffers are one anonymous mapping, whose
/// pages become resident only once the kernel writes into them, so a worker
/// that never has many receives complete at once keeps only a few buffers'
/// pages.
pub(crate) struct BufRing {
    /// `count` entries, page-aligned as the kernel requires.
    entries: NonNull<Entry>,
    /// `count` buffers of `size` bytes, one after another: a mapping of
    /// `bufs_len` bytes.
    bufs: NonNull<u8>,
    count: u16,
    size: u32,
    /// Buffers `0..published` have been put in the ring.
    published: Cell<u16>,
    /// Reaps of the completion queue so far (`reaping`), and the one in
    /// which the ring last grew: every receive that found the ring empty
    /// before one growth comes in the same reap, and grows it only once.
    reaps: Cell<u32>,
    grown_in: Cell<u32>,
    /// Our copy of the tail: only this thread adds entries.
    tail: Cell<u16>,
}

const PAGE: usize = 4096;

impl BufRing {
    /// Allocates a ring of `count` buffers (a power of two, at most 32,768)
    /// of `size` bytes, the first `first` of them (at least one) in the
    /// ring.
    pub(crate) fn new(count: u16, size: u32, first: u16) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32_768 || size == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let entries = Self::entries_layout(count)?;
        // SAFETY: the layout has a non-zero size (count >= 1).
        let entries = unsafe { alloc::alloc_zeroed(entries) }.cast::<Entry>();
        let Some(entries) = NonNull::new(entries) else {
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let len = Self::bufs_len(count, size);
        // SAFETY: a new private anonymous mapping aliases nothing; its
        // result is checked below.
        let bufs = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        let bufs = match bufs {
            libc::MAP_FAILED => None,
            p => NonNull::new(p.cast::<u8>()),
        };
        let Some(bufs) = bufs else {
            let e = io::Error::last_os_error();
            // SAFETY: allocated just above with this layout.
            unsafe { alloc::dealloc(entries.as_ptr().cast(), Self::entries_layout(count)?) };
            return Err(e);
        };
        let ring = BufRing {
            entries,
            bufs,
            count,
            size,
            published: Cell::new(0),
            reaps: Cell::new(0),
            grown_in: Cell::new(u32::MAX),
            tail: Cell::new(0),
        };
        ring.publish(first.clamp(1, count));
        Ok(ring)
    }

    fn entries_layout(count: u16) -> io::Result<Layout> {
        Layout::from_size_align(usize::from(count) * std::mem::size_of::<Entry>(), PAGE)
            .map_err(|_| io::ErrorKind::InvalidInput.into())
    }

    fn bufs_len(count: u16, size: u32) -> usize {
        usize::from(count) * size as usize
    }

    /// Puts buffers `published..upto` in the ring.
    fn publish(&self, upto: u16) {
        for bid in self.published.get()..upto {
            self.give_back(bid);
        }
        self.published.set(upto.max(self.published.get()));
    }

    /// The driver is about to reap completions.
    pub(crate) fn reaping(&self) {
        self.reaps.set(self.reaps.get().wrapping_add(1));
    }

    /// The ring ran empty: puts as many buffers again in it as it had, up
    /// to `count`, unless it grew already since the last reap.
    pub(crate) fn grow(&self) {
        if self.grown_in.get() == self.reaps.get() {
            return;
        }
        self.grown_in.set(self.reaps.get());
        let had = self.published.get();
        self.publish(had.saturating_mul(2).min(self.count));
    }

    pub(crate) fn ring_addr(&self) -> u64 {
        self.entries.as_ptr() as u64
    }

    pub(crate) fn count(&self) -> u16 {
        self.count
    }

    fn buf(&self, bid: u16) -> *mut u8 {
        debug_assert!(bid < self.count);
        // SAFETY: bid < count, so the offset stays inside the `bufs`
        // mapping of count * size bytes.
        unsafe { self.bufs.as_ptr().add(usize::from(bid) * self.size as usize) }
    }

    /// Puts buffer `bid` back at the ring's tail, for the kernel to pick.
    /// At most `count` buffers exist, so the tail never passes the
    /// kernel's head by more than the ring holds.
    pub(crate) fn give_back(&self, bid: u16) {
        if bid >= self.count {
            return;
        }
        let tail = self.tail.get();
        let slot = usize::from(tail & (self.count - 1));
        // SAFETY: slot < count, inside the `entries` allocation. The kernel
        // only reads entries, and only those before the tail it was last
        // given: this one is past it, so nothing reads it while we write.
        // The fields are written through raw pointers, never through a
        // reference to the entry, whose `resv` may be the tail (entry 0) the
        // kernel reads at any time.
        unsafe {
            let e = self.entries.as_ptr().add(slot);
            ptr::addr_of_mut!((*e).addr).write(self.buf(bid) as u64);
            ptr::addr_of_mut!((*e).len).write(self.size);
            ptr::addr_of_mut!((*e).bid).write(bid);
        }
        let tail = tail.wrapping_add(1);
        self.tail.set(tail);
        // SAFETY: the tail is the `resv` field of entry 0, a u16 aligned to
        // 2 that lives as long as the ring; the kernel reads it with an
        // acquire load, so this release store publishes the entry above.
        unsafe {
            let t = ptr::addr_of_mut!((*self.entries.as_ptr()).resv);
            AtomicU16::from_ptr(t).store(tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: `entries` comes from `alloc` with this very layout (it
        // could be built then, so it can now), `bufs` from `mmap` with this
        // length. The driver drops the ring only once the kernel can no
        // longer pick from it (`UringInner::drop`), and every `ProvidedBuf`
        // holds an Rc of the ring, so no slice of a buffer outlives it.
        unsafe {
            if let Ok(l) = Self::entries_layout(self.count) {
                alloc::dealloc(self.entries.as_ptr().cast(), l);
            }
            libc::munmap(self.bufs.as_ptr().cast(), Self::bufs_len(self.count, self.size));
        }
    }
}

/// Sets up this thread's ring of provided buffers: `count` buffers (a power
/// of two) of `size` bytes each, `first` of them in the ring at once and
/// twice as many each time a receive finds it empty, up to `count`. Call it
/// inside the runtime; `Unsupported` on the legacy driver, and the kernel's
/// error where it has no buffer rings (before 5.19).
pub fn register_provided_buffers(count: u16, size: u32, first: u16) -> io::Result<()> {
    CURRENT.with(|inner| match inner {
        Inner::Uring(this) => {
            super::uring::UringInner::register_provided(this, count, size, first)
        }
        #[allow(unreachable_patterns)]
        _ => Err(io::ErrorKind::Unsupported.into()),
    })
}

/// Bytes the kernel received into one of the ring's buffers. Dropping it
/// gives the buffer back to the ring.
pub struct ProvidedBuf {
    ring: Rc<BufRing>,
    bid: u16,
    len: u32,
}

impl std::ops::Deref for ProvidedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the kernel wrote `len` bytes (at most `size`) into buffer
        // `bid` and posted the completion before we read it; the buffer is
        // out of the ring until this value is dropped, so nothing writes it
        // while the slice lives.
        unsafe { std::slice::from_raw_parts(self.ring.buf(self.bid), self.len as usize) }
    }
}

impl Drop for ProvidedBuf {
    fn drop(&mut self) {
        self.ring.give_back(self.bid);
    }
}

/// The op: a receive with no buffer of its own.
pub(crate) struct RecvSelect {
    /// Holds the fd open while the op is in flight.
    fd: SharedFd,
}

impl OpAble for RecvSelect {
    fn uring_op(&mut self) -> squeue::Entry {
        // Length 0: the whole of the buffer the kernel picks.
        opcode::Recv::new(types::Fd(self.fd.raw_fd()), ptr::null_mut(), 0)
            .buf_group(GROUP)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
    }

    #[cfg(any(feature = "legacy", feature = "poll-io"))]
    fn legacy_interest(&self) -> Option<(super::ready::Direction, usize)> {
        None
    }

    #[cfg(any(feature = "legacy", feature = "poll-io"))]
    fn legacy_call(&mut self) -> io::Result<u32> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// `TcpStream::recv_provided`'s future: the bytes in a `ProvidedBuf` (empty
/// at the peer's end of stream), `ENOBUFS` when the ring was empty as they
/// arrived, `Unsupported` without a ring. Only the op: it is kept in every
/// idle connection's task.
pub struct RecvProvided(Option<Op<RecvSelect>>);

/// This thread's ring, if it registered one.
fn current_ring() -> Option<Rc<BufRing>> {
    CURRENT.with(|inner| match inner {
        Inner::Uring(this) => super::uring::UringInner::provided(this),
        #[allow(unreachable_patterns)]
        _ => None,
    })
}

impl RecvProvided {
    pub(crate) fn new(fd: &SharedFd) -> RecvProvided {
        let ring = CURRENT.with(|inner| match inner {
            Inner::Uring(this) => super::uring::UringInner::has_provided(this),
            #[allow(unreachable_patterns)]
            _ => false,
        });
        let op = ring.then(|| Op::submit_with(RecvSelect { fd: fd.clone() }).ok());
        RecvProvided(op.flatten())
    }
}

impl Future for RecvProvided {
    type Output = io::Result<ProvidedBuf>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = self.get_mut();
        let Some(op) = me.0.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::Unsupported.into()));
        };
        let done = std::task::ready!(Pin::new(op).poll(cx));
        me.0 = None;
        // The op was only submitted with a ring, and the driver drops its
        // ring only with itself.
        let Some(ring) = current_ring() else {
            return Poll::Ready(Err(io::ErrorKind::Unsupported.into()));
        };
        let bid = cqueue::buffer_select(done.meta.flags);
        Poll::Ready(match (done.meta.result, bid) {
            (Ok(len), Some(bid)) => Ok(ProvidedBuf { ring, bid, len }),
            // No buffer taken: nothing received (the peer's end).
            (Ok(_), None) => Ok(ProvidedBuf {
                ring,
                bid: u16::MAX,
                len: 0,
            }),
            // ENOBUFS: the ring was empty; it gets more buffers for the
            // next receives, if it has any left to give.
            (Err(e), bid) => {
                if let Some(bid) = bid {
                    ring.give_back(bid);
                }
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    ring.grow();
                }
                Err(e)
            }
        })
    }
}

/// The readiness op of `ReadReady`: `op::poll::PollAdd` for reading, with
/// only the fd, so that the op and the future that holds it are 32 bytes,
/// not 40 (they are in every idle connection's task on a ring without
/// provided buffers).
pub(crate) struct PollRead {
    /// Holds the fd open while the op is in flight.
    fd: SharedFd,
}

impl OpAble for PollRead {
    fn uring_op(&mut self) -> squeue::Entry {
        opcode::PollAdd::new(types::Fd(self.fd.raw_fd()), libc::POLLIN as _).build()
    }

    #[cfg(any(feature = "legacy", feature = "poll-io"))]
    fn legacy_interest(&self) -> Option<(super::ready::Direction, usize)> {
        self.fd
            .registered_index()
            .map(|idx| (super::ready::Direction::Read, idx))
    }

    /// As `PollAdd`'s, not relaxed: ready only if a `poll(2)` says so.
    #[cfg(any(feature = "legacy", feature = "poll-io"))]
    fn legacy_call(&mut self) -> io::Result<u32> {
        let mut pollfd = libc::pollfd {
            fd: self.fd.raw_fd(),
            events: libc::POLLIN as _,
            revents: 0,
        };
        let ret = crate::syscall_u32!(poll(&mut pollfd as *mut _, 1, 0))?;
        if ret == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(0)
    }
}

/// `TcpStream::read_ready`'s future: ready once the socket has bytes to read
/// (or has failed), as `TcpStream::readable(false)`.
/// `None`: the op could not be submitted.
pub struct ReadReady(Option<Op<PollRead>>);

impl ReadReady {
    pub(crate) fn new(fd: &SharedFd) -> ReadReady {
        ReadReady(Op::submit_with(PollRead { fd: fd.clone() }).ok())
    }
}

impl Future for ReadReady {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Some(op) => Pin::new(op).poll(cx).map(|done| done.meta.result.map(|_| ())),
            None => Poll::Ready(Err(io::ErrorKind::Other.into())),
        }
    }
}
