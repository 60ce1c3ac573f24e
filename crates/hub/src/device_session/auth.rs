//! The one place a device or module is admitted or refused, whatever protocol it speaks.
//!
//! SAS (device key, or a policy with DeviceConnect), selfSigned (thumbprint) and
//! certificateAuthority (chain to a verified CA, CN = id). The credentials must name this hub
//! (`hostname` or one of `hostname_aliases`). Every refusal has a specific reason, which the head
//! logs and counts; the peer only sees its protocol's refusal code. What the authentication rested
//! on is recorded ([`Credential`]), so that the session ends when that changes (see
//! [`crate::device_session::revoke`]). A protocol head turns what its client presented (an MQTT username and
//! password, a TLS chain) into [`Credentials`].

use base64::Engine as _;
use iot_auth::sas::{Audience, SasError, SasToken};
use pki::{Certificate, Purpose, Reason};
use rustls::pki_types::CertificateDer;

use crate::Hub;
use crate::config::Right;
use hub_wire::model::{AuthType, Authentication, Status};

/// Who connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub device_id: String,
    pub module_id: Option<String>,
    /// `sas`, `selfSigned`, `certificateAuthority`; `sas` also for policy tokens.
    pub auth_type: AuthType,
    pub generation_id: String,
    /// When the session ends because its SAS token expires (seconds since the epoch), as at IoT
    /// Hub: the token's expiry, or, for a token accepted within the clock-skew grace, the end of
    /// that grace. `None` for X.509.
    pub token_expiry: Option<u64>,
    /// What the authentication rested on.
    pub credential: Credential,
}

/// What a session's authentication rested on: when it changes, the session ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// The identity's own SAS keys or X.509 thumbprints.
    Own,
    /// The SAS keys of the module's device (a device-level token for a module).
    DeviceKey,
    /// A shared access policy of the hub's configuration.
    Policy,
    /// A chain to the verified CA with this [`anchor_key`].
    Ca(u64),
    /// A gateway's keys (`auth-chain`): the client id whose keys signed the token
    /// (`{edge}/$edgeHub`, or `{edge}` for its device key).
    Gateway(Box<str>),
}

/// A CA's key in [`Credential::Ca`]: the first 8 bytes of its SHA-1 thumbprint (upper-case hex,
/// as [`pki::Certificate::thumbprint_sha1`] and the CA records hold it). Small, so a session
/// carries it inline; two CAs sharing it would only both end each other's sessions.
pub fn anchor_key(thumbprint_sha1: &str) -> u64 {
    thumbprint_sha1
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

impl Identity {
    /// The MQTT client id of this identity: `device` or `device/module`.
    pub fn client_id(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/{m}", self.device_id),
            None => self.device_id.clone(),
        }
    }

    pub fn scope(&self) -> &'static str {
        if self.module_id.is_some() {
            "module"
        } else {
            "device"
        }
    }
}

/// Why a connection was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed username: {0}")]
    BadUsername(String),
    #[error(
        "the username names host {offered:?}, not this hub ({expected:?}); devices must use the hub's hostname, or the operator adds the name to hostname_aliases"
    )]
    WrongHost { offered: String, expected: String },
    #[error(
        "will topic {0:?} refused: a will may only be the identity's own telemetry (devices/{{id}}/messages/events/... or devices/{{id}}/modules/{{module}}/messages/events/...)"
    )]
    WillTopic(String),
    #[error("client id {client_id:?} does not match the identity {identity:?} in the username")]
    ClientIdMismatch { client_id: String, identity: String },
    #[error("unknown device {0}")]
    UnknownDevice(String),
    #[error("unknown module {0}")]
    UnknownModule(String),
    #[error("device {0} is disabled")]
    Disabled(String),
    #[error("SAS authentication is disabled for {0}s on this hub")]
    SasDisabled(&'static str),
    #[error("malformed SAS token: {0}")]
    BadToken(String),
    #[error("SAS token expired")]
    ExpiredToken,
    #[error("SAS token signature does not match")]
    BadSignature,
    #[error("SAS token is for {0}, not this identity on this hub")]
    WrongAudience(String),
    #[error("policy {0:?} unknown or without DeviceConnect")]
    BadPolicy(String),
    #[error("identity uses {expected} authentication, the client offered {offered}")]
    WrongAuthType {
        expected: &'static str,
        offered: &'static str,
    },
    #[error("no client certificate was presented")]
    NoClientCertificate,
    #[error("certificate thumbprint {0} does not match the registered thumbprints")]
    WrongThumbprint(String),
    #[error("certificate expired")]
    CertExpired,
    #[error("certificate not yet valid")]
    CertNotYetValid,
    #[error("the certificate chains to a CA that is uploaded but not verified")]
    UnverifiedCa,
    #[error("the certificate does not chain to a registered CA")]
    UnknownCa,
    #[error(
        "incomplete certificate chain: the issuer {0:?} of the device's certificate was not sent \
         and is not a registered CA; the device must send its full chain (its certificate, then \
         the intermediate CAs)"
    )]
    IncompleteChain(String),
    #[error("certificate CN {cn:?} is not the identity {identity:?}")]
    CnMismatch { cn: String, identity: String },
    #[error("certificate chain refused: {0}")]
    ChainInvalid(String),
    #[error("{0}")]
    OutOfScope(String),
    #[error("registry unavailable")]
    Unavailable,
}

