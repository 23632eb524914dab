//! The edge shield: who the client is and whether it may come in.
//!
//! `nets` holds the address lists the other parts share (listener and route
//! `allow`/`deny`, `limits.real_ip_from`).

pub mod nets;
