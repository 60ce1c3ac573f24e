//! One device connection: CONNECT and authentication, the session, then the packet loop (each
//! packet goes to [`super::handle`], which calls the socket-free [`crate::device_session`]).
//!
//! Two tasks per connection: this reader loop, which also turns the hub's notifications for the
//! session into packets, and a writer ([`super::writer`]) that owns the write half, coalesces
//! outgoing packets and sends PUBACKs in order as telemetry becomes durable.
//! Backpressure: when `max_inflight_per_connection` publishes await durability, reading pauses.

use std::sync::Arc;
use std::time::Duration;

use mqtt_codec::{ConnAck, ConnectReturnCode, Packet, Will};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Sleep;

use super::queue;
use tracing::{debug, info, warn};

use super::auth::{self, Identity, Refusal};
use super::handle::{State, interests, publish_will};
use super::io::PacketReader;
use crate::Hub;
use crate::device_session::{DeviceSession, Notification};
use crate::metrics::Metrics;

/// Why the packet loop ended.
pub(super) enum End {
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
    /// The client's certificate chain and
    /// [`crate::device_session::live::Connections::revocations`] before it was authenticated:
    /// kept until the session is registered (see [`auth::recheck`]).
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
    if let (Err(Refusal::UnknownDevice(_) | Refusal::UnknownModule(_)), Some(upstream)) =
        (&result, hub.upstream.get())
    {
        // A gateway: the identity may be new at the hub.
        let found =
            tokio::time::timeout(connect_timeout, upstream.lookup(&connect.client_id)).await;
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

/// Serves an admitted connection until it closes; `slots` (its places in the connection limits
/// and among the running tasks) are given back when it ends, however it ends.
pub fn run<S>(
    hub: Arc<Hub>,
    admitted: Box<Admitted<S>>,
    slots: super::SessionSlots,
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let identity = &admitted.identity;
    let span = tracing::info_span!("mqtt", client_id = %identity.client_id(), auth = identity.auth_type.as_str());
    tracing::Instrument::instrument(run_session(hub, admitted, slots), span)
}

/// The session's task. An idle connection holds for its whole life what this future holds
/// across the packet loop, and no more: the setup (CONNECT, the certificate chain, the stored
/// session) runs in a boxed future freed before the loop starts, the admitted connection arrives
/// boxed, and the CONNECT packet is not kept (only its will).
async fn run_session<S>(hub: Arc<Hub>, admitted: Box<Admitted<S>>, _slots: super::SessionSlots)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Some(mut live) = Box::pin(open(&hub, admitted)).await else {
        return;
    };
    let end = live.serve(&hub).await;
    Box::pin(live.close(&hub, end)).await;
}

/// What the packet loop of a running session holds.
struct Live<S> {
    state: State,
    reader: PacketReader,
    rd: ReadHalf<S>,
    writer: tokio::task::JoinHandle<()>,
    /// Published if the session ends ungracefully.
    will: Option<Box<Will>>,
    keep_alive: Option<Duration>,
    /// Only a SAS session has a token to outlive (boxed: an X.509 connection does not carry it).
    token_timer: Option<std::pin::Pin<Box<Sleep>>>,
}

/// Registers the session, answers CONNECT and starts the writer; `None` when the session ends
/// before it runs (refused, or the client gone).
async fn open<S>(hub: &Arc<Hub>, admitted: Box<Admitted<S>>) -> Option<Live<S>>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Admitted {
        identity,
        connect,
        reader,
        rd,
        mut wr,
        peer_chain,
        revocations,
    } = *admitted;
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
            return None;
        }
    };
    let (out_tx, out_rx) = queue::channel::<Packet>(256);
    let identity = Arc::new(identity);
    let mut session = DeviceSession::new(hub.clone(), identity.clone());
    session.set_interests(interests(&identity, &subscriptions));
    if session.attach() {
        info!("A newer connection replaces the previous one for this client id");
    }
    if let Err(refusal) = auth::recheck(hub, &connect, &peer_chain, revocations) {
        session.detach();
        hub.metrics.auth_failure(refusal.reason());
        warn!(reason = %refusal, code = refusal.reason(), "Refusing connection: its credentials changed while it connected");
        let ack = ConnAck {
            session_present: false,
            code: refusal.connack(),
        };
        let _ = write_packet(&mut wr, &Packet::ConnAck(ack)).await;
        return None;
    }
    drop(peer_chain);
    hub.registry
        .set_connection(&identity.device_id, identity.module_id.as_deref(), true);
    auth::record_model_id(hub, &identity, connect.username.as_deref());
    let ack = Packet::ConnAck(ConnAck {
        session_present,
        code: ConnectReturnCode::Accepted,
    });
    if write_packet(&mut wr, &ack).await.is_err() {
        session.detach();
        return None;
    }
    Metrics::inc(&hub.metrics.connections_active);
    info!(
        clean_session = connect.clean_session,
        session_present,
        keep_alive = connect.keep_alive,
        "Device connected"
    );
    let (ack_tx, ack_rx) = queue::channel(super::handle::inflight_limit(hub, &identity).1);
    let queues = super::writer::Queues {
        packets: out_rx,
        acks: ack_rx,
    };
    let inbox = session.subscription().clone();
    let writer = tokio::spawn(super::writer::run(wr, queues, hub.clone(), inbox));
    let mut state = State {
        session,
        clean: connect.clean_session,
        subscriptions,
        out: out_tx,
        ack: ack_tx,
        throttle_logged: false,
    };
    // A restored session may already be subscribed to cloud-to-device messages.
    Box::pin(state.deliver_c2d()).await;
    // A gateway opens the client's upstream session now, so that the hub sees it connected.
    if let Some(upstream) = hub.upstream.get() {
        let filters: Vec<String> = state.subscriptions.iter().map(|(f, _)| f.clone()).collect();
        upstream.subscribed(&client_id, &filters);
    }
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let token_timer = state
        .session
        .time_left()
        .map(|d| Box::pin(tokio::time::sleep(d)));
    Some(Live {
        state,
        reader,
        rd,
        writer,
        will: connect.will.map(Box::new),
        keep_alive,
        token_timer,
    })
}

