//! Stage 5, relay: message body framing. The chunked decoder is a byte-level
//! state machine, so a chunk line split across two reads costs nothing extra
//! and no body byte is ever buffered twice.

use super::parse::is_tchar;

/// Longest trailer section we read (and discard), in bytes: trailers are
/// hop-by-hop here, so only their size needs bounding.
const MAX_TRAILERS: usize = 16 * 1024;

/// What went wrong in a chunked body (the caller picks 400 or 502).
pub type Invalid = &'static str;

/// Decoder for `Transfer-Encoding: chunked` (RFC 9112 section 7.1):
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    state: State,
    trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `chunk-size = 1*HEXDIG`: at most 15 significant hex digits, so the
    /// size always fits in a u64 (leading zeros are valid and free);
    /// `digits` counts every digit.
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after the size: only allowed before a `;` (the BWS of
    /// `chunk-ext`), never before the CRLF.
    Bws {
        size: u64,
    },
    /// `chunk-ext`: ignored, but it may not hold a bare CR or LF.
    Ext {
        size: u64,
    },
    /// The CR of the chunk line was seen; LF must follow.
    SizeLf {
        size: u64,
    },
    /// `chunk-data`: this many bytes still belong to the current chunk.
    Data {
        remaining: u64,
    },
    /// After the data: CR, then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// Inside a trailer field's name.
    TrailerName,
    /// Inside a trailer field's value.
    Trailer,
    /// CR of a trailer line seen.
    TrailerLf,
    /// CR of the final, empty line seen.
    EndLf,
    Done,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    pub const fn new() -> Self {
        Chunked {
            state: State::Size { size: 0, digits: 0 },
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds `input`; calls `data` with each run of chunk-data. Returns how
    /// many bytes were consumed: fewer than `input.len()` only once the body
    /// ended (what follows belongs to the next message).
    pub fn decode(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, Invalid> {
        let mut i = 0;
        while i < input.len() {
            if let State::Data { remaining } = self.state {
                let n = (input.len() - i).min(usize::try_from(remaining).unwrap_or(usize::MAX));
                data(&input[i..i + n]);
                i += n;
                let remaining = remaining - n as u64;
                self.state = if remaining == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining }
                };
                continue;
            }
            if self.state == State::Done {
                return Ok(i);
            }
            self.state = self.step(input[i])?;
            i += 1;
        }
        Ok(i)
    }

    fn step(&mut self, b: u8) -> Result<State, Invalid> {
        Ok(match self.state {
            State::Size { size, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if size >> 56 != 0 {
                        return Err("chunk size too large");
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    State::Size {
                        size: size << 4 | d,
                        digits: digits.saturating_add(1),
                    }
                }
                _ if digits == 0 => return Err("invalid chunk size"),
                b';' => State::Ext { size },
                b' ' | b'\t' => State::Bws { size },
                b'\r' => State::SizeLf { size },
                _ => return Err("invalid chunk size"),
            },
            State::Bws { size } => match b {
                b' ' | b'\t' => State::Bws { size },
                b';' => State::Ext { size },
                _ => return Err("whitespace after a chunk size"),
            },
            State::Ext { size } => match b {
                b'\r' => State::SizeLf { size },
                b'\n' => return Err("bare LF in a chunk extension"),
                b'\t' | b' '..=b'~' | 0x80..=0xff => State::Ext { size },
                _ => return Err("control byte in a chunk extension"),
            },
            State::SizeLf { size } => match (b, size) {
                (b'\n', 0) => State::TrailerStart,
                (b'\n', _) => State::Data { remaining: size },
                _ => return Err("bare CR in a chunk line"),
            },
            State::Data { .. } | State::Done => unreachable!("handled in decode"),
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err("chunk data longer than its size"),
            },
            State::DataLf => match b {
                b'\n' => State::Size { size: 0, digits: 0 },
                _ => return Err("bare CR after chunk data"),
            },
            State::TrailerStart => match b {
                b'\r' => State::EndLf,
                b'\n' => return Err("bare LF in the trailer section"),
                b' ' | b'\t' => return Err("obs-fold in the trailer section"),
                _ if is_tchar(b) => self.trailer(State::TrailerName)?,
                _ => return Err("invalid trailer field name"),
            },
            State::TrailerName => match b {
                b':' => self.trailer(State::Trailer)?,
                _ if is_tchar(b) => self.trailer(State::TrailerName)?,
                _ => return Err("invalid trailer field name"),
            },
            State::Trailer => match b {
                b'\r' => State::TrailerLf,
                b'\n' => return Err("bare LF in the trailer section"),
                b'\t' | b' '..=b'~' | 0x80..=0xff => self.trailer(State::Trailer)?,
                _ => return Err("control byte in a trailer field"),
            },
            State::TrailerLf => match b {
                b'\n' => State::TrailerStart,
                _ => return Err("bare CR in the trailer section"),
            },
            State::EndLf => match b {
                b'\n' => State::Done,
                _ => return Err("bare CR at the end of a chunked body"),
            },
        })
    }

    fn trailer(&mut self, next: State) -> Result<State, Invalid> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILERS {
            return Err("trailer section too large");
        }
        Ok(next)
    }
}

