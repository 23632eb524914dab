//! Configuration, step 2: the checks that look outside the file.
//!
//! Everything here would otherwise fail later, at start-up or on a reload,
//! with a worse message: certificates and key files that cannot be read, a
//! static folder that is not there, log files that cannot be opened, two
//! sockets on one port. Lines and keys come from the `Places` that `file.rs`
//! fills in while it reads.

use std::{
    fs::{self, OpenOptions},
    net::SocketAddr,
    path::Path,
};

use super::{files, Action, Config, LogTarget, Problem};

/// Where the values `check.rs` looks at were written, so that problems found
/// outside the file still print with a line and the key as written.
#[derive(Debug, Default)]
pub(super) struct Places {
    pub(super) access: Place,
    pub(super) error: Place,
    pub(super) admin: Place,
    pub(super) cache: Place,
    pub(super) acme: super::acme::AcmePlaces,
    /// Parallel to `Config::listeners`.
    pub(super) listeners: Vec<ListenerPlaces>,
    /// Parallel to `Config::routes`.
    pub(super) routes: Vec<RoutePlaces>,
}

#[derive(Debug, Default)]
pub(super) struct ListenerPlaces {
    pub(super) address: Place,
    /// (cert, key), parallel to `Tls::certs`.
    pub(super) certs: Vec<(Place, Place)>,
}

