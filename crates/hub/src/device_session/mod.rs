//! The hub's device session, free of sockets, packets and topic strings: everything a device or
//! module does once connected, for one authenticated identity.
//!
//! - [`auth`]: who a client is (credentials and TLS chain → [`auth::Identity`] or refusal);
//! - [`DeviceSession::send_telemetry`]: a message from the identity, or from a sender a gateway's
//!   `$edgeHub` speaks for ([`forwarded`]), stored on the events log ([`telemetry`]);
//! - [`DeviceSession::twin_get`] and [`DeviceSession::twin_patch_reported`];
//! - [`DeviceSession::method_response`]: the answer to a direct method call;
//! - [`DeviceSession::c2d_take`], [`DeviceSession::c2d_sent`], [`DeviceSession::c2d_complete`],
//!   [`DeviceSession::c2d_reject`] and [`DeviceSession::c2d_abandon`]: cloud-to-device messages
//!   (module inputs for a module) within a window of unacknowledged deliveries;
//! - [`DeviceSession::attach`] and [`DeviceSession::set_interests`]: the session joins the hub's
//!   table of live sessions ([`live`]) and says which [`Notification`]s it wants; the hub's
//!   desired patches, method calls, cloud-to-device signals and close requests ([`revoke`])
//!   arrive on its [`Subscription`].
//!
//! Protocol heads (today MQTT, see [`crate::mqtt`]) own the socket and the wire format: they
//! translate packets into these calls, and the answers and notifications back into packets. An
//! AMQP or HTTPS head calls the same code, so admission, storage, twins, methods and
//! cloud-to-device behave the same whatever the device speaks.

pub mod auth;
mod c2d;
pub mod forwarded;
pub mod live;
pub mod notify;
pub(crate) mod on_behalf;
pub mod revoke;
pub mod telemetry;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use iot_auth::topic::PropertyBag;
use tracing::{info, warn};

use crate::Hub;
use crate::metrics::Metrics;
use auth::{Identity, Refusal};
use ferrohub_runtime::time::SharedClock;
use forwarded::{NotStored, Senders};
use telemetry::Durable;

pub use c2d::C2dDelivery;
pub use notify::{Notification, Subscription};

/// What a client wants delivered (MQTT: what it subscribed to).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interests {
    /// Desired-property patches.
    pub desired: bool,
    /// Direct method calls.
    pub methods: bool,
    /// Cloud-to-device messages (a module: its input messages).
    pub c2d: bool,
}

/// A twin request's answer: an HTTP-like status, the new reported version of a patch, and the
/// body (the twin's properties, an error, or empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwinReply {
    pub status: u16,
    pub version: Option<u64>,
    pub body: String,
}

/// Why a message was not stored (see [`DeviceSession::send_telemetry`]).
#[derive(Debug, PartialEq, Eq)]
pub enum TelemetryRefused {
    /// The session broke a rule (another identity's topic, a body too large, a gateway refusing
    /// it): it ends, without acknowledging the message.
    Violation(String),
    /// A gateway forwarded it for a sender it may not speak for: counted and logged; the head
    /// acknowledges it so the gateway does not send it again and again.
    Dropped(Refusal),
    /// The registry cannot tell whether the sender is allowed: the session ends without
    /// acknowledging, and the gateway retries later.
    Unavailable,
}

/// How long the session of `identity` may last on `clock`: until its SAS token expires (zero
/// once it has); `None` without a token.
pub fn time_left(identity: &Identity, clock: &SharedClock) -> Option<Duration> {
    let end = i64::try_from(identity.token_expiry?.saturating_mul(1000)).unwrap_or(i64::MAX);
    let now = ferrohub_runtime::time::now_ms(clock.as_ref());
    Some(Duration::from_millis(
        u64::try_from(end.saturating_sub(now)).unwrap_or(0),
    ))
}

/// One authenticated identity's session.
pub struct DeviceSession {
    hub: Arc<Hub>,
    identity: Arc<Identity>,
    /// `device` or `device/module`: the key of its twin, queue and method calls.
    client_id: Box<str>,
    /// Shared with the hub's table of live sessions.
    subscription: Arc<Subscription>,
    /// Cloud-to-device messages are wanted.
    c2d_wanted: bool,
    /// Cloud-to-device deliveries not yet completed.
    c2d: c2d::Window,
    /// Senders a gateway's `$edgeHub` session published for (allocated at the first such
    /// message).
    senders: Option<Box<Senders>>,
}

