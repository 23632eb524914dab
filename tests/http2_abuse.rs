//! HTTP/2 bad input, frame by frame: each protocol error gets the GOAWAY or
//! RST_STREAM code RFC 9113 gives it, each flood ends its own connection,
//! and after every case another connection on the same single worker is
//! served in full.

mod common;

use common::h2kit::*;
use common::*;

fn proxy() -> (Upstream, H2Proxy) {
    let up = Upstream::echo();
    let p = H2Proxy::start(up.addr(), 1, "max_request_head = \"8k\"", "");
    (up, p)
}

/// A fresh connection gets a whole answer.
fn bystander(p: &H2Proxy) {
    let mut raw = Raw::open(p.addr(), &p.client);
    raw.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&get_fields("/bystander")),
    ));
    let data = raw
        .until(|f| f.ty == DATA && f.stream == 1 && f.flags & END_STREAM != 0)
        .expect("the bystander is answered");
    assert_eq!(data.payload, b"target=/bystander\nbodylen=0\n");
}

/// Connection errors: (what, bytes after the preface and SETTINGS, code).
fn connection_errors() -> Vec<(&'static str, Vec<u8>, u32)> {
    let get = block(&get_fields("/"));
    let mut too_big = frame(DATA, 0, 1, &vec![0; 16_385]);
    too_big.splice(0..0, frame(HEADERS, END_HEADERS, 1, &get));
    vec![
        ("DATA on stream 0", frame(DATA, 0, 0, b"x"), PROTOCOL_ERROR),
        (
            "HEADERS on an even stream",
            frame(HEADERS, END_HEADERS, 2, &get),
            PROTOCOL_ERROR,
        ),
        (
            "SETTINGS of 5 bytes",
            frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0]),
            FRAME_SIZE_ERROR,
        ),
        (
            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
            frame(SETTINGS, 0, 0, &[0, 4, 0x80, 0, 0, 0]),
            FLOW_CONTROL_ERROR,
        ),
        (
            "SETTINGS_ENABLE_PUSH = 2",
            frame(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 2]),
            PROTOCOL_ERROR,
        ),
        (
            "WINDOW_UPDATE of 0 on the connection",
            frame(WINDOW_UPDATE, 0, 0, &[0; 4]),
            PROTOCOL_ERROR,
        ),
        (
            "PING of 7 bytes",
            frame(PING, 0, 0, &[0; 7]),
            FRAME_SIZE_ERROR,
        ),
        (
            "DATA over SETTINGS_MAX_FRAME_SIZE",
            too_big,
            FRAME_SIZE_ERROR,
        ),
        (
            "an HPACK index past the tables",
            frame(HEADERS, END_HEADERS, 1, &[0xff, 0x7f]),
            COMPRESSION_ERROR,
        ),
        // Malformed (RFC 9113 8.2.1); h2 ends the connection, which 5.4.1
        // allows for any stream error.
        (
            "an uppercase field name",
            {
                let mut f = get_fields("/");
                f.push(("X-Upper", "1".into()));
                frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(&f))
            },
            PROTOCOL_ERROR,
        ),
        (
            "RST_STREAM of 3 bytes",
            frame(RST_STREAM, 0, 1, &[0; 3]),
            FRAME_SIZE_ERROR,
        ),
        (
            "GOAWAY of 4 bytes",
            frame(GOAWAY, 0, 0, &[0; 4]),
            FRAME_SIZE_ERROR,
        ),
        (
            "SETTINGS ACK with a payload",
            frame(SETTINGS, ACK, 0, &[0, 3, 0, 0, 0, 1]),
            FRAME_SIZE_ERROR,
        ),
        (
            "PING on a stream",
            frame(PING, 0, 1, &[0; 8]),
            PROTOCOL_ERROR,
        ),
        (
            "CONTINUATION without HEADERS",
            frame(CONTINUATION, END_HEADERS, 1, &get),
            PROTOCOL_ERROR,
        ),
        (
            "connection window overflow",
            frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()),
            FLOW_CONTROL_ERROR,
        ),
    ]
}

