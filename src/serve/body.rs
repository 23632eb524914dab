//! Stage 5, relay: a response body on its way to the client when ringside changes
//! it: gzip as it flows, chunk framing when the length becomes unknown, and
//! a copy kept for the cache (up to a cap). Plain proxied bodies never come
//! here: they take relay.rs's copy loops.

use monoio::net::TcpStream;

use crate::stream::ClientStream;

use super::gzip;
use crate::{
    buffers::Buffers,
    http::{
        body::{chunk_head, Chunked, LAST_CHUNK},
        headers::OutFraming,
        parse::Framing,
    },
    relay::{self, CopyFail, Fail, Limits},
};

/// Turns body pieces into the bytes the client gets.
pub struct BodyOut {
    gzip: Option<gzip::Stream>,
    chunked: bool,
    /// The body as it arrived (before gzip), for the cache; dropped once
    /// it would pass `tee_cap`.
    tee: Option<Vec<u8>>,
    tee_cap: usize,
    /// Body bytes handed to the client so far (after gzip, before framing).
    pub sent: u64,
}

impl BodyOut {
    /// `framing`: how the client's body is delimited (`Chunked` adds the
    /// chunk lines); `tee_cap`: keep a copy of up to this many bytes.
    pub fn new(gzip: bool, framing: OutFraming, tee: Option<usize>) -> Self {
        BodyOut {
            gzip: gzip.then(gzip::Stream::new),
            chunked: framing == OutFraming::Chunked,
            tee: tee.map(|_| Vec::new()),
            tee_cap: tee.unwrap_or(0),
            sent: 0,
        }
    }

    /// Appends what the client gets for `data` to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if data.is_empty() {
            return;
        }
        if let Some(t) = &mut self.tee {
            if t.len() + data.len() <= self.tee_cap {
                t.extend_from_slice(data);
            } else {
                self.tee = None;
            }
        }
        let (chunked, sent) = (self.chunked, &mut self.sent);
        match &mut self.gzip {
            Some(z) => z.push(data, |b| frame(out, b, chunked, sent)),
            None => frame(out, data, chunked, sent),
        }
    }

    /// Appends the end of the body (gzip trailer, last chunk) to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let (chunked, sent) = (self.chunked, &mut self.sent);
        if let Some(z) = &mut self.gzip {
            z.finish(|b| frame(out, b, chunked, sent));
        }
        if chunked {
            out.extend_from_slice(LAST_CHUNK);
        }
    }

    /// The whole body as it arrived, if it stayed under the cap.
    pub fn take_copy(&mut self) -> Option<Vec<u8>> {
        self.tee.take()
    }
}

fn frame(out: &mut Vec<u8>, data: &[u8], chunked: bool, sent: &mut u64) {
    *sent += data.len() as u64;
    if chunked {
        chunk_head(out, data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// Reads an upstream body framed by `framing` (starting with `pending`,
/// the bytes read with the head) and sends it through `body`, adding the
/// bytes written (`BodyOut::sent`'s) to `sent` as they go. `Ok(clean)`:
/// the upstream connection holds nothing past the body and may be reused.
pub async fn relay(
    from: &mut TcpStream,
    to: &mut ClientStream,
    framing: Framing,
    pending: &[u8],
    body: &mut BodyOut,
    bufs: &Buffers,
    lim: (Limits, &mut u64),
) -> Result<bool, CopyFail> {
    let (inbuf, out) = (bufs.take(), bufs.take());
    let (r, inbuf, out) = copy(from, to, framing, pending, body, inbuf, out, lim).await;
    bufs.give(inbuf);
    bufs.give(out);
    r
}

#[allow(clippy::too_many_arguments)]
async fn copy(
    from: &mut TcpStream,
    to: &mut ClientStream,
    framing: Framing,
    pending: &[u8],
    body: &mut BodyOut,
    mut inbuf: Vec<u8>,
    mut out: Vec<u8>,
    (lim, sent): (Limits, &mut u64),
) -> (Result<bool, CopyFail>, Vec<u8>, Vec<u8>) {
    out.clear();
    let mut counted = body.sent;
    let mut clean = true;
    let mut remaining = match framing {
        Framing::Length(n) => {
            let now = (n as usize).min(pending.len());
            clean = pending.len() <= n as usize;
            body.push(&pending[..now], &mut out);
            n - now as u64
        }
        Framing::UntilClose => {
            clean = false;
            body.push(pending, &mut out);
            u64::MAX
        }
        Framing::Chunked => u64::MAX,
        Framing::Empty => 0,
    };
    let mut dec = Chunked::new();
    let mut first = (framing == Framing::Chunked).then_some(pending);
    loop {
        // What is ready goes out before the next read.
        let ended = match framing {
            Framing::Empty => true,
            Framing::Length(_) | Framing::UntilClose => remaining == 0,
            Framing::Chunked => dec.is_done(),
        };
        if ended {
            body.finish(&mut out);
        }
        if !out.is_empty() {
            let (w, b) = relay::write_all(to, out, lim.write).await;
            out = b;
            out.clear();
            if let Err(e) = w {
                return (Err(CopyFail::Write(e)), inbuf, out);
            }
            *sent += body.sent - counted;
            counted = body.sent;
        }
        if ended {
            return (Ok(clean), inbuf, out);
        }
        let input: &[u8] = match first.take() {
            Some(p) => p,
            None => {
                let want = usize::try_from(remaining).unwrap_or(usize::MAX);
                let (r, b) = relay::read_fresh(from, inbuf, want, lim.read).await;
                inbuf = b;
                match r {
                    Ok(0) if framing == Framing::UntilClose => {
                        remaining = 0;
                        continue;
                    }
                    Ok(0) => return (Err(CopyFail::Read(Fail::Eof)), inbuf, out),
                    Ok(n) => &inbuf[..n],
                    Err(e) => return (Err(CopyFail::Read(e)), inbuf, out),
                }
            }
        };
        if framing == Framing::Chunked {
            match dec.decode(input, |data| body.push(data, &mut out)) {
                Ok(used) => clean &= !dec.is_done() || used == input.len(),
                Err(why) => return (Err(CopyFail::Read(Fail::Framing(why))), inbuf, out),
            }
        } else {
            body.push(input, &mut out);
            if let Framing::Length(_) = framing {
                remaining -= input.len() as u64;
            }
        }
    }
}
