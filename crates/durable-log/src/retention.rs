//! Deleting old segments by total size and by age. Whole segments only, oldest first, never the
//! active (last) one.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use crate::recovery::sync_dir;
use crate::segment::SegmentMeta;
use crate::state::Shared;
use crate::{LogError, RetentionReport};

/// `consumed`: segments whose records all lie below this offset are deleted too.
pub(crate) fn enforce(
    shared: &Shared,
    now_ms: u64,
    consumed: Option<u64>,
) -> Result<RetentionReport, LogError> {
    let _one_pass_at_a_time = shared.retention_lock();
    let config = &shared.config;
    let cutoff = config
        .retention_age_ms
        .map(|age| now_ms.saturating_sub(age));
    let mut report = RetentionReport::default();
    let doomed: Vec<PathBuf> = {
        let mut segments = shared.segments_mut();
        let mut total: u64 = segments.iter().map(|s| s.tail.len).sum();
        let mut count = 0;
        // `segments.len() - 1`: the last segment is the active one.
        for s in segments.iter().take(segments.len().saturating_sub(1)) {
            let over_size = config.retention_bytes.is_some_and(|limit| total > limit);
            let done = consumed.is_some_and(|c| s.base() + s.records() <= c);
            if !over_size && !done && !expired(s, cutoff) {
                break;
            }
            total -= s.tail.len;
            report.segments_deleted += 1;
            report.records_deleted += s.records();
            report.bytes_deleted += s.tail.len;
            count += 1;
        }
        let removed: Vec<PathBuf> = segments.drain(..count).map(|s| s.tail.path).collect();
        if let Some(first) = segments.first() {
            shared.start.store(first.base(), Ordering::Release);
        }
        removed
    };
    report.start_offset = shared.start();
    if doomed.is_empty() {
        return Ok(report);
    }
    info!(
        segments = report.segments_deleted,
        records = report.records_deleted,
        bytes = report.bytes_deleted,
        start_offset = report.start_offset,
        "Log retention deleted old segments"
    );
    remove_files(&doomed)?;
    if config.fsync {
        sync_dir(&config.dir)?;
    }
    Ok(report)
}

/// A segment is expired when its newest record is older than `cutoff` (an empty sealed segment
/// holds nothing worth keeping).
fn expired(s: &SegmentMeta, cutoff: Option<u64>) -> bool {
    cutoff.is_some_and(|cutoff| s.tail.max_timestamp_ms.is_none_or(|newest| newest < cutoff))
}

/// Removes the files of segments already dropped from the list, oldest first, stopping at the
/// first failure: whatever is left (after a failure or a crash) is then a run of segments that
/// ends where the retained ones start, which the next open accepts as retained data.
fn remove_files(paths: &[PathBuf]) -> Result<(), LogError> {
    for path in paths {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(segment = %path.display(), error = %e, "Could not delete an expired log segment");
                return Err(LogError::io(
                    format!("deleting segment {}", path.display()),
                    e,
                ));
            }
        }
    }
    Ok(())
}