impl DeviceSession {
    /// The session of `identity`, as [`auth::authenticate`] admitted it; it wants nothing yet.
    pub fn new(hub: Arc<Hub>, identity: Arc<Identity>) -> Self {
        let client_id = identity.client_id().into_boxed_str();
        Self {
            hub,
            subscription: Arc::new(Subscription::new(identity.clone())),
            identity,
            client_id,
            c2d_wanted: false,
            c2d: c2d::Window::default(),
            senders: None,
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// `device` or `device/module`.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Where the hub's notifications for this session arrive (the head awaits
    /// [`Subscription::next`]); it also tells the hub what the session wants.
    pub fn subscription(&self) -> &Arc<Subscription> {
        &self.subscription
    }

    /// Joins the hub's table of live sessions: notifications for the identity now reach this
    /// session, and a previous session of the same client id is told to close
    /// ([`revoke::EndReason::Replaced`]); `true` when there was one.
    pub fn attach(&self) -> bool {
        let subscription = self.subscription.clone();
        self.hub.connections.register(&self.client_id, subscription)
    }

    /// Leaves the table of live sessions (if a newer session has not taken its place already):
    /// nothing more is delivered to this one.
    pub fn detach(&self) {
        self.hub
            .connections
            .unregister(&self.client_id, &self.subscription);
    }

    /// The client renewed its credentials for the same identity (AMQP: a new token put on
    /// `$cbs` before the old one expired): the session now lasts until the new token expires.
    pub fn renew(&mut self, identity: Arc<Identity>) {
        self.subscription.set_identity(identity.clone());
        self.identity = identity;
    }

    /// Records that the session's connection ended, after [`Self::detach`]: the identity's
    /// connection state in the registry (still connected when a newer session took its place),
    /// and a gateway's upstream told of a client gone.
    pub fn disconnected(&self) {
        let still_connected = self.hub.connections.is_connected(&self.client_id);
        self.hub.registry.set_connection(
            &self.identity.device_id,
            self.identity.module_id.as_deref(),
            still_connected,
        );
        if let (false, Some(upstream)) = (still_connected, self.hub.upstream.get()) {
            upstream.disconnected(&self.client_id);
        }
    }

    /// Sets which notifications the client wants.
    pub fn set_interests(&mut self, wants: Interests) {
        let s = &self.subscription;
        s.desired.store(wants.desired, Ordering::Relaxed);
        s.methods.store(wants.methods, Ordering::Relaxed);
        self.c2d_wanted = wants.c2d;
    }

    /// How long the session may last: until its SAS token expires; `None` without a token.
    pub fn time_left(&self) -> Option<Duration> {
        time_left(&self.identity, &self.hub.clock)
    }

    /// Whether the session's SAS token has expired: it may do nothing more.
    pub fn expired(&self) -> bool {
        self.time_left().is_some_and(|left| left.is_zero())
    }

    /// Stores a message published as from `device_id`/`module_id`: the session's own identity,
    /// or (a gateway's `$edgeHub`) a sender it speaks for. The head acknowledges it when the
    /// returned [`Durable`] completes (or drops it when it acknowledges nothing).
    pub fn send_telemetry(
        &mut self,
        device_id: &str,
        module_id: Option<&str>,
        properties: &PropertyBag,
        body: &[u8],
        retain: bool,
    ) -> Result<Durable, TelemetryRefused> {
        let sender = forwarded::resolve(
            &mut self.senders,
            &self.hub,
            &self.identity,
            device_id,
            module_id,
        );
        let sender = match sender {
            Ok(sender) => sender,
            Err(NotStored::Violation(reason)) => return Err(TelemetryRefused::Violation(reason)),
            Err(NotStored::Refused(why)) => {
                self.hub.metrics.auth_failure(why.reason());
                if why == Refusal::Unavailable {
                    warn!(
                        device_id,
                        module_id, "Registry unavailable; closing without acknowledging"
                    );
                    return Err(TelemetryRefused::Unavailable);
                }
                Metrics::inc(&self.hub.metrics.messages_refused);
                warn!(device_id, module_id, reason = %why, "Dropped a forwarded message: its sender is not allowed here");
                return Err(TelemetryRefused::Dropped(why));
            }
        };
        telemetry::accept(&self.hub, sender, properties, body, retain)
            .map_err(TelemetryRefused::Violation)
    }

    /// Stores the session's last will (see [`telemetry::store_will`]).
    pub async fn store_will(&self, properties: &PropertyBag, body: &[u8], retain: bool) {
        telemetry::store_will(&self.hub, &self.identity, properties, body, retain).await;
    }

    /// The identity's twin (its `desired` and `reported` properties).
    pub fn twin_get(&self) -> TwinReply {
        match self.hub.twins.get(&self.hub, &self.client_id) {
            Ok(t) => reply(200, None, t.properties().to_string()),
            Err(e) => reply(500, None, twin_error(500_001, &e.to_string())),
        }
    }

    /// Applies a reported-properties patch (a JSON object); 204 with the new reported version.
    pub fn twin_patch_reported(&self, patch: &[u8]) -> TwinReply {
        let patch = match serde_json::from_slice::<serde_json::Value>(patch) {
            Ok(patch) => patch,
            Err(e) => {
                return reply(
                    400,
                    None,
                    twin_error(400_004, &format!("invalid JSON: {e}")),
                );
            }
        };
        match self
            .hub
            .twins
            .patch_reported(&self.hub, &self.client_id, &patch)
        {
            Ok(v) => reply(204, Some(v), String::new()),
            Err(e) => reply(e.status.as_u16(), None, twin_error(400_004, &e.message)),
        }
    }

    /// The identity's answer to the direct method call `rid`; `false` when no call of this
    /// identity waits for it (late, or unknown).
    pub fn method_response(&self, rid: &str, status: u16, payload: Vec<u8>) -> bool {
        Metrics::inc(&self.hub.metrics.messages_in);
        let done = self
            .hub
            .methods
            .complete(&self.client_id, rid, status, payload);
        if !done {
            info!(
                rid,
                "Method answer dropped: no call of this device is waiting for this $rid (late or unknown)"
            );
        }
        done
    }
}

fn reply(status: u16, version: Option<u64>, body: String) -> TwinReply {
    TwinReply {
        status,
        version,
        body,
    }
}

/// Error bodies carry `errorCode`: the Node SDK only fails a twin request when it sees one.
fn twin_error(code: u32, message: &str) -> String {
    serde_json::json!({ "errorCode": code, "message": message }).to_string()
}
