//! Stage 1b, ACME-managed names: the certificate resolver of a listener
//! with `tls = { acme = [NAMES] }`.
//!
//! The certificates live in one process-wide table (`managed()`) that the
//! control plane's ACME thread (acme/) fills and every worker's resolver
//! reads at each handshake: a new certificate is served by the next
//! handshake on every worker, with no reload, no restart and the ticketer
//! kept. The table also holds the `tls-alpn-01` challenge certificates
//! (RFC 8737), served to a client that offers only the ALPN `acme-tls/1`.
//! The lock is taken for reading once per handshake, never per request.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock, RwLock},
};

use rustls::{
    crypto::ring::sign::any_supported_type,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// The ALPN protocol of the tls-alpn-01 challenge (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The ACME-managed certificates of the process.
#[derive(Default)]
pub struct Managed {
    /// By the listener's names joined with `,` (`key_of`).
    certs: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// tls-alpn-01 challenge certificates, by the name being validated.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// Names whose handshake without a certificate was already logged.
    logged: Mutex<HashSet<String>>,
}

/// The process-wide table.
pub fn managed() -> &'static Managed {
    static MANAGED: OnceLock<Managed> = OnceLock::new();
    MANAGED.get_or_init(Managed::default)
}

/// The table key of one listener's names.
pub fn key_of(names: &[String]) -> String {
    names.join(",")
}

impl Managed {
    /// Serves `ck` for `names` from the next handshake on.
    pub fn install(&self, names: &[String], ck: Arc<CertifiedKey>) {
        let key = key_of(names);
        if let Ok(mut logged) = self.logged.lock() {
            logged.remove(&key);
        }
        if let Ok(mut certs) = self.certs.write() {
            certs.insert(key, ck);
        }
    }

    pub fn get(&self, names: &[String]) -> Option<Arc<CertifiedKey>> {
        self.certs.read().ok()?.get(&key_of(names)).cloned()
    }

    /// Serves `ck` to a tls-alpn-01 validation of `name` (or stops, `None`).
    pub fn set_challenge(&self, name: &str, ck: Option<Arc<CertifiedKey>>) {
        if let Ok(mut c) = self.challenges.write() {
            match ck {
                Some(ck) => c.insert(name.to_string(), ck),
                None => c.remove(name),
            };
        }
    }

    fn challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.challenges.read().ok()?.get(name).cloned()
    }

    /// True the first time it is asked for `key` since its last install.
    fn first_miss(&self, key: &str) -> bool {
        self.logged
            .lock()
            .is_ok_and(|mut l| l.insert(key.to_string()))
    }
}

/// A chain and its key, both PEM, as rustls serves them; with `check`, the
/// key must match the leaf. (The tls-alpn-01 certificate skips the check:
/// webpki refuses to parse its critical `acmeIdentifier` extension.)
pub fn certified_from_pem(chain: &[u8], key: &[u8], check: bool) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read the certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("the chain holds no certificate".into());
    }
    let key =
        PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("cannot read the key: {e}"))?;
    let signer = any_supported_type(&key).map_err(|e| format!("unusable key: {e}"))?;
    let ck = CertifiedKey::new(chain, signer);
    if check {
        ck.keys_match()
            .map_err(|_| "the certificate does not match its key".to_string())?;
    }
    Ok(ck)
}

/// The resolver of one ACME listener.
#[derive(Debug)]
pub struct AcmeSni {
    pub names: Vec<String>,
}

impl ResolvesServerCert for AcmeSni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = managed();
        let challenge = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if challenge {
            // RFC 8737 §3: the validator names the identifier by SNI.
            let name = hello.server_name()?.to_ascii_lowercase();
            return table.challenge(&name);
        }
        if let Some(ck) = table.get(&self.names) {
            return Some(ck);
        }
        let key = key_of(&self.names);
        if table.first_miss(&key) {
            crate::warn!(
                "TLS handshake for {}: no certificate for {key} yet (ACME order pending); \
                 handshakes fail until it is issued",
                hello.server_name().unwrap_or("(no SNI)")
            );
        }
        None
    }
}

impl std::fmt::Debug for Managed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Managed")
    }
}
