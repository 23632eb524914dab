//! The request head parser with routing (`conn::plan`): see
//! `ringside::fuzzing::plan` for the input's layout and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringside::fuzzing::plan(data));
