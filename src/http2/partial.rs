//! Where the client's bytes stand against HTTP/2 framing: inside a frame,
//! or inside a header block (HEADERS without END_HEADERS, until the
//! CONTINUATION that ends it), and since when. A client that stops there is
//! bounded by `client_header_timeout`, as a partial HTTP/1.1 head is (h2
//! itself waits for the rest for as long as the connection lives).
//!
//! `io::PollIo` feeds every byte read from the socket, in order; the
//! connection loop (`http2::connection`) reads `since` and arms its timer.

use std::{cell::Cell, task::Context, time::Duration};

use monoio::time::Instant;

/// The client connection preface, which h2 reads before the first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEAD: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

pub struct Partial {
    /// Preface bytes still to pass.
    preface: Cell<usize>,
    /// The frame header read so far.
    head: Cell<[u8; FRAME_HEAD]>,
    head_len: Cell<usize>,
    /// Payload bytes of the current frame still to come.
    payload: Cell<usize>,
    /// A header block is open (its END_HEADERS not seen yet).
    block: Cell<bool>,
    /// When the unfinished frame or header block began.
    since: Cell<Option<Instant>>,
    /// The connection loop's next wake-up, so that a partial frame starting
    /// later than it needs no extra wake.
    armed: Cell<Option<Instant>>,
    limit: Duration,
}

impl Partial {
    pub fn new(limit: Duration) -> Partial {
        Partial {
            preface: Cell::new(PREFACE_LEN),
            head: Cell::new([0; FRAME_HEAD]),
            head_len: Cell::new(0),
            payload: Cell::new(0),
            block: Cell::new(false),
            since: Cell::new(None),
            armed: Cell::new(None),
            limit,
        }
    }

    /// When the client has to finish what it started, if it is inside a
    /// frame or a header block.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.get().map(|s| s + self.limit)
    }

    /// The connection loop's timer is set for `at`.
    pub fn arm(&self, at: Instant) {
        self.armed.set(Some(at));
    }

    /// Follows the framing over `bytes`, just read. When an unfinished unit
    /// begins whose deadline comes before the loop's timer, the task is
    /// woken so that the loop re-arms it.
    pub fn feed(&self, mut bytes: &[u8], cx: &mut Context<'_>) {
        let skip = self.preface.get().min(bytes.len());
        self.preface.set(self.preface.get() - skip);
        bytes = &bytes[skip..];
        // A frame ended outside a header block: what is unfinished now
        // began in these bytes.
        let mut ended = false;
        while !bytes.is_empty() {
            let left = self.payload.get();
            if left > 0 {
                let n = left.min(bytes.len());
                self.payload.set(left - n);
                bytes = &bytes[n..];
                ended |= n == left && !self.block.get();
                continue;
            }
            let mut head = self.head.get();
            let have = self.head_len.get();
            let n = (FRAME_HEAD - have).min(bytes.len());
            head[have..have + n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.head.set(head);
            if have + n < FRAME_HEAD {
                self.head_len.set(have + n);
                break;
            }
            self.head_len.set(0);
            let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
            self.payload.set(len);
            let (ty, flags) = (head[3], head[4]);
            match ty {
                HEADERS | PUSH_PROMISE => self.block.set(flags & END_HEADERS == 0),
                CONTINUATION if flags & END_HEADERS != 0 => self.block.set(false),
                _ => {}
            }
            ended |= len == 0 && !self.block.get();
        }
        let open = self.head_len.get() > 0 || self.payload.get() > 0 || self.block.get();
        match (open, self.since.get()) {
            (false, _) => self.since.set(None),
            (true, Some(_)) if !ended => {}
            (true, _) => {
                // The exact clock (once per read that ends inside a frame):
                // the coarse one can be a tick early, and the bound must
                // not be.
                let now = Instant::now();
                self.since.set(Some(now));
                if self.armed.get().is_none_or(|a| a > now + self.limit) {
                    cx.waker().wake_by_ref();
                }
            }
        }
    }
}
