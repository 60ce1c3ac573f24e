//! Certificate signing requests (PKCS#10): make one for a key, parse one and check its
//! self-signature, and issue a certificate from one.
//!
//! ```text
//!  requester:  Csr::create(&key, CsrOptions) ─► .to_pem() ──────────────┐
//!  issuer:     Csr::from_pem(text)  (self-signature checked) ◄───────────┘
//!                 └─► issue_from_csr(&csr, not_before, not_after, CsrSigner) ─► Certificate
//! ```
//!
//! What is copied from a CSR into the certificate: the subject, the public key, and the requested
//! subjectAltName, basicConstraints, keyUsage and extendedKeyUsage. The issuer adds a random
//! serial, a Subject Key Identifier, an Authority Key Identifier and an explicit basicConstraints
//! (CA:FALSE when the CSR asks nothing). Requested key identifiers are replaced, other non-critical
//! requested extensions are dropped, and a critical one that is not understood refuses the CSR.
//!
//! Limits (those of the encoder): a subject attribute type appears at most once (a repeated one
//! keeps its last value) and multi-valued RDNs are flattened.
//!
//! ```
//! use pki::csr::{Csr, CsrOptions, CsrSigner, issue_from_csr};
//! use pki::{KeyAlgorithm, PrivateKey, Profile};
//! let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
//! let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
//! let csr = Csr::create(&key, &CsrOptions::new(Profile::DeviceClient, "dev1")).unwrap();
//! let parsed = Csr::from_pem(&csr.to_pem()).unwrap();
//! let end = now + time::Duration::days(30);
//! let cert = issue_from_csr(&parsed, now, end, CsrSigner::SelfSigned(&key)).unwrap();
//! assert_eq!(cert.common_name().as_deref(), Some("dev1"));
//! assert_eq!(cert.public_key_raw(), key.public_key_raw());
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rcgen::string::{BmpString, UniversalString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, PublicKeyData as _, SanType,
    SubjectPublicKeyInfo,
};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::{
    BasicConstraints as X509BasicConstraints, ExtendedKeyUsage, GeneralName, KeyUsage,
    ParsedExtension, X509Extension,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use crate::cert::Certificate;
use crate::error::PkiError;
use crate::issue::{Profile, Signer};
use crate::keys::PrivateKey;

/// Why a CSR was refused or a certificate could not be issued from it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// The text holds no `CERTIFICATE REQUEST` PEM block, or the armour is broken.
    #[error("no certificate signing request found: {0}")]
    NoPem(String),
    /// The DER is not a PKCS#10 request.
    #[error("not a valid PKCS#10 certificate signing request: {0}")]
    Malformed(String),
    /// The request's signature does not verify with the public key it carries.
    #[error("the CSR's signature does not verify against its own public key")]
    BadSignature,
    /// The request asks for something the issuer cannot copy (a critical extension it does not
    /// know, a name form it cannot encode, an unsupported key type).
    #[error("unsupported CSR content: {0}")]
    Unsupported(String),
    /// Building or signing the certificate failed (wrong key, issuer not a CA, bad validity).
    #[error(transparent)]
    Pki(#[from] PkiError),
}

impl From<rcgen::Error> for CsrError {
    fn from(e: rcgen::Error) -> Self {
        CsrError::Pki(PkiError::from(e))
    }
}

fn unsupported(what: impl fmt::Display) -> CsrError {
    CsrError::Unsupported(what.to_string())
}

/// A parsed certificate signing request whose self-signature has been checked.
#[derive(Clone)]
pub struct Csr {
    der: Vec<u8>,
    params: CertificateParams,
    public_key: SubjectPublicKeyInfo,
}

impl fmt::Debug for Csr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Csr")
            .field("common_name", &self.common_name())
            .field("is_ca", &self.is_ca())
            .finish()
    }
}

/// What a new CSR asks for.
#[derive(Clone, Debug)]
pub struct CsrOptions {
    /// Fixes the requested basicConstraints, keyUsage and extendedKeyUsage.
    pub profile: Profile,
    /// Subject common name.
    pub common_name: String,
    /// DNS names and IP addresses for the subjectAltName.
    pub subject_alt_names: Vec<String>,
}

impl CsrOptions {
    /// A request with only a common name.
    pub fn new(profile: Profile, common_name: impl Into<String>) -> Self {
        Self {
            profile,
            common_name: common_name.into(),
            subject_alt_names: Vec::new(),
        }
    }
}

