//! Upstream sessions: one MQTT connection to the hub per identity behind the gateway, opened when
//! it connects here (or on demand) and shared by what that identity does upstream:
//!
//! - the `$edgeHub` session carries the telemetry batches of every identity behind the gateway
//!   from the store-and-forward task (QoS 1, done when the hub acknowledged every message of the
//!   batch; the hub accepts them there for the edge device, its modules and its children);
//! - twin requests and method answers relayed from the local connection (QoS 0 upstream; the
//!   hub's answers go straight back down to the local connection);
//! - subscriptions mirrored from the local connection, so the hub delivers desired-property
//!   patches, direct methods and cloud-to-device messages to this session; cloud-to-device
//!   messages are put in the gateway's durable queue for the device before they are acknowledged
//!   upstream, so they survive a gateway restart and reach a device that is offline for a while.
//!
//! A session reconnects by itself while it has work, re-subscribes what the local client is
//! subscribed to, and closes after a minute without a local client or traffic. Reconnects back
//! off (250 ms doubling to 5 s, with jitter so sessions that lost the hub together do not return
//! together, and also after a session that broke right after connecting). A link that goes
//! silent is torn down: a PINGREQ left unanswered for a keep-alive period, or a write stalled
//! that long, ends the connection. When the hub refuses a device's or module's session as not
//! authorized (it closes the sessions of an identity it disables or deletes, and refuses their
//! reconnect), the gateway is told at once, to check that identity at the hub.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqtt_codec::{ConnectReturnCode, Packet, Publish, QoS, Subscribe, Unsubscribe};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument as _, debug, info, warn};

use crate::upstream::{self, HubLink, UpstreamError};

/// Makes a SAS token for the gateway's `$edgeHub` identity (each call a fresh one).
pub type TokenFn = Arc<dyn Fn() -> TokenFuture + Send + Sync>;
/// See [`TokenFn`]; the error says why no token could be made.
pub type TokenFuture = std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
/// Called with the `$edgeHub` twin's desired properties whenever they are read.
pub type DesiredFn = Arc<dyn Fn(&serde_json::Value) + Send + Sync>;
/// Called with the client id of an identity whose upstream session the hub refused as not
/// authorized (CONNACK 5): the hub may have disabled or removed it.
pub type RefusedFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Depth of a device's cloud-to-device queue at the gateway (as at the hub).
const C2D_DEPTH: usize = hub::c2d::MAX_QUEUE_DEPTH;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive pings, and how often an idle session checks whether to close.
const TICK: Duration = Duration::from_secs(30);
/// Reconnect back-off: first and longest wait (before jitter).
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// What the `$edgeHub` session listens to.
const EDGE_HUB_FILTERS: [&str; 2] = [
    "$iothub/twin/res/#",
    "$iothub/twin/PATCH/properties/desired/#",
];

enum Cmd {
    Subscribe(Vec<String>),
    Unsubscribe,
    Request {
        topic: String,
        payload: Vec<u8>,
    },
    Batch {
        messages: Vec<(String, Vec<u8>)>,
        done: oneshot::Sender<Result<(), UpstreamError>>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    /// A downstream device or module (`auth-chain`).
    OnBehalf,
    /// The gateway's own `$edgeHub` module: reads its twin for routes.
    EdgeHub,
}

struct Handle {
    id: u64,
    tx: mpsc::UnboundedSender<Cmd>,
}

/// Counters the gateway reports.
#[derive(Default)]
pub struct RelayStats {
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub relayed_down: AtomicU64,
    pub relayed_up: AtomicU64,
    pub c2d_queued: AtomicU64,
    /// Whether the gateway's own `$edgeHub` session is connected to the hub (`edge list`).
    pub edge_hub_online: AtomicBool,
}

pub struct Relay {
    link: HubLink,
    local: Arc<hub::Hub>,
    token: TokenFn,
    desired: DesiredFn,
    refused: RefusedFn,
    sessions: Mutex<HashMap<String, Handle>>,
    next_id: AtomicU64,
    pub stats: RelayStats,
    /// [`CONNECT_TIMEOUT`] and [`TICK`] in milliseconds (see [`Relay::set_timing`]).
    connect_ms: AtomicU64,
    tick_ms: AtomicU64,
}

impl Relay {
    pub fn new(
        link: HubLink,
        local: Arc<hub::Hub>,
        token: TokenFn,
        desired: DesiredFn,
        refused: RefusedFn,
    ) -> Self {
        Self {
            link,
            local,
            token,
            desired,
            refused,
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stats: RelayStats::default(),
            connect_ms: AtomicU64::new(millis(CONNECT_TIMEOUT)),
            tick_ms: AtomicU64::new(millis(TICK)),
        }
    }

