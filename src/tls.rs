//! Stage 1, accept: TLS termination (rustls on the ring provider).
//!
//! The control plane builds one `ServerConfig` per TLS listener at start and
//! on every reload (certificates and keys are re-read then) and hands it to
//! the workers inside the config snapshot (`config::Listener::acceptor`).
//! Every config shares one process-wide ticketer, so a session ticket issued
//! by one worker resumes on any other, and across reloads.
//!
//! A connection's stream is a `ClientStream`: the plain variant forwards
//! straight to the socket (one `match` per I/O call, no allocation), the TLS
//! variant to `stream::TlsStream` (rustls over the socket, with no buffer of
//! its own). A TLS stream whose read or write was cancelled (a timeout) may
//! have lost bytes and fails every later call: every caller closes the
//! connection after a timeout.

use std::{
    path::Path,
    sync::{Arc, OnceLock},
};

use rustls::{
    crypto::ring::{default_provider, sign::any_supported_type, Ticketer},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    server::{ClientHello, ProducesTickets, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig, SupportedProtocolVersion,
};

use crate::config::{files, CertPair, Tls, TlsVersion};

pub mod acme;
mod split;
mod stream;
pub mod validity;

pub use split::{TlsReadHalf, TlsWriteHalf};
pub use stream::{accept, TlsStream};

/// The process-wide ticketer: one key set (rotated by rustls every 6 hours)
/// for every worker and every reload, so tickets resume anywhere.
fn ticketer() -> Result<Arc<dyn ProducesTickets>, String> {
    static TICKETER: OnceLock<Arc<dyn ProducesTickets>> = OnceLock::new();
    if let Some(t) = TICKETER.get() {
        return Ok(t.clone());
    }
    let t = Ticketer::new().map_err(|e| format!("cannot make a session ticketer: {e}"))?;
    Ok(TICKETER.get_or_init(|| t).clone())
}

/// Reads one certificate chain and its key (regular files of at most
/// `files::MAX_PEM` bytes), and checks they belong together.
pub fn certified_key(pair: &CertPair) -> Result<CertifiedKey, String> {
    let chain = read_chain(&pair.cert)?;
    let pem = files::read_regular(&pair.key, files::MAX_PEM)?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("cannot read a private key from {}: {e}", pair.key.display()))?;
    let signer = any_supported_type(&key)
        .map_err(|e| format!("unusable private key in {}: {e}", pair.key.display()))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|_| {
        format!(
            "the certificate in {} does not match the key in {}",
            pair.cert.display(),
            pair.key.display()
        )
    })?;
    Ok(ck)
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = files::read_regular(path, files::MAX_PEM)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(chain)
}

/// What is wrong with the dates of the chain in `pair.cert`: each
/// certificate that has expired or is not valid yet, at `now`. A warning,
/// not an error: ringside serves the chain anyway (as nginx does), so an
/// expired certificate never takes a site down on a restart.
pub fn date_warnings(pair: &CertPair, now: validity::Time) -> Vec<String> {
    let Ok(chain) = read_chain(&pair.cert) else {
        return Vec::new(); // reported as an error elsewhere
    };
    let mut out = Vec::new();
    for (i, der) in chain.iter().enumerate() {
        let which = match i {
            0 => format!("the certificate in {}", pair.cert.display()),
            n => format!(
                "certificate {} of the chain in {}",
                n + 1,
                pair.cert.display()
            ),
        };
        let Some(v) = validity::of(der) else {
            out.push(format!("{which}: cannot read its validity dates"));
            continue;
        };
        if now > v.not_after {
            out.push(format!("{which} expired on {} (notAfter)", v.not_after));
        } else if now < v.not_before {
            out.push(format!(
                "{which} is not valid before {} (notBefore)",
                v.not_before
            ));
        }
    }
    out
}

pub use validity::Time;

/// The `ServerConfig` of one TLS listener.
/// `http2`: offer `h2` by ALPN (preferred), HTTP/1.1 staying available.
pub fn server_config(tls: &Tls, http2: bool) -> Result<Arc<ServerConfig>, String> {
    let mut keys = Vec::with_capacity(tls.certs.len());
    for pair in &tls.certs {
        keys.push(Arc::new(certified_key(pair)?));
    }
    let versions: Vec<&'static SupportedProtocolVersion> = tls
        .protocols
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS protocols: {e}"))?
        .with_no_client_auth();
    let mut config = match tls.acme.is_empty() {
        true => config.with_cert_resolver(Arc::new(Sni { keys })),
        false => config.with_cert_resolver(Arc::new(acme::AcmeSni {
            names: tls.acme.clone(),
        })),
    };
    config.ticketer = ticketer()?;
    // TLS 1.3 tickets: rustls sends 4 by default; 2 cover a client that
    // opens two connections at once, for less work per handshake.
    config.send_tls13_tickets = 2;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    if !tls.acme.is_empty() {
        config.alpn_protocols.push(acme::ACME_TLS_ALPN.to_vec());
    }
    Ok(Arc::new(config))
}

/// Picks the certificate for the client's server name: the first whose
/// names cover it (wildcards as rustls's own client checks them), else the
/// first of the listener.
#[derive(Debug)]
struct Sni {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Sni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let first = self.keys.first()?;
        let Some(name) = hello.server_name() else {
            return Some(first.clone());
        };
        if self.keys.len() == 1 {
            return Some(first.clone());
        }
        let Ok(name) = ServerName::try_from(name) else {
            return Some(first.clone());
        };
        let chosen = self.keys.iter().find(|k| {
            k.end_entity_cert()
                .ok()
                .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
        });
        Some(chosen.unwrap_or(first).clone())
    }
}

/// Builds the `ServerConfig` of every TLS listener of `config` in place.
pub fn attach(config: &mut crate::config::Config) -> Result<(), Vec<(String, String)>> {
    let mut problems = Vec::new();
    for l in &mut config.listeners {
        if let Some(tls) = &l.tls {
            match server_config(tls, l.http2) {
                Ok(c) => l.acceptor = Some(c),
                Err(e) => problems.push(("listen.tls".to_string(), e)),
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
