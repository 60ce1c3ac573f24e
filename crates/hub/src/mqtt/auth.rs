//! MQTT CONNECT to the core's admission decision ([`crate::device_session::auth`]) and back: the
//! username and password become [`Credentials`], a refusal becomes its CONNACK code, and a will
//! must be the identity's own telemetry.

use mqtt_codec::ConnectReturnCode;
use rustls::pki_types::CertificateDer;

use crate::Hub;
use crate::device_session::auth::Credentials;

pub use crate::device_session::auth::{Credential, Identity, Refusal, anchor_key};

impl Refusal {
    /// The CONNACK code the SDKs expect: 5 for identity problems (not retried), 4 for a malformed
    /// username or one naming another hub, 2 for a client id mismatch, 3 when the hub itself cannot decide (retried).
    pub fn connack(&self) -> ConnectReturnCode {
        match self {
            Self::BadUsername(_) | Self::WrongHost { .. } => {
                ConnectReturnCode::BadUsernameOrPassword
            }
            Self::ClientIdMismatch { .. } => ConnectReturnCode::IdentifierRejected,
            Self::Unavailable => ConnectReturnCode::ServerUnavailable,
            _ => ConnectReturnCode::NotAuthorized,
        }
    }
}

/// Decides whether a CONNECT may proceed: the username names the hub and the identity (which
/// must be the client id), the password is a SAS token or empty (X.509).
pub fn authenticate(
    hub: &Hub,
    client_id: &str,
    username: Option<&str>,
    password: Option<&[u8]>,
    peer_chain: &[CertificateDer<'_>],
) -> Result<Identity, Refusal> {
    let user = iot_auth::username::parse_mqtt_username(username.unwrap_or_default())
        .map_err(|e| Refusal::BadUsername(e.to_string()))?;
    let creds = Credentials {
        host: &user.host,
        device_id: &user.device_id,
        module_id: user.module_id.as_deref(),
        auth_chain: user.auth_chain.as_deref(),
        sas_token: password,
    };
    // A username naming another hub is refused as such (by the core), before the client id.
    let identity_id = creds.identity_id();
    if identity_id != client_id && hub.config.is_own_hostname(&user.host) {
        return Err(Refusal::ClientIdMismatch {
            client_id: client_id.into(),
            identity: identity_id,
        });
    }
    crate::device_session::auth::authenticate(hub, &creds, peer_chain)
}

/// Records the Plug and Play model id (`model-id=` in the user name) of an accepted connection.
pub fn record_model_id(hub: &Hub, identity: &Identity, username: Option<&str>) {
    let user = username.and_then(|u| iot_auth::username::parse_mqtt_username(u).ok());
    let model_id = user.as_ref().and_then(|u| u.model_id.as_deref());
    crate::device_session::auth::record_model_id(hub, identity, model_id);
}

/// Authenticates `connect` again when a registry or CA change may have revoked what it used since
/// `since` (a [`crate::device_session::live::Connections::revocations`] read before it was
/// authenticated): a change made while it authenticated looked for sessions to end before this
/// one was registered.
pub fn recheck(
    hub: &Hub,
    connect: &mqtt_codec::Connect,
    peer_chain: &[CertificateDer<'_>],
    since: u64,
) -> Result<(), Refusal> {
    if hub.connections.revocations() == since {
        return Ok(());
    }
    let (username, password) = (connect.username.as_deref(), connect.password.as_deref());
    authenticate(hub, &connect.client_id, username, password, peer_chain)
        .and_then(|identity| check_will(&identity, connect.will.as_ref()))
}

/// A will (published when the connection ends without DISCONNECT) is stored as the identity's
/// telemetry, so its topic must be that identity's own telemetry topic, as for a PUBLISH.
pub fn check_will(identity: &Identity, will: Option<&mqtt_codec::Will>) -> Result<(), Refusal> {
    let Some(will) = will else { return Ok(()) };
    match iot_auth::topic::parse_publish_topic(&will.topic) {
        Ok(iot_auth::topic::PublishTopic::Telemetry {
            device_id,
            module_id,
            ..
        }) if device_id == identity.device_id && module_id == identity.module_id => Ok(()),
        _ => Err(Refusal::WillTopic(will.topic.clone())),
    }
}
