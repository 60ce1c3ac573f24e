//! Opening a log directory: find the segments, rebuild their sparse indexes, check sealed
//! segments, and cut a torn tail off the last segment.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use tracing::{error, warn};

use crate::segment::{self, FrameReader, HeaderRead, SegmentMeta, SegmentTail};
use crate::{LogConfig, LogError, RecoveryReport};

/// What [`recover`] found.
pub(crate) struct Recovered {
    /// Oldest first; never empty. The last one is the active segment.
    pub segments: Vec<SegmentMeta>,
    pub report: RecoveryReport,
}

/// Where a scan stopped before the end of the file, and why.
struct Stop {
    position: u64,
    reason: String,
}

struct Scan {
    meta: SegmentMeta,
    /// Byte position of the last good record.
    last_record: Option<u64>,
    /// File length when scanned.
    file_len: u64,
    stop: Option<Stop>,
}

/// Opens (creating if needed) the directory and recovers every segment in it.
pub(crate) fn recover(config: &LogConfig) -> Result<Recovered, LogError> {
    let dir = &config.dir;
    // The directory and its segments are private (0700/0600); looser ones are narrowed.
    crate::fsperm::secure_dir(dir)
        .map_err(|e| LogError::io(format!("creating log directory {}", dir.display()), e))?;
    let mut files = list_segments(dir)?;
    if files.is_empty() {
        let path = segment::path_for(dir, 0);
        create_segment_file(&path, config.fsync)?;
        files.push((0, path));
    }
    let last = files.len() - 1;
    let mut segments: Vec<SegmentMeta> = Vec::with_capacity(files.len());
    let mut truncated_bytes = 0;
    for (i, (base, path)) in files.into_iter().enumerate() {
        if let Some(prev) = segments.last()
            && prev.tail.next_offset != base
        {
            error!(
                segment = %path.display(),
                expected = prev.tail.next_offset,
                "Log segment does not start where the previous one ends"
            );
            return Err(LogError::Corrupt {
                segment: path,
                position: 0,
            });
        }
        let meta = if i < last {
            check_sealed(base, path)?
        } else {
            let (meta, cut) = recover_last(base, path, config.fsync)?;
            truncated_bytes = cut;
            meta
        };
        segments.push(meta);
    }
    let first = segments.first().map_or(0, SegmentMeta::base);
    let next_offset = segments.last().map_or(0, |s| s.tail.next_offset);
    let report = RecoveryReport {
        segments: segments.len(),
        records: next_offset - first,
        truncated_bytes,
        next_offset,
    };
    Ok(Recovered { segments, report })
}

/// Segment files in `dir`, sorted by base offset. Other files are ignored.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let context = || format!("listing log directory {}", dir.display());
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| LogError::io(context(), e))? {
        let entry = entry.map_err(|e| LogError::io(context(), e))?;
        let name = entry.file_name();
        if let Some(base) = name.to_str().and_then(segment::parse_file_name) {
            found.push((base, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(base, _)| *base);
    Ok(found)
}

/// Creates an empty segment file (truncating a leftover one) and makes its name durable.
pub(crate) fn create_segment_file(path: &Path, fsync: bool) -> Result<File, LogError> {
    let file = crate::fsperm::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| LogError::io(format!("creating segment {}", path.display()), e))?;
    if fsync && let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(file)
}

/// Makes directory entries (created or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    let sync = || -> io::Result<()> {
        #[cfg(unix)]
        File::open(dir)?.sync_all()?;
        Ok(())
    };
    sync().map_err(|e| LogError::io(format!("syncing directory {}", dir.display()), e))
}

