//! ringside: an HTTP reverse proxy for bare-metal Linux edge machines, with
//! one pinned io_uring event loop per core.
//!
//! # The request path
//!
//! ```text
//!  1 accept     accept ─► conn ─► (tls, http2)        one task per client connection
//!  2 read       exchange::read_request ─► http::parse  the head, parsed once in place
//!  3 plan       exchange::plan ─► route, balance      normalised path, route, upstream head
//!  4 answer     proxy ─► upstream (pool, retries)     or serve/ (cache, static, redirect,
//!                                                     error pages)
//!  5 relay      relay, splice, tunnel, serve::body    bodies both ways, bounded buffers
//!  6 log        log, stats                            access line, counters
//! ```
//!
//! # Layout
//!
//! Modules are declared below in that order (after `config` and `log`,
//! whose macros every other module uses), then the types beneath the
//! stages, then the control plane. Imports go downward only: a stage uses
//! the shared types (`request`, `stream`, `shard`, `buffers`, `error`) and
//! the stages after it, never the one that called it. `worker` runs a
//! `Shard` per core: nothing on the request path is shared between cores.
//! `control` is the control plane (start, signals, reload, health checks,
//! admin), apart from the data path.

pub mod config;
#[macro_use]
pub mod log;
pub mod worker;
// 1 accept
pub mod accept;
pub mod conn;
pub mod http2;
pub mod idle;
pub mod tls;
// 2 read, 3 plan
pub mod balance;
pub mod buffering;
pub mod exchange;
pub mod http;
pub mod route;
pub mod shield;
// 4 answer
pub mod cache;
pub mod proxy;
pub mod serve;
pub mod upstream;
// 5 relay
pub mod relay;
pub mod splice;
pub mod tunnel;
// 6 log
pub mod stats;
// beneath the stages
pub mod buffers;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod request;
pub mod rlimit;
pub mod shard;
pub mod stream;
pub mod timer;
pub mod unwind;
// the control plane
pub mod acme;
pub mod control;

pub use control::run;
