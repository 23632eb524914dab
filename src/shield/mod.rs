//! Stage 3, plan: the edge shield — who the client is and whether it may come in.
//!
//! `nets` holds the address lists the other parts share (listener and route
//! `allow`/`deny`, `limits.real_ip_from`). At accept, `proxy_protocol` reads
//! the client's address from an L4 balancer's header and `per_ip` counts
//! each address's open connections across workers; on every request,
//! `real_ip` takes the client's address from X-Forwarded-For when the peer
//! is trusted to name it. Then `check` runs the request side in the
//! contract's order: `[[rule]]`s (`rules`), then the route's `allow`/`deny`
//! and `methods` (`access`), then its `[[limit]]`s (`limit`). A refusal is
//! an `Error` that knows its status, its extra field and its
//! `ringside_limited_total` reason; the exchange answers it like any other
//! error, so it never reaches an upstream.

pub mod access;
pub mod limit;
pub mod nets;
pub mod per_ip;
pub mod proxy_protocol;
pub mod real_ip;
pub mod rules;

use std::net::IpAddr;

use crate::{error::Error, http::parse::RequestHead};

/// The request-side verdict: `None` lets the request through. `path` is
/// the normalised path; `route` the shield keys of the route it matched.
pub fn check(
    rules: &rules::Rules,
    limits: &[limit::Limit],
    route: Option<&access::Access>,
    req: &RequestHead<'_, '_>,
    path: &[u8],
    peer: IpAddr,
) -> Option<Error> {
    if let Some(hit) = rules.check(path, req.query().unwrap_or_default(), req.headers) {
        return Some(Error::rule(hit.status, hit.reason));
    }
    let route = route?;
    if !route.admits(peer) {
        return Some(Error::route_deny());
    }
    if !route.takes(req.method) {
        return Some(Error::method_refused());
    }
    for &i in &route.limits {
        let l = &limits[i];
        if let limit::Verdict::Refuse { retry_after } = l.check(peer, |name| req.header(name)) {
            return Some(Error::rate_limited(l.status, retry_after));
        }
    }
    None
}
