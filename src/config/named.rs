//! Configuration, step 1 (schema, continued): the keys that tie a config to
//! its machine and name its parts — `[runtime] user` / `group` (the account
//! the process runs as once its listeners are bound), a listener's `name`
//! and `https_port`, and a route's `listeners`.

use std::{collections::HashMap, path::Path};

use nix::unistd::{Group, User};
use toml_edit::ImDocument;

use super::{
    walk::{Field, Node, Reader},
    Account,
};

impl Reader {
    /// `user` and `group` of `[runtime]`, resolved to ids here so that
    /// `--check` names an account the machine does not have. `group`
    /// defaults to the user's primary group (as systemd's `User=` does).
    pub(super) fn account(&mut self, n: &Node<'_>) -> Option<Account> {
        let user = self.opt(n, "user", |r, f| {
            let name = r.account_name(f)?;
            r.lookup(f, "user", name, |name| {
                User::from_name(name).map(|u| u.map(|u| (u.uid.as_raw(), u.gid.as_raw())))
            })
            .map(|(uid, gid)| (name.to_string(), uid, gid))
        });
        let group = self.opt(n, "group", |r, f| {
            let name = r.account_name(f)?;
            r.lookup(f, "group", name, |name| {
                Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw()))
            })
            .map(|gid| (name.to_string(), gid))
        });
        if let (None, Some(f)) = (&user, self.field(n, "group")) {
            if self.field(n, "user").is_none() {
                let message = "needs user: the group is switched to together with the user";
                self.report(f.line, &f.key, message);
            }
        }
        let (user, uid, primary) = user?;
        let (group, gid) = match group {
            Some((name, gid)) => (Some(name), gid),
            None => (None, primary),
        };
        Some(Account {
            user,
            uid,
            gid,
            group,
        })
    }

    fn account_name<'a>(&mut self, f: &Field<'a>) -> Option<&'a str> {
        let name = self.string(f)?;
        if name.is_empty() || name.contains(|c: char| c.is_control() || c == ':' || c == '\0') {
            let message = format!("\"{}\" is not an account name", name.escape_debug());
            self.report(f.line, &f.key, message);
            return None;
        }
        Some(name)
    }

    fn lookup<T>(
        &mut self,
        f: &Field<'_>,
        what: &str,
        name: &str,
        find: impl FnOnce(&str) -> nix::Result<Option<T>>,
    ) -> Option<T> {
        match find(name) {
            Ok(Some(found)) => Some(found),
            Ok(None) => {
                let message = format!("no {what} \"{name}\" on this machine");
                self.report(f.line, &f.key, message);
                None
            }
            Err(e) => {
                let message = format!("cannot look up the {what} \"{name}\": {e}");
                self.report(f.line, &f.key, message);
                None
            }
        }
    }

    /// A listener's `name` (unique among the listeners; `seen` maps each
    /// name to the line that gave it) and `https_port` (443 by default).
    pub(super) fn listener_naming(
        &mut self,
        n: &Node<'_>,
        seen: &mut HashMap<String, usize>,
    ) -> (Option<String>, u16) {
        let name = self.opt(n, "name", |r, f| {
            let name = r.string(f)?;
            if name.is_empty() || name.contains(|c: char| c.is_control()) {
                let message = "must be a non-empty name without control characters";
                r.report(f.line, &f.key, message);
                return None;
            }
            if let Some(line) = seen.get(name) {
                let message = format!("\"{name}\" already names the listener of line {line}");
                r.report(f.line, &f.key, message);
                return None;
            }
            seen.insert(name.to_string(), f.line);
            Some(name.to_string())
        });
        let https_port = self.get(n, "https_port", 443, |r, f| r.integer(f, 1..=65535)) as u16;
        (name, https_port)
    }

    /// A route's `listeners`: indexes into `Config::listeners` (empty: the
    /// route serves every listener). `names` is parallel to the listeners.
    pub(super) fn route_listeners(&mut self, n: &Node<'_>, names: &[Option<String>]) -> Vec<usize> {
        let Some(f) = self.field(n, "listeners") else {
            return Vec::new();
        };
        let Some(wanted) = self.strings(&f) else {
            return Vec::new();
        };
        if wanted.is_empty() {
            self.report(
                f.line,
                &f.key,
                "names no listener: leave it out to serve them all",
            );
        }
        let mut out = Vec::new();
        for name in &wanted {
            match names.iter().position(|l| l.as_deref() == Some(*name)) {
                Some(i) if !out.contains(&i) => out.push(i),
                Some(_) => {}
                None => {
                    let known: Vec<&str> = names.iter().filter_map(|l| l.as_deref()).collect();
                    let known = match known.is_empty() {
                        true => "no listener has a name".to_string(),
                        false => format!("named listeners: {}", known.join(", ")),
                    };
                    let message = format!("unknown listener \"{name}\" ({known})");
                    self.report(f.line, &f.key, message);
                }
            }
        }
        out
    }
}

/// A document with one of every kind of table the schema has, so that
/// walking it visits every table's list of keys.
const EVERY_TABLE: &str = r#"
[runtime]
[log]
[limits]
[admin]
[cache]
[acme]
directory = "https://127.0.0.1:1/dir"
storage = "s"
[[listen]]
address = "127.0.0.1:1"
tls = { certs = [ { cert = "c", key = "k" } ] }
[[listen]]
address = "127.0.0.1:2"
tls = { acme = ["a.example"] }
[[upstream]]
name = "u"
servers = [ { address = "127.0.0.1:1" } ]
health = { path = "/" }
sticky = { cookie = "c" }
[[route]]
path = "/"
split = [ { upstream = "u" } ]
redirect = { to = "/" }
respond = { status = 200 }
gzip = { types = ["text/plain"] }
[[limit]]
name = "l"
rate = "1r/s"
[[rule]]
name = "r"
path = "x"
header = { "A" = "b" }
"#;

/// Every key the parser accepts, as dotted paths without array indexes
/// (`listen.tls.certs.cert`), taken from the lists the walk itself checks
/// keys against: the configuration reference is tested against it.
pub fn known_keys() -> Vec<String> {
    let mut reader = Reader::new(EVERY_TABLE, Path::new("ringside.toml"));
    let Ok(doc) = ImDocument::parse(EVERY_TABLE) else {
        return Vec::new();
    };
    let root = Node {
        table: Some(doc.as_table()),
        path: String::new(),
        line: 1,
    };
    reader.config(&root);
    let mut keys = reader.known;
    keys.sort();
    keys.dedup();
    keys
}
