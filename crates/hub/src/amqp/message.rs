//! AMQP messages to and from the hub core's forms, as IoT Hub maps them: a device's message into
//! the property bag the core stores (message id, correlation id, user id, content type and
//! encoding, expiry, interface id and application properties, as over MQTT), a queued
//! cloud-to-device message into an AMQP message, twin requests and answers (message annotations
//! `operation`, `resource`, `status`, `version`), direct-method calls and answers
//! (`IoThub-methodname`, `IoThub-status`).
//!
//! Bodies the hub sends are always Data sections: the SDKs read `body.content` and lose (C2D,
//! methods) or crash on (twin) an `amqp-value` body.

use std::collections::BTreeMap;

use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Header, Message, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};
use iot_auth::topic::{PropertyBag, SystemProperty};

use crate::store::C2dMessage;

/// What the hub receives: any body section.
pub type Incoming = Message<Body<Value>>;
/// What the hub sends: one Data section.
pub type Outgoing = Message<Data>;

/// The bytes of a message body: its Data sections joined, a binary or string value, or nothing.
/// `Err` for a body the hub cannot store (a sequence, or a value of another type).
pub fn body_bytes(body: &Body<Value>) -> Result<Vec<u8>, String> {
    match body {
        Body::Data(batch) => Ok(batch.iter().flat_map(|d| d.0.iter().copied()).collect()),
        Body::Value(v) => match &v.0 {
            Value::Binary(b) => Ok(b.to_vec()),
            Value::String(s) => Ok(s.as_bytes().to_vec()),
            Value::Null => Ok(Vec::new()),
            other => Err(format!(
                "an amqp-value body of type {} (send the payload as a data section)",
                value_kind(other)
            )),
        },
        Body::Empty => Ok(Vec::new()),
        Body::Sequence(_) => Err("an amqp-sequence body (send a data section)".into()),
    }
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Array(_) => "array",
        Value::Described(_) => "described",
        _ => "scalar",
    }
}

/// A message id or correlation id as text: strings as they are, uuids hyphenated lowercase
/// (the Node SDK re-types uuid-shaped strings as uuids), numbers in decimal, binary as hex.
pub fn id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid_text(u.as_inner()),
        MessageId::Binary(b) => hex::encode(b.as_slice()),
    }
}

fn uuid_text(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// An application property's value as the text the core stores (IoT Hub keeps properties as
/// strings); `None` for null.
pub fn simple_text(v: &SimpleValue) -> Option<String> {
    Some(match v {
        SimpleValue::Null => return None,
        SimpleValue::String(s) => s.clone(),
        SimpleValue::Symbol(s) => s.as_str().to_owned(),
        SimpleValue::Bool(b) => b.to_string(),
        SimpleValue::Ubyte(n) => n.to_string(),
        SimpleValue::Ushort(n) => n.to_string(),
        SimpleValue::Uint(n) => n.to_string(),
        SimpleValue::Ulong(n) => n.to_string(),
        SimpleValue::Byte(n) => n.to_string(),
        SimpleValue::Short(n) => n.to_string(),
        SimpleValue::Int(n) => n.to_string(),
        SimpleValue::Long(n) => n.to_string(),
        SimpleValue::Float(n) => n.to_string(),
        SimpleValue::Double(n) => n.to_string(),
        SimpleValue::Char(c) => c.to_string(),
        SimpleValue::Timestamp(t) => rfc3339_ms(t.milliseconds()),
        SimpleValue::Uuid(u) => uuid_text(u.as_inner()),
        SimpleValue::Binary(b) => hex::encode(b.as_slice()),
        other => format!("{other:?}"),
    })
}

fn rfc3339_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    ferrohub_runtime::time::rfc3339_millis(t)
}

fn annotation<'a>(m: &'a Incoming, key: &str) -> Option<&'a Value> {
    m.message_annotations
        .as_ref()?
        .0
        .get(&OwnedKey::Symbol(Symbol::from(key)))
}

