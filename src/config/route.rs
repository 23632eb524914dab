//! Configuration, step 1 (schema, continued): `[[route]]` — what a route
//! matches (host, path prefix, headers, cookies), its one action (upstream,
//! split, static, redirect, respond) and the keys that shape its answers.

use std::{collections::HashMap, ops::RangeInclusive, path::PathBuf, time::Duration};

use super::{
    check::{Place, RoutePlaces},
    file::{is_token, MAX_WEIGHT},
    walk::{Field, Node, Reader},
    Action, Gzip, HostMatch, Route,
};

/// A route takes exactly one of these.
const ACTIONS: [&str; 5] = ["upstream", "split", "static", "redirect", "respond"];
/// The nginx variables a redirect target may use.
const REDIRECT_VARIABLES: [&str; 5] = ["request_uri", "host", "scheme", "uri", "args"];
const REDIRECT_STATUSES: [i64; 5] = [301, 302, 303, 307, 308];

/// Names after `$` in a redirect target that are not known variables.
fn unknown_variables(to: &str) -> Vec<&str> {
    let mut unknown = Vec::new();
    let mut rest = to;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if !REDIRECT_VARIABLES.contains(&&rest[..end]) {
            unknown.push(&rest[..end]);
        }
        rest = &rest[end..];
    }
    unknown
}

impl Reader {
    pub(super) fn route(
        &mut self,
        n: &Node<'_>,
        names: &HashMap<String, usize>,
        limits: &super::shield_req::LimitSet,
    ) -> Route {
        let keys = [
            "host",
            "path",
            "match_header",
            "match_cookie",
            "upstream",
            "split",
            "static",
            "redirect",
            "respond",
            "expires",
            "strip_prefix",
            "websocket",
            "cache",
            "gzip",
            "proxy_redirect",
            "set_request_headers",
            "add_response_headers",
            "error_pages",
            "listeners",
        ];
        let keys = [&keys[..], &super::shield_req::ROUTE_KEYS].concat();
        self.keys(n, &keys);
        let mut places = RoutePlaces::default();
        let host = self.opt(n, "host", |r, f| {
            let written = r.text(f)?;
            Some((written, r.host(f, written)?))
        });
        let (host_written, host) = host.unzip();
        let path = self.required(n, "path").and_then(|f| {
            let path = self.string(&f)?;
            if !path.starts_with('/') {
                self.report(f.line, &f.key, format!("\"{path}\" must start with \"/\""));
                return None;
            }
            Some(path)
        });
        let path = path.unwrap_or("/");
        let match_header = self.pairs(n, "match_header", true);
        let match_cookie = self.pairs(n, "match_cookie", false);

        let action = self.the_action(n, names, &mut places);
        let expires = self.opt(n, "expires", |r, f| r.duration(f, false));
        let strip_prefix = self.get(n, "strip_prefix", false, Self::boolean);
        let websocket = self.get(n, "websocket", true, Self::boolean);
        let proxy_redirect = self.get(n, "proxy_redirect", false, Self::boolean);
        let cache = self.opt(n, "cache", |r, f| Some(r.cache(f)));
        let gzip = self.opt(n, "gzip", |r, f| r.gzip(f));
        let set_request_headers = self.pairs(n, "set_request_headers", false);
        let add_response_headers = self.pairs(n, "add_response_headers", false);
        let error_pages = self.opt(n, "error_pages", |r, f| {
            Some(r.error_pages(f, &mut places.error_pages))
        });
        let access = self.route_access(n, limits);
        let hide_response_headers = self.hidden_headers(n);
        self.places.routes.push(places);
        Route {
            label: format!("{}{path}", host_written.unwrap_or("")),
            host,
            path: path.to_string(),
            match_header,
            match_cookie,
            action: action.unwrap_or(Action::Respond {
                status: 404,
                body: String::new(),
            }),
            expires,
            strip_prefix,
            websocket,
            cache: cache.unwrap_or_default(),
            gzip,
            proxy_redirect,
            set_request_headers,
            add_response_headers,
            error_pages: error_pages.unwrap_or_default(),
            access,
            hide_response_headers,
            listeners: Vec::new(),
        }
    }

