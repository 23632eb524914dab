//! HTTP/2 bad input, frame by frame: each protocol error gets the GOAWAY or
//! RST_STREAM code RFC 9113 gives it, each flood ends its own connection,
//! and after every case another connection on the same single worker is
//! served in full.

use crate::common::h2kit::*;
use crate::common::*;
use std::time::Duration;

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
    assert!(raw.closed(), "the connection ends");
    // A preface cut into garbage, and no preface at all: an invalid preface
    // is a connection error PROTOCOL_ERROR, its GOAWAY optional (3.4). The
    // server's SETTINGS may come first; then the connection closes.
    for bad in [
        &b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ] {
        let mut raw = Raw::bare(p.addr(), &p.client);
        raw.send(bad);
        let mut frames = Vec::new();
        while let Some(f) = raw.next() {
            frames.push(f);
        }
        assert_eq!(raw.end, Some(End::Closed), "{}: closed", show(bad));
        let fine = frames.iter().all(|f| match f.ty {
            SETTINGS => f.flags & ACK == 0,
            GOAWAY => f.code() == PROTOCOL_ERROR,
            _ => false,
        });
        assert!(fine, "{}: {frames:?}", show(bad));
    }
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
    let mut last = g.last_stream();
    while let Some(f) = raw.next() {
        match f.ty {
            PING if f.flags & ACK == 0 => raw.send(&frame(PING, ACK, 0, &f.payload)),
            GOAWAY => last = f.last_stream(),
            _ => {}
        }
    }
    assert_eq!(raw.end, Some(End::Closed), "the connection ends");
    assert_eq!(last, 1, "the final GOAWAY names the stream served");
}

/// What the server must answer to a frame in a given stream state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// A connection error: GOAWAY with this code, then the connection ends.
    Goaway(u32),
    /// A stream error on stream 1: RST_STREAM with this code.
    Reset(u32),
    /// Nothing: the frame is allowed (or ignored) and the connection goes on.
    Nothing,
}

/// How stream 1 is brought to the state under test before the frame.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Stream 1 never opened.
    Idle,
    /// Stream 1 skipped: the client opened stream 3 first (5.1.1).
    Skipped,
    /// A request with a body under way (HEADERS without END_STREAM).
    Open,
    /// A request whose answer is held upstream (HEADERS with END_STREAM).
    HalfClosedRemote,
    /// Answered in full: END_STREAM both ways.
    ClosedByEndStream,
    /// Reset by the client (RST_STREAM CANCEL) while under way.
    ClosedByClientReset,
    /// Reset by the server (a WINDOW_UPDATE of 0 is a stream error).
    ClosedByServerReset,
}

/// Opens a raw connection and brings stream 1 to `state`.
fn in_state(p: &H2Proxy, state: State) -> Raw {
    let mut raw = Raw::open(p.addr(), &p.client);
    let hold = |end: u8| {
        let mut f = get_fields("/hold");
        f[0].1 = "POST".into();
        frame(HEADERS, END_HEADERS | end, 1, &block(&f))
    };
    match state {
        State::Idle => {}
        State::Skipped => assert!(raw.get(3, "/skip").is_some()),
        State::Open => raw.send(&hold(0)),
        State::HalfClosedRemote => raw.send(&hold(END_STREAM)),
        State::ClosedByEndStream => assert!(raw.get(1, "/done").is_some()),
        State::ClosedByClientReset => {
            raw.send(&hold(0));
            raw.send(&frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()));
        }
        State::ClosedByServerReset => {
            raw.send(&hold(0));
            raw.send(&frame(WINDOW_UPDATE, 0, 1, &[0; 4]));
            assert_eq!(raw.reset_of(1), Some(PROTOCOL_ERROR));
        }
    }
    raw
}

