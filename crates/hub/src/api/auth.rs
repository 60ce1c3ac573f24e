//! Service API authorization: a SAS token from a shared-access policy with the needed right and a
//! resource scope (`sr`) covering the request's target, and a supported `api-version`.

use axum::http::HeaderMap;
use base64::Engine as _;
use iot_auth::sas::{Audience, SasError, SasToken};

use crate::Hub;
use crate::config::Right;
use ferrohub_runtime::error::ApiError;

/// api-versions the service SDKs and tools send; anything else is refused with 400.
pub const API_VERSIONS: [&str; 14] = [
    "2018-06-30",
    "2018-08-30-preview",
    "2020-06-30-preview",
    "2019-03-30",
    "2019-10-01",
    "2020-03-13",
    "2020-05-31-preview",
    "2020-09-30",
    "2021-04-12",
    "2021-06-30",
    "2021-11-30",
    "2022-04-30-preview",
    "2023-06-30",
    "2020-03-01",
];

pub fn check_api_version(query: Option<&str>) -> Result<(), ApiError> {
    let version = query
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("api-version="))
        .ok_or_else(|| {
            ApiError::bad_request(
                "the api-version query parameter is required, e.g. ?api-version=2021-04-12",
            )
        })?;
    if API_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "api-version {version} is not supported; use one of {}",
            API_VERSIONS.join(", ")
        )))
    }
}

/// What a request acts on, for the token's `sr` scope: the whole hub (registry listings, query,
/// statistics, certificates, events, metrics), one device (its identity, twin, methods,
/// cloud-to-device queue and modules), or one module (its identity, twin and methods).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    Hub,
    Device(&'a str),
    Module(&'a str, &'a str),
}

impl Target<'_> {
    fn describe(self) -> String {
        match self {
            Target::Hub => "hub-wide resources".into(),
            Target::Device(d) => format!("device {d:?}"),
            Target::Module(d, m) => format!("module {m:?} of device {d:?}"),
        }
    }
}

/// Checks the `Authorization` header for a policy token granting `right` on `target`.
pub fn authorize(
    hub: &Hub,
    headers: &HeaderMap,
    right: Right,
    target: Target<'_>,
) -> Result<String, ApiError> {
    let token = bearer(headers)?;
    let name = authorize_token(hub, &token, right)?;
    check_scope(&token, target)?;
    Ok(name)
}

/// Checks a policy token for this hub granting `right` (whatever its scope): the name of the
/// policy. The service API checks the scope after; AMQP's `$cbs` admits hub-wide tokens only.
pub(crate) fn authorize_token(
    hub: &Hub,
    token: &SasToken,
    right: Right,
) -> Result<String, ApiError> {
    check_host(hub, token)?;
    authorize_policy(hub, token, right)
}

/// IoT Hub's resource scoping of policy tokens: `sr={host}` grants the whole hub,
/// `sr={host}/devices/{id}` that device and its modules, `sr={host}/devices/{id}/modules/{m}`
/// that module only.
fn check_scope(token: &SasToken, target: Target<'_>) -> Result<(), ApiError> {
    let granted = match (token.audience(), target) {
        (Audience::Host { .. }, _) => true,
        (Audience::Device { device_id, .. }, Target::Device(d) | Target::Module(d, _)) => {
            device_id == d
        }
        (
            Audience::Module {
                device_id,
                module_id,
                ..
            },
            Target::Module(d, m),
        ) => device_id == d && module_id == m,
        _ => false,
    };
    if granted {
        return Ok(());
    }
    Err(refuse(format!(
        "the token's scope sr={:?} does not cover {}; sign the token for the hub host name to \
         reach everything the policy allows",
        token.resource(),
        target.describe()
    )))
}

