//! Device and module twins, and direct methods.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Target, admit, admit_device, if_match, json, json_body};
use crate::Hub;
use crate::config::Right;
use crate::twin::TwinState;
use ferrohub_runtime::error::ApiError;
use hub_wire::model::{Device, Module};

type Result<T> = std::result::Result<T, ApiError>;

/// The twin document of a device: what `GET /twins/{id}` returns and what queries run over.
pub fn device_document(d: &Device, t: &TwinState) -> Value {
    json!({
        "deviceId": d.device_id,
        "modelId": d.model_id.as_deref().unwrap_or_default(),
        "etag": t.etag,
        "deviceEtag": d.etag,
        "status": d.status,
        "statusReason": d.status_reason,
        "statusUpdateTime": d.status_updated_time,
        "connectionState": d.connection_state,
        "lastActivityTime": d.last_activity_time,
        "cloudToDeviceMessageCount": d.cloud_to_device_message_count,
        "authenticationType": d.authentication.kind(),
        "x509Thumbprint": d.authentication.x509_thumbprint,
        "capabilities": d.capabilities,
        "deviceScope": d.device_scope,
        "parentScopes": d.parent_scopes,
        "version": t.version,
        "tags": t.tags,
        "properties": t.service_properties(),
    })
}

/// The twin document of a module (`GET /twins/{id}/modules/{mid}`, `SELECT * FROM devices.modules`).
pub fn module_document(m: &Module, t: &TwinState) -> Value {
    json!({
        "deviceId": m.device_id,
        "moduleId": m.module_id,
        "modelId": m.model_id.as_deref().unwrap_or_default(),
        "etag": t.etag,
        "deviceEtag": m.etag,
        "connectionState": m.connection_state,
        "lastActivityTime": m.last_activity_time,
        "cloudToDeviceMessageCount": m.cloud_to_device_message_count,
        "authenticationType": m.authentication.kind(),
        "x509Thumbprint": m.authentication.x509_thumbprint,
        "version": t.version,
        "tags": t.tags,
        "properties": t.service_properties(),
    })
}

/// `GET /twins/{id}`.
pub async fn get_twin(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit(
        &hub,
        &uri,
        &headers,
        Right::RegistryRead,
        Target::Device(&id),
    )?;
    let d = hub.registry.get_device(&id)?;
    Ok(json(
        StatusCode::OK,
        &device_document(&d, &hub.twins.get(&hub, &id)?),
    ))
}

/// `PATCH /twins/{id}` merges tags and desired properties; `PUT` replaces them.
pub async fn patch_twin(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(
        &hub,
        &uri,
        &headers,
        Right::ServiceConnect,
        Target::Device(&id),
    )?;
    let d = hub.registry.get_device(&id)?;
    let patch: Value = json_body(&body)?;
    let twin = hub.twins.patch_service(
        &hub,
        &id,
        &patch,
        &if_match(&headers),
        method == Method::PUT,
    )?;
    Ok(json(StatusCode::OK, &device_document(&d, &twin)))
}

/// `GET /twins/{id}/modules/{mid}` (also with the device's own token).
pub async fn get_module_twin(
    State(hub): State<Arc<Hub>>,
    Path((id, mid)): Path<(String, String)>,
    axum::Extension(chain): axum::Extension<ferrohub_runtime::net::PeerChain>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    admit_device(
        &hub,
        &uri,
        &headers,
        Right::RegistryRead,
        Target::Module(&id, &mid),
        &chain,
    )?;
    let m = hub.registry.get_module(&id, &mid)?;
    let twin = hub.twins.get(&hub, &m.client_id())?;
    Ok(json(StatusCode::OK, &module_document(&m, &twin)))
}

/// `PATCH` / `PUT /twins/{id}/modules/{mid}` (also with the device's own token).
pub async fn patch_module_twin(
    State(hub): State<Arc<Hub>>,
    Path((id, mid)): Path<(String, String)>,
    method: Method,
    axum::Extension(chain): axum::Extension<ferrohub_runtime::net::PeerChain>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit_device(
        &hub,
        &uri,
        &headers,
        Right::ServiceConnect,
        Target::Module(&id, &mid),
        &chain,
    )?;
    let m = hub.registry.get_module(&id, &mid)?;
    let patch: Value = json_body(&body)?;
    let twin = hub.twins.patch_service(
        &hub,
        &m.client_id(),
        &patch,
        &if_match(&headers),
        method == Method::PUT,
    )?;
    Ok(json(StatusCode::OK, &module_document(&m, &twin)))
}

/// `POST /twins/{id}/methods`: invoke a direct method and wait for the device's answer.
pub async fn invoke_method(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(
        &hub,
        &uri,
        &headers,
        Right::ServiceConnect,
        Target::Device(&id),
    )?;
    let req = json_body(&body)?;
    let result = crate::methods::invoke(&hub, &id, None, req).await?;
    Ok(json(StatusCode::OK, &result))
}

/// `POST /twins/{id}/modules/{mid}/methods`.
pub async fn invoke_module_method(
    State(hub): State<Arc<Hub>>,
    Path((id, mid)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    admit(
        &hub,
        &uri,
        &headers,
        Right::ServiceConnect,
        Target::Module(&id, &mid),
    )?;
    let req = json_body(&body)?;
    let result = crate::methods::invoke(&hub, &id, Some(&mid), req).await?;
    Ok(json(StatusCode::OK, &result))
}
