//! One device connection: CONNECT and authentication, the session, then the packet loop.
//!
//! Two tasks per connection: this reader loop, and a writer ([`super::writer`]) that owns the write
//! half, coalesces outgoing packets and sends PUBACKs in order as telemetry becomes durable.
//! Backpressure: when `max_inflight_per_connection` publishes await durability, reading pauses.

use std::sync::Arc;
use std::time::Duration;

use mqtt_codec::{ConnAck, ConnectReturnCode, Packet, Publish, QoS, SubAck, SubAckReturnCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Notify;
use tokio::time::Sleep;

use super::queue;
use tracing::{debug, info, warn};

use super::auth::{self, Identity, Refusal};
use super::io::PacketReader;
use super::revoke::Kick;
use super::session::{ConnHandle, time_left};
use super::telemetry;
use crate::Hub;
use crate::device_session::forwarded::NotStored;
use crate::metrics::Metrics;
use crate::store::SessionRecord;
use iot_auth::topic::PublishTopic;

/// Why the packet loop ended.
enum End {
    /// DISCONNECT from the client: the will is discarded.
    Graceful,
    /// Network error, protocol violation, kick: the will (if any) is published.
    Ungraceful,
}

/// An authenticated connection, ready for its session.
pub struct Admitted<S> {
    identity: Identity,
    connect: Box<mqtt_codec::Connect>,
    reader: PacketReader,
    rd: ReadHalf<S>,
    wr: WriteHalf<S>,
    /// The client's certificate chain and [`super::session::Connections::revocations`] before it
    /// was authenticated: kept until the session is registered (see [`auth::recheck`]).
    peer_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    revocations: u64,
}

/// Reads CONNECT (by `deadline`, `limits.connect_timeout_secs` after the TCP connection was
/// accepted) and authenticates it; a refusal is answered and logged here.
pub async fn admit<S>(
    hub: &Arc<Hub>,
    stream: S,
    peer_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    deadline: tokio::time::Instant,
) -> Option<Admitted<S>>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut reader = PacketReader::new(hub.config.limits.max_packet_bytes);
    let connect_timeout = Duration::from_secs(hub.config.limits.connect_timeout_secs);
    let first = match tokio::time::timeout_at(deadline, reader.next(&mut rd)).await {
        Ok(Ok(Some(p))) => p,
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            super::io::read_failed(hub, &e, "Closing connection: malformed first packet");
            return None;
        }
        Err(_) => {
            super::connect_timed_out(hub);
            return None;
        }
    };
    let Packet::Connect(connect) = first else {
        Metrics::inc(&hub.metrics.protocol_errors);
        warn!("Closing connection: the first packet is not CONNECT");
        return None;
    };
    let refuse = |code| {
        Packet::ConnAck(ConnAck {
            session_present: false,
            code,
        })
    };
    if connect.protocol_level != 4 {
        warn!(client_id = %connect.client_id, level = connect.protocol_level, "Refusing connection: only MQTT 3.1.1 is supported");
        let _ = write_packet(
            &mut wr,
            &refuse(ConnectReturnCode::UnacceptableProtocolVersion),
        )
        .await;
        return None;
    }
    let revocations = hub.connections.revocations();
    let attempt = || {
        auth::authenticate(
            hub,
            &connect.client_id,
            connect.username.as_deref(),
            connect.password.as_deref(),
            &peer_chain,
        )
    };
    let mut result = attempt();
    if let (Err(Refusal::UnknownDevice(_) | Refusal::UnknownModule(_)), Some(relay)) =
        (&result, hub.relay.get())
    {
        // A gateway: the identity may be new at the hub.
        let found = tokio::time::timeout(connect_timeout, relay.lookup(&connect.client_id)).await;
        if found == Ok(true) {
            result = attempt();
        }
    }
    let result = result
        .and_then(|identity| auth::check_will(&identity, connect.will.as_ref()).map(|()| identity));
    let identity = match result {
        Ok(identity) => identity,
        Err(refusal) => {
            hub.metrics.auth_failure(refusal.reason());
            warn!(client_id = %connect.client_id, reason = %refusal, code = refusal.reason(), "Refusing connection");
            let _ = write_packet(&mut wr, &refuse(refusal.connack())).await;
            return None;
        }
    };
    Some(Admitted {
        identity,
        connect,
        reader,
        rd,
        wr,
        peer_chain,
        revocations,
    })
}

