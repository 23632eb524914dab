//! Configuration, step 1 (continued): the edge shield's connection keys,
//! `limits.max_connections_per_ip`, `limits.real_ip_from` and a listener's
//! `proxy_protocol`, `allow` and `deny` (see `shield/`).

use crate::shield::nets::{Net, Nets};

use super::walk::{Field, Node, Reader, MAX_COUNT};

/// The `[limits]` keys read here.
pub(super) const LIMITS_KEYS: [&str; 2] = ["max_connections_per_ip", "real_ip_from"];

/// The `[[listen]]` keys read here.
pub(super) const LISTEN_KEYS: [&str; 3] = ["proxy_protocol", "allow", "deny"];

/// A listener's connection checks.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// Every connection starts with a PROXY v1 or v2 header.
    pub proxy_protocol: bool,
    /// Client addresses let in; empty lets every address in.
    pub allow: Nets,
    /// Client addresses turned away; wins over `allow`.
    pub deny: Nets,
}

impl Gate {
    /// Whether the lists let `ip` in (deny wins; an empty allow allows all).
    pub fn lets_in(&self, ip: std::net::IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }
}

impl Reader {
    /// `max_connections_per_ip` (0 = off) and `real_ip_from`.
    pub(super) fn limits_shield(&mut self, n: &Node<'_>) -> (u32, Nets) {
        let per_ip = self.get(n, "max_connections_per_ip", 0, |r, f| {
            r.integer(f, 0..=MAX_COUNT)
        }) as u32;
        let real_ip_from = self.get(n, "real_ip_from", Nets::default(), Self::nets);
        (per_ip, real_ip_from)
    }

    pub(super) fn gate(&mut self, n: &Node<'_>) -> Gate {
        Gate {
            proxy_protocol: self.get(n, "proxy_protocol", false, Self::boolean),
            allow: self.get(n, "allow", Nets::default(), Self::nets),
            deny: self.get(n, "deny", Nets::default(), Self::nets),
        }
    }

    /// A list of networks (`"10.0.0.0/8"`, `"2001:db8::/32"`, `"192.0.2.7"`);
    /// each bad one is reported at its own line.
    pub(super) fn nets(&mut self, f: &Field<'_>) -> Option<Nets> {
        let Some(array) = f.item.as_array() else {
            self.wrong(f, "an array of addresses or CIDR networks");
            return None;
        };
        let mut nets = Vec::new();
        let mut bad = false;
        for v in array {
            let line = self.line(v.span()).max(f.line);
            let Some(s) = v.as_str() else {
                self.report(
                    line,
                    &f.key,
                    "expected an address or CIDR network as a string",
                );
                bad = true;
                continue;
            };
            match s.parse::<Net>() {
                Ok(net) => nets.push(net),
                Err(e) => {
                    self.report(line, &f.key, e.to_string());
                    bad = true;
                }
            }
        }
        (!bad).then(|| Nets::new(nets))
    }
}
