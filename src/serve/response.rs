//! Stage 4, answer: what a route does to an upstream answer's head, decided once
//! the head is parsed (`proxy::interpret`): gzip, `X-Cache-Status`,
//! `proxy_redirect`, whether the answer is stored, and whether an
//! `error_pages` page replaces it. Routes that do none of these keep the
//! plain head writer (`http::headers::client_response`).

use std::{borrow::Cow, time::Duration};

use super::{gzip, pages};
use crate::{
    cache,
    config::{Route, Upstream},
    http::{
        headers::{hidden, passed_fields, status_line, HeadOut, OutFraming, Persist},
        parse::{Framing, ResponseHead},
    },
    request::Plan,
};

/// What happens to one upstream answer beyond passing it on.
#[derive(Default)]
pub struct Changes {
    pub gzip: bool,
    pub store: Option<Store>,
    /// The route's error page for this status replaces the answer.
    pub page: bool,
}

/// An answer to keep in the cache once its body has been read.
pub struct Store {
    pub status: u16,
    pub validity: Duration,
    /// As `cache::Entry::head` and `cache::Entry::etag`.
    pub head: Vec<u8>,
    pub etag: Option<Box<[u8]>>,
    /// The fields the answer's Vary names.
    pub vary: Vec<Box<str>>,
    pub media: Box<str>,
    pub as_is: bool,
}

/// Whether a route changes upstream answers at all.
pub fn any(route: &Route, plan: &Plan) -> bool {
    route.gzip.is_some()
        || plan.cache.is_some()
        || route.proxy_redirect
        || !route.error_pages.is_empty()
        || !route.hide_response_headers.is_empty()
}

/// Decides gzip, storing and the error page for an answer.
pub fn decide(res: &ResponseHead<'_, '_>, plan: &Plan, route: &Route) -> Changes {
    if res.status >= 400 && pages::page_for(Some(route), res.status).is_some() {
        return Changes {
            page: true,
            ..Changes::default()
        };
    }
    let header = |name: &str| {
        res.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let content_type = header("content-type");
    let as_is = gzip::as_is(res.headers);
    let length = match res.framing {
        Framing::Length(n) => Some(n),
        Framing::Empty => Some(0),
        Framing::Chunked | Framing::UntilClose => None,
    };
    let gzip = plan.accepts_gzip
        && route.gzip.as_ref().is_some_and(|g| {
            gzip::applies(g, res.status, plan.head_only, content_type, as_is, length)
        });
    let store = plan
        .cache
        .as_ref()
        .filter(|c| !c.bypass && !plan.head_only)
        .and_then(|_| cache::validity(route, res))
        .map(|validity| Store {
            status: res.status,
            validity,
            head: Vec::new(),
            etag: None,
            vary: cache::vary_names(res),
            media: String::from_utf8_lossy(gzip::media_type(content_type.unwrap_or(b"")))
                .to_ascii_lowercase()
                .into(),
            as_is,
        });
    Changes {
        gzip,
        store,
        page: false,
    }
}

/// What `write_head` needs besides the answer.
pub struct Context<'a> {
    pub plan: &'a Plan,
    pub route: &'a Route,
    pub upstream: &'a Upstream,
    /// The client's buffer (the request head is at its start).
    pub client: &'a [u8],
}

/// Writes the client's head for an answer with `changes` (and fills in the
/// stored head, when the answer is to be stored).
pub fn write_head(
    out: &mut (impl HeadOut + ?Sized),
    res: &ResponseHead<'_, '_>,
    cx: &Context<'_>,
    changes: &mut Changes,
    framing: OutFraming,
    persist: Persist,
) {
    let location = if cx.route.proxy_redirect {
        res.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("location"))
            .and_then(|h| rewrite_location(h.value, cx))
    } else {
        None
    };
    let edit = |name: &str, value| -> Option<Cow<'_, [u8]>> {
        if hidden(&cx.route.hide_response_headers, name) {
            return None;
        }
        if name.eq_ignore_ascii_case("location") {
            if let Some(l) = &location {
                return Some(Cow::Owned(l.clone()));
            }
        }
        Some(Cow::Borrowed(value))
    };
    out.status(res.status, res.reason.as_bytes());
    let gzip = changes.gzip;
    passed_fields(out, res, |name, value| {
        if gzip && name.eq_ignore_ascii_case("content-length") {
            return None;
        }
        if gzip && name.eq_ignore_ascii_case("etag") {
            return Some(gzip::weak_etag(value));
        }
        edit(name, value)
    });
    if gzip {
        out.field(b"Content-Encoding", b"gzip");
        if !cache::has_token(res.headers, "vary", b"accept-encoding") {
            out.field(b"Vary", b"Accept-Encoding");
        }
    }
    if let Some(c) = &cx.plan.cache {
        out.field(b"X-Cache-Status", c.status.get().as_bytes());
    }
    for (k, v) in &cx.route.add_response_headers {
        out.field(k.as_bytes(), v.as_bytes());
    }
    out.end(framing, persist);

    if let Some(store) = &mut changes.store {
        let (head, etag) = (&mut store.head, &mut store.etag);
        status_line(head, res.status, res.reason.as_bytes());
        passed_fields(head, res, |name, value| {
            if name.eq_ignore_ascii_case("content-length") {
                return None;
            }
            // Written per answer: weak when that answer is compressed.
            if name.eq_ignore_ascii_case("etag") {
                *etag = Some(value.into());
                return None;
            }
            edit(name, value)
        });
    }
}

/// `proxy_redirect`: a Location naming one of the upstream's servers
/// (`http://` and the address as written or as resolved) becomes
/// `$scheme://$Host` and the rest of it.
fn rewrite_location(v: &[u8], cx: &Context<'_>) -> Option<Vec<u8>> {
    let host = cx.plan.host(cx.client)?;
    let rest = v
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case(b"http://"))
        .map(|_| &v[7..])?;
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?' || b == b'#')
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let ours = cx.upstream.servers.iter().any(|s| {
        let by_name = authority.eq_ignore_ascii_case(s.label.as_bytes());
        let addr = s.address.to_string();
        let by_address = authority == addr.as_bytes();
        let default_port = s.address.port() == 80
            && (authority == s.address.ip().to_string().as_bytes()
                || s.label
                    .strip_suffix(":80")
                    .is_some_and(|n| authority.eq_ignore_ascii_case(n.as_bytes())));
        by_name || by_address || default_port
    });
    if !ours {
        return None;
    }
    let mut out = Vec::with_capacity(v.len() + host.len());
    out.extend_from_slice(cx.plan.scheme.as_bytes());
    out.extend_from_slice(b"://");
    out.extend_from_slice(host);
    if !path.starts_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    Some(out)
}
