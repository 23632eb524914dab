//! The account key and the JWS that signs every ACME request (RFC 8555
//! §6.2, RFC 7515 flattened JSON): ES256 with ring, P-256 key stored as
//! PKCS#8 PEM.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::{
    rand::SystemRandom,
    signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING},
};
use serde_json::{json, Value};

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub struct AccountKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl AccountKey {
    /// A fresh P-256 key, and its PKCS#8 DER to store.
    pub fn generate() -> Result<(AccountKey, Vec<u8>), String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "cannot make an account key".to_string())?;
        let key = AccountKey::from_pkcs8(pkcs8.as_ref())?;
        Ok((key, pkcs8.as_ref().to_vec()))
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<AccountKey, String> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| format!("not a P-256 account key: {e}"))?;
        Ok(AccountKey { pair, rng })
    }

    /// The public key as a JWK; its members in the order RFC 7638 hashes.
    fn jwk(&self) -> (String, String) {
        // An uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = self.pair.public_key().as_ref();
        (b64(&point[1..33]), b64(&point[33..65]))
    }

    /// RFC 7638 thumbprint, the second half of a key authorization.
    pub fn thumbprint(&self) -> String {
        let (x, y) = self.jwk();
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        b64(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// The request body for `url`: signed with the account URL (`kid`) once
    /// there is one, else with the whole key (newAccount). `payload` `None`
    /// is a POST-as-GET (an empty payload).
    pub fn sign(
        &self,
        url: &str,
        nonce: &str,
        kid: Option<&str>,
        payload: Option<&Value>,
    ) -> Result<Vec<u8>, String> {
        let mut protected = json!({ "alg": "ES256", "nonce": nonce, "url": url });
        match kid {
            Some(kid) => protected["kid"] = json!(kid),
            None => {
                let (x, y) = self.jwk();
                protected["jwk"] = json!({ "crv": "P-256", "kty": "EC", "x": x, "y": y });
            }
        }
        let protected = b64(protected.to_string().as_bytes());
        let payload = payload.map_or(String::new(), |p| b64(p.to_string().as_bytes()));
        let input = format!("{protected}.{payload}");
        let sig = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| "cannot sign a request".to_string())?;
        let body =
            json!({ "protected": protected, "payload": payload, "signature": b64(sig.as_ref()) });
        Ok(body.to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::AccountKey;

    #[test]
    fn a_stored_key_signs_as_the_fresh_one_did() {
        let (key, der) = AccountKey::generate().unwrap();
        let again = AccountKey::from_pkcs8(&der).unwrap();
        assert_eq!(key.thumbprint(), again.thumbprint());
        assert_eq!(key.thumbprint().len(), 43);
        let body = key.sign("https://a/x", "n", Some("k"), None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["payload"], "");
        assert_eq!(v["signature"].as_str().unwrap().len(), 86);
    }
}
