//! Entry points for the fuzz targets in `fuzz/` (hidden from the docs; not
//! an API). Each takes arbitrary bytes, runs one stage the way the request
//! path runs it, and panics where the stage breaks a promise the later
//! stages rely on, so that a fuzzer counts it as a crash:
//!
//! - [`plan()`]: `http::parse::request` and routing (`exchange::plan`) over a
//!   config with every route kind; the spans it hands on lie in the buffer,
//!   and the head it writes upstream parses back with the same framing.
//! - [`chunked()`]: the chunked decoder gives the same bytes and the same end
//!   whichever way its input is split.
//! - [`response_head()`]: an upstream response head that parses is written
//!   to the client as a head that parses again, and built for an HTTP/2
//!   stream as an HPACK block that says what that head says.
//! - [`check_config`]: `--check` on arbitrary TOML.
//! - [`H2`]: HTTP/2 frames through the real connection code (`conn::serve`,
//!   TLS with ALPN h2, `http2::serve`, `exchange::exchange`) on a worker `Shard`.
//!
//! One file per target, named as its file in `fuzz/fuzz_targets/`.

mod chunked;
mod config;
mod h2;
mod plan;
mod response_head;

pub use chunked::chunked;
pub use config::check_config;
pub use h2::{frames, H2};
pub use plan::plan;
pub use response_head::response_head;
