//! What the hub tells a live session from outside it, free of any wire format: a desired-property
//! patch, a direct-method call, "cloud-to-device messages are waiting", a gateway's relayed
//! message, or "close". The hub core addresses an identity's [`Subscription`] through the table of
//! live sessions ([`super::live::Connections`]); the session's protocol head awaits
//! [`Subscription::next`] and translates each [`Notification`] into its wire form (MQTT: a publish
//! on a topic — topics live only in the head).
//!
//! One small shared object per live session: what it wants delivered, the close request, the
//! cloud-to-device flag and a queue that holds memory only while something waits in it, all
//! behind one wake-up, so an idle session pays for one allocation and its task awaits one future.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::auth::Identity;
use super::revoke::EndReason;
use ferrohub_runtime::time::SharedClock;

/// Something the hub sends a live session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notification {
    /// A desired-properties patch (JSON text) bringing the twin to desired version `version`.
    DesiredPatch { version: u64, body: String },
    /// A direct-method call; the answer ([`super::DeviceSession::method_response`]) names `rid`.
    MethodRequest {
        name: String,
        rid: String,
        payload: Vec<u8>,
    },
    /// Cloud-to-device messages (a module: input messages) are waiting: take them with
    /// [`super::DeviceSession::c2d_take`].
    C2dAvailable,
    /// A gateway's message from its upstream hub for the client, addressed as the upstream
    /// addressed it (an MQTT topic, at most once): only a gateway's MQTT head receives these.
    Relayed { topic: String, payload: Vec<u8> },
    /// The session must end, for this reason.
    Close(EndReason),
}

/// Notifications queued for a session beyond which a desired patch or relayed message is
/// dropped (a method call is always queued: its caller times out).
pub const CAPACITY: usize = 256;

/// One live session's inbox, shared by its session (which reads it) and the hub (which writes
/// it).
pub struct Subscription {
    /// Renewed when the session's client renews its token ([`super::DeviceSession::renew`]).
    identity: Mutex<Arc<Identity>>,
    /// Desired-property patches are wanted.
    pub desired: AtomicBool,
    /// Direct methods are wanted.
    pub methods: AtomicBool,
    /// Cloud-to-device messages are waiting (one flag, however many were queued).
    c2d: AtomicBool,
    /// The [`EndReason`] code of the first close request; 0 while open.
    close: AtomicU8,
    queue: Mutex<Inbox>,
    /// Something was delivered.
    wake: Notify,
}

#[derive(Default)]
struct Inbox {
    items: VecDeque<Notification>,
    /// The session left: nothing more is accepted.
    shut: bool,
}

