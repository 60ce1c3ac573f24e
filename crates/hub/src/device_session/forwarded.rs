//! Telemetry a gateway forwards for others over its own connection (a ferrohub extension).
//!
//! IoT Hub's MQTT lets a connection publish only to its own topics, so an IoT Edge gateway opens
//! one upstream connection per downstream device. ferrohub's hub also accepts, on the
//! connection of an edge device's `$edgeHub` module, telemetry on the topic of
//! - the edge device itself or one of its modules, and
//! - a child of the edge device (`deviceScope` = the edge's scope) or one of the child's modules.
//!
//! The message is stored exactly as if the sender had sent it on its own on-behalf connection
//! (`iothub-connection-device-id` is the sender). Which senders a connection may speak for is
//! checked against the registry once and remembered until the registry changes (a device
//! disabled, removed or moved to another parent is checked again at its next message).

use std::collections::HashMap;

use super::auth::{Credential, Identity, Refusal};
use super::on_behalf::{edge_scope, linked, load_device};
use crate::Hub;
use hub_wire::model::{AuthType, Status};

/// The module whose connection may carry others' telemetry.
pub const EDGE_HUB: &str = "$edgeHub";
/// Senders one connection remembers; past this the memory starts over.
const MAX_KNOWN: usize = 10_000;

/// What one connection remembers about the senders it spoke for.
#[derive(Default)]
pub struct Senders {
    /// The registry epoch `known` is valid for.
    epoch: u64,
    /// Client id (`device` or `device/module`) → the identity its messages are stored under.
    known: HashMap<String, Identity>,
    /// The client id being looked up (reused: no allocation per message).
    key: String,
}

/// Why a message for another sender is not stored.
#[derive(Debug)]
pub enum NotStored {
    /// The connection may not publish for others at all: a protocol violation.
    Violation(String),
    /// The sender is not (or no longer) one the gateway may speak for.
    Refused(Refusal),
}

/// Whether `identity` is a gateway's `$edgeHub`, whose connection carries others' telemetry.
pub fn is_edge_hub(identity: &Identity) -> bool {
    identity.module_id.as_deref() == Some(EDGE_HUB)
}

/// The identity to store a message on `device_id`/`module_id`'s topic under, when the
/// connection `own` publishes it: `own` for its own topic; otherwise, for a gateway's `$edgeHub`,
/// the sender it speaks for, remembered in `senders` (allocated at the first such message, so an
/// ordinary connection never pays for it).
pub fn resolve<'a>(
    senders: &'a mut Option<Box<Senders>>,
    hub: &Hub,
    own: &'a Identity,
    device_id: &str,
    module_id: Option<&str>,
) -> Result<&'a Identity, NotStored> {
    if device_id == own.device_id && module_id == own.module_id.as_deref() {
        return Ok(own);
    }
    if !is_edge_hub(own) {
        return Err(NotStored::Violation(format!(
            "publish to another identity's topic (devices/{device_id}{})",
            module_id
                .map(|m| format!("/modules/{m}"))
                .unwrap_or_default()
        )));
    }
    senders
        .get_or_insert_with(Box::default)
        .lookup(hub, &own.device_id, device_id, module_id)
}

impl Senders {
    /// The sender `device_id`/`module_id` that the `$edgeHub` of `edge_id` speaks for, checked
    /// once per registry epoch.
    fn lookup(
        &mut self,
        hub: &Hub,
        edge_id: &str,
        device_id: &str,
        module_id: Option<&str>,
    ) -> Result<&Identity, NotStored> {
        let epoch = hub.registry.epoch();
        if epoch != self.epoch || self.known.len() >= MAX_KNOWN {
            self.known.clear();
            self.epoch = epoch;
        }
        self.key.clear();
        self.key.push_str(device_id);
        if let Some(m) = module_id {
            self.key.push('/');
            self.key.push_str(m);
        }
        if !self.known.contains_key(&self.key) {
            let sender = check(hub, edge_id, device_id, module_id).map_err(NotStored::Refused)?;
            self.known.insert(self.key.clone(), sender);
        }
        self.known
            .get(&self.key)
            .ok_or_else(|| NotStored::Violation("sender lost".into()))
    }
}

/// Whether the `$edgeHub` of `edge_id` may send for `device_id`/`module_id`; the identity to
/// store its messages under when it may.
fn check(
    hub: &Hub,
    edge_id: &str,
    device_id: &str,
    module_id: Option<&str>,
) -> Result<Identity, Refusal> {
    let edge = load_device(hub, edge_id)?;
    let scope = edge_scope(&edge)?;
    let device = if device_id == edge_id {
        edge
    } else {
        let d = load_device(hub, device_id)?;
        if d.status == Status::Disabled {
            return Err(Refusal::Disabled(d.device_id));
        }
        if !linked(&d, &scope) {
            return Err(Refusal::OutOfScope(format!(
                "{device_id} is not a child of {edge_id}"
            )));
        }
        d
    };
    let generation_id = match module_id {
        None => device.generation_id,
        Some(m) => {
            hub.registry
                .store()
                .get_module(device_id, m)
                .map_err(|_| Refusal::Unavailable)?
                .ok_or_else(|| Refusal::UnknownModule(format!("{device_id}/{m}")))?
                .generation_id
        }
    };
    Ok(Identity {
        device_id: device_id.to_owned(),
        module_id: module_id.map(str::to_owned),
        auth_type: AuthType::Sas,
        generation_id,
        token_expiry: None,
        credential: Credential::Gateway(format!("{edge_id}/{EDGE_HUB}").into_boxed_str()),
    })
}