impl Refusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadUsername(_) => "bad_username",
            Self::WrongHost { .. } => "wrong_host",
            Self::WillTopic(_) => "will_topic",
            Self::ClientIdMismatch { .. } => "client_id_mismatch",
            Self::UnknownDevice(_) => "unknown_device",
            Self::UnknownModule(_) => "unknown_module",
            Self::Disabled(_) => "disabled",
            Self::SasDisabled(_) => "sas_disabled",
            Self::BadToken(_) => "bad_token",
            Self::ExpiredToken => "expired_token",
            Self::BadSignature => "bad_signature",
            Self::WrongAudience(_) => "wrong_audience",
            Self::BadPolicy(_) => "bad_policy",
            Self::WrongAuthType { .. } => "wrong_auth_type",
            Self::NoClientCertificate => "no_client_certificate",
            Self::WrongThumbprint(_) => "wrong_thumbprint",
            Self::CertExpired => "cert_expired",
            Self::CertNotYetValid => "cert_not_yet_valid",
            Self::UnverifiedCa => "unverified_ca",
            Self::UnknownCa => "unknown_ca",
            Self::IncompleteChain(_) => "incomplete_chain",
            Self::CnMismatch { .. } => "cn_mismatch",
            Self::OutOfScope(_) => "out_of_scope",
            Self::ChainInvalid(_) => "chain_invalid",
            Self::Unavailable => "unavailable",
        }
    }
}

/// What a client presents to be admitted, whatever its protocol.
#[derive(Clone, Copy, Debug)]
pub struct Credentials<'a> {
    /// The hub name the client addressed: this hub's `hostname` or one of its aliases.
    pub host: &'a str,
    pub device_id: &'a str,
    pub module_id: Option<&'a str>,
    /// IoT Edge's `auth-chain`: the identity, then the gateways it connects through (see
    /// [`super::on_behalf`]).
    pub auth_chain: Option<&'a str>,
    /// A SAS token; without one (or an empty one) the TLS client certificate chain is checked.
    pub sas_token: Option<&'a [u8]>,
}

impl Credentials<'_> {
    /// `device` or `device/module`.
    pub fn identity_id(&self) -> String {
        match self.module_id {
            Some(m) => format!("{}/{m}", self.device_id),
            None => self.device_id.to_owned(),
        }
    }
}

