//! HTTP/1.1 on the wire: parse heads in place, frame bodies, write heads.

pub mod body;
pub mod headers;
pub mod parse;
pub mod path;
pub mod respond;
