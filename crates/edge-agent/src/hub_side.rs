//! What `ferrohub hub edge set-modules` does at the hub: writes a validated manifest into the
//! module twins of an edge device, `$edgeHub` first and `$edgeAgent` last, so the agent, which
//! acts on `$edgeAgent` changes, finds the routes of the same deployment in place.

use hub::client::{ClientError, ServiceClient};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

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
            Some(&json!({"properties": {"desired": desired}})),
            &[],
        )
        .await?
        .ok()
        .map(drop)
}

/// Writes `manifest` to edge device `edge_id`: `$edgeHub`, then the twins of the deployment's
/// modules (creating their identities, `managedBy: iotEdge`, when missing), then `$edgeAgent`.
pub async fn set_modules(
    client: &ServiceClient,
    edge_id: &str,
    manifest: &Manifest,
) -> Result<(), SetModulesError> {
    let device = client
        .send(
            Method::GET,
            &format!("/devices/{}", enc(edge_id)),
            None,
            &[],
        )
        .await?
        .ok()?
        .json();
    if device["capabilities"]["iotEdge"] != true {
        return Err(SetModulesError::NotEdge(edge_id.to_owned()));
    }
    write_desired(client, edge_id, "$edgeHub", &manifest.edge_hub).await?;
    for (module, desired) in &manifest.modules {
        let path = format!("/devices/{}/modules/{}", enc(edge_id), enc(module));
        let r = client.send(Method::GET, &path, None, &[]).await?;
        if r.status == StatusCode::NOT_FOUND {
            let body = json!({"moduleId": module, "deviceId": edge_id, "managedBy": "iotEdge"});
            client
                .send(Method::PUT, &path, Some(&body), &[])
                .await?
                .ok()?;
        }
        write_desired(client, edge_id, module, desired).await?;
    }
    write_desired(client, edge_id, "$edgeAgent", &manifest.edge_agent).await?;
    Ok(())
}
