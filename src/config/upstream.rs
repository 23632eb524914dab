//! Configuration, step 1 (schema, continued): `[[upstream]]` — its servers
//! (names resolved to addresses here, once), balancing, timeouts, retries,
//! active health checks and sticky sessions.

use std::{
    collections::HashMap,
    net::{SocketAddr, ToSocketAddrs},
};

use super::{
    file::{is_token, secs, MAX_WEIGHT},
    walk::{Field, Node, Reader, MAX_COUNT},
    Balance, Health, Server, Sticky, Upstream,
};

impl Reader {
    pub(super) fn upstream<'a>(
        &mut self,
        n: &Node<'a>,
        first_seen: &mut HashMap<&'a str, usize>,
    ) -> Upstream {
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
        let name = self.upstream_name(n, first_seen);
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

        let servers = self.servers(n);
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
        let sticky = self.opt(n, "sticky", |r, f| r.sticky(f));
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

    /// `name`, unique among the upstreams; `first_seen` holds each name
    /// read so far with its line.
    fn upstream_name<'a>(
        &mut self,
        n: &Node<'a>,
        first_seen: &mut HashMap<&'a str, usize>,
    ) -> Option<&'a str> {
        self.required(n, "name").and_then(|f| {
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
        })
    }

    /// `servers`: at least one, and not every one a backup.
    fn servers(&mut self, n: &Node<'_>) -> Vec<Server> {
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
        servers
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

    /// `sticky = { cookie = NAME }`: the cookie name is a token.
    fn sticky(&mut self, f: &Field<'_>) -> Option<Sticky> {
        let node = self.table(f)?;
        self.keys(&node, &["cookie"]);
        let f = self.required(&node, "cookie")?;
        let cookie = self.text(&f)?;
        if !is_token(cookie) {
            self.report(
                f.line,
                &f.key,
                format!("\"{}\" is not a valid cookie name", cookie.escape_debug()),
            );
            return None;
        }
        Some(Sticky {
            cookie: cookie.to_string(),
        })
    }
}
