//! Signature algorithms and issuer public keys.

use aws_lc_rs::signature::{self, ParsedPublicKey, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::der_parser::oid::Oid;
use x509_parser::oid_registry::{
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
};
use x509_parser::prelude::X509Certificate;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::error::Reason;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// The kinds of issuer key the validator can check signatures with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    P256,
    P384,
    Rsa,
    Ed25519,
}

/// A (signature algorithm, key type) pair aws-lc-rs can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SigAlg {
    EcdsaP256Sha256,
    EcdsaP256Sha384,
    EcdsaP384Sha256,
    EcdsaP384Sha384,
    RsaSha256,
    RsaSha384,
    RsaSha512,
    Ed25519,
}

impl SigAlg {
    fn aws(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Self::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
            Self::EcdsaP256Sha384 => &signature::ECDSA_P256_SHA384_ASN1,
            Self::EcdsaP384Sha256 => &signature::ECDSA_P384_SHA256_ASN1,
            Self::EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_ASN1,
            Self::RsaSha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::RsaSha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::RsaSha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::Ed25519 => &signature::ED25519,
        }
    }

    /// The algorithm a key of this kind most often signs with (pre-parsed for anchors and cache).
    fn natural(kind: KeyKind) -> Self {
        match kind {
            KeyKind::P256 => Self::EcdsaP256Sha256,
            KeyKind::P384 => Self::EcdsaP384Sha384,
            KeyKind::Rsa => Self::RsaSha256,
            KeyKind::Ed25519 => Self::Ed25519,
        }
    }

    /// Picks the algorithm for a child's signature OID and the issuer's key kind.
    /// Compares OIDs directly: this runs once per signature check, on the hot path.
    pub(crate) fn select(sig: &Oid<'_>, kind: KeyKind) -> Result<Self, Reason> {
        use KeyKind::{Ed25519, P256, P384, Rsa};
        let found = if *sig == OID_SIG_ECDSA_WITH_SHA256 {
            match kind {
                P256 => Some(Self::EcdsaP256Sha256),
                P384 => Some(Self::EcdsaP384Sha256),
                _ => None,
            }
        } else if *sig == OID_SIG_ECDSA_WITH_SHA384 {
            match kind {
                P256 => Some(Self::EcdsaP256Sha384),
                P384 => Some(Self::EcdsaP384Sha384),
                _ => None,
            }
        } else if kind == Rsa && *sig == OID_PKCS1_SHA256WITHRSA {
            Some(Self::RsaSha256)
        } else if kind == Rsa && *sig == OID_PKCS1_SHA384WITHRSA {
            Some(Self::RsaSha384)
        } else if kind == Rsa && *sig == OID_PKCS1_SHA512WITHRSA {
            Some(Self::RsaSha512)
        } else if kind == Ed25519 && *sig == OID_SIG_ED25519 {
            Some(Self::Ed25519)
        } else {
            None
        };
        found.ok_or_else(|| unsupported(&sig.to_id_string(), kind))
    }
}

fn unsupported(oid: &str, kind: KeyKind) -> Reason {
    match oid {
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" | "1.2.840.10045.4.1" => {
            Reason::UnsupportedAlgorithm("SHA-1 signature (too weak to accept)".into())
        }
        oid => Reason::UnsupportedAlgorithm(format!(
            "signature {} with a {kind:?} issuer key",
            crate::inspect::oid_name(oid)
        )),
    }
}

/// An issuer's public key, with its most likely algorithm pre-parsed so repeated verifications
/// skip key decoding (anchors and cached intermediates).
pub(crate) struct IssuerKey {
    kind: KeyKind,
    raw: Vec<u8>,
    parsed: Option<(SigAlg, ParsedPublicKey)>,
}

impl IssuerKey {
    /// Reads the key from a SubjectPublicKeyInfo; `prepare` pre-parses it for reuse.
    pub(crate) fn from_spki(
        spki: &SubjectPublicKeyInfo<'_>,
        prepare: bool,
    ) -> Result<Self, Reason> {
        let kind = key_kind(spki)?;
        let raw = spki.subject_public_key.data.to_vec();
        let parsed = if prepare {
            let alg = SigAlg::natural(kind);
            ParsedPublicKey::new(alg.aws(), &raw)
                .ok()
                .map(|key| (alg, key))
        } else {
            None
        };
        Ok(Self { kind, raw, parsed })
    }

    /// Verifies `child`'s signature with this key.
    pub(crate) fn verify(&self, child: &X509Certificate<'_>) -> Result<(), Reason> {
        let alg = SigAlg::select(&child.signature_algorithm.algorithm, self.kind)?;
        let tbs = child.tbs_certificate.as_ref();
        let sig = &child.signature_value.data;
        let ok = match &self.parsed {
            Some((natural, key)) if *natural == alg => key.verify_sig(tbs, sig).is_ok(),
            _ => UnparsedPublicKey::new(alg.aws(), &self.raw)
                .verify(tbs, sig)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(Reason::BadSignature)
        }
    }
}

/// The named-curve OID of an EC SubjectPublicKeyInfo, dotted.
pub(crate) fn ec_curve_oid(spki: &SubjectPublicKeyInfo<'_>) -> Option<String> {
    spki.algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string())
}

/// The key kind of a SubjectPublicKeyInfo.
pub(crate) fn key_kind(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyKind, Reason> {
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        OID_RSA => Ok(KeyKind::Rsa),
        OID_ED25519 => Ok(KeyKind::Ed25519),
        OID_EC_PUBLIC_KEY => {
            let curve = ec_curve_oid(spki);
            match curve.as_deref() {
                Some(OID_P256) => Ok(KeyKind::P256),
                Some(OID_P384) => Ok(KeyKind::P384),
                other => Err(Reason::UnsupportedAlgorithm(format!(
                    "EC curve {}",
                    other.unwrap_or("(none)")
                ))),
            }
        }
        other => Err(Reason::UnsupportedAlgorithm(format!("key type {other}"))),
    }
}
