//! ringside: an HTTP reverse proxy for bare-metal Linux edge machines, with
//! one pinned io_uring event loop per core.
//!
//! # The request path
//!
//! ```text
//!  client ──► accept ──► conn ──► http::parse ──► route ──► balance
//!  (SO_REUSEPORT      (one task    (in place,      (host,     (per-worker
//!   socket per         per client   httparse +      prefix)    state)
//!   worker)            connection)  RFC 9112 rules)                │
//!                                                                  ▼
//!  client ◄── relay ◄── http::headers ◄── proxy ◄── upstream::pool/connect
//!          (bounded     (hop-by-hop out,  (send, response
//!           buffers)     forwarding in)    head, retries)      ──► log
//! ```
//!
//! # Layout
//!
//! Modules are listed in the order a request meets them. `worker` owns a
//! `Shard` per core: nothing on the request path is shared between cores.
//! `control` is the control plane (signals), apart from the data path.
//! `tls` sits between `accept` and `conn`: a TLS listener's connections are
//! handshaken there and reach `conn` as a `ClientStream`.
//! `serve` answers the route actions other than plain proxying (static
//! files, redirects, cache hits) and changes answers on their way out (gzip,
//! error pages); `cache` is each worker's response cache shard.
//! `relay` copies bodies through buffers, `splice` between two plain TCP
//! sockets through a pipe, and `tunnel` runs WebSocket tunnels after a `101`.

pub mod config;
#[macro_use]
pub mod log;
pub mod accept;
pub mod acme;
pub mod balance;
pub mod cache;
pub mod conn;
pub mod control;
pub mod error;
pub mod exchange;
#[doc(hidden)]
pub mod fuzzing;
pub mod handoff;
pub mod http;
pub mod http2;
pub mod idle;
pub mod mailbox;
pub mod proxy;
pub mod relay;
pub mod request;
pub mod rlimit;
pub mod route;
pub mod serve;
pub mod shield;
pub mod splice;
pub mod stats;
pub mod timer;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod worker;

pub use control::run;
