//! The black-box tests: the real `ringside` binary driven over real sockets
//! on 127.0.0.1 (other 127.x.y.z addresses play distinct clients). One test
//! binary holds every file as a module, so the shared harness in `common/`
//! is compiled and linked once; run one file's tests with
//! `cargo test --release --test blackbox -- shield_conn::`.

mod acme;
mod balance;
mod balance_check;
mod bodies;
mod buffering;
mod cache;
mod common;
mod edge;
mod errors;
mod errors_400;
mod evict;
mod examples;
mod forwarding;
mod fuzz_wire;
mod gzip;
mod health;
mod hostile;
mod hostile_ops;
mod http2;
mod http2_abuse;
mod http2_hpack;
mod listeners;
mod ops;
mod package;
mod privdrop;
mod process;
mod shield_conn;
mod shield_req;
mod splice;
mod static_files;
mod systemd;
mod tls;
mod tls_ws;
