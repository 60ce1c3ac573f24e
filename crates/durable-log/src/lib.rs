//! # durable-log
//!
//! A segmented, append-only, CRC-checked log with group commit — one Kafka-style partition. The
//! hub writes device telemetry here before acknowledging it (MQTT PUBACK only once the record is
//! durable); consumers read by offset and follow the head.
//!
//! ## Files
//!
//! A log is a directory of segment files, each named by the offset of its first record
//! (zero-padded to 20 digits). The last segment is the active one; a new segment is started
//! once the active one has reached [`LogConfig::segment_bytes`].
//!
//! ```text
//!  dir/
//!  ├── 00000000000000000000.log   offsets 0 ..= 4711        (sealed)
//!  ├── 00000000000000004712.log   offsets 4712 ..= 9400     (sealed)
//!  └── 00000000000000009401.log   offsets 9401 ..           (active, appended to)
//!
//!  one record (all integers little-endian):
//!  ┌──────────┬──────────┬──────────────┬──────────────────┬─────────────────────┐
//!  │ len: u32 │ crc: u32 │ offset: u64  │ timestamp_ms: u64│ payload: len bytes  │
//!  └──────────┴──────────┴──────────────┴──────────────────┴─────────────────────┘
//!   0          4          8              16                 24              24+len
//!              crc = CRC-32 (IEEE) of bytes 8 .. 24+len (offset, timestamp, payload)
//! ```
//!
//! `len` counts the payload only. Offsets are contiguous across segments, starting at 0.
//! The directory is 0700 and segments 0600 (see [`fsperm`]); [`Log::open`] narrows looser ones.
//!
//! ## Writing: group commit
//!
//! One writer thread owns the active segment. [`Log::append`] queues the record and waits;
//! the writer takes everything queued (up to [`LogConfig::max_batch`] records), writes it with
//! one `write`, calls `fdatasync` once, publishes the new durable head and only then answers
//! every appender in the batch. A failed write or sync fails the whole batch with
//! [`LogError::Io`], leaves the head where it was and rolls the files back before the next batch,
//! so a full disk refuses appends until space returns and then carries on.
//!
//! ## Reading, recovery, retention
//!
//! [`Log::read`] returns durable records only, using a sparse in-memory index per segment to
//! start near the wanted offset, and verifies each record's CRC. [`Log::open`] rebuilds the
//! indexes, verifies every record of the last segment and truncates it at the first torn or
//! corrupt record (reported in [`RecoveryReport::truncated_bytes`]); defects in sealed segments
//! are [`LogError::Corrupt`]. [`Log::enforce_retention`] deletes whole old segments by total
//! size and by age (the time is passed in).
//!
//! ## Example
//!
//! ```
//! use durable_log::{Log, LogConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let config = LogConfig { dir: dir.path().to_path_buf(), ..LogConfig::default() };
//! let (log, report) = Log::open(config.clone())?;
//! assert_eq!(report.next_offset, 0);
//!
//! assert_eq!(log.append_blocking(1_700_000_000_000, b"first".to_vec())?, 0);
//! assert_eq!(log.append_blocking(1_700_000_000_001, b"second".to_vec())?, 1);
//! let records = log.read(0, 100, 1 << 20)?;
//! assert_eq!(records[1].payload, b"second");
//! log.close()?;
//!
//! // Reopening recovers the same records.
//! let (log, report) = Log::open(config)?;
//! assert_eq!((report.records, log.next_offset()), (2, 2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod format;
pub use ferrohub_fs::fsperm;
mod log;
mod reader;
mod recovery;
mod retention;
mod segment;
mod state;
#[cfg(test)]
mod tests;
mod writer;

use std::path::PathBuf;

pub use error::LogError;
pub use log::{Log, PendingAppend};

/// How a log is stored and committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Directory of the segment files (created if missing).
    pub dir: PathBuf,
    /// A new segment is started once the active one has at least this many bytes.
    pub segment_bytes: u64,
    /// Larger payloads are refused with [`LogError::RecordTooLarge`].
    pub max_record_bytes: u32,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older than `now - retention_age_ms`.
    pub retention_age_ms: Option<u64>,
    /// `fdatasync` every commit. Turn off only for benchmarks and tests that accept losing
    /// acknowledged records on a power cut.
    pub fsync: bool,
    /// Most records in one group commit.
    pub max_batch: usize,
    /// When a group commit already holds many records (heavy load), wait this long for more
    /// before the fsync; zero turns it off. Light loads never wait.
    pub commit_delay: std::time::Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dir: PathBuf::from("."),
            segment_bytes: 64 * 1024 * 1024,
            max_record_bytes: 1024 * 1024,
            retention_bytes: None,
            retention_age_ms: None,
            fsync: true,
            max_batch: 1024,
            commit_delay: std::time::Duration::from_micros(100),
        }
    }
}

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the log (0, 1, 2, ...).
    pub offset: u64,
    /// The timestamp given to [`Log::append`].
    pub timestamp_ms: u64,
    /// The bytes given to [`Log::append`].
    pub payload: Vec<u8>,
}

/// What [`Log::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Segment files in the log.
    pub segments: usize,
    /// Records retained (`next_offset - start_offset`).
    pub records: u64,
    /// Bytes cut off the end of the last segment (a torn or corrupt tail); 0 after a clean close.
    pub truncated_bytes: u64,
    /// The offset the next append gets.
    pub next_offset: u64,
}

/// What one [`Log::enforce_retention`] pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionReport {
    /// Whole segment files deleted.
    pub segments_deleted: usize,
    /// Records in them.
    pub records_deleted: u64,
    /// Bytes in them.
    pub bytes_deleted: u64,
    /// The oldest retained offset afterwards.
    pub start_offset: u64,
}

/// Counters of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStats {
    /// Records retained (`next_offset - start_offset`).
    pub records: u64,
    /// Bytes in the segment files (durable records only).
    pub bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// Group commits since open (each one `fdatasync` when [`LogConfig::fsync`] is set).
    pub commits: u64,
    /// Records appended since open.
    pub appends: u64,
}
