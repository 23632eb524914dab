//! Configuration of automatic certificates: `[acme]` and a listener's
//! `tls = { acme = [NAMES] }`, read into `Acme` and `Tls::acme`, and the
//! `--check` of both (directory URL, storage folder writable, names, `ca`).

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    check::Place,
    files,
    walk::{Field, Node, Reader},
    Config, Problem,
};

/// The default `renew_before`: Let's Encrypt's certificates last 90 days
/// and its own client renews with 30 left.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// Most names in one certificate: Let's Encrypt's limit.
const MAX_NAMES: usize = 100;

/// `[acme]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    /// The directory URL (`https://host[:port]/path`).
    pub directory: String,
    pub email: Option<String>,
    /// Account key, keys and certificates, kept across restarts.
    pub storage: PathBuf,
    pub challenge: Challenge,
    /// An extra root to trust for the directory.
    pub ca: Option<PathBuf>,
    pub renew_before: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// RFC 8737: answered by the TLS listener (ALPN `acme-tls/1`).
    TlsAlpn01,
    /// RFC 8555 §8.3: answered on every plain listener.
    Http01,
}

/// Where `[acme]`'s values were written.
#[derive(Debug, Default)]
pub(super) struct AcmePlaces {
    pub(super) directory: Place,
    pub(super) storage: Place,
    pub(super) ca: Place,
    /// (listener index, its `tls.acme`).
    pub(super) listeners: Vec<(usize, Place)>,
}

