//! Private keys: generation, PEM loading and the public-key match check.

use std::fmt;
use std::str::FromStr;

use rcgen::{PublicKeyData, RsaKeySize};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::error::PkiError;

/// The key algorithms the toolkit generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 signatures (the default: small, fast, universally supported).
    #[default]
    P256,
    /// ECDSA on NIST P-384 with SHA-384 signatures.
    P384,
    /// RSA 2048-bit, PKCS#1 v1.5 SHA-256 signatures.
    Rsa2048,
    /// RSA 4096-bit, PKCS#1 v1.5 SHA-256 signatures.
    Rsa4096,
}

impl KeyAlgorithm {
    /// All algorithms, in the order `--help` lists them.
    pub const ALL: [KeyAlgorithm; 4] = [Self::P256, Self::P384, Self::Rsa2048, Self::Rsa4096];

    /// The short name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::P256 => "p256",
            Self::P384 => "p384",
            Self::Rsa2048 => "rsa2048",
            Self::Rsa4096 => "rsa4096",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "p256" | "ecdsap256" | "prime256v1" | "secp256r1" => Ok(Self::P256),
            "p384" | "ecdsap384" | "secp384r1" => Ok(Self::P384),
            "rsa2048" | "rsa" => Ok(Self::Rsa2048),
            "rsa4096" => Ok(Self::Rsa4096),
            _ => Err(PkiError::UnknownAlgorithm(s.to_owned())),
        }
    }
}

/// A private key held in memory. Its `Debug` output never shows key material.
pub struct PrivateKey {
    inner: rcgen::KeyPair,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm_name())
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl PrivateKey {
    /// Generates a fresh key with the operating system's random source.
    pub fn generate(alg: KeyAlgorithm) -> Result<Self, PkiError> {
        let inner = match alg {
            KeyAlgorithm::P256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyAlgorithm::P384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyAlgorithm::Rsa2048 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
            }
            KeyAlgorithm::Rsa4096 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096)
            }
        }?;
        Ok(Self { inner })
    }

    /// Loads a plaintext PKCS#8, SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) key from PEM.
    ///
    /// Encrypted keys are refused with [`PkiError::EncryptedKey`] rather than a parse error, so the
    /// operator learns what to do.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        if pem.contains("ENCRYPTED PRIVATE KEY") || pem.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(PkiError::EncryptedKey);
        }
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => PkiError::NoPemBlock {
                expected: "PRIVATE KEY",
            },
            other => PkiError::BadPem(other.to_string()),
        })?;
        let inner =
            rcgen::KeyPair::try_from(&der).map_err(|e| PkiError::BadKey(simplify_key_error(&e)))?;
        Ok(Self { inner })
    }

    /// The key as a PKCS#8 PEM document (`-----BEGIN PRIVATE KEY-----`).
    pub fn to_pem(&self) -> String {
        self.inner.serialize_pem()
    }

    /// The raw public key (the contents of the SubjectPublicKeyInfo bit string).
    pub fn public_key_raw(&self) -> &[u8] {
        self.inner.der_bytes()
    }

    /// A human-readable algorithm name, e.g. `ECDSA P-256`.
    pub fn algorithm_name(&self) -> &'static str {
        let alg = self.inner.algorithm();
        if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            "ECDSA P-256"
        } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            "ECDSA P-384"
        } else if alg == &rcgen::PKCS_ECDSA_P521_SHA512 {
            "ECDSA P-521"
        } else if alg == &rcgen::PKCS_ED25519 {
            "Ed25519"
        } else {
            "RSA"
        }
    }

    /// Checks that this key is the private half of the certificate's public key.
    pub fn matches(&self, cert: &crate::Certificate) -> Result<(), PkiError> {
        if cert.public_key_raw() == self.public_key_raw() {
            Ok(())
        } else {
            Err(PkiError::KeyMismatch)
        }
    }

    pub(crate) fn signing_key(&self) -> &rcgen::KeyPair {
        &self.inner
    }
}

fn simplify_key_error(e: &rcgen::Error) -> String {
    match e {
        rcgen::Error::CouldNotParseKeyPair => {
            "not a P-256, P-384, P-521, Ed25519 or RSA key in PKCS#8, SEC1 or PKCS#1 form".into()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for alg in KeyAlgorithm::ALL {
            assert_eq!(alg.name().parse::<KeyAlgorithm>().unwrap(), alg);
        }
        assert!(matches!(
            "dsa1024".parse::<KeyAlgorithm>(),
            Err(PkiError::UnknownAlgorithm(_))
        ));
    }

    #[test]
    fn generated_keys_reload_from_pem() {
        for alg in [
            KeyAlgorithm::P256,
            KeyAlgorithm::P384,
            KeyAlgorithm::Rsa2048,
        ] {
            let key = PrivateKey::generate(alg).unwrap();
            let again = PrivateKey::from_pem(&key.to_pem()).unwrap();
            assert_eq!(key.public_key_raw(), again.public_key_raw(), "{alg}");
        }
    }

    #[test]
    fn debug_redacts_key_material() {
        let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains(&key.to_pem()[30..60]));
    }

    #[test]
    fn encrypted_and_garbage_keys_are_named() {
        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pem(enc),
            Err(PkiError::EncryptedKey)
        ));
        assert!(matches!(
            PrivateKey::from_pem("hello"),
            Err(PkiError::NoPemBlock { .. })
        ));
        let bad = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pem(bad),
            Err(PkiError::BadKey(_))
        ));
    }
}
