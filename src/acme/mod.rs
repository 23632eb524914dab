//! Automatic certificates (RFC 8555) on the control plane.
//!
//! One std thread (`Manager`, like control/health.rs) holds every order:
//! at start it serves the stored certificates that are still valid, orders
//! the missing ones, and renews each `renew_before` its end. A failure
//! (directory unreachable, a challenge refused, a rate limit, a bad
//! answer) is logged with the order's names and retried with a growing
//! backoff, or after the CA's `Retry-After` when that is longer; it never
//! stops the process or another listener. A new certificate goes into the
//! resolver's table (tls/acme.rs), which every worker reads at each
//! handshake: no reload, no restart.
//!
//! The protocol is written here over a blocking `TcpStream` and rustls
//! (client.rs) rather than taken from `instant-acme`: that crate runs on
//! hyper and tokio, a second HTTP stack and an async runtime for a thread
//! that sends a few requests a month; ring (JWS), rcgen (keys, CSR, the
//! challenge certificate) and rustls are already in the tree.
//!
//! # Layout
//!
//! ```text
//! client.rs     HTTPS/1.1 requests to the directory (rustls, system roots + ca)
//! jws.rs        the account key and request signatures (ES256)
//! order.rs      directory, nonces, account, order, challenges, finalize, chain
//! challenge.rs  the answers: tls-alpn-01 certificate, http-01 (data path)
//! store.rs      account key, keys and chains under `storage`
//! ```
#![forbid(unsafe_code)]

