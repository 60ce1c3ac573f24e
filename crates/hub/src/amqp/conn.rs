//! One AMQP connection after TLS: the protocol header (the Azure SDKs send plain AMQP with no
//! SASL layer; others SASL ANONYMOUS, PLAIN or EXTERNAL), the sessions the client begins, and
//! each link it attaches, routed by address ([`super::address`]) to `$cbs`, an identity's links
//! ([`super::links`]) or the service's ([`super::service`]).
//!
//! A link is admitted when the connection holds a grant for what it reaches: a put-token for the
//! device or module (or the hub, for service links), or the TLS client certificate of that
//! device or module. Anything else is refused on that link alone with the condition IoT Hub
//! uses (`amqp:unauthorized-access`, `amqp:not-found`); the connection and its other links go on.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerConnectionHandle,
    ListenerSessionHandle, SaslAcceptor, SessionAcceptor, SupportedReceiverSettleModes,
};
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::definitions::{AmqpError, ReceiverSettleMode, Role as AmqpRole};
use fe2o3_amqp::types::messaging::{Body, TargetArchetype};
use fe2o3_amqp::types::primitives::{Array, Symbol, Value};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::address::{self, Node, Role, Target};
use super::cbs::{self, Grant};
use super::links::{self, error};
use super::message::Outgoing;
use super::peer::{OutLink, Peer};
use super::service;
use crate::Hub;
use crate::device_session::auth::{self, Credentials};
use crate::metrics::Metrics;

const AMQP: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
const AMQP_SASL: [u8; 8] = *b"AMQP\x03\x01\x00\x00";

/// What one connection may reach, and its identities' sessions.
pub struct Conn {
    hub: Arc<Hub>,
    /// The TLS client certificate chain (leaf first; empty without one).
    chain: Vec<CertificateDer<'static>>,
    state: Mutex<State>,
    /// Answers to `$cbs` requests, for the link the client receives them on.
    cbs_tx: mpsc::Sender<Outgoing>,
    cbs_rx: tokio::sync::Mutex<mpsc::Receiver<Outgoing>>,
}

#[derive(Default)]
struct State {
    /// Identities a put-token admitted, by client id.
    grants: HashMap<String, auth::Identity>,
    /// Until when (seconds since the epoch) a service policy token admits the service links.
    service_until: Option<u64>,
    /// Identities with links on this connection.
    peers: HashMap<String, Arc<Peer>>,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The session of `target` on this connection, started at its first link.
    fn peer(&self, target: &Target) -> Result<Arc<Peer>, String> {
        let client_id = target.client_id();
        let mut state = self.lock();
        if let Some(p) = state.peers.get(&client_id) {
            if !p.is_ended() {
                return Ok(p.clone());
            }
            // Its session ended (revoked, expired, replaced): the token it was admitted with is
            // spent too, so a link now needs a new put-token, which authenticates again.
            state.peers.remove(&client_id);
            state.grants.remove(&client_id);
        }
        let identity = match state.grants.get(&client_id) {
            Some(identity) => identity.clone(),
            None if !self.chain.is_empty() => {
                let creds = Credentials {
                    host: &self.hub.config.hostname,
                    device_id: &target.device_id,
                    module_id: target.module_id.as_deref(),
                    auth_chain: None,
                    sas_token: None,
                };
                auth::authenticate(&self.hub, &creds, &self.chain).map_err(|why| {
                    self.hub.metrics.auth_failure(why.reason());
                    why.to_string()
                })?
            }
            None => {
                return Err(format!(
                    "no token was put on $cbs for {client_id:?} on this connection, and it \
                     presented no client certificate"
                ));
            }
        };
        if crate::device_session::time_left(&identity, &self.hub.clock).is_some_and(|l| l.is_zero())
        {
            return Err(format!(
                "the token put for {client_id:?} has expired; put a new one"
            ));
        }
        let peer = Peer::start(self.hub.clone(), identity);
        state.peers.insert(client_id, peer.clone());
        Ok(peer)
    }

