//! Stage 4, answer: a `redirect` route, the `to` template with its nginx
//! variables expanded, sent as `Location` with the route's status.
//!
//! Variables (the config module refuses any other):
//! `$request_uri` the target as sent (path and query), `$uri` its path,
//! `$args` its query without the `?`, `$host` the Host without its port
//! (lowercase; the listener's address when the request had none),
//! `$scheme` `http` or `https` as the client connected.

use super::{content_length, end_own_head, own_answer_keep, send_own, Own};
use crate::{
    config::Action,
    http::headers::{HeadOut, OutFraming},
    request::{Client, Done, Plan},
    shard::{Generation, Shard},
};

/// What the variables stand for in one request.
pub struct Vars<'a> {
    pub request_uri: &'a [u8],
    pub host: &'a [u8],
    pub scheme: &'a str,
}

/// Expands `$name` in `to`; a `$` before an unknown name (the config
/// module refuses those) stays as written.
pub fn expand(to: &str, v: &Vars<'_>) -> Vec<u8> {
    let (uri, args) = match v.request_uri.iter().position(|&b| b == b'?') {
        Some(q) => (&v.request_uri[..q], &v.request_uri[q + 1..]),
        None => (v.request_uri, &b""[..]),
    };
    let mut out = Vec::with_capacity(to.len() + v.request_uri.len() + v.host.len());
    let mut rest = to;
    while let Some(i) = rest.find('$') {
        out.extend_from_slice(&rest.as_bytes()[..i]);
        rest = &rest[i + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        match &rest[..end] {
            "request_uri" => out.extend_from_slice(v.request_uri),
            "uri" => out.extend_from_slice(uri),
            "args" => out.extend_from_slice(args),
            "host" => out.extend_from_slice(v.host),
            "scheme" => out.extend_from_slice(v.scheme.as_bytes()),
            other => {
                out.push(b'$');
                out.extend_from_slice(other.as_bytes());
            }
        }
        rest = &rest[end..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

/// `example.com:8080` → `example.com`, `[::1]:80` → `[::1]`, lowercase.
pub fn host_without_port(host: &[u8]) -> Vec<u8> {
    let end = if host.first() == Some(&b'[') {
        host.iter()
            .position(|&b| b == b']')
            .map_or(host.len(), |e| e + 1)
    } else {
        host.iter().rposition(|&b| b == b':').unwrap_or(host.len())
    };
    host[..end].to_ascii_lowercase()
}

pub async fn answer(
    c: &mut Client,
    shard: &Shard,
    gen: &Generation,
    plan: &Plan,
    route_index: usize,
) -> Done {
    let route = &gen.config.routes[route_index];
    let Action::Redirect { to, status } = &route.action else {
        unreachable!("a redirect plan is made for redirect routes only");
    };
    let host = match plan.host(&c.buf) {
        Some(h) => host_without_port(h),
        None => c
            .stream
            .local_addr()
            .map(|a| a.to_string().into_bytes())
            .unwrap_or_default(),
    };
    let location = expand(
        to,
        &Vars {
            request_uri: &plan.origin(&c.buf),
            host: &host,
            scheme: plan.scheme,
        },
    );
    let (keep, consumed) = own_answer_keep(c, shard, plan);
    let mut out = Own::start(c, shard, *status);
    out.field(b"Location", &location);
    out.field(b"Content-Type", b"text/html; charset=utf-8");
    let reason = crate::http::respond::reason(*status);
    let body = format!(
        "<html><head><title>{status} {reason}</title></head><body><h1>{status} {reason}</h1></body></html>\n"
    );
    content_length(&mut out, body.len() as u64);
    end_own_head(&mut out, Some(route), OutFraming::AsIs, keep, plan.minor);
    if !plan.head_only {
        out.body().extend_from_slice(body.as_bytes());
    }
    send_own(c, shard, plan, out, *status, body.len(), (keep, consumed)).await
}

/// A `redirect_https` listener's answer: 301 to `https://` + the Host
/// without its port (+ `:port` unless it is 443, from the listener's
/// `https_port`) + the target as sent (in origin-form).
pub async fn to_https(c: &mut Client, shard: &Shard, plan: &Plan, port: u16) -> Done {
    let host = match plan.host(&c.buf) {
        Some(h) => host_without_port(h),
        None => c
            .stream
            .local_addr()
            .map(|a| a.ip().to_string().into_bytes())
            .unwrap_or_default(),
    };
    let origin = plan.origin(&c.buf);
    let mut location = Vec::with_capacity(8 + host.len() + origin.len());
    location.extend_from_slice(b"https://");
    location.extend_from_slice(&host);
    if port != 443 {
        location.push(b':');
        location.extend_from_slice(itoa::Buffer::new().format(port).as_bytes());
    }
    location.extend_from_slice(&origin);
    let (keep, consumed) = own_answer_keep(c, shard, plan);
    let mut out = Own::start(c, shard, 301);
    out.field(b"Location", &location);
    out.field(b"Content-Type", b"text/html; charset=utf-8");
    let body = "<html><head><title>301 Moved Permanently</title></head><body><h1>301 Moved Permanently</h1></body></html>\n";
    content_length(&mut out, body.len() as u64);
    end_own_head(&mut out, None, OutFraming::AsIs, keep, plan.minor);
    if !plan.head_only {
        out.body().extend_from_slice(body.as_bytes());
    }
    send_own(c, shard, plan, out, 301, body.len(), (keep, consumed)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables() {
        let v = Vars {
            request_uri: b"/a/b?x=1&y",
            host: b"example.com",
            scheme: "http",
        };
        let e = |to: &str| String::from_utf8(expand(to, &v)).unwrap();
        assert_eq!(
            e("https://$host$request_uri"),
            "https://example.com/a/b?x=1&y"
        );
        assert_eq!(
            e("$scheme://new.example$uri?from=$args"),
            "http://new.example/a/b?from=x=1&y"
        );
        assert_eq!(e("/fixed"), "/fixed");
        assert_eq!(e("/cost$"), "/cost$");
        assert_eq!(host_without_port(b"Ex.COM:8080"), b"ex.com");
        assert_eq!(host_without_port(b"[::1]:80"), b"[::1]");
    }
}
