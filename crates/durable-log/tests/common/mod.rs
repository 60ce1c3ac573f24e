//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use durable_log::{Log, LogConfig, Record};

/// A config for `dir` with the given segment size; fsync on (the tests that turn it off say so).
pub fn config(dir: &Path, segment_bytes: u64) -> LogConfig {
    LogConfig {
        dir: dir.to_path_buf(),
        segment_bytes,
        ..LogConfig::default()
    }
}

/// A payload that differs per offset and in length.
pub fn payload(i: u64) -> Vec<u8> {
    let len = 10 + (i * 7) % 50;
    (0..len)
        .map(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8))
        .collect()
}

/// Appends `payload(i)` with timestamp `1000 + i` for `i` in `range`, checking the offsets.
pub fn append_range(log: &Log, range: std::ops::Range<u64>) {
    for i in range {
        assert_eq!(log.append_blocking(1000 + i, payload(i)).unwrap(), i);
    }
}

/// Every retained record.
pub fn read_all(log: &Log) -> Vec<Record> {
    log.read(0, usize::MAX, usize::MAX).unwrap()
}

/// Asserts that `records` are exactly offsets `range` as written by [`append_range`].
pub fn assert_records(records: &[Record], range: std::ops::Range<u64>) {
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, range.clone().collect::<Vec<_>>());
    for r in records {
        assert_eq!(
            r.payload,
            payload(r.offset),
            "payload of offset {}",
            r.offset
        );
        assert_eq!(r.timestamp_ms, 1000 + r.offset);
    }
}

/// Segment files of the log, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}
