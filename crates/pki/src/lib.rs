//! # ferrohub PKI
//!
//! Certificates for device identity, without I/O: generate keys, issue certificates with safe
//! defaults, parse PEM/DER chains, compute thumbprints, and validate chains with a report that
//! names the failing certificate.
//!
//! ```text
//!  PrivateKey::generate ─► issue(CertRequest, key, Signer) ─► Certificate ─► .to_pem() / .info()
//!                                                                │
//!  ChainValidator::new(anchors) ─► verify(leaf, intermediates, now, Purpose) ─► VerifiedPath
//!                                                                           └► ChainError { index, reason }
//! ```
//!
//! Time is always passed in (`now`, `at`): nothing here reads the clock, so expiry is testable.
//!
//! ```
//! use pki::{CertRequest, ChainValidator, PrivateKey, Profile, Purpose, Signer, KeyAlgorithm, issue};
//! let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
//! let root_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
//! let root = issue(&CertRequest::new(Profile::RootCa, "Root", now), &root_key, None).unwrap();
//! let dev_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
//! let signer = Signer { cert: &root, key: &root_key };
//! let dev = issue(&CertRequest::new(Profile::DeviceClient, "dev1", now), &dev_key, Some(signer)).unwrap();
//! let v = ChainValidator::new([root]).unwrap();
//! assert!(v.verify(&dev, &[], now, Purpose::ClientAuth).is_ok());
//! assert_eq!(dev.common_name().as_deref(), Some("dev1"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cert;
pub mod csr;
mod error;
mod inspect;
mod issue;
mod keys;
pub mod names;
pub mod pem;
pub mod pop;
pub mod verify;

pub use cert::{Certificate, normalize_thumbprint};
pub use error::PkiError;
pub use inspect::{CertInfo, ExtensionInfo};
pub use issue::{CertRequest, Profile, Signer, issue};
pub use keys::{KeyAlgorithm, PrivateKey};
pub use verify::{
    CacheStats, ChainError, ChainValidator, Purpose, Reason, ValidatorOptions, VerifiedPath,
};

/// Fills `buf` from the operating system's secure random source (for keys, codes and ids).
pub fn random_fill(buf: &mut [u8]) -> Result<(), PkiError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| PkiError::Generate("the random source failed".into()))
}
