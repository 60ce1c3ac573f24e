//! HTTPS: the device registration API (2019-03-31) and the service API (2021-10-01 shape).

mod certificates;
mod device;
mod service;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use iot_auth::sas::{SasError, SasToken};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::Dps;
use crate::config::Right;
use crate::error::ApiError;

pub use ferrohub_runtime::net::PeerChain;

pub fn router(dps: Arc<Dps>) -> Router {
    let routes = Router::new()
        .route("/enrollments/query", post(service::query_enrollments))
        .route(
            "/enrollments/{id}",
            get(service::get_enrollment)
                .put(service::put_enrollment)
                .delete(service::delete_enrollment),
        )
        .route(
            "/enrollments/{id}/attestationmechanism",
            post(service::enrollment_attestation),
        )
        .route("/enrollmentGroups/query", post(service::query_groups))
        .route("/enrollmentgroups/query", post(service::query_groups))
        .route(
            "/enrollmentGroups/{id}",
            get(service::get_group)
                .put(service::put_group)
                .delete(service::delete_group),
        )
        .route(
            "/enrollmentgroups/{id}",
            get(service::get_group)
                .put(service::put_group)
                .delete(service::delete_group),
        )
        .route(
            "/enrollmentGroups/{id}/attestationmechanism",
            post(service::group_attestation),
        )
        .route(
            "/enrollmentgroups/{id}/attestationmechanism",
            post(service::group_attestation),
        )
        .route(
            "/registrations/{id}",
            get(service::get_registration).delete(service::delete_registration),
        )
        .route(
            "/registrations/{id}/query",
            post(service::query_registrations),
        )
        .route("/certificates", get(certificates::list))
        .route(
            "/certificates/{name}",
            get(certificates::get)
                .put(certificates::put)
                .delete(certificates::delete),
        )
        .route(
            "/certificates/{name}/generateVerificationCode",
            post(certificates::generate_code),
        )
        .route("/certificates/{name}/verify", post(certificates::verify))
        .route(
            "/{scope}/registrations/{id}/register",
            put(device::register),
        )
        .route(
            "/{scope}/registrations/{id}/operations/{op}",
            get(device::poll),
        )
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .with_state(dps);
    // The SDKs' trailing-slash forms, as the hub accepts them.
    ferrohub_runtime::net::accept_trailing_slash(routes)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("NotFound", format!("no such resource: {}", uri.path()))
}

/// The right `GET /metrics` on the HTTPS port needs (no `api-version`): the least of the DPS
/// rights (no enrollment keys). A loopback `listen.metrics` listener serves them without a token.
pub const METRICS_RIGHT: Right = Right::RegistrationStatusRead;

async fn metrics(
    axum::extract::State(dps): axum::extract::State<Arc<Dps>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admit(&dps, &headers, METRICS_RIGHT)?;
    Ok(ferrohub_runtime::metrics::metrics_text(
        crate::render_metrics(&dps),
    ))
}

/// Every service handler: count, check the policy token and its right.
pub(crate) fn admit(dps: &Dps, headers: &HeaderMap, right: Right) -> Result<(), ApiError> {
    ferrohub_runtime::metrics::inc(&dps.metrics.http_requests);
    authorize(dps, headers, right).inspect_err(|e| {
        warn!(reason = %e.message, "Service API request refused");
    })
}

fn authorize(dps: &Dps, headers: &HeaderMap, right: Right) -> Result<(), ApiError> {
    let raw = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::unauthorized("missing Authorization header (a SharedAccessSignature)")
        })?;
    let token = SasToken::parse(raw)
        .map_err(|e| ApiError::unauthorized(format!("malformed SAS token: {e}")))?;
    let audience = token
        .resource()
        .trim_start_matches("https://")
        .trim_end_matches('/');
    if !audience.eq_ignore_ascii_case(&dps.config.hostname) {
        return Err(ApiError::unauthorized(format!(
            "token audience {audience:?} is not this service"
        )));
    }
    let name = token
        .key_name()
        .ok_or_else(|| ApiError::unauthorized("the token names no policy (skn)"))?;
    let policy = dps
        .config
        .policy(name)
        .ok_or_else(|| ApiError::unauthorized(format!("unknown policy {name:?}")))?;
    let keys: Vec<Vec<u8>> = [&policy.primary_key, &policy.secondary_key]
        .iter()
        .filter_map(|k| iot_auth::sas::decode_key(k).ok())
        .collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let now = u64::try_from(dps.clock.now().unix_timestamp()).unwrap_or(0);
    token.verify_any(&refs, now).map_err(|e| match e {
        SasError::Expired { .. } => ApiError::unauthorized("SAS token expired"),
        _ => ApiError::unauthorized("SAS token signature does not match"),
    })?;
    if !policy.rights.contains(&right) {
        return Err(ApiError::unauthorized(format!(
            "policy {name} lacks the {right:?} right"
        )));
    }
    Ok(())
}

/// Parses a JSON body; malformed JSON and bodies nested deeper than the service APIs'
/// [`hub_wire::limits::MAX_BODY_DEPTH`] get 400.
pub(crate) fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    hub_wire::limits::check_json_depth(body).map_err(ApiError::bad_request)?;
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// A JSON response with the content type the Node SDKs require.
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

pub(crate) fn if_match(headers: &HeaderMap) -> ferrohub_runtime::etag::IfMatch {
    ferrohub_runtime::etag::IfMatch::from_header(
        headers
            .get(axum::http::header::IF_MATCH)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Serves HTTPS until `shutdown` turns true.
pub async fn serve(
    dps: Arc<Dps>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: watch::Receiver<bool>,
) {
    // TLS and the first request within 30 s; the net module logs a client that misses it.
    let deadline: (_, ferrohub_runtime::net::OnTimeout) =
        (std::time::Duration::from_secs(30), Arc::new(|| {}));
    ferrohub_runtime::net::serve_https(listener, tls, router(dps), deadline, "dps-https", shutdown)
        .await;
}
