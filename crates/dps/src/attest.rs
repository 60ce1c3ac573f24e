//! Attestation: which enrollment a registering device belongs to, proven by its X.509 chain or its
//! SAS token. Individual enrollments are tried first, then enrollment groups in id order.
//!
//! Every refusal has a reason label (logged and counted) and maps to the status the device SDKs
//! treat as final: 401 for credentials, 403 for a disabled enrollment.

use base64::Engine as _;
use hub_wire::model::{AuthType, Authentication, X509Thumbprint};
use iot_auth::sas::{SasError, SasToken};
use pki::{Certificate, ChainValidator, Purpose, Reason};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};

use crate::Dps;
use crate::model::{
    EnrollmentGroup, IndividualEnrollment, ProvisioningStatus, Settings, X509CertificateInfo,
};

/// The enrollment a device proved it belongs to.
#[derive(Clone, Debug)]
pub enum Enrollment {
    Individual(Box<IndividualEnrollment>),
    Group(Box<EnrollmentGroup>),
}

impl Enrollment {
    pub fn settings(&self) -> &Settings {
        match self {
            Self::Individual(e) => &e.settings,
            Self::Group(g) => &g.settings,
        }
    }
    pub fn group_id(&self) -> Option<&str> {
        match self {
            Self::Individual(_) => None,
            Self::Group(g) => Some(&g.enrollment_group_id),
        }
    }
}

/// The credential the device will use at the hub: the same it proved here.
///
/// An X.509 device (individual or group enrollment) gets the thumbprint of the leaf it presented,
/// as Azure DPS does: the hub then needs no copy of the enrollment's CA, and a renewed leaf
/// registering again replaces the thumbprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubAuth {
    /// SAS with these keys (individual: the enrollment's keys; group: derived keys).
    Keys { primary: String, secondary: String },
    /// The SHA-1 thumbprint of the leaf the device registered with.
    Thumbprint(String),
}

impl HubAuth {
    /// The `authentication` of the hub's device record.
    pub fn authentication(&self) -> Authentication {
        match self {
            Self::Keys { primary, secondary } => {
                Authentication::sas(Some(primary.clone()), Some(secondary.clone()))
            }
            Self::Thumbprint(t) => Authentication {
                kind: Some(AuthType::SelfSigned),
                symmetric_key: None,
                x509_thumbprint: Some(X509Thumbprint {
                    primary_thumbprint: Some(t.clone()),
                    secondary_thumbprint: Some(t.clone()),
                }),
            },
        }
    }
}

#[derive(Clone, Debug)]
pub struct Attested {
    pub enrollment: Enrollment,
    pub auth: HubAuth,
    /// `registrationState.x509` / `registrationState.symmetricKey`.
    pub x509: Option<Value>,
    pub symmetric_key: Option<Value>,
}

