//! The HTTPS device API: `PUT /{idScope}/registrations/{id}/register` (SAS in `Authorization`, or
//! the TLS client certificate) and `GET /{idScope}/registrations/{id}/operations/{operationId}`.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use tracing::warn;

use super::{PeerChain, json};
use crate::Dps;
use crate::attest::{self, Credential};
use crate::error::ApiError;
use crate::model::{DeviceRegistration, OperationStatus, check_registration_id};

type Result<T> = std::result::Result<T, ApiError>;

pub async fn register(
    State(dps): State<Arc<Dps>>,
    Path((scope, id)): Path<(String, String)>,
    Extension(chain): Extension<PeerChain>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    ferrohub_runtime::metrics::inc(&dps.metrics.http_requests);
    check_scope(&dps, &scope)?;
    check_registration_id(&id).map_err(ApiError::bad_request)?;
    let req: DeviceRegistration = if body.iter().all(u8::is_ascii_whitespace) {
        DeviceRegistration::default()
    } else {
        super::json_body(&body)?
    };
    if let Some(r) = &req.registration_id
        && !r.eq_ignore_ascii_case(&id)
    {
        return Err(ApiError::bad_request(format!(
            "registrationId {r:?} is not the {id:?} of the path"
        )));
    }
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let credential = match token {
        Some(t) => Credential::Sas(t),
        None => Credential::Chain(&chain.0),
    };
    let attested = attest::attest(&dps, &id, credential).map_err(|refusal| {
        dps.metrics.auth_failure(refusal.reason());
        warn!(registration_id = %id, reason = %refusal, code = refusal.reason(), "Refusing registration");
        let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        ApiError::new(status, refusal.error_code(), "Unauthorized", refusal.to_string())
    })?;
    let status = crate::provision::begin(&dps, &id, attested, req.payload);
    Ok(answer(&status))
}

pub async fn poll(
    State(dps): State<Arc<Dps>>,
    Path((scope, id, op)): Path<(String, String, String)>,
) -> Result<Response> {
    ferrohub_runtime::metrics::inc(&dps.metrics.http_requests);
    check_scope(&dps, &scope)?;
    let status = dps.operations.poll(&op, &id).ok_or_else(|| {
        ApiError::not_found("OperationNotFound", format!("no operation {op} for {id}"))
    })?;
    Ok(answer(&status))
}

fn check_scope(dps: &Dps, scope: &str) -> Result<()> {
    if scope == dps.config.id_scope {
        Ok(())
    } else {
        dps.metrics.auth_failure("unknown_scope");
        warn!(scope, code = "unknown_scope", "Refusing registration");
        Err(ApiError::not_found(
            "IdScopeNotFound",
            format!("unknown ID scope {scope:?}"),
        ))
    }
}

/// 202 with `retry-after` while assigning, 200 once done.
fn answer(status: &OperationStatus) -> Response {
    if status.status == "assigning" {
        let mut r = json(StatusCode::ACCEPTED, status);
        r.headers_mut().insert(
            "retry-after",
            HeaderValue::from(crate::mqtt::RETRY_AFTER_SECS),
        );
        r
    } else {
        json(StatusCode::OK, status)
    }
}
