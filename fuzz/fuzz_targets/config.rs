//! `ringside --check` on arbitrary TOML: see `ringside::fuzzing::check_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringside::fuzzing::check_config(data));