/// Why a registration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no enrollment matches registration {0:?}")]
    NoEnrollment(String),
    #[error("the enrollment of {0:?} is disabled")]
    Disabled(String),
    #[error("the enrollment uses {expected} attestation, the device offered {offered}")]
    WrongAttestation {
        expected: String,
        offered: &'static str,
    },
    #[error("malformed SAS token: {0}")]
    BadToken(String),
    #[error("SAS token expired")]
    ExpiredToken,
    #[error("SAS token signature does not match any enrollment key")]
    BadSignature,
    #[error("SAS token is for {0:?}, not this ID scope and registration")]
    WrongAudience(String),
    #[error("no client certificate and no SAS token")]
    NoCredential,
    #[error("certificate CN {cn:?} is not the registration id {registration_id:?}")]
    CnMismatch { cn: String, registration_id: String },
    #[error("certificate expired")]
    CertExpired,
    #[error("certificate not yet valid")]
    CertNotYetValid,
    #[error("certificate thumbprint {0} is not the enrolled one")]
    WrongThumbprint(String),
    #[error("the enrollment's CA {0:?} is uploaded but not verified")]
    UnverifiedCa(String),
    #[error("the certificate does not chain to an enrolled CA")]
    UnknownCa,
    #[error(
        "incomplete certificate chain: the issuer {0:?} of the device's certificate was not sent \
         and is not an enrolled CA; the device must send its full chain (its certificate, then \
         the intermediate CAs)"
    )]
    IncompleteChain(String),
    #[error("certificate chain refused: {0}")]
    ChainInvalid(String),
    #[error("storage unavailable")]
    Unavailable,
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoEnrollment(_) => "no_enrollment",
            Self::Disabled(_) => "enrollment_disabled",
            Self::WrongAttestation { .. } => "wrong_attestation",
            Self::BadToken(_) => "bad_token",
            Self::ExpiredToken => "expired_token",
            Self::BadSignature => "bad_signature",
            Self::WrongAudience(_) => "wrong_audience",
            Self::NoCredential => "no_credential",
            Self::CnMismatch { .. } => "cn_mismatch",
            Self::CertExpired => "cert_expired",
            Self::CertNotYetValid => "cert_not_yet_valid",
            Self::WrongThumbprint(_) => "wrong_thumbprint",
            Self::UnverifiedCa(_) => "unverified_ca",
            Self::UnknownCa => "unknown_ca",
            Self::IncompleteChain(_) => "incomplete_chain",
            Self::ChainInvalid(_) => "chain_invalid",
            Self::Unavailable => "unavailable",
        }
    }

    /// HTTP-style status for the device (MQTT response topic or HTTPS status).
    pub fn status(&self) -> u16 {
        match self {
            Self::Disabled(_) => 403,
            Self::Unavailable => 503,
            _ => 401,
        }
    }

    /// The DPS error code in the response body.
    pub fn error_code(&self) -> u32 {
        match self {
            Self::Disabled(_) => 403_001,
            Self::Unavailable => 503_000,
            _ => 401_002,
        }
    }
}

/// A device's credential, as presented.
pub enum Credential<'a> {
    Chain(&'a [CertificateDer<'static>]),
    Sas(&'a str),
}

/// Finds and checks the enrollment of `registration_id` for `credential`.
pub fn attest(
    dps: &Dps,
    registration_id: &str,
    credential: Credential<'_>,
) -> Result<Attested, Refusal> {
    let individual = dps
        .store
        .get_enrollment(registration_id)
        .map_err(|_| Refusal::Unavailable)?;
    let attested = match credential {
        Credential::Sas(token) => by_sas(dps, registration_id, token, individual)?,
        Credential::Chain(chain) => by_x509(dps, registration_id, chain, individual)?,
    };
    if attested.enrollment.settings().provisioning_status == ProvisioningStatus::Disabled {
        return Err(Refusal::Disabled(registration_id.to_owned()));
    }
    Ok(attested)
}

fn kind_of(settings: &Settings) -> &str {
    &settings.attestation.kind
}

fn by_sas(
    dps: &Dps,
    registration_id: &str,
    token: &str,
    individual: Option<IndividualEnrollment>,
) -> Result<Attested, Refusal> {
    let token = SasToken::parse(token).map_err(|e| Refusal::BadToken(e.to_string()))?;
    check_audience(&dps.config.id_scope, registration_id, token.resource())?;
    let now = u64::try_from(dps.clock.now().unix_timestamp()).unwrap_or(0);
    let verify = |keys: &[&str]| -> Result<bool, Refusal> {
        let decoded: Vec<Vec<u8>> = keys.iter().filter_map(|k| decode(k)).collect();
        let refs: Vec<&[u8]> = decoded.iter().map(Vec::as_slice).collect();
        match token.verify_any(&refs, now) {
            Ok(()) => Ok(true),
            Err(SasError::Expired { .. }) => Err(Refusal::ExpiredToken),
            Err(_) => Ok(false),
        }
    };
    if let Some(e) = individual {
        if kind_of(&e.settings) != "symmetricKey" {
            return Err(Refusal::WrongAttestation {
                expected: e.settings.attestation.kind.clone(),
                offered: "symmetricKey",
            });
        }
        let (primary, secondary) = keys_of(&e.settings);
        if !verify(&[&primary, &secondary])? {
            return Err(Refusal::BadSignature);
        }
        return Ok(Attested {
            enrollment: Enrollment::Individual(Box::new(e)),
            auth: HubAuth::Keys { primary, secondary },
            x509: None,
            symmetric_key: Some(json!({})),
        });
    }
    let groups = dps.store.list_groups().map_err(|_| Refusal::Unavailable)?;
    for g in groups
        .into_iter()
        .filter(|g| kind_of(&g.settings) == "symmetricKey")
    {
        let (gp, gs) = keys_of(&g.settings);
        let derive = |k: &str| iot_auth::derive_device_key(k, registration_id).ok();
        let (Some(primary), Some(secondary)) = (derive(&gp), derive(&gs)) else {
            continue;
        };
        if verify(&[&primary, &secondary])? {
            let symmetric_key = Some(json!({"enrollmentGroupId": g.enrollment_group_id}));
            return Ok(Attested {
                enrollment: Enrollment::Group(Box::new(g)),
                auth: HubAuth::Keys { primary, secondary },
                x509: None,
                symmetric_key,
            });
        }
    }
    Err(Refusal::NoEnrollment(registration_id.to_owned()))
}