#[test]
fn connection_errors_get_goaway_with_their_code() {
    let (_up, p) = proxy();
    let mut wrong = Vec::new();
    for (what, bytes, code) in connection_errors() {
        let mut raw = Raw::open(p.addr(), &p.client);
        raw.send(&bytes);
        let got = raw.goaway();
        if got != Some(code) {
            wrong.push(format!("{what}: {got:?} instead of {code}"));
        }
        assert!(raw.closed(), "{what}: the connection ends");
        bystander(&p);
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn stream_errors_get_rst_stream_and_the_connection_goes_on() {
    let (_up, p) = proxy();
    let mut fields = get_fields("/");
    let conn_specific = {
        let mut f = fields.clone();
        f.push(("connection", "keep-alive".into()));
        f
    };
    fields.retain(|(n, _)| *n != ":path");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a connection-specific field",
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(&conn_specific)),
        ),
        (
            "no :path",
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(&fields)),
        ),
        ("WINDOW_UPDATE of 0 on a stream", {
            let mut b = frame(HEADERS, END_HEADERS, 1, &block(&get_fields("/")));
            b.extend(frame(WINDOW_UPDATE, 0, 1, &[0; 4]));
            b
        }),
        ("DATA beyond content-length", {
            let mut f = get_fields("/");
            f[0].1 = "POST".into();
            f.push(("content-length", "2".into()));
            let mut b = frame(HEADERS, END_HEADERS, 1, &block(&f));
            b.extend(frame(DATA, END_STREAM, 1, b"12345"));
            b
        }),
    ];
    let priority = {
        let mut b = frame(HEADERS, END_HEADERS, 1, &block(&get_fields("/")));
        b.extend(frame(2, 0, 1, &[0; 4])); // PRIORITY of 4 bytes
        b
    };
    let mut wrong = Vec::new();
    for (what, bytes, code) in cases
        .into_iter()
        .map(|(w, b)| (w, b, PROTOCOL_ERROR))
        .chain([("PRIORITY of 4 bytes", priority, FRAME_SIZE_ERROR)])
    {
        let mut raw = Raw::open(p.addr(), &p.client);
        raw.send(&bytes);
        let got = raw.reset_of(1);
        if got != Some(code) {
            wrong.push(format!("{what}: {got:?}"));
            continue;
        }
        // The same connection serves its next stream.
        raw.send(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &block(&get_fields("/next")),
        ));
        let data = raw.until(|f| f.ty == DATA && f.stream == 3);
        assert!(data.is_some(), "{what}: the connection goes on");
        bystander(&p);
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_preface_followed_by_garbage_gets_goaway() {
    let (_up, p) = proxy();
    let mut raw = Raw::open(p.addr(), &p.client);
    // Read as a frame header, "GET" is a length of 4.6 MB: past
    // SETTINGS_MAX_FRAME_SIZE (RFC 9113 4.2).
    raw.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(raw.goaway(), Some(FRAME_SIZE_ERROR));
    // A preface cut into garbage.
    let mut s = tls_connect(p.addr(), &p.client);
    use std::io::{Read, Write};
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.len() < 200, "{}", show(&out));
    // Not even a preface: the connection is closed.
    let mut s = tls_connect(p.addr(), &p.client);
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(!out.starts_with(b"HTTP/1.1 200"), "{}", show(&out));
    bystander(&p);
}

#[test]
fn rapid_reset_ends_the_connection_with_enhance_your_calm() {
    let (up, p) = proxy();
    let mut raw = Raw::open(p.addr(), &p.client);
    let mut flood = Vec::new();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        flood.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &block(&get_fields("/reset")),
        ));
        flood.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
    }
    let _ = raw.try_send(&flood);
    assert_eq!(raw.goaway(), Some(ENHANCE_YOUR_CALM));
    assert!(raw.closed());
    bystander(&p);
    // Far fewer than the 2,000 streams reached the upstream.
    let reached = up.heads_with("/reset");
    assert!(
        reached < 400,
        "{reached} reset streams reached the upstream"
    );
}