#[derive(Debug, Default)]
pub(super) struct RoutePlaces {
    /// The `static` folder, when that is the action.
    pub(super) folder: Place,
    /// Parallel to `Route::error_pages`.
    pub(super) error_pages: Vec<Place>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Place {
    pub(super) line: usize,
    pub(super) key: String,
}

impl Place {
    pub(super) fn problem(&self, message: String) -> Problem {
        Problem {
            line: self.line,
            key: self.key.clone(),
            message,
        }
    }
}

/// Every problem outside the text of `config`, in line order.
pub(super) fn outside(config: &Config, places: &Places) -> Vec<Problem> {
    let mut problems = Vec::new();
    let logs = [
        (&config.log.access, &places.access),
        (&config.log.error, &places.error),
    ];
    for (target, place) in logs {
        if let LogTarget::File(path) = target {
            problems.extend(appendable(path).map(|m| place.problem(m)));
        }
    }

    for (listener, lp) in config.listeners.iter().zip(&places.listeners) {
        let Some(tls) = &listener.tls else { continue };
        for (pair, (cert_place, key_place)) in tls.certs.iter().zip(&lp.certs) {
            let cert = pem(&pair.cert, &["-----BEGIN CERTIFICATE-----"], "certificate");
            let both_read = cert.is_none();
            problems.extend(cert.map(|m| cert_place.problem(m)));
            // PKCS#8, PKCS#1 (RSA) and SEC1 (EC) keys all end their label so.
            let key = pem(&pair.key, &["PRIVATE KEY-----"], "private key");
            let both_read = both_read && key.is_none();
            problems.extend(key.map(|m| key_place.problem(m)));
            // Both files hold PEM: parse them as the TLS stage will, and
            // check the key signs for the certificate.
            if both_read {
                if let Err(m) = crate::tls::certified_key(pair) {
                    problems.push(cert_place.problem(m));
                }
            }
        }
    }

    for (route, rp) in config.routes.iter().zip(&places.routes) {
        if let Action::Static(folder) = &route.action {
            problems.extend(folder_problem(folder).map(|m| rp.folder.problem(m)));
        }
        for ((_, page), place) in route.error_pages.iter().zip(&rp.error_pages) {
            problems.extend(readable_file(page, files::MAX_ERROR_PAGE).map(|m| place.problem(m)));
        }
    }

    if let Some(total) = memory() {
        if config.cache.size > total {
            let message = format!(
                "{} bytes is more than this machine's memory ({total} bytes)",
                config.cache.size
            );
            problems.push(places.cache.problem(message));
        }
    }
    problems.extend(clashes(config, places));
    problems.extend(super::acme::outside(config, &places.acme));
    problems.sort_by_key(|p| p.line);
    problems
}

/// What does not stop the config from running: certificates that have
/// expired or are not valid yet, reported at the line of their `cert`.
pub(super) fn warnings(config: &Config, places: &Places) -> Vec<Problem> {
    let now = crate::tls::Time::now();
    let mut out = Vec::new();
    for (listener, lp) in config.listeners.iter().zip(&places.listeners) {
        let Some(tls) = &listener.tls else { continue };
        for (pair, (cert_place, _)) in tls.certs.iter().zip(&lp.certs) {
            let found = crate::tls::date_warnings(pair, now);
            out.extend(found.into_iter().map(|m| cert_place.problem(m)));
        }
    }
    out
}

/// The machine's memory in bytes (`MemTotal`), if /proc tells.
fn memory() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Opens (creating if missing, as nginx does) for append, as the logger will.
fn appendable(path: &Path) -> Option<String> {
    let opened = OpenOptions::new().append(true).create(true).open(path);
    let e = opened.err()?;
    Some(format!("cannot open {} for append: {e}", path.display()))
}

/// Reads the whole file and looks for a PEM label; parsing is left to the
/// TLS stage, this only catches the wrong file or a swapped cert and key.
fn pem(path: &Path, labels: &[&str], what: &str) -> Option<String> {
    let bytes = match files::read_regular(path, files::MAX_PEM) {
        Ok(bytes) => bytes,
        Err(message) => return Some(message),
    };
    let found = labels
        .iter()
        .any(|label| bytes.windows(label.len()).any(|w| w == label.as_bytes()));
    (!found).then(|| format!("{} holds no PEM {what}", path.display()))
}

fn folder_problem(path: &Path) -> Option<String> {
    match fs::read_dir(path) {
        Ok(_) => None,
        Err(_) if path.is_file() => Some(format!("{} is a file, not a folder", path.display())),
        Err(e) => Some(format!("cannot open folder {}: {e}", path.display())),
    }
}

fn readable_file(path: &Path, cap: u64) -> Option<String> {
    files::open_regular(path, cap).err()
}

/// Two listeners, or the admin and a listener, on one address. A wildcard
/// address (0.0.0.0 or ::) takes its port on every address of its family,
/// so it clashes with any specific address on the same port. Port 0 asks
/// the kernel for a free port and never clashes.
fn clashes(config: &Config, places: &Places) -> Vec<Problem> {
    let overlap = |a: SocketAddr, b: SocketAddr| {
        a.port() == b.port()
            && a.port() != 0
            && (a.ip() == b.ip()
                || (a.is_ipv4() == b.is_ipv4()
                    && (a.ip().is_unspecified() || b.ip().is_unspecified())))
    };
    let listeners: Vec<(SocketAddr, &Place)> = config
        .listeners
        .iter()
        .map(|l| l.address)
        .zip(places.listeners.iter().map(|p| &p.address))
        .collect();
    let mut problems = Vec::new();
    for (i, &(address, place)) in listeners.iter().enumerate() {
        let earlier = listeners[..i]
            .iter()
            .find(|(other, _)| overlap(address, *other));
        if let Some((other, first)) = earlier {
            let message = format!(
                "{address} clashes with listener {other} (line {})",
                first.line
            );
            problems.push(place.problem(message));
        }
    }
    if let Some(admin) = &config.admin {
        let taken = listeners
            .iter()
            .find(|(other, _)| overlap(admin.address, *other));
        if let Some((other, first)) = taken {
            let address = admin.address;
            let message = format!(
                "{address} clashes with listener {other} (line {})",
                first.line
            );
            problems.push(places.admin.problem(message));
        }
    }
    problems
}

/// Through `load`, with real files in a scratch folder.
#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::{load, tests::BASE, LogTarget};

