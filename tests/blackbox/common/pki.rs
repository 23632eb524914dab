//! A throwaway certificate authority: a self-signed root and the leaves it
//! signs (rcgen), for the TLS listeners, the scripted ACME CA and pebble.

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};

/// A root certificate and its key.
pub struct TestCa {
    pub cert: Certificate,
    pub key: KeyPair,
}

impl TestCa {
    pub fn new(common_name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// A leaf for `names` (the first is also its common name), after
    /// `edit` has set anything else (validity dates); and its key.
    pub fn leaf(
        &self,
        names: &[&str],
        edit: impl FnOnce(&mut CertificateParams),
    ) -> (Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        edit(&mut params);
        (params.signed_by(&key, &self.cert, &self.key).unwrap(), key)
    }
}
