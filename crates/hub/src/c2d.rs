//! Cloud-to-device messages: a per-device durable queue in the registry store (depth limit, TTL).
//! A live session takes them through [`crate::device_session::DeviceSession::c2d_take`] and its
//! protocol head delivers them in its own wire form (MQTT: [`crate::mqtt::c2d_topic`]).
//! Unacknowledged messages stay queued and are delivered again after a reconnect.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::Hub;
use crate::store::C2dMessage;
use ferrohub_runtime::error::ApiError;
use hub_wire::SendRequest;

/// Azure's default queue depth per device.
pub const MAX_QUEUE_DEPTH: usize = 50;
/// Default and maximum time to live.
pub const DEFAULT_TTL_SECS: u64 = 3600;
pub const MAX_TTL_SECS: u64 = 48 * 3600;

/// Queues a message for a device and wakes its connection.
pub fn send(hub: &Hub, device_id: &str, req: SendRequest) -> Result<C2dMessage, ApiError> {
    hub.registry.get_device(device_id)?;
    let bytes = match req.body_encoding.as_deref() {
        None | Some("utf-8") => req.body.into_bytes(),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(&req.body)
            .map_err(|_| ApiError::bad_request("body is not base64"))?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "bodyEncoding {other:?} is not utf-8 or base64"
            )));
        }
    };
    if bytes.len() > 64 * 1024 {
        return Err(ApiError::bad_request(
            "cloud-to-device bodies are limited to 64 KiB",
        ));
    }
    let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > MAX_TTL_SECS {
        return Err(ApiError::bad_request(format!(
            "ttlSeconds must be 1 to {MAX_TTL_SECS}"
        )));
    }
    let now_ms = ferrohub_runtime::time::now_ms(hub.clock.as_ref());
    let mut msg = C2dMessage {
        seq: 0,
        message_id: req
            .message_id
            .unwrap_or_else(ferrohub_runtime::etag::new_etag),
        correlation_id: req.correlation_id,
        properties: req.properties,
        body: base64::engine::general_purpose::STANDARD.encode(bytes),
        enqueued_ms: now_ms,
        expiry_ms: now_ms + i64::try_from(ttl * 1000).unwrap_or(i64::MAX),
        delivery_count: 0,
        input: None,
        system: BTreeMap::new(),
    };
    match hub
        .registry
        .store()
        .c2d_enqueue(device_id, &msg, MAX_QUEUE_DEPTH, now_ms)?
    {
        Some(seq) => msg.seq = seq,
        None => {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "DeviceMaximumQueueDepthExceeded",
                format!("the queue of {device_id} already holds {MAX_QUEUE_DEPTH} messages"),
            ));
        }
    }
    hub.connections.wake(device_id);
    Ok(msg)
}

/// Queues a message for a client (`device` for cloud-to-device, `device/module` for a module
/// input) unless its queue holds `max_depth` live messages, and wakes its connection. `Ok(false)`
/// when the queue is full.
pub fn enqueue(
    hub: &Hub,
    client_id: &str,
    msg: &C2dMessage,
    max_depth: usize,
) -> Result<bool, ferrohub_runtime::store::StoreError> {
    let now_ms = ferrohub_runtime::time::now_ms(hub.clock.as_ref());
    let queued = hub
        .registry
        .store()
        .c2d_enqueue(client_id, msg, max_depth, now_ms)?
        .is_some();
    if queued {
        hub.connections.wake(client_id);
    }
    Ok(queued)
}