fn annotation_text(m: &Incoming, key: &str) -> Option<String> {
    match annotation(m, key)? {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A device's message as the core stores it: the property bag (system properties under their
/// MQTT names, then the application properties) and the body.
pub fn telemetry(m: &Incoming) -> Result<(PropertyBag, Vec<u8>), String> {
    let mut bag = PropertyBag::new();
    if let Some(p) = &m.properties {
        if let Some(id) = &p.message_id {
            bag.push_system(SystemProperty::MessageId, id_text(id));
        }
        if let Some(id) = &p.correlation_id {
            bag.push_system(SystemProperty::CorrelationId, id_text(id));
        }
        if let Some(u) = &p.user_id {
            bag.push_system(
                SystemProperty::UserId,
                String::from_utf8_lossy(u.as_slice()).into_owned(),
            );
        }
        if let Some(ct) = &p.content_type {
            bag.push_system(SystemProperty::ContentType, ct.as_str());
        }
        if let Some(ce) = &p.content_encoding {
            bag.push_system(SystemProperty::ContentEncoding, ce.as_str());
        }
        if let Some(t) = &p.absolute_expiry_time {
            bag.push_system(SystemProperty::ExpiryTimeUtc, rfc3339_ms(t.milliseconds()));
        }
        if let Some(t) = &p.creation_time {
            bag.push_system(
                SystemProperty::CreationTimeUtc,
                rfc3339_ms(t.milliseconds()),
            );
        }
    }
    for (key, prop) in [
        ("iothub-interface-id", SystemProperty::InterfaceId),
        ("dt-subject", SystemProperty::ComponentName),
        ("dt-dataschema", SystemProperty::MessageSchema),
    ] {
        if let Some(v) = annotation_text(m, key) {
            bag.push_system(prop, v);
        }
    }
    if let Some(ap) = &m.application_properties {
        for (k, v) in ap.0.iter() {
            match k.as_str() {
                // A module's output name: `$.on` over MQTT.
                "iothub-outputname" => {
                    if let Some(v) = simple_text(v) {
                        bag.push_system(SystemProperty::OutputName, v);
                    }
                }
                _ => bag.push(k.clone(), simple_text(v)),
            }
        }
    }
    Ok((bag, body_bytes(&m.body)?))
}

/// A queued cloud-to-device message (a module: input message) as the client receives it.
pub fn cloud_to_device(device_id: &str, module_id: Option<&str>, msg: &C2dMessage) -> Outgoing {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD
        .decode(&msg.body)
        .unwrap_or_default();
    let to = match module_id {
        Some(m) => format!("/devices/{device_id}/modules/{m}/inputs/{}", input(msg)),
        None => format!("/devices/{device_id}/messages/devicebound"),
    };
    let mut props = Properties::builder()
        .message_id(MessageId::String(msg.message_id.clone()))
        .to(to)
        .absolute_expiry_time(Timestamp::from_milliseconds(msg.expiry_ms))
        .creation_time(Timestamp::from_milliseconds(msg.enqueued_ms));
    if let Some(c) = &msg.correlation_id {
        props = props.correlation_id(MessageId::String(c.clone()));
    }
    let mut annotations = MessageAnnotations::builder()
        .insert(
            "x-opt-enqueued-time",
            Timestamp::from_milliseconds(msg.enqueued_ms),
        )
        .insert("x-opt-sequence-number", msg.seq);
    if module_id.is_some() {
        annotations = annotations.insert("x-opt-input-name", input(msg).to_owned());
    }
    Message::builder()
        .header(Header {
            durable: true,
            delivery_count: msg.delivery_count,
            ..Header::default()
        })
        .properties(props.build())
        .message_annotations(annotations.build())
        .application_properties(string_properties(&msg.properties))
        .data(Binary::from(body))
        .build()
}

fn input(msg: &C2dMessage) -> &str {
    msg.input.as_deref().unwrap_or("input")
}

fn string_properties(props: &BTreeMap<String, String>) -> ApplicationProperties {
    let mut b = ApplicationProperties::builder();
    for (k, v) in props {
        b = b.insert(k.clone(), SimpleValue::String(v.clone()));
    }
    b.build()
}

/// A twin request: the operation (`GET`, `PATCH`, `PUT`, `DELETE`), its resource, its
/// correlation id (echoed in the answer) and body.
#[derive(Debug, PartialEq)]
pub struct TwinRequest {
    pub operation: String,
    pub resource: Option<String>,
    pub correlation_id: Option<MessageId>,
    pub body: Vec<u8>,
}

/// Reads a twin request.
pub fn twin_request(m: &Incoming) -> Result<TwinRequest, String> {
    let operation = annotation_text(m, "operation")
        .ok_or("a twin request without an `operation` message annotation")?;
    Ok(TwinRequest {
        operation: operation.to_ascii_uppercase(),
        resource: annotation_text(m, "resource"),
        correlation_id: m.properties.as_ref().and_then(|p| p.correlation_id.clone()),
        body: body_bytes(&m.body)?,
    })
}

/// A twin answer: annotation `status` (and `version` for a reported patch), the request's
/// correlation id, the body (JSON, or empty).
pub fn twin_response(
    correlation_id: Option<MessageId>,
    status: u16,
    version: Option<u64>,
    body: &[u8],
) -> Outgoing {
    let mut annotations = MessageAnnotations::builder().insert("status", i32::from(status));
    if let Some(v) = version {
        annotations = annotations.insert("version", i64::try_from(v).unwrap_or(i64::MAX));
    }
    Message::builder()
        .properties(Properties {
            correlation_id,
            ..Properties::default()
        })
        .message_annotations(annotations.build())
        .data(Binary::from(body.to_vec()))
        .build()
}

/// A desired-properties patch pushed on the twin link: no correlation id (that is how the SDK
/// tells it from an answer), the JSON patch with its `$version`.
pub fn desired_patch(version: u64, body: &str) -> Outgoing {
    Message::builder()
        .message_annotations(
            MessageAnnotations::builder()
                .insert("version", i64::try_from(version).unwrap_or(i64::MAX))
                .build(),
        )
        .data(Binary::from(body.as_bytes().to_vec()))
        .build()
}

/// A direct-method call: `IoThub-methodname`, the call's id as correlation id, the payload.
pub fn method_request(name: &str, rid: &str, payload: &[u8]) -> Outgoing {
    Message::builder()
        .properties(Properties {
            correlation_id: Some(MessageId::String(rid.to_owned())),
            ..Properties::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("IoThub-methodname", SimpleValue::String(name.to_owned()))
                .build(),
        )
        .data(Binary::from(payload.to_vec()))
        .build()
}

/// A direct-method answer: the call's id, its status and payload.
#[derive(Debug, PartialEq, Eq)]
pub struct MethodResponse {
    pub rid: String,
    pub status: u16,
    pub payload: Vec<u8>,
}

/// Reads a direct-method answer (`IoThub-status`, correlation id = the call's id).
pub fn method_response(m: &Incoming) -> Result<MethodResponse, String> {
    let rid = m
        .properties
        .as_ref()
        .and_then(|p| p.correlation_id.as_ref())
        .map(id_text)
        .ok_or("a method answer without a correlation id")?;
    let status = m
        .application_properties
        .as_ref()
        .and_then(|ap| ap.0.get("IoThub-status"))
        .and_then(simple_text)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("a method answer without an integer `IoThub-status` application property")?;
    Ok(MethodResponse {
        rid,
        status,
        payload: body_bytes(&m.body)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::AmqpValue;
    use fe2o3_amqp::types::primitives::Uuid;

    fn incoming(
        props: Properties,
        app: ApplicationProperties,
        annotations: MessageAnnotations,
        body: Body<Value>,
    ) -> Incoming {
        Message {
            header: None,
            delivery_annotations: None,
            message_annotations: Some(annotations),
            properties: Some(props),
            application_properties: Some(app),
            body,
            footer: None,
        }
    }

    fn data(bytes: &[u8]) -> Body<Value> {
        Body::Data(vec![Data(Binary::from(bytes.to_vec()))].into())
    }

    #[test]
    fn telemetry_maps_properties_like_mqtt() {
        let m = incoming(
            Properties::builder()
                .message_id(MessageId::String("m-1".into()))
                .correlation_id(MessageId::Uuid(Uuid::from([0x11; 16])))
                .content_type(Symbol::from("application/json"))
                .content_encoding(Symbol::from("utf-8"))
                .absolute_expiry_time(Timestamp::from_milliseconds(1_800_000_000_000))
                .build(),
            ApplicationProperties::builder()
                .insert("prop1", "val1")
                .insert("n", 5i32)
                .insert("iothub-outputname", "out1")
                .build(),
            MessageAnnotations::builder()
                .insert("iothub-interface-id", "dtmi:x;1")
                .build(),
            data(b"{\"t\":1}"),
        );
        let (bag, body) = telemetry(&m).unwrap();
        assert_eq!(body, b"{\"t\":1}");
        assert_eq!(bag.get("$.mid"), Some("m-1"));
        assert_eq!(
            bag.get("$.cid"),
            Some("11111111-1111-1111-1111-111111111111")
        );
        assert_eq!(bag.get("$.ct"), Some("application/json"));
        assert_eq!(bag.get("$.ce"), Some("utf-8"));
        assert_eq!(bag.get("$.exp"), Some("2027-01-15T08:00:00.000Z"));
        assert_eq!(bag.get("$.ifid"), Some("dtmi:x;1"));
        assert_eq!(bag.get("$.on"), Some("out1"));
        assert_eq!(bag.get("prop1"), Some("val1"));
        assert_eq!(bag.get("n"), Some("5"));
    }

    #[test]
    fn bodies_the_hub_cannot_store_are_refused() {
        assert_eq!(
            body_bytes(&Body::Value(AmqpValue(Value::String("hi".into())))).unwrap(),
            b"hi"
        );
        assert!(body_bytes(&Body::Value(AmqpValue(Value::List(vec![])))).is_err());
        assert_eq!(body_bytes(&Body::Empty).unwrap(), b"");
    }

    #[test]
    fn cloud_to_device_message_has_a_data_body_and_the_queue_properties() {
        let msg = C2dMessage {
            seq: 7,
            message_id: "c2d-1".into(),
            correlation_id: Some("corr".into()),
            properties: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            body: "aGk=".into(),
            enqueued_ms: 1000,
            expiry_ms: 2000,
            delivery_count: 1,
            input: None,
            system: BTreeMap::new(),
        };
        let out = cloud_to_device("d1", None, &msg);
        assert_eq!(out.body.0.as_slice(), b"hi");
        let p = out.properties.unwrap();
        assert_eq!(p.message_id, Some(MessageId::String("c2d-1".into())));
        assert_eq!(p.correlation_id, Some(MessageId::String("corr".into())));
        assert_eq!(p.to.as_deref(), Some("/devices/d1/messages/devicebound"));
        assert_eq!(out.header.unwrap().delivery_count, 1);
        assert_eq!(
            out.application_properties.unwrap().0.get("k"),
            Some(&SimpleValue::String("v".into()))
        );
        let module = cloud_to_device("d1", Some("m1"), &msg);
        let key = OwnedKey::Symbol(Symbol::from("x-opt-input-name"));
        assert_eq!(
            module.message_annotations.unwrap().0.get(&key),
            Some(&Value::String("input".into()))
        );
    }

    #[test]
    fn twin_request_and_answer() {
        let m = incoming(
            Properties::builder()
                .correlation_id(MessageId::String("r1".into()))
                .build(),
            ApplicationProperties::builder().build(),
            MessageAnnotations::builder()
                .insert("operation", "PATCH")
                .insert("resource", "/properties/reported")
                .build(),
            data(b"{\"a\":1}"),
        );
        let req = twin_request(&m).unwrap();
        assert_eq!(req.operation, "PATCH");
        assert_eq!(req.resource.as_deref(), Some("/properties/reported"));
        assert_eq!(req.body, b"{\"a\":1}");
        let answer = twin_response(req.correlation_id, 204, Some(3), b"");
        let a = answer.message_annotations.unwrap();
        assert_eq!(
            a.0.get(&OwnedKey::Symbol(Symbol::from("status"))),
            Some(&Value::Int(204))
        );
        assert_eq!(
            a.0.get(&OwnedKey::Symbol(Symbol::from("version"))),
            Some(&Value::Long(3))
        );
        assert_eq!(
            answer.properties.unwrap().correlation_id,
            Some(MessageId::String("r1".into()))
        );
        assert!(desired_patch(4, "{}").properties.is_none());
    }

    #[test]
    fn method_call_and_answer() {
        let call = method_request("reboot", "7", b"{}");
        assert_eq!(
            call.application_properties
                .unwrap()
                .0
                .get("IoThub-methodname"),
            Some(&SimpleValue::String("reboot".into()))
        );
        let answer = incoming(
            Properties::builder()
                .correlation_id(MessageId::String("7".into()))
                .build(),
            ApplicationProperties::builder()
                .insert("IoThub-status", 200i32)
                .build(),
            MessageAnnotations::builder().build(),
            data(b"\"ok\""),
        );
        assert_eq!(
            method_response(&answer).unwrap(),
            MethodResponse {
                rid: "7".into(),
                status: 200,
                payload: b"\"ok\"".to_vec()
            }
        );
        let mut no_status = answer;
        no_status.application_properties = None;
        assert!(method_response(&no_status).is_err());
    }
}