use std::{
    collections::BTreeMap,
    sync::{mpsc, Arc, Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use crate::{
    config::{Acme, Challenge, Config},
    tls::{acme::managed, validity, Time},
};

mod challenge;
mod client;
mod jws;
mod order;
mod store;

pub use challenge::http01;

/// First wait after a failure; doubled at each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Longest wait between two tries (Let's Encrypt's rate limits are hourly).
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Longest `Retry-After` obeyed: Let's Encrypt's longest rate-limit window
/// (7 days); a longer or bogus value must not stall the renewals for good.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(7 * 86_400);

/// The ACME thread; dropping it stops the thread at its next wait.
pub struct Manager {
    _stop: mpsc::Sender<()>,
}

/// What `/metrics` shows of one certificate.
#[derive(Clone, Copy)]
struct Status {
    /// `pending` (none yet), `valid`, or `failed` (the last try failed).
    state: &'static str,
    not_after: Option<Time>,
}

fn statuses() -> &'static Mutex<BTreeMap<String, Status>> {
    static STATUS: OnceLock<Mutex<BTreeMap<String, Status>>> = OnceLock::new();
    STATUS.get_or_init(Mutex::default)
}

fn set_status(names: &[String], state: &'static str, not_after: Option<Time>) {
    if let Ok(mut s) = statuses().lock() {
        let e = s.entry(names.join(",")).or_insert(Status {
            state,
            not_after: None,
        });
        e.state = state;
        e.not_after = not_after.or(e.not_after);
    }
}

/// `ringside_acme_certificates{names,state}` and
/// `ringside_acme_certificate_expiry_days{names}`, Prometheus text.
pub fn metrics(out: &mut String) {
    let Ok(s) = statuses().lock() else { return };
    if s.is_empty() {
        return;
    }
    out.push_str("# TYPE ringside_acme_certificates gauge\n");
    for (names, st) in s.iter() {
        for state in ["pending", "valid", "failed"] {
            let v = u8::from(st.state == state);
            out.push_str(&format!(
                "ringside_acme_certificates{{names=\"{names}\",state=\"{state}\"}} {v}\n"
            ));
        }
    }
    out.push_str("# TYPE ringside_acme_certificate_expiry_days gauge\n");
    let now = Time::now();
    for (names, st) in s.iter() {
        if let Some(na) = st.not_after {
            let days = (na.0 - now.0) as f64 / 86_400.0;
            out.push_str(&format!(
                "ringside_acme_certificate_expiry_days{{names=\"{names}\"}} {days:.3}\n"
            ));
        }
    }
}

/// One listener's certificate.
struct Order {
    names: Vec<String>,
    next: Instant,
    backoff: Duration,
}

impl Manager {
    /// Starts the thread when `config` has `[acme]` and ACME listeners.
    pub fn start(config: &Config) -> Result<Option<Manager>, String> {
        let Some(acme) = config.acme.clone() else {
            return Ok(None);
        };
        let mut orders: Vec<Order> = Vec::new();
        for l in &config.listeners {
            let Some(tls) = l.tls.as_ref().filter(|t| !t.acme.is_empty()) else {
                continue;
            };
            if orders.iter().all(|o| o.names != tls.acme) {
                let names = tls.acme.clone();
                set_status(&names, "pending", None);
                let next = stored(&acme, &names).unwrap_or_else(Instant::now);
                orders.push(Order {
                    names,
                    next,
                    backoff: FIRST_BACKOFF,
                });
            }
        }
        if orders.is_empty() {
            return Ok(None);
        }
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("ringside-acme".into())
            .spawn(move || run(&acme, orders, &rx))
            .map_err(|e| format!("cannot start the ACME thread: {e}"))?;
        Ok(Some(Manager { _stop: tx }))
    }
}

fn run(acme: &Acme, mut orders: Vec<Order>, stop: &mpsc::Receiver<()>) {
    loop {
        let Some(o) = orders.iter_mut().min_by_key(|o| o.next) else {
            return;
        };
        let wait = o.next.saturating_duration_since(Instant::now());
        match stop.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The manager was dropped (a reload or the stop).
            _ => return,
        }
        let names = o.names.join(", ");
        match issue(acme, &o.names) {
            Ok(next) => {
                o.next = next;
                o.backoff = FIRST_BACKOFF;
            }
            Err(e) => {
                let has = managed().get(&o.names).is_some();
                set_status(&o.names, if has { "valid" } else { "failed" }, None);
                // The CA's Retry-After when it asks for longer than the
                // backoff: a try before it would only be refused again.
                let asked = e.retry_after.map(|d| d.min(MAX_RETRY_AFTER));
                let (wait, why) = match asked {
                    Some(d) if d > o.backoff => (d, " (the CA's Retry-After)"),
                    _ => (o.backoff, ""),
                };
                crate::error!(
                    "acme: certificate for {names}: {e}; retrying in {}s{why}",
                    wait.as_secs()
                );
                o.next = Instant::now() + wait;
                o.backoff = (o.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Serves the stored certificate of `names` if it is still valid; returns
/// when to renew it.
fn stored(acme: &Acme, names: &[String]) -> Option<Instant> {
    let (chain, key) = store::load(&acme.storage, names)?;
    match install(acme, names, &chain, &key) {
        Ok((renew, not_after)) if not_after > Time::now() => {
            crate::info!(
                "acme: serving the stored certificate for {} (valid until {not_after})",
                names.join(", ")
            );
            Some(renew)
        }
        Ok(_) => None,
        Err(e) => {
            let dir = store::folder(&acme.storage, names);
            crate::warn!(
                "acme: stored certificate in {}: {e}; ordering a new one",
                dir.display()
            );
            None
        }
    }
}

/// Builds and serves a chain; returns when to renew it and its end.
fn install(
    acme: &Acme,
    names: &[String],
    chain: &[u8],
    key: &[u8],
) -> Result<(Instant, Time), String> {
    let ck = crate::tls::acme::certified_from_pem(chain, key, true)?;
    let leaf = ck.end_entity_cert().map_err(|e| e.to_string())?;
    let v = validity::of(leaf).ok_or("cannot read the certificate's dates")?;
    if v.not_after <= Time::now() {
        return Ok((Instant::now(), v.not_after));
    }
    managed().install(names, Arc::new(ck));
    set_status(names, "valid", Some(v.not_after));
    let lifetime = v.not_after.0 - v.not_before.0;
    let before = acme.renew_before.as_secs() as i64;
    // A renew_before at least as long as the CA's validity would renew
    // without end: renew a third of the way before the end instead.
    let at = match before < lifetime {
        true => v.not_after.0 - before,
        false => v.not_after.0 - lifetime / 3,
    };
    let left = u64::try_from(at - Time::now().0).unwrap_or(0);
    Ok((Instant::now() + Duration::from_secs(left), v.not_after))
}

/// One order for `names`, from the directory to the certificate in use.
fn issue(acme: &Acme, names: &[String]) -> Result<Instant, order::Failure> {
    let list = names.join(", ");
    let kind = match acme.challenge {
        Challenge::TlsAlpn01 => "tls-alpn-01",
        Challenge::Http01 => "http-01",
    };
    crate::info!(
        "acme: ordering a certificate for {list} ({kind}) from {}",
        acme.directory
    );
    let http = client::Https::new(acme.ca.as_deref())?;
    let key = store::account_key(&acme.storage)?;
    let mut session = order::Session::open(&http, &key, &acme.directory)?;
    session.account(acme.email.as_deref())?;
    let issued = session.issue(names, acme.challenge, &challenge::Answers)?;
    store::save(&acme.storage, names, &issued.chain_pem, &issued.key_pem)?;
    let chain = issued.chain_pem.as_bytes();
    let (renew, not_after) = install(acme, names, chain, issued.key_pem.as_bytes())?;
    crate::info!("acme: certificate for {list} issued, valid until {not_after}");
    Ok(renew)
}

/// Whether two configs ask the ACME thread for the same work.
pub fn same_work(a: &Config, b: &Config) -> bool {
    let names = |c: &Config| -> Vec<Vec<String>> {
        let tls = c.listeners.iter().filter_map(|l| l.tls.as_ref());
        tls.map(|t| t.acme.clone())
            .filter(|n| !n.is_empty())
            .collect()
    };
    a.acme == b.acme && names(a) == names(b)
}
