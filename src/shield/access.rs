//! A route's own gate: `allow`/`deny` on the client address, `methods`,
//! and the `[[limit]]`s it names, checked in that order after the rules.

use std::net::IpAddr;

use super::nets::Nets;

/// The shield keys of one `[[route]]`, resolved.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Empty: every address (that `deny` does not name).
    pub allow: Nets,
    /// Wins over `allow`.
    pub deny: Nets,
    /// Empty: every method. Compared as written (methods are
    /// case-sensitive, RFC 9110 section 9.1). `GET` brings `HEAD` with it,
    /// as in nginx's `limit_except` (RFC 9110 section 9.3.2: HEAD is GET
    /// without the content).
    pub methods: Vec<String>,
    /// `methods` joined for the 405's `Allow` field.
    pub allow_field: String,
    /// Indexes into the config's `[[limit]]`s; all must allow the request.
    pub limits: Vec<usize>,
}

impl Access {
    pub fn new(allow: Nets, deny: Nets, mut methods: Vec<String>, limits: Vec<usize>) -> Self {
        let takes = |m: &str| methods.iter().any(|n| n == m);
        if takes("GET") && !takes("HEAD") {
            methods.push("HEAD".into());
        }
        Access {
            allow,
            deny,
            allow_field: methods.join(", "),
            methods,
            limits,
        }
    }

    /// Whether the client address may use the route.
    pub fn admits(&self, ip: IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }

    /// Whether the route takes this method.
    pub fn takes(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }
}
