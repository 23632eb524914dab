//! HTTP/2 frames through the real connection code (TLS, ALPN h2,
//! `http2::serve`, `conn::exchange`): see `ringside::fuzzing::H2` and
//! `ringside::fuzzing::frames` for the input's layout.
#![no_main]

use ringside::fuzzing::H2;

thread_local! {
    static HARNESS: H2 = {
        let key = rcgen::KeyPair::generate().expect("a key pair");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("certificate parameters");
        let cert = params.self_signed(&key).expect("a self-signed certificate");
        H2::new(&cert.pem(), &key.serialize_pem())
    };
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS.with(|h| h.run(data)));
