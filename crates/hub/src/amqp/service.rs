//! The service side over AMQP: cloud-to-device messages sent to `/messages/devicebound`, each
//! addressed by its `to` property (`/devices/{id}/messages/devicebound`), queued as the REST API
//! queues them ([`crate::c2d::send`]). The service SDKs (Python `send_c2d_message`, Node
//! `Client.send`) send this way.

use std::sync::Arc;

use fe2o3_amqp::link::Receiver;
use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition};
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;
use hub_wire::SendRequest;
use tracing::{debug, info, warn};

use super::links::error;
use super::message::{self, simple_text};
use crate::Hub;

/// The device a service message is for, from its `to` property.
fn device_of(to: &str) -> Option<String> {
    let rest = to.strip_prefix("/devices/")?;
    let (device, tail) = rest.split_once('/')?;
    if !tail.eq_ignore_ascii_case("messages/devicebound") {
        return None;
    }
    iot_auth::percent_decode(device).filter(|d| !d.is_empty())
}

/// The queue request of a service message: body, message and correlation ids, application
/// properties (`iothub-ack` among them, as IoT Hub keeps it), time to live from the absolute
/// expiry.
pub fn send_request(
    m: &Message<Body<Value>>,
    now_ms: i64,
) -> Result<(String, SendRequest), String> {
    let props = m.properties.as_ref();
    let to = props.and_then(|p| p.to.clone()).ok_or(
        "the message has no `to` property naming the device (/devices/{id}/messages/devicebound)",
    )?;
    let device = device_of(&to).ok_or_else(|| format!("`to` = {to:?} names no device"))?;
    let body = message::body_bytes(&m.body)?;
    let ttl_seconds = props
        .and_then(|p| p.absolute_expiry_time.as_ref())
        .map(|t| u64::try_from((t.milliseconds() - now_ms).max(1000) / 1000).unwrap_or(1));
    let mut properties = std::collections::BTreeMap::new();
    if let Some(ap) = &m.application_properties {
        for (k, v) in ap.0.iter() {
            if let Some(v) = simple_text(v) {
                properties.insert(k.clone(), v);
            }
        }
    }
    use base64::Engine as _;
    Ok((
        device,
        SendRequest {
            body: base64::engine::general_purpose::STANDARD.encode(body),
            body_encoding: Some("base64".into()),
            properties,
            message_id: props
                .and_then(|p| p.message_id.as_ref())
                .map(message::id_text),
            correlation_id: props
                .and_then(|p| p.correlation_id.as_ref())
                .map(message::id_text),
            ttl_seconds: ttl_seconds.map(|t| t.min(crate::c2d::MAX_TTL_SECS)),
        },
    ))
}

/// Cloud-to-device messages from the service on `link`: each is queued and accepted, or
/// rejected with IoT Hub's condition (an unknown device `amqp:not-found`, a full queue
/// `amqp:resource-limit-exceeded`).
pub async fn cloud_to_device(hub: Arc<Hub>, mut link: Receiver) {
    while let Ok(delivery) = link.recv::<Body<Value>>().await {
        let now_ms = ferrohub_runtime::time::now_ms(hub.clock.as_ref());
        let queued = send_request(delivery.message(), now_ms)
            .map_err(|e| error(AmqpError::InvalidField, e))
            .and_then(|(device, req)| {
                crate::c2d::send(&hub, &device, req)
                    .map(|msg| (device, msg))
                    .map_err(|e| {
                        let condition: ErrorCondition = match e.status.as_u16() {
                            404 => AmqpError::NotFound.into(),
                            403 => AmqpError::ResourceLimitExceeded.into(),
                            400 => AmqpError::InvalidField.into(),
                            _ => AmqpError::InternalError.into(),
                        };
                        error(condition, e.message)
                    })
            });
        let settled = match queued {
            Ok((device, msg)) => {
                info!(%device, message_id = %msg.message_id, "Cloud-to-device message queued (AMQP)");
                link.accept(&delivery).await
            }
            Err(e) => {
                warn!(reason = ?e.description, "Refusing a cloud-to-device message");
                link.reject(&delivery, e).await
            }
        };
        if settled.is_err() {
            break;
        }
    }
    debug!("Service cloud-to-device link ended");
    let _ = link.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::{ApplicationProperties, Data, MessageId, Properties};
    use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Timestamp};

    #[test]
    fn service_message_becomes_a_queue_request() {
        let m: Message<Body<Value>> = Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(
                Properties::builder()
                    .message_id(MessageId::String("svc-1".into()))
                    .to("/devices/dev%201/messages/devicebound")
                    .absolute_expiry_time(Timestamp::from_milliseconds(70_000))
                    .build(),
            ),
            application_properties: Some(
                ApplicationProperties::builder()
                    .insert("iothub-ack", SimpleValue::String("full".into()))
                    .build(),
            ),
            body: Body::Data(vec![Data(Binary::from(b"hi".to_vec()))].into()),
            footer: None,
        };
        let (device, req) = send_request(&m, 10_000).unwrap();
        assert_eq!(device, "dev 1");
        assert_eq!(req.message_id.as_deref(), Some("svc-1"));
        assert_eq!(req.ttl_seconds, Some(60));
        assert_eq!(req.body, "aGk=");
        assert_eq!(
            req.properties.get("iothub-ack").map(String::as_str),
            Some("full")
        );
    }

    #[test]
    fn to_must_name_a_device_queue() {
        assert_eq!(
            device_of("/devices/d1/messages/devicebound").as_deref(),
            Some("d1")
        );
        assert_eq!(device_of("/devices/d1/messages/events"), None);
        assert_eq!(device_of("/devices//messages/devicebound"), None);
        assert_eq!(device_of("d1"), None);
    }
}
