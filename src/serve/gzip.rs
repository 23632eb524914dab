//! Stage 5, relay: gzip by the contract's compression rules, applied as a body
//! flows (never buffered whole), to proxied, cached and static answers.
//!
//! Level 1 (nginx's `gzip_comp_level` default) on flate2's miniz_oxide
//! backend: the fastest of the backends tried at that level, as compact as
//! C zlib's level 1, and no C compiler needed (the comparison is in
//! perf/results/design-figures.md).

use std::io::Write;

use flate2::{write::GzEncoder, Compression};

use crate::{
    config::Gzip,
    http::headers::OutFraming,
    http::parse::{list, trim},
};

/// The deflate level (see the table above).
const LEVEL: u32 = 1;

/// Whether `Accept-Encoding` allows gzip (RFC 9110 section 12.5.3):
/// `gzip` or `x-gzip` with a non-zero q, or `*` with a non-zero q when gzip
/// is not named.
pub fn accepts<'a>(values: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut star = false;
    for item in values.flat_map(list) {
        let mut parts = item.split(|&b| b == b';');
        let coding = trim(parts.next().unwrap_or(b""));
        let q_zero = parts.any(|p| {
            let p = trim(p);
            p.len() >= 2
                && p[..2].eq_ignore_ascii_case(b"q=")
                && trim(&p[2..]).iter().all(|&b| b == b'0' || b == b'.')
        });
        if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
            return !q_zero;
        }
        if coding == b"*" {
            star = !q_zero;
        }
    }
    star
}

/// Whether an upstream's answer must reach the client byte for byte: it
/// is already encoded, or it says `Cache-Control: no-transform` (RFC 9111
/// section 5.2.2.6: no intermediary may transform its content).
pub fn as_is(headers: &[httparse::Header<'_>]) -> bool {
    let encoded = headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("content-encoding")
            && !h.value.eq_ignore_ascii_case(b"identity")
    });
    encoded || crate::cache::has_token(headers, "cache-control", b"no-transform")
}

/// The ETag of a compressed answer: a strong tag names the uncompressed
/// bytes, so it becomes weak (`W/`), as nginx's gzip does.
pub fn weak_etag(tag: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if tag.starts_with(b"\"") {
        std::borrow::Cow::Owned([&b"W/"[..], tag].concat())
    } else {
        std::borrow::Cow::Borrowed(tag)
    }
}

/// The media type of a `Content-Type` value, without parameters, trimmed.
pub fn media_type(content_type: &[u8]) -> &[u8] {
    let end = content_type
        .iter()
        .position(|&b| b == b';')
        .unwrap_or(content_type.len());
    trim(&content_type[..end])
}

/// The contract's rules for one answer. `length`: `None` when unknown;
/// `as_is`: the body must go as it came (`Body::as_is`).
///
/// A 206 is never compressed either, as in nginx: its `Content-Range`
/// counts the bytes of the uncompressed representation.
pub fn applies(
    g: &Gzip,
    status: u16,
    head_only: bool,
    content_type: Option<&[u8]>,
    as_is: bool,
    length: Option<u64>,
) -> bool {
    let bodiless = status == 204 || status == 304 || (100..200).contains(&status);
    if head_only || bodiless || status == 206 || as_is {
        return false;
    }
    let Some(ct) = content_type else {
        return false;
    };
    let media = media_type(ct);
    g.types
        .iter()
        .any(|t| t.as_bytes().eq_ignore_ascii_case(media))
        && length.is_none_or(|n| n >= g.min_length && n > 0)
}

/// A gzip stream that gives out what it has after every piece, so a body
/// reaches the client as it arrives (a sync flush costs ~5 bytes a piece).
pub struct Stream {
    enc: GzEncoder<Vec<u8>>,
}

impl Default for Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Stream {
    pub fn new() -> Self {
        Stream {
            enc: GzEncoder::new(Vec::with_capacity(16 * 1024), Compression::new(LEVEL)),
        }
    }

    /// Compresses `data` and hands the compressed bytes so far to `emit`.
    pub fn push(&mut self, data: &[u8], emit: impl FnOnce(&[u8])) {
        // Writing into a Vec cannot fail.
        let _ = self.enc.write_all(data);
        let _ = self.enc.flush();
        self.drain(emit);
    }

    /// Ends the stream (the gzip trailer) and hands out the rest.
    pub fn finish(&mut self, emit: impl FnOnce(&[u8])) {
        // Writing into a Vec cannot fail.
        let _ = self.enc.try_finish();
        self.drain(emit);
    }

    fn drain(&mut self, emit: impl FnOnce(&[u8])) {
        let buf = self.enc.get_mut();
        if !buf.is_empty() {
            emit(buf);
            buf.clear();
        }
    }
}

/// How a body ringside compresses is delimited: its length is unknown, so
/// chunked to an HTTP/1.1 client and close-delimited to HTTP/1.0.
pub fn framing(zip: bool, minor: u8) -> OutFraming {
    match (zip, minor) {
        (false, _) => OutFraming::AsIs,
        (true, 1) => OutFraming::Chunked,
        (true, _) => OutFraming::Close,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(v: &str) -> bool {
        accepts(std::iter::once(v.as_bytes()))
    }

    #[test]
    fn accept_encoding() {
        assert!(acc("gzip"));
        assert!(acc("deflate, gzip;q=0.5"));
        assert!(acc("GZIP"));
        assert!(acc("x-gzip"));
        assert!(acc("*"));
        assert!(acc("br, *;q=0.1"));
        assert!(!acc("gzip;q=0"));
        assert!(!acc("gzip; q=0.000"));
        assert!(!acc("*, gzip;q=0"));
        assert!(!acc("br, deflate"));
        assert!(!acc("identity"));
        assert!(!acc(""));
        assert!(!accepts(std::iter::empty()));
    }

    #[test]
    fn rules() {
        let g = Gzip {
            types: vec!["text/plain".into(), "application/json".into()],
            min_length: 100,
        };
        let ct = Some(&b"Text/Plain; charset=utf-8"[..]);
        assert!(applies(&g, 200, false, ct, false, None));
        assert!(applies(&g, 404, false, ct, false, Some(100)));
        assert!(!applies(&g, 200, false, ct, false, Some(99)));
        assert!(!applies(&g, 200, true, ct, false, None));
        assert!(!applies(&g, 204, false, ct, false, None));
        assert!(!applies(&g, 304, false, ct, false, None));
        assert!(!applies(&g, 200, false, ct, true, None));
        assert!(!applies(&g, 200, false, None, false, None));
        assert!(!applies(&g, 200, false, Some(b"text/html"), false, None));
        assert!(!applies(&g, 206, false, ct, false, None));
    }

    #[test]
    fn as_is_and_weak_etags() {
        let h = |name, value| httparse::Header { name, value };
        assert!(as_is(&[h("Content-Encoding", &b"br"[..])]));
        assert!(!as_is(&[h("content-encoding", &b"identity"[..])]));
        assert!(as_is(&[h("Cache-Control", &b"public, No-Transform"[..])]));
        assert!(!as_is(&[h("Cache-Control", &b"max-age=60"[..])]));
        assert_eq!(&*weak_etag(b"\"a\""), b"W/\"a\"");
        assert_eq!(&*weak_etag(b"W/\"a\""), b"W/\"a\"");
    }

    #[test]
    fn stream_round_trip() {
        use std::io::Read;
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut s = Stream::new();
        let mut out = Vec::new();
        for piece in data.chunks(7000) {
            s.push(piece, |b| out.extend_from_slice(b));
        }
        s.finish(|b| out.extend_from_slice(b));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }
}
