//! Proof of possession for CA certificates (the hub's upload-and-verify flow).
//!
//! The hub hands out a random verification code; the CA's owner issues a certificate whose CN is
//! that code with the CA's private key (`ferrohub certs verification-cert`); the hub checks the
//! signature with the uploaded CA's public key, the CN, and the validity.

use time::OffsetDateTime;

use crate::cert::Certificate;
use crate::verify::{ChainError, ChainValidator, Purpose};

/// Why a proof-of-possession certificate was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PopError {
    /// The certificate's CN is not the outstanding verification code.
    #[error("the certificate's CN {found:?} is not the verification code")]
    WrongCode {
        /// The CN that was presented.
        found: String,
    },
    /// The certificate was not signed by the CA's key, or is not valid now.
    #[error("not signed by the CA being verified: {0}")]
    NotSignedByCa(ChainError),
    /// The CA certificate itself cannot serve as a trust anchor.
    #[error("the CA certificate is unusable: {0}")]
    BadCa(ChainError),
}

/// A fresh verification code: 24 random bytes as 48 upper-case hex digits.
pub fn new_verification_code() -> Result<String, crate::PkiError> {
    let mut bytes = [0u8; 24];
    crate::random_fill(&mut bytes)?;
    Ok(hex::encode_upper(bytes))
}

/// Checks that `proof` has CN = `code` and was signed by `ca`'s key, and is valid at `at`.
pub fn verify_possession(
    ca: &Certificate,
    proof: &Certificate,
    code: &str,
    at: OffsetDateTime,
) -> Result<(), PopError> {
    let cn = proof.common_name().unwrap_or_default();
    if cn != code {
        return Err(PopError::WrongCode { found: cn });
    }
    let validator = ChainValidator::new([ca.clone()]).map_err(PopError::BadCa)?;
    validator
        .verify(proof, &[], at, Purpose::Any)
        .map_err(PopError::NotSignedByCa)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertRequest, KeyAlgorithm, PrivateKey, Profile, Signer, issue};

    #[test]
    fn proof_must_match_code_and_key() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let ca_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let ca = issue(&CertRequest::new(Profile::RootCa, "CA", now), &ca_key, None).unwrap();
        let code = new_verification_code().unwrap();
        assert_eq!(code.len(), 48);
        let k = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let signer = Signer {
            cert: &ca,
            key: &ca_key,
        };
        let proof = issue(
            &CertRequest::new(Profile::Verification, code.clone(), now),
            &k,
            Some(signer),
        )
        .unwrap();
        verify_possession(&ca, &proof, &code, now).unwrap();
        assert!(matches!(
            verify_possession(&ca, &proof, "OTHER", now),
            Err(PopError::WrongCode { .. })
        ));
        // Same CN, signed by a different CA with the same name: refused.
        let other_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let other = issue(
            &CertRequest::new(Profile::RootCa, "CA", now),
            &other_key,
            None,
        )
        .unwrap();
        let forged = issue(
            &CertRequest::new(Profile::Verification, code.clone(), now),
            &k,
            Some(Signer {
                cert: &other,
                key: &other_key,
            }),
        )
        .unwrap();
        assert!(matches!(
            verify_possession(&ca, &forged, &code, now),
            Err(PopError::NotSignedByCa(_))
        ));
    }
}
