//! The MQTT head's translator: one packet of an admitted connection → calls on its
//! [`DeviceSession`] → packets back, and the hub's [`Notification`]s for the session → packets.
//! Topics, packet ids, QoS and the session's stored subscriptions live here; what the hub does
//! with a message, a twin request, a method answer or a cloud-to-device acknowledgement lives in
//! [`crate::device_session`].

use std::sync::Arc;

use iot_auth::topic::{PropertyBag, PublishTopic};
use mqtt_codec::{Packet, Publish, QoS, SubAck, SubAckReturnCode, Will};
use tracing::{info, warn};

use super::auth::Identity;
use super::conn::{End, token_expired};
use super::queue;
use super::writer::PendingAck;
use crate::Hub;
use crate::device_session::live::Connections;
use crate::device_session::{
    DeviceSession, Interests, Notification, Subscription, TelemetryRefused,
};
use crate::metrics::Metrics;
use crate::store::SessionRecord;

/// A connection's session as the packet loop drives it.
pub(super) struct State {
    pub(super) session: DeviceSession,
    /// A clean session: its subscriptions are not stored.
    pub(super) clean: bool,
    pub(super) subscriptions: Vec<(String, u8)>,
    pub(super) out: queue::Sender<Packet>,
    pub(super) ack: queue::Sender<PendingAck>,
    /// The in-flight limit was logged for this connection.
    pub(super) throttle_logged: bool,
}

const DESIRED_FILTER: &str = "$iothub/twin/PATCH/properties/desired/#";
const METHODS_FILTER: &str = "$iothub/methods/POST/#";
const TWIN_RESPONSES_FILTER: &str = "$iothub/twin/res/#";

/// What the filters of `identity`'s session subscribe to.
pub(super) fn interests(identity: &Identity, subscriptions: &[(String, u8)]) -> Interests {
    let has = |filter: &str| subscriptions.iter().any(|(f, _)| f == filter);
    let c2d = match &identity.module_id {
        None => format!("devices/{}/messages/devicebound", identity.device_id),
        Some(m) => format!("devices/{}/modules/{m}/", identity.device_id),
    };
    Interests {
        desired: has(DESIRED_FILTER),
        methods: has(METHODS_FILTER),
        c2d: subscriptions.iter().any(|(f, _)| f.starts_with(&c2d)),
    }
}

impl State {
    fn hub(&self) -> &Arc<Hub> {
        self.session.hub()
    }

    /// Handles one packet; `Some` ends the connection.
    pub(super) async fn handle(&mut self, packet: Packet) -> Option<End> {
        if self.session.expired() {
            return Some(token_expired(self.hub(), self.session.identity()));
        }
        match packet {
            Packet::Publish(p) => self.publish(p).await,
            Packet::Subscribe(s) => self.subscribe_all(s).await,
            Packet::Unsubscribe(u) => {
                self.subscriptions.retain(|(f, _)| !u.filters.contains(f));
                self.persist();
                self.send(Packet::UnsubAck(u.packet_id)).await
            }
            Packet::PingReq => self.send(Packet::PingResp).await,
            Packet::Disconnect => Some(End::Graceful),
            // Acknowledgements of messages the hub sent (cloud-to-device arrives with its issue).
            Packet::PubAck(id) => {
                if self.session.c2d_complete(id) {
                    self.deliver_c2d().await;
                }
                None
            }
            other => self.violation(format!("unexpected packet {}", packet_name(&other))),
        }
    }

