//! The normalised path routes and rules match on, as nginx matches
//! locations: percent-decoded once, `.` and `..` segments resolved (never
//! above the root), `//` collapsed. The target still goes upstream as sent;
//! only the decision uses this form, so `/x/../admin/`, `/%61dmin/`,
//! `//admin/` and `/./admin/` all meet the route that guards `/admin/`.

use std::borrow::Cow;

/// The normalised form of `path` (the path of a request target, without its
/// query). Borrowed when `path` is already normal, which is the common case.
///
/// A `%` not followed by two hex digits stays as it is. Decoding happens
/// once: `%252e` is the literal `%2e`, never a dot. An encoded `/` (`%2F`)
/// separates segments like a plain one, as in nginx.
pub fn normalize(path: &[u8]) -> Cow<'_, [u8]> {
    if is_normal(path) {
        return Cow::Borrowed(path);
    }
    let decoded = decode(path);
    Cow::Owned(resolve(&decoded))
}

/// True when `normalize` would change nothing: no `%`, and no empty, `.`
/// or `..` segment (an empty last segment is a trailing slash, which is
/// kept). A path that does not start with `/` (`*`) is left alone.
fn is_normal(path: &[u8]) -> bool {
    let Some(rest) = path.strip_prefix(b"/") else {
        return true;
    };
    if memchr::memchr(b'%', rest).is_some() {
        return false;
    }
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last) || seg == b"." || seg == b".." {
            return false;
        }
    }
    true
}

/// Decodes `%XX` once; anything else is copied.
fn decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let Some(v) = s.get(i + 1..i + 3).and_then(hex_pair) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn hex_pair(h: &[u8]) -> Option<u8> {
    let d = |b: u8| (b as char).to_digit(16);
    Some((d(h[0])? * 16 + d(h[1])?) as u8)
}

/// Resolves dot segments and collapses empty ones (RFC 3986 section 5.2.4,
/// plus `//` → `/`). The result starts with `/` and keeps a trailing slash
/// (also the one a final `.` or `..` segment stands for).
fn resolve(p: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut dir = false;
    for seg in p.split(|&b| b == b'/') {
        dir = true;
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => {
                segments.push(s);
                dir = false;
            }
        }
    }
    let mut out = Vec::with_capacity(p.len() + 1);
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if dir || segments.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    fn n(p: &str) -> String {
        String::from_utf8(normalize(p.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn bypass_shapes_meet_the_route() {
        assert_eq!(n("/x/../admin/"), "/admin/");
        assert_eq!(n("/%61dmin/"), "/admin/");
        assert_eq!(n("//admin/"), "/admin/");
        assert_eq!(n("/./admin/"), "/admin/");
        assert_eq!(n("/admin/./x"), "/admin/x");
        assert_eq!(n("/%2e%2e/admin"), "/admin");
        assert_eq!(n("/a%2Fb"), "/a/b");
    }

    #[test]
    fn stays_under_the_root() {
        assert_eq!(n("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/a/.."), "/");
        assert_eq!(n("/a/b/."), "/a/b/");
        assert_eq!(n("/a/b/.."), "/a/");
    }

    #[test]
    fn decodes_once() {
        assert_eq!(n("/%252e%252e/x"), "/%2e%2e/x");
        assert_eq!(n("/100%"), "/100%");
        assert_eq!(n("/%zz/a"), "/%zz/a");
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a", "/a/", "/a/b.c", "/.well-known/x", "/a..b"] {
            assert!(
                matches!(normalize(p.as_bytes()), std::borrow::Cow::Borrowed(_)),
                "{p}"
            );
            assert_eq!(n(p), p);
        }
        assert_eq!(n("*"), "*");
    }
}
