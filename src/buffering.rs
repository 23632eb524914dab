//! Stage 2, read: request buffering (nginx's `proxy_request_buffering`).
//!
//! A request body of at most `limits.client_body_buffer` bytes is read whole
//! into the client buffer before any upstream is picked or connected, so a
//! client that sends its body slowly holds no upstream connection: it costs
//! ringside memory, not a backend's connection slot. Larger bodies, and any
//! body once the worker's `Budget` is spent, stream as they arrive. The
//! budget bounds what many slow clients can make a worker hold.
//!
//! A chunked body is buffered until its last chunk when it ends within the
//! size; one that grows past it streams from there on. A client that asked
//! for `100 Continue` gets it from ringside before its body is read.

use std::{cell::Cell, io, time::Duration};

use crate::{
    buffers::Buffers,
    error::Error,
    http::{body::Chunked, parse::Framing, respond::CONTINUE},
    relay::{self, Fail},
    request::{Client, Plan},
};

/// Bytes of buffered request bodies one worker holds at most at once.
pub const WORKER_BUDGET: usize = 64 << 20;

/// A worker's allowance of bytes for buffered bodies.
pub struct Budget {
    left: Cell<usize>,
}

impl Budget {
    pub fn new(total: usize) -> Self {
        Budget {
            left: Cell::new(total),
        }
    }

    /// Takes `n` bytes of the allowance until the guard drops; `None` when
    /// fewer are left.
    pub fn reserve(&self, n: usize) -> Option<Reserved<'_>> {
        let left = self.left.get().checked_sub(n)?;
        self.left.set(left);
        Some(Reserved { budget: self, n })
    }

    pub fn left(&self) -> usize {
        self.left.get()
    }
}

/// Part of a worker's `Budget`, held while a buffered body is in memory.
pub struct Reserved<'a> {
    budget: &'a Budget,
    n: usize,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.budget.left.set(self.budget.left.get() + self.n);
    }
}

/// What buffering needs from the config and the worker.
pub struct Buffering<'a> {
    /// `limits.client_body_buffer`; 0 turns buffering off.
    pub max: usize,
    pub body_timeout: Duration,
    pub send_timeout: Duration,
    pub budget: &'a Budget,
    /// Read buffers, one lent per read.
    pub spare: &'a Buffers,
}

/// Reads the rest of a body that fits into `c.buf`, after its head. Returns
/// the reservation to hold until the request ends, or `None` when the body
/// streams (too large, no body left to read, the budget spent). A body that
/// fails to arrive is an error to answer (408, or nobody to answer).
pub async fn read_whole<'a>(
    c: &mut Client,
    plan: &Plan,
    b: &Buffering<'a>,
) -> Result<Option<Reserved<'a>>, Error> {
    let have = c.buf.len() - plan.len;
    let need = match plan.framing {
        Framing::Length(n) if n > have as u64 && n <= b.max as u64 => n as usize,
        Framing::Chunked if b.max > 0 => b.max,
        _ => return Ok(None),
    };
    let mut chunked = (plan.framing == Framing::Chunked).then(|| (Chunked::new(), 0usize));
    if let Some((dec, at)) = &mut chunked {
        *at = dec
            .decode(&c.buf[plan.len..], |_| ())
            .map_err(Error::bad_request)?;
        if dec.is_done() || have > b.max {
            return Ok(None);
        }
    }
    let Some(held) = b.budget.reserve(need) else {
        return Ok(None);
    };
    if plan.expect_continue && have == 0 {
        let (w, _) = relay::write_all(&mut c.stream, CONTINUE.to_vec(), b.send_timeout).await;
        w.map_err(Fail::client)?;
    }
    c.buf.reserve(plan.len + need - c.buf.len());
    loop {
        let body = c.buf.len() - plan.len;
        match &mut chunked {
            None if body >= need => return Ok(Some(held)),
            Some((dec, _)) if dec.is_done() => return Ok(Some(held)),
            // Past the size: what came in goes first, the rest streams.
            Some(_) if body > b.max => return Ok(None),
            _ => {}
        }
        let spare = b.spare.take();
        let (r, spare) = relay::read_more(&mut c.stream, spare, b.body_timeout).await;
        let n = match r {
            Ok(0) => Err(Error::client_gone(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => Ok(n),
            Err(Fail::Timeout) => Err(Error::body_timeout()),
            Err(Fail::Io(e)) => Err(Error::client_gone(e)),
            Err(_) => Err(Error::client_gone(io::ErrorKind::UnexpectedEof.into())),
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                b.spare.give(spare);
                return Err(e);
            }
        };
        c.buf.extend_from_slice(&spare[..n]);
        b.spare.give(spare);
        if let Some((dec, at)) = &mut chunked {
            let start = plan.len + *at;
            *at += dec
                .decode(&c.buf[start..], |_| ())
                .map_err(Error::bad_request)?;
        }
    }
}
