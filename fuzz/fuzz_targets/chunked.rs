//! The chunked body decoder: see `ringside::fuzzing::chunked`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringside::fuzzing::chunked(data));