/// Serves an admitted connection until it closes.
pub async fn run<S>(hub: Arc<Hub>, admitted: Admitted<S>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let identity = &admitted.identity;
    let span = tracing::info_span!("mqtt", client_id = %identity.client_id(), auth = identity.auth_type.as_str());
    tracing::Instrument::instrument(run_session(hub, admitted), span).await;
}

async fn run_session<S>(hub: Arc<Hub>, admitted: Admitted<S>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Admitted {
        identity,
        connect,
        mut reader,
        mut rd,
        mut wr,
        peer_chain,
        revocations,
    } = admitted;
    let client_id = identity.client_id();
    let store = hub.registry.store().clone();
    let session = if connect.clean_session {
        store.delete_session(&client_id).map(|()| None)
    } else {
        store.get_session(&client_id)
    };
    let (session_present, subscriptions) = match session {
        Ok(Some(s)) => (true, s.subscriptions),
        Ok(None) => (false, Vec::new()),
        Err(e) => {
            warn!(error = %e, "Refusing connection: session storage unavailable");
            let _ = write_packet(
                &mut wr,
                &Packet::ConnAck(ConnAck {
                    session_present: false,
                    code: ConnectReturnCode::ServerUnavailable,
                }),
            )
            .await;
            return;
        }
    };
    let (out_tx, out_rx) = queue::channel::<Packet>(256);
    let kick = Arc::new(Kick::default());
    let c2d_wake = Arc::new(Notify::new());
    let features = Arc::new(super::session::Features::default());
    set_features(&features, &subscriptions);
    let conn_id = hub.connections.next_id();
    let identity = Arc::new(identity);
    if hub.connections.register(
        &client_id,
        ConnHandle {
            id: conn_id,
            identity: identity.clone(),
            kick: kick.clone(),
            outbound: out_tx.clone(),
            c2d: c2d_wake.clone(),
            features: features.clone(),
        },
    ) {
        info!("A newer connection replaces the previous one for this client id");
    }
    if let Err(refusal) = auth::recheck(&hub, &connect, &peer_chain, revocations) {
        hub.connections.unregister(&client_id, conn_id);
        hub.metrics.auth_failure(refusal.reason());
        warn!(reason = %refusal, code = refusal.reason(), "Refusing connection: its credentials changed while it connected");
        let ack = ConnAck {
            session_present: false,
            code: refusal.connack(),
        };
        let _ = write_packet(&mut wr, &Packet::ConnAck(ack)).await;
        return;
    }
    drop(peer_chain);
    hub.registry
        .set_connection(&identity.device_id, identity.module_id.as_deref(), true);
    auth::record_model_id(&hub, &identity, connect.username.as_deref());
    let ack = Packet::ConnAck(ConnAck {
        session_present,
        code: ConnectReturnCode::Accepted,
    });
    if write_packet(&mut wr, &ack).await.is_err() {
        hub.connections.unregister(&client_id, conn_id);
        return;
    }
    Metrics::inc(&hub.metrics.connections_active);
    info!(
        clean_session = connect.clean_session,
        session_present,
        keep_alive = connect.keep_alive,
        "Device connected"
    );
    let (ack_tx, ack_rx) = queue::channel(inflight_limit(&hub, &identity).1);
    let queues = super::writer::Queues {
        packets: out_rx,
        acks: ack_rx,
    };
    let writer = tokio::spawn(super::writer::run(wr, queues, hub.clone(), kick.clone()));
    let mut state = State {
        hub: hub.clone(),
        identity,
        clean: connect.clean_session,
        subscriptions,
        out: out_tx,
        ack: ack_tx,
        c2d_inflight: std::collections::HashMap::new(),
        next_packet_id: 1,
        features,
        throttle_logged: false,
        senders: None,
    };
    // A restored session may already be subscribed to cloud-to-device messages.
    Box::pin(state.deliver_c2d()).await;
    // A gateway opens the client's upstream session now, so that the hub sees it connected.
    if let Some(relay) = hub.relay.get() {
        let filters: Vec<String> = state.subscriptions.iter().map(|(f, _)| f.clone()).collect();
        relay.subscribed(&client_id, &filters);
    }
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    // Only a SAS session has a token to outlive (boxed: an X.509 connection does not carry it).
    let mut token_timer =
        time_left(&state.identity, &hub.clock).map(|d| Box::pin(tokio::time::sleep(d)));
    let end = loop {
        tokio::select! {
            why = kick.ended() => {
                if let Some(reason) = why.metric() {
                    hub.metrics.auth_failure(reason);
                }
                info!(reason = ?why, "Closing connection: {}", why.describe());
                break End::Ungraceful;
            }
            () = token_end(&mut token_timer) => break token_expired(&hub, &state.identity),
            () = c2d_wake.notified() => Box::pin(state.deliver_c2d()).await,
            read = reader.next_within(&mut rd, keep_alive) => match read {
                Ok(Some(packet)) => {
                    // Boxed: the handlers' state is allocated only while one runs, so an idle
                    // connection's task stays small.
                    if let Some(end) = Box::pin(state.handle(packet)).await {
                        break end;
                    }
                }
                Ok(None) => {
                    debug!("Connection closed by the device");
                    break End::Ungraceful;
                }
                Err(e) => {
                    super::io::read_failed(&hub, &e, "Closing connection");
                    break End::Ungraceful;
                }
            }
        }
    };
    hub.connections.unregister(&client_id, conn_id);
    hub.metrics
        .connections_active
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if let (End::Ungraceful, Some(will)) = (&end, &connect.will) {
        Box::pin(telemetry::publish_will(&hub, &state.identity, will)).await;
    }
    let State {
        identity, out, ack, ..
    } = state;
    drop((out, ack));
    let _ = writer.await;
    let still_connected = hub.connections.is_connected(&client_id);
    hub.registry.set_connection(
        &identity.device_id,
        identity.module_id.as_deref(),
        still_connected,
    );
    if let (false, Some(relay)) = (still_connected, hub.relay.get()) {
        relay.disconnected(&client_id);
    }
    info!("Device disconnected");
}