    /// The one action of a route. Every action written is read, so that its
    /// own problems show too; none, or more than one, is a problem.
    fn the_action(
        &mut self,
        n: &Node<'_>,
        names: &HashMap<String, usize>,
        places: &mut RoutePlaces,
    ) -> Option<Action> {
        let present: Vec<_> = ACTIONS
            .iter()
            .filter_map(|&name| Some((name, self.field(n, name)?)))
            .collect();
        let actions: Vec<_> = present
            .iter()
            .map(|(name, f)| self.action(name, f, names, places))
            .collect();
        match present.as_slice() {
            [] => {
                let message = format!("needs one of {}", ACTIONS.join(", "));
                self.report(n.line, &n.path, message);
            }
            [_] => {}
            [(first, _), (second, f), ..] => {
                let message = format!("has both {first} and {second}: a route takes exactly one");
                self.report(f.line, &n.path, message);
            }
        }
        actions.into_iter().next().flatten()
    }

    /// `cache = { "200" = "10m", ... }`: how long each status is kept.
    fn cache(&mut self, f: &Field<'_>) -> Vec<(u16, Duration)> {
        let mut out = Vec::new();
        for (status, f) in self.entries(f) {
            let status = self.status_key(&f, status, 100..=599);
            let validity = self.duration(&f, false);
            out.extend(status.zip(validity));
        }
        out
    }

    /// `gzip = { types, min_length }`: media types are lowercased.
    fn gzip(&mut self, f: &Field<'_>) -> Option<Gzip> {
        let node = self.table(f)?;
        self.keys(&node, &["types", "min_length"]);
        let types = self.get(&node, "types", vec!["text/html".to_string()], |r, f| {
            let types = r.strings(f)?;
            if let Some(t) = types.iter().find(|t| !t.contains('/')) {
                let message = format!("\"{t}\" is not a media type like \"text/plain\"");
                r.report(f.line, &f.key, message);
                return None;
            }
            Some(types.iter().map(|t| t.to_ascii_lowercase()).collect())
        });
        let min_length = self.get(&node, "min_length", 1000, |r, f| r.size(f, 0));
        Some(Gzip { types, min_length })
    }

    /// `error_pages = { "404" = FILE, ... }`; each file's place goes to
    /// `places` for `check.rs`.
    fn error_pages(&mut self, f: &Field<'_>, places: &mut Vec<Place>) -> Vec<(u16, PathBuf)> {
        let mut out = Vec::new();
        for (status, f) in self.entries(f) {
            let status = self.status_key(&f, status, 400..=599);
            let page = self.text(&f).map(|p| self.resolve(p));
            if let Some(pair) = status.zip(page) {
                out.push(pair);
                places.push(f.place());
            }
        }
        out
    }

    fn host(&mut self, f: &Field<'_>, written: &str) -> Option<HostMatch> {
        let host = written.to_ascii_lowercase();
        let (suffix, name) = match host.strip_prefix('*') {
            Some(rest) => (true, rest.strip_prefix('.').unwrap_or("")),
            None => (false, host.as_str()),
        };
        let message = if name.is_empty() || name.contains('*') {
            "a wildcard is only allowed as a leading \"*.\", like \"*.example.com\""
        } else if name.contains(|c: char| c == ':' || c == '/' || c.is_whitespace()) {
            "must be a bare host name, without port, path or spaces"
        } else if suffix {
            return Some(HostMatch::Suffix(format!(".{name}")));
        } else {
            return Some(HostMatch::Exact(host));
        };
        self.report(f.line, &f.key, message);
        None
    }

