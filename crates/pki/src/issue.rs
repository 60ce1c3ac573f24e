//! Certificate issuance with safe defaults.
//!
//! rcgen is the encoder; this module decides the profile. Every certificate gets a random positive
//! 20-byte serial, explicit validity starting at the caller's `now` (time is injected, never read
//! here), a Subject Key Identifier, an Authority Key Identifier when it has an issuer, and a critical
//! basicConstraints. The issuer is checked to be a CA that may sign before anything is signed.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::cert::Certificate;
use crate::error::PkiError;
use crate::keys::PrivateKey;

/// What kind of certificate to issue; each fixes basicConstraints, keyUsage and EKU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Self-signed root CA, no path length limit.
    RootCa,
    /// Intermediate CA; `path_len` limits how many CAs may follow below it.
    IntermediateCa {
        /// Maximum number of CA certificates below this one (`None` = unlimited).
        path_len: Option<u8>,
    },
    /// The edge device CA: a CA with pathLen 0 that signs the gateway's own leaf certificates.
    EdgeCa,
    /// A device or module identity: CA:FALSE, digitalSignature, EKU clientAuth.
    DeviceClient,
    /// A TLS server: CA:FALSE, digitalSignature + keyEncipherment, EKU serverAuth, SANs required.
    Server,
    /// A self-signed device certificate for thumbprint authentication (CA:FALSE, clientAuth).
    SelfSignedDevice,
    /// A proof-of-possession certificate: CN = the verification code, signed by the CA's key.
    Verification,
}

impl Profile {
    /// Whether the profile makes a CA certificate.
    pub fn is_ca(self) -> bool {
        matches!(
            self,
            Self::RootCa | Self::IntermediateCa { .. } | Self::EdgeCa
        )
    }

    /// Whether the certificate signs itself.
    pub fn is_self_signed(self) -> bool {
        matches!(self, Self::RootCa | Self::SelfSignedDevice)
    }

    /// The default lifetime in days (root 10 y, intermediate 5 y, edge CA 90 d, leaves 1 y).
    pub fn default_days(self) -> u32 {
        match self {
            Self::RootCa => 3650,
            Self::IntermediateCa { .. } => 1825,
            Self::EdgeCa => 90,
            Self::Verification => 30,
            Self::DeviceClient | Self::Server | Self::SelfSignedDevice => 365,
        }
    }
}

/// The subject and validity of a certificate to issue.
#[derive(Clone, Debug)]
pub struct CertRequest {
    /// The profile (CA, device, server, ...).
    pub profile: Profile,
    /// Subject common name.
    pub common_name: String,
    /// DNS names and IP addresses for the subjectAltName (servers; optional elsewhere).
    pub subject_alt_names: Vec<String>,
    /// Start of validity (normally the injected "now").
    pub not_before: OffsetDateTime,
    /// Lifetime in days from `not_before`.
    pub days: u32,
}

impl CertRequest {
    /// A request with the profile's default lifetime, valid from `now`.
    pub fn new(profile: Profile, common_name: impl Into<String>, now: OffsetDateTime) -> Self {
        Self {
            profile,
            common_name: common_name.into(),
            subject_alt_names: Vec::new(),
            not_before: now,
            days: profile.default_days(),
        }
    }
}

/// The CA that signs a new certificate: its certificate and its private key.
#[derive(Clone, Copy, Debug)]
pub struct Signer<'a> {
    /// The CA certificate.
    pub cert: &'a Certificate,
    /// The CA's private key (checked to match `cert`).
    pub key: &'a PrivateKey,
}

/// Issues a certificate for `subject_key`.
///
/// `issuer` must be `None` for self-signed profiles and `Some` otherwise. The end of validity is
/// clamped to the issuer's, so no certificate outlives the CA that vouches for it.
pub fn issue(
    req: &CertRequest,
    subject_key: &PrivateKey,
    issuer: Option<Signer<'_>>,
) -> Result<Certificate, PkiError> {
    let mut params = params_for(req)?;
    let cert = match (req.profile.is_self_signed(), issuer) {
        (true, None) => params.self_signed(subject_key.signing_key())?,
        (false, Some(signer)) => {
            check_signer(signer, req.profile.is_ca())?;
            let issuer_end = signer.cert.not_after();
            if params.not_before >= issuer_end {
                return Err(PkiError::BadValidity(format!(
                    "the issuer {} expired at {issuer_end}",
                    signer.cert.subject()
                )));
            }
            params.not_after = params.not_after.min(issuer_end);
            params.use_authority_key_identifier_extension = true;
            let rc_issuer =
                Issuer::from_ca_cert_der(&signer.cert.to_rustls(), signer.key.signing_key())?;
            params.signed_by(subject_key.signing_key(), &rc_issuer)?
        }
        (true, Some(_)) => {
            return Err(PkiError::Generate(
                "a self-signed profile takes no issuer".into(),
            ));
        }
        (false, None) => {
            return Err(PkiError::Generate("this profile needs an issuer".into()));
        }
    };
    Certificate::from_der(cert.der().as_ref().to_vec())
}

