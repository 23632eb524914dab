//! Configuration, step 1: TOML text → resolved `Config`, or every problem in it.
//!
//! The document is walked by hand instead of through a serde schema because
//! serde stops at the first error while `--check` must list them all, each
//! with the line of its key (spans come from `toml_edit::ImDocument`). A bad
//! value is reported and replaced by its default so that the walk goes on;
//! the half-built `Config` is dropped as soon as anything was reported.
//! The walking tools are in `walk.rs`. This file is the schema's top: the
//! sections, `[runtime]`, `[log]`, `[limits]`, `[admin]`, `[cache]` and
//! `[[listen]]` with its TLS; `upstream.rs` and `route.rs` read
//! `[[upstream]]` and `[[route]]`, and the other `config/` files the keys
//! of one concern each (`named.rs`, `acme.rs`, `shield_conn.rs`,
//! `shield_req.rs`).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use toml_edit::ImDocument;

use super::{
    check::{ListenerPlaces, Place, Places},
    shield_conn,
    walk::{Field, Node, Reader, MAX_COUNT},
    AccessFormat, Admin, Cache, CertPair, Config, Level, Limits, Listener, Log, LogTarget, Problem,
    Runtime, Tls, TlsVersion,
};

/// Largest server or split weight: keeps any sum of weights far from `u32::MAX`.
pub(super) const MAX_WEIGHT: i64 = 1_000_000;

/// Parses and resolves `text`; `path` only anchors relative file names.
pub(super) fn parse(text: &str, path: &Path) -> Result<Config, Vec<Problem>> {
    match read(text, path) {
        (Some((config, _)), problems) if problems.is_empty() => Ok(config),
        (_, problems) => Err(problems),
    }
}

/// Like `parse`, and also says where `check.rs`'s subjects were written.
/// The config comes back even with problems in the text (a wrong value
/// left at its default), so that the checks outside the file can still
/// run on the rest; only a syntax error leaves none.
pub(super) fn read(text: &str, path: &Path) -> (Option<(Config, Places)>, Vec<Problem>) {
    let mut reader = Reader::new(text, path);
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let message = e.message().trim().replace('\n', "; ");
            let line = reader.line(e.span()).max(1);
            let syntax = Problem {
                line,
                key: "syntax".into(),
                message,
            };
            return (None, vec![syntax]);
        }
    };
    let root = Node {
        table: Some(doc.as_table()),
        path: String::new(),
        line: 1,
    };
    let config = reader.config(&root);
    reader.problems.sort_by_key(|p| p.line);
    (Some((config, reader.places)), reader.problems)
}

/// RFC 9110 `token`: header and cookie names.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(crate::http::parse::is_tchar)
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
        let (mut listener_names, mut addresses) = (HashMap::new(), HashMap::new());
        match self.field(root, "listen") {
            Some(f) => {
                for node in self.tables(&f, "at least one [[listen]] is required") {
                    let i = listeners.len();
                    let seen = (&mut listener_names, &mut addresses);
                    listeners.push(self.listener(&node, i, seen));
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
        (names, addresses): (&mut HashMap<String, usize>, &mut HashMap<SocketAddr, usize>),
    ) -> Listener {
        let keys = [
            "address",
            "http2",
            "hsts",
            "redirect_https",
            "https_port",
            "defer_accept",
            "name",
            "tls",
        ];
        self.keys(n, &[&keys[..], &shield_conn::LISTEN_KEYS].concat());
        let (name, https_port) = self.listener_naming(n, names);
        let mut places = ListenerPlaces::default();
        let address = self.required(n, "address").and_then(|f| {
            places.address = f.place();
            let address = self.socket(&f)?;
            // A listener is known by its address (routes, reloads and
            // upgrades find it so): two with one address would be one.
            match addresses.get(&address) {
                Some(line) => {
                    let message =
                        format!("{address} is already the address of the listener of line {line}");
                    self.report(f.line, &f.key, message);
                }
                None => {
                    addresses.insert(address, f.line);
                }
            }
            Some(address)
        });
        let http2 = self.get(n, "http2", false, Self::boolean);
        let hsts = self.opt(n, "hsts", |r, f| {
            let s = r.text(f)?;
            r.header_value(f, s)
                .then(|| std::sync::Arc::new(s.to_string()))
        });
        let redirect_https = self.get(n, "redirect_https", false, Self::boolean);
        let defer_accept = self.get(n, "defer_accept", false, Self::boolean);
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
            defer_accept,
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

    /// RFC 9110 `field-value`: no control character but HTAB. CR or LF
    /// would end the field and start another (header injection); the rest
    /// are refused by clients and by ringside's own parser alike.
    pub(super) fn header_value(&mut self, f: &Field<'_>, value: &str) -> bool {
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

pub(super) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
