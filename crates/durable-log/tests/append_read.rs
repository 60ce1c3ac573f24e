#![allow(clippy::unwrap_used)]
//! Appending, reading, segment rolls, limits, following the head, closing.

mod common;

use std::time::Duration;

use common::{append_range, assert_records, config, payload, read_all, segments};
use durable_log::{Log, LogConfig, LogError};

#[test]
fn round_trip_across_segment_rolls_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = Log::open(config(dir.path(), 256)).unwrap();
    assert_eq!(
        report,
        durable_log::RecoveryReport {
            segments: 1,
            records: 0,
            truncated_bytes: 0,
            next_offset: 0
        }
    );
    append_range(&log, 0..100);
    let files = segments(dir.path());
    assert!(
        files.len() >= 10,
        "256-byte segments must roll many times, got {}",
        files.len()
    );
    assert_eq!(files[0].file_name().unwrap(), "00000000000000000000.log");
    for f in &files[..files.len() - 1] {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(
            (256..256 + 24 + 60).contains(&len),
            "{} has {len} bytes",
            f.display()
        );
    }
    assert_records(&read_all(&log), 0..100);
    assert_eq!(log.next_offset(), 100);
    let stats = log.stats();
    assert_eq!(
        (stats.records, stats.appends, stats.segments),
        (100, 100, files.len())
    );
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(stats.bytes, total);
    log.close().unwrap();

    let (log, report) = Log::open(config(dir.path(), 256)).unwrap();
    assert_eq!(report.segments, files.len());
    assert_eq!(
        (report.records, report.next_offset, report.truncated_bytes),
        (100, 100, 0)
    );
    assert_records(&read_all(&log), 0..100);
    assert_eq!(log.append_blocking(1100, payload(100)).unwrap(), 100);
    assert_records(&read_all(&log), 0..101);
}

#[test]
fn segment_names_are_base_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path(), 1)).unwrap();
    append_range(&log, 0..3);
    let names: Vec<_> = segments(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "00000000000000000000.log",
            "00000000000000000001.log",
            "00000000000000000002.log"
        ]
    );
}

#[test]
fn reads_from_any_offset_in_big_segments() {
    let dir = tempfile::tempdir().unwrap();
    // fsync off: this test is about the sparse index, not durability.
    let (log, _) = Log::open(LogConfig {
        fsync: false,
        ..config(dir.path(), 64 * 1024)
    })
    .unwrap();
    append_range(&log, 0..3000);
    assert!(segments(dir.path()).len() > 1);
    for from in [0, 1, 63, 64, 65, 777, 1500, 2047, 2999] {
        let records = log.read(from, 5, usize::MAX).unwrap();
        assert_records(&records, from..(from + 5).min(3000));
    }
    assert!(log.read(3000, 5, usize::MAX).unwrap().is_empty());
    assert!(log.read(u64::MAX, 5, usize::MAX).unwrap().is_empty());
}

#[test]
fn read_respects_max_records_and_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path(), 200)).unwrap();
    append_range(&log, 0..20);
    assert_records(&log.read(3, 4, usize::MAX).unwrap(), 3..7);
    assert!(log.read(3, 0, usize::MAX).unwrap().is_empty());

    // payload(i) sizes: 10 + 7i (mod 50). Offsets 0,1,2 are 10+17+24 = 51 bytes.
    assert_records(&log.read(0, 100, 51).unwrap(), 0..3);
    assert_records(&log.read(0, 100, 50).unwrap(), 0..2);
    // The first record is returned even if it alone is over the budget.
    assert_records(&log.read(5, 100, 1).unwrap(), 5..6);
}

#[test]
fn oversized_record_is_refused_and_log_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(LogConfig {
        max_record_bytes: 100,
        ..config(dir.path(), 1 << 20)
    })
    .unwrap();
    assert_eq!(log.append_blocking(1, vec![0; 100]).unwrap(), 0);
    let err = log.append_blocking(2, vec![0; 101]).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::RecordTooLarge {
                size: 101,
                max: 100
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("101") && err.to_string().contains("100"),
        "{err}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let err = rt.block_on(log.append(3, vec![0; 5000])).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::RecordTooLarge {
                size: 5000,
                max: 100
            }
        ),
        "{err:?}"
    );
    assert_eq!(log.next_offset(), 1);
    assert_eq!(log.append_blocking(4, vec![1; 10]).unwrap(), 1);
    assert_eq!(log.read(0, 10, usize::MAX).unwrap().len(), 2);
    assert_eq!(log.stats().appends, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_sees_the_head_advance() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path(), 1 << 20)).unwrap();
    let mut head = log.subscribe();
    assert_eq!(*head.borrow_and_update(), 0);
    let follower = tokio::spawn(async move {
        head.changed().await.unwrap();
        *head.borrow_and_update()
    });
    assert_eq!(log.append(5, b"x".to_vec()).await.unwrap(), 0);
    let seen = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, 1);
    // A reader woken by the head finds the record.
    assert_eq!(log.read(0, 10, 1024).unwrap()[0].payload, b"x");

    let mut head = log.subscribe();
    log.append(6, b"y".to_vec()).await.unwrap();
    assert!(head.has_changed().unwrap());
    assert_eq!(*head.borrow_and_update(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_keeps_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path(), 1 << 20)).unwrap();
    let pending: Vec<_> = (0..50u64)
        .map(|i| log.submit(1000 + i, payload(i)))
        .collect();
    let handles: Vec<_> = pending.into_iter().map(tokio::spawn).collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().unwrap(), i as u64);
    }
    assert_records(&read_all(&log), 0..50);
}

#[test]
fn close_stops_every_clone_but_reads_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(config(dir.path(), 1 << 20)).unwrap();
    let other = log.clone();
    append_range(&log, 0..3);
    log.close().unwrap();
    assert!(matches!(
        other.append_blocking(1, b"late".to_vec()),
        Err(LogError::Closed)
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(matches!(
        rt.block_on(other.append(1, b"late".to_vec())),
        Err(LogError::Closed)
    ));
    assert_records(&read_all(&other), 0..3);
    assert_eq!(other.next_offset(), 3);
    other.close().unwrap();
}

#[test]
fn dropping_the_last_handle_stops_the_writer_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = Log::open(config(dir.path(), 1 << 20)).unwrap();
        append_range(&log, 0..5);
    }
    let (log, report) = Log::open(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!((report.next_offset, report.truncated_bytes), (5, 0));
    assert_records(&read_all(&log), 0..5);
}

#[test]
fn empty_payloads_and_other_files_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README"), b"not a segment").unwrap();
    std::fs::write(dir.path().join("123.log"), b"not a segment name either").unwrap();
    let (log, _) = Log::open(config(dir.path().join("nested/events").as_path(), 1 << 20)).unwrap();
    assert_eq!(log.append_blocking(7, Vec::new()).unwrap(), 0);
    let r = log.read(0, 1, 1).unwrap();
    assert_eq!(
        (r[0].offset, r[0].timestamp_ms, r[0].payload.len()),
        (0, 7, 0)
    );
    let (other, report) = Log::open(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.next_offset, 0);
    drop(other);
}

#[test]
fn handles_and_errors_cross_threads_and_tasks() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    fn error<E: std::error::Error + Send + Sync + 'static>() {}
    fn spawnable<F: Future<Output = Result<u64, LogError>> + Send + 'static>() {}
    shareable::<Log>();
    shareable::<LogError>();
    error::<LogError>();
    spawnable::<durable_log::PendingAppend>();
}
