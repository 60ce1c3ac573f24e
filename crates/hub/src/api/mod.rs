//! The service REST API (IoT Hub api-version 2021-04-12 shape) over HTTPS.
//!
//! Each handler checks the api-version and a policy right first, then calls the registry or CA
//! service. Bodies are parsed by hand so a malformed one gets the IoT Hub error shape.

pub(crate) mod auth;
mod certificates;
mod connect_check;
mod devices;
mod edge;
mod events;
mod scope;
mod settings;
mod twins;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Hub;
use crate::config::Right;
use crate::metrics::Metrics;
use ferrohub_runtime::error::ApiError;

pub use auth::{API_VERSIONS, Target};

/// The router of every service API path.
pub fn router(hub: Arc<Hub>) -> Router {
    let limit = hub.config.limits.max_request_bytes;
    let routes = Router::new()
        .route(
            "/devices",
            get(devices::list).post(devices::bulk_unsupported),
        )
        .route("/devices/query", post(devices::query))
        .route(
            "/devices/{id}",
            get(devices::get_device)
                .put(devices::put_device)
                .delete(devices::delete_device),
        )
        .route("/devices/{id}/applyConfigurationContent", post(edge::apply))
        .route(
            "/devices/{id}/messages/deviceBound",
            post(devices::send_c2d),
        )
        .route(
            "/devices/{id}/commands",
            axum::routing::delete(devices::purge_c2d),
        )
        .route("/devices/{id}/connectCheck", get(connect_check::device))
        .route("/devices/{id}/modules", get(devices::list_modules))
        .route(
            "/devices/{id}/modules/{mid}",
            get(devices::get_module)
                .put(devices::put_module)
                .delete(devices::delete_module),
        )
        .route(
            "/devices/{id}/modules/{mid}/connectCheck",
            get(connect_check::module),
        )
        .route(
            "/twins/{id}",
            get(twins::get_twin)
                .patch(twins::patch_twin)
                .put(twins::patch_twin),
        )
        .route("/twins/{id}/methods", post(twins::invoke_method))
        .route(
            "/twins/{id}/modules/{mid}",
            get(twins::get_module_twin)
                .patch(twins::patch_module_twin)
                .put(twins::patch_module_twin),
        )
        .route(
            "/twins/{id}/modules/{mid}/methods",
            post(twins::invoke_module_method),
        )
        .route(
            "/devices/{id}/modules/$edgeHub/devicesAndModulesInDeviceScope",
            get(scope::devices_in_scope),
        )
        .route(
            "/devices/{id}/modules/$edgeHub/deviceAndModuleInDeviceScope",
            get(scope::device_in_scope),
        )
        .route("/statistics/devices", get(devices::device_stats))
        .route("/statistics/service", get(devices::service_stats))
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
        .route("/events", get(events::stream))
        .route(
            "/configuration/auth",
            get(settings::get_auth).put(settings::put_auth),
        )
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(hub);
    ferrohub_runtime::net::accept_trailing_slash(routes)
}

/// The right `GET /metrics` on the HTTPS port needs (with a hub-wide token; no `api-version`):
/// the counters describe the service side of the hub. A loopback `listen.metrics` listener serves
/// them without a token.
pub const METRICS_RIGHT: Right = Right::ServiceConnect;

async fn metrics(
    axum::extract::State(hub): axum::extract::State<Arc<Hub>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    Metrics::inc(&hub.metrics.http_requests);
    auth::authorize(&hub, &headers, METRICS_RIGHT, Target::Hub).inspect_err(|_| {
        Metrics::inc(&hub.metrics.http_errors);
    })?;
    Ok(metrics_text(hub.metrics.render(hub.events.next_offset())))
}

use ferrohub_runtime::metrics::metrics_text;

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("NotFound", format!("no such resource: {}", uri.path()))
}

/// Common entry of every handler: count it, check api-version, the right and the token's scope.
pub(crate) fn admit(
    hub: &Hub,
    uri: &Uri,
    headers: &HeaderMap,
    right: Right,
    target: Target<'_>,
) -> Result<(), ApiError> {
    Metrics::inc(&hub.metrics.http_requests);
    let checked = auth::check_api_version(uri.query())
        .and_then(|()| auth::authorize(hub, headers, right, target).map(drop));
    if checked.is_err() {
        Metrics::inc(&hub.metrics.http_errors);
    }
    checked
}

use ferrohub_runtime::net::PeerChain;

/// Like [`admit`], also accepting the target device's own credentials (its modules, their
/// twins): a SAS token signed with its key, or its X.509 certificate at the TLS handshake.
pub(crate) fn admit_device(
    hub: &Hub,
    uri: &Uri,
    headers: &HeaderMap,
    right: Right,
    target: Target<'_>,
    chain: &PeerChain,
) -> Result<(), ApiError> {
    Metrics::inc(&hub.metrics.http_requests);
    let checked = auth::check_api_version(uri.query()).and_then(|()| {
        auth::authorize_device_scope(hub, headers, right, target, &chain.0).map(drop)
    });
    if checked.is_err() {
        Metrics::inc(&hub.metrics.http_errors);
    }
    checked
}

/// Parses a JSON body, refusing malformed JSON and bodies nested deeper than
/// [`hub_wire::limits::MAX_BODY_DEPTH`] with 400 `ArgumentInvalid`.
pub(crate) fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    check_json_depth(body).map_err(ApiError::bad_request)?;
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

use hub_wire::limits::check_json_depth;

/// A JSON response with the content type the Node SDK requires.
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
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerError",
            e.to_string(),
        )
        .into_response(),
    }
}

/// The `If-Match` header.
pub(crate) fn if_match(headers: &HeaderMap) -> ferrohub_runtime::etag::IfMatch {
    ferrohub_runtime::etag::IfMatch::from_header(
        headers
            .get(axum::http::header::IF_MATCH)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Serves the API over TLS until `shutdown` turns true.
pub async fn serve(
    hub: Arc<Hub>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: watch::Receiver<bool>,
) {
    let timeout = std::time::Duration::from_secs(hub.config.limits.connect_timeout_secs);
    let counted = hub.clone();
    let on_timeout: ferrohub_runtime::net::OnTimeout =
        Arc::new(move || crate::mqtt::connect_timed_out(&counted));
    let deadline = (timeout, on_timeout);
    ferrohub_runtime::net::serve_https(listener, tls, router(hub), deadline, "https", shutdown)
        .await;
}
