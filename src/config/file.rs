//! Configuration, step 1: TOML text → resolved `Config`, or every problem in it.
//!
//! The document is walked by hand instead of through a serde schema because
//! serde stops at the first error while `--check` must list them all, each
//! with the line of its key (spans come from `toml_edit::ImDocument`). A bad
//! value is reported and replaced by its default so that the walk goes on;
//! the half-built `Config` is dropped as soon as anything was reported.
//! The walking tools are in `walk.rs`; this file is the schema.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, ToSocketAddrs},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use toml_edit::ImDocument;

use super::{
    check::{ListenerPlaces, Place, Places, RoutePlaces},
    shield_conn,
    walk::{Field, Node, Reader, MAX_COUNT},
    AccessFormat, Action, Admin, Balance, Cache, CertPair, Config, Gzip, Health, HostMatch, Level,
    Limits, Listener, Log, LogTarget, Problem, Route, Runtime, Server, Sticky, Tls, TlsVersion,
    Upstream,
};

/// Largest server or split weight: keeps any sum of weights far from `u32::MAX`.
const MAX_WEIGHT: i64 = 1_000_000;
/// A route takes exactly one of these.
const ACTIONS: [&str; 5] = ["upstream", "split", "static", "redirect", "respond"];
/// The nginx variables a redirect target may use.
const REDIRECT_VARIABLES: [&str; 5] = ["request_uri", "host", "scheme", "uri", "args"];
const REDIRECT_STATUSES: [i64; 5] = [301, 302, 303, 307, 308];

/// Parses and resolves `text`; `path` only anchors relative file names.
pub(super) fn parse(text: &str, path: &Path) -> Result<Config, Vec<Problem>> {
    read(text, path).map(|(config, _)| config)
}

/// Like `parse`, and also says where `check.rs`'s subjects were written.
pub(super) fn read(text: &str, path: &Path) -> Result<(Config, Places), Vec<Problem>> {
    let mut reader = Reader::new(text, path);
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let message = e.message().trim().replace('\n', "; ");
            let line = reader.line(e.span()).max(1);
            return Err(vec![Problem {
                line,
                key: "syntax".into(),
                message,
            }]);
        }
    };
    let root = Node {
        table: Some(doc.as_table()),
        path: String::new(),
        line: 1,
    };
    let config = reader.config(&root);
    if reader.problems.is_empty() {
        Ok((config, reader.places))
    } else {
        reader.problems.sort_by_key(|p| p.line);
        Err(reader.problems)
    }
}

