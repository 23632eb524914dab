//! Configuration, step 1 (tools): walking a `toml_edit` document by hand.
//!
//! `Reader` turns spans into lines and reads typed values; each read that
//! fails records a `Problem` (line, dotted key, message) and returns `None`,
//! so that the caller can fall back to a default and keep walking. The
//! schema itself (which keys, which defaults) lives in `file.rs`.

use std::{
    ops::{Range, RangeInclusive},
    path::{Path, PathBuf},
    time::Duration,
};

use toml_edit::{Item, TableLike, Value};

use super::{
    check::{Place, Places},
    units, Problem,
};

/// Largest plain count (keepalive, retries, max_fails, …).
pub(super) const MAX_COUNT: i64 = u32::MAX as i64;

pub(super) struct Reader {
    /// Byte offset where each line starts: turns spans into line numbers.
    line_starts: Vec<usize>,
    /// Relative paths in the file are taken from the file's folder, as nginx
    /// takes them from its prefix, so a config works from any working folder.
    folder: PathBuf,
    pub(super) problems: Vec<Problem>,
    pub(super) places: Places,
    /// Every key the walk accepted in the tables it visited, as dotted
    /// paths: the list the configuration reference is checked against.
    pub(super) known: Vec<String>,
}

/// A table (`[x]`, `[[x]]` element or inline `{ }`) with its dotted path.
pub(super) struct Node<'a> {
    /// `None` for a section that is absent: every key takes its default.
    pub(super) table: Option<&'a dyn TableLike>,
    pub(super) path: String,
    /// Where a missing key is reported.
    pub(super) line: usize,
}

/// One key that is present, with its dotted path and line.
pub(super) struct Field<'a> {
    pub(super) item: &'a Item,
    pub(super) key: String,
    pub(super) line: usize,
}