impl Csr {
    /// Makes a CSR for `key`, signed by it.
    pub fn create(key: &PrivateKey, opts: &CsrOptions) -> Result<Self, CsrError> {
        if opts.common_name.is_empty() || opts.common_name.len() > 128 {
            return Err(PkiError::InvalidName {
                what: "common name",
                value: opts.common_name.clone(),
                reason: "must be 1 to 128 characters",
            }
            .into());
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, opts.common_name.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = opts
            .subject_alt_names
            .iter()
            .map(|n| parse_san(n))
            .collect::<Result<_, _>>()?;
        let (is_ca, key_usages, ekus) = crate::issue::extensions_for(opts.profile);
        params.is_ca = is_ca;
        params.key_usages = key_usages;
        params.extended_key_usages = ekus;
        let csr = params.serialize_request(key.signing_key())?;
        Self::from_der(csr.der().as_ref())
    }

    /// Parses the first `CERTIFICATE REQUEST` (or `NEW CERTIFICATE REQUEST`) block of `pem` and
    /// checks its signature.
    pub fn from_pem(pem: &str) -> Result<Self, CsrError> {
        let read = |text: &str| {
            CertificateSigningRequestDer::from_pem_slice(text.as_bytes()).map_err(|e| match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    CsrError::NoPem("expected a PEM block labelled CERTIFICATE REQUEST".into())
                }
                other => CsrError::NoPem(format!("malformed PEM: {other}")),
            })
        };
        let der = match read(pem) {
            Err(CsrError::NoPem(_)) if pem.contains("NEW CERTIFICATE REQUEST") => {
                read(&pem.replace("NEW CERTIFICATE REQUEST", "CERTIFICATE REQUEST"))?
            }
            other => other?,
        };
        Self::from_der(der.as_ref())
    }

    /// Parses a DER request and checks its signature.
    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        let (rest, req) = X509CertificationRequest::from_der(der)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed(
                "trailing bytes after the request".into(),
            ));
        }
        req.verify_signature().map_err(|_| CsrError::BadSignature)?;
        let info = &req.certification_request_info;
        let public_key = SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
            .map_err(|e| unsupported(format!("public key: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject_name(&info.subject)?;
        for attr in info.iter_attributes() {
            if let ParsedCriAttribute::ExtensionRequest(requested) = attr.parsed_attribute() {
                for ext in &requested.extensions {
                    copy_extension(ext, &mut params)?;
                }
            }
        }
        if params.is_ca == IsCa::NoCa {
            // Written explicitly (CA:FALSE) so the certificate also gets its key identifier.
            params.is_ca = IsCa::ExplicitNoCa;
        }
        Ok(Self {
            der: der.to_vec(),
            params,
            public_key,
        })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The PEM encoding (`-----BEGIN CERTIFICATE REQUEST-----`).
    pub fn to_pem(&self) -> String {
        crate::pem::encode("CERTIFICATE REQUEST", &self.der)
    }

    /// The raw public key (the SubjectPublicKeyInfo bit string contents), comparable with
    /// [`PrivateKey::public_key_raw`] and [`Certificate::public_key_raw`].
    pub fn public_key_raw(&self) -> &[u8] {
        self.public_key.der_bytes()
    }

    /// The subject common name, if the request has one.
    pub fn common_name(&self) -> Option<String> {
        match self.params.distinguished_name.get(&DnType::CommonName)? {
            DnValue::Utf8String(s) => Some(s.clone()),
            DnValue::PrintableString(s) => Some(s.as_str().to_owned()),
            DnValue::Ia5String(s) => Some(s.as_str().to_owned()),
            DnValue::TeletexString(s) => Some(s.as_str().to_owned()),
            _ => None,
        }
    }

    /// Whether the request asks for a CA certificate (basicConstraints CA:TRUE).
    pub fn is_ca(&self) -> bool {
        matches!(self.params.is_ca, IsCa::Ca(_))
    }

    /// Replaces the subject common name of the certificate to issue (the issuer's policy wins over
    /// the request). The request's signature is not affected: it was checked when parsing.
    pub fn set_common_name(&mut self, common_name: &str) -> Result<(), CsrError> {
        if common_name.is_empty() || common_name.len() > 128 {
            return Err(PkiError::InvalidName {
                what: "common name",
                value: common_name.to_owned(),
                reason: "must be 1 to 128 characters",
            }
            .into());
        }
        self.params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        Ok(())
    }
}

/// Who signs a certificate issued from a CSR.
#[derive(Clone, Copy, Debug)]
pub enum CsrSigner<'a> {
    /// The certificate signs itself with this key, which must be the CSR's own key.
    SelfSigned(&'a PrivateKey),
    /// A CA signs it (checked to be a CA whose key matches its certificate).
    Ca(Signer<'a>),
}

/// Issues a certificate for the CSR's key, valid from `not_before` to `not_after`.
///
/// With a CA signer the end of validity is clamped to the CA's, and a CA that has already expired
/// at `not_before` is refused.
pub fn issue_from_csr(
    csr: &Csr,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    signer: CsrSigner<'_>,
) -> Result<Certificate, CsrError> {
    let mut params = csr.params.clone();
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(crate::issue::random_serial()?);
    params.use_authority_key_identifier_extension = true;
    let cert = match signer {
        CsrSigner::SelfSigned(key) => {
            if key.public_key_raw() != csr.public_key_raw() {
                return Err(PkiError::KeyMismatch.into());
            }
            check_validity(&params)?;
            params.self_signed(key.signing_key())?
        }
        CsrSigner::Ca(ca) => {
            crate::issue::check_signer(ca, csr.is_ca())?;
            let ca_end = ca.cert.not_after();
            if not_before >= ca_end {
                return Err(PkiError::BadValidity(format!(
                    "the issuer {} expired at {ca_end}",
                    ca.cert.subject()
                ))
                .into());
            }
            params.not_after = params.not_after.min(ca_end);
            check_validity(&params)?;
            let issuer = Issuer::from_ca_cert_der(&ca.cert.to_rustls(), ca.key.signing_key())?;
            params.signed_by(&csr.public_key, &issuer)?
        }
    };
    Ok(Certificate::from_der(cert.der().as_ref().to_vec())?)
}

fn check_validity(params: &CertificateParams) -> Result<(), PkiError> {
    if params.not_after <= params.not_before {
        return Err(PkiError::BadValidity(format!(
            "the certificate would end ({}) before it starts ({})",
            params.not_after, params.not_before
        )));
    }
    Ok(())
}

fn parse_san(name: &str) -> Result<SanType, CsrError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    crate::names::check_dns_name(name)?;
    name.try_into()
        .map(SanType::DnsName)
        .map_err(|_| unsupported(format!("DNS name {name:?} is not ASCII")))
}

/// The subject, attribute by attribute, keeping the string types.
fn subject_name(name: &X509Name<'_>) -> Result<DistinguishedName, CsrError> {
    let mut dn = DistinguishedName::new();
    for attr in name.iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| unsupported("a subject attribute type OID is too large"))?
            .collect();
        dn.push(DnType::from_oid(&oid), dn_value(attr)?);
    }
    Ok(dn)
}

