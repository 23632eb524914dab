//! The ACME protocol (RFC 8555 §7): directory, nonces, the account, then
//! one order: authorizations, their challenges, finalisation with a fresh
//! key, and the chain's download.

use std::{thread, time::Duration};

use serde_json::{json, Value};

use super::{
    challenge::Answers,
    client::{Answer, Https},
    jws::{b64, AccountKey},
};
use crate::config::Challenge;

/// Tries of one request when the CA answers `badNonce` (§6.5: the client
/// retries with the nonce of that answer).
const NONCE_TRIES: usize = 10;
/// Polls of an authorization or an order, `POLL` apart.
const POLLS: usize = 120;
const POLL: Duration = Duration::from_millis(500);

pub struct Session<'a> {
    http: &'a Https,
    key: &'a AccountKey,
    new_nonce: String,
    new_account: String,
    new_order: String,
    nonce: Option<String>,
    /// The account URL, once known.
    kid: Option<String>,
}

/// A key and its chain, both PEM.
pub struct Issued {
    pub key_pem: String,
    pub chain_pem: String,
}

/// Why an order failed, and how long the CA asked to wait before the next
/// try (RFC 8555 §6.6: `Retry-After` on a `rateLimited` answer, or on any
/// error answer as HTTP allows).
pub struct Failure {
    pub reason: String,
    pub retry_after: Option<Duration>,
}

impl From<String> for Failure {
    fn from(reason: String) -> Failure {
        Failure {
            reason,
            retry_after: None,
        }
    }
}

impl From<&str> for Failure {
    fn from(reason: &str) -> Failure {
        Failure::from(reason.to_string())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// An error answer: its problem document (RFC 8555 §6.7) and `Retry-After`.
fn problem(url: &str, a: &Answer) -> Failure {
    let doc = a.json().unwrap_or(Value::Null);
    let kind = doc["type"].as_str().unwrap_or("");
    let kind = kind
        .strip_prefix("urn:ietf:params:acme:error:")
        .unwrap_or(kind);
    let reason = match doc["detail"].as_str() {
        Some(detail) => format!("{url}: the CA answered {} {kind}: {detail}", a.status),
        None => format!(
            "{url}: the CA answered {} without a problem document",
            a.status
        ),
    };
    Failure {
        reason,
        retry_after: a.retry_after(),
    }
}

fn text<'v>(v: &'v Value, key: &str) -> Result<&'v str, String> {
    v[key]
        .as_str()
        .ok_or_else(|| format!("the CA's answer has no \"{key}\""))
}

impl<'a> Session<'a> {
    /// Reads the directory.
    pub fn open(http: &'a Https, key: &'a AccountKey, directory: &str) -> Result<Self, Failure> {
        let a = http.request("GET", directory, None)?;
        if a.status != 200 {
            return Err(problem(&format!("directory {directory}"), &a));
        }
        let dir = a
            .json()
            .map_err(|e| format!("directory {directory}: {e}"))?;
        let url = |key| {
            let found = text(&dir, key).map(str::to_string);
            found.map_err(|e| format!("directory {directory}: {e}"))
        };
        Ok(Session {
            http,
            key,
            new_nonce: url("newNonce")?,
            new_account: url("newAccount")?,
            new_order: url("newOrder")?,
            nonce: None,
            kid: None,
        })
    }

    fn fresh_nonce(&mut self) -> Result<String, String> {
        if let Some(n) = self.nonce.take() {
            return Ok(n);
        }
        let a = self.http.request("HEAD", &self.new_nonce, None)?;
        a.field("replay-nonce")
            .map(str::to_string)
            .ok_or_else(|| "the CA gave no nonce".to_string())
    }

    /// A signed POST; `badNonce` is retried with the nonce it carried.
    fn post(&mut self, url: &str, payload: Option<&Value>) -> Result<Answer, String> {
        for _ in 0..NONCE_TRIES {
            let nonce = self.fresh_nonce()?;
            let body = self.key.sign(url, &nonce, self.kid.as_deref(), payload)?;
            let a = self.http.request("POST", url, Some(&body))?;
            self.nonce = a.field("replay-nonce").map(str::to_string);
            let bad_nonce = a.status == 400
                && a.json()
                    .is_ok_and(|d| d["type"] == "urn:ietf:params:acme:error:badNonce");
            if !bad_nonce {
                return Ok(a);
            }
        }
        Err(format!("{url}: badNonce {NONCE_TRIES} times in a row"))
    }