fn keys_of(s: &Settings) -> (String, String) {
    let k = s.attestation.symmetric_key.clone().unwrap_or_default();
    (
        k.primary_key.unwrap_or_default(),
        k.secondary_key.unwrap_or_default(),
    )
}

fn decode(k: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(k).ok()
}

/// The token's resource must be `{idScope}/registrations/{registrationId}` (scheme optional).
fn check_audience(scope: &str, registration_id: &str, resource: &str) -> Result<(), Refusal> {
    let trimmed = resource
        .strip_prefix("https://")
        .or_else(|| resource.strip_prefix("amqps://"))
        .unwrap_or(resource)
        .trim_end_matches('/');
    let ok = trimmed.split_once("/registrations/").is_some_and(|(s, r)| {
        s.eq_ignore_ascii_case(scope) && r.eq_ignore_ascii_case(registration_id)
    });
    if ok {
        Ok(())
    } else {
        Err(Refusal::WrongAudience(resource.to_owned()))
    }
}

fn by_x509(
    dps: &Dps,
    registration_id: &str,
    chain: &[CertificateDer<'static>],
    individual: Option<IndividualEnrollment>,
) -> Result<Attested, Refusal> {
    let leaf_der = chain.first().ok_or(Refusal::NoCredential)?;
    let leaf = Certificate::from_der(leaf_der.as_ref().to_vec())
        .map_err(|e| Refusal::ChainInvalid(e.to_string()))?;
    let cn = leaf.common_name().unwrap_or_default();
    if !cn.eq_ignore_ascii_case(registration_id) {
        return Err(Refusal::CnMismatch {
            cn,
            registration_id: registration_id.to_owned(),
        });
    }
    let now = dps.clock.now();
    if now > leaf.not_after() {
        return Err(Refusal::CertExpired);
    }
    if now < leaf.not_before() {
        return Err(Refusal::CertNotYetValid);
    }
    let info = certificate_info(&leaf);
    if let Some(e) = individual {
        return individual_x509(e, &leaf, info);
    }
    let rest: Vec<&[u8]> = chain[1..].iter().map(|c| c.as_ref()).collect();
    let groups = dps.store.list_groups().map_err(|_| Refusal::Unavailable)?;
    let mut refusal = Refusal::UnknownCa;
    for g in groups
        .into_iter()
        .filter(|g| kind_of(&g.settings) == "x509")
    {
        let validator = match group_validator(dps, &g) {
            Ok(v) => v,
            Err(r) => {
                refusal = r;
                continue;
            }
        };
        match validator.verify_der(leaf_der.as_ref(), &rest, now, Purpose::ClientAuth) {
            Ok(path) => {
                let signing = certificate_info(path.anchor());
                let x509 = json!({
                    "enrollmentGroupId": g.enrollment_group_id,
                    "certificateInfo": info,
                    "signingCertificateInfo": signing,
                });
                return Ok(Attested {
                    enrollment: Enrollment::Group(Box::new(g)),
                    auth: HubAuth::Thumbprint(leaf.thumbprint_sha1()),
                    x509: Some(x509),
                    symmetric_key: None,
                });
            }
            Err(e) => match e.reason {
                Reason::UnknownIssuer | Reason::SelfSignedNotTrusted => {}
                _ => refusal = Refusal::ChainInvalid(e.to_string()),
            },
        }
    }
    if refusal == Refusal::UnknownCa
        && let Some(issuer) = leaf.missing_issuer(&rest)
    {
        refusal = Refusal::IncompleteChain(issuer);
    }
    Err(refusal)
}

fn individual_x509(
    e: IndividualEnrollment,
    leaf: &Certificate,
    info: X509CertificateInfo,
) -> Result<Attested, Refusal> {
    if kind_of(&e.settings) != "x509" {
        return Err(Refusal::WrongAttestation {
            expected: e.settings.attestation.kind.clone(),
            offered: "x509",
        });
    }
    let enrolled: Vec<String> = e
        .settings
        .attestation
        .x509
        .as_ref()
        .and_then(|x| x.client_certificates.as_ref())
        .map(|c| {
            c.iter()
                .filter_map(|c| c.info.as_ref())
                .flat_map(|i| [i.sha1_thumbprint.clone(), i.sha256_thumbprint.clone()])
                .collect()
        })
        .unwrap_or_default();
    let sha1 = leaf.thumbprint_sha1();
    if !enrolled.contains(&sha1) && !enrolled.contains(&leaf.thumbprint_sha256()) {
        return Err(Refusal::WrongThumbprint(sha1));
    }
    Ok(Attested {
        enrollment: Enrollment::Individual(Box::new(e)),
        auth: HubAuth::Thumbprint(sha1),
        x509: Some(json!({ "certificateInfo": info })),
        symmetric_key: None,
    })
}

/// Anchors of an X.509 group: its inline signing certificates and its verified CA references.
fn group_validator(dps: &Dps, g: &EnrollmentGroup) -> Result<ChainValidator, Refusal> {
    let x509 = g.settings.attestation.x509.clone().unwrap_or_default();
    let mut anchors = Vec::new();
    if let Some(signing) = &x509.signing_certificates {
        for c in signing.iter().filter_map(|c| c.certificate.as_deref()) {
            anchors.extend(parse_pem_or_der(c));
        }
    }
    if let Some(refs) = &x509.ca_references {
        for name in refs.primary.iter().chain(refs.secondary.iter()) {
            let Ok(record) = dps.cas.get(name) else {
                continue;
            };
            if !record.is_verified {
                return Err(Refusal::UnverifiedCa(name.clone()));
            }
            anchors.extend(Certificate::from_pem(&record.certificate).ok());
        }
    }
    ChainValidator::new(anchors).map_err(|e| Refusal::ChainInvalid(e.to_string()))
}

/// A certificate given as PEM or as base64 DER.
pub fn parse_pem_or_der(text: &str) -> Option<Certificate> {
    Certificate::from_pem(text).ok().or_else(|| {
        let der = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()?;
        Certificate::from_der(der).ok()
    })
}

/// `X509CertificateInfo` of a certificate.
pub fn certificate_info(c: &Certificate) -> X509CertificateInfo {
    let fmt = |t: time::OffsetDateTime| ferrohub_runtime::time::rfc3339(t);
    X509CertificateInfo {
        subject_name: c.subject(),
        sha1_thumbprint: c.thumbprint_sha1(),
        sha256_thumbprint: c.thumbprint_sha256(),
        issuer_name: c.issuer(),
        not_before_utc: fmt(c.not_before()),
        not_after_utc: fmt(c.not_after()),
        serial_number: hex::encode_upper(c.parsed().raw_serial()),
        version: c.parsed().version().0 + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences() {
        assert!(check_audience("0ne1", "dev1", "0ne1/registrations/dev1").is_ok());
        assert!(check_audience("0ne1", "DEV1", "0ne1/registrations/dev1").is_ok());
        assert!(check_audience("0ne1", "dev1", "https://0ne1/registrations/dev1/").is_ok());
        assert!(check_audience("0ne2", "dev1", "0ne1/registrations/dev1").is_err());
        assert!(check_audience("0ne1", "dev2", "0ne1/registrations/dev1").is_err());
        assert!(check_audience("0ne1", "dev1", "host/devices/dev1").is_err());
    }
}