    fn service_allowed(&self) -> bool {
        let now = u64::try_from(self.hub.clock.now().unix_timestamp()).unwrap_or(0);
        self.lock().service_until.is_some_and(|until| until > now)
    }

    /// Applies a put-token and answers it.
    fn put_token(&self, req: &cbs::PutToken) -> (i32, String) {
        match cbs::authorize(&self.hub, req) {
            Ok(Grant::Identity(identity)) => {
                let client_id = identity.client_id();
                let mut state = self.lock();
                match state.peers.get(&client_id) {
                    Some(peer) if !peer.is_ended() => {
                        info!(%client_id, expiry = identity.token_expiry, "Token renewed on $cbs");
                        peer.renew(identity.clone());
                    }
                    Some(_) => {
                        // A new session starts at the next link.
                        state.peers.remove(&client_id);
                        info!(%client_id, "Token put on $cbs");
                    }
                    None => info!(%client_id, "Token put on $cbs"),
                }
                state.grants.insert(client_id, identity);
                (200, "OK".into())
            }
            Ok(Grant::Service { policy, expiry }) => {
                info!(%policy, "Service token put on $cbs");
                self.lock().service_until = Some(expiry);
                (200, "OK".into())
            }
            Err(r) => {
                warn!(audience = %req.audience, reason = %r.description, "Refusing a put-token");
                (r.status, r.description)
            }
        }
    }

    /// The connection ended: every identity's session ends.
    fn finish(&self) {
        let peers: Vec<Arc<Peer>> = self.lock().peers.drain().map(|(_, p)| p).collect();
        for p in peers {
            p.connection_closed();
        }
    }
}