    /// Changes how long a connection attempt may take and the keep-alive period (a silent link
    /// is given up after one unanswered PINGREQ, i.e. within two periods) for connections made
    /// from now on. The defaults are 10 s and 30 s; tests shorten them.
    pub fn set_timing(&self, connect_timeout: Duration, keep_alive: Duration) {
        self.connect_ms
            .store(millis(connect_timeout).max(1), Ordering::Relaxed);
        self.tick_ms
            .store(millis(keep_alive).max(1), Ordering::Relaxed);
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_ms.load(Ordering::Relaxed))
    }

    fn keep_alive(&self) -> Duration {
        Duration::from_millis(self.tick_ms.load(Ordering::Relaxed))
    }

    fn edge_hub_id(&self) -> String {
        format!("{}/$edgeHub", self.link.edge_id)
    }

    /// Hands `cmd` to the session of `client_id`, starting one if needed.
    fn command(self: &Arc<Self>, client_id: &str, cmd: Cmd) {
        let Ok(mut sessions) = self.sessions.lock() else {
            return;
        };
        let cmd = match sessions.get(client_id) {
            Some(h) => match h.tx.send(cmd) {
                Ok(()) => return,
                Err(mpsc::error::SendError(cmd)) => cmd,
            },
            None => cmd,
        };
        let role = if client_id == self.edge_hub_id() {
            Role::EdgeHub
        } else {
            Role::OnBehalf
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = tx.send(cmd);
        sessions.insert(client_id.to_owned(), Handle { id, tx });
        let span = tracing::info_span!("upstream", client_id = %client_id);
        tokio::spawn(session(self.clone(), client_id.to_owned(), id, role, rx).instrument(span));
    }

    /// Opens the `$edgeHub` session: it reads the gateway's twin and follows desired patches.
    pub fn start_edge_hub(self: &Arc<Self>) {
        self.command(
            &self.edge_hub_id(),
            Cmd::Subscribe(EDGE_HUB_FILTERS.iter().map(|f| (*f).to_owned()).collect()),
        );
    }

    /// Sends telemetry of identities behind the gateway (topic, body) at QoS 1 on the `$edgeHub`
    /// session, which the hub lets speak for this edge device, its modules and its children (one
    /// connection for all of them, instead of one each); `Ok` once the hub acknowledged all.
    pub async fn forward_batch(
        self: &Arc<Self>,
        messages: Vec<(String, Vec<u8>)>,
    ) -> Result<(), UpstreamError> {
        let (done, answer) = oneshot::channel();
        self.command(&self.edge_hub_id(), Cmd::Batch { messages, done });
        answer.await.unwrap_or(Err(UpstreamError::Offline))
    }

    /// Closes every session (the gateway is stopping).
    pub fn close_all(&self) {
        if let Ok(mut s) = self.sessions.lock() {
            s.clear();
        }
    }

    /// Removes the session `id` of `client_id` if nothing is queued for it; `false` when it must
    /// stay (a command arrived meanwhile).
    fn retire(&self, client_id: &str, id: u64, rx: &mut mpsc::UnboundedReceiver<Cmd>) -> bool {
        let Ok(mut sessions) = self.sessions.lock() else {
            return true;
        };
        if !rx.is_empty() {
            return false;
        }
        if sessions.get(client_id).is_some_and(|h| h.id == id) {
            sessions.remove(client_id);
        }
        rx.close();
        true
    }

    /// Sends a packet to the local connection of `client_id` (QoS 0).
    fn down(&self, client_id: &str, topic: String, payload: Vec<u8>) {
        let Some(tx) = self.local.connections.sender(client_id) else {
            debug!(%topic, "Dropped a relayed message: the client is not connected here");
            return;
        };
        if tx.try_send(qos0(topic, payload)).is_ok() {
            self.stats.relayed_down.fetch_add(1, Ordering::Relaxed);
        } else {
            warn!("Dropped a relayed message: the local connection is busy or closing");
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `base` scaled by a factor in [0.5, 1), drawn from the client id, the attempt number and a
/// per-process random key: sessions that lost the hub together come back spread out.
fn jittered(base: Duration, client_id: &str, attempt: u64) -> Duration {
    use std::hash::BuildHasher as _;
    let draw = std::hash::RandomState::new().hash_one((client_id, attempt)) % 1024;
    base.mul_f64(0.5 + draw as f64 / 2048.0)
}

/// Filters the hub serves for a client (everything else a client subscribes to is local, e.g. a
/// module's inputs).
fn upstream_filter(client_id: &str, filter: &str) -> bool {
    filter.starts_with("$iothub/")
        || (!client_id.contains('/')
            && filter == format!("devices/{client_id}/messages/devicebound/#"))
}

/// What the local hub reports (see [`hub::upstream::Upstream`]).
impl Relay {
    /// The local client connected or subscribed to `filters`; those the hub serves are mirrored
    /// upstream. The client's session opens at its CONNECT (with no filters), so the hub shows it
    /// connected while it is connected here, as IoT Edge does; its telemetry travels on the
    /// `$edgeHub` session (see [`Relay::forward_batch`]).
    pub fn subscribed(self: &Arc<Self>, client_id: &str, filters: &[String]) {
        let wanted: Vec<String> = filters
            .iter()
            .filter(|f| upstream_filter(client_id, f))
            .cloned()
            .collect();
        if !wanted.is_empty() || filters.is_empty() {
            self.command(client_id, Cmd::Subscribe(wanted));
        }
    }

    /// A twin request or method answer from the local client, for the hub.
    pub fn request(self: &Arc<Self>, client_id: &str, topic: &str, payload: Vec<u8>) {
        self.command(
            client_id,
            Cmd::Request {
                topic: topic.to_owned(),
                payload,
            },
        );
    }

    /// The local client left. Methods and desired patches must not go to a session nobody
    /// listens to (the hub then answers method calls with 404 DeviceNotOnline, as it does for
    /// any offline device).
    pub fn disconnected(self: &Arc<Self>, client_id: &str) {
        let present = self
            .sessions
            .lock()
            .is_ok_and(|s| s.contains_key(client_id));
        if present {
            self.command(client_id, Cmd::Unsubscribe);
        }
    }
}

/// What one live upstream connection is waiting for.
#[derive(Default)]
struct InFlight {
    next_packet: u16,
    /// Packet id → batch number.
    packets: HashMap<u16, u64>,
    /// Batch number → (unacknowledged count, completion).
    batches: HashMap<u64, (usize, oneshot::Sender<Result<(), UpstreamError>>)>,
    next_batch: u64,
    next_rid: u64,
}

impl InFlight {
    fn packet_id(&mut self) -> u16 {
        self.next_packet = self.next_packet.checked_add(1).unwrap_or(1);
        self.next_packet
    }

    fn fail_all(&mut self) {
        self.packets.clear();
        for (_, (_, done)) in self.batches.drain() {
            let _ = done.send(Err(UpstreamError::Offline));
        }
    }

    fn acked(&mut self, id: u16) {
        let Some(batch) = self.packets.remove(&id) else {
            return;
        };
        let finished = self.batches.get_mut(&batch).is_some_and(|(left, _)| {
            *left -= 1;
            *left == 0
        });
        if finished && let Some((_, done)) = self.batches.remove(&batch) {
            let _ = done.send(Ok(()));
        }
    }
}

async fn session(
    relay: Arc<Relay>,
    client_id: String,
    id: u64,
    role: Role,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) {
    let mut filters: BTreeSet<String> = BTreeSet::new();
    if role == Role::EdgeHub {
        // Subscribed before the first twin GET goes out.
        filters.extend(EDGE_HUB_FILTERS.iter().map(|f| (*f).to_owned()));
    }
    let mut backoff = BACKOFF_FIRST;
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        let limit = relay.connect_timeout();
        let attempt = tokio::time::timeout(limit, async {
            let token = (relay.token)().await.map_err(UpstreamError::Token)?;
            upstream::connect(&relay.link, &client_id, role == Role::OnBehalf, &token).await
        })
        .await
        .unwrap_or(Err(UpstreamError::Offline));
        let (reader, writer) = match attempt {
            Ok(c) => c,
            Err(e) => {
                relay.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                if role == Role::OnBehalf
                    && matches!(
                        e,
                        UpstreamError::Refused {
                            code: ConnectReturnCode::NotAuthorized,
                            ..
                        }
                    )
                {
                    // Disabled or removed at the hub (it also closed the session that was open)?
                    (relay.refused)(&client_id);
                }
                let wait = jittered(backoff, &client_id, attempts);
                warn!(error = %e, retry_in_ms = millis(wait), "Upstream connection failed; retrying");
                if !offline_wait(&relay, &client_id, id, role, &mut rx, &mut filters, wait).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_FIRST;
        relay.stats.connects.fetch_add(1, Ordering::Relaxed);
        info!("Upstream session open");
        let own = role == Role::EdgeHub;
        if own {
            relay.stats.edge_hub_online.store(true, Ordering::Relaxed);
        }
        let ended = online(
            &relay,
            &client_id,
            id,
            role,
            &mut rx,
            &mut filters,
            reader,
            writer,
        )
        .await;
        if own {
            relay.stats.edge_hub_online.store(false, Ordering::Relaxed);
        }
        match ended {
            Ok(()) => return,
            Err(e) => warn!(error = %e, "Upstream session lost; reconnecting"),
        }
        // A link that breaks right after connecting must not become a tight reconnect loop.
        let wait = jittered(BACKOFF_FIRST, &client_id, attempts);
        if !offline_wait(&relay, &client_id, id, role, &mut rx, &mut filters, wait).await {
            return;
        }
    }
}

/// While the hub is unreachable: batches fail at once (the forwarder holds its messages and
/// retries), twin requests are answered with 503, subscriptions are remembered. `false` when the
/// session should end.
async fn offline_wait(
    relay: &Arc<Relay>,
    client_id: &str,
    id: u64,
    role: Role,
    rx: &mut mpsc::UnboundedReceiver<Cmd>,
    filters: &mut BTreeSet<String>,
    wait: Duration,
) -> bool {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            cmd = rx.recv() => match cmd {
                None => return false,
                Some(Cmd::Subscribe(f)) => filters.extend(f),
                Some(Cmd::Unsubscribe) => filters.clear(),
                Some(Cmd::Batch { done, .. }) => { let _ = done.send(Err(UpstreamError::Offline)); }
                Some(Cmd::Request { topic, .. }) => answer_offline(relay, client_id, &topic),
            },
        }
    }
    let needed = role == Role::EdgeHub || relay.local.connections.is_connected(client_id);
    needed || !relay.retire(client_id, id, rx)
}

/// A twin request while the hub is unreachable gets status 503 (method answers are dropped: the
/// hub has already timed the call out or will).
fn answer_offline(relay: &Relay, client_id: &str, topic: &str) {
    if let Ok(
        iot_auth::topic::PublishTopic::TwinGet { rid }
        | iot_auth::topic::PublishTopic::TwinPatchReported { rid },
    ) = iot_auth::topic::parse_publish_topic(topic)
    {
        let body = serde_json::json!({"errorCode": 503_000, "message": "the gateway cannot reach the hub"});
        relay.down(
            client_id,
            iot_auth::topic::twin_response_topic(503, &rid, None),
            body.to_string().into_bytes(),
        );
    }
}

fn qos0(topic: String, payload: Vec<u8>) -> Packet {
    Packet::Publish(Publish::at_most_once(topic, payload))
}

fn edge_hub_get(flight: &mut InFlight) -> Packet {
    flight.next_rid += 1;
    qos0(
        format!("$iothub/twin/GET/?$rid=edgehub-{}", flight.next_rid),
        Vec::new(),
    )
}

/// Serves one live connection; `Ok` when the session ends for good, `Err` when it broke.
#[allow(clippy::too_many_arguments)]
async fn online(
    relay: &Arc<Relay>,
    client_id: &str,
    id: u64,
    role: Role,
    rx: &mut mpsc::UnboundedReceiver<Cmd>,
    filters: &mut BTreeSet<String>,
    mut reader: upstream::Reader,
    mut writer: upstream::Writer,
) -> Result<(), UpstreamError> {
    let mut flight = InFlight::default();
    let mut first = Vec::new();
    if !filters.is_empty() {
        first.push(subscribe(&mut flight, filters.iter().cloned().collect()));
    }
    if role == Role::EdgeHub {
        first.push(edge_hub_get(&mut flight));
    }
    let every = relay.keep_alive();
    send_within(&mut writer, &first, every).await?;
    let mut tick = tokio::time::interval(every);
    // After a slow write, the next ping waits a whole period for its answer (no burst of ticks).
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut busy = false;
    // A PINGREQ went out and nothing has come from the hub since.
    let mut unanswered = false;
    let result = loop {
        tokio::select! {
            cmd = rx.recv() => {
                busy = true;
                let Some(cmd) = cmd else { break Ok(()) };
                let packets = command(relay, client_id, &mut flight, filters, cmd);
                if let Err(e) = send_within(&mut writer, &packets, every).await { break Err(e) }
            }
            got = reader.recv() => {
                unanswered = false;
                match got {
                    Ok(Packet::PubAck(pid)) => flight.acked(pid),
                    Ok(Packet::Publish(p)) => {
                        busy = true;
                        let (mut answers, reread) = incoming(relay, client_id, role, p);
                        if reread {
                            answers.push(edge_hub_get(&mut flight));
                        }
                        if let Err(e) = send_within(&mut writer, &answers, every).await {
                            break Err(e);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break Err(e),
                }
            }
            _ = tick.tick() => {
                if unanswered {
                    break Err(silent(format!("no answer to PINGREQ within {every:?}")));
                }
                let needed = busy || role == Role::EdgeHub || !flight.batches.is_empty()
                    || relay.local.connections.is_connected(client_id);
                busy = false;
                if !needed && relay.retire(client_id, id, rx) {
                    info!("Upstream session closed: idle, and the client is not connected here");
                    break Ok(());
                }
                if let Err(e) = send_within(&mut writer, &[Packet::PingReq], every).await {
                    break Err(e);
                }
                unanswered = true;
            }
        }
    };
    flight.fail_all();
    if result.is_ok() {
        let _ = tokio::time::timeout(every, writer.close()).await;
    }
    result
}

/// The hub went silent: the link is given up.
fn silent(what: String) -> UpstreamError {
    UpstreamError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}

/// Writes `packets`, unless the link stalls for `limit` (the peer stopped reading).
async fn send_within(
    writer: &mut upstream::Writer,
    packets: &[Packet],
    limit: Duration,
) -> Result<(), UpstreamError> {
    if packets.is_empty() {
        return Ok(());
    }
    tokio::time::timeout(limit, writer.send(packets))
        .await
        .unwrap_or_else(|_| Err(silent(format!("a write to the hub stalled for {limit:?}"))))
}

fn subscribe(flight: &mut InFlight, filters: Vec<String>) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: flight.packet_id(),
        filters: filters.into_iter().map(|f| (f, QoS::AtLeastOnce)).collect(),
    })
}

/// The packets a command sends upstream.
fn command(
    relay: &Relay,
    client_id: &str,
    flight: &mut InFlight,
    filters: &mut BTreeSet<String>,
    cmd: Cmd,
) -> Vec<Packet> {
    match cmd {
        Cmd::Subscribe(f) => {
            let new: Vec<String> = f
                .into_iter()
                .filter(|f| filters.insert(f.clone()))
                .collect();
            if new.is_empty() {
                Vec::new()
            } else {
                vec![subscribe(flight, new)]
            }
        }
        Cmd::Unsubscribe => {
            if filters.is_empty() {
                return Vec::new();
            }
            let all: Vec<String> = std::mem::take(filters).into_iter().collect();
            vec![Packet::Unsubscribe(Unsubscribe {
                packet_id: flight.packet_id(),
                filters: all,
            })]
        }
        Cmd::Request { topic, payload } => {
            relay.stats.relayed_up.fetch_add(1, Ordering::Relaxed);
            debug!(client_id, %topic, "Relaying upstream");
            vec![qos0(topic, payload)]
        }
        Cmd::Batch { messages, done } => {
            if messages.is_empty() {
                let _ = done.send(Ok(()));
                return Vec::new();
            }
            let batch = flight.next_batch;
            flight.next_batch += 1;
            flight.batches.insert(batch, (messages.len(), done));
            messages
                .into_iter()
                .map(|(topic, payload)| {
                    let pid = flight.packet_id();
                    flight.packets.insert(pid, batch);
                    Packet::Publish(Publish {
                        dup: false,
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        topic,
                        packet_id: Some(pid),
                        payload,
                    })
                })
                .collect()
        }
    }
}

/// Handles a publish from the hub; returns what to send back (PUBACK) and, for the `$edgeHub`
/// session, whether to read the whole twin again (its desired properties changed).
fn incoming(relay: &Relay, client_id: &str, role: Role, p: Publish) -> (Vec<Packet>, bool) {
    let ack = |p: &Publish| match (p.qos, p.packet_id) {
        (QoS::AtLeastOnce, Some(id)) => vec![Packet::PubAck(id)],
        _ => Vec::new(),
    };
    if role == Role::EdgeHub {
        let out = ack(&p);
        if p.topic
            .starts_with("$iothub/twin/PATCH/properties/desired/")
        {
            return (out, true);
        } else if p.topic.starts_with("$iothub/twin/res/200/") {
            match serde_json::from_slice::<serde_json::Value>(&p.payload) {
                Ok(twin) => (relay.desired)(&twin["desired"]),
                Err(e) => warn!(error = %e, "The $edgeHub twin is not JSON"),
            }
        } else if p.topic.starts_with("$iothub/twin/res/") {
            warn!(topic = %p.topic, "The hub refused the $edgeHub twin request");
        }
        return (out, false);
    }
    if p.topic.starts_with("$iothub/") {
        let out = ack(&p);
        relay.down(client_id, p.topic, p.payload);
        return (out, false);
    }
    if p.topic.contains("/messages/devicebound/") {
        let out = match queue_c2d(relay, client_id, &p) {
            Ok(true) => ack(&p),
            Ok(false) => {
                warn!("Cloud-to-device message left at the hub: the device's queue here is full");
                Vec::new()
            }
            Err(e) => {
                warn!(error = %e, "Cloud-to-device message left at the hub: cannot store it");
                Vec::new()
            }
        };
        return (out, false);
    }
    warn!(topic = %p.topic, "Ignoring an unexpected message from the hub");
    (ack(&p), false)
}

/// Puts a cloud-to-device message from the hub in the device's queue here.
fn queue_c2d(relay: &Relay, client_id: &str, p: &Publish) -> Result<bool, String> {
    use base64::Engine as _;
    use iot_auth::topic::{PropertyBag, SystemProperty};
    let bag_text = p
        .topic
        .split_once("/messages/devicebound/")
        .map_or("", |(_, b)| b);
    let bag = PropertyBag::parse(bag_text).map_err(|e| e.to_string())?;
    let split = bag.split_system();
    let now_ms = ferrohub_runtime::time::now_ms(relay.local.clock.as_ref());
    let ttl_ms = i64::try_from(hub::c2d::DEFAULT_TTL_SECS * 1000).unwrap_or(i64::MAX);
    let msg = hub::store::C2dMessage {
        seq: 0,
        message_id: split
            .system_value(SystemProperty::MessageId)
            .map_or_else(ferrohub_runtime::etag::new_etag, str::to_owned),
        correlation_id: split
            .system_value(SystemProperty::CorrelationId)
            .map(str::to_owned),
        properties: split
            .application
            .iter()
            .map(|(k, v)| (k.to_owned(), v.unwrap_or_default().to_owned()))
            .collect(),
        body: base64::engine::general_purpose::STANDARD.encode(&p.payload),
        enqueued_ms: now_ms,
        expiry_ms: now_ms.saturating_add(ttl_ms),
        delivery_count: 0,
        input: None,
        system: std::collections::BTreeMap::new(),
    };
    let queued =
        hub::c2d::enqueue(&relay.local, client_id, &msg, C2D_DEPTH).map_err(|e| e.to_string())?;
    if queued {
        relay.stats.c2d_queued.fetch_add(1, Ordering::Relaxed);
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_are_jittered_within_half_to_all_of_the_back_off() {
        let mut seen = BTreeSet::new();
        let mut backoff = BACKOFF_FIRST;
        for attempt in 1..=20u64 {
            for client in ["child-1", "child-2", "gw/$edgeHub"] {
                let wait = jittered(backoff, client, attempt);
                assert!(
                    wait >= backoff / 2 && wait < backoff,
                    "{wait:?} for {backoff:?}"
                );
                seen.insert(wait);
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        assert_eq!(
            backoff, BACKOFF_MAX,
            "the back-off stops growing at its maximum"
        );
        // 60 draws over 6 back-off levels: not all sessions wait the same.
        assert!(seen.len() > 30, "{} distinct waits", seen.len());
    }
}
