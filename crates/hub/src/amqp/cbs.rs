//! Claims-based security: the `$cbs` node where a client puts a SAS token before it attaches the
//! links the token covers, as IoT Hub does it. A request carries application properties
//! `operation = put-token`, `type` and `name` (the audience: the token's `sr`, URL-encoded as
//! the SDKs send it) and the token as an `amqp-value` string; the answer carries `status-code`
//! (an int: 200, or 401 with `status-description`) and the request's message id as correlation
//! id. A device or module token admits that identity through the core's one authentication
//! ([`crate::device_session::auth::authenticate`]); a hub-level policy token admits the service
//! links. A client renews its token by putting a new one on the same links.

use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message, MessageId, Properties};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Value};
use iot_auth::sas::{Audience, SasToken};

use super::message::{Incoming, Outgoing};
use crate::Hub;
use crate::config::Right;
use crate::device_session::auth::{self, Credentials, Identity};

/// A put-token request.
#[derive(Debug, PartialEq, Eq)]
pub struct PutToken {
    pub message_id: Option<MessageId>,
    /// The audience the client names (`name`), decoded.
    pub audience: String,
    pub token: String,
}

/// What a put-token grants on the connection.
#[derive(Debug)]
pub enum Grant {
    /// A device or module identity: its links may attach.
    Identity(Identity),
    /// A service policy with ServiceConnect: the service links may attach until `expiry`.
    Service { policy: String, expiry: u64 },
}

/// A refused request: the status code and description of the answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: i32,
    pub description: String,
}

fn refused(status: i32, description: impl Into<String>) -> Refused {
    Refused {
        status,
        description: description.into(),
    }
}

fn property(m: &Incoming, key: &str) -> Option<String> {
    match m.application_properties.as_ref()?.0.get(key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Reads a request on `$cbs`: only `put-token` of a SAS token is known.
pub fn put_token(m: &Incoming) -> Result<PutToken, Refused> {
    let operation = property(m, "operation").unwrap_or_default();
    if operation != "put-token" {
        return Err(refused(
            400,
            format!("operation {operation:?} is not supported; only put-token is"),
        ));
    }
    let name = property(m, "name").ok_or_else(|| refused(400, "put-token without a name"))?;
    let token = match &m.body {
        Body::Value(v) => match &v.0 {
            Value::String(s) => s.clone(),
            _ => return Err(refused(400, "the token must be an amqp-value string")),
        },
        _ => return Err(refused(400, "the token must be an amqp-value string")),
    };
    let decoded = iot_auth::percent_decode(&name).unwrap_or(name);
    Ok(PutToken {
        message_id: m.properties.as_ref().and_then(|p| p.message_id.clone()),
        audience: resource_of(&decoded).to_owned(),
        token,
    })
}

/// The resource an audience names: without the scheme some clients prefix (the Python service
/// SDK puts its token for `https://{host}`) or a trailing slash.
fn resource_of(audience: &str) -> &str {
    let rest = audience
        .split_once("://")
        .map_or(audience, |(_, rest)| rest);
    rest.trim_end_matches('/')
}

/// Checks a put-token: the token must be for the audience it is put for, and valid for it.
pub fn authorize(hub: &Hub, req: &PutToken) -> Result<Grant, Refused> {
    let token =
        SasToken::parse(&req.token).map_err(|e| refused(401, format!("not a SAS token: {e}")))?;
    let resource =
        iot_auth::percent_decode(token.resource()).unwrap_or_else(|| token.resource().to_owned());
    if !resource.eq_ignore_ascii_case(&req.audience) {
        return Err(refused(
            401,
            format!(
                "the token is for {resource:?}, not for the audience {:?} it was put for",
                req.audience
            ),
        ));
    }
    let (host, device_id, module_id) = match token.audience() {
        Audience::Device { host, device_id } => (host, device_id, None),
        Audience::Module {
            host,
            device_id,
            module_id,
        } => (host, device_id, Some(module_id)),
        Audience::Host { .. } => {
            let policy = crate::api::auth::authorize_token(hub, &token, Right::ServiceConnect)
                .map_err(|e| refused(401, e.message))?;
            return Ok(Grant::Service {
                policy,
                expiry: token.expiry(),
            });
        }
        _ => {
            return Err(refused(
                401,
                format!("the audience {resource:?} names no device, module or hub"),
            ));
        }
    };
    let creds = Credentials {
        host: &host,
        device_id: &device_id,
        module_id: module_id.as_deref(),
        auth_chain: None,
        sas_token: Some(req.token.as_bytes()),
    };
    match auth::authenticate(hub, &creds, &[]) {
        Ok(identity) => Ok(Grant::Identity(identity)),
        Err(why) => {
            hub.metrics.auth_failure(why.reason());
            Err(refused(401, why.to_string()))
        }
    }
}

/// The answer to a request with `message_id`.
pub fn answer(message_id: Option<MessageId>, status: i32, description: &str) -> Outgoing {
    Message::builder()
        .properties(Properties {
            correlation_id: message_id,
            ..Properties::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("status-code", SimpleValue::Int(status))
                .insert(
                    "status-description",
                    SimpleValue::String(description.to_owned()),
                )
                .build(),
        )
        .data(Binary::from(Vec::new()))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::AmqpValue;

    fn request(operation: &str, name: &str, body: Body<Value>) -> Incoming {
        Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(Properties {
                message_id: Some(MessageId::String("req-1".into())),
                ..Properties::default()
            }),
            application_properties: Some(
                ApplicationProperties::builder()
                    .insert("operation", operation)
                    .insert("type", "servicebus.windows.net:sastoken")
                    .insert("name", name)
                    .build(),
            ),
            body,
            footer: None,
        }
    }

    #[test]
    fn reads_a_put_token_with_an_encoded_audience() {
        let token = "SharedAccessSignature sr=h%2Fdevices%2Fd1&sig=x&se=1";
        let m = request(
            "put-token",
            "h%2Fdevices%2Fd1",
            Body::Value(AmqpValue(Value::String(token.into()))),
        );
        assert_eq!(
            put_token(&m).unwrap(),
            PutToken {
                message_id: Some(MessageId::String("req-1".into())),
                audience: "h/devices/d1".into(),
                token: token.into(),
            }
        );
    }

    #[test]
    fn an_audience_with_a_scheme_names_the_same_resource() {
        assert_eq!(resource_of("https://myhub.example"), "myhub.example");
        assert_eq!(resource_of("amqps://h/devices/d1/"), "h/devices/d1");
        assert_eq!(resource_of("h/devices/d1"), "h/devices/d1");
    }

    #[test]
    fn refuses_other_operations_and_bodies() {
        let m = request(
            "delete-token",
            "h",
            Body::Value(AmqpValue(Value::String("t".into()))),
        );
        assert_eq!(put_token(&m).unwrap_err().status, 400);
        let m = request("put-token", "h", Body::Empty);
        assert_eq!(put_token(&m).unwrap_err().status, 400);
    }

    #[test]
    fn answer_echoes_the_message_id_and_carries_an_int_status() {
        let a = answer(Some(MessageId::String("req-1".into())), 200, "OK");
        assert_eq!(
            a.properties.unwrap().correlation_id,
            Some(MessageId::String("req-1".into()))
        );
        let ap = a.application_properties.unwrap();
        assert_eq!(ap.0.get("status-code"), Some(&SimpleValue::Int(200)));
    }
}