impl Field<'_> {
    pub(super) fn place(&self) -> Place {
        Place {
            line: self.line,
            key: self.key.clone(),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

fn kind(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => value_kind(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

impl Reader {
    pub(super) fn new(text: &str, path: &Path) -> Self {
        Reader {
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            folder: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            problems: Vec::new(),
            places: Places::default(),
            known: Vec::new(),
        }
    }

    pub(super) fn line(&self, span: Option<Range<usize>>) -> usize {
        span.map_or(0, |s| {
            self.line_starts.partition_point(|&start| start <= s.start)
        })
    }

    pub(super) fn report(&mut self, line: usize, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        self.folder.join(path)
    }

    // ---- walking ----

    pub(super) fn keys(&mut self, node: &Node<'_>, allowed: &[&str]) {
        self.known
            .extend(allowed.iter().map(|key| join(&node.path, key)));
        let Some(table) = node.table else { return };
        for (key, item) in table.iter() {
            if !allowed.contains(&key) {
                let line = match self.line(table.key(key).and_then(|k| k.span())) {
                    0 => self.line(item.span()).max(node.line),
                    line => line,
                };
                let message = format!("unknown key (known: {})", allowed.join(", "));
                self.report(line, &join(&node.path, key), message);
            }
        }
    }

    pub(super) fn field<'a>(&self, node: &Node<'a>, key: &str) -> Option<Field<'a>> {
        let (k, item) = node.table?.get_key_value(key)?;
        if item.is_none() {
            return None;
        }
        let line = match self.line(k.span()) {
            0 => self.line(item.span()).max(node.line),
            line => line,
        };
        Some(Field {
            item,
            key: join(&node.path, key),
            line,
        })
    }

    pub(super) fn required<'a>(&mut self, node: &Node<'a>, key: &str) -> Option<Field<'a>> {
        let field = self.field(node, key);
        if field.is_none() {
            self.report(node.line, &join(&node.path, key), "is required");
        }
        field
    }

    /// The value of `key`, `default` when absent or bad (bad is reported).
    pub(super) fn get<'a, T>(
        &mut self,
        node: &Node<'a>,
        key: &str,
        default: T,
        read: impl FnOnce(&mut Self, &Field<'a>) -> Option<T>,
    ) -> T {
        self.opt(node, key, read).unwrap_or(default)
    }

    pub(super) fn opt<'a, T>(
        &mut self,
        node: &Node<'a>,
        key: &str,
        read: impl FnOnce(&mut Self, &Field<'a>) -> Option<T>,
    ) -> Option<T> {
        let field = self.field(node, key)?;
        read(self, &field)
    }

    /// A section of `parent`; absent or not a table, it reads as empty.
    pub(super) fn section<'a>(&mut self, parent: &Node<'a>, key: &str) -> Node<'a> {
        let node = self.field(parent, key).and_then(|f| self.table(&f));
        node.unwrap_or(Node {
            table: None,
            path: join(&parent.path, key),
            line: parent.line,
        })
    }

    // ---- typed values ----

    pub(super) fn wrong(&mut self, f: &Field<'_>, expected: &str) {
        let message = format!("expected {expected}, found {}", kind(f.item));
        self.report(f.line, &f.key, message);
    }

    pub(super) fn string<'a>(&mut self, f: &Field<'a>) -> Option<&'a str> {
        let s = f.item.as_str();
        if s.is_none() {
            self.wrong(f, "a string");
        }
        s
    }

    pub(super) fn text<'a>(&mut self, f: &Field<'a>) -> Option<&'a str> {
        let s = self.string(f)?;
        if s.is_empty() {
            self.report(f.line, &f.key, "must not be empty");
            return None;
        }
        Some(s)
    }

    pub(super) fn boolean(&mut self, f: &Field<'_>) -> Option<bool> {
        let b = f.item.as_bool();
        if b.is_none() {
            self.wrong(f, "true or false");
        }
        b
    }

    pub(super) fn integer(&mut self, f: &Field<'_>, range: RangeInclusive<i64>) -> Option<i64> {
        let Some(n) = f.item.as_integer() else {
            self.wrong(f, "an integer");
            return None;
        };
        if range.contains(&n) {
            return Some(n);
        }
        let message = if *range.end() >= MAX_COUNT {
            format!("must be at least {}", range.start())
        } else {
            format!("must be from {} to {}", range.start(), range.end())
        };
        self.report(f.line, &f.key, message);
        None
    }

    /// `nonzero`: for timeouts where zero would fail every request at once.
    pub(super) fn duration(&mut self, f: &Field<'_>, nonzero: bool) -> Option<Duration> {
        let Some(s) = f.item.as_str() else {
            self.wrong(f, "a duration like \"10s\"");
            return None;
        };
        match units::duration(s) {
            Ok(d) if nonzero && d.is_zero() => self.report(f.line, &f.key, "must be more than 0"),
            Ok(d) => return Some(d),
            Err(message) => self.report(f.line, &f.key, message),
        }
        None
    }

    pub(super) fn size(&mut self, f: &Field<'_>, min: u64) -> Option<u64> {
        let bytes = match f.item.as_value() {
            Some(Value::Integer(n)) => u64::try_from(*n.value())
                .map_err(|_| format!("{} is not a size: it must not be negative", n.value())),
            Some(Value::String(s)) => units::size(s.value()),
            _ => {
                self.wrong(f, "a size (bytes, or a string like \"16k\")");
                return None;
            }
        };
        match bytes {
            Ok(n) if n < min => self.report(f.line, &f.key, format!("must be at least {min}")),
            Ok(n) => return Some(n),
            Err(message) => self.report(f.line, &f.key, message),
        }
        None
    }

    pub(super) fn choice<T: Copy>(&mut self, f: &Field<'_>, options: &[(&str, T)]) -> Option<T> {
        let s = self.string(f)?;
        if let Some(&(_, value)) = options.iter().find(|(name, _)| *name == s) {
            return Some(value);
        }
        let names: Vec<_> = options
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        let message = format!("\"{s}\" is not one of {}", names.join(", "));
        self.report(f.line, &f.key, message);
        None
    }

    pub(super) fn strings<'a>(&mut self, f: &Field<'a>) -> Option<Vec<&'a str>> {
        let Some(array) = f.item.as_array() else {
            self.wrong(f, "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        for v in array {
            match v.as_str() {
                Some(s) => out.push(s),
                None => {
                    let line = self.line(v.span()).max(f.line);
                    let message = format!("expected a string, found {}", value_kind(v));
                    self.report(line, &f.key, message);
                }
            }
        }
        (out.len() == array.len()).then_some(out)
    }

    pub(super) fn table<'a>(&mut self, f: &Field<'a>) -> Option<Node<'a>> {
        let Some(table) = f.item.as_table_like() else {
            self.wrong(f, "a table");
            return None;
        };
        Some(Node {
            table: Some(table),
            path: f.key.clone(),
            line: self.line(f.item.span()).max(f.line),
        })
    }

    /// `[[x]]` or `x = [ { }, … ]`; `need` is the complaint when it is empty.
    pub(super) fn tables<'a>(&mut self, f: &Field<'a>, need: &str) -> Vec<Node<'a>> {
        let before = self.problems.len();
        let mut nodes = Vec::new();
        match f.item {
            Item::ArrayOfTables(array) => {
                for table in array.iter() {
                    let line = self.line(table.span()).max(f.line);
                    nodes.push((Some(table as &dyn TableLike), line, "a table"));
                }
            }
            Item::Value(Value::Array(array)) => {
                for v in array {
                    let line = self.line(v.span()).max(f.line);
                    let table = v.as_inline_table().map(|t| t as &dyn TableLike);
                    nodes.push((table, line, value_kind(v)));
                }
            }
            _ => self.wrong(f, "an array of tables"),
        }
        let mut out = Vec::new();
        for (table, line, found) in nodes {
            match table {
                Some(table) => out.push(Node {
                    table: Some(table),
                    path: f.key.clone(),
                    line,
                }),
                None => self.report(line, &f.key, format!("expected a table, found {found}")),
            }
        }
        if out.is_empty() && self.problems.len() == before {
            self.report(f.line, &f.key, need);
        }
        out
    }

    /// A table with free keys (headers, statuses): `(key, value field)`.
    /// Problems name the table, since its keys are data, not schema.
    pub(super) fn entries<'a>(&mut self, f: &Field<'a>) -> Vec<(&'a str, Field<'a>)> {
        let Some(table) = f.item.as_table_like() else {
            self.wrong(f, "a table");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, item) in table.iter() {
            let line = self.line(table.key(key).and_then(|k| k.span())).max(f.line);
            let key_field = f.key.clone();
            out.push((
                key,
                Field {
                    item,
                    key: key_field,
                    line,
                },
            ));
        }
        out
    }
}
