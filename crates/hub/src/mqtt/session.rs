//! Live connections by client id: one per identity, a newer one replaces the older.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::queue;

use mqtt_codec::Packet;

/// What the hub can do to a live connection.
pub struct ConnHandle {
    pub id: u64,
    /// Closing request (replaced by a newer connection, identity deleted or disabled).
    pub kick: std::sync::Arc<Notify>,
    /// Packets to send to the device.
    pub outbound: queue::Sender<Packet>,
    /// Cloud-to-device messages are waiting.
    pub c2d: std::sync::Arc<Notify>,
    /// What the connection is subscribed to.
    pub features: std::sync::Arc<Features>,
}

/// Subscriptions the hub needs to know about outside the connection task.
#[derive(Default)]
pub struct Features {
    /// `$iothub/twin/PATCH/properties/desired/#`: desired patches are pushed.
    pub desired: AtomicBool,
    /// `$iothub/methods/POST/#`: direct methods can be delivered.
    pub methods: AtomicBool,
}

pub struct Connections {
    next_id: AtomicU64,
    live: Mutex<HashMap<String, ConnHandle>>,
    /// Bumped whenever a connection comes or goes or changes its subscriptions.
    changed: watch::Sender<u64>,
    /// Connection tasks still running (authenticated or not), for a clean shutdown.
    pub tasks: AtomicU64,
    /// Connection limits shared by the MQTT listeners, made by the first one.
    pub(crate) admission: std::sync::OnceLock<super::Admission>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            next_id: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            tasks: AtomicU64::new(0),
            admission: std::sync::OnceLock::new(),
        }
    }
}

impl Connections {
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
            old.kick.notify_one();
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
                    .filter(|h| ready(&h.features))
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

    /// Closes the connection of a client id (device deleted or disabled).
    pub fn kick(&self, client_id: &str) {
        if let Ok(live) = self.live.lock()
            && let Some(h) = live.get(client_id)
        {
            h.kick.notify_one();
        }
    }

    /// Closes every connection of a device and its modules.
    pub fn kick_device(&self, device_id: &str) {
        if let Ok(live) = self.live.lock() {
            let prefix = format!("{device_id}/");
            for (id, h) in live.iter() {
                if id == device_id || id.starts_with(&prefix) {
                    h.kick.notify_one();
                }
            }
        }
    }

    /// Closes every connection (the hub is shutting down).
    pub fn kick_all(&self) {
        if let Ok(live) = self.live.lock() {
            for h in live.values() {
                h.kick.notify_one();
            }
        }
    }

    /// Tells a device's connection that cloud-to-device messages are waiting.
    pub fn wake(&self, client_id: &str) {
        if let Ok(live) = self.live.lock()
            && let Some(h) = live.get(client_id)
        {
            h.c2d.notify_one();
        }
    }

    /// Sends a desired-property patch to a connected, subscribed client (QoS 0, as IoT Hub does).
    pub fn push_desired(&self, client_id: &str, version: u64, patch: &serde_json::Value) {
        let Ok(live) = self.live.lock() else { return };
        let Some(h) = live.get(client_id) else { return };
        if !h.features.desired.load(Ordering::Relaxed) {
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

    /// A sender to a connected client.
    pub fn sender(&self, client_id: &str) -> Option<queue::Sender<Packet>> {
        self.live
            .lock()
            .ok()?
            .get(client_id)
            .map(|h| h.outbound.clone())
    }

    pub fn count(&self) -> usize {
        self.live.lock().map_or(0, |l| l.len())
    }
}
