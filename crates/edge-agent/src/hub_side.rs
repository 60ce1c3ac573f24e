//! What `ferrohub hub edge set-modules` asks of the hub: a validated manifest applied to an edge
//! device (the hub's `applyConfigurationContent` writes its module twins), and single module
//! twins' desired properties.

use ferrohub_runtime::client::{ClientError, ServiceClient};
use hub_wire::{ConfigurationContent, TwinPatch, body};
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::deployment::Manifest;

#[derive(Debug, thiserror::Error)]
pub enum SetModulesError {
    #[error(transparent)]
    Hub(#[from] ClientError),
    #[error("{0} is not an IoT Edge device (capabilities.iotEdge is not true)")]
    NotEdge(String),
}

fn enc(s: &str) -> String {
    iot_auth::percent_encode(s)
}

/// Replaces the desired properties of module twin `edge_id/module_id` with `desired`.
pub async fn write_desired(
    client: &ServiceClient,
    edge_id: &str,
    module_id: &str,
    desired: &Value,
) -> Result<(), ClientError> {
    client
        .send(
            Method::PUT,
            &format!("/twins/{}/modules/{}", enc(edge_id), enc(module_id)),
            Some(&body(&TwinPatch::desired(desired.clone()))),
            &[],
        )
        .await?
        .ok()
        .map(drop)
}

/// Writes `manifest` to edge device `edge_id` with the hub's `POST
/// /devices/{id}/applyConfigurationContent` (as `az iot edge set-modules`): the hub writes
/// `$edgeHub`, then the twins of the deployment's modules (creating their identities,
/// `managedBy: iotEdge`, when missing), then `$edgeAgent`.
pub async fn set_modules(
    client: &ServiceClient,
    edge_id: &str,
    manifest: &Manifest,
) -> Result<(), SetModulesError> {
    let mut content = ConfigurationContent::default();
    let system = [
        ("$edgeAgent", &manifest.edge_agent),
        ("$edgeHub", &manifest.edge_hub),
    ];
    for (name, desired) in system
        .into_iter()
        .chain(manifest.modules.iter().map(|(n, d)| (n.as_str(), d)))
    {
        content = content.module(name, desired.clone());
    }
    let r = client
        .send(
            Method::POST,
            &format!("/devices/{}/applyConfigurationContent", enc(edge_id)),
            Some(&body(&content)),
            &[],
        )
        .await?;
    let not_edge = r.status == StatusCode::BAD_REQUEST
        && r.json()["Message"]
            .as_str()
            .is_some_and(|m| m.contains("capabilities.iotEdge"));
    if not_edge {
        return Err(SetModulesError::NotEdge(edge_id.to_owned()));
    }
    r.ok().map(drop)?;
    Ok(())
}
