//! The writer thread: owns the active segment and turns queued appends into group commits.
//!
//! ```text
//!  appenders ──Request──► mpsc ──► drain ≤ max_batch ─► encode into one buffer ─► write ─► fdatasync
//!                                                                                           │
//!     replies (offsets) ◄── oneshot ◄── publish head (segments, AtomicU64, watch) ◄─────────┘
//! ```
//!
//! A failed write or sync fails the whole batch, leaves the durable head where it was and rolls
//! the files back (truncate the active segment to its durable length, remove segments created by
//! the batch) before the next batch is written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::LogError;
use crate::format;
use crate::recovery::create_segment_file;
use crate::segment::{self, IndexEntry, SegmentMeta, SegmentTail};
use crate::state::Shared;

/// A batch at least this large means many appenders are waiting: the commit delay applies.
const BUSY_BATCH: usize = 16;

/// A batch stops growing once its payloads reach this many bytes (at least one record is taken).
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// What appenders send to the writer.
pub(crate) enum Request {
    Append(Append),
    /// Commit what is queued before this and stop.
    Shutdown,
}

pub(crate) struct Append {
    pub timestamp_ms: u64,
    pub payload: Vec<u8>,
    pub reply: Reply,
}

/// Where the outcome of one append goes.
pub(crate) enum Reply {
    Async(oneshot::Sender<Result<u64, LogError>>),
    Blocking(SyncSender<Result<u64, LogError>>),
}

impl Reply {
    fn send(self, result: Result<u64, LogError>) {
        // The appender may have given up waiting; the record's fate is the same either way.
        match self {
            Reply::Async(tx) => drop(tx.send(result)),
            Reply::Blocking(tx) => drop(tx.send(result)),
        }
    }
}

/// The changes one batch made to one segment.
struct Delta {
    tail: SegmentTail,
    index: Vec<IndexEntry>,
    new: bool,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Request>,
    /// The active segment's file, positioned at `tail.len` unless `dirty`.
    file: File,
    /// The active segment's durable state.
    tail: SegmentTail,
    /// The file may hold bytes past `tail.len`, or `stray` segments exist: roll back first.
    dirty: bool,
    /// Segment files created by a failed batch, still to be removed.
    stray: Vec<PathBuf>,
    buf: Vec<u8>,
}

/// Starts the writer thread on the active (last) segment.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    rx: Receiver<Request>,
    active: SegmentTail,
) -> Result<JoinHandle<Result<(), LogError>>, LogError> {
    let context = || format!("opening active segment {}", active.path.display());
    let mut file = OpenOptions::new()
        .write(true)
        .open(&active.path)
        .map_err(|e| LogError::io(context(), e))?;
    file.seek(SeekFrom::Start(active.len))
        .map_err(|e| LogError::io(context(), e))?;
    let writer = Writer {
        shared,
        rx,
        file,
        tail: active,
        dirty: false,
        stray: Vec::new(),
        buf: Vec::new(),
    };
    std::thread::Builder::new()
        .name("durable-log-writer".into())
        .spawn(move || writer.run())
        .map_err(|e| LogError::io("starting the log writer thread", e))
}

impl Writer {
    fn run(mut self) -> Result<(), LogError> {
        // `recv` fails only once every sender is gone, i.e. the log was dropped.
        while let Ok(first) = self.rx.recv() {
            let (batch, shutdown) = self.collect(first);
            if !batch.is_empty() {
                self.process(batch);
            }
            if shutdown {
                break;
            }
        }
        // Appends still queued are dropped with their reply channels: they see `Closed`.
        self.roll_back()
    }

