//! Differential test: the pki validator and `openssl verify` must reach the same verdict on a
//! corpus this test generates, and that verdict must be the expected one.
//!
//! Certificates the toolkit refuses to make (a CA:FALSE issuer, a CA under pathLen 0, ...) are
//! built here with rcgen directly, bypassing `pki::issue`'s checks.

#![allow(clippy::unwrap_used)] // test helpers: a failure here is a test failure

use std::path::Path;
use std::process::Command;

use pki::{
    CertRequest, Certificate, ChainValidator, KeyAlgorithm, PrivateKey, Profile, Purpose, Reason,
    Signer, issue,
};
use time::{Duration, OffsetDateTime};

/// 2027-01-15T08:00:00Z: the time every case is checked at.
const AT: i64 = 1_800_000_000;

fn at() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(AT).unwrap()
}

struct Ca {
    cert: Certificate,
    key: PrivateKey,
}

impl Ca {
    fn signer(&self) -> Signer<'_> {
        Signer {
            cert: &self.cert,
            key: &self.key,
        }
    }
}

fn make(profile: Profile, cn: &str, issuer: Option<&Ca>, alg: KeyAlgorithm) -> Ca {
    make_at(profile, cn, issuer, alg, at() - Duration::days(1), None)
}

fn make_at(
    profile: Profile,
    cn: &str,
    issuer: Option<&Ca>,
    alg: KeyAlgorithm,
    not_before: OffsetDateTime,
    days: Option<u32>,
) -> Ca {
    let key = PrivateKey::generate(alg).unwrap();
    let mut req = CertRequest::new(profile, cn, not_before);
    if let Some(d) = days {
        req.days = d;
    }
    if profile == Profile::Server {
        req.subject_alt_names = vec!["localhost".into(), "127.0.0.1".into()];
    }
    let cert = issue(&req, &key, issuer.map(Ca::signer)).unwrap();
    Ca { cert, key }
}

/// A certificate signed by `issuer` with rcgen and no toolkit checks.
fn raw(params: rcgen::CertificateParams, issuer: &Ca) -> Ca {
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let subject = rcgen::KeyPair::from_pem(&key.to_pem()).unwrap();
    let issuer_key = rcgen::KeyPair::from_pem(&issuer.key.to_pem()).unwrap();
    let rc_issuer = rcgen::Issuer::from_ca_cert_der(&issuer.cert.to_rustls(), issuer_key).unwrap();
    let cert = params.signed_by(&subject, &rc_issuer).unwrap();
    Ca {
        cert: Certificate::from_der(cert.der().to_vec()).unwrap(),
        key,
    }
}

fn raw_params(
    cn: &str,
    is_ca: rcgen::IsCa,
    usages: Vec<rcgen::KeyUsagePurpose>,
) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.not_before = at() - Duration::days(1);
    p.not_after = at() + Duration::days(100);
    p.is_ca = is_ca;
    p.key_usages = usages;
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x11; 16]));
    p
}

struct Case {
    name: &'static str,
    root: Certificate,
    intermediates: Vec<Certificate>,
    leaf: Certificate,
    purpose: Purpose,
    /// `None` = must be accepted; `Some(check)` = must be refused for this reason.
    expect: Option<fn(&Reason) -> bool>,
}

