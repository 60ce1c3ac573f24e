//! The one error type of the log.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A failure of the log.
///
/// `Clone` so that one failed group commit can be reported to every appender in the batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// A file-system operation failed (including a full disk: see [`LogError::io_kind`]).
    /// The durable head did not move; later appends retry once the cause is gone.
    #[error("{context}: {source}")]
    Io {
        /// What the log was doing, naming the file.
        context: String,
        /// The operating system's error.
        source: Arc<io::Error>,
    },
    /// The payload is larger than [`crate::LogConfig::max_record_bytes`]; nothing was written.
    #[error("record of {size} bytes exceeds the limit of {max} bytes (max_record_bytes)")]
    RecordTooLarge {
        /// Size of the refused payload.
        size: usize,
        /// The configured limit.
        max: u32,
    },
    /// A record that should be intact is not: a bad CRC, a wrong offset or a cut inside a sealed
    /// (non-last) segment, or a durable record that cannot be read back. Torn tails of the last
    /// segment are not errors; recovery truncates them.
    #[error("corrupt record in segment {} at byte {position}", segment.display())]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte position of the bad record inside that file.
        position: u64,
    },
    /// The writer thread has stopped (after [`crate::Log::close`], or because it died).
    #[error("the log is closed (its writer thread has stopped)")]
    Closed,
}

impl LogError {
    /// Wraps an I/O error with what the log was doing.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        LogError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// The kind of the underlying I/O error, e.g. [`io::ErrorKind::StorageFull`] for a full disk.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            LogError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}