    /// Takes `first` and whatever else is queued, up to the batch limits.
    fn collect(&mut self, first: Request) -> (Vec<Append>, bool) {
        let Request::Append(first) = first else {
            return (Vec::new(), true);
        };
        let max = self.shared.config.max_batch.max(1);
        let mut bytes = first.payload.len();
        let mut batch = vec![first];
        let mut waited = false;
        while batch.len() < max && bytes < MAX_BATCH_BYTES {
            match self.rx.try_recv() {
                Ok(Request::Append(a)) => {
                    bytes += a.payload.len();
                    batch.push(a);
                }
                Ok(Request::Shutdown) => return (batch, true),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    // Under heavy load (a large batch already), let the appends of the next
                    // moment join this commit: fewer fsyncs for the same records. A light load
                    // never waits, so its latency is untouched.
                    let delay = self.shared.config.commit_delay;
                    if waited
                        || delay.is_zero()
                        || !self.shared.config.fsync
                        || batch.len() < BUSY_BATCH
                    {
                        break;
                    }
                    waited = true;
                    std::thread::sleep(delay);
                }
            }
        }
        (batch, false)
    }

    /// One group commit: write, sync once, publish, reply.
    fn process(&mut self, batch: Vec<Append>) {
        let first = self.tail.next_offset;
        match self.roll_back().and_then(|()| self.write_batch(&batch)) {
            Ok(deltas) => {
                self.publish(deltas, batch.len() as u64);
                for (a, offset) in batch.into_iter().zip(first..) {
                    a.reply.send(Ok(offset));
                }
            }
            Err(e) => {
                error!(error = %e, records = batch.len(), "Log commit failed; the appends are refused");
                if let Err(again) = self.roll_back() {
                    warn!(error = %again, "Could not roll the log back yet; will retry before the next write");
                }
                for a in batch {
                    a.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Writes the batch (rolling segments as needed) and syncs it. Nothing is published here.
    /// Returns the changes per segment, oldest first.
    fn write_batch(&mut self, batch: &[Append]) -> Result<Vec<Delta>, LogError> {
        let segment_bytes = self.shared.config.segment_bytes;
        let mut sealed = Vec::new();
        let mut current = Delta {
            tail: self.tail.clone(),
            index: Vec::new(),
            new: false,
        };
        let mut rolled: Option<File> = None;
        self.buf.clear();
        self.dirty = true;
        for (a, offset) in batch.iter().zip(self.tail.next_offset..) {
            if current.tail.len > 0 && current.tail.len >= segment_bytes {
                let next = self.roll(&current.tail, &mut rolled, offset)?;
                sealed.push(std::mem::replace(&mut current, next));
            }
            let frame_len = format::frame_len(a.payload.len());
            if let Some(entry) = current.tail.push(offset, a.timestamp_ms, frame_len) {
                current.index.push(entry);
            }
            format::encode(&mut self.buf, offset, a.timestamp_ms, &a.payload);
        }
        let file = rolled.as_mut().unwrap_or(&mut self.file);
        write_and_sync(&self.shared, file, &self.buf, &current.tail)?;
        if let Some(file) = rolled {
            self.file = file;
        }
        self.stray.clear();
        self.dirty = false;
        sealed.push(current);
        Ok(sealed)
    }

    /// Seals the batch's current segment (its buffered records written and synced) and starts
    /// a new one whose base is `offset`.
    fn roll(
        &mut self,
        current: &SegmentTail,
        rolled: &mut Option<File>,
        offset: u64,
    ) -> Result<Delta, LogError> {
        let file = rolled.as_mut().unwrap_or(&mut self.file);
        write_and_sync(&self.shared, file, &self.buf, current)?;
        self.buf.clear();
        let path = segment::path_for(&self.shared.config.dir, offset);
        self.stray.push(path.clone());
        *rolled = Some(create_segment_file(&path, self.shared.config.fsync)?);
        Ok(Delta {
            tail: SegmentTail::empty(offset, path),
            index: Vec::new(),
            new: true,
        })
    }

    /// Makes the batch visible: segment metadata first, then the head.
    fn publish(&mut self, deltas: Vec<Delta>, records: u64) {
        let last = deltas.last().map(|d| d.tail.clone());
        {
            let mut segments = self.shared.segments_mut();
            for d in deltas {
                if d.new {
                    segments.push(SegmentMeta {
                        tail: d.tail,
                        index: d.index,
                    });
                } else if let Some(s) = segments.iter_mut().rev().find(|s| s.base() == d.tail.base)
                {
                    s.tail = d.tail;
                    s.index.extend(d.index);
                }
            }
        }
        if let Some(last) = last {
            self.tail = last;
        }
        let head = self.tail.next_offset;
        self.shared.durable.store(head, Ordering::Release);
        self.shared.head.send_replace(head);
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        self.shared.appends.fetch_add(records, Ordering::Relaxed);
    }

    /// Undoes a failed batch: removes segments it created and truncates the active segment to
    /// its durable length.
    fn roll_back(&mut self) -> Result<(), LogError> {
        if !self.dirty {
            return Ok(());
        }
        while let Some(path) = self.stray.last() {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(LogError::io(
                        format!("removing unfinished segment {}", path.display()),
                        e,
                    ));
                }
            }
            self.stray.pop();
        }
        let context = || {
            format!(
                "truncating {} back to its durable length {}",
                self.tail.path.display(),
                self.tail.len
            )
        };
        self.file
            .set_len(self.tail.len)
            .map_err(|e| LogError::io(context(), e))?;
        self.file
            .seek(SeekFrom::Start(self.tail.len))
            .map_err(|e| LogError::io(context(), e))?;
        self.dirty = false;
        Ok(())
    }
}

/// One write of the whole buffer, then one `fdatasync` (when configured).
fn write_and_sync(
    shared: &Shared,
    file: &mut File,
    buf: &[u8],
    segment: &SegmentTail,
) -> Result<(), LogError> {
    if buf.is_empty() {
        return Ok(());
    }
    let context = |what: &str| format!("{what} segment {}", segment.path.display());
    #[cfg(test)]
    if shared.take_injected_failure() {
        let half = buf.get(..buf.len() / 2).unwrap_or_default();
        file.write_all(half)
            .map_err(|e| LogError::io(context("writing"), e))?;
        return Err(LogError::io(
            context("writing"),
            io::Error::from(io::ErrorKind::StorageFull),
        ));
    }
    file.write_all(buf)
        .map_err(|e| LogError::io(context("writing"), e))?;
    if shared.config.fsync {
        file.sync_data()
            .map_err(|e| LogError::io(context("syncing"), e))?;
    }
    Ok(())
}