fn dn_value(attr: &AttributeTypeAndValue<'_>) -> Result<DnValue, CsrError> {
    let value = attr.attr_value();
    let data = value.data;
    let bad = |e: &dyn fmt::Display| unsupported(format!("subject attribute: {e}"));
    let text = || std::str::from_utf8(data).map_err(|e| bad(&e));
    Ok(match value.header.tag() {
        Tag::PrintableString => DnValue::PrintableString(text()?.try_into().map_err(|e| bad(&e))?),
        Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(|e| bad(&e))?),
        Tag::T61String => DnValue::TeletexString(text()?.try_into().map_err(|e| bad(&e))?),
        Tag::BmpString => {
            DnValue::BmpString(BmpString::from_utf16be(data.to_vec()).map_err(|e| bad(&e))?)
        }
        Tag::UniversalString => DnValue::UniversalString(
            UniversalString::from_utf32be(data.to_vec()).map_err(|e| bad(&e))?,
        ),
        _ => DnValue::Utf8String(attr.as_str().map_err(|e| bad(&e))?.to_owned()),
    })
}

/// Copies one requested extension into `params`, or ignores or refuses it.
fn copy_extension(ext: &X509Extension<'_>, params: &mut CertificateParams) -> Result<(), CsrError> {
    match ext.parsed_extension() {
        ParsedExtension::SubjectAlternativeName(san) => {
            for name in &san.general_names {
                params.subject_alt_names.push(san_type(name)?);
            }
        }
        ParsedExtension::KeyUsage(ku) => params.key_usages = key_usages(ku),
        ParsedExtension::ExtendedKeyUsage(eku) => params.extended_key_usages = ekus(eku)?,
        ParsedExtension::BasicConstraints(bc) => params.is_ca = is_ca(bc)?,
        // The issuer computes the key identifiers itself.
        ParsedExtension::SubjectKeyIdentifier(_) | ParsedExtension::AuthorityKeyIdentifier(_) => {}
        _ if ext.critical => {
            return Err(unsupported(format!(
                "critical extension {} is not supported",
                ext.oid.to_id_string()
            )));
        }
        _ => {}
    }
    Ok(())
}

