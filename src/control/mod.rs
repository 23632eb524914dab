//! The control plane: starting the workers, the readiness line, signals,
//! reload, the admin listener and graceful stop. Nothing here runs on the request path.
//! Only `handoff` (file descriptors passed over a unix socket) needs
//! `unsafe`; every other file here forbids it.

mod admin;
pub mod handoff;
pub mod health;
mod listeners;
pub mod mailbox;
mod privdrop;
mod reload;
pub(crate) mod start;
mod systemd;

pub use start::{check, run};
