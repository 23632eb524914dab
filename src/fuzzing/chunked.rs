//! The `chunked` target: the chunked decoder gives the same bytes and the
//! same end whichever way its input is split.

use crate::http::body::{chunk_head, Chunked, LAST_CHUNK};

/// Decodes `input[1..]` as a chunked body at once and in pieces of
/// `input[0]` bytes (at least 1): both give the same data, the same count of
/// consumed bytes and the same outcome. Then re-encodes the data with
/// `chunk_head` and checks that it decodes back.
pub fn chunked(input: &[u8]) {
    let Some((&step, body)) = input.split_first() else {
        return;
    };
    let whole = decode_in(body, body.len().max(1));
    let pieces = decode_in(body, usize::from(step.max(1)));
    assert_eq!(whole, pieces, "split at {step} decodes otherwise");
    let Ok(Decoded { data, .. }) = whole else {
        return;
    };
    let mut encoded = Vec::new();
    for part in data.chunks(usize::from(step.max(1))) {
        chunk_head(&mut encoded, part.len());
        encoded.extend_from_slice(part);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(LAST_CHUNK);
    let again = decode_in(&encoded, encoded.len());
    assert_eq!(
        again,
        Ok(Decoded {
            data,
            consumed: encoded.len(),
            done: true
        }),
        "re-encoded body decodes otherwise"
    );
}

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    data: Vec<u8>,
    consumed: usize,
    done: bool,
}

fn decode_in(body: &[u8], step: usize) -> Result<Decoded, &'static str> {
    let mut d = Chunked::new();
    let mut data = Vec::new();
    let mut consumed = 0;
    for piece in body.chunks(step) {
        let n = d.decode(piece, |b| data.extend_from_slice(b))?;
        assert!(n <= piece.len(), "consumed past the input");
        consumed += n;
        if n < piece.len() {
            assert!(d.is_done(), "stopped early before the end of the body");
            break;
        }
    }
    Ok(Decoded {
        data,
        consumed,
        done: d.is_done(),
    })
}
