//! `limits.real_ip_from`: the client's address as named by proxies the
//! operator trusts, nginx's `real_ip_header X-Forwarded-For` with
//! `real_ip_recursive on`.
//!
//! A connection from a trusted address (a CDN, a balancer) does not name
//! the client itself: its X-Forwarded-For does. The list is read from the
//! right, where each proxy appended the address it saw; every trusted
//! address is skipped, and the first one that is not trusted is the
//! client. An entry that is not an address stops the walk at the trusted
//! address to its right: what stands left of it was written by someone
//! nobody vouches for. A chain trusted all the way names its left-most
//! address.

use std::net::{IpAddr, SocketAddr};

use httparse::Header;

use super::nets::{canonical, Nets};

/// The address every feature uses for a request that came over a
/// connection from `hop` with these header fields.
pub fn client(hop: IpAddr, headers: &[Header<'_>], trusted: &Nets) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(hop) {
        return hop;
    }
    let mut client = hop;
    // Several X-Forwarded-For fields are one list, in order (RFC 9110
    // section 5.3): the right-most entry is the last field's last.
    let fields = headers
        .iter()
        .rev()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"));
    for field in fields {
        let entries = field.value.rsplit(|&b| b == b',');
        for entry in entries.filter(|e| !e.trim_ascii().is_empty()) {
            let Some(ip) = address(entry.trim_ascii()) else {
                return client;
            };
            client = canonical(ip);
            if !trusted.contains(client) {
                return client;
            }
        }
    }
    client
}

/// One X-Forwarded-For entry: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`,
/// or either with a port (`192.0.2.1:443`, `[2001:db8::1]:443`), as proxies
/// write them.
fn address(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(v6) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Nets {
        Nets::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&'static str]) -> Vec<Header<'static>> {
        values
            .iter()
            .map(|v| Header {
                name: "X-Forwarded-For",
                value: v.as_bytes(),
            })
            .collect()
    }

    fn got(hop: &str, values: &[&'static str]) -> String {
        let trusted = nets(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        client(ip(hop), &xff(values), &trusted).to_string()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        assert_eq!(got("192.0.2.9", &["203.0.113.5"]), "192.0.2.9");
        let none = client(ip("10.0.0.1"), &xff(&["203.0.113.5"]), &Nets::default());
        assert_eq!(none, ip("10.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        assert_eq!(got("10.0.0.1", &["203.0.113.5"]), "203.0.113.5");
        assert_eq!(
            got("10.0.0.1", &["6.6.6.6, 203.0.113.5, 10.1.1.1"]),
            "203.0.113.5"
        );
        // Fields in order: the last field's entries are the right-most.
        assert_eq!(
            got("10.0.0.1", &["6.6.6.6, 10.2.2.2", "10.3.3.3"]),
            "6.6.6.6"
        );
        assert_eq!(got("10.0.0.1", &[" ,203.0.113.5 , ,"]), "203.0.113.5");
        assert_eq!(got("10.0.0.1", &["[2001:db8::5]:443"]), "2001:db8::5");
        assert_eq!(
            got("10.0.0.1", &["2001:db8::5, 2001:db8:ffff::1"]),
            "2001:db8::5"
        );
        assert_eq!(got("10.0.0.1", &["[2001:db8::6]"]), "2001:db8::6");
        assert_eq!(got("10.0.0.1", &["203.0.113.5:8080"]), "203.0.113.5");
        assert_eq!(got("10.0.0.1", &["::ffff:203.0.113.7"]), "203.0.113.7");
        assert_eq!(got("::ffff:10.0.0.1", &["203.0.113.5"]), "203.0.113.5");
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_address() {
        assert_eq!(got("10.0.0.1", &["unknown"]), "10.0.0.1");
        assert_eq!(got("10.0.0.1", &["6.6.6.6, garbage, 10.4.4.4"]), "10.4.4.4");
        assert_eq!(got("10.0.0.1", &["6.6.6.6 7.7.7.7"]), "10.0.0.1");
        assert_eq!(got("10.0.0.1", &["fe80::1%eth0"]), "10.0.0.1");
        assert_eq!(got("10.0.0.1", &["\u{ff}"]), "10.0.0.1");
        assert_eq!(got("10.0.0.1", &[""]), "10.0.0.1");
        assert_eq!(got("10.0.0.1", &[]), "10.0.0.1");
    }

    #[test]
    fn a_chain_trusted_all_the_way_names_its_left_most_address() {
        assert_eq!(got("10.0.0.1", &["10.9.9.9, 10.8.8.8"]), "10.9.9.9");
        let long: &'static str = Box::leak(vec!["10.1.2.3"; 300].join(", ").into_boxed_str());
        assert_eq!(got("10.0.0.1", &[long]), "10.1.2.3");
        let long: &'static str = Box::leak(format!("203.0.113.1, {long}").into_boxed_str());
        assert_eq!(got("10.0.0.1", &[long]), "203.0.113.1");
    }
}
