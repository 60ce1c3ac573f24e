#![allow(clippy::unwrap_used)]
//! Property tests for everything a peer or operator hands the PKI layer: DER certificates and
//! CSRs, PEM documents and chains, private-key PEM, thumbprints and identity names. No input
//! panics, a changed byte in a signed certificate never validates, and PEM round trips.

use std::sync::OnceLock;

use pki::csr::{Csr, CsrOptions};
use pki::names::{check_device_id, check_dns_name, split_identity};
use pki::{
    CertRequest, Certificate, ChainValidator, KeyAlgorithm, PrivateKey, Profile, Purpose, Signer,
    issue, normalize_thumbprint, pem,
};
use proptest::prelude::*;
use time::OffsetDateTime;

struct Fixture {
    now: OffsetDateTime,
    root: Certificate,
    intermediate: Certificate,
    leaf: Certificate,
    leaf_key_pem: String,
    csr_der: Vec<u8>,
}

/// One small real hierarchy (root → intermediate → device), built once for all cases.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let root_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let root = issue(
            &CertRequest::new(Profile::RootCa, "Props Root", now),
            &root_key,
            None,
        )
        .unwrap();
        let int_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let intermediate = issue(
            &CertRequest::new(
                Profile::IntermediateCa { path_len: None },
                "Props Intermediate",
                now,
            ),
            &int_key,
            Some(Signer {
                cert: &root,
                key: &root_key,
            }),
        )
        .unwrap();
        let leaf_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let leaf = issue(
            &CertRequest::new(Profile::DeviceClient, "props-device", now),
            &leaf_key,
            Some(Signer {
                cert: &intermediate,
                key: &int_key,
            }),
        )
        .unwrap();
        let csr = Csr::create(
            &leaf_key,
            &CsrOptions::new(Profile::DeviceClient, "props-device"),
        )
        .unwrap();
        Fixture {
            now,
            root,
            intermediate,
            leaf,
            leaf_key_pem: leaf_key.to_pem(),
            csr_der: csr.der().to_vec(),
        }
    })
}

fn validator() -> &'static ChainValidator {
    static VALIDATOR: OnceLock<ChainValidator> = OnceLock::new();
    VALIDATOR.get_or_init(|| ChainValidator::new([fixture().root.clone()]).unwrap())
}

/// Whatever parses as a certificate can be inspected without panicking.
fn inspect(cert: &Certificate) {
    let _ = (cert.subject(), cert.issuer(), cert.common_name());
    let _ = (cert.thumbprint_sha1(), cert.thumbprint_sha256());
    let _ = (cert.public_key_raw(), cert.is_ca(), cert.is_self_issued());
    let _ = (
        cert.not_before(),
        cert.not_after(),
        cert.info(),
        cert.to_pem(),
    );
}

/// Bytes with one of: a replaced byte, a removed range, an inserted byte, or a cut.
fn mutate(der: &[u8], kind: u8, at: prop::sample::Index, byte: u8, len: usize) -> Vec<u8> {
    let mut out = der.to_vec();
    let i = at.index(out.len());
    match kind % 4 {
        0 => out[i] = byte,
        1 => {
            out.drain(i..(i + len).min(out.len()));
        }
        2 => out.insert(i, byte),
        _ => out.truncate(i),
    }
    out
}