fn san_type(name: &GeneralName<'_>) -> Result<SanType, CsrError> {
    let ia5 = |s: &str| {
        s.try_into()
            .map_err(|e| unsupported(format!("subjectAltName {s:?}: {e}")))
    };
    Ok(match name {
        GeneralName::DNSName(s) => SanType::DnsName(ia5(s)?),
        GeneralName::RFC822Name(s) => SanType::Rfc822Name(ia5(s)?),
        GeneralName::URI(s) => SanType::URI(ia5(s)?),
        GeneralName::IPAddress(octets) => SanType::IpAddress(ip_addr(octets)?),
        other => {
            return Err(unsupported(format!(
                "subjectAltName {other} cannot be copied"
            )));
        }
    })
}

fn ip_addr(octets: &[u8]) -> Result<IpAddr, CsrError> {
    if let Ok(v6) = <[u8; 16]>::try_from(octets) {
        Ok(Ipv6Addr::from(v6).into())
    } else if let Ok(v4) = <[u8; 4]>::try_from(octets) {
        Ok(Ipv4Addr::from(v4).into())
    } else {
        Err(unsupported(format!(
            "an IP address of {} bytes in subjectAltName",
            octets.len()
        )))
    }
}

fn key_usages(ku: &KeyUsage) -> Vec<KeyUsagePurpose> {
    use KeyUsagePurpose as K;
    [
        (ku.digital_signature(), K::DigitalSignature),
        (ku.non_repudiation(), K::ContentCommitment),
        (ku.key_encipherment(), K::KeyEncipherment),
        (ku.data_encipherment(), K::DataEncipherment),
        (ku.key_agreement(), K::KeyAgreement),
        (ku.key_cert_sign(), K::KeyCertSign),
        (ku.crl_sign(), K::CrlSign),
        (ku.encipher_only(), K::EncipherOnly),
        (ku.decipher_only(), K::DecipherOnly),
    ]
    .into_iter()
    .filter_map(|(on, usage)| on.then_some(usage))
    .collect()
}

fn ekus(eku: &ExtendedKeyUsage<'_>) -> Result<Vec<ExtendedKeyUsagePurpose>, CsrError> {
    use ExtendedKeyUsagePurpose as E;
    let mut out: Vec<E> = [
        (eku.any, E::Any),
        (eku.server_auth, E::ServerAuth),
        (eku.client_auth, E::ClientAuth),
        (eku.code_signing, E::CodeSigning),
        (eku.email_protection, E::EmailProtection),
        (eku.time_stamping, E::TimeStamping),
        (eku.ocsp_signing, E::OcspSigning),
    ]
    .into_iter()
    .filter_map(|(on, purpose)| on.then_some(purpose))
    .collect();
    for oid in &eku.other {
        let arcs = oid
            .iter()
            .ok_or_else(|| unsupported("an extendedKeyUsage OID is too large"))?;
        out.push(E::Other(arcs.collect()));
    }
    Ok(out)
}

