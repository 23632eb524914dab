//! Stage 4, answer (proxied): reaching an upstream server — a pooled keep-alive connection
//! if the worker has one, a new connection otherwise — and sending it the
//! request, with the retry rules (`attempt`).

pub mod attempt;
pub mod connect;
pub mod pool;
