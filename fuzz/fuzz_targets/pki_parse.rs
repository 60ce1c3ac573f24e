//! Certificates, chains, CSRs and keys as uploaded by operators or presented in TLS handshakes:
//! DER and PEM parsing and chain validation never panic, and nothing a fuzzer makes validates
//! against a root whose key it never saw.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pki::csr::Csr;
use pki::{
    CertRequest, Certificate, ChainValidator, KeyAlgorithm, PrivateKey, Profile, Purpose, issue,
};
use time::OffsetDateTime;

fn validator() -> &'static (ChainValidator, OffsetDateTime) {
    static V: OnceLock<(ChainValidator, OffsetDateTime)> = OnceLock::new();
    V.get_or_init(|| {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a valid time");
        let key = PrivateKey::generate(KeyAlgorithm::P256).expect("a key");
        let root = issue(
            &CertRequest::new(Profile::RootCa, "Fuzz Root", now),
            &key,
            None,
        )
        .expect("a root");
        (ChainValidator::new([root]).expect("a validator"), now)
    })
}

fn inspect(cert: &Certificate) {
    let _ = (
        cert.subject(),
        cert.issuer(),
        cert.common_name(),
        cert.info(),
    );
    let _ = (cert.thumbprint_sha1(), cert.is_ca(), cert.not_after());
}

fuzz_target!(|data: &[u8]| {
    let (validator, now) = validator();
    if let Ok(cert) = Certificate::from_der(data.to_vec()) {
        inspect(&cert);
    }
    let _ = Csr::from_der(data);
    let result = validator.verify_der(data, &[data], *now, Purpose::ClientAuth);
    assert!(result.is_err(), "a fuzzer-made certificate validated");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(chain) = Certificate::chain_from_pem(text) {
            chain.iter().for_each(inspect);
        }
        let _ = PrivateKey::from_pem(text);
        let _ = Csr::from_pem(text);
        let _ = pki::normalize_thumbprint(text);
        let _ = pki::names::split_identity(text);
    }
});
