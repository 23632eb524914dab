//! The control plane: starting the workers, the readiness line, signals,
//! reload, the admin listener and graceful stop. Nothing here runs on the request path.
#![forbid(unsafe_code)]

mod admin;
pub mod health;
mod listeners;
mod privdrop;
mod reload;
pub(crate) mod start;
mod systemd;

pub use start::{check, run};