impl<S> Live<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    /// The packet loop, until the session ends.
    async fn serve(&mut self, hub: &Arc<Hub>) -> End {
        loop {
            tokio::select! {
                n = self.state.session.subscription().next() => match n {
                    Notification::Close(why) => {
                        if let Some(reason) = why.metric() {
                            hub.metrics.auth_failure(reason);
                        }
                        info!(reason = ?why, "Closing connection: {}", why.describe());
                        return End::Ungraceful;
                    }
                    Notification::C2dAvailable => Box::pin(self.state.deliver_c2d()).await,
                    other => self.state.notified(other),
                },
                () = token_end(&mut self.token_timer) => {
                    return token_expired(hub, self.state.session.identity());
                }
                read = self.reader.next_within(&mut self.rd, self.keep_alive) => match read {
                    Ok(Some(packet)) => {
                        // Boxed: the handlers' state is allocated only while one runs, so an idle
                        // connection's task stays small.
                        if let Some(end) = Box::pin(self.state.handle(packet)).await {
                            return end;
                        }
                    }
                    Ok(None) => {
                        debug!("Connection closed by the device");
                        return End::Ungraceful;
                    }
                    Err(e) => {
                        super::io::read_failed(hub, &e, "Closing connection");
                        return End::Ungraceful;
                    }
                }
            }
        }
    }

    /// Unregisters the session, publishes its will after an ungraceful end, and waits for the
    /// writer to send what is queued.
    async fn close(self, hub: &Arc<Hub>, end: End) {
        let Live {
            state,
            writer,
            will,
            ..
        } = self;
        let State {
            session, out, ack, ..
        } = state;
        session.detach();
        hub.metrics
            .connections_active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let (End::Ungraceful, Some(will)) = (&end, &will) {
            Box::pin(publish_will(&session, will)).await;
        }
        drop((out, ack));
        let _ = writer.await;
        session.disconnected();
        info!("Device disconnected");
    }
}

/// Waits for the session's token to expire (forever without one).
async fn token_end(timer: &mut Option<std::pin::Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The session's SAS token expired: counted, logged, and the connection ends.
pub(super) fn token_expired(hub: &Hub, identity: &Identity) -> End {
    hub.metrics.auth_failure("expired_token");
    info!(
        expiry = identity.token_expiry,
        "Closing connection: its SAS token expired; reconnect with a new one"
    );
    End::Ungraceful
}

async fn write_packet<W: AsyncWrite + Unpin>(wr: &mut W, packet: &Packet) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(64);
    mqtt_codec::encode(packet, &mut buf).map_err(std::io::Error::other)?;
    wr.write_all(&buf).await?;
    wr.flush().await
}
