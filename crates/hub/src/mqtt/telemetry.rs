//! Device-to-cloud messages: topic check, the stored record, durability before PUBACK.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use iot_auth::topic::{PropertyBag, PublishTopic};
use mqtt_codec::{Publish, QoS, Will};
use tracing::warn;

use super::auth::Identity;
use crate::Hub;
use crate::events::{EventRecord, auth_method_json};
use crate::metrics::Metrics;
use crate::model::AuthType;
use crate::time::{instant, rfc3339_millis};

/// Largest telemetry body IoT Hub accepts.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A QoS 1 publish whose record is being made durable.
pub struct PendingAck {
    pub(super) packet_id: u16,
    pub(super) started: Instant,
    /// Completes when the log's writer has made the record durable; the connection's writer
    /// awaits it directly (see [`super::writer`]).
    pub(super) append: durable_log::PendingAppend,
}

/// Stores a PUBLISH on a telemetry topic as from `identity` (the connection's own identity, or
/// the sender a gateway forwards it for). `Ok(Some)` for QoS 1 (acknowledge when durable),
/// `Ok(None)` for QoS 0; `Err` names the violation that ends the connection.
pub fn accept(
    hub: &Arc<Hub>,
    identity: &Identity,
    p: &Publish,
    properties: &PropertyBag,
) -> Result<Option<PendingAck>, String> {
    if let Some(relay) = hub.relay.get() {
        relay.admit(&identity.client_id())?;
    }
    if p.payload.len() > MAX_BODY_BYTES {
        return Err(format!(
            "message body of {} bytes exceeds {MAX_BODY_BYTES}",
            p.payload.len()
        ));
    }
    let record = build_record(hub, identity, properties, &p.payload, p.retain, None);
    let bytes =
        serde_json::to_vec(&record).map_err(|e| format!("cannot encode the record: {e}"))?;
    Metrics::inc(&hub.metrics.messages_in);
    hub.metrics
        .telemetry_bytes
        .fetch_add(p.payload.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let started = instant();
    let append = submit(hub, bytes);
    match (p.qos, p.packet_id) {
        (QoS::AtLeastOnce, Some(packet_id)) => {
            Metrics::inc(&hub.metrics.inflight);
            Ok(Some(PendingAck {
                packet_id,
                started,
                append,
            }))
        }
        _ => Ok(None),
    }
}

/// Queues the record on the log now (preserving arrival order) and returns its completion.
fn submit(hub: &Arc<Hub>, bytes: Vec<u8>) -> durable_log::PendingAppend {
    let ts = crate::time::now_ms(hub.clock.as_ref()).unsigned_abs();
    hub.events.submit(ts, bytes)
}

/// On an ungraceful close, the will is stored as telemetry marked `iothub-MessageType: Will`.
pub async fn publish_will(hub: &Arc<Hub>, identity: &Identity, will: &Will) {
    let props = match will.topic.split_once("/messages/events/") {
        Some((_, bag)) => iot_auth::topic::parse_publish_topic(&will.topic)
            .ok()
            .and_then(|t| match t {
                PublishTopic::Telemetry { properties, .. } => Some(properties),
                _ => None,
            })
            .unwrap_or_else(|| {
                warn!(
                    bag,
                    "Will property bag unreadable; storing the will without it"
                );
                PropertyBag::default()
            }),
        None => PropertyBag::default(),
    };
    let record = build_record(
        hub,
        identity,
        &props,
        &will.payload,
        will.retain,
        Some("Will"),
    );
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
