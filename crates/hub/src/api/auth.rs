//! Service API authorization: a SAS token from a shared-access policy with the needed right, and a
//! supported `api-version`.

use axum::http::HeaderMap;
use base64::Engine as _;
use iot_auth::sas::{SasError, SasToken};

use crate::Hub;
use crate::config::Right;
use crate::error::ApiError;

/// api-versions the service SDKs and tools send; anything else is refused with 400.
pub const API_VERSIONS: [&str; 12] = [
    "2018-06-30",
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

/// Checks the `Authorization` header for a policy token granting `right`.
pub fn authorize(hub: &Hub, headers: &HeaderMap, right: Right) -> Result<String, ApiError> {
    let raw = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::unauthorized("missing Authorization header (a SharedAccessSignature)")
        })?;
    let token = SasToken::parse(raw).map_err(|e| refuse(format!("malformed SAS token: {e}")))?;
    let audience = token.audience();
    let host = audience
        .host()
        .ok_or_else(|| refuse(format!("token audience {audience:?} is not this hub")))?
        .to_owned();
    if !host.eq_ignore_ascii_case(&hub.config.hostname) {
        return Err(refuse(format!("token audience {host:?} is not this hub")));
    }
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
    let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let now = u64::try_from(hub.clock.now().unix_timestamp()).unwrap_or(0);
    token.verify_any(&key_refs, now).map_err(|e| match e {
        SasError::Expired { .. } => refuse("SAS token expired".into()),
        _ => refuse("SAS token signature does not match".into()),
    })?;
    if !policy.rights.contains(&right) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "IotHubUnauthorizedAccess",
            format!("policy {name} lacks the {right:?} right"),
        ));
    }
    Ok(name)
}

fn refuse(reason: String) -> ApiError {
    tracing::warn!(%reason, "Service API request refused");
    ApiError::unauthorized(reason)
}
