//! State shared between the writer thread, readers and retention.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use crate::LogConfig;
use crate::segment::SegmentMeta;

pub(crate) struct Shared {
    pub config: LogConfig,
    /// Segments oldest first; the last one is the active segment (or the one before a roll that
    /// is not published yet). Only durable records are described.
    segments: RwLock<Vec<SegmentMeta>>,
    /// Next durable offset (the durable head). Published after `segments` is updated.
    pub durable: AtomicU64,
    /// Oldest retained offset.
    pub start: AtomicU64,
    /// The durable head, for followers.
    pub head: watch::Sender<u64>,
    pub commits: AtomicU64,
    pub appends: AtomicU64,
    /// Serialises retention passes.
    retention: Mutex<()>,
    /// Test hook: the next this-many writes fail half-way with "no space left on device".
    #[cfg(test)]
    pub fail_writes: std::sync::atomic::AtomicU32,
}

impl Shared {
    pub fn new(config: LogConfig, segments: Vec<SegmentMeta>, start: u64, durable: u64) -> Self {
        let (head, _) = watch::channel(durable);
        Shared {
            config,
            segments: RwLock::new(segments),
            durable: AtomicU64::new(durable),
            start: AtomicU64::new(start),
            head,
            commits: AtomicU64::new(0),
            appends: AtomicU64::new(0),
            retention: Mutex::new(()),
            #[cfg(test)]
            fail_writes: std::sync::atomic::AtomicU32::new(0),
        }
    }

    // A panic while holding a lock cannot leave the segment list half-updated in a way that
    // matters (each update is a single push/remove/assignment), so poisoning is ignored.
    pub fn segments(&self) -> RwLockReadGuard<'_, Vec<SegmentMeta>> {
        self.segments.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn segments_mut(&self) -> RwLockWriteGuard<'_, Vec<SegmentMeta>> {
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn retention_lock(&self) -> MutexGuard<'_, ()> {
        self.retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    pub fn start(&self) -> u64 {
        self.start.load(Ordering::Acquire)
    }

    /// Whether the test hook asks this write to fail.
    #[cfg(test)]
    pub fn take_injected_failure(&self) -> bool {
        self.fail_writes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}
