//! Failure injection: writes that fail half-way (as on a full disk) must not move the head,
//! must be rolled back, and must not stop later appends.

use std::io::ErrorKind;
use std::sync::atomic::Ordering;

use crate::{Log, LogConfig, LogError};

fn config(dir: &std::path::Path, segment_bytes: u64) -> LogConfig {
    LogConfig {
        dir: dir.to_path_buf(),
        segment_bytes,
        fsync: false,
        ..LogConfig::default()
    }
}

fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn payloads(log: &Log) -> Vec<Vec<u8>> {
    log.read(0, usize::MAX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.payload)
        .collect()
}

#[test]
fn failed_write_refuses_the_append_and_keeps_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path(), 1 << 20)).unwrap();
    for i in 0..3u8 {
        log.append_blocking(u64::from(i), vec![i; 100]).unwrap();
    }
    let head = log.subscribe();
    log.shared().fail_writes.store(1, Ordering::SeqCst);
    let err = log.append_blocking(3, vec![3; 100]).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err:?}");
    assert_eq!(err.io_kind(), Some(ErrorKind::StorageFull));
    assert!(
        err.to_string().contains("00000000000000000000.log"),
        "{err}"
    );
    assert_eq!(log.next_offset(), 3);
    assert!(
        !head.has_changed().unwrap(),
        "a failed commit must not publish a head"
    );
    assert_eq!(log.read(0, 10, usize::MAX).unwrap().len(), 3);
    assert_eq!(log.stats().appends, 3);

    // The half-written bytes were cut off: the retry lands at offset 3 and nothing is torn.
    assert_eq!(log.append_blocking(4, b"after".to_vec()).unwrap(), 3);
    log.close().unwrap();
    let (log, report) = Log::open(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.next_offset, 4);
    assert_eq!(payloads(&log).last().unwrap(), b"after");
}

#[test]
fn a_full_disk_keeps_refusing_until_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path(), 1 << 20)).unwrap();
    log.append_blocking(0, b"zero".to_vec()).unwrap();
    log.shared().fail_writes.store(3, Ordering::SeqCst);
    for i in 0..3 {
        let err = log.append_blocking(i, vec![7; 1000]).unwrap_err();
        assert_eq!(err.io_kind(), Some(ErrorKind::StorageFull));
        assert_eq!(log.next_offset(), 1);
    }
    assert_eq!(log.append_blocking(9, b"one".to_vec()).unwrap(), 1);
    assert_eq!(payloads(&log), vec![b"zero".to_vec(), b"one".to_vec()]);
    let file_len = std::fs::metadata(dir.path().join("00000000000000000000.log"))
        .unwrap()
        .len();
    assert_eq!(
        file_len,
        2 * 24 + 4 + 3,
        "only whole, committed records are in the file"
    );
}

#[test]
fn a_failed_batch_that_rolled_removes_its_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    // Every record fills a segment, so the next append starts a new one.
    let (log, _) = Log::open(config(dir.path(), 10)).unwrap();
    log.append_blocking(0, b"first".to_vec()).unwrap();
    assert_eq!(segment_files(dir.path()), ["00000000000000000000.log"]);
    log.shared().fail_writes.store(1, Ordering::SeqCst);
    let err = log.append_blocking(1, b"second".to_vec()).unwrap_err();
    assert_eq!(err.io_kind(), Some(ErrorKind::StorageFull));
    assert!(
        err.to_string().contains("00000000000000000001.log"),
        "{err}"
    );
    assert_eq!(segment_files(dir.path()), ["00000000000000000000.log"]);
    assert_eq!(log.stats().segments, 1);

    assert_eq!(log.append_blocking(2, b"second".to_vec()).unwrap(), 1);
    assert_eq!(
        segment_files(dir.path()),
        ["00000000000000000000.log", "00000000000000000001.log"]
    );
    log.close().unwrap();
    let (log, report) = Log::open(config(dir.path(), 10)).unwrap();
    assert_eq!(
        (report.segments, report.next_offset, report.truncated_bytes),
        (2, 2, 0)
    );
    assert_eq!(payloads(&log), vec![b"first".to_vec(), b"second".to_vec()]);
}