fn openssl_verdict(dir: &Path, case: &Case) -> (bool, String) {
    let write = |name: &str, certs: &[Certificate]| {
        let p = dir.join(format!("{}-{name}.pem", case.name));
        let pem: String = certs.iter().map(Certificate::to_pem).collect();
        std::fs::write(&p, pem).unwrap();
        p
    };
    let root = write("root", std::slice::from_ref(&case.root));
    let leaf = write("leaf", std::slice::from_ref(&case.leaf));
    let mut cmd = Command::new("openssl");
    cmd.arg("verify")
        .arg("-x509_strict")
        .arg("-attime")
        .arg(AT.to_string())
        .arg("-CAfile")
        .arg(&root);
    if !case.intermediates.is_empty() {
        cmd.arg("-untrusted")
            .arg(write("untrusted", &case.intermediates));
    }
    match case.purpose {
        Purpose::ClientAuth => {
            cmd.args(["-purpose", "sslclient"]);
        }
        Purpose::ServerAuth => {
            cmd.args(["-purpose", "sslserver"]);
        }
        Purpose::Any => {}
    }
    let out = cmd
        .arg(&leaf)
        .output()
        .expect("openssl must be installed (scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains(": OK"), text)
}

fn corpus() -> Vec<Case> {
    use KeyAlgorithm::{P256, P384, Rsa2048};
    let root = make(Profile::RootCa, "Test Root", None, P256);
    let inter = make(
        Profile::IntermediateCa { path_len: None },
        "Test Intermediate",
        Some(&root),
        P256,
    );
    let leaf = make(Profile::DeviceClient, "dev1", Some(&inter), P256);
    let mut cases = Vec::new();
    let case = |name, inters: Vec<&Certificate>, leaf: &Certificate, purpose, expect| Case {
        name,
        root: root.cert.clone(),
        intermediates: inters.into_iter().cloned().collect(),
        leaf: leaf.clone(),
        purpose,
        expect,
    };

    cases.push(case(
        "valid",
        vec![&inter.cert],
        &leaf.cert,
        Purpose::ClientAuth,
        None,
    ));
    let direct = make(Profile::DeviceClient, "dev-direct", Some(&root), P256);
    cases.push(case(
        "valid-under-root",
        vec![],
        &direct.cert,
        Purpose::ClientAuth,
        None,
    ));
    let edge = make(Profile::EdgeCa, "iot-edge-device-ca-gw", Some(&inter), P256);
    let gw = make(Profile::Server, "gateway", Some(&edge), P256);
    cases.push(case(
        "valid-edge-ca-server",
        vec![&edge.cert, &inter.cert],
        &gw.cert,
        Purpose::ServerAuth,
        None,
    ));

    let expired = make_at(
        Profile::DeviceClient,
        "old",
        Some(&inter),
        P256,
        at() - Duration::days(400),
        Some(365),
    );
    cases.push(case(
        "expired-leaf",
        vec![&inter.cert],
        &expired.cert,
        Purpose::ClientAuth,
        Some(|r| matches!(r, Reason::Expired { .. })),
    ));
    let future = make_at(
        Profile::DeviceClient,
        "future",
        Some(&inter),
        P256,
        at() + Duration::days(10),
        None,
    );
    cases.push(case(
        "not-yet-valid-leaf",
        vec![&inter.cert],
        &future.cert,
        Purpose::ClientAuth,
        Some(|r| matches!(r, Reason::NotYetValid { .. })),
    ));

    let other_root = make(Profile::RootCa, "Other Root", None, P256);
    let other_inter = make(
        Profile::IntermediateCa { path_len: None },
        "Test Intermediate",
        Some(&other_root),
        P256,
    );
    let impostor = make(Profile::DeviceClient, "dev1", Some(&other_inter), P256);
    cases.push(case(
        "wrong-issuer-same-name",
        vec![&inter.cert],
        &impostor.cert,
        Purpose::ClientAuth,
        Some(|r| matches!(r, Reason::UnknownIssuer)),
    ));
    let stranger = make(Profile::DeviceClient, "stranger", Some(&other_root), P256);
    cases.push(case(
        "wrong-issuer-untrusted-root",
        vec![&inter.cert],
        &stranger.cert,
        Purpose::ClientAuth,
        Some(|r| matches!(r, Reason::UnknownIssuer)),
    ));

    let not_ca = raw(
        raw_params(
            "Not A CA",
            rcgen::IsCa::ExplicitNoCa,
            vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ],
        ),
        &root,
    );
    let under_not_ca = make_raw_leaf("under-not-ca", &not_ca);
    cases.push(case(
        "intermediate-ca-false",
        vec![&not_ca.cert],
        &under_not_ca.cert,
        Purpose::ClientAuth,
        Some(|r| matches!(r, Reason::NotCa)),
    ));

    let no_kcs = raw(
        raw_params(
            "No KeyCertSign",
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
            vec![rcgen::KeyUsagePurpose::DigitalSignature],
        ),
        &root,
    );
    let under_no_kcs = make_raw_leaf("under-no-kcs", &no_kcs);
    cases.push(case(
        "intermediate-without-keycertsign",
        vec![&no_kcs.cert],
        &under_no_kcs.cert,
        Purpose::ClientAuth,
        Some(|r| matches!(r, Reason::MissingKeyCertSign)),
    ));

    let sub_ca = raw(
        raw_params(
            "CA below pathLen 0",
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
            vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ],
        ),
        &edge,
    );
    let too_deep = make_raw_leaf("too-deep", &sub_ca);
    cases.push(case(
        "pathlen-exceeded",
        vec![&sub_ca.cert, &edge.cert, &inter.cert],
        &too_deep.cert,
        Purpose::ClientAuth,
        Some(|r| matches!(r, Reason::PathLenExceeded { .. })),
    ));

    cases.push(case(
        "missing-intermediate",
        vec![],
        &leaf.cert,
        Purpose::ClientAuth,
        Some(|r| matches!(r, Reason::UnknownIssuer)),
    ));
    let selfsigned = make(Profile::SelfSignedDevice, "selfie", None, P256);
    cases.push(case(
        "self-signed-leaf",
        vec![&inter.cert],
        &selfsigned.cert,
        Purpose::ClientAuth,
        Some(|r| matches!(r, Reason::SelfSignedNotTrusted)),
    ));

    let mut der = leaf.cert.der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = Certificate::from_der(der).unwrap();
    cases.push(case(
        "tampered-signature",
        vec![&inter.cert],
        &tampered,
        Purpose::ClientAuth,
        Some(|r| matches!(r, Reason::BadSignature)),
    ));

    let server = make(Profile::Server, "srv", Some(&inter), P256);
    cases.push(case(
        "wrong-eku",
        vec![&inter.cert],
        &server.cert,
        Purpose::ClientAuth,
        Some(|r| matches!(r, Reason::WrongEku { .. })),
    ));
    cases.push(case(
        "server-eku-for-server",
        vec![&inter.cert],
        &server.cert,
        Purpose::ServerAuth,
        None,
    ));

    let old_inter = make_at(
        Profile::IntermediateCa { path_len: None },
        "Old Intermediate",
        Some(&root),
        P256,
        at() - Duration::days(60),
        Some(30),
    );
    cases.push(case(
        "expired-intermediate",
        vec![&old_inter.cert],
        &leaf_valid_now(&old_inter),
        Purpose::ClientAuth,
        Some(|r| matches!(r, Reason::Expired { .. })),
    ));

    // Other algorithms: a P-384 chain and an RSA chain, and mixed.
    let root384 = make(Profile::RootCa, "Root 384", None, P384);
    let leaf384 = make(Profile::DeviceClient, "dev384", Some(&root384), P256);
    cases.push(Case {
        name: "valid-p384-root",
        root: root384.cert.clone(),
        intermediates: vec![],
        leaf: leaf384.cert.clone(),
        purpose: Purpose::ClientAuth,
        expect: None,
    });
    let rsa_root = make(Profile::RootCa, "RSA Root", None, Rsa2048);
    let rsa_inter = make(
        Profile::IntermediateCa { path_len: Some(0) },
        "RSA Inter",
        Some(&rsa_root),
        Rsa2048,
    );
    let rsa_leaf = make(Profile::DeviceClient, "rsa-dev", Some(&rsa_inter), Rsa2048);
    cases.push(Case {
        name: "valid-rsa",
        root: rsa_root.cert.clone(),
        intermediates: vec![rsa_inter.cert.clone()],
        leaf: rsa_leaf.cert.clone(),
        purpose: Purpose::ClientAuth,
        expect: None,
    });
    cases.push(Case {
        name: "root-is-leaf",
        root: root.cert.clone(),
        intermediates: vec![],
        leaf: root.cert.clone(),
        purpose: Purpose::Any,
        expect: None,
    });
    cases
}

