//! The AMQP nodes a client may attach a link to, parsed from the link's address, as IoT Hub names
//! them: `$cbs`, a device's or module's `messages/events`, `messages/devicebound`, `twin` and
//! `methods/devicebound`, and the service's `/messages/devicebound` and feedback. Which end of
//! the link the client holds is part of the node: a client *sending* to `…/messages/events` sends
//! telemetry, a module *receiving* from it receives its input messages.
//!
//! Links are told apart by address only: the Node SDK leaks one link's properties (its
//! `channel-correlation-id`) into every later link it attaches.

/// A device, or one of its modules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub device_id: String,
    pub module_id: Option<String>,
}

impl Target {
    /// `device` or `device/module`: the hub's client id.
    pub fn client_id(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/{m}", self.device_id),
            None => self.device_id.clone(),
        }
    }
}

/// Which side of a link the client holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The client sends on the link (the hub receives).
    ClientSends,
    /// The client receives on the link (the hub sends).
    ClientReceives,
}

/// What a link reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// Claims-based security: put-token requests (client sends) and their answers.
    Cbs,
    /// Device-to-cloud messages of the target.
    Telemetry(Target),
    /// Cloud-to-device messages (a module: its input messages).
    CloudToDevice(Target),
    /// Twin requests (client sends) and answers and desired-property patches (client receives).
    Twin(Target),
    /// Direct-method calls (client receives) and the answers (client sends).
    Methods(Target),
    /// The service sends cloud-to-device messages, each addressed by its `to` property.
    ServiceCloudToDevice,
    /// The service receives delivery feedback.
    ServiceFeedback,
}

/// Why an address names nothing the client may attach to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no such node {address:?} for a link the client {role}")]
pub struct UnknownNode {
    pub address: String,
    pub role: &'static str,
}

/// The node `address` names for a link the client holds as `role`.
pub fn parse(address: &str, role: Role) -> Result<Node, UnknownNode> {
    let unknown = || UnknownNode {
        address: address.to_owned(),
        role: match role {
            Role::ClientSends => "sends on",
            Role::ClientReceives => "receives on",
        },
    };
    // Some clients write the address as a full URI: amqps://{host}/devices/...
    let path = match address.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => address,
    };
    if path == "$cbs" || path == "/$cbs" {
        return Ok(Node::Cbs);
    }
    let lower = path.to_ascii_lowercase();
    match (lower.as_str(), role) {
        ("/messages/devicebound", Role::ClientSends) => return Ok(Node::ServiceCloudToDevice),
        ("/messages/servicebound/feedback", Role::ClientReceives) => {
            return Ok(Node::ServiceFeedback);
        }
        _ => {}
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (target, rest) = match segments.as_slice() {
        ["devices", d, "modules", m, rest @ ..] => (target(d, Some(m)), rest),
        ["devices", d, rest @ ..] => (target(d, None), rest),
        _ => return Err(unknown()),
    };
    let target = target.ok_or_else(unknown)?;
    let module = target.module_id.is_some();
    match (rest, role) {
        (["messages", "events"], Role::ClientSends) => Ok(Node::Telemetry(target)),
        // A module's input messages come from its own events address (IoT Hub's and the SDKs'
        // naming); a device's cloud-to-device messages from `devicebound`.
        (["messages", "events"], Role::ClientReceives) if module => Ok(Node::CloudToDevice(target)),
        (["messages", "devicebound"], Role::ClientReceives) if !module => {
            Ok(Node::CloudToDevice(target))
        }
        (["twin"], _) => Ok(Node::Twin(target)),
        (["methods", "devicebound"], _) => Ok(Node::Methods(target)),
        _ => Err(unknown()),
    }
}

fn target(device: &str, module: Option<&str>) -> Option<Target> {
    let device_id = iot_auth::percent_decode(device).filter(|d| !d.is_empty())?;
    let module_id = match module {
        Some(m) => Some(iot_auth::percent_decode(m).filter(|m| !m.is_empty())?),
        None => None,
    };
    Some(Target {
        device_id,
        module_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(d: &str) -> Target {
        Target {
            device_id: d.into(),
            module_id: None,
        }
    }

    fn module(d: &str, m: &str) -> Target {
        Target {
            device_id: d.into(),
            module_id: Some(m.into()),
        }
    }

    #[test]
    fn device_nodes() {
        use Role::*;
        assert_eq!(parse("$cbs", ClientSends), Ok(Node::Cbs));
        assert_eq!(
            parse("/devices/d1/messages/events", ClientSends),
            Ok(Node::Telemetry(dev("d1")))
        );
        assert_eq!(
            parse("/devices/d1/messages/devicebound", ClientReceives),
            Ok(Node::CloudToDevice(dev("d1")))
        );
        assert_eq!(
            parse("/devices/d1/twin", ClientSends),
            Ok(Node::Twin(dev("d1")))
        );
        assert_eq!(
            parse("/devices/d1/methods/devicebound", ClientReceives),
            Ok(Node::Methods(dev("d1")))
        );
        assert_eq!(
            parse(
                "amqps://hub.example/devices/d%2F1/messages/events",
                ClientSends
            ),
            Ok(Node::Telemetry(dev("d/1")))
        );
    }

    #[test]
    fn module_nodes() {
        use Role::*;
        assert_eq!(
            parse("/devices/d1/modules/m1/messages/events", ClientSends),
            Ok(Node::Telemetry(module("d1", "m1")))
        );
        assert_eq!(
            parse("/devices/d1/modules/m1/messages/events", ClientReceives),
            Ok(Node::CloudToDevice(module("d1", "m1")))
        );
        assert_eq!(
            parse("/devices/d1/modules/m1/twin", ClientReceives),
            Ok(Node::Twin(module("d1", "m1")))
        );
        assert_eq!(module("d1", "m1").client_id(), "d1/m1");
    }

    #[test]
    fn service_nodes_are_case_insensitive() {
        assert_eq!(
            parse("/messages/devicebound", Role::ClientSends),
            Ok(Node::ServiceCloudToDevice)
        );
        assert_eq!(
            parse("/messages/serviceBound/feedback", Role::ClientReceives),
            Ok(Node::ServiceFeedback)
        );
    }

    #[test]
    fn wrong_direction_or_unknown_is_refused() {
        use Role::*;
        for (address, role) in [
            ("/devices/d1/messages/events", ClientReceives),
            ("/devices/d1/messages/devicebound", ClientSends),
            ("/messages/devicebound", ClientReceives),
            ("/devices//messages/events", ClientSends),
            (
                "/devices/d1/modules/m1/messages/devicebound",
                ClientReceives,
            ),
            ("/queues/q1", ClientSends),
            ("", ClientSends),
        ] {
            let err = parse(address, role).unwrap_err();
            assert_eq!(err.address, address);
        }
    }
}
