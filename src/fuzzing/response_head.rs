//! The `response_head` target: an upstream response head that parses is
//! written to the client as a head that parses again.

use crate::{
    http::{
        headers::{client_response, OutFraming, Persist},
        parse::{self, Framing, MAX_HEADERS},
    },
    http2::{head, hpack},
};

/// Parses `input[1..]` as an upstream response head (to a HEAD request when
/// bit 0 of `input[0]` is set; bit 1: the client speaks HTTP/1.1, bit 2:
/// it asked for keep-alive), writes it for the client with the framing
/// `proxy` picks, and parses that again: the same status, one head, and a
/// body framed as the upstream's was (re-chunked or close-delimited when
/// it was not delimited by length). The same head built for an HTTP/2
/// stream (`head::Native`) must say what that text, read as h2 fields,
/// says (`h2_agrees`).
pub fn response_head(input: &[u8]) {
    let Some((&pick, buf)) = input.split_first() else {
        return;
    };
    let head_request = pick & 1 != 0;
    let mut headers = [parse::NO_FIELD; MAX_HEADERS];
    let res = match parse::response(buf, &mut headers, head_request) {
        Ok(Some(res)) => res,
        Ok(None) => return,
        Err(e) => {
            assert_eq!(e.status, 502, "a bad upstream head is a 502: {e}");
            return;
        }
    };
    assert!(res.len <= buf.len(), "head length past the buffer");
    assert!(
        !(res.keep_alive && res.framing == Framing::UntilClose),
        "a close-delimited body on a kept connection"
    );
    let minor = pick >> 1 & 1;
    // As proxy::interpret decides.
    let (framing, expected) = match (res.framing, minor) {
        (Framing::Empty | Framing::Length(_), _) => (OutFraming::AsIs, res.framing),
        (_, 1) => (OutFraming::Chunked, Framing::Chunked),
        _ => (OutFraming::Close, Framing::UntilClose),
    };
    let persist = match (res.status, framing, pick & 4 != 0) {
        (101, _, _) => Persist::Upgrade,
        (_, OutFraming::Close, _) => Persist::Close,
        (_, _, true) if minor == 0 => Persist::KeepAlive,
        _ => Persist::Default,
    };
    let mut out = Vec::new();
    let add = [("X-Fuzz".to_string(), "1".to_string())];
    client_response(&mut out, &res, framing, persist, &add);
    let mut again = [parse::NO_FIELD; MAX_HEADERS + 8];
    match parse::response(&out, &mut again, head_request) {
        Ok(Some(back)) => {
            assert_eq!(back.status, res.status);
            assert_eq!(back.len, out.len(), "bytes after the client head");
            assert_eq!(
                back.framing, expected,
                "the client head frames the body otherwise"
            );
        }
        other => panic!(
            "the client head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
    let mut built = head::Native::new();
    client_response(&mut built, &res, framing, persist, &add);
    h2_agrees(built, &out, head_request);
}

/// A head built as an HPACK block and the same head written as text and
/// read back as h2 fields: both fail, or both give the same status and
/// framing, and the block is as long as those fields encoded one by one
/// (their order aside: the text path groups fields of one name).
fn h2_agrees(built: head::Native, text: &[u8], head_request: bool) {
    match (
        built.finish(head_request),
        head::response(text, head_request),
    ) {
        (Ok(b), Ok(Some(t))) => {
            assert_eq!(b.status, t.response.status());
            assert_eq!(b.framing, t.framing);
            let mut fields = Vec::new();
            hpack::status(&mut fields, b.status.as_u16());
            for (name, value) in t.response.headers() {
                hpack::field(&mut fields, name.as_str().as_bytes(), value.as_bytes());
            }
            assert_eq!(
                b.block.len(),
                fields.len(),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        (Err(_), Err(_)) => {}
        (b, t) => panic!(
            "built and parsed h2 heads disagree ({:?} / {:?}): {:?}",
            b.map(|b| b.status),
            t.map(|t| t.map(|t| t.response.status())),
            String::from_utf8_lossy(text)
        ),
    }
}