/// Like [`authorize`], and also accepts a token signed with the key of the target's device itself
/// (audience `{host}/devices/{device_id}`, no policy name): a device may manage its own modules.
pub fn authorize_device_scope(
    hub: &Hub,
    headers: &HeaderMap,
    right: Right,
    target: Target<'_>,
    chain: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<String, ApiError> {
    let device_id = match target {
        Target::Device(d) | Target::Module(d, _) => d,
        Target::Hub => return authorize(hub, headers, right, target),
    };
    if headers.get(axum::http::header::AUTHORIZATION).is_none() && !chain.is_empty() {
        return authorize_device_certificate(hub, device_id, chain);
    }
    let token = bearer(headers)?;
    check_host(hub, &token)?;
    if token.key_name().is_some() {
        let name = authorize_policy(hub, &token, right)?;
        check_scope(&token, target)?;
        return Ok(name);
    }
    let Audience::Device { device_id: d, .. } = token.audience() else {
        return Err(refuse(
            "a token without a policy name (skn) must be a device token for this device".into(),
        ));
    };
    if d != device_id {
        return Err(refuse(format!(
            "the token of device {d:?} does not grant access to device {device_id:?}"
        )));
    }
    let device = hub
        .registry
        .get_device(device_id)
        .map_err(|_| refuse(format!("device {device_id:?} is not registered")))?;
    if device.status != hub_wire::model::Status::Enabled {
        return Err(refuse(format!("device {device_id:?} is disabled")));
    }
    if device.authentication.keys().is_empty() {
        return Err(refuse(format!(
            "device {device_id:?} has no symmetric keys; use a policy token (e.g. registryReadWrite)"
        )));
    }
    verify(hub, &token, &decoded_keys(&device.authentication))?;
    Ok(format!("device:{device_id}"))
}

/// An X.509 device (its TLS client certificate, checked as at MQTT CONNECT) acting on its own
/// modules.
fn authorize_device_certificate(
    hub: &Hub,
    device_id: &str,
    chain: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<String, ApiError> {
    let device = hub
        .registry
        .get_device(device_id)
        .map_err(|_| refuse(format!("device {device_id:?} is not registered")))?;
    if device.status != hub_wire::model::Status::Enabled {
        return Err(refuse(format!("device {device_id:?} is disabled")));
    }
    crate::device_session::auth::check_x509(hub, device_id, &device.authentication, chain)
        .map_err(|r| refuse(format!("client certificate refused for {device_id}: {r}")))?;
    Ok(format!("device:{device_id}"))
}

/// The `$edgeHub` module of edge device `edge_id`, by its own SAS token (audience
/// `{host}/devices/{edge_id}/modules/$edgeHub`): what a gateway uses to read its device scope.
pub fn authorize_edge_hub(
    hub: &Hub,
    headers: &HeaderMap,
    edge_id: &str,
) -> Result<String, ApiError> {
    let token = bearer(headers)?;
    check_host(hub, &token)?;
    match token.audience() {
        Audience::Module {
            device_id,
            module_id,
            ..
        } if device_id == edge_id && module_id == "$edgeHub" => {}
        other => {
            return Err(refuse(format!(
                "the token ({other:?}) is not the $edgeHub token of {edge_id}"
            )));
        }
    }
    let module = hub.registry.get_module(edge_id, "$edgeHub").map_err(|_| {
        refuse(format!(
            "{edge_id} has no $edgeHub module (is it an edge device?)"
        ))
    })?;
    verify(hub, &token, &decoded_keys(&module.authentication))?;
    Ok(format!("edgehub:{edge_id}"))
}

/// An identity's symmetric keys, decoded.
fn decoded_keys(auth: &hub_wire::model::Authentication) -> Vec<Vec<u8>> {
    auth.keys()
        .iter()
        .filter_map(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
        .collect()
}

fn bearer(headers: &HeaderMap) -> Result<SasToken, ApiError> {
    let raw = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::unauthorized("missing Authorization header (a SharedAccessSignature)")
        })?;
    SasToken::parse(raw).map_err(|e| refuse(format!("malformed SAS token: {e}")))
}

fn check_host(hub: &Hub, token: &SasToken) -> Result<(), ApiError> {
    let audience = token.audience();
    let host = audience
        .host()
        .ok_or_else(|| refuse(format!("token audience {audience:?} is not this hub")))?;
    if !host.eq_ignore_ascii_case(&hub.config.hostname) {
        return Err(refuse(format!("token audience {host:?} is not this hub")));
    }
    Ok(())
}

fn authorize_policy(hub: &Hub, token: &SasToken, right: Right) -> Result<String, ApiError> {
    let name = token
        .key_name()
        .ok_or_else(|| refuse("the token names no policy (skn)".into()))?
        .to_owned();
    let policy = hub
        .config
        .policy(&name)
        .ok_or_else(|| refuse(format!("unknown policy {name:?}")))?;
    let keys: Vec<Vec<u8>> = [&policy.primary_key, &policy.secondary_key]
        .iter()
        .filter_map(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
        .collect();
    verify(hub, token, &keys)?;
    if !policy.rights.contains(&right) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "IotHubUnauthorizedAccess",
            format!("policy {name} lacks the {right:?} right"),
        ));
    }
    Ok(name)
}

fn verify(hub: &Hub, token: &SasToken, keys: &[Vec<u8>]) -> Result<(), ApiError> {
    let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let now = u64::try_from(hub.clock.now().unix_timestamp()).unwrap_or(0);
    token.verify_any(&key_refs, now).map_err(|e| match e {
        SasError::Expired { .. } => refuse("SAS token expired".into()),
        _ => refuse("SAS token signature does not match".into()),
    })
}

fn refuse(reason: String) -> ApiError {
    tracing::warn!(%reason, "Service API request refused");
    ApiError::unauthorized(reason)
}