/// Serves one connection on `tls` (the client certificate chain already read from it).
pub async fn serve<S>(
    hub: Arc<Hub>,
    mut tls: S,
    chain: Vec<CertificateDer<'static>>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let mut header = [0u8; 8];
    let timeout = std::time::Duration::from_secs(hub.config.limits.connect_timeout_secs);
    match tokio::time::timeout(timeout, tls.read_exact(&mut header)).await {
        Ok(Ok(_)) => {}
        _ => {
            debug!("Closing: no AMQP protocol header");
            return;
        }
    }
    let io = Prefixed {
        head: header,
        pos: 0,
        inner: tls,
    };
    let container = hub.config.hostname.clone();
    let opened = match header {
        AMQP => ConnectionAcceptor::new(container).accept(io).await,
        AMQP_SASL => {
            let sasl = Sasl {
                client_cert: !chain.is_empty(),
            };
            let acceptor = ConnectionAcceptor::builder()
                .container_id(container)
                .sasl_acceptor(sasl)
                .build();
            acceptor.accept(io).await
        }
        other => {
            Metrics::inc(&hub.metrics.protocol_errors);
            warn!(header = ?other, "Closing: not an AMQP 1.0 protocol header");
            let mut io = io.inner;
            let _ = io.write_all(&AMQP).await;
            let _ = io.shutdown().await;
            return;
        }
    };
    let mut connection = match opened {
        Ok(c) => c,
        Err(e) => {
            Metrics::inc(&hub.metrics.protocol_errors);
            warn!(error = %e, "Closing: the AMQP connection could not be opened");
            return;
        }
    };
    let (cbs_tx, cbs_rx) = mpsc::channel(16);
    let conn = Arc::new(Conn {
        hub,
        chain,
        state: Mutex::default(),
        cbs_tx,
        cbs_rx: tokio::sync::Mutex::new(cbs_rx),
    });
    tokio::select! {
        () = sessions(&conn, &mut connection) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    conn.finish();
    let _ = connection.close().await;
}

async fn sessions(conn: &Arc<Conn>, connection: &mut ListenerConnectionHandle) {
    while let Some(incoming) = connection.next_incoming_session().await {
        match SessionAcceptor::new()
            .accept_incoming_session(incoming, connection)
            .await
        {
            Ok(session) => {
                tokio::spawn(links_of(conn.clone(), session));
            }
            Err(e) => {
                warn!(error = %e, "Could not begin an AMQP session");
                return;
            }
        }
    }
}

/// Accepts the links of one session, each in a task of its own.
async fn links_of(conn: Arc<Conn>, mut session: ListenerSessionHandle) {
    // Deliveries the hub receives settle at its first disposition (rcv-settle-mode first), as
    // the hub's answer (accepted once durable) is final; a client asking for "second" (uamqp's
    // default) is told "first" in the attach and goes along.
    let acceptor = LinkAcceptor::builder()
        .max_message_size(max_message_bytes(&conn.hub))
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .build();
    while let Some(attach) = session.next_incoming_attach().await {
        let (role, address) = match attach.role {
            AmqpRole::Sender => (
                Role::ClientSends,
                attach.target.as_ref().and_then(|t| match &**t {
                    TargetArchetype::Target(t) => t.address.clone(),
                }),
            ),
            AmqpRole::Receiver => (
                Role::ClientReceives,
                attach.source.as_ref().and_then(|s| s.address.clone()),
            ),
        };
        let address = address.unwrap_or_default();
        match acceptor.accept_incoming_attach(attach, &mut session).await {
            Ok(link) => route(&conn, &address, role, link).await,
            Err(e) => debug!(error = ?e, %address, "Could not attach a link"),
        }
    }
    let _ = session.end().await;
}

fn max_message_bytes(hub: &Hub) -> u64 {
    // Room for the properties around the largest body the hub stores.
    let body =
        crate::device_session::telemetry::MAX_BODY_BYTES.max(hub.config.limits.max_packet_bytes);
    u64::try_from(body).unwrap_or(u64::MAX) + 16 * 1024
}

/// Starts the loop of a newly attached link, or refuses it.
async fn route(conn: &Arc<Conn>, address: &str, role: Role, link: LinkEndpoint) {
    let node = match address::parse(address, role) {
        Ok(node) => node,
        Err(e) => {
            warn!(%address, "Refusing a link: {e}");
            return refuse(link, AmqpError::NotFound, e.to_string()).await;
        }
    };
    let identity_node = match &node {
        Node::Telemetry(t) | Node::CloudToDevice(t) | Node::Twin(t) | Node::Methods(t) => {
            Some(t.clone())
        }
        _ => None,
    };
    if let Some(target) = identity_node {
        let peer = match conn.peer(&target) {
            Ok(p) => p,
            Err(reason) => {
                warn!(%address, %reason, "Refusing a link");
                return refuse(link, AmqpError::UnauthorizedAccess, reason).await;
            }
        };
        spawn_identity_link(peer, node, link);
        return;
    }
    match (node, link) {
        (Node::Cbs, LinkEndpoint::Receiver(r)) => {
            tokio::spawn(cbs_requests(conn.clone(), r));
        }
        (Node::Cbs, LinkEndpoint::Sender(s)) => {
            tokio::spawn(cbs_answers(conn.clone(), s));
        }
        (Node::ServiceCloudToDevice, link) if conn.service_allowed() => {
            if let LinkEndpoint::Receiver(r) = link {
                tokio::spawn(service::cloud_to_device(conn.hub.clone(), r));
            }
        }
        (Node::ServiceCloudToDevice | Node::ServiceFeedback, link) if !conn.service_allowed() => {
            let reason = "put a service policy token (ServiceConnect) for the hub on $cbs first";
            warn!(%address, "Refusing a service link: no service token");
            refuse(link, AmqpError::UnauthorizedAccess, reason.into()).await;
        }
        (_, link) => {
            let reason = format!("{address:?} is not served over AMQP yet");
            warn!(%address, "Refusing a link: not implemented");
            refuse(link, AmqpError::NotImplemented, reason).await;
        }
    }
}

fn spawn_identity_link(peer: Arc<Peer>, node: Node, link: LinkEndpoint) {
    match (node, link) {
        (Node::Telemetry(t), LinkEndpoint::Receiver(r)) => {
            tokio::spawn(links::telemetry(peer, t, r));
        }
        (Node::CloudToDevice(t), LinkEndpoint::Sender(s)) => {
            tokio::spawn(links::cloud_to_device(peer, t, s));
        }
        (Node::Twin(_), LinkEndpoint::Receiver(r)) => {
            tokio::spawn(links::twin_requests(peer, r));
        }
        (Node::Twin(_), LinkEndpoint::Sender(s)) => {
            tokio::spawn(links::outgoing(peer, OutLink::Twin, s));
        }
        (Node::Methods(_), LinkEndpoint::Sender(s)) => {
            tokio::spawn(links::outgoing(peer, OutLink::Methods, s));
        }
        (Node::Methods(_), LinkEndpoint::Receiver(r)) => {
            tokio::spawn(links::method_answers(peer, r));
        }
        // `address::parse` pairs each node with the role it allows.
        (_, link) => {
            tokio::spawn(refuse(
                link,
                AmqpError::NotAllowed,
                "wrong link direction".into(),
            ));
        }
    }
}

/// Refuses a link the client attached: it detaches with `condition`.
async fn refuse(link: LinkEndpoint, condition: AmqpError, reason: String) {
    let e = error(condition, reason);
    let _ = match link {
        LinkEndpoint::Sender(s) => s.close_with_error(e).await,
        LinkEndpoint::Receiver(r) => r.close_with_error(e).await,
    };
}

/// Put-token requests on `$cbs`; each is accepted, then answered on the `$cbs` link the client
/// receives on.
async fn cbs_requests(conn: Arc<Conn>, mut link: Receiver) {
    while let Ok(delivery) = link.recv::<Body<Value>>().await {
        let _ = link.accept(&delivery).await;
        let m = delivery.message();
        let (status, description) = match cbs::put_token(m) {
            Ok(req) => conn.put_token(&req),
            Err(r) => (r.status, r.description),
        };
        let id = m.properties.as_ref().and_then(|p| p.message_id.clone());
        if conn
            .cbs_tx
            .send(cbs::answer(id, status, &description))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = link.close().await;
}

/// Sends the `$cbs` answers on `link` until the client detaches it (a client that attaches its
/// `$cbs` links anew for each token gets the answers on the newest).
async fn cbs_answers(conn: Arc<Conn>, mut link: Sender) {
    let mut answers = conn.cbs_rx.lock().await;
    loop {
        let answer = tokio::select! {
            a = answers.recv() => a,
            _ = link.on_detach() => break,
        };
        let Some(answer) = answer else { break };
        if link.send_batchable(answer).await.is_err() {
            break;
        }
    }
    drop(answers);
    let _ = link.close().await;
}

/// SASL as the AMQP clients that use it: ANONYMOUS and MSSBCBS (Azure's "tokens follow on
/// `$cbs`", which the Python service SDK's uamqp asks for), EXTERNAL (the TLS client
/// certificate), PLAIN (accepted as ANONYMOUS is: the token travels on `$cbs`).
#[derive(Clone, Debug)]
struct Sasl {
    client_cert: bool,
}

impl SaslAcceptor for Sasl {
    fn mechanisms(&self) -> Array<Symbol> {
        let mut m = vec![
            Symbol::from("MSSBCBS"),
            Symbol::from("ANONYMOUS"),
            Symbol::from("PLAIN"),
        ];
        if self.client_cert {
            m.insert(0, Symbol::from("EXTERNAL"));
        }
        Array::from(m)
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        let code = match init.mechanism.as_str() {
            "ANONYMOUS" | "MSSBCBS" | "PLAIN" => SaslCode::Ok,
            "EXTERNAL" if self.client_cert => SaslCode::Ok,
            _ => SaslCode::Auth,
        };
        SaslServerFrame::Outcome(SaslOutcome {
            code,
            additional_data: None,
        })
    }

    fn on_response(&mut self, _: SaslResponse) -> SaslServerFrame {
        SaslServerFrame::Outcome(SaslOutcome {
            code: SaslCode::Auth,
            additional_data: None,
        })
    }
}

/// The stream with the protocol header read ahead put back in front.
#[derive(Debug)]
struct Prefixed<S> {
    head: [u8; 8],
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.head.len() {
            let n = (self.head.len() - self.pos).min(buf.remaining());
            let from = self.pos;
            buf.put_slice(&self.head[from..from + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
