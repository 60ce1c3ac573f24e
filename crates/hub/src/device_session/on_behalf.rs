//! Connections on behalf of another identity (IoT Edge's `auth-chain`): a gateway connects for a
//! downstream device with the MQTT username `…&auth-chain={device};{edge}[;{parent edge}…]` and
//! its own `$edgeHub` SAS token. The hub accepts it only when every link of the chain is a real
//! parent link (the child's `deviceScope`, or a nested edge's `parentScopes`, names the next edge's
//! scope) and the token verifies with the last edge's `$edgeHub` keys. An edge device's own
//! modules come the same way: `auth-chain={edge}/{module};{edge}`. The session rests on that
//! edge's keys ([`Credential::Gateway`]).

use super::auth::{Credential, Refusal, check_sas};
use crate::Hub;
use hub_wire::model::{Device, Status};

use super::forwarded::EDGE_HUB;

/// Checks `chain` for the connecting identity `client_id`; returns what the session rests on: the
/// `$edgeHub` of the edge that signed the token (its device, for a device-level token; a policy
/// token too is for the `$edgeHub`, whose chain it speaks for).
pub fn authenticate(
    hub: &Hub,
    client_id: &str,
    chain: &str,
    password: Option<&[u8]>,
) -> Result<Credential, Refusal> {
    let ids: Vec<&str> = chain.split(';').filter(|s| !s.is_empty()).collect();
    if ids.len() < 2 || ids[0] != client_id {
        return Err(Refusal::BadUsername(format!(
            "auth-chain {chain:?} must start with the connecting identity {client_id:?} and name its edge device"
        )));
    }
    let store = hub.registry.store();
    // A module (`device/module`) belongs to its device; when that device is the next link (an
    // edge device's own module) the chain continues from it.
    let (first, parents) = match ids[0].split_once('/') {
        Some((device, module)) => {
            store
                .get_module(device, module)
                .map_err(|_| Refusal::Unavailable)?
                .ok_or_else(|| Refusal::UnknownModule(ids[0].to_owned()))?;
            let rest = if ids[1] == device {
                &ids[2..]
            } else {
                &ids[1..]
            };
            (device, rest)
        }
        None => (ids[0], &ids[1..]),
    };
    let mut child = load_device(hub, first)?;
    for parent_id in parents {
        let parent = load_device(hub, parent_id)?;
        let scope = edge_scope(&parent)?;
        if !linked(&child, &scope) {
            return Err(Refusal::OutOfScope(format!(
                "{} is not a child of {parent_id}",
                child.device_id
            )));
        }
        child = parent;
    }
    let actor = child;
    let edge_hub = store
        .get_module(&actor.device_id, EDGE_HUB)
        .map_err(|_| Refusal::Unavailable)?
        .ok_or_else(|| Refusal::UnknownModule(format!("{}/{EDGE_HUB}", actor.device_id)))?;
    let password = password.filter(|p| !p.is_empty()).ok_or_else(|| {
        Refusal::BadToken(
            "a connection on behalf of another device needs the gateway's $edgeHub SAS token"
                .into(),
        )
    })?;
    let signer = check_sas(
        hub,
        &actor.device_id,
        Some(EDGE_HUB),
        &edge_hub.authentication,
        &actor.authentication,
        password,
    )?;
    let holder = match signer {
        Credential::DeviceKey => actor.device_id,
        _ => format!("{}/{EDGE_HUB}", actor.device_id),
    };
    Ok(Credential::Gateway(holder.into_boxed_str()))
}

/// Whether `child` is linked to the edge device whose scope is `scope`: a device by its
/// `deviceScope`, a nested edge device by its `parentScopes`.
pub(super) fn linked(child: &Device, scope: &str) -> bool {
    if child.capabilities.iot_edge {
        child.parent_scopes.iter().any(|s| s == scope)
    } else {
        child.device_scope.as_deref() == Some(scope)
    }
}

/// A device from the registry; a failing registry is [`Refusal::Unavailable`].
pub(super) fn load_device(hub: &Hub, id: &str) -> Result<Device, Refusal> {
    hub.registry
        .store()
        .get_device(id)
        .map_err(|_| Refusal::Unavailable)?
        .ok_or_else(|| Refusal::UnknownDevice(id.to_owned()))
}

/// The scope of an enabled edge device (what its children name in `deviceScope`).
pub(super) fn edge_scope(edge: &Device) -> Result<String, Refusal> {
    if edge.status == Status::Disabled {
        return Err(Refusal::Disabled(edge.device_id.clone()));
    }
    edge.device_scope
        .clone()
        .filter(|_| edge.capabilities.iot_edge)
        .ok_or_else(|| Refusal::OutOfScope(format!("{} is not an edge device", edge.device_id)))
}
