//! Stage 4: reaching an upstream server — a pooled keep-alive connection if
//! the worker has one, a new connection otherwise.

pub mod connect;
pub mod pool;
