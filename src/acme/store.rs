//! Storage under `[acme] storage`, kept across restarts:
//!
//! ```text
//! account.key                      the account's P-256 key (PKCS#8 PEM, 0600)
//! NAME[+NAME…]/key.pem             the certificate's key (0600)
//! NAME[+NAME…]/chain.pem           the chain, leaf first
//! ```
//!
//! Files are written to a temporary name and renamed, so a crash never
//! leaves half a key.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use rustls::pki_types::{pem::PemObject, PrivatePkcs8KeyDer};

use super::jws::AccountKey;

/// Writes `bytes` to `path` with `mode`, through a temporary file.
fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The account key, made and stored on first use.
pub fn account_key(storage: &Path) -> Result<AccountKey, String> {
    let path = storage.join("account.key");
    if let Ok(pem) = fs::read(&path) {
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        return AccountKey::from_pkcs8(der.secret_pkcs8_der());
    }
    if let Some(m) = crate::config::writable(storage) {
        return Err(m);
    }
    let (key, der) = AccountKey::generate()?;
    let pem = pem_of("PRIVATE KEY", &der);
    write(&path, pem.as_bytes(), 0o600)?;
    crate::info!("acme: new account key in {}", path.display());
    Ok(key)
}

fn pem_of(label: &str, der: &[u8]) -> String {
    use base64::{engine::general_purpose::STANDARD, Engine};
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The folder of one listener's names.
pub fn folder(storage: &Path, names: &[String]) -> PathBuf {
    storage.join(names.join("+"))
}

/// The stored (chain, key), if both are there.
pub fn load(storage: &Path, names: &[String]) -> Option<(Vec<u8>, Vec<u8>)> {
    let dir = folder(storage, names);
    Some((
        fs::read(dir.join("chain.pem")).ok()?,
        fs::read(dir.join("key.pem")).ok()?,
    ))
}

pub fn save(storage: &Path, names: &[String], chain: &str, key: &str) -> Result<(), String> {
    let dir = folder(storage, names);
    if let Some(m) = crate::config::writable(&dir) {
        return Err(m);
    }
    write(&dir.join("key.pem"), key.as_bytes(), 0o600)?;
    write(&dir.join("chain.pem"), chain.as_bytes(), 0o644)
}
