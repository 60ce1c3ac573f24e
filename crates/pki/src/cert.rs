//! Owned certificates: PEM/DER loading, names, thumbprints.

use std::fmt;

use aws_lc_rs::digest;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::PkiError;

/// One X.509 certificate, held as DER that is known to parse.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Certificate {
    der: CertificateDer<'static>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject())
            .field("sha256", &self.thumbprint_sha256())
            .finish()
    }
}

impl Certificate {
    /// Wraps DER bytes after checking that they parse as one complete certificate.
    pub fn from_der(der: impl Into<Vec<u8>>) -> Result<Self, PkiError> {
        let der: Vec<u8> = der.into();
        match X509Certificate::from_der(&der) {
            Ok(([], _)) => Ok(Self {
                der: CertificateDer::from(der),
            }),
            Ok(_) => Err(PkiError::BadCertificate(
                "trailing bytes after the certificate".into(),
            )),
            Err(e) => Err(PkiError::BadCertificate(e.to_string())),
        }
    }

    /// Wraps DER that the caller has already parsed successfully.
    pub(crate) fn from_parsed_der(der: &[u8]) -> Self {
        Self {
            der: CertificateDer::from(der.to_vec()),
        }
    }

    /// The first `CERTIFICATE` block of a PEM document.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        Self::chain_from_pem(pem)?
            .into_iter()
            .next()
            .ok_or(PkiError::NoPemBlock {
                expected: "CERTIFICATE",
            })
    }

    /// Every `CERTIFICATE` block of a PEM document, in file order (a "full chain" file).
    ///
    /// Fails when there is none, so an empty or wrong file is never mistaken for an empty chain.
    pub fn chain_from_pem(pem: &str) -> Result<Vec<Self>, PkiError> {
        let mut out = Vec::new();
        for item in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let der = item.map_err(|e| PkiError::BadPem(e.to_string()))?;
            out.push(Self::from_der(der.as_ref().to_vec())?);
        }
        if out.is_empty() {
            return Err(PkiError::NoPemBlock {
                expected: "CERTIFICATE",
            });
        }
        Ok(out)
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        self.der.as_ref()
    }

    /// The DER encoding as the type rustls wants.
    pub fn to_rustls(&self) -> CertificateDer<'static> {
        self.der.clone()
    }

    /// The PEM encoding (`-----BEGIN CERTIFICATE-----`).
    pub fn to_pem(&self) -> String {
        crate::pem::encode("CERTIFICATE", self.der())
    }

    /// The parsed view of the certificate.
    pub fn parsed(&self) -> X509Certificate<'_> {
        // Invariant: every constructor checked that the DER parses completely.
        X509Certificate::from_der(self.der())
            .map(|(_, c)| c)
            .expect("certificate DER was validated at construction")
    }

    /// The subject distinguished name in OpenSSL's one-line form, e.g. `CN=dev1`.
    pub fn subject(&self) -> String {
        self.parsed().subject().to_string()
    }

    /// The issuer distinguished name.
    pub fn issuer(&self) -> String {
        self.parsed().issuer().to_string()
    }

    /// The issuer's name when this certificate is not self-issued and none of `others` (DER, the
    /// rest of the chain a peer sent) is its issuer: the chain stops short at this certificate.
    pub fn missing_issuer(&self, others: &[&[u8]]) -> Option<String> {
        let issuer = self.issuer();
        let sent = |der: &&[u8]| {
            X509Certificate::from_der(der).is_ok_and(|(_, c)| c.subject().to_string() == issuer)
        };
        (issuer != self.subject() && !others.iter().any(sent)).then_some(issuer)
    }

    /// The first common name of the subject, if any.
    pub fn common_name(&self) -> Option<String> {
        let cert = self.parsed();
        let cn = cert.subject().iter_common_name().next()?;
        cn.as_str().ok().map(str::to_owned)
    }

    /// Upper-case hex SHA-1 over the DER: the "thumbprint" IoT Hub shows and accepts.
    pub fn thumbprint_sha1(&self) -> String {
        hex::encode_upper(digest::digest(
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            self.der(),
        ))
    }

    /// Upper-case hex SHA-256 over the DER.
    pub fn thumbprint_sha256(&self) -> String {
        hex::encode_upper(digest::digest(&digest::SHA256, self.der()))
    }

    /// The raw public key (SubjectPublicKeyInfo bit string contents).
    pub fn public_key_raw(&self) -> Vec<u8> {
        self.parsed().public_key().subject_public_key.data.to_vec()
    }

    /// Whether basicConstraints says this is a CA.
    pub fn is_ca(&self) -> bool {
        self.parsed().is_ca()
    }

    /// Whether subject and issuer names are byte-identical (a root or a self-signed leaf).
    pub fn is_self_issued(&self) -> bool {
        let c = self.parsed();
        c.subject().as_raw() == c.issuer().as_raw()
    }

    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.parsed().validity().not_before.to_datetime()
    }

    /// End of validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.parsed().validity().not_after.to_datetime()
    }
}

/// Upper-case hex of a thumbprint, normalised from what a user may paste
/// (`aa:bb:..`, lower case, spaces).
pub fn normalize_thumbprint(s: &str) -> Option<String> {
    let cleaned: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_ascii_uppercase();
    let ok_len = cleaned.len() == 40 || cleaned.len() == 64;
    (ok_len && cleaned.chars().all(|c| c.is_ascii_hexdigit())).then_some(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_the_right_kind() {
        assert!(matches!(
            Certificate::from_pem("not pem at all"),
            Err(PkiError::NoPemBlock { .. })
        ));
        let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            Certificate::from_pem(bad),
            Err(PkiError::BadCertificate(_))
        ));
        assert!(Certificate::from_der(vec![0x30, 0x03, 0x02, 0x01]).is_err());
    }

    #[test]
    fn thumbprints_normalise() {
        let t = "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd";
        assert_eq!(
            normalize_thumbprint(t).unwrap(),
            "AABBCCDDEEFF00112233445566778899AABBCCDD"
        );
        assert!(normalize_thumbprint("xyz").is_none());
    }
}