fn params_for(req: &CertRequest) -> Result<CertificateParams, PkiError> {
    if req.days == 0 {
        return Err(PkiError::BadValidity(
            "the lifetime must be at least one day".into(),
        ));
    }
    if req.common_name.is_empty() || req.common_name.len() > 128 {
        return Err(PkiError::InvalidName {
            what: "common name",
            value: req.common_name.clone(),
            reason: "must be 1 to 128 characters",
        });
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, req.common_name.as_str());
    params.distinguished_name = dn;
    params.not_before = req.not_before;
    params.not_after = req
        .not_before
        .checked_add(Duration::days(i64::from(req.days)))
        .ok_or_else(|| PkiError::BadValidity(format!("{} days is too far", req.days)))?;
    params.serial_number = Some(random_serial()?);
    params.subject_alt_names = parse_sans(&req.subject_alt_names)?;
    let (is_ca, key_usages, ekus) = extensions_for(req.profile);
    params.is_ca = is_ca;
    params.key_usages = key_usages;
    params.extended_key_usages = ekus;
    if req.profile == Profile::Server && params.subject_alt_names.is_empty() {
        return Err(PkiError::InvalidName {
            what: "server names",
            value: String::new(),
            reason: "a server certificate needs at least one DNS name or IP address",
        });
    }
    Ok(params)
}

pub(crate) type Extensions = (IsCa, Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>);

/// The basic constraints, key usages and extended key usages of each profile (also what a CSR
/// made with [`crate::csr::Csr::create`] asks for).
pub(crate) fn extensions_for(profile: Profile) -> Extensions {
    use KeyUsagePurpose::{CrlSign, DigitalSignature, KeyCertSign, KeyEncipherment};
    let ca_usages = vec![DigitalSignature, KeyCertSign, CrlSign];
    match profile {
        Profile::RootCa => (IsCa::Ca(BasicConstraints::Unconstrained), ca_usages, vec![]),
        Profile::IntermediateCa { path_len } => {
            let bc = path_len.map_or(
                BasicConstraints::Unconstrained,
                BasicConstraints::Constrained,
            );
            (IsCa::Ca(bc), ca_usages, vec![])
        }
        Profile::EdgeCa => (
            IsCa::Ca(BasicConstraints::Constrained(0)),
            ca_usages,
            vec![],
        ),
        Profile::DeviceClient | Profile::SelfSignedDevice | Profile::Verification => (
            IsCa::ExplicitNoCa,
            vec![DigitalSignature, KeyEncipherment],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        ),
        Profile::Server => (
            IsCa::ExplicitNoCa,
            vec![DigitalSignature, KeyEncipherment],
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        ),
    }
}

/// Refuses to sign with a certificate that is not a CA, lacks keyCertSign, does not match its key,
/// or whose pathLen 0 forbids the CA (`issuing_ca`) requested below it.
pub(crate) fn check_signer(signer: Signer<'_>, issuing_ca: bool) -> Result<(), PkiError> {
    signer.key.matches(signer.cert)?;
    let parsed = signer.cert.parsed();
    let not_ca = |reason: &str| PkiError::IssuerNotCa {
        subject: signer.cert.subject(),
        reason: reason.to_owned(),
    };
    let bc = parsed
        .basic_constraints()
        .map_err(|e| not_ca(&format!("unreadable basicConstraints: {e}")))?;
    let Some(bc) = bc.filter(|bc| bc.value.ca) else {
        return Err(not_ca("basicConstraints does not say CA:TRUE"));
    };
    if let Ok(Some(ku)) = parsed.key_usage()
        && !ku.value.key_cert_sign()
    {
        return Err(not_ca("keyUsage lacks keyCertSign"));
    }
    if issuing_ca && bc.value.path_len_constraint == Some(0) {
        return Err(not_ca(
            "its pathLen is 0, so it may sign only end-entity certificates",
        ));
    }
    Ok(())
}

fn parse_sans(names: &[String]) -> Result<Vec<SanType>, PkiError> {
    names
        .iter()
        .map(|name| {
            if let Ok(ip) = name.parse::<std::net::IpAddr>() {
                return Ok(SanType::IpAddress(ip));
            }
            crate::names::check_dns_name(name)?;
            name.as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| PkiError::InvalidName {
                    what: "DNS name",
                    value: name.clone(),
                    reason: "must be ASCII",
                })
        })
        .collect()
}

/// A random, positive, 20-byte serial number (RFC 5280 §4.1.2.2 maximum length).
pub(crate) fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 20];
    crate::random_fill(&mut bytes)?;
    // Clear the sign bit and make the first byte non-zero: the DER INTEGER is then exactly
    // 20 bytes and positive.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}