/// Waits for the session's token to expire (forever without one).
async fn token_end(timer: &mut Option<std::pin::Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The session's SAS token expired: counted, logged, and the connection ends.
fn token_expired(hub: &Hub, identity: &Identity) -> End {
    hub.metrics.auth_failure("expired_token");
    info!(
        expiry = identity.token_expiry,
        "Closing connection: its SAS token expired; reconnect with a new one"
    );
    End::Ungraceful
}

struct State {
    hub: Arc<Hub>,
    identity: Arc<Identity>,
    clean: bool,
    subscriptions: Vec<(String, u8)>,
    out: queue::Sender<Packet>,
    ack: queue::Sender<telemetry::PendingAck>,
    /// Cloud-to-device messages sent and not yet acknowledged: packet id → queue sequence.
    c2d_inflight: std::collections::HashMap<u16, i64>,
    next_packet_id: u16,
    /// Shared with the connection handle: desired patches and methods are sent only while
    /// subscribed.
    features: Arc<super::session::Features>,
    /// The in-flight limit was logged for this connection.
    throttle_logged: bool,
    /// Senders a gateway's `$edgeHub` connection published for (allocated at the first such
    /// message).
    senders: Option<Box<crate::device_session::forwarded::Senders>>,
}

const DESIRED_FILTER: &str = "$iothub/twin/PATCH/properties/desired/#";
const METHODS_FILTER: &str = "$iothub/methods/POST/#";

fn set_features(features: &super::session::Features, subscriptions: &[(String, u8)]) {
    use std::sync::atomic::Ordering::Relaxed;
    let has = |filter: &str| subscriptions.iter().any(|(f, _)| f == filter);
    features.desired.store(has(DESIRED_FILTER), Relaxed);
    features.methods.store(has(METHODS_FILTER), Relaxed);
}

/// Unacknowledged cloud-to-device messages per connection.
const C2D_WINDOW: usize = 16;

impl State {
    /// Handles one packet; `Some` ends the connection.
    async fn handle(&mut self, packet: Packet) -> Option<End> {
        if self.expired() {
            return Some(token_expired(&self.hub, &self.identity));
        }
        match packet {
            Packet::Publish(p) => self.publish(p).await,
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.filters.len());
                let mut filters = Vec::with_capacity(s.filters.len());
                let before = self.subscriptions.clone();
                for (filter, qos) in &s.filters {
                    if let Err(e) = iot_auth::topic::classify_subscription(
                        filter,
                        &self.identity.device_id,
                        self.identity.module_id.as_deref(),
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
                if let Some(relay) = self.hub.relay.get() {
                    relay.subscribed(&self.identity.client_id(), &filters);
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
            Packet::Unsubscribe(u) => {
                self.subscriptions.retain(|(f, _)| !u.filters.contains(f));
                self.persist();
                self.send(Packet::UnsubAck(u.packet_id)).await
            }
            Packet::PingReq => self.send(Packet::PingResp).await,
            Packet::Disconnect => Some(End::Graceful),
            // Acknowledgements of messages the hub sent (cloud-to-device arrives with its issue).
            Packet::PubAck(id) => {
                if let Some(seq) = self.c2d_inflight.remove(&id) {
                    if let Err(e) = self
                        .hub
                        .registry
                        .store()
                        .c2d_complete(&self.identity.client_id(), seq)
                    {
                        warn!(error = %e, "Could not complete a cloud-to-device message");
                    }
                    self.deliver_c2d().await;
                }
                None
            }
            other => self.violation(format!("unexpected packet {}", packet_name(&other))),
        }
    }

    /// Adds (or updates) one filter; a new one past `limits.max_subscriptions_per_connection`
    /// is refused (0x80), counted and logged, and the connection stays.
    fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAckReturnCode {
        let max = self.hub.config.limits.max_subscriptions_per_connection;
        let held = self.subscriptions.iter().any(|(f, _)| f == filter);
        if !held && self.subscriptions.len() >= max {
            self.hub
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
        if let Some(relay) = self.hub.relay.get()
            && matches!(
                topic,
                PublishTopic::TwinGet { .. }
                    | PublishTopic::TwinPatchReported { .. }
                    | PublishTopic::MethodResponse { .. }
            )
        {
            // A gateway: the upstream hub answers.
            if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id)
                && let Some(end) = self.send(Packet::PubAck(id)).await
            {
                return Some(end);
            }
            Metrics::inc(&self.hub.metrics.messages_in);
            relay.request(&self.identity.client_id(), &p.topic, p.payload);
            return None;
        }
        let topic = match topic {
            PublishTopic::TwinGet { rid } => return self.twin_request(&p, rid, None).await,
            PublishTopic::TwinPatchReported { rid } => {
                return self.twin_request(&p, rid, Some(&p.payload)).await;
            }
            PublishTopic::MethodResponse { status, rid } => {
                return self.method_response(p, status, &rid).await;
            }
            other => other,
        };
        let PublishTopic::Telemetry {
            device_id,
            module_id,
            properties,
        } = topic
        else {
            return self.violation(format!(
                "publish to {:?} is not supported by this hub yet",
                p.topic
            ));
        };
        let sender = match crate::device_session::forwarded::resolve(
            &mut self.senders,
            &self.hub,
            &self.identity,
            &device_id,
            module_id.as_deref(),
        ) {
            Ok(sender) => sender,
            Err(NotStored::Violation(reason)) => return self.violation(reason),
            Err(NotStored::Refused(why)) => return self.refused_sender(&p, why).await,
        };
        match telemetry::accept(&self.hub, sender, &p, &properties) {
            Ok(pending) => {
                if let Some(pending) = pending {
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
                }
                None
            }
            Err(reason) => self.violation(reason),
        }
    }

    /// A twin GET (`patch = None`) or reported-properties PATCH; answered on `$iothub/twin/res/...`.
    async fn twin_request(
        &mut self,
        p: &Publish,
        rid: String,
        patch: Option<&Vec<u8>>,
    ) -> Option<End> {
        if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id)
            && let Some(end) = self.send(Packet::PubAck(id)).await
        {
            return Some(end);
        }
        let client_id = self.identity.client_id();
        let (status, version, body) = match patch {
            None => match self.hub.twins.get(&self.hub, &client_id) {
                Ok(t) => (200, None, t.properties().to_string()),
                Err(e) => (500, None, twin_error(500_001, &e.to_string())),
            },
            Some(bytes) => match serde_json::from_slice::<serde_json::Value>(bytes) {
                Err(e) => (
                    400,
                    None,
                    twin_error(400_004, &format!("invalid JSON: {e}")),
                ),
                Ok(patch) => match self.hub.twins.patch_reported(&self.hub, &client_id, &patch) {
                    Ok(v) => (204, Some(v), String::new()),
                    Err(e) => (
                        i64::from(e.status.as_u16()),
                        None,
                        twin_error(400_004, &e.message),
                    ),
                },
            },
        };
        if !self
            .subscriptions
            .iter()
            .any(|(f, _)| f == "$iothub/twin/res/#")
        {
            warn!("Twin response dropped: the device is not subscribed to $iothub/twin/res/#");
            return None;
        }
        let status = u16::try_from(status).unwrap_or(500);
        let topic = iot_auth::topic::twin_response_topic(status, &rid, version);
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            packet_id: None,
            payload: body.into_bytes(),
        };
        Metrics::inc(&self.hub.metrics.messages_out);
        self.send(Packet::Publish(publish)).await
    }

    /// A device's answer to a direct method call.
    async fn method_response(&mut self, p: Publish, status: u16, rid: &str) -> Option<End> {
        if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id)
            && let Some(end) = self.send(Packet::PubAck(id)).await
        {
            return Some(end);
        }
        Metrics::inc(&self.hub.metrics.messages_in);
        let client_id = self.identity.client_id();
        if !self
            .hub
            .methods
            .complete(&client_id, rid, status, p.payload)
        {
            info!(
                rid,
                "Method answer dropped: no call of this device is waiting for this $rid (late or unknown)"
            );
        }
        None
    }

    /// Whether the session's SAS token has expired (its timer may not have fired yet).
    fn expired(&self) -> bool {
        time_left(&self.identity, &self.hub.clock).is_some_and(|left| left.is_zero())
    }

    /// Sends queued cloud-to-device messages (a device) or module input messages (a module, fed
    /// by a gateway's routes) while the client is subscribed to them and its token is valid.
    async fn deliver_c2d(&mut self) {
        if self.expired() {
            return;
        }
        let queue = self.identity.client_id();
        let prefix = match &self.identity.module_id {
            None => format!("devices/{}/messages/devicebound", self.identity.device_id),
            Some(m) => format!("devices/{}/modules/{m}/", self.identity.device_id),
        };
        if !self
            .subscriptions
            .iter()
            .any(|(f, _)| f.starts_with(&prefix))
            || self.c2d_inflight.len() >= C2D_WINDOW
        {
            return;
        }
        let now_ms = crate::time::now_ms(self.hub.clock.as_ref());
        let store = self.hub.registry.store().clone();
        let pending = match store.c2d_pending(&queue, now_ms) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "Could not read the cloud-to-device queue");
                return;
            }
        };
        for msg in pending {
            if self.c2d_inflight.len() >= C2D_WINDOW {
                break;
            }
            if self.c2d_inflight.values().any(|s| *s == msg.seq) {
                continue;
            }
            let (topic, payload) = match &self.identity.module_id {
                None => crate::c2d::publication(&self.identity.device_id, &msg),
                Some(m) => crate::c2d::input_publication(&self.identity.device_id, m, &msg),
            };
            let packet_id = self.next_packet_id;
            self.next_packet_id = self
                .next_packet_id
                .checked_add(1)
                .filter(|n| *n != 0)
                .unwrap_or(1);
            let publish = Publish {
                dup: msg.delivery_count > 0,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic,
                packet_id: Some(packet_id),
                payload,
            };
            if self.out.send(Packet::Publish(publish)).await.is_err() {
                return;
            }
            self.c2d_inflight.insert(packet_id, msg.seq);
            Metrics::inc(&self.hub.metrics.messages_out);
            if let Err(e) = store.c2d_delivered(&queue, msg.seq) {
                warn!(error = %e, "Could not count a cloud-to-device delivery");
            }
        }
    }

    /// Reading pauses: `limits.max_inflight_per_connection` (a gateway's `$edgeHub`:
    /// `max_inflight_per_gateway`) publishes await durability. Counted every time, logged once
    /// per connection.
    fn throttled(&mut self) {
        let (name, max) = inflight_limit(&self.hub, &self.identity);
        self.hub.metrics.limit_reached(name);
        if !self.throttle_logged {
            self.throttle_logged = true;
            info!(
                limit = name,
                max,
                "Pausing reads from this connection until its publishes are durable (limits.{name} = {max})"
            );
        }
    }

    fn persist(&self) {
        set_features(&self.features, &self.subscriptions);
        self.hub.connections.touch();
        if self.clean {
            return;
        }
        let record = SessionRecord {
            subscriptions: self.subscriptions.clone(),
        };
        if let Err(e) = self
            .hub
            .registry
            .store()
            .put_session(&self.identity.client_id(), &record)
        {
            warn!(error = %e, "Could not persist the session");
        }
    }

    async fn send(&self, packet: Packet) -> Option<End> {
        match self.out.send(packet).await {
            Ok(()) => None,
            Err(_) => Some(End::Ungraceful),
        }
    }

    /// A gateway's message for a sender it may not speak for (see [`crate::device_session::forwarded`]): it is
    /// acknowledged and not stored, so the gateway does not send it again and again; when the
    /// registry cannot tell, the connection ends unacknowledged and the gateway retries later.
    async fn refused_sender(&self, p: &Publish, why: Refusal) -> Option<End> {
        self.hub.metrics.auth_failure(why.reason());
        if why == Refusal::Unavailable {
            warn!(topic = %p.topic, "Registry unavailable; closing without acknowledging");
            return Some(End::Ungraceful);
        }
        Metrics::inc(&self.hub.metrics.messages_refused);
        warn!(topic = %p.topic, reason = %why, "Dropped a forwarded message: its sender is not allowed here");
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.send(Packet::PubAck(id)).await,
            _ => None,
        }
    }

    fn violation(&self, reason: String) -> Option<End> {
        Metrics::inc(&self.hub.metrics.protocol_errors);
        warn!(%reason, "Disconnecting device");
        Some(End::Ungraceful)
    }
}

/// The in-flight limit of a connection (its name in `[limits]`, its value): a gateway's
/// `$edgeHub` carries many devices' telemetry (see [`crate::device_session::forwarded`]).
fn inflight_limit(hub: &Hub, identity: &Identity) -> (&'static str, usize) {
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

/// Error bodies carry `errorCode`: the Node SDK only fails a twin request when it sees one.
fn twin_error(code: u32, message: &str) -> String {
    serde_json::json!({ "errorCode": code, "message": message }).to_string()
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

async fn write_packet<W: AsyncWrite + Unpin>(wr: &mut W, packet: &Packet) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(64);
    mqtt_codec::encode(packet, &mut buf).map_err(std::io::Error::other)?;
    wr.write_all(&buf).await?;
    wr.flush().await
}