    fn post_ok(&mut self, url: &str, payload: Option<&Value>) -> Result<Answer, Failure> {
        let a = self.post(url, payload)?;
        match a.status {
            200..=299 => Ok(a),
            _ => Err(problem(url, &a)),
        }
    }

    /// Finds or creates the account of this key (§7.3).
    pub fn account(&mut self, email: Option<&str>) -> Result<(), Failure> {
        let mut payload = json!({ "termsOfServiceAgreed": true });
        if let Some(e) = email {
            payload["contact"] = json!([format!("mailto:{e}")]);
        }
        let url = self.new_account.clone();
        let a = self.post_ok(&url, Some(&payload))?;
        let kid = a.field("location").ok_or("the CA gave no account URL")?;
        self.kid = Some(kid.to_string());
        Ok(())
    }

    /// One order for `names`, answered by `answers`, to the chain.
    pub fn issue(
        &mut self,
        names: &[String],
        challenge: Challenge,
        answers: &Answers,
    ) -> Result<Issued, Failure> {
        let ids: Vec<Value> = names
            .iter()
            .map(|n| json!({ "type": "dns", "value": n }))
            .collect();
        let url = self.new_order.clone();
        let a = self.post_ok(&url, Some(&json!({ "identifiers": ids })))?;
        let order_url = a
            .field("location")
            .ok_or("the CA gave no order URL")?
            .to_string();
        let order = a.json()?;
        let authzs: Vec<String> = order["authorizations"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for authz in &authzs {
            self.authorize(authz, challenge, answers)?;
        }
        let finalize = text(&order, "finalize")?.to_string();
        let (csr, key_pem) = csr(names)?;
        self.post_ok(&finalize, Some(&json!({ "csr": b64(&csr) })))?;
        let order = self.poll(&order_url, "order")?;
        let cert_url = text(&order, "certificate")?.to_string();
        let a = self.post_ok(&cert_url, None)?;
        let chain_pem =
            String::from_utf8(a.body).map_err(|_| "the chain is not PEM text".to_string())?;
        Ok(Issued { key_pem, chain_pem })
    }

    /// Answers one authorization's challenge and waits for its verdict.
    fn authorize(&mut self, url: &str, kind: Challenge, answers: &Answers) -> Result<(), Failure> {
        let authz = self.post_ok(url, None)?.json()?;
        if authz["status"] == "valid" {
            return Ok(());
        }
        let name = authz["identifier"]["value"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let wanted = match kind {
            Challenge::TlsAlpn01 => "tls-alpn-01",
            Challenge::Http01 => "http-01",
        };
        let found = authz["challenges"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["type"] == wanted));
        let ch = found.ok_or_else(|| format!("{name}: the CA offers no {wanted} challenge"))?;
        let token = text(ch, "token")?.to_string();
        let ch_url = text(ch, "url")?.to_string();
        let key_auth = format!("{token}.{}", self.key.thumbprint());
        let _answer = answers.put(kind, &name, &token, &key_auth)?;
        self.post_ok(&ch_url, Some(&json!({})))?;
        self.poll(url, "authorization")
            .map(drop)
            .map_err(|e| Failure {
                reason: format!("{name}: {}", e.reason),
                ..e
            })
    }

    /// Polls an order or authorization until it is valid (or failed).
    fn poll(&mut self, url: &str, what: &str) -> Result<Value, Failure> {
        for _ in 0..POLLS {
            let v = self.post_ok(url, None)?.json()?;
            match v["status"].as_str().unwrap_or("") {
                "valid" if what != "order" || v["certificate"].is_string() => return Ok(v),
                "invalid" => return Err(format!("the {what} is invalid: {}", why(&v)).into()),
                _ => thread::sleep(POLL),
            }
        }
        Err(format!("the {what} stayed pending").into())
    }
}

/// The reason a failed authorization or order gives: its own `error`, or
/// that of its challenge.
fn why(v: &Value) -> String {
    let errors = std::iter::once(&v["error"]).chain(
        v["challenges"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| &c["error"]),
    );
    for e in errors {
        if let Some(detail) = e["detail"].as_str() {
            let kind = e["type"].as_str().unwrap_or("");
            let kind = kind
                .strip_prefix("urn:ietf:params:acme:error:")
                .unwrap_or(kind);
            return format!("{kind}: {detail}");
        }
    }
    "no reason given".into()
}

/// A fresh key for the certificate and the CSR for `names`.
fn csr(names: &[String]) -> Result<(Vec<u8>, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(names.to_vec()).map_err(|e| format!("CSR: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("CSR: {e}"))?;
    Ok((csr.der().to_vec(), key.serialize_pem()))
}
