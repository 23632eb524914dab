//! Address lists: `"10.0.0.0/8"`, `"2001:db8::/32"` or a single address.
//!
//! An IPv4 client that reaches a dual-stack socket as `::ffff:a.b.c.d` is
//! matched as `a.b.c.d`, so one list covers both socket kinds.

use std::{fmt, net::IpAddr, str::FromStr};

/// One network: an address and how many leading bits of it count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Why a network did not parse; the text is what `--check` reports.
#[derive(Debug, PartialEq, Eq)]
pub struct BadNet(pub String);

impl fmt::Display for BadNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Net {
    type Err = BadNet;

    fn from_str(s: &str) -> Result<Self, BadNet> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| BadNet(format!("{s:?} is not an IP address or CIDR network")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => {
                    return Err(BadNet(format!(
                        "{s:?}: the prefix length must be 0..={max}"
                    )))
                }
            },
        };
        // A mapped network (`::ffff:10.0.0.0/104`) is the IPv4 one it maps.
        match canonical(addr) {
            v4 @ IpAddr::V4(_) if addr.is_ipv6() && prefix >= 96 => Ok(Net {
                addr: v4,
                prefix: prefix - 96,
            }),
            _ => Ok(Net { addr, prefix }),
        }
    }
}

/// A list of networks; empty matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nets(Vec<Net>);

impl Nets {
    pub fn new(nets: Vec<Net>) -> Self {
        Nets(nets)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; every other address as it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!net("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::5")));
        assert!(net("::/0").contains(ip("::1")));
    }

    #[test]
    fn mapped_ipv4_matches_ipv4_lists() {
        assert!(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.2")));
        assert!(net("::ffff:10.0.0.0/104").contains(ip("10.1.2.3")));
    }

    #[test]
    fn bad_networks_are_refused_with_a_reason() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "1.2.3.4/-1",
        ] {
            let e = bad.parse::<Net>().unwrap_err();
            assert!(e.0.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn a_list_matches_any_member_and_empty_matches_none() {
        let l = Nets::new(vec![net("10.0.0.0/8"), net("192.0.2.7")]);
        assert!(l.contains(ip("192.0.2.7")) && l.contains(ip("10.9.9.9")));
        assert!(!l.contains(ip("192.0.2.8")));
        assert!(!Nets::default().contains(ip("10.0.0.1")));
    }
}
