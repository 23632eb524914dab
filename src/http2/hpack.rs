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
mod tests {
    use super::*;

    #[test]
    fn integers_are_the_rfc_examples() {
        // RFC 7541 C.1.1-C.1.3, and the 7-bit prefix's edge.
        for (n, prefix, want) in [
            (10, 5, &[0x0a][..]),
            (1337, 5, &[0x1f, 0x9a, 0x0a]),
            (42, 8, &[0x2a]),
            (127, 7, &[0x7f, 0x00]),
            (300, 7, &[0x7f, 0xad, 0x01]),
        ] {
            let mut out = Vec::new();
            integer(&mut out, 0, prefix, n);
            assert_eq!(out, want, "{n}");
        }
    }

    #[test]
    fn statuses_and_fields_are_the_bytes_the_rfc_gives() {
        let mut out = Vec::new();
        status(&mut out, 200);
        assert_eq!(out, [0x88]); // as RFC 7541 C.5.1 begins
        assert_eq!(out.len(), status_len(200));
        out.clear();
        status(&mut out, 502);
        assert_eq!(out, b"\x08\x03502");
        assert_eq!(out.len(), status_len(502));
        out.clear();
        // Name by static index 31 (15 + 16), value literal.
        field(&mut out, b"content-type", b"text/plain");
        assert_eq!(out, b"\x0f\x10\x0atext/plain");
        out.clear();
        // A literal name; a value of 300 bytes (127 + 173).
        field(&mut out, b"x-long", "v".repeat(300).as_bytes());
        assert_eq!(out[..10], *b"\x00\x06x-long\x7f\xad");
        assert_eq!((out[10], out.len()), (0x01, 11 + 300));
        out.clear();
        field(&mut out, b"www-authenticate", b"Basic");
        assert_eq!(out, b"\x0f\x2e\x05Basic");
        // Appendix A's indices for a few more.
        let some = [("accept-ranges", 18), ("content-length", 28), ("date", 33)];
        for (name, at) in some.into_iter().chain([("server", 54), ("set-cookie", 55)]) {
            assert_eq!(name_index(name.as_bytes()), Some(at), "{name}");
        }
        assert_eq!(name_index(b"x-other"), None);
    }
}
