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
//! `readable` is an `async fn` whose state is 104 bytes, this one's 40).

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
    op::{poll::PollAdd, Op, OpAble},
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
pub(crate) struct BufRing {
    /// `count` entries, page-aligned as the kernel requires.
    entries: NonNull<Entry>,
    /// `count` buffers of `size` bytes, one after another.
    bufs: NonNull<u8>,
    count: u16,
    size: u32,
    /// Our copy of the tail: only this thread adds entries.
    tail: Cell<u16>,
}

const PAGE: usize = 4096;

impl BufRing {
    /// Allocates a ring of `count` buffers (a power of two, at most 32,768)
    /// of `size` bytes, every one of them in the ring.
    pub(crate) fn new(count: u16, size: u32) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32_768 || size == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let (entries, bufs) = (Self::entries_layout(count)?, Self::bufs_layout(count, size)?);
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 1).
        let entries = unsafe { alloc::alloc_zeroed(entries) }.cast::<Entry>();
        let bufs = unsafe { alloc::alloc(bufs) };
        let (Some(entries), Some(bufs)) = (NonNull::new(entries), NonNull::new(bufs)) else {
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let ring = BufRing {
            entries,
            bufs,
            count,
            size,
            tail: Cell::new(0),
        };
        for bid in 0..count {
            ring.give_back(bid);
        }
        Ok(ring)
    }

    fn entries_layout(count: u16) -> io::Result<Layout> {
        Layout::from_size_align(usize::from(count) * std::mem::size_of::<Entry>(), PAGE)
            .map_err(|_| io::ErrorKind::InvalidInput.into())
    }

    fn bufs_layout(count: u16, size: u32) -> io::Result<Layout> {
        Layout::from_size_align(usize::from(count) * size as usize, PAGE)
            .map_err(|_| io::ErrorKind::InvalidInput.into())
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
        // allocation of count * size bytes.
        unsafe { self.bufs.as_ptr().add(usize::from(bid) * self.size as usize) }
    }

    /// Puts buffer `bid` back at the ring's tail, for the kernel to pick.
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
        // SAFETY: the pointers come from `alloc` with these very layouts
        // (they could be built then, so they can now). The driver drops the
        // ring only once the kernel can no longer pick from it
        // (`UringInner::drop`).
        unsafe {
            if let Ok(l) = Self::entries_layout(self.count) {
                alloc::dealloc(self.entries.as_ptr().cast(), l);
            }
            if let Ok(l) = Self::bufs_layout(self.count, self.size) {
                alloc::dealloc(self.bufs.as_ptr(), l);
            }
        }
    }
}

/// Sets up this thread's ring of provided buffers: `count` buffers (a power
/// of two) of `size` bytes each. Call it inside the runtime; `Unsupported`
/// on the legacy driver, and the kernel's error where it has no buffer rings
/// (before 5.19).
pub fn register_provided_buffers(count: u16, size: u32) -> io::Result<()> {
    CURRENT.with(|inner| match inner {
        Inner::Uring(this) => super::uring::UringInner::register_provided(this, count, size),
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
            // ENOBUFS: the ring was empty.
            (Err(e), bid) => {
                if let Some(bid) = bid {
                    ring.give_back(bid);
                }
                Err(e)
            }
        })
    }
}

/// `TcpStream::read_ready`'s future: ready once the socket has bytes to read
/// (or has failed), as `TcpStream::readable(false)`.
/// `None`: the op could not be submitted.
pub struct ReadReady(Option<Op<PollAdd>>);

impl ReadReady {
    pub(crate) fn new(fd: &SharedFd) -> ReadReady {
        ReadReady(Op::poll_read(fd, false).ok())
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