fn is_ca(bc: &X509BasicConstraints) -> Result<IsCa, CsrError> {
    if !bc.ca {
        return Ok(IsCa::ExplicitNoCa);
    }
    Ok(match bc.path_len_constraint {
        None => IsCa::Ca(BasicConstraints::Unconstrained),
        Some(n) => IsCa::Ca(BasicConstraints::Constrained(
            u8::try_from(n)
                .map_err(|_| unsupported(format!("pathLenConstraint {n} is too large")))?,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertRequest, ChainValidator, KeyAlgorithm, Purpose, issue};
    use time::Duration;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn server_csr(key: &PrivateKey) -> Csr {
        let mut opts = CsrOptions::new(Profile::Server, "edge.local");
        opts.subject_alt_names = vec!["edge.local".into(), "10.0.0.1".into()];
        Csr::create(key, &opts).unwrap()
    }

    #[test]
    fn created_csrs_parse_back_with_their_requests() {
        let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let csr = Csr::from_pem(&server_csr(&key).to_pem()).unwrap();
        assert_eq!(csr.common_name().as_deref(), Some("edge.local"));
        assert_eq!(csr.public_key_raw(), key.public_key_raw());
        assert!(!csr.is_ca());
        assert_eq!(csr.params.subject_alt_names.len(), 2);
        assert_eq!(
            csr.params.extended_key_usages,
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        );
    }

    #[test]
    fn tampered_csrs_are_refused() {
        let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let mut der = server_csr(&key).der().to_vec();
        // Flip a byte inside the subject's common name: the structure stays valid.
        let pos = der.windows(10).position(|w| w == b"edge.local").unwrap();
        der[pos] ^= 0x01;
        assert!(matches!(Csr::from_der(&der), Err(CsrError::BadSignature)));
        assert!(matches!(Csr::from_pem("nope"), Err(CsrError::NoPem(_))));
        assert!(matches!(
            Csr::from_der(&[0x30, 0x00]),
            Err(CsrError::Malformed(_))
        ));
    }

    #[test]
    fn ca_issued_certificates_chain_and_keep_the_request() {
        let ca_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let ca = issue(
            &CertRequest::new(Profile::RootCa, "Root", now()),
            &ca_key,
            None,
        )
        .unwrap();
        let key = PrivateKey::generate(KeyAlgorithm::Rsa2048).unwrap();
        let signer = CsrSigner::Ca(Signer {
            cert: &ca,
            key: &ca_key,
        });
        let end = now() + Duration::days(30);
        let cert = issue_from_csr(&server_csr(&key), now(), end, signer).unwrap();
        assert_eq!(cert.public_key_raw(), key.public_key_raw());
        assert_eq!(cert.not_after(), end);
        let info = cert.info();
        assert!(info.subject_key_id.is_some() && info.authority_key_id.is_some());
        assert_eq!(info.subject_alt_names.len(), 2);
        let v = ChainValidator::new([ca]).unwrap();
        v.verify(&cert, &[], now(), Purpose::ServerAuth).unwrap();
    }

    #[test]
    fn validity_is_clamped_to_the_issuer_and_self_signing_needs_the_csr_key() {
        let ca_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let mut req = CertRequest::new(Profile::RootCa, "Root", now());
        req.days = 5;
        let ca = issue(&req, &ca_key, None).unwrap();
        let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let csr = server_csr(&key);
        let signer = CsrSigner::Ca(Signer {
            cert: &ca,
            key: &ca_key,
        });
        let end = now() + Duration::days(30);
        let cert = issue_from_csr(&csr, now(), end, signer).unwrap();
        assert_eq!(cert.not_after(), ca.not_after());
        let late = now() + Duration::days(6);
        assert!(issue_from_csr(&csr, late, late + Duration::days(1), signer).is_err());
        let wrong = CsrSigner::SelfSigned(&ca_key);
        assert!(matches!(
            issue_from_csr(&csr, now(), end, wrong),
            Err(CsrError::Pki(PkiError::KeyMismatch))
        ));
        let own = issue_from_csr(&csr, now(), end, CsrSigner::SelfSigned(&key)).unwrap();
        assert!(own.is_self_issued());
    }

    #[test]
    fn leaves_cannot_sign_and_common_names_can_be_replaced() {
        let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let leaf = issue(
            &CertRequest::new(Profile::SelfSignedDevice, "leaf", now()),
            &key,
            None,
        )
        .unwrap();
        let mut csr = server_csr(&key);
        csr.set_common_name("renamed").unwrap();
        let signer = CsrSigner::Ca(Signer {
            cert: &leaf,
            key: &key,
        });
        let end = now() + Duration::days(1);
        assert!(matches!(
            issue_from_csr(&csr, now(), end, signer),
            Err(CsrError::Pki(PkiError::IssuerNotCa { .. }))
        ));
        let cert = issue_from_csr(&csr, now(), end, CsrSigner::SelfSigned(&key)).unwrap();
        assert_eq!(cert.common_name().as_deref(), Some("renamed"));
    }
}