/// Every frame type a client can send, on stream `id`; its HEADERS hold a
/// request on an idle stream, trailers on another.
fn frames_on(id: u32, idle: bool) -> Vec<(&'static str, Vec<u8>)> {
    let mut promise = 2u32.to_be_bytes().to_vec();
    promise.extend(block(&get_fields("/pushed")));
    let fields = match idle {
        true => block(&get_fields("/late")),
        false => hpack(&[("x-late", "1")]),
    };
    vec![
        ("DATA", frame(DATA, 0, id, b"late")),
        ("DATA with END_STREAM", frame(DATA, END_STREAM, id, b"late")),
        ("HEADERS", frame(HEADERS, END_HEADERS, id, &fields)),
        (
            "HEADERS with END_STREAM",
            frame(HEADERS, END_HEADERS | END_STREAM, id, &fields),
        ),
        ("PRIORITY", frame(PRIORITY, 0, id, &[0, 0, 0, 0, 15])),
        ("RST_STREAM", frame(RST_STREAM, 0, id, &8u32.to_be_bytes())),
        (
            "WINDOW_UPDATE",
            frame(WINDOW_UPDATE, 0, id, &1000u32.to_be_bytes()),
        ),
        (
            "CONTINUATION",
            frame(CONTINUATION, END_HEADERS, id, &hpack(&[("x-late", "1")])),
        ),
        (
            "PUSH_PROMISE",
            frame(PUSH_PROMISE, END_HEADERS, id, &promise),
        ),
    ]
}

/// RFC 9113 5.1, state by state, for every frame a client can send. Where
/// the RFC leaves a choice (a frame on a closed stream: "MAY treat … as a
/// connection error of type STREAM_CLOSED"), the answer is the one ringside
/// gives whether h2 still holds the stream or has forgotten it: DATA gets
/// RST_STREAM STREAM_CLOSED (6.1), HEADERS GOAWAY PROTOCOL_ERROR (an
/// identifier not above those opened, 5.1.1), and WINDOW_UPDATE,
/// RST_STREAM and PRIORITY are ignored (5.1, 6.9). The reserved states
/// never occur: ringside does not push, and a client cannot (8.4).
fn want(state: State, what: &str) -> Want {
    use State::*;
    use Want::*;
    let kind = what.split(' ').next().unwrap();
    match (state, kind) {
        // 6.10: a CONTINUATION must follow an unfinished header block; 8.4:
        // a client cannot push.
        (_, "CONTINUATION" | "PUSH_PROMISE") => Goaway(PROTOCOL_ERROR),
        (_, "PRIORITY") => Nothing,
        // idle: only HEADERS or PRIORITY.
        (Idle, "HEADERS") => Nothing,
        (Idle, _) => Goaway(PROTOCOL_ERROR),
        // open: any frame; a second HEADERS must end the stream (8.1).
        (Open, "HEADERS") if !what.contains("END_STREAM") => Reset(PROTOCOL_ERROR),
        (Open, "RST_STREAM" | "WINDOW_UPDATE" | "DATA" | "HEADERS") => Nothing,
        // half-closed (remote): WINDOW_UPDATE, PRIORITY, RST_STREAM, else
        // a stream error STREAM_CLOSED.
        (HalfClosedRemote, "WINDOW_UPDATE" | "RST_STREAM") => Nothing,
        (HalfClosedRemote, _) => Reset(STREAM_CLOSED),
        // Closed by our RST_STREAM: late frames are processed and dropped.
        (ClosedByServerReset, _) => Nothing,
        // Closed by END_STREAM, by the client's RST_STREAM, or skipped.
        (_, "WINDOW_UPDATE" | "RST_STREAM") => Nothing,
        (_, "DATA") => Reset(STREAM_CLOSED),
        (_, _) => Goaway(PROTOCOL_ERROR),
    }
}