/// RFC 9110 `token`: header and cookie names.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

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
    pub(super) fn config(&mut self, root: &Node<'_>) -> Config {
        let sections = [
            "runtime", "log", "limits", "admin", "cache", "acme", "listen", "upstream", "route",
            "limit", "rule",
        ];
        self.keys(root, &sections);
        let node = self.section(root, "runtime");
        let runtime = self.runtime(&node);
        let node = self.section(root, "log");
        let log = self.log(&node);
        let node = self.section(root, "limits");
        let limits = self.limits(&node);
        let admin = self
            .opt(root, "admin", |r, f| r.table(f))
            .and_then(|n| self.admin(&n));
        let node = self.section(root, "cache");
        self.keys(&node, &["size"]);
        let cache = Cache {
            size: self.get(&node, "size", 256 << 20, |r, f| {
                r.places.cache = f.place();
                r.size(f, 0)
            }),
        };

        let acme = self
            .opt(root, "acme", |r, f| r.table(f))
            .map(|n| self.acme(&n));
        let mut listeners = Vec::new();
        let mut listener_names = HashMap::new();
        match self.field(root, "listen") {
            Some(f) => {
                for node in self.tables(&f, "at least one [[listen]] is required") {
                    let i = listeners.len();
                    listeners.push(self.listener(&node, i, &mut listener_names));
                }
            }
            None => self.report(root.line, "listen", "at least one [[listen]] is required"),
        }

        let mut upstreams = Vec::new();
        let mut first_seen = HashMap::new();
        if let Some(f) = self.field(root, "upstream") {
            for node in self.tables(&f, "at least one [[upstream]] is expected here") {
                upstreams.push(self.upstream(&node, &mut first_seen));
            }
        }
        let mut names = HashMap::new();
        for (i, u) in upstreams.iter().enumerate() {
            names.entry(u.name.clone()).or_insert(i);
        }

        let rate_limits = self.rate_limits(root);
        let rules = self.rules(root);
        let mut routes = Vec::new();
        let listener_names: Vec<Option<String>> = listeners
            .iter()
            .map(|l: &Listener| l.name.clone())
            .collect();
        if let Some(f) = self.field(root, "route") {
            for node in self.tables(&f, "at least one [[route]] is expected here") {
                let mut route = self.route(&node, &names, &rate_limits);
                route.listeners = self.route_listeners(&node, &listener_names);
                routes.push(route);
            }
        }
        let config = Config {
            runtime,
            log,
            limits,
            admin,
            cache,
            acme,
            listeners,
            upstreams,
            routes,
            rate_limits: rate_limits.limits,
            rules,
        };
        self.acme_listeners(&config);
        config
    }

    fn runtime(&mut self, n: &Node<'_>) -> Runtime {
        self.keys(n, &["workers", "shutdown_timeout", "user", "group"]);
        Runtime {
            workers: self.get(n, "workers", 0, |r, f| r.integer(f, 0..=MAX_COUNT)) as usize,
            shutdown_timeout: self
                .get(n, "shutdown_timeout", secs(30), |r, f| r.duration(f, false)),
            account: self.account(n),
        }
    }

    fn log(&mut self, n: &Node<'_>) -> Log {
        self.keys(n, &["access", "access_format", "error", "level"]);
        let access = self.get(n, "access", LogTarget::Stdout, |r, f| {
            r.places.access = f.place();
            match r.text(f)? {
                "stdout" => Some(LogTarget::Stdout),
                "off" => Some(LogTarget::Off),
                path => r.log_file(f, path, "\"stdout\", \"off\""),
            }
        });
        let access_format = self.get(n, "access_format", AccessFormat::Combined, |r, f| {
            r.choice(
                f,
                &[
                    ("combined", AccessFormat::Combined),
                    ("json", AccessFormat::Json),
                ],
            )
        });
        let error = self.get(n, "error", LogTarget::Stderr, |r, f| {
            r.places.error = f.place();
            match r.text(f)? {
                "stderr" => Some(LogTarget::Stderr),
                path => r.log_file(f, path, "\"stderr\""),
            }
        });
        let levels = [
            ("error", Level::Error),
            ("warn", Level::Warn),
            ("info", Level::Info),
            ("debug", Level::Debug),
        ];
        let level = self.get(n, "level", Level::Info, |r, f| r.choice(f, &levels));
        Log {
            access,
            access_format,
            error,
            level,
        }
    }

    /// A file name that is another target's keyword is almost surely a slip
    /// (`error = "stdout"`), so it is refused rather than created as a file.
    fn log_file(&mut self, f: &Field<'_>, path: &str, allowed: &str) -> Option<LogTarget> {
        if ["stdout", "stderr", "off"].contains(&path) {
            let message = format!("\"{path}\" is not allowed here: use {allowed} or a file path");
            self.report(f.line, &f.key, message);
            return None;
        }
        Some(LogTarget::File(self.resolve(path)))
    }

    fn limits(&mut self, n: &Node<'_>) -> Limits {
        let keys = [
            "client_header_timeout",
            "client_body_timeout",
            "client_send_timeout",
            "keepalive_timeout",
            "max_request_head",
            "max_request_body",
            "client_body_buffer",
            "max_connections",
        ];
        self.keys(n, &[&keys[..], &shield_conn::LIMITS_KEYS].concat());
        let (max_connections_per_ip, real_ip_from) = self.limits_shield(n);
        let timeout = |r: &mut Self, key: &str, default: u64, nonzero: bool| {
            r.get(n, key, secs(default), |r, f| r.duration(f, nonzero))
        };
        Limits {
            client_header_timeout: timeout(self, "client_header_timeout", 10, true),
            client_body_timeout: timeout(self, "client_body_timeout", 60, true),
            client_send_timeout: timeout(self, "client_send_timeout", 60, true),
            keepalive_timeout: timeout(self, "keepalive_timeout", 75, false),
            max_request_head: self.get(n, "max_request_head", 16 << 10, |r, f| r.size(f, 1))
                as usize,
            max_request_body: self.get(n, "max_request_body", 0, |r, f| r.size(f, 0)),
            client_body_buffer: self.get(n, "client_body_buffer", 64 << 10, |r, f| r.size(f, 0))
                as usize,
            max_connections: self.get(n, "max_connections", 0, |r, f| r.integer(f, 0..=MAX_COUNT))
                as usize,
            max_connections_per_ip,
            real_ip_from,
        }
    }

    /// `[admin]` without an address (as shipped) means no admin listener.
    fn admin(&mut self, n: &Node<'_>) -> Option<Admin> {
        self.keys(n, &["address"]);
        let address = self.opt(n, "address", |r, f| {
            r.places.admin = f.place();
            r.socket(f)
        })?;
        Some(Admin { address })
    }

    fn socket(&mut self, f: &Field<'_>) -> Option<SocketAddr> {
        let s = self.string(f)?;
        let address = s.parse().ok();
        if address.is_none() {
            let message = format!("\"{s}\" is not an ip:port address, like \"0.0.0.0:8080\"");
            self.report(f.line, &f.key, message);
        }
        address
    }

    fn listener(
        &mut self,
        n: &Node<'_>,
        index: usize,
        names: &mut HashMap<String, usize>,
    ) -> Listener {
        let keys = [
            "address",
            "http2",
            "hsts",
            "redirect_https",
            "https_port",
            "name",
            "tls",
        ];
        self.keys(n, &[&keys[..], &shield_conn::LISTEN_KEYS].concat());
        let (name, https_port) = self.listener_naming(n, names);
        let mut places = ListenerPlaces::default();
        let address = self.required(n, "address").and_then(|f| {
            places.address = f.place();
            self.socket(&f)
        });
        let http2 = self.get(n, "http2", false, Self::boolean);
        let hsts = self.opt(n, "hsts", |r, f| {
            let s = r.text(f)?;
            r.header_value(f, s).then(|| s.to_string())
        });
        let redirect_https = self.get(n, "redirect_https", false, Self::boolean);
        let gate = self.gate(n);
        let tls = self.opt(n, "tls", |r, f| {
            let node = r.table(f)?;
            Some(r.tls(&node, &mut places.certs, index))
        });
        if let Some(f) = self.field(n, "http2").filter(|_| http2 && tls.is_none()) {
            self.report(
                f.line,
                &f.key,
                "needs tls: h2 is offered through ALPN on TLS listeners",
            );
        }
        if let Some(f) = self.field(n, "redirect_https").filter(|_| redirect_https) {
            if tls.is_some() {
                self.report(f.line, &f.key, "on a TLS listener would redirect to itself");
            }
        }
        self.places.listeners.push(places);
        Listener {
            address: address.unwrap_or((Ipv4Addr::UNSPECIFIED, 0).into()),
            http2,
            hsts,
            redirect_https,
            gate,
            name,
            https_port,
            tls,
            acceptor: None,
        }
    }

    fn tls(&mut self, n: &Node<'_>, places: &mut Vec<(Place, Place)>, index: usize) -> Tls {
        self.keys(n, &["cert", "key", "certs", "protocols", "acme"]);
        let mut certs = Vec::new();
        let mut acme = Vec::new();
        match (self.field(n, "acme"), self.field(n, "certs")) {
            (Some(f), _) => {
                let other = ["cert", "key", "certs"].into_iter();
                if let Some(o) = other.filter_map(|k| self.field(n, k)).next() {
                    self.report(o.line, &o.key, "write acme, or cert and key, not both");
                }
                acme = self.acme_names(&f, index);
            }
            (None, Some(f)) => {
                if let Some(single) = self.field(n, "cert").or_else(|| self.field(n, "key")) {
                    self.report(
                        single.line,
                        &single.key,
                        "write cert and key, or certs, not both",
                    );
                }
                for pair in self.tables(&f, "at least one { cert, key } is required") {
                    self.keys(&pair, &["cert", "key"]);
                    certs.push(self.cert_pair(&pair, places));
                }
            }
            (None, None) => certs.push(self.cert_pair(n, places)),
        }
        let both = vec![TlsVersion::Tls12, TlsVersion::Tls13];
        let protocols = self.get(n, "protocols", both, |r, f| {
            let names = r.strings(f)?;
            let mut versions = Vec::new();
            for name in names {
                let version = match name {
                    "TLSv1.2" => TlsVersion::Tls12,
                    "TLSv1.3" => TlsVersion::Tls13,
                    _ => {
                        let message = format!("\"{name}\" is not one of \"TLSv1.2\", \"TLSv1.3\"");
                        r.report(f.line, &f.key, message);
                        return None;
                    }
                };
                if !versions.contains(&version) {
                    versions.push(version);
                }
            }
            if versions.is_empty() {
                r.report(f.line, &f.key, "needs at least one version");
                return None;
            }
            Some(versions)
        });
        Tls {
            certs,
            protocols,
            acme,
        }
    }

    fn cert_pair(&mut self, n: &Node<'_>, places: &mut Vec<(Place, Place)>) -> CertPair {
        let (cert, cert_place) = self.file_path(n, "cert");
        let (key, key_place) = self.file_path(n, "key");
        places.push((cert_place, key_place));
        CertPair { cert, key }
    }

    fn file_path(&mut self, n: &Node<'_>, key: &str) -> (PathBuf, Place) {
        self.required(n, key)
            .and_then(|f| {
                let path = self.text(&f)?;
                Some((self.resolve(path), f.place()))
            })
            .unwrap_or_default()
    }

    fn upstream<'a>(&mut self, n: &Node<'a>, first_seen: &mut HashMap<&'a str, usize>) -> Upstream {
        let keys = [
            "name",
            "balance",
            "keepalive",
            "keepalive_timeout",
            "connect_timeout",
            "send_timeout",
            "read_timeout",
            "servers",
            "health",
            "max_fails",
            "fail_timeout",
            "retries",
            "sticky",
        ];
        self.keys(n, &keys);
        let name = self.required(n, "name").and_then(|f| {
            let name = self.text(&f)?;
            match first_seen.get(name) {
                Some(first) => {
                    let message =
                        format!("duplicate upstream name \"{name}\" (first at line {first})");
                    self.report(f.line, &f.key, message);
                }
                None => {
                    first_seen.insert(name, f.line);
                }
            }
            Some(name)
        });
        let methods = [
            ("round_robin", Balance::RoundRobin),
            ("least_conn", Balance::LeastConn),
            ("ip_hash", Balance::IpHash),
            ("uri_hash", Balance::UriHash),
            ("random_two", Balance::RandomTwo),
        ];
        let balance = self.get(n, "balance", Balance::RoundRobin, |r, f| {
            r.choice(f, &methods)
        });
        let count = |r: &mut Self, key: &str, default: i64| {
            r.get(n, key, default, |r, f| r.integer(f, 0..=MAX_COUNT))
        };
        let timeout = |r: &mut Self, key: &str, nonzero: bool| {
            r.get(n, key, secs(60), |r, f| r.duration(f, nonzero))
        };
        let keepalive = count(self, "keepalive", 256) as usize;
        let keepalive_timeout = timeout(self, "keepalive_timeout", false);
        let connect_timeout = timeout(self, "connect_timeout", true);
        let send_timeout = timeout(self, "send_timeout", true);
        let read_timeout = timeout(self, "read_timeout", true);

        let mut servers = Vec::new();
        if let Some(f) = self.required(n, "servers") {
            for node in self.tables(&f, "at least one server is required") {
                servers.extend(self.server(&node));
            }
            if !servers.is_empty() && servers.iter().all(|s| s.backup) {
                self.report(
                    f.line,
                    &f.key,
                    "every server is a backup: at least one must not be",
                );
            }
        }
        let health = self.opt(n, "health", |r, f| {
            let node = r.table(f)?;
            Some(r.health(&node))
        });
        let max_fails = count(self, "max_fails", 1) as u32;
        let fail_timeout = self.get(n, "fail_timeout", secs(10), |r, f| r.duration(f, false));
        // By default every other server once (as nginx's
        // proxy_next_upstream_tries 0): a dead primary never costs a 502
        // while another server, a backup included, lives.
        let every_other = servers.len().saturating_sub(1) as i64;
        let retries = count(self, "retries", every_other) as u32;
        let sticky = self.opt(n, "sticky", |r, f| {
            let node = r.table(f)?;
            r.keys(&node, &["cookie"]);
            let f = r.required(&node, "cookie")?;
            let cookie = r.text(&f)?;
            if !is_token(cookie) {
                r.report(
                    f.line,
                    &f.key,
                    format!("\"{}\" is not a valid cookie name", cookie.escape_debug()),
                );
                return None;
            }
            Some(Sticky {
                cookie: cookie.to_string(),
            })
        });
        Upstream {
            name: name.unwrap_or_default().to_string(),
            balance,
            keepalive,
            keepalive_timeout,
            connect_timeout,
            send_timeout,
            read_timeout,
            servers,
            health,
            max_fails,
            fail_timeout,
            retries,
            sticky,
        }
    }

    fn server(&mut self, n: &Node<'_>) -> Option<Server> {
        self.keys(n, &["address", "weight", "backup"]);
        let address = self.required(n, "address").and_then(|f| {
            let label = self.text(&f)?;
            Some((label, self.server_address(&f, label)?))
        });
        let weight = self.get(n, "weight", 1, |r, f| r.integer(f, 1..=MAX_WEIGHT)) as u32;
        let backup = self.get(n, "backup", false, Self::boolean);
        let (label, address) = address?;
        Some(Server {
            address,
            label: label.to_string(),
            weight,
            backup,
        })
    }

    /// Names are resolved once, here: the data path never waits on DNS.
    /// IPv4 is preferred because `localhost` often lists `::1` first while
    /// local services mostly listen on 127.0.0.1 only.
    fn server_address(&mut self, f: &Field<'_>, s: &str) -> Option<SocketAddr> {
        if let Ok(address) = s.parse() {
            return Some(address);
        }
        let has_port = s
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        let found = if has_port {
            s.to_socket_addrs()
                .map(|all| all.collect::<Vec<_>>())
                .map_err(|e| format!("cannot resolve \"{s}\": {e}"))
        } else {
            Err(format!("\"{s}\" is not host:port, like \"127.0.0.1:3000\""))
        };
        let pick = found.and_then(|all| {
            let v4 = all.iter().find(|a| a.is_ipv4());
            v4.or(all.first())
                .copied()
                .ok_or_else(|| format!("\"{s}\" resolves to no address"))
        });
        pick.map_err(|message| self.report(f.line, &f.key, message))
            .ok()
    }

    fn health(&mut self, n: &Node<'_>) -> Health {
        self.keys(n, &["path", "interval", "timeout", "fails", "passes"]);
        let path = self.get(n, "path", "/", |r, f| {
            let path = r.string(f)?;
            if !path.starts_with('/') {
                r.report(f.line, &f.key, format!("\"{path}\" must start with \"/\""));
                return None;
            }
            // The path goes into the probe's request line as written.
            if path.contains(|c: char| c.is_ascii_control() || c == ' ') {
                let message = "must not contain spaces or control characters";
                r.report(f.line, &f.key, message);
                return None;
            }
            Some(path)
        });
        let count = |r: &mut Self, key: &str, default: i64| {
            r.get(n, key, default, |r, f| r.integer(f, 1..=MAX_COUNT))
        };
        Health {
            path: path.to_string(),
            interval: self.get(n, "interval", secs(2), |r, f| r.duration(f, true)),
            timeout: self.get(n, "timeout", secs(1), |r, f| r.duration(f, true)),
            fails: count(self, "fails", 3) as u32,
            passes: count(self, "passes", 2) as u32,
        }
    }

    fn route(
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

        let present: Vec<_> = ACTIONS
            .iter()
            .filter_map(|&name| Some((name, self.field(n, name)?)))
            .collect();
        // Every action written is read, so that its own problems show too.
        let actions: Vec<_> = present
            .iter()
            .map(|(name, f)| self.action(name, f, names, &mut places))
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
        let action = actions.into_iter().next().flatten();

        let expires = self.opt(n, "expires", |r, f| r.duration(f, false));
        let strip_prefix = self.get(n, "strip_prefix", false, Self::boolean);
        let websocket = self.get(n, "websocket", true, Self::boolean);
        let proxy_redirect = self.get(n, "proxy_redirect", false, Self::boolean);
        let cache = self.opt(n, "cache", |r, f| {
            let mut out = Vec::new();
            for (status, f) in r.entries(f) {
                let status = r.status_key(&f, status, 100..=599);
                let validity = r.duration(&f, false);
                out.extend(status.zip(validity));
            }
            Some(out)
        });
        let gzip = self.opt(n, "gzip", |r, f| {
            let node = r.table(f)?;
            r.keys(&node, &["types", "min_length"]);
            let types = r.get(&node, "types", vec!["text/html".to_string()], |r, f| {
                let types = r.strings(f)?;
                if let Some(t) = types.iter().find(|t| !t.contains('/')) {
                    let message = format!("\"{t}\" is not a media type like \"text/plain\"");
                    r.report(f.line, &f.key, message);
                    return None;
                }
                Some(types.iter().map(|t| t.to_ascii_lowercase()).collect())
            });
            let min_length = r.get(&node, "min_length", 1000, |r, f| r.size(f, 0));
            Some(Gzip { types, min_length })
        });
        let set_request_headers = self.pairs(n, "set_request_headers", false);
        let add_response_headers = self.pairs(n, "add_response_headers", false);
        let error_pages = self.opt(n, "error_pages", |r, f| {
            let mut out = Vec::new();
            for (status, f) in r.entries(f) {
                let status = r.status_key(&f, status, 400..=599);
                let page = r.text(&f).map(|p| r.resolve(p));
                if let Some(pair) = status.zip(page) {
                    out.push(pair);
                    places.error_pages.push(f.place());
                }
            }
            Some(out)
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
            "split" => {
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
                Some(Action::Split(parts))
            }
            "static" => {
                let folder = self.text(f)?;
                places.folder = f.place();
                Some(Action::Static(self.resolve(folder)))
            }
            "redirect" => {
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

    /// RFC 9110 `field-value`: no control character but HTAB. CR or LF
    /// would end the field and start another (header injection); the rest
    /// are refused by clients and by ringside's own parser alike.
    fn header_value(&mut self, f: &Field<'_>, value: &str) -> bool {
        let bad = value.chars().find(|&c| c.is_ascii_control() && c != '\t');
        if let Some(c) = bad {
            let message = format!(
                "a header value must not contain control characters (found {})",
                c.escape_default()
            );
            self.report(f.line, &f.key, message);
        }
        bad.is_none()
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
