//! `POST /devices/{id}/applyConfigurationContent`: a deployment written into the module twins of
//! an IoT Edge device, as IoT Hub's "Apply Configuration On Edge Device" (`az iot edge
//! set-modules`, the service SDKs' `applyConfigurationContentOnDevice`, and `ferrohub hub edge
//! set-modules`, which calls this route after validating the manifest).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hub_wire::TwinPatch;
use serde_json::{Map, Value};

use super::{Target, admit, json_body};
use crate::Hub;
use crate::config::Right;
use ferrohub_runtime::error::ApiError;
use ferrohub_runtime::etag::IfMatch;
use hub_wire::model::Module;

/// The system modules every deployment has: `$edgeHub` is written first and `$edgeAgent` last,
/// so the agent, which acts on `$edgeAgent` changes, finds the routes of the same deployment.
const EDGE_AGENT: &str = "$edgeAgent";
const EDGE_HUB: &str = "$edgeHub";

/// `POST /devices/{id}/applyConfigurationContent`: 204 once every module twin is written.
pub async fn apply(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admit(
        &hub,
        &uri,
        &headers,
        Right::RegistryWrite,
        Target::Device(&id),
    )?;
    let content: Value = json_body(&body)?;
    let desired = modules_desired(&content)?;
    apply_on_edge_device(&hub, &id, &desired)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The desired properties of each module in `{"modulesContent": {"<module>":
/// {"properties.desired": {...}}}}` (or `{"properties": {"desired": {...}}}`). `deviceContent`
/// and `moduleContent` (automatic device management) may be present empty, as the SDKs send them.
fn modules_desired(content: &Value) -> Result<Map<String, Value>, ApiError> {
    let top = content
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the configuration content must be a JSON object"))?;
    for other in ["deviceContent", "moduleContent"] {
        match top.get(other) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) if m.is_empty() => {}
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "{other} cannot be applied to an edge device; put the deployment in \
                     modulesContent"
                )));
            }
        }
    }
    let modules = top
        .get("modulesContent")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ApiError::bad_request("modulesContent (an object of module twins) is required")
        })?;
    let mut desired = Map::new();
    for (name, section) in modules {
        let d = section
            .get("properties.desired")
            .or_else(|| section.get("properties").and_then(|p| p.get("desired")))
            .filter(|d| d.is_object())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "modulesContent.{name} must have \"properties.desired\" as an object"
                ))
            })?;
        desired.insert(name.clone(), d.clone());
    }
    for system in [EDGE_AGENT, EDGE_HUB] {
        if !desired.contains_key(system) {
            return Err(ApiError::bad_request(format!(
                "modulesContent must have {system}"
            )));
        }
    }
    Ok(desired)
}

/// Writes `desired` into the module twins of edge device `id`: `$edgeHub`, then the others
/// (creating their identities, `managedBy: iotEdge`, when missing), then `$edgeAgent`.
fn apply_on_edge_device(
    hub: &Arc<Hub>,
    id: &str,
    desired: &Map<String, Value>,
) -> Result<(), ApiError> {
    let device = hub.registry.get_device(id)?;
    if !device.capabilities.iot_edge {
        return Err(ApiError::bad_request(format!(
            "{id} is not an IoT Edge device (capabilities.iotEdge is not true); a deployment \
             applies only to edge devices"
        )));
    }
    let others = desired
        .iter()
        .filter(|(name, _)| *name != EDGE_AGENT && *name != EDGE_HUB);
    let ordered = std::iter::once((EDGE_HUB, &desired[EDGE_HUB]))
        .chain(others.map(|(n, d)| (n.as_str(), d)))
        .chain(std::iter::once((EDGE_AGENT, &desired[EDGE_AGENT])));
    for (module, props) in ordered {
        let m = match hub.registry.get_module(id, module) {
            Ok(m) => m,
            Err(e) if e.status == StatusCode::NOT_FOUND => {
                let input = Module {
                    module_id: module.to_owned(),
                    device_id: id.to_owned(),
                    managed_by: Some("iotEdge".to_owned()),
                    ..Module::default()
                };
                hub.registry
                    .put_module(id, module, input, &IfMatch::Absent)?
                    .0
            }
            Err(e) => return Err(e),
        };
        let patch = hub_wire::body(&TwinPatch::desired(props.clone()));
        hub.twins
            .patch_service(hub, &m.client_id(), &patch, &IfMatch::Any, true)?;
    }
    Ok(())
}
