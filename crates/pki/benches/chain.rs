//! Chain validation throughput: device → intermediate → root, ECDSA P-256.
//!
//! `uncached` checks two signatures per chain (leaf by intermediate, intermediate by root);
//! `cached` remembers the already-validated intermediate and checks one. `p256_verify` is a bare
//! aws-lc-rs signature verification with a pre-parsed key, the unit `openssl speed` measures;
//! `p256_verify_rotating` is the same over 256 different certificates.
//! `scripts/bench-pki` runs this next to `openssl speed` and prints the ratios.
#![allow(clippy::unwrap_used, missing_docs)] // benchmark setup: a panic is a failed run

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pki::{
    CertRequest, Certificate, ChainValidator, KeyAlgorithm, PrivateKey, Profile, Purpose, Signer,
    ValidatorOptions, issue,
};
use time::OffsetDateTime;

const LEAVES: usize = 256;

struct Fixture {
    root: Certificate,
    inter: Certificate,
    leaves: Vec<Certificate>,
    now: OffsetDateTime,
}

fn fixture() -> Fixture {
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let root_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let root = issue(
        &CertRequest::new(Profile::RootCa, "Bench Root", now),
        &root_key,
        None,
    )
    .unwrap();
    let inter_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let inter_req = CertRequest::new(
        Profile::IntermediateCa { path_len: None },
        "Bench Inter",
        now,
    );
    let signer = Signer {
        cert: &root,
        key: &root_key,
    };
    let inter = issue(&inter_req, &inter_key, Some(signer)).unwrap();
    let leaves = (0..LEAVES)
        .map(|i| {
            let k = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
            let req = CertRequest::new(Profile::DeviceClient, format!("device-{i}"), now);
            issue(
                &req,
                &k,
                Some(Signer {
                    cert: &inter,
                    key: &inter_key,
                }),
            )
            .unwrap()
        })
        .collect();
    Fixture {
        root,
        inter,
        leaves,
        now,
    }
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    let chain = [f.inter.clone()];
    let mut g = c.benchmark_group("chain");
    g.throughput(Throughput::Elements(1));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));

    let plain = ChainValidator::new([f.root.clone()]).unwrap();
    let mut i = 0;
    g.bench_function("uncached", |b| {
        b.iter(|| {
            i = (i + 1) % LEAVES;
            plain
                .verify(black_box(&f.leaves[i]), &chain, f.now, Purpose::ClientAuth)
                .unwrap()
        });
    });

    let opts = ValidatorOptions {
        cache_capacity: 64,
        ..Default::default()
    };
    let cached = ChainValidator::with_options([f.root.clone()], opts).unwrap();
    cached
        .verify(&f.leaves[0], &chain, f.now, Purpose::ClientAuth)
        .unwrap();
    g.bench_function("cached", |b| {
        b.iter(|| {
            i = (i + 1) % LEAVES;
            cached
                .verify(black_box(&f.leaves[i]), &chain, f.now, Purpose::ClientAuth)
                .unwrap()
        });
    });

    // The bare primitive: one P-256 signature check with a pre-parsed key.
    let msg = b"ferrohub benchmark message";
    let kp = aws_lc_rs::signature::EcdsaKeyPair::generate(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
    )
    .unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let sig = kp.sign(&rng, msg).unwrap();
    use aws_lc_rs::signature::KeyPair as _;
    let public = aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        kp.public_key().as_ref(),
    )
    .unwrap();
    g.bench_function("p256_verify", |b| {
        b.iter(|| {
            public
                .verify_sig(black_box(msg), black_box(sig.as_ref()))
                .unwrap()
        });
    });
    {
        use x509_parser::prelude::FromDer;
        let (_, ix) = x509_parser::certificate::X509Certificate::from_der(f.inter.der()).unwrap();
        let ikey = aws_lc_rs::signature::ParsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            &ix.public_key().subject_public_key.data,
        )
        .unwrap();
        let parsed: Vec<_> = f
            .leaves
            .iter()
            .map(|l| {
                x509_parser::certificate::X509Certificate::from_der(l.der())
                    .unwrap()
                    .1
            })
            .collect();
        // One P-256 check per leaf over 256 different leaves: what the chain bench really pays
        // per signature (repeating one signature, as `openssl speed` does, is a few % faster).
        g.bench_function("p256_verify_rotating", |b| {
            b.iter(|| {
                i = (i + 1) % LEAVES;
                let x = &parsed[i];
                ikey.verify_sig(x.tbs_certificate.as_ref(), &x.signature_value.data)
                    .unwrap()
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
