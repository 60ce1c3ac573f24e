//! Live sessions by client id: one per identity, a newer one replaces the older. The hub reaches a
//! live session only through its [`Subscription`] (typed [`Notification`]s, whatever protocol the
//! device speaks). Nothing is delivered to a session whose SAS token has expired, even before its
//! task closes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::notify::{Notification, Subscription};
use super::revoke::{EndReason, Revoked};
use ferrohub_runtime::time::SharedClock;

pub struct Connections {
    /// The hub's clock: SAS token expiry.
    clock: SharedClock,
    live: Mutex<HashMap<String, Arc<Subscription>>>,
    /// Bumped whenever a session comes or goes or changes what it wants.
    changed: watch::Sender<u64>,
    /// Connection tasks still running (authenticated or not), for a clean shutdown.
    pub tasks: AtomicU64,
    /// Set while the listeners stop: a connection admitted now is closed, not served.
    pub(crate) closing: std::sync::atomic::AtomicBool,
    /// Bumped by every [`Connections::revoke`] before it looks for sessions to end.
    revocations: AtomicU64,
    /// Connection limits shared by the MQTT listeners, made by the first one.
    pub(crate) admission: std::sync::OnceLock<crate::mqtt::Admission>,
}

impl Connections {
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            live: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            tasks: AtomicU64::new(0),
            closing: std::sync::atomic::AtomicBool::new(false),
            revocations: AtomicU64::new(0),
            admission: std::sync::OnceLock::new(),
        }
    }

    /// Registers a session; the previous one for the same client id, if any, is told to close.
    pub fn register(&self, client_id: &str, session: Arc<Subscription>) -> bool {
        let Ok(mut live) = self.live.lock() else {
            return false;
        };
        let replaced = live.insert(client_id.to_owned(), session);
        if let Some(old) = &replaced {
            old.close(EndReason::Replaced);
        }
        drop(live);
        self.touch();
        replaced.is_some()
    }

    /// Wakes everyone waiting in [`Connections::wait_for`].
    pub fn touch(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits up to `timeout` for a session of `client_id` for which `ready` holds; returns its
    /// subscription.
    pub async fn wait_for(
        &self,
        client_id: &str,
        timeout: Duration,
        ready: impl Fn(&Subscription) -> bool,
    ) -> Option<Arc<Subscription>> {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            let found = self.subscription(client_id).filter(|s| ready(s.as_ref()));
            if found.is_some() {
                return found;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Removes the entry if it still belongs to `session`, which accepts nothing more.
    pub fn unregister(&self, client_id: &str, session: &Arc<Subscription>) {
        session.shut();
        if let Ok(mut live) = self.live.lock()
            && live.get(client_id).is_some_and(|s| Arc::ptr_eq(s, session))
        {
            live.remove(client_id);
        }
        self.touch();
    }

    /// Closes every session that rested on what `change` revoked (see [`Revoked::ends`]);
    /// returns how many.
    pub fn revoke(&self, change: &Revoked<'_>) -> usize {
        self.revocations.fetch_add(1, Ordering::SeqCst);
        let Ok(live) = self.live.lock() else { return 0 };
        let mut n = 0;
        for (client_id, s) in live.iter() {
            if let Some(why) = change.ends(client_id, &s.identity()) {
                s.close(why);
                n += 1;
            }
        }
        n
    }

    /// Closes the session of a client id (a gateway dropping a module the hub removed; the
    /// registry already closes it when the module is deleted there).
    pub fn kick(&self, client_id: &str) {
        if let Ok(live) = self.live.lock()
            && let Some(s) = live.get(client_id)
        {
            s.close(EndReason::Deleted);
        }
    }

    /// Closes every session of a device and its modules, and those it carries as a gateway (a
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

    /// Closes every session (the hub is shutting down).
    pub fn kick_all(&self) {
        if let Ok(live) = self.live.lock() {
            for s in live.values() {
                s.close(EndReason::Shutdown);
            }
        }
    }

    /// Tells a client's session that cloud-to-device messages are waiting (not one whose token
    /// has expired: it is about to close).
    pub fn wake(&self, client_id: &str) {
        if let Some(s) = self.subscription(client_id) {
            s.c2d_available();
        }
    }

    /// Sends a desired-property patch to a connected client that wants them (at most once, as
    /// IoT Hub does).
    pub fn push_desired(&self, client_id: &str, version: u64, patch: &serde_json::Value) {
        let Some(s) = self.subscription(client_id) else {
            return;
        };
        if !s.desired.load(Ordering::Relaxed) {
            return;
        }
        let body = patch.to_string();
        if s.deliver(Notification::DesiredPatch { version, body })
            .is_err()
        {
            tracing::warn!(
                client_id,
                "Desired-property patch not sent: the connection is busy or closing"
            );
        }
    }

    pub fn is_connected(&self, client_id: &str) -> bool {
        self.live.lock().is_ok_and(|l| l.contains_key(client_id))
    }

    /// The subscription of a connected client (none when its token has expired or it is
    /// closing).
    pub fn subscription(&self, client_id: &str) -> Option<Arc<Subscription>> {
        self.live
            .lock()
            .ok()?
            .get(client_id)
            .filter(|s| s.usable(&self.clock))
            .cloned()
    }

    pub fn count(&self) -> usize {
        self.live.lock().map_or(0, |l| l.len())
    }
}
