//! An answer's header block over HTTP/2, read byte by byte off the wire.
//! ringside encodes it itself (static-table references and literals
//! without indexing, no Huffman coding), so the block must carry what the
//! HTTP/1.1 answer says, leave the client's dynamic table untouched,
//! still open with the table size update a client's SETTINGS asked for
//! (RFC 7541 4.2), and go on in CONTINUATION frames past the frame size.

use crate::common::h2kit::*;
use crate::common::*;

/// RFC 7541 Appendix A: the names of the entries a response block uses.
fn static_name(i: usize) -> &'static str {
    match i {
        8..=14 => ":status",
        28 => "content-length",
        31 => "content-type",
        33 => "date",
        54 => "server",
        55 => "set-cookie",
        other => panic!("static index {other} in a response block"),
    }
}

fn int(b: &[u8], at: &mut usize, prefix: u32) -> usize {
    let max = (1usize << prefix) - 1;
    let mut n = b[*at] as usize & max;
    *at += 1;
    if n == max {
        let mut shift = 0;
        loop {
            let byte = b[*at];
            *at += 1;
            n += ((byte & 0x7f) as usize) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
    }
    n
}

fn string(b: &[u8], at: &mut usize) -> String {
    assert_eq!(b[*at] & 0x80, 0, "a Huffman-coded string");
    let n = int(b, at, 7);
    let s = String::from_utf8(b[*at..*at + n].to_vec()).unwrap();
    *at += n;
    s
}

/// The fields of a block that may hold only indexed `:status` values and
/// literals without indexing; any representation that would add to the
/// dynamic table or read from it fails the test.
fn fields(b: &[u8]) -> Vec<(String, String)> {
    const STATUS: [&str; 7] = ["200", "204", "206", "304", "400", "404", "500"];
    let mut at = 0;
    let mut out = Vec::new();
    while at < b.len() {
        let first = b[at];
        if first & 0x80 != 0 {
            let i = int(b, &mut at, 7);
            assert!((8..=14).contains(&i), "indexed field {i}");
            out.push((":status".into(), STATUS[i - 8].into()));
            continue;
        }
        assert_eq!(first & 0xf0, 0, "representation {first:#04x}");
        let name = match int(b, &mut at, 4) {
            0 => string(b, &mut at),
            i => static_name(i).to_string(),
        };
        out.push((name, string(b, &mut at)));
    }
    out
}

/// The payload of the HEADERS frame that answers `stream`.
fn answer_block(raw: &mut Raw, stream: u32, path: &str) -> Vec<u8> {
    let frames = raw.get(stream, path).expect("an answer");
    let headers = frames
        .iter()
        .find(|f| f.ty == HEADERS && f.stream == stream)
        .expect("a HEADERS frame");
    assert_ne!(headers.flags & END_HEADERS, 0, "one frame holds the block");
    headers.payload.clone()
}

#[test]
fn an_answer_block_is_static_references_and_plain_literals() {
    let long = format!("X-{}", "Long".repeat(20));
    let teapot = format!(
        "HTTP/1.1 418 I'm a teapot\r\nContent-Type: text/plain\r\n{long}: {}\r\n\
         Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nConnection: keep-alive, x-hop\r\n\
         X-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\n\r\nhello",
        "v".repeat(300)
    );
    // Forty 480-byte fields: a block past the 16,384-byte frame size.
    let big: String = (0..40)
        .map(|i| format!("X-F{i}: {}\r\n", "a".repeat(480)))
        .collect();
    let big = format!("HTTP/1.1 200 OK\r\n{big}Content-Length: 2\r\n\r\nok");
    let up = Upstream::start(move |c: &mut UpConn| {
        while let Some(req) = c.read_request() {
            let out = match req.target.as_str() {
                "/teapot" => teapot.clone().into_bytes(),
                "/big" => big.clone().into_bytes(),
                "/twice" => b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\
                    Content-Length: 2\r\n\r\nok"
                    .to_vec(),
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            };
            if !c.write(&out) {
                return;
            }
        }
    });
    let p = H2Proxy::start(up.addr(), 1, "max_request_head = \"64k\"", "");
    let mut raw = Raw::bare(p.addr(), &p.client);
    raw.send(PREFACE);
    // SETTINGS_HEADER_TABLE_SIZE = 0: the next block must open with a
    // dynamic table size update to 0 (0x20).
    raw.send(&frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0, 0]));

    let teapot = answer_block(&mut raw, 1, "/teapot");
    assert_eq!(
        &teapot[..6],
        b"\x20\x08\x03418",
        "size update, then :status"
    );
    let mut got = fields(&teapot[1..]);
    let date = got.iter().position(|(n, _)| n == "date").expect("a date");
    got.remove(date);
    got.sort();
    let mut want: Vec<(String, String)> = [
        (":status", "418".to_string()),
        ("server", "ringside".into()),
        ("content-type", "text/plain".into()),
        (&long.to_ascii_lowercase(), "v".repeat(300)),
        ("set-cookie", "a=1".into()),
        ("set-cookie", "b=2".into()),
        ("content-length", "5".into()),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect();
    want.sort();
    assert_eq!(got, want);

    // The update was owed once; a 200 is the static entry 8.
    let ok = answer_block(&mut raw, 3, "/ok");
    assert_eq!(ok[0], 0x88, "{ok:02x?}");
    assert!(fields(&ok).contains(&("content-length".into(), "2".into())));

    // A block larger than a frame goes on in CONTINUATION frames, the
    // last one with END_HEADERS, as h2 splits its own blocks.
    raw.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        5,
        &block(&get_fields("/big")),
    ));
    let (last, seen) =
        raw.until_seen(|f| f.ty == DATA && f.stream == 5 && f.flags & END_STREAM != 0);
    assert_eq!(last.expect("the answer's body").payload, b"ok");
    let parts: Vec<&Frame> = seen.iter().filter(|f| f.stream == 5).collect();
    let kinds: Vec<(u8, u8, usize)> = parts
        .iter()
        .map(|f| (f.ty, f.flags, f.payload.len()))
        .collect();
    assert_eq!(
        (kinds[0].0, kinds[0].1, kinds[0].2),
        (HEADERS, 0, 16_384),
        "{kinds:?}"
    );
    assert_eq!(
        (kinds[1].0, kinds[1].1),
        (CONTINUATION, END_HEADERS),
        "{kinds:?}"
    );
    let whole: Vec<u8> = parts.iter().flat_map(|f| f.payload.clone()).collect();
    let got = fields(&whole);
    assert_eq!(
        got.iter()
            .filter(|(n, v)| n.starts_with("x-f") && v.len() == 480)
            .count(),
        40
    );

    // A length the upstream said twice, and as a list, is one field with
    // one value: an HTTP/2 client refuses anything else.
    let twice = answer_block(&mut raw, 7, "/twice");
    let lengths: Vec<_> = (fields(&twice).into_iter())
        .filter(|(n, _)| n == "content-length")
        .collect();
    assert_eq!(lengths, [("content-length".to_string(), "2".to_string())]);

    // Another connection, at the default table size, is served too.
    let mut other = Raw::open(p.addr(), &p.client);
    let ok = answer_block(&mut other, 1, "/ok");
    assert_eq!(ok[0], 0x88, "no size update owed: {ok:02x?}");
}
