//! Configuration, step 1 (schema, edge shield on requests): `[[limit]]`,
//! `[[rule]]` and the route keys `limit`, `allow`, `deny`, `methods`,
//! `hide_response_headers`. Rule patterns are compiled here, so `--check`
//! reports a bad or too large one with its line and key.

use std::{collections::HashMap, time::Duration};

use super::{
    file::is_token,
    walk::{Field, Node, Reader},
};
use crate::shield::{
    access::Access,
    limit::{Key, Limit},
    nets::{Net, Nets},
    rules::{check_pattern, RuleSpec, Rules},
};

/// The keys a `[[route]]` takes for the shield.
pub(super) const ROUTE_KEYS: [&str; 5] =
    ["limit", "allow", "deny", "methods", "hide_response_headers"];
/// Largest `burst` and rate count: far beyond any real limit, and keeps
/// `burst × interval` inside 64-bit nanoseconds.
const MAX_RATE: i64 = 1_000_000;

/// The `[[limit]]`s, and their names → indexes for the routes.
pub(super) struct LimitSet {
    pub(super) limits: Vec<Limit>,
    names: HashMap<String, usize>,
}

impl Reader {
    pub(super) fn rate_limits(&mut self, root: &Node<'_>) -> LimitSet {
        let mut set = LimitSet {
            limits: Vec::new(),
            names: HashMap::new(),
        };
        let Some(f) = self.field(root, "limit") else {
            return set;
        };
        for n in self.tables(&f, "at least one [[limit]] is expected here") {
            self.keys(&n, &["name", "rate", "burst", "key", "status"]);
            let name = self.required(&n, "name").and_then(|f| {
                let name = self.text(&f)?;
                if set.names.contains_key(name) {
                    self.report(f.line, &f.key, format!("duplicate limit name \"{name}\""));
                    return None;
                }
                Some(name)
            });
            let rate = self
                .required(&n, "rate")
                .and_then(|f| self.rate(&f))
                .unwrap_or((1, Duration::from_secs(1)));
            let burst = self.get(&n, "burst", 1, |r, f| r.integer(f, 1..=MAX_RATE)) as u64;
            let key = self.get(&n, "key", Key::Ip, |r, f| {
                let s = r.string(f)?;
                match s.split_once(':') {
                    None if s == "ip" => Some(Key::Ip),
                    Some(("header", h)) if is_token(h) => Some(Key::Header(h.to_ascii_lowercase())),
                    _ => {
                        let message = format!("\"{s}\" is not \"ip\" or \"header:NAME\"");
                        r.report(f.line, &f.key, message);
                        None
                    }
                }
            });
            let status = self.get(&n, "status", 429, |r, f| r.integer(f, 400..=599)) as u16;
            let Some(name) = name else { continue };
            set.names.insert(name.to_string(), set.limits.len());
            let (count, period) = rate;
            set.limits
                .push(Limit::new(name, key, status, count, period, burst));
        }
        set
    }

    /// `"10r/s"` or `"600r/m"`.
    fn rate(&mut self, f: &Field<'_>) -> Option<(u64, Duration)> {
        let s = self.string(f)?;
        let parsed = s.split_once("r/").and_then(|(n, unit)| {
            let n: i64 = n.parse().ok().filter(|n| (1..=MAX_RATE).contains(n))?;
            let period = match unit {
                "s" => Duration::from_secs(1),
                "m" => Duration::from_secs(60),
                _ => return None,
            };
            Some((n as u64, period))
        });
        if parsed.is_none() {
            let message =
                format!("\"{s}\" is not a rate like \"10r/s\" or \"600r/m\" (1 to {MAX_RATE})");
            self.report(f.line, &f.key, message);
        }
        parsed
    }

    pub(super) fn rules(&mut self, root: &Node<'_>) -> Rules {
        let Some(f) = self.field(root, "rule") else {
            return Rules::default();
        };
        let mut specs = Vec::new();
        let mut first_line = f.line;
        for (i, n) in self
            .tables(&f, "at least one [[rule]] is expected here")
            .into_iter()
            .enumerate()
        {
            if i == 0 {
                first_line = n.line;
            }
            specs.extend(self.rule(&n));
        }
        match Rules::compile(&specs) {
            Ok(rules) => rules,
            Err(message) => {
                self.report(first_line, "rule", format!("the rules together: {message}"));
                Rules::default()
            }
        }
    }

