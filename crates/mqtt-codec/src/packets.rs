//! The MQTT 3.1.1 control packets as plain data.

/// Quality of service of a PUBLISH, a will, or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum QoS {
    /// Fire and forget.
    AtMostOnce = 0,
    /// Acknowledged with PUBACK; may be delivered twice.
    AtLeastOnce = 1,
    /// The four-packet PUBREC/PUBREL/PUBCOMP exchange.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS with wire value `value`, `None` for 3 and above.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }

    /// The wire value (0, 1 or 2).
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// One decoded MQTT control packet.
///
/// The acknowledgements that carry only a packet identifier hold it directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (type 1), client to server.
    Connect(Box<Connect>),
    /// CONNACK (type 2), server to client.
    ConnAck(ConnAck),
    /// PUBLISH (type 3), both directions.
    Publish(Publish),
    /// PUBACK (type 4): the packet identifier of the acknowledged QoS 1 PUBLISH.
    PubAck(u16),
    /// PUBREC (type 5), QoS 2 step 2.
    PubRec(u16),
    /// PUBREL (type 6), QoS 2 step 3.
    PubRel(u16),
    /// PUBCOMP (type 7), QoS 2 step 4.
    PubComp(u16),
    /// SUBSCRIBE (type 8), client to server.
    Subscribe(Subscribe),
    /// SUBACK (type 9), server to client.
    SubAck(SubAck),
    /// UNSUBSCRIBE (type 10), client to server.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (type 11): the packet identifier of the UNSUBSCRIBE.
    UnsubAck(u16),
    /// PINGREQ (type 12).
    PingReq,
    /// PINGRESP (type 13).
    PingResp,
    /// DISCONNECT (type 14), client to server.
    Disconnect,
}

impl Packet {
    /// The control packet type number of the fixed header (1 to 14).
    #[must_use]
    pub const fn packet_type(&self) -> u8 {
        match self {
            Self::Connect(_) => 1,
            Self::ConnAck(_) => 2,
            Self::Publish(_) => 3,
            Self::PubAck(_) => 4,
            Self::PubRec(_) => 5,
            Self::PubRel(_) => 6,
            Self::PubComp(_) => 7,
            Self::Subscribe(_) => 8,
            Self::SubAck(_) => 9,
            Self::Unsubscribe(_) => 10,
            Self::UnsubAck(_) => 11,
            Self::PingReq => 12,
            Self::PingResp => 13,
            Self::Disconnect => 14,
        }
    }

    /// The upper-case name of the packet type, for log lines ("PUBLISH", "SUBACK", ...).
    #[must_use]
    pub const fn name(&self) -> &'static str {
        packet_type_name(self.packet_type())
    }
}

/// The upper-case name of control packet type `packet_type`, `"reserved"` for 0 and 15.
#[must_use]
pub const fn packet_type_name(packet_type: u8) -> &'static str {
    match packet_type {
        1 => "CONNECT",
        2 => "CONNACK",
        3 => "PUBLISH",
        4 => "PUBACK",
        5 => "PUBREC",
        6 => "PUBREL",
        7 => "PUBCOMP",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        10 => "UNSUBSCRIBE",
        11 => "UNSUBACK",
        12 => "PINGREQ",
        13 => "PINGRESP",
        14 => "DISCONNECT",
        _ => "reserved",
    }
}

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// `"MQTT"` for 3.1.1, `"MQIsdp"` for 3.1; the decoder refuses any other name.
    pub protocol_name: String,
    /// 4 for MQTT 3.1.1, 3 for 3.1. Other levels are decoded too: the server answers them with
    /// [`ConnectReturnCode::UnacceptableProtocolVersion`].
    pub protocol_level: u8,
    /// Start a fresh session (and discard it at disconnect).
    pub clean_session: bool,
    /// Keep-alive interval in seconds; 0 disables it.
    pub keep_alive: u16,
    /// The client identifier; may be empty.
    pub client_id: String,
    /// The message to publish if the connection ends without DISCONNECT.
    pub will: Option<Will>,
    /// User name (Azure IoT: `{hub}/{device}/?api-version=...`).
    pub username: Option<String>,
    /// Password bytes (Azure IoT: a SAS token). MQTT 3.1.1 requires a user name with it.
    pub password: Option<Vec<u8>>,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic name of the will (no wildcards).
    pub topic: String,
    /// Application payload of the will.
    pub payload: Vec<u8>,
    /// QoS to publish the will with.
    pub qos: QoS,
    /// Retain flag of the will.
    pub retain: bool,
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// The server resumed a stored session (always false when `code` is not `Accepted`).
    pub session_present: bool,
    /// Accepted, or why not.
    pub code: ConnectReturnCode,
}

/// The CONNACK return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnectReturnCode {
    /// 0: connection accepted.
    Accepted = 0,
    /// 1: the server does not support the requested protocol level.
    UnacceptableProtocolVersion = 1,
    /// 2: the client identifier is not allowed.
    IdentifierRejected = 2,
    /// 3: the MQTT service is unavailable.
    ServerUnavailable = 3,
    /// 4: malformed user name or password.
    BadUsernameOrPassword = 4,
    /// 5: the client is not authorized to connect.
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// The return code with wire value `value`, `None` for 6 and above.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Accepted),
            1 => Some(Self::UnacceptableProtocolVersion),
            2 => Some(Self::IdentifierRejected),
            3 => Some(Self::ServerUnavailable),
            4 => Some(Self::BadUsernameOrPassword),
            5 => Some(Self::NotAuthorized),
            _ => None,
        }
    }

    /// The wire value (0 to 5).
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// PUBLISH: an application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Re-delivery of an earlier attempt (only with QoS 1 or 2).
    pub dup: bool,
    /// Delivery guarantee.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name: non-empty, no `+` or `#`.
    pub topic: String,
    /// Non-zero packet identifier, present exactly when `qos` is 1 or 2.
    pub packet_id: Option<u16>,
    /// Application payload (may be empty).
    pub payload: Vec<u8>,
}

impl Publish {
    /// A QoS 0 publish (no packet id, not retained): what servers send for notifications and
    /// answers, and clients for fire-and-forget requests.
    pub fn at_most_once(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            payload: payload.into(),
        }
    }
}

/// SUBSCRIBE: topic filters with their requested QoS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Non-zero packet identifier.
    pub packet_id: u16,
    /// At least one `(filter, requested QoS)` pair.
    pub filters: Vec<(String, QoS)>,
}

/// SUBACK: one return code per filter of the SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The packet identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// In the order of the SUBSCRIBE's filters; at least one.
    pub return_codes: Vec<SubAckReturnCode>,
}

/// The answer to one filter of a SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubAckReturnCode {
    /// Subscribed with this maximum QoS (wire value 0, 1 or 2).
    Success(QoS),
    /// Refused (wire value 0x80).
    Failure,
}

impl SubAckReturnCode {
    /// The return code with wire value `value`: 0, 1, 2 or 0x80.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0x80 => Some(Self::Failure),
            v => match QoS::from_u8(v) {
                Some(qos) => Some(Self::Success(qos)),
                None => None,
            },
        }
    }

    /// The wire value.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::Success(qos) => qos as u8,
            Self::Failure => 0x80,
        }
    }
}

/// UNSUBSCRIBE: topic filters to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Non-zero packet identifier.
    pub packet_id: u16,
    /// At least one filter.
    pub filters: Vec<String>,
}
