//! Errors for loading and building certificates and keys.
//!
//! Chain-validation failures have their own type, [`crate::verify::ChainError`], because they name
//! the certificate that failed and rank competing reasons.

/// A failure to parse, load or build PKI material.
///
/// Every variant says what was wrong in words an operator can act on; the caller adds the file name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The input holds no PEM block of the expected kind.
    #[error("no {expected} found (expected a PEM block labelled {expected})")]
    NoPemBlock {
        /// The PEM label that was looked for, e.g. `CERTIFICATE`.
        expected: &'static str,
    },
    /// The PEM armour itself is broken.
    #[error("malformed PEM: {0}")]
    BadPem(String),
    /// A certificate's DER could not be parsed.
    #[error("not a valid X.509 certificate: {0}")]
    BadCertificate(String),
    /// A private key is password-protected; ferrohub needs plaintext keys (protect them with file modes or keyd).
    #[error(
        "the private key is encrypted (ENCRYPTED PRIVATE KEY / Proc-Type: ENCRYPTED); decrypt it first, e.g. `openssl pkey -in KEY -out KEY.plain`"
    )]
    EncryptedKey,
    /// A private key could not be parsed or uses an algorithm ferrohub does not support.
    #[error("unsupported or malformed private key: {0}")]
    BadKey(String),
    /// The key algorithm name is not one ferrohub knows.
    #[error("unknown key algorithm {0:?}; use one of: p256, p384, rsa2048, rsa4096")]
    UnknownAlgorithm(String),
    /// The private key is not the one whose public half is in the certificate.
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
    /// The issuer certificate cannot sign certificates.
    #[error("issuer {subject} is not a CA: {reason}")]
    IssuerNotCa {
        /// The issuer's subject.
        subject: String,
        /// Why it cannot sign (no basicConstraints CA, no keyCertSign, pathLen 0 for a CA below it).
        reason: String,
    },
    /// An identifier (device id, module id, CN) is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// What kind of name (device id, host name, ...).
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The requested validity is impossible (zero days, overflow, or past the issuer's end).
    #[error("invalid validity: {0}")]
    BadValidity(String),
    /// Certificate generation failed inside the signing library.
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        PkiError::Generate(e.to_string())
    }
}
