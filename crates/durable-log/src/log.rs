//! The public handle: [`Log`] and [`PendingAppend`].

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

use crate::state::Shared;
use crate::writer::{self, Append, Reply, Request};
use crate::{
    LogConfig, LogError, LogStats, Record, RecoveryReport, RetentionReport, reader, recovery,
    retention,
};

/// A handle to an open log. Cheap to clone (all clones share one writer thread); `Send + Sync`.
///
/// The writer thread stops on [`Log::close`] or when the last clone is dropped.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tx: Sender<Request>,
    thread: Mutex<Option<JoinHandle<Result<(), LogError>>>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.shared.config.dir)
            .field("start_offset", &self.start_offset())
            .field("next_offset", &self.next_offset())
            .finish()
    }
}

impl Log {
    /// Opens (or creates) the log in `config.dir`, recovering it: a torn or corrupt tail of the
    /// last segment is truncated and reported; a defect in an older segment is
    /// [`LogError::Corrupt`]. Starts the writer thread.
    pub fn open(config: LogConfig) -> Result<(Log, RecoveryReport), LogError> {
        let recovered = recovery::recover(&config)?;
        let active = recovered
            .segments
            .last()
            .map(|s| s.tail.clone())
            .ok_or_else(|| {
                LogError::io(
                    "opening the log",
                    std::io::Error::other("recovery returned no segment"),
                )
            })?;
        let start = recovered.segments.first().map_or(0, |s| s.base());
        let next = recovered.report.next_offset;
        let shared = Arc::new(Shared::new(config, recovered.segments, start, next));
        let (tx, rx) = mpsc::channel();
        let thread = writer::spawn(shared.clone(), rx, active)?;
        let inner = Inner {
            shared,
            tx,
            thread: Mutex::new(Some(thread)),
        };
        Ok((
            Log {
                inner: Arc::new(inner),
            },
            recovered.report,
        ))
    }

    /// Appends a record; resolves with its offset once it and every record before it are on
    /// disk (`fdatasync`ed when [`LogConfig::fsync`] is set). Concurrent appends share commits.
    pub async fn append(&self, timestamp_ms: u64, payload: Vec<u8>) -> Result<u64, LogError> {
        self.submit(timestamp_ms, payload).await
    }

    /// Queues a record now (so records submitted one after another keep that order) and returns
    /// a future of its offset, as [`Log::append`]. The future is `Send + 'static`, so it can be
    /// spawned; dropping it does not withdraw the record.
    pub fn submit(&self, timestamp_ms: u64, payload: Vec<u8>) -> PendingAppend {
        if let Err(e) = self.check_size(&payload) {
            return PendingAppend {
                state: State::Ready(Some(Err(e))),
            };
        }
        let (tx, rx) = oneshot::channel();
        let request = Request::Append(Append {
            timestamp_ms,
            payload,
            reply: Reply::Async(tx),
        });
        match self.inner.tx.send(request) {
            Ok(()) => PendingAppend {
                state: State::Waiting(rx),
            },
            Err(_) => PendingAppend {
                state: State::Ready(Some(Err(LogError::Closed))),
            },
        }
    }

    /// [`Log::append`] for synchronous callers: blocks the thread until the record is durable.
    pub fn append_blocking(&self, timestamp_ms: u64, payload: Vec<u8>) -> Result<u64, LogError> {
        self.check_size(&payload)?;
        let (tx, rx) = mpsc::sync_channel(1);
        let request = Request::Append(Append {
            timestamp_ms,
            payload,
            reply: Reply::Blocking(tx),
        });
        self.inner.tx.send(request).map_err(|_| LogError::Closed)?;
        rx.recv().unwrap_or(Err(LogError::Closed))
    }

    fn check_size(&self, payload: &[u8]) -> Result<(), LogError> {
        let max = self.inner.shared.config.max_record_bytes;
        if payload.len() > max as usize {
            return Err(LogError::RecordTooLarge {
                size: payload.len(),
                max,
            });
        }
        Ok(())
    }

    /// Up to `max_records` durable records from offset `from` on, stopping before the payloads
    /// would exceed `max_bytes` (but always at least one record when one exists). If `from` is
    /// older than [`Log::start_offset`] (deleted by retention), reading starts at the oldest
    /// retained record: compare the first record's offset with `from` to notice. Empty when
    /// `from` is at or past the durable head.
    pub fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        reader::read(&self.inner.shared, from, max_records, max_bytes)
    }

    /// The oldest retained offset.
    pub fn start_offset(&self) -> u64 {
        self.inner.shared.start()
    }

    /// The durable head: the offset the next record will get; everything below is durable.
    pub fn next_offset(&self) -> u64 {
        self.inner.shared.durable()
    }

    /// A watch of the durable head ([`Log::next_offset`]), updated on every commit.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.shared.head.subscribe()
    }

    /// Deletes whole sealed segments, oldest first, while the log is larger than
    /// [`LogConfig::retention_bytes`] or their newest record is older than
    /// `now_ms - retention_age_ms`. The active segment is never deleted.
    pub fn enforce_retention(&self, now_ms: u64) -> Result<RetentionReport, LogError> {
        retention::enforce(&self.inner.shared, now_ms, None)
    }

    /// Like [`Log::enforce_retention`], and also deletes sealed segments whose records all lie
    /// below `consumed` (a consumer that has durably recorded its position there needs them no
    /// more): a store-and-forward queue shrinks as it drains.
    pub fn release(&self, now_ms: u64, consumed: u64) -> Result<RetentionReport, LogError> {
        retention::enforce(&self.inner.shared, now_ms, Some(consumed))
    }

    /// Counters and sizes.
    pub fn stats(&self) -> LogStats {
        let shared = &self.inner.shared;
        let (bytes, segments) = {
            let segments = shared.segments();
            (segments.iter().map(|s| s.tail.len).sum(), segments.len())
        };
        LogStats {
            records: shared.durable().saturating_sub(shared.start()),
            bytes,
            segments,
            commits: shared.commits.load(Ordering::Relaxed),
            appends: shared.appends.load(Ordering::Relaxed),
        }
    }

    /// Commits what is queued, then stops the writer thread (for every clone of this handle:
    /// later appends fail with [`LogError::Closed`]; reads keep working).
    pub fn close(self) -> Result<(), LogError> {
        self.inner.stop()
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }
}

impl Inner {
    fn stop(&self) -> Result<(), LogError> {
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(handle) = handle else { return Ok(()) };
        // Fails only if the writer is already gone, which `join` reports.
        let _ = self.tx.send(Request::Shutdown);
        handle.join().unwrap_or(Err(LogError::Closed))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "Log writer stopped with an error");
        }
    }
}

/// The outcome of [`Log::submit`]: resolves to the record's offset once it is durable.
#[must_use = "the record is queued either way; await this to learn when it is durable"]
#[derive(Debug)]
pub struct PendingAppend {
    state: State,
}

#[derive(Debug)]
enum State {
    Ready(Option<Result<u64, LogError>>),
    Waiting(oneshot::Receiver<Result<u64, LogError>>),
}

impl Future for PendingAppend {
    type Output = Result<u64, LogError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            // Polled again after completion: there is nothing more to report.
            State::Ready(result) => Poll::Ready(result.take().unwrap_or(Err(LogError::Closed))),
            // The writer dropped the reply without answering: it has stopped.
            State::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(LogError::Closed))),
        }
    }
}