    fn rule(&mut self, n: &Node<'_>) -> Option<RuleSpec> {
        self.keys(n, &["name", "path", "query", "header", "status"]);
        let before = self.problems.len();
        let name = self.required(n, "name").and_then(|f| self.text(&f));
        let path = self.opt(n, "path", |r, f| r.pattern(f));
        let query = self.opt(n, "query", |r, f| r.pattern(f));
        let mut headers: Vec<(String, String)> = Vec::new();
        if let Some(f) = self.field(n, "header") {
            for (name, f) in self.entries(&f) {
                let lower = name.to_ascii_lowercase();
                if !is_token(name) {
                    let message = format!("\"{}\" is not a valid name", name.escape_debug());
                    self.report(f.line, &f.key, message);
                } else if headers.iter().any(|(h, _)| *h == lower) {
                    self.report(f.line, &f.key, format!("\"{name}\" is named twice"));
                } else if let Some(p) = self.pattern(&f) {
                    headers.push((lower, p));
                }
            }
        }
        let status = self.get(n, "status", 403, |r, f| r.integer(f, 400..=599)) as u16;
        if self.problems.len() > before {
            return None;
        }
        if path.is_none() && query.is_none() && headers.is_empty() {
            self.report(n.line, &n.path, "needs at least one of path, query, header");
            return None;
        }
        Some(RuleSpec {
            name: name?.to_string(),
            status,
            path,
            query,
            headers,
        })
    }

    fn pattern(&mut self, f: &Field<'_>) -> Option<String> {
        let p = self.string(f)?;
        match check_pattern(p) {
            Ok(()) => Some(p.to_string()),
            Err(message) => {
                self.report(f.line, &f.key, format!("bad regular expression: {message}"));
                None
            }
        }
    }

    /// The shield keys of one `[[route]]`.
    pub(super) fn route_access(&mut self, n: &Node<'_>, limits: &LimitSet) -> Access {
        let allow = self.route_nets(n, "allow");
        let deny = self.route_nets(n, "deny");
        let methods = self.get(n, "methods", Vec::new(), |r, f| {
            let list = r.strings(f)?;
            if let Some(m) = list.iter().find(|m| !is_token(m)) {
                let message = format!("\"{}\" is not a method name", m.escape_debug());
                r.report(f.line, &f.key, message);
                return None;
            }
            if list.is_empty() {
                r.report(f.line, &f.key, "needs at least one method");
                return None;
            }
            Some(list.iter().map(|m| m.to_string()).collect())
        });
        let limit = self.get(n, "limit", Vec::new(), |r, f| {
            let names = match f.item.as_str() {
                Some(one) => vec![one],
                None => r.strings(f)?,
            };
            let mut out = Vec::new();
            for name in names {
                match limits.names.get(name) {
                    Some(&i) => out.push(i),
                    None => r.report(f.line, &f.key, format!("unknown limit \"{name}\"")),
                }
            }
            Some(out)
        });
        Access::new(allow, deny, methods, limit)
    }

    /// `hide_response_headers`, lowercase.
    pub(super) fn hidden_headers(&mut self, n: &Node<'_>) -> Vec<String> {
        self.get(n, "hide_response_headers", Vec::new(), |r, f| {
            let names = r.strings(f)?;
            if let Some(h) = names.iter().find(|h| !is_token(h)) {
                let message = format!("\"{}\" is not a valid header name", h.escape_debug());
                r.report(f.line, &f.key, message);
                return None;
            }
            Some(names.iter().map(|h| h.to_ascii_lowercase()).collect())
        })
    }

    fn route_nets(&mut self, n: &Node<'_>, key: &str) -> Nets {
        self.get(n, key, Nets::default(), |r, f| {
            let mut out = Vec::new();
            for s in r.strings(f)? {
                match s.parse::<Net>() {
                    Ok(net) => out.push(net),
                    Err(e) => r.report(f.line, &f.key, e.to_string()),
                }
            }
            Some(Nets::new(out))
        })
    }
}
