//! Chain-validation failures: which certificate failed, and why.

use std::fmt;

use time::OffsetDateTime;

/// Why a certificate in a chain was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The certificate's notAfter is before the checking time.
    Expired {
        /// End of validity.
        not_after: OffsetDateTime,
        /// The time validation was done at.
        at: OffsetDateTime,
    },
    /// The certificate's notBefore is after the checking time.
    NotYetValid {
        /// Start of validity.
        not_before: OffsetDateTime,
        /// The time validation was done at.
        at: OffsetDateTime,
    },
    /// No given intermediate or trust anchor has the issuer's name (and key id).
    UnknownIssuer,
    /// The certificate signs itself but is not one of the trust anchors.
    SelfSignedNotTrusted,
    /// The issuer's key did not verify the signature.
    BadSignature,
    /// The signature algorithm or key type is not supported (or is too weak, like SHA-1).
    UnsupportedAlgorithm(String),
    /// The issuer is not a CA (no basicConstraints CA:TRUE).
    NotCa,
    /// The issuer has a keyUsage without keyCertSign.
    MissingKeyCertSign,
    /// The issuer's pathLen allows fewer CA certificates below it than the chain has.
    PathLenExceeded {
        /// The issuer's pathLen.
        path_len: u32,
        /// CA certificates below the issuer in this chain.
        cas_below: usize,
    },
    /// The extendedKeyUsage does not allow the requested purpose.
    WrongEku {
        /// The purpose that was required.
        required: &'static str,
        /// What the certificate allows.
        present: Vec<String>,
    },
    /// The keyUsage does not allow the requested purpose.
    WrongKeyUsage(&'static str),
    /// A critical extension ferrohub does not process.
    UnsupportedCriticalExtension(String),
    /// The chain is longer than the depth limit.
    DepthExceeded(usize),
    /// Too many signature checks while building paths (defends against crafted pools).
    BudgetExceeded,
    /// The certificate could not be parsed.
    Malformed(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Expired { not_after, at } => {
                write!(f, "expired: not valid after {not_after} (checked at {at})")
            }
            Self::NotYetValid { not_before, at } => {
                write!(
                    f,
                    "not yet valid: not valid before {not_before} (checked at {at})"
                )
            }
            Self::UnknownIssuer => f.write_str(
                "unable to find its issuer among the given intermediates and trust anchors",
            ),
            Self::SelfSignedNotTrusted => {
                f.write_str("self-signed certificate that is not a trust anchor")
            }
            Self::BadSignature => f.write_str("signature does not verify with the issuer's key"),
            Self::UnsupportedAlgorithm(a) => write!(f, "unsupported algorithm {a}"),
            Self::NotCa => f.write_str("used as an issuer but is not a CA (basicConstraints)"),
            Self::MissingKeyCertSign => {
                f.write_str("used as an issuer but its keyUsage lacks keyCertSign")
            }
            Self::PathLenExceeded {
                path_len,
                cas_below,
            } => write!(
                f,
                "pathLen {path_len} exceeded: {cas_below} CA certificate(s) below it"
            ),
            Self::WrongEku { required, present } => write!(
                f,
                "extendedKeyUsage does not allow {required} (has: {})",
                present.join(", ")
            ),
            Self::WrongKeyUsage(required) => write!(f, "keyUsage does not allow {required}"),
            Self::UnsupportedCriticalExtension(oid) => {
                write!(f, "unsupported critical extension {oid}")
            }
            Self::DepthExceeded(max) => write!(f, "chain longer than {max} certificates"),
            Self::BudgetExceeded => f.write_str("too many candidate paths (signature budget)"),
            Self::Malformed(e) => write!(f, "malformed certificate: {e}"),
        }
    }
}

/// A refused chain: the certificate at `index` (0 = the leaf, counting up the path) and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("certificate #{index} ({subject}): {reason}")]
pub struct ChainError {
    /// Position in the path, 0 being the leaf.
    pub index: usize,
    /// The failing certificate's subject.
    pub subject: String,
    /// Why it failed.
    pub reason: Reason,
}

impl ChainError {
    /// How useful the error is compared with one from another candidate path: failures further up
    /// a path mean more of it chained, so they explain more.
    pub(crate) fn rank(&self) -> usize {
        let specific = !matches!(self.reason, Reason::UnknownIssuer);
        self.index * 2 + usize::from(specific)
    }
}