/// A non-last segment: headers are walked to rebuild the index and check framing and offsets,
/// and the last record's CRC is verified. Any defect is an error: sealed data is never dropped.
fn check_sealed(base: u64, path: PathBuf) -> Result<SegmentMeta, LogError> {
    let scan = scan(base, path, false)?;
    let path = &scan.meta.tail.path;
    if let Some(stop) = scan.stop {
        error!(segment = %path.display(), position = stop.position, reason = %stop.reason, "Sealed log segment is corrupt");
        return Err(LogError::Corrupt {
            segment: path.clone(),
            position: stop.position,
        });
    }
    if let Some(position) = scan.last_record {
        let mut r = FrameReader::open(path, position).map_err(|e| read_error(path, e))?;
        let mut payload = Vec::new();
        let intact = match r.next_header().map_err(|e| read_error(path, e))? {
            HeaderRead::Header(h) => {
                r.read_payload(&h, &mut payload).is_ok() && h.matches(&payload)
            }
            HeaderRead::End | HeaderRead::Partial(_) => false,
        };
        if !intact {
            error!(segment = %path.display(), position, reason = "CRC mismatch", "Sealed log segment is corrupt");
            return Err(LogError::Corrupt {
                segment: path.clone(),
                position,
            });
        }
    }
    Ok(scan.meta)
}

/// The last segment: every record is verified; the file is cut at the first bad one.
/// Returns the segment and how many bytes were cut.
fn recover_last(base: u64, path: PathBuf, fsync: bool) -> Result<(SegmentMeta, u64), LogError> {
    let scan = scan(base, path, true)?;
    let Some(stop) = scan.stop else {
        return Ok((scan.meta, 0));
    };
    let path = &scan.meta.tail.path;
    let cut = scan.file_len - stop.position;
    warn!(
        segment = %path.display(),
        position = stop.position,
        reason = %stop.reason,
        truncated_bytes = cut,
        "Truncating torn tail of the log"
    );
    let context = || format!("truncating torn tail of {}", path.display());
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| LogError::io(context(), e))?;
    file.set_len(stop.position)
        .map_err(|e| LogError::io(context(), e))?;
    if fsync {
        file.sync_all().map_err(|e| LogError::io(context(), e))?;
    }
    Ok((scan.meta, cut))
}

fn read_error(path: &Path, e: io::Error) -> LogError {
    LogError::io(format!("reading segment {}", path.display()), e)
}

/// Walks a segment from the start, verifying CRCs when `verify` is set, until the end of the
/// file or the first bad record.
fn scan(base: u64, path: PathBuf, verify: bool) -> Result<Scan, LogError> {
    let mut r = FrameReader::open(&path, 0).map_err(|e| read_error(&path, e))?;
    let file_len = r.file_len().map_err(|e| read_error(&path, e))?;
    let mut meta = SegmentMeta {
        tail: SegmentTail::empty(base, path),
        index: Vec::new(),
    };
    let mut last_record = None;
    let mut payload = Vec::new();
    let stop = loop {
        let position = r.position();
        let stop = |reason: String| Some(Stop { position, reason });
        let io = |e| read_error(&meta.tail.path, e);
        let h = match r.next_header().map_err(io)? {
            HeaderRead::End => break None,
            HeaderRead::Partial(n) => break stop(format!("incomplete header ({n} of 24 bytes)")),
            HeaderRead::Header(h) => h,
        };
        let expected = meta.tail.next_offset;
        if position + h.frame_len() > file_len {
            break stop(format!(
                "record of {} bytes runs past the end of the file ({file_len} bytes)",
                h.frame_len()
            ));
        }
        if h.offset != expected {
            break stop(format!("offset {} where {expected} was expected", h.offset));
        }
        if verify {
            r.read_payload(&h, &mut payload).map_err(io)?;
            if !h.matches(&payload) {
                break stop("CRC mismatch".to_owned());
            }
        } else {
            r.skip_payload(&h).map_err(io)?;
        }
        if let Some(entry) = meta.tail.push(h.offset, h.timestamp_ms, h.frame_len()) {
            meta.index.push(entry);
        }
        last_record = Some(position);
    };
    Ok(Scan {
        meta,
        last_record,
        file_len,
        stop,
    })
}
