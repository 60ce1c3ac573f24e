//! The device-scope API a gateway's `$edgeHub` uses to learn which devices and modules it may
//! authenticate locally (its own device and modules, its children and theirs), with their keys
//! and thumbprints; paged like IoT Hub's (`deviceCount`, `continuationToken`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::json;
use crate::Hub;
use crate::metrics::Metrics;
use ferrohub_runtime::error::ApiError;
use hub_wire::model::Device;

type Result<T> = std::result::Result<T, ApiError>;

fn param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| iot_auth::percent_decode(v).unwrap_or_else(|| v.to_owned()))
    })
}

fn admit(hub: &Hub, uri: &Uri, headers: &HeaderMap, edge_id: &str) -> Result<Device> {
    Metrics::inc(&hub.metrics.http_requests);
    let checked = super::auth::check_api_version(uri.query())
        .and_then(|()| super::auth::authorize_edge_hub(hub, headers, edge_id))
        .and_then(|_| hub.registry.get_device(edge_id));
    if checked.is_err() {
        Metrics::inc(&hub.metrics.http_errors);
    }
    checked
}

/// The edge device and every device whose `deviceScope` is the edge's scope, in id order.
fn in_scope(hub: &Hub, edge: &Device) -> Result<Vec<Device>> {
    let scope = edge.device_scope.clone().unwrap_or_default();
    Ok(hub
        .registry
        .list_devices(None)?
        .into_iter()
        .filter(|d| {
            d.device_id == edge.device_id
                || (!scope.is_empty() && d.device_scope.as_deref() == Some(scope.as_str()))
        })
        .collect())
}

/// The devices, their modules, and the verified CA certificates (a gateway needs them to
/// authenticate CA-signed children; a ferrohub addition to the response).
fn with_modules(hub: &Hub, devices: &[Device]) -> Result<Value> {
    let mut modules = Vec::new();
    for d in devices {
        modules.extend(hub.registry.list_modules(&d.device_id)?);
    }
    let cas: Vec<Value> = hub
        .cas
        .list()?
        .into_iter()
        .filter(|c| c.is_verified)
        .map(|c| json!({"name": c.name, "certificate": c.certificate}))
        .collect();
    Ok(json!({ "devices": devices, "modules": modules, "certificateAuthorities": cas }))
}

/// `GET /devices/{edge}/modules/$edgeHub/devicesAndModulesInDeviceScope?deviceCount=&continuationToken=`.
pub async fn devices_in_scope(
    State(hub): State<Arc<Hub>>,
    Path(edge_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    let edge = admit(&hub, &uri, &headers, &edge_id)?;
    let all = in_scope(&hub, &edge)?;
    let count = param(&uri, "deviceCount")
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|c| *c > 0)
        .unwrap_or(100)
        .min(1000);
    let start = match param(&uri, "continuationToken") {
        Some(t) if !t.is_empty() => t
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("bad continuationToken"))?,
        _ => 0,
    };
    let end = (start + count).min(all.len());
    let mut body = with_modules(&hub, all.get(start..end).unwrap_or_default())?;
    body["continuationLink"] = if end < all.len() {
        json!(format!(
            "/devices/{edge_id}/modules/$edgeHub/devicesAndModulesInDeviceScope?deviceCount={count}&continuationToken={end}"
        ))
    } else {
        Value::Null
    };
    Ok(json(StatusCode::OK, &body))
}

/// `GET /devices/{edge}/modules/$edgeHub/deviceAndModuleInDeviceScope?targetDeviceId=[&targetModuleId=]`.
pub async fn device_in_scope(
    State(hub): State<Arc<Hub>>,
    Path(edge_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    let edge = admit(&hub, &uri, &headers, &edge_id)?;
    let target = param(&uri, "targetDeviceId")
        .ok_or_else(|| ApiError::bad_request("targetDeviceId is required"))?;
    let found: Vec<Device> = in_scope(&hub, &edge)?
        .into_iter()
        .filter(|d| d.device_id == target)
        .collect();
    let mut body = with_modules(&hub, &found)?;
    if let Some(m) = param(&uri, "targetModuleId")
        && let Some(list) = body["modules"].as_array_mut()
    {
        list.retain(|x| x["moduleId"] == m.as_str());
    }
    Ok(json(StatusCode::OK, &body))
}