/// `https://host[:port]/path` split into (host, port, path).
pub fn split_url(url: &str) -> Option<(&str, u16, &str)> {
    let rest = url.strip_prefix("https://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let usable = |b: u8| b.is_ascii_alphanumeric() || b"-.:_".contains(&b);
    if host.is_empty() || !host.bytes().all(usable) || path.contains(char::is_whitespace) {
        return None;
    }
    Some((host, port, path))
}

/// What is wrong with a certificate name, if anything. Names are DNS names
/// (RFC 1123 labels); wildcards need dns-01, which ringside does not answer.
fn name_problem(name: &str) -> Option<String> {
    if name.starts_with("*.") {
        return Some(format!(
            "\"{name}\": a wildcard needs the dns-01 challenge, which ringside does not answer"
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let dotted = name.contains('.') || name == "localhost";
    let ok = name.len() <= 253 && dotted && name.split('.').all(label_ok);
    let numeric = name.parse::<std::net::IpAddr>().is_ok();
    (!ok || numeric).then(|| format!("\"{name}\" is not a DNS name like \"example.com\""))
}

impl Reader {
    /// `[acme]`.
    pub(super) fn acme(&mut self, n: &Node<'_>) -> Acme {
        let keys = [
            "directory",
            "email",
            "storage",
            "challenge",
            "ca",
            "renew_before",
        ];
        self.keys(n, &keys);
        let mut places = AcmePlaces::default();
        let directory = self
            .required(n, "directory")
            .and_then(|f| {
                places.directory = f.place();
                let url = self.text(&f)?;
                if split_url(url).is_none() {
                    let message = format!("\"{url}\" is not an https:// URL");
                    self.report(f.line, &f.key, message);
                }
                Some(url.to_string())
            })
            .unwrap_or_default();
        let email = self.opt(n, "email", |r, f| {
            let s = r.text(f)?;
            let ok = s.split_once('@').is_some_and(|(a, b)| {
                !a.is_empty() && !b.is_empty() && !s.contains(|c: char| c.is_whitespace())
            });
            if !ok {
                r.report(f.line, &f.key, format!("\"{s}\" is not an email address"));
            }
            Some(s.to_string())
        });
        let storage = self
            .required(n, "storage")
            .and_then(|f| {
                places.storage = f.place();
                let path = self.text(&f)?;
                Some(self.resolve(path))
            })
            .unwrap_or_default();
        let choices = [
            ("tls-alpn-01", Challenge::TlsAlpn01),
            ("http-01", Challenge::Http01),
        ];
        let challenge = self.get(n, "challenge", Challenge::TlsAlpn01, |r, f| {
            r.choice(f, &choices)
        });
        let ca = self.opt(n, "ca", |r, f| {
            places.ca = f.place();
            let path = r.text(f)?;
            Some(r.resolve(path))
        });
        let renew_before = self.get(n, "renew_before", RENEW_BEFORE, |r, f| r.duration(f, true));
        self.places.acme = places;
        Acme {
            directory,
            email,
            storage,
            challenge,
            ca,
            renew_before,
        }
    }

    /// A listener's `tls.acme`: its certificate's names, lowercase.
    pub(super) fn acme_names(&mut self, f: &Field<'_>, listener: usize) -> Vec<String> {
        self.places.acme.listeners.push((listener, f.place()));
        let Some(names) = self.strings(f) else {
            return Vec::new();
        };
        if names.is_empty() {
            self.report(f.line, &f.key, "needs at least one name");
        }
        if names.len() > MAX_NAMES {
            self.report(f.line, &f.key, format!("at most {MAX_NAMES} names"));
        }
        let mut out: Vec<String> = Vec::new();
        for name in names {
            let lower = name.to_ascii_lowercase();
            if let Some(message) = name_problem(&lower) {
                self.report(f.line, &f.key, message);
            } else if out.contains(&lower) {
                self.report(f.line, &f.key, format!("\"{name}\" is listed twice"));
            }
            out.push(lower);
        }
        out
    }

    /// What joins `[acme]` and the listeners: a listener's `tls.acme`
    /// needs `[acme]`, and two listeners may not share a name (one order
    /// and one certificate per name).
    pub(super) fn acme_listeners(&mut self, config: &Config) {
        let places = std::mem::take(&mut self.places.acme.listeners);
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for (i, place) in &places {
            let Some(tls) = &config.listeners[*i].tls else {
                continue;
            };
            if config.acme.is_none() {
                let message = "needs an [acme] section (directory, storage)";
                self.report(place.line, &place.key, message);
            }
            for name in &tls.acme {
                match seen.iter().find(|(n, _)| n == name) {
                    Some((_, line)) if *line != place.line => {
                        let message = format!("\"{name}\" is also on the listener at line {line}");
                        self.report(place.line, &place.key, message);
                    }
                    _ => seen.push((name, place.line)),
                }
            }
        }
        self.places.acme.listeners = places;
    }
}

/// `--check` of `[acme]` outside the file: the storage folder exists (or
/// can be made) and takes files; the `ca` file holds a PEM certificate.
pub(super) fn outside(config: &Config, places: &AcmePlaces) -> Vec<Problem> {
    let Some(acme) = &config.acme else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    if let Some(m) = writable(&acme.storage) {
        problems.push(places.storage.problem(m));
    }
    if let Some(ca) = &acme.ca {
        if let Some(m) = ca_problem(ca) {
            problems.push(places.ca.problem(m));
        }
    }
    problems
}

/// Makes the folder (mode 0700: it holds private keys) when it is missing,
/// then writes and removes a file in it, as the ACME thread will.
pub fn writable(folder: &Path) -> Option<String> {
    use std::os::unix::fs::DirBuilderExt;
    let made = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder);
    if let Err(e) = made {
        return Some(format!("cannot make folder {}: {e}", folder.display()));
    }
    let probe = folder.join(format!(".ringside-check-{}", std::process::id()));
    match fs::write(&probe, b"") {
        Ok(()) => {
            // The probe is empty and ours; one left behind harms nobody.
            let _ = fs::remove_file(&probe);
            None
        }
        Err(e) => Some(format!("cannot write in {}: {e}", folder.display())),
    }
}

fn ca_problem(path: &Path) -> Option<String> {
    let pem = match files::read_regular(path, files::MAX_PEM) {
        Ok(b) => b,
        Err(m) => return Some(m),
    };
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match certs {
        Ok(c) if !c.is_empty() => None,
        _ => Some(format!("{} holds no PEM certificate", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::{name_problem, split_url};

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(
            split_url("https://acme.example:14000/dir"),
            Some(("acme.example", 14000, "/dir"))
        );
        assert_eq!(
            split_url("https://a.example"),
            Some(("a.example", 443, "/"))
        );
        assert_eq!(split_url("http://a.example/dir"), None);
        assert_eq!(split_url("https:///dir"), None);
        assert_eq!(split_url("https://a.example:x/dir"), None);
    }

    #[test]
    fn names_are_dns_names_without_wildcards() {
        assert_eq!(name_problem("www.example.com"), None);
        assert_eq!(name_problem("localhost"), None);
        assert!(name_problem("*.example.com").unwrap().contains("dns-01"));
        assert!(name_problem("bad_name.example").is_some());
        assert!(name_problem("127.0.0.1").is_some());
        assert!(name_problem("-a.example").is_some());
        assert!(name_problem("example").is_some());
    }
}
