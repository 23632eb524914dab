//! `[[rule]]`: deny rules on the normalised path, the decoded query and
//! header values, checked on every request before anything else.
//!
//! Each part is one `RegexSet` over every rule that has it (one for paths,
//! one for queries, one per header name), compiled once per config
//! generation. A request that no set matches — nearly all of them — costs
//! one `is_match` per set and no allocation; only when a set matches are
//! the matching rules worked out, the first in file order whose given parts
//! all match deciding the answer.

use std::{
    borrow::Cow,
    collections::HashSet,
    sync::{Mutex, OnceLock},
};

use httparse::Header;
use regex::bytes::{RegexBuilder, RegexSet, RegexSetBuilder};

/// Most bytes one compiled rule pattern may take (the `regex` crate's
/// `size_limit`; its default is 10 MiB): a pattern that needs more, like
/// `\w{1000}{1000}`, is refused by `--check` instead of costing memory in
/// every worker.
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;
/// Most lazy-DFA cache bytes one set may use per search thread.
const DFA_SIZE_LIMIT: usize = 2 << 20;

/// One `[[rule]]` as the file writes it.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub name: String,
    pub status: u16,
    pub path: Option<String>,
    pub query: Option<String>,
    /// (lowercase header name, pattern)
    pub headers: Vec<(String, String)>,
}

/// Compiles one pattern alone: `Err` says why it cannot be a rule part
/// (a syntax error, or over [`PATTERN_SIZE_LIMIT`]).
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .build()
        .map(drop)
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(n) => {
                format!("the pattern compiles to more than {n} bytes (the limit)")
            }
            e => e.to_string().replace('\n', " "),
        })
}

/// What matched: the answer and the reason logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub status: u16,
    /// `denied by rule "NAME"`, interned for the error log.
    pub reason: &'static str,
}

/// Every `[[rule]]` of a config, compiled.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Per rule: its answer and how many parts it has.
    rules: Vec<(Hit, u32)>,
    path: Option<Part>,
    query: Option<Part>,
    /// (lowercase header name, its part)
    headers: Vec<(String, Part)>,
}

/// One part's patterns over every rule that has it.
#[derive(Debug, Clone)]
struct Part {
    set: RegexSet,
    /// Pattern index → rule index.
    rule_of: Vec<usize>,
}

impl Part {
    fn build(patterns: Vec<(usize, &str)>) -> Result<Option<Part>, String> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let set = RegexSetBuilder::new(patterns.iter().map(|p| p.1))
            .size_limit(PATTERN_SIZE_LIMIT.saturating_mul(patterns.len()))
            .dfa_size_limit(DFA_SIZE_LIMIT)
            .build()
            .map_err(|e| e.to_string().replace('\n', " "))?;
        Ok(Some(Part {
            set,
            rule_of: patterns.iter().map(|p| p.0).collect(),
        }))
    }

    /// Adds one to the count of every rule this part matches in any of
    /// `values`, once per rule.
    fn mark<'v>(
        &self,
        values: impl Iterator<Item = &'v [u8]>,
        counts: &mut Option<Vec<u32>>,
        n: usize,
    ) {
        let mut seen: Option<Vec<bool>> = None;
        for v in values {
            if !self.set.is_match(v) {
                continue;
            }
            let seen = seen.get_or_insert_with(|| vec![false; self.rule_of.len()]);
            for i in self.set.matches(v).iter() {
                seen[i] = true;
            }
        }
        let Some(seen) = seen else { return };
        let counts = counts.get_or_insert_with(|| vec![0; n]);
        for (i, _) in seen.iter().enumerate().filter(|(_, s)| **s) {
            counts[self.rule_of[i]] += 1;
        }
    }
}

