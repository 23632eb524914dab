//! The control plane: starting the workers, the readiness line, signals and
//! graceful stop. Nothing here runs on the request path.
#![forbid(unsafe_code)]

mod start;

pub use start::{check, run};