fn pem_text() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("-----BEGIN CERTIFICATE-----\n".to_owned()),
        Just("-----END CERTIFICATE-----\n".to_owned()),
        Just("-----BEGIN PRIVATE KEY-----\n".to_owned()),
        Just("-----BEGIN EC PRIVATE KEY-----\n".to_owned()),
        Just("-----END PRIVATE KEY-----\n".to_owned()),
        Just("-----BEGIN CERTIFICATE REQUEST-----\n".to_owned()),
        Just("-----END CERTIFICATE REQUEST-----\n".to_owned()),
        "[A-Za-z0-9+/=]{0,80}\n?",
        "[ \t\r\n-]{0,4}",
        any::<String>(),
    ];
    prop::collection::vec(part, 0..10).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_der_never_panics(der in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(cert) = Certificate::from_der(der.clone()) {
            inspect(&cert);
        }
        let _ = Csr::from_der(&der);
        let _ = validator().verify_der(&der, &[&der], fixture().now, Purpose::ClientAuth);
    }

    #[test]
    fn arbitrary_pem_never_panics(text in pem_text()) {
        if let Ok(chain) = Certificate::chain_from_pem(&text) {
            prop_assert!(!chain.is_empty());
            chain.iter().for_each(inspect);
        }
        let _ = Certificate::from_pem(&text);
        let _ = PrivateKey::from_pem(&text);
        let _ = Csr::from_pem(&text);
    }

    #[test]
    fn a_changed_certificate_never_validates(
        kind in any::<u8>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        len in 1usize..40,
        which in 0usize..2,
    ) {
        let f = fixture();
        let target = [&f.leaf, &f.intermediate][which];
        let changed = mutate(target.der(), kind, at, byte, len);
        prop_assume!(changed != target.der());
        if let Ok(cert) = Certificate::from_der(changed.clone()) {
            inspect(&cert);
        }
        let (leaf, intermediate) = if which == 0 {
            (changed.as_slice(), f.intermediate.der())
        } else {
            (f.leaf.der(), changed.as_slice())
        };
        let result = validator().verify_der(leaf, &[intermediate], f.now, Purpose::ClientAuth);
        prop_assert!(result.is_err(), "a modified certificate validated");
        // The unmodified chain still validates (the cache is not poisoned by the failure).
        prop_assert!(validator()
            .verify(&f.leaf, std::slice::from_ref(&f.intermediate), f.now, Purpose::ClientAuth)
            .is_ok());
    }

    #[test]
    fn changed_csrs_and_keys_never_panic(
        kind in any::<u8>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        len in 1usize..40,
    ) {
        let f = fixture();
        if let Ok(csr) = Csr::from_der(&mutate(&f.csr_der, kind, at, byte, len)) {
            let _ = (csr.common_name(), csr.is_ca(), csr.public_key_raw(), csr.to_pem());
        }
        let key_pem = f.leaf_key_pem.as_bytes();
        let changed = mutate(key_pem, kind, at, byte, len);
        if let Ok(text) = String::from_utf8(changed) {
            let _ = PrivateKey::from_pem(&text).map(|k| k.matches(&f.leaf));
        }
    }

    #[test]
    fn pem_chains_round_trip_with_junk_between(
        order in prop::collection::vec(0usize..3, 1..6),
        junk in prop::collection::vec("[a-zA-Z0-9 :#.]{0,40}\n", 6),
    ) {
        let f = fixture();
        let certs = [&f.root, &f.intermediate, &f.leaf];
        let mut text = String::new();
        for (i, &c) in order.iter().enumerate() {
            text.push_str(&junk[i]);
            text.push_str(&pem::encode("CERTIFICATE", certs[c].der()));
        }
        let chain = Certificate::chain_from_pem(&text).unwrap();
        let got: Vec<&[u8]> = chain.iter().map(Certificate::der).collect();
        let want: Vec<&[u8]> = order.iter().map(|&c| certs[c].der()).collect();
        prop_assert_eq!(got, want);
        let first = Certificate::from_pem(&text).unwrap();
        prop_assert_eq!(first.der(), certs[order[0]].der());
    }

    #[test]
    fn thumbprints_normalise_idempotently(text in "[0-9a-fA-F: -]{0,100}") {
        if let Some(norm) = normalize_thumbprint(&text) {
            prop_assert!(norm.len() == 40 || norm.len() == 64);
            prop_assert!(norm.chars().all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)));
            prop_assert_eq!(normalize_thumbprint(&norm), Some(norm.clone()));
            prop_assert_eq!(normalize_thumbprint(&norm.to_lowercase()), Some(norm));
        }
    }

    #[test]
    fn real_thumbprints_survive_user_formatting(sep in prop::sample::select(vec!["", ":", " ", "-"]), lower in any::<bool>()) {
        let t = fixture().leaf.thumbprint_sha1();
        let pairs: Vec<String> = t.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        let mut pasted = pairs.join(sep);
        if lower {
            pasted = pasted.to_lowercase();
        }
        prop_assert_eq!(normalize_thumbprint(&pasted), Some(t));
    }

    #[test]
    fn identity_names_never_panic_and_split_consistently(id in any::<String>()) {
        let _ = check_dns_name(&id);
        if let Ok((device, module)) = split_identity(&id) {
            prop_assert!(check_device_id(device).is_ok());
            let joined = module.map_or(device.to_owned(), |m| format!("{device}/{m}"));
            prop_assert_eq!(joined, id);
        }
    }

    #[test]
    fn valid_device_ids_are_accepted(
        id in "[a-zA-Z0-9.+%_#*?!(),:=@$'-]{1,128}"
            .prop_filter("`.` and `..` are refused", |id| id != "." && id != "..")
    ) {
        prop_assert!(check_device_id(&id).is_ok());
        prop_assert_eq!(split_identity(&id).unwrap(), (id.as_str(), None));
    }
}
