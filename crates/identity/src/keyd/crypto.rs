//! The mechanisms: HMAC-SHA256, key derivation, AES-256-GCM (aziot's "AEAD" with the version-2
//! ciphertext format), ECDSA over a caller's digest, and the public parameters of key pairs.

use std::str::FromStr;

use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use aws_lc_rs::{aead, digest, hmac};
use base64::Engine as _;
use pki::KeyAlgorithm;

use super::KeyError;

/// Bytes of an AES-256-GCM nonce (the caller's `iv`).
pub const IV_LEN: usize = 12;
/// Bytes of the GCM tag.
const TAG_LEN: usize = 16;
/// The leading version byte of a ciphertext: 2 = ciphertext then tag, 1 = tag then ciphertext.
const V2: u8 = 2;
const V1: u8 = 1;

fn invalid(name: &'static str, message: impl Into<String>) -> KeyError {
    KeyError::InvalidParameter {
        name,
        message: message.into(),
    }
}

/// The algorithm to generate from a preference list like `ec-p256:rsa-2048:*`: the first
/// component that names a supported algorithm (`ec-p256`, `rsa-2048`, `rsa-4096`; `*` means
/// P-256); unknown components are skipped, and a list with none known means `*`.
pub fn choose_algorithm(preferences: &str) -> KeyAlgorithm {
    preferences
        .split(':')
        .find_map(|c| match c.trim() {
            "ec-p256" | "*" => Some(KeyAlgorithm::P256),
            "rsa-2048" => Some(KeyAlgorithm::Rsa2048),
            "rsa-4096" => Some(KeyAlgorithm::Rsa4096),
            _ => None,
        })
        .unwrap_or(KeyAlgorithm::P256)
}

/// HMAC-SHA256 of `message` with `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message)
}

/// A derived key: `HMAC-SHA256(base, data)`, 32 bytes.
pub fn derive(base: &[u8], data: &[u8]) -> Vec<u8> {
    hmac_sha256(base, data).as_ref().to_vec()
}

fn aead_key(key: &[u8], iv: &[u8]) -> Result<(aead::LessSafeKey, aead::Nonce), KeyError> {
    let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, key).map_err(|_| {
        invalid(
            "keyHandle",
            format!("AEAD needs a 32-byte key, this one has {} bytes", key.len()),
        )
    })?;
    let nonce = aead::Nonce::try_assume_unique_for_key(iv)
        .map_err(|_| invalid("iv", format!("must be {IV_LEN} bytes, got {}", iv.len())))?;
    Ok((aead::LessSafeKey::new(unbound), nonce))
}

/// AES-256-GCM with the caller's 12-byte `iv`: `[2] || ciphertext || tag`.
pub fn aead_encrypt(
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let (key, nonce) = aead_key(key, iv)?;
    let mut out = Vec::with_capacity(1 + plaintext.len() + TAG_LEN);
    out.push(V2);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(nonce, aead::Aad::from(aad), &mut out[1..])
        .map_err(|_| KeyError::Crypto("AES-GCM encryption failed".into()))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens a version-2 (`[2] || ciphertext || tag`) or version-1 (`[1] || tag || ciphertext`)
/// ciphertext; a wrong key, iv, aad or any changed byte is refused.
pub fn aead_decrypt(
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let (key, nonce) = aead_key(key, iv)?;
    let bad = || invalid("ciphertext", "cannot be decrypted");
    let (&version, rest) = ciphertext.split_first().ok_or_else(bad)?;
    if rest.len() < TAG_LEN {
        return Err(bad());
    }
    let mut buf = match version {
        V2 => rest.to_vec(),
        V1 => {
            let (tag, ct) = rest.split_at(TAG_LEN);
            [ct, tag].concat()
        }
        _ => {
            return Err(invalid(
                "ciphertext",
                format!("unknown format version {version}"),
            ));
        }
    };
    let len = key
        .open_in_place(nonce, aead::Aad::from(aad), &mut buf)
        .map_err(|_| bad())?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// A public parameter of a key pair (`POST /parameters/{name}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parameter {
    /// `ECDSA` or `RSA`.
    Algorithm,
    /// The DER encoding of the curve's OID.
    EcCurveOid,
    /// The uncompressed public point.
    EcPoint,
    /// Big-endian, no leading zeros.
    RsaModulus,
    /// Big-endian, no leading zeros.
    RsaExponent,
}

impl FromStr for Parameter {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Ok(match s {
            "algorithm" => Self::Algorithm,
            "ec-curve-oid" => Self::EcCurveOid,
            "ec-point" => Self::EcPoint,
            "rsa-modulus" => Self::RsaModulus,
            "rsa-exponent" => Self::RsaExponent,
            other => {
                return Err(invalid(
                    "parameterName",
                    format!("unknown parameter {other:?}"),
                ));
            }
        })
    }
}