/// A leaf under an already-expired intermediate, itself valid at `AT` (validity is not clamped
/// because rcgen is used directly).
fn leaf_valid_now(issuer: &Ca) -> Certificate {
    make_raw_leaf("under-expired", issuer).cert
}

fn make_raw_leaf(cn: &str, issuer: &Ca) -> Ca {
    let mut p = raw_params(
        cn,
        rcgen::IsCa::ExplicitNoCa,
        vec![rcgen::KeyUsagePurpose::DigitalSignature],
    );
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    raw(p, issuer)
}

#[test]
fn pki_and_openssl_agree_on_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    for case in corpus() {
        let validator = ChainValidator::new([case.root.clone()]).unwrap();
        let ours = validator.verify(&case.leaf, &case.intermediates, at(), case.purpose);
        let (theirs, openssl_text) = openssl_verdict(dir.path(), &case);
        assert_eq!(
            ours.is_ok(),
            theirs,
            "case {}: pki says {:?}, openssl says:\n{openssl_text}",
            case.name,
            ours
        );
        match (case.expect, &ours) {
            (None, Ok(_)) => {}
            (Some(check), Err(e)) => assert!(
                check(&e.reason),
                "case {}: unexpected reason {e}",
                case.name
            ),
            (None, Err(e)) => panic!("case {} should pass: {e}", case.name),
            (Some(_), Ok(_)) => panic!("case {} should fail", case.name),
        }
        report.push(format!(
            "{:32} {}",
            case.name,
            if theirs { "OK" } else { "refused" }
        ));
    }
    eprintln!("{}", report.join("\n"));
    assert!(report.len() >= 18, "corpus shrank: {report:#?}");
}

