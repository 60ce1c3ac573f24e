//! Direct methods: a service call becomes a [`Notification::MethodRequest`] to the device's or
//! module's live session (MQTT: a `$iothub/methods/POST/{name}/?$rid=` publish), and the
//! session's answer ([`crate::device_session::DeviceSession::method_response`]; MQTT:
//! `$iothub/methods/res/{status}/?$rid=`) completes it.
//!
//! Every call gets a hub-wide unique request id, so answers are matched to calls however many are
//! in flight, and only the identity the call went to can answer it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::Hub;
use crate::device_session::Notification;
use ferrohub_runtime::error::ApiError;

/// Largest method payload, each way (IoT Hub: 128 KB).
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;
/// Allowed `responseTimeoutInSeconds` (IoT Hub: 5 to 300, default 30).
pub const RESPONSE_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 5..=300;
use hub_wire::{MethodRequest, MethodResult};

/// Largest `connectTimeoutInSeconds` (default 0: the device must be online now).
pub const MAX_CONNECT_TIMEOUT_SECS: u64 = 300;

struct Pending {
    client_id: String,
    reply: oneshot::Sender<(u16, Vec<u8>)>,
}

/// Calls waiting for their answer, by request id.
#[derive(Default)]
pub struct Methods {
    next_rid: AtomicU64,
    pending: Mutex<HashMap<String, Pending>>,
}

/// Removes a call from the pending table however the call ends (answer, timeout, cancelled).
pub(crate) struct Registration<'a> {
    methods: &'a Methods,
    pub(crate) rid: String,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.methods.pending.lock() {
            p.remove(&self.rid);
        }
    }
}

impl Methods {
    /// Number of calls waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.pending.lock().map_or(0, |p| p.len())
    }

    /// Hands a device's answer to the waiting call. `false` when no call of this identity has
    /// this request id (late answer after a timeout, or a made-up id).
    pub fn complete(&self, client_id: &str, rid: &str, status: u16, payload: Vec<u8>) -> bool {
        let Ok(mut pending) = self.pending.lock() else {
            return false;
        };
        match pending.get(rid) {
            Some(p) if p.client_id == client_id => {}
            _ => return false,
        }
        pending
            .remove(rid)
            .is_some_and(|p| p.reply.send((status, payload)).is_ok())
    }

    pub(crate) fn register(
        &self,
        client_id: &str,
    ) -> (Registration<'_>, oneshot::Receiver<(u16, Vec<u8>)>) {
        let rid = format!("{:x}", self.next_rid.fetch_add(1, Ordering::Relaxed) + 1);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(
                rid.clone(),
                Pending {
                    client_id: client_id.to_owned(),
                    reply: tx,
                },
            );
        }
        (Registration { methods: self, rid }, rx)
    }
}

/// Invokes a method on `device_id` (or its module) and waits for the answer.
pub async fn invoke(
    hub: &Hub,
    device_id: &str,
    module_id: Option<&str>,
    req: MethodRequest,
) -> Result<MethodResult, ApiError> {
    let (response_timeout, connect_timeout, body) = validate(&req)?;
    match module_id {
        Some(m) => drop(hub.registry.get_module(device_id, m)?),
        None => drop(hub.registry.get_device(device_id)?),
    }
    let client_id = match module_id {
        Some(m) => format!("{device_id}/{m}"),
        None => device_id.to_owned(),
    };
    let started = tokio::time::Instant::now();
    let Some(session) = hub
        .connections
        .wait_for(&client_id, connect_timeout, |f| {
            f.methods.load(Ordering::Relaxed)
        })
        .await
    else {
        crate::metrics::Metrics::inc(&hub.metrics.methods_not_online);
        info!(%client_id, method = %req.method_name, "Method call refused: the device is not online");
        return Err(ApiError::not_found(
            "DeviceNotOnline",
            format!(
                "{client_id} is not connected and subscribed to $iothub/methods/POST/# (waited {}s)",
                connect_timeout.as_secs()
            ),
        ));
    };
    let (registration, answer) = hub.methods.register(&client_id);
    let call = Notification::MethodRequest {
        name: req.method_name.clone(),
        rid: registration.rid.clone(),
        payload: body,
    };
    if session.deliver(call).is_err() {
        return Err(not_online(&client_id));
    }
    crate::metrics::Metrics::inc(&hub.metrics.messages_out);
    let outcome = tokio::time::timeout(response_timeout, answer).await;
    drop(registration);
    match outcome {
        Ok(Ok((status, payload))) => {
            hub.metrics.method_latency.observe(started.elapsed());
            Ok(MethodResult {
                status: i64::from(status),
                payload: parse_payload(&payload),
            })
        }
        Ok(Err(_)) => Err(not_online(&client_id)),
        Err(_) => {
            crate::metrics::Metrics::inc(&hub.metrics.methods_timed_out);
            warn!(%client_id, method = %req.method_name, timeout_secs = response_timeout.as_secs(), "Method call timed out");
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                format!(
                    "{client_id} did not answer {:?} within {}s",
                    req.method_name,
                    response_timeout.as_secs()
                ),
            ))
        }
    }
}

