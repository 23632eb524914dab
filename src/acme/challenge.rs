//! Challenge answers. The ACME thread puts them up for the length of one
//! authorization (`Answers::put`, taken down when its guard drops); the
//! workers serve them:
//!
//! - `tls-alpn-01` (RFC 8737): a self-signed certificate for the name with
//!   the critical `acmeIdentifier` extension holding SHA-256 of the key
//!   authorization, served by the TLS listener's resolver (tls/acme.rs);
//! - `http-01` (RFC 8555 §8.3): the key authorization as the body of
//!   `GET /.well-known/acme-challenge/TOKEN`, on every plain listener,
//!   before any route (`http01`).

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, RwLock},
};

use crate::{
    config::Challenge,
    http::headers::HeadOut,
    request::{Client, Done, Plan},
    shard::Shard,
    tls::acme::{certified_from_pem, managed},
};

const PREFIX: &[u8] = b"/.well-known/acme-challenge/";

/// http-01 key authorizations by token.
fn tokens() -> &'static RwLock<HashMap<String, String>> {
    static TOKENS: OnceLock<RwLock<HashMap<String, String>>> = OnceLock::new();
    TOKENS.get_or_init(RwLock::default)
}

/// Puts up challenge answers.
pub struct Answers;

/// Takes its answer down when dropped.
pub struct Up {
    kind: Challenge,
    key: String,
}

impl Drop for Up {
    fn drop(&mut self) {
        match self.kind {
            Challenge::TlsAlpn01 => managed().set_challenge(&self.key, None),
            Challenge::Http01 => {
                if let Ok(mut t) = tokens().write() {
                    t.remove(&self.key);
                }
            }
        }
    }
}

impl Answers {
    pub fn put(
        &self,
        kind: Challenge,
        name: &str,
        token: &str,
        key_auth: &str,
    ) -> Result<Up, String> {
        match kind {
            Challenge::TlsAlpn01 => {
                let ck = alpn_certificate(name, key_auth)?;
                managed().set_challenge(name, Some(Arc::new(ck)));
                Ok(Up {
                    kind,
                    key: name.to_string(),
                })
            }
            Challenge::Http01 => {
                if let Ok(mut t) = tokens().write() {
                    t.insert(token.to_string(), key_auth.to_string());
                }
                Ok(Up {
                    kind,
                    key: token.to_string(),
                })
            }
        }
    }
}

/// RFC 8737 §3: the challenge certificate for `name`.
fn alpn_certificate(name: &str, key_auth: &str) -> Result<rustls::sign::CertifiedKey, String> {
    let digest = ring::digest::digest(&ring::digest::SHA256, key_auth.as_bytes());
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| format!("challenge certificate: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = rcgen::KeyPair::generate().map_err(|e| format!("challenge key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("challenge certificate: {e}"))?;
    certified_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes(), false)
}

/// The http-01 answer of a plain listener, when `plan` asks for a token
/// that is up: 200 with the key authorization.
pub async fn http01(c: &mut Client, shard: &Shard, plan: &Plan) -> Option<Done> {
    if c.stream.is_tls() {
        return None;
    }
    let token = plan.path(&c.buf).strip_prefix(PREFIX)?;
    let token = std::str::from_utf8(token).ok()?;
    let body = tokens().read().ok()?.get(token)?.clone();
    Some(Box::pin(send(c, shard, plan, body)).await)
}

async fn send(c: &mut Client, shard: &Shard, plan: &Plan, body: String) -> Done {
    let (keep, consumed) = crate::serve::own_answer_keep(c, shard, plan);
    let mut out = crate::serve::Own::start(c, shard, 200);
    out.field(b"Content-Type", b"application/octet-stream");
    crate::serve::content_length(&mut out, body.len() as u64);
    let framing = crate::http::headers::OutFraming::AsIs;
    crate::serve::end_own_head(&mut out, None, framing, keep, plan.minor);
    if !plan.head_only {
        out.body().extend_from_slice(body.as_bytes());
    }
    crate::serve::send_own(c, shard, plan, out, 200, body.len(), (keep, consumed)).await
}