/// DER of 1.2.840.10045.3.1.7 (prime256v1).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of 1.3.132.0.34 (secp384r1).
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// A key pair ready for signing and parameter queries.
pub enum LoadedKeyPair {
    Ec {
        key: EcdsaKeyPair,
        digest: &'static digest::Algorithm,
        oid: &'static [u8],
    },
    Rsa(RsaKeyPair),
}

/// The DER inside a PEM document's first block.
fn pem_der(pem: &str) -> Result<Vec<u8>, KeyError> {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| KeyError::Crypto(format!("key pair PEM: {e}")))
}

impl LoadedKeyPair {
    pub fn load(key: &pki::PrivateKey) -> Result<Self, KeyError> {
        let der = pem_der(&key.to_pem())?;
        let ec = |alg, digest, oid| {
            EcdsaKeyPair::from_private_key_der(alg, &der)
                .ok()
                .map(|key| Self::Ec { key, digest, oid })
        };
        match key.algorithm_name() {
            "ECDSA P-256" => ec(
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &digest::SHA256,
                P256_OID,
            ),
            "ECDSA P-384" => ec(
                &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                &digest::SHA384,
                P384_OID,
            ),
            "RSA" => RsaKeyPair::from_pkcs8(&der)
                .or_else(|_| RsaKeyPair::from_der(&der))
                .ok()
                .map(Self::Rsa),
            _ => None,
        }
        .ok_or_else(|| {
            KeyError::Crypto(format!(
                "{} key pairs are not supported",
                key.algorithm_name()
            ))
        })
    }

    /// A DER ECDSA signature over `digest`, which the caller computed. As ECDSA prescribes, a
    /// digest longer than the curve's order is cut to its leftmost bytes; a shorter one is the
    /// same number with leading zeros.
    pub fn sign_digest(&self, input: &[u8]) -> Result<Vec<u8>, KeyError> {
        let Self::Ec { key, digest, .. } = self else {
            return Err(invalid("mechanism", "ECDSA needs an EC key pair"));
        };
        if input.is_empty() {
            return Err(invalid("digest", "empty"));
        }
        let n = digest.output_len();
        let mut padded = [0u8; digest::MAX_OUTPUT_LEN];
        let used = input.len().min(n);
        padded[n - used..n].copy_from_slice(&input[..used]);
        let d = digest::Digest::import_less_safe(&padded[..n], digest)
            .map_err(|_| KeyError::Crypto("digest import failed".into()))?;
        let sig = key
            .sign_digest(&d)
            .map_err(|_| KeyError::Crypto("ECDSA signing failed".into()))?;
        Ok(sig.as_ref().to_vec())
    }

    /// The value of `p`: the algorithm's name, or bytes.
    pub fn parameter(&self, p: Parameter) -> Result<ParameterValue, KeyError> {
        let wrong = || {
            invalid(
                "parameterName",
                format!("{p:?} does not apply to this key pair"),
            )
        };
        Ok(match (self, p) {
            (Self::Ec { .. }, Parameter::Algorithm) => ParameterValue::Name("ECDSA"),
            (Self::Rsa(_), Parameter::Algorithm) => ParameterValue::Name("RSA"),
            (Self::Ec { oid, .. }, Parameter::EcCurveOid) => ParameterValue::Bytes(oid.to_vec()),
            (Self::Ec { key, .. }, Parameter::EcPoint) => {
                ParameterValue::Bytes(key.public_key().as_ref().to_vec())
            }
            (Self::Rsa(k), Parameter::RsaModulus) => ParameterValue::Bytes(
                k.public_key()
                    .modulus()
                    .big_endian_without_leading_zero()
                    .to_vec(),
            ),
            (Self::Rsa(k), Parameter::RsaExponent) => ParameterValue::Bytes(
                k.public_key()
                    .exponent()
                    .big_endian_without_leading_zero()
                    .to_vec(),
            ),
            _ => return Err(wrong()),
        })
    }
}

