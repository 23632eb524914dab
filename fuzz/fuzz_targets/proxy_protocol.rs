//! The PROXY protocol header parser (`ringside::shield::proxy_protocol`),
//! called directly. Beyond "does not panic" it checks what the accept path
//! relies on: a header never claims more bytes than it was given, parses
//! the same from exactly its own bytes, and every shorter prefix of it asks
//! for more (so bytes taken while waiting are always the header's); and
//! "need more" is never said of more than the longest header.
#![no_main]

use ringside::shield::proxy_protocol::{parse, MAX_V2};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Some(header)) => {
            assert!(header.len <= data.len() && header.len > 0);
            assert_eq!(parse(&data[..header.len]), Ok(Some(header)));
            for n in 0..header.len {
                assert_eq!(parse(&data[..n]), Ok(None), "prefix of {n} bytes");
            }
        }
        Ok(None) => assert!(data.len() < MAX_V2),
        Err(bad) => assert!(!bad.0.is_empty()),
    }
});
