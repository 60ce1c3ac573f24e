//! Live connections by client id: one per identity, a newer one replaces the older. Nothing is
//! delivered to a connection whose SAS token has expired, even before its task closes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::auth::Identity;
use super::queue;
use super::revoke::{EndReason, Kick, Revoked};
use crate::time::SharedClock;

use mqtt_codec::Packet;

/// What the hub can do to a live connection.
pub struct ConnHandle {
    pub id: u64,
    /// Who connected, and with what (see [`Revoked::ends`]).
    pub identity: Arc<Identity>,
    /// Closing request (replaced by a newer connection, identity changed, hub stopping).
    pub kick: Arc<Kick>,
    /// Packets to send to the device.
    pub outbound: queue::Sender<Packet>,
    /// Cloud-to-device messages are waiting.
    pub c2d: Arc<Notify>,
    /// What the connection is subscribed to.
    pub features: Arc<Features>,
}

pub use crate::device_session::{Features, time_left};

pub struct Connections {
    /// The hub's clock: SAS token expiry.
    clock: SharedClock,
    next_id: AtomicU64,
    live: Mutex<HashMap<String, ConnHandle>>,
    /// Bumped whenever a connection comes or goes or changes its subscriptions.
    changed: watch::Sender<u64>,
    /// Connection tasks still running (authenticated or not), for a clean shutdown.
    pub tasks: AtomicU64,
    /// Set while the listeners stop: a connection admitted now is closed, not served.
    pub(crate) closing: std::sync::atomic::AtomicBool,
    /// Bumped by every [`Connections::revoke`] before it looks for sessions to end.
    revocations: AtomicU64,
    /// Connection limits shared by the MQTT listeners, made by the first one.
    pub(crate) admission: std::sync::OnceLock<super::Admission>,
}

impl ConnHandle {
    /// Whether the connection may still be given messages.
    fn usable(&self, clock: &SharedClock) -> bool {
        time_left(&self.identity, clock).is_none_or(|left| !left.is_zero())
    }
}

impl Connections {
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            next_id: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            tasks: AtomicU64::new(0),
            closing: std::sync::atomic::AtomicBool::new(false),
            revocations: AtomicU64::new(0),
            admission: std::sync::OnceLock::new(),
        }
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a connection; the previous one for the same client id, if any, is told to close.
    pub fn register(&self, client_id: &str, handle: ConnHandle) -> bool {
        let Ok(mut live) = self.live.lock() else {
            return false;
        };
        let replaced = live.insert(client_id.to_owned(), handle);
        if let Some(old) = &replaced {
            old.kick.end(EndReason::Replaced);
        }
        drop(live);
        self.touch();
        replaced.is_some()
    }

    /// Wakes everyone waiting in [`Connections::wait_for`].
    pub fn touch(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits up to `timeout` for a connection of `client_id` for which `ready` holds; returns its
    /// sender.
    pub async fn wait_for(
        &self,
        client_id: &str,
        timeout: Duration,
        ready: impl Fn(&Features) -> bool,
    ) -> Option<queue::Sender<Packet>> {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            let found = self.live.lock().ok().and_then(|live| {
                live.get(client_id)
                    .filter(|h| h.usable(&self.clock) && ready(&h.features))
                    .map(|h| h.outbound.clone())
            });
            if found.is_some() {
                return found;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Removes the entry if it still belongs to connection `id`.
    pub fn unregister(&self, client_id: &str, id: u64) {
        if let Ok(mut live) = self.live.lock()
            && live.get(client_id).is_some_and(|h| h.id == id)
        {
            live.remove(client_id);
        }
        self.touch();
    }

    /// Closes every connection that rested on what `change` revoked (see [`Revoked::ends`]);
    /// returns how many.
    pub fn revoke(&self, change: &Revoked<'_>) -> usize {
        self.revocations.fetch_add(1, Ordering::SeqCst);
        let Ok(live) = self.live.lock() else { return 0 };
        let mut n = 0;
        for (client_id, h) in live.iter() {
            if let Some(why) = change.ends(client_id, &h.identity) {
                h.kick.end(why);
                n += 1;
            }
        }
        n
    }

    /// Closes the connection of a client id (a gateway dropping a module the hub removed; the
    /// registry already closes it when the module is deleted there).
    pub fn kick(&self, client_id: &str) {
        if let Ok(live) = self.live.lock()
            && let Some(h) = live.get(client_id)
        {
            h.kick.end(EndReason::Deleted);
        }
    }

    /// Closes every connection of a device and its modules, and those it carries as a gateway (a
    /// gateway dropping a device the hub removed or disabled; the registry already closes them
    /// when the device is deleted or disabled there).
    pub fn kick_device(&self, device_id: &str) {
        let why = EndReason::Deleted;
        self.revoke(&Revoked::Device { device_id, why });
    }

    /// How many revocations have begun. A connection that read this before it authenticated and
    /// sees another value once registered may have missed one: it authenticates again.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::SeqCst)
    }

    /// Closes every connection (the hub is shutting down).
    pub fn kick_all(&self) {
        if let Ok(live) = self.live.lock() {
            for h in live.values() {
                h.kick.end(EndReason::Shutdown);
            }
        }
    }

    /// Tells a device's connection that cloud-to-device messages are waiting (not one whose
    /// token has expired: it is about to close).
    pub fn wake(&self, client_id: &str) {
        if let Ok(live) = self.live.lock()
            && let Some(h) = live.get(client_id)
            && h.usable(&self.clock)
        {
            h.c2d.notify_one();
        }
    }

    /// Sends a desired-property patch to a connected, subscribed client (QoS 0, as IoT Hub does).
    pub fn push_desired(&self, client_id: &str, version: u64, patch: &serde_json::Value) {
        let Ok(live) = self.live.lock() else { return };
        let Some(h) = live.get(client_id) else { return };
        if !h.features.desired.load(Ordering::Relaxed) || !h.usable(&self.clock) {
            return;
        }
        let publish = mqtt_codec::Publish {
            dup: false,
            qos: mqtt_codec::QoS::AtMostOnce,
            retain: false,
            topic: iot_auth::topic::desired_patch_topic(version),
            packet_id: None,
            payload: patch.to_string().into_bytes(),
        };
        if h.outbound.try_send(Packet::Publish(publish)).is_err() {
            tracing::warn!(
                client_id,
                "Desired-property patch not sent: the connection is busy or closing"
            );
        }
    }

    pub fn is_connected(&self, client_id: &str) -> bool {
        self.live.lock().is_ok_and(|l| l.contains_key(client_id))
    }

    /// A sender to a connected client (none when its token has expired).
    pub fn sender(&self, client_id: &str) -> Option<queue::Sender<Packet>> {
        self.live
            .lock()
            .ok()?
            .get(client_id)
            .filter(|h| h.usable(&self.clock))
            .map(|h| h.outbound.clone())
    }

    pub fn count(&self) -> usize {
        self.live.lock().map_or(0, |l| l.len())
    }
}