#[test]
fn every_stream_state_answers_each_frame_as_rfc_9113_says() {
    let up = Upstream::start(|c: &mut UpConn| {
        while let Some(req) = c.read_request() {
            if req.target == "/hold" {
                c.hold_until_closed();
                return;
            }
            if !c.write(&echo_response(&req)) {
                return;
            }
        }
    });
    let p = H2Proxy::start(up.addr(), 1, "", "");
    use State::*;
    let mut wrong = Vec::new();
    for state in [
        Idle,
        Skipped,
        Open,
        HalfClosedRemote,
        ClosedByEndStream,
        ClosedByClientReset,
        ClosedByServerReset,
    ] {
        for (what, bytes) in frames_on(1, matches!(state, Idle)) {
            let want = want(state, what);
            let case = format!("{what} in {state:?}");
            let mut raw = in_state(&p, state);
            raw.send(&bytes);
            let got = match want {
                Want::Goaway(_) => match raw.goaway() {
                    Some(code) if raw.closed() => Want::Goaway(code),
                    Some(code) => {
                        wrong.push(format!("{case}: GOAWAY {code} and still open"));
                        continue;
                    }
                    None => Want::Nothing,
                },
                _ => {
                    // The same connection serves a new stream; what came
                    // before that answer is what the frame was answered.
                    let Some(seen) = raw.get(101, "/next") else {
                        let g = raw.goaway();
                        wrong.push(format!("{case}: not served after it (GOAWAY {g:?})"));
                        continue;
                    };
                    match seen
                        .iter()
                        .find(|f| f.ty == GOAWAY || f.ty == RST_STREAM && f.stream == 1)
                    {
                        Some(f) if f.ty == GOAWAY => Want::Goaway(f.code()),
                        Some(f) => Want::Reset(f.code()),
                        None => Want::Nothing,
                    }
                }
            };
            if got != want {
                wrong.push(format!("{case}: {got:?} instead of {want:?}"));
            }
            if let Want::Goaway(_) = want {
                bystander(&p);
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_frame_or_header_block_left_unfinished_is_closed_after_client_header_timeout() {
    let up = Upstream::echo();
    let limits = "client_header_timeout = \"1s\"\nkeepalive_timeout = \"30s\"";
    let p = H2Proxy::start(up.addr(), 1, limits, "");
    let get = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&get_fields("/")),
    );
    let open_block = frame(HEADERS, END_STREAM, 1, &block(&get_fields("/")));
    let cases: [(&str, &[u8]); 3] = [
        ("a frame header cut short", &get[..5]),
        ("a payload cut short", &get[..get.len() - 3]),
        ("HEADERS without END_HEADERS", &open_block),
    ];
    // All at once: each must be closed about a second after it stopped.
    let mut conns: Vec<_> = cases
        .iter()
        .map(|(what, bytes)| {
            let mut raw = Raw::open(p.addr(), &p.client);
            raw.send(bytes);
            (what, raw, std::time::Instant::now())
        })
        .collect();
    for (what, raw, sent) in &mut conns {
        assert_eq!(raw.goaway(), Some(PROTOCOL_ERROR), "{what}");
        assert!(raw.closed(), "{what}: closed");
        let took = sent.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(3),
            "{what}: closed after {took:?}"
        );
    }
    bystander(&p);
}

#[test]
fn a_body_that_keeps_coming_in_pieces_is_not_cut_by_client_header_timeout() {
    let up = Upstream::echo();
    let limits = "client_header_timeout = \"1s\"\nkeepalive_timeout = \"30s\"";
    let p = H2Proxy::start(up.addr(), 1, limits, "");
    let mut raw = Raw::open(p.addr(), &p.client);
    let mut f = get_fields("/slow-body");
    f[0].1 = "POST".into();
    f.push(("content-length", "1000".into()));
    raw.send(&frame(HEADERS, END_HEADERS, 1, &block(&f)));
    // Ten DATA frames of 100 bytes, each sent in two halves 300 ms apart:
    // at every moment some frame is unfinished, for 3 s in all, but none
    // stays unfinished for long.
    let frames: Vec<u8> = (0..10)
        .flat_map(|i| frame(DATA, if i == 9 { END_STREAM } else { 0 }, 1, &[b'b'; 100]))
        .collect();
    for piece in frames.chunks(109 / 2).collect::<Vec<_>>().chunks(2) {
        raw.send(piece[0]);
        std::thread::sleep(Duration::from_millis(150));
        if let Some(rest) = piece.get(1) {
            raw.send(rest);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let data = raw
        .until(|f| f.ty == DATA && f.stream == 1)
        .expect("the upload is answered");
    assert_eq!(data.payload, b"target=/slow-body\nbodylen=1000\n");
}

#[test]
fn an_idle_client_that_ignores_goaway_and_ping_is_closed_soon_after() {
    let up = Upstream::echo();
    let p = H2Proxy::start(up.addr(), 1, "keepalive_timeout = \"1s\"", "");
    let mut raw = Raw::open(p.addr(), &p.client);
    assert!(raw.get(1, "/once").is_some());
    let g = raw.until(|f| f.ty == GOAWAY).expect("GOAWAY when idle");
    assert_eq!(g.code(), NO_ERROR);
    let first = std::time::Instant::now();
    // The PING that follows is never answered; the final GOAWAY comes
    // anyway, naming the stream served, and the connection ends.
    let last = raw.until(|f| f.ty == GOAWAY).expect("the final GOAWAY");
    assert_eq!(last.code(), NO_ERROR);
    assert_eq!(u32::from_be_bytes(last.payload[..4].try_into().unwrap()), 1);
    assert!(raw.closed(), "closed");
    let took = first.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "closed {took:?} after GOAWAY"
    );
    bystander(&p);
}