    async fn subscribe_all(&mut self, s: mqtt_codec::Subscribe) -> Option<End> {
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut filters = Vec::with_capacity(s.filters.len());
        let before = self.subscriptions.clone();
        for (filter, qos) in &s.filters {
            let identity = self.session.identity();
            if let Err(e) = iot_auth::topic::classify_subscription(
                filter,
                &identity.device_id,
                identity.module_id.as_deref(),
            ) {
                return self.violation(format!("subscription to {filter:?} refused: {e}"));
            }
            let code = self.subscribe(filter, *qos);
            if code != SubAckReturnCode::Failure {
                filters.push(filter.clone());
            }
            codes.push(code);
        }
        // Repeating a subscription changes nothing (and writes nothing).
        if self.subscriptions != before {
            self.persist();
        }
        info!(?filters, "Subscribed");
        if let Some(upstream) = self.hub().upstream.get() {
            upstream.subscribed(self.session.client_id(), &filters);
        }
        let end = self
            .send(Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                return_codes: codes,
            }))
            .await;
        self.deliver_c2d().await;
        end
    }

    /// Adds (or updates) one filter; a new one past `limits.max_subscriptions_per_connection`
    /// is refused (0x80), counted and logged, and the connection stays.
    fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAckReturnCode {
        let max = self.hub().config.limits.max_subscriptions_per_connection;
        let held = self.subscriptions.iter().any(|(f, _)| f == filter);
        if !held && self.subscriptions.len() >= max {
            self.hub()
                .metrics
                .limit_reached("max_subscriptions_per_connection");
            warn!(
                filter,
                limit = "limits.max_subscriptions_per_connection",
                max,
                "Subscription refused (SUBACK 0x80): limits.max_subscriptions_per_connection = {max} reached"
            );
            return SubAckReturnCode::Failure;
        }
        let granted = if qos == QoS::AtMostOnce {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        match self.subscriptions.iter_mut().find(|(f, _)| f == filter) {
            Some(held) => held.1 = granted as u8,
            None => self.subscriptions.push((filter.to_owned(), granted as u8)),
        }
        SubAckReturnCode::Success(granted)
    }

    async fn publish(&mut self, p: Publish) -> Option<End> {
        if p.qos == QoS::ExactlyOnce {
            return self.violation("QoS 2 publishes are not supported".into());
        }
        let topic = match iot_auth::topic::parse_publish_topic(&p.topic) {
            Ok(t) => t,
            Err(e) => return self.violation(format!("publish to {:?} refused: {e}", p.topic)),
        };
        if let Some(upstream) = self.hub().upstream.get()
            && matches!(
                topic,
                PublishTopic::TwinGet { .. }
                    | PublishTopic::TwinPatchReported { .. }
                    | PublishTopic::MethodResponse { .. }
            )
        {
            // A gateway: the upstream hub answers.
            if let Some(end) = self.puback(&p).await {
                return Some(end);
            }
            Metrics::inc(&self.hub().metrics.messages_in);
            upstream.request(self.session.client_id(), &p.topic, p.payload);
            return None;
        }
        match topic {
            PublishTopic::TwinGet { rid } => self.twin_request(&p, &rid, None).await,
            PublishTopic::TwinPatchReported { rid } => {
                self.twin_request(&p, &rid, Some(&p.payload)).await
            }
            PublishTopic::MethodResponse { status, rid } => {
                if let Some(end) = self.puback(&p).await {
                    return Some(end);
                }
                self.session.method_response(&rid, status, p.payload);
                None
            }
            PublishTopic::Telemetry {
                device_id,
                module_id,
                properties,
            } => {
                let module_id = module_id.as_deref();
                self.telemetry(&p, &device_id, module_id, &properties).await
            }
            _ => self.violation(format!(
                "publish to {:?} is not supported by this hub yet",
                p.topic
            )),
        }
    }

    /// Telemetry (the connection's own, or a gateway's for a sender it speaks for): a QoS 1
    /// publish is acknowledged once durable.
    async fn telemetry(
        &mut self,
        p: &Publish,
        device_id: &str,
        module_id: Option<&str>,
        properties: &PropertyBag,
    ) -> Option<End> {
        let sent = self
            .session
            .send_telemetry(device_id, module_id, properties, &p.payload, p.retain);
        let durable = match sent {
            Ok(durable) => durable,
            Err(TelemetryRefused::Violation(reason)) => return self.violation(reason),
            Err(TelemetryRefused::Unavailable) => return Some(End::Ungraceful),
            // Acknowledged and not stored: the gateway does not send it again and again.
            Err(TelemetryRefused::Dropped(_)) => return self.puback(p).await,
        };
        let (QoS::AtLeastOnce, Some(packet_id)) = (p.qos, p.packet_id) else {
            return None;
        };
        let pending = PendingAck::new(self.hub(), packet_id, durable);
        // Waits when too many publishes are not yet durable: backpressure.
        let pending = match self.ack.try_send(pending) {
            Ok(()) => return None,
            Err(queue::TrySendError::Closed(_)) => return Some(End::Ungraceful),
            Err(queue::TrySendError::Full(pending)) => pending,
        };
        self.throttled();
        if self.ack.send(pending).await.is_err() {
            return Some(End::Ungraceful);
        }
        None
    }

    /// A twin GET (`patch = None`) or reported-properties PATCH; answered on `$iothub/twin/res/...`.
    async fn twin_request(&mut self, p: &Publish, rid: &str, patch: Option<&[u8]>) -> Option<End> {
        if let Some(end) = self.puback(p).await {
            return Some(end);
        }
        let reply = match patch {
            None => self.session.twin_get(),
            Some(bytes) => self.session.twin_patch_reported(bytes),
        };
        if !self
            .subscriptions
            .iter()
            .any(|(f, _)| f == TWIN_RESPONSES_FILTER)
        {
            warn!("Twin response dropped: the device is not subscribed to $iothub/twin/res/#");
            return None;
        }
        let topic = iot_auth::topic::twin_response_topic(reply.status, rid, reply.version);
        Metrics::inc(&self.hub().metrics.messages_out);
        self.send(at_most_once(topic, reply.body.into_bytes()))
            .await
    }

    /// A notification from the hub, as the QoS 0 publish an MQTT device expects on its topic. It
    /// is dropped (and logged) when the connection's outgoing queue is full: the session goes on
    /// reading, so a device that does not read cannot hold up its own close or keep-alive.
    pub(super) fn notified(&self, n: Notification) {
        let (topic, payload, what) = match n {
            Notification::DesiredPatch { version, body } => (
                iot_auth::topic::desired_patch_topic(version),
                body.into_bytes(),
                "Desired-property patch",
            ),
            Notification::MethodRequest { name, rid, payload } => (
                iot_auth::topic::method_request_topic(&name, &rid),
                payload,
                "Method call",
            ),
            Notification::Relayed { topic, payload } => (topic, payload, "Relayed message"),
            // The packet loop handles these itself.
            Notification::C2dAvailable | Notification::Close(_) => return,
        };
        if self.out.try_send(at_most_once(topic, payload)).is_err() {
            warn!("{what} not sent: the connection is busy or closing");
        }
    }

    /// Sends the cloud-to-device messages (a module: input messages) the session has for the
    /// client now, as QoS 1 publishes whose packet id is the delivery's tag.
    pub(super) async fn deliver_c2d(&mut self) {
        for delivery in self.session.c2d_take() {
            let identity = self.session.identity();
            let (topic, payload) = match &identity.module_id {
                None => super::c2d_topic::publication(&identity.device_id, &delivery.message),
                Some(m) => {
                    super::c2d_topic::input_publication(&identity.device_id, m, &delivery.message)
                }
            };
            let publish = Publish {
                dup: delivery.redelivery(),
                qos: QoS::AtLeastOnce,
                retain: false,
                topic,
                packet_id: Some(delivery.tag),
                payload,
            };
            if self.out.send(Packet::Publish(publish)).await.is_err() {
                return;
            }
            self.session.c2d_sent(&delivery);
        }
    }

    /// Reading pauses: `limits.max_inflight_per_connection` (a gateway's `$edgeHub`:
    /// `max_inflight_per_gateway`) publishes await durability. Counted every time, logged once
    /// per connection.
    fn throttled(&mut self) {
        let (name, max) = inflight_limit(self.hub(), self.session.identity());
        self.hub().metrics.limit_reached(name);
        if !self.throttle_logged {
            self.throttle_logged = true;
            info!(
                limit = name,
                max,
                "Pausing reads from this connection until its publishes are durable (limits.{name} = {max})"
            );
        }
    }

    fn persist(&mut self) {
        let wants = interests(self.session.identity(), &self.subscriptions);
        self.session.set_interests(wants);
        self.hub().connections.touch();
        if self.clean {
            return;
        }
        let record = SessionRecord {
            subscriptions: self.subscriptions.clone(),
        };
        let store = self.hub().registry.store();
        if let Err(e) = store.put_session(self.session.client_id(), &record) {
            warn!(error = %e, "Could not persist the session");
        }
    }

    async fn send(&self, packet: Packet) -> Option<End> {
        match self.out.send(packet).await {
            Ok(()) => None,
            Err(_) => Some(End::Ungraceful),
        }
    }

    /// The PUBACK of a QoS 1 publish.
    async fn puback(&self, p: &Publish) -> Option<End> {
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.send(Packet::PubAck(id)).await,
            _ => None,
        }
    }

    fn violation(&self, reason: String) -> Option<End> {
        Metrics::inc(&self.hub().metrics.protocol_errors);
        warn!(%reason, "Disconnecting device");
        Some(End::Ungraceful)
    }
}