fn not_online(client_id: &str) -> ApiError {
    ApiError::not_found(
        "DeviceNotOnline",
        format!("{client_id} disconnected before answering"),
    )
}

/// Checks the request; returns the response and connect timeouts and the payload bytes to send.
fn validate(req: &MethodRequest) -> Result<(Duration, Duration, Vec<u8>), ApiError> {
    let name = &req.method_name;
    if name.is_empty() || name.len() > 128 || name.contains(['/', '?', '#', '+']) {
        return Err(ApiError::bad_request(format!(
            "methodName {name:?} must be 1 to 128 characters without '/', '?', '#' or '+'"
        )));
    }
    let response = req.response_timeout_in_seconds.unwrap_or(30);
    if !RESPONSE_TIMEOUT_SECS.contains(&response) {
        return Err(ApiError::bad_request(format!(
            "responseTimeoutInSeconds {response} is outside {}..={}",
            RESPONSE_TIMEOUT_SECS.start(),
            RESPONSE_TIMEOUT_SECS.end()
        )));
    }
    let connect = req.connect_timeout_in_seconds.unwrap_or(0);
    if connect > MAX_CONNECT_TIMEOUT_SECS {
        return Err(ApiError::bad_request(format!(
            "connectTimeoutInSeconds {connect} is above {MAX_CONNECT_TIMEOUT_SECS}"
        )));
    }
    let body = serde_json::to_vec(&req.payload)
        .map_err(|e| ApiError::bad_request(format!("payload: {e}")))?;
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(ApiError::bad_request(format!(
            "payload is {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
            body.len()
        )));
    }
    Ok((
        Duration::from_secs(response),
        Duration::from_secs(connect),
        body,
    ))
}

/// The device's answer body as JSON: empty → `null`; not JSON → the text as a string.
fn parse_payload(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(name: &str, timeout: Option<u64>) -> MethodRequest {
        MethodRequest {
            method_name: name.into(),
            payload: json!({"a": 1}),
            response_timeout_in_seconds: timeout,
            connect_timeout_in_seconds: None,
        }
    }

    #[test]
    fn answers_reach_only_the_call_of_the_same_identity() {
        let m = Methods::default();
        let (reg_a, mut rx_a) = m.register("a");
        let (reg_b, mut rx_b) = m.register("b");
        assert_ne!(reg_a.rid, reg_b.rid);
        assert!(
            !m.complete("b", &reg_a.rid, 200, b"1".to_vec()),
            "b cannot answer a's call"
        );
        assert!(m.complete("a", &reg_a.rid, 200, b"1".to_vec()));
        assert_eq!(rx_a.try_recv().unwrap(), (200, b"1".to_vec()));
        assert!(
            !m.complete("a", &reg_a.rid, 200, b"2".to_vec()),
            "answered once"
        );
        assert!(rx_b.try_recv().is_err());
        drop(reg_b);
        assert_eq!(m.in_flight(), 0, "a finished call leaves nothing behind");
    }

    #[test]
    fn requests_are_validated() {
        assert!(validate(&request("reboot", None)).is_ok());
        assert!(validate(&request("", None)).is_err());
        assert!(validate(&request("a/b", None)).is_err());
        assert!(validate(&request("x", Some(4))).is_err());
        assert!(validate(&request("x", Some(301))).is_err());
        let mut big = request("x", None);
        big.payload = json!("x".repeat(MAX_PAYLOAD_BYTES));
        assert!(validate(&big).is_err());
    }

    #[test]
    fn payloads_parse_leniently() {
        assert_eq!(parse_payload(b""), Value::Null);
        assert_eq!(parse_payload(b"{\"ok\":true}"), json!({"ok": true}));
        assert_eq!(parse_payload(b"not json"), json!("not json"));
    }
}
