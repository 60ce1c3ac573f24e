//! Device-to-cloud messages: the stored record (with the sender's connection properties), its
//! size limit, and its way to durability. The head acknowledges a message once its [`Durable`]
//! completes (MQTT: the PUBACK of a QoS 1 publish).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use iot_auth::topic::PropertyBag;
use tracing::warn;

use super::auth::Identity;
use crate::Hub;
use crate::events::{EventRecord, auth_method_json};
use crate::metrics::Metrics;
use ferrohub_runtime::time::{instant, rfc3339_millis};
use hub_wire::model::AuthType;

/// Largest telemetry body IoT Hub accepts.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A stored message on its way to durability.
pub struct Durable {
    /// When the message was accepted (the telemetry latency metric).
    pub started: Instant,
    /// Completes when the log's writer has made the record durable; a head may await it
    /// directly (the MQTT writer does) or drop it (nothing to acknowledge).
    pub append: durable_log::PendingAppend,
}

/// Stores a message from `identity` (the session's own identity, or the sender a gateway
/// forwards it for): queued on the log in arrival order; `Err` names the violation that ends
/// the session.
pub fn accept(
    hub: &Arc<Hub>,
    identity: &Identity,
    properties: &PropertyBag,
    body: &[u8],
    retain: bool,
) -> Result<Durable, String> {
    if let Some(upstream) = hub.upstream.get() {
        upstream.admit(&identity.client_id())?;
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(format!(
            "message body of {} bytes exceeds {MAX_BODY_BYTES}",
            body.len()
        ));
    }
    let record = build_record(hub, identity, properties, body, retain, None);
    let bytes =
        serde_json::to_vec(&record).map_err(|e| format!("cannot encode the record: {e}"))?;
    Metrics::inc(&hub.metrics.messages_in);
    hub.metrics
        .telemetry_bytes
        .fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let started = instant();
    let append = submit(hub, bytes);
    Ok(Durable { started, append })
}

/// Queues the record on the log now (preserving arrival order) and returns its completion.
fn submit(hub: &Arc<Hub>, bytes: Vec<u8>) -> durable_log::PendingAppend {
    let ts = ferrohub_runtime::time::now_ms(hub.clock.as_ref()).unsigned_abs();
    hub.events.submit(ts, bytes)
}

/// Stores a session's last will (its protocol's message for an ungraceful end) as telemetry
/// marked `iothub-MessageType: Will`, and waits until it is durable.
pub async fn store_will(
    hub: &Arc<Hub>,
    identity: &Identity,
    properties: &PropertyBag,
    body: &[u8],
    retain: bool,
) {
    let record = build_record(hub, identity, properties, body, retain, Some("Will"));
    match serde_json::to_vec(&record) {
        Ok(bytes) => match submit(hub, bytes).await {
            Ok(_) => Metrics::inc(&hub.metrics.messages_in),
            other => warn!(?other, "Could not store the will message"),
        },
        Err(e) => warn!(error = %e, "Could not encode the will message"),
    }
}

fn build_record(
    hub: &Hub,
    identity: &Identity,
    bag: &PropertyBag,
    payload: &[u8],
    retain: bool,
    message_type: Option<&str>,
) -> EventRecord {
    let enqueued = rfc3339_millis(hub.clock.now());
    let split = bag.split_system();
    let mut system_properties: BTreeMap<String, String> = split
        .system
        .iter()
        .map(|(p, v)| (p.name().to_owned(), v.clone().unwrap_or_default()))
        .collect();
    let mut properties: BTreeMap<String, Option<String>> = split.application.into_iter().collect();
    system_properties.insert(
        "iothub-connection-device-id".into(),
        identity.device_id.clone(),
    );
    if let Some(m) = &identity.module_id {
        system_properties.insert("iothub-connection-module-id".into(), m.clone());
    }
    let kind = match identity.auth_type {
        AuthType::SelfSigned => "x509Certificate",
        AuthType::CertificateAuthority => "x509CA",
        _ => "sas",
    };
    system_properties.insert(
        "iothub-connection-auth-method".into(),
        auth_method_json(identity.scope(), kind),
    );
    system_properties.insert(
        "iothub-connection-auth-generation-id".into(),
        identity.generation_id.clone(),
    );
    system_properties.insert("iothub-enqueuedtime".into(), enqueued.clone());
    system_properties.insert("iothub-message-source".into(), "Telemetry".into());
    if retain {
        properties.insert("mqtt-retain".into(), Some("true".into()));
    }
    if let Some(t) = message_type {
        properties.insert("iothub-MessageType".into(), Some(t.into()));
    }
    let mut record = EventRecord {
        device_id: identity.device_id.clone(),
        module_id: identity.module_id.clone(),
        enqueued_time: enqueued,
        system_properties,
        properties,
        body: String::new(),
        body_encoding: String::new(),
    };
    record.set_body(payload);
    record
}