#[test]
fn cache_gives_same_verdicts_and_still_checks_the_leaf() {
    let root = make(Profile::RootCa, "Root", None, KeyAlgorithm::P256);
    let inter = make(
        Profile::IntermediateCa { path_len: None },
        "Inter",
        Some(&root),
        KeyAlgorithm::P256,
    );
    let opts = pki::ValidatorOptions {
        cache_capacity: 16,
        ..Default::default()
    };
    let v = ChainValidator::with_options([root.cert.clone()], opts).unwrap();
    let chain = [inter.cert.clone()];
    for i in 0..3 {
        let leaf = make(
            Profile::DeviceClient,
            &format!("d{i}"),
            Some(&inter),
            KeyAlgorithm::P256,
        );
        let path = v
            .verify(&leaf.cert, &chain, at(), Purpose::ClientAuth)
            .unwrap();
        assert_eq!(path.certs.len(), 3);
        assert_eq!(path.anchor(), &root.cert);
    }
    // The first leaf built the path; the next two were answered from the cache.
    let stats = v.cache_stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.entries),
        (2, 1, 1),
        "{stats:?}"
    );
    // A cached intermediate does not excuse an expired leaf, a wrong EKU, or a bad signature.
    let expired = make_at(
        Profile::DeviceClient,
        "old",
        Some(&inter),
        KeyAlgorithm::P256,
        at() - Duration::days(400),
        Some(365),
    );
    assert!(matches!(
        v.verify(&expired.cert, &chain, at(), Purpose::ClientAuth)
            .unwrap_err()
            .reason,
        Reason::Expired { .. }
    ));
    let server = make(Profile::Server, "srv", Some(&inter), KeyAlgorithm::P256);
    assert!(
        v.verify(&server.cert, &chain, at(), Purpose::ClientAuth)
            .is_err()
    );
    let good = make(
        Profile::DeviceClient,
        "good",
        Some(&inter),
        KeyAlgorithm::P256,
    );
    let mut der = good.cert.der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = Certificate::from_der(der).unwrap();
    assert_eq!(
        v.verify(&tampered, &chain, at(), Purpose::ClientAuth)
            .unwrap_err()
            .reason,
        Reason::BadSignature
    );
    // The cached window ends with the intermediate: later checks fail on the intermediate.
    let later = inter.cert.not_after() + Duration::days(1);
    let e = v
        .verify(&good.cert, &chain, later, Purpose::Any)
        .unwrap_err();
    assert!(matches!(e.reason, Reason::Expired { .. }), "{e}");
}

#[test]
fn errors_name_the_failing_certificate() {
    let root = make(Profile::RootCa, "Root", None, KeyAlgorithm::P256);
    let old = make_at(
        Profile::IntermediateCa { path_len: None },
        "Old Inter",
        Some(&root),
        KeyAlgorithm::P256,
        at() - Duration::days(60),
        Some(30),
    );
    let leaf = leaf_valid_now(&old);
    let v = ChainValidator::new([root.cert.clone()]).unwrap();
    let e = v
        .verify(
            &leaf,
            std::slice::from_ref(&old.cert),
            at(),
            Purpose::ClientAuth,
        )
        .unwrap_err();
    assert_eq!(e.index, 1);
    assert_eq!(e.subject, "CN=Old Inter");
    assert!(
        e.to_string()
            .starts_with("certificate #1 (CN=Old Inter): expired"),
        "{e}"
    );
}

#[test]
fn depth_and_budget_limits_hold() {
    let root = make(Profile::RootCa, "Root", None, KeyAlgorithm::P256);
    let mut cas = vec![root];
    for i in 0..8 {
        let next = make(
            Profile::IntermediateCa { path_len: None },
            &format!("I{i}"),
            cas.last(),
            KeyAlgorithm::P256,
        );
        cas.push(next);
    }
    let leaf = make(
        Profile::DeviceClient,
        "deep",
        cas.last(),
        KeyAlgorithm::P256,
    );
    let pool: Vec<Certificate> = cas[1..].iter().rev().map(|c| c.cert.clone()).collect();
    let v = ChainValidator::new([cas[0].cert.clone()]).unwrap();
    let e = v
        .verify(&leaf.cert, &pool, at(), Purpose::ClientAuth)
        .unwrap_err();
    assert!(matches!(e.reason, Reason::DepthExceeded(8)), "{e}");
    let roomy = ChainValidator::with_options(
        [cas[0].cert.clone()],
        pki::ValidatorOptions {
            max_depth: 12,
            ..Default::default()
        },
    )
    .unwrap();
    roomy
        .verify(&leaf.cert, &pool, at(), Purpose::ClientAuth)
        .unwrap();
    let tight = ChainValidator::with_options(
        [cas[0].cert.clone()],
        pki::ValidatorOptions {
            max_depth: 12,
            max_signature_checks: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let e = tight
        .verify(&leaf.cert, &pool, at(), Purpose::ClientAuth)
        .unwrap_err();
    assert_eq!(e.reason, Reason::BudgetExceeded);
}
