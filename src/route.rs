//! Stage 3, plan: which route answers a request.
//!
//! Host first (exact name, then the longest `*.` suffix, then routes without
//! a host), then the longest path prefix of the normalised path; among routes with the same host and
//! path, the first in file order whose `match_header`/`match_cookie` hold.
//! When no route of the matching host group fits the path, the next group is
//! tried, so a catch-all route without a host still answers. A route with
//! `listeners` takes part only for connections accepted on one of them (as
//! an nginx `server` block belongs to its `listen` lines).

use crate::{
    config::{HostMatch, Route},
    http::parse::RequestHead,
};

/// The index of the route for `req`, if any; `path` is the request's
/// normalised path (`http::path`), `listener` the index of the listener
/// that accepted the connection in the same config (`None`: not found,
/// then only routes without `listeners` serve it).
pub fn select(
    routes: &[Route],
    req: &RequestHead<'_, '_>,
    path: &[u8],
    listener: Option<usize>,
) -> Option<usize> {
    let host = req.host.map(strip_port).unwrap_or(b"");
    let serves =
        |r: &Route| r.listeners.is_empty() || listener.is_some_and(|l| r.listeners.contains(&l));
    let fits =
        |r: &Route| serves(r) && path.starts_with(r.path.as_bytes()) && conditions_hold(r, req);

    // Group 1: exact host.
    if let Some(i) = longest(routes, |r| {
        matches!(&r.host, Some(HostMatch::Exact(h)) if h.as_bytes().eq_ignore_ascii_case(host))
            && fits(r)
    }) {
        return Some(i);
    }
    // Group 2: the longest matching `*.suffix`.
    let mut best: Option<(usize, usize)> = None; // (suffix length, route)
    for (i, r) in routes.iter().enumerate() {
        if let Some(HostMatch::Suffix(s)) = &r.host {
            if ends_with_ci(host, s.as_bytes()) && host.len() > s.len() && fits(r) {
                let better = match best {
                    None => true,
                    Some((len, b)) => {
                        s.len() > len || (s.len() == len && r.path.len() > routes[b].path.len())
                    }
                };
                if better {
                    best = Some((s.len(), i));
                }
            }
        }
    }
    if let Some((_, i)) = best {
        return Some(i);
    }
    // Group 3: routes without a host.
    longest(routes, |r| r.host.is_none() && fits(r))
}

/// The first route with the longest path among those `ok` accepts.
fn longest(routes: &[Route], ok: impl Fn(&Route) -> bool) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, r) in routes.iter().enumerate() {
        if ok(r) && best.is_none_or(|b| r.path.len() > routes[b].path.len()) {
            best = Some(i);
        }
    }
    best
}

fn conditions_hold(r: &Route, req: &RequestHead<'_, '_>) -> bool {
    r.match_header
        .iter()
        .all(|(name, value)| req.header(name).is_some_and(|v| v == value.as_bytes()))
        && r.match_cookie
            .iter()
            .all(|(name, value)| cookie(req, name).is_some_and(|v| v == value.as_bytes()))
}

/// The value of cookie `name` in the request's Cookie fields.
pub fn cookie<'b>(req: &RequestHead<'_, 'b>, name: &str) -> Option<&'b [u8]> {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .flat_map(|h| h.value.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = crate::http::parse::trim(pair);
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

fn ends_with_ci(s: &[u8], suffix: &[u8]) -> bool {
    s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}
