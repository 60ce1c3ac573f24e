#![allow(clippy::unwrap_used)]
//! Retention by total size and by age deletes whole old segments, never the active one.

mod common;

use common::{config, payload, read_all, segments};
use durable_log::{Log, LogConfig, RetentionReport};

/// Appends `n` records of 76 bytes (52-byte payloads) with timestamps `1000 + i`;
/// with 200-byte segments that is 3 records per segment.
fn fill(log: &Log, n: u64) {
    for i in 0..n {
        let mut p = payload(i);
        p.resize(52, 0xEE);
        assert_eq!(log.append_blocking(1000 + i, p).unwrap(), i);
    }
}

#[test]
fn retention_by_size_deletes_the_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: Some(700),
        ..config(dir.path(), 200)
    };
    let (log, _) = Log::open(cfg.clone()).unwrap();
    fill(&log, 30);
    assert_eq!(segments(dir.path()).len(), 10);
    assert_eq!(log.stats().bytes, 30 * 76);

    let report = log.enforce_retention(0).unwrap();
    // 2280 bytes in 10 segments of 228: keep the newest 3 (684 <= 700).
    assert_eq!(
        report,
        RetentionReport {
            segments_deleted: 7,
            records_deleted: 21,
            bytes_deleted: 7 * 228,
            start_offset: 21
        }
    );
    assert_eq!(log.start_offset(), 21);
    assert_eq!(segments(dir.path()).len(), 3);
    assert_eq!(
        segments(dir.path())[0].file_name().unwrap(),
        "00000000000000000021.log"
    );
    let stats = log.stats();
    assert_eq!(
        (stats.records, stats.bytes, stats.segments),
        (9, 3 * 228, 3)
    );

    // Reading from a deleted offset starts at the new start.
    let records = log.read(0, 100, usize::MAX).unwrap();
    assert_eq!(records.first().unwrap().offset, 21);
    assert_eq!(records.len(), 9);
    assert_eq!(log.read(5, 1, usize::MAX).unwrap()[0].offset, 21);

    // Nothing more to do; appends continue; the start survives a reopen.
    assert_eq!(log.enforce_retention(0).unwrap().segments_deleted, 0);
    assert_eq!(log.append_blocking(2000, b"more".to_vec()).unwrap(), 30);
    log.close().unwrap();
    let (log, report) = Log::open(cfg).unwrap();
    assert_eq!(
        (report.segments, report.records, report.next_offset),
        (4, 10, 31)
    );
    assert_eq!(log.start_offset(), 21);
}

#[test]
fn retention_by_age_uses_the_injected_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_age_ms: Some(100),
        ..config(dir.path(), 200)
    };
    let (log, _) = Log::open(cfg).unwrap();
    fill(&log, 30); // segment k holds timestamps 1000+3k ..= 1002+3k

    // now - age = 1002: no segment's newest record is older than that.
    assert_eq!(log.enforce_retention(1102).unwrap().segments_deleted, 0);
    assert_eq!(log.start_offset(), 0);
    // now - age = 1009: segments 0, 1, 2 (newest 1002, 1005, 1008) are older.
    let report = log.enforce_retention(1109).unwrap();
    assert_eq!(
        (
            report.segments_deleted,
            report.records_deleted,
            report.start_offset
        ),
        (3, 9, 9)
    );
    assert_eq!(log.start_offset(), 9);
    let offsets: Vec<u64> = read_all(&log).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (9..30).collect::<Vec<_>>());
    // Far in the future everything but the active segment goes.
    let report = log.enforce_retention(u64::MAX).unwrap();
    assert_eq!(report.segments_deleted, 6);
    assert_eq!(segments(dir.path()).len(), 1);
    assert_eq!(log.start_offset(), 27);
    assert_eq!(log.read(0, 100, usize::MAX).unwrap().len(), 3);
    // A clock before the epoch + age does not underflow.
    assert_eq!(log.enforce_retention(5).unwrap().segments_deleted, 0);
}

#[test]
fn the_active_segment_is_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: Some(0),
        retention_age_ms: Some(0),
        ..config(dir.path(), 1 << 20)
    };
    let (log, _) = Log::open(cfg).unwrap();
    fill(&log, 5);
    assert_eq!(log.enforce_retention(u64::MAX).unwrap().segments_deleted, 0);
    assert_eq!(log.read(0, 100, usize::MAX).unwrap().len(), 5);
    assert_eq!(log.start_offset(), 0);
}

#[test]
fn no_retention_configured_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path(), 100)).unwrap();
    fill(&log, 10);
    let before = segments(dir.path()).len();
    assert_eq!(
        log.enforce_retention(u64::MAX).unwrap(),
        RetentionReport {
            start_offset: 0,
            ..Default::default()
        }
    );
    assert_eq!(segments(dir.path()).len(), before);
}

#[test]
fn release_deletes_the_segments_a_consumer_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path(), 200)).unwrap();
    fill(&log, 30); // 10 segments of 3 records
    // Consumed up to offset 10: segments [0..3), [3..6), [6..9) are done; [9..12) is not.
    let report = log.release(0, 10).unwrap();
    assert_eq!((report.segments_deleted, report.start_offset), (3, 9));
    assert_eq!(log.read(9, 1, 1 << 20).unwrap()[0].offset, 9);
    // Nothing is deleted that the consumer still needs, nor the active segment.
    assert_eq!(log.release(0, 10).unwrap().segments_deleted, 0);
    assert_eq!(log.release(0, 1_000).unwrap().start_offset, 27);
    assert_eq!(segments(dir.path()).len(), 1);
}