/// Appends the chunk-size line for a chunk of `len` bytes.
pub fn chunk_head(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> Result<(Vec<u8>, usize, bool), Invalid> {
        let mut d = Chunked::new();
        let mut out = Vec::new();
        let mut used = 0;
        // Byte by byte, to prove that every split point works.
        for i in 0..input.len() {
            if d.is_done() {
                break;
            }
            used += d.decode(&input[i..=i], |b| out.extend_from_slice(b))?;
        }
        Ok((out, used, d.is_done()))
    }

    #[test]
    fn decodes_with_extensions_and_trailers() {
        let (out, used, done) =
            run(b"5;a=b\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\nNEXT").unwrap();
        assert_eq!(out, b"hello!");
        assert!(done);
        assert_eq!(used, 33);
    }

    #[test]
    fn rejects_smuggling_shapes() {
        for bad in [
            &b"-5\r\nhello\r\n0\r\n\r\n"[..],
            b"5\nhello\n0\n\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"\r\n",
            b"5\rhello",
            b"5\r\nhelloX\r\n",
            b"0\r\nX: a\nb\r\n\r\n",
            b"0\r\nBad Header\r\n\r\n",
            b"0\r\nX : 1\r\n\r\n",
            b"0\r\n: 1\r\n\r\n",
            b"0\r\nX: 1\r\n folded\r\n\r\n",
            b"0\r\nX: a\x01b\r\n\r\n",
        ] {
            assert!(run(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn leading_zeros_do_not_count_against_the_size_bound() {
        let mut zeros = vec![b'0'; 40];
        zeros.extend_from_slice(b"5\r\nhello\r\n0000\r\n\r\n");
        let (out, _, done) = run(&zeros).unwrap();
        assert_eq!((&out[..], done), (&b"hello"[..], true));
        // 15 significant digits pass the size check; 16 do not.
        assert_ne!(run(b"00fffffffffffffff\r\n"), Err("chunk size too large"));
        assert_eq!(run(b"0ffffffffffffffff\r\n"), Err("chunk size too large"));
    }

    #[test]
    fn whitespace_before_an_extension_is_allowed() {
        let (out, _, done) = run(b"5 ;x\r\nhello\r\n0\r\n\r\n").unwrap();
        assert_eq!(out, b"hello");
        assert!(done);
    }

    #[test]
    fn chunk_head_is_lower_hex() {
        let mut v = Vec::new();
        chunk_head(&mut v, 0x1a2f);
        chunk_head(&mut v, 0);
        assert_eq!(v, b"1a2f\r\n0\r\n");
    }
}
