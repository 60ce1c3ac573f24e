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

/// One DER TLV at the start of `b`: its tag, its content and what follows. Definite lengths of
/// up to four length bytes, as certificates use.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | usize::from(x));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// RFC 5280 §4.1.1.2: a certificate's outer `signatureAlgorithm` is the same AlgorithmIdentifier
/// as the `signature` field inside `tbsCertificate`. The outer one is not covered by the
/// signature, so without this check it could be altered and the certificate still verify.
pub(crate) fn algorithms_agree(der: &[u8]) -> bool {
    const SEQUENCE: u8 = 0x30;
    let pair = || {
        let (SEQUENCE, cert, _) = tlv(der)? else {
            return None;
        };
        let (SEQUENCE, tbs, after) = tlv(cert)? else {
            return None;
        };
        let (SEQUENCE, outer, _) = tlv(after)? else {
            return None;
        };
        // tbsCertificate: [0] version (optional), serialNumber, signature, ...
        let (tag, _, rest) = tlv(tbs)?;
        let (tag, rest) = if tag == 0xa0 {
            let (tag, _, rest) = tlv(rest)?;
            (tag, rest)
        } else {
            (tag, rest)
        };
        if tag != 0x02 {
            return None; // serialNumber
        }
        let (SEQUENCE, inner, _) = tlv(rest)? else {
            return None;
        };
        Some((inner, outer))
    };
    matches!(pair(), Some((inner, outer)) if inner == outer)
}

#[cfg(test)]
mod algorithm_tests {
    use super::*;
    use crate::{CertRequest, KeyAlgorithm, PrivateKey, Profile, issue};

    #[test]
    fn an_altered_outer_signature_algorithm_is_caught() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let cert = issue(&CertRequest::new(Profile::RootCa, "r", now), &key, None).unwrap();
        let der = cert.der();
        assert!(algorithms_agree(der));
        // The outer AlgorithmIdentifier is the 12 bytes before the signature BIT STRING; the
        // byte after its SEQUENCE header is the OID's tag.
        let (_, body, _) = tlv(der).unwrap();
        let (_, _, after_tbs) = tlv(body).unwrap();
        let at = der.len() - after_tbs.len() + 2;
        assert_eq!(der[at], 0x06, "the OID tag");
        let mut changed = der.to_vec();
        changed[at] = 0x00;
        assert!(!algorithms_agree(&changed));
        assert!(!algorithms_agree(&der[..der.len() - 1]));
        assert!(!algorithms_agree(b"\x30\x00"));
    }
}