    /// A fresh folder for one test, removed again when the guard drops.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("ringside-config-{}-{name}", std::process::id()));
            // A leftover from an earlier crashed run would skew the checks.
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            // Best effort: a leftover temp folder harms nobody.
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    #[test]
    fn load_accepts_good_files_and_creates_log_files() {
        let dir = Scratch::new("good");
        // A real pair: the check parses both and matches the key to the cert.
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        dir.write("cert.pem", &pair.cert.pem());
        dir.write("key.pem", &pair.key_pair.serialize_pem());
        dir.write("50x.html", "oops");
        std::fs::create_dir(dir.0.join("www")).unwrap();
        let config = dir.write(
            "ringside.toml",
            &format!(
                r#"{BASE}[log]
access = "access.log"
error = "error.log"
[admin]
address = "127.0.0.1:9901"
[[listen]]
address = "127.0.0.1:8443"
tls = {{ cert = "cert.pem", key = "key.pem" }}
[[listen]]
address = "127.0.0.1:0"
[[listen]]
address = "127.0.0.2:0"
[[route]]
path = "/"
static = "www"
error_pages = {{ "502" = "50x.html" }}
"#
            ),
        );
        let (c, warnings) = load(&config).unwrap_or_else(|p| panic!("{p}"));
        assert!(warnings.list.is_empty(), "{warnings}");
        assert!(dir.0.join("access.log").is_file() && dir.0.join("error.log").is_file());
        assert_eq!(c.log.access, LogTarget::File(dir.0.join("access.log")));
    }

    #[test]
    fn load_reports_problems_outside_the_file() {
        let dir = Scratch::new("bad");
        dir.write("cert.pem", PEM_KEY);
        dir.write("notes.txt", "x");
        std::fs::create_dir(dir.0.join("pages")).unwrap();
        let config = dir.write(
            "ringside.toml",
            r#"[log]
access = "missing/access.log"
error = "pages"
[admin]
address = "127.0.0.1:8080"
[[listen]]
address = "0.0.0.0:8080"
[listen.tls]
certs = [ { cert = "missing.pem", key = "cert.pem" }, { cert = "cert.pem", key = "cert.pem" } ]
[[listen]]
address = "127.0.0.1:8080"
[[listen]]
address = "[::1]:8080"
[[route]]
path = "/"
static = "notes.txt"
error_pages = { "500" = "pages", "502" = "nope.html" }
[[route]]
path = "/b"
static = "no-folder"
"#,
        );
        let problems = load(&config).unwrap_err();
        let got: Vec<_> = problems
            .list
            .iter()
            .map(|p| (p.line, p.key.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (2, "log.access"),
                (3, "log.error"),
                (5, "admin.address"),
                (9, "listen.tls.certs.cert"),
                (9, "listen.tls.certs.cert"),
                (11, "listen.address"),
                (16, "route.static"),
                (17, "route.error_pages"),
                (17, "route.error_pages"),
                (20, "route.static"),
            ],
            "{problems}"
        );
        let text = problems.to_string();
        for part in [
            ":2: log.access: cannot open",
            ":3: log.error: cannot open",
            ":5: admin.address: 127.0.0.1:8080 clashes with listener 0.0.0.0:8080 (line 7)",
            "missing.pem: No such file",
            "cert.pem holds no PEM certificate",
            ":11: listen.address: 127.0.0.1:8080 clashes with listener 0.0.0.0:8080 (line 7)",
            "notes.txt is a file, not a folder",
            "pages is a folder, not a file",
            "nope.html: No such file",
            "cannot open folder",
        ] {
            assert!(text.contains(part), "{part:?} missing from\n{text}");
        }
        assert!(
            !text.contains("[::1]"),
            "another family never clashes with 0.0.0.0"
        );
    }

    #[test]
    fn load_reports_an_unreadable_file_without_a_line() {
        let problems = load(Path::new("/nonexistent/ringside.toml")).unwrap_err();
        assert_eq!(problems.list.len(), 1);
        assert_eq!(problems.list[0].line, 0);
        assert!(problems
            .to_string()
            .starts_with("/nonexistent/ringside.toml:0: "));
    }
}