/// A QoS 0 publish from the hub.
fn at_most_once(topic: String, payload: Vec<u8>) -> Packet {
    Packet::Publish(Publish::at_most_once(topic, payload))
}

/// On an ungraceful close, the will is stored as the identity's telemetry, with the property bag
/// of its topic.
pub(super) async fn publish_will(session: &DeviceSession, will: &Will) {
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
    session.store_will(&props, &will.payload, will.retain).await;
}

/// The in-flight limit of a connection (its name in `[limits]`, its value): a gateway's
/// `$edgeHub` carries many devices' telemetry (see [`crate::device_session::forwarded`]).
pub(super) fn inflight_limit(hub: &Hub, identity: &Identity) -> (&'static str, usize) {
    let limits = &hub.config.limits;
    if crate::device_session::forwarded::is_edge_hub(identity) {
        ("max_inflight_per_gateway", limits.max_inflight_per_gateway)
    } else {
        (
            "max_inflight_per_connection",
            limits.max_inflight_per_connection,
        )
    }
}

/// A gateway's way down to a local client for what its upstream hub sends that client (see
/// `edge::relay`): an MQTT publish, delivered at most once as [`Notification::Relayed`].
pub struct RelaySender(Arc<Subscription>);

/// Why [`RelaySender::try_send`] sent nothing: not a publish, or the session is full or gone.
#[derive(Debug)]
pub struct NotSent;

impl RelaySender {
    /// Queues a publish for the client (delivered at QoS 0).
    pub fn try_send(&self, packet: Packet) -> Result<(), NotSent> {
        let Packet::Publish(p) = packet else {
            return Err(NotSent);
        };
        let relayed = Notification::Relayed {
            topic: p.topic,
            payload: p.payload,
        };
        self.0.deliver(relayed).map_err(|_| NotSent)
    }
}

impl Connections {
    /// A way to relay MQTT publishes to the connected client `client_id` (none when its token
    /// has expired or it is closing).
    pub fn sender(&self, client_id: &str) -> Option<RelaySender> {
        self.subscription(client_id).map(RelaySender)
    }
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => "QoS 2 flow",
        Packet::SubAck(_) => "SUBACK",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingResp => "PINGRESP",
        _ => "packet",
    }
}
