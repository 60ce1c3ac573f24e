//! The MQTT form of a cloud-to-device delivery: the topic (`devices/{id}/messages/devicebound/
//! {props}`, or a module's `devices/{d}/modules/{m}/inputs/{input}/{props}`) and the payload of a
//! message taken from the core's queue. Only the MQTT head knows these topics.

use base64::Engine as _;

use crate::store::C2dMessage;

/// The topic and payload of a queued cloud-to-device message.
pub fn publication(device_id: &str, msg: &C2dMessage) -> (String, Vec<u8>) {
    use iot_auth::topic::{PropertyBag, SystemProperty};
    let mut bag = PropertyBag::new();
    bag.push_system(SystemProperty::MessageId, msg.message_id.clone());
    bag.push_system(
        SystemProperty::To,
        format!("/devices/{device_id}/messages/deviceBound"),
    );
    if let Some(c) = &msg.correlation_id {
        bag.push_system(SystemProperty::CorrelationId, c.clone());
    }
    for (k, v) in &msg.properties {
        bag.push(k.clone(), Some(v.clone()));
    }
    let body = base64::engine::general_purpose::STANDARD
        .decode(&msg.body)
        .unwrap_or_default();
    (iot_auth::topic::c2d_topic(device_id, &bag), body)
}

/// The topic and payload of a queued module input message:
/// `devices/{d}/modules/{m}/inputs/{input}/{bag}`.
pub fn input_publication(device_id: &str, module_id: &str, msg: &C2dMessage) -> (String, Vec<u8>) {
    use iot_auth::topic::{PropertyBag, SystemProperty};
    let mut bag = PropertyBag::new();
    bag.push_system(SystemProperty::MessageId, msg.message_id.clone());
    if let Some(c) = &msg.correlation_id {
        bag.push_system(SystemProperty::CorrelationId, c.clone());
    }
    for (wire, value) in &msg.system {
        if let Some(p) = SystemProperty::from_wire(wire)
            && !matches!(p, SystemProperty::MessageId | SystemProperty::CorrelationId)
        {
            bag.push_system(p, value.clone());
        }
    }
    for (k, v) in &msg.properties {
        bag.push(k.clone(), Some(v.clone()));
    }
    let body = base64::engine::general_purpose::STANDARD
        .decode(&msg.body)
        .unwrap_or_default();
    let input = msg.input.as_deref().unwrap_or("input");
    (
        iot_auth::topic::module_input_topic(device_id, module_id, input, &bag),
        body,
    )
}