impl Subscription {
    /// The inbox of a session of `identity`; it wants nothing yet.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self {
            identity: Mutex::new(identity),
            desired: AtomicBool::new(false),
            methods: AtomicBool::new(false),
            c2d: AtomicBool::new(false),
            close: AtomicU8::new(0),
            queue: Mutex::default(),
            wake: Notify::new(),
        }
    }

    /// Who the session authenticated as.
    pub fn identity(&self) -> Arc<Identity> {
        self.identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The session's client renewed its credentials (a new token, a later expiry).
    pub(crate) fn set_identity(&self, identity: Arc<Identity>) {
        *self
            .identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = identity;
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // Nothing here panics while holding the lock; a poisoned lock still holds a valid queue.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the hub may still deliver to the session: it was not told to close, has not left,
    /// and its SAS token has not expired (it is about to close).
    pub fn usable(&self, clock: &SharedClock) -> bool {
        self.close.load(Ordering::Relaxed) == 0
            && !self.lock().shut
            && super::time_left(&self.identity(), clock).is_none_or(|left| !left.is_zero())
    }

    /// Tells the session to close, for `why` (the first reason given is the one it reads).
    pub fn close(&self, why: EndReason) {
        let _ = self
            .close
            .compare_exchange(0, why as u8, Ordering::Relaxed, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Tells the session that cloud-to-device messages are waiting.
    pub fn c2d_available(&self) {
        self.c2d.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Queues `n` (a desired patch or relayed message only while fewer than [`CAPACITY`] wait);
    /// gives it back when the session has left or its queue is full.
    pub fn deliver(&self, n: Notification) -> Result<(), Notification> {
        {
            let mut inbox = self.lock();
            let bounded = !matches!(n, Notification::MethodRequest { .. });
            if inbox.shut || (bounded && inbox.items.len() >= CAPACITY) {
                return Err(n);
            }
            inbox.items.push_back(n);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The session has left: what is queued is dropped and nothing more is accepted.
    pub(crate) fn shut(&self) {
        let mut inbox = self.lock();
        inbox.shut = true;
        inbox.items = VecDeque::new();
    }

    /// The next notification: a close request first (again at every call), then waiting
    /// cloud-to-device messages, then the queue in order. Cancel safe: a notification is taken
    /// only when it is returned.
    pub async fn next(&self) -> Notification {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            // Registered before the check, so a delivery in between still wakes us.
            woken.as_mut().enable();
            if let Some(n) = self.try_next() {
                return n;
            }
            woken.await;
        }
    }

    /// The next notification if there is one now (see [`Self::next`]).
    pub fn try_next(&self) -> Option<Notification> {
        let code = self.close.load(Ordering::Relaxed);
        if code != 0 {
            return Some(Notification::Close(
                EndReason::from_code(code).unwrap_or(EndReason::Replaced),
            ));
        }
        if self.c2d.swap(false, Ordering::Acquire) {
            return Some(Notification::C2dAvailable);
        }
        let mut inbox = self.lock();
        let n = inbox.items.pop_front()?;
        if inbox.items.is_empty() {
            // Give the memory back while the session idles.
            inbox.items = VecDeque::new();
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_session::auth::Credential;
    use hub_wire::model::AuthType;

    fn subscription() -> Subscription {
        Subscription::new(Arc::new(Identity {
            device_id: "d".into(),
            module_id: None,
            auth_type: AuthType::Sas,
            generation_id: String::new(),
            token_expiry: None,
            credential: Credential::Own,
        }))
    }

    fn now<F: Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a test runtime");
        rt.block_on(f)
    }

    #[test]
    fn the_close_carries_its_first_reason_and_comes_first() {
        let s = subscription();
        s.deliver(Notification::C2dAvailable).expect("queued");
        s.close(EndReason::CaWithdrawn);
        s.close(EndReason::Deleted);
        let why = now(s.next());
        assert_eq!(
            why,
            Notification::Close(EndReason::CaWithdrawn),
            "the first reason is the one logged"
        );
    }

    #[test]
    fn notifications_arrive_in_order_and_c2d_wakes_once() {
        let s = subscription();
        let patch = |version| Notification::DesiredPatch {
            version,
            body: "{}".into(),
        };
        s.deliver(patch(1)).expect("queued");
        s.c2d_available();
        s.c2d_available();
        s.deliver(patch(2)).expect("queued");
        assert_eq!(s.try_next(), Some(Notification::C2dAvailable));
        assert_eq!(s.try_next(), Some(patch(1)));
        assert_eq!(s.try_next(), Some(patch(2)));
        assert_eq!(s.try_next(), None, "one wake-up for both c2d signals");
        assert_eq!(
            s.lock().items.capacity(),
            0,
            "an idle inbox holds no memory"
        );
    }

    #[test]
    fn a_full_inbox_drops_patches_but_queues_method_calls_and_a_shut_one_takes_nothing() {
        let s = subscription();
        for version in 0..CAPACITY as u64 {
            s.deliver(Notification::DesiredPatch {
                version,
                body: String::new(),
            })
            .expect("room");
        }
        let extra = Notification::DesiredPatch {
            version: 0,
            body: String::new(),
        };
        assert_eq!(s.deliver(extra.clone()), Err(extra));
        let call = Notification::MethodRequest {
            name: "reboot".into(),
            rid: "1".into(),
            payload: Vec::new(),
        };
        assert!(s.deliver(call.clone()).is_ok());
        s.shut();
        assert_eq!(s.deliver(call.clone()), Err(call));
        assert_eq!(s.try_next(), None, "what was queued is dropped");
    }

    #[tokio::test]
    async fn a_waiting_session_is_woken_by_a_delivery() {
        let s = Arc::new(subscription());
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { s.next().await }
        });
        tokio::task::yield_now().await;
        s.c2d_available();
        assert_eq!(waiting.await.unwrap(), Notification::C2dAvailable);
    }
}
