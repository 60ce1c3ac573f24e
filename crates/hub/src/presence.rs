//! Connection state (`connectionState`, its update time, `lastActivityTime`) kept in memory and
//! written to the registry in batches.
//!
//! A connect or disconnect used to rewrite the identity's record with an fsync'ed commit, twice per
//! connection: a connection storm spent a quarter of its time in SQLite and the single-core
//! server blocked on the disk. Now the connection path only records the change here; reads of
//! the registry see it at once (the registry overlays it), and a background task writes all
//! changes of the last second in one transaction. A crash can lose at most that second of
//! connection times, which IoT Hub treats as approximate too; every device is disconnected after a
//! restart anyway.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::Notify;

use hub_wire::model::ConnectionState;

/// `(device id, module id)`.
pub type Key = (String, Option<String>);

/// A connection change not yet written to the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub state: ConnectionState,
    /// RFC 3339 time of the change (also the last activity).
    pub at: String,
    /// Bumped on every change, so a flush removes only what it wrote.
    generation: u64,
}

/// The pending connection changes.
#[derive(Default)]
pub struct Presence {
    pending: Mutex<HashMap<Key, Change>>,
    next: std::sync::atomic::AtomicU64,
    /// Rung when the first change after a flush arrives.
    pub wake: Notify,
}

impl Presence {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Change>> {
        // A poisoned lock only means a reader panicked mid-copy; the map itself is consistent.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a connect or disconnect.
    pub fn record(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        state: ConnectionState,
        at: String,
    ) {
        let generation = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let change = Change {
            state,
            at,
            generation,
        };
        let was_empty = {
            let mut pending = self.pending();
            let was_empty = pending.is_empty();
            pending.insert((device_id.to_owned(), module_id.map(str::to_owned)), change);
            was_empty
        };
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// The unwritten change for an identity, if any.
    pub fn get(&self, device_id: &str, module_id: Option<&str>) -> Option<Change> {
        let pending = self.pending();
        if pending.is_empty() {
            return None;
        }
        pending
            .get(&(device_id.to_owned(), module_id.map(str::to_owned)))
            .cloned()
    }

    /// A copy of every unwritten change.
    pub fn snapshot(&self) -> Vec<(Key, Change)> {
        self.pending()
            .iter()
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect()
    }

    /// Forgets the changes a flush wrote, keeping any that arrived since.
    pub fn settle(&self, written: &[(Key, Change)]) {
        let mut pending = self.pending();
        for (key, change) in written {
            if pending.get(key).map(|c| c.generation) == Some(change.generation) {
                pending.remove(key);
            }
        }
    }

    /// Forgets a deleted device (with its modules) or a deleted module.
    pub fn forget(&self, device_id: &str, module_id: Option<&str>) {
        self.pending().retain(|(d, m), _| {
            d != device_id || (module_id.is_some() && m.as_deref() != module_id)
        });
    }

    /// Changes waiting to be written.
    pub fn len(&self) -> usize {
        self.pending().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_keeps_changes_that_arrived_after_its_snapshot() {
        let p = Presence::default();
        p.record("d1", None, ConnectionState::Connected, "t1".into());
        p.record("d2", Some("m"), ConnectionState::Connected, "t1".into());
        let snap = p.snapshot();
        p.record("d1", None, ConnectionState::Disconnected, "t2".into());
        p.settle(&snap);
        assert_eq!(p.len(), 1);
        let c = p.get("d1", None).expect("the newer change stays");
        assert_eq!(
            (c.state, c.at.as_str()),
            (ConnectionState::Disconnected, "t2")
        );
        assert!(p.get("d2", Some("m")).is_none());
    }

    #[test]
    fn forgetting_a_device_drops_its_modules_but_forgetting_a_module_keeps_the_device() {
        let p = Presence::default();
        for m in [None, Some("a"), Some("b")] {
            p.record("d", m, ConnectionState::Connected, "t".into());
        }
        p.record("other", None, ConnectionState::Connected, "t".into());
        p.forget("d", Some("a"));
        assert!(p.get("d", Some("a")).is_none());
        assert!(p.get("d", Some("b")).is_some() && p.get("d", None).is_some());
        p.forget("d", None);
        assert_eq!(p.len(), 1);
        assert!(p.get("other", None).is_some());
    }
}
