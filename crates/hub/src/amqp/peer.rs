//! One device or module identity on an AMQP connection: its core [`DeviceSession`], what its
//! links want delivered, and the task that turns the hub's [`Notification`]s into work for those
//! links (a desired patch for the twin link, a method call for the methods link, "messages
//! waiting" for the cloud-to-device link, "close" for all of them). IoT Edge multiplexes many
//! identities on one connection, each with its own token, so a connection holds several peers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc, watch};
use tracing::info;

use super::message::{self, Outgoing};
use crate::Hub;
use crate::device_session::auth::Identity;
use crate::device_session::revoke::EndReason;
use crate::device_session::{DeviceSession, Interests, Notification};
use crate::metrics::Metrics;

/// Answers and pushes waiting for a link the client receives on, beyond which a desired patch is
/// dropped (the twin stays readable) and a method call fails as unreachable.
const OUT_QUEUE: usize = 64;

/// A device or module identity and its links on one connection.
pub struct Peer {
    hub: Arc<Hub>,
    session: Mutex<DeviceSession>,
    interests: Mutex<Interests>,
    /// Cloud-to-device messages may be waiting.
    pub c2d_wake: Notify,
    twin_out: Mutex<Option<mpsc::Sender<Outgoing>>>,
    methods_out: Mutex<Option<mpsc::Sender<Outgoing>>>,
    /// `Some` once the identity's links must end, and why.
    ended: watch::Sender<Option<EndReason>>,
    finished: AtomicBool,
}

/// Which of an identity's outgoing links a channel feeds.
#[derive(Clone, Copy, Debug)]
pub enum OutLink {
    Twin,
    Methods,
}

impl Peer {
    /// Starts the session of `identity`: it joins the hub's live sessions (a session of the same
    /// identity elsewhere is told to close) and is recorded as connected.
    pub fn start(hub: Arc<Hub>, identity: Identity) -> Arc<Self> {
        let session = DeviceSession::new(hub.clone(), Arc::new(identity));
        if session.attach() {
            info!(
                client_id = session.client_id(),
                "A newer connection replaces the previous one for this identity"
            );
        }
        let identity = session.identity().clone();
        hub.registry
            .set_connection(&identity.device_id, identity.module_id.as_deref(), true);
        Metrics::inc(&hub.metrics.connections_active);
        let peer = Arc::new(Self {
            hub,
            session: Mutex::new(session),
            interests: Mutex::default(),
            c2d_wake: Notify::new(),
            twin_out: Mutex::default(),
            methods_out: Mutex::default(),
            ended: watch::channel(None).0,
            finished: AtomicBool::new(false),
        });
        tokio::spawn(pump(peer.clone()));
        info!(client_id = %identity.client_id(), auth = ?identity.auth_type, "Device connected (AMQP)");
        peer
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The core session (never held across an await).
    pub fn session(&self) -> MutexGuard<'_, DeviceSession> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new token was put for the identity: its session lasts until the new token expires.
    pub fn renew(&self, identity: Identity) {
        self.session().renew(Arc::new(identity));
    }

    /// Changes what the identity's links want delivered.
    pub fn want(&self, change: impl FnOnce(&mut Interests)) {
        let mut wants = self
            .interests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut wants);
        self.session().set_interests(*wants);
        if wants.c2d {
            self.c2d_wake.notify_one();
        }
    }

    /// A new channel feeding the identity's `link` (a link attached again replaces the old one).
    pub fn open_out(&self, link: OutLink) -> mpsc::Receiver<Outgoing> {
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
        *self.out(link) = Some(tx);
        rx
    }

    fn out(&self, link: OutLink) -> MutexGuard<'_, Option<mpsc::Sender<Outgoing>>> {
        let slot = match link {
            OutLink::Twin => &self.twin_out,
            OutLink::Methods => &self.methods_out,
        };
        slot.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `msg` on the identity's `link`; `false` when it is not attached or full.
    pub fn send_out(&self, link: OutLink, msg: Outgoing) -> bool {
        self.out(link)
            .as_ref()
            .is_some_and(|tx| tx.try_send(msg).is_ok())
    }

    /// Whether the identity's links must end.
    pub fn is_ended(&self) -> bool {
        self.ended.borrow().is_some()
    }

    /// Waits until the identity's links must end: why.
    pub async fn ended(&self) -> EndReason {
        let mut rx = self.ended.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(r) => r.unwrap_or(EndReason::Shutdown),
            Err(_) => EndReason::Shutdown,
        }
    }

    /// The identity's connection ended (the client closed it, or it broke).
    pub fn connection_closed(&self) {
        self.end(EndReason::Shutdown, "the connection closed");
    }

    /// Ends the identity's session (once) for `why`: its links close, it leaves the live
    /// sessions, and its connection state is recorded.
    pub fn finish(&self, why: EndReason) {
        self.end(why, why.describe());
    }

    fn end(&self, why: EndReason, text: &str) {
        self.ended.send_if_modified(|e| {
            let first = e.is_none();
            if first {
                *e = Some(why);
            }
            first
        });
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        let session = self.session();
        session.detach();
        self.hub
            .metrics
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
        session.disconnected();
        info!(
            client_id = session.client_id(),
            reason = text,
            "Device disconnected (AMQP)"
        );
    }
}

/// Delivers the hub's notifications for the peer's identity to its links until it ends.
async fn pump(peer: Arc<Peer>) {
    let inbox = peer.session().subscription().clone();
    loop {
        // Until the token expires; a token put meanwhile moves the end (checked on waking).
        let left = peer.session().time_left();
        let expiry = async move {
            match left {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        };
        let n = tokio::select! {
            n = inbox.next() => n,
            _ = peer.ended() => return,
            () = expiry => {
                if peer.session().expired() {
                    peer.hub.metrics.auth_failure("expired_token");
                    peer.finish(EndReason::Expired);
                    return;
                }
                continue;
            }
        };
        match n {
            Notification::C2dAvailable => peer.c2d_wake.notify_one(),
            Notification::DesiredPatch { version, body } => {
                if !peer.send_out(OutLink::Twin, message::desired_patch(version, &body)) {
                    tracing::debug!("Desired patch not pushed: no twin link, or it is busy");
                }
            }
            Notification::MethodRequest { name, rid, payload } => {
                let msg = message::method_request(&name, &rid, &payload);
                if !peer.send_out(OutLink::Methods, msg) {
                    // The caller times out as for an unreachable device.
                    tracing::debug!(method = %name, "Method call not delivered: no methods link");
                }
            }
            Notification::Relayed { .. } => {}
            Notification::Close(why) => {
                info!(reason = why.describe(), "Ending the identity's links");
                peer.finish(why);
                return;
            }
        }
    }
}
