//! The edge shield: who the client is and whether it may come in.
//!
//! `nets` holds the address lists the other parts share (listener and route
//! `allow`/`deny`, `limits.real_ip_from`). At accept, `proxy_protocol` reads
//! the client's address from an L4 balancer's header and `per_ip` counts
//! each address's open connections across workers; on every request,
//! `real_ip` takes the client's address from X-Forwarded-For when the peer
//! is trusted to name it.

pub mod nets;
pub mod per_ip;
pub mod proxy_protocol;
pub mod real_ip;
