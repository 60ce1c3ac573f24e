//! Live connections by client id: one per identity, a newer one replaces the older.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, mpsc};

use mqtt_codec::Packet;

/// What the hub can do to a live connection.
pub struct ConnHandle {
    pub id: u64,
    /// Closing request (replaced by a newer connection, identity deleted or disabled).
    pub kick: std::sync::Arc<Notify>,
    /// Packets to send to the device.
    pub outbound: mpsc::Sender<Packet>,
    /// Cloud-to-device messages are waiting.
    pub c2d: std::sync::Arc<Notify>,
    /// Whether the connection is subscribed to desired-property patches.
    pub desired: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Default)]
pub struct Connections {
    next_id: AtomicU64,
    live: Mutex<HashMap<String, ConnHandle>>,
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
        replaced.is_some()
    }

    /// Removes the entry if it still belongs to connection `id`.
    pub fn unregister(&self, client_id: &str, id: u64) {
        if let Ok(mut live) = self.live.lock()
            && live.get(client_id).is_some_and(|h| h.id == id)
        {
            live.remove(client_id);
        }
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
        if !h.desired.load(Ordering::Relaxed) {
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
    pub fn sender(&self, client_id: &str) -> Option<mpsc::Sender<Packet>> {
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
