//! A session's cloud-to-device deliveries (a module's: its input messages): at most
//! [`WINDOW`] unacknowledged at a time, each under a delivery tag the head uses on the wire
//! (MQTT: the packet id of the QoS 1 publish). A delivery stays queued until the client settles
//! it, so a message not settled before the session ends is delivered again to the next one.
//!
//! The client settles a delivery as IoT Hub lets it: complete (the message leaves the queue;
//! MQTT's PUBACK), reject (it leaves the queue, recorded as `Rejected`, as IoT Hub dead-letters
//! it) or abandon (it goes back to the queue and is delivered again, its delivery count grown).
//! MQTT can only complete; AMQP does all three.

use std::collections::HashMap;

use tracing::{info, warn};

use super::DeviceSession;
use crate::metrics::Metrics;
use crate::store::C2dMessage;

/// Unacknowledged cloud-to-device messages per session.
pub const WINDOW: usize = 16;

/// One message handed to the head for delivery.
#[derive(Debug)]
pub struct C2dDelivery {
    /// Names this delivery in [`DeviceSession::c2d_complete`]; never 0.
    pub tag: u16,
    pub message: C2dMessage,
}

impl C2dDelivery {
    /// The message was delivered before (not completed then): MQTT's DUP flag.
    pub fn redelivery(&self) -> bool {
        self.message.delivery_count > 0
    }
}

/// Deliveries in flight: tag → queue sequence.
pub(super) struct Window {
    inflight: HashMap<u16, i64>,
    next_tag: u16,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            inflight: HashMap::new(),
            next_tag: 1,
        }
    }
}

impl Window {
    fn full(&self) -> bool {
        self.inflight.len() >= WINDOW
    }

    fn next_tag(&mut self) -> u16 {
        let tag = self.next_tag;
        self.next_tag = tag.checked_add(1).filter(|n| *n != 0).unwrap_or(1);
        tag
    }
}

impl DeviceSession {
    /// The queued messages to deliver now: none while the client does not want them, its token
    /// has expired or the window is full; never one already in flight. The head sends each and
    /// then reports it with [`DeviceSession::c2d_sent`].
    pub fn c2d_take(&mut self) -> Vec<C2dDelivery> {
        if self.expired() || !self.c2d_wanted || self.c2d.full() {
            return Vec::new();
        }
        let now_ms = ferrohub_runtime::time::now_ms(self.hub.clock.as_ref());
        let pending = match self
            .hub
            .registry
            .store()
            .c2d_pending(&self.client_id, now_ms)
        {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "Could not read the cloud-to-device queue");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for message in pending {
            if self.c2d.full() {
                break;
            }
            if self.c2d.inflight.values().any(|s| *s == message.seq) {
                continue;
            }
            let tag = self.c2d.next_tag();
            self.c2d.inflight.insert(tag, message.seq);
            out.push(C2dDelivery { tag, message });
        }
        out
    }

    /// `delivery` went out to the client: counted, and its delivery count raised (a message
    /// delivered again is marked so).
    pub fn c2d_sent(&self, delivery: &C2dDelivery) {
        Metrics::inc(&self.hub.metrics.messages_out);
        let store = self.hub.registry.store();
        if let Err(e) = store.c2d_delivered(&self.client_id, delivery.message.seq) {
            warn!(error = %e, "Could not count a cloud-to-device delivery");
        }
    }

    /// The client acknowledged the delivery `tag`: its message leaves the queue. `false` when
    /// `tag` is no delivery in flight.
    pub fn c2d_complete(&mut self, tag: u16) -> bool {
        let Some(seq) = self.c2d.inflight.remove(&tag) else {
            return false;
        };
        self.c2d_remove(seq, "complete");
        true
    }

    /// The client rejected the delivery `tag`: its message leaves the queue without being
    /// delivered again, recorded (logged and counted) with IoT Hub's feedback status
    /// `Rejected`. `false` when `tag` is no delivery in flight.
    pub fn c2d_reject(&mut self, tag: u16) -> bool {
        let Some(seq) = self.c2d.inflight.remove(&tag) else {
            return false;
        };
        Metrics::inc(&self.hub.metrics.c2d_rejected);
        info!(
            seq,
            status = "Rejected",
            "Cloud-to-device message rejected by the device: dead-lettered"
        );
        self.c2d_remove(seq, "reject");
        true
    }

    /// The client abandoned the delivery `tag`: its message stays queued and the next
    /// [`Self::c2d_take`] delivers it again (marked as a redelivery: its delivery count grew when
    /// it was sent). `false` when `tag` is no delivery in flight.
    pub fn c2d_abandon(&mut self, tag: u16) -> bool {
        self.c2d.inflight.remove(&tag).is_some()
    }

    fn c2d_remove(&self, seq: i64, what: &str) {
        if let Err(e) = self.hub.registry.store().c2d_complete(&self.client_id, seq) {
            warn!(error = %e, "Could not {what} a cloud-to-device message");
        }
    }
}