#[test]
fn a_continuation_flood_ends_the_connection() {
    let (_up, p) = proxy();
    let mut raw = Raw::open(p.addr(), &p.client);
    let mut flood = frame(HEADERS, 0, 1, &block(&get_fields("/")));
    let piece = hpack(&[("x-flood", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")]);
    for _ in 0..20_000 {
        flood.extend(frame(CONTINUATION, 0, 1, &piece));
    }
    let _ = raw.try_send(&flood);
    let code = raw.goaway();
    assert!(
        matches!(
            code,
            Some(ENHANCE_YOUR_CALM) | Some(PROTOCOL_ERROR) | Some(COMPRESSION_ERROR)
        ),
        "{code:?}"
    );
    assert!(raw.closed());
    bystander(&p);
}

#[test]
fn a_header_list_over_max_request_head_gets_431() {
    let (up, p) = proxy();
    let mut raw = Raw::open(p.addr(), &p.client);
    let mut f = get_fields("/big-head");
    f.push(("x-big", "b".repeat(12_000)));
    let b = block(&f);
    let mut bytes = frame(HEADERS, 0, 1, &b[..8000]);
    bytes.extend(frame(CONTINUATION, END_HEADERS, 1, &b[8000..]));
    raw.send(&bytes);
    let h = raw
        .until(|f| f.ty == HEADERS && f.stream == 1)
        .expect("an answer");
    // h2 encodes ":status: 431" as a literal on static index 8 with the
    // Huffman-coded value "431" (0x69 0x90 0xff).
    assert!(
        h.payload.windows(4).any(|w| w == [0x83, 0x69, 0x90, 0xff]),
        "{}",
        show(&h.payload)
    );
    assert_eq!(up.heads_with("/big-head"), 0);
    bystander(&p);
}

#[test]
fn settings_and_ping_floods_leave_the_worker_serving() {
    let (_up, p) = proxy();
    for (what, ty, one, least) in [
        // Our first SETTINGS is acknowledged too: at least one more.
        (
            "SETTINGS",
            SETTINGS,
            frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]),
            2,
        ),
        ("PING", PING, frame(PING, 0, 0, &[7; 8]), 1),
    ] {
        let mut raw = Raw::open(p.addr(), &p.client);
        raw.s
            .sock
            .set_write_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let flood: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * 50_000)
            .collect();
        // The client does not read while it floods: the server must not
        // queue answers without bound (it stops reading, or ends the
        // connection), and the worker keeps serving others meanwhile.
        let writer = std::thread::spawn(move || {
            let _ = raw.try_send(&flood);
            raw
        });
        bystander(&p);
        let mut raw = writer.join().unwrap();
        let acks = std::iter::from_fn(|| raw.next())
            .take(100)
            .filter(|f| f.ty == ty && f.flags & ACK != 0)
            .count();
        assert!(acks >= least, "{what}: {acks} answered");
        bystander(&p);
    }
}

#[test]
fn streams_past_the_concurrency_cap_are_refused() {
    let hold = Upstream::start(|c: &mut UpConn| {
        if c.read_request().is_some() {
            c.hold_until_closed();
        }
    });
    let p = H2Proxy::start(hold.addr(), 1, "", "");
    let mut raw = Raw::open(p.addr(), &p.client);
    let settings = raw
        .until(|f| f.ty == SETTINGS && f.flags & ACK == 0)
        .unwrap();
    let max = settings
        .payload
        .chunks(6)
        .find(|s| s[..2] == [0, 3])
        .map(|s| u32::from_be_bytes(s[2..].try_into().unwrap()));
    assert_eq!(max, Some(128));
    let mut bytes = Vec::new();
    for i in 0..129u32 {
        bytes.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            2 * i + 1,
            &block(&get_fields("/hold")),
        ));
    }
    raw.send(&bytes);
    assert_eq!(raw.reset_of(2 * 128 + 1), Some(REFUSED_STREAM));
}

#[test]
fn an_idle_connection_gets_goaway_after_keepalive_timeout() {
    let up = Upstream::echo();
    let p = H2Proxy::start(up.addr(), 1, "keepalive_timeout = \"1s\"", "");
    let mut raw = Raw::open(p.addr(), &p.client);
    raw.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&get_fields("/once")),
    ));
    assert!(raw.until(|f| f.ty == DATA && f.stream == 1).is_some());
    let started = std::time::Instant::now();
    let g = raw.until(|f| f.ty == GOAWAY).expect("GOAWAY when idle");
    assert_eq!(g.code(), NO_ERROR);
    assert!(started.elapsed() >= std::time::Duration::from_millis(700));
    // h2 shuts down in two steps (RFC 9113 6.8): GOAWAY naming 2^31-1 and
    // a PING; once the PING is answered, GOAWAY naming the last stream.
    let mut last = u32::from_be_bytes(g.payload[..4].try_into().unwrap());
    while let Some(f) = raw.next() {
        match f.ty {
            PING if f.flags & ACK == 0 => raw.send(&frame(PING, ACK, 0, &f.payload)),
            GOAWAY => last = u32::from_be_bytes(f.payload[..4].try_into().unwrap()),
            _ => {}
        }
    }
    assert_eq!(last, 1, "the final GOAWAY names the stream served");
}
