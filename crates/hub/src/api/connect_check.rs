//! `GET /devices/{id}/connectCheck` and `/devices/{id}/modules/{mid}/connectCheck` (a ferrohub
//! extension): the MQTT CONNECT decision for this device or module, with its reason.
//!
//! MQTT 3.1.1's CONNACK only says "not authorized", so a device (or `ferrohub system check` on
//! it) cannot learn why the hub refuses it. Here the same credentials the device would present at
//! CONNECT — its TLS client certificate chain, or its SAS token in `Authorization` — go through
//! exactly [`crate::mqtt::auth::authenticate`], and the answer names the refusal's machine reason
//! ([`Refusal::reason`]) and message. Nothing else is disclosed: the caller must present the
//! identity's own credentials, and a refusal is counted and logged as a CONNECT refusal is.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::json;
use tracing::{info, warn};

use ferrohub_runtime::net::PeerChain;

use super::{auth, json};
use crate::Hub;
use crate::metrics::Metrics;
use crate::mqtt::auth::{Refusal, authenticate};
use ferrohub_runtime::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

pub async fn device(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    axum::Extension(chain): axum::Extension<PeerChain>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    check(&hub, &id, &uri, &headers, &chain)
}

pub async fn module(
    State(hub): State<Arc<Hub>>,
    Path((id, mid)): Path<(String, String)>,
    axum::Extension(chain): axum::Extension<PeerChain>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    check(&hub, &format!("{id}/{mid}"), &uri, &headers, &chain)
}

/// Runs the CONNECT decision for `client_id` (`device` or `device/module`) with the request's
/// credentials, as if it had connected with the MQTT username `{hub}/{client_id}/?api-version=…`.
fn check(
    hub: &Hub,
    client_id: &str,
    uri: &Uri,
    headers: &HeaderMap,
    chain: &PeerChain,
) -> Result<Response> {
    Metrics::inc(&hub.metrics.http_requests);
    auth::check_api_version(uri.query()).inspect_err(|_| Metrics::inc(&hub.metrics.http_errors))?;
    let username = format!(
        "{}/{client_id}/?api-version=2021-04-12",
        hub.config.hostname
    );
    let password = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match authenticate(hub, client_id, Some(&username), password, &chain.0) {
        Ok(identity) => {
            info!(%client_id, auth = identity.auth_type.as_str(), "Connect check: accepted");
            Ok(json(
                StatusCode::OK,
                &json!({
                    "accepted": true,
                    "deviceId": identity.device_id,
                    "moduleId": identity.module_id,
                    "authType": identity.auth_type.as_str(),
                }),
            ))
        }
        Err(refusal) => {
            Metrics::inc(&hub.metrics.http_errors);
            hub.metrics.auth_failure(refusal.reason());
            warn!(%client_id, reason = %refusal, code = refusal.reason(), "Connect check: the hub refuses this connection");
            Ok(json(status(&refusal), &refused(&refusal)))
        }
    }
}

/// 503 when the hub cannot decide (the device retries later), else 401.
fn status(refusal: &Refusal) -> StatusCode {
    if *refusal == Refusal::Unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// The refusal's body: the machine reason, the message, and the CONNACK code a device sees.
fn refused(refusal: &Refusal) -> serde_json::Value {
    json!({
        "accepted": false,
        "reason": refusal.reason(),
        "message": refusal.to_string(),
        "connack": refusal.connack() as u8,
    })
}