/// Decides whether a client presenting `creds` (and `peer_chain`, its TLS client certificate
/// chain, leaf first; empty without one) is admitted, and as whom.
pub fn authenticate(
    hub: &Hub,
    creds: &Credentials<'_>,
    peer_chain: &[CertificateDer<'_>],
) -> Result<Identity, Refusal> {
    if !hub.config.is_own_hostname(creds.host) {
        return Err(Refusal::WrongHost {
            offered: creds.host.to_owned(),
            expected: hub.config.hostname.clone(),
        });
    }
    let module_id = creds.module_id.map(str::to_owned);
    let identity_id = creds.identity_id();
    let password = creds.sas_token;
    let store = hub.registry.store();
    let device = store
        .get_device(creds.device_id)
        .map_err(|_| Refusal::Unavailable)?
        .ok_or_else(|| Refusal::UnknownDevice(creds.device_id.to_owned()))?;
    if device.status == Status::Disabled {
        return Err(Refusal::Disabled(device.device_id));
    }
    if let Some(chain) = creds.auth_chain {
        let credential = super::on_behalf::authenticate(hub, &identity_id, chain, password)?;
        return Ok(Identity {
            device_id: creds.device_id.to_owned(),
            module_id,
            auth_type: AuthType::Sas,
            generation_id: device.generation_id,
            token_expiry: session_end(hub, password),
            credential,
        });
    }
    let (auth, generation_id) = match &module_id {
        None => (device.authentication.clone(), device.generation_id.clone()),
        Some(m) => {
            let module = store
                .get_module(&device.device_id, m)
                .map_err(|_| Refusal::Unavailable)?
                .ok_or_else(|| Refusal::UnknownModule(identity_id.clone()))?;
            (module.authentication, module.generation_id)
        }
    };
    let password = password.filter(|p| !p.is_empty());
    let (auth_type, credential) = match password {
        Some(pw) => {
            let credential = check_sas(
                hub,
                creds.device_id,
                module_id.as_deref(),
                &auth,
                &device.authentication,
                pw,
            )?;
            (AuthType::Sas, credential)
        }
        None => check_x509(hub, &identity_id, &auth, peer_chain)?,
    };
    Ok(Identity {
        device_id: creds.device_id.to_owned(),
        module_id,
        auth_type,
        generation_id,
        token_expiry: session_end(hub, password),
        credential,
    })
}

/// Records the Plug and Play model id a client announced (MQTT: `model-id=` in the user name)
/// in its identity, so its twin and registry entry show `modelId`. A failed write is logged: the
/// connection is not refused for it.
pub fn record_model_id(hub: &Hub, identity: &Identity, model_id: Option<&str>) {
    if let Some(model_id) = model_id.filter(|m| !m.is_empty()) {
        let module_id = identity.module_id.as_deref();
        if let Err(e) = hub
            .registry
            .set_model_id(&identity.device_id, module_id, model_id)
        {
            tracing::warn!(error = %e, %model_id, "Could not record the device's Plug and Play model id; it is recorded at its next connect");
        }
    }
}

/// When a session opened with the SAS token in `password` ends: at the token's expiry, or, when
/// the token was accepted within the clock-skew grace (already past its expiry), when the grace
/// ends. `None` without a token.
fn session_end(hub: &Hub, password: Option<&[u8]>) -> Option<u64> {
    let text = std::str::from_utf8(password?).ok()?;
    let expiry = SasToken::parse(text).ok()?.expiry();
    let now = u64::try_from(hub.clock.now().unix_timestamp()).unwrap_or(0);
    Some(if expiry > now {
        expiry
    } else {
        expiry.saturating_add(iot_auth::sas::MAX_CLOCK_SKEW_SECS)
    })
}

pub(super) fn check_sas(
    hub: &Hub,
    device_id: &str,
    module_id: Option<&str>,
    auth: &Authentication,
    device_auth: &Authentication,
    password: &[u8],
) -> Result<Credential, Refusal> {
    if module_id.is_none() && hub.auth.device_sas_disabled() {
        return Err(Refusal::SasDisabled("device"));
    }
    if module_id.is_some() && hub.auth.module_sas_disabled() {
        return Err(Refusal::SasDisabled("module"));
    }
    let text = std::str::from_utf8(password).map_err(|_| Refusal::BadToken("not UTF-8".into()))?;
    let token = SasToken::parse(text).map_err(|e| Refusal::BadToken(e.to_string()))?;
    let now = u64::try_from(hub.clock.now().unix_timestamp()).unwrap_or(0);
    let device_level = check_audience(&hub.config, &token, device_id, module_id)?;
    let mut credential = Credential::Own;
    let keys: Vec<Vec<u8>> = match token.key_name() {
        Some(policy) => {
            let p = hub
                .config
                .policy(policy)
                .filter(|p| p.rights.contains(&Right::DeviceConnect))
                .ok_or_else(|| Refusal::BadPolicy(policy.to_owned()))?;
            credential = Credential::Policy;
            [&p.primary_key, &p.secondary_key]
                .iter()
                .filter_map(|k| decode_key(k))
                .collect()
        }
        None => {
            // A module may use a token signed with its device's key.
            let source = if device_level && module_id.is_some() {
                credential = Credential::DeviceKey;
                device_auth
            } else {
                auth
            };
            if source.kind() != AuthType::Sas {
                return Err(Refusal::WrongAuthType {
                    expected: source.kind().as_str(),
                    offered: "sas",
                });
            }
            source.keys().iter().filter_map(|k| decode_key(k)).collect()
        }
    };
    let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    token.verify_any(&key_refs, now).map_err(|e| match e {
        SasError::Expired { .. } => Refusal::ExpiredToken,
        _ => Refusal::BadSignature,
    })?;
    Ok(credential)
}

/// Checks the token's audience; returns true when it is device-level (no `/modules/...`).
fn check_audience(
    config: &crate::config::HubConfig,
    token: &SasToken,
    device_id: &str,
    module_id: Option<&str>,
) -> Result<bool, Refusal> {
    let host_ok = |h: &str| config.is_own_hostname(h);
    match token.audience() {
        Audience::Device { host, device_id: d }
            if host_ok(&host) && d.eq_ignore_ascii_case(device_id) =>
        {
            Ok(true)
        }
        Audience::Module {
            host,
            device_id: d,
            module_id: m,
        } if host_ok(&host)
            && d.eq_ignore_ascii_case(device_id)
            && Some(m.as_str()) == module_id =>
        {
            Ok(false)
        }
        other => Err(Refusal::WrongAudience(format!("{other:?}"))),
    }
}

fn decode_key(k: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(k).ok()
}

pub(crate) fn check_x509(
    hub: &Hub,
    identity_id: &str,
    auth: &Authentication,
    chain: &[CertificateDer<'_>],
) -> Result<(AuthType, Credential), Refusal> {
    let kind = auth.kind();
    if !matches!(kind, AuthType::SelfSigned | AuthType::CertificateAuthority) {
        return Err(Refusal::WrongAuthType {
            expected: kind.as_str(),
            offered: "x509",
        });
    }
    let leaf_der = chain.first().ok_or(Refusal::NoClientCertificate)?;
    let leaf = Certificate::from_der(leaf_der.as_ref().to_vec())
        .map_err(|e| Refusal::ChainInvalid(e.to_string()))?;
    let now = hub.clock.now();
    if kind == AuthType::SelfSigned {
        if now > leaf.not_after() {
            return Err(Refusal::CertExpired);
        }
        if now < leaf.not_before() {
            return Err(Refusal::CertNotYetValid);
        }
        let registered = auth.thumbprints();
        let (sha1, sha256) = (leaf.thumbprint_sha1(), leaf.thumbprint_sha256());
        if !registered.iter().any(|t| *t == sha1 || *t == sha256) {
            return Err(Refusal::WrongThumbprint(sha1));
        }
        return Ok((AuthType::SelfSigned, Credential::Own));
    }
    let validator = hub
        .cas
        .verified_validator()
        .map_err(|_| Refusal::Unavailable)?;
    let rest: Vec<&[u8]> = chain[1..].iter().map(|c| c.as_ref()).collect();
    let path = validator
        .verify_der(leaf_der.as_ref(), &rest, now, Purpose::ClientAuth)
        .map_err(|e| match e.reason {
            Reason::Expired { .. } => Refusal::CertExpired,
            Reason::NotYetValid { .. } => Refusal::CertNotYetValid,
            Reason::UnknownIssuer | Reason::SelfSignedNotTrusted => {
                let unverified = std::iter::once(leaf.issuer())
                    .chain(chain[1..].iter().filter_map(|c| {
                        Certificate::from_der(c.as_ref().to_vec())
                            .ok()
                            .map(|c| c.issuer())
                    }))
                    .any(|issuer| hub.cas.is_unverified_issuer(&issuer).unwrap_or(false));
                if unverified {
                    Refusal::UnverifiedCa
                } else if let Some(issuer) = leaf.missing_issuer(&rest) {
                    Refusal::IncompleteChain(issuer)
                } else {
                    Refusal::UnknownCa
                }
            }
            _ => Refusal::ChainInvalid(e.to_string()),
        })?;
    let cn = leaf.common_name().unwrap_or_default();
    if cn != identity_id {
        return Err(Refusal::CnMismatch {
            cn,
            identity: identity_id.to_owned(),
        });
    }
    let anchor = anchor_key(&path.anchor().thumbprint_sha1());
    Ok((AuthType::CertificateAuthority, Credential::Ca(anchor)))
}