/// A parameter's value: `algorithm` is a name, the others bytes (base64 on the wire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParameterValue {
    Name(&'static str),
    Bytes(Vec<u8>),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn algorithm_preferences() {
        assert_eq!(choose_algorithm("ec-p256:rsa-2048:*"), KeyAlgorithm::P256);
        assert_eq!(choose_algorithm("rsa-2048:*"), KeyAlgorithm::Rsa2048);
        assert_eq!(choose_algorithm("rsa-4096"), KeyAlgorithm::Rsa4096);
        assert_eq!(choose_algorithm("ed25519:rsa-2048"), KeyAlgorithm::Rsa2048);
        assert_eq!(choose_algorithm("ed25519"), KeyAlgorithm::P256);
        assert_eq!(choose_algorithm(""), KeyAlgorithm::P256);
        assert_eq!(choose_algorithm("*"), KeyAlgorithm::P256);
    }

    #[test]
    fn derived_key_is_hmac_of_the_data() {
        let base = [7u8; 32];
        let independent = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &base),
            b"mod:gen:primary",
        );
        let derived = derive(&base, b"mod:gen:primary");
        assert_eq!(derived, independent.as_ref());
        assert_eq!(derived.len(), 32);
        assert_ne!(derive(&base, b"other"), derived);
    }

    #[test]
    fn aead_round_trip_and_tamper_detection() {
        let (key, iv) = ([9u8; 32], [1u8; IV_LEN]);
        let ct = aead_encrypt(&key, &iv, b"aad", b"hello keyd").unwrap();
        assert_eq!(ct[0], V2);
        assert_eq!(ct.len(), 1 + 10 + TAG_LEN);
        assert_eq!(aead_decrypt(&key, &iv, b"aad", &ct).unwrap(), b"hello keyd");
        // Version 1: tag first.
        let mut v1 = vec![V1];
        v1.extend_from_slice(&ct[ct.len() - TAG_LEN..]);
        v1.extend_from_slice(&ct[1..ct.len() - TAG_LEN]);
        assert_eq!(aead_decrypt(&key, &iv, b"aad", &v1).unwrap(), b"hello keyd");
        for i in 1..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert!(aead_decrypt(&key, &iv, b"aad", &bad).is_err(), "byte {i}");
        }
        assert!(aead_decrypt(&key, &iv, b"other", &ct).is_err());
        assert!(aead_decrypt(&key, &[2u8; IV_LEN], b"aad", &ct).is_err());
        assert!(aead_decrypt(&[8u8; 32], &iv, b"aad", &ct).is_err());
        assert!(aead_decrypt(&key, &iv, b"aad", &ct[..5]).is_err());
        assert!(matches!(
            aead_encrypt(&key, &[0u8; 8], b"", b"x"),
            Err(KeyError::InvalidParameter { name: "iv", .. })
        ));
        assert!(aead_encrypt(&[1u8; 16], &iv, b"", b"x").is_err());
        let empty = aead_encrypt(&key, &iv, b"", b"").unwrap();
        assert_eq!(aead_decrypt(&key, &iv, b"", &empty).unwrap(), b"");
    }

    #[test]
    fn ecdsa_signatures_verify_with_the_public_point() {
        let pk = pki::PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let loaded = LoadedKeyPair::load(&pk).unwrap();
        let message = b"to be signed";
        let d = digest::digest(&digest::SHA256, message);
        let sig = loaded.sign_digest(d.as_ref()).unwrap();
        let ParameterValue::Bytes(point) = loaded.parameter(Parameter::EcPoint).unwrap() else {
            panic!("ec-point is bytes");
        };
        assert_eq!(point, pk.public_key_raw());
        assert_eq!(point.len(), 65);
        let public = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &point);
        public.verify(message, &sig).unwrap();
        assert!(public.verify(b"another message", &sig).is_err());
        // A SHA-384 digest is cut to its leftmost 32 bytes.
        let d384 = digest::digest(&digest::SHA384, message);
        let sig = loaded.sign_digest(d384.as_ref()).unwrap();
        let cut = digest::Digest::import_less_safe(&d384.as_ref()[..32], &digest::SHA256).unwrap();
        public.verify_digest(&cut, &sig).unwrap();
        assert_eq!(
            loaded.parameter(Parameter::Algorithm).unwrap(),
            ParameterValue::Name("ECDSA")
        );
        assert_eq!(
            loaded.parameter(Parameter::EcCurveOid).unwrap(),
            ParameterValue::Bytes(P256_OID.to_vec())
        );
        assert!(loaded.parameter(Parameter::RsaModulus).is_err());
    }

    #[test]
    fn rsa_parameters() {
        let pk = pki::PrivateKey::generate(KeyAlgorithm::Rsa2048).unwrap();
        let loaded = LoadedKeyPair::load(&pk).unwrap();
        assert_eq!(
            loaded.parameter(Parameter::Algorithm).unwrap(),
            ParameterValue::Name("RSA")
        );
        let ParameterValue::Bytes(n) = loaded.parameter(Parameter::RsaModulus).unwrap() else {
            panic!("bytes");
        };
        assert_eq!(n.len(), 256);
        assert_eq!(
            loaded.parameter(Parameter::RsaExponent).unwrap(),
            ParameterValue::Bytes(vec![1, 0, 1])
        );
        assert!(loaded.sign_digest(&[0; 32]).is_err());
        assert!(loaded.parameter(Parameter::EcPoint).is_err());
    }
}