    fn action(
        &mut self,
        name: &str,
        f: &Field<'_>,
        names: &HashMap<String, usize>,
        places: &mut RoutePlaces,
    ) -> Option<Action> {
        match name {
            "upstream" => {
                let upstream = self.string(f)?;
                Some(Action::Upstream(self.upstream_index(f, upstream, names)?))
            }
            "split" => Some(self.split(f, names)),
            "static" => {
                let folder = self.text(f)?;
                places.folder = f.place();
                Some(Action::Static(self.resolve(folder)))
            }
            "redirect" => self.redirect(f),
            _ => {
                let node = self.table(f)?;
                self.keys(&node, &["status", "body"]);
                let status = self.get(&node, "status", 200, |r, f| r.integer(f, 200..=599));
                let body = self.get(&node, "body", "", |r, f| r.string(f));
                Some(Action::Respond {
                    status: status as u16,
                    body: body.to_string(),
                })
            }
        }
    }

    /// `split = [{ upstream, weight }, ...]`: weights must not all be 0.
    fn split(&mut self, f: &Field<'_>, names: &HashMap<String, usize>) -> Action {
        let nodes = self.tables(f, "at least one { upstream, weight } is required");
        let mut parts = Vec::new();
        let mut total = 0;
        for node in &nodes {
            self.keys(node, &["upstream", "weight"]);
            let index = self.required(node, "upstream").and_then(|u| {
                let upstream = self.string(&u)?;
                self.upstream_index(&u, upstream, names)
            });
            let weight = self.get(node, "weight", 1, |r, f| r.integer(f, 0..=MAX_WEIGHT));
            total += weight;
            parts.extend(index.map(|i| (i, weight as u32)));
        }
        if !nodes.is_empty() && total == 0 {
            self.report(f.line, &f.key, "the weights add up to 0");
        }
        Action::Split(parts)
    }

    /// `redirect = { to, status }`: `to` uses known variables only.
    fn redirect(&mut self, f: &Field<'_>) -> Option<Action> {
        let node = self.table(f)?;
        self.keys(&node, &["to", "status"]);
        let to = self.required(&node, "to").and_then(|f| {
            let to = self.text(&f)?;
            // The target becomes the Location field.
            if !self.header_value(&f, to) {
                return None;
            }
            let unknown = unknown_variables(to);
            for var in &unknown {
                let known = REDIRECT_VARIABLES.map(|v| format!("${v}")).join(", ");
                let message = format!("unknown variable \"${var}\" (known: {known})");
                self.report(f.line, &f.key, message);
            }
            unknown.is_empty().then(|| to.to_string())
        });
        let status = self.get(&node, "status", 301, |r, f| {
            let status = f
                .item
                .as_integer()
                .filter(|s| REDIRECT_STATUSES.contains(s));
            if status.is_none() {
                r.report(f.line, &f.key, "must be 301, 302, 303, 307 or 308");
            }
            status
        });
        Some(Action::Redirect {
            to: to?,
            status: status as u16,
        })
    }

    fn upstream_index(
        &mut self,
        f: &Field<'_>,
        name: &str,
        names: &HashMap<String, usize>,
    ) -> Option<usize> {
        let index = names.get(name).copied();
        if index.is_none() {
            self.report(f.line, &f.key, format!("unknown upstream \"{name}\""));
        }
        index
    }

    fn status_key(&mut self, f: &Field<'_>, key: &str, range: RangeInclusive<u16>) -> Option<u16> {
        let status = Some(key)
            .filter(|k| k.len() == 3 && k.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|k| k.parse().ok())
            .filter(|s| range.contains(s));
        if status.is_none() {
            let (low, high) = (range.start(), range.end());
            let message = format!("\"{key}\" is not a status code from {low} to {high}");
            self.report(f.line, &f.key, message);
        }
        status
    }

    /// Header or cookie (name, value) pairs; names are tokens, values carry
    /// no control character but HTAB (`header_value`).
    fn pairs(&mut self, n: &Node<'_>, key: &str, lowercase: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Some(f) = self.field(n, key) else {
            return out;
        };
        for (name, f) in self.entries(&f) {
            let Some(value) = self.string(&f) else {
                continue;
            };
            if !is_token(name) {
                let message = format!("\"{}\" is not a valid name", name.escape_debug());
                self.report(f.line, &f.key, message);
            } else if self.header_value(&f, value) {
                let name = if lowercase {
                    name.to_ascii_lowercase()
                } else {
                    name.to_string()
                };
                out.push((name, value.to_string()));
            }
        }
        out
    }
}
