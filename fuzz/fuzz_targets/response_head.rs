//! The upstream response head parser and the head written to the client:
//! see `ringside::fuzzing::response_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringside::fuzzing::response_head(data));
