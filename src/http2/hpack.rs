//! A response head as an HPACK header block (RFC 7541), written by ringside
//! and sent as it is (`h2`'s `SendResponse::send_response_encoded`).
//!
//! Only two representations are used: a field of the static table by its
//! index (the common `:status` values) and a literal without indexing
//! (6.2.2), with the name by its static index where it has one. Nothing
//! enters the connection's dynamic table, so `h2`'s own encoder, which
//! still encodes interim heads and trailers, and the client's decoder stay
//! in step. Strings go without Huffman coding: a few more bytes on the
//! wire for no coding work per field.

/// Appends `:status` (the caller checked `100..=999`): `status_len`
/// bytes.
pub fn status(out: &mut Vec<u8>, code: u16) {
    if let Some(index) = static_status(code) {
        out.push(0x80 | index); // indexed field (6.1)
        return;
    }
    let digits = [
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ];
    integer(out, 0x00, 4, 8); // literal without indexing, name `:status`
    string(out, &digits);
}

/// The bytes `status` appends for `code`.
pub fn status_len(code: u16) -> usize {
    match static_status(code) {
        Some(_) => 1,
        None => 5,
    }
}

/// The static table's entry for `:status` with this value (Appendix A).
fn static_status(code: u16) -> Option<u8> {
    Some(match code {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => return None,
    })
}

/// Appends one field; `name` is lowercase, as HTTP/2 requires (RFC 9113
/// 8.2.1).
pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    match name_index(name) {
        Some(index) => integer(out, 0x00, 4, index),
        None => {
            out.push(0x00);
            string(out, name);
        }
    }
    string(out, value);
}

/// A string literal without Huffman coding (5.2).
fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// An integer with an N-bit prefix (5.1); `first` holds the bits above it.
fn integer(out: &mut Vec<u8>, first: u8, prefix: u32, n: usize) {
    let max = (1usize << prefix) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = n - max;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// The static table's index of a response field's name (Appendix A).
fn name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"accept-ranges" => 18,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"date" => 33,
        b"etag" => 34,
        b"expires" => 36,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"proxy-authenticate" => 48,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RFC 7541 Appendix A, the names.
    const STATIC: [&str; 61] = [
        ":authority",
        ":method",
        ":method",
        ":path",
        ":path",
        ":scheme",
        ":scheme",
        ":status",
        ":status",
        ":status",
        ":status",
        ":status",
        ":status",
        ":status",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "accept",
        "access-control-allow-origin",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-range",
        "content-type",
        "cookie",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "link",
        "location",
        "max-forwards",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "refresh",
        "retry-after",
        "server",
        "set-cookie",
        "strict-transport-security",
        "transfer-encoding",
        "user-agent",
        "vary",
        "via",
        "www-authenticate",
    ];
    const STATUS: [&str; 7] = ["200", "204", "206", "304", "400", "404", "500"];

    fn read_int(b: &[u8], at: &mut usize, prefix: u32) -> usize {
        let max = (1usize << prefix) - 1;
        let mut n = b[*at] as usize & max;
        *at += 1;
        if n < max {
            return n;
        }
        let mut shift = 0;
        loop {
            let byte = b[*at];
            *at += 1;
            n += ((byte & 0x7f) as usize) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return n;
            }
        }
    }

    fn read_str(b: &[u8], at: &mut usize) -> String {
        assert_eq!(b[*at] & 0x80, 0, "no Huffman coding");
        let n = read_int(b, at, 7);
        let s = String::from_utf8(b[*at..*at + n].to_vec()).unwrap();
        *at += n;
        s
    }

    /// Decodes a block of the two representations written here; any other
    /// (an indexed dynamic entry, incremental indexing) fails the test.
    pub(crate) fn decode(b: &[u8]) -> Vec<(String, String)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < b.len() {
            if b[at] & 0x80 != 0 {
                let i = read_int(b, &mut at, 7);
                assert!((8..=14).contains(&i), "indexed {i}");
                out.push((":status".into(), STATUS[i - 8].into()));
                continue;
            }
            assert_eq!(b[at] & 0xf0, 0, "only literals without indexing");
            let i = read_int(b, &mut at, 4);
            let name = match i {
                0 => read_str(b, &mut at),
                i => STATIC[i - 1].to_string(),
            };
            out.push((name, read_str(b, &mut at)));
        }
        out
    }

    #[test]
    fn integers_are_the_rfc_examples() {
        // RFC 7541 C.1.1-C.1.3, with a 5-bit prefix; and the 7-bit edge.
        for (n, prefix, want) in [
            (10, 5, &[0x0a][..]),
            (1337, 5, &[0x1f, 0x9a, 0x0a]),
            (42, 8, &[0x2a]),
            (127, 7, &[0x7f, 0x00]),
        ] {
            let mut out = Vec::new();
            integer(&mut out, 0, prefix, n);
            assert_eq!(out, want, "{n}");
            assert_eq!(read_int(&out, &mut 0, prefix), n);
        }
    }

    #[test]
    fn statuses_and_fields_decode_as_written() {
        let mut out = Vec::new();
        status(&mut out, 200);
        assert_eq!(out.len(), status_len(200));
        status(&mut out, 502);
        assert_eq!(out.len(), 1 + status_len(502));
        field(&mut out, b"content-type", b"text/plain");
        field(&mut out, b"x-long", "v".repeat(300).as_bytes());
        field(&mut out, b"www-authenticate", b"Basic");
        assert_eq!(out[0], 0x88); // RFC 7541 C.3.1's first field
        let want = [
            (":status", "200".to_string()),
            (":status", "502".to_string()),
            ("content-type", "text/plain".to_string()),
            ("x-long", "v".repeat(300)),
            ("www-authenticate", "Basic".to_string()),
        ];
        let got = decode(&out);
        assert_eq!(got.len(), want.len());
        for ((n, v), (wn, wv)) in got.iter().zip(want) {
            assert_eq!((n.as_str(), v), (wn, &wv));
        }
        for (i, name) in STATIC.iter().enumerate().skip(14) {
            if let Some(at) = name_index(name.as_bytes()) {
                assert_eq!(at, i + 1, "{name}");
            }
        }
    }
}