impl Rules {
    /// Compiles the rules. Each pattern was checked alone (`check_pattern`);
    /// `Err` is a set that is too large together.
    pub fn compile(specs: &[RuleSpec]) -> Result<Rules, String> {
        let pick = |f: fn(&RuleSpec) -> Option<&String>| {
            (specs.iter().enumerate())
                .filter_map(|(i, r)| Some((i, f(r)?.as_str())))
                .collect::<Vec<_>>()
        };
        let path = Part::build(pick(|r| r.path.as_ref()))?;
        let query = Part::build(pick(|r| r.query.as_ref()))?;
        let mut names: Vec<&str> = Vec::new();
        for (name, _) in specs.iter().flat_map(|r| &r.headers) {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        let mut headers = Vec::new();
        for name in names {
            let patterns = (specs.iter().enumerate())
                .flat_map(|(i, r)| r.headers.iter().map(move |h| (i, h)))
                .filter(|(_, (n, _))| n == name)
                .map(|(i, (_, p))| (i, p.as_str()))
                .collect();
            if let Some(part) = Part::build(patterns)? {
                headers.push((name.to_string(), part));
            }
        }
        let rules = specs
            .iter()
            .map(|r| {
                let parts = r.path.is_some() as u32 + r.query.is_some() as u32;
                let hit = Hit {
                    status: r.status,
                    reason: intern(format!("denied by rule \"{}\"", r.name)),
                };
                (hit, parts + r.headers.len() as u32)
            })
            .collect();
        Ok(Rules {
            rules,
            path,
            query,
            headers,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule (in file order) whose every part matches: `path` is
    /// the normalised path, `query` the query as sent (without `?`).
    pub fn check(&self, path: &[u8], query: &[u8], headers: &[Header<'_>]) -> Option<Hit> {
        if self.rules.is_empty() {
            return None;
        }
        let n = self.rules.len();
        let mut counts = None;
        if let Some(p) = &self.path {
            p.mark(std::iter::once(path), &mut counts, n);
        }
        if let Some(q) = &self.query {
            q.mark(std::iter::once(&*decode_query(query)), &mut counts, n);
        }
        for (name, part) in &self.headers {
            let values = (headers.iter())
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value);
            part.mark(values, &mut counts, n);
        }
        let counts = counts?;
        (self.rules.iter().zip(counts))
            .find(|((_, parts), hits)| *hits == *parts)
            .map(|((hit, _), _)| *hit)
    }
}

/// The query percent-decoded once, with `+` as a space (the form
/// encoding); a `%` without two hex digits stays as it is.
pub fn decode_query(q: &[u8]) -> Cow<'_, [u8]> {
    if !q.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(q);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(q.len());
    let mut i = 0;
    while i < q.len() {
        let b = q[i];
        let pair = q.get(i + 1).zip(q.get(i + 2));
        match (b, pair.and_then(|(&h, &l)| Some((hex(h)?, hex(l)?)))) {
            (b'%', Some((h, l))) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// One `&'static str` per distinct text, for reasons the `Copy` error type
/// carries. Bounded by the distinct rule names ever loaded, not by reloads.
fn intern(s: String) -> &'static str {
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut seen = (SEEN.get_or_init(Mutex::default).lock()).unwrap_or_else(|p| p.into_inner());
    if let Some(&s) = seen.get(s.as_str()) {
        return s;
    }
    let s: &'static str = Box::leak(s.into_boxed_str());
    seen.insert(s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        name: &str,
        path: Option<&str>,
        query: Option<&str>,
        headers: &[(&str, &str)],
    ) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            status: 403,
            path: path.map(Into::into),
            query: query.map(Into::into),
            headers: (headers.iter())
                .map(|(n, p)| (n.to_ascii_lowercase(), p.to_string()))
                .collect(),
        }
    }

    #[test]
    fn every_given_part_must_match_and_the_first_rule_wins() {
        let rules = Rules::compile(&[
            rule("both", Some("^/admin"), Some("debug=1"), &[]),
            rule("ua", None, None, &[("User-Agent", "(?i)sqlmap")]),
            rule("any-admin", Some("^/admin"), None, &[]),
        ])
        .unwrap();
        let ua = [Header {
            name: "user-agent",
            value: b"SQLMap/1.0",
        }];
        let reason = |p: &[u8], q: &[u8], h: &[Header<'_>]| rules.check(p, q, h).map(|h| h.reason);
        assert_eq!(
            reason(b"/admin/x", b"debug=1", &[]),
            Some("denied by rule \"both\"")
        );
        assert_eq!(
            reason(b"/admin/x", b"", &[]),
            Some("denied by rule \"any-admin\"")
        );
        assert_eq!(reason(b"/x", b"", &ua), Some("denied by rule \"ua\""));
        assert_eq!(reason(b"/x", b"debug=1", &[]), None);
    }

    #[test]
    fn the_query_is_decoded_once_with_plus_as_space() {
        assert_eq!(
            &*decode_query(b"a=union+select%20x%2541"),
            b"a=union select x%41"
        );
        assert_eq!(&*decode_query(b"%zz%4"), b"%zz%4");
    }

    #[test]
    fn huge_patterns_are_refused() {
        assert!(check_pattern(r"\w{1000}{1000}")
            .unwrap_err()
            .contains("limit"));
        assert!(check_pattern("(").is_err());
        assert!(check_pattern("(?i)/\\.git").is_ok());
    }
}
